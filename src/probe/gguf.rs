//! Reads a GGUF header (versions 2 and 3): metadata key/values and tensor infos, no data.

use std::path::Path;

use super::{ProbeError, StateDict, TensorInfo, Tensors};

/// Refuse absurd counts before allocating for them.
const MAX_TENSORS: u64 = 1_000_000;
const MAX_KV: u64 = 1_000_000;
const MAX_DIMS: u32 = 8;
/// Longest metadata string kept (longer ones, and arrays, are skipped).
const MAX_KEPT_STRING: u64 = 64 << 10;
/// Bytes of metadata strings kept in all.
const MAX_KEPT_TOTAL: usize = 16 << 20;

/// (elements per block, bytes per block) of the ggml tensor types, from ggml's type traits.
#[allow(
    clippy::match_same_arms,
    reason = "one arm per ggml type reads like ggml's table"
)]
pub(crate) fn block_size(ggml_type: u32) -> Option<(u64, u64)> {
    Some(match ggml_type {
        0 => (1, 4),           // F32
        1 | 30 => (1, 2),      // F16, BF16
        2 => (32, 18),         // Q4_0
        3 => (32, 20),         // Q4_1
        6 => (32, 22),         // Q5_0
        7 => (32, 24),         // Q5_1
        8 => (32, 34),         // Q8_0
        9 => (32, 36),         // Q8_1
        10 => (256, 84),       // Q2_K
        11 | 21 => (256, 110), // Q3_K, IQ3_S
        12 => (256, 144),      // Q4_K
        13 => (256, 176),      // Q5_K
        14 => (256, 210),      // Q6_K
        15 => (256, 292),      // Q8_K
        16 => (256, 66),       // IQ2_XXS
        17 => (256, 74),       // IQ2_XS
        18 => (256, 98),       // IQ3_XXS
        19 => (256, 50),       // IQ1_S
        20 => (32, 18),        // IQ4_NL
        22 => (256, 82),       // IQ2_S
        23 => (256, 136),      // IQ4_XS
        24 => (1, 1),          // I8
        25 => (1, 2),          // I16
        26 => (1, 4),          // I32
        27 | 28 => (1, 8),     // I64, F64
        29 => (256, 56),       // IQ1_M
        34 => (256, 54),       // TQ1_0
        35 => (256, 66),       // TQ2_0
        _ => return None,
    })
}

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
    /// A string value: kept when short, skipped otherwise.
    fn string_value(&mut self) -> Result<Option<String>, String> {
        let n = self.u64()?;
        let b = self.take(n)?;
        Ok((n <= MAX_KEPT_STRING).then(|| String::from_utf8_lossy(b).into_owned()))
    }
    /// A value of GGUF type `t`; strings come back as text, everything else summarised.
    fn value(&mut self, t: u32, depth: u8) -> Result<Option<String>, String> {
        let fixed = match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => return self.string_value(),
            9 => {
                if depth > 2 {
                    return Err("nested arrays too deep".into());
                }
                let et = self.u32()?;
                let n = self.u64()?;
                let width = match et {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    _ => None,
                };
                if let Some(w) = width {
                    // Fixed-size elements: one bounds check, not one step per element.
                    let bytes = n
                        .checked_mul(w)
                        .ok_or_else(|| format!("array of {n} elements overflows"))?;
                    self.take(bytes)?;
                } else {
                    for _ in 0..n {
                        self.value(et, depth + 1)?;
                    }
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

/// Parses the GGUF header in `data` (the whole file, memory-mapped) and checks that every
/// tensor's data lies inside the file (the data region starts at the header's end, aligned
/// to `general.alignment`, 32 by default).
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
    let mut kept = 0usize;
    for _ in 0..n_kv {
        let key = r.string()?;
        let t = r.u32()?;
        if let Some(v) = r.value(t, 0)? {
            kept += key.len() + v.len();
            if kept <= MAX_KEPT_TOTAL {
                sd.metadata.insert(key, v);
            }
        }
    }
    let alignment = match sd.metadata.get("general.alignment") {
        Some(a) => a
            .parse::<u64>()
            .ok()
            .filter(|&a| a > 0 && a.is_power_of_two())
            .ok_or_else(|| format!("general.alignment {a} is not a power of two"))?,
        None => 32,
    };
    let mut spans = Vec::new();
    let mut tensors: Vec<(std::borrow::Cow<'static, str>, TensorInfo)> = Vec::new();
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
        let offset = r.u64()?;
        let size = match block_size(ggml_type) {
            Some((per_block, bytes)) => {
                let numel = shape
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d))
                    .ok_or_else(|| format!("tensor `{name}`: shape {shape:?} overflows"))?;
                if !numel.is_multiple_of(per_block) {
                    return Err(format!(
                        "tensor `{name}`: {numel} elements are not whole blocks of {per_block} for ggml type {ggml_type}"
                    ));
                }
                (numel / per_block)
                    .checked_mul(bytes)
                    .ok_or_else(|| format!("tensor `{name}`: shape {shape:?} overflows"))?
            }
            None => 0,
        };
        spans.push((offset, size, tensors.len()));
        let info = TensorInfo {
            shape: shape.into(),
            dtype: format!("ggml_type_{ggml_type}").into(),
        };
        tensors.push((name.into(), info));
    }
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    let file_len = data.len() as u64;
    for &(offset, size, i) in &spans {
        let name: &str = tensors[i].0.as_ref();
        if !offset.is_multiple_of(alignment) {
            return Err(format!(
                "tensor `{name}`: data offset {offset} is not a multiple of the alignment {alignment}"
            ));
        }
        let end = data_start
            .checked_add(offset)
            .and_then(|s| s.checked_add(size))
            .filter(|&e| e <= file_len);
        if end.is_none() {
            return Err(format!(
                "tensor `{name}`: data at offset {offset} ({size} bytes) runs past the end of the file ({file_len} bytes, data from byte {data_start})"
            ));
        }
    }
    sd.tensors = Tensors::from_entries(tensors);
    Ok(sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `scripts/fuzz`: a shape whose byte size overflows u64 panicked.
    #[test]
    fn overflowing_tensor_size_is_an_error() {
        let input = hex::decode("474755460300000001000000000000000300000000000000140000000000000067656e6572616c2e657263686974656374757265080000000400000000000000666c7578110000000000000067656e6572616c2e616c69676e6d656e7404000000200000000600000000000000746f6b656e73090000000800000002000000000000000100000000000000610100000000000000620d00000000000000696d675f696e2e77656967687402000000010000000000000061010000000000400000000000000002000000000000000800000000000000000000000000000000000000000000000000000000000000000000000000000000000000").unwrap();
        let e = parse(&input).unwrap_err();
        assert!(e.contains("img_in.weight"), "{e}");
    }
}
