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

/// One tensor entry; unknown fields are ignored, missing ones are errors.
#[derive(serde::Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<u64>,
    #[allow(dead_code, reason = "required for a well-formed entry, not used")]
    data_offsets: (u64, u64),
}

/// Visits the header object entry by entry, so tensors deserialise straight into
/// [`TensorInfo`] (an untagged enum would buffer every entry first — 3× slower).
struct HeaderVisitor;

impl<'de> serde::de::Visitor<'de> for HeaderVisitor {
    type Value = StateDict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object of tensor entries")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StateDict, A::Error> {
        use serde::de::Error;
        let mut sd = StateDict::default();
        while let Some(key) = map.next_key::<String>()? {
            if key == "__metadata__" {
                let m: BTreeMap<String, serde_json::Value> = map.next_value()?;
                for (mk, mv) in m {
                    let s = match mv {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    sd.metadata.insert(mk, s);
                }
            } else {
                let e: TensorEntry = map
                    .next_value()
                    .map_err(|e| A::Error::custom(format!("entry `{key}`: {e}")))?;
                sd.tensors.insert(
                    key,
                    TensorInfo {
                        shape: e.shape,
                        dtype: e.dtype,
                    },
                );
            }
        }
        Ok(sd)
    }
}

/// Parses header JSON into tensors and `__metadata__`.
pub(crate) fn parse_header_json(path: &Path, buf: &[u8]) -> Result<StateDict, ProbeError> {
    let mut de = serde_json::Deserializer::from_slice(buf);
    let sd = serde::Deserializer::deserialize_map(&mut de, HeaderVisitor)
        .and_then(|sd| de.end().map(|()| sd))
        .map_err(|e| bad(path, format!("header is not valid safetensors JSON: {e}")))?;
    Ok(sd)
}
