//! The HTTP endpoints: `/healthz`, `/readyz`, `/status`, `/metrics`, and the server that
//! answers them under abuse: a connection cap sized from the descriptor limit (so a flood of
//! idle connections cannot take the descriptors the reconciler needs), a header-read timeout
//! that is also the keep-alive idle timeout, a maximum connection age, and eviction of the
//! longest-idle connection when a new one arrives at the cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::cancel::CancelToken;
use super::state::Shared;

/// The paths served, for probes and tests (Kubernetes manifests are checked against it).
pub const ROUTES: [&str; 4] = ["/healthz", "/readyz", "/status", "/metrics"];

/// The Prometheus text exposition content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Alive: the loop answers. Deliberately independent of entry health, so a broken entry or
/// manifest never gets the pod restarted (a restart would not fix it).
async fn healthz() -> Response {
    axum::Json(serde_json::json!({"alive": true})).into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let r = shared.readiness();
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(r)).into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.status()).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        shared.metrics_text(),
    )
        .into_response()
}

// ------------------------------------------------------------------ serving under abuse

/// The most connections served at once, whatever the descriptor limit allows.
const MAX_CONNECTIONS: usize = 256;

/// Descriptors kept free for the reconciler (store, manifest, downloads, staging files, the
/// file watch) beyond what is open when the server starts.
const FD_RESERVE: usize = 128;

/// Time a connection gets to deliver a complete request head. hyper starts this clock
/// whenever the connection waits for a request (at connect and again after each response),
/// so it is also the keep-alive idle timeout.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one connection lives (a client that trickles its body or never reads the
/// answer): then it is asked to close, and dropped [`CLOSE_GRACE`] later.
const MAX_CONNECTION_AGE: Duration = Duration::from_mins(1);
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (out of descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How many connections to serve at once: [`MAX_CONNECTIONS`], or fewer when the descriptor
/// limit (`RLIMIT_NOFILE`) minus what is already open minus [`FD_RESERVE`] leaves less room;
/// at least 1, so /healthz is always served.
pub(crate) fn connection_cap() -> usize {
    let Some(limit) = nofile_limit() else {
        return MAX_CONNECTIONS;
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    limit
        .saturating_sub(open + FD_RESERVE)
        .clamp(1, MAX_CONNECTIONS)
}

fn nofile_limit() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into the struct we pass; nothing else is touched.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    usize::try_from(lim.rlim_cur).ok()
}

/// What [`serve`] allows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once.
    pub cap: usize,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`MAX_CONNECTION_AGE`].
    pub max_age: Duration,
}

impl Limits {
    /// The defaults, with the cap sized from this process's descriptor limit.
    pub(crate) fn for_this_process() -> Self {
        Self {
            cap: connection_cap(),
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_age: MAX_CONNECTION_AGE,
        }
    }
}

/// One served connection, as the accept loop sees it.
struct Conn {
    /// Requests being answered right now.
    busy: AtomicUsize,
    /// When it last finished a request (or connected).
    idle_since: Mutex<std::time::Instant>,
    /// Told to close (a newer connection needed its slot).
    evict: Notify,
}

impl Conn {
    fn idle_since(&self) -> std::time::Instant {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The connections being served, by id.
type Registry = Arc<Mutex<HashMap<u64, Arc<Conn>>>>;

/// Serves `router` on `listener` until `stop`, under `limits.cap` connections at once.
///
/// At the cap a new connection takes the slot of the connection that has been idle longest
/// (connected or kept alive without a request in progress), which is closed; a probe's
/// connection sends its request at once, so idle connections can never starve `/healthz`.
/// Only when every slot is answering a request is the newcomer closed unanswered. Accepting
/// never stops, so the listen backlog cannot fill up behind idle connections either.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancelToken,
    limits: Limits,
) {
    let cap = limits.cap;
    let registry: Registry = Arc::default();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!("health server: accepting a connection failed: {e}");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(std::time::Instant::now()),
            evict: Notify::new(),
        });
        {
            let mut reg = registry.lock().unwrap_or_else(PoisonError::into_inner);
            if reg.len() >= cap {
                let victim = reg
                    .iter()
                    .filter(|(_, c)| c.busy.load(Ordering::Acquire) == 0)
                    .min_by_key(|(_, c)| c.idle_since())
                    .map(|(id, _)| *id);
                let Some(victim) = victim else {
                    drop(stream);
                    continue;
                };
                if let Some(c) = reg.remove(&victim) {
                    c.evict.notify_one();
                }
            }
            reg.insert(next_id, Arc::clone(&conn));
        }
        let (id, registry, router, stop) =
            (next_id, Arc::clone(&registry), router.clone(), stop.clone());
        next_id += 1;
        tokio::spawn(async move {
            serve_connection(stream, &conn, router, stop, limits).await;
            registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    conn: &Arc<Conn>,
    router: Router,
    stop: CancelToken,
    limits: Limits,
) {
    let tracked = Arc::clone(conn);
    let router = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        tracked.busy.fetch_add(1, Ordering::AcqRel);
        let done = Arc::clone(&tracked);
        let call = router.call(req);
        async move {
            let response = call.await;
            *done
                .idle_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = std::time::Instant::now();
            done.busy.fetch_sub(1, Ordering::AcqRel);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let age = tokio::time::sleep(limits.max_age);
    tokio::pin!(age);
    tokio::select! {
        r = connection.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("health server connection: {e}");
            }
            return;
        }
        () = conn.evict.notified() => return,
        () = &mut age => {}
        () = stop.cancelled() => {}
    }
    // Too old, or shutting down: finish the request in progress, then close.
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::watch::cancel::CancelSource;

    async fn start(limits: Limits) -> (SocketAddr, CancelSource) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, token) = CancelSource::new();
        let router = Router::new().route("/healthz", get(healthz));
        tokio::spawn(serve(listener, router, token, limits));
        (addr, stop)
    }

    async fn healthz_over(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        text
    }

    /// A connection that never sends a request is closed once the header-read timeout runs
    /// out (the paused clock jumps there as soon as everything waits).
    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_header_timeout() {
        let (addr, _stop) = start(Limits {
            cap: 4,
            header_read_timeout: Duration::from_secs(10),
            max_age: Duration::from_hours(1),
        })
        .await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        // EOF or a reset: either way the server let go of it.
        let n = idle.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    }

    /// At the cap, a new connection takes the slot of the longest-idle one: with every slot
    /// held by idle connections and timeouts far away, /healthz still answers at once, and
    /// the oldest idle connection is the one closed.
    #[tokio::test]
    async fn at_the_cap_a_new_connection_evicts_the_longest_idle() {
        let (addr, _stop) = start(Limits {
            cap: 2,
            header_read_timeout: Duration::from_hours(1),
            max_age: Duration::from_hours(1),
        })
        .await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        // The server has it once it answers on it.
        assert!(
            healthz_over(&mut TcpStream::connect(addr).await.unwrap())
                .await
                .starts_with("HTTP/1.1 200")
        );
        let _second = TcpStream::connect(addr).await.unwrap();
        let mut probe = TcpStream::connect(addr).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_mins(1), healthz_over(&mut probe))
            .await
            .expect("/healthz answers while idle connections hold every slot");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_mins(1), first.read(&mut buf))
            .await
            .expect("the oldest idle connection is closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
