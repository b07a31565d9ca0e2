//! `probe`, `hash`, `scan`.
//!
//! JSON shapes (`-o json`): `probe` prints the [`ProbeResult`] object (an array of them when
//! several paths are given), whose `candidates` list every rule that matched (the winner first,
//! `winner: true`) and `decision` says why it won; `hash` prints `{"path", "algorithm", "hash"}`; `scan` prints the
//! [`ScanReport`] object with `path` added.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use clap::Args;

use super::{Context, OutputFormat, Status};
use crate::hash::{HashAlgorithm, hash_path};
use crate::probe::{ProbeError, ProbeResult, probe as probe_path};
use crate::scan::{GlobalClass, ScanReport, ScanVerdict, scan_path};
use crate::units::HumanBytes;

/// `probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Model files or folders (several are probed in one go; exit 1 if any fails).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// `hash`.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// A model file or folder.
    pub path: PathBuf,
    /// blake3 (default), blake3_single, sha256 or imohash.
    #[arg(long, default_value = "blake3")]
    pub algo: String,
}

/// `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// A pickle/checkpoint file or a folder.
    pub path: PathBuf,
}

fn print_probe_text(
    out: &mut impl Write,
    path: &std::path::Path,
    r: &ProbeResult,
) -> std::io::Result<()> {
    writeln!(out, "{}", path.display())?;
    writeln!(out, "  type:       {}", r.model_type)?;
    writeln!(out, "  base:       {}", r.base)?;
    if !r.base_candidates.is_empty() {
        let c: Vec<&str> = r.base_candidates.iter().map(|b| b.as_str()).collect();
        let note = if r.base_is_guessed() {
            "base guessed; set config.base to be sure"
        } else {
            "set config.base"
        };
        writeln!(out, "  candidates: {} ({note})", c.join(", "))?;
    }
    writeln!(out, "  format:     {}", r.format)?;
    if let Some(v) = r.variant {
        writeln!(out, "  variant:    {v}")?;
    }
    if let Some(p) = r.prediction_type {
        writeln!(out, "  prediction: {p}")?;
    }
    if r.upcast_attention {
        writeln!(out, "  upcast_attention: true")?;
    }
    if let Some(rv) = r.repo_variant {
        let s = if rv.as_str().is_empty() {
            "(default)"
        } else {
            rv.as_str()
        };
        writeln!(out, "  repo_variant: {s}")?;
    }
    if let Some(c) = &r.config_path {
        writeln!(out, "  config:     {c}")?;
    }
    if let Some(subs) = &r.submodels {
        let s: Vec<String> = subs.keys().map(ToString::to_string).collect();
        writeln!(out, "  submodels:  {}", s.join(", "))?;
    }
    writeln!(out, "  name:       {}", r.name)?;
    writeln!(out, "  size:       {}", HumanBytes(r.file_size))?;
    if let Some(s) = &r.pickle_scan {
        writeln!(out, "  pickle scan: {}", s.verdict)?;
        for g in s.globals.iter().filter(|g| g.class != GlobalClass::Safe) {
            writeln!(out, "    {} {}.{} in {}", g.class, g.module, g.name, g.file)?;
        }
    }
    if r.candidates.len() > 1 {
        let c: Vec<String> = r
            .candidates
            .iter()
            .map(|c| format!("{} ({} {})", c.rule, c.model_type, c.base))
            .collect();
        writeln!(out, "  rules:      {}", c.join(", "))?;
    }
    writeln!(out, "  decision:   {}", r.decision)?;
    writeln!(out, "  evidence:")?;
    for e in &r.evidence {
        writeln!(out, "    - {e}")?;
    }
    if !r.warnings.is_empty() {
        writeln!(out, "  warnings:")?;
        for w in &r.warnings {
            writeln!(out, "    - {w}")?;
        }
    }
    Ok(())
}

/// Probes every path, on all cores when there are several; results keep the input order.
fn probe_all(paths: &[PathBuf]) -> Vec<Result<ProbeResult, ProbeError>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(paths.len());
    if workers <= 1 {
        return paths.iter().map(|p| probe_path(p)).collect();
    }
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<Result<ProbeResult, ProbeError>>> = Vec::new();
    slots.resize_with(paths.len(), || None);
    let done: Vec<Vec<(usize, Result<ProbeResult, ProbeError>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = paths.get(i) else { break };
                        mine.push((i, probe_path(p)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (i, r) in done.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .zip(paths)
        .map(|(r, p)| {
            r.unwrap_or_else(|| {
                Err(ProbeError::Io {
                    path: p.clone(),
                    source: std::io::Error::other("probe worker panicked"),
                })
            })
        })
        .collect()
}

pub fn probe(ctx: &Context, a: ProbeArgs) -> anyhow::Result<Status> {
    let ProbeArgs { paths } = a;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut results = Vec::with_capacity(paths.len());
    let mut status = Status::Success;
    for (i, (path, r)) in paths.iter().zip(probe_all(&paths)).enumerate() {
        match r {
            Ok(r) => match ctx.output {
                OutputFormat::Json => results.push(r),
                OutputFormat::Text => {
                    if i > 0 {
                        writeln!(out)?;
                    }
                    print_probe_text(&mut out, path, &r)?;
                }
            },
            Err(e) if paths.len() == 1 => return Err(e.into()),
            Err(e) => {
                super::output::print_error(ctx, &anyhow::Error::from(e));
                status = Status::Error;
            }
        }
    }
    if ctx.output == OutputFormat::Json {
        if paths.len() == 1 && results.len() == 1 {
            serde_json::to_writer_pretty(&mut out, &results[0])?;
        } else {
            serde_json::to_writer_pretty(&mut out, &results)?;
        }
        writeln!(out)?;
    }
    out.flush()?;
    Ok(status)
}

pub fn hash(ctx: &Context, a: HashArgs) -> anyhow::Result<Status> {
    let HashArgs { path, algo } = a;
    let algo: HashAlgorithm = algo.parse().context("--algo")?;
    let h = hash_path(&path, algo)?;
    let mut out = std::io::stdout().lock();
    match ctx.output {
        OutputFormat::Json => {
            let doc = serde_json::json!({"path": path, "algorithm": algo, "hash": h});
            writeln!(out, "{doc}")?;
        }
        OutputFormat::Text => writeln!(out, "{h}  {}", path.display())?,
    }
    Ok(Status::Success)
}

fn print_scan_text(
    out: &mut impl Write,
    path: &std::path::Path,
    r: &ScanReport,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: {} ({} file{} scanned)",
        path.display(),
        r.verdict,
        r.files_scanned,
        if r.files_scanned == 1 { "" } else { "s" }
    )?;
    for g in &r.globals {
        writeln!(
            out,
            "  {:<9} {}.{}  in {}",
            g.class.as_str(),
            g.module,
            g.name,
            g.file
        )?;
    }
    for p in &r.problems {
        writeln!(out, "  problem: {p}")?;
    }
    Ok(())
}

pub fn scan(ctx: &Context, a: ScanArgs) -> anyhow::Result<Status> {
    let ScanArgs { path } = a;
    let r = scan_path(&path)?;
    let mut out = std::io::stdout().lock();
    match ctx.output {
        OutputFormat::Json => {
            let mut doc = serde_json::to_value(&r)?;
            if let Some(o) = doc.as_object_mut() {
                o.insert("path".into(), serde_json::json!(path));
            }
            writeln!(out, "{doc}")?;
        }
        OutputFormat::Text => print_scan_text(&mut out, &path, &r)?,
    }
    Ok(match r.verdict {
        ScanVerdict::Clean => Status::Success,
        ScanVerdict::Suspicious | ScanVerdict::Dangerous => Status::Pending,
    })
}
