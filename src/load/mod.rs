//! The load service (the seed's `ModelLoadService`): loads a record's weights into memory through
//! a RAM/VRAM [`ModelCache`] and hands out [`LoadedModel`]s whose [`ModelGuard`]s keep a model
//! on the execution device while held.
//!
//! Pieces:
//! - [`LoaderRegistry`]: (base, type, format) → [`ModelLoader`], with `any` wildcards, filled
//!   once at start-up ([`LoaderRegistry::with_defaults`]).
//! - [`ModelCache`]: RAM and VRAM budgets, LRU eviction of unlocked entries, single-flight
//!   loads, statistics.
//! - Backends: loaders produce host models ([`StateDict`]: memory-mapped safetensors); a
//!   [`DeviceBackend`] moves them to the execution device ([`HostBackend`] keeps them on the
//!   host; with the `torch` feature, `backends::tch::TchBackend` makes libtorch tensors).
//! - [`ModelLoadService`]: ties them together; `load_model(config, submodel)`.
//!
//! The service is synchronous (loading is file IO and memory copies); async callers use
//! `tokio::task::spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::AnyModelConfig;
use crate::events::{NullReporter, Reporter};
use crate::taxonomy::{BaseModelType, ModelFormat, ModelType, SubModelType};

pub mod backends;
mod cache;
mod model;
mod preload;
mod registry;

pub use backends::gguf::{GgufLoader, GgufModel, GgufTensor};
pub use backends::mmap::{HostTensor, StateDict};
pub use backends::sim::{Move, SimBackend};
pub use backends::{
    BackendKind, DeviceBackend, DeviceModel, DeviceSpec, ExecDevice, HostBackend, Precision,
};
pub use cache::{CacheConfig, CacheStats, DEFAULT_WORKING_MEMORY, ModelCache, cache_key};
pub use model::{AnyModel, FileSet, LoadedModel, LoadedModelWithoutConfig, ModelGuard};
pub use preload::{ScanGate, ServicePreloader, service_for};
pub use registry::{LoadRequest, LoaderKey, LoaderRegistry, ModelLoader};

/// Errors of the load service. Each names the model (key), file or combination it is about.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No loader is registered for this combination (the seed's `NotImplementedException`).
    #[error("no loader for base `{base}`, type `{model_type}`, format `{format}`")]
    NotImplemented {
        base: BaseModelType,
        model_type: ModelType,
        format: ModelFormat,
    },
    /// A loader was registered twice for one key.
    #[error("a loader is already registered for {0}")]
    DuplicateLoader(LoaderKey),
    /// The record's type is `unknown`: nothing knows how to load it.
    #[error(
        "model {key} (`{name}`) is of type `unknown` (format `{format}`): no probe rule identified it, so it cannot be loaded; {hint}",
        hint = crate::config::IDENTIFY_HINT
    )]
    UnknownType {
        key: String,
        name: String,
        format: ModelFormat,
    },
    /// A main model was asked for without a submodel.
    #[error(
        "model {key} (`{name}`) is a main model: a submodel type (unet, vae, text_encoder …) is required"
    )]
    SubmodelRequired { key: String, name: String },
    /// A submodel was asked of a model that has none.
    #[error("model {key} is a `{class}` model, which has no submodels (asked for `{submodel}`)")]
    SubmodelNotAllowed {
        key: String,
        class: String,
        submodel: SubModelType,
    },
    /// The submodel is not part of this model.
    #[error("model {key} has no `{submodel}` submodel (looked in {location})")]
    SubmodelMissing {
        key: String,
        submodel: SubModelType,
        location: PathBuf,
    },
    /// The record exists but its files do not (the seed's `ModelNotFoundException`).
    #[error("model {key}: {path} does not exist")]
    ModelNotFound { key: String, path: PathBuf },
    /// Reading a file failed.
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A GGUF file is malformed.
    #[error("{path}: not a valid GGUF file: {reason}")]
    Gguf { path: PathBuf, reason: String },
    /// A safetensors file is malformed.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    /// Two shards of one model hold a tensor with the same name.
    #[error("tensor `{name}` appears in both {first} and {second}")]
    DuplicateTensor {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// A whole diffusers pipeline was asked for without a record or loader.
    #[error(
        "{path} is a diffusers pipeline (it has model_index.json): load one of its submodel folders (unet, vae …) or pass a loader"
    )]
    Pipeline { path: PathBuf },
    /// A folder holds no weights file this backend reads.
    #[error("{path}: no .safetensors weights found{hint}")]
    NoWeights { path: PathBuf, hint: String },
    /// A pickle checkpoint was refused.
    #[error("{path}: pickle checkpoint refused: {reason}")]
    PickleRefused { path: PathBuf, reason: String },
    /// A pickle checkpoint passed the gate but its layout cannot be memory-mapped.
    #[error("{path}: cannot map the torch checkpoint: {reason}")]
    TorchCheckpoint { path: PathBuf, reason: String },
    /// A tensor dtype the device backend cannot represent.
    #[error("{path}: tensor `{tensor}` has dtype {dtype}, which the {backend} backend cannot load")]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
        backend: &'static str,
    },
    /// One model alone is bigger than the budget of the memory it must live in.
    #[error(
        "model {key} needs {} of {device} memory but the {device} budget is {}",
        crate::units::HumanBytes(*needed),
        crate::units::HumanBytes(*budget)
    )]
    TooLarge {
        key: String,
        needed: u64,
        budget: u64,
        device: String,
    },
    /// Locked models hold so much of the budget that this one cannot fit.
    #[error(
        "model {key} needs {} of {device} memory; the budget is {} and {} of it is held by locked models",
        crate::units::HumanBytes(*needed),
        crate::units::HumanBytes(*budget),
        crate::units::HumanBytes(*locked)
    )]
    OutOfBudget {
        key: String,
        needed: u64,
        budget: u64,
        locked: u64,
        device: String,
    },
    /// A precision string that does not parse.
    #[error("invalid precision `{value}`: expected auto, fp16, bf16 or fp32")]
    InvalidPrecision { value: String },
    /// A device string that does not parse.
    #[error("invalid device `{value}`: expected auto, cpu, cuda or cuda:N")]
    InvalidDevice { value: String },
    /// The requested device is not usable in this build or on this machine.
    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    /// The device backend failed.
    #[error("{backend} backend failed on {what}: {reason}")]
    Backend {
        backend: &'static str,
        what: String,
        reason: String,
    },
    /// Another thread's load of the same model, which this call waited for, failed.
    #[error("loading {key} failed in a concurrent call: {reason}")]
    Concurrent { key: String, reason: String },
    /// A custom loader failed.
    #[error("loading {key} failed: {reason}")]
    Loader { key: String, reason: String },
}

/// Decides whether a pickle checkpoint may be loaded. [`ScanGate`] runs
/// `crate::scan::scan_path` and allows only clean files (suspicious ones are refused like
/// dangerous ones) and is the default of [`ModelLoadService::new`], as in the CLI;
/// [`RefusePickle`] refuses every pickle.
pub trait PickleGate: Send + Sync {
    /// `Ok(())` when `path` may be unpickled; otherwise why not.
    fn check(&self, path: &Path) -> Result<(), String>;
}

/// Refuses every pickle checkpoint.
#[derive(Debug, Default, Clone, Copy)]
pub struct RefusePickle;

impl PickleGate for RefusePickle {
    fn check(&self, _path: &Path) -> Result<(), String> {
        Err("pickle files can run code when loaded; convert the model to safetensors".into())
    }
}

impl<F: Fn(&Path) -> Result<(), String> + Send + Sync> PickleGate for F {
    fn check(&self, path: &Path) -> Result<(), String> {
        self(path)
    }
}

/// What a load event is about (the seed's payload, less the invocation-queue ids).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelLoadInfo {
    /// The record key.
    pub model_key: String,
    /// The submodel, for main models.
    pub submodel_type: Option<SubModelType>,
    /// The record's content hash.
    pub hash: String,
    /// The file or folder loaded.
    pub location: String,
    /// The precision setting the model is loaded with.
    pub precision: Precision,
}

/// A load service event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LoadEvent {
    /// `load_model` was called.
    ModelLoadStarted(ModelLoadInfo),
    /// `load_model` returned a model.
    ModelLoadCompleted {
        /// What was loaded.
        #[serde(flatten)]
        info: ModelLoadInfo,
        /// Host bytes of the model.
        bytes: u64,
        /// Whether the model came from the cache (no file was read).
        cache_hit: bool,
        /// Time spent, in seconds.
        seconds: f64,
    },
}

/// Settings of the load service (the manifest's `settings.cache`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSettings {
    /// RAM budget in bytes (host copies of models).
    pub ram: u64,
    /// VRAM budget in bytes (device copies on CUDA).
    pub vram: u64,
    /// Device memory kept free for activations, bytes (default 3 GiB).
    pub working_memory: u64,
    /// Execution device.
    pub device: DeviceSpec,
    /// Floating-point precision of device copies.
    pub precision: Precision,
    /// Which device backend to use.
    pub backend: BackendKind,
    /// Entries unused for this long are released (`None`: kept until evicted).
    pub keep_alive: Option<Duration>,
    /// Whether preloaded models are exempt from the keep-alive (default true).
    pub pin_preloaded: bool,
}

impl Default for LoadSettings {
    fn default() -> Self {
        Self {
            ram: 8 << 30,
            vram: 16 << 30,
            working_memory: DEFAULT_WORKING_MEMORY,
            device: DeviceSpec::Auto,
            precision: Precision::Auto,
            backend: BackendKind::default(),
            keep_alive: None,
            pin_preloaded: true,
        }
    }
}

impl LoadSettings {
    /// The cache's share of the settings.
    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            ram: self.ram,
            vram: self.vram,
            working_memory: self.working_memory,
            keep_alive: self.keep_alive,
            precision: self.precision,
        }
    }
}

/// A loader for record-less loads (the seed's `loader` argument of `load_local_model`): turns
/// a path into a host model.
pub type PathLoader = dyn Fn(&Path) -> Result<AnyModel, LoadError> + Send + Sync;

/// The seed's `ModelLoadService`: loads records through the registry into the cache.
pub struct ModelLoadService {
    models_dir: PathBuf,
    registry: Arc<LoaderRegistry>,
    cache: ModelCache,
    pickle_gate: Arc<dyn PickleGate>,
    reporter: Arc<dyn Reporter<LoadEvent>>,
    precision: Precision,
    pin_preloaded: bool,
}

impl std::fmt::Debug for ModelLoadService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelLoadService")
            .field("models_dir", &self.models_dir)
            .field("registry", &self.registry)
            .field("cache", &self.cache)
            .field("precision", &self.precision)
            .finish_non_exhaustive()
    }
}

impl ModelLoadService {
    /// A service with the default loaders, a cache of the given budgets on the configured
    /// device backend, pickle checkpoints through the scanner ([`ScanGate`]: only clean ones
    /// pass) and events dropped.
    pub fn new(models_dir: impl Into<PathBuf>, settings: &LoadSettings) -> Result<Self, LoadError> {
        let backend = backends::make_backend(settings)?;
        Ok(Self {
            models_dir: models_dir.into(),
            registry: Arc::new(LoaderRegistry::with_defaults()),
            cache: ModelCache::with_config(settings.cache_config(), backend),
            pickle_gate: Arc::new(ScanGate),
            reporter: Arc::new(NullReporter),
            precision: settings.precision,
            pin_preloaded: settings.pin_preloaded,
        })
    }

    /// Uses another registry (for extra loaders).
    #[must_use]
    pub fn with_registry(mut self, registry: Arc<LoaderRegistry>) -> Self {
        self.registry = registry;
        self
    }

    /// Uses another cache (to share one between services).
    #[must_use]
    pub fn with_cache(mut self, cache: ModelCache) -> Self {
        self.cache = cache;
        self
    }

    /// Decides about pickle checkpoints with `gate` (usually [`ScanGate`]).
    #[must_use]
    pub fn with_pickle_gate(mut self, gate: Arc<dyn PickleGate>) -> Self {
        self.pickle_gate = gate;
        self
    }

    /// Reports `model_load_started` / `model_load_completed` to `reporter`.
    #[must_use]
    pub fn with_reporter(mut self, reporter: Arc<dyn Reporter<LoadEvent>>) -> Self {
        self.reporter = reporter;
        self
    }

    /// The cache.
    pub fn cache(&self) -> &ModelCache {
        &self.cache
    }

    /// The registry.
    pub fn registry(&self) -> &LoaderRegistry {
        &self.registry
    }

    /// The folder relative record paths are resolved against.
    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    fn request<'a>(
        &'a self,
        config: &'a AnyModelConfig,
        submodel: Option<SubModelType>,
    ) -> Result<LoadRequest<'a>, LoadError> {
        match (config.model_type(), submodel) {
            (ModelType::Unknown, _) => {
                return Err(LoadError::UnknownType {
                    key: config.key().to_owned(),
                    name: config.name().to_owned(),
                    format: config.format(),
                });
            }
            (ModelType::Main, None) => {
                return Err(LoadError::SubmodelRequired {
                    key: config.key().to_owned(),
                    name: config.name().to_owned(),
                });
            }
            (t, Some(s)) if t != ModelType::Main => {
                return Err(LoadError::SubmodelNotAllowed {
                    key: config.key().to_owned(),
                    class: config.class_tag(),
                    submodel: s,
                });
            }
            _ => {}
        }
        Ok(LoadRequest {
            config,
            path: config.resolved_path(&self.models_dir),
            submodel,
            repo_variant: config.diffusers_fields().and_then(|d| d.repo_variant),
            pickle_gate: self.pickle_gate.as_ref(),
        })
    }

    /// The precision loads get when they ask for none (`settings.cache.precision`).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Loads `config` (with `submodel` for main models) into the cache and returns it; a cached
    /// model is returned without touching the disk. Concurrent calls for one model load it once.
    pub fn load_model(
        &self,
        config: &AnyModelConfig,
        submodel: Option<SubModelType>,
    ) -> Result<LoadedModel, LoadError> {
        self.load_model_as(config, submodel, None)
    }

    /// [`load_model`](Self::load_model) with a precision for the device copy (a manifest
    /// entry's `precision`); `None` is the service's. Another precision than the service's is
    /// another cache entry (`<key>@fp16`).
    pub fn load_model_as(
        &self,
        config: &AnyModelConfig,
        submodel: Option<SubModelType>,
        precision: Option<Precision>,
    ) -> Result<LoadedModel, LoadError> {
        let start = Instant::now();
        let req = self.request(config, submodel)?;
        let precision = precision.unwrap_or(self.precision);
        let mut key = cache_key(config.key(), submodel);
        if precision != self.precision {
            key = format!("{key}@{precision}");
        }
        let info = ModelLoadInfo {
            model_key: config.key().to_owned(),
            submodel_type: submodel,
            hash: config.common().hash.clone(),
            location: registry::location(&req).display().to_string(),
            precision,
        };
        self.reporter
            .report(&LoadEvent::ModelLoadStarted(info.clone()));
        let loader = self
            .registry
            .get(config.base(), config.model_type(), config.format())?;
        let (model, cache_hit) = self.cache.get_or_load(
            &key,
            || {
                if !req.path.exists() {
                    return Err(LoadError::ModelNotFound {
                        key: config.key().to_owned(),
                        path: req.path.clone(),
                    });
                }
                loader.estimate_bytes(&req)
            },
            || loader.load(&req),
        )?;
        self.reporter.report(&LoadEvent::ModelLoadCompleted {
            bytes: model.bytes(),
            info,
            cache_hit,
            seconds: start.elapsed().as_secs_f64(),
        });
        Ok(LoadedModel::new(
            config.clone(),
            submodel,
            key,
            model,
            self.cache.clone(),
            precision,
        ))
    }

    /// Loads a file or folder without a record (the seed's `load_local_model`), through the
    /// same cache: `loader` when given, else the memory-mapped backend (a safetensors file, a
    /// folder of one model's weights; pickles through the pickle gate). The cache key carries
    /// the path's size and modification time, so a replaced file is loaded afresh.
    pub fn load_path(
        &self,
        path: &Path,
        loader: Option<&PathLoader>,
    ) -> Result<LoadedModelWithoutConfig, LoadError> {
        let start = Instant::now();
        let shown = path.display().to_string();
        let md = std::fs::metadata(path).map_err(|_| LoadError::ModelNotFound {
            key: shown.clone(),
            path: path.to_path_buf(),
        })?;
        let path = std::fs::canonicalize(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let size = registry::disk_size(&path)?;
        let mtime = md.modified().map_or(0, crate::store::mtime_ns);
        let key = format!("file:{}@{size}-{mtime}", path.display());
        let info = ModelLoadInfo {
            model_key: key.clone(),
            submodel_type: None,
            hash: String::new(),
            location: path.display().to_string(),
            precision: self.precision,
        };
        self.reporter
            .report(&LoadEvent::ModelLoadStarted(info.clone()));
        let gate = self.pickle_gate.as_ref();
        let (model, cache_hit) = self.cache.get_or_load(
            &key,
            || backends::mmap::estimate_path(&path),
            || match loader {
                Some(l) => l(&path),
                None => backends::mmap::load_path(&path, gate),
            },
        )?;
        self.reporter.report(&LoadEvent::ModelLoadCompleted {
            bytes: model.bytes(),
            info,
            cache_hit,
            seconds: start.elapsed().as_secs_f64(),
        });
        Ok(LoadedModelWithoutConfig {
            path,
            cache_key: key,
            model,
            cache: self.cache.clone(),
            precision: self.precision,
        })
    }

    /// Host bytes `config` (with `submodel`) would take once loaded, from file headers and
    /// sizes; reads no weights. For `diff`'s "does the preload set fit" check.
    pub fn estimate_bytes(
        &self,
        config: &AnyModelConfig,
        submodel: Option<SubModelType>,
    ) -> Result<u64, LoadError> {
        let req = self.request(config, submodel)?;
        if !req.path.exists() {
            return Err(LoadError::ModelNotFound {
                key: config.key().to_owned(),
                path: req.path.clone(),
            });
        }
        self.registry
            .get(config.base(), config.model_type(), config.format())?
            .estimate_bytes(&req)
    }

    /// The parts `preload` loads for a record: every submodel present for main models, the
    /// model itself otherwise.
    pub fn preload_parts(&self, config: &AnyModelConfig) -> Vec<Option<SubModelType>> {
        if config.model_type() != ModelType::Main {
            return vec![None];
        }
        let path = config.resolved_path(&self.models_dir);
        registry::present_submodels(config, &path)
            .into_iter()
            .map(Some)
            .collect()
    }

    /// Host bytes of a preload set, and an error when it does not fit the RAM budget (or, for
    /// device copies, the device budget) — before anything is loaded.
    pub fn check_preload_fits(&self, configs: &[AnyModelConfig]) -> Result<u64, LoadError> {
        let mut total = 0u64;
        for c in configs {
            for part in self.preload_parts(c) {
                total = total.saturating_add(self.estimate_bytes(c, part)?);
            }
        }
        let stats = self.cache.stats();
        let device = self.cache.device();
        let (budget, name) = match device {
            ExecDevice::Cpu => (stats.ram_budget, "cpu".to_owned()),
            ExecDevice::Cuda(_) => (stats.ram_budget.min(stats.vram_budget), device.to_string()),
        };
        if total > budget {
            return Err(LoadError::TooLarge {
                key: format!("preload set of {} models", configs.len()),
                needed: total,
                budget,
                device: name,
            });
        }
        Ok(total)
    }

    /// Loads every part of `config` and puts it on the execution device, then releases the
    /// locks: the model stays warm until the cache needs the room. Preloaded parts are pinned
    /// (exempt from the keep-alive) unless `pin_preloaded` is off. Returns the loaded parts.
    pub fn preload(&self, config: &AnyModelConfig) -> Result<Vec<LoadedModel>, LoadError> {
        self.preload_as(config, None)
    }

    /// [`preload`](Self::preload) in a precision (a manifest entry's).
    pub fn preload_as(
        &self,
        config: &AnyModelConfig,
        precision: Option<Precision>,
    ) -> Result<Vec<LoadedModel>, LoadError> {
        let mut out = Vec::new();
        for part in self.preload_parts(config) {
            let loaded = self.load_model_as(config, part, precision)?;
            drop(loaded.lock()?);
            if self.pin_preloaded {
                self.cache.pin(loaded.cache_key());
            }
            out.push(loaded);
        }
        Ok(out)
    }
}

impl crate::retry::Classify for LoadError {
    fn classify(&self) -> crate::retry::Class {
        use crate::retry::{Class, FailureKind};
        match self {
            Self::Io { source, .. } => Class::of(FailureKind::of_io(source)),
            Self::ModelNotFound { .. } => Class::of(FailureKind::NotFound),
            _ => Class::of(FailureKind::Other),
        }
    }
}
