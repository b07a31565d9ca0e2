//! The invocation-context API on `ModelManager`: loads without a record of a local file and
//! folder, of a Hub file fetched from the emulator into `models_dir/.download_cache` (once: a
//! second call makes no request), the cache's size cap, and that `gc` and `status` leave the
//! download cache alone.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use modelsync::events::NullReporter;
use modelsync::hub::{HubClient, HubEnv, HubOptions};
use modelsync::install::InstallConfig;
use modelsync::load::{
    AnyModel, BackendKind, DeviceSpec, LoadError, LoadSettings, ModelLoadService,
};
use modelsync::manager::{DownloadCacheConfig, ManagerError, ModelManager};

use crate::support::hub_server::FakeRepo;
use crate::support::pyfix::{self, Spec};
use crate::support::reconcile::{Work, assert_exit, body_requests, lora_bytes};

fn manager(w: &Work) -> ModelManager {
    let models = w.models();
    std::fs::create_dir_all(&models).unwrap();
    let mut o = HubOptions::new(w.hub.endpoint_url());
    o.retry_base_delay = Duration::from_millis(1);
    let hub = HubClient::with_options(o).unwrap();
    let env = HubEnv {
        home: Some(w.path().join(".hf")),
        ..HubEnv::empty()
    };
    let cfg = InstallConfig::new(&models, hub, env);
    let store: Arc<dyn modelsync::RecordStore> =
        Arc::from(modelsync::store::open(&models.join("modelsync.db")).unwrap());
    let queue = modelsync::download::DownloadQueue::new(
        modelsync::download::DownloadQueueConfig::default(),
        Arc::new(NullReporter),
    )
    .unwrap();
    let settings = LoadSettings {
        device: DeviceSpec::Cpu,
        backend: BackendKind::Host,
        ..LoadSettings::default()
    };
    ModelManager::from_parts(cfg, store, queue, Arc::new(NullReporter))
        .unwrap()
        .with_load_service(ModelLoadService::new(&models, &settings).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_files_and_folders_load_without_a_record() {
    let w = Work::new();
    let mgr = manager(&w);
    let file = w.path().join("lora.safetensors");
    let vae = w.path().join("pipe/vae");
    pyfix::write(&[
        Spec::safetensors(
            file.clone(),
            vec![("a.weight".into(), vec![4, 8]), ("b".into(), vec![3])],
        ),
        Spec::safetensors(
            vae.join("diffusion_pytorch_model.safetensors"),
            vec![("decoder.conv_in.weight".into(), vec![8, 4, 3, 3])],
        ),
    ]);
    std::fs::write(
        vae.join("config.json"),
        r#"{"_class_name": "AutoencoderKL"}"#,
    )
    .unwrap();
    std::fs::write(w.path().join("pipe/model_index.json"), "{}").unwrap();

    let m = mgr.load_local_model(&file, None).unwrap();
    let sd = m.model().state_dict().expect("a state dict");
    assert_eq!(sd.len(), 2);
    assert_eq!(sd.get("a.weight").unwrap().shape, [4, 8]);
    assert_eq!(sd.get("a.weight").unwrap().data.len(), 4 * 8 * 2, "f16");
    let again = mgr.load_local_model(&file, None).unwrap();
    assert!(
        Arc::ptr_eq(m.model(), again.model()),
        "the second load is a cache hit"
    );
    let (state, guard) = m.model_on_device().unwrap();
    assert!(state.is_some() && guard.tensor_count() == 2);
    drop(guard);

    // A diffusers submodel folder loads; the whole pipeline needs a submodel or a loader.
    let v = mgr.load_local_model(&vae, None).unwrap();
    assert_eq!(v.model().tensor_count(), 1);
    let err = mgr
        .load_local_model(&w.path().join("pipe"), None)
        .unwrap_err();
    assert!(
        matches!(err, ManagerError::Load(LoadError::Pipeline { .. })),
        "{err}"
    );
    // A caller's loader is used as given.
    let loader =
        |p: &Path| -> Result<AnyModel, LoadError> { Ok(AnyModel::other(1, p.to_path_buf())) };
    let c = mgr
        .load_local_model(&w.path().join("pipe"), Some(&loader))
        .unwrap();
    assert!(c.model().downcast_ref::<std::path::PathBuf>().is_some());
    // The default pickle policy is the scanner's: a dangerous pickle is refused.
    let evil = w.path().join("evil.ckpt");
    std::fs::write(&evil, b"\x80\x02cos\nsystem\n").unwrap();
    let err = mgr.load_local_model(&evil, None).unwrap_err().to_string();
    assert!(err.contains("os.system"), "{err}");
    let err = mgr
        .load_local_model(&w.path().join("missing.safetensors"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.safetensors"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_file_is_downloaded_once_and_gc_and_status_leave_it() {
    let w = Work::new();
    let bytes = lora_bytes(7, 2);
    w.hub.add_repo(
        FakeRepo::new("owner/loras")
            .file("README.md", "# loras\n")
            .file("lora.safetensors", bytes.clone()),
    );
    let mgr = manager(&w);
    let path = mgr
        .download_and_cache_model("owner/loras::lora.safetensors")
        .await
        .unwrap();
    assert!(
        path.starts_with(w.models().join(".download_cache")),
        "{}",
        path.display()
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(
        body_requests(&w.hub)
            .iter()
            .any(|r| r.contains("/resolve/") && r.ends_with("/lora.safetensors")),
        "{:?}",
        body_requests(&w.hub)
    );
    let seen = w.hub.requests().len();

    let again = mgr
        .download_and_cache_model("owner/loras::lora.safetensors")
        .await
        .unwrap();
    assert_eq!(again, path);
    let loaded = mgr
        .load_remote_model("owner/loras::lora.safetensors", None)
        .await
        .unwrap();
    assert_eq!(loaded.model().tensor_count(), 3);
    assert_eq!(
        w.hub.requests().len(),
        seen,
        "a cached source makes no request: {:?}",
        &w.hub.requests()[seen..]
    );

    // The whole repo is a folder.
    let dir = mgr.download_and_cache_model("owner/loras").await.unwrap();
    assert!(
        dir.is_dir() && dir.join("lora.safetensors").is_file(),
        "{}",
        dir.display()
    );

    // gc and status never take the download cache for garbage or orphans.
    w.manifest("", "");
    let o = w.run(&["gc", "--yes", "--min-age", "0s"]);
    assert_exit(&o, 0);
    assert!(
        path.is_file() && dir.is_dir(),
        "gc removed a download-cache entry"
    );
    let o = w.run(&["status"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.contains(".download_cache"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_cap_removes_the_least_recently_used_download() {
    let w = Work::new();
    let urls: Vec<String> = (0..3)
        .map(|i| {
            w.hub
                .add_url_download(&format!("{i}"), &format!("m{i}.bin"), vec![i as u8; 1000])
        })
        .collect();
    let mgr = manager(&w).with_download_cache(DownloadCacheConfig {
        max_bytes: 2500,
        ..DownloadCacheConfig::default()
    });
    let p0 = mgr.download_and_cache_model(&urls[0]).await.unwrap();
    let p1 = mgr.download_and_cache_model(&urls[1]).await.unwrap();
    assert_eq!(p0.file_name().unwrap(), "m0.bin", "named by the server");
    // m0 is used again, so m1 is now the least recently used.
    assert_eq!(mgr.download_and_cache_model(&urls[0]).await.unwrap(), p0);
    let p2 = mgr.download_and_cache_model(&urls[2]).await.unwrap();
    assert!(p0.is_file() && p2.is_file());
    assert!(!p1.exists(), "m1 went to bring the cache under 2500 bytes");
    let fetched = |w: &Work| {
        body_requests(&w.hub)
            .iter()
            .filter(|r| r.contains("/api/download/models/1"))
            .count()
    };
    let once = fetched(&w);
    assert!(once > 0);
    let p1 = mgr.download_and_cache_model(&urls[1]).await.unwrap();
    assert_eq!(std::fs::read(&p1).unwrap(), vec![1u8; 1000]);
    assert_eq!(fetched(&w), 2 * once, "a removed entry is downloaded again");
}

#[tokio::test]
async fn unsupported_and_local_sources_are_refused() {
    let w = Work::new();
    let mgr = manager(&w);
    let err = mgr
        .download_and_cache_model("oci://registry.example/models/x:1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`oci://` sources are not supported yet"),
        "{err}"
    );
    let err = mgr
        .download_and_cache_model("./local.safetensors")
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::Download(_)), "{err}");
}
