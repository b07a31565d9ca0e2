//! What `apply` shows while it works: indicatif bars on stderr (one per downloading file and
//! a total), a line per finished action on stdout; or, with `-o json`, every reconcile and
//! install event as one JSON object per line on stdout.
//!
//! A file's bar names its entry and the file's whole path in the repo or folder (last on the
//! line, never cut); sizes and speeds use the summary's units (`4.2 MB`, decimal); the total
//! has a speed and an ETA from the bytes left and the current speed (`eta ?` until a speed is
//! known, never a made-up `0s`). A bar appears only once there are bytes to show: a job whose
//! sizes are not known yet, or a local copy, draws nothing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{OutputFormat, Printer};
use crate::events::Reporter;
use crate::install::InstallEvent;
use crate::reconcile::{ActionKind, ReconcileEvent};
use crate::report::Event;
use crate::units::HumanBytes;

/// The apply reporter.
pub struct ApplyUi {
    json: bool,
    quiet: bool,
    bars: Option<Bars>,
    entries: EntryNames,
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

/// The entry an install source belongs to (`record_source` of its install request), so that
/// bars name entries rather than sources.
pub type EntryNames = HashMap<String, String>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ApplyUi {
    /// JSON Lines with `-o json`; bars when the printer draws them; with `-q` only failures.
    pub fn new(output: OutputFormat, printer: Printer) -> Self {
        Self::with_target(
            output == OutputFormat::Json,
            printer.progress(),
            !printer.talks(),
            ProgressDrawTarget::stderr(),
        )
    }

    /// Bars name the entry of each source in `entries` (else the source).
    #[must_use]
    pub fn with_entries(mut self, entries: EntryNames) -> Self {
        self.entries = entries;
        self
    }

    fn with_target(json: bool, bars: bool, quiet: bool, target: ProgressDrawTarget) -> Self {
        Self {
            json,
            quiet,
            entries: EntryNames::new(),
            bars: (bars && !json).then(|| Bars {
                mp: MultiProgress::with_draw_target(target),
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
                adopted_bytes,
                adopted_from,
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
                if *adopted_bytes > 0 {
                    let _ = write!(
                        line,
                        ", {} adopted from {} (no download)",
                        HumanBytes(*adopted_bytes),
                        adopted_from.join(", ")
                    );
                }
                self.println(&line);
            }
            ReconcileEvent::ActionFailed {
                name,
                action,
                error,
                causes,
                ..
            } => {
                if self.interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                // The one place this failure is told: its message, then each cause once. With
                // `-q` it is an error on stderr (the only output); otherwise a progress line.
                let mut text = Vec::new();
                if self.quiet {
                    let head = format!("error: {name} ({}): {error}", action_name(*action));
                    let _ = crate::cli::output::write_chain(&mut text, &head, causes, "  ");
                    self.eprintln(String::from_utf8_lossy(&text).trim_end());
                } else {
                    // An `error` row failed before anything ran: its reason is the whole story.
                    let head = if *action == ActionKind::Error {
                        format!("✗ {name}: {error}")
                    } else {
                        format!("✗ {name}: {} failed: {error}", action_name(*action))
                    };
                    let _ = crate::cli::output::write_chain(&mut text, &head, causes, "    ");
                    self.println(String::from_utf8_lossy(&text).trim_end());
                }
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
                source,
                local_path,
                parts,
                bytes,
                total_bytes,
            } => {
                st.jobs.insert(*id, (*bytes, *total_bytes));
                let entry = self.entries.get(source).unwrap_or(source);
                for p in parts {
                    let key = (*id, p.local_path.clone());
                    let known = p.total_bytes > 0 || p.bytes > 0;
                    let done = p.total_bytes > 0 && p.bytes >= p.total_bytes;
                    if !st.files.contains_key(&key) && (!known || done) {
                        continue;
                    }
                    let pb = st.files.entry(key).or_insert_with(|| {
                        let pb = b.mp.add(
                            ProgressBar::new(p.total_bytes.max(p.bytes)).with_position(p.bytes),
                        );
                        pb.set_style(file_style());
                        pb.set_prefix(entry.clone());
                        pb.set_message(part_label(local_path, &p.local_path));
                        pb
                    });
                    pb.set_length(p.total_bytes.max(p.bytes));
                    pb.set_position(p.bytes);
                    if done {
                        pb.finish_and_clear();
                    }
                }
                let (done, total) = st
                    .jobs
                    .values()
                    .fold((0, 0), |(d, t), (b, tb)| (d + b, t + tb));
                if st.total.is_none() && total == 0 {
                    return;
                }
                let tb = st.total.get_or_insert_with(|| {
                    let pb =
                        b.mp.insert(0, ProgressBar::new(total.max(done)).with_position(done));
                    pb.set_style(total_style());
                    pb.set_prefix("total");
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
    a.as_str().to_owned()
}

/// A part's path relative to its job's staging folder (`unet/diffusion_pytorch_model.safetensors`),
/// without the `.part` of a file being written.
pub(crate) fn part_label(staging: &std::path::Path, part: &std::path::Path) -> String {
    let rel = part
        .strip_prefix(staging.join("files"))
        .or_else(|_| part.strip_prefix(staging))
        .unwrap_or(part);
    let rel = if rel.as_os_str().is_empty() {
        part.file_name().map_or(part, std::path::Path::new)
    } else {
        rel
    };
    let s = rel.to_string_lossy();
    s.strip_suffix(".part").unwrap_or(&s).to_owned()
}

/// `1.2 MB/4.2 MB` (`?` for an unknown size), in the summary's units.
fn sizes(pos: u64, len: Option<u64>) -> String {
    match len {
        Some(l) if l > 0 => format!("{}/{}", HumanBytes(pos), HumanBytes(l)),
        _ => format!("{}/?", HumanBytes(pos)),
    }
}

/// `2.5 MB/s`; empty before a speed is known.
fn speed(per_sec: f64) -> String {
    if per_sec.is_finite() && per_sec >= 1.0 {
        format!("{}/s", HumanBytes(per_sec as u64))
    } else {
        String::new()
    }
}

/// Time left at the current speed (`eta 1m30s`; `eta ?` while no speed or size is known).
fn eta(pos: u64, len: Option<u64>, per_sec: f64) -> String {
    match len {
        Some(l) if l > 0 && per_sec.is_finite() && per_sec >= 1.0 => {
            let secs = (l.saturating_sub(pos) as f64 / per_sec).ceil() as u64;
            format!(
                "eta {}",
                crate::units::HumanDuration(std::time::Duration::from_secs(secs))
            )
        }
        _ => "eta ?".to_owned(),
    }
}

fn with_units(style: ProgressStyle) -> ProgressStyle {
    style
        .with_key(
            "sizes",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&sizes(s.pos(), s.len()));
            },
        )
        .with_key(
            "speed",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&speed(s.per_sec()));
            },
        )
        .with_key(
            "true_eta",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&eta(s.pos(), s.len(), s.per_sec()));
            },
        )
        .progress_chars("=> ")
}

pub(crate) fn file_style() -> ProgressStyle {
    with_units(
        ProgressStyle::with_template("  [{bar:24}] {sizes:>19} {speed:>11}  {prefix}: {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

pub(crate) fn total_style() -> ProgressStyle {
    with_units(
        ProgressStyle::with_template("  [{bar:24}] {sizes:>19} {speed:>11}  {prefix}, {true_eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

/// Every module's events, through [`Event`].
impl<E: Clone + Into<Event>> Reporter<E> for ApplyUi {
    fn report(&self, event: &E) {
        let event = &event.clone().into();
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
            Event::Download(_) | Event::Load(_) | Event::Push(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::InstallPart;
    use std::path::Path;

    fn downloading(parts: &[(&str, u64, u64)]) -> Event {
        let staging = PathBuf::from("/m/.tmp/abc");
        Event::Install(InstallEvent::ModelInstallDownloading {
            id: 7,
            source: "owner/repo".into(),
            local_path: staging.clone(),
            bytes: parts.iter().map(|p| p.1).sum(),
            total_bytes: parts.iter().map(|p| p.2).sum(),
            parts: parts
                .iter()
                .map(|(path, bytes, total)| InstallPart {
                    source: format!("https://hub/{path}"),
                    local_path: staging.join("files").join(path),
                    bytes: *bytes,
                    total_bytes: *total,
                })
                .collect(),
        })
    }

    fn ui() -> ApplyUi {
        ApplyUi::with_target(false, true, false, ProgressDrawTarget::hidden())
            .with_entries(EntryNames::from([("owner/repo".into(), "sdxl".into())]))
    }

    type Shown = (Option<(String, u64, Option<u64>)>, Vec<(String, String)>);

    /// The total bar (prefix, position, length) and the file bars (prefix, message).
    fn bars(ui: &ApplyUi) -> Shown {
        let st = lock(&ui.bars.as_ref().unwrap().state);
        let total = st
            .total
            .as_ref()
            .map(|t| (t.prefix(), t.position(), t.length()));
        let mut files: Vec<_> = st
            .files
            .values()
            .map(|b| (b.prefix(), b.message()))
            .collect();
        files.sort();
        (total, files)
    }

    #[test]
    fn bars_name_the_entry_and_the_whole_file_path_and_none_is_empty() {
        let ui = ui();
        // A job whose sizes are not known yet draws nothing.
        ui.report(&downloading(&[]));
        ui.report(&downloading(&[(
            "unet/diffusion_pytorch_model.fp16.safetensors.part",
            0,
            0,
        )]));
        assert_eq!(bars(&ui), (None, vec![]));
        ui.report(&downloading(&[
            (
                "unet/diffusion_pytorch_model.fp16.safetensors.part",
                1000,
                5_000_000,
            ),
            ("text_encoder/model.fp16.safetensors", 0, 2_000_000),
        ]));
        let (total, files) = bars(&ui);
        assert_eq!(total, Some(("total".to_owned(), 1000, Some(7_000_000))));
        assert_eq!(
            files,
            [
                (
                    "sdxl".to_owned(),
                    "text_encoder/model.fp16.safetensors".to_owned()
                ),
                (
                    "sdxl".to_owned(),
                    "unet/diffusion_pytorch_model.fp16.safetensors".to_owned()
                ),
            ]
        );
        ui.clear();
        assert_eq!(bars(&ui), (None, vec![]));
    }

    #[test]
    fn units_are_the_summary_s_and_the_eta_is_true() {
        assert_eq!(sizes(1_200_000, Some(4_200_000)), "1.2 MB/4.2 MB");
        assert_eq!(sizes(512, None), "512 B/?");
        assert_eq!(speed(2_500_000.0), "2.5 MB/s");
        assert_eq!(speed(0.0), "");
        assert_eq!(eta(1_000_000, Some(4_000_000), 1_000_000.0), "eta 3s");
        assert_eq!(eta(0, Some(1_000_000_000), 10_000_000.0), "eta 1m40s");
        assert_eq!(eta(0, Some(4_000_000), 0.0), "eta ?");
        assert_eq!(eta(0, None, 5.0), "eta ?");
        assert_eq!(
            part_label(
                Path::new("/m/.tmp/a"),
                Path::new("/m/.tmp/a/files/vae/x.bin.part")
            ),
            "vae/x.bin"
        );
        assert_eq!(
            part_label(Path::new("/m/.tmp/a"), Path::new("/m/.tmp/a/files")),
            "files"
        );
    }
}
