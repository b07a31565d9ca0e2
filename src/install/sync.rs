//! `sync_to_config` (the seed's name): reconcile the record store with what lies in
//! `models_dir` — register models nobody recorded, report records whose files are gone.
//!
//! The walk follows InvokeAI's `ModelSearch`: a folder holding one of [`MODEL_MARKERS`]
//! (`config.json`, `model_index.json`, `learned_embeds.bin`, …) is one model and is not
//! descended into; anywhere else each file with a weight extension ([`WEIGHT_EXTENSIONS`]) is
//! one model. Entries whose names start with `.` are skipped at every level, which leaves out
//! modelsync's own scratch (`.tmp` staging with its partial downloads, `.cache`,
//! `.download_cache`); so are the store, its companions and lock, and whatever the caller
//! names in [`SyncOptions::skip`] (the manifest and `models.lock`).
//!
//! Decisions beyond InvokeAI's:
//! - `.gguf` counts as a weight file (InvokeAI 6 installs GGUF models; its old search predates
//!   them). The top of `models_dir` is never a model folder itself.
//! - Symlinked folders are not descended into (no loops; the walk is also capped at 20 levels,
//!   as InvokeAI's); a symlinked weight file is a model.
//! - A found model that lies inside a recorded model's folder, or holds a recorded path, is
//!   owned (a diffusers pipeline whose `vae/` is recorded separately is left alone).
//! - Orphans are registered in place (nothing moves), unmanaged, probed and hashed like
//!   `import --inplace`; an unidentified model is recorded as `unknown` unless the policy
//!   denies it. A file that fails (a truncated copy still being written, a dangerous pickle)
//!   is reported and tried again by the next sync.
//! - With [`SyncOptions::previous`] (watch's `settings.sync: register`) an orphan is
//!   registered only once a sync sees it unchanged since the one before (same files, sizes and
//!   mtimes), so a model still being copied in is not recorded half-done; `modelsync sync
//!   --yes`, which a person runs after the copy, registers at once.
//! - Dead records (their path is gone) are reported. Records a manifest entry manages are
//!   never unregistered here (`apply` repairs them). Unmanaged ones are unregistered only with
//!   [`SyncOptions::prune_missing`], and never while `models_dir` looks unmounted (missing, or
//!   holding nothing but the store and dot-entries while records point into it: InvokeAI
//!   dropped its start-up sync after it wiped records on an unmounted drive, PR #6060). A dead
//!   record outside `models_dir` is unregistered only when its folder still exists (the file
//!   was deleted, not its drive unmounted).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Map;

use crate::config::{AnyModelConfig, Managed};
use crate::probe;
use crate::taxonomy::{BaseModelType, ModelFormat, ModelType};

use super::error::InstallError;
use super::promote::{PromoteCtx, absolute, promote};
use super::request::{InstallOptions, UnknownModels};
use super::service::ModelInstallService;

/// Files whose presence makes a folder one model (InvokeAI's `ModelSearch`).
pub const MODEL_MARKERS: &[&str] = &[
    "config.json",
    "model_index.json",
    "learned_embeds.bin",
    "pytorch_lora_weights.bin",
    "image_encoder.txt",
];

/// Extensions of weight files that are a model each outside model folders (InvokeAI's, plus
/// `gguf`). Compared without regard to case.
pub const WEIGHT_EXTENSIONS: &[&str] = &["ckpt", "bin", "pth", "safetensors", "pt", "gguf"];

/// How deep the walk goes below `models_dir`.
const MAX_DEPTH: usize = 20;

crate::string_enum! {
    /// What `watch` does with `sync_to_config` at each resync (`settings.sync`).
    #[derive(Default)]
    SyncMode, "sync mode" {
        /// Nothing.
        Off = "off",
        /// Find orphans and dead records and report them in `/status` and the metrics (the
        /// default).
        #[default]
        Report = "report",
        /// Also register the orphans (dead records are only reported).
        Register = "register",
    }
}

/// What one sync does.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Register the orphans (else only report them: a dry run).
    pub register: bool,
    /// Unregister dead unmanaged records (only with `register`; never when the volume looks
    /// unmounted).
    pub prune_missing: bool,
    /// Files never taken for models wherever they sit (the manifest, its lock file).
    pub skip: Vec<PathBuf>,
    /// Unidentified models: record as `unknown` (default) or refuse.
    pub unknown_models: UnknownModels,
    /// The previous sync's [`SyncReport::fingerprints`]: when set, only orphans unchanged
    /// since then are registered (the others wait for the next sync).
    pub previous: Option<HashMap<String, Fingerprint>>,
}

/// What an orphan's files look like, without reading them: how many, their bytes, the newest
/// mtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    files: usize,
    bytes: u64,
    newest_mtime_ns: i128,
}

/// A model in `models_dir` that no record owns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrphanModel {
    /// Path relative to `models_dir` (`/`-separated).
    pub path: String,
    /// Whether it is a model folder.
    pub is_dir: bool,
    /// Bytes on disk.
    pub bytes: u64,
    /// What the probe says (`None` when it failed; see `error`).
    #[serde(rename = "type")]
    pub model_type: Option<ModelType>,
    /// Base.
    pub base: Option<BaseModelType>,
    /// Format.
    pub format: Option<ModelFormat>,
    /// The record name it gets.
    pub name: Option<String>,
    /// The new record's key, once registered.
    pub key: Option<String>,
    /// Why it cannot be registered.
    pub error: Option<String>,
    /// What the registration should tell (an unidentified model, a guessed base), or why it
    /// waits.
    pub warnings: Vec<String>,
    /// Its files' fingerprint (see [`SyncOptions::previous`]).
    #[serde(skip)]
    pub fingerprint: Fingerprint,
}

/// A record whose path is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadRecord {
    /// Record key.
    pub key: String,
    /// Record name.
    pub name: String,
    /// The manifest entry that owns it, if any.
    pub entry: Option<String>,
    /// The path as stored.
    pub path: String,
    /// The path resolved against `models_dir`.
    pub resolved_path: PathBuf,
    /// Whether it is (dry run: would be) unregistered.
    pub unregister: bool,
    /// Why it is kept or unregistered.
    pub reason: String,
}

/// Counts of a sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncTotals {
    /// Orphans found.
    pub orphans: usize,
    /// Orphans registered.
    pub registered: usize,
    /// Orphans that cannot be registered.
    pub failed: usize,
    /// Dead records found.
    pub dead: usize,
    /// Dead records unregistered (dry run: that would be).
    pub unregistered: usize,
}

/// What `sync_to_config` found and did. `modelsync sync -o json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncReport {
    /// The models folder.
    pub models_dir: PathBuf,
    /// False for a dry run (nothing was written).
    pub applied: bool,
    /// `models_dir` looks unmounted: nothing is unregistered.
    pub volume_suspect: bool,
    /// Models no record owns, by path.
    pub orphans: Vec<OrphanModel>,
    /// Records whose path is gone, by name.
    pub dead: Vec<DeadRecord>,
    /// Counts.
    pub totals: SyncTotals,
}

impl SyncReport {
    /// Every orphan's fingerprint, for the next sync's [`SyncOptions::previous`].
    pub fn fingerprints(&self) -> HashMap<String, Fingerprint> {
        self.orphans
            .iter()
            .map(|o| (o.path.clone(), o.fingerprint))
            .collect()
    }

    /// Whether anything is (or was) to be done: orphans to register or records to unregister.
    pub fn has_changes(&self) -> bool {
        self.orphans.iter().any(|o| o.error.is_none()) || self.dead.iter().any(|d| d.unregister)
    }
}

/// One model the walk found (absolute path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundModel {
    /// The file or folder.
    pub path: PathBuf,
    /// Whether it is a folder.
    pub is_dir: bool,
}

/// Walks `root` as InvokeAI's `ModelSearch` does (see the module docs); `skip` says which
/// paths are never models. Sorted by path.
pub fn find_models(
    root: &Path,
    skip: &dyn Fn(&Path) -> bool,
) -> Result<Vec<FoundModel>, InstallError> {
    let mut out = Vec::new();
    if root.is_dir() {
        walk(root, root, 0, skip, &mut out)?;
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn is_weight(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| WEIGHT_EXTENSIONS.iter().any(|w| e.eq_ignore_ascii_case(w)))
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    skip: &dyn Fn(&Path) -> bool,
    out: &mut Vec<FoundModel>,
) -> Result<(), InstallError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let io = |e| InstallError::io("listing", dir, e);
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || skip(&path) {
            continue;
        }
        let ft = entry.file_type().map_err(io)?;
        if ft.is_dir() {
            dirs.push(path);
        } else if ft.is_file() || (ft.is_symlink() && path.is_file()) {
            files.push((name, path));
        }
    }
    if dir != root
        && files
            .iter()
            .any(|(n, _)| MODEL_MARKERS.contains(&n.as_str()))
    {
        out.push(FoundModel {
            path: dir.to_path_buf(),
            is_dir: true,
        });
        return Ok(());
    }
    for (name, path) in files {
        if is_weight(&name) {
            out.push(FoundModel {
                path,
                is_dir: false,
            });
        }
    }
    for d in dirs {
        walk(root, &d, depth + 1, skip, out)?;
    }
    Ok(())
}

/// The paths records own: lexically absolute and, where they exist, symlinks resolved.
struct Owned {
    paths: Vec<PathBuf>,
}

impl Owned {
    fn new(records: &[AnyModelConfig], models_dir: &Path) -> Self {
        let mut paths = Vec::new();
        for r in records {
            let p = lexical(&r.resolved_path(models_dir));
            if let Ok(c) = std::fs::canonicalize(&p) {
                paths.push(c);
            }
            paths.push(p);
        }
        Self { paths }
    }

    /// Owned when a record's path equals it, lies inside it or holds it.
    fn owns(&self, found: &Path) -> bool {
        let lex = lexical(found);
        let real = std::fs::canonicalize(found).ok();
        self.paths.iter().any(|o| {
            [Some(&lex), real.as_ref()]
                .into_iter()
                .flatten()
                .any(|f| o.starts_with(f) || f.starts_with(o))
        })
    }
}

fn lexical(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether `models_dir` looks unmounted: missing, or holding nothing but dot-entries and the
/// store's own files, while some record points into it (the reconciler's guard, the same
/// rule).
pub fn volume_suspect(models_dir: &Path, store_file: &Path, records: &[AnyModelConfig]) -> bool {
    let root = lexical(models_dir);
    let inside = records
        .iter()
        .any(|r| lexical(&r.resolved_path(models_dir)).starts_with(&root));
    if !inside {
        return false;
    }
    let store_name = store_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let Ok(entries) = std::fs::read_dir(models_dir) else {
        return true;
    };
    !entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        !(name.starts_with('.') || store_name.as_deref().is_some_and(|s| name.starts_with(s)))
    })
}

/// What a sync would do, without writing anything: walks, probes the orphans (headers only,
/// no hashing) and classifies dead records. [`ModelInstallService::sync_to_config`] runs it
/// and then acts; `modelsync sync` without `--yes` prints it.
///
/// `records` are the store's (empty when there is no store yet), `store_file` where it lives.
pub fn plan_sync(
    records: &[AnyModelConfig],
    store_file: &Path,
    models_dir: &Path,
    opts: &SyncOptions,
) -> Result<SyncReport, InstallError> {
    let store_file = lexical(store_file);
    let store_lock = crate::store::lock::StoreLock::lock_path(&store_file);
    let store_dir = store_file.parent().map(Path::to_path_buf);
    let store_name = store_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let skip_files: Vec<PathBuf> = opts.skip.iter().map(|p| lexical(p)).collect();
    let skip = |p: &Path| {
        let p = lexical(p);
        if p == store_lock || skip_files.contains(&p) {
            return true;
        }
        // The store and its companions (`-wal`, `-shm`, `-journal`).
        p.parent() == store_dir.as_deref()
            && store_name.as_deref().is_some_and(|s| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(s))
            })
    };
    let owned = Owned::new(records, models_dir);
    let root = lexical(models_dir);
    let mut orphans = Vec::new();
    for found in find_models(models_dir, &skip)? {
        if owned.owns(&found.path) {
            continue;
        }
        orphans.push(probe_orphan(&root, &found, opts.unknown_models));
    }
    let suspect = volume_suspect(models_dir, &store_file, records);
    let mut dead = Vec::new();
    for r in records {
        let resolved = r.resolved_path(models_dir);
        if std::fs::symlink_metadata(&resolved).is_ok() {
            continue;
        }
        let c = r.common();
        let entry = c.managed.as_ref().map(|m: &Managed| m.entry.clone());
        let inside = lexical(&resolved).starts_with(&root);
        let (unregister, reason) = if let Some(e) = &entry {
            (
                false,
                format!("kept: entry `{e}` manages it (`modelsync apply` repairs it)"),
            )
        } else if suspect {
            (
                false,
                format!(
                    "kept: {} is missing or empty, is the volume mounted?",
                    models_dir.display()
                ),
            )
        } else if !inside && resolved.parent().is_none_or(|p| !p.is_dir()) {
            (
                false,
                "kept: its folder is gone too, is its drive mounted?".to_owned(),
            )
        } else if opts.prune_missing {
            (
                true,
                "files missing: unregister (--prune-missing)".to_owned(),
            )
        } else {
            (
                false,
                "files missing: kept (--prune-missing unregisters it)".to_owned(),
            )
        };
        dead.push(DeadRecord {
            key: c.key.clone(),
            name: c.name.clone(),
            entry,
            path: c.path.clone(),
            resolved_path: resolved,
            unregister,
            reason,
        });
    }
    let mut report = SyncReport {
        models_dir: models_dir.to_path_buf(),
        applied: false,
        volume_suspect: suspect,
        orphans,
        dead,
        totals: SyncTotals::default(),
    };
    report.totals = totals(&report);
    Ok(report)
}

fn totals(r: &SyncReport) -> SyncTotals {
    SyncTotals {
        orphans: r.orphans.len(),
        registered: r.orphans.iter().filter(|o| o.key.is_some()).count(),
        failed: r.orphans.iter().filter(|o| o.error.is_some()).count(),
        dead: r.dead.len(),
        unregistered: r.dead.iter().filter(|d| d.unregister).count(),
    }
}

fn probe_orphan(root: &Path, found: &FoundModel, policy: UnknownModels) -> OrphanModel {
    let rel = lexical(&found.path)
        .strip_prefix(root)
        .map_or_else(|_| found.path.clone(), Path::to_path_buf);
    let rel = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    let fingerprint = fingerprint_of(&found.path);
    let mut o = OrphanModel {
        path: rel,
        is_dir: found.is_dir,
        bytes: fingerprint.bytes,
        fingerprint,
        model_type: None,
        base: None,
        format: None,
        name: None,
        key: None,
        error: None,
        warnings: Vec::new(),
    };
    match probe::probe_with_overrides(&found.path, &Map::new()) {
        Ok(p) => {
            if p.model_type == ModelType::Unknown && policy == UnknownModels::Deny {
                o.error = Some(
                    "no probe rule identifies it and settings.unknown_models is deny".to_owned(),
                );
            }
            o.model_type = Some(p.model_type);
            o.base = Some(p.base);
            o.format = Some(p.format);
            o.name = Some(p.name);
        }
        Err(e) => o.error = Some(e.to_string()),
    }
    o
}

fn fingerprint_of(p: &Path) -> Fingerprint {
    let mut fp = Fingerprint::default();
    let mut add = |md: &std::fs::Metadata| {
        fp.files += 1;
        fp.bytes += md.len();
        let m = md.modified().map_or(0, crate::store::mtime_ns);
        fp.newest_mtime_ns = fp.newest_mtime_ns.max(m);
    };
    let Ok(md) = std::fs::metadata(p) else {
        return Fingerprint::default();
    };
    if !md.is_dir() {
        add(&md);
        return fp;
    }
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => {
                    if let Ok(md) = e.metadata() {
                        add(&md);
                    }
                }
                Err(_) => {}
            }
        }
    }
    fp
}

impl ModelInstallService {
    /// The seed's `sync_to_config`: finds models in `models_dir` no record owns and records
    /// whose files are gone ([`plan_sync`]); with `opts.register` registers the orphans in
    /// place and (with `opts.prune_missing`) unregisters dead unmanaged records, all under the
    /// install lane, so a model being promoted is never taken for an orphan.
    pub fn sync_to_config(&self, opts: &SyncOptions) -> Result<SyncReport, InstallError> {
        let inner = self.inner();
        let _lane = inner.lane();
        let store = inner.store.as_ref();
        let records = store.all_models()?;
        let mut report = plan_sync(&records, store.location(), &inner.cfg.models_dir, opts)?;
        if !opts.register {
            return Ok(report);
        }
        report.applied = true;
        let install_opts = InstallOptions {
            unknown_models: opts.unknown_models,
            ..InstallOptions::default()
        };
        let never = || false;
        let ctx = PromoteCtx {
            models_dir: &inner.cfg.models_dir,
            store,
            hash_algorithm: inner.cfg.hash_algorithm,
            cancelled: &never,
        };
        for o in report.orphans.iter_mut().filter(|o| o.error.is_none()) {
            if let Some(prev) = &opts.previous
                && prev.get(&o.path) != Some(&o.fingerprint)
            {
                o.warnings.push(
                    "new or changed since the last sync (still being copied?): registered once a sync sees it unchanged".to_owned(),
                );
                continue;
            }
            let path = absolute(&inner.cfg.models_dir.join(&o.path));
            match super::service::local_staged(&path, None)
                .and_then(|staged| promote(&ctx, &staged, &Map::new(), &install_opts))
            {
                Ok(outcome) => {
                    o.key = Some(outcome.key);
                    o.name = Some(outcome.record.name().to_owned());
                    o.model_type = Some(outcome.record.model_type());
                    o.base = Some(outcome.record.base());
                    o.format = Some(outcome.record.format());
                    o.warnings = outcome.warnings;
                }
                Err(e) => o.error = Some(crate::retry::one_line(&e)),
            }
        }
        for d in report.dead.iter_mut().filter(|d| d.unregister) {
            if let Err(e) = store.del_model(&d.key) {
                d.unregister = false;
                d.reason = format!("kept: unregistering failed: {e}");
            }
        }
        report.totals = totals(&report);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_finds_model_folders_and_weight_files() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path();
        let w = |p: &str| {
            let p = m.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        };
        w("loras/a.safetensors");
        w("loras/readme.txt");
        w("pipe/model_index.json");
        w("pipe/unet/diffusion_pytorch_model.safetensors");
        w("emb/learned_embeds.bin");
        w("deep/er/q.GGUF");
        w(".tmp/x/files/partial.safetensors");
        w(".download_cache/y.bin");
        w("old.ckpt.part");
        w("modelsync.db");
        w("models.yaml");
        let skip = |p: &Path| p.ends_with("models.yaml");
        let found: Vec<(String, bool)> = find_models(m, &skip)
            .unwrap()
            .into_iter()
            .map(|f| {
                (
                    f.path.strip_prefix(m).unwrap().display().to_string(),
                    f.is_dir,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("deep/er/q.GGUF".to_owned(), false),
                ("emb".to_owned(), true),
                ("loras/a.safetensors".to_owned(), false),
                ("pipe".to_owned(), true),
            ]
        );
    }

    #[test]
    fn a_folder_at_the_top_is_never_one_model() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), b"{}").unwrap();
        std::fs::write(d.path().join("a.pt"), b"x").unwrap();
        let found = find_models(d.path(), &|_| false).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].path.ends_with("a.pt"));
    }

    #[test]
    fn modes_parse() {
        assert_eq!("register".parse::<SyncMode>().unwrap(), SyncMode::Register);
        assert_eq!(SyncMode::default(), SyncMode::Report);
        assert!("sometimes".parse::<SyncMode>().is_err());
    }
}
