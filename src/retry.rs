//! Failures and retries, one policy for every client: what a failure is ([`FailureKind`],
//! [`Failure`], built from a typed error through [`Classify`]), which failures pass
//! ([`FailureKind::is_retryable`]), how long to wait ([`delay`] with one [`Jitter`] source,
//! [`wait_before_retry`], [`parse_retry_after`]) and how many attempts to make
//! ([`RetryState`]). The Hub client, the download queue and watch's per-entry backoff use it
//! with their own budgets.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// What kind of failure an error is, as a retry policy and a status page care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The connection could not be made or broke (refused, reset, DNS, TLS).
    Connection,
    /// No answer in time (no response headers, HTTP 408).
    Timeout,
    /// The body stopped arriving.
    Stalled,
    /// The body ended before its announced length.
    Truncated,
    /// HTTP 429.
    RateLimited,
    /// A 5xx that may pass (every 5xx but 501 and 505).
    ServerError,
    /// HTTP 404/410, or a repository, revision or file that does not exist.
    NotFound,
    /// HTTP 401/403: no token, a token without access, a gated repository.
    Unauthorized,
    /// Another HTTP status, or an answer that does not follow the protocol.
    Http,
    /// The content is not what was expected (hash or size mismatch, an HTML page).
    Integrity,
    /// Not enough free disk space.
    DiskFull,
    /// The manifest or the lock file is unusable.
    Manifest,
    /// The request cannot be honoured as given (bad source, config, option, unsafe model).
    Invalid,
    /// Cancelled or interrupted.
    Cancelled,
    /// Anything else.
    #[default]
    Other,
}

impl FailureKind {
    /// The kind of an HTTP error status.
    pub fn of_status(status: u16) -> Self {
        match status {
            401 | 403 => Self::Unauthorized,
            404 | 410 => Self::NotFound,
            408 => Self::Timeout,
            429 => Self::RateLimited,
            // Not Implemented and HTTP Version Not Supported do not pass.
            501 | 505 => Self::Http,
            500..=599 => Self::ServerError,
            _ => Self::Http,
        }
    }

    /// The kind of an I/O error: a full disk, or something else.
    pub fn of_io(e: &std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) {
            Self::DiskFull
        } else {
            Self::Other
        }
    }

    /// Whether another attempt may succeed: connection errors, timeouts (408 included),
    /// stalls, truncated bodies, 429 and the 5xx that pass.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Connection
                | Self::Timeout
                | Self::Stalled
                | Self::Truncated
                | Self::RateLimited
                | Self::ServerError
        )
    }

    /// The name in JSON and in `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::Stalled => "stalled",
            Self::Truncated => "truncated",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::NotFound => "not_found",
            Self::Unauthorized => "unauthorized",
            Self::Http => "http",
            Self::Integrity => "integrity",
            Self::DiskFull => "disk_full",
            Self::Manifest => "manifest",
            Self::Invalid => "invalid",
            Self::Cancelled => "cancelled",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a typed error says about itself to a retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Class {
    /// The kind.
    pub kind: FailureKind,
    /// The HTTP status behind it, if any.
    pub http_status: Option<u16>,
    /// The server's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl Class {
    /// A class with `kind` and nothing else.
    pub fn of(kind: FailureKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    /// The class of an HTTP error status.
    pub fn status(status: u16, retry_after: Option<Duration>) -> Self {
        Self {
            kind: FailureKind::of_status(status),
            http_status: Some(status),
            retry_after,
        }
    }
}

/// Errors that can say what kind of failure they are (looking through their causes).
pub trait Classify: std::error::Error {
    /// The kind, HTTP status and `Retry-After` of this error.
    fn classify(&self) -> Class;
}

/// A failure as reports carry it: its message chain (the error's own message, then each
/// cause's, each saying its own part once), its kind, the HTTP status and the server's
/// `Retry-After`. Serialises as `error`, `causes`, `error_kind`, `http_status`,
/// `retry_after_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Failure {
    /// The top message.
    #[serde(rename = "error")]
    pub message: String,
    /// The causes' messages, outermost first.
    pub causes: Vec<String>,
    /// The kind.
    #[serde(rename = "error_kind")]
    pub kind: FailureKind,
    /// The HTTP status behind it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The server's `Retry-After`, if it sent one.
    #[serde(
        rename = "retry_after_secs",
        skip_serializing_if = "Option::is_none",
        serialize_with = "secs"
    )]
    pub retry_after: Option<Duration>,
}

#[allow(
    clippy::ref_option,
    reason = "serde's serialize_with hands the field by reference"
)]
fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl Failure {
    /// A failure of `kind` with `message` and no causes.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind,
            ..Self::default()
        }
    }

    /// The failure of a typed error: its message, its causes, its class.
    pub fn from_error<E: Classify + 'static>(e: &E) -> Self {
        let c = e.classify();
        let mut causes = messages(e);
        let message = causes.remove(0);
        Self {
            message,
            causes,
            kind: c.kind,
            http_status: c.http_status,
            retry_after: c.retry_after,
        }
    }

    /// The same failure under `message`: the old message becomes the first cause.
    #[must_use]
    pub fn context(mut self, message: impl Into<String>) -> Self {
        let old = std::mem::replace(&mut self.message, message.into());
        self.causes.insert(0, old);
        self
    }

    /// Every message, the top one first.
    pub fn chain(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.message.as_str()).chain(self.causes.iter().map(String::as_str))
    }
}

/// The message; with `{:#}`, the whole chain on one line (`a: b: c`, for log lines), as
/// anyhow does.
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if f.alternate() {
            for c in &self.causes {
                write!(f, ": {c}")?;
            }
        }
        Ok(())
    }
}

/// The messages of `e` and of its causes, outermost first: what the one renderer (`cli`) prints
/// as `error:` and `caused by:` lines. A cause whose text the message before it already ends
/// with is left out: some foreign errors (`rusqlite_migration`, `std::io` wrappers) print
/// their source in their own message too.
pub fn messages(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if out.last().is_none_or(|last| !last.ends_with(&m)) {
            out.push(m);
        }
        cur = c.source();
    }
    out
}

/// An error and its causes on one line (`a: b: c`), for the few places that must keep an
/// error as one string: a list of problems, a result shared by several waiters.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    messages(e).join(": ")
}

/// The backoff after `failures` consecutive failures (1 = the first): `base` doubling per
/// failure up to `max`, of which the fraction `jitter` (0.0..=1.0) is random: the delay lies in
/// `[d * (1 - jitter), d]` for a uniform `unit` in `[0, 1)`. Zero for no failures.
pub fn delay(base: Duration, max: Duration, jitter: f64, failures: u32, unit: f64) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exp = failures.saturating_sub(1).min(31);
    let raw = base.checked_mul(1u32 << exp).unwrap_or(max).min(max);
    raw.mul_f64(1.0 - jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0))
}

/// The wait before the next attempt: the backoff, or the server's `Retry-After` (at most
/// `cap`) when that is longer.
pub fn wait_before_retry(
    backoff: Duration,
    retry_after: Option<Duration>,
    cap: Duration,
) -> Duration {
    retry_after.map_or(backoff, |ra| backoff.max(ra.min(cap)))
}

/// A `Retry-After` value: delay-seconds or an HTTP date (a date in the past is no wait).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The one jitter source: a small non-cryptographic generator (SplitMix64) seeded from the OS.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator seeded from the OS.
    pub fn from_os() -> Self {
        let mut b = [0u8; 8];
        // Jitter only spreads retries; a fixed seed when the OS has no entropy is harmless.
        let _ = getrandom::fill(&mut b);
        Self(u64::from_le_bytes(b))
    }

    /// A generator with a fixed seed (tests).
    pub fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    /// A uniform value in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The jitter of inline retries (Hub requests, downloads): half the delay fixed, half random.
pub const INLINE_JITTER: f64 = 0.5;

/// When and how often to retry inline (the Hub client, the download queue).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Failed attempts in a row (without progress) before giving up; at least 1.
    pub max_attempts: u32,
    /// Wait after the first failure; doubles each time, with jitter.
    pub initial_backoff: Duration,
    /// Cap of the exponential wait.
    pub max_backoff: Duration,
    /// Cap of a server's `Retry-After`.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_mins(5),
        }
    }
}

/// Counts failed attempts under a [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct RetryState<'a> {
    policy: &'a RetryPolicy,
    failures: u32,
    jitter: Jitter,
}

impl<'a> RetryState<'a> {
    /// No failures yet.
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            jitter: Jitter::from_os(),
        }
    }

    /// Progress was made: the failures so far no longer count.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures counted so far (the attempts made, once one is given up on).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts a failure; returns the wait before the next attempt, or `None` when the
    /// attempts are spent.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.policy.max_attempts.max(1) {
            return None;
        }
        let p = self.policy;
        let backoff = delay(
            p.initial_backoff,
            p.max_backoff,
            INLINE_JITTER,
            self.failures,
            self.jitter.next_unit(),
        );
        Some(wait_before_retry(backoff, retry_after, p.max_retry_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_then_caps() {
        let (b, m) = (Duration::from_secs(2), Duration::from_mins(1));
        let got: Vec<u64> = (0..9).map(|n| delay(b, m, 0.0, n, 0.5).as_secs()).collect();
        assert_eq!(got, [0, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(delay(b, m, 0.0, u32::MAX, 0.0), m);
    }

    #[test]
    fn jitter_stays_in_band() {
        let (base, max) = (Duration::from_secs(2), Duration::from_mins(1));
        assert_eq!(delay(base, max, 0.5, 3, 0.0), Duration::from_secs(8));
        assert_eq!(delay(base, max, 0.5, 3, 1.0), Duration::from_secs(4));
        let mut jitter = Jitter::seeded(42);
        let first = jitter.next_unit();
        assert!((first - jitter.next_unit()).abs() > f64::EPSILON);
        for _ in 0..1000 {
            let unit = jitter.next_unit();
            assert!((0.0..1.0).contains(&unit));
            let wait = delay(base, max, 0.5, 10, unit);
            assert!(wait >= Duration::from_secs(30) && wait <= max, "{wait:?}");
        }
    }

    #[test]
    fn retryable_kinds_are_transport_trouble_408_429_and_passing_5xx() {
        let passing: Vec<u16> = [
            400, 401, 403, 404, 408, 416, 429, 500, 501, 502, 503, 505, 507,
        ]
        .into_iter()
        .filter(|s| FailureKind::of_status(*s).is_retryable())
        .collect();
        assert_eq!(passing, [408, 429, 500, 502, 503, 507]);
        assert!(FailureKind::Stalled.is_retryable());
        assert!(FailureKind::Truncated.is_retryable());
        assert!(!FailureKind::Integrity.is_retryable());
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(FailureKind::of_io(&full), FailureKind::DiskFull);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_mins(2))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn retry_state_waits_at_least_the_retry_after_up_to_its_cap_and_resets() {
        let p = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(10),
        };
        let mut s = RetryState::new(&p);
        let d = s.next_delay(None).unwrap();
        assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        assert_eq!(
            s.next_delay(Some(Duration::from_hours(24))),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            s.next_delay(None),
            None,
            "three failures spend three attempts"
        );
        assert_eq!(s.failures(), 3);
        s.reset();
        assert!(s.next_delay(None).is_some());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("migrating failed: disk is full")]
    struct Loud(#[source] std::io::Error);

    #[test]
    fn a_cause_its_message_already_ends_with_is_said_once() {
        let e = Loud(std::io::Error::other("disk is full"));
        assert_eq!(messages(&e), ["migrating failed: disk is full"]);
    }

    #[test]
    fn context_pushes_the_message_down_the_chain() {
        let f = Failure::new(FailureKind::NotFound, "HTTP 404").context("download failed");
        assert_eq!(
            f.chain().collect::<Vec<_>>(),
            ["download failed", "HTTP 404"]
        );
        assert_eq!(f.kind, FailureKind::NotFound);
        assert_eq!(f.to_string(), "download failed");
        assert_eq!(format!("{f:#}"), "download failed: HTTP 404");
    }
}
