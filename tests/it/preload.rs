//! `apply --preload`: the load service wired into the reconciler, budgets from
//! `settings.cache`, and the ModelManager load facade.

use std::sync::Arc;

use modelsync::events::NullReporter;
use modelsync::load::{LoadSettings, ModelLoadService};
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
