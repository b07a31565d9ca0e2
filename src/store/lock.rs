//! The OS file lock that lets one process mutate a store at a time.
//!
//! The lock is `<database>.lock`, locked with the OS's advisory file lock (std `File::lock`,
//! `flock` on Unix), so it is released when the holder exits, however it exits — a crashed
//! `apply` never leaves a stale lock. While holding it, the holder writes who it is (pid,
//! command name but never its arguments, start time) into the file, so a second process can
//! say whom it waits for.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// How often a waiting process retries.
const POLL: Duration = Duration::from_millis(50);

/// Why a lock was not acquired.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process held the lock for the whole timeout.
    #[error("timed out after {} waiting for the lock on {path} held by {holder}", crate::units::HumanDuration(*.waited))]
    Timeout {
        /// The lock file.
        path: PathBuf,
        /// Who held it when we gave up.
        holder: LockHolder,
        /// How long we waited: the timeout.
        waited: Duration,
    },
    /// The store is on a read-only file system: no writer can run there.
    #[error("store {} is on a read-only file system: only list, show, status, diff and verify work there", store.display())]
    ReadOnly {
        /// The store file.
        store: PathBuf,
    },
    /// The lock file could not be created, read or locked.
    #[error("lock file {path}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Who holds a lock, as its holder recorded it. Fields are `None` when the holder has not
/// written them yet (the instant after locking) or is not modelsync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: Option<u32>,
    /// The command: the program name without its folder, and the subcommand when the first
    /// argument is one (`modelsync apply`). Never the other arguments: they may hold a token
    /// or a URL with one, and a waiting process prints this.
    pub command: Option<String>,
    /// When it took the lock, RFC 3339.
    pub since: Option<String>,
}

impl LockHolder {
    /// This process, now.
    fn current() -> Self {
        let mut args = std::env::args_os();
        let program = args
            .next()
            .map(|a| {
                Path::new(&a).file_name().map_or_else(
                    || a.to_string_lossy().into_owned(),
                    |n| n.to_string_lossy().into_owned(),
                )
            })
            .unwrap_or_default();
        let command = match args.next().and_then(|a| a.into_string().ok()) {
            Some(sub) if looks_like_subcommand(&sub) => format!("{program} {sub}"),
            _ => program,
        };
        Self {
            pid: Some(std::process::id()),
            command: Some(command),
            since: Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
        }
    }

    /// Reads what the holder wrote; garbage or a half-written record reads as unknown.
    fn read(file: &mut File) -> Self {
        let mut text = String::new();
        if file.seek(SeekFrom::Start(0)).is_err() || file.read_to_string(&mut text).is_err() {
            return Self::default();
        }
        serde_json::from_str(text.trim()).unwrap_or_default()
    }
}

/// A word such as `apply` or `fetch-hub`: lower-case letters and `-`, not a flag, short.
fn looks_like_subcommand(a: &str) -> bool {
    (1..=24).contains(&a.len())
        && a.starts_with(|c: char| c.is_ascii_lowercase())
        && a.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

impl std::fmt::Display for LockHolder {
    /// `pid 4242 (modelsync apply) since 2025-01-01T10:00:00Z`, or `another process`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}")?,
            None => f.write_str("another process")?,
        }
        if let Some(c) = &self.command {
            write!(f, " ({c})")?;
        }
        if let Some(s) = &self.since {
            write!(f, " since {s}")?;
        }
        Ok(())
    }
}

/// A held store lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    path: PathBuf,
}

impl StoreLock {
    /// The lock file of the store at `db_path`: `<db_path>.lock`.
    pub fn lock_path(db_path: &Path) -> PathBuf {
        let mut s = db_path.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Takes the lock of the store at `db_path`, waiting up to `timeout` while another process
    /// holds it. `on_wait` is called when waiting starts and again whenever the holder
    /// changes, so the caller can say whom it waits for. A zero timeout tries once.
    pub fn acquire(
        db_path: &Path,
        timeout: Duration,
        mut on_wait: impl FnMut(&LockHolder),
    ) -> Result<Self, LockError> {
        let path = Self::lock_path(db_path);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        // Not truncated on open: the holder's record must survive a waiter opening the file.
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                if super::on_read_only_fs(&path) {
                    LockError::ReadOnly {
                        store: db_path.to_path_buf(),
                    }
                } else {
                    io(e)
                }
            })?;
        let start = Instant::now();
        let mut told: Option<LockHolder> = None;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
            let holder = LockHolder::read(&mut file);
            let waited = start.elapsed();
            if waited >= timeout {
                // The timeout as the user set it (`300ms`), not the clock's few extra ms.
                return Err(LockError::Timeout {
                    path,
                    holder,
                    waited: timeout,
                });
            }
            // A holder that has locked but not yet written reads as unknown; give it one
            // poll before telling the user about "another process".
            let worth_telling = holder.pid.is_some() || waited >= POLL * 2;
            if worth_telling && told.as_ref() != Some(&holder) {
                on_wait(&holder);
                told = Some(holder);
            }
            std::thread::sleep(POLL.min(timeout.saturating_sub(waited)));
        }
        let record = serde_json::to_string(&LockHolder::current()).unwrap_or_default();
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(record.as_bytes()))
            .and_then(|()| file.flush());
        if let Err(e) = written {
            let _ = file.unlock();
            return Err(io(e));
        }
        Ok(Self { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Clear the record first so nobody reads a released holder as current.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_waits_names_holder_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("models.db");
        let held = StoreLock::acquire(&db, Duration::ZERO, |_| panic!("free lock")).unwrap();
        assert_eq!(held.path(), dir.path().join("models.db.lock"));

        let mut seen = Vec::new();
        let err = StoreLock::acquire(&db, Duration::from_millis(300), |h| seen.push(h.clone()))
            .unwrap_err();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].pid, Some(std::process::id()));
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("held by pid {}", std::process::id()))
                && msg.contains("models.db.lock")
                && msg.contains(" since "),
            "{msg}"
        );

        drop(held);
        let again = StoreLock::acquire(&db, Duration::ZERO, |_| panic!("released lock"));
        assert!(again.is_ok());
    }

    #[test]
    fn waiter_gets_the_lock_when_the_holder_releases() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.yaml");
        let held = StoreLock::acquire(&db, Duration::ZERO, |_| {}).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let db2 = db.clone();
        let waiter = std::thread::spawn(move || {
            StoreLock::acquire(&db2, Duration::from_mins(1), |h| {
                let _ = tx.send(h.clone());
            })
            .map(|_| ())
        });
        // Release only once the waiter has reported that it waits.
        let holder = rx.recv().unwrap();
        assert_eq!(holder.pid, Some(std::process::id()));
        drop(held);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn the_holder_record_names_the_command_without_arguments() {
        assert!(looks_like_subcommand("apply"));
        assert!(looks_like_subcommand("fetch-hub"));
        for a in [
            "--file",
            "https://h/x?token=s3cr3t",
            "hf_s3cr3t",
            "Apply",
            "models.yaml",
            "",
            "averyveryveryverylongword",
        ] {
            assert!(!looks_like_subcommand(a), "{a}");
        }
        // This test binary runs with arguments (filters, flags): none of them is recorded.
        let me = LockHolder::current().command.unwrap();
        let extra: Vec<String> = std::env::args().skip(2).collect();
        for a in extra {
            assert!(!me.contains(&a), "{me} records {a}");
        }
    }

    #[test]
    fn holder_display() {
        let h = LockHolder {
            pid: Some(7),
            command: Some("modelsync apply".into()),
            since: Some("2025-01-01T00:00:00Z".into()),
        };
        assert_eq!(
            h.to_string(),
            "pid 7 (modelsync apply) since 2025-01-01T00:00:00Z"
        );
        assert_eq!(LockHolder::default().to_string(), "another process");
    }
}
