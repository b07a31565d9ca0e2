//! `models.lock`: what `apply` resolved, so `apply --locked` (CI) can insist on exactly that.
//!
//! YAML, next to the manifest (`models.yaml` → `models.lock`) unless `settings.lock_file` or
//! `--lock-file` puts it elsewhere (a manifest on a read-only mount), written atomically (a temp file
//! in the same folder, then a rename) in a deterministic order: entries sorted by name, files
//! by path, fields in declaration order. Shape:
//!
//! ```yaml
//! # models.lock: written by `modelsync apply`; do not edit.
//! version: 1
//! entries:
//!   sd15:
//!     source: runwayml/stable-diffusion-v1-5:fp16   # canonical, never with a token
//!     revision: main                                # as requested (absent: default branch)
//!     resolved_commit: 0123…                        # hub sources only
//!     files:
//!       - path: unet/diffusion_pytorch_model.fp16.safetensors
//!         size: 1719125304
//!         sha256: 3b8f…
//!     record_hash: blake3:…                          # the record's content hash
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Manifest, ModelEntry};

/// The lock format version this build reads and writes.
pub const LOCK_VERSION: u32 = 1;

const HEADER: &str = "# models.lock: written by `modelsync apply`; do not edit.\n";

/// Errors of reading or writing the lock file.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Reading or writing failed.
    #[error("lock file {}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The lock file.
        path: PathBuf,
        /// Line (0 when unknown).
        line: u64,
        /// Column (0 when unknown).
        column: u64,
        /// What is wrong.
        message: String,
    },
    /// A lock of another format version.
    #[error("lock file {}: format version {found}, this modelsync reads {LOCK_VERSION}; delete it and run `modelsync apply` to rewrite it", path.display())]
    Version {
        /// The lock file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// Serialising failed (a bug).
    #[error("lock file {}: cannot serialise: {message}", path.display())]
    Serialize {
        /// The lock file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// One file an entry installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    /// Path relative to the model's root (`/` separators; the file name for single files).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 hex of the content, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What one entry resolved to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// The canonical source string (never a token).
    pub source: String,
    /// The revision as requested (hub sources), absent for the default branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The commit the revision resolved to (hub sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_commit: Option<String>,
    /// Files, sorted by path when written.
    #[serde(default)]
    pub files: Vec<LockedFile>,
    /// The record's content hash (`algo:hex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_hash: Option<String>,
}

impl LockEntry {
    /// Total bytes of the entry's files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Whether this lock entry was written for `entry`'s current source (so its files and
    /// commit still describe what the entry asks for).
    pub fn matches(&self, entry: &ModelEntry) -> bool {
        self.source == entry.canonical_source()
    }
}

/// The whole lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Format version (1).
    pub version: u32,
    /// Per entry name.
    #[serde(default)]
    pub entries: BTreeMap<String, LockEntry>,
}

impl Default for LockFile {
    fn default() -> Self {
        Self {
            version: LOCK_VERSION,
            entries: BTreeMap::new(),
        }
    }
}

/// The lock path for a manifest path: same folder and stem, extension `.lock`.
pub fn lock_path_for(manifest: &Path) -> PathBuf {
    manifest.with_extension("lock")
}

impl LockFile {
    /// An empty lock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a lock file; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, LockError> {
        #[cfg(test)]
        test_reads::count(path);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            // A path under a non-directory cannot hold a lock either.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None);
            }
            Err(source) => {
                return Err(LockError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::parse(&text, path).map(Some)
    }

    /// Parses lock text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, LockError> {
        let lock: Self = serde_saphyr::from_str_with_options(text, super::yaml_options(text.len()))
            .map_err(|e| {
                let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                LockError::Parse {
                    path: path.to_path_buf(),
                    line,
                    column,
                    message: serde_saphyr::MessageFormatter::format_message(
                        &serde_saphyr::DefaultMessageFormatter,
                        e.without_snippet(),
                    )
                    .into_owned(),
                }
            })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError::Version {
                path: path.to_path_buf(),
                found: lock.version,
            });
        }
        Ok(lock)
    }

    /// Puts each entry's files in path order, the order [`write`](Self::write) uses, so that
    /// two locks that would write the same file compare equal.
    pub fn normalize(&mut self) {
        for e in self.entries.values_mut() {
            e.files.sort_by(|a, b| a.path.cmp(&b.path));
        }
    }

    /// The text [`write`](Self::write) puts in the file.
    pub fn to_yaml(&self, path: &Path) -> Result<String, LockError> {
        let mut sorted = self.clone();
        for e in sorted.entries.values_mut() {
            e.files.sort_by(|a, b| a.path.cmp(&b.path));
        }
        let body = serde_saphyr::to_string(&sorted).map_err(|e| LockError::Serialize {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(format!("{HEADER}{body}"))
    }

    /// Writes the lock atomically: a temp file in the same folder, synced, then renamed over
    /// `path`, so a reader sees the old lock or the new one, never half of one.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let text = self.to_yaml(path)?;
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        // `settings.lock_file` may name a folder that does not exist yet.
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(".models.lock.")
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(text.as_bytes()).map_err(io)?;
        // Temp files are created 0600; a lock is meant to be shared like the manifest.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io)?;
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Drops entries whose manifest entry is gone; returns their names.
    pub fn retain_manifest(&mut self, manifest: &Manifest) -> Vec<String> {
        let keep: std::collections::HashSet<&str> =
            manifest.models.iter().map(|e| e.name.as_str()).collect();
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|k| !keep.contains(k.as_str()))
            .cloned()
            .collect();
        for k in &gone {
            self.entries.remove(k);
        }
        gone
    }

    /// The lock entry for a manifest entry, only when it was written for the entry's current
    /// source.
    pub fn entry_for(&self, entry: &ModelEntry) -> Option<&LockEntry> {
        self.entries.get(&entry.name).filter(|l| l.matches(entry))
    }
}

/// How often each lock path was read, for tests that count reads (paths are unique per test,
/// so tests running at once do not disturb each other).
#[cfg(test)]
pub(crate) mod test_reads {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static READS: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

    pub(super) fn count(path: &Path) {
        *READS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(path.to_path_buf())
            .or_default() += 1;
    }

    /// Reads of `path` so far.
    pub(crate) fn of(path: &Path) -> usize {
        READS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LockFile {
        let mut l = LockFile::new();
        l.entries.insert(
            "zeta".into(),
            LockEntry {
                source: "owner/zeta:fp16".into(),
                revision: None,
                resolved_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                files: vec![
                    LockedFile {
                        path: "b.safetensors".into(),
                        size: 2,
                        sha256: Some("00".repeat(32)),
                    },
                    LockedFile {
                        path: "a/config.json".into(),
                        size: 1,
                        sha256: None,
                    },
                ],
                record_hash: Some("blake3:ff".into()),
            },
        );
        l.entries.insert(
            "alpha".into(),
            LockEntry {
                source: "/models/lora.safetensors".into(),
                files: vec![LockedFile {
                    path: "lora.safetensors".into(),
                    size: 1_000_000_000_000,
                    sha256: Some("12".repeat(32)),
                }],
                ..LockEntry::default()
            },
        );
        l
    }

    #[test]
    fn round_trip_is_deterministic_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.lock");
        assert_eq!(LockFile::read(&path).unwrap(), None);
        let l = sample();
        l.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        assert!(text.find("alpha").unwrap() < text.find("zeta").unwrap());
        assert!(text.find("a/config.json").unwrap() < text.find("b.safetensors").unwrap());
        let back = LockFile::read(&path).unwrap().unwrap();
        assert_eq!(back.entries["zeta"].files[0].path, "a/config.json");
        assert_eq!(back.entries["alpha"].total_size(), 1_000_000_000_000);
        assert_eq!(back.to_yaml(&path).unwrap(), text);
        // Nothing but the lock is left in the folder.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("models.lock")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }

    #[test]
    fn bad_locks_say_where() {
        let p = Path::new("models.lock");
        let e = LockFile::parse("version: 1\nentries:\n  a:\n    sorce: x\n", p).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("models.lock:4:5: unknown field `sorce`"),
            "{e}"
        );
        let e = LockFile::parse("version: 2\n", p).unwrap_err();
        assert!(e.to_string().contains("format version 2"), "{e}");
    }

    #[test]
    fn lock_path_is_next_to_the_manifest() {
        assert_eq!(
            lock_path_for(Path::new("/a/models.yaml")),
            PathBuf::from("/a/models.lock")
        );
        assert_eq!(lock_path_for(Path::new("ci.yml")), PathBuf::from("ci.lock"));
    }
}
