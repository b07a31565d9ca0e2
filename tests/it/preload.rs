//! `apply --preload`: the load service wired into the reconciler, budgets from
//! `settings.cache`, and the ModelManager load facade.

use std::sync::Arc;
use std::time::Duration;

use modelsync::events::NullReporter;
use modelsync::load::{
    AnyModel, CacheConfig, DeviceSpec, HostBackend, LoadSettings, ModelCache, ModelLoadService,
    Precision,
};
use modelsync::manager::{ManagerError, ModelManager};
use modelsync::store::StoreError;
use modelsync::taxonomy::{BaseModelType, ModelType};

use crate::support::reconcile::{Work, assert_exit};

fn preload_manifest(w: &Work, cache: &str) {
    w.local_lora("a.safetensors", 1);
    w.local_lora("b.safetensors", 2);
    w.manifest(
        cache,
        "  - name: a\n    source: ./src/a.safetensors\n    preload: true\n  - name: b\n    source: ./src/b.safetensors\n",
    );
}

#[test]
fn apply_preload_warms_preload_entries_only() {
    let w = Work::new();
    preload_manifest(&w, "");
    let o = w.run(&["apply", "--preload", "--no-progress"]);
    assert_exit(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("preloaded a: 1 part(s)"), "{out}");
    assert!(!out.contains("preloaded b"), "{out}");

    // JSON Lines carry the preload event too.
    let o = w.run(&["apply", "--preload", "-o", "json"]);
    assert_exit(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.contains("\"preloaded\"") && l.contains("\"a\"")),
        "{out}"
    );
}

#[test]
fn a_preload_set_over_budget_is_an_error_not_a_crash() {
    let w = Work::new();
    preload_manifest(&w, "  cache: { ram: 1KiB, device: cpu }\n");
    let o = w.run(&["apply", "--preload", "--no-progress"]);
    assert_exit(&o, 1);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(all.contains("preload a: skipped"), "{all}");
    assert!(all.contains("budget"), "{all}");
    // The install itself converged and is kept.
    assert_eq!(w.store().all_models().unwrap().len(), 2);
}

#[test]
fn manager_loads_by_key_and_attr() {
    let w = Work::new();
    preload_manifest(&w, "");
    assert_exit(&w.run(&["apply", "--no-progress"]), 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let models = w.models();
        let cfg = modelsync::install::InstallConfig::from_env(&models, None).unwrap();
        let manager = ModelManager::open(
            cfg,
            &models.join("modelsync.db"),
            modelsync::download::DownloadQueueConfig::default(),
            Arc::new(NullReporter),
        )
        .unwrap();
        let rec = manager
            .store()
            .search_by_name(Some("a"), None, None)
            .unwrap()
            .remove(0);
        let err = manager.load_model_by_key(rec.key(), None).unwrap_err();
        assert!(matches!(err, ManagerError::NoLoadService), "{err}");

        let manager = manager
            .with_load_service(ModelLoadService::new(&models, &LoadSettings::default()).unwrap());
        let rec = manager
            .store()
            .search_by_name(Some("a"), None, None)
            .unwrap()
            .remove(0);
        let by_key = manager.load_model_by_key(rec.key(), None).unwrap();
        let by_attr = manager
            .load_model_by_attr("a", rec.base(), ModelType::Lora, None)
            .unwrap();
        assert_eq!(by_key.cache_key(), by_attr.cache_key());
        let err = manager
            .load_model_by_attr("a", BaseModelType::Flux, ModelType::Lora, None)
            .unwrap_err();
        assert!(
            matches!(err, ManagerError::Store(StoreError::UnknownModel(_))),
            "{err}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// settings.cache: precision, working memory, keep-alive, pinning; `device: mps` is refused by
// the parser.

fn parse_manifest(yaml: &str) -> Result<modelsync::manifest::Manifest, String> {
    modelsync::manifest::parse_str(yaml, std::path::Path::new("models.yaml"), &|_| None)
        .map_err(|e| e.to_string())
}

#[test]
fn cache_settings_parse_into_load_settings() {
    let m = parse_manifest(
        "version: 1\nsettings:\n  cache: { ram: 4GiB, vram: 12GiB, working_memory: 2GiB, device: cpu, precision: bf16, keep_alive: 5m, pin_preloaded: false }\nmodels:\n  - name: a\n    source: o/n\n    precision: fp16\n",
    )
    .unwrap();
    let s = LoadSettings::from_cache_settings(&m.settings.cache).unwrap();
    assert_eq!(
        (s.ram, s.vram, s.working_memory),
        (4 << 30, 12 << 30, 2 << 30)
    );
    assert_eq!(s.precision, Precision::Bf16);
    assert_eq!(s.device, DeviceSpec::Cpu);
    assert_eq!(s.keep_alive, Some(Duration::from_mins(5)));
    assert!(!s.pin_preloaded);
    assert_eq!(m.models[0].precision.as_deref(), Some("fp16"));
    // Defaults: keep forever, pin preloads, 3 GiB reserve, the file's dtypes.
    let m = parse_manifest("version: 1\nsettings:\n  cache: { keep_alive: 0 }\n").unwrap();
    let s = LoadSettings::from_cache_settings(&m.settings.cache).unwrap();
    assert_eq!(
        s.keep_alive, None,
        "0 keeps models until the budget needs the room"
    );
    assert!(s.pin_preloaded);
    assert_eq!(s.working_memory, 3 << 30);
    assert_eq!(s.precision, Precision::Auto);
}

#[test]
fn bad_cache_settings_point_at_their_value() {
    let e = parse_manifest("version: 1\nsettings:\n  cache:\n    device: mps\n").unwrap_err();
    assert!(
        e.starts_with("models.yaml:4:13: `cache.device` `mps` is not supported"),
        "{e}"
    );
    let e = parse_manifest("version: 1\nsettings:\n  cache:\n    precision: fp8\n").unwrap_err();
    assert!(
        e.starts_with("models.yaml:4:16: invalid `cache.precision` `fp8`"),
        "{e}"
    );
    let e = parse_manifest("version: 1\nsettings:\n  cache:\n    keep_alive: soon\n").unwrap_err();
    assert!(e.starts_with("models.yaml:4:17: `cache.keep_alive`"), "{e}");
    let e =
        parse_manifest("version: 1\nmodels:\n  - name: a\n    source: o/n\n    precision: half\n")
            .unwrap_err();
    assert!(
        e.starts_with("models.yaml:5:16: invalid `precision` `half`"),
        "{e}"
    );
}

fn keep_alive_cache(keep_alive: Option<Duration>) -> ModelCache {
    ModelCache::with_config(
        CacheConfig {
            ram: 1000,
            vram: 0,
            keep_alive,
            ..CacheConfig::default()
        },
        Arc::new(HostBackend),
    )
}

fn put(cache: &ModelCache, key: &str) -> Arc<AnyModel> {
    cache
        .get_or_load(key, || Ok(10), || Ok(AnyModel::other(10, ())))
        .unwrap()
        .0
}

/// Under tokio's paused clock the runtime jumps to the next timer when idle: the keep-alive
/// task's wake-up comes before the test's own (later) one, so every check sees its sweep.
#[tokio::test(start_paused = true)]
async fn keep_alive_releases_models_unused_for_that_long() {
    let ka = Duration::from_mins(1);
    let cache = keep_alive_cache(Some(ka));
    let task = cache.spawn_keep_alive().expect("keep-alive is on");
    put(&cache, "a");
    put(&cache, "b");
    put(&cache, "pinned");
    cache.pin("pinned");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(cache.get("b").is_some(), "b used at 30 s");
    tokio::time::sleep(Duration::from_secs(31)).await; // 61 s
    assert!(!cache.contains("a"), "a unused for 61 s");
    assert!(cache.contains("b") && cache.contains("pinned"));
    // A locked model is in use: never released, and its clock starts at the unlock.
    let l = put(&cache, "locked");
    let guard = cache.lock("locked", &l).unwrap();
    tokio::time::sleep(Duration::from_mins(2)).await; // 181 s
    assert!(!cache.contains("b"), "b unused since 30 s");
    assert!(cache.contains("locked"));
    drop(guard);
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(cache.contains("locked"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!cache.contains("locked"));
    assert!(cache.contains("pinned"), "pinned models stay");
    assert_eq!(cache.stats().expired, 3);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn keep_alive_zero_keeps_models_and_preloads_are_pinned_unless_told_otherwise() {
    let forever = keep_alive_cache(None);
    assert!(forever.spawn_keep_alive().is_none());
    put(&forever, "a");
    tokio::time::sleep(Duration::from_hours(24 * 365)).await;
    assert!(forever.contains("a") && forever.expire().is_empty());

    let w = Work::new();
    w.local_lora("a.safetensors", 1);
    let path = w.path().join("src/a.safetensors");
    let cfg = modelsync::AnyModelConfig::from_json(serde_json::json!({
        "key": "ka", "name": "a", "type": "lora", "format": "lycoris", "base": "sd-1",
        "path": path.to_str().unwrap()
    }))
    .unwrap();
    for pin in [true, false] {
        let settings = LoadSettings {
            device: DeviceSpec::Cpu,
            backend: modelsync::load::BackendKind::Host,
            keep_alive: Some(Duration::from_mins(5)),
            pin_preloaded: pin,
            ..LoadSettings::default()
        };
        let svc = ModelLoadService::new(w.path(), &settings).unwrap();
        let task = svc.cache().spawn_keep_alive().unwrap();
        svc.preload(&cfg).unwrap();
        tokio::time::sleep(Duration::from_mins(6)).await;
        assert_eq!(svc.cache().contains("ka"), pin, "pin_preloaded: {pin}");
        task.abort();
    }
}
