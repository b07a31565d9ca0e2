//! The install transaction's scratch space: `models_dir/.tmp/<id>/`.
//!
//! ```text
//! models_dir/.tmp/<id>/staging.json   what is being staged (source, kind, commit)
//! models_dir/.tmp/<id>/files/…        the model's files (downloads resume from `.part`)
//! models_dir/.tmp/<id>/intent.json    written just before the rename into place
//! ```
//!
//! `<id>` is derived from the canonical source and the selection (globs, dest), so a re-run of
//! the same install finds its partial downloads. The order of a promotion is: verify → probe →
//! hash → write `intent.json` (fsync) → rename into place → write the record → remove the
//! staging dir. [`recover`] (at start-up, under the store lock) makes "killed at any moment"
//! safe:
//!
//! - `intent.json` and a record with its key: the install finished (its file fingerprints are
//!   written from the intent if the crash came between the two writes); the staging dir goes.
//! - `intent.json` and no record: the promotion is rolled back — the promoted path is renamed
//!   back into `files/` (or removed if that is impossible), so no file without a record stays
//!   in `models_dir` and the next run resumes from complete files.
//! - Staging dirs that cannot resume are removed: no readable `staging.json` (or another
//!   layout version), local-copy staging (copies are simply redone), no files at all, or
//!   nothing touched for longer than the stale age (default 7 days).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::store::RecordStore;

use super::error::InstallError;

/// Folder under `models_dir` holding staging dirs.
pub const STAGING_DIR: &str = ".tmp";
/// Folder under `models_dir` holding `download_and_cache` files.
pub const CACHE_DIR: &str = ".cache";
/// Layout version of `staging.json`.
const LAYOUT: u32 = 1;
/// Staging dirs untouched for longer than this are abandoned.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_hours(24 * 7);

/// What kind of source a staging dir holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StagingKind {
    /// Hugging Face files.
    Hf,
    /// One URL download.
    Url,
    /// A copy of a local model.
    Local,
    /// An OCI artifact's blobs (`commit`: the manifest digest).
    Oci,
}

/// `staging.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingMeta {
    /// Layout version.
    pub layout: u32,
    /// Canonical source (no token).
    pub source: String,
    /// Kind.
    pub kind: StagingKind,
    /// The commit the files come from (HF): a different commit invalidates the files.
    pub commit: Option<String>,
}

/// `intent.json`: a promotion in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The record key that will be written.
    pub key: String,
    /// The promoted path, absolute.
    pub target: PathBuf,
    /// Where it came from, relative to the staging dir (`files` or `files/<name>`).
    pub moved_from: String,
    /// The fingerprints the record gets: a crash between writing the record and its
    /// fingerprints is finished by recovery from here.
    #[serde(default)]
    pub files: Vec<crate::store::ModelFile>,
}

/// The staging dir id for a source and its selection: 16 hex characters of a sha256.
pub fn staging_id(canonical: &str, selection: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(canonical.as_bytes());
    for s in selection {
        h.update([0u8]);
        h.update(s.as_bytes());
    }
    hex::encode(h.finalize())[..16].to_owned()
}

/// One staging dir.
#[derive(Debug, Clone)]
pub struct Staging {
    /// `models_dir/.tmp/<id>`.
    pub dir: PathBuf,
}

impl Staging {
    /// The staging dir `id` under `models_dir` (nothing is created).
    pub fn new(models_dir: &Path, id: &str) -> Self {
        Self {
            dir: models_dir.join(STAGING_DIR).join(id),
        }
    }

    /// `files/`.
    pub fn files(&self) -> PathBuf {
        self.dir.join("files")
    }

    fn meta_path(&self) -> PathBuf {
        self.dir.join("staging.json")
    }

    fn intent_path(&self) -> PathBuf {
        self.dir.join("intent.json")
    }

    /// Reads `staging.json`.
    pub fn meta(&self) -> Option<StagingMeta> {
        let text = fs::read(self.meta_path()).ok()?;
        serde_json::from_slice::<StagingMeta>(&text)
            .ok()
            .filter(|m| m.layout == LAYOUT)
    }

    /// Prepares the dir for `source`: an existing dir for the same source and commit is kept
    /// (its downloads resume); anything else there is cleared first.
    pub fn prepare(
        &self,
        source: &str,
        kind: StagingKind,
        commit: Option<&str>,
    ) -> Result<(), InstallError> {
        let want = StagingMeta {
            layout: LAYOUT,
            source: source.to_owned(),
            kind,
            commit: commit.map(str::to_owned),
        };
        let keep = kind != StagingKind::Local
            && self.meta().as_ref() == Some(&want)
            && !self.intent_path().exists();
        if !keep && self.dir.exists() {
            remove_all(&self.dir)?;
        }
        fs::create_dir_all(self.files())
            .map_err(|e| InstallError::io("creating staging folder", self.files(), e))?;
        if !keep {
            write_synced(
                &self.meta_path(),
                &serde_json::to_vec_pretty(&want).unwrap_or_default(),
            )?;
        }
        Ok(())
    }

    /// Writes `intent.json` (synced) before a promotion.
    pub fn write_intent(&self, intent: &Intent) -> Result<(), InstallError> {
        write_synced(
            &self.intent_path(),
            &serde_json::to_vec_pretty(intent).unwrap_or_default(),
        )
    }

    /// Removes the whole staging dir.
    pub fn remove(&self) -> Result<(), InstallError> {
        if self.dir.exists() {
            remove_all(&self.dir)?;
        }
        Ok(())
    }
}

/// Writes a small file and fsyncs it and its folder, so it survives a power cut in order.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), InstallError> {
    let tmp = path.with_extension("json.new");
    let mut f = fs::File::create(&tmp).map_err(|e| InstallError::io("writing", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| InstallError::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| InstallError::io("renaming", path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// fsyncs a folder (its entries), best effort.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn remove_all(p: &Path) -> Result<(), InstallError> {
    let md = match fs::symlink_metadata(p) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(InstallError::io("inspecting", p, e)),
    };
    if md.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    }
    .map_err(|e| InstallError::io("removing", p, e))
}

/// What [`recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Promoted paths without a record that were moved back into staging (or removed).
    pub rolled_back: Vec<PathBuf>,
    /// Staging dirs removed (finished, unresumable or stale).
    pub removed: Vec<PathBuf>,
    /// Staging dirs kept for a later resume.
    pub kept: Vec<PathBuf>,
}

/// Start-up recovery of `models_dir/.tmp` (rules in the module docs). Call it while holding
/// the store lock: it assumes no other process is installing into this `models_dir`.
pub fn recover(
    models_dir: &Path,
    store: &dyn RecordStore,
    stale_after: Duration,
) -> Result<RecoveryReport, InstallError> {
    let root = models_dir.join(STAGING_DIR);
    let mut report = RecoveryReport::default();
    let entries = match fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(InstallError::io("reading", &root, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| InstallError::io("reading", &root, e))?;
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_all(&path)?;
            report.removed.push(path);
            continue;
        }
        let staging = Staging { dir: path.clone() };
        if let Some(intent) = fs::read(staging.intent_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Intent>(&b).ok())
        {
            if store.exists(&intent.key)? {
                if store.model_files(&intent.key)?.is_empty() && !intent.files.is_empty() {
                    store.set_model_files(&intent.key, &intent.files)?;
                }
                staging.remove()?;
                report.removed.push(path);
                continue;
            }
            roll_back(models_dir, &staging, &intent, &mut report)?;
            let _ = fs::remove_file(staging.intent_path());
        } else if staging.intent_path().exists() {
            // An unreadable intent: the rename never happened (the intent is synced first).
            let _ = fs::remove_file(staging.intent_path());
        }
        let meta = staging.meta();
        // An OCI pull's partial downloads are its blobs (`files/` is built from them last).
        let downloads = match &meta {
            Some(m) if m.kind == StagingKind::Oci => staging.dir.join("blobs"),
            _ => staging.files(),
        };
        let resumable = meta.is_some_and(|m| m.kind != StagingKind::Local)
            && newest_file(&downloads)
                .is_some_and(|t| t.elapsed().unwrap_or_default() <= stale_after);
        if resumable {
            report.kept.push(path);
        } else {
            staging.remove()?;
            report.removed.push(path);
        }
    }
    Ok(report)
}

fn roll_back(
    models_dir: &Path,
    staging: &Staging,
    intent: &Intent,
    report: &mut RecoveryReport,
) -> Result<(), InstallError> {
    let target = &intent.target;
    // Only ever touch what lies inside models_dir, whatever the intent file says.
    let inside = target.starts_with(models_dir)
        && !target
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    if !inside {
        return Ok(());
    }
    if fs::symlink_metadata(target).is_err() {
        // Killed between creating the target's `<key>/` folder and the rename: only the
        // empty folder is left.
        remove_empty_parents(models_dir, target);
        return Ok(());
    }
    let back = staging.dir.join(&intent.moved_from);
    let moved_from_ok = intent.moved_from == "files" || intent.moved_from.starts_with("files/");
    if moved_from_ok && fs::symlink_metadata(&back).is_err() {
        if let Some(parent) = back.parent() {
            let _ = fs::create_dir_all(parent);
        }
        if fs::rename(target, &back).is_ok() {
            report.rolled_back.push(target.clone());
            remove_empty_parents(models_dir, target);
            return Ok(());
        }
    }
    remove_all(target)?;
    report.rolled_back.push(target.clone());
    remove_empty_parents(models_dir, target);
    Ok(())
}

/// Removes the now-empty folders between `path` and `models_dir` (the `<key>/` folder of a
/// single-file model).
pub(crate) fn remove_empty_parents(models_dir: &Path, path: &Path) {
    let mut cur = path.parent();
    while let Some(dir) = cur {
        if dir == models_dir || !dir.starts_with(models_dir) {
            break;
        }
        if fs::remove_dir(dir).is_err() {
            break;
        }
        cur = dir.parent();
    }
}

/// The latest modification time of `path` or anything below it (links not followed; depth
/// bounded, as staging and download-cache folders are shallow).
pub(crate) fn newest_change(path: &Path, depth: u8) -> Option<SystemTime> {
    let md = std::fs::symlink_metadata(path).ok()?;
    let mut newest = md.modified().ok();
    if md.is_dir() && depth < 16 {
        for e in std::fs::read_dir(path).ok()?.flatten() {
            if let Some(t) = newest_change(&e.path(), depth + 1) {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    newest
}

/// The newest modification time of any file under `dir`.
fn newest_file(dir: &Path) -> Option<SystemTime> {
    let mut newest: Option<SystemTime> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if let Ok(t) = md.modified() {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_source_and_selection() {
        let a = staging_id("o/n", &[]);
        assert_eq!(a.len(), 16);
        assert_eq!(a, staging_id("o/n", &[]));
        assert_ne!(a, staging_id("o/n:fp16", &[]));
        assert_ne!(a, staging_id("o/n", &["*.json"]));
        assert_ne!(staging_id("o/n", &["a", "b"]), staging_id("o/n", &["ab"]));
    }

    /// A kill between creating a single-file model's `<key>/` folder and the rename into it:
    /// recovery removes the empty folder, so no orphan is left for `status` to report.
    #[test]
    fn recovery_removes_the_empty_key_folder_of_a_rename_that_never_happened() {
        let d = tempfile::tempdir().unwrap();
        let models = d.path().join("models");
        let store =
            crate::store::sqlite::SqliteStore::from_db_file(&models.join("modelsync.db")).unwrap();
        let s = Staging::new(&models, "x");
        s.prepare("o/n", StagingKind::Hf, Some("c1")).unwrap();
        fs::write(s.files().join("m.safetensors"), b"weights").unwrap();
        let key_dir = models.join("0123456789abcdef0123456789abcdef");
        s.write_intent(&Intent {
            key: "0123456789abcdef0123456789abcdef".into(),
            target: key_dir.join("m.safetensors"),
            moved_from: "files/m.safetensors".into(),
            files: Vec::new(),
        })
        .unwrap();
        fs::create_dir_all(&key_dir).unwrap();
        recover(&models, &store, Duration::from_hours(1)).unwrap();
        assert!(!key_dir.exists(), "the empty <key>/ folder is left behind");
        assert!(
            s.files().join("m.safetensors").exists(),
            "the staged file is kept"
        );
    }

    #[test]
    fn prepare_keeps_matching_staging_and_clears_other() {
        let d = tempfile::tempdir().unwrap();
        let s = Staging::new(d.path(), "x");
        s.prepare("o/n", StagingKind::Hf, Some("c1")).unwrap();
        fs::write(s.files().join("a.part"), b"abc").unwrap();
        s.prepare("o/n", StagingKind::Hf, Some("c1")).unwrap();
        assert!(s.files().join("a.part").exists());
        s.prepare("o/n", StagingKind::Hf, Some("c2")).unwrap();
        assert!(!s.files().join("a.part").exists());
    }
}
