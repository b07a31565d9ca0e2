//! Reading `models.yaml`: the wire types (which keep each value's position, and from which the
//! JSON Schema is generated) and their validation into a [`Manifest`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{MessageFormatter, Spanned};

use super::interpolate::{InterpolateError, env_lookup, interpolate};
use super::spec::{self, RecordSpec, SourceSpec};
use super::{
    BrokenEntry, CacheSettings, ConfigOverrides, Diagnostic, Loc, MANIFEST_VERSION, Manifest,
    ManifestError, ModelEntry, Settings, UnsafePickle,
};
use crate::hash::HashAlgorithm;
use crate::hub::source::{ModelSource, Token};
use crate::taxonomy::ModelRepoVariant;

/// A value together with where it was written. Transparent for serde and for the schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Sp<T>(Spanned<T>);

impl<T> Sp<T> {
    /// The value.
    pub fn value(&self) -> &T {
        &self.0.value
    }

    /// Where it was written.
    pub fn loc(&self) -> Loc {
        Loc {
            line: self.0.referenced.line(),
            column: self.0.referenced.column(),
        }
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// A string as YAML wrote it: `tags: [1, 2]` or `name: 7` is refused, not taken as text,
/// as the JSON Schema says (write `"1"` for the text). Derefs to the `String`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl std::ops::Deref for Text {
    type Target = String;
    fn deref(&self) -> &String {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string (quote numbers and booleans meant as text)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Text {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        String::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

/// A boolean as YAML wrote it: `"true"` (a string) is refused, as the JSON Schema says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true or false (unquoted)")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Flag {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        bool::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        bool::json_schema(generator)
    }
}

/// `models.yaml`: the models this machine should have. Strings may use `${VAR}` and
/// `${VAR:-default}` (environment variables); `$${` is a literal `${`. Relative paths are
/// relative to this file's folder.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "modelsync manifest (models.yaml)")]
pub struct ManifestFile {
    /// Manifest format version. Must be 1.
    #[schemars(range(min = 1, max = 1))]
    pub version: Sp<u32>,
    /// Where and how models are installed. All optional.
    #[serde(default)]
    pub settings: Option<SettingsFile>,
    /// The models. Each entry's `name` is its identity and must be unique.
    #[serde(default)]
    pub models: Option<Vec<Sp<EntryFile>>>,
}

/// `settings:`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    /// Folder models are installed into (default `models`, relative to the manifest).
    #[serde(default)]
    pub models_dir: Option<Sp<Text>>,
    /// Record store: `.db`/`.sqlite` for SQLite, `.yaml`/`.yml` for a YAML file
    /// (default `<models_dir>/modelsync.db`).
    #[serde(default)]
    pub database: Option<Sp<Text>>,
    /// Where `models.lock` is kept (default beside the manifest: `models.yaml` →
    /// `models.lock`); for a manifest on a read-only mount such as a Kubernetes ConfigMap.
    #[serde(default)]
    pub lock_file: Option<Sp<Text>>,
    /// Default Hugging Face repo variant for entries that name none.
    #[serde(default)]
    pub variant: Option<Sp<ModelRepoVariant>>,
    /// Content hash algorithm of new records (default blake3).
    #[serde(default)]
    pub hash_algorithm: Option<HashAlgorithm>,
    /// Delete managed models whose entries left the manifest (default false).
    #[serde(default)]
    pub prune: Option<Sp<Flag>>,
    /// Downloads at once (default 5).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_parallel_downloads: Option<Sp<u32>>,
    /// Hugging Face endpoint (default env HF_ENDPOINT, else https://huggingface.co).
    #[serde(default)]
    pub hf_endpoint: Option<Sp<Text>>,
    /// How long apply waits for another process's store lock (default 5m).
    #[serde(default)]
    #[schemars(schema_with = "duration_schema")]
    pub lock_timeout: Option<Sp<String>>,
    /// How often watch resyncs without a manifest change (default 5m).
    #[serde(default)]
    #[schemars(schema_with = "duration_schema")]
    pub watch_interval: Option<Sp<String>>,
    /// Longest time one file's download may take, retries and waits included (default 24h).
    #[serde(default)]
    #[schemars(schema_with = "duration_schema")]
    pub download_timeout: Option<Sp<String>>,
    /// How often watch asks the Hub whether an unpinned revision moved, and upgrades the entry
    /// when it did (default: never; pinned commits never move).
    #[serde(default)]
    #[schemars(schema_with = "duration_schema")]
    pub refresh_interval: Option<Sp<String>>,
    /// Load cache budgets.
    #[serde(default)]
    pub cache: Option<CacheFile>,
    /// Models no probe rule identifies (and guessed bases): `allow` records them as type
    /// `unknown` (or with the fallback base) with a warning; `deny` fails the entry
    /// (default allow).
    #[serde(default)]
    pub unknown_models: Option<crate::install::UnknownModels>,
    /// What `watch` does at each resync with models in models_dir that no record owns and
    /// records whose files are gone: `off`; `report` them in /status and the metrics; or
    /// `register` the orphans in place (default report; dead records are only reported).
    #[serde(default)]
    pub sync: Option<crate::install::SyncMode>,
    /// OCI registries by host (`host` or `host:port`): `insecure: true` speaks plain HTTP
    /// to it (a test or in-cluster registry; https is the default).
    #[serde(default)]
    pub registries: Option<std::collections::BTreeMap<String, RegistryFile>>,
}

/// `settings.registries.HOST:`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Plain HTTP instead of https (default false).
    #[serde(default)]
    pub insecure: Option<Sp<Flag>>,
}

/// `settings.cache:`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    /// Host-memory budget.
    #[serde(default)]
    #[schemars(schema_with = "size_schema")]
    pub ram: Option<Sp<String>>,
    /// Device-memory budget.
    #[serde(default)]
    #[schemars(schema_with = "size_schema")]
    pub vram: Option<Sp<String>>,
    /// Execution device: auto, cpu, cuda or cuda:N (default auto). Apple's `mps` is not
    /// supported: the torch backend accounts and moves CUDA memory only.
    #[serde(default)]
    #[schemars(regex(pattern = r"^(auto|cpu|cuda(:[0-9]+)?)$"))]
    pub device: Option<Sp<Text>>,
    /// Device memory kept free for activations (default 3GiB, InvokeAI's
    /// `device_working_mem_gb`).
    #[serde(default)]
    #[schemars(schema_with = "size_schema")]
    pub working_memory: Option<Sp<String>>,
    /// Precision of device copies: auto (each tensor's file dtype), fp16, bf16 or fp32
    /// (default auto).
    #[serde(default)]
    #[schemars(schema_with = "precision_schema")]
    pub precision: Option<Sp<Text>>,
    /// Models unused for this long are released from the cache (Ollama's `keep_alive`,
    /// InvokeAI's cache keep-alive); 0 (the default) keeps them until the budget needs the room.
    #[serde(default)]
    #[schemars(schema_with = "duration_schema")]
    pub keep_alive: Option<Sp<String>>,
    /// Whether `preload: true` models are exempt from `keep_alive` (default true).
    #[serde(default)]
    pub pin_preloaded: Option<Sp<Flag>>,
}

fn precision_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "description": "Precision of device copies: auto (each tensor's file dtype), fp16, bf16 or fp32.",
        "enum": ["auto", "fp16", "bf16", "fp32"]
    })
}

/// One model.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryFile {
    /// The entry's identity: unique in the file; apply records it in the model's record.
    #[schemars(schema_with = "name_schema")]
    pub name: Sp<Text>,
    /// A local path, a Hugging Face repo (`owner/name`, `owner/name:fp16`,
    /// `owner/name:fp16:vae`, `owner/name::vae`, `owner/name::path/file.safetensors`,
    /// `owner/name@revision`), an http(s) URL, or an OCI artifact
    /// (`oci://HOST[:PORT]/REPO[:TAG][@sha256:DIGEST]`).
    #[schemars(schema_with = "source_schema")]
    pub source: Sp<Text>,
    /// Hugging Face repo file variant ("" for the default files).
    #[serde(default)]
    pub variant: Option<Sp<ModelRepoVariant>>,
    /// A folder (or one file) of the Hugging Face repo.
    #[serde(default)]
    pub subfolder: Option<Sp<Text>>,
    /// Branch, tag or commit of the Hugging Face repo (default main); the resolved commit
    /// goes to models.lock.
    #[serde(default)]
    #[schemars(schema_with = "revision_schema")]
    pub revision: Option<Sp<Text>>,
    /// Globs over the repo's (or local folder's) files to take.
    #[serde(default)]
    pub include: Option<Vec<Sp<Text>>>,
    /// Globs over the repo's (or local folder's) files to leave out.
    #[serde(default)]
    pub exclude: Option<Vec<Sp<Text>>>,
    /// Access token, usually `${HF_TOKEN}` (for an `oci://` source, a registry token sent as
    /// `Bearer`). Kept in memory only, never stored.
    #[serde(default)]
    pub token: Option<Sp<Text>>,
    /// `oci://` sources: the registry user (with `password`), usually `${REGISTRY_USER}`.
    #[serde(default)]
    pub username: Option<Sp<Text>>,
    /// `oci://` sources: the registry password or access token, usually `${REGISTRY_PASSWORD}`.
    /// Kept in memory only, never stored.
    #[serde(default)]
    pub password: Option<Sp<Text>>,
    /// Local sources: register the file or folder where it is instead of copying it.
    #[serde(default)]
    pub inplace: Option<Sp<Flag>>,
    /// Install path relative to models_dir (default `<key>/…`).
    #[serde(default)]
    #[schemars(schema_with = "dest_schema")]
    pub dest: Option<Sp<Text>>,
    /// Expected content hash `algo:hex` (for example `blake3:…`); a mismatch is an error.
    #[serde(default)]
    #[schemars(schema_with = "hash_schema")]
    pub hash: Option<Sp<Text>>,
    /// Warm into the load cache after apply and in watch.
    #[serde(default)]
    pub preload: Option<Sp<Flag>>,
    /// Record tags.
    #[serde(default)]
    #[schemars(schema_with = "tags_schema")]
    pub tags: Option<Vec<Sp<Text>>>,
    /// Record description.
    #[serde(default)]
    pub description: Option<Sp<Text>>,
    /// Record fields that override what the probe finds.
    #[serde(default)]
    pub config: Option<ConfigOverrides>,
    /// Whether pickle files the scanner flags may be installed (default deny).
    #[serde(default)]
    pub unsafe_pickle: Option<UnsafePickle>,
    /// Precision of this model's device copies (default `settings.cache.precision`).
    #[serde(default)]
    #[schemars(schema_with = "precision_schema")]
    pub precision: Option<Sp<Text>>,
}

// The schemas below carry the checks `Cx::entry` makes, so that an editor refuses what the
// parser refuses (a test checks a table of cases both ways). A value using `${…}` can only be
// checked once expanded, so the patterns let it through.

fn name_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "description": "The entry's identity: unique in the file; apply records it in the model's record. Not empty, no surrounding spaces or control characters.",
        "pattern": "^[^\\s\\x00-\\x1f\\x7f](?:[^\\x00-\\x1f\\x7f]*[^\\s\\x00-\\x1f\\x7f])?$"
    })
}

fn source_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "description": "A local path, a Hugging Face repo (`owner/name`, `owner/name:fp16`, `owner/name:fp16:vae`, `owner/name::vae`, `owner/name::path/file.safetensors`, `owner/name@revision`), an http(s) URL, or an OCI artifact (`oci://HOST[:PORT]/REPO[:TAG][@sha256:DIGEST]`).",
        "pattern": "\\S"
    })
}

fn revision_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "description": "Branch, tag or commit of the Hugging Face repo (default main); the resolved commit goes to models.lock.",
        "pattern": "^[^\\s:@]+$|\\$\\{"
    })
}

fn dest_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "description": "Install path relative to models_dir (default `<key>/…`): not absolute, no `..`, not in .tmp or .cache.",
        "pattern": "^(?![/\\\\~])(?!(?:\\./)*\\.(?:tmp|cache)(?:/|$))(?!(?:.*/)?\\.\\.(?:/|$))(?!(?:\\.?/?)*$).+$|\\$\\{"
    })
}

fn hash_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let algos = HashAlgorithm::ALL
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join("|");
    schemars::json_schema!({
        "type": "string",
        "description": "Expected content hash `algo:hex` (for example `blake3:…`); a mismatch is an error.",
        "pattern": format!("^(?:{algos}):[0-9a-fA-F]+$|\\$\\{{")
    })
}

fn tags_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "description": "Record tags.",
        "items": {"type": "string", "pattern": "\\S"}
    })
}

fn size_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["string", "integer"],
        "minimum": 0,
        "description": "A size: bytes, or a number with B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).",
        "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*([KkMmGgTt]i?[Bb]?|[Bb])?\\s*$",
        "examples": ["8GiB", "512MiB", "8GB"]
    })
}

/// The query parameters of a URL as written whose value uses `${VAR}`: a value taken from
/// the environment is treated as a secret, so it never reaches the lock file, a record or the
/// plan (`?token=${CIVITAI_TOKEN}` shows as `?token=***` whatever the parameter's name).
fn interpolated_query_params(written: &str) -> Vec<String> {
    let Some((_, q)) = written.split_once('?') else {
        return Vec::new();
    };
    let q = q.split('#').next().unwrap_or(q);
    q.split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(_, v)| v.contains("${"))
        .map(|(k, _)| k.to_owned())
        .collect()
}

fn duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["string", "integer"],
        "description": "A duration: seconds, or a number with a unit such as 30s, 5m, 1h or 1h30m.",
        "examples": ["30s", "5m", "1h"]
    })
}

/// Reads and validates the manifest at `path`, interpolating from the process environment.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = read(path)?;
    parse_str(&text, path, &env_lookup)
}

/// Reads only the settings of the manifest at `path` (the whole file must parse; only the
/// settings are interpolated and checked), for commands that need paths but no entries, so a
/// missing `HF_TOKEN` does not stop `modelsync list`.
pub fn load_settings(path: &Path) -> Result<Settings, ManifestError> {
    let text = read(path)?;
    let mut cx = Cx::new(path, &env_lookup);
    let file = cx.deserialize(&text)?;
    cx.check_version(&file);
    let settings = cx.settings(file.settings.as_ref());
    cx.finish(settings)
}

fn read(path: &Path) -> Result<String, ManifestError> {
    std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses and validates manifest text. `path` names the file in messages and its folder is
/// the base of relative paths; `lookup` resolves `${VAR}`.
pub fn parse_str(
    text: &str,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestError> {
    let mut cx = Cx::new(path, lookup);
    let file = cx.deserialize(text)?;
    cx.check_version(&file);
    let settings = cx.settings(file.settings.as_ref());
    let mut models = Vec::new();
    let mut names: HashMap<String, Loc> = HashMap::new();
    let mut dests: HashMap<PathBuf, (String, Loc)> = HashMap::new();
    let mut broken = Vec::new();
    for entry in file.models.iter().flatten() {
        let e = match cx.entry(entry, &settings) {
            None => continue,
            Some(Err(b)) => {
                let name_loc = entry.value().name.loc();
                if let Some(first) = names.get(&b.name) {
                    cx.err(
                        name_loc,
                        format!(
                            "duplicate entry name `{}` (first defined at line {}, column {}): names are the entries' identity and must be unique",
                            b.name, first.line, first.column
                        ),
                    );
                } else {
                    names.insert(b.name.clone(), name_loc);
                    broken.push(b);
                }
                continue;
            }
            Some(Ok(e)) => e,
        };
        let name_loc = entry.value().name.loc();
        if let Some(first) = names.get(&e.name) {
            cx.err(
                name_loc,
                format!(
                    "duplicate entry name `{}` (first defined at line {}, column {}): names are the entries' identity and must be unique",
                    e.name, first.line, first.column
                ),
            );
            continue;
        }
        names.insert(e.name.clone(), name_loc);
        if let (Some(dest), Some(dest_sp)) = (&e.dest, &entry.value().dest) {
            if let Some((other, first)) = dests.get(dest) {
                cx.err(
                    dest_sp.loc(),
                    format!(
                        "`dest` {} is already used by entry `{other}` at line {}",
                        dest.display(),
                        first.line
                    ),
                );
            } else {
                dests.insert(dest.clone(), (e.name.clone(), dest_sp.loc()));
            }
        }
        models.push(e);
    }
    let base_dir = cx.base_dir.clone();
    cx.finish(Manifest {
        path: path.to_path_buf(),
        base_dir,
        settings,
        models,
        broken,
    })
}

/// Validation state: the diagnostics found so far.
struct Cx<'a> {
    file: String,
    base_dir: PathBuf,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    diags: Vec<Diagnostic>,
    /// Inside an entry (past its name): unset variables go to `unset`, not `diags`.
    defer_unset: bool,
    unset: Vec<String>,
}

impl<'a> Cx<'a> {
    fn new(path: &Path, lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = parent.unwrap_or_else(|| Path::new("."));
        let base_dir =
            std::path::absolute(parent).map_or_else(|_| parent.to_path_buf(), |p| normalize(&p));
        Self {
            file: path.display().to_string(),
            base_dir,
            lookup,
            diags: Vec::new(),
            defer_unset: false,
            unset: Vec::new(),
        }
    }

    fn err(&mut self, loc: Loc, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            loc,
            message: message.into(),
        });
    }

    fn finish<T>(mut self, value: T) -> Result<T, ManifestError> {
        if self.diags.is_empty() {
            Ok(value)
        } else {
            self.diags.sort_by_key(|d| (d.loc.line, d.loc.column));
            Err(ManifestError::Invalid(self.diags))
        }
    }

    fn deserialize(&self, text: &str) -> Result<ManifestFile, ManifestError> {
        let only_comments = text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        if only_comments {
            return Err(ManifestError::Invalid(vec![Diagnostic {
                file: self.file.clone(),
                loc: Loc::default(),
                message:
                    "the manifest is empty: expected at least `version: 1` and a `models:` list"
                        .into(),
            }]));
        }
        serde_saphyr::from_str_with_options::<ManifestFile>(text, super::yaml_options(text.len()))
            .map_err(|e| {
                let loc = e.location().map_or_else(Loc::default, |l| Loc {
                    line: l.line(),
                    column: l.column(),
                });
                let raw = serde_saphyr::DefaultMessageFormatter
                    .format_message(e.without_snippet())
                    .into_owned();
                ManifestError::Invalid(vec![Diagnostic {
                    file: self.file.clone(),
                    loc,
                    message: clean_message(&raw),
                }])
            })
    }

    fn check_version(&mut self, file: &ManifestFile) {
        let v = *file.version.value();
        if v != MANIFEST_VERSION {
            self.err(
                file.version.loc(),
                format!("unsupported manifest version {v}: this modelsync reads `version: {MANIFEST_VERSION}`"),
            );
        }
    }

    /// The interpolated value of a string.
    fn text<S: AsRef<str>>(&mut self, sp: &Sp<S>, field: &str) -> Option<String> {
        match interpolate(sp.value().as_ref(), self.lookup) {
            Ok(s) => Some(s),
            Err(e @ InterpolateError::Unset(_)) if self.defer_unset => {
                self.unset
                    .push(format!("line {}: in `{field}`: {e}", sp.loc().line));
                None
            }
            Err(e) => {
                self.err(sp.loc(), format!("in `{field}`: {e}"));
                None
            }
        }
    }

    fn resolve(&self, s: &str) -> PathBuf {
        let p = match s.strip_prefix("~/") {
            Some(rest) => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(rest),
                None => PathBuf::from(s),
            },
            None => PathBuf::from(s),
        };
        normalize(&self.base_dir.join(p))
    }

    fn settings(&mut self, raw: Option<&SettingsFile>) -> Settings {
        let mut s = Settings::defaults(&self.base_dir);
        let Some(raw) = raw else { return s };
        if let Some(sp) = &raw.models_dir
            && let Some(v) = self.text(sp, "models_dir")
        {
            if v.trim().is_empty() {
                self.err(sp.loc(), "`models_dir` is empty: expected a folder path");
            } else {
                s.models_dir = self.resolve(&v);
            }
        }
        if let Some(sp) = &raw.database
            && let Some(v) = self.text(sp, "database")
        {
            let ext = Path::new(&v)
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if matches!(
                ext.as_deref(),
                Some("db" | "sqlite" | "sqlite3" | "yaml" | "yml")
            ) {
                s.database = Some(self.resolve(&v));
            } else {
                self.err(
                    sp.loc(),
                    format!("`database` `{v}` has no store kind: expected a .db/.sqlite file (SQLite) or a .yaml/.yml file (YAML store)"),
                );
            }
        }
        if let Some(sp) = &raw.lock_file
            && let Some(v) = self.text(sp, "lock_file")
        {
            if v.trim().is_empty() {
                self.err(sp.loc(), "`lock_file` is empty: expected a file path");
            } else {
                s.lock_file = Some(self.resolve(&v));
            }
        }
        s.variant = raw
            .variant
            .as_ref()
            .map(|v| *v.value())
            .filter(|v| *v != ModelRepoVariant::Default);
        if let Some(h) = raw.hash_algorithm {
            s.hash_algorithm = h;
        }
        s.prune = raw.prune.as_ref().is_some_and(|f| f.value().0);
        if let Some(sp) = &raw.max_parallel_downloads {
            if *sp.value() == 0 {
                self.err(sp.loc(), "`max_parallel_downloads` must be at least 1");
            } else {
                s.max_parallel_downloads = *sp.value() as usize;
            }
        }
        if let Some(sp) = &raw.hf_endpoint
            && let Some(v) = self.text(sp, "hf_endpoint")
        {
            match reqwest::Url::parse(&v) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                    s.hf_endpoint = Some(v.trim_end_matches('/').to_owned());
                }
                _ => self.err(
                    sp.loc(),
                    format!("`hf_endpoint` `{v}` is not an http(s) URL, for example https://huggingface.co"),
                ),
            }
        }
        for (sp, field, slot) in [
            (&raw.lock_timeout, "lock_timeout", &mut s.lock_timeout),
            (&raw.watch_interval, "watch_interval", &mut s.watch_interval),
        ] {
            if let Some(sp) = sp
                && let Some(v) = self.text(sp, field)
            {
                match crate::units::parse_duration(&v) {
                    Ok(d) => *slot = d,
                    Err(e) => self.err(sp.loc(), format!("`{field}`: {e}")),
                }
            }
        }
        if let Some(sp) = &raw.download_timeout
            && let Some(v) = self.text(sp, "download_timeout")
        {
            match crate::units::parse_duration(&v) {
                Ok(d) if d.is_zero() => self.err(
                    sp.loc(),
                    "`download_timeout` must be longer than 0 (for example 6h)",
                ),
                Ok(d) => s.download_timeout = d,
                Err(e) => self.err(sp.loc(), format!("`download_timeout`: {e}")),
            }
        }
        if let Some(sp) = &raw.refresh_interval
            && let Some(v) = self.text(sp, "refresh_interval")
        {
            match crate::units::parse_duration(&v) {
                Ok(d) if d.is_zero() => self.err(
                    sp.loc(),
                    "`refresh_interval` must be longer than 0 (for example 1h); leave it out to never refresh",
                ),
                Ok(d) => s.refresh_interval = Some(d),
                Err(e) => self.err(sp.loc(), format!("`refresh_interval`: {e}")),
            }
        }
        if let Some(c) = &raw.cache {
            s.cache = self.cache(c);
        }
        s.unknown_models = raw.unknown_models.unwrap_or_default();
        s.sync = raw.sync.unwrap_or_default();
        for (host, r) in raw.registries.iter().flatten() {
            let probe = format!("oci://{host}/x");
            if host.contains('/') || crate::oci::OciReference::parse(&probe).is_err() {
                self.err(
                    r.insecure.as_ref().map_or(Loc::default(), Sp::loc),
                    format!(
                        "`registries` key `{host}` is not a registry host (`host` or `host:port`)"
                    ),
                );
                continue;
            }
            s.registries.insert(
                host.to_ascii_lowercase(),
                crate::oci::RegistrySettings {
                    insecure: r.insecure.as_ref().is_some_and(|v| v.value().0),
                },
            );
        }
        s
    }

    fn cache(&mut self, c: &CacheFile) -> CacheSettings {
        let mut out = CacheSettings::default();
        for (sp, field, slot) in [
            (&c.ram, "cache.ram", &mut out.ram),
            (&c.vram, "cache.vram", &mut out.vram),
        ] {
            if let Some(sp) = sp
                && let Some(v) = self.text(sp, field)
            {
                match crate::units::parse_size(&v) {
                    Ok(n) => *slot = Some(n),
                    Err(e) => self.err(sp.loc(), format!("`{field}`: {e}")),
                }
            }
        }
        if let Some(sp) = &c.working_memory
            && let Some(v) = self.text(sp, "cache.working_memory")
        {
            match crate::units::parse_size(&v) {
                Ok(n) => out.working_memory = Some(n),
                Err(e) => self.err(sp.loc(), format!("`cache.working_memory`: {e}")),
            }
        }
        if let Some(sp) = &c.device
            && let Some(v) = self.text(sp, "cache.device")
        {
            let ok = matches!(v.as_str(), "auto" | "cpu" | "cuda")
                || v.strip_prefix("cuda:")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if ok {
                out.device = v;
            } else if v == "mps" {
                // Refused here rather than at load time: the torch backend accounts, offloads
                // and reserves CUDA memory only, and no Apple machine has run it.
                self.err(
                    sp.loc(),
                    "`cache.device` `mps` is not supported: the load cache runs on cpu or cuda:N only",
                );
            } else {
                self.err(
                    sp.loc(),
                    format!(
                        "invalid `cache.device` `{v}`: expected one of auto, cpu, cuda, cuda:N"
                    ),
                );
            }
        }
        if let Some(sp) = &c.precision
            && let Some(v) = self.precision(sp, "cache.precision")
        {
            out.precision = v;
        }
        if let Some(sp) = &c.keep_alive
            && let Some(v) = self.text(sp, "cache.keep_alive")
        {
            match crate::units::parse_duration(&v) {
                Ok(d) => out.keep_alive = (!d.is_zero()).then_some(d),
                Err(e) => self.err(sp.loc(), format!("`cache.keep_alive`: {e}")),
            }
        }
        if let Some(f) = &c.pin_preloaded {
            out.pin_preloaded = f.value().0;
        }
        out
    }

    /// A precision (`auto`, `fp16`, `bf16`, `fp32`), or an error at its position.
    fn precision(&mut self, sp: &Sp<Text>, field: &str) -> Option<String> {
        let v = self.text(sp, field)?;
        if super::PRECISIONS.contains(&v.as_str()) {
            Some(v)
        } else {
            self.err(
                sp.loc(),
                format!("invalid `{field}` `{v}`: expected one of auto, fp16, bf16, fp32"),
            );
            None
        }
    }

    /// Validates one entry; `None` when it has errors (they are recorded).
    #[allow(
        clippy::too_many_lines,
        reason = "one check after another, in field order"
    )]
    /// One entry: `None` when it is invalid (diagnostics recorded), `Err` when it is valid but
    /// uses a variable that is not set (see [`Manifest::broken`]).
    fn entry(
        &mut self,
        sp: &Sp<EntryFile>,
        settings: &Settings,
    ) -> Option<Result<ModelEntry, BrokenEntry>> {
        let before = self.diags.len();
        let raw = sp.value();
        let expanded = self.text(&raw.name, "name");
        let name = expanded.clone().unwrap_or_default();
        self.defer_unset = true;
        let r = self.entry_body(sp, settings, expanded.as_deref());
        self.defer_unset = false;
        let unset = std::mem::take(&mut self.unset);
        if self.diags.len() > before {
            return None;
        }
        match r {
            Some(e) if unset.is_empty() => Some(Ok(e)),
            _ => Some(Err(BrokenEntry {
                name,
                source: raw.source.value().to_string(),
                reason: unset.join("; "),
                loc: sp.loc(),
            })),
        }
    }

    fn entry_body(
        &mut self,
        sp: &Sp<EntryFile>,
        settings: &Settings,
        expanded: Option<&str>,
    ) -> Option<ModelEntry> {
        let before = self.diags.len();
        let raw = sp.value();
        let name = expanded.unwrap_or_default().to_owned();
        if expanded.is_none() {
            // Said already.
        } else if name.trim().is_empty() {
            self.err(
                raw.name.loc(),
                "`name` is empty: every entry needs a unique name",
            );
        } else if name.trim() != name || name.chars().any(char::is_control) {
            self.err(
                raw.name.loc(),
                format!("`name` {name:?} has surrounding spaces or control characters"),
            );
        }
        let src_text = self.text(&raw.source, "source");
        let mut source = match src_text
            .as_deref()
            .map(|s| ModelSource::parse_in(s, &self.base_dir))
        {
            Some(Ok(ModelSource::Local(mut l))) => {
                // `./x` and `x` must give one canonical string, or the spec hash would differ.
                l.path = normalize(&l.path);
                Some(ModelSource::Local(l))
            }
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                self.err(raw.source.loc(), e.to_string());
                None
            }
            None => None,
        };
        if let Some(ModelSource::Url(u)) = &mut source {
            u.secret_params = interpolated_query_params(raw.source.value());
        }
        if let Some(ModelSource::Oci(o)) = &mut source {
            o.apply_settings(&settings.registries);
        }
        let kind = source.as_ref().map(kind_of);
        let hf_only = |cx: &mut Self, loc: Loc, field: &str| {
            if let Some(k) = kind
                && k != "Hugging Face repo"
            {
                cx.err(
                    loc,
                    format!("`{field}` applies to Hugging Face repo sources only, and this source is a {k}"),
                );
                return false;
            }
            true
        };
        // Repo fields: merged into the source, and must not contradict its string form.
        if let Some(v) = &raw.variant
            && hf_only(self, v.loc(), "variant")
            && let Some(ModelSource::Hf(h)) = &mut source
        {
            let want = Some(*v.value()).filter(|v| *v != ModelRepoVariant::Default);
            if h.variant.is_some() && h.variant != want {
                self.err(
                    v.loc(),
                    format!(
                        "`variant` {} contradicts the variant in `source`",
                        v.value()
                    ),
                );
            }
            h.variant = want;
        }
        if let Some(v) = &raw.subfolder
            && hf_only(self, v.loc(), "subfolder")
            && let Some(text) = self.text(v, "subfolder")
            && let Some(ModelSource::Hf(h)) = &mut source
        {
            let sub = text.trim_matches('/');
            if sub.is_empty()
                || sub.contains(['\\', ':'])
                || sub
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                self.err(
                    v.loc(),
                    format!("`subfolder` `{text}` must be a relative path inside the repo"),
                );
            } else if h.subfolder.as_deref().is_some_and(|s| s != sub) {
                self.err(
                    v.loc(),
                    format!("`subfolder` `{sub}` contradicts the subfolder in `source`"),
                );
            } else {
                h.subfolder = Some(sub.to_owned());
            }
        }
        if let Some(v) = &raw.revision
            && hf_only(self, v.loc(), "revision")
            && let Some(text) = self.text(v, "revision")
            && let Some(ModelSource::Hf(h)) = &mut source
        {
            if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == ':' || c == '@')
            {
                self.err(
                    v.loc(),
                    format!("`revision` `{text}` is not a branch, tag or commit"),
                );
            } else if h.revision.as_deref().is_some_and(|r| r != text) {
                self.err(
                    v.loc(),
                    format!("`revision` `{text}` contradicts the `@revision` in `source`"),
                );
            } else {
                h.revision = Some(text);
            }
        }
        if let Some(ModelSource::Hf(h)) = &mut source
            && raw.variant.is_none()
            && h.variant.is_none()
            && h.single_file().is_none()
        {
            h.variant = settings.variant;
        }
        let mut globs = [Vec::new(), Vec::new()];
        for (list, field, out) in [(&raw.include, "include", 0), (&raw.exclude, "exclude", 1)] {
            for item in list.iter().flatten() {
                if kind == Some("URL") {
                    self.err(
                        item.loc(),
                        format!("`{field}` does not apply to a URL source (one file)"),
                    );
                    break;
                }
                if kind == Some("OCI artifact") {
                    self.err(
                        item.loc(),
                        format!("`{field}` does not apply to an oci:// source (every layer of the artifact is pulled)"),
                    );
                    break;
                }
                if let Some(g) = self.text(item, field) {
                    match globset::Glob::new(&g) {
                        Ok(_) => globs[out].push(g),
                        Err(e) => self.err(item.loc(), format!("invalid glob in `{field}`: {e}")),
                    }
                }
            }
        }
        let [include, exclude] = globs;
        if let Some(t) = &raw.token
            && let Some(text) = self.text(t, "token")
        {
            if kind == Some("local path") {
                self.err(t.loc(), "`token` does not apply to a local path");
            } else if text.is_empty() {
                // `${HF_TOKEN:-}` with HF_TOKEN unset: no entry token, so the usual ones
                // (HF_TOKEN, the token file) are tried, as `hf download` does.
            } else if let Some(s) = &mut source {
                s.set_access_token(Token::new(text));
            }
        }
        let username = raw.username.as_ref().and_then(|u| self.text(u, "username"));
        let password = raw.password.as_ref().and_then(|p| self.text(p, "password"));
        for (sp, field) in [(&raw.username, "username"), (&raw.password, "password")] {
            if let Some(sp) = sp
                && let Some(k) = kind
                && k != "OCI artifact"
            {
                self.err(
                    sp.loc(),
                    format!("`{field}` applies to oci:// sources only, and this source is a {k}"),
                );
            }
        }
        match (&raw.username, username, password) {
            (_, Some(u), Some(p)) if !u.is_empty() => {
                if let Some(ModelSource::Oci(o)) = &mut source {
                    if raw.token.is_some() {
                        self.err(
                            raw.token.as_ref().map_or(Loc::default(), Sp::loc),
                            "`token` and `username`/`password` are two ways to log in: give one",
                        );
                    }
                    // `${REGISTRY_PASSWORD:-}` unset: no entry credentials, so the Docker
                    // config's are tried, as for an empty `token`.
                    if let Some(password) = Token::new(p) {
                        o.credentials = Some(crate::oci::Credentials::Basic {
                            username: u,
                            password,
                        });
                    }
                }
            }
            (Some(sp), Some(_), None) => self.err(sp.loc(), "`username` needs a `password`"),
            (None, None, Some(_)) => self.err(
                raw.password.as_ref().map_or(Loc::default(), Sp::loc),
                "`password` needs a `username`",
            ),
            _ => {}
        }
        let inplace = raw.inplace.as_ref().is_some_and(|v| v.value().0);
        if let Some(v) = &raw.inplace
            && v.value().0
        {
            match &mut source {
                Some(ModelSource::Local(l)) => l.inplace = true,
                Some(other) => {
                    let k = kind_of(other);
                    self.err(
                        v.loc(),
                        format!("`inplace` applies to local paths only, and this source is a {k}"),
                    );
                }
                None => {}
            }
        }
        // An inplace model is the user's folder as it is: no copy to leave files out of.
        for (list, field) in [(&raw.include, "include"), (&raw.exclude, "exclude")] {
            if inplace && let Some(item) = list.iter().flatten().next() {
                self.err(
                    item.loc(),
                    format!("`{field}` cannot be combined with `inplace: true` (an inplace model is registered as it is; drop `inplace` to copy only the selected files)"),
                );
            }
        }
        let mut dest = None;
        if let Some(d) = &raw.dest
            && let Some(text) = self.text(d, "dest")
        {
            if inplace {
                self.err(d.loc(), "`dest` cannot be combined with `inplace: true` (an inplace model stays where it is)");
            } else {
                match check_dest(&text) {
                    Ok(p) => dest = Some(p),
                    Err(why) => self.err(d.loc(), format!("`dest` `{text}` {why}")),
                }
            }
        }
        let mut hash = None;
        if let Some(h) = &raw.hash
            && let Some(text) = self.text(h, "hash")
        {
            match check_hash(&text) {
                Ok(()) => hash = Some(text),
                Err(why) => self.err(h.loc(), format!("`hash` `{text}`: {why}")),
            }
        }
        let mut tags = Vec::new();
        for t in raw.tags.iter().flatten() {
            if let Some(v) = self.text(t, "tags") {
                if v.trim().is_empty() {
                    self.err(t.loc(), "empty tag");
                } else {
                    tags.push(v);
                }
            }
        }
        let description = raw
            .description
            .as_ref()
            .and_then(|d| self.text(d, "description"));
        if self.diags.len() > before {
            return None;
        }
        let source = source?;
        let config = raw.config.clone().unwrap_or_default();
        if let (Some(t), Some(v)) = (config.model_type, config.variant) {
            let base = config
                .base
                .unwrap_or(crate::taxonomy::BaseModelType::Unknown);
            if let Err(e) = crate::config::check_variant(t, base, v.for_base(base)) {
                self.err(sp.loc(), format!("`config`: {e}"));
                return None;
            }
        }
        let unsafe_pickle = raw.unsafe_pickle.unwrap_or_default();
        let preload = raw.preload.as_ref().is_some_and(|f| f.value().0);
        let precision = match &raw.precision {
            Some(p) => Some(self.precision(p, "precision")?),
            None => None,
        };
        let canonical = source.canonical();
        let dest_str = dest.as_ref().map(|d: &PathBuf| slash_path(d));
        let spec_hash = spec::compute(
            &SourceSpec {
                v: 1,
                source: &canonical,
                inplace,
                include: spec::set_of(&include),
                exclude: spec::set_of(&exclude),
                dest: dest_str.as_deref(),
                hash: hash.as_deref(),
                unsafe_pickle,
            },
            &RecordSpec {
                v: 1,
                name: &name,
                description: description.as_deref(),
                tags: spec::set_of(&tags),
                config: &config,
                preload,
            },
        );
        Some(ModelEntry {
            name,
            source,
            include,
            exclude,
            inplace,
            dest,
            hash,
            preload,
            precision,
            tags,
            description,
            config,
            unsafe_pickle,
            spec_hash,
            loc: sp.loc(),
        })
    }
}

fn kind_of(s: &ModelSource) -> &'static str {
    match s {
        ModelSource::Local(_) => "local path",
        ModelSource::Url(_) => "URL",
        ModelSource::Hf(_) => "Hugging Face repo",
        ModelSource::Oci(_) => "OCI artifact",
    }
}

/// A `dest` must stay inside models_dir: relative, no `..`, not a reserved folder.
fn check_dest(s: &str) -> Result<PathBuf, &'static str> {
    let p = Path::new(s);
    if s.trim().is_empty() {
        return Err("is empty: expected a path relative to models_dir");
    }
    if p.is_absolute() || s.starts_with('/') || s.starts_with('\\') || s.starts_with('~') {
        return Err("must be relative to models_dir, not absolute");
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("must stay inside models_dir (no `..`)"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("must be relative to models_dir, not absolute");
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err("names models_dir itself: expected a path inside it");
    }
    let first = out
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    if matches!(first.as_deref(), Some(".tmp" | ".cache")) {
        return Err("is inside a folder modelsync reserves (.tmp, .cache)");
    }
    Ok(out)
}

fn check_hash(s: &str) -> Result<(), String> {
    let algos = || {
        HashAlgorithm::ALL
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some((algo, hex)) = s.split_once(':') else {
        return Err(format!("expected `algo:hex` with algo one of {}", algos()));
    };
    if algo.parse::<HashAlgorithm>().is_err() {
        return Err(format!(
            "unknown algorithm `{algo}`: expected one of {}",
            algos()
        ));
    }
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the digest after `:` must be hexadecimal".into());
    }
    Ok(())
}

/// A relative path with `/` separators, as the spec hash and the lock write it.
pub(crate) fn slash_path(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Removes `.` components and folds `..` into the component before it, without touching the
/// file system (symlinks are kept as written).
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Turns the parser's messages into ones that speak of the manifest, not of Rust.
fn clean_message(raw: &str) -> String {
    let msg = raw
        .trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable")
        .to_owned();
    if let Some(key) = msg.strip_prefix("duplicate mapping key: ") {
        return format!("duplicate key `{key}`");
    }
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once("`, expected one of ")
    {
        let hint = closest(field, expected.split(", "))
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        return format!("unknown field `{field}`, expected one of {expected}{hint}");
    }
    if let Some(what) = msg.strip_prefix("budget breached: ") {
        return format!(
            "the document exceeds the YAML parser's limits ({what}); aliases count every node \
             they replay, so write large repeated values out or shorten them"
        );
    }
    if msg.starts_with("cannot deserialize null into") {
        return "expected a value, found null (an empty value)".into();
    }
    match msg.as_str() {
        "invalid u32" | "invalid u64" | "invalid usize" => {
            "expected a whole number (0 or more)".into()
        }
        "unexpected end of input" => "unexpected end of the manifest".into(),
        _ => msg,
    }
}

/// The candidate closest to `word` by edit distance, when close enough to be a typo.
fn closest<'b>(word: &str, candidates: impl Iterator<Item = &'b str>) -> Option<&'b str> {
    candidates
        .map(|c| (levenshtein(word, c.trim_matches('`')), c.trim_matches('`')))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_rules() {
        assert_eq!(
            check_dest("loras/a.safetensors").unwrap(),
            PathBuf::from("loras/a.safetensors")
        );
        assert_eq!(check_dest("./x/./y").unwrap(), PathBuf::from("x/y"));
        for bad in ["/etc/x", "../x", "a/../../b", "", ".", ".tmp/x", "~/x"] {
            assert!(check_dest(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hash_rules() {
        assert!(check_hash("blake3:00ff").is_ok());
        assert!(check_hash("sha256:abc").is_ok());
        assert!(check_hash("md5:abc").unwrap_err().contains("blake3"));
        assert!(check_hash("blake3").is_err());
        assert!(check_hash("blake3:xyz").is_err());
    }

    #[test]
    fn typo_hints() {
        let fields = ["name", "source", "subfolder", "revision"];
        assert_eq!(closest("sorce", fields.iter().copied()), Some("source"));
        assert_eq!(closest("zzzzzzzz", fields.iter().copied()), None);
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }
}
