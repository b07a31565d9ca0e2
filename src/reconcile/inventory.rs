//! What is there: the store's records and their files on disk, observed without reading any
//! file content (sizes and mtimes only), so observing hundreds of models takes milliseconds.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Managed, ModelSourceType};
use crate::store::{ModelFile, RecordStore, StoreError};
use crate::taxonomy::{ModelFormat, ModelType};

/// Errors of observing.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The store failed.
    #[error("reading the record store")]
    Store(#[from] StoreError),
    /// models_dir exists but cannot be listed.
    #[error("cannot list models folder {}", path.display())]
    Io {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The state of models_dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DirState {
    /// Exists and holds something besides the store and modelsync's own dot-folders.
    Present,
    /// Exists but holds nothing of ours.
    Empty,
    /// Does not exist.
    Missing,
}

/// How one recorded file compares with the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FileStatus {
    /// Size and mtime as recorded.
    Ok,
    /// Not there.
    Missing,
    /// There, with another size or mtime.
    Changed {
        /// Size now.
        size: u64,
        /// mtime now, ns since the epoch.
        mtime_ns: i128,
    },
    /// There, but its metadata cannot be read.
    Unreadable {
        /// Why.
        error: String,
    },
}

/// One recorded file and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileState {
    /// The fingerprint the store holds.
    pub recorded: ModelFile,
    /// The comparison with the disk.
    pub status: FileStatus,
}

/// One record, as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryRecord {
    /// Record key.
    pub key: String,
    /// Record name.
    pub name: String,
    /// Model type (`unknown` when no probe rule identified it).
    pub model_type: ModelType,
    /// Model format.
    pub format: ModelFormat,
    /// Manifest ownership (`None`: unmanaged, from `import`).
    pub managed: Option<Managed>,
    /// The source the record was installed from (canonical form when apply installed it).
    pub source: String,
    /// Kind of source.
    pub source_type: ModelSourceType,
    /// Stored path (absolute, or relative to models_dir).
    pub path: String,
    /// `path` resolved against models_dir.
    pub resolved_path: PathBuf,
    /// Whether `resolved_path` lies inside models_dir (inplace models usually do not).
    pub in_models_dir: bool,
    /// Whether `resolved_path` exists.
    pub path_exists: bool,
    /// Content hash, `algo:hex`.
    pub hash: String,
    /// Bytes on disk when installed.
    pub file_size: u64,
    /// Recorded files and their states (empty when the store has no fingerprints).
    pub files: Vec<FileState>,
    /// The record's fields as JSON (without `source_api_response`): what an update would
    /// change is told from these.
    #[serde(skip)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The tags the source gave (the Hub's), which the record carries besides the manifest's.
    #[serde(skip)]
    pub source_tags: Vec<String>,
}

impl InventoryRecord {
    /// The entry name when a manifest entry owns this record.
    pub fn entry(&self) -> Option<&str> {
        self.managed.as_ref().map(|m| m.entry.as_str())
    }

    /// Recorded files that are gone.
    pub fn missing_files(&self) -> impl Iterator<Item = &FileState> {
        self.files
            .iter()
            .filter(|f| matches!(f.status, FileStatus::Missing))
    }

    /// Recorded files whose fingerprint changed or cannot be read.
    pub fn changed_files(&self) -> impl Iterator<Item = &FileState> {
        self.files.iter().filter(|f| {
            matches!(
                f.status,
                FileStatus::Changed { .. } | FileStatus::Unreadable { .. }
            )
        })
    }

    /// Whether the model's path exists and every recorded file is as recorded.
    pub fn is_intact(&self) -> bool {
        self.path_exists && self.files.iter().all(|f| f.status == FileStatus::Ok)
    }
}

/// Everything the plan needs to know about the store and the disk. Plain data: tests build
/// it by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// The models folder observed.
    pub models_dir: PathBuf,
    /// Its state.
    pub models_dir_state: DirState,
    /// Every record, in the store's order (name, then key).
    pub records: Vec<InventoryRecord>,
}

impl Inventory {
    /// An inventory with no records and a present models_dir.
    pub fn empty(models_dir: impl Into<PathBuf>) -> Self {
        Self {
            models_dir: models_dir.into(),
            models_dir_state: DirState::Present,
            records: Vec::new(),
        }
    }

    /// True when the store has records inside models_dir but models_dir is missing or empty:
    /// the volume is probably not mounted, and nothing may be repaired or deleted. Records
    /// that live elsewhere (inplace models) do not count.
    pub fn volume_suspect(&self) -> bool {
        self.models_dir_state != DirState::Present && self.records.iter().any(|r| r.in_models_dir)
    }
}

/// Observes the store and the disk. Reads every record and its file fingerprints, and stats
/// each recorded file (no content is read).
///
/// models_dir counts as empty when it holds nothing but the store's own files (the database,
/// its `-wal`/`-shm`/lock companions) and dot-entries (`.tmp`, `.cache`): a store inside an
/// unmounted mount point looks exactly like that.
pub fn observe(store: &dyn RecordStore, models_dir: &Path) -> Result<Inventory, InventoryError> {
    let models_dir_state = dir_state(models_dir, store.location())?;
    let configs = store.all_models()?;
    observe_records(store, models_dir, models_dir_state, configs)
}

/// [`observe`] of the records a plan of some entries alone looks at: those the entries own,
/// and the unmanaged records with one of `sources` (their canonical sources, for adoption)
/// ([`RecordStore::search_scope`]), so converging one entry costs that entry, not the store.
/// When models_dir is missing or empty every record is observed, as [`observe`] does: telling
/// an unmounted volume needs them all.
pub fn observe_scope(
    store: &dyn RecordStore,
    models_dir: &Path,
    entries: &[&str],
    sources: &[&str],
) -> Result<Inventory, InventoryError> {
    let models_dir_state = dir_state(models_dir, store.location())?;
    let configs = if models_dir_state == DirState::Present {
        store.search_scope(entries, sources)?
    } else {
        store.all_models()?
    };
    observe_records(store, models_dir, models_dir_state, configs)
}

fn observe_records(
    store: &dyn RecordStore,
    models_dir: &Path,
    models_dir_state: DirState,
    configs: Vec<crate::config::AnyModelConfig>,
) -> Result<Inventory, InventoryError> {
    let mut records = Vec::new();
    for config in configs {
        let c = config.common();
        let resolved_path = config.resolved_path(models_dir);
        let recorded = store.model_files(&c.key)?;
        let single_file = recorded.len() == 1 && recorded[0].relative_path.is_empty();
        let files = recorded
            .into_iter()
            .map(|f| {
                let p = if single_file || f.relative_path.is_empty() {
                    resolved_path.clone()
                } else {
                    resolved_path.join(&f.relative_path)
                };
                let status = compare(&p, &f);
                FileState {
                    recorded: f,
                    status,
                }
            })
            .collect();
        let source_tags = c
            .source_api_response
            .as_ref()
            .and_then(|v| crate::hub::HuggingFaceMetadata::from_json_value(v).ok())
            .map(|m| m.tags.into_iter().collect())
            .unwrap_or_default();
        let mut fields = match config.to_json() {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        fields.remove("source_api_response");
        records.push(InventoryRecord {
            key: c.key.clone(),
            name: c.name.clone(),
            model_type: config.model_type(),
            format: config.format(),
            managed: c.managed.clone(),
            source: c.source.clone(),
            source_type: c.source_type,
            path: c.path.clone(),
            in_models_dir: resolved_path.starts_with(models_dir),
            path_exists: resolved_path.exists(),
            resolved_path,
            hash: c.hash.clone(),
            file_size: c.file_size,
            files,
            fields,
            source_tags,
        });
    }
    Ok(Inventory {
        models_dir: models_dir.to_path_buf(),
        models_dir_state,
        records,
    })
}

fn compare(path: &Path, f: &ModelFile) -> FileStatus {
    match std::fs::metadata(path) {
        Ok(md) => {
            let mtime_ns = md.modified().map_or(i128::MIN, crate::store::mtime_ns);
            if md.len() == f.size && mtime_ns == f.mtime_ns {
                FileStatus::Ok
            } else {
                FileStatus::Changed {
                    size: md.len(),
                    mtime_ns,
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileStatus::Missing,
        Err(e) => FileStatus::Unreadable {
            error: e.to_string(),
        },
    }
}

/// models_dir's state (see [`observe`]), without reading the store.
pub(crate) fn dir_state(models_dir: &Path, store_file: &Path) -> Result<DirState, InventoryError> {
    let entries = match std::fs::read_dir(models_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirState::Missing),
        Err(source) => {
            return Err(InventoryError::Io {
                path: models_dir.to_path_buf(),
                source,
            });
        }
    };
    let store_name = store_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    for entry in entries {
        let entry = entry.map_err(|source| InventoryError::Io {
            path: models_dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours =
            name.starts_with('.') || store_name.as_deref().is_some_and(|s| name.starts_with(s));
        if !ours {
            return Ok(DirState::Present);
        }
    }
    Ok(DirState::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in memory: enough of the trait for `observe` (the real stores have their own
    /// suite; this one keeps observe's test independent of them).
    struct MemStore {
        location: PathBuf,
        records: Vec<crate::AnyModelConfig>,
        files: std::collections::HashMap<String, Vec<ModelFile>>,
    }

    impl RecordStore for MemStore {
        fn add_model(
            &self,
            _: &str,
            _: crate::AnyModelConfig,
        ) -> Result<crate::AnyModelConfig, StoreError> {
            unimplemented!("observe only reads")
        }
        fn update_model(
            &self,
            _: &str,
            _: crate::store::ConfigChange,
        ) -> Result<crate::AnyModelConfig, StoreError> {
            unimplemented!("observe only reads")
        }
        fn del_model(&self, _: &str) -> Result<(), StoreError> {
            unimplemented!("observe only reads")
        }
        fn get_model(&self, key: &str) -> Result<crate::AnyModelConfig, StoreError> {
            self.records
                .iter()
                .find(|r| r.key() == key)
                .cloned()
                .ok_or_else(|| StoreError::UnknownModel(key.into()))
        }
        fn exists(&self, key: &str) -> Result<bool, StoreError> {
            Ok(self.records.iter().any(|r| r.key() == key))
        }
        fn search_by_path(&self, _: &str) -> Result<Vec<crate::AnyModelConfig>, StoreError> {
            Ok(Vec::new())
        }
        fn search_by_name(
            &self,
            _: Option<&str>,
            _: Option<crate::taxonomy::BaseModelType>,
            _: Option<crate::taxonomy::ModelType>,
        ) -> Result<Vec<crate::AnyModelConfig>, StoreError> {
            Ok(self.records.clone())
        }
        fn search_by_tag(&self, _: &[String]) -> Result<Vec<crate::AnyModelConfig>, StoreError> {
            Ok(Vec::new())
        }
        fn search_by_hash(&self, _: &str) -> Result<Vec<crate::AnyModelConfig>, StoreError> {
            Ok(Vec::new())
        }
        fn set_model_files(&self, _: &str, _: &[ModelFile]) -> Result<(), StoreError> {
            unimplemented!("observe only reads")
        }
        fn model_files(&self, key: &str) -> Result<Vec<ModelFile>, StoreError> {
            Ok(self.files.get(key).cloned().unwrap_or_default())
        }
        fn location(&self) -> &Path {
            &self.location
        }
    }

    #[test]
    fn observe_reads_records_and_compares_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        std::fs::create_dir_all(models.join("k1")).unwrap();
        std::fs::write(models.join("k1/a.safetensors"), b"aaaa").unwrap();
        std::fs::write(models.join("k1/b.safetensors"), b"bb").unwrap();
        std::fs::write(models.join("single.safetensors"), b"s").unwrap();
        let fp = |p: &str, rel: &str| ModelFile::fingerprint(&models.join(p), rel).unwrap();
        let k1_files = vec![
            fp("k1/a.safetensors", "a.safetensors"),
            fp("k1/b.safetensors", "b.safetensors"),
            ModelFile {
                relative_path: "gone.json".into(),
                size: 3,
                mtime_ns: 0,
                sha256: None,
            },
        ];
        let single = vec![fp("single.safetensors", "")];
        std::fs::write(models.join("k1/b.safetensors"), b"changed").unwrap();
        let rec = |key: &str, path: &str, entry: Option<&str>| {
            let mut v = serde_json::json!({"key": key, "name": key, "type": "lora", "format": "lycoris",
                "base": "sd-1", "path": path, "hash": "blake3:00", "source": "owner/x"});
            if let Some(e) = entry {
                v["managed"] = serde_json::json!({"entry": e, "spec_hash": "src:x;rec:y"});
            }
            crate::AnyModelConfig::from_json(v).unwrap()
        };
        let store = MemStore {
            location: models.join("modelsync.db"),
            records: vec![
                rec("k1", "k1", Some("one")),
                rec("k2", "single.safetensors", None),
                rec("k3", "/nonexistent/elsewhere.safetensors", Some("three")),
            ],
            files: [("k1".to_owned(), k1_files), ("k2".to_owned(), single)].into(),
        };
        let inv = observe(&store, &models).unwrap();
        assert_eq!(inv.models_dir_state, DirState::Present);
        assert!(!inv.volume_suspect());
        let k1 = &inv.records[0];
        assert_eq!(k1.entry(), Some("one"));
        assert_eq!(k1.resolved_path, models.join("k1"));
        assert!(k1.in_models_dir && k1.path_exists && !k1.is_intact());
        let states: Vec<_> = k1.files.iter().map(|f| &f.status).collect();
        assert_eq!(states[0], &FileStatus::Ok);
        assert!(matches!(states[1], FileStatus::Changed { size: 7, .. }));
        assert_eq!(states[2], &FileStatus::Missing);
        let k2 = &inv.records[1];
        assert!(k2.managed.is_none() && k2.is_intact());
        let k3 = &inv.records[2];
        assert!(!k3.in_models_dir && !k3.path_exists);

        // The same store against an empty folder: the volume is suspect.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let inv = observe(&store, &empty).unwrap();
        assert_eq!(inv.models_dir_state, DirState::Empty);
        assert!(inv.volume_suspect());
    }

    #[test]
    fn dir_states() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("modelsync.db");
        assert_eq!(
            dir_state(&dir.path().join("nope"), &db).unwrap(),
            DirState::Missing
        );
        assert_eq!(dir_state(dir.path(), &db).unwrap(), DirState::Empty);
        std::fs::write(&db, b"").unwrap();
        std::fs::write(dir.path().join("modelsync.db-wal"), b"").unwrap();
        std::fs::create_dir(dir.path().join(".tmp")).unwrap();
        assert_eq!(dir_state(dir.path(), &db).unwrap(), DirState::Empty);
        std::fs::create_dir(dir.path().join("abc")).unwrap();
        assert_eq!(dir_state(dir.path(), &db).unwrap(), DirState::Present);
    }

    #[test]
    fn fingerprints_compare_without_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        std::fs::write(&p, b"weights").unwrap();
        let fp = ModelFile::fingerprint(&p, "").unwrap();
        assert_eq!(compare(&p, &fp), FileStatus::Ok);
        std::fs::write(&p, b"weights, changed").unwrap();
        assert!(matches!(
            compare(&p, &fp),
            FileStatus::Changed { size: 16, .. }
        ));
        std::fs::remove_file(&p).unwrap();
        assert_eq!(compare(&p, &fp), FileStatus::Missing);
    }
}
