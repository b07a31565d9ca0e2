//! `modelsync gc`: what can go — stale partial downloads (`models_dir/.tmp`), the download
//! cache (`models_dir/.cache`) and files no record owns. [`collect`] only looks; [`remove`]
//! deletes. The caller holds the store lock while removing, so no apply is staging meanwhile.
//!
//! gc removes only what is modelsync's to remove: never the record store and its companions,
//! the manifest or its lock file (wherever in models_dir they sit: see [`Keep`]), nothing a
//! record owns (including a symlink a record's path goes through), and never what a symlink
//! points at — an orphan symlink is unlinked, its target left alone.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::inventory::{Inventory, InventoryError};
use super::remote::local_size;
pub use super::status::Keep;

/// What kind of garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GarbageKind {
    /// A staging folder or partial download under `.tmp`.
    Partial,
    /// An entry of the download cache `.cache`.
    Cache,
    /// A file or folder in models_dir no record owns.
    Orphan,
}

/// One thing gc would remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Garbage {
    /// What it is.
    pub kind: GarbageKind,
    /// Absolute path.
    pub path: PathBuf,
    /// Bytes it holds.
    pub bytes: u64,
}

/// Lists what gc would remove (no change on disk); nothing `keep` names is listed, nor a
/// partial download under `.tmp` changed less than `min_age` before `now` (a running apply or
/// watch may still be writing it, or resume it next). Returns the list and how many young
/// partials were spared.
pub fn collect(
    inventory: &Inventory,
    keep: &Keep,
    min_age: Duration,
    now: SystemTime,
) -> Result<(Vec<Garbage>, usize), InventoryError> {
    let root = &inventory.models_dir;
    let mut out = Vec::new();
    let mut spared = 0;
    for (dir, kind) in [
        (".tmp", GarbageKind::Partial),
        (".cache", GarbageKind::Cache),
    ] {
        let d = root.join(dir);
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(InventoryError::Io { path: d, source }),
        };
        for e in entries {
            let e = e.map_err(|source| InventoryError::Io {
                path: d.clone(),
                source,
            })?;
            let path = e.path();
            if keep.keeps_path(&path) {
                continue;
            }
            if kind == GarbageKind::Partial
                && crate::install::staging::newest_change(&path, 0)
                    .is_some_and(|t| now.duration_since(t).unwrap_or(Duration::ZERO) < min_age)
            {
                spared += 1;
                continue;
            }
            out.push(Garbage {
                kind,
                bytes: local_size(&path).unwrap_or(0),
                path,
            });
        }
    }
    for o in super::status::orphan_paths(inventory, keep)? {
        out.push(Garbage {
            kind: GarbageKind::Orphan,
            path: root.join(&o.path),
            bytes: o.bytes,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((out, spared))
}

/// Removes what [`collect`] listed; returns the failures (path, why) and keeps going. A
/// symlink is unlinked (`remove_dir_all` does not follow links either).
pub fn remove(items: &[Garbage]) -> Vec<(PathBuf, std::io::Error)> {
    let mut failed = Vec::new();
    for g in items {
        let r = match std::fs::symlink_metadata(&g.path) {
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(&g.path),
            Ok(_) => std::fs::remove_file(&g.path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            failed.push((g.path.clone(), e));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::*;
    use crate::config::ModelSourceType;
    use crate::reconcile::inventory::InventoryRecord;

    fn record(models_dir: &Path, path: &str) -> InventoryRecord {
        let resolved_path = models_dir.join(path);
        InventoryRecord {
            key: "k".into(),
            name: "n".into(),
            managed: None,
            source: String::new(),
            source_type: ModelSourceType::Path,
            model_type: crate::taxonomy::ModelType::Lora,
            format: crate::taxonomy::ModelFormat::Lycoris,
            path: path.into(),
            in_models_dir: resolved_path.starts_with(models_dir),
            path_exists: resolved_path.exists(),
            resolved_path,
            hash: String::new(),
            file_size: 0,
            files: Vec::new(),
            fields: serde_json::Map::new(),
            source_tags: Vec::new(),
        }
    }

    /// A record stored by its real path on another disk, reached from models_dir through a
    /// symlink: the link is owned. A link to nothing of ours is garbage, and removing it
    /// leaves its target.
    #[test]
    fn a_link_to_a_records_real_path_is_owned_and_orphan_links_are_only_unlinked() {
        let d = tempfile::tempdir().unwrap();
        let models = d.path().join("models");
        let disk2 = d.path().join("disk2");
        std::fs::create_dir_all(disk2.join("big")).unwrap();
        std::fs::create_dir_all(&models).unwrap();
        std::fs::write(disk2.join("big/model.safetensors"), b"weights").unwrap();
        std::fs::write(disk2.join("other.bin"), b"not ours").unwrap();
        symlink(disk2.join("big"), models.join("big")).unwrap();
        symlink(disk2.join("other.bin"), models.join("other.bin")).unwrap();
        let abs = disk2.join("big/model.safetensors");
        let inv = Inventory {
            models_dir: models.clone(),
            models_dir_state: crate::reconcile::inventory::DirState::Present,
            records: vec![record(&models, abs.to_str().unwrap())],
        };
        let (items, _) = collect(
            &inv,
            &Keep::default().store(&models.join("modelsync.db")),
            Duration::ZERO,
            SystemTime::now(),
        )
        .unwrap();
        let paths: Vec<_> = items.iter().map(|g| g.path.clone()).collect();
        assert_eq!(paths, vec![models.join("other.bin")]);
        assert!(remove(&items).is_empty());
        assert!(!models.join("other.bin").exists());
        assert!(disk2.join("other.bin").is_file());
        assert!(abs.is_file());
    }
}
