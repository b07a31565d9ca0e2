//! A pickle machine that never executes anything.
//!
//! It walks the opcode stream the way CPython's unpickler (`pickle._Unpickler` and `_pickle`)
//! would, but instead of importing and calling globals it builds inert nodes:
//! `GLOBAL torch._utils._rebuild_tensor_v2` applied to `(storage, offset, size, …)` becomes a
//! tensor description with its shape and dtype, `collections.OrderedDict()` becomes a dict,
//! and every other call stays an opaque node. Every global the stream would hand to
//! `find_class` is recorded for the safety scan, including those seen before a parse error
//! (Python would already have imported them by then).
//!
//! Text arguments are decoded exactly as CPython does — `STRING` through `escape_decode`
//! (`S'o\x73'` is `os`), `UNICODE` through `raw-unicode-escape` — so a `STACK_GLOBAL` sees the
//! module and name Python would import. Anything the machine cannot follow is a
//! [`PickleFault`]; the scan treats a fault as "not clean".
//!
//! Work is bounded whatever the input claims: every push onto the stack (a new value, `DUP`,
//! a memo `GET`, a `MARK`, a new memo slot) counts toward [`MAX_PUSHES`], kept text toward
//! [`MAX_TEXT`], distinct globals toward [`MAX_GLOBALS`], and the input is read as a stream (nothing is buffered beyond one text
//! argument of at most [`MAX_STR`] bytes). With `Node` at 32 bytes, one run holds at most
//! about 2M × (32 + 8 + 16) bytes of nodes, stack and container slots plus 32 MiB of text:
//! well under the 256 MiB ceiling documented in [`crate::scan`].

use std::collections::{HashMap, HashSet};
use std::io::BufRead;

/// Pushes (new values, `DUP`, memo `GET`, `MARK`, new memo slots) one pickle may make.
/// A torch save of a large model makes well under 100k.
pub(crate) const MAX_PUSHES: usize = 2_000_000;
/// Bytes of text (strings and global names) one stream may keep.
pub(crate) const MAX_TEXT: usize = 32 << 20;
/// Distinct globals one stream may import (a torch save imports a dozen).
pub(crate) const MAX_GLOBALS: usize = 10_000;
/// Longest string kept whole; longer strings are kept truncated (and marked so).
pub(crate) const MAX_STR: usize = 4096;
/// Most dimensions a rebuilt tensor may have (longer shapes stay opaque).
const MAX_DIMS: usize = 64;
/// Nesting depth for flattening nested dicts (`state_dict` inside a checkpoint dict …).
const MAX_DEPTH: usize = 16;
/// Most bytes of tensor names [`Machine::tensors`] builds.
const MAX_NAME_BYTES: usize = 32 << 20;
/// Suffix of a text argument longer than [`MAX_STR`]: never on any allow-list.
const TRUNCATED: &str = "…(truncated)";

/// One value the machine built. Containers refer to other nodes by index so that memo
/// references share (and later mutations through SETITEMS/APPENDS are seen by every holder).
#[derive(Debug, Clone)]
pub(crate) enum Node {
    None,
    Bool,
    Int(i64),
    /// An integer too large for i64; its value never matters to us.
    BigInt,
    Float,
    Str(Box<str>),
    Bytes,
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
    /// An imported global: index into [`Machine::globals`].
    Global(usize),
    /// A torch storage referenced through a persistent id; `key` is the node of its key
    /// string (`usize::MAX` when the id holds none).
    Storage {
        dtype: &'static str,
        key: usize,
    },
    /// A tensor rebuilt by `torch._utils._rebuild_tensor*`.
    Tensor(Box<TensorNode>),
    /// Anything else: a call we do not model, a persistent id we do not know, a buffer …
    Opaque,
}

/// What `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` was called with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorNode {
    /// `size`.
    pub shape: Vec<u64>,
    /// The storage class as a safetensors-style dtype (`UNKNOWN` when not a known class).
    pub dtype: &'static str,
    /// The storage's key: its bytes are the archive member `data/<key>`.
    pub key: Option<Box<str>>,
    /// `storage_offset`, in elements.
    pub offset: Option<u64>,
    /// `stride`, in elements.
    pub stride: Option<Vec<u64>>,
}

/// Why a pickle stream could not be followed to its STOP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PickleFault {
    /// Byte offset of the opcode that failed.
    pub offset: u64,
    /// What went wrong.
    pub reason: String,
}

impl std::fmt::Display for PickleFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.reason)
    }
}

/// The machine's state after a run: nodes, the root value, and every import seen.
#[derive(Debug, Default)]
pub(crate) struct Machine {
    pub nodes: Vec<Node>,
    /// Distinct (module, name) pairs handed to `find_class`, in first-seen order, over every
    /// run of this machine.
    pub globals: Vec<(String, String)>,
    global_index: HashMap<(String, String), usize>,
    /// Things a checkpoint never does that do not stop the stream (the scan reports them).
    pub notes: Vec<PickleFault>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u64, usize>,
    pushes: usize,
    text: usize,
}

enum Step {
    Continue,
    Stop,
}

fn fault(offset: u64, reason: impl Into<String>) -> PickleFault {
    PickleFault {
        offset,
        reason: reason.into(),
    }
}

/// Maps a torch storage class name (`FloatStorage`) to a safetensors-style dtype string.
fn storage_dtype(name: &str) -> &'static str {
    match name {
        "FloatStorage" => "F32",
        "HalfStorage" => "F16",
        "BFloat16Storage" => "BF16",
        "DoubleStorage" => "F64",
        "LongStorage" => "I64",
        "IntStorage" => "I32",
        "ShortStorage" => "I16",
        "CharStorage" => "I8",
        "ByteStorage" => "U8",
        "BoolStorage" => "BOOL",
        "ComplexFloatStorage" => "C64",
        "ComplexDoubleStorage" => "C128",
        "Float8_e4m3fnStorage" => "F8_E4M3",
        "Float8_e5m2Storage" => "F8_E5M2",
        _ => "UNKNOWN",
    }
}

/// A pickle stream being read: any [`BufRead`] (a memory-mapped file, a zip member), with the
/// offset for error messages and one scratch buffer of at most [`MAX_STR`] bytes.
pub(crate) struct Cursor<R> {
    r: R,
    pos: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Cursor<R> {
    pub(crate) fn new(r: R) -> Self {
        Self {
            r,
            pos: 0,
            buf: Vec::new(),
        }
    }

    fn avail(&mut self) -> Result<&[u8], PickleFault> {
        avail(&mut self.r, self.pos)
    }

    fn advance(&mut self, k: usize) {
        self.r.consume(k);
        self.pos += k as u64;
    }

    /// The next byte without consuming it; `None` at the end.
    pub(crate) fn peek(&mut self) -> Result<Option<u8>, PickleFault> {
        Ok(self.avail()?.first().copied())
    }

    fn u8(&mut self) -> Result<u8, PickleFault> {
        self.fill(1, 1)?;
        Ok(self.buf[0])
    }

    /// Reads `keep` bytes into the scratch buffer (an argument of `total` bytes).
    fn fill(&mut self, keep: usize, total: u64) -> Result<(), PickleFault> {
        self.buf.clear();
        let start = self.pos;
        while self.buf.len() < keep {
            let need = keep - self.buf.len();
            let got = self.buf.len();
            let a = avail(&mut self.r, self.pos)?;
            if a.is_empty() {
                return Err(fault(
                    start,
                    format!("needs {total} more bytes but the stream ends after {got}"),
                ));
            }
            let k = a.len().min(need);
            self.buf.extend_from_slice(&a[..k]);
            self.advance(k);
        }
        Ok(())
    }

    /// Skips `n` bytes without keeping them (`skipped` were already read of `total`).
    fn skip(&mut self, n: u64, skipped: u64, total: u64, start: u64) -> Result<(), PickleFault> {
        let mut left = n;
        while left > 0 {
            let a = self.avail()?.len();
            if a == 0 {
                return Err(fault(
                    start,
                    format!(
                        "needs {total} more bytes but the stream ends after {}",
                        skipped + (n - left)
                    ),
                ));
            }
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(a);
            self.advance(k);
            left -= k as u64;
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleFault> {
        self.fill(N, N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, PickleFault> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, PickleFault> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, PickleFault> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, PickleFault> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length-prefixed argument of `n` bytes: the first [`MAX_STR`] kept in the scratch
    /// buffer, the rest skipped. Returns whether it was truncated.
    fn counted(&mut self, n: u64) -> Result<bool, PickleFault> {
        let start = self.pos;
        let keep = usize::try_from(n.min(MAX_STR as u64)).unwrap_or(MAX_STR);
        self.fill(keep, n)?;
        self.skip(n - keep as u64, keep as u64, n, start)?;
        Ok(n > keep as u64)
    }

    /// A protocol-0 text argument up to (not including) the newline, kept (at most
    /// [`MAX_STR`] bytes) in the scratch buffer. Returns whether it was truncated.
    fn line(&mut self) -> Result<bool, PickleFault> {
        self.buf.clear();
        let start = self.pos;
        let mut truncated = false;
        loop {
            let room = MAX_STR - self.buf.len();
            let a = avail(&mut self.r, self.pos)?;
            if a.is_empty() {
                return Err(fault(start, "text argument without a newline"));
            }
            let (chunk, done) = match a.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (a.len(), false),
            };
            let k = chunk.min(room);
            truncated |= chunk > room;
            let a = &a[..k];
            self.buf.extend_from_slice(a);
            self.advance(chunk + usize::from(done));
            if done {
                return Ok(truncated);
            }
        }
    }

    /// A protocol-0 decimal argument (PUT / GET), parsed like Python's `int()` of bytes.
    fn line_index(&mut self, what: &str) -> Result<u64, PickleFault> {
        let at = self.pos;
        self.line()?;
        std::str::from_utf8(self.buf.trim_ascii())
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| fault(at, format!("{what} index is not a number")))
    }
}

fn avail<R: BufRead>(r: &mut R, pos: u64) -> Result<&[u8], PickleFault> {
    r.fill_buf()
        .map_err(|e| fault(pos, format!("read failed: {e}")))
}

/// CPython's `codecs.escape_decode`, which the `STRING` opcode applies to its argument.
#[allow(clippy::many_single_char_names, reason = "mirrors CPython's decoder")]
pub(crate) fn escape_decode(s: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = s.get(i) else {
            return Err("Trailing \\ in string".into());
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'v' => out.push(11),
            b'a' => out.push(7),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match s.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
                match (hex(s.get(i)), hex(s.get(i + 1))) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                        i += 2;
                    }
                    _ => return Err(format!("invalid \\x escape at position {}", i - 2)),
                }
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// CPython's `raw-unicode-escape` decoding, which the `UNICODE` opcode applies: bytes are
/// Latin-1 except `\uXXXX` / `\UXXXXXXXX` after an odd number of backslashes.
#[allow(clippy::many_single_char_names, reason = "mirrors CPython's decoder")]
pub(crate) fn raw_unicode_escape(s: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c != b'\\' {
            out.push(char::from(c));
            i += 1;
            continue;
        }
        let run = s[i..].iter().take_while(|&&b| b == b'\\').count();
        let after = s.get(i + run).copied();
        let escape = run % 2 == 1 && matches!(after, Some(b'u' | b'U'));
        let literal = if escape { run - 1 } else { run };
        for _ in 0..literal {
            out.push('\\');
        }
        i += run;
        if !escape {
            continue;
        }
        let digits = if after == Some(b'u') { 4 } else { 8 };
        let hex = s
            .get(i + 1..i + 1 + digits)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        let Some(hex) = hex else {
            return Err(format!(
                "truncated \\{}{} escape",
                if digits == 4 { 'u' } else { 'U' },
                "X".repeat(digits)
            ));
        };
        let v = u32::from_str_radix(std::str::from_utf8(hex).unwrap_or("0"), 16).unwrap_or(0);
        if v > 0x10_ffff {
            return Err("\\Uxxxxxxxx out of range".into());
        }
        // Lone surrogates have no Rust char; they are never part of an allow-listed name.
        out.push(char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER));
        i += 1 + digits;
    }
    Ok(out)
}

impl Machine {
    fn count(&mut self, at: u64) -> Result<(), PickleFault> {
        self.pushes += 1;
        if self.pushes > MAX_PUSHES {
            return Err(fault(
                at,
                format!("more than {MAX_PUSHES} pushes (values, DUP, memo GET, MARK, memo slots)"),
            ));
        }
        Ok(())
    }

    fn push(&mut self, id: usize, at: u64) -> Result<(), PickleFault> {
        self.count(at)?;
        self.stack.push(id);
        Ok(())
    }

    fn push_node(&mut self, n: Node, at: u64) -> Result<usize, PickleFault> {
        self.count(at)?;
        self.nodes.push(n);
        let id = self.nodes.len() - 1;
        self.stack.push(id);
        Ok(id)
    }

    /// Text kept from the input, counted toward [`MAX_TEXT`].
    fn keep_text(&mut self, s: String, truncated: bool, at: u64) -> Result<String, PickleFault> {
        self.text += s.len();
        if self.text > MAX_TEXT {
            return Err(fault(at, format!("more than {MAX_TEXT} bytes of text")));
        }
        Ok(if truncated { s + TRUNCATED } else { s })
    }

    fn push_str(&mut self, s: String, truncated: bool, at: u64) -> Result<(), PickleFault> {
        let s = self.keep_text(s, truncated, at)?;
        self.push_node(Node::Str(s.into_boxed_str()), at)?;
        Ok(())
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, at: u64) -> Result<usize, PickleFault> {
        if self.stack.len() <= self.floor() {
            return Err(fault(at, "stack underflow"));
        }
        self.stack.pop().ok_or_else(|| fault(at, "stack underflow"))
    }

    fn top(&self, at: u64) -> Result<usize, PickleFault> {
        if self.stack.len() <= self.floor() {
            return Err(fault(at, "stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| fault(at, "stack underflow"))
    }

    fn pop_mark(&mut self, at: u64) -> Result<Vec<usize>, PickleFault> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| fault(at, "no MARK on the stack"))?;
        Ok(self.stack.split_off(m))
    }

    fn str_of(&self, id: usize) -> Option<&str> {
        match self.nodes.get(id) {
            Some(Node::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The (module, name) of a global node.
    pub(crate) fn global_of(&self, id: usize) -> Option<(&str, &str)> {
        match self.nodes.get(id) {
            Some(Node::Global(g)) => self.globals.get(*g).map(|(m, n)| (m.as_str(), n.as_str())),
            _ => None,
        }
    }

    /// Records what `find_class(module, name)` would be asked for; O(1) per call.
    fn record(&mut self, module: String, name: String, at: u64) -> Result<usize, PickleFault> {
        let key = (module, name);
        if let Some(&g) = self.global_index.get(&key) {
            return Ok(g);
        }
        self.text += key.0.len() + key.1.len();
        if self.text > MAX_TEXT {
            return Err(fault(at, format!("more than {MAX_TEXT} bytes of text")));
        }
        if self.globals.len() >= MAX_GLOBALS {
            return Err(fault(
                at,
                format!("more than {MAX_GLOBALS} distinct globals"),
            ));
        }
        let g = self.globals.len();
        self.globals.push(key.clone());
        self.global_index.insert(key, g);
        Ok(g)
    }

    fn global(&mut self, module: String, name: String, at: u64) -> Result<(), PickleFault> {
        let g = self.record(module, name, at)?;
        self.push_node(Node::Global(g), at)?;
        Ok(())
    }

    fn ints_of(&self, id: usize) -> Option<Vec<u64>> {
        match self.nodes.get(id) {
            Some(Node::Tuple(items) | Node::List(items)) if items.len() <= MAX_DIMS => items
                .iter()
                .map(|&i| match self.nodes.get(i) {
                    Some(Node::Int(v)) => u64::try_from(*v).ok(),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// What calling `func(*args)` would give, as far as we model it.
    fn apply(&self, func: usize, args: usize) -> Node {
        let Some((module, name)) = self.global_of(func) else {
            return Node::Opaque;
        };
        let arg_items: &[usize] = match self.nodes.get(args) {
            Some(Node::Tuple(items)) => items,
            _ => &[],
        };
        match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
                let (dtype, key) = match arg_items.first().and_then(|&s| self.nodes.get(s)) {
                    Some(Node::Storage { dtype, key }) => (*dtype, self.str_of(*key)),
                    _ => ("UNKNOWN", None),
                };
                let offset = match arg_items.get(1).and_then(|&i| self.nodes.get(i)) {
                    Some(Node::Int(v)) => u64::try_from(*v).ok(),
                    _ => None,
                };
                match arg_items.get(2).and_then(|&s| self.ints_of(s)) {
                    Some(shape) => Node::Tensor(Box::new(TensorNode {
                        shape,
                        dtype,
                        key: key.map(Into::into),
                        offset,
                        stride: arg_items.get(3).and_then(|&s| self.ints_of(s)),
                    })),
                    None => Node::Opaque,
                }
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                match arg_items.first().and_then(|&t| self.nodes.get(t)) {
                    Some(t @ Node::Tensor(_)) => t.clone(),
                    _ => Node::Opaque,
                }
            }
            ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict")
                if arg_items.is_empty() =>
            {
                Node::Dict(Vec::new())
            }
            _ => Node::Opaque,
        }
    }

    /// Follows one pickle from the cursor's position to its STOP; returns the root node.
    /// Nodes, stack, marks and memo start empty; the globals and the text budget carry over.
    pub(crate) fn run<R: BufRead>(&mut self, c: &mut Cursor<R>) -> Result<usize, PickleFault> {
        self.nodes.clear();
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        self.pushes = 0;
        loop {
            let at = c.pos;
            let Some(op) = c.peek()? else {
                return Err(fault(at, "stream ends without STOP"));
            };
            c.advance(1);
            if let Step::Stop = self.step(op, c, at)? {
                return self.pop(at);
            }
        }
    }

    #[allow(
        clippy::match_same_arms,
        clippy::too_many_lines,
        reason = "one arm per opcode reads like the spec"
    )]
    fn step<R: BufRead>(
        &mut self,
        op: u8,
        c: &mut Cursor<R>,
        at: u64,
    ) -> Result<Step, PickleFault> {
        match op {
            0x80 => {
                // PROTO
                let v = c.u8()?;
                if v > 5 {
                    return Err(fault(at, format!("unsupported pickle protocol {v}")));
                }
            }
            0x95 => {
                // FRAME: a length hint only.
                c.u64()?;
            }
            b'.' => return Ok(Step::Stop),
            b'(' => {
                self.count(at)?;
                self.marks.push(self.stack.len());
            }
            b'0' => {
                // POP: like CPython, a MARK on top of the stack is what gets popped.
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop(at)?;
                }
            }
            b'1' => {
                self.pop_mark(at)?;
            }
            b'2' => {
                let t = self.top(at)?;
                self.push(t, at)?;
            }
            b'N' => {
                self.push_node(Node::None, at)?;
            }
            0x88 | 0x89 => {
                self.push_node(Node::Bool, at)?;
            }
            b'J' => {
                let v = c.i32()?;
                self.push_node(Node::Int(i64::from(v)), at)?;
            }
            b'K' => {
                let v = c.u8()?;
                self.push_node(Node::Int(i64::from(v)), at)?;
            }
            b'M' => {
                let v = c.u16()?;
                self.push_node(Node::Int(i64::from(v)), at)?;
            }
            0x8a | 0x8b => {
                // LONG1 / LONG4: little-endian two's complement.
                let n = if op == 0x8a {
                    u64::from(c.u8()?)
                } else {
                    let n = c.i32()?;
                    u64::try_from(n)
                        .map_err(|_| fault(at, "LONG pickle has negative byte count"))?
                };
                c.counted(n)?;
                let b = &c.buf;
                let node = if n <= 8 {
                    let n = b.len();
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= i64::from(byte) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    Node::Int(v)
                } else {
                    Node::BigInt
                };
                self.push_node(node, at)?;
            }
            b'I' | b'L' => {
                c.line()?;
                let s = String::from_utf8_lossy(&c.buf);
                let s = s.trim_end_matches('L');
                let node = match s {
                    "00" | "01" => Node::Bool,
                    _ => s.trim().parse::<i64>().map_or(Node::BigInt, Node::Int),
                };
                self.push_node(node, at)?;
            }
            b'G' => {
                c.u64()?;
                self.push_node(Node::Float, at)?;
            }
            b'F' => {
                c.line()?;
                self.push_node(Node::Float, at)?;
            }
            b'X' | 0x8c | 0x8d => {
                // BINUNICODE / SHORT_BINUNICODE / BINUNICODE8 (UTF-8; an invalid sequence,
                // which CPython rejects, becomes U+FFFD: never an allow-listed name).
                let n = match op {
                    b'X' => u64::from(c.u32()?),
                    0x8c => u64::from(c.u8()?),
                    _ => c.u64()?,
                };
                let truncated = c.counted(n)?;
                let s = String::from_utf8_lossy(&c.buf).into_owned();
                self.push_str(s, truncated, at)?;
            }
            b'V' => {
                // UNICODE: raw-unicode-escape.
                let truncated = c.line()?;
                let s = raw_unicode_escape(&c.buf)
                    .map_err(|e| fault(at, format!("UNICODE argument: {e}")))?;
                self.push_str(s, truncated, at)?;
            }
            b'T' | b'U' => {
                // BINSTRING (signed length) / SHORT_BINSTRING: Python 2 str, decoded with the
                // unpickler's encoding (ASCII by default, UTF-8 under torch.load).
                let n = if op == b'T' {
                    u64::try_from(c.i32()?)
                        .map_err(|_| fault(at, "BINSTRING pickle has negative byte count"))?
                } else {
                    u64::from(c.u8()?)
                };
                let truncated = c.counted(n)?;
                let s = String::from_utf8_lossy(&c.buf).into_owned();
                self.push_str(s, truncated, at)?;
            }
            b'S' => {
                // STRING: quoted, then `codecs.escape_decode`, exactly as CPython.
                let truncated = c.line()?;
                let s = if truncated {
                    String::from_utf8_lossy(&c.buf).into_owned()
                } else {
                    let l = &c.buf;
                    let quoted =
                        l.len() >= 2 && l[0] == l[l.len() - 1] && (l[0] == b'\'' || l[0] == b'"');
                    if !quoted {
                        return Err(fault(at, "the STRING opcode argument must be quoted"));
                    }
                    let bytes = escape_decode(&l[1..l.len() - 1])
                        .map_err(|e| fault(at, format!("STRING argument: {e}")))?;
                    String::from_utf8_lossy(&bytes).into_owned()
                };
                self.push_str(s, truncated, at)?;
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => u64::from(c.u32()?),
                    b'C' => u64::from(c.u8()?),
                    _ => c.u64()?,
                };
                c.counted(n)?;
                self.push_node(Node::Bytes, at)?;
            }
            0x97 => {
                // NEXT_BUFFER: an out-of-band buffer we do not have.
                self.push_node(Node::Opaque, at)?;
            }
            0x98 => {
                // READONLY_BUFFER
                self.top(at)?;
            }
            b'}' => {
                self.push_node(Node::Dict(Vec::new()), at)?;
            }
            b']' => {
                self.push_node(Node::List(Vec::new()), at)?;
            }
            b')' => {
                self.push_node(Node::Tuple(Vec::new()), at)?;
            }
            0x8f => {
                self.push_node(Node::Set(Vec::new()), at)?;
            }
            b't' => {
                let items = self.pop_mark(at)?;
                self.push_node(Node::Tuple(items), at)?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop(at)?);
                }
                items.reverse();
                self.push_node(Node::Tuple(items), at)?;
            }
            b'l' => {
                let items = self.pop_mark(at)?;
                self.push_node(Node::List(items), at)?;
            }
            b'd' => {
                let items = self.pop_mark(at)?;
                let pairs = pairs(&items, at)?;
                self.push_node(Node::Dict(pairs), at)?;
            }
            0x91 => {
                let items = self.pop_mark(at)?;
                self.push_node(Node::Set(items), at)?;
            }
            b'a' => {
                let v = self.pop(at)?;
                let l = self.top(at)?;
                self.extend(l, &[v]);
            }
            b'e' | 0x90 => {
                let items = self.pop_mark(at)?;
                let l = self.top(at)?;
                self.extend(l, &items);
            }
            b's' => {
                let v = self.pop(at)?;
                let k = self.pop(at)?;
                let d = self.top(at)?;
                self.set_items(d, &[(k, v)]);
            }
            b'u' => {
                let items = self.pop_mark(at)?;
                let p = pairs(&items, at)?;
                let d = self.top(at)?;
                self.set_items(d, &p);
            }
            b'p' => {
                let idx = c.line_index("PUT")?;
                self.memo_put(idx, at)?;
            }
            b'q' => {
                let idx = u64::from(c.u8()?);
                self.memo_put(idx, at)?;
            }
            b'r' => {
                let idx = u64::from(c.u32()?);
                self.memo_put(idx, at)?;
            }
            0x94 => {
                // MEMOIZE: the slot is the number of filled slots, as in CPython.
                let idx = self.memo.len() as u64;
                self.memo_put(idx, at)?;
            }
            b'g' | b'h' | b'j' => {
                let idx = match op {
                    b'g' => c.line_index("GET")?,
                    b'h' => u64::from(c.u8()?),
                    _ => u64::from(c.u32()?),
                };
                let id = *self
                    .memo
                    .get(&idx)
                    .ok_or_else(|| fault(at, format!("memo index {idx} was never stored")))?;
                self.push(id, at)?;
            }
            b'c' => {
                let (module, name) = Self::two_lines(c, at)?;
                self.global(module, name, at)?;
            }
            0x93 => {
                // STACK_GLOBAL: CPython insists on two str; a value we could not follow
                // (the result of a call) might be one, so its target is unknowable.
                let name = self.pop(at)?;
                let module = self.pop(at)?;
                let text = |id: usize| match self.nodes.get(id) {
                    Some(Node::Str(s)) => Ok(Some(s.to_string())),
                    Some(Node::Opaque) => Ok(None),
                    _ => Err(fault(at, "STACK_GLOBAL requires str")),
                };
                let (m, n) = match (text(module)?, text(name)?) {
                    (Some(m), Some(n)) => (m, n),
                    _ => ("?".to_owned(), "?".to_owned()),
                };
                self.global(m, n, at)?;
            }
            b'i' => {
                // INST: import, then call with the marked arguments.
                let (module, name) = Self::two_lines(c, at)?;
                self.record(module, name, at)?;
                self.pop_mark(at)?;
                self.push_node(Node::Opaque, at)?;
            }
            b'o' => {
                let items = self.pop_mark(at)?;
                if items.is_empty() {
                    return Err(fault(at, "OBJ without a class"));
                }
                self.push_node(Node::Opaque, at)?;
            }
            0x82..=0x84 => {
                // EXT1/2/4: the copyreg extension registry; the target is unknowable here.
                match op {
                    0x82 => {
                        c.u8()?;
                    }
                    0x83 => {
                        c.u16()?;
                    }
                    _ => {
                        c.i32()?;
                    }
                }
                self.record("?".into(), "copyreg extension".into(), at)?;
                self.push_node(Node::Opaque, at)?;
            }
            b'R' => {
                let args = self.pop(at)?;
                let func = self.pop(at)?;
                let n = self.apply(func, args);
                self.push_node(n, at)?;
            }
            0x81 => {
                let _args = self.pop(at)?;
                let _cls = self.pop(at)?;
                self.push_node(Node::Opaque, at)?;
            }
            0x92 => {
                let _kwargs = self.pop(at)?;
                let _args = self.pop(at)?;
                let _cls = self.pop(at)?;
                self.push_node(Node::Opaque, at)?;
            }
            b'b' => {
                // BUILD sets state on the object below. On an imported class or function
                // itself it would patch that global: no checkpoint does that.
                self.pop(at)?;
                let target = self.top(at)?;
                if let Some((m, n)) = self.global_of(target)
                    && self.notes.len() < 16
                {
                    let note = fault(at, format!("BUILD patches the imported global {m}.{n}"));
                    self.notes.push(note);
                }
            }
            b'P' => {
                c.line()?;
                self.push_node(Node::Opaque, at)?;
            }
            b'Q' => {
                let pid = self.pop(at)?;
                let n = self.persistent(pid);
                self.push_node(n, at)?;
            }
            _ => return Err(fault(at, format!("unknown opcode 0x{op:02x}"))),
        }
        Ok(Step::Continue)
    }

    /// The module and name lines of GLOBAL / INST (UTF-8; invalid bytes, which CPython
    /// rejects, become U+FFFD).
    fn two_lines<R: BufRead>(c: &mut Cursor<R>, _at: u64) -> Result<(String, String), PickleFault> {
        let t = c.line()?;
        let mut module = String::from_utf8_lossy(&c.buf).into_owned();
        if t {
            module.push_str(TRUNCATED);
        }
        let t = c.line()?;
        let mut name = String::from_utf8_lossy(&c.buf).into_owned();
        if t {
            name.push_str(TRUNCATED);
        }
        Ok((module, name))
    }

    fn memo_put(&mut self, idx: u64, at: u64) -> Result<(), PickleFault> {
        let t = self.top(at)?;
        if self.memo.insert(idx, t).is_none() {
            self.count(at)?;
        }
        Ok(())
    }

    /// torch's persistent ids: `('storage', StorageClass, key, location, numel[, view])`.
    fn persistent(&self, pid: usize) -> Node {
        let Some(Node::Tuple(items)) = self.nodes.get(pid) else {
            return Node::Opaque;
        };
        if items.first().and_then(|&i| self.str_of(i)) != Some("storage") {
            return Node::Opaque;
        }
        let key = items
            .get(2)
            .copied()
            .filter(|&i| self.str_of(i).is_some())
            .unwrap_or(usize::MAX);
        let dtype = items
            .get(1)
            .and_then(|&i| self.global_of(i))
            .map_or("UNKNOWN", |(_, name)| storage_dtype(name));
        Node::Storage { dtype, key }
    }

    fn extend(&mut self, target: usize, items: &[usize]) {
        if let Some(Node::List(v) | Node::Set(v)) = self.nodes.get_mut(target) {
            v.extend_from_slice(items);
        }
    }

    fn set_items(&mut self, target: usize, items: &[(usize, usize)]) {
        if let Some(Node::Dict(v)) = self.nodes.get_mut(target) {
            v.extend_from_slice(items);
        }
    }

    /// Key of a dict entry as text (strings as they are, ints in decimal).
    fn key_text(&self, id: usize) -> Option<String> {
        match self.nodes.get(id)? {
            Node::Str(s) => Some(s.to_string()),
            Node::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    /// The dict `root` holds under `key`, if any.
    fn child_dict(&self, root: usize, key: &str) -> Option<usize> {
        let Some(Node::Dict(pairs)) = self.nodes.get(root) else {
            return None;
        };
        pairs
            .iter()
            .find(|(k, v)| {
                self.str_of(*k) == Some(key) && matches!(self.nodes.get(*v), Some(Node::Dict(_)))
            })
            .map(|&(_, v)| v)
    }

    /// The tensors under `root`, flattened with `.`-joined keys. A dict holding a
    /// `state_dict` dict is unwrapped first (Lightning checkpoints). At most
    /// `MAX_NAME_BYTES` of names are built.
    pub(crate) fn tensors(&self, root: usize) -> Vec<(String, Vec<u64>, &'static str)> {
        let root = self.child_dict(root, "state_dict").unwrap_or(root);
        self.tensor_nodes(root)
            .into_iter()
            .map(|(n, t)| (n, t.shape.clone(), t.dtype))
            .collect()
    }

    /// The weights of a checkpoint for loading: [`Self::tensors`]' unwrapping of
    /// `state_dict`, then — when the dict holds no tensor itself — the first of the
    /// `params_ema`, `params` (BasicSR, spandrel's preference) or `model` dicts it holds.
    pub(crate) fn weights(&self, root: usize) -> Vec<(String, &TensorNode)> {
        let mut root = self.child_dict(root, "state_dict").unwrap_or(root);
        let holds_tensors = matches!(self.nodes.get(root), Some(Node::Dict(pairs))
            if pairs.iter().any(|(_, v)| matches!(self.nodes.get(*v), Some(Node::Tensor(_)))));
        if !holds_tensors
            && let Some(inner) = ["params_ema", "params", "model"]
                .iter()
                .find_map(|k| self.child_dict(root, k))
        {
            root = inner;
        }
        self.tensor_nodes(root)
    }

    fn tensor_nodes(&self, root: usize) -> Vec<(String, &TensorNode)> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut budget = MAX_NAME_BYTES;
        self.flatten(root, "", 0, &mut seen, &mut budget, &mut out);
        out
    }

    fn flatten<'a>(
        &'a self,
        id: usize,
        prefix: &str,
        depth: usize,
        seen: &mut HashSet<usize>,
        budget: &mut usize,
        out: &mut Vec<(String, &'a TensorNode)>,
    ) {
        if depth > MAX_DEPTH || !seen.insert(id) {
            return;
        }
        let Some(Node::Dict(pairs)) = self.nodes.get(id) else {
            return;
        };
        for &(k, v) in pairs {
            let Some(key) = self.key_text(k) else {
                continue;
            };
            let full = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            let Some(left) = budget.checked_sub(full.len()) else {
                return;
            };
            *budget = left;
            match self.nodes.get(v) {
                Some(Node::Tensor(t)) => out.push((full, t)),
                Some(Node::Dict(_)) => self.flatten(v, &full, depth + 1, seen, budget, out),
                _ => {}
            }
        }
    }
}

fn pairs(items: &[usize], at: u64) -> Result<Vec<(usize, usize)>, PickleFault> {
    if !items.len().is_multiple_of(2) {
        return Err(fault(at, "odd number of items for a dict"));
    }
    Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

/// The LONG1 encoding of torch's legacy magic number 0x1950a86a20f9469cfc6c.
pub(crate) const LEGACY_MAGIC_PICKLE: &[u8] = &[
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
];

/// Whether `data` opens with torch's legacy magic number pickled at any protocol, as
/// `torch.save(..., _use_new_zipfile_serialization=False, pickle_protocol=N)` writes it:
/// `PROTO N` (2+), a `FRAME` (4+), then LONG1 of the magic and STOP; or, at protocols 0 and 1,
/// the text `LONG` form.
pub(crate) fn is_legacy_torch_save(data: &[u8]) -> bool {
    let mut rest = data;
    if let [0x80, _, tail @ ..] = rest {
        rest = tail;
    }
    if let [0x95, tail @ ..] = rest {
        rest = tail.get(8..).unwrap_or_default();
    }
    rest.starts_with(&LEGACY_MAGIC_PICKLE[2..])
        || rest.starts_with(b"L119547037146038801333356L\n.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(data: &[u8]) -> (Machine, Result<usize, PickleFault>, u64) {
        let mut m = Machine::default();
        let mut c = Cursor::new(data);
        let r = m.run(&mut c);
        let pos = c.pos;
        (m, r, pos)
    }

    fn torch_pickle() -> Vec<u8> {
        // {'w': _rebuild_tensor_v2(pid('storage', torch.HalfStorage, '0', 'cpu', 6), 0, (2, 3), (3, 1), False, OrderedDict())}
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'X', 1, 0, 0, 0, b'w'];
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nHalfStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtRs.");
        p
    }

    #[test]
    fn builds_tensor_from_torch_opcodes() {
        let p = torch_pickle();
        let (m, root, end) = run(&p);
        assert_eq!(end, p.len() as u64);
        let root = root.unwrap();
        let t = m.tensors(root);
        assert_eq!(t, vec![("w".to_owned(), vec![2, 3], "F16")]);
        let w = m.weights(root);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].1.key.as_deref(), Some("0"));
        assert_eq!(w[0].1.offset, Some(0));
        assert_eq!(w[0].1.stride, Some(vec![3, 1]));
        assert!(
            m.globals
                .iter()
                .any(|(a, b)| a == "torch" && b == "HalfStorage")
        );
    }

    /// Truncations and byte flips of a real torch pickle: errors, never panics.
    #[test]
    fn mangled_input_never_panics() {
        let p = torch_pickle();
        for cut in 0..p.len() {
            let _ = run(&p[..cut]);
        }
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let mut q = p.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % q.len() as u64) as usize;
                q[at] = (seed >> 32) as u8;
            }
            if let (m, Ok(root), _) = run(&q) {
                let _ = m.tensors(root);
            }
        }
    }

    #[test]
    fn faults_name_the_offset() {
        let (_, e, _) = run(&[0x80, 2, b'u']);
        assert_eq!(e.unwrap_err().offset, 2);
        let (_, e, _) = run(&[0x80, 2, b'N']);
        let e = e.unwrap_err();
        assert!(e.reason.contains("without STOP"), "{e}");
        let (_, e, _) = run(&[0x80, 2, 0xff]);
        let e = e.unwrap_err();
        assert!(e.reason.contains("unknown opcode 0xff"), "{e}");
        let (_, e, _) = run(&[b'X', 0xff, 0xff, 0xff, 0x7f]);
        let e = e.unwrap_err();
        assert!(e.reason.contains("more bytes"), "{e}");
    }

    #[test]
    fn legacy_magic_at_every_protocol() {
        // `pickle.dumps(0x1950a86a20f9469cfc6c, protocol=p)` from CPython 3.11, p = 0..=5.
        let cases: [&[u8]; 4] = [
            b"L119547037146038801333356L\n.",
            b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.",
            b"\x80\x03\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.",
            b"\x80\x05\x95\r\x00\x00\x00\x00\x00\x00\x00\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.",
        ];
        for c in cases {
            assert!(is_legacy_torch_save(c), "{c:?}");
        }
        assert!(!is_legacy_torch_save(b"\x80\x02}q\x00."));
        assert!(!is_legacy_torch_save(b"L1L\n."));
    }

    #[test]
    fn legacy_magic_parses() {
        let (m, root, end) = run(LEGACY_MAGIC_PICKLE);
        assert_eq!(end, LEGACY_MAGIC_PICKLE.len() as u64);
        assert!(matches!(m.nodes[root.unwrap()], Node::BigInt));
    }

    /// Expected values from CPython 3.11's `codecs.escape_decode` and `raw_unicode_escape`.
    #[test]
    fn text_decodes_like_cpython() {
        assert_eq!(escape_decode(br"o\x73").unwrap(), b"os");
        assert_eq!(escape_decode(br"\777").unwrap(), b"\xff");
        assert_eq!(escape_decode(br"\400").unwrap(), b"\x00");
        assert_eq!(escape_decode(br"\8\q").unwrap(), br"\8\q");
        assert_eq!(
            escape_decode(br"\a\b\f\v\0\12").unwrap(),
            b"\x07\x08\x0c\x0b\x00\n"
        );
        assert!(escape_decode(br"\x7").is_err());
        assert!(escape_decode(b"\\").is_err());
        assert_eq!(raw_unicode_escape(br"\u0041").unwrap(), "A");
        assert_eq!(raw_unicode_escape(br"\\u0041").unwrap(), r"\\u0041");
        assert_eq!(raw_unicode_escape(br"\\\u0041").unwrap(), r"\\A");
        assert_eq!(raw_unicode_escape(br"\U0001F600\x41").unwrap(), "😀\\x41");
        assert!(raw_unicode_escape(br"\u004").is_err());
        assert!(raw_unicode_escape(br"\U00110000").is_err());
        assert_eq!(raw_unicode_escape(b"\\").unwrap(), "\\");
        // STRING and UNICODE names reach STACK_GLOBAL decoded.
        let (m, r, _) = run(b"S'o\\x73'\nV\\u0073ystem\n\x93.");
        r.unwrap();
        assert_eq!(m.globals, vec![("os".to_owned(), "system".to_owned())]);
    }

    #[test]
    fn dup_bombs_hit_the_push_budget() {
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(b'2', MAX_PUSHES + 10));
        p.push(b'.');
        let (m, e, _) = run(&p);
        assert!(e.unwrap_err().reason.contains("pushes"));
        assert!(m.stack.len() <= MAX_PUSHES);
        // So do memo GETs and MARKs.
        let mut p = vec![0x80, 2, b'N', b'q', 0];
        for _ in 0..=MAX_PUSHES {
            p.extend_from_slice(b"h\x00");
        }
        assert!(run(&p).1.unwrap_err().reason.contains("pushes"));
        let p = vec![b'('; MAX_PUSHES + 10];
        assert!(run(&p).1.unwrap_err().reason.contains("pushes"));
    }

    #[test]
    fn pop_takes_a_mark_like_cpython() {
        // MARK POP: CPython pops the mark, then goes on.
        let (m, r, _) = run(b"(0cos\nsystem\n.");
        r.unwrap();
        assert_eq!(m.globals[0].0, "os");
    }
}
