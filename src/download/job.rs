//! Download jobs: what to fetch, where to, what it must hash to, and where it stands.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serializer;

use super::error::DownloadError;
use super::names::redact_url_str;
use crate::hash::HashAlgorithm;

/// A job's id, unique within its queue.
pub type JobId = u64;

crate::string_enum! {
    /// Where a job is in its lifecycle (the seed's DownloadJobStatus).
    DownloadJobStatus, "download job status" {
        /// Created, not submitted (or submitted with `start = false`).
        Idle = "idle",
        /// Waiting on the queue.
        Enqueued = "enqueued",
        /// Downloading.
        Running = "running",
        /// Paused; `start_job` continues from the partial file.
        Paused = "paused",
        /// Done; the file is at `download_path`.
        Completed = "completed",
        /// Failed; `error` says why. It will not run again.
        Error = "error",
        /// Cancelled. It will not run again.
        Cancelled = "cancelled",
    }
}

impl DownloadJobStatus {
    /// Completed, error or cancelled: the job will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Error | Self::Cancelled)
    }
}

/// What a download sends as `Authorization` to the source's origin: a bearer token (the Hub's,
/// a URL entry's) or, for registry blobs, the header a registry settled on (`Basic …`, a token
/// service's `Bearer …`). It is never serialised, and its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// Wraps a bearer token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(format!("Bearer {}", token.into()))
    }

    /// Wraps a whole `Authorization` value (`Basic …`, `Bearer …`).
    pub fn from_header_value(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The `Authorization` header value.
    pub(crate) fn header_value(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl From<&str> for AccessToken {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for AccessToken {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// What a handler may return when it fails. A failure is logged; it never fails the download.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

type HandlerFn = dyn Fn(&DownloadJob) -> Result<(), HandlerError> + Send + Sync;

/// A callback run on every event of a job (status changes and progress), on the worker that
/// runs the job: it must be quick and must not block. A handler that fails or panics is logged
/// and otherwise ignored.
#[derive(Clone)]
pub struct DownloadEventHandler(Arc<HandlerFn>);

impl DownloadEventHandler {
    /// A handler that may fail.
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(&DownloadJob) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        Self(Arc::new(f))
    }

    /// A handler that cannot fail.
    pub fn infallible<F>(f: F) -> Self
    where
        F: Fn(&DownloadJob) + Send + Sync + 'static,
    {
        Self(Arc::new(move |job: &DownloadJob| {
            f(job);
            Ok(())
        }))
    }

    pub(crate) fn call(&self, job: &DownloadJob) -> Result<(), HandlerError> {
        (self.0)(job)
    }
}

impl fmt::Debug for DownloadEventHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DownloadEventHandler")
    }
}

/// A download job (the seed's DownloadJobBase + DownloadJobRemoteSource + DownloadJobURL).
///
/// Build one with [`DownloadJob::new`] and the `with_*` methods, then submit it; the queue
/// assigns `id` and owns the state from then on. What the queue hands back (`id_to_job`,
/// `wait_for_job`, events, handlers) are snapshots without the access token.
#[derive(Clone, serde::Serialize)]
pub struct DownloadJob {
    /// Assigned on submission.
    pub id: JobId,
    /// Lower runs first (default 10).
    pub priority: i32,
    /// The http(s) URL. Serialised without query and user info.
    #[serde(serialize_with = "ser_redacted")]
    pub source: String,
    /// A file path, or an existing directory: then the file is named by the server's
    /// `Content-Disposition`, else by the URL path.
    pub destination: PathBuf,
    /// Where the file is (or will be) once the name is known. Set on completion.
    pub download_path: Option<PathBuf>,
    /// Lifecycle status.
    pub status: DownloadJobStatus,
    /// When the job last started running.
    #[serde(serialize_with = "ser_time")]
    pub job_started: Option<SystemTime>,
    /// When the job completed, failed or was cancelled.
    #[serde(serialize_with = "ser_time")]
    pub job_ended: Option<SystemTime>,
    /// Order in which jobs were taken off the queue (first run only).
    pub job_sequence: Option<u64>,
    /// Why the job failed.
    #[serde(serialize_with = "ser_error")]
    pub error: Option<Arc<DownloadError>>,
    /// Bytes on disk so far.
    pub bytes: u64,
    /// Total bytes, once the server said (0 until then).
    pub total_bytes: u64,
    /// Sent as `Authorization: Bearer` to the source's host only. Never serialised or logged.
    #[serde(skip)]
    pub access_token: Option<AccessToken>,
    /// The size the file must have.
    pub expected_size: Option<u64>,
    /// The sha256 (hex) the file must have.
    pub expected_sha256: Option<String>,
    /// The git blob sha1 (hex, `sha1("blob {len}\0" + content)`) the file must have: the
    /// check for small, non-LFS Hub files.
    pub expected_git_sha1: Option<String>,
    /// Content hashes to compute while the bytes arrive (the installer's record hash), given
    /// in [`Self::digests`] once the job completes. `imohash` is not computed (it samples the
    /// finished file).
    #[serde(skip)]
    pub hash_algorithms: Vec<HashAlgorithm>,
    /// The completed file's content hashes, `algo:hex` (`blake3:…`, `sha256:…`): those of
    /// [`Self::hash_algorithms`], and the sha256 when one was checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub digests: Vec<String>,
    /// Keep the partial file when the job fails or is cancelled.
    pub preserve_partial_downloads: bool,
    /// This job's handlers; the queue's default handlers run after them.
    #[serde(skip)]
    pub event_handlers: Vec<DownloadEventHandler>,
}

impl DownloadJob {
    /// A new idle job fetching `source` into `destination` (a file, or an existing directory).
    pub fn new(source: impl Into<String>, destination: impl Into<PathBuf>) -> Self {
        Self {
            id: 0,
            priority: 10,
            source: source.into(),
            destination: destination.into(),
            download_path: None,
            status: DownloadJobStatus::Idle,
            job_started: None,
            job_ended: None,
            job_sequence: None,
            error: None,
            bytes: 0,
            total_bytes: 0,
            access_token: None,
            expected_size: None,
            expected_sha256: None,
            expected_git_sha1: None,
            hash_algorithms: Vec::new(),
            digests: Vec::new(),
            preserve_partial_downloads: false,
            event_handlers: Vec::new(),
        }
    }

    /// Sets the priority (lower runs first).
    #[must_use]
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the bearer token.
    #[must_use]
    pub fn with_access_token(mut self, token: Option<AccessToken>) -> Self {
        self.access_token = token;
        self
    }

    /// Requires this size.
    #[must_use]
    pub fn with_expected_size(mut self, size: Option<u64>) -> Self {
        self.expected_size = size;
        self
    }

    /// Requires this sha256 (hex, any case).
    #[must_use]
    pub fn with_sha256(mut self, sha256: Option<String>) -> Self {
        self.expected_sha256 = sha256.map(|s| s.to_ascii_lowercase());
        self
    }

    /// Requires this git blob sha1 (hex, any case).
    #[must_use]
    pub fn with_git_sha1(mut self, sha1: Option<String>) -> Self {
        self.expected_git_sha1 = sha1.map(|s| s.to_ascii_lowercase());
        self
    }

    /// Computes these content hashes while the bytes arrive ([`Self::digests`]).
    #[must_use]
    pub fn with_hash_algorithms(mut self, algorithms: Vec<HashAlgorithm>) -> Self {
        self.hash_algorithms = algorithms;
        self
    }

    /// A content hash of the completed file (`algo:hex`) under `algorithm`'s prefix, when the
    /// download computed it.
    pub fn digest(&self, algorithm: HashAlgorithm) -> Option<&str> {
        let prefix = format!("{}:", algorithm.prefix());
        self.digests
            .iter()
            .find(|d| d.starts_with(&prefix))
            .map(String::as_str)
    }

    /// Keeps partial files on error and cancel.
    #[must_use]
    pub fn with_preserve_partial_downloads(mut self, keep: bool) -> Self {
        self.preserve_partial_downloads = keep;
        self
    }

    /// Adds a handler (the seed's `add_event_handler`).
    #[must_use]
    pub fn with_handler(mut self, handler: DownloadEventHandler) -> Self {
        self.event_handlers.push(handler);
        self
    }

    /// Adds a handler.
    pub fn add_event_handler(&mut self, handler: DownloadEventHandler) {
        self.event_handlers.push(handler);
    }

    /// Removes every handler.
    pub fn clear_event_handlers(&mut self) {
        self.event_handlers.clear();
    }

    /// The job's result once it is terminal: the downloaded file, or why there is none.
    pub fn result(&self) -> Result<&std::path::Path, Arc<DownloadError>> {
        match (self.status, &self.download_path, &self.error) {
            (DownloadJobStatus::Completed, Some(p), _) => Ok(p),
            (_, _, Some(e)) => Err(e.clone()),
            (status, _, _) => Err(Arc::new(DownloadError::InvalidState {
                id: self.id,
                status,
                action: "take the result of",
            })),
        }
    }

    /// This job without its token (what leaves the queue).
    pub(crate) fn snapshot(&self) -> Self {
        let mut s = self.clone();
        s.access_token = None;
        s
    }
}

impl fmt::Debug for DownloadJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadJob")
            .field("id", &self.id)
            .field("priority", &self.priority)
            .field("source", &redact_url_str(&self.source))
            .field("destination", &self.destination)
            .field("download_path", &self.download_path)
            .field("status", &self.status)
            .field("job_sequence", &self.job_sequence)
            .field("error", &self.error.as_ref().map(ToString::to_string))
            .field("bytes", &self.bytes)
            .field("total_bytes", &self.total_bytes)
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expected_size", &self.expected_size)
            .field("expected_sha256", &self.expected_sha256)
            .field("expected_git_sha1", &self.expected_git_sha1)
            .field("digests", &self.digests)
            .field(
                "preserve_partial_downloads",
                &self.preserve_partial_downloads,
            )
            .field("event_handlers", &self.event_handlers.len())
            .finish_non_exhaustive()
    }
}

fn ser_redacted<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url_str(url))
}

/// Seconds since the Unix epoch, as a float (the seed's Python timestamps).
#[allow(clippy::ref_option, reason = "serde's serialize_with passes &Option")]
fn ser_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[allow(clippy::ref_option, reason = "serde's serialize_with passes &Option")]
fn ser_error<S: Serializer>(e: &Option<Arc<DownloadError>>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_str(&e.to_string()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_shows() {
        let job = DownloadJob::new("https://h/x.bin?sig=SECRETSIG", "/tmp/x")
            .with_access_token(Some("hf_SECRETTOKEN".into()));
        let dbg = format!("{job:?}");
        let json = serde_json::to_string(&job).unwrap();
        for out in [&dbg, &json] {
            assert!(!out.contains("SECRETTOKEN"), "{out}");
            assert!(!out.contains("SECRETSIG"), "{out}");
        }
        assert!(json.contains("\"status\":\"idle\""));
        assert!(job.snapshot().access_token.is_none());
    }
}
