//! Install errors. Messages name the source, path or URL that failed and never carry a token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::download::DownloadError;
use crate::hash::HashError;
use crate::hub::{HubError, SourceError};
use crate::probe::ProbeError;
use crate::retry::{Class, Classify, FailureKind};
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
    /// The Hub refused or failed (the cause names the repository or URL).
    #[error("Hub request failed")]
    Hub {
        /// The source.
        source_str: String,
        /// The Hub error.
        #[source]
        error: Box<HubError>,
    },
    /// A registry refused or failed (the cause names the registry, reference or blob).
    #[error("registry request failed")]
    Registry {
        /// The source.
        source_str: String,
        /// The registry error.
        #[source]
        error: Box<crate::oci::OciError>,
    },
    /// A download failed (the cause names the URL).
    #[error("download failed")]
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
    /// The probe could not identify the model (the cause names the file).
    #[error("probing failed")]
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
    /// Hashing failed (the cause names the file).
    #[error("hashing failed")]
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
    /// A job ended in error (what [`super::ModelInstallService::install`] returns): the job's
    /// own error, shared with the job record.
    #[error(transparent)]
    JobFailed(Arc<InstallError>),
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
            Self::Registry { .. } => "RegistryError",
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
            Self::JobFailed(e) => e.error_type(),
        }
    }
}

impl Classify for InstallError {
    fn classify(&self) -> Class {
        match self {
            Self::Hub { error, .. } => error.classify(),
            Self::Download { error, .. } => error.classify(),
            Self::Registry { error, .. } => error.classify(),
            Self::JobFailed(e) => e.classify(),
            Self::InsufficientSpace { .. } => Class::of(FailureKind::DiskFull),
            Self::HashMismatch { .. } => Class::of(FailureKind::Integrity),
            Self::Io { source, .. } => Class::of(FailureKind::of_io(source)),
            Self::NotFound(_) => Class::of(FailureKind::NotFound),
            Self::Timeout { .. } => Class::of(FailureKind::Timeout),
            Self::Cancelled(_) => Class::of(FailureKind::Cancelled),
            Self::Source(_)
            | Self::InvalidConfig { .. }
            | Self::InvalidOption { .. }
            | Self::UnknownModel { .. }
            | Self::AmbiguousBase { .. }
            | Self::DangerousPickle { .. }
            | Self::TargetExists { .. }
            | Self::NotRemote(_) => Class::of(FailureKind::Invalid),
            Self::Probe { .. }
            | Self::Hash { .. }
            | Self::Store(_)
            | Self::UnknownJob(_)
            | Self::Setup(_) => Class::of(FailureKind::Other),
        }
    }
}
