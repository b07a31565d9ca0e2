//! Install errors. Messages name the source, path or URL that failed and never carry a token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::download::DownloadError;
use crate::hash::HashError;
use crate::hub::{HubError, SourceError};
use crate::probe::ProbeError;
use crate::store::StoreError;
use crate::units::HumanBytes;

use super::job::InstallJobId;

/// What went wrong with an install or a service call.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The source string is none of the accepted forms.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A config override that can never become part of a record.
    #[error("config override `{key}`: {reason}")]
    InvalidConfig {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// An install option that cannot be honoured.
    #[error("install option `{option}`: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Why.
        reason: String,
    },
    /// A local source that does not exist.
    #[error("{0}: no such file or folder")]
    NotFound(PathBuf),
    /// The Hub refused or failed.
    #[error("{source_str}: {error}")]
    Hub {
        /// The source.
        source_str: String,
        /// The Hub error.
        #[source]
        error: Box<HubError>,
    },
    /// A download failed.
    #[error("{source_str}: download failed: {error}")]
    Download {
        /// The source.
        source_str: String,
        /// The queue's error.
        #[source]
        error: Arc<DownloadError>,
    },
    /// Not enough free disk space for the bytes still to fetch.
    #[error(
        "not enough disk space in {path}: {source_str} needs {} more but only {} is available",
        HumanBytes(*needed),
        HumanBytes(*available)
    )]
    InsufficientSpace {
        /// The source.
        source_str: String,
        /// The folder checked.
        path: PathBuf,
        /// Bytes still to fetch.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The probe could not identify the model.
    #[error("probing {path}: {error}")]
    Probe {
        /// The model path.
        path: PathBuf,
        /// The probe's error.
        #[source]
        error: Box<ProbeError>,
    },
    /// The probe ran but found no known model, and unknown models are denied.
    #[error(
        "{path}: cannot tell what kind of model this is ({evidence}); {hint}, or let it be recorded as type `unknown` with `settings.unknown_models: allow`",
        hint = crate::config::IDENTIFY_HINT
    )]
    UnknownModel {
        /// The model path.
        path: PathBuf,
        /// What the probe saw.
        evidence: String,
    },
    /// The base is ambiguous, and guessed bases are denied.
    #[error(
        "{path}: the base model is ambiguous (one of {candidates}); set `config: {{base: …}}` on its manifest entry (`--config base=…` for `import`), or let the fallback rule pick with `settings.unknown_models: allow`"
    )]
    AmbiguousBase {
        /// The model path.
        path: PathBuf,
        /// The candidates.
        candidates: String,
    },
    /// A pickle that may run code on load: it imports globals outside the allow-list, or it
    /// could not be followed to its end.
    #[error(
        "{path}: refusing a {verdict} pickle ({globals}); set `unsafe_pickle: allow` on its manifest entry (`--config unsafe_pickle=allow` for `import`) to install it anyway"
    )]
    DangerousPickle {
        /// The model path.
        path: PathBuf,
        /// The scan's verdict (suspicious or dangerous).
        verdict: crate::scan::ScanVerdict,
        /// The imports outside the allow-list and the scan's problems.
        globals: String,
    },
    /// Hashing failed.
    #[error("hashing {path}: {error}")]
    Hash {
        /// The model path.
        path: PathBuf,
        /// The cause.
        #[source]
        error: Box<HashError>,
    },
    /// The content hash is not the expected one.
    #[error(
        "{path}: content hash mismatch: expected {expected}, got {actual}; nothing was installed"
    )]
    HashMismatch {
        /// The model path (in staging).
        path: PathBuf,
        /// Expected `algo:hex`.
        expected: String,
        /// Actual `algo:hex`.
        actual: String,
    },
    /// The install target is taken.
    #[error("cannot install to {path}: it already exists (remove it or choose another `dest`)")]
    TargetExists {
        /// The target.
        path: PathBuf,
    },
    /// The record store failed.
    #[error(transparent)]
    Store(Box<StoreError>),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No such install job.
    #[error("unknown install job id {0}")]
    UnknownJob(InstallJobId),
    /// A wait gave up.
    #[error("timed out after {} waiting for {what}", crate::units::HumanDuration(*.timeout))]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long.
        timeout: Duration,
    },
    /// The job was cancelled.
    #[error("{0}: install cancelled")]
    Cancelled(String),
    /// `download_and_cache` of something that is not a URL.
    #[error("{0}: only http(s) URLs can be downloaded and cached")]
    NotRemote(String),
    /// The service could not be set up.
    #[error("{0}")]
    Setup(String),
    /// A job ended in error (what [`super::ModelInstallService::install`] returns).
    #[error("{source_str}: {error}")]
    JobFailed {
        /// The source.
        source_str: String,
        /// Short error class.
        error_type: String,
        /// The full message.
        error: String,
    },
}

impl From<StoreError> for InstallError {
    fn from(e: StoreError) -> Self {
        Self::Store(Box::new(e))
    }
}

impl InstallError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The short error class a job reports as `error_type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Source(_) => "InvalidSource",
            Self::InvalidConfig { .. } => "InvalidConfig",
            Self::InvalidOption { .. } => "InvalidOption",
            Self::NotFound(_) => "NotFound",
            Self::Hub { .. } => "HubError",
            Self::Download { .. } => "DownloadError",
            Self::InsufficientSpace { .. } => "InsufficientSpace",
            Self::Probe { .. } => "ProbeError",
            Self::UnknownModel { .. } => "UnknownModel",
            Self::AmbiguousBase { .. } => "AmbiguousBase",
            Self::DangerousPickle { .. } => "DangerousPickle",
            Self::Hash { .. } => "HashError",
            Self::HashMismatch { .. } => "HashMismatch",
            Self::TargetExists { .. } => "TargetExists",
            Self::Store(_) => "StoreError",
            Self::Io { .. } => "IoError",
            Self::UnknownJob(_) => "UnknownJob",
            Self::Timeout { .. } => "Timeout",
            Self::Cancelled(_) => "Cancelled",
            Self::NotRemote(_) => "NotRemote",
            Self::Setup(_) => "SetupError",
            Self::JobFailed { .. } => "JobFailed",
        }
    }

    /// The message with every cause, `: `-joined (what a job keeps as `error`).
    pub fn full_message(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            let m = e.to_string();
            if !s.contains(&m) {
                s.push_str(": ");
                s.push_str(&m);
            }
            cur = e.source();
        }
        s
    }
}
