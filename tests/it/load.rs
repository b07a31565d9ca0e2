//! The load service: registry, cache budgets/LRU/locks/staleness, single-flight loads, the
//! memory-mapped backend against real safetensors files, and (with `--features torch`) the
//! libtorch backend.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use modelsync::AnyModelConfig;
use modelsync::load::{
    AnyModel, BackendKind, DeviceSpec, HostBackend, LoadError, LoadEvent, LoadRequest,
    LoadSettings, LoaderKey, LoaderRegistry, ModelCache, ModelLoadService, ModelLoader, Precision,
    cache_key,
};
use modelsync::report::{Event, Recorder};
use modelsync::taxonomy::{BaseModelType, ModelFormat, ModelType, SubModelType};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;

use crate::support::pyfix::{self, Kind, Spec};

/// Little-endian bytes of f32 values.
fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a safetensors file with the given (name, dtype, shape, bytes) tensors.
fn write_st(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| ((*n).to_owned(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A small file with several dtypes.
fn sample_tensors() -> Vec<(&'static str, Dtype, Vec<usize>, Vec<u8>)> {
    vec![
        (
            "a.weight",
            Dtype::F32,
            vec![2, 3],
            f32s(&[1.0, -2.5, 3.25, 0.0, 1e-3, 7.0]),
        ),
        (
            "b.bias",
            Dtype::F16,
            vec![4],
            vec![0, 60, 0, 64, 0, 188, 0, 0],
        ),
        (
            "c.idx",
            Dtype::I64,
            vec![2],
            [5i64, -9].iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        ("d.bf", Dtype::BF16, vec![2], vec![0x80, 0x3f, 0x00, 0xc0]),
        ("e.u8", Dtype::U8, vec![3], vec![1, 2, 255]),
    ]
}

fn lora_config(key: &str, path: &Path) -> AnyModelConfig {
    AnyModelConfig::from_json(json!({
        "key": key, "name": format!("lora-{key}"), "type": "lora", "format": "lycoris",
        "base": "sd-1", "path": path.to_str().unwrap(), "hash": format!("blake3:{key}")
    }))
    .unwrap()
}

fn host_settings(ram: u64) -> LoadSettings {
    LoadSettings {
        ram,
        vram: 0,
        device: DeviceSpec::Cpu,
        precision: Precision::Auto,
        backend: BackendKind::Host,
        ..LoadSettings::default()
    }
}

fn host_cache(ram: u64) -> ModelCache {
    ModelCache::new(ram, 0, Arc::new(HostBackend))
}

/// Loads a synthetic model of `bytes` into `cache` under `key`.
fn put(cache: &ModelCache, key: &str, bytes: u64) -> Result<Arc<AnyModel>, LoadError> {
    cache
        .get_or_load(
            key,
            || Ok(bytes),
            || Ok(AnyModel::other(bytes, key.to_owned())),
        )
        .map(|(m, _)| m)
}

// ---------------------------------------------------------------------------------------------
// Registry

struct Named(&'static str);

impl ModelLoader for Named {
    fn name(&self) -> &'static str {
        self.0
    }
    fn load(&self, _: &LoadRequest<'_>) -> Result<AnyModel, LoadError> {
        Ok(AnyModel::other(1, self.0))
    }
}

#[test]
fn registry_refuses_a_second_loader_for_one_key() {
    let mut r = LoaderRegistry::new();
    let key = LoaderKey::new(BaseModelType::Any, Some(ModelType::Vae), None);
    r.register(key, Arc::new(Named("one"))).unwrap();
    let err = r.register(key, Arc::new(Named("two"))).unwrap_err();
    assert!(matches!(err, LoadError::DuplicateLoader(k) if k == key));
    assert_eq!(
        err.to_string(),
        "a loader is already registered for base `any`, type `vae`, format `any`"
    );
    // The defaults do not conflict with each other, and a default key cannot be re-registered.
    let mut d = LoaderRegistry::with_defaults();
    let lora = LoaderKey::new(
        BaseModelType::Any,
        Some(ModelType::Lora),
        Some(ModelFormat::Lycoris),
    );
    assert!(matches!(
        d.register(lora, Arc::new(Named("x"))),
        Err(LoadError::DuplicateLoader(_))
    ));
}

#[test]
fn registry_picks_the_most_specific_loader_and_names_unknown_combinations() {
    let mut r = LoaderRegistry::new();
    r.register(
        LoaderKey::new(BaseModelType::Any, Some(ModelType::Vae), None),
        Arc::new(Named("any-vae")),
    )
    .unwrap();
    r.register(
        LoaderKey::new(
            BaseModelType::StableDiffusionXL,
            Some(ModelType::Vae),
            Some(ModelFormat::Diffusers),
        ),
        Arc::new(Named("sdxl-vae-diffusers")),
    )
    .unwrap();
    r.register(
        LoaderKey::new(BaseModelType::Flux, None, None),
        Arc::new(Named("flux-anything")),
    )
    .unwrap();
    let name = |b, t, f| r.get(b, t, f).map(|l| l.name());
    assert_eq!(
        name(
            BaseModelType::StableDiffusionXL,
            ModelType::Vae,
            ModelFormat::Diffusers
        )
        .unwrap(),
        "sdxl-vae-diffusers"
    );
    assert_eq!(
        name(
            BaseModelType::StableDiffusion1,
            ModelType::Vae,
            ModelFormat::Checkpoint
        )
        .unwrap(),
        "any-vae"
    );
    assert_eq!(
        name(BaseModelType::Flux, ModelType::Vae, ModelFormat::Checkpoint).unwrap(),
        "flux-anything"
    );
    let err = name(
        BaseModelType::StableDiffusion1,
        ModelType::Lora,
        ModelFormat::Lycoris,
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::NotImplemented { .. }));
    assert_eq!(
        err.to_string(),
        "no loader for base `sd-1`, type `lora`, format `lycoris`"
    );
}

#[test]
fn default_registry_has_no_onnx_loader() {
    let d = tempfile::tempdir().unwrap();
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20)).unwrap();
    let cfg = AnyModelConfig::from_json(json!({
        "name": "o", "type": "onnx", "format": "onnx", "base": "sd-1", "path": "o.onnx"
    }))
    .unwrap();
    let err = svc.load_model(&cfg, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no loader for base `sd-1`, type `onnx`, format `onnx`"
    );
}

// ---------------------------------------------------------------------------------------------
// Cache

#[test]
fn budget_evicts_least_recently_used_first() {
    let cache = host_cache(100);
    put(&cache, "a", 40).unwrap();
    put(&cache, "b", 40).unwrap();
    assert!(cache.get("a").is_some()); // a is now more recent than b
    put(&cache, "c", 40).unwrap();
    assert_eq!(cache.keys_lru(), ["a", "c"]);
    let s = cache.stats();
    assert_eq!((s.evictions, s.entries, s.ram_used), (1, 2, 80));
    assert_eq!(s.bytes_by_device.get("cpu"), Some(&80));
    put(&cache, "d", 60).unwrap();
    assert_eq!(cache.keys_lru(), ["c", "d"], "only the oldest had to go");
    put(&cache, "e", 61).unwrap();
    assert_eq!(cache.keys_lru(), ["e"], "both older entries had to go");
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.loads, s.evictions), (1, 5, 5, 4));
}

#[test]
fn a_model_larger_than_the_budget_is_refused_before_loading() {
    let cache = host_cache(100);
    let calls = AtomicUsize::new(0);
    let err = cache
        .get_or_load(
            "big",
            || Ok(101),
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(AnyModel::other(101, ()))
            },
        )
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(
        matches!(
            err,
            LoadError::TooLarge {
                needed: 101,
                budget: 100,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("budget is 100 B"), "{err}");
    // An estimate that lied is caught after loading, and nothing is kept.
    let err = cache
        .get_or_load("liar", || Ok(10), || Ok(AnyModel::other(500, ())))
        .unwrap_err();
    assert!(
        matches!(err, LoadError::TooLarge { needed: 500, .. }),
        "{err}"
    );
    assert_eq!(cache.stats().entries, 0);
}

#[test]
fn a_locked_model_is_never_evicted() {
    let cache = host_cache(100);
    let a = put(&cache, "a", 60).unwrap();
    let guard = cache.lock("a", &a).unwrap();
    put(&cache, "b", 40).unwrap();
    // c needs 40: b (unlocked) goes, a (locked, older) stays.
    put(&cache, "c", 40).unwrap();
    assert!(cache.contains("a") && cache.contains("c") && !cache.contains("b"));
    // d needs 50: only c is evictable, which is not enough.
    let err = put(&cache, "d", 50).unwrap_err();
    assert!(
        matches!(err, LoadError::OutOfBudget { locked: 60, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("held by locked models"), "{err}");
    assert_eq!(cache.stats().locked, 1);
    drop(guard);
    assert_eq!(cache.stats().locked, 0);
    put(&cache, "d", 50).unwrap();
    assert!(!cache.contains("a"), "unlocked, a is the oldest and goes");
}

#[test]
fn a_stale_entry_goes_at_its_last_unlock() {
    let cache = host_cache(100);
    let a = put(&cache, "a", 10).unwrap();
    let g1 = cache.lock("a", &a).unwrap();
    let g2 = cache.lock("a", &a).unwrap();
    cache.mark_stale("a");
    assert!(cache.contains("a"));
    drop(g1);
    assert!(cache.contains("a"), "still locked once");
    drop(g2);
    assert!(!cache.contains("a"));
    // An unlocked entry goes at once.
    put(&cache, "b", 10).unwrap();
    cache.mark_stale("b");
    assert!(!cache.contains("b"));
    // The next load reads again.
    let (_, hit) = cache
        .get_or_load("b", || Ok(10), || Ok(AnyModel::other(10, ())))
        .unwrap();
    assert!(!hit);
}

#[test]
fn dropping_a_key_never_drops_one_that_shares_its_prefix() {
    let cache = host_cache(1000);
    for k in ["ab", "ab:vae", "ab:unet", "abc", "abc:vae", "a"] {
        put(&cache, k, 1).unwrap();
    }
    assert_eq!(cache_key("ab", Some(SubModelType::Vae)), "ab:vae");
    cache.drop_model("ab");
    let mut left = cache.keys_lru();
    left.sort();
    assert_eq!(left, ["a", "abc", "abc:vae"]);
    cache.mark_stale("abc");
    assert!(cache.contains("abc:vae"), "mark_stale is exact");
}

/// Waits for `cond` (another thread's progress), bounded only so that a failing test ends.
fn until(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "gave up waiting");
        std::thread::yield_now();
    }
}

#[test]
fn concurrent_loads_of_one_key_load_once() {
    let cache = host_cache(1000);
    let calls = Arc::new(AtomicUsize::new(0));
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let others = u64::try_from(n - 1).unwrap();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let watched = cache.clone();
                cache
                    .get_or_load(
                        "k",
                        || Ok(10),
                        || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            // Hold the flight open until every other thread has joined it.
                            until(|| watched.stats().hits >= others);
                            Ok(AnyModel::other(10, 42u32))
                        },
                    )
                    .unwrap()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(results.iter().filter(|(_, hit)| !hit).count(), 1);
    for (m, _) in &results {
        assert!(Arc::ptr_eq(m, &results[0].0));
        assert_eq!(m.downcast_ref::<u32>(), Some(&42));
    }
    let s = cache.stats();
    assert_eq!((s.loads, s.misses, s.hits), (1, 1, 7));
}

#[test]
fn waiters_get_the_error_of_a_failed_concurrent_load() {
    let cache = host_cache(1000);
    let barrier = Arc::new(Barrier::new(2));
    let leader = {
        let (cache, barrier) = (cache.clone(), barrier.clone());
        std::thread::spawn(move || {
            let watched = cache.clone();
            cache.get_or_load(
                "k",
                || Ok(1),
                || {
                    barrier.wait();
                    // Fail only once the waiter has joined the flight.
                    until(|| watched.stats().hits >= 1);
                    Err(LoadError::Loader {
                        key: "k".into(),
                        reason: "disk on fire".into(),
                    })
                },
            )
        })
    };
    barrier.wait(); // the leader is inside its loader now
    let err = cache
        .get_or_load("k", || Ok(1), || panic!("the waiter must not load"))
        .unwrap_err();
    assert!(matches!(&err, LoadError::Concurrent { .. }), "{err}");
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert!(leader.join().unwrap().is_err());
    assert_eq!(cache.stats().entries, 0);
}

// ---------------------------------------------------------------------------------------------
// Service + memory-mapped backend

#[test]
fn mmap_backend_returns_the_files_tensors_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("loras/detail.safetensors");
    let tensors = sample_tensors();
    write_st(&path, &tensors);
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20)).unwrap();
    // A relative record path resolves against models_dir.
    let cfg = AnyModelConfig::from_json(json!({
        "key": "k1", "name": "detail", "type": "lora", "format": "lycoris", "base": "sd-1",
        "path": "loras/detail.safetensors"
    }))
    .unwrap();
    let loaded = svc.load_model(&cfg, None).unwrap();
    let sd = loaded.model().state_dict().expect("a state dict");
    let file = std::fs::read(&path).unwrap();
    let reference = safetensors::SafeTensors::deserialize(&file).unwrap();
    assert_eq!(sd.len(), reference.len());
    assert_eq!(sd.len(), tensors.len());
    for (name, view) in reference.tensors() {
        let t = sd
            .get(&name)
            .unwrap_or_else(|| panic!("tensor {name} missing"));
        assert_eq!(t.dtype, view.dtype(), "{name}");
        assert_eq!(t.shape, view.shape(), "{name}");
        assert_eq!(t.data, view.data(), "{name}");
    }
    let expected_bytes: u64 = tensors.iter().map(|t| t.3.len() as u64).sum();
    assert_eq!(sd.bytes(), expected_bytes);
    assert_eq!(loaded.config(), &cfg);
    // The guard: the host backend's device model is the host model itself.
    let (state, guard) = loaded.model_on_device().unwrap();
    assert_eq!(state.unwrap().len(), tensors.len());
    assert!(Arc::ptr_eq(guard.as_host().unwrap(), loaded.model()));
    assert_eq!(guard.tensor_count(), tensors.len());
    assert_eq!(svc.cache().stats().locked, 1);
    drop(guard);
    assert_eq!(svc.cache().stats().locked, 0);
    // Second load: a hit, the same model.
    let again = svc.load_model(&cfg, None).unwrap();
    assert!(Arc::ptr_eq(again.model(), loaded.model()));
    assert_eq!(svc.cache().stats().hits, 1);
}

#[test]
fn sharded_folder_loads_every_shard_and_refuses_duplicate_names() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("t5");
    write_st(
        &dir.join("model-00001-of-00002.safetensors"),
        &[("x", Dtype::U8, vec![1], vec![1])],
    );
    write_st(
        &dir.join("model-00002-of-00002.safetensors"),
        &[("y", Dtype::U8, vec![2], vec![2, 3])],
    );
    std::fs::write(dir.join("model.safetensors.index.json"), "{}").unwrap();
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20)).unwrap();
    let cfg = AnyModelConfig::from_json(json!({
        "key": "t5", "name": "t5", "type": "t5_encoder", "format": "t5_encoder", "base": "any", "path": "t5"
    }))
    .unwrap();
    let m = svc.load_model(&cfg, None).unwrap();
    let sd = m.model().state_dict().unwrap();
    assert_eq!(sd.iter().map(|t| t.name).collect::<Vec<_>>(), ["x", "y"]);
    assert_eq!(sd.get("y").unwrap().data, [2, 3]);

    write_st(
        &dir.join("model-00002-of-00002.safetensors"),
        &[("x", Dtype::U8, vec![1], vec![9])],
    );
    svc.cache().drop_model("t5");
    let err = svc.load_model(&cfg, None).unwrap_err();
    assert!(matches!(err, LoadError::DuplicateTensor { .. }), "{err}");
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

fn pipeline(root: &Path) -> AnyModelConfig {
    write_st(
        &root.join("sd15/unet/diffusion_pytorch_model.safetensors"),
        &[("conv_in.weight", Dtype::F32, vec![2], f32s(&[1.0, 2.0]))],
    );
    write_st(
        &root.join("sd15/unet/diffusion_pytorch_model.fp16.safetensors"),
        &[("conv_in.weight", Dtype::F16, vec![2], vec![0, 60, 0, 64])],
    );
    write_st(
        &root.join("sd15/my_vae/diffusion_pytorch_model.safetensors"),
        &[
            ("decoder.w", Dtype::F32, vec![1], f32s(&[3.0])),
            ("encoder.w", Dtype::F32, vec![1], f32s(&[4.0])),
        ],
    );
    std::fs::create_dir_all(root.join("sd15/tokenizer")).unwrap();
    std::fs::write(root.join("sd15/tokenizer/vocab.json"), r#"{"a":1}"#).unwrap();
    std::fs::write(root.join("sd15/tokenizer/merges.txt"), "a b\n").unwrap();
    std::fs::create_dir_all(root.join("sd15/text_encoder")).unwrap();
    std::fs::write(
        root.join("sd15/text_encoder/pytorch_model.bin"),
        b"PK\x03\x04pickle",
    )
    .unwrap();
    AnyModelConfig::from_json(json!({
        "key": "p1", "name": "sd15", "type": "main", "format": "diffusers", "base": "sd-1", "path": "sd15",
        "repo_variant": "fp16",
        "submodels": {"vae": {"path_or_prefix": "my_vae", "model_type": "vae"}}
    }))
    .unwrap()
}

#[test]
fn main_diffusers_models_need_a_submodel_and_find_its_folder() {
    let d = tempfile::tempdir().unwrap();
    let cfg = pipeline(d.path());
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20)).unwrap();

    let err = svc.load_model(&cfg, None).unwrap_err();
    assert!(matches!(err, LoadError::SubmodelRequired { .. }), "{err}");
    assert!(err.to_string().contains("submodel type"), "{err}");

    // unet: the fp16 variant file, as the record's repo_variant says.
    let unet = svc.load_model(&cfg, Some(SubModelType::UNet)).unwrap();
    assert_eq!(unet.cache_key(), "p1:unet");
    let t = unet
        .model()
        .state_dict()
        .unwrap()
        .get("conv_in.weight")
        .unwrap();
    assert_eq!((t.dtype, t.data), (Dtype::F16, &[0u8, 60, 0, 64][..]));
    // vae: the folder the submodels map names.
    let vae = svc.load_model(&cfg, Some(SubModelType::Vae)).unwrap();
    assert_eq!(vae.model().tensor_count(), 2);
    // tokenizer: weightless, its files.
    let tok = svc.load_model(&cfg, Some(SubModelType::Tokenizer)).unwrap();
    let AnyModel::Files(files) = tok.model().as_ref() else {
        panic!("files expected")
    };
    assert_eq!(
        files.names().collect::<Vec<_>>(),
        ["merges.txt", "vocab.json"]
    );
    assert_eq!(files.get("vocab.json"), Some(&br#"{"a":1}"#[..]));
    // text_encoder: only a pickle file, refused.
    let err = svc
        .load_model(&cfg, Some(SubModelType::TextEncoder))
        .unwrap_err();
    assert!(matches!(err, LoadError::PickleRefused { .. }), "{err}");
    assert!(err.to_string().contains("pytorch_model.bin"), "{err}");
    // A weight-bearing submodel folder without weights is an error, not an empty model.
    std::fs::create_dir_all(d.path().join("sd15/safety_checker")).unwrap();
    std::fs::write(d.path().join("sd15/safety_checker/config.json"), "{}").unwrap();
    let err = svc
        .load_model(&cfg, Some(SubModelType::SafetyChecker))
        .unwrap_err();
    assert!(matches!(err, LoadError::NoWeights { .. }), "{err}");
    // scheduler: no folder.
    let err = svc
        .load_model(&cfg, Some(SubModelType::Scheduler))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::SubmodelMissing {
                submodel: SubModelType::Scheduler,
                ..
            }
        ),
        "{err}"
    );

    let mut keys = svc.cache().keys_lru();
    keys.sort();
    assert_eq!(keys, ["p1:tokenizer", "p1:unet", "p1:vae"]);
    let parts = svc.preload_parts(&cfg);
    assert!(parts.contains(&Some(SubModelType::UNet)) && parts.contains(&Some(SubModelType::Vae)));
    assert!(!parts.contains(&Some(SubModelType::Scheduler)));

    // A non-main model refuses a submodel.
    let lora = lora_config(
        "l",
        &d.path()
            .join("sd15/unet/diffusion_pytorch_model.safetensors"),
    );
    let err = svc.load_model(&lora, Some(SubModelType::Vae)).unwrap_err();
    assert!(matches!(err, LoadError::SubmodelNotAllowed { .. }), "{err}");
}

#[test]
fn main_checkpoint_submodels_come_from_key_prefixes() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("sd15.safetensors");
    write_st(
        &path,
        &[
            (
                "model.diffusion_model.in.weight",
                Dtype::U8,
                vec![2],
                vec![1, 2],
            ),
            (
                "model.diffusion_model.out.weight",
                Dtype::U8,
                vec![1],
                vec![3],
            ),
            ("first_stage_model.decoder.w", Dtype::U8, vec![1], vec![4]),
            (
                "cond_stage_model.transformer.w",
                Dtype::U8,
                vec![1],
                vec![5],
            ),
        ],
    );
    let cfg = AnyModelConfig::from_json(json!({
        "key": "c1", "name": "sd15", "type": "main", "format": "checkpoint", "base": "sd-1",
        "path": path.to_str().unwrap()
    }))
    .unwrap();
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20)).unwrap();
    let unet = svc.load_model(&cfg, Some(SubModelType::UNet)).unwrap();
    let sd = unet.model().state_dict().unwrap();
    assert_eq!(
        sd.iter().map(|t| t.name).collect::<Vec<_>>(),
        ["in.weight", "out.weight"]
    );
    assert_eq!(sd.get("in.weight").unwrap().data, [1, 2]);
    assert_eq!(
        svc.estimate_bytes(&cfg, Some(SubModelType::UNet)).unwrap(),
        3
    );
    let vae = svc.load_model(&cfg, Some(SubModelType::Vae)).unwrap();
    assert_eq!(
        vae.model()
            .state_dict()
            .unwrap()
            .get("decoder.w")
            .unwrap()
            .data,
        [4]
    );
    let err = svc
        .load_model(&cfg, Some(SubModelType::TextEncoder2))
        .unwrap_err();
    assert!(matches!(err, LoadError::SubmodelMissing { .. }), "{err}");
    assert_eq!(
        svc.preload_parts(&cfg),
        [
            Some(SubModelType::UNet),
            Some(SubModelType::TextEncoder),
            Some(SubModelType::Vae)
        ]
    );
}

#[test]
fn pickle_checkpoints_are_refused_with_the_gates_reason() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("evil.ckpt");
    std::fs::write(&path, b"\x80\x02cos\nsystem\n").unwrap();
    let cfg = lora_config("p", &path);
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20)).unwrap();
    // The default gate is the scanner, as in the CLI.
    let err = svc.load_model(&cfg, None).unwrap_err();
    assert!(matches!(err, LoadError::PickleRefused { .. }), "{err}");
    assert!(err.to_string().contains("evil.ckpt"), "{err}");
    assert!(err.to_string().contains("os.system"), "{err}");

    let seen = Arc::new(std::sync::Mutex::new(Vec::<PathBuf>::new()));
    let s2 = seen.clone();
    let gate = move |p: &Path| -> Result<(), String> {
        s2.lock().unwrap().push(p.to_path_buf());
        Err("scan found os.system".to_owned())
    };
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20))
        .unwrap()
        .with_pickle_gate(Arc::new(gate));
    let err = svc.load_model(&cfg, None).unwrap_err();
    assert!(err.to_string().contains("scan found os.system"), "{err}");
    assert_eq!(*seen.lock().unwrap(), std::slice::from_ref(&path));
    // A gate that passes everything still only lets the backend decode: this plain pickle
    // is no torch zip archive, so there is nothing to map.
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20))
        .unwrap()
        .with_pickle_gate(Arc::new(|_: &Path| Ok(())));
    let err = svc.load_model(&cfg, None).unwrap_err();
    assert!(matches!(err, LoadError::TorchCheckpoint { .. }), "{err}");
    assert!(
        err.to_string().contains("evil.ckpt")
            && err.to_string().contains("not a torch.save zip archive"),
        "{err}"
    );
}

/// `arange(n) % 251` as little-endian f32, the values `write_fixtures.py` writes.
fn arange_f32(n: usize) -> Vec<u8> {
    f32s(&(0..n).map(|i| (i % 251) as f32).collect::<Vec<_>>())
}

#[test]
fn clean_torch_zip_checkpoints_load_as_views_of_their_storages() {
    let d = tempfile::tempdir().unwrap();
    let tensors = || {
        vec![
            ("down.weight".to_owned(), vec![4, 3]),
            ("up.weight".to_owned(), vec![300]),
            ("alpha".to_owned(), vec![]),
        ]
    };
    let p = |n: &str| d.path().join(n);
    pyfix::write(&[
        Spec::torch_zip(p("plain.pt"), tensors()),
        Spec::safetensors(p("twin.safetensors"), tensors()),
        Spec::torch_zip(p("f32.ckpt"), tensors()).dtype("F32"),
        Spec::torch_zip(p("lightning.ckpt"), tensors()).wrap(&["state_dict"]),
        Spec::torch_zip(p("basicsr.pth"), tensors()).wrap(&["params_ema"]),
    ]);
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20)).unwrap();
    let twin_file = std::fs::read(p("twin.safetensors")).unwrap();
    let twin = safetensors::SafeTensors::deserialize(&twin_file).unwrap();
    // The default gate (the scanner) passes torch's own imports; the tensors are the bytes
    // numpy wrote, as the safetensors package wrote the same arrays.
    for f in ["plain.pt", "lightning.ckpt", "basicsr.pth"] {
        let loaded = svc.load_model(&lora_config(f, &p(f)), None).unwrap();
        let sd = loaded.model().state_dict().unwrap();
        assert_eq!(sd.len(), 3, "{f}");
        assert_eq!(sd.bytes(), 2 * (12 + 300 + 1), "{f}");
        for (name, view) in twin.tensors() {
            let t = sd
                .get(&name)
                .unwrap_or_else(|| panic!("{f}: {name} missing"));
            assert_eq!(t.dtype, Dtype::F16, "{f} {name}");
            assert_eq!(t.shape, view.shape(), "{f} {name}");
            assert_eq!(t.data, view.data(), "{f} {name}");
        }
    }
    let loaded = svc
        .load_model(&lora_config("f32", &p("f32.ckpt")), None)
        .unwrap();
    let sd = loaded.model().state_dict().unwrap();
    let up = sd.get("up.weight").unwrap();
    assert_eq!((up.dtype, up.shape), (Dtype::F32, &[300][..]));
    assert_eq!(up.data, arange_f32(300));
    assert_eq!(sd.get("down.weight").unwrap().data, arange_f32(12));
    // Without a record too, and the submodels of a single-file main checkpoint.
    let sd15 = p("sd15.ckpt");
    pyfix::write(&[Spec::torch_zip(
        sd15.clone(),
        vec![
            ("model.diffusion_model.in.weight".to_owned(), vec![2]),
            ("first_stage_model.decoder.w".to_owned(), vec![3]),
        ],
    )
    .dtype("F32")
    .wrap(&["state_dict"])]);
    let cfg = AnyModelConfig::from_json(json!({
        "key": "c1", "name": "sd15", "type": "main", "format": "checkpoint", "base": "sd-1",
        "path": sd15.to_str().unwrap()
    }))
    .unwrap();
    let vae = svc.load_model(&cfg, Some(SubModelType::Vae)).unwrap();
    let vae = vae.model().state_dict().unwrap();
    assert_eq!(
        vae.iter().map(|t| t.name).collect::<Vec<_>>(),
        ["decoder.w"]
    );
    assert_eq!(vae.get("decoder.w").unwrap().data, arange_f32(3));
    assert_eq!(
        svc.estimate_bytes(&cfg, Some(SubModelType::UNet)).unwrap(),
        8
    );
}

#[test]
fn torch_checkpoints_whose_storages_cannot_be_mapped_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    let tensors = || vec![("w".to_owned(), vec![2, 3]), ("b".to_owned(), vec![3])];
    pyfix::write(&[
        Spec::torch_zip(p("missing.ckpt"), tensors()).mangle("missing"),
        Spec::torch_zip(p("deflated.ckpt"), tensors()).mangle("deflate"),
        Spec::torch_zip(p("short.ckpt"), tensors()).mangle("short"),
        Spec {
            kind: Kind::TorchLegacy {
                protocol: 2,
                wrap: Vec::new(),
            },
            ..Spec::torch_zip(p("legacy.pt"), tensors())
        },
    ]);
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20)).unwrap();
    for (f, want) in [
        (
            "missing.ckpt",
            "storage `archive/data/0` is missing from the archive",
        ),
        (
            "deflated.ckpt",
            "storage `archive/data/0` is compressed (Deflated); torch.save stores storages uncompressed",
        ),
        (
            "short.ckpt",
            "tensor `w` needs bytes 0..12 of storage `archive/data/0`, which holds 11 bytes",
        ),
        (
            "legacy.pt",
            "it is in torch's legacy layout (saved before torch 1.6",
        ),
    ] {
        let err = svc.load_model(&lora_config(f, &p(f)), None).unwrap_err();
        assert!(
            matches!(err, LoadError::TorchCheckpoint { .. }),
            "{f}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "{}: cannot map the torch checkpoint: ",
                p(f).display()
            )),
            "{msg}"
        );
        assert!(msg.contains(want), "{f}: {msg}");
    }
}

/// A torch zip whose `data.pkl` runs `os.system` on load, pickled by CPython.
#[test]
fn a_pickle_the_gate_refuses_stays_refused_and_a_permissive_gate_runs_nothing() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("evil.pt");
    let marker = d.path().join("ran");
    let script = format!(
        "import os, pickle, zipfile\nclass E:\n    def __reduce__(self):\n        return (os.system, ('touch ' + {marker:?},))\nwith zipfile.ZipFile({path:?}, 'w') as z:\n    z.writestr('archive/data.pkl', pickle.dumps({{'w': E()}}, protocol=2))\n"
    );
    let o = std::process::Command::new(pyfix::python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = lora_config("evil", &path);
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20)).unwrap();
    let err = svc.load_model(&cfg, None).unwrap_err();
    assert!(matches!(err, LoadError::PickleRefused { .. }), "{err}");
    // CPython pickles `os.system` as `posix.system`.
    assert!(
        err.to_string()
            .contains("is dangerous (imports posix.system)"),
        "{err}"
    );
    // Even a gate that passes it only decodes: `os.system(...)` is an opaque call, no tensor.
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20))
        .unwrap()
        .with_pickle_gate(Arc::new(|_: &Path| Ok(())));
    let loaded = svc.load_model(&cfg, None).unwrap();
    assert!(loaded.model().state_dict().unwrap().is_empty());
    assert!(!marker.exists(), "the pickle ran");
}

#[test]
fn missing_files_and_bad_files_name_the_path() {
    let d = tempfile::tempdir().unwrap();
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20)).unwrap();
    let cfg = lora_config("gone", &d.path().join("gone.safetensors"));
    let err = svc.load_model(&cfg, None).unwrap_err();
    assert!(matches!(err, LoadError::ModelNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("gone.safetensors does not exist"),
        "{err}"
    );

    let bad = d.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}        ").unwrap();
    let err = svc.load_model(&lora_config("bad", &bad), None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: not a valid safetensors file", bad.display())),
        "{err}"
    );

    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("README.md"), "hi").unwrap();
    let cfg = AnyModelConfig::from_json(json!({
        "key": "e", "name": "e", "type": "vae", "format": "diffusers", "base": "sd-1", "path": empty.to_str().unwrap()
    }))
    .unwrap();
    let err = svc.load_model(&cfg, None).unwrap_err();
    assert!(matches!(err, LoadError::NoWeights { .. }), "{err}");
}

#[test]
fn service_refuses_a_model_larger_than_the_ram_budget() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("big.safetensors");
    write_st(&path, &[("w", Dtype::U8, vec![4096], vec![7; 4096])]);
    let svc = ModelLoadService::new(d.path(), &host_settings(1024)).unwrap();
    let cfg = lora_config("big", &path);
    let err = svc.load_model(&cfg, None).unwrap_err();
    assert!(
        matches!(err, LoadError::TooLarge { budget: 1024, .. }),
        "{err}"
    );
    let err = svc.check_preload_fits(&[cfg]).unwrap_err();
    assert!(err.to_string().contains("preload set of 1 models"), "{err}");
}

#[test]
fn load_events_carry_key_submodel_hash_location_and_precision() {
    let d = tempfile::tempdir().unwrap();
    let cfg = pipeline(d.path());
    let rec = Recorder::new();
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20))
        .unwrap()
        .with_reporter(Arc::new(rec.clone()));
    let cfg = AnyModelConfig::from_json({
        let mut v = cfg.to_json();
        v["hash"] = json!("blake3:abcd");
        v
    })
    .unwrap();
    svc.load_model(&cfg, Some(SubModelType::Vae)).unwrap();
    svc.load_model(&cfg, Some(SubModelType::Vae)).unwrap();
    let events: Vec<LoadEvent> = rec
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Load(l) => l,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(events.len(), 4);
    let LoadEvent::ModelLoadStarted(info) = &events[0] else {
        panic!("{:?}", events[0])
    };
    assert_eq!(info.model_key, "p1");
    assert_eq!(info.submodel_type, Some(SubModelType::Vae));
    assert_eq!(info.hash, "blake3:abcd");
    assert!(info.location.ends_with("my_vae"), "{}", info.location);
    assert_eq!(info.precision, Precision::Auto);
    let hits: Vec<bool> = events
        .iter()
        .filter_map(|e| match e {
            LoadEvent::ModelLoadCompleted {
                cache_hit, bytes, ..
            } => {
                assert_eq!(*bytes, 8);
                Some(*cache_hit)
            }
            LoadEvent::ModelLoadStarted(_) => None,
        })
        .collect();
    assert_eq!(hits, [false, true]);
    let j = serde_json::to_value(Event::Load(events[1].clone())).unwrap();
    assert_eq!(j["kind"], "load");
    assert_eq!(j["event"]["event"], "model_load_completed");
    assert_eq!(j["event"]["submodel_type"], "vae");
}

#[test]
fn preload_loads_every_part_and_leaves_it_cached_unlocked() {
    let d = tempfile::tempdir().unwrap();
    let cfg = pipeline(d.path());
    std::fs::remove_dir_all(d.path().join("sd15/text_encoder")).unwrap();
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20)).unwrap();
    let total = svc.check_preload_fits(std::slice::from_ref(&cfg)).unwrap();
    assert!(total > 0);
    let parts = svc.preload(&cfg).unwrap();
    assert_eq!(parts.len(), 3); // unet, tokenizer, vae
    let s = svc.cache().stats();
    assert_eq!((s.entries, s.locked), (3, 0));
    assert!(svc.cache().is_on_device("p1:unet"));
}

#[test]
fn many_cache_keys_stay_independent() {
    // Loads of different keys from several threads all land, none evicted (budget is ample).
    let cache = host_cache(1 << 30);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    put(&cache, &format!("k{t}-{i}"), 10).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = cache.stats();
    assert_eq!((s.entries, s.loads, s.evictions), (200, 200, 0));
}

// ---------------------------------------------------------------------------------------------
// A real model from a package (scripts/fetch-test-models)

#[test]
#[ignore = "needs scripts/fetch-test-models"]
fn real_model_from_a_package_loads_with_the_right_tensor_count() {
    let Some(path) = std::env::var_os("MODELSYNC_TEST_MODEL").map(PathBuf::from) else {
        panic!("set MODELSYNC_TEST_MODEL to the path scripts/fetch-test-models prints");
    };
    assert!(
        path.is_file(),
        "MODELSYNC_TEST_MODEL={} does not exist",
        path.display()
    );
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let expected = meta.tensors().len();
    assert!(expected > 50, "a MiniLM has ~100 tensors, got {expected}");
    let cfg = AnyModelConfig::from_json(json!({
        "key": "minilm", "name": "all-minilm-l6-v2", "type": "clip_embed", "format": "diffusers",
        "base": "any", "path": path.parent().unwrap().to_str().unwrap()
    }))
    .unwrap();
    let file_cfg = lora_config("minilm-file", &path);
    let d = tempfile::tempdir().unwrap();
    let svc = ModelLoadService::new(d.path(), &host_settings(1 << 30)).unwrap();
    for c in [&cfg, &file_cfg] {
        let m = svc.load_model(c, None).unwrap();
        assert_eq!(m.model().tensor_count(), expected);
        assert_eq!(m.lock().unwrap().tensor_count(), expected);
    }
    #[cfg(feature = "torch")]
    {
        let svc = ModelLoadService::new(d.path(), &torch::cpu_settings(Precision::Auto)).unwrap();
        let m = svc.load_model(&file_cfg, None).unwrap();
        let g = m.lock().unwrap();
        let tm = g.as_torch().expect("a torch model");
        assert_eq!(tm.len(), expected);
        let data_bytes: u64 = meta
            .tensors()
            .values()
            .map(|i| (i.data_offsets.1 - i.data_offsets.0) as u64)
            .sum();
        assert_eq!(tm.bytes(), data_bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// libtorch backend

#[cfg(feature = "torch")]
#[allow(
    clippy::float_cmp,
    clippy::many_single_char_names,
    reason = "the values compared are exact in every precision; short tensor names mirror the file's"
)]
mod torch {
    use super::*;
    use tch::{Kind, Tensor};

    pub(super) fn cpu_settings(precision: Precision) -> LoadSettings {
        LoadSettings {
            ram: 1 << 30,
            vram: 0,
            device: DeviceSpec::Cpu,
            precision,
            backend: BackendKind::Torch,
            ..LoadSettings::default()
        }
    }

    fn bytes_of(t: &Tensor) -> Vec<u8> {
        let n = t.numel();
        let mut out = vec![0u8; n * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut out, n);
        out
    }

    #[test]
    fn torch_tensors_equal_the_files_values() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("m.safetensors");
        let tensors = sample_tensors();
        write_st(&path, &tensors);
        let svc = ModelLoadService::new(d.path(), &cpu_settings(Precision::Auto)).unwrap();
        assert_eq!(svc.cache().backend_name(), "torch");
        let m = svc.load_model(&lora_config("t", &path), None).unwrap();
        let (state, guard) = m.model_on_device().unwrap();
        let tm = guard.as_torch().expect("torch model");
        assert_eq!(tm.len(), tensors.len());
        for (name, dtype, shape, data) in &tensors {
            let t = tm.tensor(name).unwrap();
            assert_eq!(
                t.size(),
                shape
                    .iter()
                    .map(|&s| i64::try_from(s).unwrap())
                    .collect::<Vec<_>>(),
                "{name}"
            );
            assert_eq!(&bytes_of(&t), data, "{name} ({dtype:?})");
            assert_eq!(state.unwrap().get(name).unwrap().data, data.as_slice());
        }
        let a = tm.tensor("a.weight").unwrap();
        assert_eq!(a.kind(), Kind::Float);
        assert_eq!(a.double_value(&[0, 1]), -2.5);
    }

    #[test]
    fn torch_converts_floating_tensors_to_the_precision() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("m.safetensors");
        write_st(&path, &sample_tensors());
        for (precision, kind) in [
            (Precision::Fp16, Kind::Half),
            (Precision::Bf16, Kind::BFloat16),
            (Precision::Fp32, Kind::Float),
        ] {
            let svc = ModelLoadService::new(d.path(), &cpu_settings(precision)).unwrap();
            let m = svc.load_model(&lora_config("t", &path), None).unwrap();
            let g = m.lock().unwrap();
            let tm = g.as_torch().unwrap();
            for f in ["a.weight", "b.bias", "d.bf"] {
                assert_eq!(tm.tensor(f).unwrap().kind(), kind, "{f} under {precision}");
            }
            assert_eq!(
                tm.tensor("c.idx").unwrap().kind(),
                Kind::Int64,
                "integers keep their type"
            );
            assert_eq!(tm.tensor("e.u8").unwrap().kind(), Kind::Uint8);
            let a = tm.tensor("a.weight").unwrap();
            assert!((a.double_value(&[0, 2]) - 3.25).abs() < 1e-2, "{precision}");
            // b.bias is f16 [1, 2, -1, 0]; d.bf is bf16 [1, -2].
            let b = tm.tensor("b.bias").unwrap();
            assert_eq!(b.double_value(&[2]), -1.0);
            assert_eq!(tm.tensor("d.bf").unwrap().double_value(&[1]), -2.0);
            let elt = kind.elt_size_in_bytes() as u64;
            assert_eq!(tm.bytes(), (6 + 4 + 2) * elt + 16 + 3, "{precision}");
        }
    }

    /// Whether cuda:0 is usable: the torch tests run on the CPU everywhere and on cuda:0
    /// where libtorch sees a CUDA device. `MODELSYNC_REQUIRE_CUDA=1` (scripts/gpu-check)
    /// turns a missing device into a failure instead of a skip.
    fn cuda_available() -> bool {
        modelsync::load::backends::tch::init_cuda();
        let ok = tch::Cuda::is_available();
        assert!(
            ok || std::env::var_os("MODELSYNC_REQUIRE_CUDA").is_none(),
            "MODELSYNC_REQUIRE_CUDA is set but libtorch sees no CUDA device (libtorch_cuda.so or the CUDA libraries it needs did not load)"
        );
        ok
    }

    fn cuda_settings(vram: u64) -> LoadSettings {
        LoadSettings {
            ram: 4 << 30,
            vram,
            working_memory: 0,
            device: DeviceSpec::Cuda(0),
            precision: Precision::Auto,
            backend: BackendKind::Torch,
            ..LoadSettings::default()
        }
    }

    #[test]
    fn torch_on_cuda_moves_offloads_and_reloads() {
        if !cuda_available() {
            eprintln!("no CUDA device: torch_on_cuda_moves_offloads_and_reloads skipped");
            return;
        }
        const MIB: usize = 1 << 20;
        let d = tempfile::tempdir().unwrap();
        let mut cfgs = Vec::new();
        for (i, k) in ["ca", "cb", "cc"].iter().enumerate() {
            let p = d.path().join(format!("{k}.safetensors"));
            let data: Vec<u8> = (0..64 * MIB).map(|j| ((j + i) % 251) as u8).collect();
            write_st(&p, &[("w", Dtype::F16, vec![32 * MIB], data)]);
            cfgs.push(lora_config(k, &p));
        }
        // Room for two of the three 64 MiB copies.
        let svc = ModelLoadService::new(d.path(), &cuda_settings(150 * MIB as u64)).unwrap();
        assert_eq!(svc.cache().device().to_string(), "cuda:0");
        let stats = svc.cache().stats();
        assert!(stats.vram_capacity.is_some_and(|c| c > 0), "{stats:?}");
        let loaded: Vec<_> = cfgs
            .iter()
            .map(|c| svc.load_model(c, None).unwrap())
            .collect();
        let check = |m: &modelsync::load::LoadedModel, i: usize| {
            let g = m.lock().unwrap();
            let t = g.as_torch().unwrap().tensor("w").unwrap();
            assert_eq!(t.device(), tch::Device::Cuda(0));
            let host = bytes_of(&t.to(tch::Device::Cpu));
            assert_eq!(host.len(), 64 * MIB);
            assert!(
                host.iter()
                    .enumerate()
                    .take(4096)
                    .all(|(j, b)| *b == ((j + i) % 251) as u8)
            );
        };
        check(&loaded[0], 0);
        check(&loaded[1], 1);
        check(&loaded[2], 2);
        assert!(svc.cache().is_offloaded("ca"), "{:?}", svc.cache().stats());
        check(&loaded[0], 0); // moved back from RAM
        let s = svc.cache().stats();
        assert!(s.vram_used <= 150 * MIB as u64 && s.offloads >= 2, "{s:?}");
        println!(
            "gpu-check: device=cuda:0 capacity={} offloads={} bytes_moved={}",
            s.vram_capacity.unwrap_or(0),
            s.offloads,
            s.bytes_moved
        );
    }

    #[test]
    fn torch_cuda_load_throughput() {
        if !cuda_available() {
            eprintln!("no CUDA device: torch_cuda_load_throughput skipped");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.safetensors");
        let chunk: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
        let names: Vec<String> = (0..8).map(|i| format!("layer.{i}.weight")).collect();
        let tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = names
            .iter()
            .map(|n| (n.as_str(), Dtype::F16, vec![32 << 20], chunk.clone()))
            .collect();
        write_st(&p, &tensors);
        let svc = ModelLoadService::new(d.path(), &cuda_settings(8 << 30)).unwrap();
        let start = std::time::Instant::now();
        let m = svc.load_model(&lora_config("big", &p), None).unwrap();
        let g = m.lock().unwrap();
        tch::Cuda::synchronize(0);
        let secs = start.elapsed().as_secs_f64();
        let bytes = g.device_bytes();
        assert_eq!(bytes, 512 << 20);
        println!(
            "gpu-check: load of {bytes} bytes to cuda:0 (read + host-to-device copy) in {secs:.3} s = {:.2} GB/s",
            bytes as f64 / secs / 1e9
        );
    }

    #[test]
    fn torch_device_copies_on_the_cpu_count_against_ram() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("m.safetensors");
        write_st(&path, &[("w", Dtype::F16, vec![512], vec![0; 1024])]);
        let svc = ModelLoadService::new(d.path(), &cpu_settings(Precision::Fp32)).unwrap();
        let m = svc.load_model(&lora_config("t", &path), None).unwrap();
        assert_eq!(svc.cache().stats().ram_used, 1024);
        let g = m.lock().unwrap();
        let s = svc.cache().stats();
        // 1024 host bytes (f16) + 2048 device bytes (f32), both on the CPU.
        assert_eq!(s.ram_used, 1024 + 2048);
        assert_eq!(s.bytes_by_device.get("cpu"), Some(&(1024 + 2048)));
        assert_eq!(s.vram_used, 0);
        drop(g);
        // A copy that does not fit next to the host copy is refused, not allocated.
        let small = LoadSettings {
            ram: 2048,
            ..cpu_settings(Precision::Fp32)
        };
        let svc = ModelLoadService::new(d.path(), &small).unwrap();
        let m = svc.load_model(&lora_config("t", &path), None).unwrap();
        let err = m.lock().unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::TooLarge { .. } | LoadError::OutOfBudget { .. }
            ),
            "{err}"
        );
        assert_eq!(svc.cache().stats().locked, 0);
    }
}

// ---------------------------------------------------------------------------------------------
// The device seam: a simulated `cuda:0` of a chosen capacity that records every move.

mod device_seam {
    use super::*;
    use modelsync::load::{CacheConfig, ExecDevice, Move, SimBackend};

    const CUDA: ExecDevice = ExecDevice::Cuda(0);

    fn sim_cache(
        ram: u64,
        vram: u64,
        capacity: u64,
        working: u64,
    ) -> (ModelCache, Arc<SimBackend>) {
        let sim = Arc::new(SimBackend::cuda(0, capacity));
        let cache = ModelCache::with_config(
            CacheConfig {
                ram,
                vram,
                working_memory: working,
                ..CacheConfig::default()
            },
            sim.clone(),
        );
        (cache, sim)
    }

    fn mv(key: &str, from: ExecDevice, to: ExecDevice, bytes: u64) -> Move {
        Move {
            key: key.into(),
            from,
            to,
            bytes,
        }
    }

    /// Loads `key` of `bytes` and puts it on the device once (lock, then unlock).
    fn warm(cache: &ModelCache, key: &str, bytes: u64) -> Arc<AnyModel> {
        let m = put(cache, key, bytes).unwrap();
        drop(cache.lock(key, &m).unwrap());
        m
    }

    #[test]
    fn vram_budget_is_enforced_by_offloading_the_least_recently_used_copy() {
        let (cache, sim) = sim_cache(10_000, 300, 1 << 40, 0);
        assert_eq!(cache.device(), CUDA);
        warm(&cache, "a", 100);
        warm(&cache, "b", 100);
        warm(&cache, "c", 100);
        assert_eq!(cache.stats().vram_used, 300);
        assert!(cache.get("a").is_some(), "a is now more recent than b");
        warm(&cache, "d", 100);
        let s = cache.stats();
        assert_eq!(s.vram_used, 300, "never above the budget");
        assert_eq!((s.offloads, s.device_drops), (1, 0));
        assert!(cache.is_offloaded("b"), "b was the least recently used");
        assert!(cache.is_on_device("a") && cache.is_on_device("d"));
        assert_eq!(
            sim.moves(),
            [
                mv("a", ExecDevice::Cpu, CUDA, 100),
                mv("b", ExecDevice::Cpu, CUDA, 100),
                mv("c", ExecDevice::Cpu, CUDA, 100),
                mv("b", CUDA, ExecDevice::Cpu, 100),
                mv("d", ExecDevice::Cpu, CUDA, 100),
            ]
        );
        // A copy larger than the budget is refused before anything moves.
        let big = put(&cache, "big", 301).unwrap();
        let err = cache.lock("big", &big).unwrap_err();
        assert!(
            matches!(&err, LoadError::TooLarge { needed: 301, budget: 300, device, .. } if device == "cuda:0"),
            "{err}"
        );
        assert_eq!(sim.moves().len(), 5);
        assert_eq!(cache.stats().locked, 0);
    }

    #[test]
    fn an_offload_needs_room_in_ram_else_the_device_copy_is_dropped() {
        // RAM holds the four host copies (400) and no more than 50 besides.
        let (cache, sim) = sim_cache(450, 200, 1 << 40, 0);
        for k in ["a", "b", "c"] {
            put(&cache, k, 100).unwrap();
        }
        let a = cache.get("a").unwrap();
        drop(cache.lock("a", &a).unwrap());
        let b = cache.get("b").unwrap();
        drop(cache.lock("b", &b).unwrap());
        put(&cache, "d", 100).unwrap();
        let d = cache.get("d").unwrap();
        drop(cache.lock("d", &d).unwrap());
        let s = cache.stats();
        assert_eq!((s.offloads, s.device_drops), (0, 1), "{s:?}");
        assert!(!cache.is_on_device("a") && !cache.is_offloaded("a"));
        assert!(cache.contains("a"), "the host copy stays");
        assert!(s.ram_used <= 450 && s.vram_used <= 200, "{s:?}");
        assert!(
            !sim.moves().iter().any(|m| m.to == ExecDevice::Cpu),
            "nothing was moved to RAM: {:?}",
            sim.moves()
        );
        // Without offload support the copy is dropped even when RAM has room.
        let sim = Arc::new(SimBackend::cuda(0, 1 << 40).without_offload());
        let cache = ModelCache::with_config(
            CacheConfig {
                ram: 10_000,
                vram: 100,
                working_memory: 0,
                ..CacheConfig::default()
            },
            sim.clone(),
        );
        warm(&cache, "a", 100);
        warm(&cache, "b", 100);
        let s = cache.stats();
        assert_eq!((s.offloads, s.device_drops), (0, 1));
    }

    #[test]
    fn a_locked_entry_is_never_moved() {
        let (cache, sim) = sim_cache(10_000, 200, 1 << 40, 0);
        let a = put(&cache, "a", 100).unwrap();
        let b = put(&cache, "b", 100).unwrap();
        let ga = cache.lock("a", &a).unwrap();
        let gb = cache.lock("b", &b).unwrap();
        let c = put(&cache, "c", 100).unwrap();
        let err = cache.lock("c", &c).unwrap_err();
        assert!(
            matches!(&err, LoadError::OutOfBudget { locked: 200, budget: 200, device, .. } if device == "cuda:0"),
            "{err}"
        );
        assert!(cache.is_on_device("a") && cache.is_on_device("b"));
        assert!(
            sim.moves().iter().all(|m| m.to == CUDA),
            "a locked copy was moved: {:?}",
            sim.moves()
        );
        // RAM pressure does not evict them either.
        let (small, _) = sim_cache(250, 10_000, 1 << 40, 0);
        let x = put(&small, "x", 100).unwrap();
        let gx = small.lock("x", &x).unwrap();
        put(&small, "y", 100).unwrap();
        put(&small, "z", 100).unwrap();
        assert!(small.contains("x") && !small.contains("y") && small.contains("z"));
        assert!(small.is_on_device("x"));
        drop(gx);
        drop(ga);
        // Unlocked, a is the least recently used copy and goes to RAM for c.
        drop(cache.lock("c", &c).unwrap());
        assert!(cache.is_offloaded("a"));
        drop(gb);
    }

    #[test]
    fn the_working_memory_reserve_is_kept_free() {
        // A 1000-byte device with 300 reserved leaves 700 to the cache, whatever the budget.
        let (cache, sim) = sim_cache(10_000, 10_000, 1000, 300);
        let s = cache.stats();
        assert_eq!((s.vram_limit, s.vram_capacity), (700, Some(1000)));
        let big = put(&cache, "big", 701).unwrap();
        let err = cache.lock("big", &big).unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::TooLarge {
                    needed: 701,
                    budget: 700,
                    ..
                }
            ),
            "{err}"
        );
        warm(&cache, "a", 400);
        warm(&cache, "b", 400);
        let s = cache.stats();
        assert_eq!(s.vram_used, 400, "a went to RAM so that 300 stay free");
        assert!(cache.is_offloaded("a"));
        assert_eq!(
            sim.moves().last(),
            Some(&mv("b", ExecDevice::Cpu, CUDA, 400))
        );
        // A budget below capacity − reserve is the limit.
        let (cache, _) = sim_cache(10_000, 500, 1000, 300);
        assert_eq!(cache.vram_limit(), 500);
    }

    #[test]
    fn model_on_device_moves_to_the_device_and_back() {
        let d = tempfile::tempdir().unwrap();
        let pa = d.path().join("a.safetensors");
        let pb = d.path().join("b.safetensors");
        write_st(&pa, &[("w", Dtype::F32, vec![64], vec![1; 256])]);
        write_st(&pb, &[("w", Dtype::F32, vec![64], vec![2; 256])]);
        let (cache, sim) = sim_cache(1 << 20, 256, 1 << 40, 0);
        let svc = ModelLoadService::new(d.path(), &host_settings(1 << 20))
            .unwrap()
            .with_cache(cache.clone());
        let a = svc.load_model(&lora_config("ka", &pa), None).unwrap();
        let b = svc.load_model(&lora_config("kb", &pb), None).unwrap();
        assert!(sim.moves().is_empty(), "loading reads into RAM only");
        {
            let (state, guard) = a.model_on_device().unwrap();
            assert_eq!(state.unwrap().get("w").unwrap().data, [1u8; 256].as_slice());
            assert_eq!(guard.device_bytes(), 256);
            assert!(cache.is_on_device("ka"));
        }
        // b needs the room: a's copy goes back to RAM …
        drop(b.model_on_device().unwrap());
        assert!(cache.is_offloaded("ka") && cache.is_on_device("kb"));
        // … and comes back to the device from there, without a new copy of the file.
        drop(a.lock().unwrap());
        assert_eq!(
            sim.moves(),
            [
                mv("ka", ExecDevice::Cpu, CUDA, 256),
                mv("ka", CUDA, ExecDevice::Cpu, 256),
                mv("kb", ExecDevice::Cpu, CUDA, 256),
                mv("kb", CUDA, ExecDevice::Cpu, 256),
                mv("ka", ExecDevice::Cpu, CUDA, 256),
            ]
        );
        assert_eq!(sim.precisions().len(), 2, "two copies made, the rest moved");
        assert_eq!(cache.stats().bytes_moved, 5 * 256);
        assert_eq!(sim.bytes_moved(), 5 * 256);
    }

    #[test]
    fn stats_count_bytes_by_device() {
        let (cache, _) = sim_cache(10_000, 150, 1 << 40, 0);
        warm(&cache, "a", 100);
        warm(&cache, "b", 40);
        put(&cache, "c", 20).unwrap();
        let s = cache.stats();
        assert_eq!(s.bytes_by_device.get("cuda:0"), Some(&140));
        assert_eq!(s.bytes_by_device.get("cpu"), Some(&160), "the host copies");
        // c's copy does not fit beside a's and b's: a, the least recently used, goes to RAM.
        let c = cache.get("c").unwrap();
        drop(cache.lock("c", &c).unwrap());
        let s = cache.stats();
        assert_eq!(s.bytes_by_device.get("cuda:0"), Some(&60));
        assert_eq!(
            s.bytes_by_device.get("cpu"),
            Some(&260),
            "host copies + a's offload"
        );
        assert_eq!((s.ram_used, s.vram_used), (260, 60));
    }

    /// The watch process's `/metrics` reports the cache per device, read from a cache on the
    /// simulated device.
    struct CacheOnly(ModelCache);

    impl modelsync::watch::Converger for CacheOnly {
        type Desired = ();
        fn parse_manifest(&self, _: &Path, _: &[u8]) -> Result<(), modelsync::watch::BoxError> {
            Ok(())
        }
        fn entries(&self, (): &()) -> Vec<modelsync::watch::EntrySpec> {
            Vec::new()
        }
        fn reconcile_entry<'a>(
            &'a self,
            (): &'a (),
            _: &'a str,
            _: modelsync::watch::CancelToken,
        ) -> modelsync::watch::BoxFuture<
            'a,
            Result<modelsync::watch::EntryOutcome, modelsync::watch::EntryError>,
        > {
            Box::pin(async { Ok(modelsync::watch::EntryOutcome::unchanged()) })
        }
        fn cache_usage(&self) -> Vec<modelsync::watch::DeviceUsage> {
            self.0
                .stats()
                .bytes_by_device
                .into_iter()
                .map(|(device, bytes)| modelsync::watch::DeviceUsage { device, bytes })
                .collect()
        }
    }

    #[tokio::test]
    async fn watch_metrics_report_cache_bytes_per_device() {
        let (cache, _) = sim_cache(10_000, 1000, 1 << 40, 0);
        warm(&cache, "a", 100);
        put(&cache, "b", 30).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let manifest = tmp.path().join("models.yaml");
        std::fs::write(&manifest, "version: 1\n").unwrap();
        let mut config = modelsync::watch::WatchConfig::new(&manifest);
        config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let watch = modelsync::watch::Watch::bind(config, Arc::new(CacheOnly(cache.clone())))
            .await
            .unwrap();
        let text = watch.handle().metrics_text();
        assert!(
            text.contains("modelsync_cache_bytes{device=\"cpu\"} 130\n"),
            "{text}"
        );
        assert!(
            text.contains("modelsync_cache_bytes{device=\"cuda:0\"} 100\n"),
            "{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What the default registry serves

/// Every (type, format) class of the taxonomy has a default loader, except those the
/// memory-mapped backend cannot serve: ONNX runtime graphs, external APIs and `unknown`.
#[test]
fn every_class_the_backend_can_serve_has_a_loader() {
    let r = LoaderRegistry::with_defaults();
    let mut missing = Vec::new();
    for (t, f) in modelsync::config::CONFIG_CLASSES {
        let unservable = matches!(f, ModelFormat::Onnx | ModelFormat::Olive | ModelFormat::ExternalApi)
            || *t == ModelType::Unknown
            // A main SDNQ model is a quantized diffusers pipeline: no loader yet.
            || (*t == ModelType::Main && *f == ModelFormat::SdnqQuantized);
        if r.get(BaseModelType::Flux, *t, *f).is_ok() == unservable {
            missing.push(format!("{t}/{f}"));
        }
    }
    assert!(
        missing.is_empty(),
        "loader coverage differs for {missing:?}"
    );
}

#[test]
fn gguf_models_load_as_raw_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flux-q8.gguf");
    let qkv = "double_blocks.0.img_attn.qkv.weight";
    crate::support::probe_fixtures::gguf(
        &file,
        &[("general.architecture", "flux")],
        &[(qkv, &[96, 64]), ("img_in.weight", &[64, 32])],
    );
    // Q8_0: 32 elements in 34 bytes; the data region holds both tensors, the first at 0.
    let (first, second) = (96 * 64 / 32 * 34, 64 * 32 / 32 * 34);
    let len = std::fs::metadata(&file).unwrap().len();
    let data_start = len - (first + second) as u64;
    let pattern: Vec<u8> = (0..first).map(|i| (i % 251) as u8).collect();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.seek(SeekFrom::Start(data_start)).unwrap();
        f.write_all(&pattern).unwrap();
    }
    let cfg = AnyModelConfig::from_json(json!({
        "key": "g", "name": "flux-q8", "type": "main", "format": "gguf_quantized",
        "base": "flux", "path": file.to_str().unwrap()
    }))
    .unwrap();
    let svc = ModelLoadService::new(dir.path(), &host_settings(1 << 20)).unwrap();
    assert_eq!(svc.preload_parts(&cfg), [Some(SubModelType::Transformer)]);
    let loaded = svc
        .load_model(&cfg, Some(SubModelType::Transformer))
        .unwrap();
    let gg = loaded.model().gguf().expect("a GGUF model");
    assert_eq!(gg.len(), 2);
    let t = gg.get(qkv).unwrap();
    assert_eq!((t.ggml_type, t.shape), (8, [96u64, 64].as_slice()));
    assert_eq!(t.data, pattern.as_slice(), "the raw blocks, as stored");
    assert_eq!(gg.get("img_in.weight").unwrap().data.len(), second);
    assert_eq!(loaded.model().bytes(), (first + second) as u64);
    let err = svc.load_model(&cfg, Some(SubModelType::Vae)).unwrap_err();
    assert!(matches!(err, LoadError::SubmodelMissing { .. }), "{err}");
    // Encoders in GGUF load the same way, and a record-less load reads it too.
    let enc = AnyModelConfig::from_json(json!({
        "key": "t5", "name": "t5-q8", "type": "t5_encoder", "format": "gguf_quantized",
        "base": "any", "path": file.to_str().unwrap()
    }))
    .unwrap();
    assert_eq!(
        svc.load_model(&enc, None).unwrap().model().tensor_count(),
        2
    );
    assert_eq!(
        svc.load_path(&file, None).unwrap().model().tensor_count(),
        2
    );
    // A file cut short is refused, naming the tensor.
    let cut = dir.path().join("cut.gguf");
    std::fs::copy(&file, &cut).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let err = svc.load_path(&cut, None).unwrap_err().to_string();
    assert!(
        err.contains("img_in.weight") && err.contains("past the end"),
        "{err}"
    );
}
