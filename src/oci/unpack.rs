//! Tar layers unpacked into a model folder, every entry checked: only regular files and
//! folders (links, devices and FIFOs are refused, as a Hub listing's links are), paths through
//! [`crate::hub::validate_repo_path`] (no `..`, no absolute path, no backslash or control
//! character), no file written twice, at most [`MAX_ENTRIES`] entries and `max_bytes` in all
//! (a gzip bomb stops there). Sizes a header claims are never allocated: bodies are streamed.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::OciError;
use super::manifest::Packing;

/// Most entries one layer may hold.
pub const MAX_ENTRIES: usize = 100_000;

/// How many bytes a layer of `compressed` bytes may unpack to: the same for a plain tar,
/// a hundred times as much (and 64 MiB) for gzip; weights barely compress, so a real
/// layer stays far below it.
pub fn unpacked_limit(packing: &Packing, compressed: u64) -> u64 {
    match packing {
        Packing::TarGzip => compressed.saturating_mul(100).saturating_add(64 << 20),
        _ => compressed,
    }
}

/// Unpacks the tar (or gzip tar) `blob` into `dest`; returns the files written (relative
/// `/` paths and sizes). On error the files written so far stay (the caller drops staging).
pub fn unpack(
    blob: &Path,
    packing: &Packing,
    dest: &Path,
    digest: &str,
    max_bytes: u64,
) -> Result<Vec<(String, u64)>, OciError> {
    let io_err = |source: io::Error| OciError::Unpack {
        digest: digest.to_owned(),
        source,
    };
    let file = BufReader::new(File::open(blob).map_err(io_err)?);
    let reader: Box<dyn Read> = match packing {
        Packing::Tar => Box::new(file),
        Packing::TarGzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Packing::Raw(_) => {
            return Err(io_err(io::Error::other("a raw layer is not an archive")));
        }
    };
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    let mut total = 0u64;
    let refuse = |what: String| io_err(io::Error::new(io::ErrorKind::InvalidData, what));
    for (n, entry) in archive.entries().map_err(io_err)?.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(refuse(format!("more than {MAX_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(io_err)?;
        let kind = entry.header().entry_type();
        let raw_path = entry.path_bytes().into_owned();
        let Ok(path) = String::from_utf8(raw_path.clone()) else {
            return Err(refuse(format!(
                "entry {:?} is not a UTF-8 path",
                String::from_utf8_lossy(&raw_path)
            )));
        };
        let rel = path
            .strip_prefix("./")
            .unwrap_or(&path)
            .trim_end_matches('/');
        if kind.is_pax_global_extensions() || rel.is_empty() && kind.is_dir() {
            continue;
        }
        crate::hub::validate_repo_path(digest, rel)?;
        let target = dest.join(rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io_err)?;
            continue;
        }
        if !kind.is_file() {
            return Err(refuse(format!(
                "entry {rel:?} is a {}, and only files and folders are unpacked",
                kind_name(kind)
            )));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_err)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    refuse(format!("the file {rel:?} is written twice"))
                } else {
                    io_err(e)
                }
            })?;
        let left = max_bytes.saturating_sub(total);
        let copied = io::copy(&mut (&mut entry).take(left + 1), &mut f).map_err(io_err)?;
        if copied > left {
            return Err(refuse(format!("it unpacks to more than {max_bytes} bytes")));
        }
        total += copied;
        out.push((rel.to_owned(), copied));
    }
    Ok(out)
}

fn kind_name(k: tar::EntryType) -> &'static str {
    match k {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char | tar::EntryType::Block => "device",
        tar::EntryType::Fifo => "FIFO",
        _ => "special entry",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // `set_path` refuses `..`; write the name bytes as a hostile producer would.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn files_and_folders_unpack() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(
            &blob,
            tar_with(|b| {
                file(b, "./a/config.json", b"{}");
                file(b, "b.txt", b"hi");
            }),
        )
        .unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let got = unpack(&blob, &Packing::Tar, &dest, "d", 1000).unwrap();
        assert_eq!(got, [("a/config.json".into(), 2), ("b.txt".into(), 2)]);
        assert_eq!(std::fs::read(dest.join("b.txt")).unwrap(), b"hi");
    }

    #[test]
    fn hostile_entries_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in [
            ("dotdot", tar_with(|b| file(b, "../escape", b"x"))),
            ("abs", tar_with(|b| file(b, "/etc/x", b"x"))),
            (
                "twice",
                tar_with(|b| {
                    file(b, "a", b"x");
                    file(b, "a", b"y");
                }),
            ),
            (
                "link",
                tar_with(|b| {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, "l", "/etc/passwd").unwrap();
                }),
            ),
            ("big", tar_with(|b| file(b, "f", &[0u8; 2000]))),
        ] {
            let blob = dir.path().join(name);
            std::fs::write(&blob, data).unwrap();
            let dest = dir.path().join(format!("{name}.out"));
            std::fs::create_dir(&dest).unwrap();
            assert!(
                unpack(&blob, &Packing::Tar, &dest, "d", 1000).is_err(),
                "{name}"
            );
        }
        assert!(!dir.path().join("escape").exists());
    }
}
