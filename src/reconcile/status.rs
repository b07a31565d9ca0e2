//! The drift report (`modelsync status`): the seed's `sync_to_config`, made safe — it only
//! reports. Manifest vs store (the plan, without prune), store vs disk (missing files, changed
//! fingerprints, records whose path is gone) and disk vs store (files in models_dir that no
//! record owns).

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
        .filter(|a| a.action != ActionKind::Unchanged)
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
    let orphan_paths = orphan_paths(inventory, store_file)?;
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

/// Files and folders in models_dir that no record owns. Skips modelsync's own: dot-entries at
/// the top (`.tmp`, `.cache`, temp files), the store file and its companions (`-wal`, `-shm`,
/// `.lock`) and `models.lock`. A folder that holds an owned path is descended into; any other
/// unowned entry is reported whole.
pub fn orphan_paths(
    inventory: &Inventory,
    store_file: &Path,
) -> Result<Vec<OrphanPath>, InventoryError> {
    let root = &inventory.models_dir;
    let owned: HashSet<&Path> = inventory
        .records
        .iter()
        .map(|r| r.resolved_path.as_path())
        .collect();
    let store_name = store_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let mut out = Vec::new();
    if !root.is_dir() {
        return Ok(out);
    }
    walk(root, root, &owned, store_name.as_deref(), &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    owned: &HashSet<&Path>,
    store_name: Option<&str>,
    out: &mut Vec<OrphanPath>,
) -> Result<(), InventoryError> {
    let io = |source| InventoryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let top = dir == root;
        if top && (name.starts_with('.') || store_name.is_some_and(|s| name.starts_with(s))) {
            continue;
        }
        if name == "models.lock" || owned.contains(path.as_path()) {
            continue;
        }
        let is_dir = entry.file_type().map_err(io)?.is_dir();
        if is_dir && owned.iter().any(|o| o.starts_with(&path)) {
            walk(root, &path, owned, store_name, out)?;
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
