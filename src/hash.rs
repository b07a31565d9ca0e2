//! Content hashing of model files and folders.
//!
//! Results are strings `algo:hex`. A folder's hash combines its weight files (see
//! [`WEIGHT_EXTENSIONS`]) in sorted relative-path order: each contributes its relative path and
//! its own digest, so renaming the folder changes nothing, while any byte of any weight file,
//! or renaming/moving a weight file inside the folder, does. Config and tokenizer files are
//! not part of the hash (editing a README must not make a model "changed").
//!
//! `blake3` and `blake3_single` compute the same digest (one is multi-threaded over a memory
//! map, the other single-threaded), so both report `blake3:…` and compare equal.
//!
//! `imohash` is [imohash](https://github.com/kalafut/imohash/blob/master/algorithm.md) with
//! its default parameters: files under 128 KiB are hashed whole; larger ones contribute three
//! 16 KiB samples (start, middle at `size / 2`, end), concatenated. The message is hashed with
//! MurmurHash3 x64-128 (seed 0, the two 64-bit halves big-endian, as the reference Go
//! implementation emits them) and the file size, as an unsigned LEB128 varint, replaces the
//! first bytes of the digest. The result equals `imosum`'s for the same file (the spec's test
//! vectors are checked in the tests). It costs three reads per file whatever its size, so use
//! it only where speed beats certainty.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

crate::string_enum! {
    /// A content hash algorithm. Results are strings `algo:hex`.
    #[derive(Default)]
    HashAlgorithm, "hash algorithm" {
        /// BLAKE3, multi-threaded over a memory map (the default).
        #[default]
        Blake3 = "blake3",
        /// BLAKE3 on one thread (for comparison and small machines).
        Blake3Single = "blake3_single",
        /// SHA-256.
        Sha256 = "sha256",
        /// imohash (murmur3-128 over three 16 KiB samples, size prefix): constant time per file.
        Imohash = "imohash",
    }
}

impl HashAlgorithm {
    /// The prefix of result strings (`blake3_single` shares `blake3`'s: same digest).
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Blake3 | Self::Blake3Single => "blake3",
            Self::Sha256 => "sha256",
            Self::Imohash => "imohash",
        }
    }
}

/// Extensions (lowercase) of the files a folder hash includes.
pub const WEIGHT_EXTENSIONS: &[&str] = &[
    "safetensors",
    "bin",
    "ckpt",
    "pt",
    "pth",
    "gguf",
    "onnx",
    "msgpack",
    "h5",
    "pb",
    "pkl",
    "xml",
];

/// imohash: files under this size are hashed whole.
const IMO_THRESHOLD: u64 = 128 * 1024;
/// imohash: bytes per sample.
const IMO_SAMPLE: usize = 16 * 1024;

/// Hashing failed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
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
    /// A folder without any weight file has no content hash.
    #[error("{0}: folder holds no weight files ({exts})", exts = WEIGHT_EXTENSIONS.join(", "))]
    NoWeightFiles(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HashError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            HashError::NotFound(path.to_path_buf())
        } else {
            HashError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Hashes a file or folder; returns `algo:hex`.
pub fn hash_path(path: &Path, algo: HashAlgorithm) -> Result<String, HashError> {
    hash_path_with(path, algo, &|_| None)
}

/// A file's digest (lowercase hex) under the algorithm being computed, when it is already
/// known (computed as the file was downloaded), by path relative to the hashed folder (`""`
/// for a file hashed on its own).
pub type KnownDigest<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// [`hash_path`], taking each file's digest from `known` instead of reading the file when it
/// is there. The result is the same as [`hash_path`]'s for the same bytes.
pub fn hash_path_with(
    path: &Path,
    algo: HashAlgorithm,
    known: &KnownDigest<'_>,
) -> Result<String, HashError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let hex = if meta.is_dir() {
        hash_folder(path, algo, known)?
    } else {
        match known("") {
            Some(h) => h,
            None => hex::encode(file_digest(path, algo)?),
        }
    };
    Ok(format!("{}:{hex}", algo.prefix()))
}

/// Plain lowercase hex SHA-256 of a file (download verification against hub LFS hashes).
pub fn sha256_file(path: &Path) -> Result<String, HashError> {
    Ok(hex::encode(file_digest(path, HashAlgorithm::Sha256)?))
}

fn file_digest(path: &Path, algo: HashAlgorithm) -> Result<Vec<u8>, HashError> {
    match algo {
        HashAlgorithm::Blake3 => {
            let mut h = blake3::Hasher::new();
            h.update_mmap_rayon(path).map_err(io_err(path))?;
            Ok(h.finalize().as_bytes().to_vec())
        }
        HashAlgorithm::Blake3Single => {
            let mut h = blake3::Hasher::new();
            h.update_mmap(path).map_err(io_err(path))?;
            Ok(h.finalize().as_bytes().to_vec())
        }
        HashAlgorithm::Sha256 => {
            let mut f = File::open(path).map_err(io_err(path))?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(io_err(path))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(h.finalize().to_vec())
        }
        HashAlgorithm::Imohash => imohash(path),
    }
}

fn imohash(path: &Path) -> Result<Vec<u8>, HashError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let size = f.metadata().map_err(io_err(path))?.len();
    let mut msg = Vec::new();
    if size < IMO_THRESHOLD {
        // Bounded by the threshold whatever the file claims.
        f.take(IMO_THRESHOLD)
            .read_to_end(&mut msg)
            .map_err(io_err(path))?;
    } else {
        msg.resize(3 * IMO_SAMPLE, 0);
        for (i, offset) in [0, size / 2, size - IMO_SAMPLE as u64]
            .into_iter()
            .enumerate()
        {
            f.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
            f.read_exact(&mut msg[i * IMO_SAMPLE..(i + 1) * IMO_SAMPLE])
                .map_err(io_err(path))?;
        }
    }
    Ok(imohash_digest(&msg, size).to_vec())
}

/// imohash's digest of the sampled message `msg` of a file of `size` bytes.
fn imohash_digest(msg: &[u8], size: u64) -> [u8; 16] {
    let h = murmur3::murmur3_x64_128(&mut &msg[..], 0).unwrap_or_default();
    let mut out = [0u8; 16];
    // The crate packs h1 in the low and h2 in the high half; imohash writes h1 then h2, each
    // big-endian.
    out[..8].copy_from_slice(&(h as u64).to_be_bytes());
    out[8..].copy_from_slice(&((h >> 64) as u64).to_be_bytes());
    let mut v = size;
    let mut i = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[i] = byte;
            break;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
    out
}

fn hash_folder(
    root: &Path,
    algo: HashAlgorithm,
    known: &KnownDigest<'_>,
) -> Result<String, HashError> {
    let mut files = Vec::new();
    weight_files(root, root, &mut files)?;
    if files.is_empty() {
        return Err(HashError::NoWeightFiles(root.to_path_buf()));
    }
    files.sort();
    let mut lines = String::new();
    for rel in &files {
        let d = match known(rel) {
            Some(h) => h,
            None => hex::encode(file_digest(&root.join(rel), algo)?),
        };
        lines.push_str(rel);
        lines.push('\0');
        lines.push_str(&d);
        lines.push('\n');
    }
    Ok(match algo {
        HashAlgorithm::Sha256 => hex::encode(Sha256::digest(lines.as_bytes())),
        _ => blake3::hash(lines.as_bytes()).to_hex().to_string(),
    })
}

/// Relative `/`-joined paths of weight files under `dir`; hidden entries are skipped, symlinked
/// files followed, symlinked folders not.
fn weight_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), HashError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        let ft = entry.file_type().map_err(io_err(&p))?;
        if ft.is_dir() {
            weight_files(root, &p, out)?;
            continue;
        }
        if !(ft.is_file() || (ft.is_symlink() && p.is_file())) {
            continue;
        }
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if WEIGHT_EXTENSIONS.contains(&ext.as_str()) {
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
