//! The loop: schedules reconciles from file events, the resync interval and retry timers;
//! records results; shuts down in bounded time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::{Id, JoinError, JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout_at};

use super::cancel::{CancelSource, CancelToken};
use super::fswatch::{ManifestWatch, content_hash};
use super::metrics::{ReloadResult, RunResult};
use super::server;
use super::state::{EntryState, Shared, WatchState};
use super::{Converger, EntryError, EntryOutcome, EntrySpec, WatchConfig, WatchError};
use crate::retry::Jitter;

/// Time the HTTP server gets to finish in-flight requests at shutdown, and time aborted
/// reconciles get to unwind.
const SERVER_GRACE: Duration = Duration::from_secs(2);
const ABORT_GRACE: Duration = Duration::from_secs(1);

enum TaskKey {
    Entry {
        name: String,
        spec_gen: u64,
        started: Instant,
    },
    Sweep,
}

enum Done {
    Entry {
        result: Result<EntryOutcome, EntryError>,
        preload: Option<Result<(), EntryError>>,
        took: Duration,
    },
    Sweep(Result<(), EntryError>),
}

type Joined = Result<(Id, Done), JoinError>;

enum Wake {
    Shutdown,
    Joined(Box<Joined>),
    FileEvent,
    Tick,
    RetryDue,
}

pub(crate) struct Runner<C: Converger> {
    config: WatchConfig,
    conv: Arc<C>,
    shared: Arc<Shared>,
    desired: Option<Arc<C::Desired>>,
    /// Hash of the content read last, valid or not: equal content is a no-op.
    last_seen: Option<String>,
    queue: VecDeque<String>,
    tasks: JoinSet<Done>,
    keys: HashMap<Id, TaskKey>,
    work: CancelSource,
    jitter: Jitter,
    fs_rx: mpsc::UnboundedReceiver<()>,
    fs_watch: Option<ManifestWatch>,
    server: Option<JoinHandle<()>>,
    server_stop: CancelSource,
}

impl<C: Converger> Runner<C> {
    pub(crate) async fn start(
        config: WatchConfig,
        conv: Arc<C>,
    ) -> Result<(Self, SocketAddr), WatchError> {
        let usage_conv = Arc::clone(&conv);
        let sync_conv = Arc::clone(&conv);
        let shared = Arc::new(
            Shared::new(
                config.manifest_path.clone(),
                Box::new(move || usage_conv.cache_usage()),
            )
            .with_sync_status(Box::new(move || sync_conv.sync_status())),
        );
        let (fs_tx, fs_rx) = mpsc::unbounded_channel();
        let fs_watch = ManifestWatch::start(&config.manifest_path, config.debounce, fs_tx)?;
        let listen_err = |source| WatchError::Listen {
            addr: config.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(listen_err)?;
        let local = listener.local_addr().map_err(listen_err)?;
        let (server_stop, stop_token) = CancelSource::new();
        let router = server::router(Arc::clone(&shared));
        let limits = server::Limits::for_this_process();
        tracing::debug!(
            "health server on {local}: at most {} connection(s) at once",
            limits.cap
        );
        let server = tokio::spawn(server::serve(listener, router, stop_token, limits));
        let (work, _) = CancelSource::new();
        Ok((
            Self {
                config,
                conv,
                shared,
                desired: None,
                last_seen: None,
                queue: VecDeque::new(),
                tasks: JoinSet::new(),
                keys: HashMap::new(),
                work,
                jitter: Jitter::from_os(),
                fs_rx,
                fs_watch: Some(fs_watch),
                server: Some(server),
                server_stop,
            },
            local,
        ))
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    pub(crate) async fn run(mut self, shutdown: CancelToken) -> Result<(), WatchError> {
        // The first tick fires at once: that is the reconcile at start.
        let mut interval = tokio::time::interval(self.config.interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.start_queued();
            let retry_at = self.earliest_retry();
            let has_tasks = !self.tasks.is_empty();
            let wake = tokio::select! {
                biased;
                () = shutdown.cancelled() => Wake::Shutdown,
                Some(j) = self.tasks.join_next_with_id(), if has_tasks => Wake::Joined(Box::new(j)),
                Some(()) = self.fs_rx.recv() => Wake::FileEvent,
                _ = interval.tick() => Wake::Tick,
                () = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => Wake::RetryDue,
            };
            match wake {
                Wake::Shutdown => break,
                Wake::Joined(j) => self.finish(*j),
                Wake::FileEvent => {
                    // One re-read covers every burst already queued.
                    while self.fs_rx.try_recv().is_ok() {}
                    if self.reload_manifest().await == ReloadResult::Changed {
                        self.request_all();
                    }
                }
                Wake::Tick => {
                    // A full resync even while events arrive: events can be missed, and
                    // drift (a deleted file, a removed record) makes none.
                    self.reload_manifest().await;
                    self.request_all();
                }
                Wake::RetryDue => self.fire_due(),
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// Re-reads the manifest through symlinks; a new valid content becomes the desired state.
    async fn reload_manifest(&mut self) -> ReloadResult {
        let path = self.config.manifest_path.clone();
        let content = match tokio::fs::read(&path).await {
            Ok(c) => c,
            Err(e) => {
                // Forget the hash so that the same content, once readable again, is parsed.
                self.last_seen = None;
                let msg = format!("cannot read manifest {}: {e}", path.display());
                return self.manifest_error(msg);
            }
        };
        let hash = content_hash(&content);
        if self.last_seen.as_deref() == Some(hash.as_str()) {
            self.shared
                .lock()
                .counters
                .record_reload(ReloadResult::Unchanged);
            return ReloadResult::Unchanged;
        }
        self.last_seen = Some(hash.clone());
        {
            let mut st = self.shared.lock();
            if st.manifest.loaded && st.manifest.hash.as_deref() == Some(hash.as_str()) {
                // Reverted to the content in force after a bad edit: nothing to reconcile.
                st.manifest.error = None;
                st.manifest.error_at = None;
                st.counters.record_reload(ReloadResult::Unchanged);
                return ReloadResult::Unchanged;
            }
        }
        match self.conv.parse_manifest(&path, &content) {
            Err(e) => self.manifest_error(e.to_string()),
            Ok(desired) => {
                let specs = self.conv.entries(&desired);
                self.desired = Some(Arc::new(desired));
                let mut st = self.shared.lock();
                st.manifest.loaded = true;
                st.manifest.hash = Some(hash);
                st.manifest.loaded_at = Some(SystemTime::now());
                st.manifest.error = None;
                st.manifest.error_at = None;
                st.counters.record_reload(ReloadResult::Changed);
                apply_entries(&mut st, specs);
                st.sweep.pending = true;
                tracing::info!("manifest {} loaded", path.display());
                ReloadResult::Changed
            }
        }
    }

    fn manifest_error(&mut self, msg: String) -> ReloadResult {
        tracing::warn!("{msg}; keeping the previous desired state");
        let mut st = self.shared.lock();
        st.manifest.error = Some(msg);
        st.manifest.error_at = Some(SystemTime::now());
        st.counters.record_reload(ReloadResult::Error);
        ReloadResult::Error
    }

    /// Asks for a reconcile of every entry (backing-off entries wait for their timer) and
    /// a sweep.
    fn request_all(&mut self) {
        let now = Instant::now();
        let mut st = self.shared.lock();
        if self.desired.is_some() {
            st.sweep.pending = true;
        }
        let names: Vec<String> = st.visible().iter().map(|e| e.spec.name.clone()).collect();
        for name in names {
            if let Some(e) = st.entries.get_mut(&name) {
                request(e, &mut self.queue, now);
            }
        }
    }

    /// Queues entries whose retry or requeue time has come.
    fn fire_due(&mut self) {
        let now = Instant::now();
        let mut st = self.shared.lock();
        for e in st.entries.values_mut() {
            if e.next_retry.is_some_and(|t| t <= now) {
                e.next_retry = None;
                request(e, &mut self.queue, now);
            }
        }
    }

    fn earliest_retry(&self) -> Option<Instant> {
        let st = self.shared.lock();
        st.entries
            .values()
            .filter(|e| !e.removed && !e.running && !e.queued)
            .filter_map(|e| e.next_retry)
            .min()
    }

    fn running_entries(&self) -> usize {
        self.keys
            .values()
            .filter(|k| matches!(k, TaskKey::Entry { .. }))
            .count()
    }

    fn start_queued(&mut self) {
        let Some(desired) = self.desired.clone() else {
            return;
        };
        let mut st = self.shared.lock();
        if st.shutting_down {
            return;
        }
        if st.sweep.pending && !st.sweep.running {
            st.sweep.pending = false;
            st.sweep.running = true;
            let conv = Arc::clone(&self.conv);
            let d = Arc::clone(&desired);
            let cancel = self.work.token();
            let h = self
                .tasks
                .spawn(async move { Done::Sweep(conv.sweep(&d, cancel).await) });
            self.keys.insert(h.id(), TaskKey::Sweep);
        }
        let mut running = self.running_entries();
        while running < self.config.concurrency {
            let Some(name) = self.queue.pop_front() else {
                break;
            };
            let Some(e) = st.entries.get_mut(&name) else {
                continue;
            };
            e.queued = false;
            if e.removed || e.running {
                continue;
            }
            e.running = true;
            e.next_retry = None;
            e.last_attempt = Some(SystemTime::now());
            let want_preload = e.spec.preload;
            let preloaded = e.preloaded;
            let spec_gen = e.spec_gen;
            let conv = Arc::clone(&self.conv);
            let d = Arc::clone(&desired);
            let cancel = self.work.token();
            let task_name = name.clone();
            let h = self.tasks.spawn(async move {
                let started = Instant::now();
                let result = conv.reconcile_entry(&d, &task_name, cancel.clone()).await;
                let preload = match &result {
                    Ok(o)
                        if want_preload && (o.changed || !preloaded) && !cancel.is_cancelled() =>
                    {
                        Some(conv.preload_entry(&d, &task_name, cancel.clone()).await)
                    }
                    _ => None,
                };
                Done::Entry {
                    result,
                    preload,
                    took: started.elapsed(),
                }
            });
            self.keys.insert(
                h.id(),
                TaskKey::Entry {
                    name,
                    spec_gen,
                    started: Instant::now(),
                },
            );
            running += 1;
        }
    }

    fn finish(&mut self, joined: Joined) {
        let (id, done) = match joined {
            Ok((id, done)) => (id, Ok(done)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some(key) = self.keys.remove(&id) else {
            return;
        };
        let cancelled = self.work.token().is_cancelled();
        let join_error = |e: &JoinError| {
            EntryError::new(if e.is_panic() {
                "the reconcile panicked (a bug; see the log)"
            } else {
                "the reconcile was aborted at shutdown"
            })
        };
        match key {
            TaskKey::Sweep => {
                let result = match done {
                    Ok(Done::Sweep(r)) => r,
                    Ok(Done::Entry { .. }) => Ok(()),
                    Err(e) => Err(join_error(&e)),
                };
                let mut st = self.shared.lock();
                st.sweep.running = false;
                match result {
                    Ok(()) => st.sweep.last_success = Some(SystemTime::now()),
                    Err(e) => {
                        tracing::warn!("sweep failed: {e}");
                        st.sweep.last_error = Some(e.failure.message);
                        st.sweep.last_error_at = Some(SystemTime::now());
                    }
                }
            }
            TaskKey::Entry {
                name,
                spec_gen,
                started,
            } => {
                let (result, preload, took) = match done {
                    Ok(Done::Entry {
                        result,
                        preload,
                        took,
                    }) => (result, preload, took),
                    Ok(Done::Sweep(_)) => return,
                    Err(e) => {
                        if e.is_panic() {
                            tracing::error!("reconcile of {name} panicked");
                        }
                        (Err(join_error(&e)), None, started.elapsed())
                    }
                };
                let mut st = self.shared.lock();
                let unit = self.jitter.next_unit();
                record_entry(
                    &mut st,
                    &mut self.queue,
                    &self.config,
                    unit,
                    EntryResult {
                        name,
                        spec_gen,
                        result,
                        preload,
                        took,
                        cancelled,
                    },
                );
            }
        }
    }

    /// Stops taking work, cancels running reconciles, waits for them (bounded), then stops
    /// the file watch and the server.
    async fn shutdown(mut self) {
        {
            let mut st = self.shared.lock();
            st.shutting_down = true;
            for e in st.entries.values_mut() {
                e.queued = false;
            }
        }
        self.queue.clear();
        self.work.cancel();
        let deadline = Instant::now() + self.config.shutdown_timeout;
        while !self.tasks.is_empty() {
            match timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(j)) => self.finish(j),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        "{} reconcile(s) did not stop within {}; dropping them",
                        self.tasks.len(),
                        crate::units::HumanDuration(self.config.shutdown_timeout)
                    );
                    self.tasks.abort_all();
                    let grace = Instant::now() + ABORT_GRACE;
                    while let Ok(Some(j)) = timeout_at(grace, self.tasks.join_next_with_id()).await
                    {
                        self.finish(j);
                    }
                    break;
                }
            }
        }
        self.fs_watch = None;
        self.server_stop.cancel();
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(SERVER_GRACE, &mut server)
                .await
                .is_err()
        {
            server.abort();
        }
        tracing::info!("watch stopped");
    }
}

/// Merges a new entry list into the state: new entries appear pending, entries whose spec
/// hash changed start over (backoff reset, must converge again), vanished entries go (or are
/// marked removed while their reconcile finishes).
fn apply_entries(st: &mut WatchState, specs: Vec<EntrySpec>) {
    let names: HashSet<String> = specs.iter().map(|s| s.name.clone()).collect();
    for (order, spec) in specs.into_iter().enumerate() {
        if let Some(e) = st.entries.get_mut(&spec.name) {
            e.order = order;
            if e.removed || e.spec.spec_hash != spec.spec_hash {
                e.removed = false;
                e.spec_gen += 1;
                e.failures = 0;
                e.next_retry = None;
                e.converged_once = false;
                e.preloaded = false;
            }
            e.spec = spec;
        } else {
            st.entries
                .insert(spec.name.clone(), EntryState::new(spec, order));
        }
    }
    st.entries.retain(|name, e| {
        if names.contains(name) {
            return true;
        }
        e.removed = true;
        e.queued = false;
        e.rerun = false;
        e.running
    });
}

/// Asks for one reconcile of `e`: coalesced with a queued one, deferred behind a running
/// one, skipped while the entry backs off (its retry timer will queue it).
fn request(e: &mut EntryState, queue: &mut VecDeque<String>, now: Instant) {
    if e.removed {
        return;
    }
    if e.running {
        e.rerun = true;
        return;
    }
    if e.queued {
        return;
    }
    if e.failures > 0 && e.next_retry.is_some_and(|t| t > now) {
        return;
    }
    e.queued = true;
    queue.push_back(e.spec.name.clone());
}

/// How a finished reconcile (with its preload) counts.
enum Verdict {
    /// Converged; the outcome's requeue wish.
    Success(Option<Duration>),
    /// Failed (or interrupted).
    Failure(EntryError),
}

struct EntryResult {
    name: String,
    spec_gen: u64,
    result: Result<EntryOutcome, EntryError>,
    preload: Option<Result<(), EntryError>>,
    took: Duration,
    cancelled: bool,
}

fn record_entry(
    st: &mut WatchState,
    queue: &mut VecDeque<String>,
    config: &WatchConfig,
    jitter_unit: f64,
    r: EntryResult,
) {
    let now = Instant::now();
    let wall = SystemTime::now();
    let (bytes, dl_errors) = match &r.result {
        Ok(o) => (o.bytes_downloaded, o.download_errors),
        Err(e) => (e.bytes_downloaded, e.download_errors),
    };
    st.counters.bytes_downloaded += bytes;
    st.counters.download_errors += dl_errors;
    let run_result = match (&r.result, &r.preload) {
        (Err(_), _) | (Ok(_), Some(Err(_))) if r.cancelled => RunResult::Cancelled,
        (Ok(_), None | Some(Ok(()))) => RunResult::Success,
        _ => RunResult::Failure,
    };
    st.counters.record_run(run_result, r.took);

    let Some(e) = st.entries.get_mut(&r.name) else {
        return;
    };
    e.running = false;
    e.runs += 1;
    if e.removed {
        st.entries.remove(&r.name);
        return;
    }
    // A result for a spec that changed meanwhile says nothing about the new spec.
    let stale = e.spec_gen != r.spec_gen;
    let verdict = match (r.result, r.preload) {
        (Ok(outcome), preload) => {
            e.last_action = Some(outcome.action);
            if !stale {
                e.converged_once = true;
            }
            match preload {
                Some(Err(pe)) => Verdict::Failure(EntryError {
                    failure: pe.failure.clone().context("preload failed"),
                    ..pe
                }),
                Some(Ok(())) => {
                    e.preloaded = !stale;
                    Verdict::Success(outcome.requeue_after)
                }
                None => Verdict::Success(outcome.requeue_after),
            }
        }
        (Err(err), _) => {
            if let Some(a) = &err.action {
                e.last_action = Some(a.clone());
            }
            Verdict::Failure(err)
        }
    };
    match verdict {
        Verdict::Success(requeue_after) => {
            e.failures = 0;
            e.last_success = Some(wall);
            e.next_retry = requeue_after.map(|d| now + d);
        }
        Verdict::Failure(err) if run_result == RunResult::Cancelled => {
            e.last_error = Some(err.failure.context("interrupted by shutdown"));
            e.last_error_at = Some(wall);
        }
        Verdict::Failure(err) => {
            tracing::warn!("entry {}: {:#}", r.name, err.failure);
            if !stale {
                e.failures = e.failures.saturating_add(1);
                let delay = config
                    .backoff
                    .wait(e.failures, jitter_unit, err.failure.retry_after);
                e.next_retry = Some(now + delay);
            }
            e.last_error = Some(err.failure);
            e.last_error_at = Some(wall);
        }
    }
    if (e.rerun || stale) && !r.cancelled {
        e.rerun = false;
        request(e, queue, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{Failure, FailureKind};

    fn spec(name: &str) -> EntrySpec {
        EntrySpec {
            name: name.to_owned(),
            preload: false,
            spec_hash: "h".to_owned(),
        }
    }

    fn failed(name: &str, retry_after: Option<Duration>) -> EntryResult {
        EntryResult {
            name: name.to_owned(),
            spec_gen: 0,
            result: Err(EntryError::from(Failure {
                retry_after,
                ..Failure::new(FailureKind::RateLimited, "rate limited")
            })),
            preload: None,
            took: Duration::ZERO,
            cancelled: false,
        }
    }

    /// On tokio's paused clock: the next attempt is due at the server's `Retry-After` when it
    /// is longer than the backoff, at the backoff otherwise, and never later than `max`.
    #[tokio::test(start_paused = true)]
    async fn the_next_attempt_is_due_at_the_retry_after_capped() {
        let mut config = WatchConfig::new("/m/models.yaml");
        config.backoff = super::super::BackoffConfig {
            base: Duration::from_secs(2),
            max: Duration::from_mins(30),
            jitter: 0.0,
        };
        let mut st = WatchState::new("/m/models.yaml".into());
        apply_entries(&mut st, vec![spec("a"), spec("b"), spec("c")]);
        let mut queue = VecDeque::new();
        let now = Instant::now();
        for (name, ra) in [
            ("a", Some(Duration::from_mins(5))),
            ("b", None),
            ("c", Some(Duration::from_hours(3))),
        ] {
            st.entries.get_mut(name).unwrap().running = true;
            record_entry(&mut st, &mut queue, &config, 0.5, failed(name, ra));
        }
        let due = |n: &str| st.entries[n].next_retry.map(|t| t - now);
        assert_eq!(due("a"), Some(Duration::from_mins(5)));
        assert_eq!(due("b"), Some(Duration::from_secs(2)));
        assert_eq!(due("c"), Some(Duration::from_mins(30)));
        assert_eq!(
            st.entries["a"].last_error.as_ref().map(|f| f.kind),
            Some(FailureKind::RateLimited)
        );
    }
}
