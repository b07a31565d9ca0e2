//! The watcher's shared state: what the loop records and what the HTTP endpoints read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::metrics::{self, Counters};
use super::{DeviceUsage, EntrySpec};
use crate::retry::{Failure, FailureKind};

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryPhase {
    /// Never reconciled since it appeared (or since its spec changed).
    Pending,
    /// A reconcile (or its preload) is running.
    Reconciling,
    /// The last reconcile succeeded.
    Converged,
    /// The last reconcile failed; a retry is scheduled with backoff.
    Failed,
}

impl EntryPhase {
    /// Every phase, in the order the metrics list them.
    pub const ALL: [EntryPhase; 4] = [
        EntryPhase::Pending,
        EntryPhase::Reconciling,
        EntryPhase::Converged,
        EntryPhase::Failed,
    ];

    /// The name used in JSON and as the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryPhase::Pending => "pending",
            EntryPhase::Reconciling => "reconciling",
            EntryPhase::Converged => "converged",
            EntryPhase::Failed => "failed",
        }
    }
}

/// One entry in `/status`. Times are RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryStatus {
    /// Entry name.
    pub name: String,
    /// Current phase.
    pub state: EntryPhase,
    /// Whether the entry asks to be preloaded.
    pub preload: bool,
    /// Whether its preload is done.
    pub preloaded: bool,
    /// Whether it converged at least once (since its spec last changed).
    pub converged_once: bool,
    /// The plan action of the last finished reconcile.
    pub last_action: Option<String>,
    /// The last error's own message, kept after a later success for diagnosis (compare
    /// `last_error_at` with `last_success`).
    pub last_error: Option<String>,
    /// The last error's causes, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_error_causes: Vec<String>,
    /// What kind of failure the last error was (`not_found`, `rate_limited`, …).
    #[serde(default)]
    pub last_error_kind: Option<FailureKind>,
    /// When `last_error` happened.
    pub last_error_at: Option<String>,
    /// When the entry last converged.
    pub last_success: Option<String>,
    /// When the last reconcile started.
    pub last_attempt: Option<String>,
    /// Failures since the last success (drives the backoff).
    pub consecutive_failures: u32,
    /// When the next retry or requeue is due, if one is scheduled.
    pub next_retry: Option<String>,
    /// Seconds until `next_retry`.
    pub next_retry_in_seconds: Option<f64>,
    /// Reconciles finished since start.
    pub runs: u64,
}

/// The manifest in `/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestStatus {
    /// The watched path.
    pub path: PathBuf,
    /// Whether a desired state is in force (a manifest parsed at least once).
    pub loaded: bool,
    /// Content hash of the manifest in force (`blake3:<hex>`).
    pub hash: Option<String>,
    /// When the manifest in force was loaded.
    pub loaded_at: Option<String>,
    /// Why the latest content was rejected; the previous desired state stays in force.
    pub error: Option<String>,
    /// When `error` was seen.
    pub error_at: Option<String>,
}

/// The sweep (records whose entries left the manifest) in `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepStatus {
    /// Whether it is running.
    pub running: bool,
    /// When it last succeeded.
    pub last_success: Option<String>,
    /// Its last error.
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_at: Option<String>,
}

/// The last `sync_to_config` of the sweep (`settings.sync`) in `/status`: models in
/// models_dir no record owns, and records whose files are gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// `off`, `report` or `register`.
    pub mode: String,
    /// When it last ran (RFC 3339).
    pub last_run: Option<String>,
    /// Orphans found and not registered by the last run (paths relative to models_dir).
    pub orphans: Vec<String>,
    /// Orphans the last run registered.
    pub registered: Vec<String>,
    /// Orphans that cannot be registered, with why.
    pub cannot_register: Vec<String>,
    /// Records whose files are gone (`name (key)`); never unregistered by watch.
    pub dead_records: Vec<String>,
    /// Orphans registered since start.
    pub registered_total: u64,
    /// Why the last run failed, if it did.
    pub last_error: Option<String>,
}

/// The `/readyz` verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Ready: a manifest is in force, every entry converged at least once and every preload
    /// is done, and no shutdown is in progress.
    pub ready: bool,
    /// Why not, one line per cause (empty when ready).
    pub reasons: Vec<String>,
}

/// The `/status` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Same as `/readyz`.
    pub ready: bool,
    /// Same as `/readyz`.
    pub reasons: Vec<String>,
    /// Whether a shutdown is in progress.
    pub shutting_down: bool,
    /// The manifest.
    pub manifest: ManifestStatus,
    /// Entries in manifest order.
    pub entries: Vec<EntryStatus>,
    /// The sweep.
    pub sweep: SweepStatus,
    /// The last sync of the store with models_dir (absent when `settings.sync: off` or not
    /// run yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
}

/// One entry as `/status`, `/readyz` and `/metrics` show it: status only. When it runs next
/// and why is the runner's [`Scheduler`](super::scheduler::Scheduler)'s business.
#[derive(Debug, Clone)]
pub(crate) struct EntryState {
    pub spec: EntrySpec,
    /// Position in the manifest.
    pub order: usize,
    /// A reconcile (or its preload) is running.
    pub reconciling: bool,
    pub converged_once: bool,
    pub preloaded: bool,
    pub failures: u32,
    /// When the scheduled retry (after failure) or requeue (after success) is due.
    pub next_retry: Option<Instant>,
    pub last_action: Option<String>,
    pub last_error: Option<Failure>,
    pub last_error_at: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub last_attempt: Option<SystemTime>,
    pub runs: u64,
}

impl EntryState {
    pub(crate) fn new(spec: EntrySpec, order: usize) -> Self {
        Self {
            spec,
            order,
            reconciling: false,
            converged_once: false,
            preloaded: false,
            failures: 0,
            next_retry: None,
            last_action: None,
            last_error: None,
            last_error_at: None,
            last_success: None,
            last_attempt: None,
            runs: 0,
        }
    }

    pub(crate) fn phase(&self) -> EntryPhase {
        if self.reconciling {
            EntryPhase::Reconciling
        } else if self.failures > 0 {
            EntryPhase::Failed
        } else if self.converged_once {
            EntryPhase::Converged
        } else {
            EntryPhase::Pending
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ManifestState {
    pub loaded: bool,
    pub hash: Option<String>,
    pub loaded_at: Option<SystemTime>,
    pub error: Option<String>,
    pub error_at: Option<SystemTime>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SweepState {
    pub running: bool,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
}

#[derive(Debug)]
pub(crate) struct WatchState {
    pub manifest_path: PathBuf,
    pub manifest: ManifestState,
    pub entries: BTreeMap<String, EntryState>,
    pub sweep: SweepState,
    pub shutting_down: bool,
    pub counters: Counters,
}

impl WatchState {
    pub(crate) fn new(manifest_path: PathBuf) -> Self {
        Self {
            manifest_path,
            manifest: ManifestState::default(),
            entries: BTreeMap::new(),
            sweep: SweepState::default(),
            shutting_down: false,
            counters: Counters::default(),
        }
    }

    /// The manifest's entries, in manifest order.
    pub(crate) fn visible(&self) -> Vec<&EntryState> {
        let mut v: Vec<&EntryState> = self.entries.values().collect();
        v.sort_by_key(|e| e.order);
        v
    }

    pub(crate) fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        if self.shutting_down {
            reasons.push("shutting down".to_owned());
        }
        if !self.manifest.loaded {
            let why = self.manifest.error.as_deref().unwrap_or("not read yet");
            reasons.push(format!(
                "manifest {}: no valid desired state yet ({why})",
                self.manifest_path.display()
            ));
        }
        for e in self.visible() {
            if !e.converged_once {
                let mut r = format!(
                    "entry {}: not converged yet (state {})",
                    e.spec.name,
                    e.phase().as_str()
                );
                if let Some(err) = &e.last_error {
                    let _ = write!(r, ", last error: {err}");
                }
                reasons.push(r);
            } else if e.spec.preload && !e.preloaded {
                reasons.push(format!("entry {}: preload not done yet", e.spec.name));
            }
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }

    pub(crate) fn status(&self, now: Instant, wall: SystemTime) -> StatusReport {
        let Readiness { ready, reasons } = self.readiness();
        let entries = self
            .visible()
            .into_iter()
            .map(|e| {
                let retry_in = e.next_retry.map(|t| t.saturating_duration_since(now));
                EntryStatus {
                    name: e.spec.name.clone(),
                    state: e.phase(),
                    preload: e.spec.preload,
                    preloaded: e.preloaded,
                    converged_once: e.converged_once,
                    last_action: e.last_action.clone(),
                    last_error: e.last_error.as_ref().map(|f| f.message.clone()),
                    last_error_causes: e
                        .last_error
                        .as_ref()
                        .map(|f| f.causes.clone())
                        .unwrap_or_default(),
                    last_error_kind: e.last_error.as_ref().map(|f| f.kind),
                    last_error_at: e.last_error_at.map(rfc3339),
                    last_success: e.last_success.map(rfc3339),
                    last_attempt: e.last_attempt.map(rfc3339),
                    consecutive_failures: e.failures,
                    next_retry: retry_in.map(|d| rfc3339(wall + d)),
                    next_retry_in_seconds: retry_in.map(|d| d.as_secs_f64()),
                    runs: e.runs,
                }
            })
            .collect();
        StatusReport {
            ready,
            reasons,
            shutting_down: self.shutting_down,
            manifest: ManifestStatus {
                path: self.manifest_path.clone(),
                loaded: self.manifest.loaded,
                hash: self.manifest.hash.clone(),
                loaded_at: self.manifest.loaded_at.map(rfc3339),
                error: self.manifest.error.clone(),
                error_at: self.manifest.error_at.map(rfc3339),
            },
            entries,
            sweep: SweepStatus {
                running: self.sweep.running,
                last_success: self.sweep.last_success.map(rfc3339),
                last_error: self.sweep.last_error.clone(),
                last_error_at: self.sweep.last_error_at.map(rfc3339),
            },
            sync: None,
        }
    }
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Seconds since the Unix epoch (Prometheus timestamps are seconds).
pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

type CacheUsageFn = Box<dyn Fn() -> Vec<DeviceUsage> + Send + Sync>;
type SyncStatusFn = Box<dyn Fn() -> Option<SyncStatus> + Send + Sync>;

/// The state behind a lock, plus the converger's cache gauge and sync status, shared by the
/// loop and the HTTP handlers. Critical sections are short and never await.
pub(crate) struct Shared {
    state: Mutex<WatchState>,
    cache_usage: CacheUsageFn,
    sync_status: SyncStatusFn,
}

impl Shared {
    pub(crate) fn new(manifest_path: PathBuf, cache_usage: CacheUsageFn) -> Self {
        Self {
            state: Mutex::new(WatchState::new(manifest_path)),
            cache_usage,
            sync_status: Box::new(|| None),
        }
    }

    /// Reads the converger's sync status at every `/status` and `/metrics`.
    pub(crate) fn with_sync_status(mut self, f: SyncStatusFn) -> Self {
        self.sync_status = f;
        self
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, WatchState> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn status(&self) -> StatusReport {
        let sync = (self.sync_status)();
        let mut report = self.lock().status(Instant::now(), SystemTime::now());
        report.sync = sync;
        report
    }

    pub(crate) fn readiness(&self) -> Readiness {
        self.lock().readiness()
    }

    pub(crate) fn metrics_text(&self) -> String {
        // Read the cache outside the state lock: the converger may take its own locks.
        let cache = (self.cache_usage)();
        let sync = (self.sync_status)();
        let st = self.lock();
        metrics::render(&st, &cache, sync.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, preload: bool) -> EntrySpec {
        EntrySpec {
            name: name.into(),
            preload,
            spec_hash: "h".into(),
        }
    }

    #[test]
    fn readiness_lists_every_cause() {
        let mut st = WatchState::new("/m/models.yaml".into());
        let r = st.readiness();
        assert!(!r.ready);
        assert!(r.reasons[0].contains("no valid desired state"), "{r:?}");

        st.manifest.loaded = true;
        st.entries
            .insert("a".into(), EntryState::new(spec("a", false), 0));
        st.entries
            .insert("b".into(), EntryState::new(spec("b", true), 1));
        let r = st.readiness();
        assert_eq!(r.reasons.len(), 2, "{r:?}");

        for e in st.entries.values_mut() {
            e.converged_once = true;
        }
        let r = st.readiness();
        assert_eq!(r.reasons, ["entry b: preload not done yet"]);

        if let Some(e) = st.entries.get_mut("b") {
            e.preloaded = true;
        }
        assert!(st.readiness().ready);

        st.shutting_down = true;
        assert_eq!(st.readiness().reasons, ["shutting down"]);
    }

    #[test]
    fn phase_follows_flags() {
        let mut e = EntryState::new(spec("a", false), 0);
        assert_eq!(e.phase(), EntryPhase::Pending);
        e.reconciling = true;
        assert_eq!(e.phase(), EntryPhase::Reconciling);
        e.reconciling = false;
        e.failures = 2;
        assert_eq!(e.phase(), EntryPhase::Failed);
        e.failures = 0;
        e.converged_once = true;
        assert_eq!(e.phase(), EntryPhase::Converged);
    }
}
