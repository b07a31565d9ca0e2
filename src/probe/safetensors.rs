//! Reads a safetensors header (8-byte little-endian length, then JSON) and nothing else.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{ProbeError, StateDict, TensorInfo};

/// Headers larger than this are refused (the safetensors format itself caps at 100 MB).
pub const MAX_HEADER: u64 = 100_000_000;

fn bad(path: &Path, reason: impl Into<String>) -> ProbeError {
    ProbeError::Safetensors {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Parses the header of the safetensors file at `path` (`file_len` bytes long).
pub(crate) fn read_header(
    path: &Path,
    file: &mut File,
    file_len: u64,
) -> Result<StateDict, ProbeError> {
    if file_len < 8 {
        return Err(bad(
            path,
            format!(
                "truncated header: the file has {file_len} bytes, fewer than the 8-byte length prefix"
            ),
        ));
    }
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(ProbeError::io(path))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(bad(
            path,
            format!("header length {n} bytes exceeds the {MAX_HEADER}-byte limit"),
        ));
    }
    if n + 8 > file_len {
        return Err(bad(
            path,
            format!(
                "header length {n} bytes runs past the end of the file ({file_len} bytes in all)"
            ),
        ));
    }
    let mut buf = vec![0u8; n as usize];
    file.read_exact(&mut buf).map_err(ProbeError::io(path))?;
    parse_header_json(path, &buf)
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Entry {
    Tensor {
        dtype: String,
        shape: Vec<u64>,
        #[allow(dead_code, reason = "validated for shape, not used")]
        data_offsets: (u64, u64),
    },
    Metadata(BTreeMap<String, serde_json::Value>),
}

/// Parses header JSON into tensors and `__metadata__`.
pub(crate) fn parse_header_json(path: &Path, buf: &[u8]) -> Result<StateDict, ProbeError> {
    let raw: BTreeMap<String, Entry> = serde_json::from_slice(buf)
        .map_err(|e| bad(path, format!("header is not valid safetensors JSON: {e}")))?;
    let mut sd = StateDict::default();
    for (k, v) in raw {
        match v {
            Entry::Tensor { dtype, shape, .. } => {
                sd.tensors.insert(k, TensorInfo { shape, dtype });
            }
            Entry::Metadata(m) if k == "__metadata__" => {
                for (mk, mv) in m {
                    let s = match mv {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    sd.metadata.insert(mk, s);
                }
            }
            Entry::Metadata(_) => {
                return Err(bad(
                    path,
                    format!("header entry `{k}` lacks dtype/shape/data_offsets"),
                ));
            }
        }
    }
    Ok(sd)
}
