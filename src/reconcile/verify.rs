//! `modelsync verify`: re-hashes installed content against the records and `models.lock`.
//! The only reconciler command that reads file content; everything else trusts fingerprints.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::hash::{HashAlgorithm, hash_path, sha256_file};
use crate::manifest::LockFile;
use crate::store::{RecordStore, StoreError};

/// The verdict on one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelVerdict {
    /// Record key.
    pub key: String,
    /// Record name.
    pub name: String,
    /// Owning entry, if managed.
    pub entry: Option<String>,
    /// What does not match (empty: all good). Each names the file.
    pub problems: Vec<String>,
    /// Files whose sha256 was checked.
    pub files_checked: usize,
}

impl ModelVerdict {
    /// Whether everything matched.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Errors that stop verify before it hashes anything.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A name matches no record.
    #[error("no model named {}", .0.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))]
    Unknown(Vec<String>),
}

/// The record hash algorithm its `algo:` prefix names (`blake3` is hashed the way
/// `blake3_single` is: the digest is the same).
pub fn algorithm_of(hash: &str) -> Option<HashAlgorithm> {
    match hash.split_once(':')?.0 {
        "blake3" => Some(HashAlgorithm::Blake3),
        "sha256" => Some(HashAlgorithm::Sha256),
        "imohash" => Some(HashAlgorithm::Imohash),
        _ => None,
    }
}

/// Verifies the records named by `names` (entry names, record names or keys; all records when
/// empty): the model's content hash against the record, and every file with a known sha256
/// (from the store's fingerprints or the lock's entry) against it.
pub fn verify(
    store: &dyn RecordStore,
    models_dir: &Path,
    lock: Option<&LockFile>,
    names: &[String],
) -> Result<Vec<ModelVerdict>, VerifyError> {
    let all = store.all_models()?;
    let selected: Vec<_> = if names.is_empty() {
        all.iter().collect()
    } else {
        let hit = |r: &crate::AnyModelConfig, n: &str| {
            let c = r.common();
            c.key == n || c.name == n || c.managed.as_ref().is_some_and(|m| m.entry == n)
        };
        let unknown: Vec<String> = names
            .iter()
            .filter(|n| !all.iter().any(|r| hit(r, n)))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(VerifyError::Unknown(unknown));
        }
        all.iter()
            .filter(|r| names.iter().any(|n| hit(r, n)))
            .collect()
    };
    let mut out = Vec::new();
    for rec in selected {
        let c = rec.common();
        let root = rec.resolved_path(models_dir);
        let mut problems = Vec::new();
        match algorithm_of(&c.hash) {
            None => problems.push(format!(
                "record hash `{}` names no known algorithm; cannot re-hash",
                c.hash
            )),
            Some(algo) => match hash_path(&root, algo) {
                Ok(h) if h == c.hash => {}
                Ok(h) => problems.push(format!(
                    "{}: content hash {h} differs from the record's {}",
                    root.display(),
                    c.hash
                )),
                Err(e) => problems.push(e.to_string()),
            },
        }
        // sha256 per file: the store's, else the lock's.
        let mut expected: BTreeMap<String, String> = BTreeMap::new();
        let entry = c.managed.as_ref().map(|m| m.entry.clone());
        if let (Some(l), Some(e)) = (lock, &entry)
            && let Some(le) = l.entries.get(e)
            && c.source == le.source
        {
            for f in &le.files {
                if let Some(s) = &f.sha256 {
                    expected.insert(f.path.clone(), s.clone());
                }
            }
        }
        let single = root.is_file();
        for f in store.model_files(&c.key)? {
            let rel = if f.relative_path.is_empty() || single {
                root.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                f.relative_path.clone()
            };
            if let Some(s) = f.sha256 {
                expected.insert(rel, s);
            }
        }
        let mut files_checked = 0;
        for (rel, want) in &expected {
            let path = if single { root.clone() } else { root.join(rel) };
            files_checked += 1;
            match sha256_file(&path) {
                Ok(got) if got.eq_ignore_ascii_case(want) => {}
                Ok(got) => problems.push(format!(
                    "file `{rel}` ({}): sha256 {got}, expected {want}",
                    path.display()
                )),
                Err(e) => problems.push(format!("file `{rel}`: {}", crate::retry::one_line(&e))),
            }
        }
        out.push(ModelVerdict {
            key: c.key.clone(),
            name: c.name.clone(),
            entry,
            problems,
            files_checked,
        });
    }
    Ok(out)
}
