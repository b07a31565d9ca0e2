//! Model identification from headers and configs alone — weights are never loaded.
//!
//! [`probe`] takes a file or folder and says what it is: type, base, format, variant,
//! prediction type, repo variant, submodels, a default name, and the evidence behind each
//! decision. Single files are read by content, not extension:
//!
//! - safetensors: only the header (8-byte little-endian length + JSON, at most 100 MB);
//! - torch zip saves and legacy pickles (`.ckpt .pt .pth .bin`): the pickle opcodes are
//!   followed by an inert machine ([`pickle`]) that yields tensor names, shapes and dtypes,
//!   and the same pass feeds the safety scan ([`ProbeResult::pickle_scan`]);
//! - GGUF: header metadata and tensor infos.
//!
//! Folders: diffusers pipelines (`model_index.json`) and components (`config.json`),
//! embedding folders (`learned_embeds.*`), LoRA folders (`pytorch_lora_weights.*`),
//! IP-Adapter folders (`ip_adapter.*`). The rules live in `rules` (files) and `folder`.
//!
//! Overrides ([`probe_with_overrides`]) are the manifest entry's `config` dict: its values win
//! over probed ones, except that a `type` contradicting strong evidence is an error.

mod folder;
pub(crate) mod gguf;
pub(crate) mod pickle;
mod rules;
pub(crate) mod safetensors;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{CONFIG_CLASSES, RawConfig, SubmodelDefinition, class_fields};
use crate::scan::{self, ScanError, ScanReport};
use crate::taxonomy::{
    AnyVariant, BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SchedulerPredictionType,
    SubModelType,
};

pub use safetensors::MAX_HEADER as MAX_SAFETENSORS_HEADER;

/// What a probe found. Serialises as the `-o json` shape of `modelsync probe`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    /// Model type (`unknown` when no rule matched).
    #[serde(rename = "type")]
    pub model_type: ModelType,
    /// Base model (`unknown` when not determinable; see `base_candidates`).
    pub base: BaseModelType,
    /// On-disk format.
    pub format: ModelFormat,
    /// The variant: normal / inpaint / depth for SD mains, the family's variant otherwise
    /// (FLUX `dev`, CLIP `large`, Qwen3 `qwen3_4b` …).
    pub variant: Option<AnyVariant>,
    /// Scheduler prediction type (main models).
    pub prediction_type: Option<SchedulerPredictionType>,
    /// Whether attention must be upcast (sd-2 v-prediction models).
    pub upcast_attention: bool,
    /// File variant of a diffusers folder, from its weight file names.
    pub repo_variant: Option<ModelRepoVariant>,
    /// Components of a diffusers pipeline.
    pub submodels: Option<BTreeMap<SubModelType, SubmodelDefinition>>,
    /// Default name: the file stem or folder name (or the override).
    pub name: String,
    /// Default description (`<base> <type> model <name>`, or the override).
    pub description: Option<String>,
    /// Bytes on disk (a folder: all its files).
    pub file_size: u64,
    /// InvokeAI's legacy config name for checkpoints where it matters (flux: `flux-dev`,
    /// `flux-schnell`, `flux-dev-fill`), or the override.
    pub config_path: Option<String>,
    /// When the weights fit several bases equally (SD 1.x vs SDXL VAEs), the candidates; `base`
    /// is then InvokeAI's pick for the type (by name, else its fallback, the first candidate)
    /// and a warning says so. A `base` override settles it and empties this.
    pub base_candidates: Vec<BaseModelType>,
    /// Why: which key, width or config value decided each field.
    pub evidence: Vec<String>,
    /// Decisions the caller should be told about (a base taken by a fallback rule …).
    pub warnings: Vec<String>,
    /// Pickle safety scan of pickle checkpoints (None for safetensors, GGUF, folders without
    /// pickles). The installer refuses `dangerous` unless the entry allows it.
    pub pickle_scan: Option<ScanReport>,
    /// Every rule that matched, best first (the first is the winner, unless a `type` override
    /// picked another); empty when none did. As InvokeAI's factory, all rules run.
    pub candidates: Vec<Candidate>,
    /// Why the winner won (`only `lora` matched`, `main_sd` wins over `lora`: …).
    pub decision: String,
}

/// One rule that matched, as `probe -o json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The rule's name (`lora`, `main_flux`, `diffusers_pipeline`, …).
    pub rule: String,
    /// What the rule says the model is.
    #[serde(rename = "type")]
    pub model_type: ModelType,
    pub base: BaseModelType,
    pub format: ModelFormat,
    /// Whether this candidate is the result.
    pub winner: bool,
    /// The rule's first piece of evidence.
    pub because: String,
}

/// A probe that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The path does not exist.
    #[error("{0}: no such file or folder")]
    NotFound(PathBuf),
    /// Reading failed.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A zero-byte file.
    #[error("{0}: empty file")]
    EmptyFile(PathBuf),
    /// A safetensors header that cannot be read.
    #[error("{path}: bad safetensors header: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    /// A GGUF header that cannot be read.
    #[error("{path}: bad GGUF header: {reason}")]
    Gguf { path: PathBuf, reason: String },
    /// A pickle whose main object cannot be followed.
    #[error("{path}: unreadable pickle: {reason}")]
    Pickle { path: PathBuf, reason: String },
    /// A zip archive without `<name>/data.pkl`.
    #[error("{0}: zip archive is not a torch save (no `<name>/data.pkl` inside)")]
    NotTorchZip(PathBuf),
    /// A config JSON in a folder that cannot be read.
    #[error("{path}: bad config: {reason}")]
    Config { path: PathBuf, reason: String },
    /// Reading the pickles for the scan failed.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The `type` override contradicts what the weights say.
    #[error(
        "{path}: config says type `{hint}` but the files are a `{probed}` model ({evidence}); remove the type override or fix the source"
    )]
    TypeConflict {
        path: PathBuf,
        hint: ModelType,
        probed: ModelType,
        evidence: String,
    },
    /// An override value that does not parse, or an impossible (type, format) pair.
    #[error("config override `{key}`: {reason}")]
    Override { key: String, reason: String },
}

impl ProbeError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProbeError + '_ {
        move |source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ProbeError::NotFound(path.to_path_buf())
            } else {
                ProbeError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        }
    }
}

/// A tensor shape in torch order. Up to four dimensions live inline: a header holds hundreds
/// of tensors and one heap allocation per shape showed up in probe profiles.
#[derive(Clone)]
pub(crate) enum Shape {
    /// `len` ≤ 4 dimensions; the unused tail of `dims` is zero.
    Inline { len: u8, dims: [u64; 4] },
    /// More than four dimensions.
    Heap(Vec<u64>),
}

impl Default for Shape {
    fn default() -> Self {
        Self::Inline {
            len: 0,
            dims: [0; 4],
        }
    }
}

impl Shape {
    fn push(&mut self, d: u64) {
        match self {
            Self::Inline { len, dims } if usize::from(*len) < dims.len() => {
                dims[usize::from(*len)] = d;
                *len += 1;
            }
            Self::Inline { dims, .. } => {
                let mut v = dims.to_vec();
                v.push(d);
                *self = Self::Heap(v);
            }
            Self::Heap(v) => v.push(d),
        }
    }
}

impl From<Vec<u64>> for Shape {
    fn from(v: Vec<u64>) -> Self {
        if v.len() <= 4 {
            let mut s = Self::default();
            for d in v {
                s.push(d);
            }
            s
        } else {
            Self::Heap(v)
        }
    }
}

impl std::ops::Deref for Shape {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        match self {
            Self::Inline { len, dims } => &dims[..usize::from(*len)],
            Self::Heap(v) => v,
        }
    }
}

impl PartialEq for Shape {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Shape {}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        <[u64] as std::fmt::Debug>::fmt(self, f)
    }
}

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // Same wording as `Vec<u64>`, which this replaced.
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Shape, A::Error> {
                let mut s = Shape::default();
                while let Some(d) = seq.next_element::<u64>()? {
                    s.push(d);
                }
                Ok(s)
            }
        }
        d.deserialize_seq(V)
    }
}

/// One tensor's shape (torch order) and dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorInfo {
    pub shape: Shape,
    pub dtype: Cow<'static, str>,
}

/// Tensors by name: a vector sorted once by name (names unique), which the rules read by
/// binary search and in-order scans. Names borrow from the header buffer where they can —
/// building a `BTreeMap<String, _>` of a 576-tensor LoRA header cost more than parsing it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tensors<'a> {
    entries: Vec<(Cow<'a, str>, TensorInfo)>,
}

impl<'a> Tensors<'a> {
    /// From entries in file order; a repeated name keeps its last value, as a map would.
    pub(crate) fn from_entries(entries: Vec<(Cow<'a, str>, TensorInfo)>) -> Self {
        // Writers of the safetensors library emit sorted headers: check before sorting.
        if entries.is_sorted_by(|a, b| a.0 < b.0) {
            return Self { entries };
        }
        // Sort (name, position) pairs, not the 100-byte entries, then move each entry once.
        // Stable, so a repeated name's later entry comes last (and is kept); runs already in
        // order (safetensors writes each dtype's tensors sorted) merge in linear time.
        let mut order: Vec<(&str, usize)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.0.as_ref(), i))
            .collect();
        order.sort_by(|a, b| a.0.cmp(b.0));
        let order: Vec<usize> = order.into_iter().map(|(_, i)| i).collect();
        let mut slots: Vec<Option<(Cow<'a, str>, TensorInfo)>> =
            entries.into_iter().map(Some).collect();
        let mut sorted: Vec<(Cow<'a, str>, TensorInfo)> = Vec::with_capacity(order.len());
        for &i in &order {
            let Some(e) = slots[i].take() else {
                continue;
            };
            match sorted.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => sorted.push(e),
            }
        }
        Self { entries: sorted }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.entries
            .binary_search_by(|(k, _)| k.as_ref().cmp(name))
            .ok()
            .map(|i| &self.entries[i].1)
    }

    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Names in sorted order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_ref())
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &TensorInfo> {
        self.entries.iter().map(|(_, t)| t)
    }

    /// `(name, info)` in name order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &TensorInfo)> {
        self.entries.iter().map(|(k, t)| (k.as_ref(), t))
    }

    /// The smallest name starting with `prefix`.
    pub(crate) fn first_with_prefix(&self, prefix: &str) -> Option<&str> {
        let i = self.entries.partition_point(|(k, _)| k.as_ref() < prefix);
        self.entries
            .get(i)
            .map(|(k, _)| k.as_ref())
            .filter(|k| k.starts_with(prefix))
    }
}

/// Tensor names with shapes, plus string metadata (safetensors `__metadata__`, GGUF kv).
#[derive(Debug, Clone, Default)]
pub(crate) struct StateDict<'a> {
    pub tensors: Tensors<'a>,
    pub metadata: BTreeMap<String, String>,
}

/// What the rules decided, before name, size and overrides.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub model_type: ModelType,
    pub base: BaseModelType,
    pub format: ModelFormat,
    pub variant: Option<AnyVariant>,
    pub prediction_type: Option<SchedulerPredictionType>,
    pub upcast_attention: bool,
    pub repo_variant: Option<ModelRepoVariant>,
    pub submodels: Option<BTreeMap<SubModelType, SubmodelDefinition>>,
    pub config_path: Option<String>,
    /// Bases the weights fit equally, the fallback first. A rule may set `base` to the
    /// fallback itself (and say why in `warnings`); if it leaves `base` unknown, the probe
    /// takes the first candidate and warns.
    pub base_candidates: Vec<BaseModelType>,
    pub evidence: Vec<String>,
    /// Warnings for the caller (fallbacks taken); they end up as install warning events.
    pub warnings: Vec<String>,
    pub pickle_scan: Option<ScanReport>,
    /// Whether the type rests on unmistakable keys (a type override may not contradict it).
    pub strong: bool,
    /// The rule that produced this finding.
    pub rule: &'static str,
    /// Why this finding won over `others`.
    pub decision: String,
    /// The other rules that matched, best first.
    pub others: Vec<Finding>,
}

impl Finding {
    pub(crate) fn new(model_type: ModelType, base: BaseModelType, format: ModelFormat) -> Self {
        Self {
            model_type,
            base,
            format,
            variant: None,
            prediction_type: None,
            upcast_attention: false,
            repo_variant: None,
            submodels: None,
            config_path: None,
            base_candidates: Vec::new(),
            evidence: Vec::new(),
            warnings: Vec::new(),
            pickle_scan: None,
            strong: model_type != ModelType::Unknown,
            rule: "",
            decision: String::new(),
            others: Vec::new(),
        }
    }

    /// Evidence about the file itself, true of every candidate.
    pub(crate) fn push_file_evidence(&mut self, e: String) {
        for o in &mut self.others {
            o.evidence.push(e.clone());
        }
        self.evidence.push(e);
    }

    pub(crate) fn unknown(format: ModelFormat) -> Self {
        Self::new(ModelType::Unknown, BaseModelType::Unknown, format)
    }
}

/// Identifies a model file or folder. Never loads weights; bad input is an error, never a panic.
pub fn probe(path: &Path) -> Result<ProbeResult, ProbeError> {
    probe_with_overrides(path, &serde_json::Map::new())
}

/// [`probe`], then the manifest entry's `config` dict applied on top: `type`, `base`,
/// `format`, `variant`, `prediction_type`, `upcast_attention`, `repo_variant`, `name`,
/// `description`, `config_path` win over probed values (other keys are the installer's and
/// are ignored here). A `type` that contradicts strong evidence is an error naming both; a
/// `base` settles an ambiguous VAE.
pub fn probe_with_overrides(
    path: &Path,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<ProbeResult, ProbeError> {
    let meta = std::fs::metadata(path).map_err(ProbeError::io(path))?;
    let (finding, file_size) = if meta.is_dir() {
        let mut f = folder::probe_folder(path)?;
        // Any pickle in the folder (pytorch_model.bin, learned_embeds.bin …) runs on load.
        if has_pickle_files(path, 0) {
            f.pickle_scan = Some(scan::scan_path(path)?);
        }
        (f, folder_size(path))
    } else {
        let mut f = probe_weight_file(path)?;
        if let Some(n) = path.file_name() {
            rules::refine_by_name(&mut f, &n.to_string_lossy());
        }
        (f, meta.len())
    };
    let name = if meta.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    }
    .map_or_else(|| "model".to_owned(), |n| n.to_string_lossy().into_owned());
    let finding = prefer_hinted_candidate(finding, overrides);
    let (candidates, decision) = candidates_of(&finding);
    let mut r = ProbeResult {
        model_type: finding.model_type,
        base: finding.base,
        format: finding.format,
        variant: finding.variant,
        prediction_type: finding.prediction_type,
        upcast_attention: finding.upcast_attention,
        repo_variant: finding.repo_variant,
        submodels: finding.submodels,
        name,
        description: None,
        file_size,
        config_path: finding.config_path,
        base_candidates: finding.base_candidates,
        evidence: finding.evidence,
        warnings: finding.warnings,
        pickle_scan: finding.pickle_scan,
        candidates,
        decision,
    };
    apply_overrides(path, &mut r, finding.strong, meta.is_dir(), overrides)?;
    if r.base == BaseModelType::Unknown
        && let Some(&fallback) = r.base_candidates.first()
    {
        let all: Vec<String> = r.base_candidates.iter().map(|b| format!("`{b}`")).collect();
        r.warnings.push(format!(
            "the base of this {} model is ambiguous ({}); took `{fallback}`, InvokeAI's fallback; set `config: {{base: …}}` if it is another",
            r.model_type,
            all.join(" or ")
        ));
        r.evidence
            .push(format!("ambiguous base → fallback `{fallback}`"));
        r.base = fallback;
    } else if r.base_is_guessed() {
        let all: Vec<String> = r.base_candidates.iter().map(|b| format!("`{b}`")).collect();
        r.warnings.push(format!(
            "the base of this {} model is ambiguous ({}); took `{}` by InvokeAI's rule; set `config: {{base: …}}` if it is another",
            r.model_type,
            all.join(" or "),
            r.base
        ));
    }
    if r.description.is_none() {
        r.description = Some(format!("{} {} model {}", r.base, r.model_type, r.name));
    }
    Ok(r)
}

/// A `type` override that names a losing candidate makes it the winner: the hint settles what
/// the rules could not (InvokeAI lets overrides pick among matches, never force a non-match).
fn prefer_hinted_candidate(
    mut f: Finding,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Finding {
    let Some(hint) = overrides
        .get("type")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| s.parse::<ModelType>().ok())
    else {
        return f;
    };
    if f.model_type == hint {
        return f;
    }
    let Some(i) = f.others.iter().position(|o| o.model_type == hint) else {
        return f;
    };
    let mut others = std::mem::take(&mut f.others);
    let mut chosen = others.remove(i);
    chosen.decision = format!(
        "`{}` chosen by the type override `{hint}` over `{}`",
        chosen.rule, f.rule
    );
    chosen.pickle_scan = f.pickle_scan.take();
    others.insert(0, f);
    chosen.others = others;
    chosen
}

/// The candidate list and decision of a finding (folder rules name one candidate).
fn candidates_of(f: &Finding) -> (Vec<Candidate>, String) {
    if f.model_type == ModelType::Unknown && f.others.is_empty() {
        let d = if f.decision.is_empty() {
            "no rule matched".to_owned()
        } else {
            f.decision.clone()
        };
        return (Vec::new(), d);
    }
    let one = |f: &Finding, winner: bool| Candidate {
        rule: if f.rule.is_empty() { "folder" } else { f.rule }.to_owned(),
        model_type: f.model_type,
        base: f.base,
        format: f.format,
        winner,
        because: f.evidence.first().cloned().unwrap_or_default(),
    };
    let mut v = vec![one(f, true)];
    v.extend(f.others.iter().map(|o| one(o, false)));
    let d = if f.decision.is_empty() {
        format!("only `{}` matched", v[0].rule)
    } else {
        f.decision.clone()
    };
    (v, d)
}

fn parse_override<T: std::str::FromStr>(key: &str, v: &serde_json::Value) -> Result<T, ProbeError>
where
    T::Err: std::fmt::Display,
{
    let s = v.as_str().ok_or_else(|| ProbeError::Override {
        key: key.to_owned(),
        reason: format!("expected a string, got {v}"),
    })?;
    s.parse::<T>().map_err(|e| ProbeError::Override {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn string_override(key: &str, v: &serde_json::Value) -> Result<String, ProbeError> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| ProbeError::Override {
            key: key.to_owned(),
            reason: format!("expected a string, got {v}"),
        })
}

fn apply_overrides(
    path: &Path,
    r: &mut ProbeResult,
    strong: bool,
    is_dir: bool,
    o: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), ProbeError> {
    if let Some(v) = o.get("type") {
        let hint: ModelType = parse_override("type", v)?;
        if hint != r.model_type {
            if strong {
                return Err(ProbeError::TypeConflict {
                    path: path.to_path_buf(),
                    hint,
                    probed: r.model_type,
                    evidence: r.evidence.first().cloned().unwrap_or_default(),
                });
            }
            r.evidence.push(format!(
                "type `{hint}` from config override (probed `{}`)",
                r.model_type
            ));
            r.model_type = hint;
            if !o.contains_key("format") && !CONFIG_CLASSES.contains(&(hint, r.format)) {
                let preferred = if is_dir {
                    ModelFormat::Diffusers
                } else {
                    ModelFormat::Checkpoint
                };
                let valid: Vec<ModelFormat> = CONFIG_CLASSES
                    .iter()
                    .filter(|(t, _)| *t == hint)
                    .map(|(_, f)| *f)
                    .collect();
                if let Some(f) = valid.iter().find(|f| **f == preferred).or(valid.first()) {
                    r.format = *f;
                }
            }
        }
    }
    if let Some(v) = o.get("format") {
        r.format = parse_override("format", v)?;
    }
    if let Some(v) = o.get("base") {
        let b: BaseModelType = parse_override("base", v)?;
        if !r.base_candidates.is_empty() {
            r.evidence.push(format!(
                "base `{b}` from config override settles the ambiguity"
            ));
            r.base_candidates.clear();
        }
        r.base = b;
    }
    if let Some(v) = o.get("variant") {
        r.variant = Some(parse_override("variant", v)?);
    }
    if let Some(v) = o.get("prediction_type") {
        r.prediction_type = Some(parse_override("prediction_type", v)?);
    }
    if let Some(v) = o.get("repo_variant") {
        r.repo_variant = Some(parse_override("repo_variant", v)?);
    }
    if let Some(v) = o.get("upcast_attention") {
        r.upcast_attention = v.as_bool().ok_or_else(|| ProbeError::Override {
            key: "upcast_attention".into(),
            reason: format!("expected true or false, got {v}"),
        })?;
    }
    if let Some(v) = o.get("name") {
        let n = string_override("name", v)?;
        if n.trim().is_empty() {
            return Err(ProbeError::Override {
                key: "name".into(),
                reason: "must not be empty".into(),
            });
        }
        r.name = n;
    }
    if let Some(v) = o.get("description") {
        r.description = Some(string_override("description", v)?);
    }
    if let Some(v) = o.get("config_path") {
        r.config_path = Some(string_override("config_path", v)?);
    }
    if r.model_type != ModelType::Unknown && !CONFIG_CLASSES.contains(&(r.model_type, r.format)) {
        let valid: Vec<&str> = CONFIG_CLASSES
            .iter()
            .filter(|(t, _)| *t == r.model_type)
            .map(|(_, f)| f.as_str())
            .collect();
        return Err(ProbeError::Override {
            key: if o.contains_key("format") {
                "format"
            } else {
                "type"
            }
            .into(),
            reason: format!(
                "no model class for type `{}` with format `{}`; valid formats: {}",
                r.model_type,
                r.format,
                valid.join(", ")
            ),
        });
    }
    Ok(())
}

impl ProbeResult {
    /// The record fields a probe decides: type, format, base, name, description, file_size and
    /// exactly the class-specific fields the (type, format) class allows. The installer adds
    /// path, hash and source and calls [`crate::AnyModelConfig::from_raw`].
    pub fn to_raw_config(&self) -> RawConfig {
        let fields = class_fields(self.model_type, self.format).unwrap_or_default();
        let has = |name: &str| fields.contains(&name);
        let mut raw = RawConfig {
            name: Some(self.name.clone()),
            model_type: Some(self.model_type),
            format: Some(self.format),
            base: Some(self.base),
            description: self.description.clone(),
            file_size: Some(self.file_size),
            ..RawConfig::default()
        };
        if has("config_path") {
            raw.config_path.clone_from(&self.config_path);
        }
        if has("variant") {
            raw.variant = self.variant;
        }
        if has("prediction_type") {
            raw.prediction_type = self.prediction_type;
        }
        if has("upcast_attention") {
            raw.upcast_attention = Some(self.upcast_attention);
        }
        if has("repo_variant") {
            raw.repo_variant = self.repo_variant;
        }
        if has("submodels") {
            raw.submodels.clone_from(&self.submodels);
        }
        raw
    }

    /// Whether the base was a guess between candidates (a fallback rule took one), not
    /// settled by the files or a `base` override.
    pub fn base_is_ambiguous(&self) -> bool {
        !self.base_candidates.is_empty()
    }

    /// Whether `base` is a guess among `base_candidates` (InvokeAI's name or fallback rule):
    /// the installer records it and warns.
    pub fn base_is_guessed(&self) -> bool {
        self.base != BaseModelType::Unknown && !self.base_candidates.is_empty()
    }
}

/// ` (dtypes: F16 ×570, F32 ×6)` — what the weights are stored as.
fn dtype_summary(sd: &StateDict) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in sd.tensors.values() {
        *counts.entry(t.dtype.as_ref()).or_default() += 1;
    }
    if counts.is_empty() {
        return String::new();
    }
    let mut v: Vec<(&str, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = v.iter().take(4).map(|(d, n)| format!("{d} ×{n}")).collect();
    format!(" (dtypes: {})", parts.join(", "))
}

/// Whether a folder holds files that are (or may be) pickles.
fn has_pickle_files(dir: &Path, depth: u8) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.filter_map(Result::ok).any(|e| {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            return depth < 4 && has_pickle_files(&p, depth + 1);
        }
        p.extension()
            .and_then(|x| x.to_str())
            .map(str::to_ascii_lowercase)
            .is_some_and(|x| matches!(x.as_str(), "ckpt" | "pt" | "pth" | "bin" | "pkl" | "pickle"))
            || starts_like_pickle(&p)
    })
}

/// Whether a file opens as a protocol 2+ pickle (PROTO) or a zip (a torch save), whatever its
/// name: a pickle renamed to `weights.dat` is scanned too.
fn starts_like_pickle(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head[0] == 0x80 || head == *b"PK\x03\x04")
}

fn folder_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(ft) if ft.is_dir() => folder_size(&e.path()),
            Ok(_) => std::fs::metadata(e.path()).map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Identifies one weight file by its content.
pub(crate) fn probe_weight_file(path: &Path) -> Result<Finding, ProbeError> {
    let mut file = File::open(path).map_err(ProbeError::io(path))?;
    let len = file.metadata().map_err(ProbeError::io(path))?.len();
    if len == 0 {
        return Err(ProbeError::EmptyFile(path.to_path_buf()));
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]).map_err(ProbeError::io(path))? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();

    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        let label = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let c = scan::read_pickle_file(path, &label)?;
        if c.zip_without_data_pkl {
            return Err(ProbeError::NotTorchZip(path.to_path_buf()));
        }
        return pickle_finding(path, c, "torch zip save");
    }
    if head.starts_with(b"GGUF") {
        // SAFETY: read-only map of a file modelsync does not modify while probing.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(ProbeError::io(path))?;
        let sd = gguf::read_header(path, &map)?;
        return Ok(rules::classify(&sd, rules::Container::Gguf));
    }
    let looks_safetensors = head.len() >= 9 && head[8] == b'{';
    let named_safetensors = ext == "safetensors" || ext == "sft";
    if named_safetensors || looks_safetensors {
        // A file is safetensors only when its header parses as one; an unnamed file that
        // merely starts like one (a pickle can) goes on to the pickle reader.
        match safetensors_finding(path, &mut file, head, len) {
            Ok(f) => return Ok(f),
            Err(e) if named_safetensors => return Err(e),
            Err(_) => {}
        }
    }
    let pickle_ext = matches!(
        ext.as_str(),
        "ckpt" | "pt" | "pth" | "bin" | "pkl" | "pickle"
    );
    if head.first() == Some(&0x80) || pickle_ext || looks_safetensors {
        let label = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let c = scan::read_pickle_file(path, &label)?;
        return pickle_finding(path, c, "pickle");
    }
    let mut f = Finding::unknown(ModelFormat::Unknown);
    f.evidence.push(format!(
        "not a safetensors, GGUF, torch zip or pickle file (first bytes {})",
        hex::encode(&head[..head.len().min(8)])
    ));
    Ok(f)
}

fn safetensors_finding(
    path: &Path,
    file: &mut File,
    head: &[u8],
    len: u64,
) -> Result<Finding, ProbeError> {
    let buf = safetensors::read_header(path, file, head, len)?;
    let sd = safetensors::parse_header_json(path, &buf, len)?;
    let mut f = rules::classify(&sd, rules::Container::Safetensors);
    f.push_file_evidence(format!(
        "safetensors header: {} tensors{}",
        sd.tensors.len(),
        dtype_summary(&sd)
    ));
    Ok(f)
}

fn pickle_finding(path: &Path, c: scan::PickleContents, what: &str) -> Result<Finding, ProbeError> {
    if let Some(reason) = c.main_fault {
        let dangerous: Vec<String> = c
            .report
            .dangerous()
            .map(|g| format!("{}.{}", g.module, g.name))
            .collect();
        let reason = if dangerous.is_empty() {
            reason
        } else {
            format!(
                "{reason}; it also imports dangerous globals: {}",
                dangerous.join(", ")
            )
        };
        return Err(ProbeError::Pickle {
            path: path.to_path_buf(),
            reason,
        });
    }
    let sd = StateDict {
        tensors: Tensors::from_entries(
            c.tensors
                .into_iter()
                .map(|(name, shape, dtype)| {
                    let info = TensorInfo {
                        shape: shape.into(),
                        dtype: dtype.into(),
                    };
                    (Cow::Owned(name), info)
                })
                .collect(),
        ),
        metadata: BTreeMap::new(),
    };
    let mut f = rules::classify(&sd, rules::Container::Pickle);
    f.push_file_evidence(format!(
        "{what}: {} tensors{}",
        sd.tensors.len(),
        dtype_summary(&sd)
    ));
    f.push_file_evidence(format!("pickle scan: {}", c.report.verdict));
    f.pickle_scan = Some(c.report);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AnyModelConfig;

    /// The field-group table above must match config.rs for every class.
    #[test]
    fn to_raw_config_fits_every_class() {
        use crate::taxonomy::{
            ClipVariantType, MistralVariantType, ModelVariantType, PidDecoderVariantType,
            Qwen3VariantType, Qwen3VlVariantType,
        };
        for &(t, f) in CONFIG_CLASSES {
            let variant: Option<AnyVariant> = match t {
                ModelType::Main => Some(ModelVariantType::Inpaint.into()),
                ModelType::ClipEmbed => Some(ClipVariantType::Large.into()),
                ModelType::Qwen3Encoder => Some(Qwen3VariantType::Qwen3_4B.into()),
                ModelType::Qwen3VlEncoder => Some(Qwen3VlVariantType::Qwen3Vl4B.into()),
                ModelType::MistralEncoder => Some(MistralVariantType::Cow.into()),
                ModelType::PidDecoder => Some(PidDecoderVariantType::Res2kSr4x.into()),
                _ => None,
            };
            let r = ProbeResult {
                model_type: t,
                base: BaseModelType::StableDiffusion1,
                format: f,
                variant,
                prediction_type: Some(SchedulerPredictionType::Epsilon),
                upcast_attention: true,
                repo_variant: Some(ModelRepoVariant::Fp16),
                submodels: Some(BTreeMap::new()),
                name: "m".into(),
                description: None,
                file_size: 1,
                config_path: Some("flux-dev".into()),
                base_candidates: vec![],
                evidence: vec![],
                warnings: vec![],
                pickle_scan: None,
                candidates: vec![],
                decision: String::new(),
            };
            let mut raw = r.to_raw_config();
            raw.path = Some("/m".into());
            let c = AnyModelConfig::from_raw(&raw).unwrap_or_else(|e| panic!("{t}.{f}: {e}"));
            let fields = class_fields(t, f).unwrap();
            let has = |n: &str| fields.contains(&n);
            assert_eq!(
                c.checkpoint_fields().is_some(),
                has("config_path"),
                "{t}.{f}"
            );
            assert_eq!(c.main_fields().is_some(), has("prediction_type"), "{t}.{f}");
            assert_eq!(
                c.diffusers_fields().is_some(),
                has("repo_variant"),
                "{t}.{f}"
            );
            assert_eq!(
                c.variant().is_some(),
                has("variant") && variant.is_some(),
                "{t}.{f}"
            );
        }
    }
}
