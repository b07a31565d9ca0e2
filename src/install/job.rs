//! Install jobs (the seed's `ModelInstallJob`) and their events.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::AnyModelConfig;
use crate::hub::ModelSource;

/// Where an install job is (the seed's `InstallStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallStatus {
    /// Queued, nothing started.
    Waiting,
    /// Remote files are downloading.
    Downloading,
    /// Probing, hashing, promoting and registering.
    Running,
    /// Done; `config_out` holds the record.
    Completed,
    /// Failed; `error_type` and `error` say why.
    Error,
    /// Cancelled.
    Cancelled,
}

/// Identifier of an install job, unique within one service.
pub type InstallJobId = u64;

/// Progress of one downloaded file of a job (the `parts` of `model_install_downloading`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstallPart {
    /// URL the file comes from (no token).
    pub source: String,
    /// Where it is being written.
    pub local_path: PathBuf,
    /// Bytes so far.
    pub bytes: u64,
    /// Expected size (0 when unknown).
    pub total_bytes: u64,
}

/// A snapshot of an install job. Tokens are never part of it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInstallJob {
    /// Job id.
    pub id: InstallJobId,
    /// Current status.
    pub status: InstallStatus,
    /// Overrides given by the caller (the seed's `config_in`).
    pub config_in: serde_json::Map<String, serde_json::Value>,
    /// The record written, once completed.
    pub config_out: Option<AnyModelConfig>,
    /// Whether a local source is registered where it is.
    pub inplace: bool,
    /// The source, in canonical string form.
    pub source: String,
    /// Local path of the model (the staging folder while remote files download).
    pub local_path: Option<PathBuf>,
    /// Bytes downloaded so far (all parts).
    pub bytes: u64,
    /// Total bytes to download (all parts).
    pub total_bytes: u64,
    /// Per-file progress.
    pub parts: Vec<InstallPart>,
    /// Short error class (`HubError`, `HashMismatch`, …).
    pub error_type: Option<String>,
    /// The error's own message (as InvokeAI's `str(e)`); its causes are in `error_causes`.
    pub error: Option<String>,
    /// The messages of the error's causes, outermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_causes: Vec<String>,
    /// The typed error (for [`super::job_outcome`] and failure reports).
    #[serde(skip)]
    pub failure: Option<std::sync::Arc<super::InstallError>>,
    /// What a completed install produced (record, path, commit, files for `models.lock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<super::request::InstallOutcome>,
    #[serde(skip)]
    pub(crate) parsed_source: Option<ModelSource>,
}

impl ModelInstallJob {
    /// The parsed source (without its token).
    pub fn model_source(&self) -> Option<&ModelSource> {
        self.parsed_source.as_ref()
    }
    /// Waiting to start.
    pub fn waiting(&self) -> bool {
        self.status == InstallStatus::Waiting
    }
    /// Downloading.
    pub fn downloading(&self) -> bool {
        self.status == InstallStatus::Downloading
    }
    /// Probing/registering.
    pub fn running(&self) -> bool {
        self.status == InstallStatus::Running
    }
    /// Completed successfully.
    pub fn complete(&self) -> bool {
        self.status == InstallStatus::Completed
    }
    /// Failed.
    pub fn errored(&self) -> bool {
        self.status == InstallStatus::Error
    }
    /// Cancelled.
    pub fn cancelled(&self) -> bool {
        self.status == InstallStatus::Cancelled
    }
    /// Completed, errored or cancelled.
    pub fn in_terminal_state(&self) -> bool {
        matches!(
            self.status,
            InstallStatus::Completed | InstallStatus::Error | InstallStatus::Cancelled
        )
    }
}

/// Install service events, in the seed's names and order: downloading (remote only, repeated),
/// running, then exactly one of completed / error / cancelled.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum InstallEvent {
    /// `model_install_downloading`.
    ModelInstallDownloading {
        /// Job id.
        id: InstallJobId,
        /// Source string.
        source: String,
        /// Staging folder.
        local_path: PathBuf,
        /// Bytes so far.
        bytes: u64,
        /// Total bytes.
        total_bytes: u64,
        /// Per-file progress.
        parts: Vec<InstallPart>,
    },
    /// `model_install_running`.
    ModelInstallRunning {
        /// Job id.
        id: InstallJobId,
        /// Source string.
        source: String,
    },
    /// `model_install_completed`.
    ModelInstallCompleted {
        /// Job id.
        id: InstallJobId,
        /// Source string.
        source: String,
        /// Bytes downloaded (0 for local sources).
        total_bytes: u64,
        /// The new record's key.
        key: String,
    },
    /// `model_install_error`.
    ModelInstallError {
        /// Job id.
        id: InstallJobId,
        /// Source string.
        source: String,
        /// Short error class.
        error_type: String,
        /// The error's own message.
        error: String,
        /// Its causes' messages, outermost first.
        causes: Vec<String>,
    },
    /// `model_install_warning` (modelsync's own): the install went through with something to
    /// tell, such as a model recorded as type `unknown`. Reported before `completed`.
    ModelInstallWarning {
        /// Job id.
        id: InstallJobId,
        /// Source string.
        source: String,
        /// The warning, with its evidence and how to settle it.
        message: String,
    },
    /// `model_install_cancelled`.
    ModelInstallCancelled {
        /// Job id.
        id: InstallJobId,
        /// Source string.
        source: String,
    },
}

impl InstallEvent {
    /// The seed's event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ModelInstallDownloading { .. } => "model_install_downloading",
            Self::ModelInstallRunning { .. } => "model_install_running",
            Self::ModelInstallCompleted { .. } => "model_install_completed",
            Self::ModelInstallError { .. } => "model_install_error",
            Self::ModelInstallWarning { .. } => "model_install_warning",
            Self::ModelInstallCancelled { .. } => "model_install_cancelled",
        }
    }
}
