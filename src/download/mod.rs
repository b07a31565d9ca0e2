//! The download queue (the seed's DownloadQueueService): prioritised, parallel, resumable,
//! verified HTTP downloads that report [`DownloadEvent`]s.
//!
//! - [`job`]: [`DownloadJob`] (what to fetch, where, what it must hash to) and its status.
//! - [`queue`]: [`DownloadQueue`], which schedules jobs on tokio, at most
//!   [`DownloadQueueConfig::max_parallel_dl`] at a time, lowest priority first.
//! - `http`: [`TransferConfig`], the settings of one download (embedded in the queue's).
//! - `http`: one download: `.part` file beside the destination, resume with `Range`, parallel
//!   byte ranges for large files (progress in a `.part.state` sidecar), retries with backoff,
//!   verification before an atomic rename.
//! - [`SizeProbe`]: a file's size from a HEAD (or a one-byte ranged GET), for `diff`.
//! - [`names`]: file names from `Content-Disposition` / URL paths, and URL redaction.
//!
//! - `digest`: hashing while the bytes arrive (sha256, the git blob sha1 of small Hub files,
//!   the content hashes a job asks for in [`DownloadJob::hash_algorithms`]): a blocking task
//!   follows the contiguous prefix of the `.part` on disk, so a multi-range download is hashed
//!   as its ranges land and only the last bytes are left after the last range.
//!
//! Connections: the queue holds a budget ([`DownloadQueueConfig::max_connections`]). Each
//! running download holds one connection; a large file takes more for parallel ranges, up to
//! the budget's share of each job in flight (several files: a stream each; a lone file:
//! several streams). Its ranges are at most [`TransferConfig::max_range_size`], more of them
//! than streams, taken in file order, so the hashed prefix follows close behind. A file's
//! `/resolve`-style redirect is followed once, by its first request; its ranges go to where
//! it led.

mod digest;
mod error;
mod http;
pub mod job;
pub mod names;
pub mod queue;
mod state;

pub use error::DownloadError;
pub use http::{SizeProbe, TransferConfig};
pub use job::{
    AccessToken, DownloadEventHandler, DownloadJob, DownloadJobStatus, HandlerError, JobId,
};
pub use queue::{
    DEFAULT_FILE_TIMEOUT, DownloadQueue, DownloadQueueConfig, RetryPolicy, default_max_connections,
};

use std::io;
use std::path::Path;

/// A download queue event. Every variant carries a snapshot of the job at that moment (without
/// its access token).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DownloadEvent {
    /// The job was put on the queue.
    Enqueued {
        /// The job.
        job: Box<DownloadJob>,
    },
    /// The job is running: sent when it starts, about every 1 % of its bytes, and at least
    /// every 2 s while it runs.
    Running {
        /// The job, with `bytes` / `total_bytes` filled in.
        job: Box<DownloadJob>,
    },
    /// The job was paused; its partial file is kept.
    Paused {
        /// The job.
        job: Box<DownloadJob>,
    },
    /// The job finished and its file is at `job.download_path`.
    Completed {
        /// The job.
        job: Box<DownloadJob>,
    },
    /// The job failed; `job.error` says why.
    Error {
        /// The job.
        job: Box<DownloadJob>,
    },
    /// The job was cancelled.
    Cancelled {
        /// The job.
        job: Box<DownloadJob>,
    },
}

impl DownloadEvent {
    /// The job snapshot the event carries.
    pub fn job(&self) -> &DownloadJob {
        match self {
            Self::Enqueued { job }
            | Self::Running { job }
            | Self::Paused { job }
            | Self::Completed { job }
            | Self::Error { job }
            | Self::Cancelled { job } => job,
        }
    }

    /// The event's name (`enqueued`, `running`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Enqueued { .. } => "enqueued",
            Self::Running { .. } => "running",
            Self::Paused { .. } => "paused",
            Self::Completed { .. } => "completed",
            Self::Error { .. } => "error",
            Self::Cancelled { .. } => "cancelled",
        }
    }
}

/// Bytes available to an unprivileged user on the filesystem holding `path` (statvfs). When
/// `path` does not exist yet, its nearest existing ancestor is asked.
pub fn available_space(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut probe = path;
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => {
                probe = Path::new(".");
                break;
            }
        }
    }
    let c = std::ffi::CString::new(probe.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    #[allow(
        clippy::unnecessary_cast,
        reason = "the field types differ between platforms"
    )]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_space_of_a_missing_path_asks_its_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let n = available_space(&dir.path().join("a/b/c")).unwrap();
        assert!(n > 0);
        assert_eq!(n > 0, available_space(dir.path()).unwrap() > 0);
    }
}
