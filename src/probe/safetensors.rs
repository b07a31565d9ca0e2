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
    let have = &head[8..];
    let k = have.len().min(n);
    // Room for exactly the header (which the file was just checked to hold), filled by the
    // reads without zeroing it first.
    let mut buf = Vec::with_capacity(n);
    buf.extend_from_slice(&have[..k]);
    file.take((n - k) as u64)
        .read_to_end(&mut buf)
        .map_err(ProbeError::io(path))?;
    if buf.len() < n {
        return Err(ProbeError::io(path)(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "failed to fill whole buffer",
        )));
    }
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

/// What both header parsers build, call by call in file order: the tensors, their byte
/// ranges, the metadata, and the first lie about the data region found. The hand-written
/// [`scan`] and the serde [`HeaderVisitor`] feed it the same calls for the same header, so
/// they cannot disagree on anything but syntax — and the scanner gives up on any syntax it
/// does not know.
struct Builder<'a> {
    data_len: u64,
    entries: Vec<(Cow<'a, str>, TensorInfo)>,
    spans: Vec<(u64, u64, Option<u64>, usize)>,
    metadata: BTreeMap<String, String>,
    invalid: Option<String>,
}

impl<'a> Builder<'a> {
    /// `hint`: tensors to make room for, from the bytes actually read (never from a count the
    /// header claims).
    fn new(data_len: u64, hint: usize) -> Self {
        Self {
            data_len,
            entries: Vec::with_capacity(hint),
            spans: Vec::with_capacity(hint),
            metadata: BTreeMap::new(),
            invalid: None,
        }
    }

    fn tensor(&mut self, name: Cow<'a, str>, dtype: &str, shape: Shape, offsets: (u64, u64)) {
        if self.invalid.is_none() {
            match needed_bytes(&shape, dtype) {
                Ok(n) => self
                    .spans
                    .push((offsets.0, offsets.1, n, self.entries.len())),
                Err(reason) => self.invalid = Some(format!("tensor `{name}`: {reason}")),
            }
        }
        let info = TensorInfo {
            shape,
            dtype: intern_dtype(dtype),
        };
        self.entries.push((name, info));
    }

    /// Checks the ranges; `Err` names the first lie.
    fn finish(mut self) -> Result<StateDict<'a>, String> {
        if let Some(reason) = self.invalid {
            return Err(reason);
        }
        let entries = &self.entries;
        check_ranges(&mut self.spans, self.data_len, |i| entries[i].0.as_ref())?;
        Ok(StateDict {
            tensors: Tensors::from_entries(self.entries),
            metadata: self.metadata,
        })
    }
}

/// Room for this many tensors in a header of `len` bytes: an entry takes 100 bytes or more
/// as writers lay them out.
fn capacity_hint(len: usize) -> usize {
    len / 100
}

/// Visits the header object entry by entry, so tensors deserialise straight into the
/// [`Builder`] (an untagged enum would buffer every entry first — 3× slower). This is the
/// validating parser: the fallback for every header [`scan`] gives up on, and the one whose
/// errors users see.
struct HeaderVisitor<'a> {
    builder: Builder<'a>,
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

impl<'de> serde::de::Visitor<'de> for HeaderVisitor<'de> {
    type Value = Builder<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object of tensor entries")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Builder<'de>, A::Error> {
        use serde::de::Error;
        let mut b = self.builder;
        while let Some(Name(key)) = map.next_key()? {
            if key == "__metadata__" {
                let m: BTreeMap<String, serde_json::Value> = map.next_value()?;
                for (mk, mv) in m {
                    let s = match mv {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    b.metadata.insert(mk, s);
                }
            } else {
                let e: TensorEntry = map
                    .next_value()
                    .map_err(|e| A::Error::custom(format!("entry `{key}`: {e}")))?;
                b.tensor(key, &e.dtype, e.shape, e.data_offsets);
            }
        }
        Ok(b)
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
///
/// The hand-written [`scan`] reads the layout writers emit; anything else (unknown fields,
/// non-string metadata, numbers with a fraction, bad syntax) goes to the serde parser, which
/// decides and words the error.
pub(crate) fn parse_header_json<'a>(
    path: &Path,
    buf: &'a [u8],
    file_len: u64,
) -> Result<StateDict<'a>, ProbeError> {
    let data_len = file_len.saturating_sub(8 + buf.len() as u64);
    let text = std::str::from_utf8(buf).ok();
    let built = match text.and_then(|t| scan(t, data_len)) {
        Some(b) => b,
        None => validating_parse(buf, text, data_len)
            .map_err(|e| bad(path, format!("header is not valid safetensors JSON: {e}")))?,
    };
    built.finish().map_err(|reason| bad(path, reason))
}

/// The serde parser over the header: `text` is `buf` when it is UTF-8.
fn validating_parse<'a>(
    buf: &'a [u8],
    text: Option<&'a str>,
    data_len: u64,
) -> Result<Builder<'a>, serde_json::Error> {
    let visitor = HeaderVisitor {
        builder: Builder::new(data_len, capacity_hint(buf.len())),
    };
    // One UTF-8 check of the whole header is much cheaper than serde_json's check of every
    // string; invalid UTF-8 takes the byte path so the error names the same line and column.
    match text {
        Some(text) => parse_with(&mut serde_json::Deserializer::from_str(text), visitor),
        None => parse_with(&mut serde_json::Deserializer::from_slice(buf), visitor),
    }
}

fn parse_with<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    visitor: HeaderVisitor<'de>,
) -> Result<Builder<'de>, serde_json::Error> {
    let b = serde::Deserializer::deserialize_map(&mut *de, visitor)?;
    de.end()?;
    Ok(b)
}

/// The fast path: a scanner for the header layout writers emit — one object of tensor
/// entries `{"dtype": "…", "shape": […], "data_offsets": [a, b]}` (fields in any order) and
/// a `__metadata__` object of strings, any JSON whitespace. It borrows names from `text`
/// (decoding only names with escapes), builds no intermediate values, and returns `None` —
/// never an error — on anything else, for [`validating_parse`] to decide. Work is linear in
/// `text`, with no recursion.
fn scan(text: &str, data_len: u64) -> Option<Builder<'_>> {
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
    };
    let mut out = Builder::new(data_len, capacity_hint(text.len()));
    s.expect(b'{')?;
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            let name = s.string()?;
            s.expect(b':')?;
            if name == "__metadata__" {
                s.metadata(&mut out.metadata)?;
            } else {
                let (dtype, shape, offsets) = s.entry()?;
                out.tensor(name, &dtype, shape, offsets);
            }
            if !s.next_member()? {
                break;
            }
        }
    }
    s.skip_ws();
    (s.i == s.b.len()).then_some(out)
}

/// Both parsers over one header, for the equivalence tests: the scanner's result (`None`
/// when it gave up) and the validating parser's, each as `Debug` text of the state dict or
/// the error reason.
#[cfg(test)]
pub(crate) fn parse_both(
    buf: &[u8],
    file_len: u64,
) -> (Option<Result<String, String>>, Result<String, String>) {
    let data_len = file_len.saturating_sub(8 + buf.len() as u64);
    let text = std::str::from_utf8(buf).ok();
    let show = |b: Builder<'_>| b.finish().map(|sd| format!("{sd:?}"));
    let fast = text.and_then(|t| scan(t, data_len)).map(show);
    let slow = validating_parse(buf, text, data_len)
        .map_err(|e| e.to_string())
        .and_then(show);
    (fast, slow)
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

/// Flags (bit 7 of each byte) the bytes of `w` that end or escape a plain JSON string: `"`,
/// `\\`, and control characters (which JSON forbids in strings). The lowest flag marks the
/// first such byte exactly (a borrow can only flag bytes above a true one).
fn special_bytes(w: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let quote = zero(w ^ (LO * u64::from(b'"')));
    let backslash = zero(w ^ (LO * u64::from(b'\\')));
    let control = w.wrapping_sub(LO * 0x20) & !w & HI;
    quote | backslash | control
}

impl<'a> Scanner<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace.
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// After a member: `,` → true (another follows), `}` → false.
    fn next_member(&mut self) -> Option<bool> {
        let more = match self.peek()? {
            b',' => true,
            b'}' => false,
            _ => return None,
        };
        self.i += 1;
        Some(more)
    }

    /// A string, borrowed unless it has escapes (those are decoded by serde_json).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.i;
        let mut j = start;
        let mut escaped = false;
        loop {
            // Eight bytes at a time to the next byte that needs a look.
            while let Some(chunk) = self.b.get(j..j + 8) {
                let w = u64::from_le_bytes(chunk.try_into().ok()?);
                let m = special_bytes(w);
                if m != 0 {
                    j += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                j += 8;
            }
            match *self.b.get(j)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    j += 2;
                }
                0..=0x1f => return None,
                _ => j += 1,
            }
        }
        self.i = j + 1;
        if escaped {
            serde_json::from_str(self.text.get(start - 1..=j)?)
                .ok()
                .map(Cow::Owned)
        } else {
            self.text.get(start..j).map(Cow::Borrowed)
        }
    }

    /// A field name of a tensor entry: the three known ones compared in place, others read
    /// as strings.
    fn field_name(&mut self) -> Option<Cow<'a, str>> {
        self.skip_ws();
        let rest = self.b.get(self.i..)?;
        for f in ["dtype", "shape", "data_offsets"] {
            if rest.len() > f.len() + 1
                && rest[0] == b'"'
                && rest[f.len() + 1] == b'"'
                && &rest[1..=f.len()] == f.as_bytes()
            {
                self.i += f.len() + 2;
                return Some(Cow::Borrowed(f));
            }
        }
        self.string()
    }

    /// A JSON integer that fits a u64 (no sign, fraction, exponent or leading zero).
    fn number(&mut self) -> Option<u64> {
        self.skip_ws();
        let first = *self.b.get(self.i)?;
        if !first.is_ascii_digit() {
            return None;
        }
        let mut n = u64::from(first - b'0');
        self.i += 1;
        while let Some(&c) = self.b.get(self.i)
            && c.is_ascii_digit()
        {
            if first == b'0' {
                return None;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(n),
        }
    }

    /// `[n, …]`, elements appended to `push`.
    fn array(&mut self, mut push: impl FnMut(u64)) -> Option<()> {
        self.expect(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            push(self.number()?);
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// One tensor entry: exactly the three fields, each once.
    fn entry(&mut self) -> Option<(Cow<'a, str>, Shape, (u64, u64))> {
        self.expect(b'{')?;
        let (mut dtype, mut shape, mut offsets) = (None, None, None);
        loop {
            let field = self.field_name()?;
            self.expect(b':')?;
            match field.as_ref() {
                "dtype" if dtype.is_none() => dtype = Some(self.string()?),
                "shape" if shape.is_none() => {
                    let mut s = Shape::default();
                    self.array(|d| s.push(d))?;
                    shape = Some(s);
                }
                "data_offsets" if offsets.is_none() => {
                    let mut v = [0u64; 2];
                    let mut n = 0usize;
                    self.array(|d| {
                        if let Some(slot) = v.get_mut(n) {
                            *slot = d;
                        }
                        n += 1;
                    })?;
                    if n != 2 {
                        return None;
                    }
                    offsets = Some((v[0], v[1]));
                }
                _ => return None,
            }
            if !self.next_member()? {
                break;
            }
        }
        Some((dtype?, shape?, offsets?))
    }

    /// `__metadata__`: an object of strings, inserted in order (a repeated key keeps its last
    /// value, as the serde map does).
    fn metadata(&mut self, out: &mut BTreeMap<String, String>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let k = self.string()?;
            self.expect(b':')?;
            let v = self.string()?;
            out.insert(k.into_owned(), v.into_owned());
            if !self.next_member()? {
                return Some(());
            }
        }
    }
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

/// The integration tests' writer of real-producer fixtures (the `safetensors` package).
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/it/support/pyfix.rs"]
mod pyfix;

#[cfg(test)]
mod tests {
    use super::*;

    use super::pyfix;

    /// The scanner either gives up or agrees with the validating parser; `Some(true)` when it
    /// took the header.
    fn agree(buf: &[u8], file_len: u64) -> bool {
        let (fast, slow) = parse_both(buf, file_len);
        if let Some(fast) = &fast {
            assert_eq!(
                fast,
                &slow,
                "scanner and serde disagree on {:?}",
                String::from_utf8_lossy(buf)
            );
        }
        fast.is_some()
    }

    #[test]
    fn the_scanner_takes_the_usual_layouts_and_agrees_with_serde() {
        // Compact (the safetensors library), spaced (Python's json.dumps), fields in another
        // order, escaped and non-ASCII names, escaped metadata values, scalars, >4 dims,
        // unsorted and repeated names, padding: all on the fast path, all identical.
        let cases: &[&str] = &[
            r#"{"__metadata__":{"format":"pt","ss_tag_frequency":"{\"a\": {\"b\": 1}}"},"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[],"data_offsets":[12,16]}}"#,
            "{\"z.w\": {\"dtype\": \"U8\", \"shape\": [1, 2, 1, 1, 2], \"data_offsets\": [0, 4]},\n \"a\": {\"data_offsets\": [4, 6], \"shape\": [1], \"dtype\": \"BF16\"}}   ",
            r#"{"n\u00e9\"q\\":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"é":{"dtype":"X9","shape":[3],"data_offsets":[8,9]}}"#,
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#,
            r#"{"__metadata__":{},"__metadata__":{"k":"v","k":"w"}}"#,
            r#"{"a":{"dt\u0079pe":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            "{}",
            "\t{ } ",
        ];
        for c in cases {
            let data: u64 = [0u64, 1, 3, 4, 6, 9, 16]
                .into_iter()
                .find(|d| parse_both(c.as_bytes(), 8 + c.len() as u64 + d).1.is_ok())
                .unwrap_or_else(|| panic!("no data size fits {c}"));
            assert!(
                agree(c.as_bytes(), 8 + c.len() as u64 + data),
                "not on the fast path: {c}"
            );
            // A lying file size: same range error from both.
            assert!(agree(c.as_bytes(), 8 + c.len() as u64 + data + 1) || data == 0);
        }
    }

    #[test]
    fn the_scanner_agrees_with_serde_on_files_the_safetensors_package_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let lora: Vec<(String, Vec<u64>)> = (0..24)
            .flat_map(|i| {
                let m = format!(
                    "lora_unet_down_blocks_{}_attentions_{}_transformer_blocks_{i}_attn2_to_k",
                    i % 4,
                    i % 2
                );
                [
                    (format!("{m}.lora_down.weight"), vec![4, 768]),
                    (format!("{m}.lora_up.weight"), vec![320, 4]),
                    (format!("{m}.alpha"), vec![]),
                ]
            })
            .collect();
        let odd: Vec<(String, Vec<u64>, &'static str)> = vec![
            ("w\"quote\\back\u{1}ctl".into(), vec![2], "F32"),
            ("schön.名前".into(), vec![1, 2, 1, 1, 2], "U8"),
            ("empty".into(), vec![0, 3], "F64"),
            ("ids".into(), vec![3], "I64"),
        ];
        let specs = vec![
            pyfix::Spec::safetensors(dir.path().join("lora.safetensors"), lora).metadata(
                serde_json::json!({
                    "ss_network_module": "networks.lora",
                    "ss_tag_frequency": "{\"1_x\": {\"a, b\": 3}}",
                    "note": "tab\tnew\nline ünïcode",
                }),
            ),
            pyfix::Spec {
                path: dir.path().join("odd.safetensors"),
                kind: pyfix::Kind::Safetensors(None),
                tensors: odd,
            },
            pyfix::Spec::safetensors(dir.path().join("none.safetensors"), vec![]),
        ];
        pyfix::write(&specs);
        for spec in &specs {
            let bytes = std::fs::read(&spec.path).unwrap();
            let n = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
            let header = &bytes[8..8 + n];
            let len = bytes.len() as u64;
            assert!(
                agree(header, len),
                "{}: not on the fast path",
                spec.path.display()
            );
            let sd = parse_header_json(&spec.path, header, len).unwrap();
            assert_eq!(
                sd.tensors.len(),
                spec.tensors.len(),
                "{}",
                spec.path.display()
            );
            for (name, shape, dtype) in &spec.tensors {
                let t = sd
                    .tensors
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} missing"));
                assert_eq!((&*t.shape, t.dtype.as_ref()), (shape.as_slice(), *dtype));
            }
            // Every truncation and a grown file: the same verdict from both.
            for cut in [1, 2, n / 2, n - 1] {
                agree(&header[..cut], len);
            }
            agree(header, len + 8);
            agree(header, len - 1);
        }
        let bytes = std::fs::read(&specs[0].path).unwrap();
        let n = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
        let sd = parse_header_json(&specs[0].path, &bytes[8..8 + n], bytes.len() as u64).unwrap();
        assert_eq!(
            sd.metadata.get("ss_tag_frequency").map(String::as_str),
            Some("{\"1_x\": {\"a, b\": 3}}")
        );
    }

    #[test]
    fn the_scanner_leaves_the_unusual_and_the_malformed_to_serde() {
        let entry = r#""dtype":"U8","shape":[1],"data_offsets":[0,1]"#;
        // Valid, and serde's to decide: an unknown field (which it ignores), metadata that is
        // not a string (which it writes as JSON).
        let unusual = [
            format!(r#"{{"a":{{{entry},"extra":[{{"x":null}}]}}}}"#),
            format!(r#"{{"__metadata__":{{"k":1}},"a":{{{entry}}}}}"#),
        ];
        for c in &unusual {
            let (fast, slow) = parse_both(c.as_bytes(), 8 + c.len() as u64 + 1);
            assert!(fast.is_none(), "the scanner took {c}: {fast:?}");
            assert!(slow.is_ok(), "{c}: {slow:?}");
        }
        let malformed: Vec<String> = vec![
            format!(r#"{{"a":{{{entry},"dtype":"U8"}}}}"#),
            r#"{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}"#.into(),
            r#"{"a":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}}"#.into(),
            r#"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#.into(),
            r#"{"a":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}"#.into(),
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551616]}}"#.into(),
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}"#.into(),
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}}"#.into(),
            r#"{"a":{"dtype":"U8","shape":[1]}}"#.into(),
            r#"{"a":{}}"#.into(),
            format!(r#"{{"a":{{{entry}}},}}"#),
            format!(r#"{{"a":{{{entry}}}}} x"#),
            format!(r#"{{"a":{{{entry}}}"#),
            format!("{{\"a\u{1}\":{{{entry}}}}}"),
            format!(r#"{{"a\x":{{{entry}}}}}"#),
            format!(r#"{{"a\ud800":{{{entry}}}}}"#),
            format!(r#"{{"__metadata__":null,"a":{{{entry}}}}}"#),
            format!("\u{feff}{{\"a\":{{{entry}}}}}"),
            "[]".into(),
            String::new(),
        ];
        for c in &malformed {
            let (fast, slow) = parse_both(c.as_bytes(), 8 + c.len() as u64 + 1);
            assert!(fast.is_none(), "the scanner took {c}: {fast:?}");
            assert!(slow.is_err(), "{c}: {slow:?}");
        }
        // Invalid UTF-8 never reaches the scanner.
        let mut b = format!(r#"{{"a":{{{entry}}}}}"#).into_bytes();
        b[2] = 0xff;
        assert!(parse_both(&b, 8 + b.len() as u64 + 1).0.is_none());
    }

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
