//! [`ModelManager`]: the seed's ModelManagerService facade — one object holding the record
//! store, the download queue and the install service (the load service joins it with the
//! load issue).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::download::{DownloadQueue, DownloadQueueConfig};
use crate::events::Reporter;
use crate::install::{InstallConfig, InstallError, ModelInstallService, RecoveryReport};
use crate::store::{self, RecordStore};

/// The services of one models folder + store.
#[derive(Clone)]
pub struct ModelManager {
    store: Arc<dyn RecordStore>,
    queue: DownloadQueue,
    install: ModelInstallService,
    database: PathBuf,
    recovery: RecoveryReport,
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
}
