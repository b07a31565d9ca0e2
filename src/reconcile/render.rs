//! The plan as text for people (`modelsync diff`). Pure: returns a `String`.

use std::fmt::Write;

use super::plan::{ActionKind, Plan, PlannedAction, UnidentifiedRecord};
use crate::units::HumanBytes;

/// Renders a plan: a table of changes (symbol, name, source, reason, size), the unmanaged
/// records, and a totals line such as
/// `Plan: 2 to install, 1 to update, 1 to repair, 0 to delete — 4.2 GB to fetch, 61.0 GB free`.
/// Unchanged entries are shown only when `verbose`.
///
/// Symbols: `+` install, `⇐` adopt, `~` update, `-/+` replace, `!` repair, `↑` upgrade,
/// `-` delete, `?` orphaned, `✗` error, `=` unchanged. Sizes: `?` unknown, `-` nothing.
pub fn render_text(plan: &Plan, verbose: bool) -> String {
    let rows: Vec<&PlannedAction> = plan
        .actions
        .iter()
        .filter(|a| verbose || a.kind() != ActionKind::Unchanged)
        .collect();
    let mut out = String::new();
    if !rows.is_empty() {
        let cells: Vec<[String; 5]> = rows
            .iter()
            .map(|a| {
                [
                    a.kind().symbol().to_owned(),
                    a.name.clone(),
                    a.source.clone(),
                    a.reason.clone(),
                    size_cell(a),
                ]
            })
            .collect();
        let width = |i: usize| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        };
        let w = [width(0), width(1), width(2), width(3), width(4)];
        for c in &cells {
            let line = format!(
                "{}  {}  {}  {}  {}",
                pad(&c[0], w[0]),
                pad(&c[1], w[1]),
                pad(&c[2], w[2]),
                pad(&c[3], w[3]),
                pad_left(&c[4], w[4]),
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push('\n');
    }
    if !plan.unmanaged.is_empty() {
        let _ = writeln!(
            out,
            "Unmanaged records (not in the manifest; never touched): {}",
            plan.unmanaged.len()
        );
        if verbose {
            for u in &plan.unmanaged {
                let _ = writeln!(out, "  {}  {}  {}", u.name, u.key, u.source);
            }
        }
    }
    if !plan.unidentified.is_empty() {
        out.push_str(&render_unidentified(&plan.unidentified));
    }
    let t = &plan.totals;
    if !plan.has_changes() && t.error == 0 {
        let _ = write!(out, "No changes: {} model(s) in sync.", t.unchanged);
        if t.orphaned > 0 {
            let _ = write!(
                out,
                " {} orphaned record(s) kept (apply --prune deletes them).",
                t.orphaned
            );
        }
        out.push('\n');
        return out;
    }
    let mut parts = vec![format!("{} to install", t.install)];
    for (n, what) in [(t.adopt, "to adopt")] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.push(format!("{} to update", t.update));
    if t.replace > 0 {
        parts.push(format!("{} to replace", t.replace));
    }
    parts.push(format!("{} to repair", t.repair));
    if t.upgrade > 0 {
        parts.push(format!("{} to upgrade", t.upgrade));
    }
    parts.push(format!("{} to delete", t.delete));
    if t.orphaned > 0 {
        parts.push(format!("{} orphaned", t.orphaned));
    }
    if t.error > 0 {
        parts.push(format!("{} in error", t.error));
    }
    let _ = write!(
        out,
        "Plan: {} — {} to fetch",
        parts.join(", "),
        HumanBytes(t.fetch_bytes)
    );
    if t.unknown_sizes > 0 {
        let _ = write!(out, " (+ {} of unknown size)", t.unknown_sizes);
    }
    if let Some(free) = plan.disk.free_bytes {
        let _ = write!(out, ", {} free", HumanBytes(free));
    }
    out.push('\n');
    if !plan.disk.fits {
        let _ = writeln!(
            out,
            "Does not fit: {} needed (fetch plus staging), {} free.",
            HumanBytes(plan.disk.required_bytes),
            HumanBytes(plan.disk.free_bytes.unwrap_or(0))
        );
    }
    out
}

/// The records of type `unknown`, one line each, for `diff` and `status`:
/// `Unidentified (type unknown; load refuses them): t5 (entry t5, checkpoint) …`.
pub fn render_unidentified(records: &[UnidentifiedRecord]) -> String {
    let mut out = String::new();
    let Some(first) = records.first() else {
        return out;
    };
    let _ = writeln!(
        out,
        "Unidentified models (type `unknown`: they sync, `load` refuses them; {}):",
        first.hint
    );
    for r in records {
        let owner = r
            .entry
            .as_deref()
            .map_or_else(|| "unmanaged".to_owned(), |e| format!("entry `{e}`"));
        let _ = writeln!(
            out,
            "  ? {}  {owner}, format `{}`, key {}",
            r.name, r.format, r.key
        );
    }
    out.push('\n');
    out
}

fn size_cell(a: &PlannedAction) -> String {
    match a.fetch_bytes {
        None => "?".to_owned(),
        Some(0) => "-".to_owned(),
        Some(b) => HumanBytes(b).to_string(),
    }
}

fn pad(s: &str, w: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(w.saturating_sub(n)))
}

fn pad_left(s: &str, w: usize) -> String {
    let n = s.chars().count();
    format!("{}{s}", " ".repeat(w.saturating_sub(n)))
}
