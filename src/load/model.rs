//! Loaded models and the guard that keeps one on the execution device.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::backends::gguf::GgufModel;
use super::backends::{DeviceModel, Precision};
use super::{LoadError, ModelCache, StateDict};
use crate::config::AnyModelConfig;
use crate::taxonomy::SubModelType;

/// Small files of a submodel without weights (tokenizer vocabularies, scheduler configs),
/// read into memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSet {
    root: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
}

impl FileSet {
    /// Reads every regular file under `root` (recursively); names are relative, `/`-separated.
    pub fn read(root: &Path) -> Result<Self, LoadError> {
        fn walk(
            root: &Path,
            dir: &Path,
            out: &mut BTreeMap<String, Vec<u8>>,
        ) -> Result<(), LoadError> {
            let io = |path: &Path| {
                let path = path.to_path_buf();
                move |source| LoadError::Io { path, source }
            };
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .map_err(io(dir))?
                .collect::<Result<_, _>>()
                .map_err(io(dir))?;
            entries.sort_by_key(std::fs::DirEntry::file_name);
            for e in entries {
                let p = e.path();
                let ft = e.file_type().map_err(io(&p))?;
                if ft.is_dir() {
                    walk(root, &p, out)?;
                } else if ft.is_file() {
                    let rel = p.strip_prefix(root).unwrap_or(&p);
                    let name = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/");
                    out.insert(name, std::fs::read(&p).map_err(io(&p))?);
                }
            }
            Ok(())
        }
        let mut files = BTreeMap::new();
        walk(root, root, &mut files)?;
        Ok(Self {
            root: root.to_path_buf(),
            files,
        })
    }

    /// The folder read.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file's content by relative name.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// Relative names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file was read.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|v| v.len() as u64).sum()
    }
}

/// A model in host memory (the seed's `AnyModel`).
pub enum AnyModel {
    /// Tensors (memory-mapped safetensors).
    StateDict(StateDict),
    /// A GGUF file's tensors as raw (possibly quantized) blocks.
    Gguf(GgufModel),
    /// Weightless files (tokenizer, scheduler).
    Files(FileSet),
    /// Anything a custom loader produces, with the bytes it occupies.
    Other {
        /// Host bytes, for the cache's accounting.
        bytes: u64,
        /// The model.
        value: Arc<dyn Any + Send + Sync>,
    },
}

impl fmt::Debug for AnyModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StateDict(s) => f.debug_tuple("StateDict").field(s).finish(),
            Self::Gguf(g) => f.debug_tuple("Gguf").field(g).finish(),
            Self::Files(s) => f.debug_tuple("Files").field(s).finish(),
            Self::Other { bytes, .. } => f
                .debug_struct("Other")
                .field("bytes", bytes)
                .finish_non_exhaustive(),
        }
    }
}

impl AnyModel {
    /// A custom model of `bytes` host bytes.
    pub fn other<T: Any + Send + Sync>(bytes: u64, value: T) -> Self {
        Self::Other {
            bytes,
            value: Arc::new(value),
        }
    }

    /// Host bytes (tensor data, file contents, or what a custom loader declared).
    pub fn bytes(&self) -> u64 {
        match self {
            Self::StateDict(s) => s.bytes(),
            Self::Gguf(g) => g.bytes(),
            Self::Files(f) => f.bytes(),
            Self::Other { bytes, .. } => *bytes,
        }
    }

    /// Number of tensors (0 for weightless and custom models).
    pub fn tensor_count(&self) -> usize {
        match self {
            Self::StateDict(s) => s.len(),
            Self::Gguf(g) => g.len(),
            _ => 0,
        }
    }

    /// The host state dict, when the model has one.
    pub fn state_dict(&self) -> Option<&StateDict> {
        match self {
            Self::StateDict(s) => Some(s),
            _ => None,
        }
    }

    /// The GGUF tensors, for a GGUF model.
    pub fn gguf(&self) -> Option<&GgufModel> {
        match self {
            Self::Gguf(g) => Some(g),
            _ => None,
        }
    }

    /// A custom model's value, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        match self {
            Self::Other { value, .. } => value.downcast_ref(),
            _ => None,
        }
    }
}

/// A model returned by the load service: the record plus the host model. Lock it with
/// [`LoadedModel::lock`] to use it on the execution device (the seed's `with loaded_model as m:`).
#[derive(Debug, Clone)]
pub struct LoadedModel {
    config: AnyModelConfig,
    submodel: Option<SubModelType>,
    cache_key: String,
    model: Arc<AnyModel>,
    cache: ModelCache,
    precision: Precision,
}

impl LoadedModel {
    pub(crate) fn new(
        config: AnyModelConfig,
        submodel: Option<SubModelType>,
        cache_key: String,
        model: Arc<AnyModel>,
        cache: ModelCache,
        precision: Precision,
    ) -> Self {
        Self {
            config,
            submodel,
            cache_key,
            model,
            cache,
            precision,
        }
    }

    /// The precision the device copy is made in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// A copy of the record.
    pub fn config(&self) -> &AnyModelConfig {
        &self.config
    }

    /// The submodel loaded, for main models.
    pub fn submodel(&self) -> Option<SubModelType> {
        self.submodel
    }

    /// The cache key (`<key>` or `<key>:<submodel>`).
    pub fn cache_key(&self) -> &str {
        &self.cache_key
    }

    /// The host model.
    pub fn model(&self) -> &Arc<AnyModel> {
        &self.model
    }

    /// Puts the model on the execution device (if it is not there) and locks it there until
    /// the guard drops; a locked model is never evicted.
    pub fn lock(&self) -> Result<ModelGuard, LoadError> {
        self.cache
            .lock_as(&self.cache_key, &self.model, self.precision)
    }

    /// The seed's `model_on_device()`: the host state dict (None for models without one) and
    /// the locked device model.
    pub fn model_on_device(&self) -> Result<(Option<&StateDict>, ModelGuard), LoadError> {
        let guard = self.lock()?;
        Ok((self.model.state_dict(), guard))
    }
}

/// A model loaded without a record (the seed's `LoadedModelWithoutConfig`, from
/// `load_local_model` / `load_remote_model`): the host model, lockable on the execution device
/// like a [`LoadedModel`].
#[derive(Debug, Clone)]
pub struct LoadedModelWithoutConfig {
    pub(crate) path: PathBuf,
    pub(crate) cache_key: String,
    pub(crate) model: Arc<AnyModel>,
    pub(crate) cache: ModelCache,
    pub(crate) precision: Precision,
}

impl LoadedModelWithoutConfig {
    /// The file or folder loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cache key (`file:<path>@<size>-<mtime>`).
    pub fn cache_key(&self) -> &str {
        &self.cache_key
    }

    /// The host model.
    pub fn model(&self) -> &Arc<AnyModel> {
        &self.model
    }

    /// Puts the model on the execution device and locks it there until the guard drops.
    pub fn lock(&self) -> Result<ModelGuard, LoadError> {
        self.cache
            .lock_as(&self.cache_key, &self.model, self.precision)
    }

    /// The host state dict (None for models without one) and the locked device model.
    pub fn model_on_device(&self) -> Result<(Option<&StateDict>, ModelGuard), LoadError> {
        let guard = self.lock()?;
        Ok((self.model.state_dict(), guard))
    }
}

/// Keeps a model locked on the execution device while alive. Dereferences to the device model.
pub struct ModelGuard {
    pub(crate) cache: ModelCache,
    pub(crate) key: String,
    pub(crate) model: DeviceModel,
}

impl fmt::Debug for ModelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelGuard")
            .field("key", &self.key)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl ModelGuard {
    /// The device model.
    pub fn model(&self) -> &DeviceModel {
        &self.model
    }

    /// The cache key of the locked model.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl std::ops::Deref for ModelGuard {
    type Target = DeviceModel;
    fn deref(&self) -> &DeviceModel {
        &self.model
    }
}

impl Drop for ModelGuard {
    fn drop(&mut self) {
        self.cache.unlock(&self.key);
    }
}
