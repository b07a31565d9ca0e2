//! Remote sources: Hugging Face repos (through [`crate::hub::HubClient::plan_source`]) and
//! URLs, downloaded in parallel through the queue into a staging dir; and
//! `download_and_cache`.
//!
//! This half knows nothing of the service: it works through a [`FetchCtx`] (the settings,
//! the store, the queue) and reports a job's parts and progress to a [`FetchSink`], which the
//! service implements over its job table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

use crate::config::ModelSourceType;
use crate::download::names::redact_url_str;
use crate::download::{
    AccessToken, DownloadError, DownloadEventHandler, DownloadJob, DownloadQueue, JobId,
};
use crate::hub::{
    ExpectedHash, FileFilter, HfModelSource, ModelSource, Token, UrlModelSource, resolve_token,
};

use crate::store::RecordStore;

use super::blobs::{AdoptedFile, BlobIndex};
use super::config::{Cancel, InstallConfig, record_source};
use super::error::InstallError;
use super::job::InstallPart;
use super::promote::Staged;
use super::request::InstallOptions;
use super::staging::{CACHE_DIR, Staging, StagingKind, staging_id};

/// What fetching needs from the service: its settings (Hub client, token environment,
/// `models_dir`, the disk check, where to adopt from), the record store (whose files may be
/// adopted), the download queue, and where one job's progress goes.
pub(crate) struct FetchCtx<'a> {
    pub(crate) cfg: &'a InstallConfig,
    pub(crate) store: Arc<dyn RecordStore>,
    pub(crate) queue: &'a DownloadQueue,
    pub(crate) sink: Arc<dyn FetchSink>,
}

/// Where one install job's download parts and progress go. The download queue's handlers hold
/// it for as long as their downloads live, so an implementation must not keep the service
/// alive (the service's holds it weakly).
pub(crate) trait FetchSink: Send + Sync {
    /// The job's files are known (before any starts): its parts, the folder they go to, and
    /// the bytes already there.
    fn parts(&self, local_path: PathBuf, parts: Vec<InstallPart>, done_bytes: u64);
    /// Download `download` fetches part `part` (for cancel and progress).
    fn linked(&self, download: JobId, part: usize);
    /// Progress of part `part`.
    fn progress(&self, part: usize, download: &DownloadJob);
}

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
    /// A file of known size fetched into `dest` by `job`; complete (no download) when `dest`
    /// already has that size: only the queue writes whole files into staging, and only after
    /// verifying them.
    pub(super) fn sized(job: DownloadJob, source: String, dest: &Path, size: u64) -> Self {
        let done = dest.is_file() && len_of(dest) == size;
        Self {
            job,
            part: InstallPart {
                source,
                local_path: dest.to_path_buf(),
                bytes: if done {
                    size
                } else {
                    len_of(&part_of(dest)).min(size)
                },
                total_bytes: size,
            },
            done,
        }
    }

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
    ctx: &FetchCtx<'_>,
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
        &ctx.cfg.hub_env,
    );
    let mut at = src.clone();
    if let Some(rev) = &opts.revision {
        at.revision = Some(rev.clone());
    }
    let filter =
        FileFilter::from_source(&at).with_globs(opts.include.clone(), opts.exclude.clone());
    // The record hash is computed as the bytes arrive (promote takes it from the download).
    let algo = opts.hash_algorithm.unwrap_or(ctx.cfg.hash_algorithm);
    let plan = tokio::select! {
        p = ctx.cfg.hub.plan_source(&at, &filter, &token) => p.map_err(hub_err)?,
        () = cancel.wait() => return Err(InstallError::Cancelled(source_str)),
    };
    staging.prepare(&source_str, StagingKind::Hf, Some(&plan.commit))?;
    let files = staging.files();
    let mut wants = Vec::new();
    let mut sha256 = HashMap::new();
    let mut adoptable = Vec::new();
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
        adoptable.push(Adoptable {
            want: wants.len(),
            hash: spec.expected.clone(),
            size: spec.size,
            rel: rel.clone(),
        });
        match &spec.expected {
            ExpectedHash::Sha256(h) => {
                sha256.insert(rel, h.clone());
                job = job.with_sha256(Some(h.clone()));
            }
            ExpectedHash::GitBlobSha1(h) => job = job.with_git_sha1(Some(h.clone())),
        }
        wants.push(Want::sized(
            job,
            redact_url_str(spec.url.as_str()),
            &dest,
            spec.size,
        ));
    }
    let single_file = src.single_file().is_some() && plan.downloads.len() == 1;
    let (model_path, moved_from) = match plan.downloads.first() {
        Some(spec) if single_file => (
            files.join(&spec.dest),
            format!("files/{}", spec.dest.to_string_lossy()),
        ),
        _ => (files.clone(), "files".to_owned()),
    };
    let adopted = adopt_into_staging(ctx, &mut wants, adoptable).await?;
    let fetched = run_downloads(ctx, &source_str, &staging, wants, cancel).await?;
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
        adopted,
    })
}

pub(crate) async fn fetch_url(
    ctx: &FetchCtx<'_>,
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
    let mut adoptable = Vec::new();
    if let Some(h) = &sha256
        && !done
        && let Some(name) = url_file_name(&src.url, &dest, &files)
    {
        adoptable.push(Adoptable {
            want: 0,
            hash: ExpectedHash::Sha256(h.clone()),
            size: 0,
            rel: name,
        });
    }
    let mut want = Want::url(&src.url, &dest, done, token, sha256);
    want.job.hash_algorithms = vec![opts.hash_algorithm.unwrap_or(ctx.cfg.hash_algorithm)];
    let mut wants = vec![want];
    let adopted = adopt_into_staging(ctx, &mut wants, adoptable).await?;
    let fetched = run_downloads(ctx, &source_str, &staging, wants, cancel).await?;
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
        adopted,
    })
}

/// A file whose bytes may be on this machine already: `wants[want]`, `size` bytes (0: any
/// size) with digest `hash`, at `rel` in the model.
pub(super) struct Adoptable {
    pub(super) want: usize,
    pub(super) hash: ExpectedHash,
    pub(super) size: u64,
    pub(super) rel: String,
}

/// The name a URL download gets when nothing names it yet: the `.part`'s or the URL path's
/// last segment. `None` when the URL has none that looks like a file name.
fn url_file_name(url: &reqwest::Url, dest: &Path, dir: &Path) -> Option<String> {
    if dest != dir {
        return dest.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    let name = url.path_segments()?.next_back()?;
    // Only what looks like a file name (`model.safetensors`): a URL such as Civitai's
    // `/api/download/models/123` names its file in `Content-Disposition`, which only the
    // download learns.
    let looks_like_file = name
        .rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && !ext.is_empty());
    (looks_like_file && !name.contains(['%', '\\'])).then(|| name.to_owned())
}

/// Looks for the bytes of each `adoptable` file on this machine ([`super::blobs`]) and puts
/// what it finds in place of its download: those wants are done, with nothing to fetch.
/// A URL want whose destination is still the folder gets the adoptable's name.
pub(super) async fn adopt_into_staging(
    ctx: &FetchCtx<'_>,
    wants: &mut [Want],
    adoptable: Vec<Adoptable>,
) -> Result<Vec<AdoptedFile>, InstallError> {
    let todo: Vec<(Adoptable, PathBuf)> = adoptable
        .into_iter()
        .filter_map(|a| {
            let w = wants.get(a.want).filter(|w| !w.done)?;
            let dest = if w.part.local_path.is_dir() {
                w.part.local_path.join(&a.rel)
            } else {
                w.part.local_path.clone()
            };
            Some((a, dest))
        })
        .collect();
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    let sources = ctx.cfg.adopt.clone();
    let store = ctx.store.clone();
    let models_dir = ctx.cfg.models_dir.clone();
    let found = tokio::task::spawn_blocking(move || {
        let wanted: Vec<&str> = todo.iter().map(|(a, _)| a.hash.hex()).collect();
        let ix = BlobIndex::gather(&sources, Some((store.as_ref(), &models_dir)), &wanted);
        if ix.is_empty() {
            return Vec::new();
        }
        todo.into_iter()
            .filter_map(|(a, dest)| {
                let name = a.rel.rsplit('/').next().unwrap_or(&a.rel).to_owned();
                let size = if a.size == 0 {
                    ix.size_of(a.hash.hex(), &name)?
                } else {
                    a.size
                };
                let (origin, linked) = ix.adopt(&a.hash, size, &name, &dest)?;
                Some((
                    a.want,
                    dest,
                    AdoptedFile {
                        path: a.rel,
                        size,
                        origin,
                        linked,
                    },
                ))
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| InstallError::Setup(format!("adopting worker failed: {e}")))?;
    let mut out = Vec::with_capacity(found.len());
    for (i, dest, f) in found {
        if let Some(w) = wants.get_mut(i) {
            w.done = true;
            w.part.local_path = dest;
            w.part.bytes = f.size;
            w.part.total_bytes = f.size;
        }
        out.push(f);
    }
    Ok(out)
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
    ctx: &FetchCtx<'_>,
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
    if ctx.cfg.check_disk_space && needed > 0 {
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
    ctx.sink.parts(
        staging.files(),
        wants.iter().map(|w| w.part.clone()).collect(),
        already,
    );
    let mut ids: Vec<JobId> = Vec::new();
    // Download job → the bytes its partial already held when this run began.
    let mut resumed_from: HashMap<JobId, u64> = HashMap::new();
    for (i, w) in wants.into_iter().enumerate() {
        if w.done {
            continue;
        }
        let start = w.part.bytes;
        let sink = ctx.sink.clone();
        let job = w
            .job
            .with_handler(DownloadEventHandler::infallible(move |dj: &DownloadJob| {
                sink.progress(i, dj);
            }));
        if cancel.is_set() {
            break;
        }
        let submitted =
            ctx.queue
                .submit_download_job(job, false)
                .map_err(|e| InstallError::Download {
                    source_str: source_str.to_owned(),
                    error: Arc::new(e),
                })?;
        ctx.sink.linked(submitted.id, i);
        resumed_from.insert(submitted.id, start);
        ids.push(submitted.id);
    }
    // All at once: the files in flight share the connection budget.
    let _ = ctx.queue.start_jobs(&ids);
    let cancel_all = |ids: &[JobId]| {
        for d in ids {
            let _ = ctx.queue.cancel_job(*d);
        }
    };
    let mut pending: FuturesUnordered<_> = ids
        .iter()
        .map(|d| ctx.queue.wait_for_job(*d, None))
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
    models_dir: &Path,
    queue: &DownloadQueue,
    source: &str,
    access_token: Option<Token>,
    timeout: Option<Duration>,
) -> Result<PathBuf, InstallError> {
    let src = ModelSource::parse(source)?;
    let ModelSource::Url(u) = &src else {
        return Err(InstallError::NotRemote(source.to_owned()));
    };
    let dir = models_dir
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
    let job = queue.submit_download_job(job, true).map_err(err)?;
    match queue.wait_for_job(job.id, timeout).await {
        Ok(done) => done
            .result()
            .map(Path::to_path_buf)
            .map_err(|e| InstallError::Download {
                source_str: record_source(&src),
                error: e,
            }),
        Err(DownloadError::Timeout { timeout, .. }) => {
            let _ = queue.cancel_job(job.id);
            Err(InstallError::Timeout {
                what: format!("the download of {}", record_source(&src)),
                timeout,
            })
        }
        Err(e) => Err(err(e)),
    }
}
