//! Local sources: staging a copy (hardlinks on the same filesystem, else copies) of the files
//! `include`/`exclude` select, and deleting a record's files.

use std::fs;
use std::path::{Path, PathBuf};

use globset::GlobSet;

use super::error::InstallError;

/// Which files of a local source to take: `include`/`exclude` globs over each file's path
/// relative to the source folder (`/`-separated; a single-file source: its file name), with
/// the semantics of Hub repos (globset, `*` also matches `/`): a file is taken when it matches
/// some include (or there is none) and no exclude. Symlinks are followed, as in the copy.
#[derive(Debug, Default)]
pub struct LocalSelection {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    patterns: (Vec<String>, Vec<String>),
}

impl LocalSelection {
    /// The selection of `include` and `exclude` (both empty: every file).
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, InstallError> {
        let bad = |e: crate::hub::SelectError, option| InstallError::InvalidOption {
            option,
            reason: e.to_string(),
        };
        Ok(Self {
            include: crate::hub::select::globset("include", include)
                .map_err(|e| bad(e, "include"))?,
            exclude: crate::hub::select::globset("exclude", exclude)
                .map_err(|e| bad(e, "exclude"))?,
            patterns: (include.to_vec(), exclude.to_vec()),
        })
    }

    /// Whether every file is taken.
    pub fn is_all(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// Whether the file at `rel` (relative, `/`-separated) is taken.
    pub fn takes(&self, rel: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(rel))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(rel))
    }

    /// The files of `src` this selection takes, as (absolute path, relative path), sorted.
    pub fn files(&self, src: &Path) -> Result<Vec<(PathBuf, String)>, InstallError> {
        let md = metadata(src)?;
        let mut out = Vec::new();
        if md.is_dir() {
            walk(src, "", &mut out)?;
        } else {
            let name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((src.to_path_buf(), name));
        }
        out.retain(|(_, rel)| self.takes(rel));
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// The error for a source of which nothing is taken.
    fn nothing_left(&self, src: &Path) -> InstallError {
        let mut what = Vec::new();
        if !self.patterns.0.is_empty() {
            what.push(format!("include [{}]", self.patterns.0.join(", ")));
        }
        if !self.patterns.1.is_empty() {
            what.push(format!("exclude [{}]", self.patterns.1.join(", ")));
        }
        InstallError::InvalidOption {
            option: if self.patterns.0.is_empty() {
                "exclude"
            } else {
                "include"
            },
            reason: format!(
                "no file of {} is left after {}",
                src.display(),
                what.join(" and ")
            ),
        }
    }
}

fn metadata(src: &Path) -> Result<fs::Metadata, InstallError> {
    fs::metadata(src).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            InstallError::NotFound(src.to_path_buf())
        } else {
            InstallError::io("reading", src, e)
        }
    })
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(PathBuf, String)>) -> Result<(), InstallError> {
    let rd = fs::read_dir(dir).map_err(|e| InstallError::io("reading", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| InstallError::io("reading", dir, e))?;
        let p = entry.path();
        let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if metadata(&p)?.is_dir() {
            walk(&p, &format!("{rel}/"), out)?;
        } else {
            out.push((p, rel));
        }
    }
    Ok(())
}

/// Bytes the selected files of `src` hold (what staging it copies; no content read).
pub fn selected_size(src: &Path, sel: &LocalSelection) -> Result<u64, InstallError> {
    let mut total = 0u64;
    for (p, _) in sel.files(src)? {
        total = total.saturating_add(metadata(&p)?.len());
    }
    Ok(total)
}

/// [`link_or_copy`] of only the files `sel` takes from folder `src` (their relative paths kept
/// under `dst`). Every file is taken when the selection is empty; none left is an error.
pub(crate) fn link_or_copy_selected(
    src: &Path,
    dst: &Path,
    sel: &LocalSelection,
) -> Result<bool, InstallError> {
    if sel.is_all() {
        return link_or_copy(src, dst);
    }
    let files = sel.files(src)?;
    if files.is_empty() {
        return Err(sel.nothing_left(src));
    }
    if !metadata(src)?.is_dir() {
        return link_or_copy(src, dst);
    }
    fs::create_dir_all(dst).map_err(|e| InstallError::io("creating folder", dst, e))?;
    let mut all_linked = true;
    for (p, rel) in files {
        all_linked &= link_or_copy(&p, &dst.join(rel))?;
    }
    Ok(all_linked)
}

/// Places `src` (file or folder) at `dst`: each file hardlinked when possible (same
/// filesystem), else copied. Symlinks are followed. Returns whether every file was linked.
pub(crate) fn link_or_copy(src: &Path, dst: &Path) -> Result<bool, InstallError> {
    let md = fs::metadata(src).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            InstallError::NotFound(src.to_path_buf())
        } else {
            InstallError::io("reading", src, e)
        }
    })?;
    if md.is_dir() {
        fs::create_dir_all(dst).map_err(|e| InstallError::io("creating folder", dst, e))?;
        let mut all_linked = true;
        let rd = fs::read_dir(src).map_err(|e| InstallError::io("reading", src, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| InstallError::io("reading", src, e))?;
            all_linked &= link_or_copy(&entry.path(), &dst.join(entry.file_name()))?;
        }
        Ok(all_linked)
    } else {
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| InstallError::io("creating folder", parent, e))?;
        }
        if fs::hard_link(src, dst).is_ok() {
            return Ok(true);
        }
        fs::copy(src, dst).map_err(|e| InstallError::io("copying to", dst, e))?;
        Ok(false)
    }
}

/// Removes a file or folder (a symlink is removed as a link, never followed).
pub(crate) fn remove_path(p: &Path) -> Result<bool, InstallError> {
    let md = match fs::symlink_metadata(p) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(InstallError::io("inspecting", p, e)),
    };
    if md.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    }
    .map_err(|e| InstallError::io("deleting", p, e))?;
    Ok(true)
}

/// Whether `target` lies strictly inside `models_dir` (folders resolved through symlinks, the
/// last component not followed).
pub(crate) fn is_inside(models_dir: &Path, target: &Path) -> bool {
    let Ok(root) = models_dir.canonicalize() else {
        return false;
    };
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return false;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let Ok(real_parent) = parent.canonicalize() else {
        return false;
    };
    let real: PathBuf = real_parent.join(name);
    real != root && real.starts_with(&root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_or_copies_trees() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("src/sub")).unwrap();
        fs::write(d.path().join("src/a"), b"a").unwrap();
        fs::write(d.path().join("src/sub/b"), b"b").unwrap();
        let linked = link_or_copy(&d.path().join("src"), &d.path().join("dst")).unwrap();
        assert!(linked);
        assert_eq!(fs::read(d.path().join("dst/sub/b")).unwrap(), b"b");
        assert!(is_inside(d.path(), &d.path().join("dst")));
        assert!(!is_inside(&d.path().join("dst"), &d.path().join("src")));
        assert!(!is_inside(d.path(), d.path()));
        assert!(remove_path(&d.path().join("dst")).unwrap());
        assert!(!remove_path(&d.path().join("dst")).unwrap());
    }

    #[test]
    fn selections_take_what_the_globs_say() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        for f in [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "vae/diffusion_pytorch_model.bin",
        ] {
            fs::create_dir_all(src.join(f).parent().unwrap()).unwrap();
            fs::write(src.join(f), f).unwrap();
        }
        let sel = |i: &[&str], e: &[&str]| {
            let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
            LocalSelection::new(&v(i), &v(e)).unwrap()
        };
        let rels = |s: &LocalSelection| -> Vec<String> {
            s.files(&src).unwrap().into_iter().map(|f| f.1).collect()
        };
        // `*` crosses folders, as for Hub repos.
        assert_eq!(
            rels(&sel(&[], &["*.bin"])),
            [
                "model_index.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors"
            ]
        );
        assert_eq!(
            rels(&sel(&["unet/*", "*.json"], &["*.bin"])),
            [
                "model_index.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors"
            ]
        );
        assert_eq!(rels(&sel(&[], &[])).len(), 5);

        let dst = d.path().join("dst");
        link_or_copy_selected(&src, &dst, &sel(&["unet/**"], &["*.bin"])).unwrap();
        let mut out = Vec::new();
        walk(&dst, "", &mut out).unwrap();
        let mut got: Vec<String> = out.into_iter().map(|f| f.1).collect();
        got.sort();
        assert_eq!(
            got,
            [
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors"
            ]
        );
        assert_eq!(
            selected_size(&src, &sel(&["vae/*"], &[])).unwrap(),
            "vae/diffusion_pytorch_model.bin".len() as u64
        );

        let e = link_or_copy_selected(&src, &d.path().join("none"), &sel(&["*.gguf"], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("include [*.gguf]"), "{e}");
        assert!(!d.path().join("none").exists());
        let e = LocalSelection::new(&["a[".to_owned()], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("include"), "{e}");
    }
}
