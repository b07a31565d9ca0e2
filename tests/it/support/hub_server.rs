//! An in-test Hugging Face Hub: a real HTTP server on 127.0.0.1 that answers as
//! `shared/hub-protocol.md` says, plus a second listener on another port acting as the CDN.
//!
//! # API
//!
//! ```ignore
//! let hub = HubServer::start();                 // own thread + runtime: usable from sync and async tests
//! hub.add_repo(
//!     FakeRepo::new("owner/sd15")
//!         .file("model_index.json", b"{}")      // small (git) file: .json/.txt/.md/… by extension
//!         .file("unet/diffusion_pytorch_model.fp16.safetensors", weights) // LFS by extension
//!         .lfs_file("odd.json", bytes)          // force LFS / .small_file(…) forces a git file
//!         .tags(&["diffusers", "license:mit"])
//!         .gated("manual")                      // or .private()
//!         .branch("dev", vec![FakeFile::small("a.txt", b"x")]),
//! );
//! hub.endpoint()                                // http://127.0.0.1:PORT  (use as HF_ENDPOINT)
//! hub.commit("owner/sd15", "main")              // the 40-hex commit of a branch
//! hub.grant("hf_good", "owner/sd15")            // that token may read that private/gated repo
//! hub.set_page_size(2)                          // tree pages (default 1000), with Link rel="next"
//! hub.fail_next(Target::Hub, 2, Fault::Status(503))
//! hub.fail_next(Target::Any, 1, Fault::RateLimit { retry_after: 0 })
//! hub.fail_next(Target::Repo("owner/busy"), 9, Fault::RateLimit { retry_after: 3600 })
//! hub.corrupt_lfs("owner/sd15", "unet/…safetensors") // the CDN serves it with one byte flipped
//! hub.add_url_download("123", "detail.safetensors", bytes) // Civitai-style /api/download/models/123
//! hub.add_html_page("/login")                   // a 200 text/html page (not a model)
//! hub.requests() / hub.hub_requests() / hub.cdn_requests() / hub.clear_log()
//! ```
//!
//! # Behaviour
//!
//! - `GET /api/models/{id}[/revision/{rev}][?blobs=true]`: info JSON (`id`, `sha`, `lastModified`,
//!   `private`, `gated`, `tags`, `author`, `cardData`, `siblings` with `size`/`blobId`/`lfs` when
//!   `blobs=true`).
//! - `GET /api/models/{id}/tree/{rev}[/{path}][?recursive=true][&cursor=N]`: entries (directories
//!   and files; LFS files with `lfs: {oid, size, pointerSize}`), paged with `Link: <…>; rel="next"`.
//! - `HEAD|GET /{id}/resolve/{rev}/{path}`: LFS → `302` to the CDN host with `X-Linked-Etag`
//!   (sha256), `X-Linked-Size`, `X-Repo-Commit` and an `ETag` that is *not* the sha256; small
//!   files of public repos → `307` to `/api/resolve-cache/models/{id}/{commit}/{path}`, whose
//!   answer carries `ETag: "<git blob sha1>"`; small files of private/gated repos → `200` directly.
//! - Text files (`.json`, `.txt`, `.md`, `.yaml`) are gzip-compressed and chunked (no
//!   `Content-Length`) when the request accepts gzip and has no `Range`.
//! - `Range: bytes=N-` / `bytes=N-M` → `206` with `Content-Range`; N at/after the end → `416`
//!   with `Content-Range: bytes */SIZE`. On the CDN too.
//! - Errors with `X-Error-Code`: unknown or private repo without token → 401 `RepoNotFound`,
//!   with a token lacking access → 404 `RepoNotFound`; unknown revision → 404
//!   `RevisionNotFound`; missing file → 404 `EntryNotFound`; gated download without token → 401
//!   `GatedRepo`, token without access → 403 `GatedRepo`. Gated repos' info and tree are public.
//! - A repo id in the wrong case → `307` to the canonical spelling (same path otherwise).
//! - Every request to either host is logged ([`LoggedRequest`]) with its method, host, path,
//!   query, headers, whether `Authorization` was present, and the status sent.
//! - Faults: [`HubServer::fail_next`] answers the next N requests to a host (or about one
//!   repository) with a 5xx or a 429 (`Retry-After`), before any routing.

#![allow(dead_code, reason = "shared by several test modules; each uses a part")]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use sha1::Digest as _;

/// Which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The Hub (API + resolve).
    Hub,
    /// The CDN (LFS bodies, URL downloads).
    Cdn,
}

/// Which listener a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The Hub only.
    Hub,
    /// The CDN only.
    Cdn,
    /// Whichever is asked next.
    Any,
    /// Requests about this repository (its API, tree and resolve paths), on either host.
    Repo(&'static str),
}

/// An injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (e.g. 500, 503).
    Status(u16),
    /// 429 with `Retry-After: retry_after`.
    RateLimit {
        /// Seconds.
        retry_after: u64,
    },
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// Which listener.
    pub host: Host,
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path, percent-encoded as received.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Whether an `Authorization` header was present.
    pub authorization: bool,
    /// All headers (lowercase names).
    pub headers: Vec<(String, String)>,
    /// The status answered.
    pub status: u16,
}

impl LoggedRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A file of a fake repo.
#[derive(Debug, Clone)]
pub struct FakeFile {
    /// Path in the repo.
    pub path: String,
    /// Content.
    pub content: Vec<u8>,
    /// Stored in LFS.
    pub lfs: bool,
    /// The sha256 once computed (`scripts/bench-download` serves GiB-sized files).
    sha256_memo: std::sync::OnceLock<String>,
}

impl FakeFile {
    /// LFS when the extension is a weight/binary one, else a git file.
    pub fn auto(path: &str, content: impl Into<Vec<u8>>) -> Self {
        let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
        let lfs = matches!(
            ext,
            "safetensors"
                | "bin"
                | "ckpt"
                | "pt"
                | "pth"
                | "onnx"
                | "onnx_data"
                | "pb"
                | "msgpack"
                | "h5"
                | "gguf"
                | "png"
                | "model"
        );
        Self {
            path: path.to_owned(),
            content: content.into(),
            lfs,
            sha256_memo: std::sync::OnceLock::new(),
        }
    }

    /// A git (non-LFS) file.
    pub fn small(path: &str, content: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.to_owned(),
            content: content.into(),
            lfs: false,
            sha256_memo: std::sync::OnceLock::new(),
        }
    }

    /// An LFS file.
    pub fn lfs(path: &str, content: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.to_owned(),
            content: content.into(),
            lfs: true,
            sha256_memo: std::sync::OnceLock::new(),
        }
    }

    /// sha256 of the content.
    pub fn sha256(&self) -> String {
        self.sha256_memo
            .get_or_init(|| hex::encode(sha2::Sha256::digest(&self.content)))
            .clone()
    }

    /// The LFS pointer text.
    pub fn pointer(&self) -> String {
        format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
            self.sha256(),
            self.content.len()
        )
    }

    /// The git blob sha1 the Hub lists as `oid` (of the pointer for LFS files).
    pub fn oid(&self) -> String {
        if self.lfs {
            git_sha1(self.pointer().as_bytes())
        } else {
            git_sha1(&self.content)
        }
    }
}

/// `sha1("blob {len}\0" + content)`.
pub fn git_sha1(content: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex::encode(h.finalize())
}

/// A repo defined by a test.
#[derive(Debug, Clone)]
pub struct FakeRepo {
    /// Canonical id (`owner/name`).
    pub id: String,
    /// Private repo.
    pub private: bool,
    /// `None`, `Some("auto")` or `Some("manual")`.
    pub gated: Option<&'static str>,
    /// Tags.
    pub tags: Vec<String>,
    /// Card data.
    pub card_data: serde_json::Value,
    /// Last modified.
    pub last_modified: String,
    /// Branch (or tag) name → files, in definition order; `main` first.
    pub branches: Vec<(String, Vec<FakeFile>)>,
}

impl FakeRepo {
    /// A public repo with an empty `main`.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            private: false,
            gated: None,
            tags: Vec::new(),
            card_data: serde_json::json!({"license": "mit"}),
            last_modified: "2024-03-04T05:06:07.000Z".to_owned(),
            branches: vec![("main".to_owned(), Vec::new())],
        }
    }

    fn main_files(&mut self) -> &mut Vec<FakeFile> {
        &mut self.branches[0].1
    }

    /// Adds a file to `main` (LFS by extension, see [`FakeFile::auto`]).
    #[must_use]
    pub fn file(mut self, path: &str, content: impl Into<Vec<u8>>) -> Self {
        self.main_files().push(FakeFile::auto(path, content));
        self
    }

    /// Adds an LFS file to `main`.
    #[must_use]
    pub fn lfs_file(mut self, path: &str, content: impl Into<Vec<u8>>) -> Self {
        self.main_files().push(FakeFile::lfs(path, content));
        self
    }

    /// Adds a git file to `main`.
    #[must_use]
    pub fn small_file(mut self, path: &str, content: impl Into<Vec<u8>>) -> Self {
        self.main_files().push(FakeFile::small(path, content));
        self
    }

    /// Adds many files to `main` (auto LFS).
    #[must_use]
    pub fn files<'a>(mut self, files: impl IntoIterator<Item = (&'a str, Vec<u8>)>) -> Self {
        for (p, c) in files {
            self.main_files().push(FakeFile::auto(p, c));
        }
        self
    }

    /// Private: needs a granted token for everything.
    #[must_use]
    pub fn private(mut self) -> Self {
        self.private = true;
        self
    }

    /// Gated (`"auto"` or `"manual"`): downloads need a granted token.
    #[must_use]
    pub fn gated(mut self, mode: &'static str) -> Self {
        self.gated = Some(mode);
        self
    }

    /// Sets the tags.
    #[must_use]
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    /// Sets the card data.
    #[must_use]
    pub fn card_data(mut self, v: serde_json::Value) -> Self {
        self.card_data = v;
        self
    }

    /// Adds (or replaces) a branch or tag with its own files.
    #[must_use]
    pub fn branch(mut self, name: &str, files: Vec<FakeFile>) -> Self {
        self.branches.retain(|(b, _)| b != name);
        self.branches.push((name.to_owned(), files));
        self
    }

    fn commit_of(&self, branch: &str, files: &[FakeFile]) -> String {
        let mut h = sha1::Sha1::new();
        h.update(self.id.as_bytes());
        h.update(b"\0");
        h.update(branch.as_bytes());
        let mut sorted: Vec<&FakeFile> = files.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        for f in sorted {
            h.update(b"\0");
            h.update(f.path.as_bytes());
            h.update(b"\0");
            h.update(f.sha256().as_bytes());
            h.update([u8::from(f.lfs)]);
        }
        hex::encode(h.finalize())
    }
}

struct StoredRepo {
    repo: FakeRepo,
    /// branch → commit
    refs: BTreeMap<String, String>,
    /// commit → files
    commits: BTreeMap<String, Vec<FakeFile>>,
}

struct UrlDownload {
    filename: String,
    content: bytes::Bytes,
}

#[derive(Default)]
struct Emu {
    hub_addr: Option<SocketAddr>,
    cdn_addr: Option<SocketAddr>,
    repos: Vec<StoredRepo>,
    /// token → repo ids (lowercase) it may read
    grants: HashMap<String, Vec<String>>,
    page_size: usize,
    faults: Vec<(Target, u32, Fault)>,
    /// sha256 → content (CDN storage; shared, so that a response never copies a blob)
    blobs: HashMap<String, bytes::Bytes>,
    corrupt: Vec<String>,
    url_downloads: HashMap<String, UrlDownload>,
    html_pages: Vec<String>,
    gzip: bool,
    /// CDN bodies go out `chunk` bytes at a time with `delay` between chunks.
    throttle: Option<(usize, std::time::Duration)>,
    log: Vec<LoggedRequest>,
}

type Shared = Arc<Mutex<Emu>>;

fn lock(s: &Shared) -> MutexGuard<'_, Emu> {
    // A panicking test thread must not take every later assertion down with it.
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running emulator. Dropping it stops both listeners.
pub struct HubServer {
    hub_addr: SocketAddr,
    cdn_addr: SocketAddr,
    state: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HubServer {
    /// Binds both listeners on 127.0.0.1 (ephemeral ports) and serves them from a thread of
    /// their own.
    pub fn start() -> Self {
        let hub_std = std::net::TcpListener::bind("127.0.0.1:0").expect("bind hub listener");
        let cdn_std = std::net::TcpListener::bind("127.0.0.1:0").expect("bind cdn listener");
        hub_std.set_nonblocking(true).expect("nonblocking");
        cdn_std.set_nonblocking(true).expect("nonblocking");
        let hub_addr = hub_std.local_addr().expect("hub addr");
        let cdn_addr = cdn_std.local_addr().expect("cdn addr");
        let state: Shared = Arc::new(Mutex::new(Emu {
            hub_addr: Some(hub_addr),
            cdn_addr: Some(cdn_addr),
            page_size: 1000,
            gzip: true,
            ..Emu::default()
        }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("hub-emulator".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("emulator runtime");
                rt.block_on(async move {
                    let hub_l = tokio::net::TcpListener::from_std(hub_std).expect("hub listener");
                    let cdn_l = tokio::net::TcpListener::from_std(cdn_std).expect("cdn listener");
                    let hub_app = axum::Router::new()
                        .fallback(hub_handler)
                        .with_state(st.clone());
                    let cdn_app = axum::Router::new().fallback(cdn_handler).with_state(st);
                    let hub = tokio::spawn(async move { axum::serve(hub_l, hub_app).await });
                    let cdn = tokio::spawn(async move { axum::serve(cdn_l, cdn_app).await });
                    let _ = rx.await;
                    hub.abort();
                    cdn.abort();
                });
            })
            .expect("spawn emulator thread");
        Self {
            hub_addr,
            cdn_addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` of the Hub (no trailing slash).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.hub_addr)
    }

    /// The Hub endpoint as a URL.
    pub fn endpoint_url(&self) -> reqwest::Url {
        reqwest::Url::parse(&self.endpoint()).expect("endpoint URL")
    }

    /// `http://127.0.0.1:PORT` of the CDN.
    pub fn cdn_endpoint(&self) -> String {
        format!("http://{}", self.cdn_addr)
    }

    /// `127.0.0.1:PORT` of the Hub.
    pub fn hub_addr(&self) -> SocketAddr {
        self.hub_addr
    }

    /// `127.0.0.1:PORT` of the CDN.
    pub fn cdn_addr(&self) -> SocketAddr {
        self.cdn_addr
    }

    /// Adds (or replaces) a repo.
    pub fn add_repo(&self, repo: FakeRepo) {
        let mut refs = BTreeMap::new();
        let mut commits = BTreeMap::new();
        let mut st = lock(&self.state);
        for (branch, files) in &repo.branches {
            let c = repo.commit_of(branch, files);
            refs.insert(branch.clone(), c.clone());
            for f in files.iter().filter(|f| f.lfs) {
                st.blobs
                    .insert(f.sha256(), bytes::Bytes::from(f.content.clone()));
            }
            commits.insert(c, files.clone());
        }
        // As on the Hub, a branch that moves leaves its old commits reachable by id.
        if let Some(old) = st
            .repos
            .iter()
            .find(|r| r.repo.id.eq_ignore_ascii_case(&repo.id))
        {
            for (c, files) in &old.commits {
                commits.entry(c.clone()).or_insert_with(|| files.clone());
            }
        }
        st.repos
            .retain(|r| !r.repo.id.eq_ignore_ascii_case(&repo.id));
        st.repos.push(StoredRepo {
            repo,
            refs,
            commits,
        });
    }

    /// The commit a branch of a repo resolves to.
    pub fn commit(&self, repo: &str, branch: &str) -> String {
        let st = lock(&self.state);
        st.repos
            .iter()
            .find(|r| r.repo.id == repo)
            .and_then(|r| r.refs.get(branch).cloned())
            .unwrap_or_else(|| panic!("no branch {branch} in {repo}"))
    }

    /// Lets `token` read `repo` (private or gated).
    pub fn grant(&self, token: &str, repo: &str) {
        lock(&self.state)
            .grants
            .entry(token.to_owned())
            .or_default()
            .push(repo.to_ascii_lowercase());
    }

    /// Tree page size (default 1000).
    pub fn set_page_size(&self, n: usize) {
        lock(&self.state).page_size = n.max(1);
    }

    /// Whether text files may be gzip-compressed (default true).
    pub fn set_gzip(&self, on: bool) {
        lock(&self.state).gzip = on;
    }

    /// Slows CDN bodies (LFS files, URL downloads) down: `chunk` bytes, then `delay`, and so
    /// on. For tests that must catch a download in the middle (kill, cancel, timeout).
    pub fn set_cdn_throttle(&self, chunk: usize, delay: std::time::Duration) {
        lock(&self.state).throttle = Some((chunk.max(1), delay));
    }

    /// Answers the next `n` requests to `target` with `fault`.
    pub fn fail_next(&self, target: Target, n: u32, fault: Fault) {
        lock(&self.state).faults.push((target, n, fault));
    }

    /// The CDN serves this LFS file with one byte changed (same length).
    pub fn corrupt_lfs(&self, repo: &str, path: &str) {
        let mut st = lock(&self.state);
        let sha = st
            .repos
            .iter()
            .find(|r| r.repo.id == repo)
            .and_then(|r| {
                r.commits
                    .values()
                    .flatten()
                    .find(|f| f.path == path && f.lfs)
                    .map(FakeFile::sha256)
            })
            .unwrap_or_else(|| panic!("no LFS file {path} in {repo}"));
        st.corrupt.push(sha);
    }

    /// A Civitai-style download: `GET {endpoint}/api/download/models/{id}` → 307 to the CDN,
    /// whose answer names the file in `Content-Disposition`. Returns the download URL.
    pub fn add_url_download(
        &self,
        id: &str,
        filename: &str,
        content: impl Into<Vec<u8>>,
    ) -> String {
        lock(&self.state).url_downloads.insert(
            id.to_owned(),
            UrlDownload {
                filename: filename.to_owned(),
                content: bytes::Bytes::from(content.into()),
            },
        );
        format!("{}/api/download/models/{id}", self.endpoint())
    }

    /// A page at `path` on the Hub host that answers 200 `text/html` (a login page).
    pub fn add_html_page(&self, path: &str) -> String {
        lock(&self.state).html_pages.push(path.to_owned());
        format!("{}{path}", self.endpoint())
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.state).log.clone()
    }

    /// Requests to the Hub host.
    pub fn hub_requests(&self) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.host == Host::Hub)
            .collect()
    }

    /// Requests to the CDN host.
    pub fn cdn_requests(&self) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.host == Host::Cdn)
            .collect()
    }

    /// Forgets the log.
    pub fn clear_log(&self) {
        lock(&self.state).log.clear();
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request handling

struct Req {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

impl Req {
    fn token(&self) -> Option<String> {
        self.headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
    }

    fn accepts_gzip(&self) -> bool {
        self.headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
    }

    fn range(&self) -> Option<String> {
        self.headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

fn take_fault(st: &mut Emu, host: Host, path: &str) -> Option<Fault> {
    let idx = st.faults.iter().position(|(t, n, _)| {
        *n > 0
            && match t {
                Target::Any => true,
                Target::Hub => host == Host::Hub,
                Target::Cdn => host == Host::Cdn,
                Target::Repo(id) => {
                    path.contains(&format!("/{id}/")) || path.ends_with(&format!("/{id}"))
                }
            }
    })?;
    let (_, n, f) = &mut st.faults[idx];
    *n -= 1;
    let f = *f;
    if st.faults[idx].1 == 0 {
        st.faults.remove(idx);
    }
    Some(f)
}

fn fault_response(f: Fault) -> Response {
    match f {
        Fault::Status(s) => text(
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "injected failure",
        ),
        Fault::RateLimit { retry_after } => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, None, "rate limited");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            r
        }
    }
}

fn handle(st: &Shared, host: Host, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let r = Req {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
    };
    let idx = {
        let mut s = lock(st);
        s.log.push(LoggedRequest {
            host,
            method: r.method.to_string(),
            path: r.path.clone(),
            query: r.query.clone(),
            authorization: r.headers.contains_key(header::AUTHORIZATION),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            status: 0,
        });
        s.log.len() - 1
    };
    let fault = take_fault(&mut lock(st), host, &r.path);
    let resp = match fault {
        Some(f) => fault_response(f),
        None => match host {
            Host::Hub => route_hub(st, &r),
            Host::Cdn => route_cdn(st, &r),
        },
    };
    if let Some(entry) = lock(st).log.get_mut(idx) {
        entry.status = resp.status().as_u16();
    }
    resp
}

async fn hub_handler(State(st): State<Shared>, req: Request) -> Response {
    handle(&st, Host::Hub, req)
}

async fn cdn_handler(State(st): State<Shared>, req: Request) -> Response {
    handle(&st, Host::Cdn, req)
}

fn text(status: StatusCode, body: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(body.to_owned()))
        .expect("response")
}

fn error(status: StatusCode, code: Option<&str>, msg: &str) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(c) = code {
        b = b.header("x-error-code", c);
    }
    b.body(Body::from(serde_json::json!({ "error": msg }).to_string()))
        .expect("response")
}

fn json(v: &serde_json::Value) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .expect("response")
}

fn redirect(status: StatusCode, location: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, location)
        .body(Body::from(format!("Redirecting to {location}")))
        .expect("response")
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode_path(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn query_param(q: Option<&str>, key: &str) -> Option<String> {
    q?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| decode(v))
    })
}

enum Access {
    Ok,
    Denied(Response),
}

/// Private repos: 401 without token, 404 with a token lacking access (both `RepoNotFound`).
fn check_read(st: &Emu, repo: &FakeRepo, token: Option<&str>) -> Access {
    if !repo.private {
        return Access::Ok;
    }
    match token {
        None => Access::Denied(error(
            StatusCode::UNAUTHORIZED,
            Some("RepoNotFound"),
            "Repository Not Found",
        )),
        Some(t) if granted(st, t, &repo.id) => Access::Ok,
        Some(_) => Access::Denied(error(
            StatusCode::NOT_FOUND,
            Some("RepoNotFound"),
            "Repository Not Found",
        )),
    }
}

fn granted(st: &Emu, token: &str, repo: &str) -> bool {
    st.grants
        .get(token)
        .is_some_and(|r| r.contains(&repo.to_ascii_lowercase()))
}

/// Gated downloads: 401 without token, 403 with a token lacking access (`GatedRepo`).
fn check_download(st: &Emu, repo: &FakeRepo, token: Option<&str>) -> Access {
    if let Access::Denied(r) = check_read(st, repo, token) {
        return Access::Denied(r);
    }
    if repo.gated.is_none() {
        return Access::Ok;
    }
    match token {
        None => Access::Denied(error(
            StatusCode::UNAUTHORIZED,
            Some("GatedRepo"),
            "Access to this model is restricted: you must be authenticated",
        )),
        Some(t) if granted(st, t, &repo.id) => Access::Ok,
        Some(_) => Access::Denied(error(
            StatusCode::FORBIDDEN,
            Some("GatedRepo"),
            "Access to this model is restricted and you are not in the authorized list",
        )),
    }
}

fn repo_not_found(token: Option<&str>) -> Response {
    let status = if token.is_some() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::UNAUTHORIZED
    };
    error(status, Some("RepoNotFound"), "Repository Not Found")
}

/// Finds the repo named by `owner/name`; a wrong case gets a 307 to the same URL with the
/// canonical id (built by `rebuild`).
#[allow(clippy::result_large_err, reason = "the error is the answer to send")]
fn find_repo<'a>(
    st: &'a Emu,
    owner: &str,
    name: &str,
    token: Option<&str>,
    rebuild: &dyn Fn(&str) -> String,
) -> Result<&'a StoredRepo, Response> {
    let id = format!("{owner}/{name}");
    let Some(r) = st
        .repos
        .iter()
        .find(|r| r.repo.id.eq_ignore_ascii_case(&id))
    else {
        return Err(repo_not_found(token));
    };
    if let Access::Denied(resp) = check_read(st, &r.repo, token) {
        return Err(resp);
    }
    if r.repo.id != id {
        return Err(redirect(
            StatusCode::TEMPORARY_REDIRECT,
            &rebuild(&r.repo.id),
        ));
    }
    Ok(r)
}

#[allow(clippy::result_large_err, reason = "the error is the answer to send")]
fn resolve_rev<'a>(r: &'a StoredRepo, rev: &str) -> Result<(&'a str, &'a [FakeFile]), Response> {
    let commit = r.refs.get(rev).map(String::as_str).or_else(|| {
        r.commits
            .keys()
            .find(|c| c.as_str() == rev)
            .map(String::as_str)
    });
    match commit.and_then(|c| r.commits.get_key_value(c)) {
        Some((c, files)) => Ok((c.as_str(), files.as_slice())),
        None => Err(error(
            StatusCode::NOT_FOUND,
            Some("RevisionNotFound"),
            &format!("Invalid rev id: {rev}"),
        )),
    }
}

fn with_query(path: &str, q: Option<&str>) -> String {
    match q {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

fn route_hub(st: &Shared, r: &Req) -> Response {
    let s = lock(st);
    let raw: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let segs: Vec<String> = raw.iter().map(|p| decode(p)).collect();
    let token = r.token();
    let token = token.as_deref();
    if s.html_pages.contains(&r.path) {
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(Body::from(
                "<!doctype html><html><body>Log in</body></html>",
            ))
            .expect("response");
    }
    let seg = |i: usize| segs.get(i).map(String::as_str);
    match (seg(0), seg(1)) {
        (Some("api"), Some("models")) if segs.len() >= 4 => {
            let (owner, name) = (raw[2], raw[3]);
            let rest: Vec<&str> = raw[4..].to_vec();
            let rebuild = |id: &str| {
                let mut p = format!("/api/models/{id}");
                for x in &rest {
                    p.push('/');
                    p.push_str(x);
                }
                with_query(&p, r.query.as_deref())
            };
            let repo = match find_repo(&s, &decode(owner), &decode(name), token, &rebuild) {
                Ok(repo) => repo,
                Err(resp) => return resp,
            };
            match segs.get(4).map(String::as_str) {
                None => info(&s, repo, "main", r),
                Some("revision") if segs.len() == 6 => info(&s, repo, &segs[5], r),
                Some("tree") if segs.len() >= 6 => {
                    let prefix = segs[6..].join("/");
                    tree(&s, repo, &segs[5], &prefix, r)
                }
                _ => error(StatusCode::NOT_FOUND, None, "Not Found"),
            }
        }
        (Some("api"), Some("resolve-cache")) if segs.len() >= 7 && segs[2] == "models" => {
            let id = format!("{}/{}", segs[3], segs[4]);
            let Some(repo) = s.repos.iter().find(|x| x.repo.id == id) else {
                return repo_not_found(token);
            };
            let Some(files) = repo.commits.get(&segs[5]) else {
                return error(
                    StatusCode::NOT_FOUND,
                    Some("RevisionNotFound"),
                    "Invalid rev id",
                );
            };
            let path = segs[6..].join("/");
            match files.iter().find(|f| f.path == path && !f.lfs) {
                Some(f) => serve_small(&s, f, &segs[5], r),
                None => error(
                    StatusCode::NOT_FOUND,
                    Some("EntryNotFound"),
                    "Entry not found",
                ),
            }
        }
        (Some("api"), Some("download")) if segs.len() == 4 && segs[2] == "models" => {
            if s.url_downloads.contains_key(&segs[3]) {
                let cdn = s.cdn_addr.map(|a| a.to_string()).unwrap_or_default();
                redirect(
                    StatusCode::TEMPORARY_REDIRECT,
                    &format!("http://{cdn}/storage/{}?X-Signature=abc", segs[3]),
                )
            } else {
                error(StatusCode::NOT_FOUND, None, "Model not found")
            }
        }
        _ if segs.len() >= 5 && segs[2] == "resolve" => {
            let rest: Vec<&str> = raw[2..].to_vec();
            let rebuild =
                |id: &str| with_query(&format!("/{id}/{}", rest.join("/")), r.query.as_deref());
            let repo = match find_repo(&s, &segs[0], &segs[1], token, &rebuild) {
                Ok(repo) => repo,
                Err(resp) => return resp,
            };
            resolve(&s, repo, &segs[3], &segs[4..].join("/"), token, r)
        }
        _ => error(StatusCode::NOT_FOUND, None, "Not Found"),
    }
}

fn info(s: &Emu, repo: &StoredRepo, rev: &str, r: &Req) -> Response {
    let (commit, files) = match resolve_rev(repo, rev) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let blobs =
        query_param(r.query.as_deref(), "blobs").is_some_and(|v| v == "true" || v == "True");
    let siblings: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            let mut v = serde_json::json!({ "rfilename": f.path });
            if blobs {
                v["size"] = f.content.len().into();
                v["blobId"] = f.oid().into();
                if f.lfs {
                    v["lfs"] = serde_json::json!({
                        "sha256": f.sha256(),
                        "size": f.content.len(),
                        "pointerSize": f.pointer().len(),
                    });
                }
            }
            v
        })
        .collect();
    let rp = &repo.repo;
    let _ = s;
    json(&serde_json::json!({
        "_id": format!("id-{}", &commit[..8]),
        "id": rp.id,
        "modelId": rp.id,
        "author": rp.id.split_once('/').map(|(o, _)| o),
        "sha": commit,
        "lastModified": rp.last_modified,
        "private": rp.private,
        "gated": match rp.gated { None => serde_json::Value::Bool(false), Some(m) => m.into() },
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "library_name": "diffusers",
        "tags": rp.tags,
        "cardData": rp.card_data,
        "siblings": siblings,
    }))
}

fn tree(s: &Emu, repo: &StoredRepo, rev: &str, prefix: &str, r: &Req) -> Response {
    let (_commit, files) = match resolve_rev(repo, rev) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let recursive =
        query_param(r.query.as_deref(), "recursive").is_some_and(|v| v == "true" || v == "True");
    let base = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    // Directories and files, sorted by path.
    let mut entries: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for f in files {
        let Some(rel) = f.path.strip_prefix(base.as_str()) else {
            continue;
        };
        let comps: Vec<&str> = rel.split('/').collect();
        for i in 1..comps.len() {
            let dir = format!("{base}{}", comps[..i].join("/"));
            if !recursive && i > 1 {
                break;
            }
            entries.entry(dir.clone()).or_insert_with(|| {
                serde_json::json!({"type": "directory", "oid": git_sha1(dir.as_bytes()), "size": 0, "path": dir})
            });
        }
        if !recursive && comps.len() > 1 {
            continue;
        }
        let mut v = serde_json::json!({
            "type": "file",
            "oid": f.oid(),
            "size": f.content.len(),
            "path": f.path,
        });
        if f.lfs {
            v["lfs"] = serde_json::json!({
                "oid": f.sha256(),
                "size": f.content.len(),
                "pointerSize": f.pointer().len(),
            });
        }
        entries.insert(f.path.clone(), v);
    }
    if !prefix.is_empty() && entries.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            Some("EntryNotFound"),
            &format!("{prefix} does not exist on {rev}"),
        );
    }
    let all: Vec<serde_json::Value> = entries.into_values().collect();
    let start: usize = query_param(r.query.as_deref(), "cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let end = (start + s.page_size).min(all.len());
    let page = all.get(start..end).unwrap_or_default().to_vec();
    let mut resp = json(&serde_json::Value::Array(page));
    if end < all.len() {
        let hub = s.hub_addr.map(|a| a.to_string()).unwrap_or_default();
        let mut q: Vec<String> = r
            .query
            .as_deref()
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("cursor="))
            .map(str::to_owned)
            .collect();
        q.push(format!("cursor={end}"));
        let link = format!("<http://{hub}{}?{}>; rel=\"next\"", r.path, q.join("&"));
        resp.headers_mut().insert(
            header::LINK,
            HeaderValue::from_str(&link).expect("link header"),
        );
    }
    resp
}

fn resolve(
    s: &Emu,
    repo: &StoredRepo,
    rev: &str,
    path: &str,
    token: Option<&str>,
    r: &Req,
) -> Response {
    let (commit, files) = match resolve_rev(repo, rev) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    if let Access::Denied(resp) = check_download(s, &repo.repo, token) {
        return resp;
    }
    let Some(f) = files.iter().find(|f| f.path == path) else {
        return error(
            StatusCode::NOT_FOUND,
            Some("EntryNotFound"),
            &format!("{path} does not exist on {rev}"),
        );
    };
    if f.lfs {
        let cdn = s.cdn_addr.map(|a| a.to_string()).unwrap_or_default();
        let location = format!(
            "http://{cdn}/repos/{}/{}?X-Amz-Signature=deadbeef&X-Amz-Expires=3600",
            &commit[..8],
            f.sha256()
        );
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, location)
            .header("x-linked-etag", format!("\"{}\"", f.sha256()))
            .header("x-linked-size", f.content.len())
            .header("x-repo-commit", commit)
            .header(header::ETAG, format!("\"{}\"", f.oid()))
            .body(Body::empty())
            .expect("response");
    }
    let public = !repo.repo.private && repo.repo.gated.is_none();
    if public {
        let location = format!(
            "/api/resolve-cache/models/{}/{commit}/{}?%2F{}%2Fresolve%2F{}%2F{}",
            repo.repo.id,
            encode_path(&f.path),
            repo.repo.id.replace('/', "%2F"),
            encode_path(rev).replace('/', "%2F"),
            encode_path(&f.path).replace('/', "%2F"),
        );
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, location)
            .header("x-repo-commit", commit)
            .header(header::ETAG, format!("\"{}\"", f.oid()))
            .body(Body::empty())
            .expect("response");
    }
    serve_small(s, f, commit, r)
}

fn is_text(path: &str) -> bool {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    matches!(ext, "json" | "txt" | "md" | "yaml" | "yml" | "py")
}

fn serve_small(s: &Emu, f: &FakeFile, commit: &str, r: &Req) -> Response {
    let content = bytes::Bytes::copy_from_slice(&f.content);
    let mut resp = serve_bytes(&content, r, s.gzip && is_text(&f.path), None);
    let h = resp.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{}\"", f.oid())).expect("etag"),
    );
    h.insert(
        "x-repo-commit",
        HeaderValue::from_str(commit).expect("commit"),
    );
    resp
}

/// Serves `content` honouring `Range` and (when `gzip_ok` and asked) gzip, chunked.
fn serve_bytes(
    content: &bytes::Bytes,
    r: &Req,
    gzip_ok: bool,
    throttle: Option<(usize, std::time::Duration)>,
) -> Response {
    let len = content.len() as u64;
    if let Some(range) = r.range() {
        let parsed = range.strip_prefix("bytes=").and_then(|spec| {
            let (a, b) = spec.split_once('-')?;
            let start: u64 = a.trim().parse().ok()?;
            let end: Option<u64> = if b.trim().is_empty() {
                None
            } else {
                Some(b.trim().parse().ok()?)
            };
            Some((start, end))
        });
        let Some((start, end)) = parsed else {
            return text(StatusCode::BAD_REQUEST, "bad range");
        };
        if start >= len {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .expect("response");
        }
        let end = end.map_or(len - 1, |e| e.min(len - 1));
        let slice = content.slice(start as usize..=end as usize);
        return Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))
            .header(header::CONTENT_LENGTH, slice.len())
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body_of(slice, throttle))
            .expect("response");
    }
    if gzip_ok && r.accepts_gzip() && r.method != Method::HEAD {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(content).expect("gzip");
        let gz = enc.finish().expect("gzip");
        // Two chunks and no length: the Hub's text answers are chunked.
        let mid = gz.len() / 2;
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(gz[..mid].to_vec()), Ok(gz[mid..].to_vec())];
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_ENCODING, "gzip")
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(header::ACCEPT_RANGES, "bytes")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .expect("response");
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(if r.method == Method::HEAD {
            Body::empty()
        } else {
            body_of(content.clone(), throttle)
        })
        .expect("response")
}

/// A body, sent whole or (throttled) a chunk at a time.
fn body_of(bytes: bytes::Bytes, throttle: Option<(usize, std::time::Duration)>) -> Body {
    let Some((chunk, delay)) = throttle else {
        return Body::from(bytes);
    };
    let chunks: Vec<bytes::Bytes> = (0..bytes.len())
        .step_by(chunk)
        .map(|at| bytes.slice(at..(at + chunk).min(bytes.len())))
        .collect();
    let stream = futures_util::stream::unfold(
        (chunks.into_iter(), true),
        move |(mut it, first)| async move {
            let next = it.next()?;
            if !first {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, std::io::Error>(next), (it, false)))
        },
    );
    Body::from_stream(stream)
}

fn route_cdn(st: &Shared, r: &Req) -> Response {
    let s = lock(st);
    let segs: Vec<String> = r
        .path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    match segs.first().map(String::as_str) {
        Some("repos") if segs.len() == 3 => {
            let sha = &segs[2];
            let Some(content) = s.blobs.get(sha) else {
                return text(StatusCode::NOT_FOUND, "NoSuchKey");
            };
            let mut body = content.clone();
            if s.corrupt.contains(sha) && !body.is_empty() {
                let mut bad = body.to_vec();
                let i = bad.len() / 2;
                bad[i] ^= 0xff;
                body = bytes::Bytes::from(bad);
            }
            let mut resp = serve_bytes(&body, r, false, s.throttle);
            // A CDN ETag: not the sha256.
            let etag = format!("\"cdn-{}\"", &git_sha1(sha.as_bytes())[..16]);
            resp.headers_mut()
                .insert(header::ETAG, HeaderValue::from_str(&etag).expect("etag"));
            resp
        }
        Some("storage") if segs.len() == 2 => {
            let Some(d) = s.url_downloads.get(&segs[1]) else {
                return text(StatusCode::NOT_FOUND, "NoSuchKey");
            };
            let mut resp = serve_bytes(&d.content, r, false, s.throttle);
            resp.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{}\"", d.filename))
                    .expect("content-disposition"),
            );
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "NoSuchKey"),
    }
}
