//! The drift report (`modelsync status`): it only reports (`modelsync sync`,
//! [`crate::install::ModelInstallService::sync_to_config`], acts). Manifest vs store (the
//! plan, without prune), store vs disk (missing files, changed fingerprints, records whose
//! path is gone) and disk vs store (files in models_dir that no record owns).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::inventory::{Inventory, InventoryError};
use super::plan::{
    ActionKind, PlanError, PlanOptions, PlannedAction, UnidentifiedRecord, UnmanagedRecord, plan,
};
use crate::manifest::{LockFile, Manifest};

/// A file or folder in models_dir that no record owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanPath {
    /// Path relative to models_dir.
    pub path: PathBuf,
    /// Bytes (a folder: everything under it).
    pub bytes: u64,
    /// Whether it is a folder.
    pub is_dir: bool,
}

/// A record whose model path is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingPath {
    /// Record key.
    pub key: String,
    /// Record name.
    pub name: String,
    /// The entry that owns it, if any.
    pub entry: Option<String>,
    /// The path as resolved.
    pub path: PathBuf,
}

/// The drift report. `-o json` prints it with serde:
///
/// ```json
/// {"models_dir": "/srv/models", "in_sync": 3,
///  "drift": [{"action": "repair", "name": "vae", "source": "…", "key": "…",
///             "reason": "1 file missing", "fetch_bytes": 334643238,
///             "files": ["diffusion_pytorch_model.safetensors"], "spec_hash": "…"}],
///  "missing_paths": [{"key": "…", "name": "myvae", "entry": null, "path": "/srv/models/x"}],
///  "orphan_paths": [{"path": "stray.safetensors", "bytes": 1024, "is_dir": false}],
///  "unmanaged": [{"key": "…", "name": "myvae", "source": "…", "path": "…"}],
///  "unidentified": [{"key": "…", "name": "t5", "entry": "t5", "format": "checkpoint", "hint": "…"}],
///  "drifted": true}
/// ```
///
/// `drift` holds every plan action other than `unchanged` (`install`, `update`, `replace`,
/// `repair`, `upgrade` with `--refresh`, `orphaned`, `error`), with the plan's JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// The models folder.
    pub models_dir: PathBuf,
    /// Entries in sync.
    pub in_sync: usize,
    /// Entries and managed records that differ from the manifest.
    pub drift: Vec<PlannedAction>,
    /// Records (managed or not) whose path is gone.
    pub missing_paths: Vec<MissingPath>,
    /// Files and folders in models_dir no record owns.
    pub orphan_paths: Vec<OrphanPath>,
    /// Records no entry owns (listed; not drift).
    pub unmanaged: Vec<UnmanagedRecord>,
    /// Records of type `unknown` (listed; not drift: they are in sync, but not loadable).
    pub unidentified: Vec<UnidentifiedRecord>,
    /// Whether anything drifted (exit 2).
    pub drifted: bool,
}

/// Builds the report from an inventory (see [`super::observe`]). `upstream_commits` comes from
/// `--refresh` ([`super::remote::upstream_commits`]); empty otherwise.
pub fn status(
    manifest: &Manifest,
    inventory: &Inventory,
    lock: Option<&LockFile>,
    upstream_commits: BTreeMap<String, String>,
    store_file: &Path,
) -> Result<StatusReport, StatusError> {
    let opts = PlanOptions {
        lock,
        upstream_commits,
        ..PlanOptions::default()
    };
    let p = plan(manifest, inventory, &opts)?;
    let drift: Vec<PlannedAction> = p
        .actions
        .iter()
        .filter(|a| a.kind() != ActionKind::Unchanged)
        .cloned()
        .collect();
    let missing_paths: Vec<MissingPath> = inventory
        .records
        .iter()
        .filter(|r| !r.path_exists)
        .map(|r| MissingPath {
            key: r.key.clone(),
            name: r.name.clone(),
            entry: r.entry().map(str::to_owned),
            path: r.resolved_path.clone(),
        })
        .collect();
    let keep = Keep::default()
        .store(store_file)
        .manifest(&manifest.path)
        .file(&manifest.lock_path());
    let orphan_paths = orphan_paths(inventory, &keep)?;
    let drifted = !drift.is_empty() || !missing_paths.is_empty() || !orphan_paths.is_empty();
    Ok(StatusReport {
        models_dir: inventory.models_dir.clone(),
        in_sync: p.totals.unchanged,
        drift,
        missing_paths,
        orphan_paths,
        unmanaged: p.unmanaged,
        unidentified: p.unidentified,
        drifted,
    })
}

/// Errors of the drift report.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No plan (an unmounted volume).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// models_dir cannot be listed.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
}

/// Paths that are never garbage, whatever folder they sit in: the record store and its
/// companions (`-wal`, `-shm`, `-journal`, the store lock), the manifest and its lock file.
/// Built by the caller, who knows where they are; [`orphan_paths`] never reports them (nor a
/// folder that holds one of them as a whole).
#[derive(Debug, Clone, Default)]
pub struct Keep {
    /// Files kept exactly (absolute, symlinks in their folders resolved where they exist).
    files: Vec<PathBuf>,
    /// (folder, name prefix): every entry of that folder whose name starts with the prefix
    /// (the store's companions, including SQLite's own temporary names).
    prefixes: Vec<(PathBuf, std::ffi::OsString)>,
}

impl Keep {
    /// Keeps the store file and everything next to it named after it.
    #[must_use]
    pub fn store(mut self, store_file: &Path) -> Self {
        if let Some(name) = store_file.file_name() {
            let lock = crate::store::lock::StoreLock::lock_path(store_file);
            self.prefixes
                .push((resolve_dir(store_file), name.to_os_string()));
            self = self.file(store_file).file(&lock);
        }
        self
    }

    /// Keeps the manifest and its lock file (`models.yaml` → `models.lock`).
    #[must_use]
    pub fn manifest(self, manifest: &Path) -> Self {
        let lock = crate::manifest::lock::lock_path_for(manifest);
        self.file(manifest).file(&lock)
    }

    /// Keeps one file.
    #[must_use]
    pub fn file(mut self, path: &Path) -> Self {
        if let Some(name) = path.file_name() {
            self.files.push(resolve_dir(path).join(name));
        }
        self
    }

    /// Whether `path` (any form) is kept.
    pub fn keeps_path(&self, path: &Path) -> bool {
        path.file_name()
            .is_some_and(|n| self.keeps(&resolve_dir(path).join(n)))
    }

    fn keeps(&self, resolved: &Path) -> bool {
        if self.files.iter().any(|f| f == resolved) {
            return true;
        }
        let (Some(dir), Some(name)) = (resolved.parent(), resolved.file_name()) else {
            return false;
        };
        self.prefixes
            .iter()
            .any(|(d, p)| d == dir && name.as_encoded_bytes().starts_with(p.as_encoded_bytes()))
    }

    /// Whether a kept path lies under `dir` (absolute, resolved).
    fn under(&self, dir: &Path) -> bool {
        self.files.iter().any(|f| f.starts_with(dir))
            || self.prefixes.iter().any(|(d, _)| d.starts_with(dir))
    }
}

/// `path`'s folder with symlinks resolved (when it exists), joined back to an absolute path;
/// the last component is left alone, so a symlink is named, not followed.
fn resolve_dir(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match abs.parent() {
        Some(dir) => std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        None => abs,
    }
}

/// Files and folders in models_dir that no record owns. Skips modelsync's own: dot-entries at
/// the top (`.tmp`, `.cache`, temp files), `models.lock`, `extra_model_paths.yaml` (written for
/// ComfyUI), and whatever `keep` names (the store
/// and its companions, the manifest, its lock file) wherever in models_dir they sit. A folder
/// that holds an owned or kept path is descended into; any other unowned entry is reported
/// whole.
///
/// A symlink is owned when a record's path goes through it (`models/big` → `/mnt/disk2/big`
/// with the record at `models/big/...`) or when it points at a record's path or a folder
/// holding one; gc unlinks an orphan symlink and never touches what it points at. Symlinked
/// folders are not descended into. In an hf-cache repo (`models--*/`), a record owns its
/// snapshot path, the blobs its links point at and the refs naming its commit; other blobs,
/// refs and snapshots there are orphans.
pub fn orphan_paths(inventory: &Inventory, keep: &Keep) -> Result<Vec<OrphanPath>, InventoryError> {
    let root = &inventory.models_dir;
    let mut out = Vec::new();
    if !root.is_dir() {
        return Ok(out);
    }
    let owned = Owned::new(inventory);
    walk(root, root, &owned, keep, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// What the records own, as stored (resolved against models_dir) and with symlinks resolved.
struct Owned<'a> {
    lexical: HashSet<&'a Path>,
    resolved: Vec<PathBuf>,
    /// hf-cache: the blobs a record's snapshot links to and the refs naming its commit.
    hf: HashSet<PathBuf>,
}

impl<'a> Owned<'a> {
    fn new(inventory: &'a Inventory) -> Self {
        let lexical: HashSet<&Path> = inventory
            .records
            .iter()
            .map(|r| r.resolved_path.as_path())
            .collect();
        let resolved = lexical
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        let mut hf = HashSet::new();
        for p in &lexical {
            if let Some((repo, snapshot)) =
                crate::install::layout::hf_snapshot_of(&inventory.models_dir, p)
            {
                hf.extend(crate::install::layout::linked_blobs(p));
                if let Some(commit) = snapshot.file_name() {
                    hf.extend(crate::install::layout::refs_to(
                        &repo,
                        &commit.to_string_lossy(),
                    ));
                }
            }
        }
        Self {
            lexical,
            resolved,
            hf,
        }
    }

    /// Whether `path` is owned; `real` is it with symlinks resolved.
    fn owns(&self, path: &Path, real: Option<&Path>) -> bool {
        self.lexical.contains(path)
            || self.hf.contains(path)
            || real.is_some_and(|r| self.resolved.iter().any(|o| o == r))
    }

    /// Whether an owned path lies strictly under `path`.
    fn holds(&self, path: &Path, real: Option<&Path>) -> bool {
        self.lexical.iter().any(|o| o.starts_with(path))
            || self.hf.iter().any(|o| o.starts_with(path))
            || real.is_some_and(|r| self.resolved.iter().any(|o| o.starts_with(r)))
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    owned: &Owned<'_>,
    keep: &Keep,
    out: &mut Vec<OrphanPath>,
) -> Result<(), InventoryError> {
    let io = |source| InventoryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let real_dir = std::fs::canonicalize(dir).ok();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let name = entry.file_name();
        if dir == root
            && (name.as_encoded_bytes().starts_with(b".")
                || name == "models.lock"
                || name == crate::install::layout::COMFYUI_PATHS_FILE)
        {
            continue;
        }
        // The entry itself, not what it points at: `real_dir/name`.
        let named = real_dir.as_ref().map(|d| d.join(&name));
        if named.as_ref().is_some_and(|n| keep.keeps(n)) {
            continue;
        }
        let file_type = entry.file_type().map_err(io)?;
        if file_type.is_symlink() {
            let target = std::fs::canonicalize(&path).ok();
            let ours = owned.owns(&path, named.as_deref())
                || owned.holds(&path, named.as_deref())
                || owned.owns(&path, target.as_deref())
                || owned.holds(&path, target.as_deref())
                || target
                    .as_ref()
                    .is_some_and(|t| keep.keeps(t) || keep.under(t));
            if !ours {
                out.push(OrphanPath {
                    path: path.strip_prefix(root).unwrap_or(&path).to_path_buf(),
                    bytes: 0,
                    is_dir: false,
                });
            }
            continue;
        }
        if owned.owns(&path, named.as_deref()) {
            continue;
        }
        let is_dir = file_type.is_dir();
        if is_dir
            && (owned.holds(&path, named.as_deref())
                || named.as_ref().is_some_and(|n| keep.under(n)))
        {
            walk(root, &path, owned, keep, out)?;
            continue;
        }
        out.push(OrphanPath {
            path: path.strip_prefix(root).unwrap_or(&path).to_path_buf(),
            bytes: super::remote::local_size(&path).unwrap_or(0),
            is_dir,
        });
    }
    Ok(())
}
