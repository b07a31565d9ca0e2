//! The serial half of an install: probe → hash → check → intent → rename into place → record.
//! Runs under the service's lane (one at a time), on a blocking thread.

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::config::{AnyModelConfig, ModelSourceType, new_key};
use crate::hash::{self, HashAlgorithm};
use crate::probe::{self, ProbeResult};
use crate::scan::{GlobalClass, ScanVerdict};
use crate::store::{ModelFile, RecordStore};
use crate::taxonomy::ModelType;

use super::error::InstallError;
use super::layout::{HfTarget, Layout, Wanted, blob_id, destination, place_hf, remove_hf};
use super::request::{InstallOptions, InstallOutcome, InstalledFile, UnknownModels};
use super::staging::{Intent, Staging, remove_empty_parents, sync_dir};

/// Config keys the installer owns: a caller cannot set them through the config dict.
const INSTALLER_FIELDS: &[&str] = &[
    "path",
    "hash",
    "source",
    "source_type",
    "source_api_response",
    "created_at",
    "updated_at",
    "managed",
    "file_size",
];

/// The config key that lets a dangerous pickle in. Never stored.
pub const UNSAFE_PICKLE: &str = "unsafe_pickle";

/// Checks a config dict before anything is fetched: known keys, valid values, no
/// installer-owned keys. Returns the dict without `unsafe_pickle` and whether it allowed.
pub(crate) fn check_config(
    config: &Map<String, Value>,
) -> Result<(Map<String, Value>, bool), InstallError> {
    let mut clean = config.clone();
    let allow = match clean.remove(UNSAFE_PICKLE) {
        None | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) if s == "allow" => true,
        Some(Value::String(s)) if s == "refuse" => false,
        Some(other) => {
            return Err(InstallError::InvalidConfig {
                key: UNSAFE_PICKLE.into(),
                reason: format!("expected \"allow\" or \"refuse\", got {other}"),
            });
        }
    };
    for k in clean.keys() {
        if INSTALLER_FIELDS.contains(&k.as_str()) {
            return Err(InstallError::InvalidConfig {
                key: k.clone(),
                reason: "set by the installer; it cannot be overridden (use the `dest` / `hash` install options for paths and hashes)".into(),
            });
        }
    }
    serde_json::from_value::<crate::config::RawConfig>(Value::Object(clean.clone())).map_err(
        |e| InstallError::InvalidConfig {
            key: e
                .to_string()
                .split('`')
                .nth(1)
                .unwrap_or("config")
                .to_owned(),
            reason: e.to_string(),
        },
    )?;
    Ok((clean, allow))
}

/// Everything known about a model before it is promoted.
#[derive(Debug)]
pub(crate) struct Staged {
    /// The model file or folder (in staging, or in place).
    pub model_path: PathBuf,
    /// The staging dir, unless registered in place.
    pub staging: Option<Staging>,
    /// Relative to the staging dir: where `model_path` is (`files` or `files/<name>`).
    pub moved_from: String,
    /// Whether the model is a single file.
    pub single_file: bool,
    /// Canonical source for the record.
    pub source: String,
    /// Its type.
    pub source_type: ModelSourceType,
    /// HF metadata for `source_api_response`.
    pub metadata: Option<Value>,
    /// Tags from the source.
    pub tags: Vec<String>,
    /// Resolved commit.
    pub commit: Option<String>,
    /// Known sha256 by path relative to the model folder (single file: its name).
    pub sha256: HashMap<String, String>,
    /// Content hashes (`algo:hex`) the download computed as the bytes arrived, by the same
    /// paths: promotion takes a file's digest from here instead of reading the file again.
    pub digests: HashMap<String, Vec<String>>,
    /// Bytes downloaded.
    pub downloaded: u64,
    /// Files placed from bytes already on this machine (not downloaded).
    pub adopted: Vec<super::blobs::AdoptedFile>,
}

impl Staged {
    /// A file's known digest (hex) under `algo`, by path relative to `model_path` (`""`: the
    /// single file itself): what the download computed, or the sha256 it verified.
    pub(crate) fn known_digest(&self, rel: &str, algo: HashAlgorithm) -> Option<String> {
        let key = if rel.is_empty() {
            self.model_path.file_name()?.to_string_lossy().into_owned()
        } else {
            rel.to_owned()
        };
        let prefix = format!("{}:", algo.prefix());
        let computed = self
            .digests
            .get(&key)
            .and_then(|ds| ds.iter().find_map(|d| d.strip_prefix(&prefix)))
            .map(str::to_owned);
        match algo {
            HashAlgorithm::Sha256 => computed.or_else(|| self.sha256.get(&key).cloned()),
            _ => computed,
        }
    }
}

/// The service-level settings promotion needs.
pub(crate) struct PromoteCtx<'a> {
    pub models_dir: &'a Path,
    pub store: &'a dyn RecordStore,
    pub hash_algorithm: HashAlgorithm,
    pub cancelled: &'a dyn Fn() -> bool,
}

/// Probes, hashes, checks, promotes and registers a staged model.
pub(crate) fn promote(
    ctx: &PromoteCtx<'_>,
    staged: &Staged,
    config: &Map<String, Value>,
    opts: &InstallOptions,
) -> Result<InstallOutcome, InstallError> {
    let (mut config, allow_pickle) = check_config(config)?;
    if !config.contains_key("name")
        && let Some(name) = default_name(staged)
    {
        config.insert("name".into(), Value::from(name));
    }
    let path = &staged.model_path;
    let algo = opts.hash_algorithm.unwrap_or(ctx.hash_algorithm);
    let checked = || -> Result<_, InstallError> {
        let probed =
            probe::probe_with_overrides(path, &config).map_err(|error| InstallError::Probe {
                path: path.clone(),
                error: Box::new(error),
            })?;
        let warnings = check_probe(path, &probed, allow_pickle, opts.unknown_models)?;
        // Every safetensors / GGUF file, a folder's shards included, must hold the bytes its
        // header declares: a truncated or lying file is never promoted.
        probe::safetensors::verify_declared_sizes(path).map_err(|error| InstallError::Probe {
            path: path.clone(),
            error: Box::new(error),
        })?;
        // The digests the download computed stand for the bytes: nothing is read again.
        let content_hash = hash::hash_path_with(path, algo, &|rel| staged.known_digest(rel, algo))
            .map_err(|error| InstallError::Hash {
                path: path.clone(),
                error: Box::new(error),
            })?;
        if let Some(expected) = &opts.expected_hash {
            check_expected_hash(path, expected, algo, &content_hash, Some(staged))?;
        }
        Ok((probed, warnings, content_hash))
    };
    let (probed, warnings, content_hash) =
        checked().map_err(|e| relabel(e, &|p| shown_path(staged, p)))?;
    let key = match config.get("key").and_then(Value::as_str) {
        Some(k) if !k.is_empty() => k.to_owned(),
        _ => new_key(),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (target, hf) = match &staged.staging {
        None => (path.clone(), None),
        Some(_) => match &opts.dest {
            Some(dest) if opts.layout != Layout::HfCache => {
                (ctx.models_dir.join(check_dest(dest)?), None)
            }
            _ => destination_of(ctx, staged, &config, &probed, opts.layout, &key, &file_name)?,
        },
    };
    if staged.staging.is_some() && fs::symlink_metadata(&target).is_ok() {
        return Err(InstallError::TargetExists { path: target });
    }
    let stored_path = stored_path(ctx.models_dir, &target);
    if !ctx.store.search_by_path(&stored_path)?.is_empty() {
        return Err(crate::store::StoreError::DuplicateModel(format!(
            "a record already points at {stored_path}"
        ))
        .into());
    }
    let (mut files, installed) = fingerprints(path, staged, opts, algo, &content_hash)?;
    let record = build_record(
        &probed,
        &config,
        staged,
        opts,
        &key,
        &stored_path,
        &content_hash,
    )?;

    if (ctx.cancelled)() {
        return Err(InstallError::Cancelled(staged.source.clone()));
    }
    // From here on a crash is covered by the intent (see staging.rs).
    if let Some(staging) = &staged.staging {
        staging.write_intent(&Intent {
            key: key.clone(),
            target: target.clone(),
            moved_from: staged.moved_from.clone(),
            files: files.clone(),
        })?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| InstallError::io("creating folder", parent, e))?;
        }
        match &hf {
            Some(t) => place_hf(t, path, &|rel, abs| hf_blob_id(staged, &files, rel, abs))
                .inspect_err(|_| {
                    let _ = remove_hf(ctx.models_dir, &target);
                })?,
            None => fs::rename(path, &target)
                .map_err(|e| InstallError::io("moving into place", &target, e))?,
        }
        if let Some(parent) = target.parent() {
            sync_dir(parent);
        }
        if hf.is_some() {
            // A blob another snapshot holds already was kept: the fingerprints are its.
            refresh_fingerprints(&target, &mut files);
        }
    }
    let undo = |e: InstallError| -> InstallError {
        if hf.is_some() {
            let _ = remove_hf(ctx.models_dir, &target);
        } else if staged.staging.is_some() && fs::rename(&target, path).is_ok() {
            remove_empty_parents(ctx.models_dir, &target);
        }
        e
    };
    let written = ctx
        .store
        .add_model(&key, record)
        .map_err(|e| undo(e.into()))?;
    if let Err(e) = ctx.store.set_model_files(&key, &files) {
        let _ = ctx.store.del_model(&key);
        return Err(undo(e.into()));
    }
    if let Some(staging) = &staged.staging {
        // Best effort: a leftover is removed by the next start-up recovery.
        let _ = staging.remove();
    }
    Ok(InstallOutcome {
        key,
        record: written,
        path: target,
        source: staged.source.clone(),
        commit: staged.commit.clone(),
        files: installed,
        downloaded_bytes: staged.downloaded,
        adopted: staged.adopted.clone(),
        existing: false,
        warnings,
    })
}

/// Where a staged model goes in `layout` (no `dest`): see [`super::layout`]. A flat layout's
/// name that a file or a record holds already gets the key's first characters.
fn destination_of(
    ctx: &PromoteCtx<'_>,
    staged: &Staged,
    config: &Map<String, Value>,
    probed: &ProbeResult,
    layout: Layout,
    key: &str,
    file_name: &str,
) -> Result<(PathBuf, Option<HfTarget>), InstallError> {
    let name = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&probed.name);
    let wanted = Wanted {
        layout,
        models_dir: ctx.models_dir,
        key,
        name,
        file_name,
        single_file: staged.single_file,
        source: &staged.source,
        source_type: staged.source_type,
        commit: staged.commit.as_deref(),
        model_type: probed.model_type,
        format: probed.format,
        base: probed.base,
    };
    let taken = |p: &Path| {
        fs::symlink_metadata(p).is_ok()
            || ctx
                .store
                .search_by_path(&stored_path(ctx.models_dir, p))
                .is_ok_and(|r| !r.is_empty())
    };
    destination(&wanted, &taken)
}

/// Size and mtime of each file as it is now at `target` (through its symlink).
fn refresh_fingerprints(target: &Path, files: &mut [ModelFile]) {
    for f in files {
        let p = if f.relative_path.is_empty() {
            target.to_path_buf()
        } else {
            target.join(&f.relative_path)
        };
        if let Ok(now) = ModelFile::fingerprint(&p, f.relative_path.clone()) {
            f.size = now.size;
            f.mtime_ns = now.mtime_ns;
        }
    }
}

/// The blob name of a staged file in the hf-cache layout: the Hub's ETag (the LFS sha256, else
/// the git blob sha1 of a small file), or for other sources the sha256.
fn hf_blob_id(
    staged: &Staged,
    files: &[ModelFile],
    rel: &str,
    abs: &Path,
) -> Result<String, InstallError> {
    if staged.source_type == ModelSourceType::HfRepoId {
        let lock_name = if rel.is_empty() {
            abs.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            rel.to_owned()
        };
        return blob_id(abs, staged.sha256.get(&lock_name).map(String::as_str), true);
    }
    let known = files
        .iter()
        .find(|f| f.relative_path == rel)
        .and_then(|f| f.sha256.as_deref());
    blob_id(abs, known, false)
}

/// The name of a record nothing names, for a staged folder: the probe would take the staging
/// folder's own name (`files`), so the local folder's name, or the Hub subfolder's last
/// component, or the repo's name (`owner/name` → `name`) is used, as `hf download` names its
/// folders. Files keep the probe's name (their stem); inplace models their folder's name. An
/// `oci://` artifact takes the record name `modelsync push` wrote in it, else (a folder) its
/// repository's last component.
fn default_name(staged: &Staged) -> Option<String> {
    staged.staging.as_ref()?;
    // An artifact `modelsync push` made carries its record's name: pulled back, the record
    // is named the same (a file's too). Another artifact's folder takes its repository's
    // last component.
    if staged.source.starts_with(crate::oci::reference::SCHEME) {
        let pushed = staged
            .metadata
            .as_ref()
            .and_then(|m| m["annotations"][crate::oci::push::ANNOTATION_NAME].as_str())
            .filter(|n| !n.trim().is_empty())
            .map(str::to_owned);
        if pushed.is_some() || staged.single_file {
            return pushed;
        }
        let r = crate::oci::OciReference::parse(&staged.source).ok()?;
        return r.repository.rsplit('/').next().map(str::to_owned);
    }
    if staged.single_file {
        return None;
    }
    let last = |s: &str| {
        s.trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    };
    match staged.source_type {
        ModelSourceType::Path => Path::new(&staged.source)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        _ => match crate::hub::ModelSource::parse(&staged.source).ok()? {
            crate::hub::ModelSource::Hf(h) => h
                .subfolder
                .as_deref()
                .and_then(last)
                .or_else(|| last(&h.repo_id)),
            _ => None,
        },
    }
}

/// Where a staged file is for the user: a path under the staging folder
/// (`.tmp/<id>/files/…`) becomes the same path under the source — the local file or folder,
/// the `owner/name` repo (`owner/name/unet/config.json`), the URL. Other paths stay.
fn shown_path(staged: &Staged, p: &Path) -> PathBuf {
    if staged.staging.is_none() {
        return p.to_path_buf();
    }
    match p.strip_prefix(&staged.model_path) {
        Ok(rel) if rel.as_os_str().is_empty() => PathBuf::from(&staged.source),
        Ok(rel) => Path::new(&staged.source).join(rel),
        Err(_) => p.to_path_buf(),
    }
}

/// The error with its paths (and its probe or hash cause's) shown by `shown`.
fn relabel(e: InstallError, shown: &dyn Fn(&Path) -> PathBuf) -> InstallError {
    use crate::hash::HashError as H;
    use crate::probe::ProbeError as P;
    let probe = |e: P| match e {
        P::NotFound(p) => P::NotFound(shown(&p)),
        P::Io { path, source } => P::Io {
            path: shown(&path),
            source,
        },
        P::EmptyFile(p) => P::EmptyFile(shown(&p)),
        P::Safetensors { path, reason } => P::Safetensors {
            path: shown(&path),
            reason,
        },
        P::Gguf { path, reason } => P::Gguf {
            path: shown(&path),
            reason,
        },
        P::Pickle { path, reason } => P::Pickle {
            path: shown(&path),
            reason,
        },
        P::NotTorchZip(p) => P::NotTorchZip(shown(&p)),
        P::Config { path, reason } => P::Config {
            path: shown(&path),
            reason,
        },
        P::TypeConflict {
            path,
            hint,
            probed,
            evidence,
        } => P::TypeConflict {
            path: shown(&path),
            hint,
            probed,
            evidence,
        },
        other => other,
    };
    let hash = |e: H| match e {
        H::NotFound(p) => H::NotFound(shown(&p)),
        H::Io { path, source } => H::Io {
            path: shown(&path),
            source,
        },
        H::NoWeightFiles(p) => H::NoWeightFiles(shown(&p)),
    };
    match e {
        InstallError::Probe { path, error } => InstallError::Probe {
            path: shown(&path),
            error: Box::new(probe(*error)),
        },
        InstallError::Hash { path, error } => InstallError::Hash {
            path: shown(&path),
            error: Box::new(hash(*error)),
        },
        InstallError::UnknownModel { path, evidence } => InstallError::UnknownModel {
            path: shown(&path),
            evidence,
        },
        InstallError::AmbiguousBase { path, candidates } => InstallError::AmbiguousBase {
            path: shown(&path),
            candidates,
        },
        InstallError::DangerousPickle {
            path,
            verdict,
            globals,
        } => InstallError::DangerousPickle {
            path: shown(&path),
            verdict,
            globals,
        },
        InstallError::HashMismatch {
            path,
            expected,
            actual,
        } => InstallError::HashMismatch {
            path: shown(&path),
            expected,
            actual,
        },
        InstallError::Io { op, path, source } => InstallError::Io {
            op,
            path: shown(&path),
            source,
        },
        other => other,
    }
}

/// Refuses what must not be installed; returns the warnings for what is installed anyway (an
/// unidentified model recorded as `unknown`, a base taken by a fallback rule).
fn check_probe(
    path: &Path,
    probed: &ProbeResult,
    allow_pickle: bool,
    policy: UnknownModels,
) -> Result<Vec<String>, InstallError> {
    // Safety first: a pickle importing anything outside the allow-list (or one the scanner
    // could not follow to its end) is refused whatever else it is.
    if let Some(scan) = &probed.pickle_scan
        && scan.verdict != ScanVerdict::Clean
        && !allow_pickle
    {
        let mut why: Vec<String> = scan
            .globals
            .iter()
            .filter(|g| g.class != GlobalClass::Safe)
            .map(|g| format!("{} {}.{} in {}", g.class, g.module, g.name, g.file))
            .collect();
        why.extend(scan.problems.iter().cloned());
        return Err(InstallError::DangerousPickle {
            path: path.to_path_buf(),
            verdict: scan.verdict,
            globals: why.join(", "),
        });
    }
    let mut warnings = probed.warnings.clone();
    if probed.model_type == ModelType::Unknown {
        let evidence = if probed.evidence.is_empty() {
            "no rule matched".into()
        } else {
            probed.evidence.join("; ")
        };
        if policy == UnknownModels::Deny {
            return Err(InstallError::UnknownModel {
                path: path.to_path_buf(),
                evidence,
            });
        }
        let file = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        warnings.push(format!(
            "no probe rule identifies `{file}` ({evidence}); recorded as type `unknown` (format `{}`, base `{}`), which `load` refuses; {}",
            probed.format,
            probed.base,
            crate::config::IDENTIFY_HINT
        ));
        return Ok(warnings);
    }
    if probed.base_is_ambiguous() && policy == UnknownModels::Deny {
        return Err(InstallError::AmbiguousBase {
            path: path.to_path_buf(),
            candidates: probed
                .base_candidates
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(warnings)
}

pub(super) fn check_expected_hash(
    path: &Path,
    expected: &str,
    algo: HashAlgorithm,
    actual: &str,
    staged: Option<&Staged>,
) -> Result<(), InstallError> {
    let Some((prefix, _)) = expected.split_once(':') else {
        return Err(InstallError::InvalidOption {
            option: "hash",
            reason: format!("`{expected}` is not `algorithm:hex`"),
        });
    };
    let actual = if prefix == algo.prefix() {
        actual.to_owned()
    } else {
        let other: HashAlgorithm = prefix.parse().map_err(|e| InstallError::InvalidOption {
            option: "hash",
            reason: format!("`{expected}`: {e}"),
        })?;
        let known = |rel: &str| staged.and_then(|s| s.known_digest(rel, other));
        hash::hash_path_with(path, other, &known).map_err(|error| InstallError::Hash {
            path: path.to_path_buf(),
            error: Box::new(error),
        })?
    };
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(InstallError::HashMismatch {
            path: path.to_path_buf(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

/// A `dest` must be a relative path below `models_dir` and not inside its scratch folders.
pub(crate) fn check_dest(dest: &Path) -> Result<PathBuf, InstallError> {
    let bad = |reason: &str| InstallError::InvalidOption {
        option: "dest",
        reason: format!("`{}` {reason}", dest.display()),
    };
    if dest.as_os_str().is_empty() {
        return Err(bad("is empty"));
    }
    if dest.is_absolute() {
        return Err(bad("must be relative to models_dir"));
    }
    let mut comps = dest.components().peekable();
    if let Some(Component::Normal(first)) = comps.peek()
        && (first == &std::ffi::OsStr::new(super::staging::STAGING_DIR)
            || first == &std::ffi::OsStr::new(super::staging::CACHE_DIR))
    {
        return Err(bad("is inside a scratch folder of models_dir"));
    }
    if dest
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(bad("must stay inside models_dir (no `..`)"));
    }
    Ok(dest.to_path_buf())
}

/// The record's path: relative to `models_dir` when inside it, else absolute.
pub(crate) fn stored_path(models_dir: &Path, target: &Path) -> String {
    let lexical = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    for (m, t) in [
        (lexical(models_dir), lexical(target)),
        (absolute(models_dir), absolute(target)),
    ] {
        if let Ok(rel) = t.strip_prefix(&m)
            && !rel.as_os_str().is_empty()
        {
            return rel.to_string_lossy().into_owned();
        }
    }
    absolute(target).to_string_lossy().into_owned()
}

/// An absolute, symlink-resolved form where possible (the folder part), else lexically
/// absolute.
pub(crate) fn absolute(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    if let (Some(parent), Some(name)) = (p.parent(), p.file_name())
        && let Ok(c) = if parent.as_os_str().is_empty() {
            Path::new(".").canonicalize()
        } else {
            parent.canonicalize()
        }
    {
        return c.join(name);
    }
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

pub(super) fn fingerprints(
    path: &Path,
    staged: &Staged,
    opts: &InstallOptions,
    algo: HashAlgorithm,
    content_hash: &str,
) -> Result<(Vec<ModelFile>, Vec<InstalledFile>), InstallError> {
    let mut files = Vec::new();
    let mut installed = Vec::new();
    let mut list: Vec<(PathBuf, String)> = Vec::new();
    if path.is_dir() {
        walk(path, path, &mut list)?;
    } else {
        list.push((path.to_path_buf(), String::new()));
    }
    list.sort_by(|a, b| a.1.cmp(&b.1));
    for (abs, rel) in list {
        let mut fp = ModelFile::fingerprint(&abs, rel.clone())
            .map_err(|e| InstallError::io("reading", &abs, e))?;
        let lock_name = if rel.is_empty() {
            abs.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            rel.clone()
        };
        let mut sha = staged.sha256.get(&lock_name).cloned();
        if sha.is_none() && rel.is_empty() && algo == HashAlgorithm::Sha256 {
            sha = content_hash.strip_prefix("sha256:").map(str::to_owned);
        }
        if sha.is_none() && opts.sha256_for_lock {
            sha = match staged.known_digest(&rel, HashAlgorithm::Sha256) {
                Some(h) => Some(h),
                None => Some(hash::sha256_file(&abs).map_err(|error| InstallError::Hash {
                    path: abs.clone(),
                    error: Box::new(error),
                })?),
            };
        }
        fp.sha256.clone_from(&sha);
        installed.push(InstalledFile {
            path: lock_name,
            size: fp.size,
            sha256: sha,
        });
        files.push(fp);
    }
    Ok((files, installed))
}

/// Every file below `dir` (recursively), with its path relative to `root` in `/` form.
pub(super) fn walk(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(PathBuf, String)>,
) -> Result<(), InstallError> {
    let rd = fs::read_dir(dir).map_err(|e| InstallError::io("reading", dir, e))?;
    for e in rd {
        let e = e.map_err(|e| InstallError::io("reading", dir, e))?;
        let p = e.path();
        let ft = e
            .file_type()
            .map_err(|err| InstallError::io("reading", &p, err))?;
        if ft.is_dir() {
            walk(root, &p, out)?;
        } else {
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((p, rel));
        }
    }
    Ok(())
}

fn build_record(
    probed: &ProbeResult,
    config: &Map<String, Value>,
    staged: &Staged,
    opts: &InstallOptions,
    key: &str,
    stored_path: &str,
    content_hash: &str,
) -> Result<AnyModelConfig, InstallError> {
    let mut raw = probed.to_raw_config();
    raw.key = Some(key.to_owned());
    raw.path = Some(stored_path.to_owned());
    raw.hash = Some(content_hash.to_owned());
    raw.source = Some(staged.source.clone());
    raw.source_type = Some(staged.source_type);
    raw.source_api_response.clone_from(&staged.metadata);
    raw.managed.clone_from(&opts.managed);
    let mut v = serde_json::to_value(&raw).map_err(|e| InstallError::InvalidConfig {
        key: "config".into(),
        reason: e.to_string(),
    })?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| InstallError::InvalidConfig {
            key: "config".into(),
            reason: "the record is not an object".into(),
        })?;
    let mut tags: Vec<String> = staged.tags.clone();
    for (k, val) in config {
        if k == "tags" {
            if let Some(arr) = val.as_array() {
                for t in arr.iter().filter_map(Value::as_str) {
                    if !tags.iter().any(|x| x == t) {
                        tags.push(t.to_owned());
                    }
                }
            }
            continue;
        }
        if val.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), val.clone());
        }
    }
    obj.insert("tags".into(), Value::from(tags));
    AnyModelConfig::from_json(v).map_err(|e| InstallError::InvalidConfig {
        key: "config".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_checks() {
        let c = json!({"name": "x", "unsafe_pickle": "allow", "base": "sd-1"});
        let (clean, allow) = check_config(c.as_object().unwrap()).unwrap();
        assert!(allow);
        assert!(!clean.contains_key("unsafe_pickle"));
        let e = check_config(json!({"path": "/x"}).as_object().unwrap()).unwrap_err();
        assert!(e.to_string().contains("`path`"), "{e}");
        let e = check_config(json!({"colour": "red"}).as_object().unwrap()).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = check_config(json!({"base": "sd-9"}).as_object().unwrap()).unwrap_err();
        assert!(e.to_string().contains("sd-9"), "{e}");
    }

    #[test]
    fn dest_must_stay_inside() {
        assert!(check_dest(Path::new("loras/a.safetensors")).is_ok());
        for bad in ["/abs", "../x", "a/../../x", ".tmp/x", ""] {
            assert!(check_dest(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_paths_are_relative_inside_models_dir() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("m/k")).unwrap();
        assert_eq!(stored_path(&d.path().join("m"), &d.path().join("m/k")), "k");
        let out = stored_path(&d.path().join("m"), &d.path().join("other"));
        assert!(Path::new(&out).is_absolute());
    }
}
