//! Reads a safetensors header (8-byte little-endian length, then JSON) and nothing else.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{ProbeError, Shape, StateDict, TensorInfo, Tensors};

/// Headers larger than this are refused (the safetensors format itself caps at 100 MB).
pub const MAX_HEADER: u64 = 100_000_000;

fn bad(path: &Path, reason: impl Into<String>) -> ProbeError {
    ProbeError::Safetensors {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads the header bytes of the safetensors file at `path` (`file_len` bytes long), of which
/// `head` — the first bytes, up to 16 — were already read from `file`.
pub(crate) fn read_header(
    path: &Path,
    file: &mut File,
    head: &[u8],
    file_len: u64,
) -> Result<Vec<u8>, ProbeError> {
    let len: [u8; 8] = match head.get(..8).map(<[u8; 8]>::try_from) {
        Some(Ok(len)) if file_len >= 8 => len,
        _ => {
            return Err(bad(
                path,
                format!(
                    "truncated header: the file has {file_len} bytes, fewer than the 8-byte length prefix"
                ),
            ));
        }
    };
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
    // Below MAX_HEADER, so it fits a usize.
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; n];
    let have = &head[8..];
    let k = have.len().min(n);
    buf[..k].copy_from_slice(&have[..k]);
    file.read_exact(&mut buf[k..])
        .map_err(ProbeError::io(path))?;
    Ok(buf)
}

/// A tensor name, borrowed from the header when it has no escapes.
#[derive(serde::Deserialize)]
struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

/// One tensor entry; unknown fields are ignored, missing ones are errors.
#[derive(serde::Deserialize)]
struct TensorEntry<'a> {
    #[serde(borrow)]
    dtype: Cow<'a, str>,
    shape: Shape,
    #[allow(dead_code, reason = "required for a well-formed entry, not used")]
    data_offsets: (u64, u64),
}

/// Visits the header object entry by entry, so tensors deserialise straight into
/// [`TensorInfo`] (an untagged enum would buffer every entry first — 3× slower).
struct HeaderVisitor;

impl<'de> serde::de::Visitor<'de> for HeaderVisitor {
    type Value = StateDict<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object of tensor entries")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<StateDict<'de>, A::Error> {
        use serde::de::Error;
        let mut metadata = BTreeMap::new();
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Name(key)) = map.next_key()? {
            if key == "__metadata__" {
                let m: BTreeMap<String, serde_json::Value> = map.next_value()?;
                for (mk, mv) in m {
                    let s = match mv {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    metadata.insert(mk, s);
                }
            } else {
                let e: TensorEntry = map
                    .next_value()
                    .map_err(|e| A::Error::custom(format!("entry `{key}`: {e}")))?;
                let info = TensorInfo {
                    shape: e.shape,
                    dtype: intern_dtype(&e.dtype),
                };
                entries.push((key, info));
            }
        }
        Ok(StateDict {
            tensors: Tensors::from_entries(entries),
            metadata,
        })
    }
}

/// The dtype as a shared static string for the safetensors dtypes (no allocation per tensor).
fn intern_dtype(d: &str) -> Cow<'static, str> {
    const KNOWN: &[&str] = &[
        "F16", "BF16", "F32", "F64", "I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64", "BOOL",
        "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64",
    ];
    KNOWN
        .iter()
        .find(|k| **k == d)
        .map_or_else(|| d.to_owned().into(), |k| (*k).into())
}

/// Parses header JSON into tensors (names borrowed from `buf`) and `__metadata__`.
pub(crate) fn parse_header_json<'a>(
    path: &Path,
    buf: &'a [u8],
) -> Result<StateDict<'a>, ProbeError> {
    // One UTF-8 check of the whole header is much cheaper than serde_json's check of every
    // string; invalid UTF-8 takes the byte path so the error names the same line and column.
    let parsed = match std::str::from_utf8(buf) {
        Ok(text) => parse_with(&mut serde_json::Deserializer::from_str(text)),
        Err(_) => parse_with(&mut serde_json::Deserializer::from_slice(buf)),
    };
    parsed.map_err(|e| bad(path, format!("header is not valid safetensors JSON: {e}")))
}

fn parse_with<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
) -> Result<StateDict<'de>, serde_json::Error> {
    let sd = serde::Deserializer::deserialize_map(&mut *de, HeaderVisitor)?;
    de.end()?;
    Ok(sd)
}
