//! Pickle safety scan, in the spirit of picklescan / modelscan.
//!
//! Loading a pickle runs whatever callables it imports, so a `.ckpt` from the internet can run
//! `os.system`. This module lists every global a pickle would hand to `find_class` — without
//! executing anything, decoding names exactly as CPython does (see [`crate::probe::pickle`]) —
//! and classifies each against an allow-list (tensor and storage rebuilds, `OrderedDict`,
//! numpy array reconstruction …) and a deny-list (`os`, `subprocess`, `builtins.eval`, dotted
//! protocol-4 names through dunder attributes …).
//!
//! Verdicts: [`ScanVerdict::Dangerous`] when any import is on the deny-list;
//! [`ScanVerdict::Suspicious`] when an import is on neither list or a pickle could not be
//! followed to its end; [`ScanVerdict::Clean`] otherwise. Installs and the load gate accept
//! only clean files (unless the entry says `unsafe_pickle: allow`). A file counts as
//! safetensors or GGUF, and so code-free, only when its header parses as one.
//!
//! # Memory ceiling
//!
//! Probing or scanning any single input uses at most 256 MiB of memory, whatever the file
//! claims: per pickle at most 2,000,000 pushes (values, `DUP`, memo `GET` …), 32 MiB of text and
//! 10,000 distinct globals; zip archives with a directory over 32 MiB / 200,000 entries are
//! refused, and `.pkl` members are streamed (never read whole) with a 256 MiB byte budget;
//! safetensors headers are capped at 100 MB and GGUF metadata kept at 16 MiB. Hitting a bound
//! is a fault of that file (suspicious, or a probe error), never of the process.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::probe::pickle::{Cursor, Machine, is_legacy_torch_save};

/// Bytes of one `.pkl` member of a zip archive we read, decompressed (torch's `data.pkl` is a
/// few MB at most); a member is streamed, so this bounds time, not memory.
pub(crate) const MAX_PKL_MEMBER: u64 = 256 << 20;
/// Entries a zip archive's directory may declare (a torch save has one per tensor, plus 4).
pub(crate) const MAX_ZIP_ENTRIES: u64 = 200_000;
/// Bytes a zip archive's central directory may declare.
pub(crate) const MAX_ZIP_DIRECTORY: u64 = 32 << 20;

crate::string_enum! {
    /// How an imported global is judged.
    GlobalClass, "global class" {
        /// On the allow-list: tensor rebuilds, containers, numpy arrays.
        Safe = "safe",
        /// On neither list: may be harmless (Lightning callbacks) but cannot be vouched for.
        Unknown = "unknown",
        /// On the deny-list: can run commands, import code, open files or sockets.
        Dangerous = "dangerous",
    }
}

crate::string_enum! {
    /// The overall result of a scan.
    ScanVerdict, "scan verdict" {
        /// Only allow-listed imports (or no pickles at all).
        Clean = "clean",
        /// Imports on neither list, or a pickle that could not be read to its end.
        Suspicious = "suspicious",
        /// At least one deny-listed import.
        Dangerous = "dangerous",
    }
}

/// One global imported by a pickle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PickleGlobal {
    /// Module, e.g. `torch._utils`. `?` when the target was computed at load time.
    pub module: String,
    /// Attribute, e.g. `_rebuild_tensor_v2`.
    pub name: String,
    /// The file (relative to the scanned folder) and, for zip archives, `:member`.
    pub file: String,
    /// The judgement.
    pub class: GlobalClass,
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    /// Worst finding.
    pub verdict: ScanVerdict,
    /// Every distinct (file, module, name) imported, in stream order.
    pub globals: Vec<PickleGlobal>,
    /// Files looked at (safetensors/GGUF count, other non-weight files do not).
    pub files_scanned: usize,
    /// Pickles that could not be followed to their end, and why.
    pub problems: Vec<String>,
    /// (file, module, name) of `globals`, for O(1) de-duplication.
    #[serde(skip)]
    seen: HashSet<(String, String, String)>,
}

impl Default for ScanReport {
    fn default() -> Self {
        Self {
            verdict: ScanVerdict::Clean,
            globals: Vec::new(),
            files_scanned: 0,
            problems: Vec::new(),
            seen: HashSet::new(),
        }
    }
}

impl ScanReport {
    /// The deny-listed imports.
    pub fn dangerous(&self) -> impl Iterator<Item = &PickleGlobal> {
        self.globals
            .iter()
            .filter(|g| g.class == GlobalClass::Dangerous)
    }

    fn add_global(&mut self, file: &str, module: &str, name: &str) {
        if !self
            .seen
            .insert((file.to_owned(), module.to_owned(), name.to_owned()))
        {
            return;
        }
        self.globals.push(PickleGlobal {
            module: module.to_owned(),
            name: name.to_owned(),
            file: file.to_owned(),
            class: classify(module, name),
        });
    }

    fn finish(&mut self) {
        self.verdict = if self.dangerous().next().is_some() {
            ScanVerdict::Dangerous
        } else if !self.problems.is_empty()
            || self.globals.iter().any(|g| g.class != GlobalClass::Safe)
        {
            ScanVerdict::Suspicious
        } else {
            ScanVerdict::Clean
        };
    }
}

/// A scan that could not be done at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The path does not exist.
    #[error("{0}: no such file or folder")]
    NotFound(PathBuf),
    /// Reading failed.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A zip archive's directory is unreadable.
    #[error("{path}: not a readable zip archive: {reason}")]
    Zip { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ScanError + '_ {
    move |source| ScanError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Modules whose every attribute is dangerous (matched as the module or a parent package).
const DANGEROUS_MODULES: &[&str] = &[
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "runpy",
    "socket",
    "shutil",
    "webbrowser",
    "pty",
    "commands",
    "pickle",
    "_pickle",
    "cPickle",
    "marshal",
    "importlib",
    "imp",
    "ctypes",
    "multiprocessing",
    "code",
    "codeop",
    "pdb",
    "bdb",
    "timeit",
    "platform",
    "signal",
    "asyncio",
    "requests",
    "httpx",
    "aiohttp",
    "urllib",
    "urllib2",
    "http",
    "httplib",
    "ftplib",
    "telnetlib",
    "smtplib",
    "tempfile",
    "glob",
    "pathlib",
    "io",
    "_io",
    "operator",
    "functools",
    "torch.hub",
    "torch.load",
];

/// Builtins that reach code, files or the interpreter: dangerous from `builtins` and Python
/// 2's `__builtin__`, and as any step of a dotted protocol-4 name.
const CODE_BUILTINS: &[&str] = &[
    "eval",
    "exec",
    "execfile",
    "compile",
    "open",
    "getattr",
    "setattr",
    "delattr",
    "__import__",
    "globals",
    "locals",
    "vars",
    "input",
    "breakpoint",
];

/// Dangerous attributes of otherwise harmless modules, besides [`CODE_BUILTINS`].
const DANGEROUS_NAMES: &[(&str, &[&str])] = &[
    ("builtins", &["exit", "quit", "help", "memoryview"]),
    ("__builtin__", &["file", "raw_input", "apply", "reload"]),
    ("torch", &["load", "save"]),
    ("torch.serialization", &["load", "_load"]),
    ("numpy", &["load", "fromfile"]),
    ("numpy.testing._private.utils", &["runstring"]),
];

/// The allow-list.
const SAFE_NAMES: &[(&str, &[&str])] = &[
    (
        "torch._utils",
        &[
            "_rebuild_tensor",
            "_rebuild_tensor_v2",
            "_rebuild_tensor_v3",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
            "_rebuild_qtensor",
            "_rebuild_sparse_tensor",
            "_rebuild_device_tensor_from_numpy",
            "_rebuild_meta_tensor_no_storage",
            "_rebuild_wrapper_subclass",
            "_rebuild_nested_tensor",
        ],
    ),
    (
        "torch",
        &[
            "FloatStorage",
            "HalfStorage",
            "BFloat16Storage",
            "DoubleStorage",
            "LongStorage",
            "IntStorage",
            "ShortStorage",
            "CharStorage",
            "ByteStorage",
            "BoolStorage",
            "ComplexFloatStorage",
            "ComplexDoubleStorage",
            "QInt8Storage",
            "QUInt8Storage",
            "QInt32Storage",
            "Float8_e4m3fnStorage",
            "Float8_e5m2Storage",
            "UntypedStorage",
            "Tensor",
            "Size",
            "device",
            "complex64",
            "complex128",
            "float8_e4m3fn",
            "float8_e5m2",
            "float16",
            "float32",
            "float64",
            "bfloat16",
            "int8",
            "uint8",
            "int16",
            "int32",
            "int64",
            "bool",
            "per_tensor_affine",
            "strided",
            "sparse_coo",
        ],
    ),
    ("torch.storage", &["UntypedStorage", "TypedStorage"]),
    ("torch._tensor", &["_rebuild_from_type_v2"]),
    ("torch.nn.parameter", &["Parameter"]),
    ("collections", &["OrderedDict", "defaultdict", "deque"]),
    ("numpy", &["ndarray", "dtype"]),
    ("numpy.core.multiarray", &["_reconstruct", "scalar"]),
    ("numpy._core.multiarray", &["_reconstruct", "scalar"]),
    ("_codecs", &["encode"]),
    (
        "builtins",
        &[
            "set",
            "frozenset",
            "dict",
            "list",
            "tuple",
            "int",
            "float",
            "complex",
            "bool",
            "str",
            "bytes",
            "bytearray",
            "slice",
            "range",
        ],
    ),
    (
        "__builtin__",
        &[
            "set",
            "frozenset",
            "dict",
            "list",
            "tuple",
            "int",
            "long",
            "float",
            "complex",
            "bool",
            "str",
            "unicode",
            "bytearray",
            "slice",
        ],
    ),
];

/// Attribute names besides [`CODE_BUILTINS`] that reach code, files or the interpreter
/// wherever they are found (matched against every component of a dotted protocol-4 name).
const DANGEROUS_ATTRS: &[&str] = &[
    "system",
    "popen",
    "spawn",
    "load",
    "loads",
    "_load",
    "fromfile",
    "runstring",
    "call",
    "run",
    "apply",
];

/// Judges one import as `find_class(module, name)` would resolve it. Protocol 4 resolves a
/// dotted `name` attribute by attribute (`builtins` + `len.__self__.eval` is `eval`), so a
/// dotted name is never on the allow-list, and is dangerous when any step is a dunder
/// attribute or a dangerous name, or when the module path it spells is deny-listed.
pub fn classify(module: &str, name: &str) -> GlobalClass {
    if module == "?" {
        // Computed import target (STACK_GLOBAL of non-constant strings) or the copyreg
        // extension registry: only an attacker has a reason to do that.
        return GlobalClass::Dangerous;
    }
    let denied_module = |m: &str| {
        DANGEROUS_MODULES
            .iter()
            .any(|d| m == *d || m.strip_prefix(d).is_some_and(|r| r.starts_with('.')))
    };
    if denied_module(module) || denied_module(&format!("{module}.{name}")) {
        return GlobalClass::Dangerous;
    }
    let code_builtin = |n: &str| CODE_BUILTINS.contains(&n);
    if (matches!(module, "builtins" | "__builtin__") && code_builtin(name))
        || DANGEROUS_NAMES
            .iter()
            .any(|(m, names)| *m == module && names.contains(&name))
    {
        return GlobalClass::Dangerous;
    }
    if name.contains('.') || (name.starts_with("__") && name.ends_with("__")) {
        let steps: Vec<&str> = name.split('.').collect();
        let dunder = steps
            .iter()
            .any(|s| s.starts_with("__") && s.ends_with("__"));
        let bad = steps
            .iter()
            .any(|s| code_builtin(s) || DANGEROUS_ATTRS.contains(s));
        let mut path = module.to_owned();
        let mut denied = false;
        for s in &steps {
            path.push('.');
            path.push_str(s);
            denied |= denied_module(&path);
        }
        return if dunder || bad || denied {
            GlobalClass::Dangerous
        } else {
            GlobalClass::Unknown
        };
    }
    if SAFE_NAMES
        .iter()
        .any(|(m, names)| *m == module && names.contains(&name))
    {
        return GlobalClass::Safe;
    }
    GlobalClass::Unknown
}

/// What the pickles of one file hold: the tensors of its state dict and the imports.
#[derive(Debug, Default)]
pub(crate) struct PickleContents {
    /// (name, shape, dtype) of each tensor of the main object (nested `state_dict` unwrapped).
    pub tensors: Vec<(String, Vec<u64>, &'static str)>,
    /// The scan of this file alone (labels relative to `label`).
    pub report: ScanReport,
    /// Zip archive without a `*/data.pkl`: not a torch save.
    pub zip_without_data_pkl: bool,
    /// The main object's pickle could not be followed.
    pub main_fault: Option<String>,
}

/// Whether a file starts like a zip archive.
fn is_zip(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")
}

/// Runs the pickles of a torch file (zip save or legacy/plain pickle) through the machine.
/// `label` names the file in the report.
pub(crate) fn read_pickle_file(path: &Path, label: &str) -> Result<PickleContents, ScanError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut head = [0u8; 4];
    let n = read_up_to(&mut file, &mut head).map_err(io_err(path))?;
    let mut out = PickleContents::default();
    out.report.files_scanned = 1;
    if is_zip(&head[..n]) {
        read_zip(path, file, label, &mut out)?;
    } else {
        let len = file.metadata().map_err(io_err(path))?.len();
        if len == 0 {
            out.main_fault = Some("empty file".into());
            out.report.problems.push(format!("{label}: empty file"));
        } else {
            // SAFETY: read-only map; a concurrent truncation could fault, as with any mmap
            // reader — model files are not rewritten in place by modelsync.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
            let legacy = is_legacy_torch_save(&map[..]);
            read_stream(&map[..], legacy, label, true, &mut out);
        }
    }
    out.report.finish();
    Ok(out)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The largest entry count and central-directory size any end-of-central-directory record in
/// the last 64 KiB of `file` declares (zip64 included), so a hostile directory is refused
/// before the zip reader allocates for it.
pub(crate) fn zip_directory_claims(file: &mut File) -> std::io::Result<(u64, u64)> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata()?.len();
    let tail_len = len.min(65_557);
    file.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; usize::try_from(tail_len).unwrap_or(0)];
    file.read_exact(&mut tail)?;
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x));
    let (mut entries, mut size) = (0u64, 0u64);
    for i in (0..tail.len().saturating_sub(21)).rev() {
        if &tail[i..i + 4] != b"PK\x05\x06" {
            continue;
        }
        let (mut e, mut s) = (le(&tail[i + 10..i + 12]), le(&tail[i + 12..i + 16]));
        if (e == 0xffff || s == 0xffff_ffff) && i >= 20 && &tail[i - 20..i - 16] == b"PK\x06\x07" {
            let at = le(&tail[i - 12..i - 4]);
            let mut rec = [0u8; 56];
            if file.seek(SeekFrom::Start(at)).is_ok()
                && file.read_exact(&mut rec).is_ok()
                && &rec[..4] == b"PK\x06\x06"
            {
                e = e.max(le(&rec[32..40]));
                s = s.max(le(&rec[40..48]));
            }
        }
        entries = entries.max(e);
        size = size.max(s);
    }
    file.seek(SeekFrom::Start(0))?;
    Ok((entries, size))
}

fn read_zip(
    path: &Path,
    mut file: File,
    label: &str,
    out: &mut PickleContents,
) -> Result<(), ScanError> {
    let zip_err = |reason: String| ScanError::Zip {
        path: path.to_path_buf(),
        reason,
    };
    let (entries, dir_size) = zip_directory_claims(&mut file).map_err(io_err(path))?;
    if entries > MAX_ZIP_ENTRIES || dir_size > MAX_ZIP_DIRECTORY {
        return Err(zip_err(format!(
            "its directory claims {entries} entries in {dir_size} bytes, more than the \
             {MAX_ZIP_ENTRIES} entries / {MAX_ZIP_DIRECTORY} bytes read"
        )));
    }
    let mut zip = zip::ZipArchive::new(file).map_err(|e| zip_err(e.to_string()))?;
    // Every `.pkl` entry, by index: a name may appear twice and either copy may be the one
    // a loader picks.
    let pkl: Vec<(usize, String)> = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(|n| (i, n.to_owned())))
        .filter(|(_, n)| {
            Path::new(n)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("pkl"))
        })
        .collect();
    // torch writes `<archive name>/data.pkl`; the archive name is the file stem by default.
    let data_pkl = pkl
        .iter()
        .find(|(_, n)| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(|(i, _)| *i);
    out.zip_without_data_pkl = data_pkl.is_none();
    for (index, name) in &pkl {
        let member_label = format!("{label}:{name}");
        let member = match zip.by_index(*index) {
            Ok(m) => m,
            Err(e) => {
                out.report.problems.push(format!("{member_label}: {e}"));
                continue;
            }
        };
        // Streamed, never read whole: a bomb stops at the byte budget.
        let mut limited = std::io::BufReader::new(member.take(MAX_PKL_MEMBER));
        let is_main = data_pkl == Some(*index);
        read_stream(&mut limited, false, &member_label, is_main, out);
        if limited.get_ref().limit() == 0 {
            out.report.problems.push(format!(
                "{member_label}: more than the {MAX_PKL_MEMBER} bytes read of a pickle member"
            ));
        }
    }
    Ok(())
}

/// Follows every pickle in `data`: torch's legacy layout (magic, protocol, sys info, object,
/// storage keys, raw storages) or a plain pickle, plus any pickles stacked right after it
/// (a known trick to hide a payload behind a harmless first pickle).
fn read_stream<R: std::io::BufRead>(
    data: R,
    legacy: bool,
    label: &str,
    is_main: bool,
    out: &mut PickleContents,
) {
    // In the legacy layout the object is the 4th pickle and a 5th lists storage keys.
    let (main_index, max_pickles) = if legacy { (3, 5) } else { (0, usize::MAX) };
    let mut machine = Machine::default();
    let mut cursor = Cursor::new(data);
    let mut index = 0;
    let fault = loop {
        if index >= max_pickles {
            break None;
        }
        match cursor.peek() {
            Ok(None) => break None,
            Ok(Some(b)) if index > main_index && !legacy && b != 0x80 => break None,
            Ok(_) => {}
            Err(f) => break Some(f),
        }
        match machine.run(&mut cursor) {
            Ok(root) => {
                if is_main && index == main_index {
                    out.tensors = machine.tensors(root);
                }
            }
            Err(f) => break Some(f),
        }
        index += 1;
    };
    for (m, n) in &machine.globals {
        out.report.add_global(label, m, n);
    }
    for note in &machine.notes {
        out.report.problems.push(format!("{label}: {note}"));
    }
    if let Some(f) = fault {
        let msg = format!("{label}: pickle {} unreadable {f}", index + 1);
        if is_main && index <= main_index {
            out.main_fault = Some(msg.clone());
        }
        out.report.problems.push(msg);
    }
}

/// Whether a file is safetensors or GGUF — its header parses as one (the length prefix and a
/// `{` are not enough: a pickle can start like that) — and so holds no code.
fn is_code_free(path: &Path, file: &mut File, head: &[u8], len: u64) -> bool {
    if head.starts_with(b"GGUF") {
        // SAFETY: read-only map, as in `read_pickle_file`.
        return unsafe { memmap2::Mmap::map(&*file) }
            .is_ok_and(|map| crate::probe::gguf::read_header(path, &map).is_ok());
    }
    if head.len() >= 9 && head[8] == b'{' {
        return crate::probe::safetensors::read_header(path, file, head, len).is_ok_and(|buf| {
            crate::probe::safetensors::parse_header_json(path, &buf, len).is_ok()
        });
    }
    false
}

/// Extensions of files a folder scan reads; any other file is read when its first byte is
/// a pickle PROTO opcode.
const SCANNED_EXTENSIONS: &[&str] = &[
    "ckpt",
    "pt",
    "pth",
    "bin",
    "pkl",
    "pickle",
    "joblib",
    "safetensors",
    "sft",
    "gguf",
    "dat",
    "data",
    "npy",
    "npz",
    "zip",
];

fn scan_file(path: &Path, label: &str, report: &mut ScanReport) -> Result<(), ScanError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    let mut head = [0u8; 16];
    let n = read_up_to(&mut f, &mut head).map_err(io_err(path))?;
    if is_code_free(path, &mut f, &head[..n], len) {
        report.files_scanned += 1;
        // Defence in depth: a header that parses can still open with pickle opcodes; what
        // the machine resolves from byte 0 before it stops is reported (nothing, for files
        // real writers make).
        // SAFETY: read-only map, as in `read_pickle_file`.
        if let Ok(map) = unsafe { memmap2::Mmap::map(&f) } {
            let mut c = PickleContents::default();
            read_stream(&map[..], false, label, false, &mut c);
            for g in c.report.globals {
                report.add_global(&g.file, &g.module, &g.name);
            }
        }
        return Ok(());
    }
    drop(f);
    let c = read_pickle_file(path, label)?;
    report.files_scanned += c.report.files_scanned;
    for g in c.report.globals {
        report.add_global(&g.file, &g.module, &g.name);
    }
    report.problems.extend(c.report.problems);
    Ok(())
}

/// Runs the scan's stream reader over `data`, as a file and as a zip member (for the fuzz
/// loops).
#[cfg(test)]
pub(crate) fn scan_bytes_for_fuzz(data: &[u8]) -> ScanReport {
    let mut out = PickleContents::default();
    read_stream(data, is_legacy_torch_save(data), "f", true, &mut out);
    read_stream(
        std::io::BufReader::with_capacity(7, data),
        false,
        "m",
        true,
        &mut out,
    );
    out.report.finish();
    out.report
}

/// Whether a file's first byte is a pickle PROTO opcode.
fn starts_like_pickle(path: &Path) -> bool {
    let mut b = [0u8; 1];
    File::open(path).is_ok_and(|mut f| read_up_to(&mut f, &mut b).is_ok_and(|n| n == 1))
        && b[0] == 0x80
}

/// Scans a file or every weight/pickle file under a folder. Nothing is ever executed.
pub fn scan_path(path: &Path) -> Result<ScanReport, ScanError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ScanError::NotFound(path.to_path_buf())
        } else {
            ScanError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    let mut report = ScanReport::default();
    if meta.is_dir() {
        let mut files = Vec::new();
        collect_files(path, path, &mut files)?;
        files.sort();
        for rel in files {
            let ext = Path::new(&rel)
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .unwrap_or_default();
            let full = path.join(&rel);
            if SCANNED_EXTENSIONS.contains(&ext.as_str()) || starts_like_pickle(&full) {
                scan_file(&full, &rel, &mut report)?;
            }
        }
    } else {
        let label = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        scan_file(path, &label, &mut report)?;
    }
    report.finish();
    Ok(report)
}

/// Relative paths (`/`-separated) of the regular files under `dir`, skipping hidden entries.
/// Symlinked files are followed; symlinked folders are not (no cycles).
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), ScanError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        let ft = entry.file_type().map_err(io_err(&p))?;
        if ft.is_dir() {
            collect_files(root, &p, out)?;
        } else if ft.is_file() || (ft.is_symlink() && p.is_file()) {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            classify("torch._utils", "_rebuild_tensor_v2"),
            GlobalClass::Safe
        );
        assert_eq!(classify("collections", "OrderedDict"), GlobalClass::Safe);
        assert_eq!(classify("posix", "system"), GlobalClass::Dangerous);
        assert_eq!(classify("os.path", "join"), GlobalClass::Dangerous);
        assert_eq!(classify("builtins", "eval"), GlobalClass::Dangerous);
        assert_eq!(classify("builtins", "set"), GlobalClass::Safe);
        assert_eq!(classify("torch", "load"), GlobalClass::Dangerous);
        assert_eq!(classify("?", "?"), GlobalClass::Dangerous);
        // Dotted protocol-4 names resolve attribute by attribute.
        assert_eq!(
            classify("builtins", "len.__self__.eval"),
            GlobalClass::Dangerous
        );
        assert_eq!(
            classify("collections", "OrderedDict.__init__.__globals__"),
            GlobalClass::Dangerous
        );
        assert_eq!(classify("torch", "hub.load"), GlobalClass::Dangerous);
        assert_eq!(
            classify("collections", "OrderedDict.fromkeys"),
            GlobalClass::Unknown
        );
        assert_eq!(
            classify("torch", "_utils._rebuild_tensor_v2"),
            GlobalClass::Unknown
        );
        assert_eq!(
            classify("builtins", "__build_class__"),
            GlobalClass::Dangerous
        );
        assert_eq!(classify("ossify", "x"), GlobalClass::Unknown);
        assert_eq!(
            classify(
                "pytorch_lightning.callbacks.model_checkpoint",
                "ModelCheckpoint"
            ),
            GlobalClass::Unknown
        );
    }
}
