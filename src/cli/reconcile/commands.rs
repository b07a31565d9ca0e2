//! `diff`, `apply`, `status`, `verify`, `gc`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use super::progress::{ApplyUi, action_name};
use super::{ApplyArgs, DiffArgs, GcArgs, StatusArgs, VerifyArgs};
use crate::cli::output::print_json;
use crate::cli::{Context, OutputFormat, Status};
use crate::download::available_space;
use crate::hub::{HubClient, HubEnv};
use crate::manifest::{LockFile, Manifest, ModelEntry};
use crate::reconcile::{
    self, ApplyOptions, Inventory, Plan, PlanOptions, RemoteWarning, gc as gcmod, remote,
    render_text, status as statusmod, verify as verifymod,
};
use crate::store::{self, RecordStore};
use crate::units::HumanBytes;
use crate::watch::CancelSource;

/// The store and what it holds, for commands that only read. A store that does not exist yet
/// is an empty inventory (and is not created).
fn read_inventory(ctx: &Context) -> anyhow::Result<(Option<Box<dyn RecordStore>>, Inventory)> {
    let (models_dir, _) = ctx.store_paths()?;
    let Some(store) = ctx.read_store()? else {
        return Ok((None, Inventory::empty(&models_dir)));
    };
    let inv = reconcile::observe(store.as_ref(), &models_dir)?;
    Ok((Some(store), inv))
}

fn warn(ctx: &Context, warnings: &[RemoteWarning]) {
    for w in warnings {
        ctx.printer.say(format_args!("warning: {w}"));
    }
}

/// The plan `diff` shows: with `--refresh` the upstream commits of unpinned Hub entries, and
/// for actions that fetch without a known size, sizes from the Hub, the URL's server or the
/// local source.
async fn plan_with_lookups(
    m: &Manifest,
    inv: &Inventory,
    store: Option<&dyn RecordStore>,
    lock: Option<&LockFile>,
    refresh: bool,
) -> anyhow::Result<(Plan, Vec<RemoteWarning>)> {
    let env = HubEnv::from_process();
    let mut opts = PlanOptions {
        lock,
        free_bytes: available_space(&m.settings.models_dir).ok(),
        prune: m.settings.prune,
        ..PlanOptions::default()
    };
    let mut warnings = Vec::new();
    let mut hub: Option<HubClient> = None;
    // Each look-up below (upstream commits, sizes, adoption) reads a repository's info and
    // tree through the client's metadata run: one request each for the whole diff.
    let mut run = None;
    if refresh {
        let client = remote::lookup_client(&m.settings, &env)?;
        run = Some(client.metadata_run());
        let entries: Vec<&ModelEntry> = m.models.iter().collect();
        let (commits, w) = remote::upstream_commits(&client, &env, &entries).await;
        opts.upstream_commits = commits;
        split_unresolvable(w, &mut opts, &mut warnings);
        hub = Some(client);
    }
    let p = reconcile::plan(m, inv, &opts)?;
    // Answers saying an entry names nothing (no such repo, revision, file, path or URL) make
    // it an error row; the rest stay warnings with unknown values.
    let entries = m.index(&[]);
    let unknown: Vec<&ModelEntry> = p
        .changes()
        .filter(|a| a.fetch_bytes.is_none())
        .filter_map(|a| entries.get(&a.name))
        .collect();
    if unknown.is_empty() {
        let client = hub.or_else(|| remote::lookup_client(&m.settings, &env).ok());
        let _run = run.or_else(|| client.as_ref().map(HubClient::metadata_run));
        let found = adoptable(m, inv, store, lock, client.as_ref(), &env, &p).await;
        if found.is_empty() {
            return Ok((p, warnings));
        }
        opts.adoptable = found;
        return Ok((reconcile::plan(m, inv, &opts)?, warnings));
    }
    let client = match hub {
        Some(c) => c,
        None => match remote::lookup_client(&m.settings, &env) {
            Ok(c) => c,
            Err(e) => {
                warnings.push(RemoteWarning::new(
                    "hub".into(),
                    format!("sizes unknown: {e}"),
                ));
                return Ok((p, warnings));
            }
        },
    };
    let _run = run.unwrap_or_else(|| client.metadata_run());
    let urls = match remote::lookup_probe() {
        Ok(p) => p,
        Err(e) => {
            warnings.push(RemoteWarning::new(
                "http".into(),
                format!("sizes unknown: {e}"),
            ));
            return Ok((p, warnings));
        }
    };
    let (sizes, w) = remote::entry_sizes(&client, &urls, &env, &unknown).await;
    split_unresolvable(w, &mut opts, &mut warnings);
    opts.remote_sizes = sizes;
    let p = reconcile::plan(m, inv, &opts)?;
    let found = adoptable(m, inv, store, lock, Some(&client), &env, &p).await;
    if found.is_empty() {
        return Ok((p, warnings));
    }
    opts.adoptable = found;
    Ok((reconcile::plan(m, inv, &opts)?, warnings))
}

/// What of the plan's fetches is on this machine already (the store, the HF cache,
/// `settings.adopt_from`).
async fn adoptable(
    m: &Manifest,
    inv: &Inventory,
    store: Option<&dyn RecordStore>,
    lock: Option<&LockFile>,
    hub: Option<&HubClient>,
    env: &HubEnv,
    p: &Plan,
) -> BTreeMap<String, reconcile::Adoptable> {
    let sources = crate::install::AdoptSources {
        hf_cache: env.hf_hub_cache(),
        folders: m.settings.adopt_from.clone(),
        force_copy: false,
    };
    remote::adoptable(p, m, inv, lock, hub, env, &sources, store).await
}

/// Look-up failures that say the entry cannot be resolved go to the plan as error rows; the
/// others stay warnings.
fn split_unresolvable(
    found: Vec<RemoteWarning>,
    opts: &mut PlanOptions<'_>,
    warnings: &mut Vec<RemoteWarning>,
) {
    for w in found {
        if w.unresolvable {
            opts.unresolvable.insert(w.name, w.message);
        } else {
            warnings.push(w);
        }
    }
}

/// `diff`: the plan as a table (or `-o json`: the Plan document).
#[allow(
    clippy::needless_pass_by_value,
    reason = "every command takes its parsed arguments by value"
)]
pub fn diff(ctx: &Context, a: DiffArgs) -> anyhow::Result<Status> {
    let m = ctx.manifest()?;
    let (store, inv) = read_inventory(ctx)?;
    let lock = LockFile::read(&m.lock_path())?;
    let (p, warnings) = ctx.runtime()?.block_on(plan_with_lookups(
        m,
        &inv,
        store.as_deref(),
        lock.as_ref(),
        a.refresh,
    ))?;
    warn(ctx, &warnings);
    if ctx.output == OutputFormat::Json {
        print_json(&serde_json::to_value(&p)?)?;
    } else {
        std::io::stdout().write_all(render_text(&p, ctx.printer.verbose()).as_bytes())?;
    }
    Ok(if !p.fits() {
        Status::DoesNotFit
    } else if !a.exit_code {
        Status::Success
    } else if p.has_errors() {
        Status::Error
    } else if p.has_changes() {
        Status::Pending
    } else {
        Status::Success
    })
}

/// `apply`: converge, holding the store lock.
#[allow(
    clippy::needless_pass_by_value,
    reason = "every command takes its parsed arguments by value"
)]
pub fn apply(ctx: &Context, a: ApplyArgs) -> anyhow::Result<Status> {
    let m = ctx.manifest()?;
    let settings = &m.settings;
    let json = ctx.output == OutputFormat::Json;
    let _lock = ctx.lock_store("apply the manifest")?;
    let store = reconcile::Services::open_store(settings)?;

    let entries = m
        .models
        .iter()
        .rev()
        .map(|e| {
            let source = reconcile::apply::install_request(m, e).source;
            (crate::install::record_source(&source), e.name.clone())
        })
        .collect();
    let ui = Arc::new(ApplyUi::new(ctx.output, ctx.printer).with_entries(entries));
    let reporter = ui.clone();
    let (stop, cancel) = CancelSource::new();
    let opts = ApplyOptions {
        prune: a.prune || settings.prune,
        adopt: a.adopt,
        only: a.only.clone(),
        locked: a.locked,
        preload: a.preload,
        max_parallel: settings.max_parallel_downloads,
        staging_bytes: 0,
        refresh: a.refresh,
        cancel: cancel.clone(),
    };
    let result = ctx.runtime()?.block_on(async {
        let services =
            reconcile::Services::open(settings, store, HubEnv::from_process(), reporter.clone())?;
        stop_on_signals(ui.clone(), stop).context("listening for Ctrl-C")?;
        // The load service is only built when something will be preloaded.
        let preloader = if opts.preload {
            Some(crate::load::ServicePreloader::new(
                crate::load::service_for(&settings.models_dir, &settings.cache, reporter.clone())?,
            ))
        } else {
            None
        };
        let cx = services.context(
            reporter.clone(),
            preloader
                .as_ref()
                .map(|p| p as &dyn reconcile::apply::Preloader),
        );
        anyhow::Ok(
            services
                .unless_cancelled(reconcile::apply(m, &cx, &opts), &cancel)
                .await,
        )
    })?;
    ui.clear();
    let report = result?;
    if cancel.is_cancelled() {
        print_interrupted(ctx, json, &report)?;
        return Ok(Status::Interrupted);
    }
    if !json && ctx.printer.talks() {
        let failed: Vec<_> = report.failures().collect();
        let mut out = std::io::stdout().lock();
        if failed.is_empty() {
            if report.changed() == 0 {
                writeln!(
                    out,
                    "No changes: {} model(s) in sync.",
                    report.plan.totals.unchanged
                )?;
            } else {
                writeln!(
                    out,
                    "Apply complete: {} change(s), {} model(s) were already in sync.",
                    report.changed(),
                    report.plan.totals.unchanged
                )?;
            }
            if report.plan.totals.orphaned > 0 {
                writeln!(
                    out,
                    "{} orphaned record(s) kept (apply --prune deletes them).",
                    report.plan.totals.orphaned
                )?;
            }
        } else {
            writeln!(
                out,
                "Apply incomplete: {} failed, {} change(s) done.",
                failed.len(),
                report.changed()
            )?;
            // Each failure's reason was printed once, when it happened ("✗ name: … failed:
            // reason"); the summary only names them.
            for f in &failed {
                writeln!(out, "  ✗ {} ({})", f.name, action_name(f.action))?;
            }
        }
    }
    Ok(if !report.did_not_fit.is_empty() {
        if !json && ctx.printer.talks() {
            eprintln!(
                "error: not enough free disk for {}; the other entries were applied",
                report
                    .did_not_fit
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Status::DoesNotFit
    } else if report.converged() {
        Status::Success
    } else {
        Status::Error
    })
}

/// Ctrl-C (SIGINT) or SIGTERM: the first stops the run as watch's shutdown does (running
/// downloads stop with their partial files kept, nothing new starts, what finished is
/// recorded and locked); a second quits at once (the partial files stay too).
fn stop_on_signals(ui: Arc<ApplyUi>, stop: CancelSource) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            ui.interrupt();
            stop.cancel();
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            ui.clear();
            eprintln!("interrupted again: quitting now; partial downloads are kept");
            std::process::exit(130);
        });
    }
    #[cfg(not(unix))]
    {
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                ui.interrupt();
                stop.cancel();
            }
        });
    }
    Ok(())
}

/// The line an interrupted apply ends with: what finished, what was interrupted (and what
/// failed on its own). On stdout as the other summaries; on stderr with `-o json` or `-q`.
fn print_interrupted(
    ctx: &Context,
    json: bool,
    report: &reconcile::ApplyReport,
) -> anyhow::Result<()> {
    let names = |f: &dyn Fn(&reconcile::apply::ActionResult) -> bool| -> Vec<String> {
        report
            .results
            .iter()
            .filter(|r| f(r))
            .map(|r| r.name.clone())
            .collect()
    };
    let finished = names(&|r| r.ok() && r.action.is_change());
    let interrupted = names(&|r| r.interrupted);
    let list = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!(" ({})", v.join(", "))
        }
    };
    let line = format!(
        "Interrupted: {} finished{}, {} interrupted{}; partial downloads are kept and the next `modelsync apply` resumes them.",
        finished.len(),
        list(&finished),
        interrupted.len(),
        list(&interrupted)
    );
    let failed: Vec<String> = report
        .failures()
        .filter(|f| !f.interrupted)
        .map(|f| {
            format!(
                "  ✗ {} ({}): {}",
                f.name,
                action_name(f.action),
                f.error
                    .as_ref()
                    .map(|e| format!("{e:#}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if json || !ctx.printer.talks() {
        eprintln!("{line}");
        for f in &failed {
            eprintln!("{f}");
        }
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        for f in &failed {
            writeln!(out, "{f}")?;
        }
    }
    Ok(())
}

/// `status`: drift between manifest, store and disk.
#[allow(
    clippy::needless_pass_by_value,
    reason = "every command takes its parsed arguments by value"
)]
pub fn status(ctx: &Context, a: StatusArgs) -> anyhow::Result<Status> {
    let m = ctx.manifest()?;
    let (_store, inv) = read_inventory(ctx)?;
    let lock = LockFile::read(&m.lock_path())?;
    let mut commits = BTreeMap::new();
    if a.refresh {
        let env = HubEnv::from_process();
        let client = remote::lookup_client(&m.settings, &env)?;
        let entries: Vec<&ModelEntry> = m.models.iter().collect();
        let (c, w) = ctx
            .runtime()?
            .block_on(remote::upstream_commits(&client, &env, &entries));
        warn(ctx, &w);
        commits = c;
    }
    let r = statusmod::status(m, &inv, lock.as_ref(), commits, &m.settings.database_path())?;
    if ctx.output == OutputFormat::Json {
        print_json(&serde_json::to_value(&r)?)?;
    } else {
        let mut out = std::io::stdout().lock();
        for d in &r.drift {
            writeln!(
                out,
                "{} {}: {} — {}",
                d.kind().symbol(),
                d.name,
                action_name(d.kind()),
                d.reason
            )?;
            for f in d.files().iter().filter(|f| !f.is_empty()) {
                writeln!(out, "    {f}")?;
            }
        }
        for p in &r.missing_paths {
            if p.entry.is_none() {
                writeln!(
                    out,
                    "! {} ({}, unmanaged): path {} is gone",
                    p.name,
                    p.key,
                    p.path.display()
                )?;
            }
        }
        for o in &r.orphan_paths {
            writeln!(
                out,
                "? {}{}: in {} but no record owns it ({})",
                o.path.display(),
                if o.is_dir { "/" } else { "" },
                r.models_dir.display(),
                HumanBytes(o.bytes)
            )?;
        }
        if !r.unmanaged.is_empty() && (ctx.printer.verbose() || r.drifted) {
            writeln!(
                out,
                "Unmanaged records (never touched): {}",
                r.unmanaged.len()
            )?;
        }
        write!(
            out,
            "{}",
            crate::reconcile::render_unidentified(&r.unidentified)
        )?;
        if r.drifted {
            writeln!(
                out,
                "Drift: {} entr{} differ{}, {} orphan path(s); {} in sync. `modelsync diff` shows the plan, `modelsync gc` lists what it would remove.",
                r.drift.len(),
                if r.drift.len() == 1 { "y" } else { "ies" },
                if r.drift.len() == 1 { "s" } else { "" },
                r.orphan_paths.len(),
                r.in_sync
            )?;
        } else {
            writeln!(out, "In sync: {} model(s).", r.in_sync)?;
        }
    }
    Ok(if r.drifted {
        Status::Pending
    } else {
        Status::Success
    })
}

/// `verify`: re-hash content against records and the lock.
#[allow(
    clippy::needless_pass_by_value,
    reason = "every command takes its parsed arguments by value"
)]
pub fn verify(ctx: &Context, a: VerifyArgs) -> anyhow::Result<Status> {
    let lock = match ctx.manifest_if_present()? {
        Some(m) => LockFile::read(&m.lock_path())?,
        None => None,
    };
    let (models_dir, db) = ctx.store_paths()?;
    let Some(store) = ctx.read_store()? else {
        anyhow::bail!("no record store at {}", db.display());
    };
    let verdicts = verifymod::verify(store.as_ref(), &models_dir, lock.as_ref(), &a.names)?;
    let bad = verdicts.iter().filter(|v| !v.ok()).count();
    if ctx.output == OutputFormat::Json {
        print_json(&serde_json::json!({"models": verdicts, "ok": bad == 0}))?;
    } else {
        let mut out = std::io::stdout().lock();
        for v in &verdicts {
            if v.ok() {
                if ctx.printer.talks() {
                    writeln!(
                        out,
                        "ok  {} ({}): {} file(s) checked",
                        v.name, v.key, v.files_checked
                    )?;
                }
            } else {
                writeln!(out, "BAD {} ({}):", v.name, v.key)?;
                for p in &v.problems {
                    writeln!(out, "    {p}")?;
                }
            }
        }
        if ctx.printer.talks() {
            writeln!(
                out,
                "{} model(s) verified, {bad} with problems.",
                verdicts.len()
            )?;
        }
    }
    Ok(if bad == 0 {
        Status::Success
    } else {
        Status::Error
    })
}

/// `gc`: list (dry run) or remove stale partials, the download cache and orphan files.
#[allow(
    clippy::needless_pass_by_value,
    reason = "every command takes its parsed arguments by value"
)]
pub fn gc(ctx: &Context, a: GcArgs) -> anyhow::Result<Status> {
    let manifest = ctx.manifest_if_present()?;
    let (models_dir, db) = ctx.store_paths()?;
    let _lock = if a.yes {
        Some(ctx.lock_store("collect garbage")?)
    } else {
        None
    };
    let inv = if db.exists() {
        let store = store::open(&db)?;
        let inv = reconcile::observe(store.as_ref(), &models_dir)?;
        if inv.volume_suspect() {
            anyhow::bail!(
                "models folder {} is missing or empty while the store has records in it: is the volume mounted? gc does nothing in that state",
                models_dir.display()
            );
        }
        inv
    } else {
        Inventory::empty(&models_dir)
    };
    let mut keep = gcmod::Keep::default().store(&db);
    if manifest.is_some() {
        keep = keep.manifest(&ctx.manifest_path);
        // A lock kept elsewhere (settings.lock_file, maybe inside models_dir) is no orphan.
        if let Some(l) = ctx.settings()?.and_then(|s| s.lock_file.as_ref()) {
            keep = keep.file(l);
        }
    }
    if let Some(l) = &ctx.overrides.lock_file {
        keep = keep.file(l);
    }
    let min_age = crate::units::parse_duration(&a.min_age)
        .with_context(|| format!("--min-age {}", a.min_age))?;
    let (items, spared) = gcmod::collect(&inv, &keep, min_age, std::time::SystemTime::now())?;
    let total: u64 = items.iter().map(|g| g.bytes).sum();
    let failed = if a.yes {
        gcmod::remove(&items)
    } else {
        Vec::new()
    };
    if ctx.output == OutputFormat::Json {
        let failed: Vec<_> = failed
            .iter()
            .map(|(p, e)| serde_json::json!({"path": p, "error": e.to_string()}))
            .collect();
        print_json(&serde_json::json!({
            "dry_run": !a.yes, "items": items, "bytes": total, "failed": failed,
            "spared_partials": spared
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        for g in &items {
            writeln!(
                out,
                "{}  {:<7}  {}",
                pad_bytes(g.bytes),
                serde_json::to_value(g.kind)?.as_str().unwrap_or_default(),
                rel(&g.path, &models_dir).display()
            )?;
        }
        for (p, e) in &failed {
            writeln!(out, "could not remove {}: {e}", p.display())?;
        }
        if spared > 0 {
            writeln!(
                out,
                "Kept {spared} partial download(s) changed within --min-age {}.",
                a.min_age
            )?;
        }
        if a.yes {
            writeln!(
                out,
                "Removed {} item(s), {} freed.",
                items.len() - failed.len(),
                HumanBytes(total)
            )?;
        } else if items.is_empty() {
            writeln!(out, "Nothing to collect.")?;
        } else {
            writeln!(
                out,
                "Would remove {} item(s), {}. Run `modelsync gc --yes` to remove them.",
                items.len(),
                HumanBytes(total)
            )?;
        }
    }
    Ok(if failed.is_empty() {
        Status::Success
    } else {
        Status::Error
    })
}

fn pad_bytes(n: u64) -> String {
    format!("{:>10}", HumanBytes(n).to_string())
}

fn rel<'a>(p: &'a Path, root: &Path) -> std::borrow::Cow<'a, Path> {
    p.strip_prefix(root)
        .map_or(std::borrow::Cow::Borrowed(p), |r| {
            std::borrow::Cow::Owned(PathBuf::from(r))
        })
}
