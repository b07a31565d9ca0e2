//! What the Hub says about a repo: model info and the file tree, parsed from the wire and
//! checked (paths validated, hashes well-formed) before anyone uses them.

use serde::{Deserialize, Serialize};

use super::paths::{UnsafePath, validate_repo_path};

/// A repo's gating: `false`, `"auto"` or `"manual"` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gated {
    /// Not gated.
    #[default]
    No,
    /// Gated, access granted automatically once the user accepts.
    Auto,
    /// Gated, access granted by the authors.
    Manual,
}

impl Gated {
    /// Whether downloads need an accepted token.
    pub fn is_gated(self) -> bool {
        self != Self::No
    }

    fn from_wire(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Bool(false) | serde_json::Value::Null => Self::No,
            serde_json::Value::String(s) if s.eq_ignore_ascii_case("auto") => Self::Auto,
            serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => Self::No,
            // `true` or an unknown mode: gated in some way we do not know; assume the strict one.
            _ => Self::Manual,
        }
    }
}

/// The LFS part of a file: the content's sha256 and its real size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsInfo {
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
    /// Size of the content in bytes.
    pub size: u64,
}

/// One file of a repo's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoFile {
    /// Path inside the repo, `/`-separated, validated.
    pub path: String,
    /// Size in bytes (for LFS files, the content's size).
    pub size: u64,
    /// Git blob sha1 (for LFS files, the pointer's).
    pub oid: String,
    /// Present for LFS files.
    pub lfs: Option<LfsInfo>,
}

impl RepoFile {
    /// The file name (last path component).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The folder part (`""` for files at the repo root).
    pub fn folder(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(d, _)| d)
    }
}

/// One `siblings` entry of the model info.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// Path inside the repo, validated.
    pub rfilename: String,
    /// Size (only with `?blobs=true`).
    pub size: Option<u64>,
    /// Git blob sha1 (only with `?blobs=true`).
    pub blob_id: Option<String>,
    /// LFS content hash and size.
    pub lfs: Option<LfsInfo>,
}

/// The model info (`GET /api/models/{repo}[/revision/{rev}]?blobs=true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Canonical repo id.
    pub id: String,
    /// The commit the revision resolved to.
    pub sha: Option<String>,
    /// Date of the last commit (RFC 3339 as sent).
    pub last_modified: Option<String>,
    /// Private repo.
    pub private: bool,
    /// Gating mode.
    pub gated: Gated,
    /// Repo tags.
    pub tags: Vec<String>,
    /// Owner / author.
    pub author: Option<String>,
    /// The model card's YAML header, as JSON.
    pub card_data: Option<serde_json::Value>,
    /// `pipeline_tag`.
    pub pipeline_tag: Option<String>,
    /// `library_name` (e.g. `diffusers`).
    pub library_name: Option<String>,
    /// The repo's files.
    pub siblings: Vec<Sibling>,
}

/// A wire document that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shape or type mismatch.
    #[error("{0}")]
    Shape(String),
    /// A hostile path.
    #[error(transparent)]
    UnsafePath(#[from] UnsafePath),
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn opt_str(v: &serde_json::Value, k: &str) -> Option<String> {
    v.get(k)
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

fn lfs_from(repo: &str, path: &str, v: &serde_json::Value) -> Result<Option<LfsInfo>, WireError> {
    let Some(l) = v.get("lfs").filter(|l| !l.is_null()) else {
        return Ok(None);
    };
    // The info calls it `sha256`, the tree `oid`.
    let sha = l
        .get("sha256")
        .or_else(|| l.get("oid"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !is_hex(&sha, 64) {
        return Err(WireError::Shape(format!(
            "file `{path}` of `{repo}`: LFS hash {sha:?} is not a sha256"
        )));
    }
    let size = l
        .get("size")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| {
            WireError::Shape(format!("file `{path}` of `{repo}`: LFS entry has no size"))
        })?;
    Ok(Some(LfsInfo { sha256: sha, size }))
}

impl ModelInfo {
    /// Parses the info document of `repo` (the name used only in messages).
    pub fn from_wire(repo: &str, v: &serde_json::Value) -> Result<Self, WireError> {
        let id = opt_str(v, "id")
            .or_else(|| opt_str(v, "modelId"))
            .ok_or_else(|| WireError::Shape(format!("model info of `{repo}` has no `id`")))?;
        let mut siblings = Vec::new();
        if let Some(list) = v.get("siblings").and_then(serde_json::Value::as_array) {
            for s in list {
                let name = opt_str(s, "rfilename").ok_or_else(|| {
                    WireError::Shape(format!("a sibling of `{repo}` has no `rfilename`"))
                })?;
                validate_repo_path(repo, &name)?;
                let lfs = lfs_from(repo, &name, s)?;
                siblings.push(Sibling {
                    size: s.get("size").and_then(serde_json::Value::as_u64),
                    blob_id: opt_str(s, "blobId"),
                    lfs,
                    rfilename: name,
                });
            }
        }
        let tags = v
            .get("tags")
            .and_then(serde_json::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            id,
            sha: opt_str(v, "sha"),
            last_modified: opt_str(v, "lastModified"),
            private: v
                .get("private")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            gated: v.get("gated").map(Gated::from_wire).unwrap_or_default(),
            tags,
            author: opt_str(v, "author"),
            card_data: v.get("cardData").filter(|c| !c.is_null()).cloned(),
            pipeline_tag: opt_str(v, "pipeline_tag"),
            library_name: opt_str(v, "library_name"),
            siblings,
        })
    }
}

/// Parses one page of the tree of `repo`: files only (directories are implied by paths).
pub fn tree_page_from_wire(repo: &str, v: &serde_json::Value) -> Result<Vec<RepoFile>, WireError> {
    let list = v
        .as_array()
        .ok_or_else(|| WireError::Shape(format!("the tree of `{repo}` is not a JSON array")))?;
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let path = opt_str(e, "path")
            .ok_or_else(|| WireError::Shape(format!("a tree entry of `{repo}` has no `path`")))?;
        validate_repo_path(repo, &path)?;
        if e.get("type").and_then(serde_json::Value::as_str) != Some("file") {
            continue;
        }
        let oid = opt_str(e, "oid").unwrap_or_default().to_ascii_lowercase();
        if !is_hex(&oid, 40) {
            return Err(WireError::Shape(format!(
                "file `{path}` of `{repo}`: oid {oid:?} is not a git sha1"
            )));
        }
        let lfs = lfs_from(repo, &path, e)?;
        let size = match (&lfs, e.get("size").and_then(serde_json::Value::as_u64)) {
            (Some(l), _) => l.size,
            (None, Some(s)) => s,
            (None, None) => {
                return Err(WireError::Shape(format!(
                    "file `{path}` of `{repo}` has no size"
                )));
            }
        };
        out.push(RepoFile {
            path,
            size,
            oid,
            lfs,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn info_parses_gated_forms() {
        for (g, want) in [
            (json!(false), Gated::No),
            (json!("auto"), Gated::Auto),
            (json!("manual"), Gated::Manual),
            (json!(true), Gated::Manual),
        ] {
            let i = ModelInfo::from_wire("o/n", &json!({"id": "o/n", "gated": g})).unwrap();
            assert_eq!(i.gated, want);
        }
        let e = ModelInfo::from_wire(
            "o/n",
            &json!({"id": "o/n", "siblings": [{"rfilename": "../evil"}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("../evil"), "{e}");
    }

    #[test]
    fn tree_checks_hashes() {
        let bad = json!([{"type": "file", "path": "a", "oid": "zz", "size": 1}]);
        assert!(tree_page_from_wire("o/n", &bad).is_err());
        let bad = json!([{"type": "file", "path": "a", "oid": "0".repeat(40), "size": 1,
            "lfs": {"oid": "nothex", "size": 1}}]);
        assert!(tree_page_from_wire("o/n", &bad).is_err());
        let ok = json!([
            {"type": "directory", "path": "unet", "oid": "1".repeat(40), "size": 0},
            {"type": "file", "path": "unet/x.safetensors", "oid": "A".repeat(40), "size": 130,
             "lfs": {"oid": "b".repeat(64), "size": 5000, "pointerSize": 130}}
        ]);
        let files = tree_page_from_wire("o/n", &ok).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].size, 5000);
        assert_eq!(files[0].oid, "a".repeat(40));
        assert_eq!(files[0].folder(), "unet");
        assert_eq!(files[0].name(), "x.safetensors");
    }
}
