//! The install service against the Hub emulator, real files and a real SQLite store.

#![allow(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "file names here are the tests' own, all lowercase"
)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use modelsync::config::{AnyModelConfig, Managed, ModelSourceType};
use modelsync::download::{DownloadQueue, DownloadQueueConfig, RetryPolicy, TransferConfig};
use modelsync::hub::{HubClient, HubEnv, HubOptions, ModelSource, Token};
use modelsync::install::{
    InstallConfig, InstallError, InstallEvent, InstallOptions, InstallRequest, InstallStatus,
    ModelInstallJob,
};
use modelsync::manager::ModelManager;
use modelsync::report::{Event, Recorder};
use modelsync::store::{self, RecordStore};
use modelsync::taxonomy::{BaseModelType, ModelFormat, ModelType};
use serde_json::{Map, Value, json};

use crate::support::hub_server::{FakeFile, FakeRepo, HubServer};
use crate::support::probe_fixtures as fx;

// ------------------------------------------------------------------------------------ fixtures

fn st_bytes(tensors: &[(&str, &[u64])], meta: Option<Value>) -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.safetensors");
    fx::safetensors(&p, tensors, meta);
    fs::read(&p).unwrap()
}

/// A kohya SD-1 LoRA.
fn lora_bytes() -> Vec<u8> {
    let k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    st_bytes(
        &[
            (&format!("{k}.lora_down.weight"), &[4, 768]),
            (&format!("{k}.lora_up.weight"), &[320, 4]),
        ],
        Some(json!({"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora"})),
    )
}

/// A real safetensors file of exactly `n` bytes: one U8 tensor whose data is `tag` repeated.
fn st_weights(tag: &str, n: usize) -> Vec<u8> {
    crate::support::st_exact(n, tag.bytes().cycle())
}

fn weights(tag: &str, n: usize) -> Vec<u8> {
    tag.bytes().cycle().take(n).collect()
}

fn model_index() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0",
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    }))
    .unwrap()
}

fn vae_config() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0",
        "latent_channels": 4, "sample_size": 512, "in_channels": 3, "out_channels": 3,
        "block_out_channels": [128, 256, 512, 512]
    }))
    .unwrap()
}

/// A tiny SD-1 diffusers repo; `fp16` adds `.fp16.` weights beside the default ones.
fn sd15_repo(id: &str, fp16: bool) -> FakeRepo {
    let mut r = FakeRepo::new(id)
        .tags(&[
            "diffusers",
            "license:creativeml-openrail-m",
            "text-to-image",
        ])
        .file("model_index.json", model_index())
        .file("README.md", b"# sd".to_vec())
        .file(
            "scheduler/scheduler_config.json",
            serde_json::to_vec(
                &json!({"_class_name": "PNDMScheduler", "prediction_type": "epsilon"}),
            )
            .unwrap(),
        )
        .file(
            "text_encoder/config.json",
            serde_json::to_vec(&json!({"architectures": ["CLIPTextModel"], "hidden_size": 768}))
                .unwrap(),
        )
        .file("text_encoder/model.safetensors", st_weights("te32", 400))
        .file("tokenizer/vocab.json", b"{\"a\": 1}".to_vec())
        .file(
            "unet/config.json",
            serde_json::to_vec(&fx::sd15_unet_config()).unwrap(),
        )
        .file(
            "unet/diffusion_pytorch_model.safetensors",
            st_weights("unet32", 1000),
        )
        .file("vae/config.json", vae_config())
        .file(
            "vae/diffusion_pytorch_model.safetensors",
            st_weights("vae32", 300),
        )
        .file(
            "v1-5-pruned-emaonly.safetensors",
            st_weights("single", 2000),
        );
    if fp16 {
        r = r
            .file(
                "text_encoder/model.fp16.safetensors",
                st_weights("te16", 200),
            )
            .file(
                "unet/diffusion_pytorch_model.fp16.safetensors",
                st_weights("unet16", 500),
            )
            .file(
                "vae/diffusion_pytorch_model.fp16.safetensors",
                st_weights("vae16", 150),
            );
    }
    r
}

fn loras_repo(id: &str) -> FakeRepo {
    FakeRepo::new(id)
        .tags(&["lora", "base_model:runwayml/stable-diffusion-v1-5"])
        .file("README.md", b"# loras".to_vec())
        .file("loras/detail.safetensors", lora_bytes())
        .file("loras/other.safetensors", lora_bytes())
}

// ------------------------------------------------------------------------------------ harness

struct Env {
    dir: tempfile::TempDir,
    models: PathBuf,
    hub: HubServer,
    rec: Recorder,
    mgr: ModelManager,
}

fn hub_env(home: &Path) -> HubEnv {
    HubEnv {
        home: Some(home.to_path_buf()),
        ..HubEnv::empty()
    }
}

fn queue_config() -> DownloadQueueConfig {
    DownloadQueueConfig {
        transfer: TransferConfig {
            retry: RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                max_retry_after: Duration::from_millis(20),
            },
            sync_before_rename: false,
            ..TransferConfig::default()
        },
        progress_interval: Duration::from_millis(10),
        ..DownloadQueueConfig::default()
    }
}

fn build_manager(models: &Path, hub: &HubServer, env: HubEnv, rec: &Recorder) -> ModelManager {
    let mut o = HubOptions::new(hub.endpoint_url());
    o.retry_base_delay = Duration::from_millis(1);
    let client = HubClient::with_options(o).unwrap();
    let cfg = InstallConfig::new(models, client, env);
    fs::create_dir_all(models).unwrap();
    let store: Arc<dyn RecordStore> = Arc::from(store::open(&models.join("modelsync.db")).unwrap());
    let queue = DownloadQueue::new(queue_config(), Arc::new(rec.clone())).unwrap();
    ModelManager::from_parts(cfg, store, queue, Arc::new(rec.clone())).unwrap()
}

fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let hub = HubServer::start();
    let rec = Recorder::new();
    let mgr = build_manager(&models, &hub, hub_env(dir.path()), &rec);
    Env {
        dir,
        models,
        hub,
        rec,
        mgr,
    }
}

fn no_config() -> Map<String, Value> {
    Map::new()
}

fn cfg(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

impl Env {
    async fn import(&self, source: &str, config: Map<String, Value>) -> ModelInstallJob {
        let svc = self.mgr.install();
        let job = svc.heuristic_import(source, config, None).unwrap();
        svc.wait_for_job(job.id, Some(Duration::from_secs(30)))
            .await
            .unwrap()
    }

    async fn install_ok(&self, source: &str, config: Map<String, Value>) -> AnyModelConfig {
        let job = self.import(source, config).await;
        assert!(
            job.complete(),
            "{source}: {:?} {:?}",
            job.error_type,
            job.error
        );
        job.config_out.unwrap()
    }

    fn store(&self) -> &Arc<dyn RecordStore> {
        self.mgr.store()
    }

    /// Every file under `dir`, relative, `/`-separated, sorted.
    fn files_under(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(
                        e.path()
                            .strip_prefix(dir)
                            .unwrap()
                            .to_string_lossy()
                            .replace('\\', "/"),
                    );
                }
            }
        }
        out.sort();
        out
    }

    /// Entries of models_dir other than the store files and scratch folders.
    fn promoted(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.models)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("modelsync.db") && n != ".tmp" && n != ".cache")
            .collect();
        v.sort();
        v
    }

    /// sha256s of the LFS bodies the CDN served.
    fn cdn_shas(&self) -> BTreeSet<String> {
        self.hub
            .cdn_requests()
            .iter()
            .filter(|r| r.method == "GET")
            .filter_map(|r| r.path.rsplit('/').next().map(str::to_owned))
            .collect()
    }
}

/// The database and its journal files, as text.
fn db_bytes(models: &Path) -> String {
    let mut all = Vec::new();
    for e in fs::read_dir(models).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("modelsync.db") && e.path().is_file() {
            all.extend(fs::read(e.path()).unwrap());
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

fn sha(content: &[u8]) -> String {
    FakeFile::lfs("x", content.to_vec()).sha256()
}

fn install_events(rec: &Recorder, id: u64) -> Vec<InstallEvent> {
    rec.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Install(ev) => Some(ev),
            _ => None,
        })
        .filter(|ev| event_id(ev) == id)
        .collect()
}

fn event_id(ev: &InstallEvent) -> u64 {
    match ev {
        InstallEvent::ModelInstallDownloading { id, .. }
        | InstallEvent::ModelInstallRunning { id, .. }
        | InstallEvent::ModelInstallCompleted { id, .. }
        | InstallEvent::ModelInstallError { id, .. }
        | InstallEvent::ModelInstallWarning { id, .. }
        | InstallEvent::ModelInstallCancelled { id, .. } => *id,
    }
}

/// The event names with consecutive repeats collapsed.
fn event_names(evs: &[InstallEvent]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = evs.iter().map(InstallEvent::name).collect();
    names.dedup();
    names
}

// ------------------------------------------------------------------------------------ HF repos

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hf_fp16_variant_installs_exactly_the_fp16_weights_and_configs() {
    let env = setup();
    env.hub.add_repo(sd15_repo("owner/sd15", true));
    let job = env.import("owner/sd15:fp16", no_config()).await;
    assert!(job.complete(), "{:?}", job.error);
    let rec = job.config_out.clone().unwrap();
    assert_eq!(rec.model_type(), ModelType::Main);
    assert_eq!(rec.format(), ModelFormat::Diffusers);
    assert_eq!(rec.base(), BaseModelType::StableDiffusion1);
    assert_eq!(
        rec.path(),
        rec.key(),
        "a folder model lives at models_dir/<key>"
    );
    let c = rec.common();
    assert_eq!(c.source, "owner/sd15:fp16");
    assert_eq!(c.source_type, ModelSourceType::HfRepoId);
    assert!(c.tags.contains(&"text-to-image".to_owned()), "{:?}", c.tags);
    let meta = c.source_api_response.as_ref().unwrap();
    assert_eq!(meta["type"], "huggingface");
    assert_eq!(meta["id"], "owner/sd15");
    let on_disk = Env::files_under(&env.models.join(rec.key()));
    assert_eq!(
        on_disk,
        vec![
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.fp16.safetensors",
            "tokenizer/vocab.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ]
    );
    // Only the fp16 weights crossed the wire.
    let want: BTreeSet<String> = [
        st_weights("te16", 200),
        st_weights("unet16", 500),
        st_weights("vae16", 150),
    ]
    .iter()
    .map(|w| sha(w))
    .collect();
    assert_eq!(env.cdn_shas(), want);
    // Fingerprints with sha256 for the LFS files; commit and files for the lock.
    let files = env.store().model_files(rec.key()).unwrap();
    assert_eq!(files.len(), 9);
    let unet = files
        .iter()
        .find(|f| f.relative_path == "unet/diffusion_pytorch_model.fp16.safetensors")
        .unwrap();
    assert_eq!(
        unet.sha256.as_deref(),
        Some(sha(&st_weights("unet16", 500)).as_str())
    );
    let outcome = job.outcome.unwrap();
    assert_eq!(
        outcome.commit.as_deref(),
        Some(env.hub.commit("owner/sd15", "main").as_str())
    );
    assert_eq!(outcome.files.len(), 9);
    // The staging dir is gone.
    assert!(Env::files_under(&env.models.join(".tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hf_default_variant_and_missing_variant_fallback() {
    let env = setup();
    env.hub.add_repo(sd15_repo("owner/sd15", true));
    env.hub.add_repo(sd15_repo("owner/plain", false));
    let rec = env.install_ok("owner/sd15", no_config()).await;
    let on_disk = Env::files_under(&env.models.join(rec.key()));
    assert!(on_disk.contains(&"unet/diffusion_pytorch_model.safetensors".to_owned()));
    assert!(!on_disk.iter().any(|f| f.contains(".fp16.")), "{on_disk:?}");
    assert!(
        !on_disk
            .iter()
            .any(|f| f.ends_with("pruned-emaonly.safetensors"))
    );

    // fp16 asked, the repo has none: the default files.
    let rec = env.install_ok("owner/plain:fp16", no_config()).await;
    let on_disk = Env::files_under(&env.models.join(rec.key()));
    assert!(on_disk.contains(&"unet/diffusion_pytorch_model.safetensors".to_owned()));
    assert_eq!(rec.common().source, "owner/plain:fp16");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hf_subfolder_single_file_and_globs() {
    let env = setup();
    env.hub.add_repo(sd15_repo("owner/sd15", true));
    env.hub.add_repo(loras_repo("owner/loras"));

    let vae = env
        .install_ok("owner/sd15:fp16:vae", cfg(json!({"base": "sd-1"})))
        .await;
    assert_eq!(vae.model_type(), ModelType::Vae);
    assert_eq!(
        Env::files_under(&env.models.join(vae.key())),
        vec!["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    );

    let vae32 = env
        .install_ok(
            "owner/sd15::vae",
            cfg(json!({"base": "sd-1", "name": "vae32"})),
        )
        .await;
    assert_eq!(
        Env::files_under(&env.models.join(vae32.key())),
        vec!["config.json", "diffusion_pytorch_model.safetensors"]
    );

    let lora = env
        .install_ok("owner/loras::loras/detail.safetensors", no_config())
        .await;
    assert_eq!(lora.model_type(), ModelType::Lora);
    assert_eq!(lora.base(), BaseModelType::StableDiffusion1);
    assert_eq!(lora.path(), format!("{}/detail.safetensors", lora.key()));
    assert!(env.models.join(lora.path()).is_file());
    let files = env.store().model_files(lora.key()).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].relative_path, "");
    assert_eq!(
        files[0].sha256.as_deref(),
        Some(sha(&lora_bytes()).as_str())
    );

    // include/exclude through the request options.
    let req = InstallRequest::new(ModelSource::parse("owner/sd15:fp16").unwrap(), no_config())
        .with_options(InstallOptions {
            exclude: vec!["text_encoder/*".into(), "tokenizer/*".into()],
            ..InstallOptions::default()
        });
    let out = env.mgr.install().install(req).await.unwrap();
    let on_disk = Env::files_under(&out.path);
    assert!(
        !on_disk.iter().any(|f| f.starts_with("text_encoder/")),
        "{on_disk:?}"
    );
    assert!(on_disk.contains(&"unet/diffusion_pytorch_model.fp16.safetensors".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_repo_needs_a_token_that_is_never_stored() {
    let env = setup();
    env.hub.add_repo(loras_repo("owner/gated").gated("manual"));
    let job = env
        .import("owner/gated::loras/detail.safetensors", no_config())
        .await;
    assert!(job.errored());
    let err = crate::support::job_error(&job);
    assert!(err.contains("HF_TOKEN"), "{err}");
    assert!(err.contains("token file"), "{err}");
    assert!(env.store().all_models().unwrap().is_empty());

    let secret = "hf_SeCrEt_TOKEN_4711";
    env.hub.grant(secret, "owner/gated");
    let svc = env.mgr.install();
    let job = svc
        .heuristic_import(
            "owner/gated::loras/detail.safetensors",
            no_config(),
            Token::new(secret),
        )
        .unwrap();
    let job = svc.wait_for_job(job.id, None).await.unwrap();
    assert!(job.complete(), "{:?}", job.error);
    // Nowhere: job JSON, events, record, database bytes.
    let job_json = serde_json::to_string(&svc.list_jobs()).unwrap();
    assert!(!job_json.contains(secret));
    let events_json = serde_json::to_string(&env.rec.events()).unwrap();
    assert!(!events_json.contains(secret));
    assert!(!format!("{job:?}").contains(secret));
    let db_text = db_bytes(&env.models);
    assert!(!db_text.contains(secret));
    assert!(db_text.contains("owner/gated::loras/detail.safetensors"));
    // The token went to the Hub, never to the CDN.
    assert!(env.hub.cdn_requests().iter().all(|r| !r.authorization));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_lfs_body_registers_and_promotes_nothing() {
    let env = setup();
    env.hub.add_repo(loras_repo("owner/loras"));
    env.hub
        .corrupt_lfs("owner/loras", "loras/detail.safetensors");
    let job = env
        .import("owner/loras::loras/detail.safetensors", no_config())
        .await;
    assert!(job.errored());
    assert_eq!(job.error_type.as_deref(), Some("DownloadError"));
    assert!(crate::support::job_error(&job).contains("mismatch"));
    assert!(env.store().all_models().unwrap().is_empty());
    assert!(env.promoted().is_empty(), "{:?}", env.promoted());
    // No verified file and no partial left in staging.
    let staged = Env::files_under(&env.models.join(".tmp"));
    assert!(
        !staged
            .iter()
            .any(|f| f.ends_with(".safetensors") || f.ends_with(".part")),
        "{staged:?}"
    );
}

// ------------------------------------------------------------------------------------ URLs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_named_by_content_disposition_and_html_refused() {
    let env = setup();
    let url = env
        .hub
        .add_url_download("63006", "detail-tweaker.safetensors", lora_bytes());
    let rec = env.install_ok(&url, no_config()).await;
    assert_eq!(rec.model_type(), ModelType::Lora);
    assert_eq!(
        rec.path(),
        format!("{}/detail-tweaker.safetensors", rec.key())
    );
    assert_eq!(rec.common().source, url);
    assert_eq!(rec.common().source_type, ModelSourceType::Url);
    assert_eq!(rec.name(), "detail-tweaker");

    let page = env.hub.add_html_page("/login");
    let job = env.import(&page, no_config()).await;
    assert!(job.errored());
    assert!(crate::support::job_error(&job).contains("HTML"));
    assert_eq!(env.store().all_models().unwrap().len(), 1);
}

// ------------------------------------------------------------------------------------ local

fn write_lora(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    fs::create_dir_all(dir).unwrap();
    fs::write(&p, lora_bytes()).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_copy_vs_inplace_and_the_three_deletes() {
    let env = setup();
    let outside = env.dir.path().join("elsewhere");
    let src = write_lora(&outside, "mylora.safetensors");

    // Copy (hardlink on the same filesystem) into models_dir/<key>/.
    let copied = env
        .install_ok(
            src.to_str().unwrap(),
            cfg(json!({"name": "copied", "tags": ["x"]})),
        )
        .await;
    assert_eq!(
        copied.path(),
        format!("{}/mylora.safetensors", copied.key())
    );
    assert_eq!(copied.name(), "copied");
    assert_eq!(copied.common().tags, vec!["x".to_owned()]);
    let installed = env.models.join(copied.path());
    assert_eq!(fs::read(&installed).unwrap(), lora_bytes());
    assert!(src.exists());

    // In place: the record points at the source.
    let svc = env.mgr.install();
    let mut source = ModelSource::parse(src.to_str().unwrap()).unwrap();
    if let ModelSource::Local(l) = &mut source {
        l.inplace = true;
    }
    let job = svc
        .import_model(source, cfg(json!({"name": "inplace"})))
        .unwrap();
    assert!(job.inplace);
    let job = svc.wait_for_job(job.id, None).await.unwrap();
    let inplace = job.config_out.unwrap();
    assert_eq!(Path::new(inplace.path()), src.canonicalize().unwrap());

    // delete: inside models_dir → files go.
    let gone = svc.delete(copied.key()).unwrap();
    assert_eq!(gone.as_deref(), Some(installed.as_path()));
    assert!(!installed.exists());
    assert!(
        !env.models.join(copied.key()).exists(),
        "empty <key>/ removed"
    );
    // delete: outside → only the record goes.
    assert_eq!(svc.delete(inplace.key()).unwrap(), None);
    assert!(src.exists());
    assert!(!env.store().exists(inplace.key()).unwrap());

    // unregister: the record goes, files stay (inside or out).
    let again = svc.install_path(&src, &no_config()).unwrap();
    svc.unregister(again.key()).unwrap();
    assert!(env.models.join(again.path()).exists());
    // unconditionally_delete: outside files go too.
    let reg = svc.register_path(&src, &no_config()).unwrap();
    assert_eq!(Path::new(reg.path()), src.canonicalize().unwrap());
    svc.unconditionally_delete(reg.key()).unwrap();
    assert!(!src.exists());
    assert!(env.store().all_models().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_pickle_refused_unless_allowed_and_hash_checked() {
    let env = setup();
    let evil = env.dir.path().join("evil.ckpt");
    let marker = env.dir.path().join("pwned");
    fs::write(
        &evil,
        fx::malicious_system(&format!("touch {}", marker.display())),
    )
    .unwrap();
    let job = env.import(evil.to_str().unwrap(), no_config()).await;
    assert_eq!(
        job.error_type.as_deref(),
        Some("DangerousPickle"),
        "{:?}",
        job.error
    );
    assert!(job.error.unwrap().contains("unsafe_pickle"));
    assert!(env.promoted().is_empty());

    let rec = env
        .install_ok(
            evil.to_str().unwrap(),
            cfg(json!({"unsafe_pickle": "allow", "type": "lora", "base": "sd-1"})),
        )
        .await;
    assert_eq!(rec.model_type(), ModelType::Lora);
    assert!(!rec.to_json().to_string().contains("unsafe_pickle"));
    assert!(!marker.exists());

    // Expected hash: a mismatch installs nothing; the right one installs with `dest`.
    let src = write_lora(&env.dir.path().join("in"), "h.safetensors");
    let bad = InstallRequest::new(
        ModelSource::parse(src.to_str().unwrap()).unwrap(),
        no_config(),
    )
    .with_options(InstallOptions {
        expected_hash: Some(format!("blake3:{}", "0".repeat(64))),
        dest: Some("loras/h.safetensors".into()),
        ..InstallOptions::default()
    });
    let e = env.mgr.install().install(bad.clone()).await.unwrap_err();
    assert!(
        matches!(&e, InstallError::JobFailed(inner) if inner.error_type() == "HashMismatch"),
        "{e}"
    );
    assert!(!env.models.join("loras").exists());
    let right = modelsync::hash::hash_path(&src, modelsync::hash::HashAlgorithm::Blake3).unwrap();
    let mut good = bad;
    good.options.expected_hash = Some(right.clone());
    good.options.managed = Some(Managed {
        entry: "detail".into(),
        spec_hash: "s1".into(),
    });
    good.options.sha256_for_lock = true;
    let out = env.mgr.install().install(good).await.unwrap();
    assert_eq!(out.record.path(), "loras/h.safetensors");
    assert_eq!(out.record.common().hash, right);
    assert_eq!(
        out.record.common().managed.as_ref().unwrap().entry,
        "detail"
    );
    assert_eq!(
        out.files[0].sha256.as_deref(),
        Some(sha(&lora_bytes()).as_str())
    );
}

// ------------------------------------------------------------------------------------ events, jobs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_order_for_local_and_remote_installs() {
    let env = setup();
    env.hub.add_repo(sd15_repo("owner/sd15", true));
    let job = env.import("owner/sd15:fp16", no_config()).await;
    let evs = install_events(&env.rec, job.id);
    assert_eq!(
        event_names(&evs),
        vec![
            "model_install_downloading",
            "model_install_running",
            "model_install_completed"
        ]
    );
    match evs.last().unwrap() {
        InstallEvent::ModelInstallCompleted {
            key, total_bytes, ..
        } => {
            assert_eq!(key, job.config_out.as_ref().unwrap().key());
            assert_eq!(*total_bytes, job.total_bytes);
            assert!(*total_bytes > 0);
        }
        other => panic!("{other:?}"),
    }
    // The last downloading event has every part complete.
    let last_dl = evs
        .iter()
        .rev()
        .find_map(|e| match e {
            InstallEvent::ModelInstallDownloading {
                bytes,
                total_bytes,
                parts,
                ..
            } => Some((*bytes, *total_bytes, parts.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(last_dl.0, last_dl.1);
    assert_eq!(last_dl.2.len(), 9);

    let src = write_lora(&env.dir.path().join("l"), "a.safetensors");
    let job = env.import(src.to_str().unwrap(), no_config()).await;
    assert_eq!(
        event_names(&install_events(&env.rec, job.id)),
        vec!["model_install_running", "model_install_completed"]
    );

    let job = env.import("owner/missing-repo", no_config()).await;
    assert_eq!(
        event_names(&install_events(&env.rec, job.id)),
        vec!["model_install_error"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_imports_of_one_source_are_one_job_and_cancel_works() {
    let env = setup();
    env.hub.add_repo(loras_repo("owner/loras"));
    env.hub.set_cdn_throttle(512, Duration::from_millis(20));
    let svc = env.mgr.install();
    let a = svc
        .heuristic_import("owner/loras::loras/detail.safetensors", no_config(), None)
        .unwrap();
    let b = svc
        .heuristic_import("owner/loras::loras/detail.safetensors", no_config(), None)
        .unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(svc.list_jobs().len(), 1);
    assert_eq!(
        svc.get_job_by_source("owner/loras::loras/detail.safetensors")
            .len(),
        1
    );
    let c = svc
        .heuristic_import("owner/loras::loras/other.safetensors", no_config(), None)
        .unwrap();
    assert_ne!(a.id, c.id);
    // Cancel the second one while it downloads: once its first bytes are in (the throttled
    // CDN keeps it going for seconds), never after a fixed wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !svc
        .get_job_by_id(c.id)
        .is_ok_and(|j| j.downloading() && j.bytes > 0)
    {
        assert!(std::time::Instant::now() < deadline, "never downloading");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    svc.cancel_job(c.id).unwrap();
    let all = svc
        .wait_for_installs(Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        all["owner/loras::loras/detail.safetensors"].status,
        InstallStatus::Completed
    );
    assert_eq!(
        all["owner/loras::loras/other.safetensors"].status,
        InstallStatus::Cancelled
    );
    assert_eq!(
        install_events(&env.rec, c.id)
            .last()
            .map(InstallEvent::name),
        Some("model_install_cancelled")
    );
    assert_eq!(env.store().all_models().unwrap().len(), 1);
    svc.prune_jobs();
    assert!(svc.list_jobs().is_empty());
    assert!(matches!(
        svc.get_job_by_id(a.id),
        Err(InstallError::UnknownJob(_))
    ));
}

// ------------------------------------------------------------------------------------ cache

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_and_cache_reuses_and_times_out() {
    let env = setup();
    let url = env
        .hub
        .add_url_download("77", "cached.bin", weights("cache", 5000));
    let svc = env.mgr.install();
    let p = svc.download_and_cache(&url, None, None).await.unwrap();
    assert!(p.starts_with(env.models.join(".cache")));
    assert_eq!(p.file_name().unwrap(), "cached.bin");
    assert_eq!(fs::read(&p).unwrap(), weights("cache", 5000));
    env.hub.clear_log();
    let again = svc.download_and_cache(&url, None, None).await.unwrap();
    assert_eq!(again, p);
    assert!(
        env.hub.requests().is_empty(),
        "the cached file was fetched again"
    );

    let slow = env
        .hub
        .add_url_download("78", "slow.bin", weights("slow", 20_000));
    env.hub.set_cdn_throttle(256, Duration::from_millis(50));
    let e = svc
        .download_and_cache(&slow, None, Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(matches!(e, InstallError::Timeout { .. }), "{e}");
    assert!(matches!(
        svc.download_and_cache("owner/repo", None, None).await,
        Err(InstallError::NotRemote(_))
    ));
}

// ------------------------------------------------------------------------------------ recovery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_recovery_rolls_back_unrecorded_promotions_and_drops_stale_staging() {
    let env = setup();
    let models = env.models.clone();
    // A promotion that never got its record: staged files renamed into place, intent written.
    let staging = models.join(".tmp/abcd");
    fs::create_dir_all(&staging).unwrap();
    fs::write(
        staging.join("staging.json"),
        serde_json::to_vec(&json!({"layout": 1, "source": "o/n", "kind": "hf", "commit": "c"}))
            .unwrap(),
    )
    .unwrap();
    let target = models.join("k1");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("w.safetensors"), b"w").unwrap();
    fs::write(
        staging.join("intent.json"),
        serde_json::to_vec(&json!({"key": "k1", "target": target, "moved_from": "files"})).unwrap(),
    )
    .unwrap();
    // Unresumable leftovers: no staging.json; a local copy.
    fs::create_dir_all(models.join(".tmp/junk/files")).unwrap();
    fs::write(models.join(".tmp/junk/files/x"), b"x").unwrap();
    let local = models.join(".tmp/local1");
    fs::create_dir_all(local.join("files")).unwrap();
    fs::write(local.join("files/y"), b"y").unwrap();
    fs::write(
        local.join("staging.json"),
        serde_json::to_vec(&json!({"layout": 1, "source": "/p", "kind": "local", "commit": null}))
            .unwrap(),
    )
    .unwrap();

    // A crash between the record and its fingerprints: the intent has them.
    let src = write_lora(&env.dir.path().join("r"), "r.safetensors");
    let done = env.mgr.install().install_path(&src, &no_config()).unwrap();
    let fps = env.store().model_files(done.key()).unwrap();
    env.store().set_model_files(done.key(), &[]).unwrap();
    let finished = models.join(".tmp/done1");
    fs::create_dir_all(&finished).unwrap();
    fs::write(
        finished.join("intent.json"),
        serde_json::to_vec(&json!({
            "key": done.key(), "target": models.join(done.path()), "moved_from": "files/r.safetensors",
            "files": fps,
        }))
        .unwrap(),
    )
    .unwrap();

    let mgr = build_manager(&models, &env.hub, hub_env(env.dir.path()), &env.rec);
    let report = mgr.recovery();
    assert_eq!(mgr.store().model_files(done.key()).unwrap(), fps);
    assert!(!finished.exists());
    assert!(models.join(done.path()).exists());
    assert_eq!(report.rolled_back, vec![target.clone()]);
    assert!(!target.exists());
    assert_eq!(fs::read(staging.join("files/w.safetensors")).unwrap(), b"w");
    assert!(!staging.join("intent.json").exists());
    assert_eq!(report.kept, vec![staging.clone()]);
    assert!(!models.join(".tmp/junk").exists());
    assert!(!local.exists());
}

// ------------------------------------------------------------------------------------ CLI

fn cli(cwd: &Path, hub: &HubServer, args: &[&str], token: Option<&str>) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_modelsync"));
    c.args(args)
        .current_dir(cwd)
        .env_remove("MODELSYNC_FILE")
        .env_remove("RUST_LOG")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HOME", cwd)
        .env("HF_HOME", cwd.join("hf-home"))
        .env("NO_COLOR", "1");
    if let Some(t) = token {
        c.env("HF_TOKEN", t);
    }
    c
}

#[test]
fn cli_import_prints_the_record_and_keeps_the_token_out_of_logs() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubServer::start();
    hub.add_repo(loras_repo("owner/gated").gated("auto"));
    let secret = "hf_cli_SECRET_0042";
    hub.grant(secret, "owner/gated");
    let out = cli(
        dir.path(),
        &hub,
        &["import", "owner/gated::loras/detail.safetensors"],
        None,
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HF_TOKEN"), "{err}");

    let out = cli(
        dir.path(),
        &hub,
        &[
            "-vvv",
            "import",
            "owner/gated::loras/detail.safetensors",
            "--name",
            "detail",
            "--config",
            "tags=[\"sharp\"]",
        ],
        Some(secret),
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("name:"), "{stdout}");
    assert!(stdout.contains("detail"), "{stdout}");
    assert!(
        stdout.contains("type:") && stdout.contains("lora"),
        "{stdout}"
    );
    for text in [&stdout, &stderr] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(!db_bytes(&dir.path().join("models")).contains(secret));

    let out = cli(
        dir.path(),
        &hub,
        &[
            "-o",
            "json",
            "import",
            "owner/gated::loras/other.safetensors",
        ],
        Some(secret),
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "lora");
    assert!(v["tags"].as_array().unwrap().iter().any(|t| t == "lora"));
}

#[test]
fn cli_import_killed_mid_download_resumes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubServer::start();
    // ~3 MiB: more than the queue's 1 MiB write buffer, so a kill leaves bytes in the `.part`.
    let k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    let big = st_bytes(
        &[
            (&format!("{k}.lora_down.weight"), &[2048, 768]),
            (&format!("{k}.lora_up.weight"), &[320, 2048]),
        ],
        Some(json!({"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora"})),
    );
    hub.add_repo(
        FakeRepo::new("owner/slow")
            .file("README.md", b"x".to_vec())
            .file("detail.safetensors", big.clone()),
    );
    hub.set_cdn_throttle(64 << 10, Duration::from_millis(25));
    let mut child = cli(
        dir.path(),
        &hub,
        &["--no-progress", "import", "owner/slow::detail.safetensors"],
        None,
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let tmp = dir.path().join("models/.tmp");
    // Waits on the partial file (bounded only so that a failing test ends), not a window.
    let mut saw_part = false;
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    while std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        if tmp.exists()
            && Env::files_under(&tmp).iter().any(|f| f.ends_with(".part"))
            && Env::files_under(&tmp).iter().any(|f| {
                f.ends_with(".part") && fs::metadata(tmp.join(f)).is_ok_and(|m| m.len() >= 1 << 20)
            })
        {
            saw_part = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(saw_part, "the download never started");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Nothing promoted, nothing recorded.
    let store = store::open(&dir.path().join("models/modelsync.db")).unwrap();
    assert!(store.all_models().unwrap().is_empty());
    drop(store);

    hub.clear_log();
    hub.set_cdn_throttle(1 << 20, Duration::from_millis(0));
    let out = cli(
        dir.path(),
        &hub,
        &["--no-progress", "import", "owner/slow::detail.safetensors"],
        None,
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It resumed: the CDN was asked for a range that does not start at 0.
    let resumed = hub.cdn_requests().iter().any(|r| {
        r.header("range")
            .is_some_and(|v| v.starts_with("bytes=") && !v.starts_with("bytes=0-"))
    });
    assert!(resumed, "{:?}", hub.cdn_requests());
    let store = store::open(&dir.path().join("models/modelsync.db")).unwrap();
    let all = store.all_models().unwrap();
    assert_eq!(all.len(), 1);
    let path = all[0].resolved_path(&dir.path().join("models"));
    assert_eq!(fs::read(path).unwrap(), big);
    // The resumed download hashed the earlier run's prefix once and the rest as it came.
    assert_eq!(
        all[0].common().hash,
        format!("blake3:{}", blake3::hash(&big).to_hex())
    );
    assert!(
        Env::files_under(&tmp).is_empty(),
        "{:?}",
        Env::files_under(&tmp)
    );
}

/// The install gate is an allow-list: a pickle importing anything outside it (here a
/// Lightning callback, which the scan calls "suspicious", not "dangerous") is refused unless
/// the entry allows unsafe pickles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspicious_pickle_refused_unless_allowed() {
    let env = setup();
    let p = env.dir.path().join("lightning.ckpt");
    let mut v = vec![0x80, 2];
    v.extend_from_slice(
        b"}(X\x01\x00\x00\x00wcpytorch_lightning.callbacks\nModelCheckpoint\n)\x81u.",
    );
    fs::write(&p, v).unwrap();
    let job = env.import(p.to_str().unwrap(), no_config()).await;
    assert_eq!(
        job.error_type.as_deref(),
        Some("DangerousPickle"),
        "{:?}",
        job.error
    );
    let msg = job.error.unwrap();
    assert!(
        msg.contains("suspicious") && msg.contains("pytorch_lightning.callbacks.ModelCheckpoint"),
        "{msg}"
    );
    assert!(env.promoted().is_empty());
    assert!(env.store().all_models().unwrap().is_empty());
    let rec = env
        .install_ok(
            p.to_str().unwrap(),
            cfg(json!({"unsafe_pickle": "allow", "type": "lora", "base": "sd-1"})),
        )
        .await;
    assert_eq!(rec.model_type(), ModelType::Lora);
}

/// A safetensors header entry: name, shape, data_offsets.
type Entry<'a> = (&'a str, Vec<u64>, [u64; 2]);

/// A safetensors header whose byte ranges lie about the file, and a GGUF whose tensor data
/// runs past its end, fail the install with an error naming the file and the tensor; nothing
/// is promoted or registered. A folder with one lying shard fails the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_weight_files_are_never_registered() {
    let env = setup();
    let k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    let down = format!("{k}.lora_down.weight");
    let up = format!("{k}.lora_up.weight");
    let meta = json!({"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora"});
    // (file, header entries (name, shape, offsets), data bytes, expected words in the error)
    let lies: Vec<(&str, Vec<Entry>, u64, &[&str])> = vec![
        (
            "past-end.safetensors",
            vec![
                (&down, vec![4, 768], [0, 6144]),
                (&up, vec![320, 4], [6144, 8704]),
            ],
            6144,
            &["past the end", "lora_up"],
        ),
        (
            "shape-lies.safetensors",
            vec![
                (&down, vec![4, 768], [0, 100]),
                (&up, vec![320, 4], [100, 2660]),
            ],
            2660,
            &["need 6144 bytes", "lora_down"],
        ),
        (
            "overlap.safetensors",
            vec![
                (&down, vec![4, 768], [0, 6144]),
                (&up, vec![320, 4], [6000, 8560]),
            ],
            8560,
            &["overlap", "lora_up"],
        ),
    ];
    for (file, entries, data, words) in &lies {
        let mut h = serde_json::Map::new();
        h.insert("__metadata__".into(), meta.clone());
        for (name, shape, off) in entries {
            h.insert(
                (*name).to_owned(),
                json!({"dtype": "F16", "shape": shape, "data_offsets": off}),
            );
        }
        let text = serde_json::to_string(&Value::Object(h)).unwrap();
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.resize(bytes.len() + usize::try_from(*data).unwrap(), 0);
        let p = env.dir.path().join(file);
        fs::write(&p, bytes).unwrap();
        let job = env.import(p.to_str().unwrap(), no_config()).await;
        let msg = crate::support::job_error(&job);
        assert_eq!(
            job.error_type.as_deref(),
            Some("ProbeError"),
            "{file}: {msg}"
        );
        assert!(msg.contains(file), "{msg}");
        for w in *words {
            assert!(msg.contains(w), "{file}: `{w}` not in {msg}");
        }
    }

    // GGUF: a header whose one tensor would end past the end of the file.
    let g = env.dir.path().join("cut.gguf");
    fx::gguf(
        &g,
        &[("general.architecture", "flux")],
        &[("img_in.weight", &[3072, 64])],
    );
    let len = fs::metadata(&g).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&g)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let job = env.import(g.to_str().unwrap(), no_config()).await;
    let msg = crate::support::job_error(&job);
    assert!(
        msg.contains("cut.gguf") && msg.contains("img_in.weight") && msg.contains("past the end"),
        "{msg}"
    );

    // A folder whose second shard was cut short.
    let folder = env.dir.path().join("lora-folder");
    fs::create_dir_all(&folder).unwrap();
    fs::write(folder.join("a.safetensors"), lora_bytes()).unwrap();
    let mut cut = lora_bytes();
    cut.truncate(cut.len() - 10);
    fs::write(folder.join("b.safetensors"), cut).unwrap();
    let job = env
        .import(
            folder.to_str().unwrap(),
            cfg(json!({"type": "lora", "base": "sd-1"})),
        )
        .await;
    let msg = crate::support::job_error(&job);
    assert!(msg.contains("b.safetensors"), "{msg}");
    assert!(env.promoted().is_empty());
    assert!(env.store().all_models().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unidentified_model_installs_as_unknown_with_a_warning_event() {
    let env = setup();
    let src = env.dir.path().join("mamba.safetensors");
    crate::support::probe_fixtures::safetensors(
        &src,
        &[
            ("backbone.embeddings.weight", &[64, 16]),
            ("backbone.layers.0.mixer.A_log", &[32, 4]),
            ("lm_head.weight", &[64, 16]),
        ],
        None,
    );
    let job = env.import(src.to_str().unwrap(), no_config()).await;
    assert!(job.complete(), "{:?}", job.error);
    let rec = job.config_out.clone().unwrap();
    assert_eq!(rec.model_type(), ModelType::Unknown);
    assert_eq!(rec.format(), ModelFormat::Checkpoint);
    assert_eq!(rec.base(), BaseModelType::Unknown);
    let evs = install_events(&env.rec, job.id);
    let names = event_names(&evs);
    let w = names
        .iter()
        .position(|n| *n == "model_install_warning")
        .unwrap_or_else(|| panic!("no warning event: {names:?}"));
    assert_eq!(names[w + 1], "model_install_completed", "{names:?}");
    let message = evs
        .iter()
        .find_map(|e| match e {
            InstallEvent::ModelInstallWarning { message, .. } => Some(message.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        message.contains("`backbone.embeddings.weight`")
            && message.contains("`config: {type: …, base: …}`"),
        "{message}"
    );
    assert_eq!(job.outcome.as_ref().unwrap().warnings, [message]);

    // The strict policy refuses the same file.
    let src2 = env.dir.path().join("mamba2.safetensors");
    fs::copy(&src, &src2).unwrap();
    let opts = modelsync::install::InstallOptions {
        unknown_models: modelsync::install::UnknownModels::Deny,
        ..Default::default()
    };
    let e = env
        .mgr
        .install()
        .install_path_with(&src2, &no_config(), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("settings.unknown_models: allow"), "{e}");
}
