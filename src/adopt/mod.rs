//! Taking over what another tool installed: [`invokeai`] reads an InvokeAI install's own
//! database and models folder and imports every record with the same key and fields.
//!
//! Adopting never moves or copies a file. Each record keeps pointing at the model where it
//! is: a path under modelsync's `models_dir` is stored relative to it (so pointing
//! `--models-dir` at InvokeAI's `ROOT/models` keeps InvokeAI's own relative paths), any other
//! path is stored absolute (the record then works like an in-place model: `remove
//! --delete-files` and prune leave its files alone). A record whose files are gone is
//! reported and not imported; a record already in the store with the same key, path and hash
//! is left as it is, so adopting again changes nothing.
//!
//! [`manifest`] then writes a manifest of the store (`modelsync init --from-store`) and marks
//! each record as managed by its entry, so the first `apply` changes nothing.

pub mod invokeai;
pub mod manifest;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::store::{ModelFile, StoreError};

pub use invokeai::{adopt_invokeai, plan_invokeai};
pub use manifest::{StoreManifest, manifest_from_store, take_over};

/// Errors of adopting.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The root does not look like the tool's install.
    #[error("{}: {reason}", path.display())]
    NotAnInstall {
        /// What was looked at.
        path: PathBuf,
        /// Why it is not one.
        reason: String,
    },
    /// Reading the tool's database failed.
    #[error("reading {}: {source}", path.display())]
    Database {
        /// The database.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// modelsync's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where adopted models are resolved from.
#[derive(Debug, Clone)]
pub struct AdoptOptions {
    /// modelsync's models folder: paths under it are stored relative to it.
    pub models_dir: PathBuf,
}

/// What happens to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdoptState {
    /// Would be imported (dry run).
    Import,
    /// Was imported.
    Imported,
    /// Already in the store with the same key, path and hash.
    Present,
    /// Its files are gone: reported, not imported.
    Missing,
    /// Cannot be imported: the key or path is taken by another record, or the record does not
    /// parse.
    Conflict,
}

/// One record of the other tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdoptedModel {
    /// Key (the same in both stores).
    pub key: String,
    /// Name.
    pub name: String,
    /// Type, base and format as the other tool recorded them.
    #[serde(rename = "type")]
    pub model_type: String,
    /// Base.
    pub base: String,
    /// Format.
    pub format: String,
    /// The path as the other tool stored it.
    pub source_path: String,
    /// Where the files are (absolute).
    pub resolved_path: PathBuf,
    /// The path modelsync stores (relative to `models_dir` when inside it).
    pub path: String,
    /// The outcome.
    pub state: AdoptState,
    /// Why (for missing and conflict), or what.
    pub reason: String,
}

/// Counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AdoptTotals {
    /// To import (dry run).
    pub import: usize,
    /// Imported.
    pub imported: usize,
    /// Already there.
    pub present: usize,
    /// Files gone.
    pub missing: usize,
    /// Not importable.
    pub conflicts: usize,
}

/// What adopting found and did; `modelsync adopt … -o json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdoptReport {
    /// The install's root.
    pub root: PathBuf,
    /// Its database.
    pub database: PathBuf,
    /// Its models folder (relative record paths resolve against it).
    pub source_models_dir: PathBuf,
    /// False for a dry run.
    pub applied: bool,
    /// Every record, in the other tool's key order.
    pub models: Vec<AdoptedModel>,
    /// Counts.
    pub totals: AdoptTotals,
}

impl AdoptReport {
    fn count(&mut self) {
        let mut t = AdoptTotals::default();
        for m in &self.models {
            match m.state {
                AdoptState::Import => t.import += 1,
                AdoptState::Imported => t.imported += 1,
                AdoptState::Present => t.present += 1,
                AdoptState::Missing => t.missing += 1,
                AdoptState::Conflict => t.conflicts += 1,
            }
        }
        self.totals = t;
    }
}

/// The path modelsync stores for `target`: relative to `models_dir` when inside it (compared
/// with symlinks resolved), else absolute.
pub(crate) fn stored_path(models_dir: &Path, target: &Path) -> String {
    let real = |p: &Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
    };
    let t = real(target);
    if let Ok(rel) = t.strip_prefix(real(models_dir))
        && !rel.as_os_str().is_empty()
    {
        return rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
    }
    t.to_string_lossy().into_owned()
}

/// Fingerprints of every file of a model (a file: one, with an empty relative path).
pub(crate) fn fingerprints(path: &Path) -> Result<Vec<ModelFile>, AdoptError> {
    let io = |p: &Path, source| AdoptError::Io {
        op: "reading",
        path: p.to_path_buf(),
        source,
    };
    if !path.is_dir() {
        return Ok(vec![
            ModelFile::fingerprint(path, "").map_err(|e| io(path, e))?,
        ]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let e = e.map_err(|e| io(&dir, e))?;
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(path)
                .unwrap_or(&p)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push(ModelFile::fingerprint(&p, rel).map_err(|e| io(&p, e))?);
        }
    }
    out.sort_by(|a, b| a.relative_path.cmp(&b.relative_path));
    Ok(out)
}
