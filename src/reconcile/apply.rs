//! Executing a plan: `modelsync apply`.
//!
//! [`apply`] observes, plans, checks (`--locked`, free disk) and runs every action through the
//! install service, several at once, then rewrites `models.lock`. One failing entry does not
//! stop the others; the [`ApplyReport`] says which converged. The caller holds the store lock
//! ([`crate::store::lock::StoreLock`]) for the whole run and checks the volume with
//! [`check_volume`] before opening the [`ModelManager`] (whose start-up recovery must not run
//! against an unmounted models folder).
//!
//! How each action is carried out:
//!
//! | action | does |
//! |---|---|
//! | install | install service `install` with the entry's source, dest, hash, globs, token, and `Managed {entry, spec_hash}` |
//! | replace | install anew, then delete the old record and its files (with a `dest`, which the new install needs free, the old one goes first) |
//! | repair, upgrade | in place ([`crate::install::InPlace`]): same key, path and creation time; only the missing, changed or (upgrade) different files are fetched, verified, and moved over the old ones; then the record-level fields as for update. A repair fetches the installed commit (the lock's), an upgrade the commit `--refresh` saw upstream |
//! | update, adopt | `update_model` with the entry's record-level fields and `managed`; tags are the manifest's plus the Hub's |
//! | delete (prune) | install service `delete` (record + files inside models_dir) |
//! | superseded records | another record of a present entry (an interrupted replace): deleted once the entry converged |
//!
//! A converged state costs no Hub request and no hashing: observe compares fingerprints only,
//! and sizes are only asked for actions that fetch. `--refresh` (and watch's
//! `settings.refresh_interval`) asks the Hub where each unpinned revision points, so an entry
//! that tracks a branch is upgraded when it moved; a pinned commit never moves, and `--locked`
//! never looks upstream: it fetches exactly the lock's commits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt as _;
use serde::Serialize;

use super::held_lock::HeldLock;
use super::inventory::{DirState, InventoryError, observe, observe_scope};
use super::plan::{ActionKind, Plan, PlanError, PlanOptions, PlannedAction, Step, Totals, plan};
use super::remote::{self, RemoteWarning};
use crate::config::{AnyModelConfig, Managed};
use crate::events::Reporter;
use crate::hub::{HubClient, HubEnv, LocalModelSource, ModelSource};
use crate::install::{InstallOptions, InstallOutcome, InstallRequest};
use crate::manager::ModelManager;
use crate::manifest::{
    EntryIndex, LockEntry, LockError, LockFile, LockedFile, Manifest, ModelEntry,
};
use crate::retry::{Class, Classify, Failure, FailureKind};
use crate::store::{ConfigChange, RecordStore, StoreError};
use crate::watch::CancelToken;

/// A reconciler event (`kind: "reconcile"` in the JSON Lines of `apply -o json`).
///
/// ```json
/// {"kind":"reconcile","event":{"event":"action_started","name":"sd15","action":"install","key":null}}
/// {"kind":"reconcile","event":{"event":"action_completed","name":"sd15","action":"install","key":"3f2a…","downloaded_bytes":2132856404}}
/// {"kind":"reconcile","event":{"event":"action_completed","name":"vae","action":"install","key":"9b1c…","downloaded_bytes":0,"adopted_bytes":334643238,"adopted_from":["the HF cache"]}}
/// {"kind":"reconcile","event":{"event":"action_failed","name":"gated","action":"install","error":"…"}}
/// {"kind":"reconcile","event":{"event":"finished","converged":false,"changed":1,"failed":1,"unchanged":3}}
/// ```
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ReconcileEvent {
    /// The plan about to be executed.
    Planned {
        /// Counts and bytes.
        totals: Totals,
        /// Free bytes on models_dir's file system, when measured.
        free_bytes: Option<u64>,
    },
    /// Something the user should know that did not stop the entry: a Hub look-up failed (the
    /// size or upstream commit stays unknown), a model no rule identifies was recorded as
    /// type `unknown`, a base was taken by a fallback rule.
    Warning {
        /// The entry.
        name: String,
        /// What happened, with the evidence and how to settle it.
        message: String,
    },
    /// An action starts.
    ActionStarted {
        /// Entry name.
        name: String,
        /// The action.
        action: ActionKind,
        /// The existing record involved.
        key: Option<String>,
    },
    /// An action finished; the entry converged.
    ActionCompleted {
        /// Entry name.
        name: String,
        /// The action.
        action: ActionKind,
        /// The record now (`None` after a delete).
        key: Option<String>,
        /// Bytes downloaded.
        downloaded_bytes: u64,
        /// Bytes not downloaded because they were on this machine already (hard-linked or
        /// copied from the store, the HF cache or `settings.adopt_from`, then checked).
        #[serde(skip_serializing_if = "is_zero")]
        adopted_bytes: u64,
        /// Where the adopted bytes came from (`the HF cache`, a folder, `the store (model …)`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        adopted_from: Vec<String>,
    },
    /// An action failed; the entry did not converge.
    ActionFailed {
        /// Entry name.
        name: String,
        /// The action.
        action: ActionKind,
        /// Why (the failure's own message).
        error: String,
        /// Its causes' messages, outermost first.
        causes: Vec<String>,
        /// What kind of failure.
        error_kind: FailureKind,
    },
    /// `models.lock` was rewritten.
    LockWritten {
        /// The lock file.
        path: PathBuf,
        /// Entries dropped because their manifest entry is gone.
        dropped: Vec<String>,
    },
    /// `models.lock` could not be written (a read-only manifest folder). Reported once per
    /// lock path and process; the run goes on and the lock is kept in memory (see
    /// [`update_lock_file`]).
    LockNotWritten {
        /// The lock file.
        path: PathBuf,
        /// Why, with causes.
        error: String,
    },
    /// A preload entry was warmed into the load cache.
    Preloaded {
        /// Entry name.
        name: String,
        /// Record key.
        key: String,
        /// What the load service said.
        detail: String,
    },
    /// A preload entry was not warmed.
    PreloadSkipped {
        /// Entry name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The run is over.
    Finished {
        /// Every selected entry converged.
        converged: bool,
        /// Actions that changed something and succeeded.
        changed: usize,
        /// Actions that failed.
        failed: usize,
        /// Entries already in sync.
        unchanged: usize,
    },
}

/// Warms models into the load cache after apply (`apply --preload`).
///
/// LEAD: the load service (branch `load`) implements this; wire it in `cli::reconcile::apply`
/// where `preloader` is `None` today. Apply calls it once per converged entry with
/// `preload: true`, after every install is done.
pub trait Preloader: Send + Sync {
    /// Loads the model of `record` into the cache; returns a line for the user (bytes, device,
    /// time) or why not.
    fn preload(&self, entry: &str, record: &AnyModelConfig) -> Result<String, Failure>;

    /// [`preload`](Self::preload) with the whole manifest entry (its `precision`).
    fn preload_entry(
        &self,
        entry: &crate::manifest::ModelEntry,
        record: &AnyModelConfig,
    ) -> Result<String, Failure> {
        self.preload(&entry.name, record)
    }

    /// Whether the whole preload set fits the cache budgets, checked before anything is
    /// loaded so an oversized set is an error, not an out-of-memory crash.
    fn check_fits(&self, records: &[AnyModelConfig]) -> Result<(), Failure> {
        let _ = records;
        Ok(())
    }
}

/// Errors that stop apply before it changes anything.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Observing the store and disk failed.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// No plan (unmounted volume, unknown `--only` names).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The lock file cannot be read or written.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// `--locked` and something the lock does not pin.
    #[error("--locked: {}\nrun `modelsync apply` without --locked to update models.lock", .0.join("\n"))]
    NotLocked(Vec<String>),
}

impl Classify for ApplyError {
    fn classify(&self) -> Class {
        match self {
            Self::Inventory(InventoryError::Store(e)) => e.classify(),
            Self::Inventory(_) => Class::of(FailureKind::Other),
            Self::Plan(_) => Class::of(FailureKind::Invalid),
            Self::Lock(_) | Self::NotLocked(_) => Class::of(FailureKind::Manifest),
        }
    }
}

/// What `apply` is asked to do.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Delete managed records whose entries left (`--prune` or `settings.prune`).
    pub prune: bool,
    /// Take over unmanaged records with the same source (`--adopt`).
    pub adopt: bool,
    /// Only these entries (`--only`).
    pub only: Vec<String>,
    /// `--locked`: resolve nothing the lock does not pin; verify installs against it.
    pub locked: bool,
    /// `--preload`: warm `preload: true` entries afterwards.
    pub preload: bool,
    /// Actions at once (settings.max_parallel_downloads).
    pub max_parallel: usize,
    /// Headroom kept free besides the bytes to fetch.
    pub staging_bytes: u64,
    /// `--refresh`: ask the Hub where unpinned revisions point now, and upgrade the entries
    /// whose revision moved. Ignored with `locked` (which never looks upstream).
    pub refresh: bool,
    /// Once it fires (Ctrl-C), actions not yet started are not started and nothing is
    /// preloaded; the caller cancels the running install jobs
    /// ([`Services::unless_cancelled`](super::Services::unless_cancelled)), whose partial
    /// downloads are kept for the next run.
    pub cancel: CancelToken,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            prune: false,
            adopt: false,
            only: Vec::new(),
            locked: false,
            preload: false,
            max_parallel: crate::manifest::DEFAULT_PARALLEL_DOWNLOADS,
            staging_bytes: 0,
            refresh: false,
            cancel: CancelToken::never(),
        }
    }
}

/// What happened to one action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    /// Entry name.
    pub name: String,
    /// The planned action.
    pub action: ActionKind,
    /// The record afterwards (`None`: deleted, or failed before one existed).
    pub key: Option<String>,
    /// Why it failed; `None`: converged. Serialised in place (`error`, `causes`, `error_kind`,
    /// …).
    #[serde(flatten)]
    pub error: Option<Failure>,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// Bytes adopted instead of downloaded (see [`ReconcileEvent::ActionCompleted`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub adopted_bytes: u64,
    /// It failed because the run was cancelled ([`ApplyOptions::cancel`]): stopped half-way
    /// (partial downloads kept) or never started.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    #[serde(skip)]
    lock: Option<LockEntry>,
}

impl ActionResult {
    /// Whether the action succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// The plan that was executed.
    pub plan: Plan,
    /// One result per plan action, in plan order.
    pub results: Vec<ActionResult>,
    /// Hub look-ups that failed (values left unknown).
    pub warnings: Vec<RemoteWarning>,
    /// Whether `models.lock` was rewritten.
    pub lock_written: bool,
    /// Lock entries dropped (their manifest entry is gone).
    pub lock_dropped: Vec<String>,
    /// Why `models.lock` could not be written, when it could not (converging does not
    /// depend on it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_error: Option<String>,
    /// Preload entries: name → `Ok(detail)` or `Err(why)`.
    pub preload: BTreeMap<String, Result<String, Failure>>,
    /// Entries refused because their fetch did not fit on disk (CLI exit 3); the others ran.
    pub did_not_fit: Vec<String>,
}

impl ApplyReport {
    /// Whether every action succeeded (and no entry is in error).
    pub fn converged(&self) -> bool {
        self.results.iter().all(ActionResult::ok) && self.preload.values().all(Result::is_ok)
    }

    /// The failed actions.
    pub fn failures(&self) -> impl Iterator<Item = &ActionResult> {
        self.results.iter().filter(|r| !r.ok())
    }

    /// Actions that changed something and succeeded.
    pub fn changed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.ok() && r.action.is_change())
            .count()
    }
}

/// Refuses to go on when models_dir is missing or empty while the store has records in it (an
/// unmounted volume). Call before [`ModelManager::open`]: its recovery must not run there.
///
/// Cheap: a models_dir with something in it passes without a look at the store; otherwise
/// only the records' paths are read. The full observation is [`apply`]'s, once.
pub fn check_volume(store: &dyn RecordStore, models_dir: &Path) -> Result<(), ApplyError> {
    let state = super::inventory::dir_state(models_dir, store.location())?;
    if state == DirState::Present {
        return Ok(());
    }
    let records = store
        .all_models()
        .map_err(InventoryError::Store)?
        .iter()
        .filter(|c| c.resolved_path(models_dir).starts_with(models_dir))
        .count();
    if records > 0 {
        return Err(PlanError::VolumeNotMounted {
            models_dir: models_dir.to_path_buf(),
            missing: state == DirState::Missing,
            records,
        }
        .into());
    }
    Ok(())
}

/// Everything apply needs besides the manifest.
pub struct ApplyContext<'a> {
    /// The services (store, install).
    pub manager: &'a ModelManager,
    /// The Hub client for look-ups (sizes, `--locked` commits).
    pub hub: &'a HubClient,
    /// Token environment.
    pub hub_env: &'a HubEnv,
    /// Where events go.
    pub reporter: Arc<dyn Reporter<ReconcileEvent>>,
    /// The load service hook (`None`: preload entries are reported as skipped).
    pub preloader: Option<&'a dyn Preloader>,
    /// `models.lock` held in memory (watch mode): read and merged there, written by its
    /// owner once per batch. `None`: read from and written to the file by each run.
    pub held_lock: Option<&'a HeldLock>,
}

/// Observes, plans and converges. See the module docs.
pub async fn apply(
    manifest: &Manifest,
    cx: &ApplyContext<'_>,
    opts: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    // Hub metadata is fetched once for the whole run: the size look-ups and the installs
    // share it (when the services share a cache, as `Services::open` builds them).
    let _metadata = cx.hub.metadata_run();
    let store = cx.manager.store().clone();
    let models_dir = manifest.settings.models_dir.clone();
    // `--only` (and each of watch mode's per-entry converges) looks at its entries' records
    // alone: the others are neither planned nor listed.
    let inventory = if opts.only.is_empty() {
        observe(store.as_ref(), &models_dir)?
    } else {
        let sources: Vec<String> = manifest
            .models
            .iter()
            .filter(|e| opts.only.contains(&e.name))
            .map(ModelEntry::canonical_source)
            .collect();
        let names: Vec<&str> = opts.only.iter().map(String::as_str).collect();
        let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
        observe_scope(store.as_ref(), &models_dir, &names, &sources)?
    };
    let lock_path = manifest.lock_path();
    let lock_copy = match cx.held_lock {
        Some(held) if opts.only.is_empty() => held.snapshot()?,
        Some(held) => held.subset(&opts.only)?,
        None => Arc::new(current_lock(&lock_path)?),
    };
    let lock: &LockFile = &lock_copy;
    let free_bytes = crate::download::available_space(&models_dir).ok();
    let mut popts = PlanOptions {
        prune: opts.prune,
        adopt: opts.adopt,
        only: opts.only.clone(),
        lock: Some(lock),
        free_bytes,
        staging_bytes: opts.staging_bytes,
        ..PlanOptions::default()
    };
    let mut warnings = Vec::new();
    let mut unresolvable_kinds = BTreeMap::new();
    if opts.refresh && !opts.locked {
        let selected: Vec<&ModelEntry> = manifest
            .models
            .iter()
            .filter(|e| opts.only.is_empty() || opts.only.contains(&e.name))
            .collect();
        let (commits, w) = remote::upstream_commits(cx.hub, cx.hub_env, &selected).await;
        for w in w {
            if w.unresolvable {
                unresolvable_kinds.insert(w.name.clone(), w.kind);
                popts.unresolvable.insert(w.name, w.message);
            } else {
                warnings.push(w);
            }
        }
        popts.upstream_commits = commits;
    }
    // Every look-up of an action's entry below goes through this.
    let entries = manifest.index(&opts.only);
    let mut the_plan = plan(manifest, &inventory, &popts)?;
    if opts.locked {
        locked_preflight(&entries, &the_plan, lock)?;
    }
    let unknown: Vec<&ModelEntry> = the_plan
        .changes()
        .filter(|a| a.fetch_bytes.is_none())
        .filter_map(|a| entries.get(&a.name))
        .collect();
    if !unknown.is_empty() {
        let urls = remote::lookup_budget(cx.manager.download_queue().size_probe());
        let (sizes, w) = remote::entry_sizes(cx.hub, &urls, cx.hub_env, &unknown).await;
        // An entry that names nothing fails on its own (an error row); the others go on.
        for w in w {
            if w.unresolvable {
                unresolvable_kinds.insert(w.name.clone(), w.kind);
                popts.unresolvable.insert(w.name, w.message);
            } else {
                warnings.push(w);
            }
        }
        popts.remote_sizes = sizes;
        the_plan = plan(manifest, &inventory, &popts)?;
    }
    // What is on this machine already is not fetched, so the disk check does not count it:
    // as far as the lock and the fingerprints tell (no Hub request beyond the ones above; the
    // install finds the rest by the Hub's listing).
    let sources = cx.manager.install().app_config().adopt.clone();
    let found = remote::adoptable(
        &the_plan,
        manifest,
        &inventory,
        Some(lock),
        None,
        cx.hub_env,
        &sources,
        Some(store.as_ref()),
    )
    .await;
    if !found.is_empty() {
        popts.adoptable = found;
        the_plan = plan(manifest, &inventory, &popts)?;
    }
    for w in &warnings {
        report(
            cx,
            ReconcileEvent::Warning {
                name: w.name.clone(),
                message: w.message.clone(),
            },
        );
    }
    // Install what fits; only the entries that do not fit fail.
    let did_not_fit = the_plan.refuse_what_does_not_fit();
    report(
        cx,
        ReconcileEvent::Planned {
            totals: the_plan.totals.clone(),
            free_bytes,
        },
    );

    let locked_entries = opts.locked.then(|| lock.clone());
    let upstream = popts.upstream_commits.clone();
    let mut error_kinds = unresolvable_kinds.clone();
    for name in &did_not_fit {
        error_kinds.insert(name.clone(), FailureKind::DiskFull);
    }
    let mut results: Vec<(usize, ActionResult)> = {
        let locked_ref = locked_entries.as_ref();
        let (lock_ref, upstream_ref, kinds_ref, entries_ref) =
            (lock, &upstream, &error_kinds, &entries);
        // Collected before they become a stream, so that no closure is held across the await:
        // that keeps `apply`'s future `Send` for callers that spawn it (watch mode).
        let actions: Vec<_> = the_plan
            .actions
            .iter()
            .enumerate()
            // Superseded records wait for their entry (below).
            .filter(|(_, a)| !is_superseded(&entries, a))
            .map(|(i, a)| async move {
                if opts.cancel.is_cancelled() && a.kind().is_change() {
                    return (i, not_started(a));
                }
                let known = Known {
                    entries: entries_ref,
                    locked: locked_ref,
                    lock: lock_ref,
                    upstream: upstream_ref,
                    error_kinds: kinds_ref,
                };
                let mut r = run_action(manifest, a, cx, known).await;
                r.interrupted = !r.ok() && opts.cancel.is_cancelled();
                (i, r)
            })
            .collect();
        futures_util::stream::iter(actions)
            .buffer_unordered(opts.max_parallel.max(1))
            .collect()
            .await
    };
    // Records superseded by a converged entry go now (an interrupted replace).
    for (i, a) in the_plan.actions.iter().enumerate() {
        let Some(key) = a.step.leftover_key().filter(|_| is_superseded(&entries, a)) else {
            continue;
        };
        let entry_ok = results
            .iter()
            .any(|(_, r)| r.name == a.name && r.ok() && r.action != ActionKind::Orphaned);
        let r = if entry_ok {
            start(cx, a);
            let res = delete(cx, key).map(|()| None);
            finish(cx, a, res.map(|k| (k, Moved::default(), None)))
        } else {
            skipped(a)
        };
        results.push((i, r));
    }
    results.sort_by_key(|(i, _)| *i);
    let mut results: Vec<ActionResult> = results.into_iter().map(|(_, r)| r).collect();
    // Error rows of the plan carry text; their kind is known here.
    for r in &mut results {
        if let Some(f) = &mut r.error
            && r.action == ActionKind::Error
        {
            if did_not_fit.contains(&r.name) {
                f.kind = FailureKind::DiskFull;
            } else if let Some(k) = unresolvable_kinds.get(&r.name) {
                f.kind = *k;
            }
        }
    }

    // models.lock: what each converged entry resolved to. Merged into the lock as it is now,
    // not as read at the start: another apply of this process (watch mode runs one per entry,
    // concurrently) may have changed it meanwhile.
    drop(lock_copy);
    let edit = |lock: &mut LockFile| {
        for r in &results {
            let Some(entry) = entries.get(&r.name) else {
                continue;
            };
            if !r.ok() || is_leftover(r.action) {
                continue;
            }
            if let Some(l) = &r.lock {
                lock.entries.insert(r.name.clone(), l.clone());
            } else if let Some(key) = &r.key
                && let Ok(l) = lock_from_store(store.as_ref(), entry, key)
            {
                heal_lock_entry(lock, entry, l);
            }
        }
        if cx.held_lock.is_some() && !opts.only.is_empty() {
            // A per-entry apply of watch mode touches its entries alone: the sweep drops the
            // departed ones, once per batch.
            Vec::new()
        } else {
            lock.retain_manifest(manifest)
        }
    };
    let (update, lock_dropped) = match cx.held_lock {
        Some(held) => (
            LockUpdate::Unchanged,
            held.edit(results.iter().map(|r| r.name.as_str()), edit)?,
        ),
        None => update_lock_file(&lock_path, edit)?,
    };
    let lock_written = update.written();
    let lock_error = report_lock_update(cx, update, &lock_path, &lock_dropped);

    let mut preload = BTreeMap::new();
    if opts.preload && !opts.cancel.is_cancelled() {
        let wanted: Vec<(&ModelEntry, &String)> = results
            .iter()
            .filter(|r| r.ok())
            .filter_map(|r| {
                let entry = entries.get(&r.name).filter(|e| e.preload)?;
                Some((entry, r.key.as_ref()?))
            })
            .collect();
        let records: Vec<AnyModelConfig> = wanted
            .iter()
            .filter_map(|(_, key)| store.get_model(key).ok())
            .collect();
        let fits = match cx.preloader {
            Some(p) => p.check_fits(&records),
            None => Ok(()),
        };
        for (entry, key) in wanted {
            let outcome = match (cx.preloader, store.get_model(key), &fits) {
                (None, _, _) => Err(Failure::new(
                    FailureKind::Other,
                    "no load service is available to preload",
                )),
                (Some(_), _, Err(e)) => Err(e.clone()),
                (Some(_), Err(e), _) => Err(Failure::from_error(&e)),
                (Some(p), Ok(rec), Ok(())) => p.preload_entry(entry, &rec),
            };
            report(
                cx,
                match &outcome {
                    Ok(detail) => ReconcileEvent::Preloaded {
                        name: entry.name.clone(),
                        key: key.clone(),
                        detail: detail.clone(),
                    },
                    Err(why) => ReconcileEvent::PreloadSkipped {
                        name: entry.name.clone(),
                        reason: why.message.clone(),
                    },
                },
            );
            preload.insert(entry.name.clone(), outcome);
        }
    }

    if let Err(message) = write_comfyui_paths(manifest) {
        report(
            cx,
            ReconcileEvent::Warning {
                name: crate::install::layout::COMFYUI_PATHS_FILE.to_owned(),
                message,
            },
        );
    }

    let report_ = ApplyReport {
        plan: the_plan,
        results,
        warnings,
        lock_written,
        lock_dropped,
        lock_error,
        preload,
        did_not_fit,
    };
    report(
        cx,
        ReconcileEvent::Finished {
            converged: report_.converged(),
            changed: report_.changed(),
            failed: report_.failures().count(),
            unchanged: report_.plan.totals.unchanged,
        },
    );
    Ok(report_)
}

/// When an entry uses the comfyui layout, writes `models_dir/extra_model_paths.yaml` (see
/// [`crate::install::layout::comfyui_extra_model_paths`]), only when its text changes.
fn write_comfyui_paths(manifest: &Manifest) -> Result<(), String> {
    if !manifest
        .models
        .iter()
        .any(|e| e.layout == crate::install::Layout::ComfyUi)
    {
        return Ok(());
    }
    let dir = &manifest.settings.models_dir;
    let path = dir.join(crate::install::layout::COMFYUI_PATHS_FILE);
    let text = crate::install::layout::comfyui_extra_model_paths(dir);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, &text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("could not write {}: {e}", path.display()))
}

/// Deletes the managed records whose entries left `manifest` (the `delete` actions of a full
/// plan with prune), and drops their entries from `models.lock`; installs nothing. Watch mode
/// runs it as its sweep while per-entry applies (`only: [name]`) converge the entries: a full
/// apply would fetch every entry a second time, concurrently with them.
///
/// Records of entries still in the manifest (another record of a present entry) are left to
/// that entry's apply, which deletes them once the entry converged. Returns one result per
/// deleted record; failures are in the results, not an `Err`.
pub fn prune_departed(
    manifest: &Manifest,
    cx: &ApplyContext<'_>,
) -> Result<Vec<ActionResult>, ApplyError> {
    let store = cx.manager.store().clone();
    let inventory = observe(store.as_ref(), &manifest.settings.models_dir)?;
    let popts = PlanOptions {
        prune: true,
        ..PlanOptions::default()
    };
    let the_plan = plan(manifest, &inventory, &popts)?;
    let entries = manifest.index(&[]);
    let mut results = Vec::new();
    for a in &the_plan.actions {
        let Step::Delete { key } = &a.step else {
            continue;
        };
        if entries.get(&a.name).is_some() {
            continue;
        }
        start(cx, a);
        let r = delete(cx, key).map(|()| (None, Moved::default(), None));
        results.push(finish(cx, a, r));
    }
    let lock_path = manifest.lock_path();
    let retain = |lock: &mut LockFile| lock.retain_manifest(manifest);
    let (update, dropped) = match cx.held_lock {
        Some(held) => (LockUpdate::Unchanged, held.edit([], retain)?),
        None => update_lock_file(&lock_path, retain)?,
    };
    report_lock_update(cx, update, &lock_path, &dropped);
    Ok(results)
}

/// One look at every entry for watch mode's resync ([`crate::watch::Converger::survey`]): one
/// observe, one plan of the whole manifest (no Hub request: sizes and upstream commits are not
/// needed to tell that nothing is to be done), the lock looked at once. Returns the entries
/// whose plan is `unchanged` with nothing else to do for them (no older record of theirs to
/// delete); their lock entries are healed from the store in memory, as [`apply`] heals those
/// of unchanged entries (a missing entry, or one without its files, record hash or commit).
/// Reports the plan as [`ReconcileEvent::Planned`].
pub fn survey(
    manifest: &Manifest,
    cx: &ApplyContext<'_>,
    held: &HeldLock,
) -> Result<Vec<String>, ApplyError> {
    let store = cx.manager.store().clone();
    let inventory = observe(store.as_ref(), &manifest.settings.models_dir)?;
    let lock = held.reload()?;
    let popts = PlanOptions {
        lock: Some(&lock),
        ..PlanOptions::default()
    };
    let the_plan = plan(manifest, &inventory, &popts)?;
    report(
        cx,
        ReconcileEvent::Planned {
            totals: the_plan.totals.clone(),
            free_bytes: None,
        },
    );
    let busy: std::collections::HashSet<&str> = the_plan
        .actions
        .iter()
        .filter(|a| a.kind() != ActionKind::Unchanged)
        .map(|a| a.name.as_str())
        .collect();
    let by_name: BTreeMap<&str, &ModelEntry> = manifest
        .models
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let mut converged = Vec::new();
    let mut heal = Vec::new();
    for a in &the_plan.actions {
        if a.kind() != ActionKind::Unchanged || busy.contains(a.name.as_str()) {
            continue;
        }
        let Some(entry) = by_name.get(a.name.as_str()) else {
            continue;
        };
        converged.push(a.name.clone());
        if let Some(key) = a.key()
            && !lock_entry_complete(&lock, entry)
            && let Ok(l) = lock_from_store(store.as_ref(), entry, key)
        {
            heal.push((*entry, l));
        }
    }
    drop(lock);
    let names: Vec<&str> = heal.iter().map(|(e, _)| e.name.as_str()).collect();
    held.edit(names, |lock| {
        for (entry, l) in heal {
            heal_lock_entry(lock, entry, l);
        }
    })?;
    Ok(converged)
}

/// Whether `entry`'s lock entry has everything [`heal_lock_entry`] would add from the store
/// (file hashes aside: those are healed by the entry's next apply).
fn lock_entry_complete(lock: &LockFile, entry: &ModelEntry) -> bool {
    lock.entry_for(entry).is_some_and(|l| {
        l.record_hash.is_some()
            && !l.files.is_empty()
            && (l.resolved_commit.is_some() || !matches!(entry.source, ModelSource::Hf(_)))
    })
}

/// Serialises the read-modify-write of lock files within this process, and remembers each lock
/// as this process last read or wrote it, for applies without a [`HeldLock`] (watch mode holds
/// its own). Other processes are kept out by the store lock;
/// applies of one process (watch mode) run concurrently, and each must merge into what the
/// others wrote rather than overwrite it with a stale copy. One mutex for every lock path: the
/// section is short and never awaits.
///
/// The memory copy is used while the file is as this process left it (same [`Stamp`]), so an
/// apply parses `models.lock` once, at the start; a file changed from outside (an edit, a
/// `git checkout`) is read again.
///
/// A lock path that cannot be written (a manifest on a read-only ConfigMap mount) is kept in
/// memory from then on: later applies of this process (watch mode) read and merge the memory
/// copy, and each write is tried again (a remount may have made the place writable). Nothing
/// about converging depends on the lock; only `apply --locked` and `verify` read it.
static LOCK_FILE_UPDATE: std::sync::Mutex<BTreeMap<PathBuf, Remembered>> =
    std::sync::Mutex::new(BTreeMap::new());

/// A lock as this process last knew it.
struct Remembered {
    lock: LockFile,
    stamp: Stamp,
}

/// What the lock file looked like when this process last read or wrote it. Renames change
/// the inode (every write of ours is one), edits in place the size or the mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// There was no file.
    Absent,
    /// The file's identity and metadata.
    File {
        dev: u64,
        ino: u64,
        len: u64,
        mtime: Option<std::time::SystemTime>,
    },
    /// The memory copy is newer than the file: it could not be written.
    Unwritten,
}

impl Stamp {
    /// The file now; `None` when that cannot be told (then it is read again).
    fn of(path: &Path) -> Option<Self> {
        match std::fs::metadata(path) {
            Ok(md) => {
                #[cfg(unix)]
                let (dev, ino) = {
                    use std::os::unix::fs::MetadataExt;
                    (md.dev(), md.ino())
                };
                #[cfg(not(unix))]
                let (dev, ino) = (0, 0);
                Some(Self::File {
                    dev,
                    ino,
                    len: md.len(),
                    mtime: md.modified().ok(),
                })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Some(Self::Absent)
            }
            Err(_) => None,
        }
    }
}

/// What [`update_lock_file`] did.
#[derive(Debug)]
enum LockUpdate {
    /// Nothing changed.
    Unchanged,
    /// The lock file was rewritten.
    Written,
    /// It could not be written; `first` when this is the first failure for the path in this
    /// process (the one that is reported).
    NotWritten { error: LockError, first: bool },
}

impl LockUpdate {
    fn written(&self) -> bool {
        matches!(self, Self::Written)
    }
}

fn lock_memory() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, Remembered>> {
    LOCK_FILE_UPDATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The lock at `path` as this process knows it (empty if none): the memory copy while the
/// file is as this process left it (or could not write it), else the file, read and
/// remembered. Returns whether the copy is one that could not be written.
fn known_lock(
    memory: &mut BTreeMap<PathBuf, Remembered>,
    path: &Path,
) -> Result<(LockFile, bool), LockError> {
    let now = Stamp::of(path);
    if let Some(r) = memory.get(path)
        && (r.stamp == Stamp::Unwritten || Some(r.stamp) == now)
    {
        return Ok((r.lock.clone(), r.stamp == Stamp::Unwritten));
    }
    // Stamped before the read: a change in between is seen as a change next time.
    let lock = LockFile::read(path)?.unwrap_or_default();
    match now {
        Some(stamp) => {
            memory.insert(
                path.to_path_buf(),
                Remembered {
                    lock: lock.clone(),
                    stamp,
                },
            );
        }
        None => {
            memory.remove(path);
        }
    }
    Ok((lock, false))
}

/// The lock as this process knows it (see [`known_lock`]).
fn current_lock(path: &Path) -> Result<LockFile, LockError> {
    known_lock(&mut lock_memory(), path).map(|(l, _)| l)
}

/// Takes the lock at `path` as this process knows it (empty if none), lets `edit` change it,
/// and writes it back when it changed (compared as data, files in path order). A read that
/// fails is an error (a lock that does not parse must be fixed); a write that fails is not:
/// the lock is kept in memory (see [`LOCK_FILE_UPDATE`]).
fn update_lock_file<T>(
    path: &Path,
    edit: impl FnOnce(&mut LockFile) -> T,
) -> Result<(LockUpdate, T), LockError> {
    let mut memory = lock_memory();
    let (mut lock, was_unwritable) = known_lock(&mut memory, path)?;
    lock.normalize();
    let before = lock.clone();
    let out = edit(&mut lock);
    lock.normalize();
    let changed = lock != before;
    if !changed && !was_unwritable {
        return Ok((LockUpdate::Unchanged, out));
    }
    match lock.write(path) {
        Ok(()) => {
            match Stamp::of(path) {
                Some(stamp) => {
                    memory.insert(path.to_path_buf(), Remembered { lock, stamp });
                }
                None => {
                    memory.remove(path);
                }
            }
            Ok((LockUpdate::Written, out))
        }
        Err(error @ LockError::Io { .. }) => {
            memory.insert(
                path.to_path_buf(),
                Remembered {
                    lock,
                    stamp: Stamp::Unwritten,
                },
            );
            if was_unwritable && !changed {
                return Ok((LockUpdate::Unchanged, out));
            }
            Ok((
                LockUpdate::NotWritten {
                    error,
                    first: !was_unwritable,
                },
                out,
            ))
        }
        Err(e) => Err(e),
    }
}

/// Reports what [`update_lock_file`] did; returns the write error, if any.
fn report_lock_update(
    cx: &ApplyContext<'_>,
    update: LockUpdate,
    path: &Path,
    dropped: &[String],
) -> Option<String> {
    match update {
        LockUpdate::Unchanged => None,
        LockUpdate::Written => {
            report(
                cx,
                ReconcileEvent::LockWritten {
                    path: path.to_path_buf(),
                    dropped: dropped.to_vec(),
                },
            );
            None
        }
        LockUpdate::NotWritten { error, first } => {
            let why = match &error {
                LockError::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            if first {
                report(
                    cx,
                    ReconcileEvent::LockNotWritten {
                        path: path.to_path_buf(),
                        error: why.clone(),
                    },
                );
            }
            Some(why)
        }
    }
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "callers build the event in the call"
)]
fn report(cx: &ApplyContext<'_>, e: ReconcileEvent) {
    cx.reporter.report(&e);
}

fn is_leftover(kind: ActionKind) -> bool {
    matches!(kind, ActionKind::Delete | ActionKind::Orphaned)
}

/// Another record of an entry that is still in the manifest.
fn is_superseded(entries: &EntryIndex<'_>, a: &PlannedAction) -> bool {
    a.step.leftover_key().is_some() && entries.get(&a.name).is_some()
}

/// `--locked`: every selected entry must have a lock entry for its current source, and an
/// unpinned Hub entry that must be fetched must have its resolved commit there. Nothing is
/// asked upstream: the installs fetch exactly the lock's commits.
fn locked_preflight(
    entries: &EntryIndex<'_>,
    the_plan: &Plan,
    lock: &LockFile,
) -> Result<(), ApplyError> {
    let mut problems = Vec::new();
    for a in &the_plan.actions {
        let Some(entry) = entries.get(&a.name) else {
            continue;
        };
        if a.step.leftover_key().is_some() {
            continue;
        }
        let Some(l) = lock.entry_for(entry) else {
            problems.push(match lock.entries.get(&entry.name) {
                Some(old) => format!(
                    "entry `{}`: models.lock pins source {}, the manifest says {}",
                    entry.name,
                    old.source,
                    entry.canonical_source()
                ),
                None => format!("entry `{}` is not in models.lock", entry.name),
            });
            continue;
        };
        let fetches = matches!(
            a.kind(),
            ActionKind::Install | ActionKind::Replace | ActionKind::Repair | ActionKind::Upgrade
        );
        if fetches
            && !entry.is_pinned()
            && matches!(entry.source, ModelSource::Hf(_) | ModelSource::Oci(_))
            && l.resolved_commit.is_none()
        {
            problems.push(format!(
                "entry `{}`: models.lock has no resolved commit",
                entry.name
            ));
        }
    }
    problems.sort();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::NotLocked(problems))
    }
}

fn start(cx: &ApplyContext<'_>, a: &PlannedAction) {
    report(
        cx,
        ReconcileEvent::ActionStarted {
            name: a.name.clone(),
            action: a.kind(),
            key: a.key().map(str::to_owned),
        },
    );
}

/// What an action moved: bytes downloaded, and files adopted instead.
#[derive(Debug, Default)]
struct Moved {
    downloaded: u64,
    adopted: Vec<crate::install::AdoptedFile>,
}

impl Moved {
    fn of(outcome: &InstallOutcome) -> Self {
        Self {
            downloaded: outcome.downloaded_bytes,
            adopted: outcome.adopted.clone(),
        }
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

type Done = (Option<String>, Moved, Option<LockEntry>);

fn finish(cx: &ApplyContext<'_>, a: &PlannedAction, r: Result<Done, Failure>) -> ActionResult {
    match r {
        Ok((key, moved, lock)) => {
            let adopted_bytes = moved.adopted.iter().map(|f| f.size).sum();
            if !matches!(a.kind(), ActionKind::Unchanged | ActionKind::Orphaned) {
                let mut from: Vec<&crate::install::Origin> =
                    moved.adopted.iter().map(|f| &f.origin).collect();
                from.sort();
                from.dedup();
                report(
                    cx,
                    ReconcileEvent::ActionCompleted {
                        name: a.name.clone(),
                        action: a.kind(),
                        key: key.clone(),
                        downloaded_bytes: moved.downloaded,
                        adopted_bytes,
                        adopted_from: from.iter().map(ToString::to_string).collect(),
                    },
                );
            }
            ActionResult {
                name: a.name.clone(),
                action: a.kind(),
                key,
                error: None,
                downloaded_bytes: moved.downloaded,
                adopted_bytes,
                interrupted: false,
                lock,
            }
        }
        Err(error) => {
            report(
                cx,
                ReconcileEvent::ActionFailed {
                    name: a.name.clone(),
                    action: a.kind(),
                    error: error.message.clone(),
                    causes: error.causes.clone(),
                    error_kind: error.kind,
                },
            );
            ActionResult {
                name: a.name.clone(),
                action: a.kind(),
                key: a.key().map(str::to_owned),
                error: Some(error),
                downloaded_bytes: 0,
                adopted_bytes: 0,
                interrupted: false,
                lock: None,
            }
        }
    }
}

fn skipped(a: &PlannedAction) -> ActionResult {
    ActionResult {
        name: a.name.clone(),
        action: a.kind(),
        key: a.key().map(str::to_owned),
        error: None,
        downloaded_bytes: 0,
        adopted_bytes: 0,
        interrupted: false,
        lock: None,
    }
}

/// An action the run was cancelled before it began (no event: it never started).
fn not_started(a: &PlannedAction) -> ActionResult {
    ActionResult {
        error: Some(Failure::new(
            FailureKind::Cancelled,
            "interrupted before it started",
        )),
        interrupted: true,
        ..skipped(a)
    }
}

/// What an action may need besides its plan row.
#[derive(Clone, Copy)]
struct Known<'a> {
    /// The manifest's entries by name.
    entries: &'a EntryIndex<'a>,
    /// The lock with `--locked`.
    locked: Option<&'a LockFile>,
    /// The lock as read at the start (the installed commits).
    lock: &'a LockFile,
    /// `--refresh`: entry → the commit upstream.
    upstream: &'a BTreeMap<String, String>,
    /// Error rows: entry → what kind of failure made it one (unresolvable, does not fit).
    error_kinds: &'a BTreeMap<String, FailureKind>,
}

async fn run_action(
    manifest: &Manifest,
    a: &PlannedAction,
    cx: &ApplyContext<'_>,
    known: Known<'_>,
) -> ActionResult {
    let entry = known.entries.get(&a.name);
    match (&a.step, entry) {
        (Step::Unchanged { .. } | Step::Orphaned { .. }, _) => skipped(a),
        (Step::Error { .. }, _) => {
            let kind = known
                .error_kinds
                .get(&a.name)
                .copied()
                .unwrap_or(FailureKind::Invalid);
            let r = Err(Failure::new(kind, a.reason.clone()));
            finish(cx, a, r)
        }
        (Step::Delete { key }, _) => {
            start(cx, a);
            let r = delete(cx, key).map(|()| (None, Moved::default(), None));
            finish(cx, a, r)
        }
        (Step::Update { key, .. } | Step::Adopt { key, .. }, Some(entry)) => {
            start(cx, a);
            let r = update_record(cx.manager.store().as_ref(), entry, key)
                .map(|k| (Some(k), Moved::default(), None));
            finish(cx, a, r)
        }
        (Step::Repair { key, files, .. }, Some(entry)) => {
            start(cx, a);
            let r = refit(manifest, entry, Refit::Repair { key, files }, cx, known).await;
            finish(cx, a, r)
        }
        // An hf-cache snapshot is named by its commit: an upgrade is a new snapshot (a new
        // install beside the old, which then goes; shared blobs stay), not a refit in place.
        (Step::Upgrade { key, .. }, Some(entry))
            if entry.layout != crate::install::Layout::HfCache =>
        {
            start(cx, a);
            let r = refit(manifest, entry, Refit::Upgrade { key }, cx, known).await;
            finish(cx, a, r)
        }
        (Step::Install { .. } | Step::Replace { .. } | Step::Upgrade { .. }, Some(entry)) => {
            start(cx, a);
            let lock_entry = known.locked.and_then(|l| l.entry_for(entry));
            let upgrade = matches!(a.step, Step::Upgrade { .. });
            let r = reinstall(manifest, entry, a.key(), upgrade, cx, lock_entry).await;
            finish(cx, a, r)
        }
        (_, None) => finish(
            cx,
            a,
            Err(Failure::new(
                FailureKind::Manifest,
                format!("entry `{}` is not in the manifest", a.name),
            )),
        ),
    }
}

/// Install, or replace the record `old`.
async fn reinstall(
    manifest: &Manifest,
    entry: &ModelEntry,
    old: Option<&str>,
    upgrade: bool,
    cx: &ApplyContext<'_>,
    locked: Option<&LockEntry>,
) -> Result<Done, Failure> {
    // A fixed dest (or an inplace path) is where the old model is: it must go first. Without
    // one, the new model lands beside the old, which goes only once the new one is in place.
    // So is a flat or hf-cache layout's path, unless an upgrade moves to another snapshot.
    let fixed_layout = match entry.layout {
        crate::install::Layout::InvokeAi => false,
        crate::install::Layout::HfCache => !upgrade,
        crate::install::Layout::ComfyUi | crate::install::Layout::A1111 => true,
    };
    let old_first = old.is_some() && (entry.dest.is_some() || entry.inplace || fixed_layout);
    if old_first {
        remove_old(cx, old, entry.inplace)?;
    }
    let mut request = install_request(manifest, entry);
    // `--locked` fetches the lock's commit, never what the branch points at now.
    if !entry.is_pinned()
        && let Some(l) = locked
    {
        request.options.revision.clone_from(&l.resolved_commit);
    }
    let outcome = cx
        .manager
        .install()
        .install(request)
        .await
        .map_err(|e| Failure::from_error(&e))?;
    if let Some(l) = locked
        && let Err(why) = check_against_lock(&outcome, l)
    {
        let _ = cx.manager.install().delete(&outcome.key);
        return Err(Failure::new(
            FailureKind::Integrity,
            format!("does not match models.lock: {why}"),
        ));
    }
    if !old_first {
        remove_old(cx, old, false)?;
    }
    for message in &outcome.warnings {
        report(
            cx,
            ReconcileEvent::Warning {
                name: entry.name.clone(),
                message: message.clone(),
            },
        );
    }
    let lock = lock_from_outcome(entry, &outcome);
    let moved = Moved::of(&outcome);
    Ok((Some(outcome.key), moved, Some(lock)))
}

/// What [`refit`] does to which record.
#[derive(Clone, Copy)]
enum Refit<'a> {
    /// Fetch the damaged files again, at the installed commit.
    Repair { key: &'a str, files: &'a [String] },
    /// Fetch the commit `--refresh` saw upstream.
    Upgrade { key: &'a str },
}

/// Repair or upgrade in place: the record keeps its key; see the module docs.
async fn refit(
    manifest: &Manifest,
    entry: &ModelEntry,
    what: Refit<'_>,
    cx: &ApplyContext<'_>,
    known: Known<'_>,
) -> Result<Done, Failure> {
    let (key, damaged, upgrade) = match what {
        Refit::Repair { key, files } => (key, files.to_vec(), false),
        Refit::Upgrade { key } => (key, Vec::new(), true),
    };
    let key = key.to_owned();
    let store = cx.manager.store();
    let mut request = install_request(manifest, entry);
    let lock_entry = known.lock.entry_for(entry);
    if !entry.is_pinned() && matches!(entry.source, ModelSource::Hf(_) | ModelSource::Oci(_)) {
        request.options.revision = if upgrade && known.locked.is_none() {
            known.upstream.get(&entry.name).cloned()
        } else {
            // Restore what is installed: the lock's commit, else the record's.
            lock_entry
                .and_then(|l| l.resolved_commit.clone())
                .or_else(|| {
                    lock_from_store(store.as_ref(), entry, &key)
                        .ok()
                        .and_then(|l| l.resolved_commit)
                })
        };
    }
    let locked_sha256 = known
        .locked
        .and_then(|l| l.entry_for(entry))
        .map(|l| {
            l.files
                .iter()
                .filter_map(|f| Some((f.path.clone(), f.sha256.clone()?)))
                .collect()
        })
        .unwrap_or_default();
    request.options.in_place = Some(crate::install::InPlace {
        key: key.clone(),
        damaged,
        locked_sha256,
    });
    let outcome = cx
        .manager
        .install()
        .install(request)
        .await
        .map_err(|e| Failure::from_error(&e))?;
    if let Some(l) = known.locked.and_then(|l| l.entry_for(entry))
        && let Err(why) = check_against_lock(&outcome, l)
    {
        return Err(Failure::new(
            FailureKind::Integrity,
            format!("does not match models.lock: {why}"),
        ));
    }
    // The record-level fields and ownership, as an update writes them.
    update_record(store.as_ref(), entry, &key)?;
    let lock = lock_from_outcome(entry, &outcome);
    Ok((Some(key), Moved::of(&outcome), Some(lock)))
}

fn remove_old(cx: &ApplyContext<'_>, key: Option<&str>, inplace: bool) -> Result<(), Failure> {
    let Some(key) = key else { return Ok(()) };
    let svc = cx.manager.install();
    let models_dir = cx.manager.models_dir();
    let old_path = cx
        .manager
        .store()
        .get_model(key)
        .ok()
        .map(|r| r.resolved_path(models_dir));
    let r = if inplace {
        // An inplace model's files are the user's: forget the record, keep the files.
        svc.unregister(key)
    } else {
        svc.delete(key).map(|_| ())
    };
    if !inplace && let Some(p) = old_path {
        remove_empty_parents(&p, models_dir);
    }
    match r {
        Ok(()) => Ok(()),
        Err(crate::install::InstallError::Store(e))
            if matches!(*e, StoreError::UnknownModel(_)) =>
        {
            Ok(())
        }
        Err(e) => Err(Failure::from_error(&e).context(format!("removing the old record {key}"))),
    }
}

/// A single-file model lives in `<key>/<file>`; once the file is gone, so should its folder
/// be (else `status` reports it as an orphan). Only empty folders inside models_dir go.
fn remove_empty_parents(path: &Path, models_dir: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == models_dir || !d.starts_with(models_dir) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

fn delete(cx: &ApplyContext<'_>, key: &str) -> Result<(), Failure> {
    remove_old(cx, Some(key), false)
}

/// The install request for an entry: its source (token included, never stored), the
/// record-level fields as config overrides, and the source-level options.
pub fn install_request(manifest: &Manifest, entry: &ModelEntry) -> InstallRequest {
    let mut source = entry.source.clone();
    if let ModelSource::Local(LocalModelSource { inplace, .. }) = &mut source {
        *inplace = entry.inplace;
    }
    let mut config = record_fields(entry);
    if entry.unsafe_pickle == crate::manifest::UnsafePickle::Allow {
        config.insert(
            crate::install::UNSAFE_PICKLE.to_owned(),
            serde_json::Value::from("allow"),
        );
    }
    InstallRequest::new(source, config).with_options(InstallOptions {
        dest: entry.dest.clone(),
        expected_hash: entry.hash.clone(),
        hash_algorithm: Some(manifest.settings.hash_algorithm),
        managed: Some(managed(entry)),
        include: entry.include.clone(),
        exclude: entry.exclude.clone(),
        access_token: entry.token().cloned(),
        sha256_for_lock: true,
        unknown_models: manifest.settings.unknown_models,
        layout: entry.layout,
        ..InstallOptions::default()
    })
}

fn managed(entry: &ModelEntry) -> Managed {
    Managed {
        entry: entry.name.clone(),
        spec_hash: entry.spec_hash.to_string(),
    }
}

/// The record-level fields an entry sets: name, description, tags and config overrides.
fn record_fields(entry: &ModelEntry) -> serde_json::Map<String, serde_json::Value> {
    let mut m = match serde_json::to_value(&entry.config) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    m.insert("name".into(), entry.name.clone().into());
    if let Some(d) = &entry.description {
        m.insert("description".into(), d.clone().into());
    }
    if !entry.tags.is_empty() {
        m.insert("tags".into(), entry.tags.clone().into());
    }
    m
}

/// Update/adopt: the record takes the entry's record-level fields and ownership.
fn update_record(
    store: &dyn RecordStore,
    entry: &ModelEntry,
    key: &str,
) -> Result<String, Failure> {
    let mut fields = record_fields(entry);
    // Cleared in the manifest → cleared on the record.
    fields
        .entry("description")
        .or_insert(serde_json::Value::Null);
    fields
        .entry("tags")
        .or_insert(serde_json::Value::Array(Vec::new()));
    // Tags are the Hub's plus the manifest's, as an install writes them.
    let hub_tags: Vec<String> = store
        .get_model(key)
        .ok()
        .and_then(|r| r.common().source_api_response.clone())
        .and_then(|v| crate::hub::HuggingFaceMetadata::from_json_value(&v).ok())
        .map(|m| m.tags.into_iter().collect())
        .unwrap_or_default();
    let tags = crate::install::merged_tags(&fields, &[], &hub_tags);
    fields.insert("tags".into(), tags.into());
    fields.insert(
        "managed".into(),
        serde_json::to_value(managed(entry)).unwrap_or_default(),
    );
    store
        .update_model(key, ConfigChange::Sparse(fields))
        .map(|r| r.key().to_owned())
        .map_err(|e| Failure::from_error(&e).context(format!("updating record {key}")))
}

fn lock_from_outcome(entry: &ModelEntry, o: &InstallOutcome) -> LockEntry {
    LockEntry {
        source: entry.canonical_source(),
        revision: entry.revision().map(str::to_owned),
        resolved_commit: o.commit.clone(),
        files: o
            .files
            .iter()
            .map(|f| LockedFile {
                path: lock_path_of(&f.path, &o.path),
                size: f.size,
                sha256: f.sha256.clone(),
            })
            .collect(),
        record_hash: Some(o.record.common().hash.clone()),
    }
}

/// A lock entry from what the store knows (an entry installed before a lock existed, or by
/// an apply killed before it wrote the lock).
fn lock_from_store(
    store: &dyn RecordStore,
    entry: &ModelEntry,
    key: &str,
) -> Result<LockEntry, StoreError> {
    let rec = store.get_model(key)?;
    let files = store.model_files(key)?;
    let root = PathBuf::from(&rec.common().path);
    // Hub records keep the commit their files came from in `source_api_response`; `oci://`
    // records the digest (`crate::install::oci`).
    let response = rec.common().source_api_response.as_ref();
    let resolved_commit = if matches!(entry.source, ModelSource::Oci(_)) {
        response
            .and_then(|v| v.get("digest"))
            .and_then(|d| d.as_str())
            .map(str::to_owned)
    } else {
        response
            .and_then(|v| crate::hub::HuggingFaceMetadata::from_json_value(v).ok())
            .and_then(|m| m.commit)
    };
    Ok(LockEntry {
        source: entry.canonical_source(),
        revision: entry.revision().map(str::to_owned),
        resolved_commit,
        files: files
            .into_iter()
            .map(|f| LockedFile {
                path: lock_path_of(&f.relative_path, &root),
                size: f.size,
                sha256: f.sha256,
            })
            .collect(),
        record_hash: Some(rec.common().hash.clone()),
    })
}

/// Heals `entry`'s lock entry from `stored` (what the record says, [`lock_from_store`]): a
/// missing entry is written whole (a lost lock, or a kill between the record and the lock);
/// an entry without its resolved commit, file list, file hashes or record hash gets them.
/// What the lock already pins is kept: the lock is what `--locked` insists on, and an upstream
/// move is an upgrade, not a heal.
fn heal_lock_entry(lock: &mut LockFile, entry: &ModelEntry, stored: LockEntry) {
    let Some(have) = lock
        .entries
        .get_mut(&entry.name)
        .filter(|l| l.matches(entry))
    else {
        lock.entries.insert(entry.name.clone(), stored);
        return;
    };
    if have.resolved_commit.is_none() {
        have.resolved_commit = stored.resolved_commit;
    }
    if have.record_hash.is_none() {
        have.record_hash = stored.record_hash;
    }
    if have.files.is_empty() {
        have.files = stored.files;
        return;
    }
    let by_path: BTreeMap<&str, &LockedFile> =
        stored.files.iter().map(|f| (f.path.as_str(), f)).collect();
    for f in &mut have.files {
        if f.sha256.is_none()
            && let Some(s) = by_path.get(f.path.as_str())
            && s.size == f.size
        {
            f.sha256.clone_from(&s.sha256);
        }
    }
}

/// Lock paths name single files by their file name (the lock's format), not `""`.
fn lock_path_of(relative: &str, model_path: &Path) -> String {
    if relative.is_empty() {
        model_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        relative.to_owned()
    }
}

fn check_against_lock(o: &InstallOutcome, l: &LockEntry) -> Result<(), String> {
    if let (Some(want), Some(got)) = (&l.resolved_commit, &o.commit)
        && want != got
    {
        return Err(format!("commit {got}, locked {want}"));
    }
    let got: BTreeMap<String, (u64, Option<&String>)> = o
        .files
        .iter()
        .map(|f| (lock_path_of(&f.path, &o.path), (f.size, f.sha256.as_ref())))
        .collect();
    for f in &l.files {
        match got.get(&f.path) {
            None => return Err(format!("file `{}` is missing", f.path)),
            Some((size, _)) if *size != f.size => {
                return Err(format!(
                    "file `{}` has {size} bytes, locked {}",
                    f.path, f.size
                ));
            }
            Some((_, Some(sha))) if f.sha256.as_ref().is_some_and(|w| w != *sha) => {
                return Err(format!(
                    "file `{}`: sha256 {sha} differs from the lock",
                    f.path
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = got.keys().find(|p| !l.files.iter().any(|f| &f.path == *p)) {
        return Err(format!("file `{extra}` is not in the lock"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::config::AnyModelConfig;
    use crate::store::ModelFile;
    use crate::taxonomy::{BaseModelType, ModelType};

    /// The real SQLite store, counting its whole-store reads: one per observation.
    struct Counting {
        inner: Box<dyn RecordStore>,
        all_models: AtomicUsize,
        /// Scoped reads, and the records they returned.
        scopes: AtomicUsize,
        scoped_records: AtomicUsize,
    }

    impl Counting {
        fn new(inner: Box<dyn RecordStore>) -> Self {
            Self {
                inner,
                all_models: AtomicUsize::new(0),
                scopes: AtomicUsize::new(0),
                scoped_records: AtomicUsize::new(0),
            }
        }
    }

    impl RecordStore for Counting {
        fn add_model(&self, key: &str, c: AnyModelConfig) -> Result<AnyModelConfig, StoreError> {
            self.inner.add_model(key, c)
        }
        fn update_model(&self, key: &str, c: ConfigChange) -> Result<AnyModelConfig, StoreError> {
            self.inner.update_model(key, c)
        }
        fn del_model(&self, key: &str) -> Result<(), StoreError> {
            self.inner.del_model(key)
        }
        fn get_model(&self, key: &str) -> Result<AnyModelConfig, StoreError> {
            self.inner.get_model(key)
        }
        fn exists(&self, key: &str) -> Result<bool, StoreError> {
            self.inner.exists(key)
        }
        fn search_by_path(&self, path: &str) -> Result<Vec<AnyModelConfig>, StoreError> {
            self.inner.search_by_path(path)
        }
        fn search_by_name(
            &self,
            name: Option<&str>,
            base: Option<BaseModelType>,
            model_type: Option<ModelType>,
        ) -> Result<Vec<AnyModelConfig>, StoreError> {
            self.inner.search_by_name(name, base, model_type)
        }
        fn search_by_tag(&self, tags: &[String]) -> Result<Vec<AnyModelConfig>, StoreError> {
            self.inner.search_by_tag(tags)
        }
        fn search_by_hash(&self, hash: &str) -> Result<Vec<AnyModelConfig>, StoreError> {
            self.inner.search_by_hash(hash)
        }
        fn all_models(&self) -> Result<Vec<AnyModelConfig>, StoreError> {
            self.all_models.fetch_add(1, Ordering::SeqCst);
            self.inner.all_models()
        }
        fn search_scope(
            &self,
            entries: &[&str],
            sources: &[&str],
        ) -> Result<Vec<AnyModelConfig>, StoreError> {
            self.scopes.fetch_add(1, Ordering::SeqCst);
            let found = self.inner.search_scope(entries, sources)?;
            self.scoped_records.fetch_add(found.len(), Ordering::SeqCst);
            Ok(found)
        }
        fn set_model_files(&self, key: &str, files: &[ModelFile]) -> Result<(), StoreError> {
            self.inner.set_model_files(key, files)
        }
        fn model_files(&self, key: &str) -> Result<Vec<ModelFile>, StoreError> {
            self.inner.model_files(key)
        }
        fn location(&self) -> &Path {
            self.inner.location()
        }
    }

    /// A manifest of two local entries (a LoRA and an embedding from `examples/weights`), its
    /// store behind [`Counting`], and the services over them.
    fn two_local_entries() -> (
        tempfile::TempDir,
        Manifest,
        Arc<Counting>,
        super::super::Services,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/weights");
        let mut text = String::from("version: 1\nsettings:\n  models_dir: models\nmodels:\n");
        for (name, file) in [
            ("detail", "loras/detail-sd15.safetensors"),
            ("ti", "embeddings/tiny-ti-sd15.safetensors"),
        ] {
            let src = dir.path().join(format!("{name}.safetensors"));
            std::fs::copy(weights.join(file), &src).unwrap();
            let _ = writeln!(text, "  - name: {name}\n    source: {}", src.display());
        }
        let m =
            crate::manifest::parse_str(&text, &dir.path().join("models.yaml"), &|_| None).unwrap();
        let counting = Arc::new(Counting::new(
            crate::store::open(&m.settings.database_path()).unwrap(),
        ));
        let store: Arc<dyn RecordStore> = counting.clone();
        std::fs::create_dir_all(&m.settings.models_dir).unwrap();
        let reporter: Arc<dyn crate::reconcile::converge::ConvergeReporter> =
            Arc::new(crate::events::NullReporter);
        let services =
            super::super::Services::open(&m.settings, store, HubEnv::empty(), reporter).unwrap();
        (dir, m, counting, services)
    }

    /// A converged apply, run as the CLI runs it (volume check, then apply), observes the
    /// store once and parses `models.lock` once; a later apply of the same process (watch)
    /// parses it not at all while the file is as it left it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_no_op_apply_observes_once_and_reads_the_lock_once() {
        let (_dir, m, counting, services) = two_local_entries();
        let store: Arc<dyn RecordStore> = counting.clone();
        let models_dir = &m.settings.models_dir;
        let cx = services.context(Arc::new(crate::events::NullReporter), None);
        let opts = ApplyOptions::default();
        let first = apply(&m, &cx, &opts).await.unwrap();
        assert!(first.converged(), "{:?}", first.results);
        assert_eq!(first.changed(), 2);
        assert!(first.lock_written);

        let lock_path = m.lock_path();
        // As a new process starts: nothing of the lock in memory.
        lock_memory().remove(&lock_path);
        let (observed, reads) = (
            counting.all_models.load(Ordering::SeqCst),
            crate::manifest::lock::test_reads::of(&lock_path),
        );
        check_volume(store.as_ref(), models_dir).unwrap();
        let again = apply(&m, &cx, &opts).await.unwrap();
        assert_eq!((again.changed(), again.plan.totals.unchanged), (0, 2));
        assert!(!again.lock_written);
        assert_eq!(counting.all_models.load(Ordering::SeqCst) - observed, 1);
        assert_eq!(
            crate::manifest::lock::test_reads::of(&lock_path) - reads,
            1,
            "models.lock parsed once"
        );

        let reads = crate::manifest::lock::test_reads::of(&lock_path);
        let warm = apply(&m, &cx, &opts).await.unwrap();
        assert_eq!(warm.changed(), 0);
        assert_eq!(crate::manifest::lock::test_reads::of(&lock_path), reads);
        // A lock changed from outside is read again.
        let mut edited = LockFile::read(&lock_path).unwrap().unwrap();
        edited.entries.remove("ti");
        edited.write(&lock_path).unwrap();
        let reads = crate::manifest::lock::test_reads::of(&lock_path);
        let healed = apply(&m, &cx, &opts).await.unwrap();
        assert_eq!(crate::manifest::lock::test_reads::of(&lock_path) - reads, 1);
        assert!(healed.lock_written, "the lost entry is written back");
        assert!(
            LockFile::read(&lock_path)
                .unwrap()
                .unwrap()
                .entries
                .contains_key("ti")
        );
    }

    /// `--only` (watch mode's per-entry converge) reads the records of its entries alone,
    /// by the store's indexes, never the whole store; what it plans and lists is theirs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_apply_of_one_entry_reads_that_entrys_records_only() {
        let (_dir, m, counting, services) = two_local_entries();
        let store: Arc<dyn RecordStore> = counting.clone();
        let cx = services.context(Arc::new(crate::events::NullReporter), None);
        let first = apply(&m, &cx, &ApplyOptions::default()).await.unwrap();
        assert_eq!(first.changed(), 2);
        // Records nobody's entry owns, with other sources: a store bigger than the entry.
        for i in 0..20 {
            let mut c = store
                .get_model(&first.results[0].key.clone().unwrap())
                .unwrap();
            let common = c.common_mut();
            common.key = format!("other-{i}");
            common.name = format!("other-{i}");
            common.path = format!("/elsewhere/other-{i}.safetensors");
            common.source = format!("/elsewhere/other-{i}.safetensors");
            common.managed = None;
            store.add_model(&format!("other-{i}"), c).unwrap();
        }

        let before = counting.all_models.load(Ordering::SeqCst);
        let opts = ApplyOptions {
            only: vec!["ti".to_owned()],
            ..ApplyOptions::default()
        };
        let one = apply(&m, &cx, &opts).await.unwrap();
        assert_eq!((one.changed(), one.plan.totals.unchanged), (0, 1));
        assert_eq!(counting.all_models.load(Ordering::SeqCst), before);
        assert_eq!(counting.scopes.load(Ordering::SeqCst), 1);
        assert_eq!(counting.scoped_records.load(Ordering::SeqCst), 1);
        assert!(one.plan.unmanaged.is_empty(), "{:?}", one.plan.unmanaged);

        // The whole apply still lists them.
        let all = apply(&m, &cx, &ApplyOptions::default()).await.unwrap();
        assert_eq!(all.plan.unmanaged.len(), 20);
    }
}
