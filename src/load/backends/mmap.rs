//! The default backend: safetensors files — and torch.save zip checkpoints the pickle gate
//! passes — memory-mapped into host tensors, and the default loaders built on it.
//!
//! A torch checkpoint is never unpickled: its `data.pkl` is decoded by the non-executing
//! machine of [`crate::probe::pickle`] into tensor descriptors (dtype, shape, storage key,
//! offset), and each tensor is a byte view of its `data/<key>` member, which torch stores
//! uncompressed.
//!
//! Mapping is zero-copy: a tensor's bytes are a slice of the page cache. A load faults every
//! page in up front (`MAP_POPULATE`), so a loaded model is resident and later reads do not
//! stall on the disk.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use safetensors::{Dtype, SafeTensors};

use super::super::registry::{LoadRequest, ModelLoader, disk_size, submodel_dir};
use super::super::{AnyModel, FileSet, LoadError, PickleGate, RefusePickle};
use crate::probe::pickle::{Cursor, Machine, is_legacy_torch_save};
use crate::scan::{MAX_PKL_MEMBER, MAX_ZIP_DIRECTORY, MAX_ZIP_ENTRIES, zip_directory_claims};
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

/// One tensor of a file: its name and where its bytes lie in the mapping.
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// Tensors of one or more safetensors files or torch zip checkpoints (shards), memory-mapped.
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
    map_checked(path, populate, 8)
}

/// Maps `path`, refusing files shorter than `min` bytes (a safetensors header length).
fn map_checked(path: &Path, populate: bool, min: u64) -> Result<Mmap, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < min {
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

/// The tensors of a safetensors file.
fn safetensors_entries(path: &Path, map: &[u8]) -> Result<Vec<Entry>, LoadError> {
    let (header_len, meta) =
        SafeTensors::read_metadata(map).map_err(|e| LoadError::Safetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let base = 8 + header_len;
    Ok(meta
        .tensors()
        .into_iter()
        .map(|(name, info)| Entry {
            name,
            dtype: info.dtype,
            shape: info.shape.clone(),
            start: base + info.data_offsets.0,
            end: base + info.data_offsets.1,
        })
        .collect())
}

/// The safetensors dtype of a storage class the pickle machine named.
fn torch_dtype(s: &str) -> Option<Dtype> {
    Some(match s {
        "F32" => Dtype::F32,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "F64" => Dtype::F64,
        "I64" => Dtype::I64,
        "I32" => Dtype::I32,
        "I16" => Dtype::I16,
        "I8" => Dtype::I8,
        "U8" => Dtype::U8,
        "BOOL" => Dtype::BOOL,
        "C64" => Dtype::C64,
        "F8_E4M3" => Dtype::F8_E4M3,
        "F8_E5M2" => Dtype::F8_E5M2,
        _ => return None,
    })
}

/// Whether `stride` (elements) lays `shape` out row-major without gaps, as a byte view needs.
/// Strides of size-1 dimensions do not matter (torch ignores them too).
fn is_contiguous(shape: &[usize], stride: &[u64]) -> bool {
    if shape.len() != stride.len() {
        return false;
    }
    let mut expect: u64 = 1;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(d as u64);
    }
    true
}

type Zip<'a> = zip::ZipArchive<std::io::Cursor<&'a [u8]>>;

/// Where the bytes of a storage member lie in the file: `(start, size)`. Only a stored
/// (uncompressed, unencrypted) member inside the file can be mapped.
fn storage_member(
    zip: &mut Zip<'_>,
    member: &str,
    file_len: usize,
) -> Result<(usize, usize), String> {
    let Some(i) = zip.index_for_name(member) else {
        return Err(format!("storage `{member}` is missing from the archive"));
    };
    let f = zip
        .by_index_raw(i)
        .map_err(|e| format!("storage `{member}`: {e}"))?;
    if f.encrypted() {
        return Err(format!("storage `{member}` is encrypted"));
    }
    if f.compression() != zip::CompressionMethod::Stored {
        return Err(format!(
            "storage `{member}` is compressed ({}); torch.save stores storages uncompressed, and only those can be memory-mapped",
            f.compression()
        ));
    }
    let (start, size) = (f.data_start(), f.size());
    if f.compressed_size() != size {
        return Err(format!(
            "storage `{member}` is stored, yet its sizes disagree ({} stored, {size} uncompressed)",
            f.compressed_size()
        ));
    }
    match start.checked_add(size) {
        Some(end) if end <= file_len as u64 => Ok((start as usize, size as usize)),
        _ => Err(format!("storage `{member}` runs past the end of the file")),
    }
}

/// The tensors of a torch.save zip checkpoint, decoded from its `data.pkl` without running
/// it. Work and memory are bounded as in the scanner: the directory's claimed size, the
/// pickle member's bytes and the machine's push budget; nothing is allocated from a size the
/// file claims.
fn torch_zip_entries(path: &Path, map: &[u8]) -> Result<Vec<Entry>, LoadError> {
    let err = |reason: String| LoadError::TorchCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    if !map.starts_with(b"PK\x03\x04") {
        return Err(err(if is_legacy_torch_save(map) {
            "it is in torch's legacy layout (saved before torch 1.6 or with \
             `_use_new_zipfile_serialization=False`), whose storages cannot be mapped; re-save it \
             with a current torch.save or convert it to safetensors"
                .into()
        } else {
            "it is not a torch.save zip archive; convert it to safetensors".into()
        }));
    }
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (claimed, dir_size) =
        zip_directory_claims(&mut File::open(path).map_err(io)?).map_err(io)?;
    if claimed > MAX_ZIP_ENTRIES || dir_size > MAX_ZIP_DIRECTORY {
        return Err(err(format!(
            "its directory claims {claimed} entries in {dir_size} bytes, more than the \
             {MAX_ZIP_ENTRIES} entries / {MAX_ZIP_DIRECTORY} bytes read"
        )));
    }
    let mut zip = Zip::new(std::io::Cursor::new(map))
        .map_err(|e| err(format!("not a readable zip archive: {e}")))?;
    // torch writes `<archive name>/data.pkl` (the file stem, or `archive`), as the scanner
    // reads it.
    let data_pkl = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(|n| (i, n.to_owned())))
        .find(|(_, n)| n.ends_with("/data.pkl") && n.matches('/').count() == 1);
    let Some((pkl_index, pkl_name)) = data_pkl else {
        return Err(err(
            "the archive has no `<name>/data.pkl`, so it is not a torch.save checkpoint".into(),
        ));
    };
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    let mut machine = Machine::default();
    let root = {
        let member = zip
            .by_index(pkl_index)
            .map_err(|e| err(format!("{pkl_name}: {e}")))?;
        let mut cursor = Cursor::new(BufReader::new(member.take(MAX_PKL_MEMBER)));
        machine
            .run(&mut cursor)
            .map_err(|f| err(format!("{pkl_name}: unreadable pickle {f}")))?
    };
    let mut members: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut out = Vec::new();
    for (name, t) in machine.weights(root) {
        let dtype = torch_dtype(t.dtype).ok_or_else(|| {
            err(format!(
                "tensor `{name}` has a storage type ({}) this backend does not map",
                t.dtype
            ))
        })?;
        let key = t
            .key
            .as_deref()
            .ok_or_else(|| err(format!("tensor `{name}` names no storage key")))?;
        let (data_start, size) = if let Some(&v) = members.get(key) {
            v
        } else {
            let v =
                storage_member(&mut zip, &format!("{prefix}data/{key}"), map.len()).map_err(err)?;
            members.insert(key, v);
            v
        };
        let shape: Vec<usize> = t
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| err(format!("tensor `{name}` has a dimension too large")))?;
        if !t
            .stride
            .as_deref()
            .is_some_and(|s| is_contiguous(&shape, s))
        {
            return Err(err(format!(
                "tensor `{name}` is not laid out contiguously (stride {:?} for shape {shape:?}), \
                 so it is no byte view of its storage; convert the model to safetensors",
                t.stride
            )));
        }
        let item = dtype.bitsize() / 8;
        let range = t.offset.and_then(|o| {
            let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
            let s = usize::try_from(o).ok()?.checked_mul(item)?;
            Some((s, s.checked_add(numel.checked_mul(item)?)?))
        });
        let Some((s, e)) = range else {
            return Err(err(format!(
                "tensor `{name}` has no storage offset, or its offset and shape overflow"
            )));
        };
        if e > size {
            return Err(err(format!(
                "tensor `{name}` needs bytes {s}..{e} of storage `{prefix}data/{key}`, which holds {size} bytes"
            )));
        }
        out.push(Entry {
            name,
            dtype,
            shape,
            start: data_start + s,
            end: data_start + e,
        });
    }
    Ok(out)
}

impl StateDict {
    /// Maps one safetensors file and faults it in.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        Self::open_shards(&[path.to_path_buf()])
    }

    /// Maps several shards of one model; a tensor name in two shards is an error. Pickle
    /// checkpoints are refused; [`Self::open_gated`] lets a gate pass them.
    pub fn open_shards(paths: &[PathBuf]) -> Result<Self, LoadError> {
        Self::build(paths, Select::All, true, &RefusePickle)
    }

    /// Like [`Self::open_shards`], with pickle checkpoints (by extension) mapped when `gate`
    /// passes them: torch.save's zip layout, decoded without running it.
    pub fn open_gated(paths: &[PathBuf], gate: &dyn PickleGate) -> Result<Self, LoadError> {
        Self::build(paths, Select::All, true, gate)
    }

    fn build(
        paths: &[PathBuf],
        select: Select<'_>,
        populate: bool,
        gate: &dyn PickleGate,
    ) -> Result<Self, LoadError> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut tensors: BTreeMap<String, Slot> = BTreeMap::new();
        let mut bytes = 0u64;
        for (i, path) in paths.iter().enumerate() {
            // Populating only makes sense when every tensor is kept; views fault their own
            // ranges in below.
            let populate = populate && matches!(select, Select::All);
            let (map, entries) = if is_pickle(path) {
                gate.check(path)
                    .map_err(|reason| LoadError::PickleRefused {
                        path: path.clone(),
                        reason,
                    })?;
                let map = map_checked(path, populate, 0)?;
                let entries = torch_zip_entries(path, &map)?;
                (map, entries)
            } else {
                let map = map_file(path, populate)?;
                let entries = safetensors_entries(path, &map)?;
                (map, entries)
            };
            for Entry {
                name,
                dtype,
                shape,
                start,
                end,
            } in entries
            {
                let name = match select {
                    Select::All => name,
                    Select::Prefixes(ps) => match ps.iter().find_map(|p| name.strip_prefix(p)) {
                        Some(rest) => rest.to_owned(),
                        None => continue,
                    },
                };
                if let Some(prev) = tensors.get(&name) {
                    return Err(LoadError::DuplicateTensor {
                        name,
                        first: paths[prev.shard].clone(),
                        second: path.clone(),
                    });
                }
                bytes += (end - start) as u64;
                tensors.insert(
                    name,
                    Slot {
                        shard: i,
                        dtype,
                        shape,
                        start,
                        end,
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
    select_files(dir, variant, &["safetensors"])
}

/// [`select_weights`] for files with any of `exts`.
fn select_files(
    dir: &Path,
    variant: Option<ModelRepoVariant>,
    exts: &[&str],
) -> Result<Vec<PathBuf>, LoadError> {
    for recursive in [false, true] {
        let mut files = Vec::new();
        list_files(dir, recursive, &mut files)?;
        let mut st: Vec<PathBuf> = files.into_iter().filter(|p| has_ext(p, exts)).collect();
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

/// Loads a folder's weights and names empty ones. A folder without safetensors loads its
/// pickle checkpoints (`pytorch_model.bin`, `diffusion_pytorch_model.fp16.bin` …, chosen by
/// the same variant rule) through the gate.
fn load_folder(dir: &Path, req: &LoadRequest<'_>) -> Result<StateDict, LoadError> {
    load_folder_with(dir, req.repo_variant, req.pickle_gate)
}

fn load_folder_with(
    dir: &Path,
    variant: Option<ModelRepoVariant>,
    gate: &dyn PickleGate,
) -> Result<StateDict, LoadError> {
    let mut files = select_weights(dir, variant)?;
    if files.is_empty() {
        files = select_files(dir, variant, PICKLE_EXTENSIONS)?;
    }
    if files.is_empty() {
        return Err(LoadError::NoWeights {
            path: dir.to_path_buf(),
            hint: String::new(),
        });
    }
    StateDict::open_gated(&files, gate)
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
    if has_ext(path, &["gguf"]) {
        return super::gguf::GgufModel::open(path).map(AnyModel::Gguf);
    }
    StateDict::open_gated(&[path.to_path_buf()], gate).map(AnyModel::StateDict)
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
        } else {
            StateDict::open_gated(std::slice::from_ref(&req.path), req.pickle_gate)?
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
/// cannot be read as safetensors or a torch zip checkpoint (whose pickle is only decoded,
/// never run, so no gate is asked).
pub fn checkpoint_submodels(path: &Path) -> Vec<SubModelType> {
    let Ok(map) = map_checked(path, false, 0) else {
        return Vec::new();
    };
    let entries = if is_pickle(path) {
        torch_zip_entries(path, &map)
    } else {
        safetensors_entries(path, &map)
    };
    let Ok(entries) = entries else {
        return Vec::new();
    };
    let names: Vec<String> = entries.into_iter().map(|e| e.name).collect();
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
            req.pickle_gate,
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
    fn only_row_major_strides_are_byte_views() {
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(is_contiguous(&[], &[]));
        // A size-1 dimension's stride does not matter, as in torch.
        assert!(is_contiguous(&[1, 4], &[99, 1]));
        // A transpose and a slice with a gap are not.
        assert!(!is_contiguous(&[3, 2], &[1, 3]));
        assert!(!is_contiguous(&[2, 2], &[4, 1]));
        assert!(!is_contiguous(&[2, 3], &[3]));
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
