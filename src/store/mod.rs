//! The record store: the seed's `ModelRecordService`.
//!
//! [`RecordStore`] is the API; [`sqlite::SqliteStore`] (the default, `.db`/`.sqlite`) and
//! [`yaml::YamlStore`] (`.yaml`/`.yml`) implement it and pass one shared test suite.
//! [`open`] picks the implementation by extension. [`lock::StoreLock`] is the OS file lock
//! that lets only one process mutate a store at a time.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{AnyModelConfig, InvalidModelConfig, now_micros};
use crate::taxonomy::{BaseModelType, ModelType};

pub mod lock;
pub mod sqlite;
pub mod yaml;

/// The record-store schema version this build reads and writes (`version()`).
pub const STORE_VERSION: &str = "3.2";

/// Errors of the record store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No record with that key (or name).
    #[error("unknown model: {0}")]
    UnknownModel(String),
    /// A record with the same key or path already exists, or a name lookup was ambiguous.
    #[error("duplicate model: {0}")]
    DuplicateModel(String),
    /// The config does not validate.
    #[error(transparent)]
    InvalidModelConfig(#[from] InvalidModelConfig),
    /// The file is not a store of the expected kind, or of a schema this build cannot read.
    #[error("{path}: {reason}")]
    WrongKind { path: PathBuf, reason: String },
    /// SQLite failed.
    #[error("database {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The store file parses as a store but its content is invalid (hand-edited or damaged).
    #[error("{path}: damaged store: {reason}")]
    Damaged { path: PathBuf, reason: String },
    /// A stored record no longer parses (hand-edited or damaged store).
    #[error("{path}: record `{key}` is damaged: {reason}")]
    CorruptRecord {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// Creating or upgrading the SQLite schema failed.
    #[error("database {path}: migrating the schema to version {version} failed")]
    Migration {
        path: PathBuf,
        version: usize,
        #[source]
        source: rusqlite_migration::Error,
    },
    /// A write to a store whose file system is mounted read-only (a `readOnly: true` volume).
    #[error("store {} is on a read-only file system: only list, show, status, diff and verify work there", path.display())]
    ReadOnly { path: PathBuf },
    /// Reading or writing a file failed.
    #[error("accessing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The fingerprint of one file of a model, kept so `apply` can tell "unchanged" without
/// hashing content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelFile {
    /// Path relative to the model's path (`""` when the model is a single file).
    pub relative_path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    /// sha256 of the content, when known (hub LFS files, lock-verified files).
    pub sha256: Option<String>,
}

impl ModelFile {
    /// Fingerprints a file on disk (size and mtime; no content is read).
    pub fn fingerprint(path: &Path, relative_path: impl Into<String>) -> std::io::Result<Self> {
        let md = std::fs::metadata(path)?;
        Ok(Self {
            relative_path: relative_path.into(),
            size: md.len(),
            mtime_ns: mtime_ns(md.modified()?),
            sha256: None,
        })
    }
}

/// Nanoseconds since the Unix epoch (negative before it).
pub fn mtime_ns(t: SystemTime) -> i128 {
    // A u128 of nanoseconds overflows i128 only ~5e21 years from the epoch.
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => i128::try_from(e.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    }
}

/// A change to a record: a whole new config or a sparse dict of fields to merge.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per update; boxing would only add noise at call sites"
)]
pub enum ConfigChange {
    /// Replace the record (its key must match).
    Full(AnyModelConfig),
    /// Merge these fields; `null` clears one. The result is validated as a whole.
    Sparse(serde_json::Map<String, serde_json::Value>),
}

impl From<AnyModelConfig> for ConfigChange {
    fn from(c: AnyModelConfig) -> Self {
        Self::Full(c)
    }
}

impl From<serde_json::Map<String, serde_json::Value>> for ConfigChange {
    fn from(m: serde_json::Map<String, serde_json::Value>) -> Self {
        Self::Sparse(m)
    }
}

/// The seed's `ModelRecordServiceBase`.
///
/// Implementations are internally synchronised (`&self` everywhere) so one store can be
/// shared across threads behind an `Arc`.
pub trait RecordStore: Send + Sync {
    /// Adds a record under `key` (the config's key is set to it). `DuplicateModel` when the
    /// key or the path is taken.
    fn add_model(&self, key: &str, config: AnyModelConfig) -> Result<AnyModelConfig, StoreError>;
    /// Updates a record: full replacement or sparse merge, re-validated as a whole.
    fn update_model(&self, key: &str, change: ConfigChange) -> Result<AnyModelConfig, StoreError>;
    /// Deletes a record (and its file fingerprints). `UnknownModel` when absent.
    fn del_model(&self, key: &str) -> Result<(), StoreError>;
    /// The record with this key, or `UnknownModel`.
    fn get_model(&self, key: &str) -> Result<AnyModelConfig, StoreError>;
    /// Whether a record with this key exists.
    fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Records whose stored path equals `path` (plain string comparison).
    fn search_by_path(&self, path: &str) -> Result<Vec<AnyModelConfig>, StoreError>;
    /// Records matching every given criterion; none given → all records.
    fn search_by_name(
        &self,
        name: Option<&str>,
        base: Option<BaseModelType>,
        model_type: Option<ModelType>,
    ) -> Result<Vec<AnyModelConfig>, StoreError>;
    /// Records carrying all of `tags`.
    fn search_by_tag(&self, tags: &[String]) -> Result<Vec<AnyModelConfig>, StoreError>;
    /// Records whose content hash is `hash`.
    fn search_by_hash(&self, hash: &str) -> Result<Vec<AnyModelConfig>, StoreError>;
    /// Every record, ordered by name then key.
    fn all_models(&self) -> Result<Vec<AnyModelConfig>, StoreError> {
        self.search_by_name(None, None, None)
    }
    /// The records manifest entries `entries` own, and the unmanaged records whose source is
    /// one of `sources`, ordered by name then key: all a plan of those entries alone looks at
    /// (`apply --only`, watch mode's per-entry converge), so its cost follows the entries, not
    /// the store.
    fn search_scope(
        &self,
        entries: &[&str],
        sources: &[&str],
    ) -> Result<Vec<AnyModelConfig>, StoreError> {
        Ok(self
            .all_models()?
            .into_iter()
            .filter(|c| match &c.common().managed {
                Some(m) => entries.contains(&m.entry.as_str()),
                None => sources.contains(&c.common().source.as_str()),
            })
            .collect())
    }
    /// The unique record with this name, base and type: `DuplicateModel` if several,
    /// `UnknownModel` if none.
    fn model_info_by_name(
        &self,
        name: &str,
        base: BaseModelType,
        model_type: ModelType,
    ) -> Result<AnyModelConfig, StoreError> {
        let mut found = self.search_by_name(Some(name), Some(base), Some(model_type))?;
        match found.len() {
            0 => Err(StoreError::UnknownModel(format!(
                "no {model_type} model named `{name}` for base {base}"
            ))),
            1 => Ok(found.remove(0)),
            n => Err(StoreError::DuplicateModel(format!(
                "{n} {model_type} models named `{name}` for base {base}; use a key: {}",
                found
                    .iter()
                    .map(AnyModelConfig::key)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
    /// The store's schema version, `"3.2"`.
    fn version(&self) -> String {
        STORE_VERSION.to_owned()
    }
    /// Replaces the file fingerprints of a record.
    fn set_model_files(&self, key: &str, files: &[ModelFile]) -> Result<(), StoreError>;
    /// The file fingerprints of a record (empty when none were recorded).
    fn model_files(&self, key: &str) -> Result<Vec<ModelFile>, StoreError>;
    /// The recorded files whose sha256 is one of `sha256` (hex, any case), each with its
    /// record's key, ordered by key then path: where bytes already on this machine are, found
    /// without reading every record.
    fn files_by_sha256(&self, sha256: &[&str]) -> Result<Vec<(String, ModelFile)>, StoreError> {
        let mut out = Vec::new();
        if sha256.is_empty() {
            return Ok(out);
        }
        for c in self.all_models()? {
            for f in self.model_files(c.key())? {
                if f.sha256
                    .as_deref()
                    .is_some_and(|h| sha256.iter().any(|w| w.eq_ignore_ascii_case(h)))
                {
                    out.push((c.key().to_owned(), f));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1.relative_path).cmp(&(&b.0, &b.1.relative_path)));
        Ok(out)
    }
    /// The file this store lives in.
    fn location(&self) -> &Path;
}

/// Opens (creating if missing) the store at `path`, picking the implementation by extension:
/// `.db`/`.sqlite`/`.sqlite3` → SQLite, `.yaml`/`.yml` → YAML file. An existing file of the
/// wrong kind or schema is refused with an error naming it.
pub fn open(path: &Path) -> Result<Box<dyn RecordStore>, StoreError> {
    check_kind(path)?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("yaml" | "yml") => Ok(Box::new(yaml::YamlStore::from_db_file(path)?)),
        _ => Ok(Box::new(sqlite::SqliteStore::from_db_file(path)?)),
    }
}

/// Refuses a store path whose extension names no store kind. Every command checks this
/// before anything else (before the store lock, before "no store yet"), so all of them refuse
/// `--database store.txt` alike.
pub fn check_kind(path: &Path) -> Result<(), StoreError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("db" | "sqlite" | "sqlite3" | "yaml" | "yml") => Ok(()),
        _ => Err(StoreError::WrongKind {
            path: path.to_path_buf(),
            reason: "unknown store kind: use a .db/.sqlite file for SQLite or a .yaml/.yml file for the YAML store".into(),
        }),
    }
}

/// Opens the store at `path` for reading only (`list`, `show`, `status`, `diff`, `verify`):
/// nothing is created, migrated or written, so a store on a read-only file system works. An
/// SQLite store older than this build's schema is refused (run a writing command where it is
/// writable). Writes through the returned store fail.
pub fn open_read_only(path: &Path) -> Result<Box<dyn RecordStore>, StoreError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("db" | "sqlite" | "sqlite3") => {
            Ok(Box::new(sqlite::SqliteStore::open_read_only(path)?))
        }
        _ => open(path),
    }
}

/// Whether `path` (or the nearest folder above it that exists) is on a file system mounted
/// read-only.
pub(crate) fn on_read_only_fs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => p = q,
            _ => return false,
        }
    }
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed out-struct we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &raw mut st) };
    rc == 0 && st.f_flag & libc::ST_RDONLY != 0
}

/// The record an update produces: a sparse merge, or a full replacement that keeps the key
/// and creation time. Either way `updated_at` moves.
pub(crate) fn apply_change(
    old: &AnyModelConfig,
    change: ConfigChange,
) -> Result<AnyModelConfig, StoreError> {
    match change {
        ConfigChange::Sparse(fields) => Ok(old.merged(&fields)?),
        ConfigChange::Full(mut new) => {
            if new.key() != old.key() {
                return Err(InvalidModelConfig::Parse(format!(
                    "field `key` cannot be changed (record `{}`, update says `{}`)",
                    old.key(),
                    new.key()
                ))
                .into());
            }
            let c = new.common_mut();
            c.created_at = old.common().created_at;
            c.updated_at = now_micros();
            Ok(new)
        }
    }
}

impl crate::retry::Classify for StoreError {
    fn classify(&self) -> crate::retry::Class {
        use crate::retry::{Class, FailureKind};
        match self {
            Self::Io { source, .. } => Class::of(FailureKind::of_io(source)),
            Self::Sqlite { source, .. }
                if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) =>
            {
                Class::of(FailureKind::DiskFull)
            }
            _ => Class::of(FailureKind::Other),
        }
    }
}
