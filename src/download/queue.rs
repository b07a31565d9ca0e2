//! The queue: jobs in priority order, at most `max_parallel_dl` at a time, with job control and
//! events.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use reqwest::Url;
use tokio::sync::{broadcast, watch};

use crate::events::Reporter;

use super::DownloadEvent;
use super::digest::Digests;
use super::error::DownloadError;
use super::http::{Fetch, Progress, TransferConfig};
use super::job::{AccessToken, DownloadEventHandler, DownloadJob, DownloadJobStatus, JobId};
use super::state::{partial_len, remove_partial};
pub use crate::retry::RetryPolicy;

use super::names::{check_caller_file_name, redact_url, redact_url_str};

/// Default [`DownloadQueueConfig::file_timeout`]: a day, long enough for any model on a slow
/// link, short enough that a server trickling bytes cannot hold a download (and `watch`'s
/// entry) forever.
pub const DEFAULT_FILE_TIMEOUT: Duration = Duration::from_hours(24);

/// Queue settings (the seed's DownloadQueueService arguments and more).
#[derive(Debug, Clone)]
pub struct DownloadQueueConfig {
    /// Jobs running at once (default 5).
    pub max_parallel_dl: usize,
    /// Connections open at once across every job (default [`default_max_connections`]): each
    /// running job has one; a large file takes more for parallel ranges, up to this budget's
    /// share of each job in flight and `transfer.connections_per_file`. The manifest's
    /// `settings.max_connections`.
    pub max_connections: usize,
    /// How each file is fetched: connections, ranges, retries, timeouts, fsync.
    pub transfer: TransferConfig,
    /// Total time for one file, every attempt and wait included (default 24 h; `None`: no
    /// limit). The manifest's `settings.download_timeout`.
    pub file_timeout: Option<Duration>,
    /// How often the job driver looks at progress (default 100 ms); running events go out
    /// about every 1 % of the bytes and at least every [`Self::running_event_interval`].
    pub progress_interval: Duration,
    /// Upper bound between running events (default 2 s).
    pub running_event_interval: Duration,
    /// Handlers run for every job, after the job's own.
    pub event_handlers: Vec<DownloadEventHandler>,
}

impl Default for DownloadQueueConfig {
    fn default() -> Self {
        Self {
            max_parallel_dl: 5,
            max_connections: default_max_connections(),
            transfer: TransferConfig::default(),
            file_timeout: Some(DEFAULT_FILE_TIMEOUT),
            progress_interval: Duration::from_millis(100),
            running_event_interval: Duration::from_secs(2),
            event_handlers: Vec::new(),
        }
    }
}

/// The default connection budget: four per CPU core, at least 8 and at most 32. A download
/// stream costs CPU (TLS, hashing, copying), and a CDN serves a few connections per file well:
/// eight is where `hf download`'s workers and aria2c's usual `-x` stop gaining, and a large
/// machine may run several such files at once.
pub fn default_max_connections() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    (4 * cores).clamp(8, 32)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Pause,
    Cancel,
}

struct Entry {
    job: DownloadJob,
    control: Option<watch::Sender<Control>>,
    /// `start_job` arrived while a pause was taking effect.
    restart_after_stop: bool,
    /// False between a terminal status and the end of its event's delivery: waiters return
    /// only once the handlers of the final event have run.
    settled: bool,
    /// The connections this download may use, fixed when it starts: the budget divided among
    /// the jobs running or waiting to run then (at least 1). A batch started together
    /// (`start_jobs`) shares it evenly; a file that starts alone takes the whole budget.
    share: u32,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<JobId, Entry>,
    next_id: JobId,
    next_sequence: u64,
    running: usize,
}

struct Inner {
    cfg: Arc<DownloadQueueConfig>,
    /// `cfg.transfer`, shared with every running download.
    transfer: Arc<TransferConfig>,
    /// The connection budget (`cfg.max_connections` permits).
    connections: Arc<tokio::sync::Semaphore>,
    client: reqwest::Client,
    reporter: Arc<dyn Reporter<DownloadEvent>>,
    events: broadcast::Sender<DownloadEvent>,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    runtime: tokio::runtime::Handle,
}

/// The download queue (the seed's DownloadQueueService). Cheap to clone; clones share the queue.
#[derive(Clone)]
pub struct DownloadQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DownloadQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadQueue")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

enum Outcome {
    Done(Result<(std::path::PathBuf, Digests), DownloadError>),
    Paused,
    Cancelled,
}

impl DownloadQueue {
    /// A queue that reports every event to `reporter`. Must be called inside a tokio runtime:
    /// jobs run on it.
    pub fn new(
        config: DownloadQueueConfig,
        reporter: Arc<dyn Reporter<DownloadEvent>>,
    ) -> Result<Self, DownloadError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| DownloadError::Setup {
            what: format!("the download queue must be created inside a tokio runtime: {e}"),
        })?;
        let client = super::http::http_client(&config.transfer)?;
        let (events, _) = broadcast::channel(1024);
        let (changed, _) = watch::channel(0);
        Ok(Self {
            inner: Arc::new(Inner {
                transfer: Arc::new(config.transfer.clone()),
                connections: Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1))),
                cfg: Arc::new(config),
                client,
                reporter,
                events,
                state: Mutex::new(State {
                    next_id: 1,
                    ..State::default()
                }),
                changed,
                runtime,
            }),
        })
    }

    /// A [`SizeProbe`] over the queue's client, timeouts and retry policy.
    pub fn size_probe(&self) -> super::SizeProbe {
        super::SizeProbe::with_client(self.inner.client.clone(), &self.inner.cfg.transfer)
    }

    /// The settings.
    pub fn config(&self) -> &DownloadQueueConfig {
        &self.inner.cfg
    }

    /// Every event, for consumers that prefer a channel to the reporter (a slow receiver
    /// misses events rather than slowing downloads).
    pub fn subscribe(&self) -> broadcast::Receiver<DownloadEvent> {
        self.inner.events.subscribe()
    }

    /// Submits a job; with `start` it is enqueued at once, else it stays idle until
    /// [`Self::start_job`]. Returns the job with its id.
    pub fn submit_download_job(
        &self,
        mut job: DownloadJob,
        start: bool,
    ) -> Result<DownloadJob, DownloadError> {
        let url = Url::parse(&job.source).map_err(|e| DownloadError::InvalidUrl {
            url: redact_url_str(&job.source),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DownloadError::InvalidUrl {
                url: redact_url(&url),
                reason: "only http and https URLs can be downloaded".into(),
            });
        }
        let snapshot = {
            let mut st = self.inner.lock();
            job.id = st.next_id;
            st.next_id += 1;
            job.status = DownloadJobStatus::Idle;
            job.error = None;
            let snap = job.snapshot();
            st.jobs.insert(
                job.id,
                Entry {
                    job,
                    control: None,
                    restart_after_stop: false,
                    settled: true,
                    share: 1,
                },
            );
            snap
        };
        self.inner.bump();
        if start {
            self.start_job(snapshot.id)?;
            return self.id_to_job(snapshot.id);
        }
        Ok(snapshot)
    }

    /// Creates and submits a job fetching `source` into `destdir`, as `filename` when given
    /// (one plain file name), else under the name the server gives.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors the seed's create_download_job"
    )]
    pub fn create_download_job(
        &self,
        source: &str,
        destdir: &Path,
        filename: Option<&str>,
        start: bool,
        priority: i32,
        access_token: Option<AccessToken>,
        event_handlers: Vec<DownloadEventHandler>,
    ) -> Result<DownloadJob, DownloadError> {
        let destination = if let Some(name) = filename {
            check_caller_file_name(name).map_err(|reason| DownloadError::UnsafeFileName {
                url: redact_url_str(source),
                name: name.to_owned(),
                origin: "the caller",
                reason,
            })?;
            destdir.join(name)
        } else {
            // An existing directory is what tells the job to take the server's name.
            std::fs::create_dir_all(destdir)
                .map_err(|e| DownloadError::io("creating directory", destdir, e))?;
            destdir.to_path_buf()
        };
        let mut job = DownloadJob::new(source, destination)
            .with_priority(priority)
            .with_access_token(access_token);
        job.event_handlers = event_handlers;
        self.submit_download_job(job, start)
    }

    /// Enqueues an idle or paused job. Starting a job that is already enqueued or running does
    /// nothing; a finished job cannot be started again.
    pub fn start_job(&self, id: JobId) -> Result<(), DownloadError> {
        self.enqueue(id)?;
        self.inner.schedule();
        Ok(())
    }

    /// Marks a job enqueued without scheduling, so `start_all` can enqueue everything before
    /// the first pick (else the first job submitted would win over a lower priority).
    fn enqueue(&self, id: JobId) -> Result<(), DownloadError> {
        let event = {
            let mut st = self.inner.lock();
            let e = st
                .jobs
                .get_mut(&id)
                .ok_or(DownloadError::UnknownJobId(id))?;
            match e.job.status {
                DownloadJobStatus::Idle => {
                    e.job.status = DownloadJobStatus::Enqueued;
                    Some((
                        DownloadEvent::Enqueued {
                            job: Box::new(e.job.snapshot()),
                        },
                        e.job.event_handlers.clone(),
                    ))
                }
                // The seed's sequence after a pause is paused → running: no second enqueued.
                DownloadJobStatus::Paused => {
                    e.job.status = DownloadJobStatus::Enqueued;
                    None
                }
                DownloadJobStatus::Running => {
                    if e.control
                        .as_ref()
                        .is_some_and(|c| *c.borrow() == Control::Pause)
                    {
                        e.restart_after_stop = true;
                    }
                    None
                }
                DownloadJobStatus::Enqueued => None,
                status => {
                    return Err(DownloadError::InvalidState {
                        id,
                        status,
                        action: "start",
                    });
                }
            }
        };
        self.inner.bump();
        if let Some((ev, handlers)) = event {
            self.inner.emit(&ev, &handlers);
        }
        Ok(())
    }

    /// Pauses a job, keeping its partial file; [`Self::start_job`] continues it. Pausing a
    /// job that is not enqueued or running does nothing.
    pub fn pause_job(&self, id: JobId) -> Result<(), DownloadError> {
        let event = {
            let mut st = self.inner.lock();
            let e = st
                .jobs
                .get_mut(&id)
                .ok_or(DownloadError::UnknownJobId(id))?;
            e.restart_after_stop = false;
            match e.job.status {
                DownloadJobStatus::Running => {
                    if let Some(c) = &e.control {
                        c.send_replace(Control::Pause);
                    }
                    None
                }
                DownloadJobStatus::Enqueued => {
                    e.job.status = DownloadJobStatus::Paused;
                    Some((
                        DownloadEvent::Paused {
                            job: Box::new(e.job.snapshot()),
                        },
                        e.job.event_handlers.clone(),
                    ))
                }
                _ => None,
            }
        };
        self.inner.bump();
        if let Some((ev, handlers)) = event {
            self.inner.emit(&ev, &handlers);
        }
        Ok(())
    }

    /// Cancels a job and removes its partial file (unless `preserve_partial_downloads`).
    /// Cancelling a finished job does nothing.
    pub fn cancel_job(&self, id: JobId) -> Result<(), DownloadError> {
        let event = {
            let mut st = self.inner.lock();
            let e = st
                .jobs
                .get_mut(&id)
                .ok_or(DownloadError::UnknownJobId(id))?;
            e.restart_after_stop = false;
            match e.job.status {
                DownloadJobStatus::Running => {
                    if let Some(c) = &e.control {
                        c.send_replace(Control::Cancel);
                    }
                    None
                }
                DownloadJobStatus::Idle
                | DownloadJobStatus::Enqueued
                | DownloadJobStatus::Paused => {
                    e.job.status = DownloadJobStatus::Cancelled;
                    e.job.job_ended = Some(SystemTime::now());
                    e.settled = false;
                    if !e.job.preserve_partial_downloads
                        && let Some(p) = partial_target(&e.job)
                    {
                        remove_partial(&p);
                        e.job.bytes = 0;
                    }
                    Some((
                        DownloadEvent::Cancelled {
                            job: Box::new(e.job.snapshot()),
                        },
                        e.job.event_handlers.clone(),
                    ))
                }
                _ => None,
            }
        };
        self.inner.bump();
        if let Some((ev, handlers)) = event {
            self.inner.emit(&ev, &handlers);
            self.inner.settle(id);
        }
        Ok(())
    }

    fn non_terminal_ids(&self) -> Vec<JobId> {
        self.inner
            .lock()
            .jobs
            .values()
            .filter(|e| !e.job.status.is_terminal())
            .map(|e| e.job.id)
            .collect()
    }

    /// Enqueues these idle or paused jobs, then starts what fits, so that every one of them
    /// counts when the first one takes its share of the connection budget.
    pub fn start_jobs(&self, ids: &[JobId]) -> Result<(), DownloadError> {
        let mut result = Ok(());
        for id in ids {
            if let Err(e) = self.enqueue(*id) {
                result = result.and(Err(e));
            }
        }
        self.inner.schedule();
        result
    }

    /// Starts every idle or paused job.
    pub fn start_all(&self) {
        for id in self.non_terminal_ids() {
            let _ = self.enqueue(id);
        }
        self.inner.schedule();
    }

    /// Pauses every enqueued or running job.
    pub fn pause_all(&self) {
        for id in self.non_terminal_ids() {
            let _ = self.pause_job(id);
        }
    }

    /// Cancels every job that has not finished.
    pub fn cancel_all(&self) {
        for id in self.non_terminal_ids() {
            let _ = self.cancel_job(id);
        }
    }

    /// Waits until no job is enqueued or running (idle and paused jobs do not count).
    pub async fn join(&self) {
        let mut rx = self.inner.changed.subscribe();
        loop {
            let busy = self.inner.lock().jobs.values().any(|e| {
                !e.settled
                    || matches!(
                        e.job.status,
                        DownloadJobStatus::Enqueued | DownloadJobStatus::Running
                    )
            });
            if !busy {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until the job is completed, failed or cancelled and returns it; with a timeout,
    /// gives up with [`DownloadError::Timeout`]. A paused job is not finished: without a
    /// timeout this waits until someone starts or cancels it.
    pub async fn wait_for_job(
        &self,
        id: JobId,
        timeout: Option<Duration>,
    ) -> Result<DownloadJob, DownloadError> {
        let mut rx = self.inner.changed.subscribe();
        let wait = async {
            loop {
                {
                    let st = self.inner.lock();
                    let e = st.jobs.get(&id).ok_or(DownloadError::UnknownJobId(id))?;
                    if e.job.status.is_terminal() && e.settled {
                        return Ok(e.job.snapshot());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(DownloadError::UnknownJobId(id));
                }
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| DownloadError::Timeout { id, timeout: t })?,
            None => wait.await,
        }
    }

    /// Submits, starts and waits for one job; returns the downloaded file. The install
    /// service's one-call path.
    pub async fn download(
        &self,
        job: DownloadJob,
    ) -> Result<std::path::PathBuf, Arc<DownloadError>> {
        let job = self.submit_download_job(job, true).map_err(Arc::new)?;
        let done = self.wait_for_job(job.id, None).await.map_err(Arc::new)?;
        done.result().map(Path::to_path_buf)
    }

    /// Every job, in id order (snapshots without tokens).
    pub fn list_jobs(&self) -> Vec<DownloadJob> {
        self.inner
            .lock()
            .jobs
            .values()
            .map(|e| e.job.snapshot())
            .collect()
    }

    /// One job by id.
    pub fn id_to_job(&self, id: JobId) -> Result<DownloadJob, DownloadError> {
        self.inner
            .lock()
            .jobs
            .get(&id)
            .map(|e| e.job.snapshot())
            .ok_or(DownloadError::UnknownJobId(id))
    }

    /// Forgets completed, failed and cancelled jobs.
    pub fn prune_jobs(&self) {
        self.inner
            .lock()
            .jobs
            .retain(|_, e| !e.job.status.is_terminal());
        self.inner.bump();
    }
}

/// Where a job's partial lives, if that is known yet.
fn partial_target(job: &DownloadJob) -> Option<std::path::PathBuf> {
    if job.destination.is_dir() {
        job.download_path.clone()
    } else {
        Some(job.destination.clone())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn settle(&self, id: JobId) {
        if let Some(e) = self.lock().jobs.get_mut(&id) {
            e.settled = true;
        }
        self.bump();
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Reports an event, then runs the job's handlers and the queue's. Never called with the
    /// state lock held, so handlers may call back into the queue.
    fn emit(&self, event: &DownloadEvent, handlers: &[DownloadEventHandler]) {
        self.reporter.report(event);
        let _ = self.events.send(event.clone());
        let job = event.job();
        for h in handlers.iter().chain(self.cfg.event_handlers.iter()) {
            match std::panic::catch_unwind(AssertUnwindSafe(|| h.call(job))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(
                        job = job.id,
                        event = event.name(),
                        "download event handler failed: {e}"
                    );
                }
                Err(_) => {
                    tracing::warn!(
                        job = job.id,
                        event = event.name(),
                        "download event handler panicked"
                    );
                }
            }
        }
    }

    /// Starts enqueued jobs, lowest priority first (then oldest), while slots are free.
    fn schedule(self: &Arc<Self>) {
        let mut starts = Vec::new();
        {
            let mut st = self.lock();
            // A job beyond the connection budget would only wait for a connection.
            let slots = self
                .cfg
                .max_parallel_dl
                .min(self.cfg.max_connections)
                .max(1);
            let active = st
                .jobs
                .values()
                .filter(|e| {
                    matches!(
                        e.job.status,
                        DownloadJobStatus::Enqueued | DownloadJobStatus::Running
                    )
                })
                .count()
                .max(1);
            let share =
                u32::try_from((self.cfg.max_connections / active).max(1)).unwrap_or(u32::MAX);
            while st.running < slots {
                let Some(id) = st
                    .jobs
                    .values()
                    .filter(|e| e.job.status == DownloadJobStatus::Enqueued)
                    .min_by_key(|e| (e.job.priority, e.job.id))
                    .map(|e| e.job.id)
                else {
                    break;
                };
                let seq = st.next_sequence;
                st.next_sequence += 1;
                st.running += 1;
                let Some(e) = st.jobs.get_mut(&id) else { break };
                e.job.status = DownloadJobStatus::Running;
                e.share = share;
                e.job.job_started = Some(SystemTime::now());
                e.job.job_sequence = Some(seq);
                e.job.error = None;
                e.restart_after_stop = false;
                let (tx, rx) = watch::channel(Control::Run);
                e.control = Some(tx);
                starts.push((id, rx));
            }
        }
        if starts.is_empty() {
            return;
        }
        self.bump();
        for (id, rx) in starts {
            let inner = self.clone();
            self.runtime
                .spawn(async move { inner.run_job(id, rx).await });
        }
    }

    async fn run_job(self: Arc<Self>, id: JobId, mut ctl: watch::Receiver<Control>) {
        let progress = Arc::new(Progress::default());
        let setup = {
            let st = self.lock();
            st.jobs.get(&id).map(|e| {
                let j = &e.job;
                progress.bytes.store(j.bytes, Ordering::Relaxed);
                progress.total.store(j.total_bytes, Ordering::Relaxed);
                let fixed = e.share;
                let share: Arc<dyn Fn() -> u32 + Send + Sync> = Arc::new(move || fixed);
                let fetch = Url::parse(&j.source).map(|url| Fetch {
                    client: self.client.clone(),
                    cfg: self.transfer.clone(),
                    url,
                    token: j.access_token.clone(),
                    destination: j.destination.clone(),
                    known_path: j.download_path.clone(),
                    expected_size: j.expected_size,
                    expected_sha256: j.expected_sha256.clone(),
                    expected_git_sha1: j.expected_git_sha1.clone(),
                    hash_algorithms: j.hash_algorithms.clone(),
                    progress: progress.clone(),
                    connections: self.connections.clone(),
                    share,
                    resolved: Mutex::new(None),
                });
                (fetch, j.snapshot(), j.event_handlers.clone())
            })
        };
        let Some((fetch, snapshot, handlers)) = setup else {
            self.lock().running -= 1;
            self.schedule();
            return;
        };
        tracing::info!(job = id, source = %redact_url_str(&snapshot.source), "download started");
        self.emit(
            &DownloadEvent::Running {
                job: Box::new(snapshot),
            },
            &handlers,
        );

        let outcome = match fetch {
            Err(e) => Outcome::Done(Err(DownloadError::InvalidUrl {
                url: String::new(),
                reason: e.to_string(),
            })),
            Ok(fetch) => self.drive(id, &fetch, &progress, &handlers, &mut ctl).await,
        };
        self.finish_job(id, outcome, &progress);
    }

    /// Runs the download while watching for pause/cancel and sending running events.
    async fn drive(
        &self,
        id: JobId,
        fetch: &Fetch,
        progress: &Arc<Progress>,
        handlers: &[DownloadEventHandler],
        ctl: &mut watch::Receiver<Control>,
    ) -> Outcome {
        let budget = self.cfg.file_timeout;
        let fut = async {
            match budget {
                None => fetch.run().await,
                Some(t) => match tokio::time::timeout(t, fetch.run()).await {
                    Ok(r) => r,
                    Err(_) => Err(DownloadError::FileTimeout {
                        url: redact_url(&fetch.url),
                        timeout: t,
                        received: progress.path().as_deref().map_or(0, partial_len),
                    }),
                },
            }
        };
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(self.cfg.progress_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_bytes = progress.bytes.load(Ordering::Relaxed);
        let mut last_time = Instant::now();
        loop {
            tokio::select! {
                biased;
                r = &mut fut => return Outcome::Done(r),
                changed = ctl.changed() => {
                    let c = if changed.is_err() { Control::Cancel } else { *ctl.borrow_and_update() };
                    match c {
                        Control::Pause => return Outcome::Paused,
                        Control::Cancel => return Outcome::Cancelled,
                        Control::Run => {}
                    }
                }
                _ = tick.tick() => {
                    let bytes = progress.bytes.load(Ordering::Relaxed);
                    let total = progress.total.load(Ordering::Relaxed);
                    let step = bytes.saturating_sub(last_bytes);
                    let due = last_time.elapsed() >= self.cfg.running_event_interval;
                    let percent = step > 0 && (total == 0 || step.saturating_mul(100) >= total);
                    let snap = {
                        let mut st = self.lock();
                        st.jobs.get_mut(&id).map(|e| {
                            e.job.bytes = bytes;
                            e.job.total_bytes = total;
                            if let Some(p) = progress.path() {
                                e.job.download_path = Some(p);
                            }
                            e.job.snapshot()
                        })
                    };
                    if let (true, Some(job)) = (due || percent, snap) {
                        last_bytes = bytes;
                        last_time = Instant::now();
                        self.emit(&DownloadEvent::Running { job: Box::new(job) }, handlers);
                    }
                }
            }
        }
    }

    fn finish_job(self: &Arc<Self>, id: JobId, outcome: Outcome, progress: &Progress) {
        let path = progress.path();
        let (event, handlers) = {
            let mut st = self.lock();
            st.running = st.running.saturating_sub(1);
            let Some(e) = st.jobs.get_mut(&id) else {
                drop(st);
                self.bump();
                self.schedule();
                return;
            };
            e.control = None;
            e.settled = false;
            let j = &mut e.job;
            if path.is_some() {
                j.download_path.clone_from(&path);
            }
            j.total_bytes = progress.total.load(Ordering::Relaxed);
            let ev = match outcome {
                Outcome::Done(Ok((p, digests))) => {
                    j.status = DownloadJobStatus::Completed;
                    j.download_path = Some(p);
                    j.digests = digests.content();
                    j.bytes = progress.bytes.load(Ordering::Relaxed);
                    j.total_bytes = j.bytes;
                    j.job_ended = Some(SystemTime::now());
                    tracing::info!(job = id, path = %j.download_path.as_deref().unwrap_or(Path::new("")).display(), "download completed");
                    DownloadEvent::Completed {
                        job: Box::new(j.snapshot()),
                    }
                }
                Outcome::Done(Err(err)) => {
                    tracing::warn!(job = id, "download failed: {err}");
                    j.status = DownloadJobStatus::Error;
                    j.job_ended = Some(SystemTime::now());
                    j.error = Some(Arc::new(err));
                    if let (false, Some(p)) = (j.preserve_partial_downloads, &path) {
                        remove_partial(p);
                    }
                    j.bytes = path.as_deref().map_or(0, partial_len);
                    DownloadEvent::Error {
                        job: Box::new(j.snapshot()),
                    }
                }
                Outcome::Paused => {
                    j.bytes = path.as_deref().map_or(0, partial_len);
                    if e.restart_after_stop {
                        e.restart_after_stop = false;
                        j.status = DownloadJobStatus::Enqueued;
                    } else {
                        j.status = DownloadJobStatus::Paused;
                    }
                    DownloadEvent::Paused {
                        job: Box::new(j.snapshot()),
                    }
                }
                Outcome::Cancelled => {
                    j.status = DownloadJobStatus::Cancelled;
                    j.job_ended = Some(SystemTime::now());
                    if let (false, Some(p)) = (j.preserve_partial_downloads, &path) {
                        remove_partial(p);
                    }
                    j.bytes = path.as_deref().map_or(0, partial_len);
                    DownloadEvent::Cancelled {
                        job: Box::new(j.snapshot()),
                    }
                }
            };
            (ev, e.job.event_handlers.clone())
        };
        self.bump();
        self.emit(&event, &handlers);
        self.settle(id);
        self.schedule();
    }
}
