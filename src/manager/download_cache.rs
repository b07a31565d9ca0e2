//! The invocation context's download cache (`download_and_cache_model`): remote sources
//! fetched into `models_dir/.download_cache/<slug>/` without a record, reused by later calls,
//! and cleaned up least recently used first once the cache is over its size cap (the seed's
//! `download_and_cache` and its `convert_cache` size).
//!
//! An entry is complete once its marker file `.modelsync-cache.json` is written (after every
//! file downloaded and verified); the marker's modification time is the entry's last use. A
//! hit reads the marker only: no Hub or HTTP request. Entries without a marker are downloads in
//! progress (resumed by the next call) or abandoned ones, removed when untouched for
//! [`DownloadCacheConfig::abandoned_after`]. `modelsync gc` and the reconcile inventory leave
//! the folder alone (it is a dot-entry of models_dir); only the cap removes entries.
//!
//! Sources: a URL, a Hugging Face `repo_id[:variant][:subfolder|::file]`. Another kind of
//! source (an `oci://` registry) plugs in as one more arm of [`fetch`]: it downloads into the
//! entry's folder and says which path inside it the caller gets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::download::names::redact_url_str;
use crate::download::{AccessToken, DownloadError, DownloadJob, DownloadQueue, JobId};
use crate::hub::{ExpectedHash, FileFilter, HfModelSource, ModelSource, Token, resolve_token};
use crate::install::{InstallConfig, InstallError, record_source};

/// The cache's folder under models_dir.
pub const DOWNLOAD_CACHE_DIR: &str = ".download_cache";
/// The marker of a complete entry.
const MARKER: &str = ".modelsync-cache.json";
/// Default size cap: 10 GiB (InvokeAI's `convert_cache` default).
pub const DEFAULT_DOWNLOAD_CACHE_SIZE: u64 = 10 << 30;

/// Settings of the download cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadCacheConfig {
    /// Size cap in bytes: after a download, least recently used entries go until the cache
    /// fits (the entry just fetched stays even when it alone is larger).
    pub max_bytes: u64,
    /// Incomplete entries untouched for this long are removed by the clean-up (default 24h).
    pub abandoned_after: Duration,
}

impl Default for DownloadCacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_DOWNLOAD_CACHE_SIZE,
            abandoned_after: Duration::from_hours(24),
        }
    }
}

/// Options of one `download_and_cache_model` call (the seed's `access_token` and `timeout`).
#[derive(Debug, Clone, Default)]
pub struct DownloadOptions {
    /// Token for the source (else the source's own, `HF_TOKEN`, the token file).
    pub access_token: Option<Token>,
    /// Give up (and cancel the download) after this long.
    pub timeout: Option<Duration>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Marker {
    /// The source, secrets redacted.
    source: String,
    /// What the caller gets, relative to the entry's folder (`""`: the folder).
    path: String,
    /// Bytes downloaded.
    bytes: u64,
}

/// The cache: its root and one lock per entry, so two calls for one source download once.
#[derive(Debug)]
pub(crate) struct DownloadCache {
    root: PathBuf,
    config: DownloadCacheConfig,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A readable, unique folder name for a canonical source: its last meaningful words (no
/// query, so no secrets) and a hash of the whole string.
pub(crate) fn slug(canonical: &str) -> String {
    let hash = blake3::hash(canonical.as_bytes()).to_hex();
    let without_query = canonical.split(['?', '#']).next().unwrap_or(canonical);
    let words = without_query
        .split_once("://")
        .map_or(without_query, |(_, rest)| rest);
    let mut readable: String = words
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if readable.len() > 60 {
        readable = readable[readable.len() - 60..].to_owned();
    }
    let readable = readable.trim_matches(|c| c == '_' || c == '.');
    format!("{readable}-{}", &hash[..12])
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |e| InstallError::io(op, path, e)
}

impl DownloadCache {
    pub(crate) fn new(models_dir: &Path, config: DownloadCacheConfig) -> Self {
        Self {
            root: models_dir.join(DOWNLOAD_CACHE_DIR),
            config,
            locks: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn entry_lock(&self, slug: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(slug.to_owned())
            .or_default()
            .clone()
    }

    /// The local path of `source`, downloading it first unless a complete entry exists.
    pub(crate) async fn get(
        &self,
        cfg: &InstallConfig,
        queue: &DownloadQueue,
        source: &str,
        opts: &DownloadOptions,
    ) -> Result<PathBuf, InstallError> {
        if let Some((scheme, _)) = source.split_once("://")
            && !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https")
        {
            return Err(InstallError::NotRemote(format!(
                "{source} (`{scheme}://` sources are not supported yet; use an http(s) URL or a Hugging Face repo id)"
            )));
        }
        let src = ModelSource::parse(source)?;
        if matches!(src, ModelSource::Local(_)) {
            return Err(InstallError::NotRemote(source.to_owned()));
        }
        let slug = slug(&src.canonical());
        let lock = self.entry_lock(&slug);
        let _one_download = lock.lock().await;
        let dir = self.root.join(&slug);
        if let Some(path) = Self::hit(&dir) {
            return Ok(path);
        }
        std::fs::create_dir_all(&dir).map_err(io("creating folder", &dir))?;
        let (path, bytes) = fetch(cfg, queue, &src, &dir, opts).await?;
        let rel = path
            .strip_prefix(&dir)
            .unwrap_or(Path::new(""))
            .to_string_lossy()
            .into_owned();
        let marker = Marker {
            source: record_source(&src),
            path: rel,
            bytes,
        };
        let tmp = dir.join(format!("{MARKER}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec(&marker).map_err(|e| InstallError::Setup(e.to_string()))?,
        )
        .map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, dir.join(MARKER)).map_err(io("writing", &tmp))?;
        self.clean_up(&slug);
        Ok(path)
    }

    /// A complete entry's path, its marker touched (its last use is now).
    fn hit(dir: &Path) -> Option<PathBuf> {
        let marker_path = dir.join(MARKER);
        let marker: Marker = serde_json::from_slice(&std::fs::read(&marker_path).ok()?).ok()?;
        let path = if marker.path.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&marker.path)
        };
        if !path.exists() {
            return None;
        }
        if let Ok(f) = std::fs::File::options().append(true).open(&marker_path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(path)
    }

    /// Removes least recently used complete entries (never `keep`) until the cache fits its
    /// cap, and incomplete ones abandoned for longer than `abandoned_after`. Returns what went.
    pub(crate) fn clean_up(&self, keep: &str) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let now = SystemTime::now();
        let mut complete = Vec::new();
        let mut removed = Vec::new();
        for e in rd.flatten() {
            let dir = e.path();
            if !dir.is_dir() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let marker_path = dir.join(MARKER);
            let marker = std::fs::read(&marker_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Marker>(&b).ok());
            match marker {
                Some(m) => {
                    let used = std::fs::metadata(&marker_path)
                        .and_then(|md| md.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    complete.push((used, m.bytes, name, dir));
                }
                None if name != keep
                    && crate::install::staging::newest_change(&dir, 0).is_some_and(|t| {
                        now.duration_since(t).unwrap_or(Duration::ZERO)
                            >= self.config.abandoned_after
                    })
                    && std::fs::remove_dir_all(&dir).is_ok() =>
                {
                    removed.push(dir);
                }
                None => {}
            }
        }
        let mut total: u64 = complete.iter().map(|c| c.1).sum();
        complete.sort_by_key(|c| c.0);
        for (_, bytes, name, dir) in complete {
            if total <= self.config.max_bytes {
                break;
            }
            if name == keep {
                continue;
            }
            // The marker goes first: a half-removed entry is then incomplete, never a hit.
            let _ = std::fs::remove_file(dir.join(MARKER));
            if std::fs::remove_dir_all(&dir).is_ok() {
                tracing::debug!("download cache over its cap: removed {}", dir.display());
                total -= bytes;
                removed.push(dir);
            }
        }
        removed
    }
}

fn access(t: Option<&Token>) -> Option<AccessToken> {
    t.map(|t| AccessToken::new(t.expose()))
}

/// Downloads `src` into `dir`; returns the path the caller gets and the bytes it holds.
async fn fetch(
    cfg: &InstallConfig,
    queue: &DownloadQueue,
    src: &ModelSource,
    dir: &Path,
    opts: &DownloadOptions,
) -> Result<(PathBuf, u64), InstallError> {
    let source_str = record_source(src);
    let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
    match src {
        ModelSource::Hf(h) => fetch_hf(cfg, queue, h, dir, opts, &source_str, deadline).await,
        ModelSource::Url(u) => {
            let token = opts.access_token.as_ref().or(u.access_token.as_ref());
            let job = DownloadJob::new(u.url.to_string(), dir.to_path_buf())
                .with_access_token(access(token))
                .with_preserve_partial_downloads(true);
            let id = submit(queue, job, &source_str)?;
            let path = wait(queue, id, &source_str, deadline, opts.timeout).await?;
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            Ok((path, bytes))
        }
        ModelSource::Local(_) | ModelSource::Oci(_) => Err(InstallError::NotRemote(source_str)),
    }
}

async fn fetch_hf(
    cfg: &InstallConfig,
    queue: &DownloadQueue,
    src: &HfModelSource,
    dir: &Path,
    opts: &DownloadOptions,
    source_str: &str,
    deadline: Option<tokio::time::Instant>,
) -> Result<(PathBuf, u64), InstallError> {
    let token = resolve_token(
        opts.access_token.as_ref().or(src.access_token.as_ref()),
        &cfg.hub_env,
    );
    let filter = FileFilter::from_source(src);
    let plan = cfg
        .hub
        .plan_source(src, &filter, &token)
        .await
        .map_err(|error| InstallError::Hub {
            source_str: source_str.to_owned(),
            error: Box::new(error),
        })?;
    let mut ids = Vec::new();
    for spec in &plan.downloads {
        let dest = dir.join(&spec.dest);
        if std::fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == spec.size) {
            continue; // verified by an earlier, interrupted call
        }
        let mut job = DownloadJob::new(spec.url.to_string(), dest)
            .with_expected_size(Some(spec.size))
            .with_access_token(access(spec.access_token.as_ref()))
            .with_preserve_partial_downloads(true);
        job = match &spec.expected {
            ExpectedHash::Sha256(h) => job.with_sha256(Some(h.clone())),
            ExpectedHash::GitBlobSha1(h) => job.with_git_sha1(Some(h.clone())),
        };
        ids.push(submit(queue, job, source_str)?);
    }
    for (i, id) in ids.iter().enumerate() {
        if let Err(e) = wait(queue, *id, source_str, deadline, opts.timeout).await {
            for rest in &ids[i + 1..] {
                let _ = queue.cancel_job(*rest);
            }
            return Err(e);
        }
    }
    let path = match plan.downloads.as_slice() {
        [one] if src.single_file().is_some() => dir.join(&one.dest),
        _ => dir.to_path_buf(),
    };
    Ok((path, plan.total_bytes()))
}

fn submit(
    queue: &DownloadQueue,
    job: DownloadJob,
    source_str: &str,
) -> Result<JobId, InstallError> {
    queue
        .submit_download_job(job, true)
        .map(|j| j.id)
        .map_err(|e| InstallError::Download {
            source_str: source_str.to_owned(),
            error: Arc::new(e),
        })
}

async fn wait(
    queue: &DownloadQueue,
    id: JobId,
    source_str: &str,
    deadline: Option<tokio::time::Instant>,
    timeout: Option<Duration>,
) -> Result<PathBuf, InstallError> {
    let left = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
    let err = |e: Arc<DownloadError>| InstallError::Download {
        source_str: source_str.to_owned(),
        error: e,
    };
    match queue.wait_for_job(id, left).await {
        Ok(done) => done.result().map(Path::to_path_buf).map_err(err),
        Err(DownloadError::Timeout { .. }) => {
            let _ = queue.cancel_job(id);
            Err(InstallError::Timeout {
                what: format!("the download of {}", redact_url_str(source_str)),
                timeout: timeout.unwrap_or_default(),
            })
        }
        Err(e) => Err(err(Arc::new(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_readable_unique_and_carry_no_query() {
        let a = slug("https://example.com/models/x.safetensors?token=secret");
        assert!(a.starts_with("example.com_models_x.safetensors-"), "{a}");
        assert!(!a.contains("secret"));
        assert_ne!(
            a,
            slug("https://example.com/models/x.safetensors?token=other")
        );
        let h = slug("owner/name::vae/diffusion_pytorch_model.safetensors");
        assert!(
            h.starts_with("owner_name__vae_diffusion_pytorch_model.safetensors-"),
            "{h}"
        );
        assert!(slug(&"a/".repeat(100)).len() <= 60 + 13);
    }
}
