//! `/metrics`: counters kept by the loop and the Prometheus text exposition (format 0.0.4),
//! written by hand — a handful of families do not justify a metrics crate.

use std::fmt::Write as _;
use std::time::Duration;

use super::DeviceUsage;
use super::state::{EntryPhase, SyncStatus, WatchState, unix_seconds};

/// Upper bounds (seconds) of the reconcile duration histogram: from a no-op check to a
/// multi-gigabyte download.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

/// How a reconcile ended, for `modelsync_reconcile_runs_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunResult {
    Success,
    Failure,
    Cancelled,
}

/// How a manifest re-read ended, for `modelsync_manifest_reloads_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadResult {
    /// New content, parsed: a new desired state is in force.
    Changed,
    /// Same content as before (a no-op event, a touch, a resync).
    Unchanged,
    /// Unreadable or unparsable content: the previous desired state stays.
    Error,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    runs: [u64; 3],
    buckets: [u64; DURATION_BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    pub bytes_downloaded: u64,
    pub download_errors: u64,
    reloads: [u64; 3],
}

impl Counters {
    pub(crate) fn record_run(&mut self, result: RunResult, took: Duration) {
        self.runs[result as usize] += 1;
        let s = took.as_secs_f64();
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            if s <= *le {
                self.buckets[i] += 1;
            }
        }
        self.duration_sum += s;
        self.duration_count += 1;
    }

    pub(crate) fn record_reload(&mut self, result: ReloadResult) {
        self.reloads[result as usize] += 1;
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every family. Families appear even without samples so dashboards see the names.
pub(crate) fn render(st: &WatchState, cache: &[DeviceUsage], sync: Option<&SyncStatus>) -> String {
    let c = &st.counters;
    let mut o = String::with_capacity(4096);

    family(
        &mut o,
        "modelsync_reconcile_runs_total",
        "counter",
        "Entry reconciles finished, by result (success, failure, cancelled).",
    );
    for (i, r) in ["success", "failure", "cancelled"].iter().enumerate() {
        let _ = writeln!(
            o,
            "modelsync_reconcile_runs_total{{result=\"{r}\"}} {}",
            c.runs[i]
        );
    }

    family(
        &mut o,
        "modelsync_reconcile_duration_seconds",
        "histogram",
        "Time one entry reconcile took, preload included.",
    );
    for (i, le) in DURATION_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            o,
            "modelsync_reconcile_duration_seconds_bucket{{le=\"{le}\"}} {}",
            c.buckets[i]
        );
    }
    let _ = writeln!(
        o,
        "modelsync_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        c.duration_count
    );
    let _ = writeln!(
        o,
        "modelsync_reconcile_duration_seconds_sum {}",
        c.duration_sum
    );
    let _ = writeln!(
        o,
        "modelsync_reconcile_duration_seconds_count {}",
        c.duration_count
    );

    family(
        &mut o,
        "modelsync_entries",
        "gauge",
        "Manifest entries by state (pending, reconciling, converged, failed).",
    );
    let visible = st.visible();
    for phase in EntryPhase::ALL {
        let n = visible.iter().filter(|e| e.phase() == phase).count();
        let _ = writeln!(o, "modelsync_entries{{state=\"{}\"}} {n}", phase.as_str());
    }

    family(
        &mut o,
        "modelsync_entry_consecutive_failures",
        "gauge",
        "Failed reconciles of an entry since its last success.",
    );
    for e in &visible {
        let _ = writeln!(
            o,
            "modelsync_entry_consecutive_failures{{entry=\"{}\"}} {}",
            label(&e.spec.name),
            e.failures
        );
    }

    family(
        &mut o,
        "modelsync_last_success_timestamp_seconds",
        "gauge",
        "Unix time an entry last converged.",
    );
    for e in &visible {
        if let Some(t) = e.last_success {
            let _ = writeln!(
                o,
                "modelsync_last_success_timestamp_seconds{{entry=\"{}\"}} {}",
                label(&e.spec.name),
                unix_seconds(t)
            );
        }
    }

    family(
        &mut o,
        "modelsync_downloaded_bytes_total",
        "counter",
        "Bytes fetched from the network by reconciles.",
    );
    let _ = writeln!(o, "modelsync_downloaded_bytes_total {}", c.bytes_downloaded);

    family(
        &mut o,
        "modelsync_download_errors_total",
        "counter",
        "Failed download attempts (retried or not).",
    );
    let _ = writeln!(o, "modelsync_download_errors_total {}", c.download_errors);

    family(
        &mut o,
        "modelsync_cache_bytes",
        "gauge",
        "Bytes held by the model load cache, by device.",
    );
    for d in cache {
        let _ = writeln!(
            o,
            "modelsync_cache_bytes{{device=\"{}\"}} {}",
            label(&d.device),
            d.bytes
        );
    }

    family(
        &mut o,
        "modelsync_manifest_reloads_total",
        "counter",
        "Manifest re-reads, by result (changed, unchanged, error).",
    );
    for (i, r) in ["changed", "unchanged", "error"].iter().enumerate() {
        let _ = writeln!(
            o,
            "modelsync_manifest_reloads_total{{result=\"{r}\"}} {}",
            c.reloads[i]
        );
    }

    family(
        &mut o,
        "modelsync_manifest_error",
        "gauge",
        "1 while the latest manifest content is rejected and the previous desired state is kept.",
    );
    let _ = writeln!(
        o,
        "modelsync_manifest_error {}",
        u8::from(st.manifest.error.is_some())
    );

    family(
        &mut o,
        "modelsync_ready",
        "gauge",
        "1 when /readyz answers 200.",
    );
    let _ = writeln!(o, "modelsync_ready {}", u8::from(st.readiness().ready));

    family(
        &mut o,
        "modelsync_sync_paths",
        "gauge",
        "What the last sync of the store with models_dir found (settings.sync): orphan models no record owns, dead records whose files are gone.",
    );
    if let Some(s) = sync {
        let _ = writeln!(
            o,
            "modelsync_sync_paths{{kind=\"orphan\"}} {}",
            s.orphans.len()
        );
        let _ = writeln!(
            o,
            "modelsync_sync_paths{{kind=\"dead\"}} {}",
            s.dead_records.len()
        );
    }
    family(
        &mut o,
        "modelsync_sync_registered_total",
        "counter",
        "Orphan models the sync registered (settings.sync: register).",
    );
    if let Some(s) = sync {
        let _ = writeln!(o, "modelsync_sync_registered_total {}", s.registered_total);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut c = Counters::default();
        c.record_run(RunResult::Success, Duration::from_millis(70));
        c.record_run(RunResult::Failure, Duration::from_secs(2));
        c.record_run(RunResult::Cancelled, Duration::from_hours(2));
        assert_eq!(c.runs, [1, 1, 1]);
        assert_eq!(c.buckets[0], 0); // 0.05
        assert_eq!(c.buckets[1], 1); // 0.1
        assert_eq!(c.buckets[4], 2); // 5
        assert_eq!(c.buckets[11], 2); // 3600: the 2 h run only counts in +Inf
        assert_eq!(c.duration_count, 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_family_has_help_and_type() {
        let st = WatchState::new("/m/models.yaml".into());
        let text = render(
            &st,
            &[DeviceUsage {
                device: "cuda:0".into(),
                bytes: 5,
            }],
            Some(&SyncStatus {
                orphans: vec!["a.safetensors".into()],
                registered_total: 3,
                ..SyncStatus::default()
            }),
        );
        assert!(
            text.contains("modelsync_sync_paths{kind=\"orphan\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("modelsync_sync_paths{kind=\"dead\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("modelsync_sync_registered_total 3\n"),
            "{text}"
        );
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(helps, types);
        assert!(helps >= 11, "{text}");
        assert!(text.contains("modelsync_cache_bytes{device=\"cuda:0\"} 5\n"));
        assert!(text.contains("modelsync_entries{state=\"failed\"} 0\n"));
        assert!(text.ends_with('\n'));
    }
}
