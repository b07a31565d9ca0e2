//! Repairs and upgrades in place ([`InPlace`]): the record keeps its key, path, creation time
//! and every field the install does not own; only the files that are missing, changed or
//! different upstream are fetched.
//!
//! How a file is judged present: its size is the listing's and its content hash is the
//! listing's (sha256 for LFS files, git blob sha1 for small ones). A file whose size and mtime
//! are as recorded and whose recorded sha256 is the listing's is taken without reading it (a
//! converged upgrade of a large repo reads nothing); a file the plan reported damaged is
//! always read. What is not present is downloaded into `models_dir/.tmp/<id>/files/` (the id
//! derives from the key, so a killed repair resumes its partials), verified by the download
//! against the listing, and only then renamed over the old file. Files an upgrade's listing no
//! longer has are removed. Then, under the lane, the model is re-hashed, its fingerprints
//! rewritten, and the record updated: `hash`, `file_size`, `source_api_response` and the
//! tags (the request's plus the source's).
//!
//! A kill at any point leaves either the old file or the new, verified one at each path; the
//! next plan sees the fingerprints differ and repairs again, reading (not fetching) what is
//! already right.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::download::DownloadJob;
use crate::download::names::redact_url_str;
use crate::hash;
use crate::hub::{
    ExpectedHash, FileFilter, HfModelSource, ModelSource, UrlModelSource, git_blob_sha1,
    resolve_token,
};
use crate::store::{ConfigChange, ModelFile};

use super::blobs::AdoptedFile;
use super::config::{Cancel, record_source};
use super::error::InstallError;
use super::job::{InstallEvent, InstallJobId, InstallPart, InstallStatus};
use super::layout;
use super::local::{LocalSelection, link_or_copy};
use super::promote::{Staged, check_expected_hash, fingerprints};
use super::remote::{
    Adoptable, Want, access, adopt_into_staging, len_of, part_of, run_downloads, url_destination,
};
use super::request::{InPlace, InstallOutcome, InstallRequest};
use super::service::{Inner, lock};
use super::staging::{Staging, StagingKind, staging_id};

/// Small (git) files above this size are fetched again rather than read to check them.
const MAX_GIT_FILE_CHECK: u64 = 64 << 20;

/// What the fetch half produced.
#[derive(Default)]
pub(super) struct Fetched {
    /// Verified file in staging → the path it replaces.
    pub(super) moves: Vec<(PathBuf, PathBuf)>,
    /// Files the listing no longer has.
    pub(super) remove: Vec<PathBuf>,
    /// sha256 by lock path, as the listing says.
    pub(super) sha256: HashMap<String, String>,
    /// The source's metadata for `source_api_response` (Hub sources).
    pub(super) metadata: Option<Value>,
    /// The source's tags.
    pub(super) tags: Vec<String>,
    /// The commit the files come from.
    pub(super) commit: Option<String>,
    /// Bytes fetched by this run.
    pub(super) downloaded: u64,
    /// Files whose bytes were found on this machine instead ([`super::blobs`]).
    pub(super) adopted: Vec<AdoptedFile>,
}

/// The staging folder of a repair or upgrade of `key`.
fn staging_of(models_dir: &Path, key: &str) -> Staging {
    Staging::new(models_dir, &staging_id(&format!("in-place:{key}"), &[]))
}

/// Repairs or upgrades the record `ip.key` from `req.source`. Runs as the body of an install
/// job (events, cancel and progress as for any install).
pub(super) async fn refit(
    inner: &Arc<Inner>,
    id: InstallJobId,
    req: &InstallRequest,
    ip: &InPlace,
    cancel: &Arc<Cancel>,
) -> Result<InstallOutcome, InstallError> {
    let record = inner.store.get_model(&ip.key)?;
    let target = record.resolved_path(&inner.cfg.models_dir);
    let recorded: HashMap<String, ModelFile> = inner
        .store
        .model_files(&ip.key)?
        .into_iter()
        .map(|f| (f.relative_path.clone(), f))
        .collect();
    let staging = staging_of(&inner.cfg.models_dir, &ip.key);
    let source_str = record_source(&req.source);
    let fetched = match &req.source {
        ModelSource::Hf(h) => {
            refit_hf(inner, id, h, req, ip, &target, &recorded, &staging, cancel).await?
        }
        ModelSource::Url(u) => {
            refit_url(inner, id, u, req, ip, &target, &recorded, &staging, cancel).await?
        }
        ModelSource::Oci(o) => {
            super::oci::refit_oci(inner, id, o, req, ip, &target, &recorded, &staging, cancel)
                .await?
        }
        ModelSource::Local(l) if l.inplace => Fetched::default(),
        ModelSource::Local(l) => {
            let (src, target2, staging2) = (l.path.clone(), target.clone(), staging.clone());
            let (recorded2, damaged) = (recorded.clone(), ip.damaged.clone());
            let source2 = source_str.clone();
            let selection = LocalSelection::new(&req.options.include, &req.options.exclude)?;
            tokio::task::spawn_blocking(move || {
                refit_local(
                    &src, &target2, &recorded2, &damaged, &staging2, &source2, &selection,
                )
            })
            .await
            .map_err(|e| InstallError::Setup(format!("staging worker failed: {e}")))??
        }
    };
    if cancel.is_set() {
        return Err(InstallError::Cancelled(source_str));
    }
    inner.update(id, |job| {
        job.status = InstallStatus::Running;
        Some(InstallEvent::ModelInstallRunning {
            id,
            source: job.source.clone(),
        })
    });
    let inner2 = inner.clone();
    let req2 = req.clone();
    let key = ip.key.clone();
    let cancel2 = cancel.clone();
    tokio::task::spawn_blocking(move || {
        let _lane = lock(&inner2.lane);
        if cancel2.is_set() {
            return Err(InstallError::Cancelled(source_str));
        }
        settle(
            &inner2,
            &req2,
            &key,
            &target,
            &source_str,
            fetched,
            &staging,
        )
    })
    .await
    .map_err(|e| InstallError::Setup(format!("install worker failed: {e}")))?
}

/// Whether `path` holds the file a listing describes. See the module docs.
pub(super) fn is_present(
    path: &Path,
    size: u64,
    expected: &ExpectedHash,
    trusted: Option<&ModelFile>,
) -> bool {
    let Ok(md) = fs::metadata(path) else {
        return false;
    };
    if !md.is_file() || md.len() != size {
        return false;
    }
    match expected {
        ExpectedHash::Sha256(want) => {
            let unchanged = trusted.is_some_and(|fp| {
                fp.sha256
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(want))
                    && ModelFile::fingerprint(path, "")
                        .is_ok_and(|now| now.size == fp.size && now.mtime_ns == fp.mtime_ns)
            });
            unchanged || hash::sha256_file(path).is_ok_and(|s| s.eq_ignore_ascii_case(want))
        }
        ExpectedHash::GitBlobSha1(want) => {
            size <= MAX_GIT_FILE_CHECK
                && fs::read(path).is_ok_and(|b| git_blob_sha1(&b).eq_ignore_ascii_case(want))
        }
    }
}

pub(super) fn slash(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the pieces are the job's"
)]
async fn refit_hf(
    inner: &Arc<Inner>,
    id: InstallJobId,
    h: &HfModelSource,
    req: &InstallRequest,
    ip: &InPlace,
    target: &Path,
    recorded: &HashMap<String, ModelFile>,
    staging: &Staging,
    cancel: &Arc<Cancel>,
) -> Result<Fetched, InstallError> {
    let opts = &req.options;
    let source_str = ModelSource::Hf(h.clone()).canonical();
    let mut src = h.clone();
    if let Some(rev) = &opts.revision {
        src.revision = Some(rev.clone());
    }
    let token = resolve_token(
        opts.access_token.as_ref().or(h.access_token.as_ref()),
        &inner.cfg.hub_env,
    );
    let filter =
        FileFilter::from_source(&src).with_globs(opts.include.clone(), opts.exclude.clone());
    let plan = tokio::select! {
        p = inner.cfg.hub.plan_source(&src, &filter, &token) => p.map_err(|error| InstallError::Hub {
            source_str: source_str.clone(),
            error: Box::new(error),
        })?,
        () = cancel.wait() => return Err(InstallError::Cancelled(source_str)),
    };
    let single_file = h.single_file().is_some() && plan.downloads.len() == 1;
    let mut out = Fetched {
        metadata: Some(plan.metadata.to_json_value()),
        tags: plan.metadata.tags.iter().cloned().collect(),
        commit: Some(plan.commit.clone()),
        ..Fetched::default()
    };
    // Checked before anything is fetched: the lock must agree with the listing.
    for spec in &plan.downloads {
        let lock_name = if single_file {
            file_name(target)
        } else {
            slash(&spec.dest)
        };
        if let ExpectedHash::Sha256(want) = &spec.expected {
            if let Some(locked) = ip.locked_sha256.get(&lock_name)
                && !locked.eq_ignore_ascii_case(want)
            {
                return Err(InstallError::InvalidOption {
                    option: "models.lock",
                    reason: format!(
                        "`{lock_name}` is locked at sha256 {locked}, but {source_str} at {} has {want}",
                        plan.commit
                    ),
                });
            }
            out.sha256.insert(lock_name, want.clone());
        }
    }
    // Reading what is there to check it is blocking work.
    let checks: Vec<(usize, PathBuf, u64, ExpectedHash, Option<ModelFile>)> = plan
        .downloads
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let rel = if single_file {
                String::new()
            } else {
                slash(&spec.dest)
            };
            let path = if single_file {
                target.to_path_buf()
            } else {
                target.join(&spec.dest)
            };
            let trusted = recorded
                .get(&rel)
                .filter(|_| !ip.damaged.contains(&rel))
                .cloned();
            (i, path, spec.size, spec.expected.clone(), trusted)
        })
        .collect();
    let present: HashSet<usize> = tokio::task::spawn_blocking(move || {
        checks
            .into_iter()
            .filter(|(_, p, size, exp, fp)| is_present(p, *size, exp, fp.as_ref()))
            .map(|(i, ..)| i)
            .collect()
    })
    .await
    .map_err(|e| InstallError::Setup(format!("checking worker failed: {e}")))?;

    if !single_file {
        let listed: HashSet<String> = plan.downloads.iter().map(|s| slash(&s.dest)).collect();
        out.remove = recorded
            .keys()
            .filter(|r| !r.is_empty() && !listed.contains(*r))
            .map(|r| target.join(r))
            .collect();
    }
    if present.len() == plan.downloads.len() {
        return Ok(out);
    }
    staging.prepare(&source_str, StagingKind::Hf, Some(&plan.commit))?;
    let files = staging.files();
    let mut wants = Vec::new();
    let mut adoptable = Vec::new();
    for (i, spec) in plan.downloads.iter().enumerate() {
        if present.contains(&i) {
            continue;
        }
        let staged = files.join(&spec.dest);
        let final_path = if single_file {
            target.to_path_buf()
        } else {
            target.join(&spec.dest)
        };
        let mut job = DownloadJob::new(spec.url.to_string(), staged.clone())
            .with_expected_size(Some(spec.size))
            .with_access_token(access(spec.access_token.as_ref()))
            .with_preserve_partial_downloads(true);
        adoptable.push(Adoptable {
            want: wants.len(),
            hash: spec.expected.clone(),
            size: spec.size,
            rel: slash(&spec.dest),
        });
        job = match &spec.expected {
            ExpectedHash::Sha256(h) => job.with_sha256(Some(h.clone())),
            ExpectedHash::GitBlobSha1(h) => job.with_git_sha1(Some(h.clone())),
        };
        // Only the queue writes whole files into staging, and only after verifying them.
        let done = len_of(&staged) == spec.size && staged.is_file();
        wants.push(Want {
            job,
            part: InstallPart {
                source: redact_url_str(spec.url.as_str()),
                local_path: staged.clone(),
                bytes: if done {
                    spec.size
                } else {
                    len_of(&part_of(&staged)).min(spec.size)
                },
                total_bytes: spec.size,
            },
            done,
        });
        out.moves.push((staged, final_path));
    }
    let ctx = inner.fetch_ctx(id);
    out.adopted = adopt_into_staging(&ctx, &mut wants, adoptable).await?;
    out.downloaded = run_downloads(&ctx, &source_str, staging, wants, cancel)
        .await?
        .bytes;
    Ok(out)
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the pieces are the job's"
)]
async fn refit_url(
    inner: &Arc<Inner>,
    id: InstallJobId,
    u: &UrlModelSource,
    req: &InstallRequest,
    ip: &InPlace,
    target: &Path,
    recorded: &HashMap<String, ModelFile>,
    staging: &Staging,
    cancel: &Arc<Cancel>,
) -> Result<Fetched, InstallError> {
    let opts = &req.options;
    let source_str = record_source(&ModelSource::Url(u.clone()));
    let lock_name = file_name(target);
    // What the file must be: the entry's `hash: sha256:…`, else the lock's, else the record's.
    let want = opts
        .expected_hash
        .as_deref()
        .and_then(|h| h.strip_prefix("sha256:"))
        .map(str::to_ascii_lowercase)
        .or_else(|| ip.locked_sha256.get(&lock_name).cloned())
        .or_else(|| recorded.get("").and_then(|f| f.sha256.clone()));
    if let Some(w) = &want {
        let (p, w2) = (target.to_path_buf(), w.clone());
        let intact = tokio::task::spawn_blocking(move || {
            hash::sha256_file(&p).is_ok_and(|s| s.eq_ignore_ascii_case(&w2))
        })
        .await
        .unwrap_or(false);
        if intact {
            return Ok(Fetched::default());
        }
    }
    staging.prepare(&source_str, StagingKind::Url, None)?;
    let files = staging.files();
    let (dest, done) = url_destination(&files);
    let token = opts.access_token.as_ref().or(u.access_token.as_ref());
    let want = Want::url(&u.url, &dest, done, token, want);
    let downloaded = run_downloads(
        &inner.fetch_ctx(id),
        &source_str,
        staging,
        vec![want],
        cancel,
    )
    .await?
    .bytes;
    let (staged, done) = url_destination(&files);
    if !done {
        return Err(InstallError::NotFound(staged));
    }
    Ok(Fetched {
        moves: vec![(staged, target.to_path_buf())],
        downloaded,
        ..Fetched::default()
    })
}

/// A local copy: the source's files that are missing or changed at the record's path are
/// copied again.
#[allow(
    clippy::too_many_arguments,
    reason = "one blocking job's inputs, moved in together"
)]
fn refit_local(
    src: &Path,
    target: &Path,
    recorded: &HashMap<String, ModelFile>,
    damaged: &[String],
    staging: &Staging,
    source_str: &str,
    selection: &LocalSelection,
) -> Result<Fetched, InstallError> {
    let md = fs::metadata(src).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            InstallError::NotFound(src.to_path_buf())
        } else {
            InstallError::io("reading", src, e)
        }
    })?;
    let mut list: Vec<(PathBuf, String)> = Vec::new();
    if md.is_dir() {
        walk_files(src, src, &mut list)?;
    } else {
        list.push((src.to_path_buf(), String::new()));
    }
    // Only the files the entry's include/exclude take (a folder's; a file is its own).
    if md.is_dir() {
        list.retain(|(_, rel)| selection.takes(rel));
    }
    let intact = |path: &Path, rel: &str| {
        !damaged.iter().any(|d| d == rel)
            && recorded.get(rel).is_some_and(|fp| {
                ModelFile::fingerprint(path, "")
                    .is_ok_and(|now| now.size == fp.size && now.mtime_ns == fp.mtime_ns)
            })
    };
    let mut out = Fetched::default();
    let mut prepared = false;
    for (from, rel) in list {
        let final_path = if rel.is_empty() {
            target.to_path_buf()
        } else {
            target.join(&rel)
        };
        if intact(&final_path, &rel) {
            continue;
        }
        if !prepared {
            staging.prepare(source_str, StagingKind::Local, None)?;
            prepared = true;
        }
        let staged = if rel.is_empty() {
            staging.files().join(file_name(target))
        } else {
            staging.files().join(&rel)
        };
        if let Some(parent) = staged.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| InstallError::io("creating folder", parent, e))?;
        }
        link_or_copy(&from, &staged)?;
        out.moves.push((staged, final_path));
    }
    Ok(out)
}

fn walk_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(PathBuf, String)>,
) -> Result<(), InstallError> {
    let rd = fs::read_dir(dir).map_err(|e| InstallError::io("reading", dir, e))?;
    for e in rd {
        let e = e.map_err(|e| InstallError::io("reading", dir, e))?;
        let p = e.path();
        if fs::metadata(&p).is_ok_and(|m| m.is_dir()) {
            walk_files(root, &p, out)?;
        } else {
            out.push((p.clone(), slash(p.strip_prefix(root).unwrap_or(&p))));
        }
    }
    Ok(())
}

/// The serial half, under the lane: files into place, hash, fingerprints, record.
fn settle(
    inner: &Inner,
    req: &InstallRequest,
    key: &str,
    target: &Path,
    source_str: &str,
    fetched: Fetched,
    staging: &Staging,
) -> Result<InstallOutcome, InstallError> {
    let opts = &req.options;
    let models_dir = &inner.cfg.models_dir;
    // hf-cache: a fetched file becomes its blob again and the snapshot's link points at it.
    let hf_repo = layout::hf_snapshot_of(models_dir, target).map(|(repo, _)| repo);
    let hub = matches!(req.source, ModelSource::Hf(_));
    for (from, to) in &fetched.moves {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| InstallError::io("creating folder", parent, e))?;
        }
        match &hf_repo {
            Some(repo) => {
                let lock_name = match to.strip_prefix(target) {
                    Ok(rel) if !rel.as_os_str().is_empty() => slash(rel),
                    _ => file_name(target),
                };
                let known = fetched.sha256.get(&lock_name).map(String::as_str);
                let id = layout::blob_id(from, known, hub)?;
                layout::place_blob(repo, from, to, &id, true)?;
            }
            None => {
                fs::rename(from, to).map_err(|e| InstallError::io("moving into place", to, e))?;
            }
        }
    }
    for p in &fetched.remove {
        if hf_repo.is_some() {
            layout::remove_hf(models_dir, p)?;
        } else if fs::remove_file(p).is_ok() {
            super::staging::remove_empty_parents(target, p);
        }
    }
    if fs::symlink_metadata(target).is_err() {
        return Err(InstallError::NotFound(target.to_path_buf()));
    }
    crate::probe::safetensors::verify_declared_sizes(target).map_err(|error| {
        InstallError::Probe {
            path: target.to_path_buf(),
            error: Box::new(error),
        }
    })?;
    let algo = opts.hash_algorithm.unwrap_or(inner.cfg.hash_algorithm);
    let content_hash = hash::hash_path(target, algo).map_err(|error| InstallError::Hash {
        path: target.to_path_buf(),
        error: Box::new(error),
    })?;
    if let Some(expected) = &opts.expected_hash {
        check_expected_hash(target, expected, algo, &content_hash, None)?;
    }
    let record = inner.store.get_model(key)?;
    let staged = Staged {
        model_path: target.to_path_buf(),
        staging: None,
        moved_from: String::new(),
        single_file: !target.is_dir(),
        source: source_str.to_owned(),
        source_type: record.common().source_type,
        metadata: fetched.metadata.clone(),
        tags: fetched.tags.clone(),
        commit: fetched.commit.clone(),
        sha256: fetched.sha256,
        digests: HashMap::new(),
        downloaded: fetched.downloaded,
        adopted: Vec::new(),
    };
    let (files, installed) = fingerprints(target, &staged, opts, algo, &content_hash)?;
    let mut fields = Map::new();
    fields.insert("hash".into(), Value::from(content_hash));
    fields.insert(
        "file_size".into(),
        Value::from(files.iter().map(|f| f.size).sum::<u64>()),
    );
    if let Some(m) = &fetched.metadata {
        fields.insert("source_api_response".into(), m.clone());
    }
    fields.insert(
        "tags".into(),
        Value::from(merged_tags(
            &req.config,
            &record.common().tags,
            &fetched.tags,
        )),
    );
    let updated = inner
        .store
        .update_model(key, ConfigChange::Sparse(fields))?;
    inner.store.set_model_files(key, &files)?;
    // Best effort: a leftover is removed by the next start-up recovery or `gc`.
    let _ = staging.remove();
    Ok(InstallOutcome {
        key: key.to_owned(),
        record: updated,
        path: target.to_path_buf(),
        source: source_str.to_owned(),
        commit: fetched.commit,
        files: installed,
        downloaded_bytes: fetched.downloaded,
        adopted: fetched.adopted,
        existing: false,
        warnings: Vec::new(),
    })
}

/// The tags a record gets: the source's (the Hub's) plus the caller's (`config.tags`, the
/// manifest's), in that order without repeats, as an install writes them. Without caller tags
/// (an import), the record's own tags stand for them.
pub(crate) fn merged_tags(
    config: &Map<String, Value>,
    own: &[String],
    hub: &[String],
) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let caller: Vec<String> = match config.get("tags").and_then(Value::as_array) {
        Some(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        None => own.to_vec(),
    };
    for t in hub.iter().chain(&caller) {
        if seen.insert(t.clone()) {
            out.push(t.clone());
        }
    }
    out
}
