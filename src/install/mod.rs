//! The install service (the seed's ModelInstallService). Issue #5.
//!
//! - [`job`]: [`ModelInstallJob`], [`InstallStatus`], [`InstallEvent`].
//! - [`service`]: [`ModelInstallService`] — imports as background jobs, register / install /
//!   delete, `download_and_cache`.
//! - [`request`]: [`InstallRequest`] / [`InstallOptions`] (what a manifest entry can ask) and
//!   [`InstallOutcome`] (what `models.lock` records).
//! - [`staging`]: the transaction's scratch space and start-up recovery.
//! - [`sync`]: `sync_to_config` — register what lies in `models_dir` unrecorded, report
//!   records whose files are gone.
//! - `remote` / `local` / `promote`: fetching, copying, and the serial probe → hash → rename →
//!   record half.
//! - [`layout`]: where a model lands (`invokeai`, `hf-cache`, `comfyui`, `a1111`), the
//!   hf-cache's blobs, symlinks and refs, and their removal.
//! - [`blobs`]: adopt instead of download — the same bytes found in the store, the Hugging
//!   Face cache or `settings.adopt_from`, hard-linked or copied, and checked.
//! - `refit`: repairs and upgrades in place (same key and path; only the files that differ
//!   are fetched).

pub mod blobs;
mod config;
mod error;
mod job;
pub mod layout;
mod local;
pub mod oci;
mod promote;
mod refit;
mod remote;
pub mod request;
pub mod service;
pub mod staging;
pub mod sync;

pub use blobs::{AdoptSources, AdoptedFile, Origin};
pub use config::{InstallConfig, record_source};
pub use error::InstallError;
pub use job::{InstallEvent, InstallJobId, InstallPart, InstallStatus, ModelInstallJob};
pub use layout::Layout;
pub use local::{LocalSelection, selected_size};
pub use promote::UNSAFE_PICKLE;
pub(crate) use refit::merged_tags;
pub use request::{
    InPlace, InstallOptions, InstallOutcome, InstallRequest, InstalledFile, UnknownModels,
};
pub use service::{ModelInstallService, job_outcome};
pub use staging::RecoveryReport;
pub use sync::{SyncMode, SyncOptions, SyncReport};
