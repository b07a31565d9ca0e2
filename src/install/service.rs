//! [`ModelInstallService`]: the seed's ModelInstallService — jobs, events, register / install /
//! delete, and `download_and_cache`.
//!
//! Threading: `import_model` returns at once with a job snapshot; a tokio task per job fetches
//! (remote files in parallel through the download queue), then the serial half (probe, hash,
//! promote, register) runs on a blocking thread under one lane mutex, so records are written
//! one at a time. Install events go to the reporter while the job table is locked, so their
//! order per job is exactly downloading… → running → completed | error | cancelled.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::config::{AnyModelConfig, ModelSourceType};
use crate::download::{DownloadJob, DownloadQueue, JobId};
use crate::events::Reporter;
use crate::hub::{ModelSource, Token};
use crate::retry::Failure;
use crate::store::RecordStore;
use crate::taxonomy::ModelRepoVariant;

use super::blobs::AdoptSources;
use super::config::{Cancel, InstallConfig, record_source};
use super::error::InstallError;
use super::job::{InstallEvent, InstallJobId, InstallPart, InstallStatus, ModelInstallJob};
use super::local::{LocalSelection, is_inside, link_or_copy_selected, remove_path};
use super::promote::{PromoteCtx, Staged, absolute, check_config, check_dest, promote};
use super::remote::{self, FetchCtx, FetchSink};
use super::request::{InstallOptions, InstallOutcome, InstallRequest};
use super::staging::{RecoveryReport, Staging, StagingKind, recover, staging_id};

struct Entry {
    job: ModelInstallJob,
    /// Staging id: two imports with the same one are the same install.
    dedup: String,
    cancel: Arc<Cancel>,
    /// Download job id → index into `job.parts`.
    downloads: HashMap<JobId, usize>,
}

#[derive(Default)]
struct Jobs {
    next_id: InstallJobId,
    map: BTreeMap<InstallJobId, Entry>,
}

pub(crate) struct Inner {
    pub(crate) cfg: InstallConfig,
    pub(crate) store: Arc<dyn RecordStore>,
    pub(crate) queue: DownloadQueue,
    reporter: Arc<dyn Reporter<InstallEvent>>,
    jobs: Mutex<Jobs>,
    changed: watch::Sender<u64>,
    pub(crate) lane: Mutex<()>,
    runtime: tokio::runtime::Handle,
}

/// The install service. Cheap to clone; clones share jobs and the lane.
#[derive(Clone)]
pub struct ModelInstallService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ModelInstallService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelInstallService")
            .field("models_dir", &self.inner.cfg.models_dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ModelInstallService {
    /// A service over `store` that downloads through `queue` and reports to `reporter`. Must
    /// be called inside a tokio runtime (jobs run on it). Call [`Self::start`] once, under the
    /// store lock, before the first install.
    pub fn new(
        cfg: InstallConfig,
        store: Arc<dyn RecordStore>,
        queue: DownloadQueue,
        reporter: Arc<dyn Reporter<InstallEvent>>,
    ) -> Result<Self, InstallError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            InstallError::Setup(format!(
                "the install service must be created inside a tokio runtime: {e}"
            ))
        })?;
        std::fs::create_dir_all(&cfg.models_dir)
            .map_err(|e| InstallError::io("creating models folder", &cfg.models_dir, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                store,
                queue,
                reporter,
                jobs: Mutex::new(Jobs {
                    next_id: 1,
                    map: BTreeMap::new(),
                }),
                changed: watch::channel(0).0,
                lane: Mutex::new(()),
                runtime,
            }),
        })
    }

    /// Start-up recovery (the seed's `start`): rolls back promotions that never got their
    /// record and removes staging dirs that cannot resume (rules in [`super::staging`]).
    /// The caller must hold the store lock.
    pub fn start(&self) -> Result<RecoveryReport, InstallError> {
        let _lane = lock(&self.inner.lane);
        recover(
            &self.inner.cfg.models_dir,
            self.inner.store.as_ref(),
            self.inner.cfg.stale_after,
        )
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The settings (the seed's `app_config`).
    pub fn app_config(&self) -> &InstallConfig {
        &self.inner.cfg
    }

    /// The record store (the seed's `record_store`).
    pub fn record_store(&self) -> &Arc<dyn RecordStore> {
        &self.inner.store
    }

    /// The download queue.
    pub fn download_queue(&self) -> &DownloadQueue {
        &self.inner.queue
    }

    /// The reporter events go to (the seed's `event_bus`).
    pub fn event_bus(&self) -> &Arc<dyn Reporter<InstallEvent>> {
        &self.inner.reporter
    }

    /// `models_dir`.
    pub fn models_dir(&self) -> &Path {
        &self.inner.cfg.models_dir
    }

    // ------------------------------------------------------------------ imports

    /// The seed's `heuristic_import`: parses `source` (local path, HF repo id forms, URL;
    /// relative paths against the current directory) and imports it.
    pub fn heuristic_import(
        &self,
        source: &str,
        config: Map<String, Value>,
        access_token: Option<Token>,
    ) -> Result<ModelInstallJob, InstallError> {
        let mut src = ModelSource::parse(source)?;
        if access_token.is_some() {
            src.set_access_token(access_token);
        }
        self.import_model(src, config)
    }

    /// The seed's `import_model`: starts an install in the background and returns its job.
    /// An install of the same source and selection that is still running is returned instead
    /// of a second one, and a source that is installed already (a record with that source
    /// whose files are there) returns a completed job with that record
    /// ([`InstallOutcome::existing`]), as InvokeAI's import does; [`InstallOptions::force`]
    /// installs another copy.
    pub fn import_model(
        &self,
        source: ModelSource,
        config: Map<String, Value>,
    ) -> Result<ModelInstallJob, InstallError> {
        self.submit(InstallRequest::new(source, config))
    }

    /// [`Self::import_model`] with install options (the reconciler's entry point).
    pub fn submit(&self, request: InstallRequest) -> Result<ModelInstallJob, InstallError> {
        let mut request = request;
        check_config(&request.config)?;
        if let Some(dest) = &request.options.dest {
            check_dest(dest)?;
        }
        if let ModelSource::Local(l) = &request.source
            && !l.path.exists()
        {
            return Err(InstallError::NotFound(l.path.clone()));
        }
        if let ModelSource::Hf(h) = &mut request.source
            && h.variant.is_none()
        {
            h.variant = self
                .inner
                .cfg
                .default_variant
                .filter(|v| *v != ModelRepoVariant::Default);
        }
        if let ModelSource::Url(u) = &mut request.source {
            crate::hub::source::blob_to_resolve(&mut u.url, self.inner.cfg.hub.endpoint());
        }
        let source_str = record_source(&request.source);
        let existing = if request.options.managed.is_none()
            && request.options.in_place.is_none()
            && !request.options.force
        {
            self.installed_outcome(&request.source, &source_str)?
        } else {
            None
        };
        let dedup = dedup_key(&request);
        let (job, cancel) = {
            let mut jobs = lock(&self.inner.jobs);
            if let Some(outcome) = existing {
                // Idempotent import: the source is installed; its record is the answer.
                let id = jobs.next_id;
                jobs.next_id += 1;
                let job = ModelInstallJob {
                    id,
                    status: InstallStatus::Completed,
                    config_in: request.config.clone(),
                    config_out: Some(outcome.record.clone()),
                    inplace: matches!(&request.source, ModelSource::Local(l) if l.inplace),
                    source: source_str.clone(),
                    local_path: Some(outcome.path.clone()),
                    bytes: 0,
                    total_bytes: 0,
                    parts: Vec::new(),
                    error_type: None,
                    error: None,
                    error_causes: Vec::new(),
                    failure: None,
                    outcome: Some(outcome),
                    parsed_source: Some(strip_token(&request.source)),
                };
                let key = job
                    .outcome
                    .as_ref()
                    .map(|o| o.key.clone())
                    .unwrap_or_default();
                self.inner
                    .reporter
                    .report(&InstallEvent::ModelInstallCompleted {
                        id,
                        source: source_str,
                        total_bytes: 0,
                        key,
                    });
                jobs.map.insert(
                    id,
                    Entry {
                        job: job.clone(),
                        dedup,
                        cancel: Cancel::new(),
                        downloads: HashMap::new(),
                    },
                );
                drop(jobs);
                self.inner.bump();
                return Ok(job);
            }
            if let Some(e) = jobs
                .map
                .values()
                .find(|e| e.dedup == dedup && !e.job.in_terminal_state())
            {
                return Ok(e.job.clone());
            }
            let id = jobs.next_id;
            jobs.next_id += 1;
            let inplace = matches!(&request.source, ModelSource::Local(l) if l.inplace);
            let job = ModelInstallJob {
                id,
                status: InstallStatus::Waiting,
                config_in: request.config.clone(),
                config_out: None,
                inplace,
                source: source_str,
                local_path: match &request.source {
                    ModelSource::Local(l) => Some(l.path.clone()),
                    _ => None,
                },
                bytes: 0,
                total_bytes: 0,
                parts: Vec::new(),
                error_type: None,
                error: None,
                error_causes: Vec::new(),
                failure: None,
                outcome: None,
                parsed_source: Some(strip_token(&request.source)),
            };
            let cancel = Cancel::new();
            jobs.map.insert(
                id,
                Entry {
                    job: job.clone(),
                    dedup,
                    cancel: cancel.clone(),
                    downloads: HashMap::new(),
                },
            );
            (job, cancel)
        };
        self.inner.bump();
        let inner = self.inner.clone();
        let id = job.id;
        self.inner.runtime.spawn(async move {
            let result = run_job(&inner, id, &request, &cancel).await;
            inner.finish(id, result, &cancel);
        });
        Ok(job)
    }

    /// What an import of `source` (`source_str` its [`record_source`]) would return without
    /// installing: the record of that source whose files are there, if any (the newest when
    /// several). A local source registered in place and a copy of it are different installs.
    fn installed_outcome(
        &self,
        source: &ModelSource,
        source_str: &str,
    ) -> Result<Option<InstallOutcome>, InstallError> {
        let models_dir = &self.inner.cfg.models_dir;
        let same_kind = |r: &AnyModelConfig| match source {
            ModelSource::Local(l) => {
                (absolute(&r.resolved_path(models_dir)) == absolute(&l.path)) == l.inplace
            }
            _ => true,
        };
        let mut found: Vec<AnyModelConfig> = self
            .inner
            .store
            .all_models()?
            .into_iter()
            .filter(|r| {
                r.common().source == source_str
                    && r.resolved_path(models_dir).exists()
                    && same_kind(r)
            })
            .collect();
        found.sort_by_key(|r| r.common().created_at);
        let Some(record) = found.pop() else {
            return Ok(None);
        };
        let key = record.key().to_owned();
        let path = record.resolved_path(models_dir);
        let commit = record
            .common()
            .source_api_response
            .as_ref()
            .and_then(|v| crate::hub::HuggingFaceMetadata::from_json_value(v).ok())
            .and_then(|m| m.commit);
        let files = self
            .inner
            .store
            .model_files(&key)?
            .into_iter()
            .map(|f| super::request::InstalledFile {
                path: if f.relative_path.is_empty() {
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                } else {
                    f.relative_path
                },
                size: f.size,
                sha256: f.sha256,
            })
            .collect();
        Ok(Some(InstallOutcome {
            key,
            source: record.common().source.clone(),
            record,
            path,
            commit,
            files,
            downloaded_bytes: 0,
            adopted: Vec::new(),
            existing: true,
            warnings: Vec::new(),
        }))
    }

    /// Submits `request`, waits for it and returns what it produced (an errored or cancelled
    /// job becomes an error).
    pub async fn install(&self, request: InstallRequest) -> Result<InstallOutcome, InstallError> {
        let job = self.submit(request)?;
        let job = self.wait_for_job(job.id, None).await?;
        job_outcome(&job)
    }

    // ------------------------------------------------------------------ jobs

    /// Waits until no job is waiting, downloading or running; returns the jobs by source. A
    /// timeout that runs out is an error.
    pub async fn wait_for_installs(
        &self,
        timeout: Option<Duration>,
    ) -> Result<BTreeMap<String, ModelInstallJob>, InstallError> {
        let mut rx = self.inner.changed.subscribe();
        let wait = async {
            loop {
                {
                    let jobs = lock(&self.inner.jobs);
                    if jobs.map.values().all(|e| e.job.in_terminal_state()) {
                        return jobs
                            .map
                            .values()
                            .map(|e| (e.job.source.clone(), e.job.clone()))
                            .collect();
                    }
                }
                if rx.changed().await.is_err() {
                    return BTreeMap::new();
                }
            }
        };
        match timeout {
            None => Ok(wait.await),
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| InstallError::Timeout {
                    what: "the installs to finish".into(),
                    timeout: t,
                }),
        }
    }

    /// Waits until the job is completed, errored or cancelled and returns it.
    pub async fn wait_for_job(
        &self,
        id: InstallJobId,
        timeout: Option<Duration>,
    ) -> Result<ModelInstallJob, InstallError> {
        let mut rx = self.inner.changed.subscribe();
        let wait = async {
            loop {
                {
                    let jobs = lock(&self.inner.jobs);
                    let e = jobs.map.get(&id).ok_or(InstallError::UnknownJob(id))?;
                    if e.job.in_terminal_state() {
                        return Ok(e.job.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(InstallError::UnknownJob(id));
                }
            }
        };
        match timeout {
            None => wait.await,
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| InstallError::Timeout {
                    what: format!("install job {id}"),
                    timeout: t,
                })?,
        }
    }

    /// Every job, in id order.
    pub fn list_jobs(&self) -> Vec<ModelInstallJob> {
        lock(&self.inner.jobs)
            .map
            .values()
            .map(|e| e.job.clone())
            .collect()
    }

    /// The jobs of a source (its canonical string, or any string that parses to it).
    pub fn get_job_by_source(&self, source: &str) -> Vec<ModelInstallJob> {
        let canonical =
            ModelSource::parse(source).map_or_else(|_| source.to_owned(), |s| record_source(&s));
        lock(&self.inner.jobs)
            .map
            .values()
            .filter(|e| e.job.source == canonical || e.job.source == source)
            .map(|e| e.job.clone())
            .collect()
    }

    /// One job.
    pub fn get_job_by_id(&self, id: InstallJobId) -> Result<ModelInstallJob, InstallError> {
        lock(&self.inner.jobs)
            .map
            .get(&id)
            .map(|e| e.job.clone())
            .ok_or(InstallError::UnknownJob(id))
    }

    /// Cancels a job: its downloads stop and its staging is removed; a job already promoting
    /// its files finishes. Cancelling a finished job does nothing.
    pub fn cancel_job(&self, id: InstallJobId) -> Result<(), InstallError> {
        let (cancel, downloads) = {
            let jobs = lock(&self.inner.jobs);
            let e = jobs.map.get(&id).ok_or(InstallError::UnknownJob(id))?;
            if e.job.in_terminal_state() {
                return Ok(());
            }
            (
                e.cancel.clone(),
                e.downloads.keys().copied().collect::<Vec<_>>(),
            )
        };
        cancel.set();
        for d in downloads {
            let _ = self.inner.queue.cancel_job(d);
        }
        Ok(())
    }

    /// Forgets completed, errored and cancelled jobs.
    pub fn prune_jobs(&self) {
        lock(&self.inner.jobs)
            .map
            .retain(|_, e| !e.job.in_terminal_state());
        self.inner.bump();
    }

    // ------------------------------------------------------------------ direct paths

    /// Registers the model at `path` where it is (nothing moves); returns the record.
    pub fn register_path(
        &self,
        path: &Path,
        config: &Map<String, Value>,
    ) -> Result<AnyModelConfig, InstallError> {
        self.register_path_with(path, config, &InstallOptions::default())
            .map(|o| o.record)
    }

    /// [`Self::register_path`] with options.
    pub fn register_path_with(
        &self,
        path: &Path,
        config: &Map<String, Value>,
        opts: &InstallOptions,
    ) -> Result<InstallOutcome, InstallError> {
        let staged = local_staged(path, None)?;
        let _lane = lock(&self.inner.lane);
        promote(&self.inner.promote_ctx(&|| false), &staged, config, opts)
    }

    /// Installs the model at `path` into `models_dir/<key>/` (hardlinked when on the same
    /// filesystem, else copied), then registers it; returns the record.
    pub fn install_path(
        &self,
        path: &Path,
        config: &Map<String, Value>,
    ) -> Result<AnyModelConfig, InstallError> {
        self.install_path_with(path, config, &InstallOptions::default())
            .map(|o| o.record)
    }

    /// [`Self::install_path`] with options.
    pub fn install_path_with(
        &self,
        path: &Path,
        config: &Map<String, Value>,
        opts: &InstallOptions,
    ) -> Result<InstallOutcome, InstallError> {
        check_config(config)?;
        let src = ModelSource::Local(crate::hub::LocalModelSource {
            path: path.to_path_buf(),
            inplace: false,
        });
        let staging = Staging::new(&self.inner.cfg.models_dir, &stage_id(&src, opts));
        let _lane = lock(&self.inner.lane);
        let staged = stage_local_copy(path, staging, opts)?;
        let result = promote(&self.inner.promote_ctx(&|| false), &staged, config, opts);
        if result.is_err()
            && let Some(s) = &staged.staging
        {
            let _ = s.remove();
        }
        result
    }

    /// Removes the record (the seed's `unregister`); files stay.
    pub fn unregister(&self, key: &str) -> Result<(), InstallError> {
        let _lane = lock(&self.inner.lane);
        self.inner.store.del_model(key)?;
        Ok(())
    }

    /// Removes the record and, when they lie inside `models_dir`, its files. Returns the path
    /// deleted, if any.
    pub fn delete(&self, key: &str) -> Result<Option<PathBuf>, InstallError> {
        self.delete_impl(key, false)
    }

    /// Removes the record and its files wherever they are. Returns the path deleted, if any.
    pub fn unconditionally_delete(&self, key: &str) -> Result<Option<PathBuf>, InstallError> {
        self.delete_impl(key, true)
    }

    fn delete_impl(&self, key: &str, anywhere: bool) -> Result<Option<PathBuf>, InstallError> {
        let _lane = lock(&self.inner.lane);
        let models_dir = &self.inner.cfg.models_dir;
        let record = self.inner.store.get_model(key)?;
        let target = record.resolved_path(models_dir);
        let inside = is_inside(models_dir, &target);
        // Record first, files second: a crash in between leaves an orphan that `gc` collects,
        // never a record whose files are gone.
        self.inner.store.del_model(key)?;
        pause_point("delete");
        let mut deleted = None;
        // An hf-cache model takes its refs and the blobs no other snapshot links to along.
        let remove = |p: &Path| {
            if inside && super::layout::hf_snapshot_of(models_dir, p).is_some() {
                super::layout::remove_hf(models_dir, p)
            } else {
                remove_path(p)
            }
        };
        if (inside || anywhere)
            && remove(&target).map_err(|e| match e {
                InstallError::Io { path, source, .. } => InstallError::Io {
                    op: "the record is removed and `modelsync gc` collects what is left; could not delete",
                    path,
                    source,
                },
                other => other,
            })?
        {
            deleted = Some(target.clone());
        }
        if inside {
            // A single-file model lives in `<key>/<file>`: the folder goes with the file.
            super::staging::remove_empty_parents(models_dir, &target);
        }
        Ok(deleted)
    }

    /// Downloads a URL into `models_dir/.cache/<id>/` and returns the file, or returns the
    /// cached file without downloading when it is already there. Nothing is probed or
    /// registered. A timeout that runs out cancels the download and is an error.
    pub async fn download_and_cache(
        &self,
        source: &str,
        access_token: Option<Token>,
        timeout: Option<Duration>,
    ) -> Result<PathBuf, InstallError> {
        remote::download_and_cache(
            &self.inner.cfg.models_dir,
            &self.inner.queue,
            source,
            access_token,
            timeout,
        )
        .await
    }
}

/// A test hook, in debug builds only: when `MODELSYNC_TEST_PAUSE` names this point
/// (`delete`: between unregistering a model and deleting its files), writes
/// `modelsync-test: paused at <point>` to stderr and blocks forever, so a test can kill the
/// process exactly there. Release builds compile it to nothing.
pub(crate) fn pause_point(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("MODELSYNC_TEST_PAUSE").is_some_and(|v| v == point) {
        use std::io::Write as _;
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "modelsync-test: paused at {point}");
        let _ = err.flush();
        drop(err);
        loop {
            std::thread::park();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// What a finished job produced, or why not.
pub fn job_outcome(job: &ModelInstallJob) -> Result<InstallOutcome, InstallError> {
    match (&job.status, &job.outcome) {
        (InstallStatus::Completed, Some(o)) => Ok(o.clone()),
        (InstallStatus::Cancelled, _) => Err(InstallError::Cancelled(job.source.clone())),
        _ => Err(match &job.failure {
            Some(e) => InstallError::JobFailed(e.clone()),
            None => InstallError::Setup(format!("install job {} did not finish", job.id)),
        }),
    }
}

fn strip_token(s: &ModelSource) -> ModelSource {
    let mut s = s.clone();
    s.set_access_token(None);
    s
}

/// What, besides the source, makes an install its own: the globs, the `dest`, and the manifest
/// entry that asks for it. Two manifest entries with the same source (another `dest`, `hash`
/// or `config`) are two installs, each with its own job, staging folder and record; two
/// imports of one source and selection are one.
fn selection(opts: &InstallOptions) -> Vec<String> {
    let mut v = vec![format!("include={}", opts.include.join("\u{1f}"))];
    if let Some(m) = &opts.managed {
        v.push(format!("entry={}", m.entry));
    }
    v.push(format!("exclude={}", opts.exclude.join("\u{1f}")));
    v.push(format!(
        "dest={}",
        opts.dest
            .as_deref()
            .map(Path::to_string_lossy)
            .unwrap_or_default()
    ));
    v
}

fn stage_id(source: &ModelSource, opts: &InstallOptions) -> String {
    let sel = selection(opts);
    let refs: Vec<&str> = sel.iter().map(String::as_str).collect();
    staging_id(&source.canonical(), &refs)
}

fn dedup_key(req: &InstallRequest) -> String {
    if let Some(ip) = &req.options.in_place {
        return format!("in-place:{}", ip.key);
    }
    let inplace = matches!(&req.source, ModelSource::Local(l) if l.inplace);
    format!(
        "{}{}",
        stage_id(&req.source, &req.options),
        if inplace { "+inplace" } else { "" }
    )
}

pub(crate) fn local_staged(path: &Path, staging: Option<Staging>) -> Result<Staged, InstallError> {
    let md = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            InstallError::NotFound(path.to_path_buf())
        } else {
            InstallError::io("reading", path, e)
        }
    })?;
    Ok(Staged {
        model_path: absolute(path),
        staging,
        moved_from: String::new(),
        single_file: !md.is_dir(),
        source: absolute(path).display().to_string(),
        source_type: ModelSourceType::Path,
        metadata: None,
        tags: Vec::new(),
        commit: None,
        sha256: HashMap::new(),
        digests: HashMap::new(),
        downloaded: 0,
        adopted: Vec::new(),
    })
}

fn stage_local_copy(
    path: &Path,
    staging: Staging,
    opts: &InstallOptions,
) -> Result<Staged, InstallError> {
    let selection = LocalSelection::new(&opts.include, &opts.exclude)?;
    let mut staged = local_staged(path, None)?;
    staging.prepare(&staged.source, StagingKind::Local, None)?;
    let (model_path, moved_from) = if staged.single_file {
        let name = path
            .file_name()
            .ok_or_else(|| InstallError::NotFound(path.to_path_buf()))?;
        let name_str = name.to_string_lossy().into_owned();
        (staging.files().join(name), format!("files/{name_str}"))
    } else {
        // `files` exists (prepare made it); the copy goes into it.
        (staging.files(), "files".to_owned())
    };
    if let Err(e) = link_or_copy_selected(path, &model_path, &selection) {
        let _ = staging.remove();
        return Err(e);
    }
    staged.model_path = model_path;
    staged.moved_from = moved_from;
    staged.staging = Some(staging);
    Ok(staged)
}

async fn run_job(
    inner: &Arc<Inner>,
    id: InstallJobId,
    req: &InstallRequest,
    cancel: &Arc<Cancel>,
) -> Result<InstallOutcome, InstallError> {
    if let Some(ip) = &req.options.in_place {
        return super::refit::refit(inner, id, req, ip, cancel).await;
    }
    let staged = match &req.source {
        ModelSource::Local(l) if l.inplace => local_staged(&l.path, None)?,
        ModelSource::Local(l) => {
            let staging = Staging::new(&inner.cfg.models_dir, &stage_id(&req.source, &req.options));
            let path = l.path.clone();
            let opts = req.options.clone();
            tokio::task::spawn_blocking(move || stage_local_copy(&path, staging, &opts))
                .await
                .map_err(|e| InstallError::Setup(format!("staging worker failed: {e}")))??
        }
        ModelSource::Hf(h) => {
            let staging = Staging::new(&inner.cfg.models_dir, &stage_id(&req.source, &req.options));
            remote::fetch_hf(&inner.fetch_ctx(id), h, &req.options, staging, cancel).await?
        }
        ModelSource::Url(u) => {
            let staging = Staging::new(&inner.cfg.models_dir, &stage_id(&req.source, &req.options));
            remote::fetch_url(&inner.fetch_ctx(id), u, &req.options, staging, cancel).await?
        }
        ModelSource::Oci(o) => {
            let staging = Staging::new(&inner.cfg.models_dir, &stage_id(&req.source, &req.options));
            super::oci::fetch_oci(inner, id, o, &req.options, staging, cancel).await?
        }
    };
    if cancel.is_set() {
        return Err(InstallError::Cancelled(staged.source.clone()));
    }
    inner.update(id, |job| {
        job.status = InstallStatus::Running;
        if let Some(s) = &staged.staging {
            job.local_path = Some(s.files());
        }
        Some(InstallEvent::ModelInstallRunning {
            id,
            source: job.source.clone(),
        })
    });
    let inner2 = inner.clone();
    let config = req.config.clone();
    let opts = req.options.clone();
    let cancel2 = cancel.clone();
    let staged = Arc::new(staged);
    let staged2 = staged.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _lane = lock(&inner2.lane);
        share_with_store(&inner2, &staged2);
        let cancelled = || cancel2.is_set();
        promote(&inner2.promote_ctx(&cancelled), &staged2, &config, &opts)
    })
    .await
    .map_err(|e| InstallError::Setup(format!("install worker failed: {e}")))?;
    if result.is_err()
        && let Some(s) = &staged.staging
        && (cancel.is_set() || s.meta().is_some_and(|m| m.kind == StagingKind::Local))
    {
        let _ = s.remove();
    }
    result
}

/// Where the downloads of one install job report: that job in the service's table. Weak, so
/// a download outliving the service keeps nothing alive.
struct JobSink {
    inner: Weak<Inner>,
    id: InstallJobId,
}

impl FetchSink for JobSink {
    fn parts(&self, local_path: PathBuf, parts: Vec<InstallPart>, done_bytes: u64) {
        if let Some(inner) = self.inner.upgrade() {
            inner.set_parts(self.id, local_path, parts, done_bytes);
        }
    }
    fn linked(&self, download: JobId, part: usize) {
        if let Some(inner) = self.inner.upgrade() {
            inner.link_download(self.id, download, part);
        }
    }
    fn progress(&self, part: usize, download: &DownloadJob) {
        if let Some(inner) = self.inner.upgrade() {
            inner.on_download(self.id, part, download);
        }
    }
}

/// Under the lane, before promotion: a staged file whose sha256 the store already holds in
/// another model on the same file system (an install of the same files that ran beside this
/// one) is replaced by a hard link to it, once its content checks, so one model kept under two
/// entries is stored once even when both were downloaded at the same time. Best effort.
fn share_with_store(inner: &Inner, staged: &Staged) {
    if staged.staging.is_none() || staged.sha256.is_empty() {
        return;
    }
    let sources = AdoptSources::default();
    let wanted: Vec<&str> = staged.sha256.values().map(String::as_str).collect();
    let ix = super::blobs::BlobIndex::gather(
        &sources,
        Some((inner.store.as_ref(), &inner.cfg.models_dir)),
        &wanted,
    );
    if ix.is_empty() {
        return;
    }
    for (rel, sha) in &staged.sha256 {
        let path = if staged.single_file {
            staged.model_path.clone()
        } else {
            staged.model_path.join(rel)
        };
        let Ok(md) = std::fs::metadata(&path) else {
            continue;
        };
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let Some(found) = ix.lookup(sha, md.len(), name, &path) else {
            continue;
        };
        if found.linkable {
            let want = crate::hub::ExpectedHash::Sha256(sha.clone());
            let _ = ix.adopt(&want, md.len(), name, &path);
        }
    }
}

impl Inner {
    /// What the fetch half of job `id` works with.
    pub(crate) fn fetch_ctx(self: &Arc<Self>, id: InstallJobId) -> FetchCtx<'_> {
        FetchCtx {
            cfg: &self.cfg,
            store: self.store.clone(),
            queue: &self.queue,
            sink: Arc::new(JobSink {
                inner: Arc::downgrade(self),
                id,
            }),
        }
    }

    /// The lane: held while records are written, one install at a time.
    pub(crate) fn lane(&self) -> MutexGuard<'_, ()> {
        lock(&self.lane)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn promote_ctx<'a>(&'a self, cancelled: &'a dyn Fn() -> bool) -> PromoteCtx<'a> {
        PromoteCtx {
            models_dir: &self.cfg.models_dir,
            store: self.store.as_ref(),
            hash_algorithm: self.cfg.hash_algorithm,
            cancelled,
        }
    }

    /// Applies `f` to a job and reports the event it returns, under the job table's lock so
    /// events of one job keep their order.
    pub(crate) fn update(
        &self,
        id: InstallJobId,
        f: impl FnOnce(&mut ModelInstallJob) -> Option<InstallEvent>,
    ) {
        {
            let mut jobs = lock(&self.jobs);
            let Some(e) = jobs.map.get_mut(&id) else {
                return;
            };
            if let Some(ev) = f(&mut e.job) {
                self.reporter.report(&ev);
            }
        }
        self.bump();
    }

    /// Registers the download parts of a job before they start.
    fn set_parts(
        &self,
        id: InstallJobId,
        local_path: PathBuf,
        parts: Vec<InstallPart>,
        done_bytes: u64,
    ) {
        self.update(id, |job| {
            job.status = InstallStatus::Downloading;
            job.total_bytes = parts.iter().map(|p| p.total_bytes).sum();
            job.bytes = done_bytes;
            job.parts = parts;
            job.local_path = Some(local_path.clone());
            Some(downloading_event(job, local_path))
        });
    }

    /// Links a download job to a part of an install job (for cancel and progress).
    fn link_download(&self, id: InstallJobId, download: JobId, part: usize) {
        if let Some(e) = lock(&self.jobs).map.get_mut(&id) {
            e.downloads.insert(download, part);
        }
    }

    /// Progress of one download of an install job.
    fn on_download(&self, id: InstallJobId, part: usize, dj: &DownloadJob) {
        self.update(id, |job| {
            if job.status != InstallStatus::Downloading {
                return None;
            }
            let p = job.parts.get_mut(part)?;
            p.bytes = dj.bytes.max(p.bytes.min(p.total_bytes));
            if p.total_bytes == 0 {
                p.total_bytes = dj.total_bytes;
            }
            if let Some(dp) = &dj.download_path {
                p.local_path.clone_from(dp);
            }
            job.bytes = job.parts.iter().map(|p| p.bytes).sum();
            job.total_bytes = job.parts.iter().map(|p| p.total_bytes).sum();
            let lp = job.local_path.clone().unwrap_or_default();
            Some(downloading_event(job, lp))
        });
    }

    fn finish(
        &self,
        id: InstallJobId,
        result: Result<InstallOutcome, InstallError>,
        cancel: &Arc<Cancel>,
    ) {
        if let Ok(outcome) = &result {
            let source = lock(&self.jobs)
                .map
                .get(&id)
                .map(|e| e.job.source.clone())
                .unwrap_or_default();
            for message in &outcome.warnings {
                self.reporter.report(&InstallEvent::ModelInstallWarning {
                    id,
                    source: source.clone(),
                    message: message.clone(),
                });
            }
        }
        self.update(id, |job| match result {
            Ok(outcome) => {
                job.status = InstallStatus::Completed;
                job.config_out = Some(outcome.record.clone());
                job.local_path = Some(outcome.path.clone());
                let ev = InstallEvent::ModelInstallCompleted {
                    id,
                    source: job.source.clone(),
                    total_bytes: job.total_bytes,
                    key: outcome.key.clone(),
                };
                job.outcome = Some(outcome);
                Some(ev)
            }
            Err(e) if cancel.is_set() || matches!(e, InstallError::Cancelled(_)) => {
                let _ = e;
                job.status = InstallStatus::Cancelled;
                Some(InstallEvent::ModelInstallCancelled {
                    id,
                    source: job.source.clone(),
                })
            }
            Err(e) => {
                let failure = Failure::from_error(&e);
                tracing::debug!("install of {} failed: {failure:#}", job.source);
                job.status = InstallStatus::Error;
                job.error_type = Some(e.error_type().to_owned());
                job.error = Some(failure.message.clone());
                job.error_causes.clone_from(&failure.causes);
                job.failure = Some(Arc::new(e));
                Some(InstallEvent::ModelInstallError {
                    id,
                    source: job.source.clone(),
                    error_type: job.error_type.clone().unwrap_or_default(),
                    error: failure.message,
                    causes: failure.causes,
                })
            }
        });
    }
}

fn downloading_event(job: &ModelInstallJob, local_path: PathBuf) -> InstallEvent {
    InstallEvent::ModelInstallDownloading {
        id: job.id,
        source: job.source.clone(),
        local_path,
        bytes: job.bytes,
        total_bytes: job.total_bytes,
        parts: job.parts.clone(),
    }
}
