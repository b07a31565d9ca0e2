//! The YAML file record store (the seed's `ModelRecordServiceFile`).
//!
//! The whole store is one YAML document:
//!
//! ```yaml
//! __metadata__:
//!   version: '3.2'
//! models:
//! - key: 3f1c…
//!   name: sd15
//!   type: main
//!   …
//! model_files:
//!   3f1c…:
//!   - relative_path: ''
//!     size: 2132625894
//!     mtime_ns: 1717000000000000000
//! ```
//!
//! Every write happens under an OS lock on `<file>.write-lock`, re-reads the file first (another
//! process may have changed it), and replaces the file atomically (temp file in the same
//! folder, fsync, rename), so a reader never sees half a store. Reads re-read the file when its
//! size, mtime or inode changed since it was last read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use super::{ConfigChange, ModelFile, RecordStore, STORE_VERSION, StoreError, apply_change};
use crate::config::{AnyModelConfig, InvalidModelConfig};
use crate::taxonomy::{BaseModelType, ModelType};

/// The header key that marks a YAML file as a modelsync store (InvokeAI's name for it).
const METADATA_KEY: &str = "__metadata__";

/// A record store in one YAML file.
#[derive(Debug)]
pub struct YamlStore {
    path: PathBuf,
    write_lock_path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    models: BTreeMap<String, AnyModelConfig>,
    files: BTreeMap<String, Vec<ModelFile>>,
    /// Identity of the file content last read or written.
    stamp: Option<Stamp>,
}

/// What tells a changed file from the one last read (every write renames a new inode in).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
}

impl Stamp {
    fn of(md: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Self {
            len: md.len(),
            modified: md.modified().ok(),
            #[cfg(unix)]
            inode: (md.dev(), md.ino()),
        }
    }
}

/// The header, read on its own first so a YAML file that is not a store is told apart from
/// a damaged store.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "__metadata__")]
    metadata: Option<ProbeMetadata>,
}

#[derive(Deserialize)]
struct ProbeMetadata {
    version: Option<VersionValue>,
}

/// `version: 3.2` written by hand is a YAML float; accept it as well as the string.
#[derive(Deserialize)]
#[serde(untagged)]
enum VersionValue {
    Text(String),
    Number(f64),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    version: String,
}

/// The file as written.
#[derive(Serialize)]
struct DocOut<'a> {
    #[serde(rename = "__metadata__")]
    metadata: Metadata,
    models: Vec<&'a AnyModelConfig>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    model_files: &'a BTreeMap<String, Vec<ModelFile>>,
}

/// The file as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocIn {
    #[serde(rename = "__metadata__")]
    #[allow(dead_code, reason = "checked through `Probe` before the full parse")]
    metadata: serde::de::IgnoredAny,
    #[serde(default)]
    models: Vec<AnyModelConfig>,
    #[serde(default)]
    model_files: BTreeMap<String, Vec<ModelFile>>,
}

impl YamlStore {
    /// Opens the YAML store at `path`, creating and initialising it (and its folder) when
    /// missing or empty. Refuses, without writing to it, a file that is not YAML, a YAML
    /// document that is not a modelsync store, or a store of a newer version.
    pub fn from_db_file(path: &Path) -> Result<Self, StoreError> {
        let store = Self {
            path: path.to_path_buf(),
            write_lock_path: sidecar(path, "write-lock"),
            state: Mutex::new(State::default()),
        };
        let initialised = {
            let mut st = store.state();
            store.refresh(&mut st)?
        };
        if !initialised {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            store.mutate(|_| Ok(()))?;
        }
        Ok(store)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // State is replaced only after a successful write, so a poisoned guard holds a
        // consistent copy.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wrong(&self, reason: impl Into<String>) -> StoreError {
        StoreError::WrongKind {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Re-reads the file if it changed since last time. Returns whether it holds a store
    /// (`false`: missing or empty, to be initialised).
    fn refresh(&self, st: &mut State) -> Result<bool, StoreError> {
        let md = match std::fs::metadata(&self.path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *st = State::default();
                return Ok(false);
            }
            Err(e) => return Err(io(&self.path)(e)),
        };
        let stamp = Stamp::of(&md);
        if st.stamp.as_ref() == Some(&stamp) {
            return Ok(true);
        }
        let bytes = std::fs::read(&self.path).map_err(io(&self.path))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            *st = State::default();
            return Ok(false);
        }
        let (models, files) = self.parse(&bytes)?;
        *st = State {
            models,
            files,
            stamp: Some(stamp),
        };
        Ok(true)
    }

    #[allow(
        clippy::type_complexity,
        reason = "private; the two halves of the state"
    )]
    fn parse(
        &self,
        bytes: &[u8],
    ) -> Result<
        (
            BTreeMap<String, AnyModelConfig>,
            BTreeMap<String, Vec<ModelFile>>,
        ),
        StoreError,
    > {
        if bytes.contains(&0) {
            return Err(self.wrong(
                "not a YAML store (the file is binary; an SQLite store needs a .db/.sqlite name)",
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| self.wrong(format!("not a YAML store (not UTF-8 text: {e})")))?;
        let probe: Probe = serde_saphyr::from_str_with_options(text, crate::manifest::yaml_options(text.len())).map_err(|e| {
            self.wrong(format!(
                "not a modelsync YAML store (expected a mapping with a `{METADATA_KEY}` header): {e}"
            ))
        })?;
        let version = match probe.metadata.and_then(|m| m.version) {
            None => {
                return Err(self.wrong(format!(
                    "a YAML file that is not a modelsync store (no `{METADATA_KEY}.version` header)"
                )));
            }
            Some(VersionValue::Text(s)) => s,
            Some(VersionValue::Number(n)) => n.to_string(),
        };
        if version != STORE_VERSION {
            let newer = parse_version(&version)
                .zip(parse_version(STORE_VERSION))
                .is_some_and(|(v, ours)| v > ours);
            return Err(self.wrong(if newer {
                format!(
                    "store version {version} is newer than this modelsync supports ({STORE_VERSION}); upgrade modelsync"
                )
            } else {
                format!("unsupported store version `{version}` (this modelsync reads {STORE_VERSION})")
            }));
        }
        let doc: DocIn =
            serde_saphyr::from_str_with_options(text, crate::manifest::yaml_options(text.len()))
                .map_err(|e| {
                    let msg = e.to_string();
                    StoreError::Damaged {
                        path: self.path.clone(),
                        reason: msg.strip_prefix("error: ").unwrap_or(&msg).to_owned(),
                    }
                })?;
        let mut models = BTreeMap::new();
        let mut paths: BTreeMap<String, String> = BTreeMap::new();
        for m in doc.models {
            let key = m.key().to_owned();
            if let Some(other) = paths.insert(m.path().to_owned(), key.clone()) {
                return Err(StoreError::CorruptRecord {
                    path: self.path.clone(),
                    key,
                    reason: format!("path `{}` is also used by record `{other}`", m.path()),
                });
            }
            if models.insert(key.clone(), m).is_some() {
                return Err(StoreError::CorruptRecord {
                    path: self.path.clone(),
                    key,
                    reason: "the key appears twice".into(),
                });
            }
        }
        let files = doc
            .model_files
            .into_iter()
            .filter(|(k, _)| models.contains_key(k))
            .collect();
        Ok((models, files))
    }

    /// Runs `f` on the current content under the OS write lock and writes the result. The
    /// in-memory state changes only once the new file is in place.
    fn mutate<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut st = self.state();
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.write_lock_path)
            .map_err(io(&self.write_lock_path))?;
        lock_file.lock().map_err(io(&self.write_lock_path))?;
        // Someone else may have written since our last read; the stamp check can miss a
        // rewrite of equal size within one mtime tick, so read unconditionally here.
        st.stamp = None;
        self.refresh(&mut st)?;
        let mut next = State {
            models: st.models.clone(),
            files: st.files.clone(),
            stamp: None,
        };
        let out = f(&mut next)?;
        next.stamp = Some(self.write_file(&next)?);
        *st = next;
        // Dropping the file releases the lock; unlock explicitly to say so.
        let _ = lock_file.unlock();
        Ok(out)
    }

    fn write_file(&self, st: &State) -> Result<Stamp, StoreError> {
        let mut models: Vec<&AnyModelConfig> = st.models.values().collect();
        models.sort_by(|a, b| (a.name(), a.key()).cmp(&(b.name(), b.key())));
        let doc = DocOut {
            metadata: Metadata {
                version: STORE_VERSION.to_owned(),
            },
            models,
            model_files: &st.files,
        };
        let body = serde_saphyr::to_string(&doc).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(format!("cannot write YAML: {e}")),
        })?;
        let text = format!(
            "# modelsync record store (YAML). modelsync rewrites this file; edit with care.\n{body}"
        );
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".modelsync-store.")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(io(&dir))?;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io(tmp.path()))?;
        if let Ok(md) = std::fs::metadata(&self.path) {
            // Keep the permissions the user gave the store (the temp file starts as 0600).
            let _ = tmp.as_file().set_permissions(md.permissions());
        }
        let file = tmp
            .persist(&self.path)
            .map_err(|e| io(&self.path)(e.error))?;
        #[cfg(unix)]
        if let Ok(d) = File::open(&dir) {
            // Make the rename itself durable.
            let _ = d.sync_all();
        }
        let md = file.metadata().map_err(io(&self.path))?;
        Ok(Stamp::of(&md))
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, StoreError> {
        let mut st = self.state();
        self.refresh(&mut st)?;
        Ok(f(&st))
    }

    fn select(
        &self,
        pred: impl Fn(&AnyModelConfig) -> bool,
    ) -> Result<Vec<AnyModelConfig>, StoreError> {
        self.read(|st| {
            let mut v: Vec<AnyModelConfig> =
                st.models.values().filter(|m| pred(m)).cloned().collect();
            v.sort_by(|a, b| (a.name(), a.key()).cmp(&(b.name(), b.key())));
            v
        })
    }
}

/// Maps an I/O error on `path` to a store error.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, source }
}

/// `a.b.c` → numbers, for comparing store versions.
fn parse_version(v: &str) -> Option<Vec<u64>> {
    v.split('.').map(|p| p.trim().parse().ok()).collect()
}

/// `<path>.<suffix>` next to the store.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

fn check_path_free(st: &State, key: &str, path: &str) -> Result<(), StoreError> {
    match st
        .models
        .values()
        .find(|m| m.path() == path && m.key() != key)
    {
        Some(other) => Err(StoreError::DuplicateModel(format!(
            "path `{path}` is already used by model `{}` ({})",
            other.name(),
            other.key()
        ))),
        None => Ok(()),
    }
}

impl RecordStore for YamlStore {
    fn add_model(
        &self,
        key: &str,
        mut config: AnyModelConfig,
    ) -> Result<AnyModelConfig, StoreError> {
        if key.is_empty() {
            return Err(InvalidModelConfig::Missing("key").into());
        }
        key.clone_into(&mut config.common_mut().key);
        self.mutate(|st| {
            if st.models.contains_key(key) {
                return Err(StoreError::DuplicateModel(format!(
                    "a model with key `{key}` already exists"
                )));
            }
            check_path_free(st, key, config.path())?;
            st.models.insert(key.to_owned(), config.clone());
            Ok(config)
        })
    }

    fn update_model(&self, key: &str, change: ConfigChange) -> Result<AnyModelConfig, StoreError> {
        self.mutate(|st| {
            let old = st
                .models
                .get(key)
                .ok_or_else(|| StoreError::UnknownModel(format!("no model with key `{key}`")))?;
            let new = apply_change(old, change)?;
            check_path_free(st, key, new.path())?;
            st.models.insert(key.to_owned(), new.clone());
            Ok(new)
        })
    }

    fn del_model(&self, key: &str) -> Result<(), StoreError> {
        self.mutate(|st| {
            if st.models.remove(key).is_none() {
                return Err(StoreError::UnknownModel(format!(
                    "no model with key `{key}`"
                )));
            }
            st.files.remove(key);
            Ok(())
        })
    }

    fn get_model(&self, key: &str) -> Result<AnyModelConfig, StoreError> {
        self.read(|st| st.models.get(key).cloned())?
            .ok_or_else(|| StoreError::UnknownModel(format!("no model with key `{key}`")))
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.read(|st| st.models.contains_key(key))
    }

    fn search_by_path(&self, path: &str) -> Result<Vec<AnyModelConfig>, StoreError> {
        self.select(|m| m.path() == path)
    }

    fn search_by_name(
        &self,
        name: Option<&str>,
        base: Option<BaseModelType>,
        model_type: Option<ModelType>,
    ) -> Result<Vec<AnyModelConfig>, StoreError> {
        self.select(|m| {
            name.is_none_or(|n| m.name() == n)
                && base.is_none_or(|b| m.base() == b)
                && model_type.is_none_or(|t| m.model_type() == t)
        })
    }

    fn search_by_tag(&self, tags: &[String]) -> Result<Vec<AnyModelConfig>, StoreError> {
        self.select(|m| tags.iter().all(|t| m.common().tags.contains(t)))
    }

    fn search_by_hash(&self, hash: &str) -> Result<Vec<AnyModelConfig>, StoreError> {
        self.select(|m| m.common().hash == hash)
    }

    fn set_model_files(&self, key: &str, files: &[ModelFile]) -> Result<(), StoreError> {
        self.mutate(|st| {
            if !st.models.contains_key(key) {
                return Err(StoreError::UnknownModel(format!(
                    "no model with key `{key}`"
                )));
            }
            // Same rule as the SQLite table's primary key: one entry per path, the last wins.
            let files: Vec<ModelFile> = files
                .iter()
                .map(|f| (f.relative_path.as_str(), f.clone()))
                .collect::<BTreeMap<_, _>>()
                .into_values()
                .collect();
            if files.is_empty() {
                st.files.remove(key);
            } else {
                st.files.insert(key.to_owned(), files);
            }
            Ok(())
        })
    }

    fn model_files(&self, key: &str) -> Result<Vec<ModelFile>, StoreError> {
        self.read(|st| st.files.get(key).cloned().unwrap_or_default())
    }

    fn location(&self) -> &Path {
        &self.path
    }
}
