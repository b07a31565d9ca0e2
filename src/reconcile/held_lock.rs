//! `models.lock` held in memory by a long-lived process (watch mode's converger).
//!
//! Applies given a [`HeldLock`] (through [`ApplyContext::held_lock`](super::ApplyContext))
//! read and merge the memory copy instead of parsing and rewriting the YAML file each time;
//! the file is written by [`HeldLock::flush`], which the converger calls once per batch,
//! atomically (temp file + rename, [`LockFile::write`]). [`HeldLock::reload`] (once per
//! resync) takes the file again when someone else changed it, and rewrites it when it was
//! lost. A file that cannot be written (a read-only ConfigMap mount) is reported once and
//! tried again at the next flush; nothing about converging depends on it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::apply::ReconcileEvent;
use crate::events::Reporter;
use crate::manifest::{LockError, LockFile};

/// The lock of one manifest, kept in memory. See the module docs.
#[derive(Debug)]
pub struct HeldLock {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `None` until first read (or after a read failed, so the next use reads again).
    lock: Option<Arc<LockFile>>,
    /// Hash of the file's text as last read or written (`None`: no file).
    on_disk: Option<blake3::Hash>,
    /// The memory copy differs from the file.
    dirty: bool,
    /// A failed write was reported already.
    reported_unwritable: bool,
    /// Reads of the file (parses), for tests and diagnostics.
    reads: u64,
    /// Writes of the file.
    writes: u64,
}

impl HeldLock {
    /// Holds the lock at `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock as held now (read from the file on first use). Cheap: a shared copy.
    pub fn snapshot(&self) -> Result<Arc<LockFile>, LockError> {
        let mut inner = self.inner();
        if let Some(l) = &inner.lock {
            return Ok(Arc::clone(l));
        }
        self.read_into(&mut inner)
    }

    /// A copy of the lock with only the entries `names` (read from the file on first use):
    /// what a per-entry apply plans with. O(names), and holding it keeps no share of the memory
    /// copy, so a later [`Self::edit`] changes that in place instead of copying every entry.
    pub fn subset(&self, names: &[String]) -> Result<Arc<LockFile>, LockError> {
        let mut inner = self.inner();
        let lock = match &inner.lock {
            Some(l) => Arc::clone(l),
            None => self.read_into(&mut inner)?,
        };
        Ok(Arc::new(LockFile {
            version: lock.version,
            entries: names
                .iter()
                .filter_map(|n| Some((n.clone(), lock.entries.get(n)?.clone())))
                .collect(),
        }))
    }

    /// Looks at the file once (a resync): text changed by someone else is taken (unless the
    /// memory copy has changes not yet written, which win); a lost file is marked to be
    /// written again. A file that does not parse is an error, here and at every use until it
    /// is fixed.
    pub fn reload(&self) -> Result<Arc<LockFile>, LockError> {
        let mut inner = self.inner();
        let Some(held) = inner.lock.clone() else {
            return self.read_into(&mut inner);
        };
        if inner.dirty {
            return Ok(held);
        }
        match read_text(&self.path)? {
            None => {
                if inner.on_disk.is_some() || !held.entries.is_empty() {
                    inner.on_disk = None;
                    inner.dirty = true;
                }
                Ok(held)
            }
            Some(text) if Some(blake3::hash(text.as_bytes())) == inner.on_disk => Ok(held),
            Some(_) => self.read_into(&mut inner),
        }
    }

    fn read_into(&self, inner: &mut Inner) -> Result<Arc<LockFile>, LockError> {
        inner.lock = None;
        inner.reads += 1;
        let text = read_text(&self.path)?;
        let lock = match &text {
            Some(t) => LockFile::parse(t, &self.path)?,
            None => LockFile::default(),
        };
        inner.on_disk = text.map(|t| blake3::hash(t.as_bytes()));
        inner.dirty = false;
        let lock = Arc::new(lock);
        inner.lock = Some(Arc::clone(&lock));
        Ok(lock)
    }

    /// Lets `edit` change the memory copy; the entries named in `touched` (and the number of
    /// entries) tell whether it changed, without comparing the whole lock. Returns what
    /// `edit` returns.
    pub fn edit<'n, T>(
        &self,
        touched: impl IntoIterator<Item = &'n str>,
        edit: impl FnOnce(&mut LockFile) -> T,
    ) -> Result<T, LockError> {
        let mut inner = self.inner();
        if inner.lock.is_none() {
            self.read_into(&mut inner)?;
        }
        let Some(held) = inner.lock.as_mut() else {
            unreachable!("read_into sets the lock");
        };
        let lock = Arc::make_mut(held);
        let names: Vec<&str> = touched.into_iter().collect();
        let before: Vec<_> = names
            .iter()
            .map(|n| lock.entries.get(*n).cloned())
            .collect();
        let len = lock.entries.len();
        let out = edit(lock);
        let changed = lock.entries.len() != len
            || names
                .iter()
                .zip(&before)
                .any(|(n, b)| lock.entries.get(*n) != b.as_ref());
        inner.dirty |= changed;
        Ok(out)
    }

    /// Writes the memory copy when it differs from the file (atomically); reports
    /// [`ReconcileEvent::LockWritten`], or [`ReconcileEvent::LockNotWritten`] the first time a
    /// write fails.
    pub fn flush(&self, reporter: &dyn Reporter<ReconcileEvent>) {
        let mut inner = self.inner();
        if !inner.dirty {
            return;
        }
        let Some(lock) = inner.lock.clone() else {
            return;
        };
        let text = match lock.to_yaml(&self.path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("{}", crate::retry::one_line(&e));
                return;
            }
        };
        match lock.write(&self.path) {
            Ok(()) => {
                inner.writes += 1;
                inner.on_disk = Some(blake3::hash(text.as_bytes()));
                inner.dirty = false;
                inner.reported_unwritable = false;
                reporter.report(&ReconcileEvent::LockWritten {
                    path: self.path.clone(),
                    dropped: Vec::new(),
                });
            }
            Err(e) => {
                if !inner.reported_unwritable {
                    inner.reported_unwritable = true;
                    let error = match &e {
                        LockError::Io { source, .. } => source.to_string(),
                        other => other.to_string(),
                    };
                    reporter.report(&ReconcileEvent::LockNotWritten {
                        path: self.path.clone(),
                        error,
                    });
                }
            }
        }
    }

    /// How often the file was read (parsed) and written since this was made.
    pub fn io_counts(&self) -> (u64, u64) {
        let inner = self.inner();
        (inner.reads, inner.writes)
    }
}

fn read_text(path: &Path) -> Result<Option<String>, LockError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        // A path under a non-directory cannot hold a lock either.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(LockError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::LockEntry;

    fn entry(source: &str) -> LockEntry {
        LockEntry {
            source: source.into(),
            ..LockEntry::default()
        }
    }

    /// A per-entry apply plans with a subset of the lock: its entries only, and no share of
    /// the memory copy, so its edit changes that copy in place (a held snapshot makes the edit
    /// copy every entry first).
    #[test]
    fn a_subset_holds_its_entries_alone_and_edits_copy_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let held = HeldLock::new(dir.path().join("models.lock"));
        held.edit([], |l| {
            for i in 0..100 {
                l.entries.insert(format!("e{i}"), entry(&format!("s{i}")));
            }
        })
        .unwrap();
        let at = |held: &HeldLock| Arc::as_ptr(&held.snapshot().unwrap());
        let before = at(&held);
        let sub = held.subset(&["e7".into(), "missing".into()]).unwrap();
        assert_eq!(sub.entries.keys().collect::<Vec<_>>(), ["e7"]);
        assert_eq!(sub.entries["e7"], entry("s7"));
        held.edit(["e7"], |l| {
            l.entries.insert("e7".into(), entry("new"));
        })
        .unwrap();
        assert_eq!(at(&held), before, "edited in place");
        assert_eq!(sub.entries["e7"], entry("s7"), "the subset is a copy");
        let snap = held.snapshot().unwrap();
        held.edit(["e8"], |l| {
            l.entries.insert("e8".into(), entry("new"));
        })
        .unwrap();
        assert_ne!(
            at(&held),
            Arc::as_ptr(&snap),
            "a held snapshot is left as it was"
        );
        assert_eq!(snap.entries["e8"], entry("s8"));
    }

    #[test]
    fn edits_stay_in_memory_until_one_flush_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.lock");
        let held = HeldLock::new(&path);
        for name in ["a", "b", "c"] {
            held.edit([name], |l| {
                l.entries.insert(name.into(), entry(name));
            })
            .unwrap();
        }
        assert!(!path.exists(), "nothing written before the flush");
        held.flush(&crate::events::NullReporter);
        held.flush(&crate::events::NullReporter);
        assert_eq!(held.io_counts(), (1, 1), "one read, one write");
        let on_disk = LockFile::read(&path).unwrap().unwrap();
        assert_eq!(on_disk.entries.len(), 3);

        // An edit that changes nothing does not make a write.
        held.edit(["a"], |l| {
            l.entries.insert("a".into(), entry("a"));
        })
        .unwrap();
        held.flush(&crate::events::NullReporter);
        assert_eq!(held.io_counts().1, 1);

        // Someone else's edit is taken at the next reload; an unchanged file is not parsed.
        held.reload().unwrap();
        assert_eq!(held.io_counts().0, 1);
        let mut theirs = on_disk.clone();
        theirs.entries.remove("c");
        theirs.write(&path).unwrap();
        assert_eq!(held.reload().unwrap().entries.len(), 2);
        assert_eq!(held.io_counts().0, 2);

        // A lost file is written again.
        std::fs::remove_file(&path).unwrap();
        held.reload().unwrap();
        held.flush(&crate::events::NullReporter);
        assert_eq!(LockFile::read(&path).unwrap().unwrap().entries.len(), 2);
    }

    #[test]
    fn a_lock_that_does_not_parse_stays_an_error_until_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.lock");
        std::fs::write(&path, "version: 1\nentries: [\n").unwrap();
        let held = HeldLock::new(&path);
        assert!(held.snapshot().is_err());
        assert!(held.snapshot().is_err(), "read again, not taken as empty");
        LockFile::default().write(&path).unwrap();
        assert!(held.snapshot().unwrap().entries.is_empty());
    }
}
