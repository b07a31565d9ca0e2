//! `Fake`: a test double of the reconciler behind `modelsync::watch::Converger`.
//!
//! The real reconciler (issue #6) is written in parallel and not available yet, so watch mode
//! is tested against this double. It keeps real files (one `<name>.bin` per entry under a
//! temp `models/` folder) so drift and repair are observable, counts every call with the
//! (possibly paused) tokio clock, and records any overlap of two reconciles of one entry.
//!
//! Its manifest is a line format, one entry per line: `name [mode] [preload|preload_gated]`,
//! modes `ok` (default), `broken` (fails like a hub 500 until healed), `slow` (runs until
//! cancelled), `sleepy` (takes 100 s), `stubborn` (ignores cancellation for an hour),
//! `gated` (waits for `gate`). Unknown words are parse errors naming the line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use modelsync::retry::{Failure, FailureKind};
use modelsync::watch::{
    BoxError, BoxFuture, CancelToken, Converger, DeviceUsage, EntryError, EntryOutcome, EntrySpec,
};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Broken,
    Slow,
    Sleepy,
    Stubborn,
    Gated,
}

#[derive(Debug, Clone)]
pub struct FakeEntry {
    pub name: String,
    pub mode: Mode,
    pub preload: bool,
    pub preload_gated: bool,
    line: String,
}

pub struct Fake {
    models_dir: PathBuf,
    calls: Mutex<Vec<(String, Instant)>>,
    in_flight: Mutex<HashSet<String>>,
    overlaps: Mutex<Vec<String>>,
    healed: Mutex<HashSet<String>>,
    installed: Mutex<HashSet<String>>,
    preloads: Mutex<Vec<String>>,
    cancelled_cleanly: Mutex<Vec<String>>,
    /// Released by the test to let `gated` entries finish.
    pub gate: Semaphore,
    /// Released by the test to let `preload_gated` preloads finish.
    pub preload_gate: Semaphore,
    bump: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Fake {
    pub fn new(models_dir: PathBuf) -> Self {
        Self {
            models_dir,
            calls: Mutex::default(),
            in_flight: Mutex::default(),
            overlaps: Mutex::default(),
            healed: Mutex::default(),
            installed: Mutex::default(),
            preloads: Mutex::default(),
            cancelled_cleanly: Mutex::default(),
            gate: Semaphore::new(0),
            preload_gate: Semaphore::new(0),
            bump: watch::channel(0).0,
        }
    }

    fn notify(&self) {
        self.bump.send_modify(|n| *n += 1);
    }

    /// Start times of every reconcile of `name`.
    pub fn calls_of(&self, name: &str) -> Vec<Instant> {
        lock(&self.calls)
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .collect()
    }

    pub fn count(&self, name: &str) -> usize {
        self.calls_of(name).len()
    }

    pub fn call_names(&self) -> Vec<String> {
        lock(&self.calls).iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn overlaps(&self) -> Vec<String> {
        lock(&self.overlaps).clone()
    }

    pub fn preloads(&self) -> Vec<String> {
        lock(&self.preloads).clone()
    }

    pub fn cancelled_cleanly(&self) -> Vec<String> {
        lock(&self.cancelled_cleanly).clone()
    }

    pub fn heal(&self, name: &str) {
        lock(&self.healed).insert(name.to_owned());
    }

    pub fn unheal(&self, name: &str) {
        lock(&self.healed).remove(name);
    }

    pub fn model_file(&self, name: &str) -> PathBuf {
        self.models_dir.join(format!("{name}.bin"))
    }

    /// Waits until `pred` holds, woken by the fake's own calls. `limit` only bounds a failing
    /// test; under a paused clock the runtime jumps straight to the next timer meanwhile.
    pub async fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&Fake) -> bool) {
        let mut rx = self.bump.subscribe();
        let waited = tokio::time::timeout(limit, async {
            while !pred(self) {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "gave up waiting for {what}; calls so far: {:?}",
            self.call_names()
        );
    }

    fn begin(&self, name: &str) {
        lock(&self.calls).push((name.to_owned(), Instant::now()));
        if !lock(&self.in_flight).insert(name.to_owned()) {
            lock(&self.overlaps).push(name.to_owned());
        }
        self.notify();
    }

    fn end(&self, name: &str) {
        lock(&self.in_flight).remove(name);
        self.notify();
    }

    /// Makes sure `<name>.bin` exists: "install" the first time, "repair" after it vanished.
    fn materialize(&self, name: &str) -> Result<EntryOutcome, EntryError> {
        let path = self.model_file(name);
        if path.exists() {
            return Ok(EntryOutcome::unchanged());
        }
        std::fs::create_dir_all(&self.models_dir)
            .and_then(|()| std::fs::write(&path, b"weights"))
            .map_err(|e| EntryError::new(format!("write {}: {e}", path.display())))?;
        let action = if lock(&self.installed).insert(name.to_owned()) {
            "install"
        } else {
            "repair"
        };
        Ok(EntryOutcome {
            changed: true,
            bytes_downloaded: 7,
            ..EntryOutcome::new(action)
        })
    }

    async fn work(&self, e: &FakeEntry, cancel: &CancelToken) -> Result<EntryOutcome, EntryError> {
        let stopped = |name: &str| {
            lock(&self.cancelled_cleanly).push(name.to_owned());
            Err(EntryError::new("stopped at a resumable point"))
        };
        match e.mode {
            Mode::Ok => self.materialize(&e.name),
            Mode::Broken if lock(&self.healed).contains(&e.name) => self.materialize(&e.name),
            Mode::Broken => Err(EntryError {
                failure: Failure {
                    http_status: Some(500),
                    ..Failure::new(
                        FailureKind::ServerError,
                        format!(
                            "GET https://hub.invalid/owner/{}/resolve/main/model.safetensors: 500 Internal Server Error",
                            e.name
                        ),
                    )
                },
                action: Some("install".into()),
                bytes_downloaded: 3,
                download_errors: 1,
            }),
            Mode::Slow => {
                cancel.cancelled().await;
                stopped(&e.name)
            }
            Mode::Sleepy => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(100)) => self.materialize(&e.name),
                    () = cancel.cancelled() => stopped(&e.name),
                }
            }
            Mode::Stubborn => {
                tokio::time::sleep(Duration::from_hours(1)).await;
                self.materialize(&e.name)
            }
            Mode::Gated => {
                tokio::select! {
                    p = self.gate.acquire() => { drop(p); self.materialize(&e.name) }
                    () = cancel.cancelled() => stopped(&e.name),
                }
            }
        }
    }
}

impl Converger for Fake {
    type Desired = Vec<FakeEntry>;

    fn parse_manifest(&self, path: &Path, content: &[u8]) -> Result<Self::Desired, BoxError> {
        let text = std::str::from_utf8(content)
            .map_err(|e| format!("{}: not UTF-8: {e}", path.display()))?;
        let mut out: Vec<FakeEntry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or_default().to_owned();
            let mut e = FakeEntry {
                name,
                mode: Mode::Ok,
                preload: false,
                preload_gated: false,
                line: line.to_owned(),
            };
            for w in words {
                match w {
                    "ok" => e.mode = Mode::Ok,
                    "broken" => e.mode = Mode::Broken,
                    "slow" => e.mode = Mode::Slow,
                    "sleepy" => e.mode = Mode::Sleepy,
                    "stubborn" => e.mode = Mode::Stubborn,
                    "gated" => e.mode = Mode::Gated,
                    "preload" => e.preload = true,
                    "preload_gated" => e.preload_gated = true,
                    other => {
                        return Err(format!(
                            "{}: line {}: unknown word `{other}`",
                            path.display(),
                            i + 1
                        )
                        .into());
                    }
                }
            }
            if out.iter().any(|o| o.name == e.name) {
                return Err(format!(
                    "{}: line {}: duplicate entry {}",
                    path.display(),
                    i + 1,
                    e.name
                )
                .into());
            }
            out.push(e);
        }
        Ok(out)
    }

    fn entries(&self, desired: &Self::Desired) -> Vec<EntrySpec> {
        desired
            .iter()
            .map(|e| EntrySpec {
                name: e.name.clone(),
                preload: e.preload || e.preload_gated,
                spec_hash: e.line.clone(),
            })
            .collect()
    }

    fn reconcile_entry<'a>(
        &'a self,
        desired: &'a Self::Desired,
        entry: &'a str,
        cancel: CancelToken,
    ) -> BoxFuture<'a, Result<EntryOutcome, EntryError>> {
        Box::pin(async move {
            let Some(e) = desired.iter().find(|e| e.name == entry) else {
                return Err(EntryError::new(format!("no entry {entry}")));
            };
            self.begin(entry);
            let r = self.work(e, &cancel).await;
            self.end(entry);
            r
        })
    }

    fn preload_entry<'a>(
        &'a self,
        desired: &'a Self::Desired,
        entry: &'a str,
        cancel: CancelToken,
    ) -> BoxFuture<'a, Result<(), EntryError>> {
        Box::pin(async move {
            let gated = desired.iter().any(|e| e.name == entry && e.preload_gated);
            if gated {
                tokio::select! {
                    p = self.preload_gate.acquire() => drop(p),
                    () = cancel.cancelled() => return Err(EntryError::new("preload interrupted")),
                }
            }
            lock(&self.preloads).push(entry.to_owned());
            self.notify();
            Ok(())
        })
    }

    fn cache_usage(&self) -> Vec<DeviceUsage> {
        vec![DeviceUsage {
            device: "cpu".into(),
            bytes: 7 * lock(&self.preloads).len() as u64,
        }]
    }
}
