//! OCI registries: `oci://` references, the registry HTTP API (manifests and blobs, auth
//! challenges, ranges), manifests read as model artifacts (ModelPack, KitOps, ORAS), and tar
//! layers unpacked with the Hub's path checks.
//!
//! The client speaks the distribution spec on the project's own reqwest, with serde structs
//! for the JSON; blobs are fetched by the download queue (resume with `Range`, sha256
//! verification) from the URL and `Authorization` [`RegistryClient::blob_download`] gives.

pub mod auth;
pub mod client;
pub mod manifest;
pub mod publish;
pub mod push;
pub mod reference;
pub mod unpack;

use std::time::Duration;

pub use auth::{Challenge, Credentials, docker_credentials, parse_challenge};
pub use client::{
    Access, ManifestBody, Registries, RegistryClient, RegistrySettings, sha256_digest,
};
pub use manifest::{
    Artifact, ArtifactKind, Descriptor, Fetched, ImageIndex, ImageManifest, Layer, Packing,
};
pub use reference::{OciReference, ReferenceError};

use crate::retry::{Class, Classify, FailureKind};

/// An `oci://` model source: the reference and the entry's credentials (kept in memory only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciModelSource {
    /// Where the artifact is.
    pub reference: OciReference,
    /// The entry's credentials; `None`: the Docker config's, else anonymous.
    pub credentials: Option<Credentials>,
    /// Plain HTTP (`settings.registries.HOST.insecure`).
    pub insecure: bool,
}

impl OciModelSource {
    /// The credentials to use: the entry's, else the Docker config's for the registry.
    pub fn resolve_credentials(&self) -> Option<Credentials> {
        self.credentials
            .clone()
            .or_else(|| docker_credentials(&self.reference.registry))
    }

    /// A client for this source's registry (plain HTTP when `insecure`).
    pub fn client(&self) -> Result<RegistryClient, OciError> {
        let mut registries = Registries::new();
        if self.insecure {
            registries.insert(
                self.reference.registry.clone(),
                RegistrySettings { insecure: true },
            );
        }
        RegistryClient::new(registries)
    }

    /// Marks the source insecure when `registries` says so for its host.
    pub fn apply_settings(&mut self, registries: &Registries) {
        if registries
            .get(&self.reference.registry)
            .is_some_and(|r| r.insecure)
        {
            self.insecure = true;
        }
    }
}

/// Registry failures. Each names the registry, repository, URL or digest concerned; URLs are
/// shown redacted and no message ever holds a credential.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A bad `oci://` reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The client could not be set up.
    #[error("{0}")]
    Setup(String),
    /// The registry could not be reached.
    #[error("cannot reach {url}")]
    Connection {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// No answer in time.
    #[error("no answer from {url} within {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// An error status.
    #[error("{url}: HTTP {status}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The registry's error codes and messages.
        message: String,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 401/403 after answering the challenge, or a challenge the credentials cannot answer.
    #[error("registry {registry} refused access to {repository}: {detail}")]
    Unauthorized {
        /// `host[:port]`.
        registry: String,
        /// The repository.
        repository: String,
        /// What the registry or the client said.
        detail: String,
    },
    /// The token service failed.
    #[error("token service {realm}: {reason}")]
    TokenService {
        /// The realm URL (redacted).
        realm: String,
        /// Why.
        reason: String,
    },
    /// No such manifest, tag or blob.
    #[error("{reference} not found in the registry: {detail}")]
    NotFound {
        /// What was asked for.
        reference: String,
        /// The registry's message.
        detail: String,
    },
    /// A body past its cap.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What.
        what: String,
        /// The cap.
        limit: u64,
    },
    /// Content that does not match its digest.
    #[error("{what} has digest {got}, expected {expected}")]
    DigestMismatch {
        /// What.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The content's.
        got: String,
    },
    /// A manifest or index modelsync cannot use.
    #[error("{reference}: {reason}")]
    BadManifest {
        /// The reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// A layer media type with no decoder here.
    #[error("layer {digest} has media type {media_type}, which modelsync cannot unpack")]
    UnsupportedMediaType {
        /// The media type.
        media_type: String,
        /// The layer.
        digest: String,
    },
    /// An index with several manifests and nothing to choose by.
    #[error(
        "{reference} is an image index with several manifests; pin one with @sha256:…:\n  {}",
        choices.join("\n  ")
    )]
    AmbiguousIndex {
        /// The reference.
        reference: String,
        /// One line per manifest.
        choices: Vec<String>,
    },
    /// A layer path that is not safe to write.
    #[error(transparent)]
    UnsafePath(#[from] crate::hub::UnsafePath),
    /// Unpacking a tar layer failed.
    #[error("unpacking layer {digest}")]
    Unpack {
        /// The layer.
        digest: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Classify for OciError {
    fn classify(&self) -> Class {
        match self {
            Self::Connection { .. } => Class::of(FailureKind::Connection),
            Self::Timeout { .. } => Class::of(FailureKind::Timeout),
            Self::Http {
                status,
                retry_after,
                ..
            } => Class::status(*status, *retry_after),
            Self::Unauthorized { .. } | Self::TokenService { .. } => {
                Class::of(FailureKind::Unauthorized)
            }
            Self::NotFound { .. } => Class::of(FailureKind::NotFound),
            Self::TooLarge { .. }
            | Self::DigestMismatch { .. }
            | Self::BadManifest { .. }
            | Self::UnsafePath(_) => Class::of(FailureKind::Integrity),
            Self::Reference(_)
            | Self::UnsupportedMediaType { .. }
            | Self::AmbiguousIndex { .. } => Class::of(FailureKind::Invalid),
            Self::Setup(_) | Self::Unpack { .. } => Class::of(FailureKind::Other),
        }
    }
}
