//! The registry HTTP API (distribution spec v2) on the project's reqwest: manifests and blobs
//! (`GET`/`HEAD`, `Range`), the auth challenge (anonymous, `Basic`, `Bearer` token service)
//! and retries under [`crate::retry`]. Big blobs are not read here: [`RegistryClient::blob_download`]
//! hands the download queue a URL and an `Authorization` value, so they are fetched, resumed and
//! verified like any other download.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use sha2::Digest as _;

use super::OciError;
use super::auth::{Challenge, Credentials, parse_challenge};
use super::manifest::{ACCEPT_MANIFESTS, Descriptor, Fetched, MAX_MANIFEST_BYTES};
use super::reference::OciReference;
use crate::download::AccessToken;
use crate::retry::{FailureKind, RetryPolicy, RetryState, parse_retry_after};

/// Largest token-service answer read.
const MAX_TOKEN_BYTES: u64 = 1 << 20;
/// How much of an error body goes into a message.
const MAX_ERROR_BODY: u64 = 16 << 10;

/// One registry's settings (`settings.registries.HOST`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Plain HTTP instead of https (a test or in-cluster registry).
    pub insecure: bool,
}

/// Settings per registry host (`host` or `host:port`, lowercase).
pub type Registries = BTreeMap<String, RegistrySettings>;

/// What a request asks of the repository: the token scope's actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `pull`.
    Pull,
    /// `pull,push`.
    Push,
}

impl Access {
    fn actions(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "pull,push",
        }
    }
}

/// A manifest as the registry sent it, verified against its digest.
#[derive(Debug, Clone)]
pub struct ManifestBody {
    /// `sha256:` of the body.
    pub digest: String,
    /// The `Content-Type`.
    pub media_type: Option<String>,
    /// The bytes.
    pub bytes: Bytes,
    /// Parsed.
    pub parsed: Fetched,
}

/// A client for any number of registries. Cheap to clone? No: share it behind an `Arc`; it
/// caches the `Authorization` each repository settled on.
#[derive(Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    registries: Registries,
    retry: RetryPolicy,
    timeout: Duration,
    /// (registry, repository, access) → the `Authorization` value that worked.
    auth: Mutex<HashMap<(String, String, Access), Option<String>>>,
}

impl RegistryClient {
    /// A client with its own reqwest client (redirects followed by reqwest, which drops
    /// `Authorization` when one leaves the host).
    pub fn new(registries: Registries) -> Result<Self, OciError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(10))
            .user_agent(concat!("modelsync/", env!("CARGO_PKG_VERSION")))
            .no_gzip()
            .build()
            .map_err(|e| OciError::Setup(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            registries,
            retry: RetryPolicy::default(),
            timeout: Duration::from_mins(2),
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// The same client under another retry budget.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The settings it was made with.
    pub fn registries(&self) -> &Registries {
        &self.registries
    }

    /// `https://HOST/v2/` (`http://` for an insecure registry).
    pub fn base_url(&self, registry: &str) -> Result<Url, OciError> {
        let insecure = self
            .registries
            .get(&registry.to_ascii_lowercase())
            .is_some_and(|s| s.insecure);
        let scheme = if insecure { "http" } else { "https" };
        Url::parse(&format!("{scheme}://{registry}/v2/"))
            .map_err(|e| OciError::Setup(format!("registry `{registry}`: {e}")))
    }

    /// `…/v2/REPO/manifests/REF`.
    pub fn manifest_url(&self, r: &OciReference, target: &str) -> Result<Url, OciError> {
        self.repo_url(r, &format!("manifests/{target}"))
    }

    /// `…/v2/REPO/blobs/DIGEST`.
    pub fn blob_url(&self, r: &OciReference, digest: &str) -> Result<Url, OciError> {
        self.repo_url(r, &format!("blobs/{digest}"))
    }

    /// `…/v2/REPO/PATH` (`PATH` such as `blobs/uploads/`).
    pub fn repo_url(&self, r: &OciReference, path: &str) -> Result<Url, OciError> {
        let base = self.base_url(&r.registry)?;
        base.join(&format!("{}/{path}", r.repository))
            .map_err(|e| OciError::Setup(format!("{r}: {e}")))
    }

    /// GETs the manifest `r` names (its digest, else its tag), capped at
    /// [`MAX_MANIFEST_BYTES`] and checked against the digest asked for.
    pub async fn get_manifest(
        &self,
        r: &OciReference,
        creds: Option<&Credentials>,
    ) -> Result<ManifestBody, OciError> {
        let target = r.target().to_owned();
        let url = self.manifest_url(r, &target)?;
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS));
        let resp = self
            .send(r, Access::Pull, creds, Method::GET, &url, &headers, None)
            .await?;
        let resp = expect_ok(resp, &url, || r.to_string()).await?;
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = read_capped(resp, MAX_MANIFEST_BYTES, &url, "manifest").await?;
        let digest = sha256_digest(&bytes);
        if target.starts_with("sha256:") && digest != target {
            return Err(OciError::DigestMismatch {
                what: format!("the manifest of {r}"),
                expected: target,
                got: digest,
            });
        }
        let parsed = Fetched::parse(media_type.as_deref(), &bytes, &r.to_string())?;
        Ok(ManifestBody {
            digest,
            media_type,
            bytes,
            parsed,
        })
    }

    /// HEADs a manifest: its descriptor (digest from `Docker-Content-Digest`), or `None` when
    /// the registry does not have it. `diff --refresh` asks this to see whether a tag moved.
    pub async fn head_manifest(
        &self,
        r: &OciReference,
        creds: Option<&Credentials>,
    ) -> Result<Option<Descriptor>, OciError> {
        let url = self.manifest_url(r, r.target())?;
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS));
        let resp = self
            .send(r, Access::Pull, creds, Method::HEAD, &url, &headers, None)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = expect_ok(resp, &url, || r.to_string()).await?;
        let h = resp.headers();
        let digest = h
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(digest) = digest else {
            // Some registries omit the header on HEAD: the body's digest is the answer.
            let m = self.get_manifest(r, creds).await?;
            return Ok(Some(Descriptor::new(
                m.media_type.unwrap_or_default(),
                m.digest,
                m.bytes.len() as u64,
            )));
        };
        let media = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Some(Descriptor::new(
            media,
            digest,
            resp.content_length().unwrap_or(0),
        )))
    }

    /// HEADs a blob: its size, or `None` when the repository does not have it.
    pub async fn head_blob(
        &self,
        r: &OciReference,
        digest: &str,
        access: Access,
        creds: Option<&Credentials>,
    ) -> Result<Option<u64>, OciError> {
        let url = self.blob_url(r, digest)?;
        let resp = self
            .send(
                r,
                access,
                creds,
                Method::HEAD,
                &url,
                &HeaderMap::new(),
                None,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = expect_ok(resp, &url, || format!("{r} blob {digest}")).await?;
        Ok(Some(resp.content_length().unwrap_or(0)))
    }

    /// GETs a small blob (a config) whole, at most `cap` bytes, checked against `digest`.
    pub async fn get_blob(
        &self,
        r: &OciReference,
        digest: &str,
        cap: u64,
        creds: Option<&Credentials>,
    ) -> Result<Bytes, OciError> {
        let url = self.blob_url(r, digest)?;
        let resp = self
            .send(
                r,
                Access::Pull,
                creds,
                Method::GET,
                &url,
                &HeaderMap::new(),
                None,
            )
            .await?;
        let resp = expect_ok(resp, &url, || format!("{r} blob {digest}")).await?;
        let bytes = read_capped(resp, cap, &url, "blob").await?;
        let got = sha256_digest(&bytes);
        if got != digest {
            return Err(OciError::DigestMismatch {
                what: format!("blob of {r}"),
                expected: digest.to_owned(),
                got,
            });
        }
        Ok(bytes)
    }

    /// GETs bytes `start..=end` (`end` `None`: to the end) of a blob, at most `cap` bytes.
    /// A registry that ignores `Range` (200) is an error: the caller asked for part of it.
    pub async fn get_blob_range(
        &self,
        r: &OciReference,
        digest: &str,
        start: u64,
        end: Option<u64>,
        cap: u64,
        creds: Option<&Credentials>,
    ) -> Result<Bytes, OciError> {
        let url = self.blob_url(r, digest)?;
        let mut headers = HeaderMap::new();
        let range = match end {
            Some(e) => format!("bytes={start}-{e}"),
            None => format!("bytes={start}-"),
        };
        if let Ok(v) = HeaderValue::from_str(&range) {
            headers.insert(header::RANGE, v);
        }
        let resp = self
            .send(r, Access::Pull, creds, Method::GET, &url, &headers, None)
            .await?;
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(OciError::Http {
                url: redacted(&url),
                status: resp.status().as_u16(),
                message: format!("asked for {range}, got no partial content"),
                retry_after: None,
            });
        }
        read_capped(resp, cap, &url, "blob range").await
    }

    /// What the download queue needs to fetch a blob itself: its URL and the
    /// `Authorization` this repository settled on (asking the registry once if nothing is
    /// cached yet, so a token service is only asked when the registry wants one).
    pub async fn blob_download(
        &self,
        r: &OciReference,
        digest: &str,
        creds: Option<&Credentials>,
    ) -> Result<(Url, Option<AccessToken>), OciError> {
        let url = self.blob_url(r, digest)?;
        let key = (r.registry.clone(), r.repository.clone(), Access::Pull);
        if !lock(&self.auth).contains_key(&key) {
            // Settle the challenge on a cheap request.
            let _ = self.head_blob(r, digest, Access::Pull, creds).await?;
        }
        let value = lock(&self.auth).get(&key).cloned().flatten();
        Ok((url, value.map(AccessToken::from_header_value)))
    }

    /// One request with auth and retries: the cached `Authorization` first; on a 401 the
    /// challenge is answered (Basic with the credentials, or a token from the Bearer realm)
    /// and the request made once more; connection failures and retryable statuses (429, 5xx
    /// but 501/505, 408) are retried under the retry policy. `body` is resent on a retry.
    #[allow(clippy::too_many_arguments, reason = "one request's parts")]
    pub async fn send(
        &self,
        r: &OciReference,
        access: Access,
        creds: Option<&Credentials>,
        method: Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, OciError> {
        let key = (r.registry.clone(), r.repository.clone(), access);
        let mut retry = RetryState::new(&self.retry);
        let mut answered = false;
        loop {
            let cached = lock(&self.auth)
                .get(&key)
                .cloned()
                .flatten()
                .or_else(|| match creds {
                    // A static registry token needs no challenge.
                    Some(Credentials::Bearer(t)) => Some(format!("Bearer {}", t.expose())),
                    _ => None,
                });
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(a) = &cached {
                req = req.header(header::AUTHORIZATION, sensitive(a)?);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let sent = tokio::time::timeout(self.timeout, req.send()).await;
            let resp = match sent {
                Err(_) => {
                    let e = OciError::Timeout {
                        url: redacted(url),
                        timeout: self.timeout,
                    };
                    self.wait_retry(&mut retry, None, e).await?;
                    continue;
                }
                Ok(Err(e)) => {
                    let e = OciError::Connection {
                        url: redacted(url),
                        source: e,
                    };
                    self.wait_retry(&mut retry, None, e).await?;
                    continue;
                }
                Ok(Ok(resp)) => resp,
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !answered {
                answered = true;
                let challenge = resp
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(parse_challenge);
                let value = self.answer(r, access, creds, challenge).await?;
                lock(&self.auth).insert(key.clone(), Some(value));
                continue;
            }
            if status.is_success() && !lock(&self.auth).contains_key(&key) {
                // Anonymous access works: remember that no header is needed.
                lock(&self.auth).insert(key.clone(), cached);
            }
            if FailureKind::of_status(status.as_u16()).is_retryable() && !status.is_success() {
                let after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                let e = error_of(resp, url).await;
                self.wait_retry(&mut retry, after, e).await?;
                continue;
            }
            return Ok(resp);
        }
    }

    async fn wait_retry(
        &self,
        retry: &mut RetryState<'_>,
        after: Option<Duration>,
        e: OciError,
    ) -> Result<(), OciError> {
        use crate::retry::Classify as _;
        if !e.classify().kind.is_retryable() {
            return Err(e);
        }
        let Some(wait) = retry.next_delay(after) else {
            return Err(e);
        };
        tracing::debug!(?wait, "retrying: {e}");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// The `Authorization` value that answers `challenge`.
    async fn answer(
        &self,
        r: &OciReference,
        access: Access,
        creds: Option<&Credentials>,
        challenge: Option<Challenge>,
    ) -> Result<String, OciError> {
        let unauthorized = |detail: &str| OciError::Unauthorized {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            detail: detail.to_owned(),
        };
        match (challenge, creds) {
            (Some(Challenge::Basic), Some(Credentials::Basic { username, password })) => {
                Ok(Credentials::basic_header(username, password))
            }
            (Some(Challenge::Basic), _) => Err(unauthorized(
                "the registry asks for a user name and password (the entry's `username`/`password`, or `docker login`)",
            )),
            (Some(Challenge::Bearer { realm, service, .. }), creds) => {
                if let Some(Credentials::Bearer(_)) = creds {
                    return Err(unauthorized("the registry refused the entry's token"));
                }
                let scope = format!("repository:{}:{}", r.repository, access.actions());
                let token = self
                    .fetch_token(&realm, service.as_deref(), &scope, creds)
                    .await?;
                Ok(format!("Bearer {token}"))
            }
            (None, _) => Err(unauthorized(
                "401 without a Basic or Bearer challenge the client understands",
            )),
        }
    }

    /// Asks a token service for a token (`GET realm?service=…&scope=…`, Basic with the
    /// credentials when there are any); reads `token` or `access_token`.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<String, OciError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let bad = |reason: String| OciError::TokenService {
            realm: crate::download::names::redact_url_str(realm),
            reason,
        };
        let mut url = Url::parse(realm).map_err(|e| bad(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("not an http(s) URL".into()));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut retry = RetryState::new(&self.retry);
        loop {
            let mut req = self.http.get(url.clone());
            if let Some(Credentials::Basic { username, password }) = creds {
                req = req.header(
                    header::AUTHORIZATION,
                    sensitive(&Credentials::basic_header(username, password))?,
                );
            }
            let resp = match tokio::time::timeout(self.timeout, req.send()).await {
                Err(_) => {
                    let e = OciError::Timeout {
                        url: redacted(&url),
                        timeout: self.timeout,
                    };
                    self.wait_retry(&mut retry, None, e).await?;
                    continue;
                }
                Ok(Err(e)) => {
                    let e = OciError::Connection {
                        url: redacted(&url),
                        source: e,
                    };
                    self.wait_retry(&mut retry, None, e).await?;
                    continue;
                }
                Ok(Ok(r)) => r,
            };
            let status = resp.status();
            if !status.is_success() {
                let e = error_of(resp, &url).await;
                if matches!(status.as_u16(), 401 | 403) {
                    return Err(bad(format!(
                        "refused the credentials (HTTP {}): {e}",
                        status.as_u16()
                    )));
                }
                self.wait_retry(&mut retry, None, e).await?;
                continue;
            }
            let body = read_capped(resp, MAX_TOKEN_BYTES, &url, "token answer").await?;
            let a: Answer =
                serde_json::from_slice(&body).map_err(|e| bad(format!("not JSON: {e}")))?;
            return a
                .token
                .or(a.access_token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad("the answer has no token".into()));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sensitive(v: &str) -> Result<HeaderValue, OciError> {
    let mut h = HeaderValue::from_str(v)
        .map_err(|_| OciError::Setup("a credential holds characters a header cannot".into()))?;
    h.set_sensitive(true);
    Ok(h)
}

fn redacted(u: &Url) -> String {
    crate::download::names::redact_url(u)
}

/// `sha256:` and the hex of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The body, refused past `cap` bytes whatever `Content-Length` claims.
async fn read_capped(
    mut resp: reqwest::Response,
    cap: u64,
    url: &Url,
    what: &str,
) -> Result<Bytes, OciError> {
    let too_large = || OciError::TooLarge {
        what: format!("{what} at {}", redacted(url)),
        limit: cap,
    };
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| OciError::Connection {
            url: redacted(url),
            source: e,
        })?;
        let Some(c) = chunk else { break };
        if (out.len() + c.len()) as u64 > cap {
            return Err(too_large());
        }
        out.extend_from_slice(&c);
    }
    Ok(Bytes::from(out))
}

async fn expect_ok(
    resp: reqwest::Response,
    url: &Url,
    what: impl Fn() -> String,
) -> Result<reqwest::Response, OciError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    match status.as_u16() {
        404 => Err(OciError::NotFound {
            reference: what(),
            detail: match error_of(resp, url).await {
                OciError::Http { message, .. } => message,
                other => other.to_string(),
            },
        }),
        401 | 403 => {
            let e = error_of(resp, url).await;
            let host = url.host_str().unwrap_or_default();
            Err(OciError::Unauthorized {
                registry: url
                    .port()
                    .map_or_else(|| host.to_owned(), |p| format!("{host}:{p}")),
                repository: what(),
                detail: format!(
                    "{e} (credentials: the entry's `username`/`password` or `token`, or `docker login`)"
                ),
            })
        }
        _ => Err(error_of(resp, url).await),
    }
}

/// An error status as an [`OciError::Http`], with the registry's `errors[].code/message`.
async fn error_of(resp: reqwest::Response, url: &Url) -> OciError {
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<Item>,
    }
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    let body = read_capped(resp, MAX_ERROR_BODY, url, "error body")
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<Errors>(&body)
        .ok()
        .filter(|e| !e.errors.is_empty())
        .map_or_else(
            || format!("HTTP {status}"),
            |e| {
                e.errors
                    .iter()
                    .take(5)
                    .map(|i| format!("{} {}", i.code, i.message).trim().to_owned())
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        );
    OciError::Http {
        url: redacted(url),
        status,
        message,
        retry_after,
    }
}
