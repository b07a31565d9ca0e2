//! Watch mode (issue #7): keep converging while running in a container.
//!
//! The loop follows kube-rs's controller runtime: look at every entry at start, when the
//! manifest changes and on every interval (a full resync even while file events arrive,
//! because events can be missed), and reconcile those not converged; a failed entry is retried with its own exponential backoff
//! and jitter, so one broken entry neither blocks the others nor hammers the hub; one entry is
//! never reconciled twice at once. Health, readiness, status and Prometheus metrics are served
//! over HTTP.
//!
//! The work itself is done by a [`Converger`] — the reconciler implements it; tests use fakes.
//!
//! ```text
//! manifest dir ──notify+debounce──┐                            Converger::survey (one look at all)
//! interval tick ──────────────────┴─▶ re-read, hash, parse ─▶        │ entries not converged
//!                                                                    ▼
//! retry/requeue times (backoff) ───────────────────────────▶ scheduler ─▶ Converger::reconcile_entry
//!                                                                    │     (≤ concurrency at once)
//!                                  batch over: Converger::settle ◀───┤
//!                                                                    ▼
//!                                     status (no scheduling state) ─▶ /healthz /readyz /status /metrics
//! ```
//!
//! Entry points: [`run_watch`] (bind + run until `shutdown`), [`block_on_watch`] (what the CLI
//! calls: own runtime, SIGTERM/SIGINT), or [`Watch::bind`] + [`Watch::run`] when the caller
//! needs the bound address or a [`WatchHandle`] first (tests).

use std::collections::HashSet;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

mod backoff;
mod cancel;
mod fswatch;
mod metrics;
mod runner;
mod scheduler;
mod server;
mod state;

use crate::retry::{Failure, FailureKind};
pub use backoff::BackoffConfig;
pub use cancel::{CancelSource, CancelToken};
pub use fswatch::is_relevant_event_path;
pub use server::ROUTES;
pub use state::{
    EntryPhase, EntryStatus, ManifestStatus, Readiness, StatusReport, SweepStatus, SyncStatus,
};

/// A boxed, sendable future: what [`Converger`]'s async methods return, so the trait needs
/// no async-trait crate and its futures can be spawned.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Any error, for [`Converger::parse_manifest`] (the reconciler returns its manifest error).
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What the watcher needs to know about one manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    /// The entry's name (its identity, unique in the manifest).
    pub name: String,
    /// Whether the entry must be warmed into the load cache before the process is ready.
    pub preload: bool,
    /// A hash of the entry's normalised spec. When it changes, the entry's backoff is reset
    /// and it must converge again before `/readyz` says ready.
    pub spec_hash: String,
}

/// The result of reconciling one entry successfully ("what to do next", as kube-rs's
/// `Action`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryOutcome {
    /// The plan action that was carried out: `unchanged`, `install`, `update`, `replace`,
    /// `repair`, `upgrade`.
    pub action: String,
    /// Whether files or the record changed (a preload entry is then loaded again).
    pub changed: bool,
    /// Bytes fetched over the network by this reconcile.
    pub bytes_downloaded: u64,
    /// Download attempts that failed and were retried within this reconcile.
    pub download_errors: u64,
    /// Reconcile this entry again after this long, besides the periodic resync.
    pub requeue_after: Option<Duration>,
}

impl EntryOutcome {
    /// An outcome with `action` and nothing else.
    pub fn new(action: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            ..Self::default()
        }
    }

    /// Nothing to do: the entry was already converged.
    pub fn unchanged() -> Self {
        Self::new("unchanged")
    }
}

/// A failed reconcile (or preload) of one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryError {
    /// What failed and on what, its kind and the server's `Retry-After` (shown in `/status`;
    /// never contains a token). The backoff waits at least the `Retry-After`, capped by
    /// [`BackoffConfig::max`].
    pub failure: Failure,
    /// The plan action that was attempted, if known.
    pub action: Option<String>,
    /// Bytes fetched before the failure (counted in the metrics).
    pub bytes_downloaded: u64,
    /// Failed download attempts, including the final one.
    pub download_errors: u64,
}

impl EntryError {
    /// An error with `message` (of kind `other`) and nothing else.
    pub fn new(message: impl Into<String>) -> Self {
        Self::from(Failure::new(FailureKind::Other, message))
    }
}

impl From<Failure> for EntryError {
    fn from(failure: Failure) -> Self {
        Self {
            failure,
            ..Self::default()
        }
    }
}

impl std::fmt::Display for EntryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.failure.message)
    }
}

/// Memory held by the load cache on one device, for the `modelsync_cache_bytes` gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUsage {
    /// `cpu` (RAM) or the execution device, e.g. `cuda:0`.
    pub device: String,
    /// Bytes held.
    pub bytes: u64,
}

/// The work watch mode drives. The reconciler implements it; the watcher owns scheduling,
/// backoff, concurrency, readiness and metrics.
///
/// Contract:
/// - [`reconcile_entry`](Self::reconcile_entry) converges one entry (observe → plan → apply,
///   drift included: missing or modified files, a removed record). It is never called twice
///   at once for the same entry name, but is called concurrently for different entries.
/// - When `cancel` fires, stop at a resumable point (partial downloads kept) and return
///   promptly; an `Err` returned after cancellation is counted as "cancelled", not as a
///   failure. Work still running after [`WatchConfig::shutdown_timeout`] is dropped.
/// - The converger owns the store and its lock; the watcher drops its `Arc` when
///   [`run_watch`] returns, which must release them.
pub trait Converger: Send + Sync + 'static {
    /// The parsed manifest (desired state). Shared read-only between concurrent reconciles.
    type Desired: Send + Sync + 'static;

    /// Parses the manifest's `content`, read from `path` (through symlinks). `path` is for
    /// error messages and for resolving relative settings. An error keeps the previous
    /// desired state in force.
    fn parse_manifest(&self, path: &Path, content: &[u8]) -> Result<Self::Desired, BoxError>;

    /// The entries of `desired`, in manifest order.
    fn entries(&self, desired: &Self::Desired) -> Vec<EntrySpec>;

    /// Converges the entry named `entry` to `desired`.
    fn reconcile_entry<'a>(
        &'a self,
        desired: &'a Self::Desired,
        entry: &'a str,
        cancel: CancelToken,
    ) -> BoxFuture<'a, Result<EntryOutcome, EntryError>>;

    /// One look at every entry at once, when a resync or a manifest change asks for all of
    /// them: the names of the entries found converged, which are then not dispatched (one
    /// observe per resync instead of one per entry, as kube-rs reads its reflector store).
    /// It must find an entry converged only where
    /// [`reconcile_entry`](Self::reconcile_entry) would do nothing; whatever it is unsure of it
    /// leaves out, and that entry is reconciled. The default finds nothing: every entry is
    /// reconciled. An error is logged and every entry is reconciled.
    fn survey<'a>(
        &'a self,
        desired: &'a Self::Desired,
        cancel: CancelToken,
    ) -> BoxFuture<'a, Result<HashSet<String>, EntryError>> {
        let _ = (desired, cancel);
        Box::pin(async { Ok(HashSet::new()) })
    }

    /// A batch is over: no reconcile runs or waits to start. Writes what the reconciles kept
    /// in memory (the reconciler's `models.lock`), once per batch. Called on the loop before
    /// the batch's last result shows in `/status` and `/readyz`, so keep it short (one file
    /// write).
    fn settle(&self, desired: &Self::Desired) {
        let _ = desired;
    }

    /// Warms a `preload` entry into the load cache; called after a successful reconcile when
    /// the entry changed or was never preloaded. `/readyz` waits for it.
    fn preload_entry<'a>(
        &'a self,
        desired: &'a Self::Desired,
        entry: &'a str,
        cancel: CancelToken,
    ) -> BoxFuture<'a, Result<(), EntryError>> {
        let _ = (desired, entry, cancel);
        Box::pin(async { Ok(()) })
    }

    /// Work that belongs to no entry: deleting (with prune) or reporting managed records whose
    /// entries left the manifest. Runs after every manifest change and resync, never twice at
    /// once; its failures are reported, not retried early.
    fn sweep<'a>(
        &'a self,
        desired: &'a Self::Desired,
        cancel: CancelToken,
    ) -> BoxFuture<'a, Result<(), EntryError>> {
        let _ = (desired, cancel);
        Box::pin(async { Ok(()) })
    }

    /// Load-cache usage per device, read at every `/metrics` scrape. Must be cheap.
    fn cache_usage(&self) -> Vec<DeviceUsage> {
        Vec::new()
    }

    /// What the sweep's last sync of the store with the models folder found, read at every
    /// `/status` and `/metrics`. Must be cheap. `None`: no sync runs.
    fn sync_status(&self) -> Option<SyncStatus> {
        None
    }
}

/// Now, as `/status` writes times (RFC 3339 UTC).
pub fn rfc3339_now() -> String {
    state::rfc3339(std::time::SystemTime::now())
}

/// Settings of watch mode.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// The manifest. Its parent directory is watched (see [`is_relevant_event_path`]).
    pub manifest_path: PathBuf,
    /// Full resync period (`--interval`, default 5m).
    pub interval: Duration,
    /// Address of the HTTP server (`--listen`, default 127.0.0.1:9090; port 0 picks one).
    pub listen: SocketAddr,
    /// Quiet time after the last file event before the manifest is re-read.
    pub debounce: Duration,
    /// Retry policy for failed entries.
    pub backoff: BackoffConfig,
    /// Entries reconciled at once (downloads inside one are limited by the download queue).
    pub concurrency: usize,
    /// How long running reconciles get to reach a resumable point after shutdown is requested
    /// before they are dropped. Keep it below Kubernetes' `terminationGracePeriodSeconds`.
    pub shutdown_timeout: Duration,
}

impl WatchConfig {
    /// Defaults for everything but the manifest path.
    pub fn new(manifest_path: impl Into<PathBuf>) -> Self {
        Self {
            manifest_path: manifest_path.into(),
            interval: Duration::from_mins(5),
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            debounce: Duration::from_millis(500),
            backoff: BackoffConfig::default(),
            concurrency: 4,
            shutdown_timeout: Duration::from_secs(20),
        }
    }

    /// Checks the values that would make the loop misbehave.
    pub fn validate(&self) -> Result<(), WatchError> {
        let bad = |what: &str, why: &str| {
            Err(WatchError::Config {
                what: what.to_owned(),
                why: why.to_owned(),
            })
        };
        if self.interval.is_zero() {
            return bad("interval", "must be longer than zero");
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.backoff.base.is_zero() || self.backoff.max < self.backoff.base {
            return bad(
                "backoff",
                "base must be longer than zero and max at least base",
            );
        }
        if !(0.0..=1.0).contains(&self.backoff.jitter) {
            return bad("backoff.jitter", "must be between 0.0 and 1.0");
        }
        if self.manifest_path.file_name().is_none() {
            return bad("manifest path", "must name a file");
        }
        Ok(())
    }
}

/// Why watch mode could not start or stopped with an error. A manifest that does not parse
/// and failing entries are not errors: they are reported in the status and metrics.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A [`WatchConfig`] value is unusable.
    #[error("invalid watch setting {what}: {why}")]
    Config {
        /// Which setting.
        what: String,
        /// Why.
        why: String,
    },
    /// The HTTP server could not listen.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest's directory could not be watched.
    #[error("cannot watch {}", dir.display())]
    Watch {
        /// The watched directory.
        dir: PathBuf,
        /// The cause.
        source: notify::Error,
    },
    /// The async runtime or the signal handlers could not be set up.
    #[error("cannot start the watch runtime")]
    Runtime(#[source] std::io::Error),
}

/// A running watcher, bound to its address, not yet looping.
pub struct Watch<C: Converger> {
    runner: runner::Runner<C>,
    local_addr: SocketAddr,
}

impl<C: Converger> std::fmt::Debug for Watch<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<C: Converger> Watch<C> {
    /// Validates `config`, starts the HTTP server on `config.listen` and the watch on the
    /// manifest's directory. Reconciling starts with [`run`](Self::run).
    pub async fn bind(config: WatchConfig, converger: Arc<C>) -> Result<Self, WatchError> {
        config.validate()?;
        let (runner, local_addr) = runner::Runner::start(config, converger).await?;
        Ok(Self { runner, local_addr })
    }

    /// The address the HTTP server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to read the status while the loop runs.
    pub fn handle(&self) -> WatchHandle {
        WatchHandle(self.runner.shared())
    }

    /// Runs until `shutdown` fires: stops taking new work, cancels running reconciles, waits
    /// for them up to `shutdown_timeout`, stops the server and the file watch, and returns.
    pub async fn run(self, shutdown: CancelToken) -> Result<(), WatchError> {
        self.runner.run(shutdown).await
    }
}

/// Read access to a running watcher's state (what the HTTP endpoints serve).
#[derive(Clone)]
pub struct WatchHandle(Arc<state::Shared>);

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle").finish_non_exhaustive()
    }
}

impl WatchHandle {
    /// The `/status` document.
    pub fn status(&self) -> StatusReport {
        self.0.status()
    }

    /// The `/readyz` verdict.
    pub fn readiness(&self) -> Readiness {
        self.0.readiness()
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        self.0.metrics_text()
    }
}

/// Binds and runs watch mode until `shutdown` fires. See [`Watch`].
pub async fn run_watch<C: Converger>(
    config: WatchConfig,
    converger: Arc<C>,
    shutdown: CancelToken,
) -> Result<(), WatchError> {
    Watch::bind(config, converger).await?.run(shutdown).await
}

/// What `modelsync watch` calls: builds a runtime, binds, calls `on_listening` with the bound
/// address (so "listening on" is said only once it is true; a bind failure is an error
/// before it), runs until SIGTERM or SIGINT, and returns `Ok` after a clean shutdown (the CLI
/// exits 0). Blocking work still running at the end (a hash on a blocking thread) gets two
/// more seconds, then is abandoned.
pub fn block_on_watch<C: Converger>(
    config: WatchConfig,
    converger: Arc<C>,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), WatchError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("modelsync-watch")
        .build()
        .map_err(WatchError::Runtime)?;
    let result = rt.block_on(async move {
        let shutdown = CancelToken::on_termination_signals().map_err(WatchError::Runtime)?;
        let watch = Watch::bind(config, converger).await?;
        on_listening(watch.local_addr());
        watch.run(shutdown).await
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_setting() {
        let ok = WatchConfig::new("/etc/modelsync/models.yaml");
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.interval = Duration::ZERO;
        assert!(c.validate().unwrap_err().to_string().contains("interval"));
        let mut c = ok.clone();
        c.backoff.jitter = 1.5;
        assert!(c.validate().unwrap_err().to_string().contains("jitter"));
        let mut c = ok.clone();
        c.backoff.max = Duration::from_secs(1);
        assert!(c.validate().unwrap_err().to_string().contains("backoff"));
        let mut c = ok;
        c.concurrency = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("concurrency")
        );
    }
}
