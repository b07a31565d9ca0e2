//! [`ModelManager`]: the seed's ModelManagerService facade — one object holding the record
//! store, the download queue, the install service and (once attached with
//! [`ModelManager::with_load_service`]) the load service.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::AnyModelConfig;
use crate::download::{DownloadQueue, DownloadQueueConfig};
use crate::events::Reporter;
use crate::install::{InstallConfig, InstallError, ModelInstallService, RecoveryReport};
use crate::load::{LoadError, LoadedModel, ModelLoadService};
use crate::store::{self, RecordStore, StoreError};
use crate::taxonomy::{BaseModelType, ModelType, SubModelType};

/// The services of one models folder + store.
#[derive(Clone)]
pub struct ModelManager {
    store: Arc<dyn RecordStore>,
    queue: DownloadQueue,
    install: ModelInstallService,
    database: PathBuf,
    recovery: RecoveryReport,
    load: Option<Arc<ModelLoadService>>,
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
        reporter: Arc<dyn Reporter>,
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
        reporter: Arc<dyn Reporter>,
    ) -> Result<Self, InstallError> {
        let database = store.location().to_path_buf();
        let install = ModelInstallService::new(install, store.clone(), queue.clone(), reporter)?;
        let recovery = install.start()?;
        Ok(Self {
            store,
            queue,
            install,
            database,
            recovery,
            load: None,
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
}
