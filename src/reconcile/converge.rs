//! The reconciler as watch mode's [`Converger`]: [`ManifestConverger`].
//!
//! Each entry is converged by [`apply`] with `only: [entry]`, so entries proceed (and fail)
//! independently and the watcher's concurrency, backoff and readiness work per entry. The
//! sweep runs [`prune_departed`] (with `settings.prune`), which deletes records whose entries
//! left the manifest without fetching anything. Everything shares one [`ModelManager`] (one
//! store connection, one download queue), opened on first use.
//!
//! Decisions worth knowing:
//! - **Store lock.** The converger holds the [`StoreLock`] it is given for its whole life; the
//!   watcher drops the converger when [`crate::watch::run_watch`] returns, which releases it.
//! - **Opening.** The store and services are opened by the first reconcile, inside the watch
//!   runtime (the download queue lives on it), after [`check_volume`]. When that fails (an
//!   unmounted volume), every entry fails with the reason and is retried with its backoff;
//!   nothing is repaired or deleted meanwhile.
//! - **Settings read once.** `models_dir`, `database`, `hf_endpoint`, `variant`,
//!   `hash_algorithm`, `max_parallel_downloads`, `max_connections` and `adopt_from` shape the
//!   services; a manifest that changes
//!   them is rejected (the previous desired state stays in force) with a message asking for a
//!   restart. `prune` is read at every sweep.
//! - **Observe once per resync.** A resync (or manifest change) first
//!   [`survey`](Converger::survey)s: one observe of the store and disk, one plan of the whole
//!   manifest, the lock looked at once ([`super::apply::survey`]). Entries whose plan is
//!   `unchanged` are not dispatched; only the others (and those whose
//!   `settings.refresh_interval` is due) get a reconcile. So a resync over N converged entries
//!   costs one observe, not N.
//! - **`models.lock`.** The lock lives in the converger's memory ([`HeldLock`]): concurrent
//!   applies merge their results into the memory copy, and the file is written once per batch
//!   ([`Converger::settle`]), atomically, and at shutdown. A resync takes the file again when
//!   someone else changed it and rewrites it when it was lost.
//! - **Cancellation.** When the token fires, every running install job of the manager is
//!   cancelled: its downloads stop with their `.part` files kept (Hub and URL downloads are
//!   submitted with `preserve_partial_downloads`) and its staging folder stays, so the next
//!   start resumes with `Range` requests. The watcher cancels all reconciles at once (at
//!   shutdown), so cancelling every job, not only the entry's, is what it asks for.
//! - **Preload.** With a [`Preloader`], `preload: true` entries are warmed after they converge
//!   and `/readyz` waits for that. Without one (the load service is not wired), such entries are
//!   announced to the watcher as *not* preload entries, so readiness does not wait forever for
//!   something that cannot happen; [`ManifestConverger::unpreloadable`] names them so the caller
//!   can warn, and `/status` shows them with `preload: false`.
//! - **Sync.** After the prune, the sweep runs
//!   [`sync_to_config`](crate::install::ModelInstallService::sync_to_config)
//!   (`settings.sync`: `off`, `report` — the default — or `register`) on a blocking thread
//!   under the install lane, skipping the manifest, its lock file and every local entry
//!   source (an in-place entry not applied yet is the entry's to register, not an orphan).
//!   `register` takes an orphan once a sync sees it unchanged since the one before (a copy
//!   in progress is not recorded half-done). Watch never unregisters dead records; they are
//!   shown in `/status` and the metrics.
//! - **Moving revisions.** With `settings.refresh_interval`, an entry's reconcile asks the Hub
//!   where its unpinned revision points (`apply --refresh`) when the interval has passed since
//!   it last asked (the first reconcile asks), and asks the watcher to come back when the next
//!   one is due; a branch that moved is upgraded in place. Pinned commits never move. The
//!   interval is read from each manifest, so changing it needs no restart.
//! - **Metrics.** Bytes downloaded come from the apply report; download errors are the download
//!   queue's `error` events, counted by a reporter wrapped around the caller's, and attributed
//!   to the next reconcile that finishes (the metric is a process total).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::ReconcileEvent;
use super::apply::{
    ActionResult, ApplyContext, ApplyError, ApplyOptions, ApplyReport, Preloader, apply,
    check_volume, prune_departed,
};
use super::held_lock::HeldLock;
use super::plan::ActionKind;
use super::remote;
use crate::download::{DownloadError, DownloadEvent, DownloadQueue, DownloadQueueConfig};
use crate::events::Reporter;
use crate::hub::{HubClient, HubEnv, HubError, MetadataCache};
use crate::install::sync::{SyncMode, SyncOptions, SyncReport};
use crate::install::{InstallConfig, InstallError, InstallEvent};
use crate::manager::{ManagerReporter, ModelManager};
use crate::manifest::{Manifest, Settings};
use crate::retry::{Class, Classify, Failure, FailureKind};
use crate::store::lock::StoreLock;
use crate::store::{self, RecordStore, StoreError};
use crate::watch::{
    BoxError, BoxFuture, CancelToken, Converger, DeviceUsage, EntryError, EntryOutcome, EntrySpec,
    SyncStatus,
};

/// How often install jobs are cancelled again while a cancelled apply winds down (an apply that
/// was between two steps when the token fired may submit one more job).
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Why the services could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    /// The record store could not be opened (the cause names the file).
    #[error("opening the record store")]
    Store {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// The volume check failed (models_dir missing or empty while the store has records).
    #[error(transparent)]
    Volume(Box<ApplyError>),
    /// models_dir could not be created.
    #[error("creating models folder {}", path.display())]
    ModelsDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Hub client could not be built (a bad endpoint).
    #[error(transparent)]
    Hub(Box<HubError>),
    /// The download queue could not start.
    #[error("starting the download queue")]
    Queue(#[source] Box<DownloadError>),
    /// The install service could not start (its start-up recovery failed).
    #[error("starting the install service")]
    Install(#[source] Box<InstallError>),
}

impl Classify for ConvergeError {
    fn classify(&self) -> Class {
        match self {
            Self::Store { source, .. } => source.classify(),
            Self::Volume(e) => e.classify(),
            Self::ModelsDir { source, .. } => Class::of(FailureKind::of_io(source)),
            Self::Hub(e) => e.classify(),
            Self::Queue(e) => e.classify(),
            Self::Install(e) => e.classify(),
        }
    }
}

/// What [`apply`] needs besides the manifest: the manager and the Hub look-up client. Shared by
/// `modelsync apply` and watch mode.
pub struct Services {
    /// Store, download queue and install service.
    pub manager: ModelManager,
    /// The Hub client for look-ups (sizes, `--locked` commits): fewer retries, shorter timeout.
    pub lookup: HubClient,
    /// Token environment.
    pub env: HubEnv,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("manager", &self.manager)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Opens the store of `settings` and checks the volume ([`check_volume`]), then creates
    /// models_dir if it is missing. The caller holds the store lock.
    pub fn open_store(settings: &Settings) -> Result<Arc<dyn RecordStore>, ConvergeError> {
        let db = settings.database_path();
        let store: Arc<dyn RecordStore> =
            Arc::from(store::open(&db).map_err(|source| ConvergeError::Store {
                path: db.clone(),
                source: Box::new(source),
            })?);
        check_volume(store.as_ref(), &settings.models_dir)
            .map_err(|e| ConvergeError::Volume(Box::new(e)))?;
        std::fs::create_dir_all(&settings.models_dir).map_err(|source| {
            ConvergeError::ModelsDir {
                path: settings.models_dir.clone(),
                source,
            }
        })?;
        Ok(store)
    }

    /// Builds the Hub clients, the download queue and the manager (which runs start-up
    /// recovery) over `store`. Must be called inside the tokio runtime the work will run on,
    /// by the holder of the store lock, after [`Self::open_store`].
    pub fn open(
        settings: &Settings,
        store: Arc<dyn RecordStore>,
        env: HubEnv,
        reporter: Arc<dyn ManagerReporter>,
    ) -> Result<Self, ConvergeError> {
        // The look-ups and the installer share Hub metadata for the length of an apply.
        let metadata = MetadataCache::new();
        let hub = HubClient::from_env(settings.hf_endpoint.as_deref(), &env)
            .map_err(|e| ConvergeError::Hub(Box::new(e)))?
            .with_metadata_cache(metadata.clone());
        let mut icfg = InstallConfig::new(&settings.models_dir, hub, env.clone());
        icfg.hash_algorithm = settings.hash_algorithm;
        icfg.default_variant = settings.variant;
        icfg.adopt.folders.clone_from(&settings.adopt_from);
        let queue = DownloadQueue::new(
            DownloadQueueConfig {
                max_parallel_dl: settings.max_parallel_downloads.max(1),
                max_connections: settings.max_connections.max(1),
                file_timeout: Some(settings.download_timeout),
                ..DownloadQueueConfig::default()
            },
            reporter.clone(),
        )
        .map_err(|e| ConvergeError::Queue(Box::new(e)))?;
        let manager = ModelManager::from_parts(icfg, store, queue, reporter)
            .map_err(|e| ConvergeError::Install(Box::new(e)))?;
        let lookup = remote::lookup_client(settings, &env)
            .map_err(|e| ConvergeError::Hub(Box::new(e)))?
            .with_metadata_cache(metadata);
        Ok(Self {
            manager,
            lookup,
            env,
        })
    }

    /// The context [`apply`] takes.
    pub fn context<'a>(
        &'a self,
        reporter: Arc<dyn Reporter<ReconcileEvent>>,
        preloader: Option<&'a dyn Preloader>,
    ) -> ApplyContext<'a> {
        ApplyContext {
            manager: &self.manager,
            hub: &self.lookup,
            hub_env: &self.env,
            reporter,
            preloader,
            held_lock: None,
        }
    }

    /// Runs `work` (an [`apply`] on these services) to its end; once `cancel` fires, cancels
    /// the install jobs (again every [`CANCEL_POLL`]) so that it ends soon, at a resumable
    /// point. Watch mode's shutdown and `apply`'s Ctrl-C both stop this way.
    pub async fn unless_cancelled<F: Future>(&self, work: F, cancel: &CancelToken) -> F::Output {
        let mut work = std::pin::pin!(work);
        tokio::select! {
            biased;
            out = &mut work => return out,
            () = cancel.cancelled() => {}
        }
        loop {
            self.cancel_installs();
            if let Ok(out) = tokio::time::timeout(CANCEL_POLL, &mut work).await {
                return out;
            }
        }
    }

    /// Cancels every install job still running; their partial downloads are kept.
    fn cancel_installs(&self) {
        let svc = self.manager.install();
        for job in svc.list_jobs() {
            if !job.in_terminal_state() {
                let _ = svc.cancel_job(job.id);
            }
        }
    }
}

/// What a converger reports: its manager's events (downloads, installs) and its own.
pub trait ConvergeReporter: ManagerReporter + Reporter<ReconcileEvent> {}

impl<R: ManagerReporter + Reporter<ReconcileEvent> + ?Sized> ConvergeReporter for R {}

/// Forwards events to the caller's reporter and counts download failures.
struct CountingReporter {
    inner: Arc<dyn ConvergeReporter>,
    download_errors: AtomicU64,
}

impl Reporter<DownloadEvent> for CountingReporter {
    fn report(&self, event: &DownloadEvent) {
        if let DownloadEvent::Error { .. } = event {
            self.download_errors.fetch_add(1, Ordering::Relaxed);
        }
        Reporter::<DownloadEvent>::report(&*self.inner, event);
    }
}

impl Reporter<InstallEvent> for CountingReporter {
    fn report(&self, event: &InstallEvent) {
        Reporter::<InstallEvent>::report(&*self.inner, event);
    }
}

impl Reporter<ReconcileEvent> for CountingReporter {
    fn report(&self, event: &ReconcileEvent) {
        Reporter::<ReconcileEvent>::report(&*self.inner, event);
    }
}

/// The settings that shape the services, fixed when they are opened.
#[derive(Debug, Clone, PartialEq)]
struct Fixed {
    models_dir: PathBuf,
    database: PathBuf,
    hf_endpoint: Option<String>,
    variant: Option<crate::taxonomy::ModelRepoVariant>,
    hash_algorithm: crate::hash::HashAlgorithm,
    max_parallel_downloads: usize,
    max_connections: usize,
    download_timeout: Duration,
    adopt_from: Vec<PathBuf>,
}

impl Fixed {
    fn of(s: &Settings) -> Self {
        Self {
            models_dir: s.models_dir.clone(),
            database: s.database_path(),
            hf_endpoint: s.hf_endpoint.clone(),
            variant: s.variant,
            hash_algorithm: s.hash_algorithm,
            max_parallel_downloads: s.max_parallel_downloads,
            max_connections: s.max_connections,
            download_timeout: s.download_timeout,
            adopt_from: s.adopt_from.clone(),
        }
    }

    /// The first setting that differs, as `name: old → new`, each value spelled as the
    /// manifest writes it (`blake3`, `30s`, `unset`).
    fn changed(&self, new: &Self) -> Option<String> {
        fn opt<T: std::fmt::Display>(v: Option<&T>) -> String {
            v.map_or_else(|| "unset".to_owned(), ToString::to_string)
        }
        let dur = |d: Duration| crate::units::HumanDuration(d).to_string();
        let (name, a, b) = if self.models_dir != new.models_dir {
            (
                "models_dir",
                self.models_dir.display().to_string(),
                new.models_dir.display().to_string(),
            )
        } else if self.database != new.database {
            (
                "database",
                self.database.display().to_string(),
                new.database.display().to_string(),
            )
        } else if self.hf_endpoint != new.hf_endpoint {
            (
                "hf_endpoint",
                opt(self.hf_endpoint.as_ref()),
                opt(new.hf_endpoint.as_ref()),
            )
        } else if self.variant != new.variant {
            (
                "variant",
                opt(self.variant.as_ref()),
                opt(new.variant.as_ref()),
            )
        } else if self.hash_algorithm != new.hash_algorithm {
            (
                "hash_algorithm",
                self.hash_algorithm.to_string(),
                new.hash_algorithm.to_string(),
            )
        } else if self.max_parallel_downloads != new.max_parallel_downloads {
            (
                "max_parallel_downloads",
                self.max_parallel_downloads.to_string(),
                new.max_parallel_downloads.to_string(),
            )
        } else if self.max_connections != new.max_connections {
            (
                "max_connections",
                self.max_connections.to_string(),
                new.max_connections.to_string(),
            )
        } else if self.download_timeout != new.download_timeout {
            (
                "download_timeout",
                dur(self.download_timeout),
                dur(new.download_timeout),
            )
        } else if self.adopt_from != new.adopt_from {
            let list = |v: &[PathBuf]| {
                let items: Vec<String> = v.iter().map(|p| p.display().to_string()).collect();
                format!("[{}]", items.join(", "))
            };
            ("adopt_from", list(&self.adopt_from), list(&new.adopt_from))
        } else {
            return None;
        };
        Some(format!("settings.{name} changed from {a} to {b}"))
    }
}

/// A manifest that cannot be taken without a restart.
#[derive(Debug, thiserror::Error)]
#[error("{}: {what}; restart modelsync watch to apply it (the previous manifest stays in force)", path.display())]
pub struct SettingsChanged {
    /// The manifest.
    pub path: PathBuf,
    /// Which setting, from what to what.
    pub what: String,
}

type CacheUsageFn = Box<dyn Fn() -> Vec<DeviceUsage> + Send + Sync>;

/// The reconciler as a [`Converger`]. See the module docs.
pub struct ManifestConverger {
    fixed: Fixed,
    settings: Settings,
    env: HubEnv,
    reporter: Arc<CountingReporter>,
    preloader: Option<Arc<dyn Preloader>>,
    cache_usage: Option<CacheUsageFn>,
    /// `--models-dir` / `--database`, applied to every manifest read.
    path_overrides: (Option<PathBuf>, Option<PathBuf>),
    /// `--lock-file`, applied to every manifest read.
    lock_file_override: Option<PathBuf>,
    services: tokio::sync::OnceCell<Services>,
    /// The sweep's last sync (`None` with `settings.sync: off`).
    sync: std::sync::Mutex<Option<SyncStatus>>,
    /// The orphans the last sync saw, for `register`'s "unchanged since" rule.
    sync_seen:
        std::sync::Mutex<std::collections::HashMap<String, crate::install::sync::Fingerprint>>,
    /// `models.lock` of the manifest in force (replaced when `settings.lock_file` moves it).
    held_lock: std::sync::Mutex<Option<Arc<HeldLock>>>,
    /// Entry → when its reconcile last asked the Hub for the upstream commit.
    refreshed: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
    // Declared last: released after the services are dropped.
    _lock: StoreLock,
}

impl std::fmt::Debug for ManifestConverger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestConverger")
            .field("models_dir", &self.fixed.models_dir)
            .field("database", &self.fixed.database)
            .field("preloader", &self.preloader.is_some())
            .finish_non_exhaustive()
    }
}

impl ManifestConverger {
    /// A converger for the store of `manifest`'s settings, holding `lock` (taken by the caller
    /// on `manifest.settings.database_path()`) until dropped. Events go to `reporter`. Nothing
    /// is opened yet: the first reconcile does that, inside the watch runtime.
    pub fn new(manifest: &Manifest, lock: StoreLock, reporter: Arc<dyn ConvergeReporter>) -> Self {
        Self {
            fixed: Fixed::of(&manifest.settings),
            settings: manifest.settings.clone(),
            env: HubEnv::from_process(),
            reporter: Arc::new(CountingReporter {
                inner: reporter,
                download_errors: AtomicU64::new(0),
            }),
            preloader: None,
            cache_usage: None,
            path_overrides: (None, None),
            lock_file_override: None,
            services: tokio::sync::OnceCell::new(),
            sync: std::sync::Mutex::new(None),
            sync_seen: std::sync::Mutex::new(std::collections::HashMap::new()),
            refreshed: std::sync::Mutex::default(),
            held_lock: std::sync::Mutex::new(None),
            _lock: lock,
        }
    }

    /// Warms `preload: true` entries with `preloader` (the load service).
    #[must_use]
    pub fn with_preloader(mut self, preloader: Option<Arc<dyn Preloader>>) -> Self {
        self.preloader = preloader;
        self
    }

    /// Reads the load cache's usage per device for `/metrics` (must be cheap).
    #[must_use]
    pub fn with_cache_usage(
        mut self,
        usage: impl Fn() -> Vec<DeviceUsage> + Send + Sync + 'static,
    ) -> Self {
        self.cache_usage = Some(Box::new(usage));
        self
    }

    /// Overrides the manifest's `models_dir` and `database` in every manifest read (the CLI's
    /// `--models-dir` and `--database`; `manifest` given to [`Self::new`] must already carry
    /// them).
    #[must_use]
    pub fn with_path_overrides(
        mut self,
        models_dir: Option<PathBuf>,
        database: Option<PathBuf>,
    ) -> Self {
        self.path_overrides = (models_dir, database);
        self
    }

    /// Overrides the manifest's `lock_file` in every manifest read (the CLI's `--lock-file`).
    #[must_use]
    pub fn with_lock_file(mut self, lock_file: Option<PathBuf>) -> Self {
        self.lock_file_override = lock_file;
        self
    }

    /// Uses `env` for tokens and the endpoint instead of the process environment (tests,
    /// embedders).
    #[must_use]
    pub fn with_hub_env(mut self, env: HubEnv) -> Self {
        self.env = env;
        self
    }

    /// The `preload: true` entries of `manifest` that will not be preloaded because no
    /// preloader is set (empty when one is).
    pub fn unpreloadable(&self, manifest: &Manifest) -> Vec<String> {
        if self.preloader.is_some() {
            return Vec::new();
        }
        manifest
            .models
            .iter()
            .filter(|e| e.preload)
            .map(|e| e.name.clone())
            .collect()
    }

    /// The services, opened on first use. A failed open is retried by the next call.
    async fn services(&self) -> Result<&Services, EntryError> {
        self.services
            .get_or_try_init(|| async {
                let store = Services::open_store(&self.settings)?;
                Services::open(
                    &self.settings,
                    store,
                    self.env.clone(),
                    self.reporter.clone(),
                )
            })
            .await
            .map_err(|e: ConvergeError| EntryError::from(Failure::from_error(&e)))
    }

    fn reporter(&self) -> Arc<dyn Reporter<ReconcileEvent>> {
        self.reporter.clone()
    }

    /// Whether this reconcile of `entry` asks upstream (`settings.refresh_interval` has passed
    /// since the last time, or it never did), and when the next one is due.
    fn refresh_due(&self, settings: &Settings, entry: &str) -> (bool, Option<Duration>) {
        let Some(every) = settings.refresh_interval else {
            return (false, None);
        };
        let now = tokio::time::Instant::now();
        let mut last = self
            .refreshed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.get(entry) {
            Some(t) if now.duration_since(*t) < every => {
                (false, Some(every.saturating_sub(now.duration_since(*t))))
            }
            _ => {
                last.insert(entry.to_owned(), now);
                (true, Some(every))
            }
        }
    }

    /// The held lock of `desired`'s lock path; a new path (an edited `settings.lock_file`)
    /// writes out the old one and starts holding the new one.
    fn held_lock(&self, desired: &Manifest) -> Arc<HeldLock> {
        let path = desired.lock_path();
        let mut slot = self
            .held_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.as_ref() {
            Some(h) if h.path() == path => Arc::clone(h),
            _ => {
                if let Some(old) = slot.take() {
                    old.flush(self.reporter.as_ref());
                }
                let h = Arc::new(HeldLock::new(path));
                *slot = Some(Arc::clone(&h));
                h
            }
        }
    }

    /// Whether `entry`'s next reconcile will ask upstream ([`Self::refresh_due`] without
    /// taking the turn).
    fn refresh_pending(&self, settings: &Settings, entry: &str) -> bool {
        let Some(every) = settings.refresh_interval else {
            return false;
        };
        let now = tokio::time::Instant::now();
        let last = self
            .refreshed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.get(entry)
            .is_none_or(|t| now.duration_since(*t) >= every)
    }

    fn sync_slot(&self) -> std::sync::MutexGuard<'_, Option<SyncStatus>> {
        self.sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The sweep's sync (see the module docs); its status goes to `/status` and the metrics.
    async fn run_sync(&self, desired: &Manifest) -> Result<(), EntryError> {
        let mode = desired.settings.sync;
        if mode == SyncMode::Off {
            *self.sync_slot() = None;
            return Ok(());
        }
        let now = crate::watch::rfc3339_now();
        let fail = |message: String| {
            let mut slot = self.sync_slot();
            let st = slot.get_or_insert_with(SyncStatus::default);
            st.mode = mode.to_string();
            st.last_run = Some(now.clone());
            st.last_error = Some(message.clone());
            EntryError::new(format!("sync: {message}"))
        };
        let svc = self
            .services()
            .await
            .map_err(|e| fail(format!("{:#}", e.failure)))?;
        let mut skip = vec![desired.path.clone(), desired.lock_path()];
        skip.extend(desired.models.iter().filter_map(|e| match &e.source {
            crate::hub::ModelSource::Local(l) => Some(l.path.clone()),
            _ => None,
        }));
        let previous = self
            .sync_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let opts = SyncOptions {
            register: mode == SyncMode::Register,
            prune_missing: false,
            skip,
            unknown_models: desired.settings.unknown_models,
            previous: Some(previous),
        };
        let install = svc.manager.install().clone();
        let report = tokio::task::spawn_blocking(move || install.sync_to_config(&opts))
            .await
            .map_err(|e| fail(format!("the sync worker failed: {e}")))?
            .map_err(|e| fail(crate::retry::one_line(&e)))?;
        *self
            .sync_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = report.fingerprints();
        for o in report.orphans.iter().filter(|o| o.key.is_some()) {
            tracing::info!(
                "sync: registered {} as {}",
                o.path,
                o.model_type.map_or("?", |t| t.as_str())
            );
        }
        for o in report.orphans.iter().filter(|o| o.error.is_some()) {
            tracing::info!(
                "sync: cannot register {}: {}",
                o.path,
                o.error.as_deref().unwrap_or_default()
            );
        }
        let mut slot = self.sync_slot();
        let total = slot.as_ref().map_or(0, |s| s.registered_total);
        *slot = Some(sync_status(mode, now, &report, total));
        Ok(())
    }

    fn record_of(svc: &Services, entry: &str) -> Result<crate::AnyModelConfig, EntryError> {
        let records = svc.manager.store().all_models().map_err(|e| {
            EntryError::from(Failure::from_error(&e).context("reading the record store"))
        })?;
        records
            .into_iter()
            .find(|r| {
                r.common()
                    .managed
                    .as_ref()
                    .is_some_and(|m| m.entry == entry)
            })
            .ok_or_else(|| EntryError::new(format!("entry `{entry}` has no record to preload")))
    }
}

impl Converger for ManifestConverger {
    type Desired = Manifest;

    fn parse_manifest(&self, path: &Path, content: &[u8]) -> Result<Manifest, BoxError> {
        let text = std::str::from_utf8(content)
            .map_err(|e| format!("{}: not UTF-8 text: {e}", path.display()))?;
        let mut m =
            crate::manifest::parse_str(text, path, &crate::manifest::interpolate::env_lookup)?;
        if let Some(d) = &self.path_overrides.0 {
            m.settings.models_dir.clone_from(d);
        }
        if let Some(d) = &self.path_overrides.1 {
            m.settings.database = Some(d.clone());
        }
        if let Some(d) = &self.lock_file_override {
            m.settings.lock_file = Some(d.clone());
        }
        if let Some(what) = self.fixed.changed(&Fixed::of(&m.settings)) {
            return Err(Box::new(SettingsChanged {
                path: path.to_path_buf(),
                what,
            }));
        }
        Ok(m)
    }

    fn entries(&self, desired: &Manifest) -> Vec<EntrySpec> {
        desired
            .models
            .iter()
            .map(|e| EntrySpec {
                name: e.name.clone(),
                preload: e.preload && self.preloader.is_some(),
                spec_hash: e.spec_hash.to_string(),
            })
            .collect()
    }

    fn reconcile_entry<'a>(
        &'a self,
        desired: &'a Manifest,
        entry: &'a str,
        cancel: CancelToken,
    ) -> BoxFuture<'a, Result<EntryOutcome, EntryError>> {
        Box::pin(async move {
            let svc = self.services().await?;
            let (refresh, next_refresh) = self.refresh_due(&desired.settings, entry);
            let opts = ApplyOptions {
                prune: desired.settings.prune,
                only: vec![entry.to_owned()],
                max_parallel: desired.settings.max_parallel_downloads,
                refresh,
                cancel: cancel.clone(),
                ..ApplyOptions::default()
            };
            let held = self.held_lock(desired);
            let mut cx = svc.context(self.reporter(), None);
            cx.held_lock = Some(&held);
            let result = svc
                .unless_cancelled(apply(desired, &cx, &opts), &cancel)
                .await;
            let download_errors = self.reporter.download_errors.swap(0, Ordering::Relaxed);
            match result {
                Ok(report) => entry_result(entry, &report, download_errors).map(|mut o| {
                    o.requeue_after = next_refresh;
                    o
                }),
                Err(e) => Err(EntryError {
                    download_errors,
                    ..EntryError::from(Failure::from_error(&e))
                }),
            }
        })
    }

    fn survey<'a>(
        &'a self,
        desired: &'a Manifest,
        _cancel: CancelToken,
    ) -> BoxFuture<'a, Result<HashSet<String>, EntryError>> {
        Box::pin(async move {
            let svc = self.services().await?;
            let held = self.held_lock(desired);
            let mut cx = svc.context(self.reporter(), None);
            cx.held_lock = Some(&held);
            let converged = super::apply::survey(desired, &cx, &held)
                .map_err(|e| EntryError::from(Failure::from_error(&e)))?;
            Ok(converged
                .into_iter()
                .filter(|name| !self.refresh_pending(&desired.settings, name))
                .collect())
        })
    }

    fn settle(&self, desired: &Manifest) {
        self.held_lock(desired).flush(self.reporter.as_ref());
    }

    fn preload_entry<'a>(
        &'a self,
        desired: &'a Manifest,
        entry: &'a str,
        cancel: CancelToken,
    ) -> BoxFuture<'a, Result<(), EntryError>> {
        Box::pin(async move {
            let Some(preloader) = self.preloader.clone() else {
                // Not reached: without a preloader no entry is announced as a preload entry.
                return Ok(());
            };
            let svc = self.services().await?;
            let record = Self::record_of(svc, entry)?;
            let name = entry.to_owned();
            let spec = desired.models.iter().find(|e| e.name == entry).cloned();
            // Loading reads the whole model: off the async workers. Not interruptible; at
            // shutdown the watcher stops waiting after its timeout.
            let work = tokio::task::spawn_blocking(move || match &spec {
                Some(e) => preloader.preload_entry(e, &record),
                None => preloader.preload(&name, &record),
            });
            tokio::select! {
                r = work => match r {
                    Ok(Ok(_detail)) => Ok(()),
                    Ok(Err(why)) => Err(EntryError::from(why)),
                    Err(e) => Err(EntryError::new(format!("the preload worker failed: {e}"))),
                },
                () = cancel.cancelled() => Err(EntryError::new("preload interrupted")),
            }
        })
    }

    fn sweep<'a>(
        &'a self,
        desired: &'a Manifest,
        _cancel: CancelToken,
    ) -> BoxFuture<'a, Result<(), EntryError>> {
        Box::pin(async move {
            let pruned = self.prune(desired).await;
            let synced = self.run_sync(desired).await;
            match (pruned, synced) {
                (Err(a), Err(b)) => {
                    Err(EntryError::new(format!("{:#}; {:#}", a.failure, b.failure)))
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn cache_usage(&self) -> Vec<DeviceUsage> {
        self.cache_usage.as_ref().map_or_else(Vec::new, |f| f())
    }

    fn sync_status(&self) -> Option<SyncStatus> {
        self.sync_slot().clone()
    }
}

impl ManifestConverger {
    /// The sweep's prune of departed entries (with `settings.prune`).
    async fn prune(&self, desired: &Manifest) -> Result<(), EntryError> {
        {
            let held = self.held_lock(desired);
            if !desired.settings.prune {
                // Records of departed entries are kept (and shown by `modelsync status`); their
                // lock entries go, here once per batch (the per-entry applies leave the rest
                // of the lock alone).
                held.edit([], |lock| lock.retain_manifest(desired))
                    .map_err(|e| EntryError::from(Failure::from_error(&ApplyError::from(e))))?;
                return Ok(());
            }
            let svc = self.services().await?;
            let mut cx = svc.context(self.reporter(), None);
            cx.held_lock = Some(&held);
            // Deletions are quick and not interruptible half-way; no cancel point needed.
            let results = prune_departed(desired, &cx)
                .map_err(|e| EntryError::from(Failure::from_error(&e)))?;
            let mut failed = results.iter().filter_map(|r| {
                let f = r.error.clone()?;
                Some(f.context(format!("deleting departed entry `{}`", r.name)))
            });
            match failed.next() {
                None => Ok(()),
                Some(first) => {
                    for more in failed {
                        tracing::warn!("sweep: {more:#}");
                    }
                    Err(EntryError::from(first))
                }
            }
        }
    }
}

/// The `/status` view of a sync report; `registered_before` is the running total.
fn sync_status(mode: SyncMode, now: String, r: &SyncReport, registered_before: u64) -> SyncStatus {
    let registered: Vec<String> = r
        .orphans
        .iter()
        .filter(|o| o.key.is_some())
        .map(|o| o.path.clone())
        .collect();
    SyncStatus {
        mode: mode.to_string(),
        last_run: Some(now),
        orphans: r
            .orphans
            .iter()
            .filter(|o| o.key.is_none() && o.error.is_none())
            .map(|o| o.path.clone())
            .collect(),
        cannot_register: r
            .orphans
            .iter()
            .filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.path)))
            .collect(),
        dead_records: r
            .dead
            .iter()
            .map(|d| format!("{} ({})", d.name, d.key))
            .collect(),
        registered_total: registered_before + registered.len() as u64,
        registered,
        last_error: None,
    }
}

fn action_str(kind: ActionKind) -> String {
    kind.as_str().to_owned()
}

fn is_leftover(kind: ActionKind) -> bool {
    matches!(kind, ActionKind::Delete | ActionKind::Orphaned)
}

/// The watcher's view of an apply of one entry: its own action (not the removal of an older
/// record of it), bytes fetched, and every failure.
fn entry_result(
    entry: &str,
    report: &ApplyReport,
    download_errors: u64,
) -> Result<EntryOutcome, EntryError> {
    let mine: Vec<&ActionResult> = report.results.iter().filter(|r| r.name == entry).collect();
    let action = mine
        .iter()
        .find(|r| !is_leftover(r.action))
        .map_or_else(|| "unchanged".to_owned(), |r| action_str(r.action));
    let bytes_downloaded = mine.iter().map(|r| r.downloaded_bytes).sum();
    // The entry's own action's failure is the entry's; a failed removal of an older record of
    // it only when that is all that failed. Any further one goes to the log.
    let mut failures: Vec<&ActionResult> = mine.iter().copied().filter(|r| !r.ok()).collect();
    failures.sort_by_key(|r| is_leftover(r.action));
    for more in failures.iter().skip(1) {
        if let Some(f) = &more.error {
            tracing::warn!(
                "entry {entry}: {} also failed: {f:#}",
                action_str(more.action)
            );
        }
    }
    let failure = failures.first().and_then(|r| r.error.clone());
    let Some(failure) = failure else {
        return Ok(EntryOutcome {
            action,
            changed: mine.iter().any(|r| r.action.is_change()),
            bytes_downloaded,
            download_errors,
            requeue_after: None,
        });
    };
    Err(EntryError {
        failure,
        action: Some(action),
        bytes_downloaded,
        download_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::defaults(Path::new("/srv"))
    }

    /// Refreshes are due once per interval per entry, the first at once; off without the
    /// setting. On tokio's paused clock.
    #[tokio::test(start_paused = true)]
    async fn refreshes_are_due_once_per_interval_and_entry() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("modelsync.db");
        let lock = StoreLock::acquire(&db, Duration::ZERO, |_| {}).unwrap();
        let m = Manifest {
            path: dir.path().join("models.yaml"),
            base_dir: dir.path().to_path_buf(),
            settings: Settings::defaults(dir.path()),
            models: Vec::new(),
            broken: Vec::new(),
        };
        let conv = ManifestConverger::new(&m, lock, Arc::new(crate::events::NullReporter));
        let mut s = settings();
        assert_eq!(conv.refresh_due(&s, "a"), (false, None));
        s.refresh_interval = Some(Duration::from_mins(10));
        assert_eq!(
            conv.refresh_due(&s, "a"),
            (true, Some(Duration::from_mins(10)))
        );
        assert!(conv.refresh_due(&s, "b").0);
        tokio::time::advance(Duration::from_mins(4)).await;
        assert_eq!(
            conv.refresh_due(&s, "a"),
            (false, Some(Duration::from_mins(6)))
        );
        tokio::time::advance(Duration::from_mins(6)).await;
        assert_eq!(
            conv.refresh_due(&s, "a"),
            (true, Some(Duration::from_mins(10)))
        );
    }

    #[test]
    fn fixed_settings_name_what_changed() {
        let a = Fixed::of(&settings());
        assert_eq!(a.changed(&a.clone()), None);
        let mut s = settings();
        s.models_dir = "/elsewhere".into();
        let msg = a.changed(&Fixed::of(&s)).expect("a change");
        assert!(msg.contains("settings.models_dir"), "{msg}");
        let mut s = settings();
        s.max_parallel_downloads = 9;
        let msg = a.changed(&Fixed::of(&s)).expect("a change");
        assert_eq!(msg, "settings.max_parallel_downloads changed from 5 to 9");
        // Values as the manifest spells them, never Rust's Debug forms.
        let mut s = settings();
        s.hash_algorithm = crate::hash::HashAlgorithm::Sha256;
        let msg = a.changed(&Fixed::of(&s)).expect("a change");
        assert_eq!(msg, "settings.hash_algorithm changed from blake3 to sha256");
        let mut s = settings();
        s.variant = Some(crate::taxonomy::ModelRepoVariant::Fp16);
        let msg = a.changed(&Fixed::of(&s)).expect("a change");
        assert_eq!(msg, "settings.variant changed from unset to fp16");
        let mut s = settings();
        s.download_timeout = Duration::from_secs(90);
        let msg = a.changed(&Fixed::of(&s)).expect("a change");
        assert_eq!(msg, "settings.download_timeout changed from 1d to 1m30s");
        // prune and intervals are not service settings.
        let mut s = settings();
        s.prune = true;
        s.watch_interval = Duration::from_secs(1);
        assert_eq!(a.changed(&Fixed::of(&s)), None);
    }
}
