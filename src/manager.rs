//! [`ModelManager`]: the seed's ModelManagerService facade — one object holding the record
//! store, the download queue, the install service and (once attached with
//! [`ModelManager::with_load_service`]) the load service; plus the seed's invocation-context
//! API, which loads models without a record: [`ModelManager::download_and_cache_model`],
//! [`ModelManager::load_local_model`] and [`ModelManager::load_remote_model`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod download_cache;

use download_cache::DownloadCache;
pub use download_cache::{
    DEFAULT_DOWNLOAD_CACHE_SIZE, DOWNLOAD_CACHE_DIR, DownloadCacheConfig, DownloadOptions,
};

use crate::config::AnyModelConfig;
use crate::download::{DownloadEvent, DownloadQueue, DownloadQueueConfig};
use crate::events::Reporter;
use crate::install::{
    InstallConfig, InstallError, InstallEvent, ModelInstallService, RecoveryReport,
};
use crate::load::{LoadError, LoadedModel, LoadedModelWithoutConfig, ModelLoadService, PathLoader};
use crate::store::{self, RecordStore, StoreError};
use crate::taxonomy::{BaseModelType, ModelType, SubModelType};

/// What a manager reports: its download queue's events and its install service's.
pub trait ManagerReporter: Reporter<DownloadEvent> + Reporter<InstallEvent> {}

impl<R: Reporter<DownloadEvent> + Reporter<InstallEvent> + ?Sized> ManagerReporter for R {}

/// The services of one models folder + store.
#[derive(Clone)]
pub struct ModelManager {
    store: Arc<dyn RecordStore>,
    queue: DownloadQueue,
    install: ModelInstallService,
    database: PathBuf,
    recovery: RecoveryReport,
    load: Option<Arc<ModelLoadService>>,
    download_cache: Arc<DownloadCache>,
}

impl std::fmt::Debug for ModelManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelManager")
            .field("database", &self.database)
            .field("models_dir", &self.install.models_dir())
            .finish_non_exhaustive()
    }
}

impl ModelManager {
    /// Opens (creating if missing) the store at `database` and builds the queue and install
    /// service over `install.models_dir`, then runs start-up recovery. Must be called inside a
    /// tokio runtime, by a process holding the store lock
    /// ([`crate::store::lock::StoreLock`]): recovery assumes nobody else installs into this
    /// models folder.
    pub fn open(
        install: InstallConfig,
        database: &Path,
        queue: DownloadQueueConfig,
        reporter: Arc<dyn ManagerReporter>,
    ) -> Result<Self, InstallError> {
        let store: Arc<dyn RecordStore> = Arc::from(store::open(database)?);
        let queue = DownloadQueue::new(queue, reporter.clone())
            .map_err(|e| InstallError::Setup(format!("cannot start the download queue: {e}")))?;
        Self::from_parts(install, store, queue, reporter)
    }

    /// Builds the manager over an open store and queue (tests, embedders), then runs start-up
    /// recovery.
    pub fn from_parts(
        install: InstallConfig,
        store: Arc<dyn RecordStore>,
        queue: DownloadQueue,
        reporter: Arc<dyn Reporter<InstallEvent>>,
    ) -> Result<Self, InstallError> {
        let database = store.location().to_path_buf();
        let install = ModelInstallService::new(install, store.clone(), queue.clone(), reporter)?;
        let recovery = install.start()?;
        let download_cache = Arc::new(DownloadCache::new(
            install.models_dir(),
            DownloadCacheConfig::default(),
        ));
        Ok(Self {
            store,
            queue,
            install,
            database,
            recovery,
            load: None,
            download_cache,
        })
    }

    /// The record store (the seed's `store`).
    pub fn store(&self) -> &Arc<dyn RecordStore> {
        &self.store
    }

    /// The install service (the seed's `install`).
    pub fn install(&self) -> &ModelInstallService {
        &self.install
    }

    /// The download queue.
    pub fn download_queue(&self) -> &DownloadQueue {
        &self.queue
    }

    /// `models_dir`.
    pub fn models_dir(&self) -> &Path {
        self.install.models_dir()
    }

    /// The store file.
    pub fn database(&self) -> &Path {
        &self.database
    }

    /// What start-up recovery did.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Attaches the load service (the seed's `load`).
    #[must_use]
    pub fn with_load_service(mut self, load: ModelLoadService) -> Self {
        self.load = Some(Arc::new(load));
        self
    }

    /// The load service, when attached.
    pub fn load(&self) -> Option<&ModelLoadService> {
        self.load.as_deref()
    }

    fn loader(&self) -> Result<&ModelLoadService, ManagerError> {
        self.load.as_deref().ok_or(ManagerError::NoLoadService)
    }

    /// Loads a record (the seed's `load_model_by_config`); `submodel` is required for main
    /// models.
    pub fn load_model_by_config(
        &self,
        config: &AnyModelConfig,
        submodel: Option<SubModelType>,
    ) -> Result<LoadedModel, ManagerError> {
        Ok(self.loader()?.load_model(config, submodel)?)
    }

    /// Loads the record with this key (the seed's `load_model_by_key`).
    pub fn load_model_by_key(
        &self,
        key: &str,
        submodel: Option<SubModelType>,
    ) -> Result<LoadedModel, ManagerError> {
        let config = self.store.get_model(key)?;
        self.load_model_by_config(&config, submodel)
    }

    /// Loads the unique record with this name, base and type (the seed's
    /// `load_model_by_attr`): `DuplicateModel` when several match, `UnknownModel` when none.
    pub fn load_model_by_attr(
        &self,
        name: &str,
        base: BaseModelType,
        model_type: ModelType,
        submodel: Option<SubModelType>,
    ) -> Result<LoadedModel, ManagerError> {
        let config = self.store.model_info_by_name(name, base, model_type)?;
        self.load_model_by_config(&config, submodel)
    }
}

impl ModelManager {
    /// Sets the download cache's size cap and clean-up (default 10 GiB).
    #[must_use]
    pub fn with_download_cache(mut self, config: DownloadCacheConfig) -> Self {
        self.download_cache = Arc::new(DownloadCache::new(self.models_dir(), config));
        self
    }

    /// `models_dir/.download_cache`.
    pub fn download_cache_dir(&self) -> &Path {
        self.download_cache.root()
    }

    /// The seed's `context.download_and_cache_model(source)`: downloads a remote source (an
    /// http(s) URL, a Hugging Face `owner/name`, `owner/name:fp16`, `owner/name:fp16:vae`,
    /// `owner/name::path/file.safetensors`) into `models_dir/.download_cache/<slug>/` and
    /// returns the local path (the file for a URL or a single repo file, else the folder).
    /// A source already cached is returned with no network request, as InvokeAI does, even
    /// if upstream moved since (pin a revision, `owner/name@commit`, to make that explicit).
    /// Nothing is probed or recorded. Afterwards the least recently used entries go while
    /// the cache is over its cap.
    pub async fn download_and_cache_model(&self, source: &str) -> Result<PathBuf, ManagerError> {
        self.download_and_cache_model_with(source, &DownloadOptions::default())
            .await
    }

    /// [`download_and_cache_model`](Self::download_and_cache_model) with a token and a
    /// timeout (which cancels the download and is an error).
    pub async fn download_and_cache_model_with(
        &self,
        source: &str,
        options: &DownloadOptions,
    ) -> Result<PathBuf, ManagerError> {
        Ok(self
            .download_cache
            .get(self.install.app_config(), &self.queue, source, options)
            .await?)
    }

    /// The seed's `context.load_local_model(path, loader)`: loads a file or folder without a
    /// record, through the load service's cache. Without `loader` the default backend
    /// reads a safetensors file or a folder of one model's weights; pickles pass only a clean
    /// scan.
    pub fn load_local_model(
        &self,
        path: &Path,
        loader: Option<&PathLoader>,
    ) -> Result<LoadedModelWithoutConfig, ManagerError> {
        Ok(self.loader()?.load_path(path, loader)?)
    }

    /// The seed's `context.load_remote_model(source, loader)`:
    /// [`download_and_cache_model`](Self::download_and_cache_model), then
    /// [`load_local_model`](Self::load_local_model) on a blocking thread.
    pub async fn load_remote_model(
        &self,
        source: &str,
        loader: Option<Arc<PathLoader>>,
    ) -> Result<LoadedModelWithoutConfig, ManagerError> {
        let service = self.load.clone().ok_or(ManagerError::NoLoadService)?;
        let path = self.download_and_cache_model(source).await?;
        tokio::task::spawn_blocking(move || service.load_path(&path, loader.as_deref()))
            .await
            .map_err(|e| ManagerError::Worker(e.to_string()))?
            .map_err(ManagerError::Load)
    }
}

/// Errors of the facade's load helpers.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No load service was attached with [`ModelManager::with_load_service`].
    #[error("this model manager has no load service attached")]
    NoLoadService,
    /// Finding the record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Loading failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Downloading into the download cache failed.
    #[error(transparent)]
    Download(#[from] InstallError),
    /// The blocking load worker died.
    #[error("the load worker failed: {0}")]
    Worker(String),
}
