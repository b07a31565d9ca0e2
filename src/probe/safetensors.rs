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
    data_offsets: (u64, u64),
}

/// Bits per element of the safetensors dtypes.
fn dtype_bits(d: &str) -> Option<u64> {
    Some(match d {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 8,
        "F16" | "BF16" | "I16" | "U16" => 16,
        "F32" | "I32" | "U32" => 32,
        "F64" | "I64" | "U64" | "C64" => 64,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        _ => return None,
    })
}

/// Visits the header object entry by entry, so tensors deserialise straight into
/// [`TensorInfo`] (an untagged enum would buffer every entry first — 3× slower). With
/// `data_len`, every entry's byte range is checked against the data region as the
/// `safetensors` library does: ranges sorted, contiguous from 0 to the end of the file, each
/// the size its shape and dtype need. The first lie found goes to `invalid`.
struct HeaderVisitor<'v> {
    data_len: Option<u64>,
    invalid: &'v mut Option<String>,
}

/// Checks the byte ranges `(start, end, expected bytes, entry index)` against a data region
/// of `data_len` bytes; `name` gives an entry's tensor name.
fn check_ranges<'n>(
    spans: &mut [(u64, u64, Option<u64>, usize)],
    data_len: u64,
    name: impl Fn(usize) -> &'n str,
) -> Result<(), String> {
    spans.sort_unstable();
    let mut at = 0u64;
    let mut prev: Option<usize> = None;
    for &(start, end, expected, i) in spans.iter() {
        if end < start {
            return Err(format!(
                "tensor `{}`: data_offsets [{start}, {end}] end before they start",
                name(i)
            ));
        }
        if end > data_len {
            return Err(format!(
                "tensor `{}`: data_offsets [{start}, {end}] run past the end of the data ({data_len} bytes after the header)",
                name(i)
            ));
        }
        if start != at {
            return Err(match prev {
                Some(p) if start < at => format!(
                    "tensor `{}`: data_offsets [{start}, {end}] overlap tensor `{}` (which ends at {at})",
                    name(i),
                    name(p)
                ),
                Some(p) => format!(
                    "tensor `{}`: data_offsets [{start}, {end}] leave a gap after tensor `{}` (which ends at {at})",
                    name(i),
                    name(p)
                ),
                None => format!(
                    "tensor `{}`: data_offsets [{start}, {end}] leave a gap at the start of the data",
                    name(i)
                ),
            });
        }
        if let Some(n) = expected
            && n != end - start
        {
            return Err(format!(
                "tensor `{}`: its shape and dtype need {n} bytes but data_offsets [{start}, {end}] hold {}",
                name(i),
                end - start
            ));
        }
        at = end;
        prev = Some(i);
    }
    if at != data_len {
        return Err(format!(
            "the tensors cover {at} bytes but the file holds {data_len} bytes of data after the header"
        ));
    }
    Ok(())
}

/// Bytes a tensor of `shape` and `dtype` needs, when the dtype is known; `Err` when the
/// product overflows or is not a whole number of bytes.
fn needed_bytes(shape: &[u64], dtype: &str) -> Result<Option<u64>, String> {
    let Some(bits) = dtype_bits(dtype) else {
        return Ok(None);
    };
    let total = shape
        .iter()
        .try_fold(bits, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} of {dtype} overflows"))?;
    if !total.is_multiple_of(8) {
        return Err(format!(
            "shape {shape:?} of {dtype} is not a whole number of bytes"
        ));
    }
    Ok(Some(total / 8))
}

impl<'de> serde::de::Visitor<'de> for HeaderVisitor<'_> {
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
        let mut spans = Vec::new();
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
                if self.data_len.is_some() && self.invalid.is_none() {
                    match needed_bytes(&e.shape, &e.dtype) {
                        Ok(n) => spans.push((e.data_offsets.0, e.data_offsets.1, n, entries.len())),
                        Err(reason) => *self.invalid = Some(format!("tensor `{key}`: {reason}")),
                    }
                }
                let info = TensorInfo {
                    shape: e.shape,
                    dtype: intern_dtype(&e.dtype),
                };
                entries.push((key, info));
            }
        }
        if let Some(data_len) = self.data_len
            && self.invalid.is_none()
            && let Err(reason) = check_ranges(&mut spans, data_len, |i| entries[i].0.as_ref())
        {
            *self.invalid = Some(reason);
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

/// Parses header JSON into tensors (names borrowed from `buf`) and `__metadata__`, and checks
/// every tensor's byte range against the file: `file_len` is the whole file's size (the
/// header is `buf.len()` bytes after the 8-byte prefix). A header that lies about the data —
/// ranges past the end, overlapping, gaps, sizes its shapes disagree with — is an error
/// naming the tensor.
pub(crate) fn parse_header_json<'a>(
    path: &Path,
    buf: &'a [u8],
    file_len: u64,
) -> Result<StateDict<'a>, ProbeError> {
    let data_len = file_len.saturating_sub(8 + buf.len() as u64);
    let mut invalid = None;
    let visitor = HeaderVisitor {
        data_len: Some(data_len),
        invalid: &mut invalid,
    };
    // One UTF-8 check of the whole header is much cheaper than serde_json's check of every
    // string; invalid UTF-8 takes the byte path so the error names the same line and column.
    let parsed = match std::str::from_utf8(buf) {
        Ok(text) => parse_with(&mut serde_json::Deserializer::from_str(text), visitor),
        Err(_) => parse_with(&mut serde_json::Deserializer::from_slice(buf), visitor),
    };
    let sd = parsed.map_err(|e| bad(path, format!("header is not valid safetensors JSON: {e}")))?;
    match invalid {
        Some(reason) => Err(bad(path, reason)),
        None => Ok(sd),
    }
}

fn parse_with<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    visitor: HeaderVisitor<'_>,
) -> Result<StateDict<'de>, serde_json::Error> {
    let sd = serde::Deserializer::deserialize_map(&mut *de, visitor)?;
    de.end()?;
    Ok(sd)
}

/// Checks every `.safetensors` / `.sft` / `.gguf` file at `path` (a file, or a folder walked
/// recursively, hidden entries skipped) against its own size: the header must parse and every
/// tensor's bytes must lie inside the file where the header says. The installer runs this on
/// staged files before anything is promoted or registered, so a truncated or lying file fails
/// its install.
pub(crate) fn verify_declared_sizes(path: &Path) -> Result<(), ProbeError> {
    let meta = std::fs::metadata(path).map_err(ProbeError::io(path))?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(ProbeError::io(path))?
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            // Symlinked folders are not followed (no cycles).
            let is_link_dir = p.is_symlink() && p.is_dir();
            if !is_link_dir {
                verify_declared_sizes(&p)?;
            }
        }
        return Ok(());
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "safetensors" | "sft" => {
            let mut file = File::open(path).map_err(ProbeError::io(path))?;
            let len = meta.len();
            let mut head = [0u8; 8];
            let mut n = 0;
            while n < head.len() {
                match file.read(&mut head[n..]).map_err(ProbeError::io(path))? {
                    0 => break,
                    k => n += k,
                }
            }
            let buf = read_header(path, &mut file, &head[..n], len)?;
            parse_header_json(path, &buf, len).map(|_| ())
        }
        "gguf" => {
            let file = File::open(path).map_err(ProbeError::io(path))?;
            // SAFETY: read-only map of a staged file nothing else writes.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(ProbeError::io(path))?;
            super::gguf::read_header(path, &map).map(|_| ())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(entries: &str, data: u64) -> Result<usize, String> {
        let buf = format!("{{{entries}}}");
        let len = 8 + buf.len() as u64 + data;
        parse_header_json(Path::new("m.safetensors"), buf.as_bytes(), len)
            .map(|sd| sd.tensors.len())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn byte_ranges_are_checked_like_the_safetensors_library() {
        // Listed out of order but contiguous, a sub-byte dtype, an empty tensor: fine.
        let ok = r#""b":{"dtype":"F4","shape":[4],"data_offsets":[12,14]},"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"e":{"dtype":"F32","shape":[0],"data_offsets":[14,14]}"#;
        assert_eq!(header(ok, 14), Ok(3));
        let e = header(ok, 20).unwrap_err();
        assert!(
            e.contains("m.safetensors") && e.contains("cover 14 bytes"),
            "{e}"
        );
        let e = header(r#""a":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}"#, 8).unwrap_err();
        assert!(e.contains("gap at the start") && e.contains("`a`"), "{e}");
        let e = header(
            r#""a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}"#,
            10,
        )
        .unwrap_err();
        assert!(e.contains("gap after tensor `a`"), "{e}");
        let e = header(r#""a":{"dtype":"U8","shape":[4],"data_offsets":[4,0]}"#, 4).unwrap_err();
        assert!(e.contains("end before they start"), "{e}");
        let e = header(
            r#""a":{"dtype":"F16","shape":[4294967296,4294967296],"data_offsets":[0,4]}"#,
            4,
        )
        .unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        let e = header(r#""a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}"#, 2).unwrap_err();
        assert!(e.contains("whole number of bytes"), "{e}");
        // Unknown dtypes: ranges still checked, sizes not.
        assert_eq!(
            header(r#""a":{"dtype":"X9","shape":[3],"data_offsets":[0,5]}"#, 5),
            Ok(1)
        );
    }
}
