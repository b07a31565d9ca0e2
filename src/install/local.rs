//! Local sources: staging a copy (hardlinks on the same filesystem, else copies), and deleting
//! a record's files.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::InstallError;

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
}
