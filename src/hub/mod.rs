//! The Hugging Face Hub client and model sources. Issue #5.
//!
//! - [`source`]: the `heuristic_import` source forms and [`Token`].
//! - [`token`]: endpoint / offline / token settings from the environment ([`HubEnv`]) and the
//!   token chain ([`resolve_token`]).
//! - [`client`]: [`HubClient`] — model info, the tree, resolve URLs, file heads, and
//!   [`HubClient::plan_source`], which turns an HF source into download specs.
//! - [`select`]: which files of a repo a variant / subfolder / single file / globs select.
//! - [`spec`]: [`DownloadSpec`] and content verification (sha256, git blob sha1).
//! - [`metadata`]: the seed's `HuggingFaceMetadata`.
//! - [`paths`]: validation of repo file paths (never trust a name from the server).

pub mod cache;
pub mod client;
pub mod info;
pub mod metadata;
pub mod paths;
pub mod select;
pub mod source;
pub mod spec;
pub mod token;

pub use cache::{MetadataCache, MetadataRun};
pub use client::{
    FileHead, HubClient, HubError, HubOptions, RepoPlan, resolve_endpoint, validate_repo_id,
};
pub use info::{Gated, LfsInfo, ModelInfo, RepoFile, Sibling};
pub use metadata::{AnyModelRepoMetadata, HuggingFaceMetadata, MetadataError, RemoteModelFile};
pub use paths::{UnsafePath, validate_repo_path};
pub use select::{FileFilter, SelectError, SelectedFile, select_files};
pub use source::{
    HfModelSource, LocalModelSource, ModelSource, SourceError, Token, UrlModelSource,
};
pub use spec::{
    ContentVerifier, DownloadSpec, ExpectedHash, VerifyError, git_blob_sha1, sha256_hex,
};
pub use token::{DEFAULT_ENDPOINT, HubEnv, ResolvedToken, TokenSource, resolve_token};
