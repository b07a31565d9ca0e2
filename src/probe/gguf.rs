//! Reads a GGUF header (versions 2 and 3): metadata key/values and tensor infos, no data.

use std::path::Path;

use super::{ProbeError, StateDict, TensorInfo, Tensors};

/// Refuse absurd counts before allocating for them.
const MAX_TENSORS: u64 = 1_000_000;
const MAX_KV: u64 = 1_000_000;
const MAX_DIMS: u32 = 8;

fn bad(path: &Path, reason: impl Into<String>) -> ProbeError {
    ProbeError::Gguf {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

struct R<'a> {
    d: &'a [u8],
    pos: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.d.len())
            .ok_or_else(|| {
                format!(
                    "truncated header at byte {} (needs {n} more bytes)",
                    self.pos
                )
            })?;
        let s = &self.d[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u64()?;
        let b = self.take(n)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    /// A value of GGUF type `t`; strings come back as text, everything else summarised.
    fn value(&mut self, t: u32, depth: u8) -> Result<Option<String>, String> {
        let fixed = match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => return self.string().map(Some),
            9 => {
                if depth > 2 {
                    return Err("nested arrays too deep".into());
                }
                let et = self.u32()?;
                let n = self.u64()?;
                for _ in 0..n {
                    self.value(et, depth + 1)?;
                }
                return Ok(None);
            }
            other => return Err(format!("unknown metadata value type {other}")),
        };
        let b = self.take(fixed)?;
        Ok(match (t, b.len()) {
            (4, 4) => Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]).to_string()),
            _ => None,
        })
    }
}

/// Parses the GGUF header in `data` (the whole file, memory-mapped).
pub(crate) fn read_header(path: &Path, data: &[u8]) -> Result<StateDict<'static>, ProbeError> {
    parse(data).map_err(|r| bad(path, r))
}

fn parse(data: &[u8]) -> Result<StateDict<'static>, String> {
    let mut r = R { d: data, pos: 0 };
    if r.take(4)? != b"GGUF" {
        return Err("missing GGUF magic".into());
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "unsupported GGUF version {version} (2 and 3 are read)"
        ));
    }
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    if n_tensors > MAX_TENSORS || n_kv > MAX_KV {
        return Err(format!(
            "implausible counts: {n_tensors} tensors, {n_kv} metadata entries"
        ));
    }
    let mut sd = StateDict::default();
    for _ in 0..n_kv {
        let key = r.string()?;
        let t = r.u32()?;
        if let Some(v) = r.value(t, 0)? {
            sd.metadata.insert(key, v);
        }
    }
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return Err(format!("tensor `{name}` has {n_dims} dimensions"));
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            shape.push(r.u64()?);
        }
        // GGUF lists the innermost dimension first; torch order is the reverse.
        shape.reverse();
        let ggml_type = r.u32()?;
        let _offset = r.u64()?;
        let info = TensorInfo {
            shape: shape.into(),
            dtype: format!("ggml_type_{ggml_type}").into(),
        };
        tensors.push((name.into(), info));
    }
    sd.tensors = Tensors::from_entries(tensors);
    Ok(sd)
}
