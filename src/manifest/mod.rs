//! The `models.yaml` manifest and the `models.lock` lock file: types, parsing, `${VAR}`
//! interpolation, semantic checks and the JSON Schema.
//!
//! Parsing goes in two steps. [`parse`] deserialises the file into its wire types (which keep
//! every value's line and column and from which `schemas/models.schema.json` is generated),
//! then validates it into a [`Manifest`]: variables interpolated, paths resolved against the
//! manifest's folder, sources parsed, sizes, durations, globs and destinations checked, and
//! each entry's [`SpecHash`] computed. Every error is a [`Diagnostic`] that reads
//! `models.yaml:12:5: unknown field `sorce`, expected one of …`.
//!
//! ```no_run
//! let manifest = modelsync::manifest::load(std::path::Path::new("models.yaml"))?;
//! for entry in &manifest.models {
//!     println!("{} ← {}", entry.name, entry.source);
//! }
//! # Ok::<(), modelsync::manifest::ManifestError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hash::HashAlgorithm;
use crate::hub::source::{ModelSource, Token};
pub use crate::install::UnknownModels;
use crate::taxonomy::{
    AnyVariant, BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SchedulerPredictionType,
};

pub mod interpolate;
pub mod lock;
pub mod parse;
pub mod schema;
mod spec;

pub use lock::{LockEntry, LockError, LockFile, LockedFile};
pub use parse::{load, load_settings, parse_str};
pub use spec::SpecHash;

/// The manifest format version this build reads.
pub const MANIFEST_VERSION: u32 = 1;

/// A position in the manifest file (1-based; `0:0` when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Loc {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem in a manifest, with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The manifest file as the user named it.
    pub file: String,
    /// Where in it (`0:0` when the whole file is meant).
    pub loc: Loc,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.loc.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.loc, self.message)
        }
    }
}

/// Errors of loading a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {}", path.display())]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse or does not validate. Displayed one diagnostic per line.
    #[error("{}", display_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ManifestError {
    /// The diagnostics, when the manifest was read but is invalid.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid(d) => d,
        }
    }
}

fn display_diagnostics(d: &[Diagnostic]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

crate::string_enum! {
    /// Whether an entry may install pickle files (`.ckpt`, `.pt`, `.bin`) that the scanner
    /// flags as unsafe.
    #[derive(Default)]
    UnsafePickle, "unsafe_pickle policy" {
        /// Refuse them (the default).
        #[default]
        Deny = "deny",
        /// Install them anyway.
        Allow = "allow",
    }
}

/// Fields of the record that override what the probe finds (`config:` of an entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigOverrides {
    /// Model type (`main`, `vae`, `lora`, `embedding` …).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<ModelType>,
    /// Base model family (`sd-1`, `sdxl`, `flux` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseModelType>,
    /// Weight layout (`diffusers`, `checkpoint` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ModelFormat>,
    /// Model variant (not the repo file variant): `normal`, `inpaint` or `depth` for Stable
    /// Diffusion; the family's own for others (`dev`, `schnell`, `klein_4b`, `turbo`, CLIP
    /// `large`, Qwen3 `qwen3_4b` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<AnyVariant>,
    /// Scheduler prediction type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_type: Option<SchedulerPredictionType>,
    /// Upcast attention to fp32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcast_attention: Option<bool>,
    /// A VAE (record key or name) to use instead of the built-in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<String>,
    /// Legacy config YAML of a checkpoint, relative to models_dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_path: Option<String>,
    /// Trigger phrases (LoRAs, embeddings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_phrases: Option<Vec<String>>,
}

impl ConfigOverrides {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `settings.cache`: budgets and policies of the load cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Host-memory budget in bytes (`None`: the loader's default).
    pub ram: Option<u64>,
    /// Device-memory budget in bytes (`None`: the loader's default).
    pub vram: Option<u64>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Device memory kept free for activations (`None`: the loader's default, 3 GiB).
    pub working_memory: Option<u64>,
    /// Precision of device copies: `auto`, `fp16`, `bf16` or `fp32`.
    pub precision: String,
    /// Entries unused for this long are released; `None` (`keep_alive: 0`, the default) keeps
    /// them until the budget needs the room.
    pub keep_alive: Option<Duration>,
    /// Whether `preload: true` models are exempt from the keep-alive (default true).
    pub pin_preloaded: bool,
}

/// The precisions `settings.cache.precision` and an entry's `precision` take.
pub const PRECISIONS: &[&str] = &["auto", "fp16", "bf16", "fp32"];

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ram: None,
            vram: None,
            device: "auto".to_owned(),
            working_memory: None,
            precision: "auto".to_owned(),
            keep_alive: None,
            pin_preloaded: true,
        }
    }
}

/// The manifest's `settings`, validated, paths resolved against the manifest's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where models are installed (default `<manifest folder>/models`).
    pub models_dir: PathBuf,
    /// The record store, when the manifest names one; see [`Settings::database_path`].
    pub database: Option<PathBuf>,
    /// Where `models.lock` is kept, when the manifest names a place; see
    /// [`Manifest::lock_path`].
    pub lock_file: Option<PathBuf>,
    /// Default HF repo variant for entries that name none (`None`: the repo's default files).
    pub variant: Option<ModelRepoVariant>,
    /// Content hash algorithm of new records.
    pub hash_algorithm: HashAlgorithm,
    /// Delete managed models whose entries left the manifest.
    pub prune: bool,
    /// Downloads at once (≥ 1).
    pub max_parallel_downloads: usize,
    /// Connections open at once across every download (≥ 1; default
    /// [`crate::download::default_max_connections`]: 4 per CPU core, 8 to 32). Several files
    /// in flight share it, a stream each; a lone large file takes several ranges.
    pub max_connections: usize,
    /// Hugging Face endpoint (`None`: env `HF_ENDPOINT`, else `https://huggingface.co`).
    pub hf_endpoint: Option<String>,
    /// How long a command that changes the store waits for another process's store lock
    /// (default 5m; `--lock-timeout` overrides it).
    pub lock_timeout: Duration,
    /// How often `watch` resyncs without a manifest change (default 5m).
    pub watch_interval: Duration,
    /// Longest time one file's download may take, every retry and wait included (default
    /// 24h, [`crate::download::DEFAULT_FILE_TIMEOUT`]).
    pub download_timeout: Duration,
    /// How often `watch` asks the Hub where unpinned revisions point and upgrades the entries
    /// whose branch moved (`None`, the default: never).
    pub refresh_interval: Option<Duration>,
    /// Load cache budgets.
    pub cache: CacheSettings,
    /// Models no probe rule identifies, and guessed bases: `allow` (default) records them
    /// with a warning, `deny` fails their entries.
    pub unknown_models: UnknownModels,
    /// What `watch` does with `sync_to_config` at each resync (default `report`).
    pub sync: crate::install::SyncMode,
    /// How models are laid out in models_dir (default `invokeai`); entries may say otherwise.
    pub layout: crate::install::Layout,
    /// Folders searched for a file's bytes before it is downloaded, after the store and the
    /// HF cache ([`crate::install::blobs`]).
    pub adopt_from: Vec<PathBuf>,
    /// OCI registries' settings by host (`settings.registries`).
    pub registries: crate::oci::Registries,
}

/// Default `settings.max_parallel_downloads`.
pub const DEFAULT_PARALLEL_DOWNLOADS: usize = 5;
/// Default `settings.lock_timeout` and `settings.watch_interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_mins(5);

impl Settings {
    /// The defaults, for a manifest in `base_dir` (or for no manifest, with `.`).
    pub fn defaults(base_dir: &Path) -> Self {
        Self {
            models_dir: base_dir.join("models"),
            database: None,
            lock_file: None,
            variant: None,
            hash_algorithm: HashAlgorithm::default(),
            prune: false,
            max_parallel_downloads: DEFAULT_PARALLEL_DOWNLOADS,
            max_connections: crate::download::default_max_connections(),
            hf_endpoint: None,
            lock_timeout: DEFAULT_INTERVAL,
            watch_interval: DEFAULT_INTERVAL,
            download_timeout: crate::download::DEFAULT_FILE_TIMEOUT,
            refresh_interval: None,
            cache: CacheSettings::default(),
            unknown_models: UnknownModels::default(),
            sync: crate::install::SyncMode::default(),
            layout: crate::install::Layout::default(),
            adopt_from: Vec::new(),
            registries: crate::oci::Registries::new(),
        }
    }

    /// The record store: `settings.database`, else `<models_dir>/modelsync.db`.
    pub fn database_path(&self) -> PathBuf {
        self.database
            .clone()
            .unwrap_or_else(|| self.models_dir.join("modelsync.db"))
    }
}

/// One validated `models:` entry.
///
/// `source` is complete: the entry's `variant`, `subfolder` and `revision` (and the default
/// `settings.variant` for Hugging Face repos) are merged into it, its access token is set, and
/// local paths are absolute. `source.canonical()` is what records and the lock store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The entry's identity, unique in the manifest.
    pub name: String,
    /// The source, complete (see above).
    pub source: ModelSource,
    /// Globs over repo (or local folder) files to take; empty: all.
    pub include: Vec<String>,
    /// Globs over repo (or local folder) files to leave out.
    pub exclude: Vec<String>,
    /// Register a local source where it is instead of copying it.
    pub inplace: bool,
    /// Install path relative to `models_dir`, normalised (`None`: `<key>/…`).
    pub dest: Option<PathBuf>,
    /// Expected content hash `algo:hex`; a mismatch fails the install.
    pub hash: Option<String>,
    /// Warm into the load cache after apply / in watch.
    pub preload: bool,
    /// Precision of the entry's device copies (`None`: `settings.cache.precision`).
    pub precision: Option<String>,
    /// Record tags, as written.
    pub tags: Vec<String>,
    /// Record description.
    pub description: Option<String>,
    /// Probe overrides.
    pub config: ConfigOverrides,
    /// Whether unsafe pickles may be installed.
    pub unsafe_pickle: UnsafePickle,
    /// Where the model lands in models_dir (`settings.layout` unless the entry says; always
    /// `invokeai` for an inplace model, which stays where it is).
    pub layout: crate::install::Layout,
    /// Hash of the normalised spec, as stored in `Managed.spec_hash`.
    pub spec_hash: SpecHash,
    /// Where the entry starts in the manifest (for messages that point at it).
    pub loc: Loc,
}

impl ModelEntry {
    /// The canonical source string (no token, no `inplace`).
    pub fn canonical_source(&self) -> String {
        self.source.canonical()
    }

    /// The access token, kept in memory only.
    pub fn token(&self) -> Option<&Token> {
        self.source.access_token()
    }

    /// The requested revision when this is a Hugging Face source (an `oci://` source's tag).
    pub fn revision(&self) -> Option<&str> {
        match &self.source {
            ModelSource::Hf(h) => h.revision.as_deref(),
            ModelSource::Oci(o) => o.reference.tag.as_deref(),
            _ => None,
        }
    }

    /// What moves upstream, by name: an `oci://` source's tag (`latest` by default), else the
    /// revision (`main` by default).
    pub fn moving_ref(&self) -> &str {
        match &self.source {
            ModelSource::Oci(o) => o.reference.tag_or_default().unwrap_or("latest"),
            _ => self.revision().unwrap_or("main"),
        }
    }

    /// Whether the revision pins a commit (40 hex digits), so upstream can never move it.
    /// An `oci://` source is pinned by a digest; other sources count as pinned: there is
    /// nothing to refresh.
    pub fn is_pinned(&self) -> bool {
        match &self.source {
            ModelSource::Oci(o) => o.reference.is_pinned(),
            ModelSource::Hf(h) => h
                .revision
                .as_deref()
                .is_some_and(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())),
            _ => true,
        }
    }
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// Its folder, absolute: relative paths in it resolve against this.
    pub base_dir: PathBuf,
    /// Settings, defaults filled in.
    pub settings: Settings,
    /// Entries in file order.
    pub models: Vec<ModelEntry>,
    /// Entries that are well formed but cannot be expanded on this machine (a `${VAR}`
    /// without a default whose variable is not set), in file order. Each is its own entry's
    /// error (`diff` shows it as an `✗` row, `apply` fails only it), not the manifest's; its
    /// records are neither deleted nor orphaned.
    pub broken: Vec<BrokenEntry>,
}

/// A manifest's entries by name: [`Manifest::index`].
#[derive(Debug, Clone)]
pub struct EntryIndex<'a> {
    by_name: std::collections::HashMap<&'a str, &'a ModelEntry>,
}

impl<'a> EntryIndex<'a> {
    /// The entry with this name (among those indexed).
    pub fn get(&self, name: &str) -> Option<&'a ModelEntry> {
        self.by_name.get(name).copied()
    }
}

/// A manifest entry that cannot be expanded here: see [`Manifest::broken`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenEntry {
    /// Its name.
    pub name: String,
    /// Its `source` as written (not interpolated).
    pub source: String,
    /// Why, with the line and field.
    pub reason: String,
    /// Where the entry starts.
    pub loc: Loc,
}

impl Manifest {
    /// The entry with this name.
    pub fn entry(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|e| e.name == name)
    }

    /// The entries by name, for a caller that looks up many (apply looks up each action's
    /// entry): one pass now, then each look-up is a hash probe where [`entry`](Self::entry)
    /// walks the list. `only` non-empty: just those names (apply's `--only`, watch's
    /// one-entry runs), so building it costs no more than the names asked for. A name twice
    /// (the parser refuses that; a manifest built in code may not) finds the first entry, as
    /// [`entry`](Self::entry) does.
    pub fn index(&self, only: &[String]) -> EntryIndex<'_> {
        let only: std::collections::HashSet<&str> = only.iter().map(String::as_str).collect();
        let mut by_name = std::collections::HashMap::with_capacity(if only.is_empty() {
            self.models.len()
        } else {
            only.len()
        });
        for e in &self.models {
            if only.is_empty() || only.contains(e.name.as_str()) {
                by_name.entry(e.name.as_str()).or_insert(e);
            }
        }
        EntryIndex { by_name }
    }

    /// Whether an entry of this name is in the manifest, expandable or not.
    pub fn has_entry(&self, name: &str) -> bool {
        self.entry(name).is_some() || self.broken.iter().any(|b| b.name == name)
    }

    /// The lock file: `settings.lock_file` (or `--lock-file`), else next to the manifest
    /// (`models.yaml` → `models.lock`).
    pub fn lock_path(&self) -> PathBuf {
        self.settings
            .lock_file
            .clone()
            .unwrap_or_else(|| lock::lock_path_for(&self.path))
    }
}

/// The YAML parser's limits for a document of `len` bytes (manifests, locks, the YAML store).
///
/// serde-saphyr's default budget (250k nodes, 1M events) stops a lock near 16k entries and a
/// manifest near 33k. A node or event needs at least one byte of input unless an alias replays
/// it, so limits proportional to the input (four nodes and eight events per byte, never below
/// the defaults) admit any document written out in full — 100k-entry manifests and locks parse
/// — while an alias bomb, whose replayed nodes outgrow its bytes by orders of magnitude, still
/// runs out of budget. The nesting-depth, alias and anchor limits stay the defaults.
pub(crate) fn yaml_budget(len: usize) -> serde_saphyr::Budget {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = budget.max_nodes.max(len.saturating_mul(4));
    budget.max_events = budget.max_events.max(len.saturating_mul(8));
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(len);
    budget
}

/// [`yaml_budget`] as parser options, with YAML 1.2 booleans only (`true`/`false`): JSON
/// Schema editors read the file that way, so `tags: [y, n]` are strings and `preload: yes` is
/// not a boolean.
pub(crate) fn yaml_options(len: usize) -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        budget: Some(yaml_budget(len)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index answers as `entry` does, the first of a duplicated name included, and holds
    /// only the names asked for.
    #[test]
    fn index_finds_what_entry_finds() {
        let text =
            "version: 1\nmodels:\n  - name: a\n    source: o/a\n  - name: b\n    source: o/b\n";
        let mut m = parse_str(text, Path::new("/p/models.yaml"), &|_| None).unwrap();
        let mut dup = m.models[1].clone();
        dup.name = "a".into();
        m.models.push(dup);
        let all = m.index(&[]);
        let source = |e: Option<&ModelEntry>| e.map(ModelEntry::canonical_source);
        assert_eq!(
            source(all.get("a")),
            Some("o/a".to_owned()),
            "the first `a`"
        );
        assert_eq!(source(all.get("a")), source(m.entry("a")));
        assert_eq!(source(all.get("b")), Some("o/b".to_owned()));
        assert!(all.get("c").is_none());
        let only = m.index(&["b".to_owned(), "c".to_owned()]);
        assert!(only.get("a").is_none());
        assert_eq!(source(only.get("b")), Some("o/b".to_owned()));
        assert!(only.get("c").is_none());
    }
}
