//! Which files of a repo to download (hub-protocol.md, "Repo variants"). Pure: a listing in, a
//! selection out.
//!
//! Rules, in order:
//! 1. `repo::path/file` ([`FileFilter::single_file`]): exactly that file, placed at its name.
//! 2. `subfolder`: only files under it, placed relative to it.
//! 3. Per component folder, the weights (`.safetensors`, `.bin`, `.pt`, `.pth`, `.ckpt`) of the
//!    best rank: the variant's `.safetensors` > the variant's other weights > the default
//!    (unlabelled) `.safetensors` > the default other weights. A weight's variant label is the
//!    dot-part before its extension (`diffusion_pytorch_model.fp16.safetensors`,
//!    `model.fp16-00001-of-00002.safetensors`); files labelled with another variant (including
//!    `non_ema`) are never taken. Shards of the chosen weights come together, with their
//!    matching `*.index[.variant].json`.
//! 4. JSON/txt configs and tokenizer files (`tokenizer*/` folders, `*.model`, `*.tiktoken`) are
//!    always taken; images, docs, `.gitattributes`, YAML and other frameworks' files never.
//! 5. In a diffusers repo (`model_index.json` at the root), root weights are single-file
//!    duplicates and are skipped; `.ckpt`s at the repo root are never taken.
//! 6. `onnx`, `openvino` and `flax` select their own family's files (`*.onnx`, `*.pb`,
//!    `*.onnx_data`, anything under `onnx*/`; `openvino_*`; `*.msgpack`) plus the configs; the
//!    PyTorch weights are dropped, and a component folder left without weights is dropped whole.
//!    A variant with no files at all in the repo falls back to the default selection.
//! 7. Finally include/exclude globs (globset; `*` also matches `/`) over the repo path.

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::info::RepoFile;
use super::paths::{UnsafePath, validate_repo_path};
use super::source::HfModelSource;
use crate::taxonomy::ModelRepoVariant;

/// What to take from a repo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileFilter {
    /// The variant (default: unlabelled files).
    pub variant: ModelRepoVariant,
    /// Only this folder (`/`-separated, no leading or trailing `/`).
    pub subfolder: Option<String>,
    /// Exactly this file.
    pub single_file: Option<String>,
    /// Keep only files matching one of these (empty: all).
    pub include: Vec<String>,
    /// Drop files matching one of these.
    pub exclude: Vec<String>,
}

impl FileFilter {
    /// The filter an HF source asks for (a subfolder naming a file becomes `single_file`).
    pub fn from_source(src: &HfModelSource) -> Self {
        let single = src.single_file().map(str::to_owned);
        Self {
            variant: src.variant.unwrap_or_default(),
            subfolder: if single.is_some() {
                None
            } else {
                src.subfolder.clone()
            },
            single_file: single,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }

    /// Adds include/exclude globs.
    #[must_use]
    pub fn with_globs(mut self, include: Vec<String>, exclude: Vec<String>) -> Self {
        self.include = include;
        self.exclude = exclude;
        self
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = &self.single_file {
            parts.push(format!("file `{f}`"));
        }
        if let Some(s) = &self.subfolder {
            parts.push(format!("subfolder `{s}`"));
        }
        if self.variant != ModelRepoVariant::Default {
            parts.push(format!("variant `{}`", self.variant));
        }
        if !self.include.is_empty() {
            parts.push(format!("include [{}]", self.include.join(", ")));
        }
        if !self.exclude.is_empty() {
            parts.push(format!("exclude [{}]", self.exclude.join(", ")));
        }
        if parts.is_empty() {
            "the default files".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// A file chosen for download and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedFile {
    /// The listing entry.
    pub file: RepoFile,
    /// Destination relative to the model folder, `/`-separated (validated).
    pub dest: String,
}

/// A selection that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// A glob that does not compile.
    #[error("invalid {which} glob `{pattern}`: {reason}")]
    BadGlob {
        /// `include` or `exclude`.
        which: &'static str,
        /// The pattern.
        pattern: String,
        /// globset's complaint.
        reason: String,
    },
    /// `repo::path` names a file the repo does not have.
    #[error("`{repo}` has no file `{path}`")]
    NoSuchFile {
        /// The repo.
        repo: String,
        /// The requested file.
        path: String,
    },
    /// The subfolder does not exist.
    #[error("`{repo}` has no folder `{folder}`")]
    NoSuchFolder {
        /// The repo.
        repo: String,
        /// The requested folder.
        folder: String,
    },
    /// Nothing left after the rules and globs.
    #[error("no files of `{repo}` match {what}")]
    Empty {
        /// The repo.
        repo: String,
        /// The filter, in words.
        what: String,
    },
    /// A hostile listing.
    #[error(transparent)]
    UnsafePath(#[from] UnsafePath),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Torch,
    Onnx,
    OpenVino,
    Flax,
    /// TensorFlow, GGUF, …: never taken by a variant.
    Foreign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Config,
    Weight,
    Skip,
}

struct Entry<'a> {
    file: &'a RepoFile,
    rel: &'a str,
    folder: &'a str,
    name: &'a str,
    family: Family,
    role: Role,
}

fn ext_of(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(_, e)| e)
}

fn classify(rel: &str) -> (Family, Role) {
    let (folder, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let lname = name.to_ascii_lowercase();
    let ext = ext_of(&lname);
    let folders: Vec<String> = folder
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if matches!(
        ext,
        "png" | "jpg" | "jpeg" | "gif" | "webp" | "bmp" | "svg" | "mp4" | "webm"
    ) {
        return (Family::Torch, Role::Skip);
    }
    let family = if matches!(ext, "onnx" | "pb" | "onnx_data")
        || lname.ends_with(".onnx.data")
        || lname.ends_with("onnx_data")
        || folders.iter().any(|c| c.starts_with("onnx"))
    {
        Family::Onnx
    } else if lname.contains("openvino") || folders.iter().any(|c| c.starts_with("openvino")) {
        Family::OpenVino
    } else if ext == "msgpack" || lname.contains("flax_model") {
        Family::Flax
    } else if matches!(
        ext,
        "h5" | "gguf" | "ot" | "tflite" | "mlmodel" | "mlpackage"
    ) || lname.starts_with("tf_model")
    {
        Family::Foreign
    } else {
        Family::Torch
    };
    let in_tokenizer = folders.iter().any(|c| c.starts_with("tokenizer"));
    let role = if matches!(ext, "json" | "txt" | "model" | "tiktoken") || in_tokenizer {
        Role::Config
    } else {
        match family {
            Family::Torch if matches!(ext, "safetensors" | "bin" | "pt" | "pth" | "ckpt") => {
                Role::Weight
            }
            Family::Onnx | Family::OpenVino | Family::Flax => Role::Weight,
            _ => Role::Skip,
        }
    };
    (family, role)
}

/// `(base, label, format_ext)` of a weight name: `model.fp16-00001-of-00002.safetensors` →
/// `("model", Some("fp16"), "safetensors")`.
fn weight_parts(name: &str) -> (&str, Option<&str>, &str) {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    let stem = strip_shard(stem);
    match stem.rsplit_once('.') {
        Some((base, label))
            if !base.is_empty()
                && label.starts_with(|c: char| c.is_ascii_alphabetic())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            (base, Some(label), ext)
        }
        _ => (stem, None, ext),
    }
}

/// `x-00001-of-00002` → `x`.
fn strip_shard(stem: &str) -> &str {
    let Some((head, total)) = stem.rsplit_once("-of-") else {
        return stem;
    };
    let Some((base, idx)) = head.rsplit_once('-') else {
        return stem;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(idx) && digits(total) {
        base
    } else {
        stem
    }
}

/// `X.safetensors.index.fp16.json` → `Some(("safetensors", Some("fp16")))`.
fn index_parts(name: &str) -> Option<(&str, Option<&str>)> {
    let stem = name.strip_suffix(".json")?;
    let (before, label) = match stem.rsplit_once(".index.") {
        Some((b, l)) if !l.contains('.') => (b, Some(l)),
        _ => (stem.strip_suffix(".index")?, None),
    };
    let fmt = ext_of(before);
    matches!(fmt, "safetensors" | "bin").then_some((fmt, label))
}

fn rank(name: &str, variant: ModelRepoVariant) -> Option<u8> {
    let (_, label, ext) = weight_parts(name);
    let safetensors = ext.eq_ignore_ascii_case("safetensors");
    let wanted = match variant {
        ModelRepoVariant::Fp16 | ModelRepoVariant::Fp32 => Some(variant.as_str()),
        _ => None,
    };
    match (label, wanted) {
        (Some(l), Some(w)) if l.eq_ignore_ascii_case(w) => Some(if safetensors { 3 } else { 2 }),
        (None, _) => Some(u8::from(safetensors)),
        _ => None,
    }
}

/// The globs of `include` or `exclude` (`None`: no list). Local folder sources use the same
/// semantics ([`crate::install`]).
pub(crate) fn globset(
    which: &'static str,
    patterns: &[String],
) -> Result<Option<GlobSet>, SelectError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = Glob::new(p).map_err(|e| SelectError::BadGlob {
            which,
            pattern: p.clone(),
            reason: e.kind().to_string(),
        })?;
        b.add(g);
    }
    b.build().map(Some).map_err(|e| SelectError::BadGlob {
        which,
        pattern: patterns.join(", "),
        reason: e.to_string(),
    })
}

/// Selects the files of `repo`'s listing that `filter` asks for, sorted by repo path.
pub fn select_files(
    repo: &str,
    files: &[RepoFile],
    filter: &FileFilter,
) -> Result<Vec<SelectedFile>, SelectError> {
    for f in files {
        validate_repo_path(repo, &f.path)?;
    }
    let include = globset("include", &filter.include)?;
    let exclude = globset("exclude", &filter.exclude)?;

    let mut chosen: Vec<SelectedFile> = if let Some(single) = &filter.single_file {
        let single = single.trim_matches('/');
        let f = files
            .iter()
            .find(|f| f.path == single)
            .ok_or_else(|| SelectError::NoSuchFile {
                repo: repo.to_owned(),
                path: single.to_owned(),
            })?;
        vec![SelectedFile {
            file: f.clone(),
            dest: f.name().to_owned(),
        }]
    } else {
        select_tree(repo, files, filter)?
    };

    chosen.retain(|s| {
        include.as_ref().is_none_or(|g| g.is_match(&s.file.path))
            && !exclude.as_ref().is_some_and(|g| g.is_match(&s.file.path))
    });
    if chosen.is_empty() {
        return Err(SelectError::Empty {
            repo: repo.to_owned(),
            what: filter.describe(),
        });
    }
    for s in &chosen {
        validate_repo_path(repo, &s.dest)?;
    }
    chosen.sort_by(|a, b| a.file.path.cmp(&b.file.path));
    Ok(chosen)
}

fn select_tree(
    repo: &str,
    files: &[RepoFile],
    filter: &FileFilter,
) -> Result<Vec<SelectedFile>, SelectError> {
    let prefix = filter
        .subfolder
        .as_deref()
        .map(|s| format!("{}/", s.trim_matches('/')));
    let mut entries: Vec<Entry<'_>> = Vec::new();
    for f in files {
        let rel = match &prefix {
            Some(p) => match f.path.strip_prefix(p.as_str()) {
                Some(r) => r,
                None => continue,
            },
            None => f.path.as_str(),
        };
        let (folder, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let (family, role) = classify(rel);
        entries.push(Entry {
            file: f,
            rel,
            folder,
            name,
            family,
            role,
        });
    }
    if entries.is_empty() {
        if let Some(sub) = &filter.subfolder {
            return Err(SelectError::NoSuchFolder {
                repo: repo.to_owned(),
                folder: sub.clone(),
            });
        }
        return Ok(Vec::new());
    }
    let at_repo_root = |e: &Entry<'_>| prefix.is_none() && e.folder.is_empty();
    let diffusers_root = entries.iter().any(|e| e.rel == "model_index.json");

    let target = match filter.variant {
        ModelRepoVariant::Onnx => Family::Onnx,
        ModelRepoVariant::OpenVino => Family::OpenVino,
        ModelRepoVariant::Flax => Family::Flax,
        _ => Family::Torch,
    };
    let has_target = entries
        .iter()
        .any(|e| e.family == target && e.role == Role::Weight);
    // A variant the repo does not have falls back to the default files.
    let (target, variant) = if target != Family::Torch && !has_target {
        (Family::Torch, ModelRepoVariant::Default)
    } else {
        (target, filter.variant)
    };

    let mut keep = vec![false; entries.len()];
    if target == Family::Torch {
        // Best rank per folder.
        let mut best: std::collections::BTreeMap<&str, u8> = std::collections::BTreeMap::new();
        for e in &entries {
            if e.role != Role::Weight || e.family != Family::Torch {
                continue;
            }
            if diffusers_root && e.folder.is_empty() {
                continue;
            }
            if at_repo_root(e) && ext_of(e.name).eq_ignore_ascii_case("ckpt") {
                continue;
            }
            if let Some(r) = rank(e.name, variant) {
                let b = best.entry(e.folder).or_insert(r);
                *b = (*b).max(r);
            }
        }
        for (i, e) in entries.iter().enumerate() {
            if e.role != Role::Weight || e.family != Family::Torch {
                continue;
            }
            if (diffusers_root && e.folder.is_empty())
                || (at_repo_root(e) && ext_of(e.name).eq_ignore_ascii_case("ckpt"))
            {
                continue;
            }
            if let (Some(r), Some(b)) = (rank(e.name, variant), best.get(e.folder)) {
                keep[i] = r == *b;
            }
        }
    } else {
        for (i, e) in entries.iter().enumerate() {
            if e.family == target && e.role == Role::Weight {
                keep[i] = true;
            }
        }
    }

    // Configs: the target family's and the plain ones; shard indexes only for the chosen
    // weights' format and label.
    let chosen_weights: Vec<(&str, &str, Option<&str>)> = entries
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(e, _)| {
            let (_, label, ext) = weight_parts(e.name);
            (e.folder, ext, label)
        })
        .collect();
    for (i, e) in entries.iter().enumerate() {
        if e.role != Role::Config || !(e.family == Family::Torch || e.family == target) {
            continue;
        }
        keep[i] = match index_parts(e.name) {
            Some((fmt, label)) => chosen_weights.iter().any(|(folder, ext, l)| {
                *folder == e.folder
                    && ext.eq_ignore_ascii_case(fmt)
                    && l.map(str::to_ascii_lowercase) == label.map(str::to_ascii_lowercase)
            }),
            None => true,
        };
    }

    // A component folder that had weights but got none (the variant lives elsewhere) is dropped
    // whole, so no config-only husks remain. The selection root always keeps its configs.
    let folders_with_weights: std::collections::BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.role == Role::Weight && !e.folder.is_empty())
        .map(|e| e.folder)
        .collect();
    for folder in folders_with_weights {
        let any_weight = entries
            .iter()
            .zip(&keep)
            .any(|(e, k)| *k && e.folder == folder && e.role == Role::Weight);
        if !any_weight {
            for (e, k) in entries.iter().zip(keep.iter_mut()) {
                if e.folder == folder {
                    *k = false;
                }
            }
        }
    }

    Ok(entries
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(e, _)| SelectedFile {
            file: e.file.clone(),
            dest: e.rel.to_owned(),
        })
        .collect())
}

#[cfg(test)]
#[allow(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "repo paths in these listings are lowercase"
)]
mod tests {
    use super::*;

    fn listing(paths: &[&str]) -> Vec<RepoFile> {
        paths
            .iter()
            .map(|p| RepoFile {
                path: (*p).to_owned(),
                size: 1,
                oid: "0".repeat(40),
                lfs: None,
            })
            .collect()
    }

    fn sel(paths: &[&str], filter: &FileFilter) -> Vec<String> {
        select_files("o/n", &listing(paths), filter)
            .unwrap()
            .into_iter()
            .map(|s| s.file.path)
            .collect()
    }

    fn variant(v: ModelRepoVariant) -> FileFilter {
        FileFilter {
            variant: v,
            ..FileFilter::default()
        }
    }

    /// runwayml/stable-diffusion-v1-5 as listed on the Hub.
    const SD15: &[&str] = &[
        ".gitattributes",
        "README.md",
        "feature_extractor/preprocessor_config.json",
        "model_index.json",
        "safety_checker/config.json",
        "safety_checker/model.fp16.safetensors",
        "safety_checker/model.safetensors",
        "safety_checker/pytorch_model.bin",
        "safety_checker/pytorch_model.fp16.bin",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors",
        "text_encoder/model.safetensors",
        "text_encoder/pytorch_model.bin",
        "text_encoder/pytorch_model.fp16.bin",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.non_ema.bin",
        "unet/diffusion_pytorch_model.non_ema.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "v1-5-pruned-emaonly.ckpt",
        "v1-5-pruned-emaonly.safetensors",
        "v1-5-pruned.ckpt",
        "v1-5-pruned.safetensors",
        "v1-inference.yaml",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
        "vae/diffusion_pytorch_model.fp16.bin",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "sample_images/astronaut.png",
    ];

    const SD15_CONFIGS: &[&str] = &[
        "feature_extractor/preprocessor_config.json",
        "model_index.json",
        "safety_checker/config.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "unet/config.json",
        "vae/config.json",
    ];

    fn with_configs(weights: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = SD15_CONFIGS
            .iter()
            .chain(weights)
            .map(|s| (*s).to_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn sd15_fp16_takes_fp16_safetensors_and_configs() {
        assert_eq!(
            sel(SD15, &variant(ModelRepoVariant::Fp16)),
            with_configs(&[
                "safety_checker/model.fp16.safetensors",
                "text_encoder/model.fp16.safetensors",
                "unet/diffusion_pytorch_model.fp16.safetensors",
                "vae/diffusion_pytorch_model.fp16.safetensors",
            ])
        );
    }

    #[test]
    fn sd15_default_takes_unlabelled_safetensors_never_root_or_non_ema() {
        let want = with_configs(&[
            "safety_checker/model.safetensors",
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
        ]);
        assert_eq!(sel(SD15, &variant(ModelRepoVariant::Default)), want);
        // fp32 is not labelled in this repo: falls back to the default files per folder.
        assert_eq!(sel(SD15, &variant(ModelRepoVariant::Fp32)), want);
    }

    #[test]
    fn variant_bin_beats_default_safetensors_then_default_bin() {
        let repo = [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16.bin",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.bin",
            "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/config.json",
            "text_encoder/pytorch_model.bin",
        ];
        assert_eq!(
            sel(&repo, &variant(ModelRepoVariant::Fp16)),
            vec![
                "model_index.json",
                "text_encoder/config.json",
                "text_encoder/pytorch_model.bin",
                "unet/config.json",
                "unet/diffusion_pytorch_model.fp16.bin",
                "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors",
            ]
        );
    }

    /// stabilityai/stable-diffusion-xl-base-1.0 (abridged), with sharded text_encoder_2.
    const SDXL: &[&str] = &[
        "model_index.json",
        "sd_xl_base_1.0.safetensors",
        "sd_xl_base_1.0_0.9vae.safetensors",
        "sd_xl_offset_example-lora_1.0.safetensors",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors",
        "text_encoder/model.onnx",
        "text_encoder/model.safetensors",
        "text_encoder/openvino_model.bin",
        "text_encoder/openvino_model.xml",
        "text_encoder/flax_model.msgpack",
        "text_encoder_2/config.json",
        "text_encoder_2/model.fp16-00001-of-00002.safetensors",
        "text_encoder_2/model.fp16-00002-of-00002.safetensors",
        "text_encoder_2/model.safetensors.index.fp16.json",
        "text_encoder_2/model.safetensors.index.json",
        "text_encoder_2/model-00001-of-00002.safetensors",
        "text_encoder_2/model-00002-of-00002.safetensors",
        "tokenizer/merges.txt",
        "tokenizer/vocab.json",
        "tokenizer_2/merges.txt",
        "tokenizer_2/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/model.onnx",
        "unet/model.onnx_data",
        "unet/openvino_model.bin",
        "unet/openvino_model.xml",
        "unet/diffusion_flax_model.msgpack",
        "vae/config.json",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "vae_1_0/config.json",
        "vae_1_0/diffusion_pytorch_model.safetensors",
        "vae_decoder/config.json",
        "vae_decoder/model.onnx",
        "vae_decoder/openvino_model.bin",
        "vae_decoder/openvino_model.xml",
        "01.png",
    ];

    #[test]
    fn sdxl_fp16_shards_with_their_index_and_per_folder_fallback() {
        let got = sel(SDXL, &variant(ModelRepoVariant::Fp16));
        assert_eq!(
            got,
            vec![
                "model_index.json",
                "scheduler/scheduler_config.json",
                "text_encoder/config.json",
                "text_encoder/model.fp16.safetensors",
                "text_encoder_2/config.json",
                "text_encoder_2/model.fp16-00001-of-00002.safetensors",
                "text_encoder_2/model.fp16-00002-of-00002.safetensors",
                "text_encoder_2/model.safetensors.index.fp16.json",
                "tokenizer/merges.txt",
                "tokenizer/vocab.json",
                "tokenizer_2/merges.txt",
                "tokenizer_2/vocab.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.fp16.safetensors",
                "vae/config.json",
                "vae/diffusion_pytorch_model.fp16.safetensors",
                // vae_1_0 has no fp16: its default safetensors.
                "vae_1_0/config.json",
                "vae_1_0/diffusion_pytorch_model.safetensors",
            ]
        );
        let default = sel(SDXL, &variant(ModelRepoVariant::Default));
        assert!(default.contains(&"text_encoder_2/model-00001-of-00002.safetensors".to_owned()));
        assert!(default.contains(&"text_encoder_2/model.safetensors.index.json".to_owned()));
        assert!(!default.iter().any(|p| p.contains("fp16")), "{default:?}");
    }

    #[test]
    fn onnx_openvino_flax_take_their_family() {
        let onnx = sel(SDXL, &variant(ModelRepoVariant::Onnx));
        assert!(onnx.contains(&"unet/model.onnx".to_owned()));
        assert!(onnx.contains(&"unet/model.onnx_data".to_owned()));
        assert!(onnx.contains(&"vae_decoder/model.onnx".to_owned()));
        assert!(onnx.contains(&"unet/config.json".to_owned()));
        assert!(
            !onnx
                .iter()
                .any(|p| p.ends_with(".safetensors") || p.contains("openvino")),
            "{onnx:?}"
        );
        // Folders with weights but no onnx file are dropped whole.
        assert!(
            !onnx
                .iter()
                .any(|p| p.starts_with("vae/") || p.starts_with("vae_1_0/"))
        );
        assert!(onnx.contains(&"tokenizer/vocab.json".to_owned()));

        let ov = sel(SDXL, &variant(ModelRepoVariant::OpenVino));
        assert!(ov.contains(&"unet/openvino_model.xml".to_owned()));
        assert!(ov.contains(&"unet/openvino_model.bin".to_owned()));
        assert!(
            !ov.iter()
                .any(|p| p.ends_with(".onnx") || p.ends_with(".safetensors"))
        );

        let flax = sel(SDXL, &variant(ModelRepoVariant::Flax));
        assert!(flax.contains(&"unet/diffusion_flax_model.msgpack".to_owned()));
        assert!(flax.contains(&"text_encoder/flax_model.msgpack".to_owned()));
        assert!(!flax.iter().any(|p| p.ends_with(".safetensors")));
    }

    #[test]
    fn onnx_folder_in_transformers_repo() {
        let repo = [
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "tokenizer.json",
            "spiece.model",
            "onnx/model.onnx",
            "onnx/model_fp16.onnx",
            "tf_model.h5",
            "README.md",
        ];
        assert_eq!(
            sel(&repo, &variant(ModelRepoVariant::Onnx)),
            vec![
                "config.json",
                "onnx/model.onnx",
                "onnx/model_fp16.onnx",
                "spiece.model",
                "tokenizer.json",
            ]
        );
        // Not a diffusers repo: the root is a component folder.
        assert_eq!(
            sel(&repo, &variant(ModelRepoVariant::Fp16)),
            vec![
                "config.json",
                "model.safetensors",
                "spiece.model",
                "tokenizer.json"
            ]
        );
    }

    #[test]
    fn missing_variant_falls_back_to_default() {
        let repo = [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.bin",
        ];
        let want = vec![
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
        ];
        for v in [
            ModelRepoVariant::Fp16,
            ModelRepoVariant::Onnx,
            ModelRepoVariant::OpenVino,
            ModelRepoVariant::Flax,
        ] {
            assert_eq!(sel(&repo, &variant(v)), want, "{v}");
        }
    }

    #[test]
    fn subfolder_and_single_file() {
        let f = FileFilter {
            variant: ModelRepoVariant::Fp16,
            subfolder: Some("vae".into()),
            ..FileFilter::default()
        };
        let got = select_files("o/n", &listing(SD15), &f).unwrap();
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|s| (s.file.path.as_str(), s.dest.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("vae/config.json", "config.json"),
                (
                    "vae/diffusion_pytorch_model.fp16.safetensors",
                    "diffusion_pytorch_model.fp16.safetensors"
                ),
            ]
        );
        let src = match crate::hub::ModelSource::parse_in(
            "o/n::v1-5-pruned-emaonly.ckpt",
            std::path::Path::new("/nonexistent"),
        )
        .unwrap()
        {
            crate::hub::ModelSource::Hf(h) => h,
            other => panic!("{other:?}"),
        };
        let got = select_files("o/n", &listing(SD15), &FileFilter::from_source(&src)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].file.path, "v1-5-pruned-emaonly.ckpt");
        assert_eq!(got[0].dest, "v1-5-pruned-emaonly.ckpt");

        let e = select_files(
            "o/n",
            &listing(SD15),
            &FileFilter {
                single_file: Some("nope.safetensors".into()),
                ..FileFilter::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope.safetensors"), "{e}");
        let e = select_files(
            "o/n",
            &listing(SD15),
            &FileFilter {
                subfolder: Some("nope".into()),
                ..FileFilter::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, SelectError::NoSuchFolder { .. }), "{e}");
    }

    #[test]
    fn include_exclude_globs() {
        let f = variant(ModelRepoVariant::Fp16).with_globs(
            vec!["*.safetensors".into()],
            vec!["safety_checker/**".into()],
        );
        assert_eq!(
            sel(SD15, &f),
            vec![
                "text_encoder/model.fp16.safetensors",
                "unet/diffusion_pytorch_model.fp16.safetensors",
                "vae/diffusion_pytorch_model.fp16.safetensors",
            ]
        );
        let f = variant(ModelRepoVariant::Fp16).with_globs(vec!["*.gguf".into()], vec![]);
        let e = select_files("o/n", &listing(SD15), &f).unwrap_err();
        assert!(
            e.to_string().contains("o/n") && e.to_string().contains("gguf"),
            "{e}"
        );
        let f = FileFilter::default().with_globs(vec!["[".into()], vec![]);
        assert!(matches!(
            select_files("o/n", &listing(SD15), &f),
            Err(SelectError::BadGlob { .. })
        ));
    }

    #[test]
    fn hostile_listing_refused() {
        let e = select_files(
            "o/n",
            &listing(&["config.json", "../../.bashrc"]),
            &FileFilter::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("../../.bashrc"), "{e}");
    }

    #[test]
    fn weight_name_parts() {
        assert_eq!(
            weight_parts("diffusion_pytorch_model.fp16.safetensors"),
            ("diffusion_pytorch_model", Some("fp16"), "safetensors")
        );
        assert_eq!(
            weight_parts("model.fp16-00001-of-00002.safetensors"),
            ("model", Some("fp16"), "safetensors")
        );
        assert_eq!(
            weight_parts("model-00001-of-00002.safetensors"),
            ("model", None, "safetensors")
        );
        assert_eq!(
            weight_parts("sd_xl_base_1.0.safetensors"),
            ("sd_xl_base_1.0", None, "safetensors")
        );
        assert_eq!(
            index_parts("model.safetensors.index.fp16.json"),
            Some(("safetensors", Some("fp16")))
        );
        assert_eq!(
            index_parts("diffusion_pytorch_model.bin.index.json"),
            Some(("bin", None))
        );
        assert_eq!(index_parts("config.json"), None);
    }
}
