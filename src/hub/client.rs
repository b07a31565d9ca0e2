//! The Hugging Face Hub HTTP client: model info, the file tree, resolve URLs and file heads,
//! honouring hub-protocol.md (redirects, headers, error codes, rate limits).
//!
//! Redirects are followed by hand, never by reqwest, so that the token goes only to the
//! endpoint's own origin and so that [`HubClient::file_head`] can read `X-Linked-Etag` from the
//! LFS `302` itself instead of from the CDN.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode, Url};

use crate::retry::{Class, Classify, FailureKind, RetryPolicy, RetryState, parse_retry_after};

use super::cache::{MetadataCache, MetadataRun};
use super::info::{ModelInfo, RepoFile, WireError, tree_page_from_wire};
use super::metadata::HuggingFaceMetadata;
use super::paths::{UnsafePath, repo_path_to_local, validate_repo_path};
use super::select::{FileFilter, SelectError, SelectedFile, select_files};
use super::source::HfModelSource;
use super::spec::{DownloadSpec, ExpectedHash};
use super::token::{DEFAULT_ENDPOINT, HubEnv, ResolvedToken, TokenSource};

/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 10;
/// Tree pages followed before giving up (a million files at 1000 a page… and then some).
const MAX_TREE_PAGES: usize = 10_000;

/// A failed Hub operation. Messages name the repo, revision and file, never the token.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// `HF_HUB_OFFLINE` is set.
    #[error(
        "offline mode (HF_HUB_OFFLINE) is on: cannot {action}; only files already on this machine can be used"
    )]
    Offline {
        /// What was attempted.
        action: String,
    },
    /// An endpoint that is not an http(s) URL.
    #[error("invalid Hub endpoint `{value}` (from {origin}): {reason}")]
    BadEndpoint {
        /// The value.
        value: String,
        /// `settings.hf_endpoint` or `HF_ENDPOINT`.
        origin: &'static str,
        /// Why.
        reason: String,
    },
    /// A repo id that cannot be one.
    #[error("invalid repo id `{repo}`: {reason}")]
    BadRepoId {
        /// The id.
        repo: String,
        /// Why.
        reason: &'static str,
    },
    /// 401/404 `RepoNotFound`: missing, or private and the token (if any) has no access.
    #[error(
        "repository `{repo}` not found on {endpoint}, or it is private and needs a token with access ({auth})"
    )]
    RepoNotFound {
        /// The repo.
        repo: String,
        /// The Hub.
        endpoint: String,
        /// 401 or 404.
        status: u16,
        /// Which token was sent, or which sources were tried.
        auth: String,
    },
    /// 404 `RevisionNotFound`.
    #[error("repository `{repo}` has no revision `{revision}`")]
    RevisionNotFound {
        /// The repo.
        repo: String,
        /// The revision.
        revision: String,
    },
    /// 404 `EntryNotFound`.
    #[error("`{repo}` at revision `{revision}` has no file `{path}`")]
    EntryNotFound {
        /// The repo.
        repo: String,
        /// The revision.
        revision: String,
        /// The file.
        path: String,
    },
    /// 401/403 `GatedRepo`.
    #[error(
        "`{repo}` is a gated repository and downloading `{path}` at `{revision}` was refused (HTTP {status}): {auth}; {hint}"
    )]
    Gated {
        /// The repo.
        repo: String,
        /// The revision.
        revision: String,
        /// The file.
        path: String,
        /// 401 (no token) or 403 (token without access).
        status: u16,
        /// Which token was sent, or which sources were tried.
        auth: String,
        /// What to do.
        hint: String,
    },
    /// Another 401/403.
    #[error("access to `{repo}` refused with HTTP {status} ({auth}): {message}")]
    Unauthorized {
        /// The repo.
        repo: String,
        /// 401 or 403.
        status: u16,
        /// Which token was sent, or which sources were tried.
        auth: String,
        /// The server's message.
        message: String,
    },
    /// 429 after every retry.
    #[error(
        "rate limited by {url} (HTTP 429) after {attempts} attempt{}{}",
        if *attempts == 1 { "" } else { "s" },
        wait_hint(*retry_after)
    )]
    RateLimited {
        /// The URL (no query).
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Any other HTTP failure.
    #[error("HTTP {status} from {url}: {message}")]
    Http {
        /// The URL (no query).
        url: String,
        /// Status code.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The connection failed.
    #[error("request to {url} failed")]
    Network {
        /// The URL (no query).
        url: String,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx answer that does not make sense.
    #[error("unexpected answer from {url}: {reason}")]
    BadResponse {
        /// The URL (no query).
        url: String,
        /// Why.
        reason: String,
    },
    /// Redirect loop.
    #[error("too many redirects starting at {url}")]
    TooManyRedirects {
        /// The first URL (no query).
        url: String,
    },
    /// A hostile file path.
    #[error(transparent)]
    UnsafePath(#[from] UnsafePath),
    /// No selection possible.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// The HTTP client could not be built.
    #[error("cannot create the HTTP client")]
    Client(#[source] reqwest::Error),
}

fn wait_hint(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |d| {
        format!(
            "; the server asks to wait {}",
            crate::units::HumanDuration(d)
        )
    })
}

impl Classify for HubError {
    fn classify(&self) -> Class {
        match self {
            Self::RepoNotFound { status, .. } => Class {
                kind: FailureKind::NotFound,
                http_status: Some(*status),
                retry_after: None,
            },
            Self::RevisionNotFound { .. } | Self::EntryNotFound { .. } => Class {
                kind: FailureKind::NotFound,
                http_status: Some(404),
                retry_after: None,
            },
            Self::Gated { status, .. } | Self::Unauthorized { status, .. } => {
                Class::status(*status, None)
            }
            Self::RateLimited { retry_after, .. } => Class::status(429, *retry_after),
            Self::Http { status, .. } => Class::status(*status, None),
            Self::Network { source, .. } => Class::of(transport_kind(source)),
            Self::BadResponse { .. } | Self::TooManyRedirects { .. } => {
                Class::of(FailureKind::Http)
            }
            Self::BadEndpoint { .. }
            | Self::BadRepoId { .. }
            | Self::UnsafePath(_)
            | Self::Select(_) => Class::of(FailureKind::Invalid),
            Self::Offline { .. } | Self::Client(_) => Class::of(FailureKind::Other),
        }
    }
}

/// A refused, reset or timed-out connection passes like a 503; other transport errors do not.
fn transport_kind(e: &reqwest::Error) -> FailureKind {
    if e.is_timeout() {
        FailureKind::Timeout
    } else if e.is_connect() {
        FailureKind::Connection
    } else {
        FailureKind::Other
    }
}

/// The client's settings.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The Hub's base URL (may carry a path prefix for mirrors).
    pub endpoint: Url,
    /// `HF_HUB_OFFLINE`: every network method fails with [`HubError::Offline`].
    pub offline: bool,
    /// Retries after a 429, 408, 5xx (not 501/505) or a failed connection (then the error is
    /// returned).
    pub max_retries: u32,
    /// Longest wait between two attempts (backoff or `Retry-After`). A 429 asking for longer
    /// ends the retries at once: [`HubError::RateLimited`] carries the server's wait.
    pub max_retry_wait: Duration,
    /// First backoff after a 5xx (doubles each time).
    pub retry_base_delay: Duration,
    /// Per-request timeout for API calls.
    pub timeout: Duration,
    /// The User-Agent.
    pub user_agent: String,
}

impl HubOptions {
    /// Defaults for `endpoint`.
    pub fn new(endpoint: Url) -> Self {
        Self {
            endpoint,
            offline: false,
            max_retries: 4,
            max_retry_wait: Duration::from_mins(1),
            retry_base_delay: Duration::from_millis(250),
            timeout: Duration::from_mins(1),
            user_agent: format!("modelsync/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// What a `HEAD` on a resolve URL says, read from the first answer that is not a same-host
/// redirect (for LFS files: the `302` to the CDN itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHead {
    /// `ETag` of that answer (quotes and `W/` removed). For regular files, the git blob sha1.
    pub etag: Option<String>,
    /// `X-Linked-Etag`: the sha256 of an LFS file's content.
    pub linked_etag: Option<String>,
    /// `X-Linked-Size`: an LFS file's size.
    pub linked_size: Option<u64>,
    /// The size: `X-Linked-Size`, else `Content-Length`.
    pub size: Option<u64>,
    /// `X-Repo-Commit`: the commit the revision resolved to.
    pub repo_commit: Option<String>,
    /// Served from LFS (through the CDN).
    pub is_lfs: bool,
    /// Where the bytes are: the CDN URL for LFS files, else the final URL on the Hub host.
    pub location: Url,
}

impl FileHead {
    /// The content hash the headers promise: sha256 for LFS, git sha1 for regular files.
    pub fn expected_hash(&self) -> Option<ExpectedHash> {
        if let Some(l) = &self.linked_etag {
            return is_hex(l, 64).then(|| ExpectedHash::Sha256(l.to_ascii_lowercase()));
        }
        self.etag
            .as_ref()
            .filter(|e| is_hex(e, 40))
            .map(|e| ExpectedHash::GitBlobSha1(e.to_ascii_lowercase()))
    }
}

/// Everything the install service needs to fetch an HF source: the resolved commit, the chosen
/// files and their download specs, and the metadata for the record.
#[derive(Debug, Clone)]
pub struct RepoPlan {
    /// The model info at the requested revision.
    pub info: ModelInfo,
    /// The canonical repo id (the Hub's spelling).
    pub repo_id: String,
    /// The commit every file comes from.
    pub commit: String,
    /// The selected files.
    pub files: Vec<SelectedFile>,
    /// One spec per selected file, same order.
    pub downloads: Vec<DownloadSpec>,
    /// For the record's `source_api_response` (tags go to the record too).
    pub metadata: HuggingFaceMetadata,
    /// Which token will be sent.
    pub token_source: TokenSource,
}

impl RepoPlan {
    /// Total bytes to download.
    pub fn total_bytes(&self) -> u64 {
        self.downloads.iter().map(|d| d.size).sum()
    }
}

/// The Hub client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HubClient {
    http: reqwest::Client,
    opts: HubOptions,
    /// Model info and trees shared with other clients for a run ([`MetadataCache`]).
    cache: MetadataCache,
    /// The endpoint as a string without a trailing `/`.
    base: String,
}

/// The endpoint chain: `settings.hf_endpoint` → `HF_ENDPOINT` → <https://huggingface.co>.
pub fn resolve_endpoint(settings: Option<&str>, env: &HubEnv) -> Result<Url, HubError> {
    let (value, origin) = match (
        settings.map(str::trim).filter(|s| !s.is_empty()),
        &env.endpoint,
    ) {
        (Some(s), _) => (s.to_owned(), "settings.hf_endpoint"),
        (None, Some(e)) => (e.trim().to_owned(), "HF_ENDPOINT"),
        (None, None) => (DEFAULT_ENDPOINT.to_owned(), "the default"),
    };
    parse_endpoint(&value, origin)
}

fn parse_endpoint(value: &str, origin: &'static str) -> Result<Url, HubError> {
    let bad = |reason: String| HubError::BadEndpoint {
        value: value.to_owned(),
        origin,
        reason,
    };
    let url = Url::parse(value).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("not an http(s) URL".into()));
    }
    if url.host_str().is_none() {
        return Err(bad("no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(bad("must not carry a query, fragment or credentials".into()));
    }
    Ok(url)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Percent-encodes everything except RFC 3986 unreserved characters (and `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `owner/name` or `name`, with the Hub's characters.
pub fn validate_repo_id(repo: &str) -> Result<(), HubError> {
    let bad = |reason| {
        Err(HubError::BadRepoId {
            repo: repo.to_owned(),
            reason,
        })
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.is_empty() || parts.len() > 2 {
        return bad("expected `owner/name`");
    }
    for p in parts {
        if p.is_empty() || p == "." || p == ".." {
            return bad("empty or dot component");
        }
        if !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return bad("only letters, digits, `-`, `_` and `.` are allowed");
        }
    }
    Ok(())
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A URL for messages: no user info (an endpoint such as `https://user:pw@mirror` keeps its
/// password), no query (signed CDN URLs are long and not the user's business).
fn show(url: &Url) -> String {
    crate::download::names::redact_url(url)
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn clean_etag(s: &str) -> String {
    s.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

/// Where an error happened, for messages.
struct Ctx<'a> {
    repo: &'a str,
    revision: Option<&'a str>,
    path: Option<&'a str>,
    auth: &'a ResolvedToken,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// Follow every redirect (the token only to the endpoint's origin).
    All,
    /// Stop at a redirect to another origin and return it.
    SameOrigin,
}

impl HubClient {
    /// A client for `endpoint`, online, with default options.
    pub fn new(endpoint: Url) -> Result<Self, HubError> {
        Self::with_options(HubOptions::new(endpoint))
    }

    /// A client with explicit options.
    pub fn with_options(opts: HubOptions) -> Result<Self, HubError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(opts.user_agent.clone())
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(HubError::Client)?;
        let base = opts.endpoint.as_str().trim_end_matches('/').to_owned();
        Ok(Self {
            http,
            opts,
            base,
            cache: MetadataCache::new(),
        })
    }

    /// A client configured from `settings.hf_endpoint` and the environment
    /// (`HF_ENDPOINT`, `HF_HUB_OFFLINE`).
    pub fn from_env(settings_endpoint: Option<&str>, env: &HubEnv) -> Result<Self, HubError> {
        let mut opts = HubOptions::new(resolve_endpoint(settings_endpoint, env)?);
        opts.offline = env.offline;
        Self::with_options(opts)
    }

    /// The same client sharing `cache` (with the other clients given it): while a run of it
    /// is in progress ([`Self::metadata_run`]), model info and trees are fetched once.
    #[must_use]
    pub fn with_metadata_cache(mut self, cache: MetadataCache) -> Self {
        self.cache = cache;
        self
    }

    /// Starts a run of this client's metadata cache: until it is dropped, every client sharing
    /// the cache fetches a repository's info at a revision, and its tree at a commit, once.
    pub fn metadata_run(&self) -> MetadataRun {
        self.cache.run()
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Url {
        &self.opts.endpoint
    }

    /// Whether offline mode is on.
    pub fn is_offline(&self) -> bool {
        self.opts.offline
    }

    fn check_online(&self, action: impl FnOnce() -> String) -> Result<(), HubError> {
        if self.opts.offline {
            Err(HubError::Offline { action: action() })
        } else {
            Ok(())
        }
    }

    fn url(&self, path_and_query: &str) -> Result<Url, HubError> {
        let s = format!("{}{}", self.base, path_and_query);
        Url::parse(&s).map_err(|e| HubError::BadResponse {
            url: s.clone(),
            reason: format!("cannot build URL: {e}"),
        })
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{path}`. Pure: works offline.
    pub fn resolve_url(&self, repo_id: &str, revision: &str, path: &str) -> Result<Url, HubError> {
        validate_repo_id(repo_id)?;
        validate_repo_path(repo_id, path)?;
        self.url(&format!(
            "/{repo_id}/resolve/{}/{}",
            encode(revision, false),
            encode(path, true)
        ))
    }

    /// Model info at `revision` (`None`: the default branch), with blob sizes and LFS hashes.
    pub async fn model_info(
        &self,
        repo_id: &str,
        revision: Option<&str>,
        auth: &ResolvedToken,
    ) -> Result<ModelInfo, HubError> {
        self.check_online(|| format!("fetch the model info of `{repo_id}`"))?;
        validate_repo_id(repo_id)?;
        let key = MetadataCache::key(&self.base, repo_id, revision, auth);
        self.cache
            .info(key, self.fetch_model_info(repo_id, revision, auth))
            .await
    }

    async fn fetch_model_info(
        &self,
        repo_id: &str,
        revision: Option<&str>,
        auth: &ResolvedToken,
    ) -> Result<ModelInfo, HubError> {
        let url = match revision {
            Some(rev) => self.url(&format!(
                "/api/models/{repo_id}/revision/{}?blobs=true",
                encode(rev, false)
            ))?,
            None => self.url(&format!("/api/models/{repo_id}?blobs=true"))?,
        };
        let ctx = Ctx {
            repo: repo_id,
            revision,
            path: None,
            auth,
        };
        let (final_url, v) = self.get_json(&url, &ctx).await?.into_json()?;
        ModelInfo::from_wire(repo_id, &v).map_err(|e| wire_err(&final_url, e))
    }

    /// Every file of the repo at `revision` (all pages of the recursive tree).
    pub async fn list_files(
        &self,
        repo_id: &str,
        revision: &str,
        auth: &ResolvedToken,
    ) -> Result<Vec<RepoFile>, HubError> {
        self.check_online(|| format!("list the files of `{repo_id}` at `{revision}`"))?;
        validate_repo_id(repo_id)?;
        let key = MetadataCache::key(&self.base, repo_id, Some(revision), auth);
        self.cache
            .tree(key, self.fetch_files(repo_id, revision, auth))
            .await
    }

    async fn fetch_files(
        &self,
        repo_id: &str,
        revision: &str,
        auth: &ResolvedToken,
    ) -> Result<Vec<RepoFile>, HubError> {
        let mut url = self.url(&format!(
            "/api/models/{repo_id}/tree/{}?recursive=true",
            encode(revision, false)
        ))?;
        let ctx = Ctx {
            repo: repo_id,
            revision: Some(revision),
            path: None,
            auth,
        };
        let mut files = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..MAX_TREE_PAGES {
            seen.insert(url.to_string());
            let page = self.get_json(&url, &ctx).await?;
            let next = next_link(&page.headers, &page.url);
            let (page_url, v) = page.into_json()?;
            files.extend(tree_page_from_wire(repo_id, &v).map_err(|e| wire_err(&page_url, e))?);
            let Some(next) = next else {
                return Ok(files);
            };
            // A next page elsewhere would get our token; a repeated one would never end.
            if !same_origin(&next, &self.opts.endpoint) {
                return Err(HubError::BadResponse {
                    url: show(&page_url),
                    reason: format!("next tree page on another host: {}", show(&next)),
                });
            }
            if seen.contains(next.as_str()) {
                return Err(HubError::BadResponse {
                    url: show(&page_url),
                    reason: "the tree's pages loop".into(),
                });
            }
            url = next;
        }
        Err(HubError::BadResponse {
            url: show(&url),
            reason: format!("more than {MAX_TREE_PAGES} tree pages"),
        })
    }

    /// `HEAD` on the resolve URL: the file's hash, size and commit, read from the first answer
    /// that is not a redirect on the Hub host (for LFS: the `302` itself, never the CDN's).
    pub async fn file_head(
        &self,
        repo_id: &str,
        revision: &str,
        path: &str,
        auth: &ResolvedToken,
    ) -> Result<FileHead, HubError> {
        self.check_online(|| format!("look up `{path}` of `{repo_id}` at `{revision}`"))?;
        let url = self.resolve_url(repo_id, revision, path)?;
        let ctx = Ctx {
            repo: repo_id,
            revision: Some(revision),
            path: Some(path),
            auth,
        };
        let (final_url, resp) = self
            .request(Method::HEAD, &url, &ctx, Follow::SameOrigin)
            .await?;
        let h = resp.headers();
        let status = resp.status();
        let linked_etag = header_str(h, "x-linked-etag").map(|e| clean_etag(&e));
        let linked_size = header_str(h, "x-linked-size").and_then(|s| s.parse().ok());
        let location = if status.is_redirection() {
            let loc = header_str(h, "location").ok_or_else(|| HubError::BadResponse {
                url: show(&final_url),
                reason: format!("HTTP {status} without a Location"),
            })?;
            final_url.join(&loc).map_err(|e| HubError::BadResponse {
                url: show(&final_url),
                reason: format!("bad Location: {e}"),
            })?
        } else {
            final_url.clone()
        };
        let content_length = header_str(h, "content-length").and_then(|s| s.parse().ok());
        Ok(FileHead {
            etag: header_str(h, "etag").map(|e| clean_etag(&e)),
            is_lfs: linked_etag.is_some(),
            linked_etag,
            linked_size,
            size: linked_size.or(if status.is_redirection() {
                None
            } else {
                content_length
            }),
            repo_commit: header_str(h, "x-repo-commit"),
            location,
        })
    }

    /// The download spec of a selected file at `commit`: the resolve URL, the destination,
    /// the size and the hash to verify (LFS: sha256; others: git blob sha1). Pure.
    pub fn download_spec(
        &self,
        repo_id: &str,
        commit: &str,
        file: &SelectedFile,
        auth: &ResolvedToken,
    ) -> Result<DownloadSpec, HubError> {
        let url = self.resolve_url(repo_id, commit, &file.file.path)?;
        let dest = repo_path_to_local(repo_id, &file.dest)?;
        let expected = match &file.file.lfs {
            Some(l) => ExpectedHash::Sha256(l.sha256.clone()),
            None => ExpectedHash::GitBlobSha1(file.file.oid.clone()),
        };
        Ok(DownloadSpec {
            url,
            repo_id: repo_id.to_owned(),
            repo_path: file.file.path.clone(),
            dest,
            size: file.file.size,
            expected,
            access_token: auth.token.clone(),
        })
    }

    /// Resolves an HF source into a [`RepoPlan`]: info at the revision → commit → tree at that
    /// commit → selection → specs → metadata. For a gated repo, one `HEAD` checks the token
    /// first, so a refusal names the token sources before anything is downloaded.
    pub async fn plan_source(
        &self,
        src: &HfModelSource,
        filter: &FileFilter,
        auth: &ResolvedToken,
    ) -> Result<RepoPlan, HubError> {
        let info = self
            .model_info(&src.repo_id, src.revision.as_deref(), auth)
            .await?;
        let repo_id = info.id.clone();
        validate_repo_id(&repo_id)?;
        let commit =
            info.sha
                .clone()
                .filter(|s| is_hex(s, 40))
                .ok_or_else(|| HubError::BadResponse {
                    url: format!("{}/api/models/{}", self.base, src.repo_id),
                    reason: "the model info has no commit sha".into(),
                })?;
        let listing = self.list_files(&repo_id, &commit, auth).await?;
        let files = select_files(&repo_id, &listing, filter)?;
        if (info.gated.is_gated() || info.private)
            && let Some(first) = files.first()
        {
            self.file_head(&repo_id, &commit, &first.file.path, auth)
                .await?;
        }
        let downloads = files
            .iter()
            .map(|f| self.download_spec(&repo_id, &commit, f, auth))
            .collect::<Result<Vec<_>, _>>()?;
        let metadata = HuggingFaceMetadata::from_info(&info, &downloads);
        Ok(RepoPlan {
            info,
            repo_id,
            commit,
            files,
            downloads,
            metadata,
            token_source: auth.source.clone(),
        })
    }

    /// Turns an HTTP failure seen while downloading `spec` (by the download queue) into the
    /// same error the client would give: `status`, the `X-Error-Code` header and the body.
    pub fn download_error(
        &self,
        spec: &DownloadSpec,
        auth: &ResolvedToken,
        status: u16,
        error_code: Option<&str>,
        body: &str,
    ) -> HubError {
        let rev = revision_of_resolve_url(&spec.url);
        let ctx = Ctx {
            repo: &spec.repo_id,
            revision: Some(&rev),
            path: Some(&spec.repo_path),
            auth,
        };
        self.map_error(&spec.url, status, error_code, body, &ctx)
    }

    async fn get_json(&self, url: &Url, ctx: &Ctx<'_>) -> Result<JsonPage, HubError> {
        let (final_url, resp) = self.request(Method::GET, url, ctx, Follow::All).await?;
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| HubError::Network {
            url: show(&final_url),
            source: e,
        })?;
        Ok(JsonPage {
            url: final_url,
            headers,
            body: body.to_vec(),
        })
    }

    /// Sends with redirects handled by hand and maps non-2xx answers to errors. With
    /// [`Follow::SameOrigin`], a redirect to another origin is returned as the answer.
    async fn request(
        &self,
        method: Method,
        url: &Url,
        ctx: &Ctx<'_>,
        follow: Follow,
    ) -> Result<(Url, reqwest::Response), HubError> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.send_retrying(&method, &url, ctx).await?;
            let status = resp.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let loc = header_str(resp.headers(), "location").ok_or_else(|| {
                    HubError::BadResponse {
                        url: show(&url),
                        reason: format!("HTTP {status} without a Location"),
                    }
                })?;
                let next = url.join(&loc).map_err(|e| HubError::BadResponse {
                    url: show(&url),
                    reason: format!("bad Location `{loc}`: {e}"),
                })?;
                if follow == Follow::SameOrigin && !same_origin(&next, &url) {
                    return Ok((url, resp));
                }
                url = next;
                continue;
            }
            if status.is_success() {
                return Ok((url, resp));
            }
            let headers = resp.headers().clone();
            let code = header_str(&headers, "x-error-code");
            let body = resp.text().await.unwrap_or_default();
            return Err(self.map_error(&url, status.as_u16(), code.as_deref(), &body, ctx));
        }
        Err(HubError::TooManyRedirects { url: show(&url) })
    }

    /// One request, retried as [`crate::retry`] classifies (connection failures, 408, 429,
    /// the 5xx that pass) with backoff and `Retry-After`, at most `max_retries` times.
    async fn send_retrying(
        &self,
        method: &Method,
        url: &Url,
        ctx: &Ctx<'_>,
    ) -> Result<reqwest::Response, HubError> {
        let policy = RetryPolicy {
            max_attempts: self.opts.max_retries.saturating_add(1),
            initial_backoff: self.opts.retry_base_delay,
            max_backoff: self.opts.max_retry_wait,
            max_retry_after: self.opts.max_retry_wait,
        };
        let mut retry = RetryState::new(&policy);
        loop {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .timeout(self.opts.timeout);
            if *method == Method::HEAD {
                // The Hub's sizes are of the raw bytes; a compressed answer would lie about them.
                req = req.header(header::ACCEPT_ENCODING, "identity");
            }
            // The token goes to the Hub's own origin only: never to a CDN or any other host.
            if let Some(t) = &ctx.auth.token
                && same_origin(url, &self.opts.endpoint)
            {
                req = req.bearer_auth(t.expose());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    if transport_kind(&e).is_retryable()
                        && let Some(wait) = retry.next_delay(None)
                    {
                        tracing::debug!(?wait, "retrying {}: {}", show(url), e.without_url());
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(HubError::Network {
                        url: show(url),
                        source: e.without_url(),
                    });
                }
            };
            let status = resp.status();
            if !FailureKind::of_status(status.as_u16()).is_retryable() {
                return Ok(resp);
            }
            let retry_after = header_str(resp.headers(), "retry-after")
                .and_then(|v| parse_retry_after(&v, std::time::SystemTime::now()));
            // A Hub that asks for a longer pause than we wait inline gets it: the call fails
            // now with the server's wait, which watch's backoff honours, instead of asking
            // again early and again.
            let too_long = status == StatusCode::TOO_MANY_REQUESTS
                && retry_after.is_some_and(|d| d > self.opts.max_retry_wait);
            let next = retry.next_delay(retry_after).filter(|_| !too_long);
            let Some(wait) = next else {
                if status == StatusCode::TOO_MANY_REQUESTS {
                    return Err(HubError::RateLimited {
                        url: show(url),
                        attempts: retry.failures(),
                        retry_after,
                    });
                }
                return Ok(resp);
            };
            drop(resp);
            tokio::time::sleep(wait).await;
        }
    }

    fn map_error(
        &self,
        url: &Url,
        status: u16,
        code: Option<&str>,
        body: &str,
        ctx: &Ctx<'_>,
    ) -> HubError {
        let message = server_message(body);
        let revision = ctx.revision.unwrap_or("main").to_owned();
        let auth = ctx.auth.describe();
        match (status, code) {
            (401 | 403 | 404, Some("RepoNotFound")) => HubError::RepoNotFound {
                repo: ctx.repo.to_owned(),
                endpoint: self.base.clone(),
                status,
                auth,
            },
            (_, Some("RevisionNotFound")) => HubError::RevisionNotFound {
                repo: ctx.repo.to_owned(),
                revision,
            },
            (_, Some("EntryNotFound")) => HubError::EntryNotFound {
                repo: ctx.repo.to_owned(),
                revision,
                path: ctx.path.unwrap_or_default().to_owned(),
            },
            (401 | 403, Some("GatedRepo")) => {
                let page = format!("{}/{}", self.base, ctx.repo);
                let hint = if ctx.auth.token.is_some() {
                    format!(
                        "that token has not been granted access: accept the conditions at {page} with its account, or use another token"
                    )
                } else {
                    format!(
                        "accept the conditions at {page}, then provide a token (the entry's `token:`, HF_TOKEN, or `hf auth login`)"
                    )
                };
                HubError::Gated {
                    repo: ctx.repo.to_owned(),
                    revision,
                    path: ctx.path.unwrap_or_default().to_owned(),
                    status,
                    auth,
                    hint,
                }
            }
            (401 | 403, _) => HubError::Unauthorized {
                repo: ctx.repo.to_owned(),
                status,
                auth,
                message,
            },
            (404, None) if ctx.path.is_some() => HubError::EntryNotFound {
                repo: ctx.repo.to_owned(),
                revision,
                path: ctx.path.unwrap_or_default().to_owned(),
            },
            _ => HubError::Http {
                url: show(url),
                status,
                message,
            },
        }
    }
}

fn revision_of_resolve_url(url: &Url) -> String {
    let segs: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    segs.iter()
        .position(|s| *s == "resolve")
        .and_then(|i| segs.get(i + 1))
        .map(|s| percent_decode(s))
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    fn hex_val(b: u8) -> Option<u8> {
        char::from(b).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex_val),
                bytes.get(i + 2).copied().and_then(hex_val),
            )
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct JsonPage {
    url: Url,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl JsonPage {
    fn into_json(self) -> Result<(Url, serde_json::Value), HubError> {
        let v = serde_json::from_slice(&self.body).map_err(|e| HubError::BadResponse {
            url: show(&self.url),
            reason: format!("invalid JSON: {e}"),
        })?;
        Ok((self.url, v))
    }
}

fn wire_err(url: &Url, e: WireError) -> HubError {
    match e {
        WireError::UnsafePath(p) => HubError::UnsafePath(p),
        WireError::Shape(reason) => HubError::BadResponse {
            url: show(url),
            reason,
        },
    }
}

/// `{"error": "…"}` or the body's start.
fn server_message(body: &str) -> String {
    let msg = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    let mut msg: String = msg.chars().take(300).collect();
    if msg.is_empty() {
        msg = "(no message)".into();
    }
    msg
}

/// The `rel="next"` target of a `Link` header, resolved against the page's URL.
fn next_link(h: &HeaderMap, base: &Url) -> Option<Url> {
    for v in h.get_all(header::LINK) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            let is_next = pieces.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next && let Some(t) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
                return base.join(t).ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_chain() {
        let env = HubEnv {
            endpoint: Some("http://mirror.invalid/hf/".into()),
            ..HubEnv::empty()
        };
        assert_eq!(
            resolve_endpoint(Some("http://settings.invalid"), &env)
                .unwrap()
                .as_str(),
            "http://settings.invalid/"
        );
        assert_eq!(
            resolve_endpoint(None, &env).unwrap().as_str(),
            "http://mirror.invalid/hf/"
        );
        assert_eq!(
            resolve_endpoint(None, &HubEnv::empty()).unwrap().as_str(),
            "https://huggingface.co/"
        );
        let e = resolve_endpoint(Some("ftp://x"), &env).unwrap_err();
        assert!(e.to_string().contains("settings.hf_endpoint"), "{e}");
        // A mirror's path prefix is kept.
        let c = HubClient::new(resolve_endpoint(None, &env).unwrap()).unwrap();
        assert_eq!(
            c.resolve_url("o/n", "refs/pr/1", "unet/a b.json")
                .unwrap()
                .as_str(),
            "http://mirror.invalid/hf/o/n/resolve/refs%2Fpr%2F1/unet/a%20b.json"
        );
        assert!(c.resolve_url("o/n", "main", "../x").is_err());
        assert!(c.resolve_url("o/../n", "main", "x").is_err());
    }

    #[test]
    fn link_header() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            "<https://hub.invalid/api/models/o/n/tree/main?recursive=true&cursor=abc>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        let base = Url::parse("https://hub.invalid/api/models/o/n/tree/main").unwrap();
        assert_eq!(
            next_link(&h, &base).unwrap().query(),
            Some("recursive=true&cursor=abc")
        );
        assert!(next_link(&HeaderMap::new(), &base).is_none());
    }

    #[test]
    fn resolve_url_revision_round_trip() {
        let c = HubClient::new(Url::parse("http://h.invalid").unwrap()).unwrap();
        let u = c.resolve_url("o/n", "refs/pr/1", "x.json").unwrap();
        assert_eq!(revision_of_resolve_url(&u), "refs/pr/1");
    }

    #[tokio::test]
    async fn offline_refuses_every_network_call() {
        let mut o = HubOptions::new(Url::parse("http://127.0.0.1:9").unwrap());
        o.offline = true;
        let c = HubClient::with_options(o).unwrap();
        let a = ResolvedToken::anonymous();
        let e = c.model_info("o/n", None, &a).await.unwrap_err();
        assert!(
            matches!(e, HubError::Offline { .. }) && e.to_string().contains("o/n"),
            "{e}"
        );
        assert!(matches!(
            c.list_files("o/n", "main", &a).await,
            Err(HubError::Offline { .. })
        ));
        assert!(matches!(
            c.file_head("o/n", "main", "x", &a).await,
            Err(HubError::Offline { .. })
        ));
        // Pure helpers still work.
        c.resolve_url("o/n", "main", "x").unwrap();
    }
}
