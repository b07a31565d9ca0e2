//! The loader registry (the seed's `ModelLoaderRegistry`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::backends::mmap;
use super::{AnyModel, LoadError, PickleGate};
use crate::config::AnyModelConfig;
use crate::taxonomy::{BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SubModelType};

/// What a loader handles. `BaseModelType::Any` and `None` type/format are wildcards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoaderKey {
    /// Base model, or `Any`.
    pub base: BaseModelType,
    /// Model type, or `None` for any.
    pub model_type: Option<ModelType>,
    /// Format, or `None` for any.
    pub format: Option<ModelFormat>,
}

impl LoaderKey {
    /// A key; `None` means any.
    pub const fn new(
        base: BaseModelType,
        model_type: Option<ModelType>,
        format: Option<ModelFormat>,
    ) -> Self {
        Self {
            base,
            model_type,
            format,
        }
    }
}

impl fmt::Display for LoaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "base `{}`, type `{}`, format `{}`",
            self.base,
            self.model_type.map_or("any", ModelType::as_str),
            self.format.map_or("any", ModelFormat::as_str)
        )
    }
}

/// Everything a loader needs to load one model (the seed's `_load_model` arguments).
pub struct LoadRequest<'a> {
    /// The record.
    pub config: &'a AnyModelConfig,
    /// The record's path, resolved against `models_dir`.
    pub path: PathBuf,
    /// The submodel asked for (main models).
    pub submodel: Option<SubModelType>,
    /// The diffusers file variant (`fp16` …), when the record has one.
    pub repo_variant: Option<ModelRepoVariant>,
    /// Decides about pickle files.
    pub pickle_gate: &'a dyn PickleGate,
}

impl fmt::Debug for LoadRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadRequest")
            .field("key", &self.config.key())
            .field("path", &self.path)
            .field("submodel", &self.submodel)
            .field("repo_variant", &self.repo_variant)
            .finish_non_exhaustive()
    }
}

/// A loader: turns files on disk into a host model (the seed's `ModelLoader`).
pub trait ModelLoader: Send + Sync {
    /// A short name for diagnostics.
    fn name(&self) -> &'static str;
    /// Loads the model into host memory.
    fn load(&self, req: &LoadRequest<'_>) -> Result<AnyModel, LoadError>;
    /// Host bytes the model will take, without loading it (headers and file sizes only).
    /// Used to make room in the cache before loading and to refuse models larger than the
    /// budget before any memory is used.
    fn estimate_bytes(&self, req: &LoadRequest<'_>) -> Result<u64, LoadError> {
        disk_size(&req.path)
    }
}

/// Bytes of a file, or of every file under a folder.
pub(crate) fn disk_size(path: &Path) -> Result<u64, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let md = std::fs::metadata(path).map_err(io)?;
    if md.is_file() {
        return Ok(md.len());
    }
    let mut total = 0u64;
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        total = total.saturating_add(disk_size(&entry.path())?);
    }
    Ok(total)
}

/// The registry: (base, type, format) → loader.
#[derive(Default, Clone)]
pub struct LoaderRegistry {
    loaders: HashMap<LoaderKey, Arc<dyn ModelLoader>>,
}

impl fmt::Debug for LoaderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<String> = self
            .loaders
            .iter()
            .map(|(k, l)| format!("{k} → {}", l.name()))
            .collect();
        keys.sort();
        f.debug_struct("LoaderRegistry")
            .field("loaders", &keys)
            .finish()
    }
}

impl LoaderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in loaders (memory-mapped safetensors):
    /// - main diffusers pipelines (submodel folders) and main single-file checkpoints
    ///   (submodels by key prefix);
    /// - every other type whose weights are safetensors files or folders.
    ///
    /// - every GGUF-quantized model as raw blocks (a main model's file is its transformer);
    /// - bitsandbytes and SDNQ files as their stored (quantized) tensors.
    ///
    /// ONNX and Olive (ONNX runtime graphs), external APIs (no files) and `unknown` have no
    /// loader: NotImplemented, or the `unknown` refusal with its hint.
    pub fn with_defaults() -> Self {
        let mut r = Self::new();
        let weights: Arc<dyn ModelLoader> = Arc::new(mmap::WeightsLoader);
        let any = BaseModelType::Any;
        let gguf: Arc<dyn ModelLoader> = Arc::new(super::backends::gguf::GgufLoader);
        let defaults: [(ModelType, ModelFormat, Arc<dyn ModelLoader>); 4] = [
            (ModelType::Main, ModelFormat::GgufQuantized, gguf.clone()),
            (
                ModelType::Main,
                ModelFormat::BnbQuantizedNf4b,
                Arc::new(mmap::SingleFileMainLoader),
            ),
            (
                ModelType::Main,
                ModelFormat::Diffusers,
                Arc::new(mmap::DiffusersPipelineLoader),
            ),
            (
                ModelType::Main,
                ModelFormat::Checkpoint,
                Arc::new(mmap::CheckpointPipelineLoader),
            ),
        ];
        for t in [
            ModelType::T5Encoder,
            ModelType::Qwen3Encoder,
            ModelType::Qwen3VlEncoder,
            ModelType::MistralEncoder,
            ModelType::Gemma2Encoder,
        ] {
            r.register(
                LoaderKey::new(any, Some(t), Some(ModelFormat::GgufQuantized)),
                gguf.clone(),
            )
            .expect("default loaders do not overlap");
        }
        for (t, f, l) in defaults {
            r.register(LoaderKey::new(any, Some(t), Some(f)), l)
                .expect("default loaders do not overlap");
        }
        for (t, f) in [
            (ModelType::Vae, ModelFormat::Checkpoint),
            (ModelType::Vae, ModelFormat::Diffusers),
            (ModelType::ControlNet, ModelFormat::Checkpoint),
            (ModelType::ControlNet, ModelFormat::Diffusers),
            (ModelType::Lora, ModelFormat::Lycoris),
            (ModelType::Lora, ModelFormat::Diffusers),
            (ModelType::ControlLora, ModelFormat::Lycoris),
            (ModelType::ControlLora, ModelFormat::Diffusers),
            (ModelType::TextualInversion, ModelFormat::EmbeddingFile),
            (ModelType::TextualInversion, ModelFormat::EmbeddingFolder),
            (ModelType::IpAdapter, ModelFormat::InvokeAI),
            (ModelType::IpAdapter, ModelFormat::Checkpoint),
            (ModelType::ClipVision, ModelFormat::Diffusers),
            (ModelType::ClipEmbed, ModelFormat::Diffusers),
            (ModelType::T2IAdapter, ModelFormat::Diffusers),
            (ModelType::T5Encoder, ModelFormat::T5Encoder),
            (ModelType::T5Encoder, ModelFormat::Checkpoint),
            (ModelType::SpandrelImageToImage, ModelFormat::Checkpoint),
            (ModelType::Lora, ModelFormat::Omi),
            (ModelType::T5Encoder, ModelFormat::BnbQuantizedNf4b),
            (ModelType::T5Encoder, ModelFormat::BnbQuantizedInt8b),
            (ModelType::T5Encoder, ModelFormat::SdnqQuantized),
            (ModelType::Qwen3Encoder, ModelFormat::Qwen3Encoder),
            (ModelType::Qwen3Encoder, ModelFormat::Checkpoint),
            (ModelType::Qwen3Encoder, ModelFormat::SdnqQuantized),
            (ModelType::QwenVlEncoder, ModelFormat::QwenVlEncoder),
            (ModelType::QwenVlEncoder, ModelFormat::Diffusers),
            (ModelType::QwenVlEncoder, ModelFormat::Checkpoint),
            (ModelType::Qwen3VlEncoder, ModelFormat::Qwen3VlEncoder),
            (ModelType::Qwen3VlEncoder, ModelFormat::Checkpoint),
            (ModelType::MistralEncoder, ModelFormat::MistralEncoder),
            (ModelType::MistralEncoder, ModelFormat::Diffusers),
            (ModelType::MistralEncoder, ModelFormat::Checkpoint),
            (ModelType::WanT5Encoder, ModelFormat::WanT5Encoder),
            (ModelType::Gemma2Encoder, ModelFormat::Gemma2Encoder),
            (ModelType::Gemma4Encoder, ModelFormat::Gemma4Encoder),
            (ModelType::SigLip, ModelFormat::Diffusers),
            (ModelType::FluxRedux, ModelFormat::Checkpoint),
            (ModelType::LlavaOnevision, ModelFormat::Diffusers),
            (ModelType::PromptEnhancer, ModelFormat::Diffusers),
            (ModelType::TextLlm, ModelFormat::Diffusers),
            (ModelType::PidDecoder, ModelFormat::Checkpoint),
        ] {
            r.register(LoaderKey::new(any, Some(t), Some(f)), weights.clone())
                .expect("default loaders do not overlap");
        }
        r
    }

    /// Registers `loader` for `key`. Registering a key twice is an error.
    pub fn register(
        &mut self,
        key: LoaderKey,
        loader: Arc<dyn ModelLoader>,
    ) -> Result<(), LoadError> {
        if self.loaders.contains_key(&key) {
            return Err(LoadError::DuplicateLoader(key));
        }
        self.loaders.insert(key, loader);
        Ok(())
    }

    /// The most specific loader for a combination: exact base before `any`, then exact type
    /// before any type, then exact format before any format.
    pub fn get(
        &self,
        base: BaseModelType,
        model_type: ModelType,
        format: ModelFormat,
    ) -> Result<Arc<dyn ModelLoader>, LoadError> {
        for b in [base, BaseModelType::Any] {
            for t in [Some(model_type), None] {
                for f in [Some(format), None] {
                    if let Some(l) = self.loaders.get(&LoaderKey::new(b, t, f)) {
                        return Ok(l.clone());
                    }
                }
            }
        }
        Err(LoadError::NotImplemented {
            base,
            model_type,
            format,
        })
    }

    /// Every registered key.
    pub fn keys(&self) -> Vec<LoaderKey> {
        self.loaders.keys().copied().collect()
    }
}

/// The folder of a main diffusers model's submodel: the record's `submodels` map, else the
/// conventional folder name (`unet`, `vae` …).
pub(crate) fn submodel_dir(config: &AnyModelConfig, root: &Path, sub: SubModelType) -> PathBuf {
    config
        .diffusers_fields()
        .and_then(|d| d.submodels.as_ref())
        .and_then(|m| m.get(&sub))
        .map_or_else(
            || root.join(sub.as_str()),
            |def| root.join(&def.path_or_prefix),
        )
}

/// What a request reads: the submodel folder for diffusers pipelines, the path otherwise.
pub(crate) fn location(req: &LoadRequest<'_>) -> PathBuf {
    match (req.submodel, req.config.format()) {
        (Some(sub), ModelFormat::Diffusers) => submodel_dir(req.config, &req.path, sub),
        _ => req.path.clone(),
    }
}

/// The submodels of a main model that exist on disk.
pub(crate) fn present_submodels(config: &AnyModelConfig, root: &Path) -> Vec<SubModelType> {
    match config.format() {
        ModelFormat::Diffusers => SubModelType::ALL
            .iter()
            .copied()
            .filter(|s| submodel_dir(config, root, *s).is_dir())
            .collect(),
        ModelFormat::Checkpoint => mmap::checkpoint_submodels(root),
        // A quantized single-file main model is its transformer.
        ModelFormat::GgufQuantized | ModelFormat::BnbQuantizedNf4b => {
            vec![SubModelType::Transformer]
        }
        _ => Vec::new(),
    }
}
