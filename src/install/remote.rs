//! Remote sources: Hugging Face repos (through [`crate::hub::HubClient::plan_source`]) and
//! URLs, downloaded in parallel through the queue into a staging dir; and
//! `download_and_cache`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

use crate::config::ModelSourceType;
use crate::download::names::redact_url_str;
use crate::download::{AccessToken, DownloadError, DownloadEventHandler, DownloadJob, JobId};
use crate::hub::{
    ExpectedHash, FileFilter, HfModelSource, ModelSource, Token, UrlModelSource, resolve_token,
};

use super::error::InstallError;
use super::job::{InstallJobId, InstallPart};
use super::promote::Staged;
use super::request::InstallOptions;
use super::service::{Cancel, Inner, record_source};
use super::staging::{CACHE_DIR, Staging, StagingKind, staging_id};

pub(super) fn access(t: Option<&Token>) -> Option<AccessToken> {
    t.map(|t| AccessToken::new(t.expose()))
}

/// Length of a file, 0 when absent.
pub(super) fn len_of(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

pub(super) fn part_of(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// One file to fetch into staging.
pub(super) struct Want {
    pub(super) job: DownloadJob,
    pub(super) part: InstallPart,
    /// Already complete in staging: no download.
    pub(super) done: bool,
}

impl Want {
    /// The one file of a URL source, fetched into `dest` (already complete when `done`).
    pub(super) fn url(
        url: &reqwest::Url,
        dest: &Path,
        done: bool,
        token: Option<&Token>,
        sha256: Option<String>,
    ) -> Self {
        let job = DownloadJob::new(url.to_string(), dest.to_path_buf())
            .with_access_token(access(token))
            .with_sha256(sha256)
            .with_preserve_partial_downloads(true);
        let (bytes, total_bytes) = if done {
            (len_of(dest), len_of(dest))
        } else {
            (len_of(&part_of(dest)), 0)
        };
        Self {
            job,
            part: InstallPart {
                source: redact_url_str(url.as_str()),
                local_path: dest.to_path_buf(),
                bytes,
                total_bytes,
            },
            done,
        }
    }
}

pub(crate) async fn fetch_hf(
    inner: &Arc<Inner>,
    id: InstallJobId,
    src: &HfModelSource,
    opts: &InstallOptions,
    staging: Staging,
    cancel: &Arc<Cancel>,
) -> Result<Staged, InstallError> {
    let source_str = ModelSource::Hf(src.clone()).canonical();
    let hub_err = |error| InstallError::Hub {
        source_str: source_str.clone(),
        error: Box::new(error),
    };
    let token = resolve_token(
        opts.access_token.as_ref().or(src.access_token.as_ref()),
        &inner.cfg.hub_env,
    );
    let mut at = src.clone();
    if let Some(rev) = &opts.revision {
        at.revision = Some(rev.clone());
    }
    let filter =
        FileFilter::from_source(&at).with_globs(opts.include.clone(), opts.exclude.clone());
    // The record hash is computed as the bytes arrive (promote takes it from the download).
    let algo = opts.hash_algorithm.unwrap_or(inner.cfg.hash_algorithm);
    let plan = tokio::select! {
        p = inner.cfg.hub.plan_source(&at, &filter, &token) => p.map_err(hub_err)?,
        () = cancel.wait() => return Err(InstallError::Cancelled(source_str)),
    };
    staging.prepare(&source_str, StagingKind::Hf, Some(&plan.commit))?;
    let files = staging.files();
    let mut wants = Vec::new();
    let mut sha256 = HashMap::new();
    for spec in &plan.downloads {
        let dest = files.join(&spec.dest);
        let rel = spec
            .dest
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let mut job = DownloadJob::new(spec.url.to_string(), dest.clone())
            .with_hash_algorithms(vec![algo])
            .with_expected_size(Some(spec.size))
            .with_access_token(access(spec.access_token.as_ref()))
            .with_preserve_partial_downloads(true);
        match &spec.expected {
            ExpectedHash::Sha256(h) => {
                sha256.insert(rel, h.clone());
                job = job.with_sha256(Some(h.clone()));
            }
            ExpectedHash::GitBlobSha1(h) => job = job.with_git_sha1(Some(h.clone())),
        }
        // Only the queue writes whole files into staging, and only after verifying them.
        let done = len_of(&dest) == spec.size && dest.is_file();
        wants.push(Want {
            job,
            part: InstallPart {
                source: redact_url_str(spec.url.as_str()),
                local_path: dest.clone(),
                bytes: if done {
                    spec.size
                } else {
                    len_of(&part_of(&dest)).min(spec.size)
                },
                total_bytes: spec.size,
            },
            done,
        });
    }
    let single_file = src.single_file().is_some() && plan.downloads.len() == 1;
    let (model_path, moved_from) = match plan.downloads.first() {
        Some(spec) if single_file => (
            files.join(&spec.dest),
            format!("files/{}", spec.dest.to_string_lossy()),
        ),
        _ => (files.clone(), "files".to_owned()),
    };
    let fetched = run_downloads(inner, id, &source_str, &staging, wants, cancel).await?;
    let digests = fetched
        .digests
        .into_iter()
        .filter_map(|(path, d)| {
            let rel = path.strip_prefix(&files).ok()?;
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            Some((rel, d))
        })
        .collect();
    Ok(Staged {
        model_path,
        staging: Some(staging),
        moved_from,
        single_file,
        source: source_str,
        source_type: ModelSourceType::HfRepoId,
        metadata: Some(plan.metadata.to_json_value()),
        tags: plan.metadata.tags.iter().cloned().collect(),
        commit: Some(plan.commit.clone()),
        sha256,
        digests,
        downloaded: fetched.bytes,
    })
}

pub(crate) async fn fetch_url(
    inner: &Arc<Inner>,
    id: InstallJobId,
    src: &UrlModelSource,
    opts: &InstallOptions,
    staging: Staging,
    cancel: &Arc<Cancel>,
) -> Result<Staged, InstallError> {
    let source_str = record_source(&ModelSource::Url(src.clone()));
    staging.prepare(&source_str, StagingKind::Url, None)?;
    let files = staging.files();
    let (dest, done) = url_destination(&files);
    let token = opts.access_token.as_ref().or(src.access_token.as_ref());
    // An entry's `hash: sha256:…` is the whole file's sha256: the download checks it too, which
    // also vouches for a body whose size the server cannot confirm.
    let sha256 = opts
        .expected_hash
        .as_deref()
        .and_then(|h| h.strip_prefix("sha256:"))
        .map(str::to_ascii_lowercase);
    let mut want = Want::url(&src.url, &dest, done, token, sha256);
    want.job.hash_algorithms = vec![opts.hash_algorithm.unwrap_or(inner.cfg.hash_algorithm)];
    let fetched = run_downloads(inner, id, &source_str, &staging, vec![want], cancel).await?;
    let (model_path, done) = url_destination(&files);
    if !done {
        return Err(InstallError::Download {
            source_str,
            error: Arc::new(DownloadError::Protocol {
                url: redact_url_str(src.url.as_str()),
                what: "the download finished but left no file".into(),
            }),
        });
    }
    let name = model_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let digests = fetched
        .digests
        .into_iter()
        .filter(|(p, _)| *p == model_path)
        .map(|(_, d)| (name.clone(), d))
        .collect();
    Ok(Staged {
        model_path,
        staging: Some(staging),
        moved_from: format!("files/{name}"),
        single_file: true,
        source: source_str,
        source_type: ModelSourceType::Url,
        metadata: None,
        tags: Vec::new(),
        commit: None,
        sha256: HashMap::new(),
        digests,
        downloaded: fetched.bytes,
    })
}

/// Where a URL download goes in `dir`: the finished file if there is one (`true`), else the
/// `.part` a previous run left (so it resumes under the server's name), else `dir` itself (the
/// queue names the file from `Content-Disposition`).
pub(super) fn url_destination(dir: &Path) -> (PathBuf, bool) {
    let mut part = None;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if !p.is_file() {
                continue;
            }
            if let Some(stem) = name.strip_suffix(".part") {
                part = Some(dir.join(stem));
            } else if !name.ends_with(".part.state") {
                return (p, true);
            }
        }
    }
    (part.unwrap_or_else(|| dir.to_path_buf()), false)
}

/// What [`run_downloads`] fetched.
pub(super) struct Fetched {
    /// Bytes downloaded by this run.
    pub(super) bytes: u64,
    /// Each downloaded file's content hashes (`algo:hex`), computed as its bytes arrived, by
    /// its path. A file that was complete before this run has none.
    pub(super) digests: HashMap<PathBuf, Vec<String>>,
}

/// Checks free space, submits every download not already complete, reports progress and
/// waits; on the first failure the others are cancelled (their partial files kept for a
/// resume). Returns the bytes downloaded by this run: a resumed file counts only what came
/// after its partial, a file already complete counts nothing.
pub(super) async fn run_downloads(
    inner: &Arc<Inner>,
    id: InstallJobId,
    source_str: &str,
    staging: &Staging,
    wants: Vec<Want>,
    cancel: &Arc<Cancel>,
) -> Result<Fetched, InstallError> {
    let needed: u64 = wants
        .iter()
        .filter(|w| !w.done)
        .map(|w| w.part.total_bytes.saturating_sub(w.part.bytes))
        .sum();
    if inner.cfg.check_disk_space && needed > 0 {
        let available = crate::download::available_space(&staging.files())
            .map_err(|e| InstallError::io("checking free space in", staging.files(), e))?;
        if available < needed {
            return Err(InstallError::InsufficientSpace {
                source_str: source_str.to_owned(),
                path: staging.files(),
                needed,
                available,
            });
        }
    }
    let already: u64 = wants.iter().map(|w| w.part.bytes).sum();
    inner.set_parts(
        id,
        staging.files(),
        wants.iter().map(|w| w.part.clone()).collect(),
        already,
    );
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let mut ids: Vec<JobId> = Vec::new();
    // Download job → the bytes its partial already held when this run began.
    let mut resumed_from: HashMap<JobId, u64> = HashMap::new();
    for (i, w) in wants.into_iter().enumerate() {
        if w.done {
            continue;
        }
        let start = w.part.bytes;
        let weak = weak.clone();
        let job = w
            .job
            .with_handler(DownloadEventHandler::infallible(move |dj: &DownloadJob| {
                if let Some(inner) = weak.upgrade() {
                    inner.on_download(id, i, dj);
                }
            }));
        if cancel.is_set() {
            break;
        }
        let submitted =
            inner
                .queue
                .submit_download_job(job, false)
                .map_err(|e| InstallError::Download {
                    source_str: source_str.to_owned(),
                    error: Arc::new(e),
                })?;
        inner.link_download(id, submitted.id, i);
        resumed_from.insert(submitted.id, start);
        ids.push(submitted.id);
    }
    // All at once: the files in flight share the connection budget.
    let _ = inner.queue.start_jobs(&ids);
    let cancel_all = |ids: &[JobId]| {
        for d in ids {
            let _ = inner.queue.cancel_job(*d);
        }
    };
    let mut pending: FuturesUnordered<_> = ids
        .iter()
        .map(|d| inner.queue.wait_for_job(*d, None))
        .collect();
    let mut downloaded = 0u64;
    let mut digests = HashMap::new();
    let mut first_err: Option<InstallError> = None;
    loop {
        let next = tokio::select! {
            n = pending.next() => n,
            () = cancel.wait(), if first_err.is_none() && !cancel.is_set() => {
                cancel_all(&ids);
                continue;
            }
        };
        let Some(r) = next else { break };
        let err = match r {
            Ok(job) => match job.result() {
                Ok(path) => {
                    let from = resumed_from.get(&job.id).copied().unwrap_or(0);
                    downloaded += job.bytes.saturating_sub(from);
                    if !job.digests.is_empty() {
                        digests.insert(path.to_path_buf(), job.digests.clone());
                    }
                    None
                }
                Err(e) => Some(e),
            },
            Err(e) => Some(Arc::new(e)),
        };
        if let Some(e) = err
            && first_err.is_none()
        {
            first_err = Some(InstallError::Download {
                source_str: source_str.to_owned(),
                error: e,
            });
            cancel_all(&ids);
        }
    }
    if cancel.is_set() {
        return Err(InstallError::Cancelled(source_str.to_owned()));
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(Fetched {
        bytes: downloaded,
        digests,
    })
}

pub(crate) async fn download_and_cache(
    inner: &Arc<Inner>,
    source: &str,
    access_token: Option<Token>,
    timeout: Option<Duration>,
) -> Result<PathBuf, InstallError> {
    let src = ModelSource::parse(source)?;
    let ModelSource::Url(u) = &src else {
        return Err(InstallError::NotRemote(source.to_owned()));
    };
    let dir = inner
        .cfg
        .models_dir
        .join(CACHE_DIR)
        .join(staging_id(&src.canonical(), &[]));
    std::fs::create_dir_all(&dir).map_err(|e| InstallError::io("creating folder", &dir, e))?;
    let (dest, done) = url_destination(&dir);
    if done {
        return Ok(dest);
    }
    let token = access_token.as_ref().or(u.access_token.as_ref());
    let job = DownloadJob::new(u.url.to_string(), dest)
        .with_access_token(access(token))
        .with_preserve_partial_downloads(true);
    let err = |e: DownloadError| InstallError::Download {
        source_str: record_source(&src),
        error: Arc::new(e),
    };
    let job = inner.queue.submit_download_job(job, true).map_err(err)?;
    match inner.queue.wait_for_job(job.id, timeout).await {
        Ok(done) => done
            .result()
            .map(Path::to_path_buf)
            .map_err(|e| InstallError::Download {
                source_str: record_source(&src),
                error: e,
            }),
        Err(DownloadError::Timeout { timeout, .. }) => {
            let _ = inner.queue.cancel_job(job.id);
            Err(InstallError::Timeout {
                what: format!("the download of {}", record_source(&src)),
                timeout,
            })
        }
        Err(e) => Err(err(e)),
    }
}
