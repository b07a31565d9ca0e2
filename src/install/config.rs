//! What the install service and its fetching half share, so that neither imports the other:
//! the service's settings ([`InstallConfig`]), a job's cancel flag ([`Cancel`]) and the source
//! string records show ([`record_source`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::hash::HashAlgorithm;
use crate::hub::{HubClient, HubEnv, ModelSource};
use crate::taxonomy::ModelRepoVariant;

use super::blobs::AdoptSources;
use super::error::InstallError;
use super::promote::absolute;
use super::staging::DEFAULT_STALE_AFTER;

/// Settings of the install service.
#[derive(Debug, Clone)]
pub struct InstallConfig {
    /// Where models live (`models_dir`); staging is `models_dir/.tmp`, the download cache
    /// `models_dir/.cache`.
    pub models_dir: PathBuf,
    /// Algorithm of record hashes (default blake3).
    pub hash_algorithm: HashAlgorithm,
    /// The Hub client (endpoint and offline mode).
    pub hub: HubClient,
    /// Where tokens come from after the caller's (`HF_TOKEN`, the token file).
    pub hub_env: HubEnv,
    /// Variant for HF sources that name none (the manifest's `settings.variant`); `None`: the
    /// default (unlabelled) files.
    pub default_variant: Option<ModelRepoVariant>,
    /// Refuse to start downloads that do not fit on the disk (default true).
    pub check_disk_space: bool,
    /// Staging dirs untouched for longer are removed at start-up (default 7 days).
    pub stale_after: Duration,
    /// Where files with a known sha256 are looked for before they are downloaded, besides
    /// the store ([`super::blobs`]). [`Self::new`] takes the HF cache from `hub_env`.
    pub adopt: AdoptSources,
}

impl InstallConfig {
    /// Settings for `models_dir` with the Hub configured from the process environment
    /// (`HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_TOKEN`, the token file) and `settings_endpoint`
    /// (the manifest's `hf_endpoint`) first.
    pub fn from_env(
        models_dir: impl Into<PathBuf>,
        settings_endpoint: Option<&str>,
    ) -> Result<Self, InstallError> {
        let env = HubEnv::from_process();
        let hub =
            HubClient::from_env(settings_endpoint, &env).map_err(|error| InstallError::Hub {
                source_str: "settings".into(),
                error: Box::new(error),
            })?;
        Ok(Self::new(models_dir, hub, env))
    }

    /// Settings with an explicit Hub client and environment.
    pub fn new(models_dir: impl Into<PathBuf>, hub: HubClient, hub_env: HubEnv) -> Self {
        let adopt = AdoptSources {
            hf_cache: hub_env.hf_hub_cache(),
            ..AdoptSources::default()
        };
        Self {
            models_dir: models_dir.into(),
            hash_algorithm: HashAlgorithm::default(),
            hub,
            hub_env,
            default_variant: None,
            check_disk_space: true,
            stale_after: DEFAULT_STALE_AFTER,
            adopt,
        }
    }
}

/// Cancellation of one job.
#[derive(Debug)]
pub(crate) struct Cancel {
    tx: watch::Sender<bool>,
}

impl Cancel {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            tx: watch::channel(false).0,
        })
    }
    pub(crate) fn is_set(&self) -> bool {
        *self.tx.borrow()
    }
    pub(crate) fn set(&self) {
        self.tx.send_replace(true);
    }
    /// Resolves once cancelled.
    pub(crate) async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// The source string a record and a job show: the canonical form, which for URLs hides user
/// info and secret query values (`token`, `sig`, `X-Amz-Signature`… and any parameter the
/// manifest filled from `${VAR}`; see [`crate::download::names::is_secret_param`]).
pub fn record_source(source: &ModelSource) -> String {
    match source {
        ModelSource::Local(l) => absolute(&l.path).display().to_string(),
        ModelSource::Url(_) | ModelSource::Hf(_) | ModelSource::Oci(_) => source.canonical(),
    }
}
