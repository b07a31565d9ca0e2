//! The default backend: safetensors files memory-mapped into host tensors, and the default
//! loaders built on it.
//!
//! Mapping is zero-copy: a tensor's bytes are a slice of the page cache. A load faults every
//! page in up front (`MAP_POPULATE`), so a loaded model is resident and later reads do not
//! stall on the disk.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use safetensors::{Dtype, SafeTensors};

use super::super::registry::{LoadRequest, ModelLoader, disk_size, submodel_dir};
use super::super::{AnyModel, FileSet, LoadError, PickleGate};
use crate::taxonomy::{ModelRepoVariant, SubModelType};

/// One tensor of a [`StateDict`], borrowed from the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTensor<'a> {
    /// Name (with a checkpoint submodel's prefix removed).
    pub name: &'a str,
    /// Element type as stored.
    pub dtype: Dtype,
    /// Shape.
    pub shape: &'a [usize],
    /// The raw little-endian bytes, exactly as in the file.
    pub data: &'a [u8],
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

struct Slot {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// Tensors of one or more safetensors files (shards), memory-mapped.
pub struct StateDict {
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Slot>,
    bytes: u64,
}

impl fmt::Debug for StateDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateDict")
            .field("files", &self.paths().collect::<Vec<_>>())
            .field("tensors", &self.tensors.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// Which tensors of the files a view keeps.
#[derive(Debug, Clone, Copy)]
enum Select<'a> {
    All,
    /// Tensors under any of these prefixes, with the prefix removed from the name.
    Prefixes(&'a [&'a str]),
}

fn map_file(path: &Path, populate: bool) -> Result<Mmap, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < 8 {
        return Err(LoadError::Safetensors {
            path: path.to_path_buf(),
            reason: format!("file is {len} bytes, shorter than the 8-byte header length"),
        });
    }
    let mut opts = MmapOptions::new();
    if populate {
        opts.populate();
    }
    // SAFETY: model files are immutable once installed (the installer writes a temporary file
    // and renames it over the old one, which leaves this mapping on the old inode). A process
    // that truncates the file in place could still make reads fault; that is outside what
    // modelsync supports.
    unsafe { opts.map(&file) }.map_err(io)
}

impl StateDict {
    /// Maps one safetensors file and faults it in.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        Self::open_shards(&[path.to_path_buf()])
    }

    /// Maps several shards of one model; a tensor name in two shards is an error.
    pub fn open_shards(paths: &[PathBuf]) -> Result<Self, LoadError> {
        Self::build(paths, Select::All, true)
    }

    fn build(paths: &[PathBuf], select: Select<'_>, populate: bool) -> Result<Self, LoadError> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut tensors: BTreeMap<String, Slot> = BTreeMap::new();
        let mut bytes = 0u64;
        for (i, path) in paths.iter().enumerate() {
            // Populating only makes sense when every tensor is kept; views fault their own
            // ranges in below.
            let map = map_file(path, populate && matches!(select, Select::All))?;
            let (header_len, meta) =
                SafeTensors::read_metadata(&map).map_err(|e| LoadError::Safetensors {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            let base = 8 + header_len;
            for (name, info) in meta.tensors() {
                let name = match select {
                    Select::All => name,
                    Select::Prefixes(ps) => match ps.iter().find_map(|p| name.strip_prefix(p)) {
                        Some(rest) => rest.to_owned(),
                        None => continue,
                    },
                };
                let (s, e) = info.data_offsets;
                if let Some(prev) = tensors.get(&name) {
                    return Err(LoadError::DuplicateTensor {
                        name,
                        first: paths[prev.shard].clone(),
                        second: path.clone(),
                    });
                }
                bytes += (e - s) as u64;
                tensors.insert(
                    name,
                    Slot {
                        shard: i,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: base + s,
                        end: base + e,
                    },
                );
            }
            shards.push(Shard {
                path: path.clone(),
                map,
            });
        }
        let sd = Self {
            shards,
            tensors,
            bytes,
        };
        if populate && !matches!(select, Select::All) {
            sd.fault_in();
        }
        Ok(sd)
    }

    /// Reads one byte of every page of every kept tensor, so the view is resident.
    fn fault_in(&self) {
        let mut acc = 0u8;
        for slot in self.tensors.values() {
            let data = &self.shards[slot.shard].map[slot.start..slot.end];
            for b in data.iter().step_by(4096) {
                acc ^= *b;
            }
        }
        std::hint::black_box(acc);
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Bytes of tensor data.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The files mapped.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    fn view<'a>(&'a self, name: &'a str, slot: &'a Slot) -> HostTensor<'a> {
        HostTensor {
            name,
            dtype: slot.dtype,
            shape: &slot.shape,
            data: &self.shards[slot.shard].map[slot.start..slot.end],
        }
    }

    /// A tensor by name.
    pub fn get(&self, name: &str) -> Option<HostTensor<'_>> {
        self.tensors
            .get_key_value(name)
            .map(|(n, s)| self.view(n, s))
    }

    /// Every tensor, by name.
    pub fn iter(&self) -> impl Iterator<Item = HostTensor<'_>> {
        self.tensors.iter().map(|(n, s)| self.view(n, s))
    }
}

const PICKLE_EXTENSIONS: &[&str] = &["ckpt", "pt", "pth", "bin", "pkl", "pickle"];

fn has_ext(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Whether a file is a pickle checkpoint (by extension).
pub fn is_pickle(path: &Path) -> bool {
    has_ext(path, PICKLE_EXTENSIONS)
}

/// The error for a pickle file: the gate's reason, or — when the scan is clean — that this
/// backend cannot unpickle.
fn refuse_pickle(path: &Path, gate: &dyn PickleGate) -> LoadError {
    let reason = match gate.check(path) {
        Err(reason) => reason,
        Ok(()) => "the scan is clean, but the memory-mapped backend reads only safetensors; convert the model to safetensors".into(),
    };
    LoadError::PickleRefused {
        path: path.to_path_buf(),
        reason,
    }
}

const VARIANT_TAGS: &[&str] = &["fp16", "fp32", "bf16", "onnx", "openvino", "flax"];

/// The variant tag of `name.fp16.safetensors`, if any.
fn variant_tag(path: &Path) -> Option<&str> {
    let stem = path.file_stem()?.to_str()?;
    let (_, tag) = stem.rsplit_once('.')?;
    VARIANT_TAGS.contains(&tag).then_some(tag)
}

fn list_files(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        let p = e.path();
        let ft = e.file_type().map_err(io)?;
        if ft.is_file() {
            out.push(p);
        } else if ft.is_dir() && recursive {
            list_files(&p, true, out)?;
        }
    }
    Ok(())
}

/// The safetensors files of a folder for a repo variant: files tagged with the variant when
/// there are any, else the untagged ones. Looks in subfolders only when the folder itself has
/// none. Sorted, so shards come in order.
pub fn select_weights(
    dir: &Path,
    variant: Option<ModelRepoVariant>,
) -> Result<Vec<PathBuf>, LoadError> {
    for recursive in [false, true] {
        let mut files = Vec::new();
        list_files(dir, recursive, &mut files)?;
        let mut st: Vec<PathBuf> = files
            .into_iter()
            .filter(|p| has_ext(p, &["safetensors"]))
            .collect();
        if st.is_empty() {
            continue;
        }
        st.sort();
        let want = variant
            .map(ModelRepoVariant::as_str)
            .filter(|v| !v.is_empty());
        let tagged: Vec<PathBuf> = st
            .iter()
            .filter(|p| want.is_some() && variant_tag(p) == want)
            .cloned()
            .collect();
        if !tagged.is_empty() {
            return Ok(tagged);
        }
        let untagged: Vec<PathBuf> = st
            .iter()
            .filter(|p| variant_tag(p).is_none())
            .cloned()
            .collect();
        return Ok(if untagged.is_empty() { st } else { untagged });
    }
    Ok(Vec::new())
}

/// Loads a folder's weights, refusing pickle-only folders and naming empty ones.
fn load_folder(dir: &Path, req: &LoadRequest<'_>) -> Result<StateDict, LoadError> {
    load_folder_with(dir, req.repo_variant, req.pickle_gate)
}

fn load_folder_with(
    dir: &Path,
    variant: Option<ModelRepoVariant>,
    gate: &dyn PickleGate,
) -> Result<StateDict, LoadError> {
    let files = select_weights(dir, variant)?;
    if files.is_empty() {
        let mut all = Vec::new();
        list_files(dir, true, &mut all)?;
        all.sort();
        if let Some(p) = all.iter().find(|p| is_pickle(p)) {
            return Err(refuse_pickle(p, gate));
        }
        return Err(LoadError::NoWeights {
            path: dir.to_path_buf(),
            hint: String::new(),
        });
    }
    StateDict::open_shards(&files)
}

/// Loads a file or folder without a record (the seed's `load_local_model` without a loader):
/// a safetensors file, or the weights of a folder that holds one model (a diffusers submodel
/// folder such as `vae/`, or shards). A whole diffusers pipeline (`model_index.json`) is
/// refused: its submodels' tensor names overlap, so load one submodel folder instead. Pickle
/// files go through `gate`.
pub(crate) fn load_path(path: &Path, gate: &dyn PickleGate) -> Result<AnyModel, LoadError> {
    if path.is_dir() {
        if path.join("model_index.json").is_file() {
            return Err(LoadError::Pipeline {
                path: path.to_path_buf(),
            });
        }
        return load_folder_with(path, None, gate).map(AnyModel::StateDict);
    }
    if is_pickle(path) {
        return Err(refuse_pickle(path, gate));
    }
    if has_ext(path, &["gguf"]) {
        return super::gguf::GgufModel::open(path).map(AnyModel::Gguf);
    }
    StateDict::open(path).map(AnyModel::StateDict)
}

/// Host bytes [`load_path`] will take, from file sizes.
pub(crate) fn estimate_path(path: &Path) -> Result<u64, LoadError> {
    if !path.is_dir() {
        return disk_size(path);
    }
    let files = select_weights(path, None)?;
    if files.is_empty() {
        return disk_size(path);
    }
    files
        .iter()
        .try_fold(0u64, |acc, p| Ok(acc + disk_size(p)?))
}

fn folder_estimate(dir: &Path, req: &LoadRequest<'_>) -> Result<u64, LoadError> {
    let files = select_weights(dir, req.repo_variant)?;
    if files.is_empty() {
        return disk_size(dir);
    }
    files
        .iter()
        .try_fold(0u64, |acc, p| Ok(acc + disk_size(p)?))
}

/// Loads a single safetensors file or a folder of them (every non-pipeline model type).
#[derive(Debug, Default, Clone, Copy)]
pub struct WeightsLoader;

impl ModelLoader for WeightsLoader {
    fn name(&self) -> &'static str {
        "safetensors"
    }

    fn load(&self, req: &LoadRequest<'_>) -> Result<AnyModel, LoadError> {
        let sd = if req.path.is_dir() {
            load_folder(&req.path, req)?
        } else if is_pickle(&req.path) {
            return Err(refuse_pickle(&req.path, req.pickle_gate));
        } else {
            StateDict::open(&req.path)?
        };
        Ok(AnyModel::StateDict(sd))
    }

    fn estimate_bytes(&self, req: &LoadRequest<'_>) -> Result<u64, LoadError> {
        if req.path.is_dir() {
            folder_estimate(&req.path, req)
        } else {
            disk_size(&req.path)
        }
    }
}

/// Loads a main model stored as one quantized safetensors file (bitsandbytes NF4 FLUX): the
/// file is the transformer, its tensors as stored.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleFileMainLoader;

/// A single-file main model is its transformer: it answers no submodel but `transformer` (and
/// `unet`, as InvokeAI asks of it). Shared with the GGUF loader.
pub(crate) fn check_whole_file_submodel(req: &LoadRequest<'_>) -> Result<(), LoadError> {
    match req.submodel {
        None | Some(SubModelType::Transformer | SubModelType::UNet) => Ok(()),
        Some(sub) => Err(LoadError::SubmodelMissing {
            key: req.config.key().to_owned(),
            submodel: sub,
            location: req.path.clone(),
        }),
    }
}

impl ModelLoader for SingleFileMainLoader {
    fn name(&self) -> &'static str {
        "single-file-main"
    }

    fn load(&self, req: &LoadRequest<'_>) -> Result<AnyModel, LoadError> {
        check_whole_file_submodel(req)?;
        WeightsLoader.load(req)
    }

    fn estimate_bytes(&self, req: &LoadRequest<'_>) -> Result<u64, LoadError> {
        check_whole_file_submodel(req)?;
        WeightsLoader.estimate_bytes(req)
    }
}

/// Submodels that are configuration files, not weights.
fn is_weightless(sub: SubModelType) -> bool {
    matches!(
        sub,
        SubModelType::Tokenizer
            | SubModelType::Tokenizer2
            | SubModelType::Tokenizer3
            | SubModelType::Scheduler
    )
}

/// Loads one submodel folder of a diffusers pipeline: its weights, or — for weightless parts
/// like the tokenizer and scheduler — its files.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiffusersPipelineLoader;

impl DiffusersPipelineLoader {
    fn dir(req: &LoadRequest<'_>) -> Result<(SubModelType, PathBuf), LoadError> {
        let sub = req.submodel.ok_or_else(|| LoadError::SubmodelRequired {
            key: req.config.key().to_owned(),
            name: req.config.name().to_owned(),
        })?;
        let dir = submodel_dir(req.config, &req.path, sub);
        if !dir.is_dir() {
            return Err(LoadError::SubmodelMissing {
                key: req.config.key().to_owned(),
                submodel: sub,
                location: dir,
            });
        }
        Ok((sub, dir))
    }
}

impl ModelLoader for DiffusersPipelineLoader {
    fn name(&self) -> &'static str {
        "diffusers-pipeline"
    }

    fn load(&self, req: &LoadRequest<'_>) -> Result<AnyModel, LoadError> {
        let (sub, dir) = Self::dir(req)?;
        if is_weightless(sub) {
            return Ok(AnyModel::Files(FileSet::read(&dir)?));
        }
        load_folder(&dir, req).map(AnyModel::StateDict)
    }

    fn estimate_bytes(&self, req: &LoadRequest<'_>) -> Result<u64, LoadError> {
        let (sub, dir) = Self::dir(req)?;
        if is_weightless(sub) {
            return disk_size(&dir);
        }
        folder_estimate(&dir, req)
    }
}

/// Key prefixes of a submodel inside a single-file (original Stable Diffusion layout)
/// checkpoint.
pub fn checkpoint_prefixes(sub: SubModelType) -> &'static [&'static str] {
    match sub {
        SubModelType::UNet => &["model.diffusion_model."],
        SubModelType::Vae => &["first_stage_model."],
        SubModelType::TextEncoder => &["cond_stage_model.", "conditioner.embedders.0."],
        SubModelType::TextEncoder2 => &["conditioner.embedders.1."],
        _ => &[],
    }
}

/// The submodels present in a single-file checkpoint (by key prefix); empty when the file
/// cannot be read as safetensors.
pub fn checkpoint_submodels(path: &Path) -> Vec<SubModelType> {
    let Ok(map) = map_file(path, false) else {
        return Vec::new();
    };
    let Ok((_, meta)) = SafeTensors::read_metadata(&map) else {
        return Vec::new();
    };
    let names: Vec<String> = meta.tensors().into_keys().collect();
    SubModelType::ALL
        .iter()
        .copied()
        .filter(|s| {
            let ps = checkpoint_prefixes(*s);
            names.iter().any(|n| ps.iter().any(|p| n.starts_with(p)))
        })
        .collect()
}

/// Loads a submodel of a single-file main checkpoint: the tensors under its key prefix, with
/// the prefix removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckpointPipelineLoader;

impl CheckpointPipelineLoader {
    fn view(req: &LoadRequest<'_>, populate: bool) -> Result<StateDict, LoadError> {
        let sub = req.submodel.ok_or_else(|| LoadError::SubmodelRequired {
            key: req.config.key().to_owned(),
            name: req.config.name().to_owned(),
        })?;
        if is_pickle(&req.path) {
            return Err(refuse_pickle(&req.path, req.pickle_gate));
        }
        let missing = || LoadError::SubmodelMissing {
            key: req.config.key().to_owned(),
            submodel: sub,
            location: req.path.clone(),
        };
        let prefixes = checkpoint_prefixes(sub);
        if prefixes.is_empty() {
            return Err(missing());
        }
        let sd = StateDict::build(
            std::slice::from_ref(&req.path),
            Select::Prefixes(prefixes),
            populate,
        )?;
        if sd.is_empty() {
            return Err(missing());
        }
        Ok(sd)
    }
}

impl ModelLoader for CheckpointPipelineLoader {
    fn name(&self) -> &'static str {
        "checkpoint-pipeline"
    }

    fn load(&self, req: &LoadRequest<'_>) -> Result<AnyModel, LoadError> {
        Self::view(req, true).map(AnyModel::StateDict)
    }

    fn estimate_bytes(&self, req: &LoadRequest<'_>) -> Result<u64, LoadError> {
        Self::view(req, false).map(|sd| sd.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_tags() {
        assert_eq!(
            variant_tag(Path::new("diffusion_pytorch_model.fp16.safetensors")),
            Some("fp16")
        );
        assert_eq!(
            variant_tag(Path::new("model-00001-of-00002.safetensors")),
            None
        );
        assert_eq!(variant_tag(Path::new("model.safetensors")), None);
    }

    #[test]
    fn variant_selection() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
            "config.json",
        ] {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        let pick = |v| {
            select_weights(d.path(), v)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pick(Some(ModelRepoVariant::Fp16)),
            ["diffusion_pytorch_model.fp16.safetensors"]
        );
        assert_eq!(pick(None), ["diffusion_pytorch_model.safetensors"]);
        assert_eq!(
            pick(Some(ModelRepoVariant::Fp32)),
            ["diffusion_pytorch_model.safetensors"]
        );
    }

    #[test]
    fn short_file_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.safetensors");
        std::fs::write(&p, b"abc").unwrap();
        let e = StateDict::open(&p).unwrap_err().to_string();
        assert!(e.contains("x.safetensors") && e.contains("shorter"), "{e}");
        std::fs::write(&p, b"\xff\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
        let e = StateDict::open(&p).unwrap_err().to_string();
        assert!(e.contains("not a valid safetensors file"), "{e}");
    }
}
