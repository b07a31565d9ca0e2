//! The loop: turns file events, the resync interval and retry timers into requests for the
//! [`Scheduler`], starts what it says is due (at most `concurrency` at once), records results
//! in the status the HTTP handlers read, and shuts down in bounded time.
//!
//! A resync or manifest change first runs the converger's [`survey`](Converger::survey) (one
//! look at every entry); only the entries it does not find converged are dispatched. When a
//! batch is over (nothing runs or waits to start) the converger [`settle`](Converger::settle)s
//! once.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::{Id, JoinError, JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout_at};
use tracing::Instrument as _;

use super::cancel::{CancelSource, CancelToken};
use super::fswatch::{ManifestWatch, content_hash};
use super::metrics::{ReloadResult, RunResult};
use super::scheduler::{Next, Reason, Scheduler};
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
        generation: u64,
        started: Instant,
    },
    Survey {
        reason: Reason,
        /// Each entry's spec generation when the survey started: a verdict on an older spec
        /// is not taken.
        generations: HashMap<String, u64>,
    },
    Sweep,
}

enum Done {
    Entry {
        result: Result<EntryOutcome, EntryError>,
        preload: Option<Result<(), EntryError>>,
        took: Duration,
    },
    Survey(Result<HashSet<String>, EntryError>),
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
    sched: Scheduler<Instant>,
    /// A survey is asked for (with the reason its dispatches will carry).
    survey_pending: Option<Reason>,
    survey_running: bool,
    sweep_pending: bool,
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
                sched: Scheduler::new(),
                survey_pending: None,
                survey_running: false,
                sweep_pending: false,
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
            self.start_work();
            // With every slot taken, a finishing task is what wakes the loop, not a timer.
            let retry_at = (self.running_entries() < self.config.concurrency)
                .then(|| self.sched.next_due())
                .flatten();
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
                        self.request_all(Reason::FileEvent);
                    }
                }
                Wake::Tick => {
                    // A full resync even while events arrive: events can be missed, and
                    // drift (a deleted file, a removed record) makes none.
                    self.reload_manifest().await;
                    self.request_all(Reason::Resync);
                }
                // `start_work` takes what is due.
                Wake::RetryDue => {}
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
                apply_entries(&mut st, &mut self.sched, specs, Instant::now());
                self.sweep_pending = true;
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

    /// Asks for a survey of every entry (which then dispatches those it does not find
    /// converged, `reason` in their spans) and a sweep.
    fn request_all(&mut self, reason: Reason) {
        if self.desired.is_none() {
            return;
        }
        self.sweep_pending = true;
        self.survey_pending.get_or_insert(reason);
    }

    fn running_entries(&self) -> usize {
        self.keys
            .values()
            .filter(|k| matches!(k, TaskKey::Entry { .. }))
            .count()
    }

    /// Whether a batch is over: no reconcile runs, none is due to start, no survey is out.
    fn batch_over(&self, now: Instant) -> bool {
        self.running_entries() == 0
            && !self.survey_running
            && self.sched.next_due().is_none_or(|t| t > now)
    }

    /// Starts the sweep and the survey when asked for, and the entries that are due, up to
    /// the concurrency.
    fn start_work(&mut self) {
        let Some(desired) = self.desired.clone() else {
            return;
        };
        if self.sweep_pending && !self.shared.lock().sweep.running {
            self.sweep_pending = false;
            self.shared.lock().sweep.running = true;
            let conv = Arc::clone(&self.conv);
            let d = Arc::clone(&desired);
            let cancel = self.work.token();
            let h = self
                .tasks
                .spawn(async move { Done::Sweep(conv.sweep(&d, cancel).await) });
            self.keys.insert(h.id(), TaskKey::Sweep);
        }
        if !self.survey_running
            && let Some(reason) = self.survey_pending.take()
        {
            self.survey_running = true;
            let generations = {
                let st = self.shared.lock();
                st.entries
                    .keys()
                    .map(|n| (n.clone(), self.sched.generation(n)))
                    .collect()
            };
            let conv = Arc::clone(&self.conv);
            let d = Arc::clone(&desired);
            let cancel = self.work.token();
            let span = tracing::info_span!("survey", reason = reason.as_str());
            let h = self
                .tasks
                .spawn(async move { Done::Survey(conv.survey(&d, cancel).await) }.instrument(span));
            self.keys.insert(
                h.id(),
                TaskKey::Survey {
                    reason,
                    generations,
                },
            );
        }
        let now = Instant::now();
        let mut running = self.running_entries();
        while running < self.config.concurrency {
            let Some(started) = self.sched.pop_due(now) else {
                break;
            };
            let name = started.name;
            let (want_preload, preloaded) = {
                let mut st = self.shared.lock();
                let Some(e) = st.entries.get_mut(&name) else {
                    self.sched.finish(&name, Next::Nothing);
                    continue;
                };
                e.reconciling = true;
                e.next_retry = None;
                e.last_attempt = Some(SystemTime::now());
                (e.spec.preload, e.preloaded)
            };
            let conv = Arc::clone(&self.conv);
            let d = Arc::clone(&desired);
            let cancel = self.work.token();
            let task_name = name.clone();
            let span = tracing::info_span!(
                "reconcile",
                entry = %name,
                reason = started.reason.as_str()
            );
            let h = self.tasks.spawn(
                async move {
                    let started = Instant::now();
                    let result = conv.reconcile_entry(&d, &task_name, cancel.clone()).await;
                    let preload = match &result {
                        Ok(o)
                            if want_preload
                                && (o.changed || !preloaded)
                                && !cancel.is_cancelled() =>
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
                }
                .instrument(span),
            );
            self.keys.insert(
                h.id(),
                TaskKey::Entry {
                    name,
                    generation: started.generation,
                    started: Instant::now(),
                },
            );
            running += 1;
        }
    }

    /// Lets the converger settle when the batch is over. Called with the status locked, so
    /// that what it writes is there before the result that ends the batch is shown.
    fn settle_if_over(&self, now: Instant) {
        if let Some(d) = &self.desired
            && self.batch_over(now)
        {
            self.conv.settle(d);
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
                    Ok(_) => Ok(()),
                    Err(e) => Err(join_error(&e)),
                };
                let shared = Arc::clone(&self.shared);
                let mut st = shared.lock();
                self.settle_if_over(Instant::now());
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
            TaskKey::Survey {
                reason,
                generations,
            } => {
                self.survey_running = false;
                let converged = match done {
                    Ok(Done::Survey(Ok(names))) => names,
                    Ok(Done::Survey(Err(e))) => {
                        tracing::warn!("survey failed, reconciling every entry: {e}");
                        HashSet::new()
                    }
                    Ok(_) => HashSet::new(),
                    Err(e) => {
                        tracing::warn!("survey failed, reconciling every entry: {e}");
                        HashSet::new()
                    }
                };
                if cancelled {
                    return;
                }
                let shared = Arc::clone(&self.shared);
                let mut st = shared.lock();
                let now = Instant::now();
                record_survey(
                    &mut st,
                    &mut self.sched,
                    &converged,
                    &generations,
                    reason,
                    now,
                );
                self.settle_if_over(now);
            }
            TaskKey::Entry {
                name,
                generation,
                started,
            } => {
                let (result, preload, took) = match done {
                    Ok(Done::Entry {
                        result,
                        preload,
                        took,
                    }) => (result, preload, took),
                    Ok(_) => return,
                    Err(e) => {
                        if e.is_panic() {
                            tracing::error!("reconcile of {name} panicked");
                        }
                        (Err(join_error(&e)), None, started.elapsed())
                    }
                };
                let shared = Arc::clone(&self.shared);
                let mut st = shared.lock();
                let unit = self.jitter.next_unit();
                record_entry(
                    &mut st,
                    &mut self.sched,
                    &self.config,
                    unit,
                    EntryResult {
                        name,
                        generation,
                        result,
                        preload,
                        took,
                        cancelled,
                    },
                );
                if !cancelled {
                    self.settle_if_over(Instant::now());
                }
            }
        }
    }

    /// Stops taking work, cancels running reconciles, waits for them (bounded), then stops
    /// the file watch and the server.
    async fn shutdown(mut self) {
        self.shared.lock().shutting_down = true;
        self.sched.clear_waiting();
        self.survey_pending = None;
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
        // What the interrupted batch kept in memory is written now.
        if let Some(d) = &self.desired {
            self.conv.settle(d);
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

/// Merges a new entry list into the state: new entries appear pending (the survey that
/// follows decides whether they need a reconcile), entries whose spec hash changed start over
/// (backoff reset, must converge again) and are asked for at once, vanished entries go (a
/// running one's result is dropped when it ends).
fn apply_entries(
    st: &mut WatchState,
    sched: &mut Scheduler<Instant>,
    specs: Vec<EntrySpec>,
    now: Instant,
) {
    let names: HashSet<String> = specs.iter().map(|s| s.name.clone()).collect();
    for (order, spec) in specs.into_iter().enumerate() {
        if let Some(e) = st.entries.get_mut(&spec.name) {
            e.order = order;
            if e.spec.spec_hash != spec.spec_hash {
                sched.reset(&spec.name);
                sched.request(&spec.name, now, Reason::SpecChange);
                e.failures = 0;
                e.next_retry = None;
                e.converged_once = false;
                e.preloaded = false;
            }
            e.spec = spec;
        } else {
            sched.add(&spec.name);
            st.entries
                .insert(spec.name.clone(), EntryState::new(spec, order));
        }
    }
    st.entries.retain(|name, _| {
        let keep = names.contains(name);
        if !keep {
            sched.remove(name);
        }
        keep
    });
}

/// Takes a survey's verdicts: an entry found converged is converged now (nothing runs) when
/// nothing else is pending for it — same spec as surveyed, not running, not failing, no
/// preload owed, no request due; every other entry is asked for (backing-off ones wait for
/// their retry time).
fn record_survey(
    st: &mut WatchState,
    sched: &mut Scheduler<Instant>,
    converged: &HashSet<String>,
    generations: &HashMap<String, u64>,
    reason: Reason,
    now: Instant,
) {
    let wall = SystemTime::now();
    let mut order: Vec<(&String, &mut EntryState)> = st.entries.iter_mut().collect();
    order.sort_by_key(|(_, e)| e.order);
    for (name, e) in order {
        let settled = converged.contains(name)
            && generations.get(name) == Some(&sched.generation(name))
            && !sched.is_running(name)
            && e.failures == 0
            && (e.preloaded || !e.spec.preload)
            && sched.due_at(name).is_none_or(|t| t > now);
        if settled {
            e.converged_once = true;
            e.last_success = Some(wall);
            e.last_action = Some("unchanged".to_owned());
        } else {
            sched.request(name, now, reason);
        }
    }
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
    generation: u64,
    result: Result<EntryOutcome, EntryError>,
    preload: Option<Result<(), EntryError>>,
    took: Duration,
    cancelled: bool,
}

fn record_entry(
    st: &mut WatchState,
    sched: &mut Scheduler<Instant>,
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

    // A result for a spec that changed meanwhile says nothing about the new spec (the
    // change's own request, held while this ran, runs next).
    let stale = sched.generation(&r.name) != r.generation;
    let Some(e) = st.entries.get_mut(&r.name) else {
        // Left the manifest while it ran.
        sched.finish(&r.name, Next::Nothing);
        return;
    };
    e.reconciling = false;
    e.runs += 1;
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
    let next = match verdict {
        Verdict::Success(requeue_after) => {
            e.failures = 0;
            e.last_success = Some(wall);
            e.next_retry = requeue_after.map(|d| now + d);
            e.next_retry.map_or(Next::Nothing, Next::Requeue)
        }
        Verdict::Failure(err) if run_result == RunResult::Cancelled => {
            e.last_error = Some(err.failure.context("interrupted by shutdown"));
            e.last_error_at = Some(wall);
            Next::Nothing
        }
        Verdict::Failure(err) => {
            tracing::warn!("entry {}: {:#}", r.name, err.failure);
            let mut next = Next::Nothing;
            if !stale {
                e.failures = e.failures.saturating_add(1);
                let delay = config
                    .backoff
                    .wait(e.failures, jitter_unit, err.failure.retry_after);
                e.next_retry = Some(now + delay);
                next = Next::Backoff(now + delay);
            }
            e.last_error = Some(err.failure);
            e.last_error_at = Some(wall);
            next
        }
    };
    sched.finish(&r.name, if r.cancelled { Next::Nothing } else { next });
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
            generation: 0,
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
    /// is longer than the backoff, at the backoff otherwise, and never later than `max`; a
    /// resync meanwhile does not start it earlier.
    #[tokio::test(start_paused = true)]
    async fn the_next_attempt_is_due_at_the_retry_after_capped() {
        let mut config = WatchConfig::new("/m/models.yaml");
        config.backoff = super::super::BackoffConfig {
            base: Duration::from_secs(2),
            max: Duration::from_mins(30),
            jitter: 0.0,
        };
        let mut st = WatchState::new("/m/models.yaml".into());
        let mut sched = Scheduler::new();
        let now = Instant::now();
        apply_entries(
            &mut st,
            &mut sched,
            vec![spec("a"), spec("b"), spec("c")],
            now,
        );
        for name in ["a", "b", "c"] {
            sched.request(name, now, Reason::Resync);
            assert!(sched.pop_due(now).is_some());
        }
        for (name, ra) in [
            ("a", Some(Duration::from_mins(5))),
            ("b", None),
            ("c", Some(Duration::from_hours(3))),
        ] {
            st.entries.get_mut(name).unwrap().reconciling = true;
            record_entry(&mut st, &mut sched, &config, 0.5, failed(name, ra));
        }
        let due = |n: &str| st.entries[n].next_retry.map(|t| t - now);
        assert_eq!(due("a"), Some(Duration::from_mins(5)));
        assert_eq!(due("b"), Some(Duration::from_secs(2)));
        assert_eq!(due("c"), Some(Duration::from_mins(30)));
        assert_eq!(sched.due_at("a"), Some(now + Duration::from_mins(5)));
        assert_eq!(
            st.entries["a"].last_error.as_ref().map(|f| f.kind),
            Some(FailureKind::RateLimited)
        );
        // A survey that finds `a` converged does not settle it while it backs off, nor run it.
        let converged: HashSet<String> = ["a".to_owned()].into();
        let generations = ["a", "b", "c"].map(|n| (n.to_owned(), 0)).into();
        record_survey(
            &mut st,
            &mut sched,
            &converged,
            &generations,
            Reason::Resync,
            now,
        );
        assert!(!st.entries["a"].converged_once);
        assert_eq!(sched.pop_due(now), None);
        assert_eq!(sched.next_due(), Some(now + Duration::from_secs(2)));
    }

    #[test]
    fn a_survey_settles_converged_entries_and_asks_for_the_rest() {
        let mut st = WatchState::new("/m/models.yaml".into());
        let mut sched: Scheduler<Instant> = Scheduler::new();
        let now = Instant::now();
        apply_entries(
            &mut st,
            &mut sched,
            vec![spec("a"), spec("b"), spec("c")],
            now,
        );
        let generations: HashMap<String, u64> = ["a", "b", "c"].map(|n| (n.to_owned(), 0)).into();
        // `c`'s spec changed after the survey started: its verdict is not taken.
        sched.reset("c");
        let converged: HashSet<String> = ["a".to_owned(), "c".to_owned()].into();
        record_survey(
            &mut st,
            &mut sched,
            &converged,
            &generations,
            Reason::Resync,
            now,
        );
        assert!(st.entries["a"].converged_once);
        assert_eq!(st.entries["a"].runs, 0, "nothing ran");
        let mut started: Vec<(String, Reason)> = std::iter::from_fn(|| sched.pop_due(now))
            .map(|s| (s.name, s.reason))
            .collect();
        started.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            started,
            [
                ("b".to_owned(), Reason::Resync),
                ("c".to_owned(), Reason::Resync)
            ]
        );
    }
}
