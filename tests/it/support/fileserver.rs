//! A real HTTP file server on 127.0.0.1 (axum) with `Range` support and fault injection, for
//! download tests: drop the connection after N bytes, 500 / 429 on the first K requests,
//! stall, throttle, flip a byte, redirect, require a token, any headers.
#![allow(
    dead_code,
    reason = "each test module uses a different part of the helper"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

const CHUNK: usize = 16 * 1024;

/// A file the server serves, and the faults it injects.
#[derive(Clone, Default)]
pub struct FileSpec {
    pub data: Arc<Vec<u8>>,
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
    /// Ignore `Range` and always answer 200 when false.
    pub no_ranges: bool,
    /// Require `Authorization: Bearer <token>`: none → 401, another → 403.
    pub token: Option<String>,
    /// Answer 405 to HEAD, as servers that only serve GET do.
    pub no_head: bool,
    /// Answer `302 Location: <this>` instead of the body.
    pub redirect: Option<String>,
    /// 500 on the first K requests.
    pub fail_first: u32,
    /// 429 with `Retry-After: secs` on the first K requests.
    pub rate_limit_first: (u32, u64),
    /// The first K body requests send N bytes, then break the connection.
    pub drop_after: Option<(u32, u64)>,
    /// The first body request sends N bytes, then hangs until the client goes away.
    pub stall_after: Option<u64>,
    /// While the switch is on, requests whose range starts at or after `from` send `after`
    /// bytes and then hang.
    pub hang: Option<(u64, u64, Arc<AtomicBool>)>,
    /// Sleep between 16 KiB chunks.
    pub throttle: Option<Duration>,
    /// Serve this byte inverted.
    pub flip_byte: Option<u64>,
}

impl FileSpec {
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            data: Arc::new(data),
            ..Self::default()
        }
    }
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    /// Body bytes handed to the connection so far.
    pub sent: Arc<AtomicU64>,
}

impl Seen {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct ServerState {
    files: Mutex<HashMap<String, FileSpec>>,
    seen: Mutex<Vec<Seen>>,
    counts: Mutex<HashMap<String, u32>>,
}

/// The running server; it stops with the test's runtime.
pub struct FileServer {
    pub addr: SocketAddr,
    state: Arc<ServerState>,
}

impl FileServer {
    pub async fn start() -> Self {
        let state = Arc::new(ServerState::default());
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn add(&self, path: &str, spec: FileSpec) {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(path.to_owned(), spec);
    }

    /// Every request to `path`, in order.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    /// Body bytes sent for `path`, all requests together.
    pub fn bytes_sent(&self, path: &str) -> u64 {
        self.seen(path).iter().map(Seen::sent).sum()
    }
}

fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let r = v.strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let a: u64 = a.parse().ok()?;
    let b: u64 = if b.is_empty() {
        len.saturating_sub(1)
    } else {
        b.parse::<u64>().ok()?.min(len.saturating_sub(1))
    };
    Some((a, b))
}

async fn serve(State(st): State<Arc<ServerState>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().as_str().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let h = req.headers();
    let get = |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let range = get(header::RANGE);
    let authorization = get(header::AUTHORIZATION);
    let sent = Arc::new(AtomicU64::new(0));
    let spec = st.files.lock().unwrap().get(&path).cloned();
    let n = {
        let mut c = st.counts.lock().unwrap();
        let n = c.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let resp = answer(
        spec,
        n,
        &method,
        range.as_deref(),
        authorization.as_deref(),
        sent.clone(),
    );
    st.seen.lock().unwrap().push(Seen {
        method,
        path,
        query,
        range,
        authorization,
        status: resp.status().as_u16(),
        sent,
    });
    resp
}

fn status(code: u16, body: &str) -> Response {
    let mut r = Response::new(Body::from(body.to_owned()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn answer(
    spec: Option<FileSpec>,
    n: u32,
    method: &str,
    range: Option<&str>,
    authorization: Option<&str>,
    sent: Arc<AtomicU64>,
) -> Response {
    let Some(spec) = spec else {
        return status(404, r#"{"error":"Entry not found"}"#);
    };
    if spec.no_head && method == "HEAD" {
        return status(405, r#"{"error":"method not allowed"}"#);
    }
    if let Some(token) = &spec.token {
        match authorization.and_then(|a| a.strip_prefix("Bearer ")) {
            None => return status(401, r#"{"error":"auth required"}"#),
            Some(t) if t != token => return status(403, r#"{"error":"forbidden"}"#),
            Some(_) => {}
        }
    }
    if let Some(loc) = &spec.redirect {
        let mut r = status(302, "");
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_str(loc).unwrap());
        return r;
    }
    if n <= spec.fail_first {
        return status(500, r#"{"error":"boom"}"#);
    }
    if n <= spec.fail_first + spec.rate_limit_first.0 {
        let mut r = status(429, r#"{"error":"slow down"}"#);
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(spec.rate_limit_first.1),
        );
        return r;
    }
    let len = spec.data.len() as u64;
    let (code, start, end) = match range.filter(|_| !spec.no_ranges) {
        Some(r) => match parse_range(r, len) {
            Some((a, _)) if a >= len => {
                let mut r = status(416, "");
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}")).unwrap(),
                );
                return r;
            }
            Some((a, b)) if a <= b => (206, a, b + 1),
            _ => return status(400, "bad range"),
        },
        None => (200, 0, len),
    };
    let body_n = n - spec.fail_first - spec.rate_limit_first.0;
    let drop_at = spec
        .drop_after
        .filter(|(k, _)| body_n <= *k)
        .map(|(_, bytes)| bytes);
    let stall_at = spec.stall_after.filter(|_| body_n == 1);
    let hang_at = spec
        .hang
        .as_ref()
        .filter(|(from, _, on)| start >= *from && on.load(Ordering::SeqCst))
        .map(|(_, after, _)| *after);
    let body = body_stream(
        spec.clone(),
        start,
        end,
        drop_at,
        stall_at.or(hang_at),
        sent,
    );
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    let hm = r.headers_mut();
    hm.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if !spec.no_ranges {
        hm.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if code == 206 {
        hm.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)).unwrap(),
        );
    }
    let ct = spec
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    hm.insert(header::CONTENT_TYPE, HeaderValue::from_str(&ct).unwrap());
    if let Some(cd) = &spec.content_disposition {
        hm.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(cd).unwrap(),
        );
    }
    r
}

fn body_stream(
    spec: FileSpec,
    start: u64,
    end: u64,
    drop_at: Option<u64>,
    hang_at: Option<u64>,
    sent: Arc<AtomicU64>,
) -> Body {
    let stream = futures_util::stream::unfold(start, move |pos| {
        let spec = spec.clone();
        let sent = sent.clone();
        async move {
            let done = pos - start;
            if hang_at.is_some_and(|h| done >= h) {
                std::future::pending::<()>().await;
            }
            if drop_at.is_some_and(|d| done >= d) {
                // Let the connection flush what it holds, so the client really received
                // the bytes before the break.
                tokio::time::sleep(Duration::from_millis(30)).await;
                return Some((Err(std::io::Error::other("injected connection drop")), end));
            }
            if pos >= end {
                return None;
            }
            if let Some(t) = spec.throttle {
                tokio::time::sleep(t).await;
            }
            let mut stop = end.min(pos + CHUNK as u64);
            for limit in [drop_at, hang_at].into_iter().flatten() {
                if done < limit {
                    stop = stop.min(start + limit);
                }
            }
            let mut chunk = spec.data[pos as usize..stop as usize].to_vec();
            if let Some(f) = spec.flip_byte
                && (pos..stop).contains(&f)
            {
                chunk[(f - pos) as usize] ^= 0xff;
            }
            sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)), stop))
        }
    });
    Body::from_stream(stream)
}

/// How a [`RawServer`] answers: the answers a well-behaved HTTP stack never gives, written
/// byte by byte on a plain TCP socket. Every answer closes its connection.
#[derive(Clone)]
pub enum RawMode {
    /// Reads the request and never answers (the connection stays open).
    Silent,
    /// `200` with the whole file's `Content-Length`, then `cut` bytes and a close; `Range` is
    /// ignored (every answer starts over from byte 0).
    Truncating { data: Arc<Vec<u8>>, cut: usize },
    /// No `Content-Length` and no chunking (the body ends at the close), at most `cut` body
    /// bytes per answer. With `ranges`, `Range: bytes=N-` gets a `206` with a true
    /// `Content-Range` (or `416` at the end); without, every answer is a `200` from byte 0.
    CloseDelimited {
        data: Arc<Vec<u8>>,
        cut: usize,
        ranges: bool,
    },
    /// `200` with `Content-Length: claimed` (less than the file) followed by the whole file;
    /// `Range` answers are true `206`s (or `416` at the end).
    ShortLength { data: Arc<Vec<u8>>, claimed: usize },
    /// `200` with the right `Content-Length`, then one byte every `every`: never stalls, never
    /// ends in a test's lifetime.
    Drip { data: Arc<Vec<u8>>, every: Duration },
}

/// A raw HTTP/1.1 server on 127.0.0.1 that logs the head of every request it reads.
pub struct RawServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl RawServer {
    pub async fn start(mode: RawMode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (mode, log) = (mode.clone(), log.clone());
                tokio::spawn(async move {
                    let _ = raw_connection(sock, mode, log).await;
                });
            }
        });
        Self { addr, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The heads of the requests read so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn raw_connection(
    mut sock: tokio::net::TcpStream,
    mode: RawMode,
    log: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let range_from = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("range")
                .then(|| v.trim().to_owned())
        })
        .and_then(|v| {
            v.strip_prefix("bytes=")?
                .split_once('-')
                .and_then(|(a, _)| a.parse::<usize>().ok())
        });
    log.lock().unwrap().push(head);
    let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n";
    let partial = |from: usize, len: usize| {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nConnection: close\r\nContent-Range: bytes {from}-{}/{len}\r\n",
            len - 1
        )
    };
    let past_end = |len: usize| {
        format!(
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    match mode {
        RawMode::Silent => std::future::pending::<()>().await,
        RawMode::Truncating { data, cut } => {
            let h = format!("{ok}Content-Length: {}\r\n\r\n", data.len());
            sock.write_all(h.as_bytes()).await?;
            sock.write_all(&data[..cut.min(data.len())]).await?;
        }
        RawMode::CloseDelimited { data, cut, ranges } => {
            let len = data.len();
            let from = range_from.filter(|_| ranges).unwrap_or(0);
            if ranges && range_from.is_some() && from >= len {
                sock.write_all(past_end(len).as_bytes()).await?;
            } else {
                let h = if ranges && range_from.is_some() {
                    partial(from, len)
                } else {
                    ok.to_owned()
                };
                sock.write_all(format!("{h}\r\n").as_bytes()).await?;
                sock.write_all(&data[from..len.min(from + cut)]).await?;
            }
        }
        RawMode::ShortLength { data, claimed } => {
            let len = data.len();
            match range_from {
                Some(from) if from >= len => sock.write_all(past_end(len).as_bytes()).await?,
                Some(from) => {
                    let h = format!(
                        "{}Content-Length: {}\r\n\r\n",
                        partial(from, len),
                        len - from
                    );
                    sock.write_all(h.as_bytes()).await?;
                    sock.write_all(&data[from..]).await?;
                }
                None => {
                    let h = format!("{ok}Content-Length: {claimed}\r\n\r\n");
                    sock.write_all(h.as_bytes()).await?;
                    sock.write_all(&data).await?;
                }
            }
        }
        RawMode::Drip { data, every } => {
            let h = format!("{ok}Content-Length: {}\r\n\r\n", data.len());
            sock.write_all(h.as_bytes()).await?;
            for b in data.iter() {
                sock.write_all(&[*b]).await?;
                tokio::time::sleep(every).await;
            }
        }
    }
    sock.flush().await?;
    sock.shutdown().await
}
