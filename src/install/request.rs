//! What a caller (the reconciler's `apply`, the CLI) asks of one install, and what it gets
//! back for `models.lock`.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::{AnyModelConfig, Managed};
use crate::hash::HashAlgorithm;
use crate::hub::{ModelSource, Token};

crate::string_enum! {
    /// What an install does with a model no probe rule identifies, or whose base the probe
    /// could only guess (the manifest's `settings.unknown_models`).
    #[derive(Default)]
    UnknownModels, "unknown_models policy" {
        /// Record it as type `unknown` (or with the guessed base) and warn, as InvokeAI does
        /// with `allow_unknown_models` (the default).
        #[default]
        Allow = "allow",
        /// Refuse it: the install fails and asks for `config: {type, base}`.
        Deny = "deny",
    }
}

/// Options beyond the seed's `(source, config)`: what a manifest entry can say.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Install path relative to `models_dir` (the manifest's `dest`). Default:
    /// `<key>/` for folders, `<key>/<file name>` for single files. Ignored for in-place local
    /// sources.
    pub dest: Option<PathBuf>,
    /// Expected content hash `algo:hex` (the manifest's `hash`). A mismatch is an error and
    /// nothing is registered or promoted.
    pub expected_hash: Option<String>,
    /// Algorithm of the record's `hash` (default: the service's).
    pub hash_algorithm: Option<HashAlgorithm>,
    /// Ownership to put on the record (`apply` sets it; `import` leaves it empty).
    pub managed: Option<Managed>,
    /// Globs over repo paths (HF sources).
    pub include: Vec<String>,
    /// Globs over repo paths (HF sources).
    pub exclude: Vec<String>,
    /// Token for this install (wins over one on the source; the Hub chain follows).
    pub access_token: Option<Token>,
    /// Compute the sha256 of files whose sha256 the source did not tell (non-LFS Hub files,
    /// URL and local files) so [`InstallOutcome::files`] is complete for a lockfile. Costs a
    /// read of those files.
    pub sha256_for_lock: bool,
    /// Unidentified models and guessed bases: record with a warning (default) or refuse.
    pub unknown_models: UnknownModels,
    /// Fetch a Hugging Face source at this commit instead of its own revision; the record keeps
    /// the source as written. `apply --locked` fetches the lock's commit; a repair the
    /// installed commit (so it restores rather than upgrades); an upgrade the commit the plan
    /// saw upstream.
    pub revision: Option<String>,
    /// Install even when a record of the same source is there already (`import --force`).
    /// Without it an import (no [`Self::managed`]) of an installed source returns the existing
    /// record, as InvokeAI's import does; a manifest's installs are never deduplicated so.
    pub force: bool,
    /// Repair or upgrade this existing record where it is instead of installing a new one.
    pub in_place: Option<InPlace>,
    /// How the model is laid out in `models_dir` (the manifest's `layout`); `dest` wins over
    /// it except in the hf-cache layout, whose paths are fixed.
    pub layout: super::layout::Layout,
}

/// A repair or upgrade in place: the record keeps its key, path and every field the
/// install does not own; only the files that are missing, changed or different upstream are
/// fetched (resuming partials), each verified against the listing (and the lock) before it
/// replaces anything.
#[derive(Debug, Clone, Default)]
pub struct InPlace {
    /// The record.
    pub key: String,
    /// Recorded files (relative paths, `""` for a single-file model) known to be missing or
    /// changed: their size and mtime are not trusted, their content is checked.
    pub damaged: Vec<String>,
    /// sha256 by lock path (`models.lock`): `--locked` insists on them, so a listing that
    /// disagrees fails before anything is fetched.
    pub locked_sha256: std::collections::BTreeMap<String, String>,
}

/// One install: source, config overrides (the seed's `config` dict) and options.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    /// Where the model comes from (its token, if any, is used and never stored).
    pub source: ModelSource,
    /// Overrides of probed fields and extra record fields (`name`, `description`, `tags`,
    /// `base`, …). `unsafe_pickle: "allow"` lets a dangerous pickle in; it never reaches the
    /// record.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The rest.
    pub options: InstallOptions,
}

impl InstallRequest {
    /// A request without options.
    pub fn new(source: ModelSource, config: serde_json::Map<String, serde_json::Value>) -> Self {
        Self {
            source,
            config,
            options: InstallOptions::default(),
        }
    }

    /// Sets the options.
    #[must_use]
    pub fn with_options(mut self, options: InstallOptions) -> Self {
        self.options = options;
        self
    }
}

/// One installed file, as `models.lock` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstalledFile {
    /// Path relative to the model's path (`""` when the model is a single file).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 (hex) when known: Hub LFS files always, others with
    /// [`InstallOptions::sha256_for_lock`].
    pub sha256: Option<String>,
}

/// What a completed install produced.
#[derive(Debug, Clone, Serialize)]
pub struct InstallOutcome {
    /// The record's key.
    pub key: String,
    /// The record as written.
    pub record: AnyModelConfig,
    /// The model's location on disk (absolute).
    pub path: PathBuf,
    /// The canonical source string (no token).
    pub source: String,
    /// The resolved commit (HF sources).
    pub commit: Option<String>,
    /// Every file of the model.
    pub files: Vec<InstalledFile>,
    /// Bytes downloaded by this install (0 for local sources; a resumed download counts only
    /// what this run fetched).
    pub downloaded_bytes: u64,
    /// Files not downloaded because their bytes were on this machine already (the store, the
    /// HF cache, `settings.adopt_from`): hard-linked or copied, then checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<super::blobs::AdoptedFile>,
    /// The source was installed already and this is that record (an idempotent import).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub existing: bool,
    /// What the caller should be told: an unidentified model recorded as `unknown`, a base
    /// taken by a fallback rule. Each quotes the evidence and names the `config` keys that
    /// settle it.
    pub warnings: Vec<String>,
}
