//! Download errors. Every URL in a message is redacted (no user info, query or fragment), so a
//! signed URL or a token never reaches a log.

use std::path::PathBuf;
use std::time::Duration;

use crate::retry::{Class, Classify, FailureKind};
use crate::units::HumanBytes;

use super::job::{DownloadJobStatus, JobId};

/// What went wrong with a download or a queue call.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No job with this id was submitted to this queue (or it was pruned).
    #[error("unknown download job id {0}")]
    UnknownJobId(JobId),
    /// `wait_for_job` gave up.
    #[error("timed out after {} waiting for download job {id}", crate::units::HumanDuration(*.timeout))]
    Timeout {
        /// The job.
        id: JobId,
        /// How long we waited.
        timeout: Duration,
    },
    /// The job cannot do what was asked in its current state.
    #[error("download job {id} is {status}; cannot {action} it")]
    InvalidState {
        /// The job.
        id: JobId,
        /// Its status.
        status: DownloadJobStatus,
        /// What was asked.
        action: &'static str,
    },
    /// The source is not an http(s) URL.
    #[error("invalid download URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given (redacted when it parses).
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}: {message}")]
    HttpStatus {
        /// The URL (redacted).
        url: String,
        /// The status code.
        status: u16,
        /// What it means for the user.
        message: String,
        /// `Retry-After`, for 429 and 503.
        retry_after: Option<Duration>,
    },
    /// The connection failed or broke mid-body.
    #[error("{url}: connection failed")]
    Connection {
        /// The URL (redacted).
        url: String,
        /// The transport error (its URL removed).
        #[source]
        source: reqwest::Error,
    },
    /// No bytes arrived for the stall timeout.
    #[error("{url}: no data received for {}", crate::units::HumanDuration(*.timeout))]
    Stalled {
        /// The URL (redacted).
        url: String,
        /// The stall timeout.
        timeout: Duration,
    },
    /// The server accepted the request but sent no response headers in time.
    #[error("{url}: no response within {}", crate::units::HumanDuration(*.timeout))]
    NoResponse {
        /// The URL (redacted).
        url: String,
        /// The response timeout.
        timeout: Duration,
    },
    /// The file did not finish within its time budget (`download_timeout`), retries and waits
    /// included.
    #[error("{url}: did not finish within {} (the download timeout); {} received", crate::units::HumanDuration(*timeout), HumanBytes(*received))]
    FileTimeout {
        /// The URL (redacted).
        url: String,
        /// The budget.
        timeout: Duration,
        /// Bytes on disk when it ran out.
        received: u64,
    },
    /// The body's end cannot be told from a broken connection: no `Content-Length`, no
    /// chunked framing, and the server does not answer the `Range` request that would confirm
    /// the size.
    #[error(
        "{url}: cannot tell whether the file is complete: the server sent {got} bytes without a Content-Length and does not confirm the size with a Range request; give the entry a sha256 `hash:` so the content can be checked"
    )]
    UnverifiedLength {
        /// The URL (redacted).
        url: String,
        /// Bytes received.
        got: u64,
    },
    /// The body ended before the announced length.
    #[error("{url}: the body ended after {got} of {expected} bytes")]
    Truncated {
        /// The URL (redacted).
        url: String,
        /// Bytes expected in this response.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// Every attempt failed; the last one's error is the cause (it names the URL).
    #[error("gave up after {attempts} attempts")]
    RetriesExhausted {
        /// The URL (redacted).
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last cause.
        #[source]
        last: Box<DownloadError>,
    },
    /// An HTML page came back where a file was expected (usually a login or error page).
    #[error(
        "{url}: the server answered an HTML page instead of the file `{name}` (a login page or an error page?)"
    )]
    HtmlInsteadOfFile {
        /// The URL (redacted).
        url: String,
        /// The file name we were fetching.
        name: String,
    },
    /// The server's answer does not follow HTTP as we rely on it (bad `Content-Range`, …).
    #[error("{url}: {what}")]
    Protocol {
        /// The URL (redacted).
        url: String,
        /// What was wrong.
        what: String,
    },
    /// Too many redirects, or a redirect without a usable `Location`.
    #[error("{url}: {what}")]
    Redirect {
        /// The URL (redacted) that redirected.
        url: String,
        /// What was wrong.
        what: String,
    },
    /// A file name from the server or the caller is unsafe.
    #[error("{url}: refusing file name {name:?} from {origin}: {reason}")]
    UnsafeFileName {
        /// The URL (redacted).
        url: String,
        /// The name.
        name: String,
        /// Where it came from (`Content-Disposition`, the URL path, the caller).
        origin: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The size differs from the expected one.
    // The URL names the file; `path` (often a staging file) is for callers, not the message.
    #[error("{url}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The URL (redacted).
        url: String,
        /// The destination.
        path: PathBuf,
        /// Expected size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// The content hash differs from the expected one.
    #[error("{url}: {algorithm} mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The URL (redacted).
        url: String,
        /// The destination.
        path: PathBuf,
        /// `sha256` or `git sha1`.
        algorithm: &'static str,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// Not enough free space for the file.
    #[error(
        "not enough disk space in {path}: the download needs {} more but only {} is available",
        HumanBytes(*needed),
        HumanBytes(*available)
    )]
    InsufficientSpace {
        /// The destination folder.
        path: PathBuf,
        /// Bytes still to write.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The queue could not be set up (no tokio runtime, no HTTP client).
    #[error("{what}")]
    Setup {
        /// What failed.
        what: String,
    },
    /// A local file operation failed.
    #[error("{op} {path}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl DownloadError {
    /// Whether another attempt may succeed (see [`FailureKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.classify().kind.is_retryable()
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.classify().retry_after
    }

    /// The HTTP status behind this error, if any (looking through retries).
    pub fn http_status(&self) -> Option<u16> {
        self.classify().http_status
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl Classify for DownloadError {
    fn classify(&self) -> Class {
        match self {
            Self::HttpStatus {
                status,
                retry_after,
                ..
            } => Class::status(*status, *retry_after),
            Self::RetriesExhausted { last, .. } => last.classify(),
            Self::Connection { .. } => Class::of(FailureKind::Connection),
            Self::Stalled { .. } => Class::of(FailureKind::Stalled),
            Self::NoResponse { .. } | Self::FileTimeout { .. } | Self::Timeout { .. } => {
                Class::of(FailureKind::Timeout)
            }
            Self::Truncated { .. } => Class::of(FailureKind::Truncated),
            Self::UnverifiedLength { .. }
            | Self::HtmlInsteadOfFile { .. }
            | Self::SizeMismatch { .. }
            | Self::HashMismatch { .. } => Class::of(FailureKind::Integrity),
            Self::Protocol { .. } | Self::Redirect { .. } => Class::of(FailureKind::Http),
            Self::InsufficientSpace { .. } => Class::of(FailureKind::DiskFull),
            Self::Io { source, .. } => Class::of(FailureKind::of_io(source)),
            Self::InvalidUrl { .. } | Self::UnsafeFileName { .. } => {
                Class::of(FailureKind::Invalid)
            }
            Self::UnknownJobId(_) | Self::InvalidState { .. } | Self::Setup { .. } => {
                Class::of(FailureKind::Other)
            }
        }
    }
}
