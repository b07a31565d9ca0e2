//! GGUF files (versions 2 and 3) memory-mapped as raw blocks: each tensor's ggml type, shape
//! (torch order) and bytes exactly as stored — quantized blocks are not dequantized; that is the
//! consumer's job (as InvokeAI's `GGMLTensor` defers it to use).
//!
//! The header is read with the same bounds as the probe's (counts, dimensions, metadata
//! sizes), and every tensor's bytes must lie inside the file.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};

use super::super::registry::{LoadRequest, ModelLoader, disk_size};
use super::super::{AnyModel, LoadError};

const MAX_TENSORS: u64 = 1_000_000;
const MAX_KV: u64 = 1_000_000;
const MAX_DIMS: u32 = 8;
const MAX_ARRAY: u64 = 100_000_000;
const MAX_STRING: u64 = 64 << 20;

/// One tensor of a [`GgufModel`], borrowed from the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgufTensor<'a> {
    /// Name.
    pub name: &'a str,
    /// The ggml type (0 F32, 1 F16, 8 Q8_0, 12 Q4_K …).
    pub ggml_type: u32,
    /// Shape in torch order (GGUF stores it reversed).
    pub shape: &'a [u64],
    /// The raw blocks.
    pub data: &'a [u8],
}

struct Slot {
    name: String,
    ggml_type: u32,
    shape: Vec<u64>,
    start: usize,
    end: usize,
}

/// The tensors of one GGUF file, memory-mapped.
pub struct GgufModel {
    path: PathBuf,
    map: Mmap,
    tensors: Vec<Slot>,
    bytes: u64,
}

impl fmt::Debug for GgufModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufModel")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "length overflows".to_owned())?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| format!("header ends early at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> Result<&'a [u8], String> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(format!("a string of {n} bytes"));
        }
        self.take(n)
    }
    /// Skips a metadata value; returns it when it is an unsigned integer (for the alignment).
    fn value(&mut self, t: u32, depth: u8) -> Result<Option<u64>, String> {
        let fixed = |t: u32| match t {
            0 | 1 | 7 => Some(1u64),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match t {
            4 => Ok(Some(u64::from(self.u32()?))),
            10 => Ok(Some(self.u64()?)),
            8 => self.string().map(|_| None),
            9 if depth < 4 => {
                let et = self.u32()?;
                let n = self.u64()?;
                if n > MAX_ARRAY {
                    return Err(format!("an array of {n} values"));
                }
                if let Some(size) = fixed(et) {
                    self.take(n.checked_mul(size).ok_or("array size overflows")?)?;
                } else {
                    for _ in 0..n {
                        self.value(et, depth + 1)?;
                    }
                }
                Ok(None)
            }
            t => match fixed(t) {
                Some(size) => self.take(size).map(|_| None),
                None => Err(format!("unknown metadata value type {t}")),
            },
        }
    }
}

fn parse(data: &[u8]) -> Result<(Vec<Slot>, u64), String> {
    let mut r = Reader { data, pos: 0 };
    if r.take(4)? != b"GGUF" {
        return Err("no GGUF magic".into());
    }
    let version = r.u32()?;
    if !matches!(version, 2 | 3) {
        return Err(format!("GGUF version {version} (2 and 3 are read)"));
    }
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    if n_tensors > MAX_TENSORS || n_kv > MAX_KV {
        return Err(format!("{n_tensors} tensors and {n_kv} metadata entries"));
    }
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key = r.string()?;
        let t = r.u32()?;
        let v = r.value(t, 0)?;
        if key == b"general.alignment" {
            alignment = v
                .filter(|a| a.is_power_of_two())
                .ok_or("general.alignment is not a power of two")?;
        }
    }
    let mut raw = Vec::with_capacity(usize::try_from(n_tensors.min(4096)).unwrap_or(0));
    for _ in 0..n_tensors {
        let name = String::from_utf8_lossy(r.string()?).into_owned();
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return Err(format!("tensor `{name}` has {n_dims} dimensions"));
        }
        let mut dims = (0..n_dims)
            .map(|_| r.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let ggml_type = r.u32()?;
        let offset = r.u64()?;
        let (block_elems, block_bytes) = crate::probe::gguf::block_size(ggml_type)
            .ok_or_else(|| format!("tensor `{name}` has unknown ggml type {ggml_type}"))?;
        let numel = dims
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(*d))
            .ok_or_else(|| format!("tensor `{name}`: element count overflows"))?;
        if !numel.is_multiple_of(block_elems) {
            return Err(format!(
                "tensor `{name}`: {numel} elements are not whole blocks of {block_elems}"
            ));
        }
        let size = (numel / block_elems)
            .checked_mul(block_bytes)
            .ok_or_else(|| format!("tensor `{name}`: size overflows"))?;
        dims.reverse();
        raw.push((name, ggml_type, dims, offset, size));
    }
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    let mut slots = Vec::with_capacity(raw.len());
    let mut total = 0u64;
    for (name, ggml_type, shape, offset, size) in raw {
        let start = data_start
            .checked_add(offset)
            .filter(|s| s.checked_add(size).is_some_and(|e| e <= data.len() as u64))
            .ok_or_else(|| {
                format!(
                    "tensor `{name}`: {size} bytes at offset {offset} run past the end of the file ({} bytes)",
                    data.len()
                )
            })?;
        total += size;
        slots.push(Slot {
            name,
            ggml_type,
            shape,
            start: start as usize,
            end: (start + size) as usize,
        });
    }
    slots.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((slots, total))
}

impl GgufModel {
    /// Maps a GGUF file, checks its header against its size and faults the data in.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let io = |source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: as for safetensors (see `mmap::map_file`): installed model files are
        // replaced by rename, never rewritten in place.
        let map = unsafe { MmapOptions::new().populate().map(&file) }.map_err(io)?;
        let (tensors, bytes) = parse(&map).map_err(|reason| LoadError::Gguf {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            tensors,
            bytes,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
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

    fn view<'a>(&'a self, s: &'a Slot) -> GgufTensor<'a> {
        GgufTensor {
            name: &s.name,
            ggml_type: s.ggml_type,
            shape: &s.shape,
            data: &self.map[s.start..s.end],
        }
    }

    /// A tensor by name.
    pub fn get(&self, name: &str) -> Option<GgufTensor<'_>> {
        let i = self
            .tensors
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()?;
        Some(self.view(&self.tensors[i]))
    }

    /// Every tensor, by name.
    pub fn iter(&self) -> impl Iterator<Item = GgufTensor<'_>> {
        self.tensors.iter().map(|s| self.view(s))
    }
}

/// Loads `*_gguf_quantized` models: the file's tensors as raw blocks. A main model's GGUF file
/// is its transformer (FLUX, Z-Image …), so main models answer `transformer` (and `unet`).
#[derive(Debug, Default, Clone, Copy)]
pub struct GgufLoader;

impl ModelLoader for GgufLoader {
    fn name(&self) -> &'static str {
        "gguf"
    }

    fn load(&self, req: &LoadRequest<'_>) -> Result<AnyModel, LoadError> {
        super::mmap::check_whole_file_submodel(req)?;
        GgufModel::open(&req.path).map(AnyModel::Gguf)
    }

    fn estimate_bytes(&self, req: &LoadRequest<'_>) -> Result<u64, LoadError> {
        super::mmap::check_whole_file_submodel(req)?;
        disk_size(&req.path)
    }
}
