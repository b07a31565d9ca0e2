//! A pickle machine that never executes anything.
//!
//! It walks the opcode stream the way Python's unpickler would, but instead of importing and
//! calling globals it builds inert nodes: `GLOBAL torch._utils._rebuild_tensor_v2` applied to
//! `(storage, offset, size, …)` becomes a tensor description with its shape and dtype,
//! `collections.OrderedDict()` becomes a dict, and every other call stays an opaque node. Every
//! global the stream imports is recorded for the safety scan, including those seen before a
//! parse error (Python would already have imported them by then).

use std::collections::{HashMap, HashSet};

/// Largest number of nodes one pickle may create; bounds memory on hostile input.
const MAX_NODES: usize = 20_000_000;
/// Nesting depth for flattening nested dicts (`state_dict` inside a checkpoint dict …).
const MAX_DEPTH: usize = 16;

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
    Str(String),
    Bytes,
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
    Global {
        module: String,
        name: String,
    },
    /// A torch storage referenced through a persistent id.
    Storage {
        dtype: &'static str,
    },
    /// A tensor rebuilt by `torch._utils._rebuild_tensor*`.
    Tensor {
        shape: Vec<u64>,
        dtype: &'static str,
    },
    /// Anything else: a call we do not model, a persistent id we do not know, a buffer …
    Opaque,
}

/// Why a pickle stream could not be followed to its STOP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PickleFault {
    /// Byte offset of the opcode that failed.
    pub offset: usize,
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
    /// (module, name) of each GLOBAL / STACK_GLOBAL / INST, in stream order (duplicates kept).
    pub globals: Vec<(String, String)>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u64, usize>,
}

enum Step {
    Continue,
    Stop,
}

fn fault(offset: usize, reason: impl Into<String>) -> PickleFault {
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

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleFault> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                fault(
                    self.pos,
                    format!(
                        "needs {n} more bytes but only {} remain",
                        self.data.len() - self.pos
                    ),
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleFault> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleFault> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleFault> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleFault> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len_u64(&mut self) -> Result<usize, PickleFault> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| fault(self.pos, format!("length {n} too large")))
    }

    /// A protocol-0 text argument up to (not including) the newline.
    fn line(&mut self) -> Result<&'a [u8], PickleFault> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| fault(self.pos, "text argument without a newline"))?;
        let s = &rest[..n];
        self.pos += n + 1;
        Ok(s)
    }

    fn line_str(&mut self) -> Result<String, PickleFault> {
        let at = self.pos;
        let l = self.line()?;
        String::from_utf8(l.to_vec()).map_err(|_| fault(at, "text argument is not UTF-8"))
    }
}

impl Machine {
    fn push_node(&mut self, n: Node, at: usize) -> Result<usize, PickleFault> {
        if self.nodes.len() >= MAX_NODES {
            return Err(fault(at, format!("more than {MAX_NODES} values")));
        }
        self.nodes.push(n);
        let id = self.nodes.len() - 1;
        self.stack.push(id);
        Ok(id)
    }

    fn pop(&mut self, at: usize) -> Result<usize, PickleFault> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(fault(at, "stack underflow"));
        }
        self.stack.pop().ok_or_else(|| fault(at, "stack underflow"))
    }

    fn top(&self, at: usize) -> Result<usize, PickleFault> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(fault(at, "stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| fault(at, "stack underflow"))
    }

    fn pop_mark(&mut self, at: usize) -> Result<Vec<usize>, PickleFault> {
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

    fn global(&mut self, module: String, name: String, at: usize) -> Result<(), PickleFault> {
        self.globals.push((module.clone(), name.clone()));
        self.push_node(Node::Global { module, name }, at)?;
        Ok(())
    }

    fn ints_of(&self, id: usize) -> Option<Vec<u64>> {
        match self.nodes.get(id) {
            Some(Node::Tuple(items) | Node::List(items)) => items
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
        let Some(Node::Global { module, name }) = self.nodes.get(func) else {
            return Node::Opaque;
        };
        let arg_items: &[usize] = match self.nodes.get(args) {
            Some(Node::Tuple(items)) => items,
            _ => &[],
        };
        match (module.as_str(), name.as_str()) {
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
                let dtype = match arg_items.first().and_then(|&s| self.nodes.get(s)) {
                    Some(Node::Storage { dtype }) => dtype,
                    _ => "UNKNOWN",
                };
                match arg_items.get(2).and_then(|&s| self.ints_of(s)) {
                    Some(shape) => Node::Tensor { shape, dtype },
                    None => Node::Opaque,
                }
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                match arg_items.first().and_then(|&t| self.nodes.get(t)) {
                    Some(t @ Node::Tensor { .. }) => t.clone(),
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

    /// Follows one pickle starting at `start`; returns the root node and the offset after STOP.
    pub(crate) fn run(&mut self, data: &[u8], start: usize) -> Result<(usize, usize), PickleFault> {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        let mut c = Cursor { data, pos: start };
        loop {
            let at = c.pos;
            let op = c.u8().map_err(|_| fault(at, "stream ends without STOP"))?;
            if let Step::Stop = self.step(op, &mut c, at)? {
                let root = self.pop(at)?;
                return Ok((root, c.pos));
            }
        }
    }

    #[allow(
        clippy::match_same_arms,
        reason = "one arm per opcode reads like the spec"
    )]
    fn step(&mut self, op: u8, c: &mut Cursor<'_>, at: usize) -> Result<Step, PickleFault> {
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
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop(at)?;
            }
            b'1' => {
                self.pop_mark(at)?;
            }
            b'2' => {
                let t = self.top(at)?;
                self.stack.push(t);
            }
            b'N' => {
                self.push_node(Node::None, at)?;
            }
            0x88 => {
                self.push_node(Node::Bool, at)?;
            }
            0x89 => {
                self.push_node(Node::Bool, at)?;
            }
            b'J' => {
                let v = i32::from_le_bytes(c.u32()?.to_le_bytes());
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
                    usize::from(c.u8()?)
                } else {
                    c.u32()? as usize
                };
                let b = c.take(n)?;
                let node = if n <= 8 {
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
                let s = c.line_str()?;
                let s = s.trim_end_matches('L');
                let node = match s {
                    "00" => Node::Bool,
                    "01" => Node::Bool,
                    _ => s.parse::<i64>().map_or(Node::BigInt, Node::Int),
                };
                self.push_node(node, at)?;
            }
            b'G' => {
                c.take(8)?;
                self.push_node(Node::Float, at)?;
            }
            b'F' => {
                c.line()?;
                self.push_node(Node::Float, at)?;
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => c.u32()? as usize,
                    0x8c => usize::from(c.u8()?),
                    _ => c.len_u64()?,
                };
                let b = c.take(n)?;
                let s = String::from_utf8_lossy(b).into_owned();
                self.push_node(Node::Str(s), at)?;
            }
            b'V' => {
                // Raw-unicode-escape; names we care about are ASCII.
                let l = c.line()?;
                let s = String::from_utf8_lossy(l).into_owned();
                self.push_node(Node::Str(s), at)?;
            }
            b'T' | b'U' => {
                let n = if op == b'T' {
                    c.u32()? as usize
                } else {
                    usize::from(c.u8()?)
                };
                let b = c.take(n)?;
                // Python 2 str: protocol 2 files written by Python 2 use it for names too.
                let s = String::from_utf8_lossy(b).into_owned();
                self.push_node(Node::Str(s), at)?;
            }
            b'S' => {
                let l = c.line()?;
                let s = String::from_utf8_lossy(l);
                let s = s.trim();
                let unq = s
                    .strip_prefix('\'')
                    .and_then(|x| x.strip_suffix('\''))
                    .or_else(|| s.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
                    .ok_or_else(|| fault(at, "STRING argument is not quoted"))?;
                self.push_node(Node::Str(unq.to_owned()), at)?;
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => c.u32()? as usize,
                    b'C' => usize::from(c.u8()?),
                    _ => c.len_u64()?,
                };
                c.take(n)?;
                self.push_node(Node::Bytes, at)?;
            }
            0x97 | 0x98 => {
                // NEXT_BUFFER / READONLY_BUFFER: out-of-band buffers we do not have.
                if op == 0x97 {
                    self.push_node(Node::Opaque, at)?;
                }
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
            b'e' => {
                let items = self.pop_mark(at)?;
                let l = self.top(at)?;
                self.extend(l, &items);
            }
            0x90 => {
                let items = self.pop_mark(at)?;
                let s = self.top(at)?;
                self.extend(s, &items);
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
                let idx = c
                    .line_str()?
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| fault(at, "PUT index is not a number"))?;
                let t = self.top(at)?;
                self.memo.insert(idx, t);
            }
            b'q' => {
                let idx = u64::from(c.u8()?);
                let t = self.top(at)?;
                self.memo.insert(idx, t);
            }
            b'r' => {
                let idx = u64::from(c.u32()?);
                let t = self.top(at)?;
                self.memo.insert(idx, t);
            }
            0x94 => {
                let idx = self.memo.len() as u64;
                let t = self.top(at)?;
                self.memo.insert(idx, t);
            }
            b'g' | b'h' | b'j' => {
                let idx = match op {
                    b'g' => c
                        .line_str()?
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| fault(at, "GET index is not a number"))?,
                    b'h' => u64::from(c.u8()?),
                    _ => u64::from(c.u32()?),
                };
                let id = *self
                    .memo
                    .get(&idx)
                    .ok_or_else(|| fault(at, format!("memo index {idx} was never stored")))?;
                self.stack.push(id);
            }
            b'c' => {
                let module = c.line_str()?;
                let name = c.line_str()?;
                self.global(module, name, at)?;
            }
            0x93 => {
                let name = self.pop(at)?;
                let module = self.pop(at)?;
                let (m, n) = match (self.str_of(module), self.str_of(name)) {
                    (Some(m), Some(n)) => (m.to_owned(), n.to_owned()),
                    // A computed import target: record it so the scan flags it.
                    _ => ("?".to_owned(), "?".to_owned()),
                };
                self.global(m, n, at)?;
            }
            b'i' => {
                // INST: import and call with the marked arguments.
                let module = c.line_str()?;
                let name = c.line_str()?;
                self.globals.push((module, name));
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
                // EXT1/2/4: the extension registry; the target is unknowable here.
                let n = match op {
                    0x82 => 1,
                    0x83 => 2,
                    _ => 4,
                };
                c.take(n)?;
                self.globals.push(("?".into(), "copyreg extension".into()));
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
                // BUILD sets state on the object; it never changes what we extract.
                self.pop(at)?;
                self.top(at)?;
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

    /// torch's persistent ids: `('storage', StorageClass, key, location, numel[, view])`.
    fn persistent(&self, pid: usize) -> Node {
        let Some(Node::Tuple(items)) = self.nodes.get(pid) else {
            return Node::Opaque;
        };
        if items.first().and_then(|&i| self.str_of(i)) != Some("storage") {
            return Node::Opaque;
        }
        match items.get(1).and_then(|&i| self.nodes.get(i)) {
            Some(Node::Global { name, .. }) => Node::Storage {
                dtype: storage_dtype(name),
            },
            _ => Node::Storage { dtype: "UNKNOWN" },
        }
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
            Node::Str(s) => Some(s.clone()),
            Node::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    /// The tensors under `root`, flattened with `.`-joined keys. A dict holding a
    /// `state_dict` dict is unwrapped first (Lightning checkpoints).
    pub(crate) fn tensors(&self, root: usize) -> Vec<(String, Vec<u64>, &'static str)> {
        let mut root = root;
        if let Some(Node::Dict(pairs)) = self.nodes.get(root)
            && let Some(&(_, v)) = pairs.iter().find(|(k, v)| {
                self.str_of(*k) == Some("state_dict")
                    && matches!(self.nodes.get(*v), Some(Node::Dict(_)))
            })
        {
            root = v;
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.flatten(root, "", 0, &mut seen, &mut out);
        out
    }

    fn flatten(
        &self,
        id: usize,
        prefix: &str,
        depth: usize,
        seen: &mut HashSet<usize>,
        out: &mut Vec<(String, Vec<u64>, &'static str)>,
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
            match self.nodes.get(v) {
                Some(Node::Tensor { shape, dtype }) => out.push((full, shape.clone(), dtype)),
                Some(Node::Dict(_)) => self.flatten(v, &full, depth + 1, seen, out),
                _ => {}
            }
        }
    }
}

fn pairs(items: &[usize], at: usize) -> Result<Vec<(usize, usize)>, PickleFault> {
    if !items.len().is_multiple_of(2) {
        return Err(fault(at, "odd number of items for a dict"));
    }
    Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

/// The LONG1 encoding of torch's legacy magic number 0x1950a86a20f9469cfc6c.
pub(crate) const LEGACY_MAGIC_PICKLE: &[u8] = &[
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_tensor_from_torch_opcodes() {
        // {'w': _rebuild_tensor_v2(pid('storage', torch.HalfStorage, '0', 'cpu', 6), 0, (2, 3), (3, 1), False, OrderedDict())}
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'X', 1, 0, 0, 0, b'w'];
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nHalfStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtRs.");
        let mut m = Machine::default();
        let (root, end) = m.run(&p, 0).unwrap();
        assert_eq!(end, p.len());
        let t = m.tensors(root);
        assert_eq!(t, vec![("w".to_owned(), vec![2, 3], "F16")]);
        assert!(
            m.globals
                .iter()
                .any(|(a, b)| a == "torch" && b == "HalfStorage")
        );
    }

    #[test]
    fn faults_name_the_offset() {
        let mut m = Machine::default();
        let e = m.run(&[0x80, 2, b'u'], 0).unwrap_err();
        assert_eq!(e.offset, 2);
        let e = m.run(&[0x80, 2, b'N'], 0).unwrap_err();
        assert!(e.reason.contains("without STOP"), "{e}");
        let e = m.run(&[0x80, 2, 0xff], 0).unwrap_err();
        assert!(e.reason.contains("unknown opcode 0xff"), "{e}");
        let e = m.run(&[b'X', 0xff, 0xff, 0xff, 0x7f], 0).unwrap_err();
        assert!(e.reason.contains("more bytes"), "{e}");
    }

    #[test]
    fn legacy_magic_parses() {
        let mut m = Machine::default();
        let (root, end) = m.run(LEGACY_MAGIC_PICKLE, 0).unwrap();
        assert_eq!(end, LEGACY_MAGIC_PICKLE.len());
        assert!(matches!(m.nodes[root], Node::BigInt));
    }
}
