//! Adopt instead of download: before a file whose sha256 is known (the Hub's LFS oid, a
//! `models.lock` entry, an entry's `hash: sha256:…`) is fetched, the same bytes are looked
//! for on this machine, in this order:
//!
//! 1. files the store already owns: fingerprints that carry a sha256 (Hub LFS files,
//!    lock-verified files) and whose size and mtime are still as recorded. Files recorded
//!    without a sha256 are not candidates: hashing the whole store to find a donor would make
//!    every install read every model;
//! 2. the Hugging Face cache ([`crate::hub::HubEnv::hf_hub_cache`]): `models--*/blobs/<sha256>`
//!    of every repo, not only the entry's (fine-tunes share files); a repo's small (git) files
//!    are there too, named by their git blob sha1, which the Hub's listing gives as well;
//! 3. the folders of `settings.adopt_from`: any file named by its sha256 (`<hex>`,
//!    `sha256-<hex>` as Ollama names blobs, `sha256:<hex>`; another HF cache is found this
//!    way), and any file with the wanted file's name and size.
//!
//! A candidate on the destination's file system is hard-linked, else copied; either way the
//! sha256 of what landed is checked before it is used, so a cache blob whose bytes do not
//! match its name (or a same-named file with other bytes) is dropped — only modelsync's own
//! new name is removed — and the next candidate, or the download, follows. Donors are never
//! written, moved or removed; adopted bytes count as downloaded 0.
//!
//! A hard-linked file has other names (the HF cache's blob, another entry's install). Nothing
//! modelsync does writes a model file in place: a repair downloads into staging and renames
//! over the old name (the other names keep the old bytes), a delete or prune unlinks its own
//! names only, and downloads resume only their own `.part` files.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::hub::{ExpectedHash, git_blob_sha1};
use crate::store::{ModelFile, RecordStore};

/// Small (git) files above this size are not read to check them (they are downloaded).
const MAX_GIT_FILE: u64 = 64 << 20;

/// Folders deeper than this under an `adopt_from` folder are not searched.
const MAX_DEPTH: usize = 8;
/// Entries one `adopt_from` folder (or the HF cache) may list before the search stops.
const MAX_ENTRIES: usize = 200_000;

/// Where adoptable bytes are looked for, besides the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdoptSources {
    /// The Hugging Face hub cache; `None`: not searched.
    pub hf_cache: Option<PathBuf>,
    /// `settings.adopt_from`.
    pub folders: Vec<PathBuf>,
    /// Copy even where a hard link would do (the copy path across file systems, for tests).
    pub force_copy: bool,
}

/// Where adopted bytes came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Origin {
    /// A file of another record in the store.
    Store {
        /// That record's key.
        key: String,
    },
    /// The Hugging Face cache.
    HfCache,
    /// A folder of `settings.adopt_from`.
    Folder {
        /// The folder as configured.
        path: PathBuf,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store { key } => write!(f, "the store (model {key})"),
            Self::HfCache => f.write_str("the HF cache"),
            Self::Folder { path } => write!(f, "{}", path.display()),
        }
    }
}

/// A file that may hold wanted bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Donor {
    /// The file.
    pub path: PathBuf,
    /// Where it was found.
    pub origin: Origin,
}

/// One file placed by adoption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdoptedFile {
    /// The file's path in the model (`/` separators; a single file's name).
    pub path: String,
    /// Its size.
    pub size: u64,
    /// Where the bytes came from.
    pub origin: Origin,
    /// Hard-linked (true) or copied.
    pub linked: bool,
}

/// Every candidate, gathered once per install (or per `diff`).
#[derive(Debug, Default)]
pub struct BlobIndex {
    by_sha: HashMap<String, Vec<Donor>>,
    by_name: HashMap<(String, u64), Vec<Donor>>,
    force_copy: bool,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The digest a file's name says it holds, if it is named by one: a sha256 (`<hex>`,
/// `sha256-<hex>`, `sha256:<hex>`) or, as the HF cache names small files, a git blob sha1.
fn sha_of_name(name: &str) -> Option<String> {
    let hex = name
        .strip_prefix("sha256-")
        .or_else(|| name.strip_prefix("sha256:"))
        .unwrap_or(name);
    let git = hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hex64(hex) || git).then(|| hex.to_ascii_lowercase())
}

/// Whether `path` holds `size` bytes with the digest `want`.
fn holds(path: &Path, size: u64, want: &ExpectedHash) -> bool {
    if !fs::metadata(path).is_ok_and(|m| m.len() == size) {
        return false;
    }
    match want {
        ExpectedHash::Sha256(h) => {
            crate::hash::sha256_file(path).is_ok_and(|s| s.eq_ignore_ascii_case(h))
        }
        ExpectedHash::GitBlobSha1(h) => {
            size <= MAX_GIT_FILE
                && fs::read(path).is_ok_and(|b| git_blob_sha1(&b).eq_ignore_ascii_case(h))
        }
    }
}

impl BlobIndex {
    /// Looks at the store's fingerprints (when `store` is given: the store and its
    /// `models_dir`; only its files with a sha256 in `wanted`, found by one query), the HF
    /// cache and the folders. Reads names and metadata only.
    pub fn gather(
        sources: &AdoptSources,
        store: Option<(&dyn RecordStore, &Path)>,
        wanted: &[&str],
    ) -> Self {
        let mut ix = Self {
            force_copy: sources.force_copy,
            ..Self::default()
        };
        if let Some((store, models_dir)) = store {
            ix.add_store(store, models_dir, wanted);
        }
        if let Some(cache) = &sources.hf_cache {
            ix.add_hf_cache(cache);
        }
        for folder in &sources.folders {
            let origin = Origin::Folder {
                path: folder.clone(),
            };
            let mut budget = MAX_ENTRIES;
            ix.add_folder(folder, &origin, 0, &mut budget);
        }
        ix
    }

    /// Whether nothing was found anywhere.
    pub fn is_empty(&self) -> bool {
        self.by_sha.is_empty() && self.by_name.is_empty()
    }

    fn add_store(&mut self, store: &dyn RecordStore, models_dir: &Path, wanted: &[&str]) {
        let wanted: Vec<&str> = wanted.iter().copied().filter(|s| is_hex64(s)).collect();
        let Ok(files) = store.files_by_sha256(&wanted) else {
            return;
        };
        let mut roots: HashMap<String, Option<PathBuf>> = HashMap::new();
        for (key, f) in files {
            let Some(sha) = f.sha256.as_deref().filter(|s| is_hex64(s)) else {
                continue;
            };
            let root = roots.entry(key.clone()).or_insert_with(|| {
                store
                    .get_model(&key)
                    .ok()
                    .map(|r| r.resolved_path(models_dir))
            });
            let Some(root) = root else { continue };
            let path = if f.relative_path.is_empty() {
                root.clone()
            } else {
                root.join(&f.relative_path)
            };
            // Only a file as it was when its sha256 was recorded.
            let unchanged = ModelFile::fingerprint(&path, "")
                .is_ok_and(|now| now.size == f.size && now.mtime_ns == f.mtime_ns);
            if unchanged {
                self.by_sha
                    .entry(sha.to_ascii_lowercase())
                    .or_default()
                    .push(Donor {
                        path,
                        origin: Origin::Store { key: key.clone() },
                    });
            }
        }
    }

    fn add_hf_cache(&mut self, cache: &Path) {
        let Ok(repos) = fs::read_dir(cache) else {
            return;
        };
        let mut budget = MAX_ENTRIES;
        for repo in repos.flatten() {
            if !repo.file_name().to_string_lossy().starts_with("models--") {
                continue;
            }
            let Ok(blobs) = fs::read_dir(repo.path().join("blobs")) else {
                continue;
            };
            for b in blobs.flatten() {
                if budget == 0 {
                    return;
                }
                budget -= 1;
                let name = b.file_name().to_string_lossy().into_owned();
                if let Some(sha) = sha_of_name(&name)
                    && b.file_type().is_ok_and(|t| t.is_file())
                {
                    self.by_sha.entry(sha).or_default().push(Donor {
                        path: b.path(),
                        origin: Origin::HfCache,
                    });
                }
            }
        }
    }

    fn add_folder(&mut self, dir: &Path, origin: &Origin, depth: usize, budget: &mut usize) {
        let Ok(rd) = fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            // Symlinks are not followed (an HF cache's snapshots point at its blobs, which
            // are found by name anyway; a link cycle must not loop).
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            if ft.is_dir() {
                if depth < MAX_DEPTH {
                    self.add_folder(&e.path(), origin, depth + 1, budget);
                }
                continue;
            }
            let ext = Path::new(&name).extension().and_then(|e| e.to_str());
            if !ft.is_file() || matches!(ext, Some("incomplete" | "part")) {
                continue;
            }
            let donor = Donor {
                path: e.path(),
                origin: origin.clone(),
            };
            if let Some(sha) = sha_of_name(&name) {
                self.by_sha.entry(sha).or_default().push(donor);
            } else if let Ok(md) = e.metadata() {
                self.by_name
                    .entry((name, md.len()))
                    .or_default()
                    .push(donor);
            }
        }
    }

    /// The candidates for `size` bytes of digest `sha256` named `name` (its last path component),
    /// best first: the store, then the HF cache, then the folders; among those, ones on the
    /// file system of `dest_dir` (a hard link) before the others (a copy). Only files of the
    /// right size (by metadata); their content is checked when adopted.
    pub fn find(&self, sha256: &str, size: u64, name: &str, dest_dir: &Path) -> Vec<&Donor> {
        let sha = sha256.to_ascii_lowercase();
        let mut out: Vec<&Donor> = self
            .by_sha
            .get(&sha)
            .into_iter()
            .flatten()
            .chain(
                self.by_name
                    .get(&(name.to_owned(), size))
                    .into_iter()
                    .flatten(),
            )
            .filter(|d| fs::metadata(&d.path).is_ok_and(|m| m.is_file() && m.len() == size))
            .collect();
        let dev = device_of(dest_dir);
        out.sort_by_key(|d| {
            let rank = match d.origin {
                Origin::Store { .. } => 0,
                Origin::HfCache => 1,
                Origin::Folder { .. } => 2,
            };
            let other_fs = dev.is_none() || device_of(&d.path) != dev;
            (other_fs || self.force_copy, rank)
        });
        out.dedup_by(|a, b| a.path == b.path);
        out
    }

    /// The size of the first file named by `sha256` (for a download whose size is not known
    /// in advance, a URL's).
    pub fn size_of(&self, sha256: &str, _name: &str) -> Option<u64> {
        self.by_sha
            .get(&sha256.to_ascii_lowercase())?
            .iter()
            .find_map(|d| fs::metadata(&d.path).ok().filter(fs::Metadata::is_file))
            .map(|m| m.len())
    }

    /// Whether some candidate for these bytes exists, and whether it can be hard-linked into
    /// `dest_dir`.
    pub fn lookup(&self, sha256: &str, size: u64, name: &str, dest_dir: &Path) -> Option<Found> {
        let d = self.find(sha256, size, name, dest_dir).into_iter().next()?;
        Some(Found {
            origin: d.origin.clone(),
            linkable: !self.force_copy
                && device_of(dest_dir).is_some()
                && device_of(&d.path) == device_of(dest_dir),
        })
    }

    /// Puts the bytes of digest `want` (`size` bytes, named `name`) at `dest` from the first
    /// candidate whose content checks: hard-linked when on one file system, else copied, into
    /// `dest.adopt` first, then renamed over `dest`. `None` when no candidate holds them (the
    /// caller downloads). Never writes to a candidate.
    pub fn adopt(
        &self,
        want: &ExpectedHash,
        size: u64,
        name: &str,
        dest: &Path,
    ) -> Option<(Origin, bool)> {
        let parent = dest.parent()?;
        fs::create_dir_all(parent).ok()?;
        let tmp = with_suffix(dest, ".adopt");
        let digest = want.hex();
        for donor in self.find(digest, size, name, parent) {
            let _ = fs::remove_file(&tmp);
            let linked = !self.force_copy && fs::hard_link(&donor.path, &tmp).is_ok();
            if !linked && let Err(e) = fs::copy(&donor.path, &tmp) {
                tracing::debug!("adopting {} failed: {e}", donor.path.display());
                let _ = fs::remove_file(&tmp);
                continue;
            }
            if !holds(&tmp, size, want) {
                tracing::warn!(
                    "{} in {} does not hold {digest}; not adopted",
                    donor.path.display(),
                    donor.origin
                );
                // Only the new name goes; the donor is left as it is.
                let _ = fs::remove_file(&tmp);
                continue;
            }
            if fs::rename(&tmp, dest).is_err() {
                let _ = fs::remove_file(&tmp);
                return None;
            }
            // A partial download of this file from an earlier run is stale now.
            let part = with_suffix(dest, ".part");
            let _ = fs::remove_file(with_suffix(&part, ".state"));
            let _ = fs::remove_file(&part);
            return Some((donor.origin.clone(), linked));
        }
        None
    }
}

/// What [`BlobIndex::lookup`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where.
    pub origin: Origin,
    /// On the destination's file system: a hard link, no bytes written.
    pub linkable: bool,
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The file system (device) a path is on; for a path that does not exist yet, its nearest
/// existing ancestor's.
#[cfg(unix)]
fn device_of(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    p.ancestors()
        .find_map(|a| fs::metadata(a).ok())
        .map(|m| m.dev())
}

#[cfg(not(unix))]
fn device_of(p: &Path) -> Option<u64> {
    p.ancestors().find_map(|a| fs::metadata(a).ok()).map(|_| 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(b))
    }

    #[test]
    fn names_that_say_their_sha256() {
        let h = "a".repeat(64);
        assert_eq!(sha_of_name(&h), Some(h.clone()));
        assert_eq!(sha_of_name(&format!("sha256-{h}")), Some(h.clone()));
        assert_eq!(
            sha_of_name(&format!("sha256:{}", h.to_uppercase())),
            Some(h)
        );
        assert_eq!(sha_of_name("model.safetensors"), None);
        assert_eq!(sha_of_name(&"g".repeat(64)), None);
        assert_eq!(sha_of_name(&"b".repeat(40)), Some("b".repeat(40)));
    }

    #[test]
    fn forced_copy_checks_the_bytes_and_leaves_the_donor() {
        let d = tempfile::tempdir().unwrap();
        let folder = d.path().join("blobs");
        fs::create_dir_all(&folder).unwrap();
        let good = b"the right bytes".to_vec();
        let h = sha(&good);
        fs::write(folder.join(&h), &good).unwrap();
        // A same-named file elsewhere with other bytes of the same length.
        let liar = d.path().join("other");
        fs::create_dir_all(&liar).unwrap();
        fs::write(liar.join("w.bin"), b"the wrong bytes").unwrap();
        let sources = AdoptSources {
            hf_cache: None,
            folders: vec![liar.clone(), folder.clone()],
            force_copy: true,
        };
        let ix = BlobIndex::gather(&sources, None, &[]);
        let dest = d.path().join("out/w.bin");
        let want = ExpectedHash::Sha256(h.clone());
        let (origin, linked) = ix.adopt(&want, good.len() as u64, "w.bin", &dest).unwrap();
        assert!(!linked, "forced copy");
        assert_eq!(
            origin,
            Origin::Folder {
                path: folder.clone()
            }
        );
        assert_eq!(fs::read(&dest).unwrap(), good);
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            let a = fs::metadata(&dest).unwrap().ino();
            let b = fs::metadata(folder.join(&h)).unwrap().ino();
            assert_ne!(a, b, "a copy is its own file");
        }
        assert_eq!(fs::read(liar.join("w.bin")).unwrap(), b"the wrong bytes");
        assert!(!with_suffix(&dest, ".adopt").exists());
        // Only the liar: nothing adopted, nothing left behind, the liar untouched.
        let only_liar = BlobIndex::gather(
            &AdoptSources {
                folders: vec![liar.clone()],
                ..AdoptSources::default()
            },
            None,
            &[],
        );
        let dest2 = d.path().join("out2/w.bin");
        assert!(
            only_liar
                .adopt(&want, good.len() as u64, "w.bin", &dest2)
                .is_none()
        );
        assert!(!dest2.exists() && !with_suffix(&dest2, ".adopt").exists());
        assert_eq!(fs::read(liar.join("w.bin")).unwrap(), b"the wrong bytes");
    }
}
