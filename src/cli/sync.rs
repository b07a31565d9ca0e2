//! `sync`: the store against `models_dir` (`ModelInstallService::sync_to_config`), and
//! `adopt invokeai ROOT`.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::output::{OutputFormat, print_json};
use super::{Context, Status};
use crate::adopt::{AdoptOptions, AdoptReport, AdoptState};
use crate::download::DownloadQueueConfig;
use crate::events::NullReporter;
use crate::install::sync::{SyncOptions, SyncReport, plan_sync, volume_suspect};
use crate::install::{InstallConfig, UnknownModels};
use crate::manager::ModelManager;
use crate::store;
use crate::units::HumanBytes;

/// `sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Register the orphans (default: a dry run that only shows them).
    #[arg(long)]
    pub yes: bool,
    /// Also unregister records no manifest entry manages whose files are gone (never while
    /// models_dir looks unmounted).
    #[arg(long)]
    pub prune_missing: bool,
    /// Exit 2 when something is to be registered or unregistered.
    #[arg(long)]
    pub exit_code: bool,
}

/// `adopt`.
#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// What to adopt.
    #[command(subcommand)]
    pub what: AdoptWhat,
}

/// What `adopt` takes over.
#[derive(Debug, Subcommand)]
pub enum AdoptWhat {
    /// An InvokeAI install: its records (same keys and fields) and models, in place.
    Invokeai(AdoptInvokeaiArgs),
}

/// `adopt invokeai`.
#[derive(Debug, Args)]
pub struct AdoptInvokeaiArgs {
    /// The InvokeAI root (holds databases/invokeai.db and models/).
    pub root: PathBuf,
    /// Write the records (default: a dry run that only shows them).
    #[arg(long)]
    pub yes: bool,
}

/// Never models: the manifest, its lock file, and the manifest's local sources (an in-place
/// entry not applied yet is `apply`'s to register, with its entry's name and config).
fn skip_list(ctx: &Context) -> Vec<PathBuf> {
    let mut v = vec![
        ctx.manifest_path.clone(),
        crate::manifest::lock::lock_path_for(&ctx.manifest_path),
    ];
    v.extend(ctx.overrides.lock_file.clone());
    if let Ok(Some(m)) = ctx.manifest_if_present() {
        v.push(m.lock_path());
        v.extend(m.models.iter().filter_map(|e| match &e.source {
            crate::hub::ModelSource::Local(l) => Some(l.path.clone()),
            _ => None,
        }));
    }
    v
}

/// `sync`: dry run by default; `--yes` registers (and with `--prune-missing` unregisters).
#[allow(
    clippy::needless_pass_by_value,
    reason = "every command takes its parsed arguments by value"
)]
pub fn sync(ctx: &Context, a: SyncArgs) -> anyhow::Result<Status> {
    let (models_dir, database) = ctx.store_paths()?;
    // The manifest's `unknown_models` and `hash_algorithm`, when there is a readable one.
    let settings = ctx.settings().ok().flatten();
    let opts = SyncOptions {
        register: a.yes,
        prune_missing: a.prune_missing,
        skip: skip_list(ctx),
        unknown_models: settings
            .as_ref()
            .map_or_else(UnknownModels::default, |s| s.unknown_models),
        previous: None,
    };
    let records = match ctx.read_store()? {
        Some(store) => store.all_models()?,
        None => Vec::new(),
    };
    let report = if a.yes && !volume_suspect(&models_dir, &database, &records) {
        std::fs::create_dir_all(&models_dir)
            .with_context(|| format!("cannot create {}", models_dir.display()))?;
        let _lock = ctx.lock_store("register the models no record owns")?;
        ctx.runtime()?.block_on(async {
            let mut cfg = InstallConfig::from_env(&models_dir, None)?;
            if let Some(s) = settings {
                cfg.hash_algorithm = s.hash_algorithm;
            }
            let manager = ModelManager::open(
                cfg,
                &database,
                DownloadQueueConfig::default(),
                Arc::new(NullReporter),
            )?;
            anyhow::Ok(manager.install().sync_to_config(&opts)?)
        })?
    } else {
        // A dry run, or an unmounted volume: nothing is written.
        plan_sync(&records, &database, &models_dir, &opts)?
    };
    if ctx.output == OutputFormat::Json {
        print_json(&serde_json::to_value(&report)?)?;
    } else {
        print_sync(ctx, &report, a.yes)?;
    }
    let failed = report.applied && report.totals.failed > 0;
    Ok(if failed {
        Status::Error
    } else if a.exit_code && !report.applied && report.has_changes() {
        Status::Pending
    } else {
        Status::Success
    })
}

fn print_sync(ctx: &Context, r: &SyncReport, yes: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if r.volume_suspect {
        eprintln!(
            "warning: models folder {} is missing or empty while the store has records in it: is the volume mounted? Nothing is registered or unregistered",
            r.models_dir.display()
        );
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for o in &r.orphans {
        let path = if o.is_dir {
            format!("{}/", o.path)
        } else {
            o.path.clone()
        };
        let what = |x: Option<String>| x.unwrap_or_else(|| "?".into());
        if let Some(e) = &o.error {
            rows.push(vec!["✗".into(), path, format!("cannot register: {e}")]);
            continue;
        }
        let kind = format!(
            "{} {} {}",
            what(o.model_type.map(|t| t.to_string())),
            what(o.base.map(|b| b.to_string())),
            what(o.format.map(|f| f.to_string())),
        );
        let state = match &o.key {
            Some(k) => format!("registered ({})", &k[..k.len().min(8)]),
            None => "not registered".into(),
        };
        rows.push(vec![
            "+".into(),
            path,
            format!("{kind}  {state}  {}", HumanBytes(o.bytes)),
        ]);
    }
    for d in &r.dead {
        let sym = if d.unregister { "-" } else { "?" };
        rows.push(vec![
            sym.into(),
            format!("{} ({})", d.name, &d.key[..d.key.len().min(8)]),
            format!("{}: {}", d.path, d.reason),
        ]);
    }
    for row in &rows {
        writeln!(out, "{}  {}  {}", row[0], row[1], row[2])?;
    }
    if !rows.is_empty() {
        writeln!(out)?;
    }
    let t = &r.totals;
    if t.orphans == 0 && t.dead == 0 {
        writeln!(
            out,
            "In sync: every model in {} has a record and every record its files.",
            r.models_dir.display()
        )?;
        return Ok(());
    }
    let kept = t.dead - t.unregistered;
    if r.applied {
        writeln!(
            out,
            "Sync complete: {} registered, {} failed, {} unregistered, {kept} dead record(s) kept.",
            t.registered, t.failed, t.unregistered
        )?;
    } else if ctx.printer.talks() {
        let to_register = t.orphans - t.failed;
        let hint = if yes {
            "nothing written (volume not mounted?)"
        } else {
            "dry run: `modelsync sync --yes` writes it"
        };
        writeln!(
            out,
            "Sync: {to_register} to register, {} to unregister, {kept} dead record(s) kept, {} cannot be registered — {hint}.",
            t.unregistered, t.failed
        )?;
    }
    Ok(())
}

/// `adopt invokeai ROOT`: dry run by default; `--yes` writes the records.
pub fn adopt(ctx: &Context, a: AdoptArgs) -> anyhow::Result<Status> {
    let AdoptWhat::Invokeai(a) = a.what;
    let (models_dir, database) = ctx.store_paths()?;
    let existing = match ctx.read_store()? {
        Some(store) => store.all_models()?,
        None => Vec::new(),
    };
    let opts = AdoptOptions {
        models_dir: models_dir.clone(),
    };
    let report = if a.yes {
        drop(existing);
        if let Some(parent) = database.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let _lock = ctx.lock_store("adopt the install")?;
        let store = store::open(&database)?;
        crate::adopt::adopt_invokeai(&a.root, store.as_ref(), &opts, true)?
    } else {
        crate::adopt::plan_invokeai(&a.root, &existing, &opts)?
    };
    if ctx.output == OutputFormat::Json {
        print_json(&serde_json::to_value(&report)?)?;
    } else {
        print_adopt(ctx, &report)?;
    }
    Ok(if report.applied && report.totals.conflicts > 0 {
        Status::Error
    } else {
        Status::Success
    })
}

fn print_adopt(ctx: &Context, r: &AdoptReport) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for m in &r.models {
        let sym = match m.state {
            AdoptState::Import | AdoptState::Imported => "+",
            AdoptState::Present => "=",
            AdoptState::Missing => "?",
            AdoptState::Conflict => "✗",
        };
        writeln!(
            out,
            "{sym}  {} ({})  {} {} {}  {}  {}",
            m.name,
            &m.key[..m.key.len().min(8)],
            m.model_type,
            m.base,
            m.format,
            m.path,
            m.reason
        )?;
    }
    let t = &r.totals;
    writeln!(out)?;
    if r.applied {
        writeln!(
            out,
            "Adopted {} model(s) from {}: {} already there, {} with files missing (not imported), {} conflict(s).",
            t.imported,
            r.root.display(),
            t.present,
            t.missing,
            t.conflicts
        )?;
    } else if ctx.printer.talks() {
        writeln!(
            out,
            "Adopt: {} to import, {} already there, {} with files missing (not imported), {} conflict(s) — dry run: `modelsync adopt invokeai {} --yes` writes them.",
            t.import,
            t.present,
            t.missing,
            t.conflicts,
            r.root.display()
        )?;
    }
    Ok(())
}
