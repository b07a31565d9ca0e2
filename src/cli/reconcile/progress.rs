//! What `apply` shows while it works: indicatif bars on stderr (one per downloading file and
//! a total), a line per finished action on stdout; or, with `-o json`, every reconcile and
//! install event as one JSON object per line on stdout.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Event, Reporter};
use crate::install::InstallEvent;
use crate::reconcile::{ActionKind, ReconcileEvent};
use crate::units::HumanBytes;

/// The apply reporter.
pub struct ApplyUi {
    json: bool,
    quiet: bool,
    bars: Option<Bars>,
    /// Ctrl-C was pressed: failures from here on are the interruption, summed up at the end.
    interrupted: std::sync::atomic::AtomicBool,
}

struct Bars {
    mp: MultiProgress,
    state: Mutex<BarState>,
}

#[derive(Default)]
struct BarState {
    total: Option<ProgressBar>,
    files: HashMap<(u64, PathBuf), ProgressBar>,
    jobs: HashMap<u64, (u64, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ApplyUi {
    /// `json`: JSON Lines; `bars`: draw progress bars; `quiet`: only failures.
    pub fn new(json: bool, bars: bool, quiet: bool) -> Self {
        Self {
            json,
            quiet,
            bars: (bars && !json).then(|| Bars {
                mp: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                state: Mutex::new(BarState::default()),
            }),
            interrupted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ctrl-C: says so once and stops reporting the failures the cancellation causes.
    pub fn interrupt(&self) {
        use std::sync::atomic::Ordering;
        if !self.interrupted.swap(true, Ordering::SeqCst) && !self.json {
            self.eprintln(
                "interrupting: stopping the downloads (partial files are kept; Ctrl-C again quits at once)",
            );
        }
    }

    /// Prints a line on stdout without tearing the bars.
    pub fn println(&self, line: &str) {
        let print = || {
            let _ = writeln!(std::io::stdout(), "{line}");
        };
        match &self.bars {
            Some(b) => b.mp.suspend(print),
            None => print(),
        }
    }

    /// Prints a line on stderr without tearing the bars.
    pub fn eprintln(&self, line: &str) {
        let print = || {
            let _ = writeln!(std::io::stderr(), "{line}");
        };
        match &self.bars {
            Some(b) => b.mp.suspend(print),
            None => print(),
        }
    }

    /// Removes every bar (the run is over).
    pub fn clear(&self) {
        if let Some(b) = &self.bars {
            let mut st = lock(&b.state);
            for (_, pb) in st.files.drain() {
                pb.finish_and_clear();
            }
            if let Some(t) = st.total.take() {
                t.finish_and_clear();
            }
            let _ = b.mp.clear();
        }
    }

    fn text(&self, e: &ReconcileEvent) {
        match e {
            ReconcileEvent::ActionCompleted {
                name,
                action,
                key,
                downloaded_bytes,
            } => {
                if self.quiet {
                    return;
                }
                let done = match action {
                    ActionKind::Install => "installed",
                    ActionKind::Adopt => "adopted",
                    ActionKind::Update => "updated",
                    ActionKind::Replace => "replaced",
                    ActionKind::Repair => "repaired",
                    ActionKind::Upgrade => "upgraded",
                    ActionKind::Delete => "deleted",
                    _ => "done",
                };
                let mut line = format!("{} {name}: {done}", action.symbol());
                if let Some(k) = key {
                    let _ = write!(line, " ({k})");
                }
                if *downloaded_bytes > 0 {
                    let _ = write!(line, ", {} downloaded", HumanBytes(*downloaded_bytes));
                }
                self.println(&line);
            }
            ReconcileEvent::ActionFailed {
                name,
                action,
                error,
            } => {
                if self.interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                self.println(&format!(
                    "✗ {name}: {} failed: {error}",
                    action_name(*action)
                ));
            }
            ReconcileEvent::Warning { name, message } => {
                if !self.quiet {
                    self.eprintln(&format!("warning: {name}: {message}"));
                }
            }
            ReconcileEvent::Preloaded { name, detail, .. } => {
                if !self.quiet {
                    self.println(&format!("preloaded {name}: {detail}"));
                }
            }
            ReconcileEvent::PreloadSkipped { name, reason } => {
                self.eprintln(&format!("preload {name}: skipped: {reason}"));
            }
            ReconcileEvent::LockWritten { path, dropped } => {
                if !self.quiet {
                    let mut line = format!("wrote {}", path.display());
                    if !dropped.is_empty() {
                        let _ = write!(line, " (dropped {})", dropped.join(", "));
                    }
                    self.eprintln(&line);
                }
            }
            ReconcileEvent::LockNotWritten { path, error } => {
                if !self.quiet {
                    self.eprintln(&format!(
                        "warning: cannot write {}: {error}; the models converge without it, but `apply --locked` and `verify` have no lock to check against (set settings.lock_file or --lock-file to a writable place)",
                        path.display()
                    ));
                }
            }
            ReconcileEvent::Planned { .. }
            | ReconcileEvent::ActionStarted { .. }
            | ReconcileEvent::Finished { .. } => {}
        }
    }

    fn install(&self, e: &InstallEvent) {
        let Some(b) = &self.bars else { return };
        let mut st = lock(&b.state);
        match e {
            InstallEvent::ModelInstallDownloading {
                id,
                parts,
                bytes,
                total_bytes,
                ..
            } => {
                st.jobs.insert(*id, (*bytes, *total_bytes));
                for p in parts {
                    let key = (*id, p.local_path.clone());
                    let pb = st.files.entry(key).or_insert_with(|| {
                        let pb = b.mp.add(ProgressBar::new(p.total_bytes));
                        pb.set_style(file_style());
                        pb.set_message(
                            p.local_path
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default(),
                        );
                        pb
                    });
                    pb.set_length(p.total_bytes.max(p.bytes));
                    pb.set_position(p.bytes);
                    if p.total_bytes > 0 && p.bytes >= p.total_bytes {
                        pb.finish_and_clear();
                    }
                }
                let (done, total) = st
                    .jobs
                    .values()
                    .fold((0, 0), |(d, t), (b, tb)| (d + b, t + tb));
                let tb = st.total.get_or_insert_with(|| {
                    let pb = b.mp.insert(0, ProgressBar::new(total));
                    pb.set_style(total_style());
                    pb.set_message("total");
                    pb
                });
                tb.set_length(total.max(done));
                tb.set_position(done);
            }
            InstallEvent::ModelInstallCompleted { id, .. }
            | InstallEvent::ModelInstallError { id, .. }
            | InstallEvent::ModelInstallCancelled { id, .. } => {
                let keys: Vec<_> = st.files.keys().filter(|k| k.0 == *id).cloned().collect();
                for k in keys {
                    if let Some(pb) = st.files.remove(&k) {
                        pb.finish_and_clear();
                    }
                }
            }
            // apply reports install warnings as its own per-entry warnings.
            InstallEvent::ModelInstallRunning { .. } | InstallEvent::ModelInstallWarning { .. } => {
            }
        }
    }
}

/// The action's name as the JSON shape spells it (`install`, `repair` …).
pub fn action_name(a: ActionKind) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn file_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "  {msg:30!} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn total_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg:32!} [{bar:30}] {bytes:>10}/{total_bytes:<10} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Reporter for ApplyUi {
    fn report(&self, event: &Event) {
        if self.json {
            // Download events repeat what install events say, with whole job snapshots.
            if matches!(event, Event::Download(_)) {
                return;
            }
            if let Ok(line) = serde_json::to_string(event) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            return;
        }
        match event {
            Event::Reconcile(e) => self.text(e),
            Event::Install(e) => self.install(e),
            Event::Download(_) | Event::Load(_) => {}
        }
    }
}
