//! Repo file paths are input from a stranger (hub-protocol.md, "Never trust a name from the
//! server"): every path from `siblings`, the tree or a selection is checked here before it can
//! become part of a local path or a URL.

use std::path::PathBuf;

/// Why a repo file path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsafe file path {path:?} in the listing of `{repo}`: {reason}")]
pub struct UnsafePath {
    /// The repo whose listing held the path.
    pub repo: String,
    /// The path as received (printed with escapes, so NULs and control characters show).
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks one repo file path: refused when empty, absolute, containing a backslash, a NUL, a
/// control character, an empty / `.` / `..` component, or a Windows drive prefix.
pub fn validate_repo_path(repo: &str, path: &str) -> Result<(), UnsafePath> {
    let refuse = |reason| {
        Err(UnsafePath {
            repo: repo.to_owned(),
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return refuse("empty path");
    }
    if path.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if path.contains('\\') {
        return refuse("contains a backslash");
    }
    if path.chars().any(char::is_control) {
        return refuse("contains a control character");
    }
    if path.starts_with('/') {
        return refuse("absolute path");
    }
    let first = path.split('/').next().unwrap_or_default();
    if first.len() >= 2 && first.as_bytes()[1] == b':' {
        return refuse("starts with a drive letter");
    }
    for comp in path.split('/') {
        match comp {
            "" => return refuse("empty path component"),
            "." => return refuse("`.` component"),
            ".." => return refuse("`..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// A validated repo path as a relative local path (components joined with the OS separator).
pub fn repo_path_to_local(repo: &str, path: &str) -> Result<PathBuf, UnsafePath> {
    validate_repo_path(repo, path)?;
    Ok(path.split('/').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_refused() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "..\\x",
            "a\0b",
            "C:/x",
            "c:x",
            "a\nb",
            "..",
        ] {
            let e = validate_repo_path("o/n", p).unwrap_err();
            assert!(e.to_string().contains("o/n"), "{e}");
        }
        for p in [
            "model_index.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "a..b/c...d",
            ".gitattributes",
            "x/.hidden",
        ] {
            validate_repo_path("o/n", p).unwrap();
        }
        assert_eq!(
            repo_path_to_local("o/n", "unet/config.json").unwrap(),
            PathBuf::from("unet").join("config.json")
        );
    }
}
