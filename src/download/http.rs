//! One download over HTTP: redirects (the token stays on the original host), a `.part` file
//! beside the destination, resume with `Range`, parallel byte ranges for large files, retries,
//! verification, and the atomic rename.
//! [`SizeProbe`] asks for a file's size the same way, without its body.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{self, HeaderMap};
use reqwest::{Response, Url};
use sha1::Digest as _;

use super::digest::{Digests, Feed, HashTask, Want};
use super::error::DownloadError;
use super::job::AccessToken;
use super::names::{content_disposition_filename, redact_url, sanitize_file_name, url_file_name};
use super::state::{RangedState, file_len, part_path, remove_quietly, state_path};
use crate::hash::HashAlgorithm;
use crate::retry::{RetryPolicy, RetryState, parse_retry_after};

const MAX_REDIRECTS: usize = 10;
/// Bytes buffered per stream before a write: fewer syscalls, and a pause loses nothing because
/// the writers flush on drop.
const WRITE_BUF: usize = 1 << 20;
/// A chunk at least this large arriving with the buffer empty is written as it is, not
/// copied first (hyper hands over reads of up to about 400 KiB).
const DIRECT_WRITE: usize = 256 << 10;

/// How one file is fetched: the settings of a single download, embedded in the queue's
/// [`DownloadQueueConfig::transfer`].
#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// Connections for one large file (default 8); 1 disables parallel ranges.
    pub connections_per_file: u32,
    /// Files at least this large download in parallel ranges when the server supports
    /// ranges (default 64 MiB).
    pub parallel_threshold: u64,
    /// Smallest range a large file is split into (default 1 MiB).
    pub min_range_size: u64,
    /// Largest range (default 16 MiB): a large file becomes more ranges than streams, each
    /// stream taking the next one in file order, so the completed prefix stays within about
    /// streams x this of the newest byte and is hashed while the rest downloads.
    pub max_range_size: u64,
    /// Retries.
    pub retry: RetryPolicy,
    /// No bytes for this long → that stream is retried (default 30 s).
    pub stall_timeout: Duration,
    /// TCP/TLS connect timeout (default 30 s).
    pub connect_timeout: Duration,
    /// From sending a request to its response headers (default 60 s); then the attempt fails
    /// and is retried, so a server that accepts and never answers cannot hang a download.
    pub response_timeout: Duration,
    /// How often a multi-range download saves its range state (default 1 s; completed ranges
    /// are saved at once).
    pub state_save_interval: Duration,
    /// fsync the file before the rename, so a power cut cannot promote a file whose bytes
    /// never reached the disk (default true).
    pub sync_before_rename: bool,
    /// Check free disk space before writing (default true).
    pub check_disk_space: bool,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            connections_per_file: 8,
            parallel_threshold: 64 << 20,
            min_range_size: 1 << 20,
            max_range_size: 16 << 20,
            retry: RetryPolicy::default(),
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_mins(1),
            state_save_interval: Duration::from_secs(1),
            sync_before_rename: true,
            check_disk_space: true,
            user_agent: concat!("modelsync/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Progress shared between a running download and the queue's job driver.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Bytes received so far (on disk or in a write buffer).
    pub bytes: AtomicU64,
    /// Total size, once known (0 until then).
    pub total: AtomicU64,
    /// The destination file, once its name is known.
    pub path: Mutex<Option<PathBuf>>,
}

impl Progress {
    pub fn path(&self) -> Option<PathBuf> {
        lock(&self.path).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Everything one download needs.
pub(crate) struct Fetch {
    pub client: reqwest::Client,
    pub cfg: Arc<TransferConfig>,
    pub url: Url,
    pub token: Option<AccessToken>,
    pub destination: PathBuf,
    pub known_path: Option<PathBuf>,
    pub expected_size: Option<u64>,
    pub expected_sha256: Option<String>,
    pub expected_git_sha1: Option<String>,
    /// Content hashes to compute while the bytes arrive.
    pub hash_algorithms: Vec<HashAlgorithm>,
    pub progress: Arc<Progress>,
    /// The queue's connection budget: a download holds one permit while it runs, and a
    /// multi-range one as many as it has ranges in flight.
    pub connections: Arc<tokio::sync::Semaphore>,
    /// The connections this download may use: its share of the budget, fixed when it started.
    pub share: Arc<dyn Fn() -> u32 + Send + Sync>,
    /// Where the source redirected to (and whether the token may go there), once a request
    /// was answered: every later request of this file goes there directly, so a `/resolve`
    /// URL is resolved once per file, not once per range.
    pub resolved: Mutex<Option<(Url, bool)>>,
}

/// Headers of a final (non-redirect) answer that matter to us.
struct Meta {
    url: Url,
    token_sent: bool,
    content_type: Option<String>,
    disposition: Option<String>,
}

enum Probe {
    /// 206: the server serves ranges; the file has `total` bytes.
    Ranges { total: u64, meta: Meta },
    /// 200: the server ignored `Range`; this is the whole body.
    Full(Response, Meta),
    /// 416 to `bytes=0-0`: an empty file.
    Empty,
}

/// How a single-stream attempt ended well.
enum Attempt {
    /// The `.part` holds the whole file: destination, size, and the hashing task that
    /// followed the bytes (none when no bytes came in this attempt).
    Complete(PathBuf, u64, Option<HashTask>),
    /// The `.part` holds a whole body, but nothing confirmed that the body is the whole file.
    Unconfirmed,
}

struct ContentRange {
    start: u64,
    total: Option<u64>,
}

impl Fetch {
    fn url_str(&self) -> String {
        redact_url(&self.url)
    }

    fn set_path(&self, p: &Path) {
        *lock(&self.progress.path) = Some(p.to_path_buf());
    }

    /// What this download hashes, for a file of `len` bytes when known.
    fn want(&self, len: Option<u64>) -> Want {
        Want::new(
            self.expected_sha256.is_some(),
            len.filter(|_| self.expected_git_sha1.is_some()),
            &self.hash_algorithms,
        )
    }

    /// Starts hashing `part` when something is to be hashed.
    fn hasher(&self, part: &Path, len: Option<u64>) -> Result<Option<HashTask>, DownloadError> {
        let want = self.want(len);
        if want.is_empty() {
            return Ok(None);
        }
        HashTask::start(part, want)
            .map(Some)
            .map_err(|e| DownloadError::io("hashing", part, e))
    }

    /// Runs the download to the end; returns the promoted file and its digests.
    pub async fn run(&self) -> Result<(PathBuf, Digests), DownloadError> {
        // One connection is this download's own while it runs.
        let _own = self
            .connections
            .acquire()
            .await
            .map_err(|e| DownloadError::Setup {
                what: format!("the connection budget is closed: {e}"),
            })?;
        let dest_is_dir = self.destination.is_dir();
        if let Some(size) = self.expected_size {
            let dir = if dest_is_dir {
                self.destination.clone()
            } else {
                parent_dir(&self.destination)
            };
            self.check_space(&dir, size)?;
        }
        let path = if dest_is_dir {
            self.known_path.clone()
        } else {
            Some(self.destination.clone())
        };
        if let Some(p) = &path {
            self.set_path(p);
            if state_path(p).exists() {
                return match self.probe().await? {
                    Probe::Ranges { total, meta } => {
                        Self::check_html(&meta, p)?;
                        self.ranged(p, total).await
                    }
                    Probe::Full(resp, meta) => {
                        remove_quietly(&state_path(p));
                        self.single(path.clone(), Some((resp, meta))).await
                    }
                    Probe::Empty => {
                        remove_quietly(&state_path(p));
                        self.single(path.clone(), None).await
                    }
                };
            }
        }
        // A file shares the budget with every job in flight: several files get one stream
        // each, a lone large file several ranges.
        let small = self.cfg.connections_per_file <= 1
            || (self.share)() <= 1
            || self
                .expected_size
                .is_some_and(|s| s < self.cfg.parallel_threshold);
        if small {
            return self.single(path, None).await;
        }
        match self.probe().await? {
            Probe::Ranges { total, meta } => {
                let p = if let Some(p) = path {
                    p
                } else {
                    let p = self.resolve_name(&meta)?;
                    self.set_path(&p);
                    p
                };
                Self::check_html(&meta, &p)?;
                if total >= self.cfg.parallel_threshold {
                    self.ranged(&p, total).await
                } else {
                    self.single(Some(p), None).await
                }
            }
            Probe::Full(resp, meta) => self.single(path, Some((resp, meta))).await,
            Probe::Empty => self.single(path, None).await,
        }
    }

    /// Asks for the first byte: tells the size and whether ranges work, in one round trip.
    async fn probe(&self) -> Result<Probe, DownloadError> {
        let mut attempts = Attempts::new(&self.cfg.retry);
        loop {
            let r = async {
                let (resp, meta) = self.send(Some((0, Some(0)))).await?;
                match resp.status().as_u16() {
                    206 => {
                        let cr = Self::content_range(resp.headers(), &meta.url)?;
                        let total = cr.total.ok_or_else(|| DownloadError::Protocol {
                            url: redact_url(&meta.url),
                            what: "206 answer without the total size in Content-Range".into(),
                        })?;
                        Ok(Probe::Ranges { total, meta })
                    }
                    200 => Ok(Probe::Full(resp, meta)),
                    416 => Ok(Probe::Empty),
                    _ => Err(status_error(&resp, &meta)),
                }
            }
            .await;
            match r {
                Ok(p) => return Ok(p),
                Err(e) => attempts.failed(e, false, &self.url_str()).await?,
            }
        }
    }

    /// GET with our own redirect handling ([`send_request`]), at the URL the source resolved
    /// to when an earlier request of this file learnt it. A resolved URL that answers 401,
    /// 403, 404 or 410 (a signed CDN URL that expired) is forgotten and the source asked again.
    async fn send(
        &self,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<(Response, Meta), DownloadError> {
        let cached = lock(&self.resolved).clone();
        if let Some((url, token_ok)) = cached {
            let token = self.token.as_ref().filter(|_| token_ok);
            let (resp, meta) = send_request(
                &self.client,
                self.cfg.response_timeout,
                reqwest::Method::GET,
                &url,
                token,
                range,
            )
            .await?;
            if !matches!(resp.status().as_u16(), 401 | 403 | 404 | 410) {
                return Ok((resp, meta));
            }
            tracing::debug!(url = %redact_url(&url), status = resp.status().as_u16(), "the resolved URL stopped answering; resolving again");
            *lock(&self.resolved) = None;
        }
        let (resp, meta) = send_request(
            &self.client,
            self.cfg.response_timeout,
            reqwest::Method::GET,
            &self.url,
            self.token.as_ref(),
            range,
        )
        .await?;
        if matches!(resp.status().as_u16(), 200 | 206 | 416) && meta.url != self.url {
            *lock(&self.resolved) = Some((meta.url.clone(), meta.token_sent));
        }
        Ok((resp, meta))
    }

    fn content_range(h: &HeaderMap, url: &Url) -> Result<ContentRange, DownloadError> {
        h.get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range)
            .ok_or_else(|| DownloadError::Protocol {
                url: redact_url(url),
                what: "missing or malformed Content-Range header".into(),
            })
    }

    /// The file name from `Content-Disposition`, else from the URL path, inside the
    /// destination directory. A hostile name is reduced to its last component or refused.
    fn resolve_name(&self, meta: &Meta) -> Result<PathBuf, DownloadError> {
        let (raw, origin) = match meta
            .disposition
            .as_deref()
            .and_then(content_disposition_filename)
        {
            Some(n) => (n, "Content-Disposition"),
            None => (url_file_name(&self.url).unwrap_or_default(), "the URL path"),
        };
        let name = sanitize_file_name(&raw).map_err(|reason| DownloadError::UnsafeFileName {
            url: self.url_str(),
            name: raw.clone(),
            origin,
            reason,
        })?;
        Ok(self.destination.join(name))
    }

    fn check_html(meta: &Meta, path: &Path) -> Result<(), DownloadError> {
        let html = meta.content_type.as_deref().is_some_and(|ct| {
            ct.trim_start()
                .get(..9)
                .is_some_and(|p| p.eq_ignore_ascii_case("text/html"))
        });
        let html_target = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
        if html && !html_target {
            return Err(DownloadError::HtmlInsteadOfFile {
                url: redact_url(&meta.url),
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            });
        }
        Ok(())
    }

    fn check_space(&self, dir: &Path, needed: u64) -> Result<(), DownloadError> {
        if !self.cfg.check_disk_space || needed == 0 {
            return Ok(());
        }
        let available = super::available_space(dir)
            .map_err(|e| DownloadError::io("checking free space in", dir, e))?;
        if available < needed {
            return Err(DownloadError::InsufficientSpace {
                path: dir.to_path_buf(),
                needed,
                available,
            });
        }
        Ok(())
    }

    fn check_expected_size(&self, path: &Path, total: u64) -> Result<(), DownloadError> {
        match self.expected_size {
            Some(exp) if exp != total => Err(DownloadError::SizeMismatch {
                url: self.url_str(),
                path: path.to_path_buf(),
                expected: exp,
                actual: total,
            }),
            _ => Ok(()),
        }
    }

    // ---------------------------------------------------------------- single stream

    async fn single(
        &self,
        mut path: Option<PathBuf>,
        mut first: Option<(Response, Meta)>,
    ) -> Result<(PathBuf, Digests), DownloadError> {
        let mut attempts = Attempts::new(&self.cfg.retry);
        let on_disk = |path: &Option<PathBuf>| {
            path.as_deref()
                .map_or(0, |p| file_len(&part_path(p)).unwrap_or(0))
        };
        // The most bytes the partial has held after an attempt. Only an attempt that passes it
        // made progress: one that started over from 0 (a 200 answer to a Range request) and
        // broke again did not, so a server that always breaks at the same place runs out of
        // attempts instead of looping forever.
        let mut best = on_disk(&path);
        let mut confirm = false;
        loop {
            match self.single_attempt(&mut path, first.take(), confirm).await {
                Ok(Attempt::Complete(p, len, h)) => return self.finish(&p, len, h).await,
                Ok(Attempt::Unconfirmed) => {
                    // The body ended, but nothing says it was the whole file: ask for the
                    // bytes after it (416 confirms the size, 206 sends the rest). A server
                    // that keeps answering without a size and without new bytes cannot
                    // confirm anything.
                    let now = on_disk(&path);
                    if confirm && now <= best {
                        return Err(DownloadError::UnverifiedLength {
                            url: self.url_str(),
                            got: now,
                        });
                    }
                    best = best.max(now);
                    confirm = true;
                }
                Err(e) => {
                    let now = on_disk(&path);
                    let progressed = now > best;
                    best = best.max(now);
                    attempts.failed(e, progressed, &self.url_str()).await?;
                }
            }
        }
    }

    /// One request; on success the `.part` holds the whole body. `confirm`: the `.part` holds
    /// a body whose size nothing confirmed yet, and this request asks for what follows it.
    async fn single_attempt(
        &self,
        path: &mut Option<PathBuf>,
        first: Option<(Response, Meta)>,
        confirm: bool,
    ) -> Result<Attempt, DownloadError> {
        let mut offset = path
            .as_deref()
            .map_or(0, |p| file_len(&part_path(p)).unwrap_or(0));
        let (mut resp, meta) = match first {
            Some(f) => {
                offset = 0;
                f
            }
            None => {
                self.send((offset > 0 || confirm).then_some((offset, None)))
                    .await?
            }
        };
        let chunked = resp
            .headers()
            .get(header::TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        // Whether the caller knows what the file must be (size or content): then `finish`
        // checks it, and the server's own size claims need no second opinion.
        let claimed = self.expected_size.is_some()
            || self.expected_sha256.is_some()
            || self.expected_git_sha1.is_some();
        let (start, total, sized) = match resp.status().as_u16() {
            206 => {
                let cr = Self::content_range(resp.headers(), &meta.url)?;
                if cr.start != offset && cr.start != 0 {
                    return Err(DownloadError::Protocol {
                        url: redact_url(&meta.url),
                        what: format!("asked for bytes from {offset}, got bytes from {}", cr.start),
                    });
                }
                (
                    cr.start,
                    cr.total.or(self.expected_size),
                    cr.total.is_some(),
                )
            }
            200 if confirm => {
                // The server ignores ranges: it can still confirm the size by its
                // Content-Length; without one, nothing can.
                let p = path.clone().unwrap_or_else(|| self.destination.clone());
                return match resp.content_length() {
                    Some(n) if n == offset => Ok(Attempt::Complete(p, offset, None)),
                    Some(n) => Err(DownloadError::Protocol {
                        url: redact_url(&meta.url),
                        what: format!(
                            "the file's size changed between two requests ({offset} bytes, then a Content-Length of {n}) and the server does not answer Range requests"
                        ),
                    }),
                    None => Err(DownloadError::UnverifiedLength {
                        url: redact_url(&meta.url),
                        got: offset,
                    }),
                };
            }
            200 => (0, resp.content_length().or(self.expected_size), false),
            416 if offset > 0 || confirm => {
                // The part may already be whole (we died between the last byte and the rename,
                // or we are confirming a body's size).
                let total = Self::content_range(resp.headers(), &meta.url)
                    .ok()
                    .and_then(|c| c.total);
                let p = path.clone().unwrap_or_else(|| self.destination.clone());
                if total == Some(offset) || (confirm && total.is_none()) {
                    self.progress.total.store(offset, Ordering::Relaxed);
                    self.progress.bytes.store(offset, Ordering::Relaxed);
                    return Ok(Attempt::Complete(p, offset, None));
                }
                // Otherwise the part does not fit the file: drop it; the retry starts over.
                remove_quietly(&part_path(&p));
                return Err(DownloadError::Truncated {
                    url: redact_url(&meta.url),
                    expected: total.unwrap_or(0),
                    got: offset,
                });
            }
            _ => return Err(status_error(&resp, &meta)),
        };
        let p = if let Some(p) = path {
            p.clone()
        } else {
            let p = self.resolve_name(&meta)?;
            self.set_path(&p);
            *path = Some(p.clone());
            p
        };
        Self::check_html(&meta, &p)?;
        if let Some(t) = total {
            self.check_expected_size(&p, t)?;
            self.progress.total.store(t, Ordering::Relaxed);
            self.check_space(&parent_dir(&p), t.saturating_sub(start))?;
        }
        let part = part_path(&p);
        let dir = parent_dir(&p);
        std::fs::create_dir_all(&dir)
            .map_err(|e| DownloadError::io("creating directory", &dir, e))?;
        let file = if start == 0 {
            File::create(&part)
        } else {
            std::fs::OpenOptions::new().append(true).open(&part)
        }
        .map_err(|e| DownloadError::io("opening", &part, e))?;
        // The bytes a resumed partial already holds are hashed once, while the rest arrives.
        let hasher = self.hasher(&part, total.or(self.expected_size))?;
        if let Some(h) = &hasher {
            h.feed().advance(start);
        }
        self.progress.bytes.store(start, Ordering::Relaxed);
        let mut writer = PartWriter {
            file,
            path: part.clone(),
            buf: Vec::with_capacity(WRITE_BUF),
            offset: start,
            feed: hasher.as_ref().map(|h| h.feed().clone()),
            writeback: self.cfg.sync_before_rename,
        };
        let mut got = 0u64;
        while let Some(chunk) = self.next_chunk(&mut resp, &meta.url).await? {
            writer.write(&chunk)?;
            got += chunk.len() as u64;
            self.progress
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        writer.flush()?;
        drop(writer);
        let len = start + got;
        if let Some(t) = total
            && len != t
        {
            return Err(DownloadError::Truncated {
                url: redact_url(&meta.url),
                expected: t.saturating_sub(start),
                got,
            });
        }
        // A body framed by a Content-Length or by connection close may still be cut short (a
        // proxy that lies, a connection closed early): unless the caller's size or hash will
        // judge the file, or a Content-Range told the size, ask the server to confirm it.
        if !claimed && !sized && !chunked {
            return Ok(Attempt::Unconfirmed);
        }
        Ok(Attempt::Complete(p, len, hasher))
    }

    async fn next_chunk(
        &self,
        resp: &mut Response,
        url: &Url,
    ) -> Result<Option<bytes::Bytes>, DownloadError> {
        match tokio::time::timeout(self.cfg.stall_timeout, resp.chunk()).await {
            Err(_) => Err(DownloadError::Stalled {
                url: redact_url(url),
                timeout: self.cfg.stall_timeout,
            }),
            Ok(Err(e)) => Err(conn_error(url, e)),
            Ok(Ok(c)) => Ok(c),
        }
    }

    // ---------------------------------------------------------------- parallel ranges

    async fn ranged(&self, p: &Path, total: u64) -> Result<(PathBuf, Digests), DownloadError> {
        self.check_expected_size(p, total)?;
        // Connections beyond this download's own, as far as its share and the free budget
        // allow now (never waited for: a download does not hold its own while waiting).
        let share = (self.share)().min(self.cfg.connections_per_file).max(1) as usize;
        let mut extra = Vec::new();
        while extra.len() + 1 < share {
            match self.connections.clone().try_acquire_owned() {
                Ok(permit) => extra.push(permit),
                Err(_) => break,
            }
        }
        let streams = extra.len() + 1;
        let part = part_path(p);
        let sp = state_path(p);
        let part_len = file_len(&part);
        let state = match RangedState::load(&sp) {
            Some(s) if s.total == total && part_len == Some(total) => s,
            _ => {
                // A single-stream partial (no sidecar) is a done prefix; a sidecar we cannot
                // trust means the bytes cannot be trusted either.
                let prefix = if sp.exists() {
                    0
                } else {
                    part_len.filter(|&n| n <= total).unwrap_or(0)
                };
                RangedState::split(
                    total,
                    prefix,
                    streams as u32,
                    self.cfg.min_range_size,
                    self.cfg.max_range_size,
                )
            }
        };
        self.progress.total.store(total, Ordering::Relaxed);
        self.check_space(&parent_dir(p), total - state.done_bytes())?;
        let dir = parent_dir(p);
        std::fs::create_dir_all(&dir)
            .map_err(|e| DownloadError::io("creating directory", &dir, e))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| DownloadError::io("opening", &part, e))?;
        file.set_len(total)
            .map_err(|e| DownloadError::io("sizing", &part, e))?;
        self.progress
            .bytes
            .store(state.done_bytes(), Ordering::Relaxed);
        let todo: std::collections::VecDeque<usize> = (0..state.ranges.len())
            .filter(|&i| !state.ranges[i].is_complete())
            .collect();
        let hasher = self.hasher(&part, Some(total))?;
        if let Some(h) = &hasher {
            h.feed().advance(state.contiguous_done());
        }
        let shared = Arc::new(Ranged {
            file,
            part,
            state_path: sp,
            state: Mutex::new(state),
            feed: hasher.as_ref().map(|h| h.feed().clone()),
            writeback: self.cfg.sync_before_rename,
        });
        let todo = Mutex::new(todo);
        shared.save()?;
        let guard = SaveOnDrop(Some(shared.clone()));
        {
            // Each stream takes the next range nobody has taken yet.
            let workers = (0..streams).map(|_| async {
                loop {
                    let next = lock(&todo).pop_front();
                    let Some(i) = next else { break };
                    self.range_worker(&shared, i).await?;
                }
                Ok::<(), DownloadError>(())
            });
            let all = futures_util::future::try_join_all(workers);
            tokio::pin!(all);
            let mut tick = tokio::time::interval(self.cfg.state_save_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    r = &mut all => { r?; break; }
                    _ = tick.tick() => {
                        if let Err(e) = shared.save() {
                            tracing::warn!("{e}");
                        }
                    }
                }
            }
        }
        shared.save()?;
        drop(guard);
        drop(shared);
        drop(extra);
        self.finish(p, total, hasher).await
    }

    async fn range_worker(&self, shared: &Arc<Ranged>, i: usize) -> Result<(), DownloadError> {
        let mut attempts = Attempts::new(&self.cfg.retry);
        loop {
            let r = lock(&shared.state).ranges[i];
            if r.is_complete() {
                break;
            }
            let mut progressed = false;
            match self.range_attempt(shared, i, &mut progressed).await {
                Ok(()) => break,
                Err(e) => attempts.failed(e, progressed, &self.url_str()).await?,
            }
        }
        // Completed ranges are saved at once, so a kill right after never re-fetches them.
        shared.save()
    }

    async fn range_attempt(
        &self,
        shared: &Arc<Ranged>,
        i: usize,
        progressed: &mut bool,
    ) -> Result<(), DownloadError> {
        let r = lock(&shared.state).ranges[i];
        let from = r.next_offset();
        let (mut resp, meta) = self.send(Some((from, Some(r.end - 1)))).await?;
        match resp.status().as_u16() {
            206 => {
                let cr = Self::content_range(resp.headers(), &meta.url)?;
                let total = lock(&shared.state).total;
                if cr.start != from || cr.total.is_some_and(|t| t != total) {
                    return Err(DownloadError::Protocol {
                        url: redact_url(&meta.url),
                        what: format!(
                            "asked for bytes {from}-{} of {total}, got a range starting at {} of {:?} (did the file change?)",
                            r.end - 1,
                            cr.start,
                            cr.total
                        ),
                    });
                }
            }
            200 | 416 => {
                return Err(DownloadError::Protocol {
                    url: redact_url(&meta.url),
                    what: format!(
                        "the server stopped honouring Range requests (HTTP {})",
                        resp.status().as_u16()
                    ),
                });
            }
            _ => return Err(status_error(&resp, &meta)),
        }
        let mut w = RangeWriter {
            shared: shared.clone(),
            index: i,
            offset: from,
            buf: Vec::with_capacity(WRITE_BUF),
        };
        let mut left = r.end - from;
        while left > 0 {
            let Some(chunk) = self.next_chunk(&mut resp, &meta.url).await? else {
                break;
            };
            let take = (chunk.len() as u64).min(left) as usize;
            w.push(&chunk[..take])?;
            left -= take as u64;
            *progressed = true;
            self.progress
                .bytes
                .fetch_add(take as u64, Ordering::Relaxed);
        }
        w.flush()?;
        if left > 0 {
            return Err(DownloadError::Truncated {
                url: redact_url(&meta.url),
                expected: r.end - from,
                got: r.end - from - left,
            });
        }
        Ok(())
    }

    // ---------------------------------------------------------------- verify and promote

    /// Verifies the `.part` (size, sha256, git sha1) and renames it into place. On a mismatch
    /// the partial is removed: those bytes are wrong, resuming them would keep them wrong.
    async fn finish(
        &self,
        p: &Path,
        len: u64,
        hasher: Option<HashTask>,
    ) -> Result<(PathBuf, Digests), DownloadError> {
        let part = part_path(p);
        let reject = |e: DownloadError| {
            remove_quietly(&part);
            remove_quietly(&state_path(p));
            e
        };
        let actual_len = file_len(&part).unwrap_or(0);
        if actual_len != len {
            return Err(reject(DownloadError::SizeMismatch {
                url: self.url_str(),
                path: p.to_path_buf(),
                expected: len,
                actual: actual_len,
            }));
        }
        if let Err(e) = self.check_expected_size(p, len) {
            return Err(reject(e));
        }
        // A part that was whole before this run (no bytes came) is hashed here, once.
        let hasher = match hasher {
            Some(h) => Some(h),
            None => self.hasher(&part, Some(len))?,
        };
        let mut digests = match hasher {
            Some(h) => h
                .finish(len)
                .await
                .map_err(|e| DownloadError::io("hashing", &part, e))?,
            None => Digests::default(),
        };
        if let Some(expected) = &self.expected_sha256 {
            let actual = match digests.sha256.clone() {
                Some(s) => s,
                None => hash_file(part.clone(), HashKind::Sha256).await?,
            };
            if &actual != expected {
                return Err(reject(DownloadError::HashMismatch {
                    url: self.url_str(),
                    path: p.to_path_buf(),
                    algorithm: "sha256",
                    expected: expected.clone(),
                    actual,
                }));
            }
        }
        if let Some(expected) = &self.expected_git_sha1 {
            // Hashed on the way unless the size was unknown when the bytes started.
            let actual = match digests.git_sha1.take() {
                Some(s) => s,
                None => hash_file(part.clone(), HashKind::GitSha1(len)).await?,
            };
            if &actual != expected {
                return Err(reject(DownloadError::HashMismatch {
                    url: self.url_str(),
                    path: p.to_path_buf(),
                    algorithm: "git sha1",
                    expected: expected.clone(),
                    actual,
                }));
            }
        }
        // Writeback started as the bytes were written: this waits for the tail only.
        if self.cfg.sync_before_rename {
            let part2 = part.clone();
            tokio::task::spawn_blocking(move || File::open(&part2).and_then(|f| f.sync_all()))
                .await
                .map_err(|e| DownloadError::io("syncing", &part, std::io::Error::other(e)))?
                .map_err(|e| DownloadError::io("syncing", &part, e))?;
        }
        std::fs::rename(&part, p).map_err(|e| DownloadError::io("renaming into place", p, e))?;
        remove_quietly(&state_path(p));
        self.progress.bytes.store(len, Ordering::Relaxed);
        self.progress.total.store(len, Ordering::Relaxed);
        Ok((p.to_path_buf(), digests))
    }
}

/// Appends to a single-stream `.part` through a buffer that is flushed on drop, so a paused or
/// cancelled download keeps every byte it received.
struct PartWriter {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// Where the next write goes (the file is opened for appending).
    offset: u64,
    /// The hashing task following the file.
    feed: Option<Arc<Feed>>,
    /// Start writeback of what was written (when the file is synced before the rename).
    writeback: bool,
}

impl PartWriter {
    fn write(&mut self, data: &[u8]) -> Result<(), DownloadError> {
        if self.buf.is_empty() && data.len() >= DIRECT_WRITE {
            return self.write_out(data);
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_BUF {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DownloadError> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            let r = self.write_out(&buf);
            self.buf = buf;
            self.buf.clear();
            r?;
        }
        Ok(())
    }

    fn write_out(&mut self, data: &[u8]) -> Result<(), DownloadError> {
        self.file
            .write_all(data)
            .map_err(|e| DownloadError::io("writing", &self.path, e))?;
        let n = data.len() as u64;
        if self.writeback {
            start_writeback(&self.file, self.offset, n);
        }
        self.offset += n;
        if let Some(f) = &self.feed {
            f.advance(self.offset);
        }
        Ok(())
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// A multi-range download's shared file and state.
struct Ranged {
    file: File,
    part: PathBuf,
    state_path: PathBuf,
    state: Mutex<RangedState>,
    /// The hashing task following the completed prefix.
    feed: Option<Arc<Feed>>,
    /// Start writeback of what was written (when the file is synced before the rename).
    writeback: bool,
}

impl Ranged {
    fn save(&self) -> Result<(), DownloadError> {
        // Held while writing so concurrent saves do not interleave on the temp file.
        let st = lock(&self.state);
        st.save(&self.state_path)
            .map_err(|e| DownloadError::io("saving download state", &self.state_path, e))
    }
}

/// Saves the range state when a download stops early (pause, cancel, error).
struct SaveOnDrop(Option<Arc<Ranged>>);

impl Drop for SaveOnDrop {
    fn drop(&mut self) {
        if let Some(r) = self.0.take()
            && r.state_path.exists()
        {
            let _ = r.save();
        }
    }
}

/// Writes one range at its offsets; `done` advances only after the bytes are written.
struct RangeWriter {
    shared: Arc<Ranged>,
    index: usize,
    offset: u64,
    buf: Vec<u8>,
}

impl RangeWriter {
    fn push(&mut self, data: &[u8]) -> Result<(), DownloadError> {
        if self.buf.is_empty() && data.len() >= DIRECT_WRITE {
            return self.write_out(data);
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_BUF {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DownloadError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.write_out(&buf);
        self.buf = buf;
        self.buf.clear();
        r
    }

    fn write_out(&mut self, data: &[u8]) -> Result<(), DownloadError> {
        self.shared
            .file
            .write_all_at(data, self.offset)
            .map_err(|e| DownloadError::io("writing", &self.shared.part, e))?;
        let n = data.len() as u64;
        if self.shared.writeback {
            start_writeback(&self.shared.file, self.offset, n);
        }
        self.offset += n;
        let prefix = {
            let mut st = lock(&self.shared.state);
            st.ranges[self.index].done += n;
            st.contiguous_done()
        };
        if let Some(f) = &self.shared.feed {
            f.advance(prefix);
        }
        Ok(())
    }
}

impl Drop for RangeWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Counts failed attempts and waits between them ([`RetryState`] over the queue's policy).
pub(crate) struct Attempts<'a>(RetryState<'a>);

impl<'a> Attempts<'a> {
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Self(RetryState::new(policy))
    }

    /// Returns the error when it is final; otherwise sleeps (backoff with jitter, or the
    /// server's Retry-After when longer, capped) and returns Ok for another attempt. An attempt
    /// that made net progress (the caller decides: more bytes kept than ever before) resets the
    /// count, so a link that drops every few GB still finishes while a server that breaks at
    /// the same place every time runs out of attempts.
    pub async fn failed(
        &mut self,
        e: DownloadError,
        progressed: bool,
        url: &str,
    ) -> Result<(), DownloadError> {
        if !e.is_retryable() {
            return Err(e);
        }
        if progressed {
            self.0.reset();
        }
        let Some(delay) = self.0.next_delay(e.retry_after()) else {
            return Err(DownloadError::RetriesExhausted {
                url: url.to_owned(),
                attempts: self.0.failures(),
                last: Box::new(e),
            });
        };
        tracing::debug!(attempt = self.0.failures(), ?delay, "retrying after: {e}");
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// A request with our own redirect handling: the bearer token goes only to the source's origin
/// (scheme, host, port) and is dropped for good once a redirect leaves it.
async fn send_request(
    client: &reqwest::Client,
    response_timeout: std::time::Duration,
    method: reqwest::Method,
    source: &Url,
    token: Option<&AccessToken>,
    range: Option<(u64, Option<u64>)>,
) -> Result<(Response, Meta), DownloadError> {
    let origin = source.origin();
    let mut url = source.clone();
    let mut same_origin = true;
    for _ in 0..=MAX_REDIRECTS {
        let mut req = client
            .request(method.clone(), url.clone())
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some((a, b)) = range {
            let v = match b {
                Some(b) => format!("bytes={a}-{b}"),
                None => format!("bytes={a}-"),
            };
            req = req.header(header::RANGE, v);
        }
        let token_sent = same_origin && token.is_some();
        if let (true, Some(t)) = (token_sent, token) {
            let mut v = header::HeaderValue::from_str(t.header_value()).map_err(|_| {
                DownloadError::Setup {
                    what: "the access token holds characters a header cannot".into(),
                }
            })?;
            v.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, v);
        }
        let resp = tokio::time::timeout(response_timeout, req.send())
            .await
            .map_err(|_| DownloadError::NoResponse {
                url: redact_url(&url),
                timeout: response_timeout,
            })?
            .map_err(|e| conn_error(&url, e))?;
        if matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
            let bad = |what: &str| DownloadError::Redirect {
                url: redact_url(&url),
                what: what.to_owned(),
            };
            let loc = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| bad("redirect without a usable Location header"))?;
            let next = url
                .join(loc)
                .map_err(|e| bad(&format!("redirect to an invalid URL: {e}")))?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(bad("redirect to a URL that is not http(s)"));
            }
            if next.origin() != origin {
                same_origin = false;
            }
            tracing::debug!(from = %redact_url(&url), to = %redact_url(&next), "following redirect");
            url = next;
            continue;
        }
        let h = resp.headers();
        let text =
            |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let meta = Meta {
            content_type: text(header::CONTENT_TYPE),
            disposition: text(header::CONTENT_DISPOSITION),
            url,
            token_sent,
        };
        return Ok((resp, meta));
    }
    Err(DownloadError::Redirect {
        url: redact_url(source),
        what: format!("more than {MAX_REDIRECTS} redirects"),
    })
}

/// The HTTP client of the download path (the queue's, and [`SizeProbe::new`]'s).
pub(crate) fn http_client(cfg: &TransferConfig) -> Result<reqwest::Client, DownloadError> {
    reqwest::Client::builder()
        // Redirects are followed by hand so the token never leaves the source's host.
        .redirect(reqwest::redirect::Policy::none())
        // Ranges and sizes refer to the bytes as stored; no transparent decompression.
        .no_gzip()
        // One TCP connection per range: parallel ranges are about parallel connections.
        .http1_only()
        .tcp_nodelay(true)
        .connect_timeout(cfg.connect_timeout)
        .user_agent(cfg.user_agent.clone())
        .build()
        .map_err(|e| DownloadError::Setup {
            what: format!("cannot build the HTTP client: {e}"),
        })
}

/// What a server says about a file's size without sending it: the look-up `diff` and `apply`
/// make for a URL source that would be fetched. It sends what a download sends (the download
/// path's client, redirects followed by hand, the bearer token only to the source's origin) and
/// retries under a [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct SizeProbe {
    client: reqwest::Client,
    response_timeout: std::time::Duration,
    retry: RetryPolicy,
}

impl SizeProbe {
    /// A probe with its own client, built as the queue builds its own, with `config`'s
    /// timeouts and retry policy.
    pub fn new(config: &TransferConfig) -> Result<Self, DownloadError> {
        Ok(Self::with_client(http_client(config)?, config))
    }

    /// A probe over an existing client (the queue's).
    pub(crate) fn with_client(client: reqwest::Client, config: &TransferConfig) -> Self {
        Self {
            client,
            response_timeout: config.response_timeout,
            retry: config.retry.clone(),
        }
    }

    /// The same probe under another retry budget.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same probe with another wait for response headers.
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The size of the file at `url`: a HEAD's `Content-Length`, or, when the server refuses
    /// HEAD (403, as URLs signed for GET only answer, 405, 501), a `Range: bytes=0-0` GET's
    /// `Content-Range` total (its `Content-Length` when the range is ignored; the body is not
    /// read). `Ok(None)`: the server answered without saying. Failures that may pass are
    /// retried; an error status is a [`DownloadError::HttpStatus`].
    pub async fn size(
        &self,
        url: &Url,
        token: Option<&AccessToken>,
    ) -> Result<Option<u64>, DownloadError> {
        let mut attempts = Attempts::new(&self.retry);
        loop {
            match self.size_once(url, token).await {
                Ok(n) => return Ok(n),
                Err(e) => attempts.failed(e, false, &redact_url(url)).await?,
            }
        }
    }

    async fn size_once(
        &self,
        url: &Url,
        token: Option<&AccessToken>,
    ) -> Result<Option<u64>, DownloadError> {
        let send = |method, range| {
            send_request(
                &self.client,
                self.response_timeout,
                method,
                url,
                token,
                range,
            )
        };
        let header_u64 = |h: &HeaderMap, name: header::HeaderName| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (resp, meta) = send(reqwest::Method::HEAD, None).await?;
        if resp.status().is_success() {
            return Ok(header_u64(resp.headers(), header::CONTENT_LENGTH));
        }
        if !matches!(resp.status().as_u16(), 403 | 405 | 501) {
            return Err(status_error(&resp, &meta));
        }
        let (resp, meta) = send(reqwest::Method::GET, Some((0, Some(0)))).await?;
        match resp.status().as_u16() {
            206 => Ok(resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .and_then(|cr| cr.total)),
            200..=299 => Ok(header_u64(resp.headers(), header::CONTENT_LENGTH)),
            // The range starts past the end: an empty file.
            416 => Ok(Some(0)),
            _ => Err(status_error(&resp, &meta)),
        }
    }
}

fn status_error(resp: &Response, meta: &Meta) -> DownloadError {
    let status = resp.status().as_u16();
    let h = resp.headers();
    let retry_after = h
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    let mut message = match status {
        401 if meta.token_sent => {
            "authentication failed: the server rejected the access token".to_owned()
        }
        401 => {
            "authentication required: this file needs an access token and none was sent".to_owned()
        }
        403 => {
            "access denied: the access token does not grant access to this file (gated or private?)"
                .to_owned()
        }
        404 => "not found: no file at this URL (check the repository, revision and file name)"
            .to_owned(),
        429 => "rate limited by the server".to_owned(),
        s if s >= 500 => "server error".to_owned(),
        _ => resp
            .status()
            .canonical_reason()
            .unwrap_or("unexpected status")
            .to_owned(),
    };
    if let Some(code) = h.get("x-error-code").and_then(|v| v.to_str().ok()) {
        let _ = write!(message, " ({code})");
    }
    DownloadError::HttpStatus {
        url: redact_url(&meta.url),
        status,
        message,
        retry_after,
    }
}

fn conn_error(url: &Url, e: reqwest::Error) -> DownloadError {
    // reqwest's messages embed the full URL; the redacted one is ours to show.
    DownloadError::Connection {
        url: redact_url(url),
        source: e.without_url(),
    }
}

fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let start = match range.trim() {
        "*" => 0,
        r => r.split_once('-')?.0.trim().parse().ok()?,
    };
    Some(ContentRange { start, total })
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

enum HashKind {
    Sha256,
    GitSha1(u64),
}

async fn hash_file(path: PathBuf, kind: HashKind) -> Result<String, DownloadError> {
    let p2 = path.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut f = File::open(&p2)?;
        let mut buf = vec![0u8; 1 << 20];
        match kind {
            HashKind::Sha256 => {
                let mut h = sha2::Sha256::new();
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                Ok(hex::encode(h.finalize()))
            }
            HashKind::GitSha1(len) => {
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {len}\0").as_bytes());
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                Ok(hex::encode(h.finalize()))
            }
        }
    })
    .await
    .map_err(|e| DownloadError::io("hashing", &path, std::io::Error::other(e)))?
    .map_err(|e| DownloadError::io("hashing", &path, e))
}

/// Asks the kernel to start writing `len` bytes at `offset` back to disk now, without
/// waiting, so the fsync before the rename finds little left to write.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd as _;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the duration of the call; sync_file_range only
    // schedules writeback of the file's pages and touches no memory of ours.
    let rc =
        unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
    if rc != 0 {
        tracing::trace!("sync_file_range: {}", std::io::Error::last_os_error());
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        let c = parse_content_range("bytes 100-199/1000").unwrap();
        assert_eq!((c.start, c.total), (100, Some(1000)));
        let c = parse_content_range("bytes */1000").unwrap();
        assert_eq!(c.total, Some(1000));
        let c = parse_content_range("bytes 0-0/*").unwrap();
        assert_eq!(c.total, None);
        assert!(parse_content_range("items 0-1/2").is_none());
        assert!(parse_content_range("bytes x-1/2").is_none());
    }

    #[test]
    fn git_blob_sha1_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        let h = rt.block_on(hash_file(p, HashKind::GitSha1(6))).unwrap();
        assert_eq!(h, "ce013625030ba8dba906f756967f9e9ca394464a");
    }
}
