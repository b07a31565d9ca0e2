//! `modelsync sync` / `ModelInstallService::sync_to_config` and watch's `settings.sync`
//! (issue 14, item 1): orphans of each kind registered with the right type, from files made by
//! real producers (the `safetensors` package through `pyfix`, and the InvokeAI 6.14 fixture's
//! diffusers `save_pretrained` folder and `safetensors.torch` embedding); dead records
//! reported and kept, unregistered only with `--prune-missing` and never while the volume
//! looks unmounted; watch registering a dropped-in file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::pyfix::{self, Spec};
use crate::support::reconcile::{Work, assert_exit};
use crate::support::stdout;

const INVOKE_MODELS: &str = "tests/fixtures/invokeai-6.14/root/models";
const DIFFUSERS: &str = "e2ef507d-1131-5914-b35a-7979c3281880";
const EMBEDDING: &str = "23662c43-9dc5-580f-9b38-d4d812b0b68e/tiny-sd15-embedding.safetensors";

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(INVOKE_MODELS)
        .join(rel)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A kohya SD 1.x LoRA, written by the `safetensors` package.
fn lora(path: PathBuf) -> Spec {
    let k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    Spec::safetensors(
        path,
        vec![
            (format!("{k}.alpha"), vec![]),
            (format!("{k}.lora_down.weight"), vec![4, 768]),
            (format!("{k}.lora_up.weight"), vec![320, 4]),
        ],
    )
    .metadata(json!({"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora"}))
}

/// A Mamba language model: no probe rule knows it.
fn mystery(path: PathBuf) -> Spec {
    Spec::safetensors(
        path,
        vec![
            ("backbone.embeddings.weight".into(), vec![64, 16]),
            ("backbone.layers.0.mixer.A_log".into(), vec![32, 4]),
            ("lm_head.weight".into(), vec![64, 16]),
        ],
    )
}

fn json_of(o: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn orphan<'a>(report: &'a Value, path: &str) -> &'a Value {
    report["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["path"] == path)
        .unwrap_or_else(|| panic!("{path} not among the orphans: {report}"))
}

fn records(w: &Work) -> Vec<modelsync::AnyModelConfig> {
    w.store().all_models().unwrap()
}

#[test]
fn orphans_of_each_kind_are_registered_in_place_with_their_type() {
    let w = Work::new();
    w.manifest("", "  []\n");
    let m = w.models();
    pyfix::write(&[
        lora(m.join("loras/detail.safetensors")),
        mystery(m.join("llm/mamba.safetensors")),
        // modelsync's own scratch is never a model.
        lora(m.join(".tmp/abc/files/partial.safetensors")),
        lora(m.join(".download_cache/x.safetensors")),
    ]);
    copy_tree(&fixture(DIFFUSERS), &m.join("pipelines/tiny-sd15"));
    std::fs::create_dir_all(m.join("embeddings")).unwrap();
    std::fs::copy(fixture(EMBEDDING), m.join("embeddings/tiny-ti.safetensors")).unwrap();
    // A llama.cpp GGUF (header as llama.cpp's gguf writer lays it out): an LLM, so `unknown`.
    crate::support::probe_fixtures::gguf(
        &m.join("llm/llama-q4.gguf"),
        &[("general.architecture", "llama")],
        &[("blk.0.attn_q.weight", &[64, 64])],
    );
    std::fs::write(m.join("big.safetensors.part"), b"half a download").unwrap();
    std::fs::write(m.join("notes.txt"), b"not a model").unwrap();

    // Dry run: listed like diff, nothing written.
    let o = w.run(&["sync", "--exit-code"]);
    assert_exit(&o, 2);
    let text = stdout(&o);
    assert!(
        text.contains("+  loras/detail.safetensors  lora sd-1 lycoris"),
        "{text}"
    );
    assert!(
        text.contains("+  pipelines/tiny-sd15/  main sd-1 diffusers"),
        "{text}"
    );
    assert!(text.contains("dry run"), "{text}");
    assert!(!m.join("modelsync.db").exists());

    let o = w.run(&["-o", "json", "sync"]);
    assert_exit(&o, 0);
    let dry = json_of(&o);
    assert_eq!(dry["totals"]["orphans"], 5, "{dry}");
    assert_eq!(
        orphan(&dry, "llm/llama-q4.gguf")["format"],
        "gguf_quantized"
    );
    for (path, ty, base) in [
        ("loras/detail.safetensors", "lora", "sd-1"),
        ("pipelines/tiny-sd15", "main", "sd-1"),
        ("embeddings/tiny-ti.safetensors", "embedding", "sd-1"),
        ("llm/mamba.safetensors", "unknown", "unknown"),
    ] {
        let o = orphan(&dry, path);
        assert_eq!(o["type"], ty, "{o}");
        assert_eq!(o["base"], base, "{o}");
        assert!(o["key"].is_null());
    }

    let o = w.run(&["-o", "json", "sync", "--yes"]);
    assert_exit(&o, 0);
    let done = json_of(&o);
    assert_eq!(done["totals"]["registered"], 5, "{done}");
    let recs = records(&w);
    assert_eq!(recs.len(), 5);
    for (path, ty) in [
        ("loras/detail.safetensors", "lora"),
        ("pipelines/tiny-sd15", "main"),
        ("embeddings/tiny-ti.safetensors", "embedding"),
        ("llm/mamba.safetensors", "unknown"),
        ("llm/llama-q4.gguf", "unknown"),
    ] {
        let r = recs
            .iter()
            .find(|r| r.path() == path)
            .unwrap_or_else(|| panic!("no record at {path}"));
        assert_eq!(r.model_type().as_str(), ty);
        assert!(r.common().managed.is_none());
        assert!(r.common().hash.starts_with("blake3:"));
    }
    // Registered where they are: nothing moved.
    assert!(m.join("pipelines/tiny-sd15/model_index.json").is_file());
    let o = w.run(&["sync", "--exit-code"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("In sync"), "{}", stdout(&o));
}

#[test]
fn dead_records_are_kept_unregistered_only_with_the_flag_and_never_when_unmounted() {
    let w = Work::new();
    let src = w.local_lora("managed.safetensors", 7);
    w.manifest(
        "",
        &format!(
            "  - name: managed\n    source: {}\n    dest: managed/lora.safetensors\n",
            src.display()
        ),
    );
    assert_exit(&w.run(&["apply"]), 0);
    let m = w.models();
    pyfix::write(&[
        lora(m.join("loras/a.safetensors")),
        lora(m.join("loras/b.safetensors")),
    ]);
    assert_exit(&w.run(&["sync", "--yes"]), 0);
    assert_eq!(records(&w).len(), 3);

    std::fs::remove_file(m.join("loras/a.safetensors")).unwrap();
    std::fs::remove_file(m.join("managed/lora.safetensors")).unwrap();
    let o = w.run(&["-o", "json", "sync", "--yes"]);
    assert_exit(&o, 0);
    let r = json_of(&o);
    assert_eq!(r["totals"]["dead"], 2, "{r}");
    assert_eq!(r["totals"]["unregistered"], 0, "{r}");
    assert_eq!(records(&w).len(), 3, "kept without --prune-missing");
    let o = w.run(&["sync"]);
    assert!(
        stdout(&o).contains("--prune-missing unregisters it"),
        "{}",
        stdout(&o)
    );

    // With the flag the unmanaged one goes; the managed one is apply's to repair.
    let o = w.run(&["-o", "json", "sync", "--yes", "--prune-missing"]);
    assert_exit(&o, 0);
    let r = json_of(&o);
    assert_eq!(r["totals"]["unregistered"], 1, "{r}");
    let dead = r["dead"].as_array().unwrap();
    let managed = dead.iter().find(|d| d["entry"] == "managed").unwrap();
    assert_eq!(managed["unregister"], false);
    let names: Vec<String> = records(&w).iter().map(|r| r.name().to_owned()).collect();
    assert!(!names.contains(&"a".to_owned()), "{names:?}");
    assert!(names.contains(&"b".to_owned()) && names.contains(&"managed".to_owned()));

    // The volume "unmounted": models_dir holds nothing but the store. Nothing is unregistered.
    std::fs::remove_dir_all(m.join("loras")).unwrap();
    std::fs::remove_dir_all(m.join("managed")).unwrap();
    let o = w.run(&["-o", "json", "sync", "--yes", "--prune-missing"]);
    assert_exit(&o, 0);
    let r = json_of(&o);
    assert_eq!(r["volume_suspect"], true, "{r}");
    assert_eq!(r["totals"]["unregistered"], 0, "{r}");
    assert_eq!(records(&w).len(), 2);
    let reason = r["dead"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        r["dead"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"].as_str().unwrap().contains("volume mounted")),
        "{reason}: {r}"
    );
}

/// Bound for every wait; only a failing test reaches it.
const LIMIT: Duration = Duration::from_secs(30);

async fn eventually(
    handle: &modelsync::watch::WatchHandle,
    what: &str,
    cond: impl Fn(&modelsync::watch::StatusReport) -> bool,
) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let st = handle.status();
        if cond(&st) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}; status: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_manifest(w: &Work, sync: &str) {
    let text = format!("version: 1\nsettings:\n  models_dir: models\n{sync}models: []\n");
    let tmp = w.path().join(".models.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, w.path().join("models.yaml")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_orphans_and_with_sync_register_registers_a_dropped_in_file() {
    use modelsync::watch::{CancelSource, Watch, WatchConfig};
    let w = Work::new();
    std::fs::create_dir_all(w.models()).unwrap();
    write_manifest(&w, "");
    let manifest_path = w.path().join("models.yaml");
    let m = modelsync::manifest::load(&manifest_path).unwrap();
    let lock = modelsync::store::lock::StoreLock::acquire(
        &m.settings.database_path(),
        Duration::ZERO,
        |_| {},
    )
    .unwrap();
    let conv = modelsync::reconcile::ManifestConverger::new(
        &m,
        lock,
        Arc::new(modelsync::report::Recorder::new()),
    );
    let mut config = WatchConfig::new(&manifest_path);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.interval = Duration::from_millis(300);
    config.debounce = Duration::from_millis(100);
    let watch = Watch::bind(config, Arc::new(conv)).await.unwrap();
    let handle = watch.handle();
    let addr = watch.local_addr();
    let (stop, token) = CancelSource::new();
    let join = tokio::spawn(watch.run(token));

    // The default, report: the dropped-in file shows in /status, nothing is registered.
    pyfix::write(&[lora(w.models().join("dropped.safetensors"))]);
    eventually(&handle, "the orphan reported", |st| {
        st.sync
            .as_ref()
            .is_some_and(|s| s.mode == "report" && s.orphans == ["dropped.safetensors"])
    })
    .await;
    let store = modelsync::store::open_read_only(&m.settings.database_path()).unwrap();
    assert!(store.all_models().unwrap().is_empty());

    write_manifest(&w, "  sync: register\n");
    eventually(&handle, "the orphan registered", |st| {
        st.sync.as_ref().is_some_and(|s| s.registered_total == 1)
    })
    .await;
    let recs = store.all_models().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].path(), "dropped.safetensors");
    assert_eq!(recs[0].model_type().as_str(), "lora");
    eventually(&handle, "nothing left to register", |st| {
        st.sync
            .as_ref()
            .is_some_and(|s| s.orphans.is_empty() && s.registered.is_empty())
    })
    .await;

    let body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("modelsync_sync_registered_total 1\n"),
        "{body}"
    );
    assert!(
        body.contains("modelsync_sync_paths{kind=\"orphan\"} 0\n"),
        "{body}"
    );
    stop.cancel();
    let r = tokio::time::timeout(LIMIT, join).await.unwrap().unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_previous_sync_only_orphans_seen_unchanged_are_registered() {
    use modelsync::install::sync::SyncOptions;
    use modelsync::install::{InstallConfig, ModelInstallService};
    let dir = crate::support::tmp();
    let models = dir.path().join("models");
    pyfix::write(&[
        lora(models.join("settled.safetensors")),
        lora(models.join("copying.safetensors")),
    ]);
    let store: Arc<dyn modelsync::RecordStore> =
        Arc::from(modelsync::store::open(&models.join("modelsync.db")).unwrap());
    let hub = modelsync::hub::HubClient::from_env(None, &modelsync::hub::HubEnv::empty()).unwrap();
    let cfg = InstallConfig::new(&models, hub, modelsync::hub::HubEnv::empty());
    let rec = Arc::new(modelsync::report::Recorder::new());
    let queue = modelsync::download::DownloadQueue::new(
        modelsync::download::DownloadQueueConfig::default(),
        rec.clone(),
    )
    .unwrap();
    let svc = ModelInstallService::new(cfg, store.clone(), queue, rec).unwrap();

    // A first look: nothing registered yet, both remembered.
    let first = svc
        .sync_to_config(&SyncOptions {
            register: true,
            previous: Some(std::collections::HashMap::new()),
            ..SyncOptions::default()
        })
        .unwrap();
    assert_eq!(first.totals.registered, 0);
    assert!(first.orphans[0].warnings[0].contains("registered once a sync sees it unchanged"));
    // One of them is written to meanwhile (a copy in progress): its mtime moves.
    let f = std::fs::File::options()
        .write(true)
        .open(models.join("copying.safetensors"))
        .unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    f.set_modified(mtime + Duration::from_secs(1)).unwrap();
    drop(f);
    let second = svc
        .sync_to_config(&SyncOptions {
            register: true,
            previous: Some(first.fingerprints()),
            ..SyncOptions::default()
        })
        .unwrap();
    let registered: Vec<&str> = second
        .orphans
        .iter()
        .filter(|o| o.key.is_some())
        .map(|o| o.path.as_str())
        .collect();
    assert_eq!(registered, ["settled.safetensors"]);
    let copying = second
        .orphans
        .iter()
        .find(|o| o.path == "copying.safetensors")
        .unwrap();
    assert!(copying.error.is_none(), "{copying:?}");
    assert!(copying.warnings[0].contains("new or changed since the last sync"));
    assert_eq!(store.all_models().unwrap().len(), 1);
}
