//! Watch mode (issue #7): scheduling, backoff, file events, HTTP endpoints, shutdown.
//!
//! The reconciler (#6) is written in parallel, so the watcher is driven by `fake::Fake`, a
//! test double of the `Converger` trait; see its module docs. Time-dependent logic (intervals,
//! backoff, shutdown deadlines) runs under a paused tokio clock; file events and HTTP are
//! real (temp dirs, an axum server on 127.0.0.1:0, reqwest).

mod fake;
pub(crate) mod k8s;
pub(crate) mod prom;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use modelsync::watch::{
    BackoffConfig, CancelSource, EntryPhase, EntryStatus, Watch, WatchConfig, WatchError,
    WatchHandle,
};
use tokio::task::JoinHandle;

use fake::Fake;

/// Bound for waits in real time: only a failing test ever reaches it.
const REAL_LIMIT: Duration = Duration::from_secs(20);
/// Bound for waits under a paused clock (virtual time, costs nothing).
const PAUSED_LIMIT: Duration = Duration::from_hours(240);

struct Harness {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    manifest: PathBuf,
    fake: Arc<Fake>,
    handle: WatchHandle,
    addr: SocketAddr,
    stop: CancelSource,
    join: JoinHandle<Result<(), WatchError>>,
}

fn test_config(manifest: &Path) -> WatchConfig {
    let mut c = WatchConfig::new(manifest);
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.interval = Duration::from_hours(1);
    c.debounce = Duration::from_millis(100);
    c.backoff = BackoffConfig {
        base: Duration::from_secs(10),
        max: Duration::from_secs(80),
        jitter: 0.0,
    };
    c
}

async fn start_in(
    tmp: tempfile::TempDir,
    manifest: PathBuf,
    tweak: impl FnOnce(&mut WatchConfig),
) -> Harness {
    let dir = tmp.path().to_path_buf();
    let fake = Arc::new(Fake::new(dir.join("models")));
    let mut config = test_config(&manifest);
    tweak(&mut config);
    let watch = Watch::bind(config, Arc::clone(&fake))
        .await
        .expect("watch binds");
    let (stop, token) = CancelSource::new();
    let handle = watch.handle();
    let addr = watch.local_addr();
    let join = tokio::spawn(watch.run(token));
    Harness {
        _tmp: tmp,
        dir,
        manifest,
        fake,
        handle,
        addr,
        stop,
        join,
    }
}

async fn start(manifest_text: &str, tweak: impl FnOnce(&mut WatchConfig)) -> Harness {
    let tmp = tempfile::tempdir().expect("temp dir");
    let manifest = tmp.path().join("models.yaml");
    std::fs::write(&manifest, manifest_text).expect("write manifest");
    start_in(tmp, manifest, tweak).await
}

impl Harness {
    fn entry(&self, name: &str) -> EntryStatus {
        self.handle
            .status()
            .entries
            .into_iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no entry {name} in status"))
    }

    /// The state of `name`, if the entry is known yet.
    fn state(&self, name: &str) -> Option<EntryPhase> {
        self.handle
            .status()
            .entries
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.state)
    }

    fn metrics(&self) -> prom::Exposition {
        prom::parse(&self.handle.metrics_text()).expect("valid exposition")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Polls `cond` (status-based conditions have no notification); real time only.
    async fn eventually(&self, what: &str, cond: impl Fn(&Harness) -> bool) {
        let deadline = tokio::time::Instant::now() + REAL_LIMIT;
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting for {what}; status: {:#?}",
                self.handle.status()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets the loop record finished reconciles under a paused clock, without moving time.
    async fn settle(&self) {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    async fn shutdown(self) -> (Arc<Fake>, WatchHandle) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_mins(1), self.join)
            .await
            .expect("watch returns after shutdown")
            .expect("watch task did not panic");
        result.expect("watch ends without error");
        assert!(
            self.fake.overlaps().is_empty(),
            "two reconciles of one entry ran at once: {:?}",
            self.fake.overlaps()
        );
        (self.fake, self.handle)
    }
}

async fn http_get(url: &str) -> (u16, String, String) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let resp = client.get(url).send().await.expect("request");
    let code = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (code, ctype, resp.text().await.expect("body"))
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

#[tokio::test(start_paused = true)]
async fn broken_entry_backs_off_while_others_converge() {
    // One slot only: the broken entry must still not hold the others up.
    let h = start("good\nbroken broken\nother\n", |c| c.concurrency = 1).await;
    h.fake
        .wait_for("6 attempts of broken", PAUSED_LIMIT, |f| {
            f.count("broken") >= 6
        })
        .await;
    h.settle().await;
    let t = h.fake.calls_of("broken");
    let gaps: Vec<u64> = t.windows(2).map(|w| secs(w[1] - w[0])).collect();
    // Base 10 s doubling, capped at 80 s (jitter 0 here; the jitter band is unit-tested).
    assert_eq!(gaps, [10, 20, 40, 80, 80]);
    assert_eq!(h.fake.count("good"), 1, "converged entries are not retried");
    assert_eq!(h.fake.count("other"), 1);
    assert_eq!(h.entry("good").state, EntryPhase::Converged);
    assert_eq!(h.entry("other").state, EntryPhase::Converged);
    let b = h.entry("broken");
    assert_eq!(b.state, EntryPhase::Failed);
    assert_eq!(b.consecutive_failures, 6);
    assert!(
        b.last_error.as_deref().is_some_and(|e| e.contains("500")),
        "{b:?}"
    );
    assert_eq!(b.next_retry_in_seconds, Some(80.0));
    let r = h.handle.readiness();
    assert!(
        !r.ready && r.reasons.iter().any(|x| x.contains("entry broken")),
        "{r:?}"
    );

    // The next retry succeeds and resets the backoff...
    h.fake.heal("broken");
    h.fake
        .wait_for("the healed attempt", PAUSED_LIMIT, |f| {
            f.count("broken") >= 7
        })
        .await;
    h.settle().await;
    let b = h.entry("broken");
    assert_eq!(
        (b.state, b.consecutive_failures),
        (EntryPhase::Converged, 0)
    );
    assert!(h.handle.readiness().ready);

    // ...so a new failure (found by the hourly resync) is retried after the base delay.
    h.fake.unheal("broken");
    std::fs::remove_file(h.fake.model_file("broken")).expect("remove file");
    h.fake
        .wait_for("resync + retry", PAUSED_LIMIT, |f| f.count("broken") >= 9)
        .await;
    let t = h.fake.calls_of("broken");
    assert_eq!(secs(t[8] - t[7]), 10);
    assert_eq!(h.fake.count("good"), 2, "one resync");
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn deleted_file_is_refetched_at_next_interval() {
    let h = start("a\nb\n", |c| c.interval = Duration::from_mins(1)).await;
    h.fake
        .wait_for("first pass", PAUSED_LIMIT, |f| {
            f.count("a") >= 1 && f.count("b") >= 1
        })
        .await;
    h.settle().await;
    assert_eq!(h.entry("a").last_action.as_deref(), Some("install"));
    std::fs::remove_file(h.fake.model_file("a")).expect("delete a model file");
    h.fake
        .wait_for("resync", PAUSED_LIMIT, |f| f.count("a") >= 2)
        .await;
    h.settle().await;
    let t = h.fake.calls_of("a");
    assert_eq!(secs(t[1] - t[0]), 60, "repaired by the periodic resync");
    assert_eq!(h.entry("a").last_action.as_deref(), Some("repair"));
    assert!(h.fake.model_file("a").exists());
    assert_eq!(h.entry("b").last_action.as_deref(), Some("unchanged"));
    let m = h.metrics();
    assert_eq!(m.value("modelsync_downloaded_bytes_total", &[]), Some(21.0));
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn long_reconcile_is_never_doubled_by_resyncs() {
    // `s` takes 100 s; resyncs every 30 s must not start a second one alongside.
    let h = start("s sleepy\nq\n", |c| c.interval = Duration::from_secs(30)).await;
    h.fake
        .wait_for("three runs of s", PAUSED_LIMIT, |f| f.count("s") >= 3)
        .await;
    let t = h.fake.calls_of("s");
    let start = t[0];
    let at: Vec<u64> = t.iter().map(|x| secs(*x - start)).collect();
    // Requests during a run collapse into one rerun right after it.
    assert_eq!(at, [0, 100, 200]);
    assert!(
        h.fake.count("q") >= 7,
        "q is resynced meanwhile: {}",
        h.fake.count("q")
    );
    h.shutdown().await; // asserts no overlap
}

#[tokio::test(start_paused = true)]
async fn reconcile_ignoring_cancel_is_dropped_after_the_shutdown_timeout() {
    let h = start("stuck stubborn\nfine\n", |c| {
        c.shutdown_timeout = Duration::from_secs(5);
    })
    .await;
    h.fake
        .wait_for("stuck running", PAUSED_LIMIT, |f| {
            f.count("stuck") >= 1 && f.count("fine") >= 1
        })
        .await;
    let t0 = tokio::time::Instant::now();
    let (_fake, handle) = h.shutdown().await;
    let took = t0.elapsed();
    // Paused clock: the loop waited exactly its deadline, then dropped the work.
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "{took:?}"
    );
    let st = handle.status();
    assert!(st.shutting_down);
    let stuck = st
        .entries
        .iter()
        .find(|e| e.name == "stuck")
        .expect("stuck");
    assert!(
        stuck.last_error.as_deref() == Some("interrupted by shutdown")
            && stuck.last_error_causes == ["the reconcile was aborted at shutdown"],
        "{stuck:?}"
    );
    let m = prom::parse(&handle.metrics_text()).expect("valid exposition");
    assert_eq!(
        m.value("modelsync_reconcile_runs_total", &[("result", "cancelled")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn shutdown_during_a_long_reconcile_returns_promptly() {
    let h = start("slow slow\nfast\n", |_| {}).await;
    h.fake
        .wait_for("slow running", REAL_LIMIT, |f| f.count("slow") >= 1)
        .await;
    h.eventually("fast converged", |h| {
        h.state("fast") == Some(EntryPhase::Converged)
    })
    .await;
    let (_code, _, _) = http_get(&h.url("/healthz")).await;
    // `shutdown` bounds the wait; the slow entry stops at its resumable point on the signal,
    // long before the 20 s shutdown timeout.
    let (fake, handle) = h.shutdown().await;
    assert_eq!(fake.cancelled_cleanly(), ["slow"]);
    let slow = handle
        .status()
        .entries
        .into_iter()
        .find(|e| e.name == "slow")
        .expect("slow");
    assert!(
        slow.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("interrupted by shutdown")),
        "{slow:?}"
    );
    assert_eq!(
        slow.consecutive_failures, 0,
        "an interruption is not a failure"
    );
}

#[tokio::test]
async fn manifest_edit_triggers_a_reconcile() {
    let h = start("a\n", |_| {}).await;
    h.fake
        .wait_for("start", REAL_LIMIT, |f| f.count("a") >= 1)
        .await;
    std::fs::write(&h.manifest, "a\nb\n").expect("edit manifest");
    h.fake
        .wait_for("b after the edit", REAL_LIMIT, |f| f.count("b") >= 1)
        .await;
    h.fake
        .wait_for("a resynced", REAL_LIMIT, |f| f.count("a") >= 2)
        .await;
    h.eventually("b converged", |h| {
        h.state("b") == Some(EntryPhase::Converged)
    })
    .await;
    h.shutdown().await;
}

/// Writes a new ConfigMap payload the way the kubelet does: a new `..<timestamp>` directory,
/// a `..data_tmp` link renamed over `..data`, then the old directory removed.
#[cfg(unix)]
pub(crate) fn configmap_publish(dir: &Path, stamp: u32, content: &str, first: bool) {
    use std::os::unix::fs::symlink;
    let ts = format!("..2026_11_29_10_00_{stamp:02}.123456789");
    std::fs::create_dir(dir.join(&ts)).expect("timestamp dir");
    std::fs::write(dir.join(&ts).join("models.yaml"), content).expect("payload");
    let old = std::fs::read_link(dir.join("..data")).ok();
    symlink(&ts, dir.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    if first {
        symlink("..data/models.yaml", dir.join("models.yaml")).expect("models.yaml link");
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).expect("remove old payload");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn configmap_symlink_swaps_each_trigger_one_reload() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cm = tmp.path().join("config");
    std::fs::create_dir(&cm).expect("config dir");
    configmap_publish(&cm, 0, "a\n", true);
    let h = start_in(tmp, cm.join("models.yaml"), |_| {}).await;
    h.fake
        .wait_for("start", REAL_LIMIT, |f| f.count("a") >= 1)
        .await;
    for i in 1..=3u32 {
        configmap_publish(&cm, i, &format!("a\ne{i}\n"), false);
        let name = format!("e{i}");
        h.fake
            .wait_for(&format!("{name} after swap {i}"), REAL_LIMIT, |f| {
                f.count(&name) >= 1
            })
            .await;
        h.fake
            .wait_for("a resynced", REAL_LIMIT, |f| f.count("a") > i as usize)
            .await;
    }
    h.eventually("e3 converged", |h| {
        h.state("e3") == Some(EntryPhase::Converged)
    })
    .await;
    // One new desired state per swap: the other events of a swap re-read the same content.
    let m = h.metrics();
    assert_eq!(
        m.value("modelsync_manifest_reloads_total", &[("result", "changed")]),
        Some(4.0)
    );
    assert_eq!(h.fake.count("a"), 4);
    let names: Vec<String> = h
        .handle
        .status()
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        ["a", "e3"],
        "entries that left the manifest are gone"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn noop_touch_does_not_reconcile() {
    let h = start("a\n", |_| {}).await;
    h.eventually("a converged", |h| {
        h.state("a") == Some(EntryPhase::Converged)
    })
    .await;
    let unchanged = |h: &Harness| {
        h.metrics()
            .value(
                "modelsync_manifest_reloads_total",
                &[("result", "unchanged")],
            )
            .unwrap_or(0.0)
    };
    let before = unchanged(&h);
    // Same bytes, new mtime: an event, but no new desired state.
    std::fs::write(&h.manifest, "a\n").expect("rewrite");
    let f = std::fs::File::options()
        .write(true)
        .open(&h.manifest)
        .expect("open");
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .expect("touch");
    drop(f);
    h.eventually("the event was handled", |h| unchanged(h) > before)
        .await;
    assert_eq!(h.fake.count("a"), 1);
    assert_eq!(
        h.metrics()
            .value("modelsync_manifest_reloads_total", &[("result", "changed")]),
        Some(1.0)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn parse_failure_keeps_the_last_good_state() {
    let h = start("a\nb\n", |_| {}).await;
    h.eventually("ready", |h| h.handle.readiness().ready).await;
    let good_hash = h.handle.status().manifest.hash.expect("hash");

    std::fs::write(&h.manifest, "a\nb wobbly\n").expect("bad edit");
    h.eventually("the error is reported", |h| {
        h.handle.status().manifest.error.is_some()
    })
    .await;
    let (code, ctype, body) = http_get(&h.url("/status")).await;
    assert_eq!(code, 200);
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let st: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    let err = st["manifest"]["error"].as_str().expect("error string");
    assert!(err.contains("line 2") && err.contains("wobbly"), "{err}");
    assert_eq!(
        st["manifest"]["hash"],
        good_hash.as_str(),
        "last good state in force"
    );
    let states: Vec<(&str, &str)> = st["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or(""),
                e["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(states, [("a", "converged"), ("b", "converged")]);

    let (_, _, text) = http_get(&h.url("/metrics")).await;
    let m = prom::parse(&text).expect("valid exposition");
    assert_eq!(m.value("modelsync_manifest_error", &[]), Some(1.0));
    assert!(m.value("modelsync_manifest_reloads_total", &[("result", "error")]) >= Some(1.0));
    let (code, _, _) = http_get(&h.url("/readyz")).await;
    assert_eq!(
        code, 200,
        "a bad edit does not take a converged node out of service"
    );
    assert_eq!(
        h.fake.count("b"),
        1,
        "nothing reconciled for a rejected manifest"
    );

    std::fs::write(&h.manifest, "a\nb\nc\n").expect("fixed edit");
    h.eventually("c converged", |h| {
        h.handle
            .status()
            .entries
            .iter()
            .any(|e| e.name == "c" && e.state == EntryPhase::Converged)
    })
    .await;
    assert_eq!(h.handle.status().manifest.error, None);
    assert_eq!(
        h.metrics().value("modelsync_manifest_error", &[]),
        Some(0.0)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn readyz_flips_after_convergence_and_preload() {
    let h = start("a\ng gated\np preload_gated\n", |_| {}).await;
    h.fake
        .wait_for("all started", REAL_LIMIT, |f| {
            f.count("a") >= 1 && f.count("g") >= 1 && f.count("p") >= 1
        })
        .await;
    let (code, _, body) = http_get(&h.url("/healthz")).await;
    assert_eq!(code, 200, "{body}");
    let (code, ctype, body) = http_get(&h.url("/readyz")).await;
    assert_eq!(code, 503);
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let r: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(r["ready"], false);
    let reasons = r["reasons"].to_string();
    assert!(
        reasons.contains("entry g") && reasons.contains("entry p"),
        "{reasons}"
    );
    assert!(!reasons.contains("entry a"), "{reasons}");

    h.fake.gate.add_permits(100);
    h.eventually("g converged", |h| {
        h.state("g") == Some(EntryPhase::Converged)
    })
    .await;
    let (code, _, body) = http_get(&h.url("/readyz")).await;
    assert_eq!(code, 503, "p's preload is still running: {body}");
    assert!(
        body.contains("entry p") && !body.contains("entry g"),
        "{body}"
    );

    h.fake.preload_gate.add_permits(100);
    h.eventually("p preloaded", |h| h.entry("p").preloaded)
        .await;
    let (code, _, body) = http_get(&h.url("/readyz")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(h.fake.preloads(), ["p"]);
    h.shutdown().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let h = start("good preload\nbroken broken\n", |c| {
        // No retry within the test.
        c.backoff.base = Duration::from_hours(1);
        c.backoff.max = Duration::from_hours(1);
    })
    .await;
    h.eventually("settled", |h| {
        h.state("good") == Some(EntryPhase::Converged)
            && h.state("broken") == Some(EntryPhase::Failed)
    })
    .await;
    let (code, ctype, text) = http_get(&h.url("/metrics")).await;
    assert_eq!(code, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let m = prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (family, kind) in [
        ("modelsync_reconcile_runs_total", "counter"),
        ("modelsync_reconcile_duration_seconds", "histogram"),
        ("modelsync_entries", "gauge"),
        ("modelsync_downloaded_bytes_total", "counter"),
        ("modelsync_download_errors_total", "counter"),
        ("modelsync_last_success_timestamp_seconds", "gauge"),
        ("modelsync_cache_bytes", "gauge"),
        ("modelsync_manifest_reloads_total", "counter"),
        ("modelsync_manifest_error", "gauge"),
        ("modelsync_ready", "gauge"),
    ] {
        assert_eq!(m.kind(family), Some(kind), "{family}\n{text}");
    }
    let v = |name: &str, labels: &[(&str, &str)]| m.value(name, labels);
    assert_eq!(
        v("modelsync_reconcile_runs_total", &[("result", "success")]),
        Some(1.0)
    );
    assert_eq!(
        v("modelsync_reconcile_runs_total", &[("result", "failure")]),
        Some(1.0)
    );
    assert_eq!(
        v("modelsync_reconcile_duration_seconds_count", &[]),
        Some(2.0)
    );
    assert_eq!(v("modelsync_entries", &[("state", "converged")]), Some(1.0));
    assert_eq!(v("modelsync_entries", &[("state", "failed")]), Some(1.0));
    assert_eq!(v("modelsync_entries", &[("state", "pending")]), Some(0.0));
    // 7 bytes installed for good, 3 fetched before broken failed.
    assert_eq!(v("modelsync_downloaded_bytes_total", &[]), Some(10.0));
    assert_eq!(v("modelsync_download_errors_total", &[]), Some(1.0));
    assert_eq!(v("modelsync_cache_bytes", &[("device", "cpu")]), Some(7.0));
    let ts = v(
        "modelsync_last_success_timestamp_seconds",
        &[("entry", "good")],
    )
    .expect("ts");
    assert!(ts > 1.7e9, "{ts}");
    assert_eq!(
        v(
            "modelsync_last_success_timestamp_seconds",
            &[("entry", "broken")]
        ),
        None
    );
    assert_eq!(v("modelsync_ready", &[]), Some(0.0));
    h.shutdown().await;
}

#[test]
fn prometheus_parser_rejects_malformed_text() {
    let ok = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"b\\\"c\"} 1\n";
    assert!(prom::parse(ok).is_ok());
    for bad in [
        "x_total 1\n",                                                   // no TYPE
        "# HELP x_total X.\n# TYPE x_total counter\nx_total 1",          // no final newline
        "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"b} 1\n", // unterminated
        "# HELP x_total X.\n# TYPE x_total counter\nx_total -1\n",       // negative counter
        "# HELP x X.\n# TYPE x counter\nx 1\n",                          // counter name
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
        "# TYPE g gauge\ng 1\n",                                                       // no HELP
        "# HELP g G.\n# TYPE g gauge\ng 1\n# HELP k K.\n# TYPE k gauge\nk 1\ng{a=\"1\"} 2\n", // split family
    ] {
        assert!(prom::parse(bad).is_err(), "accepted: {bad:?}");
    }
}

#[tokio::test]
async fn missing_manifest_is_reported_then_picked_up() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let manifest = tmp.path().join("models.yaml");
    let h = start_in(tmp, manifest.clone(), |_| {}).await;
    h.eventually("the read error is reported", |h| {
        h.handle.status().manifest.error.is_some()
    })
    .await;
    let r = h.handle.readiness();
    assert!(!r.ready);
    assert!(r.reasons[0].contains("cannot read manifest"), "{r:?}");
    assert!(r.reasons[0].contains("models.yaml"), "{r:?}");
    std::fs::write(&manifest, "a\n").expect("create manifest");
    h.fake
        .wait_for("a", REAL_LIMIT, |f| f.count("a") >= 1)
        .await;
    h.eventually("ready", |h| h.handle.readiness().ready).await;
    assert!(h.dir.join("models/a.bin").exists());
    h.shutdown().await;
}

#[tokio::test]
async fn busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(&tmp.path().join("models.yaml"));
    config.listen = addr;
    let fake = Arc::new(Fake::new(tmp.path().join("models")));
    let err = Watch::bind(config, fake).await.expect_err("port is taken");
    assert!(matches!(err, WatchError::Listen { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// The CLI's path: `block_on_watch` owns its runtime and stops on a real SIGTERM sent to this
/// process. Its signal handler is installed before the server binds, so once `/healthz`
/// answers the signal is caught (not fatal) and must end the loop.
#[cfg(unix)]
#[test]
fn sigterm_stops_block_on_watch_cleanly() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let manifest = tmp.path().join("models.yaml");
    std::fs::write(&manifest, "slow slow\nfast\n").expect("manifest");
    // A free port for the server (block_on_watch does not report the one it bound).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut config = test_config(&manifest);
    config.listen = SocketAddr::from(([127, 0, 0, 1], port));
    let fake = Arc::new(Fake::new(tmp.path().join("models")));
    let runner_fake = Arc::clone(&fake);
    let runner =
        std::thread::spawn(move || modelsync::watch::block_on_watch(config, runner_fake, |_| {}));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        fake.wait_for("slow running", REAL_LIMIT, |f| f.count("slow") >= 1)
            .await;
        let url = format!("http://127.0.0.1:{port}/healthz");
        let deadline = tokio::time::Instant::now() + REAL_LIMIT;
        loop {
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client");
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server never answered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // SAFETY: kill(2) on our own pid with a signal the watcher's runtime handles.
    let rc = unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    assert_eq!(rc, 0, "kill failed");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(runner.join());
    });
    let result = rx
        .recv_timeout(REAL_LIMIT)
        .expect("block_on_watch returns after SIGTERM")
        .expect("watch thread did not panic");
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        fake.cancelled_cleanly(),
        ["slow"],
        "the running reconcile was told to stop"
    );
    assert!(fake.overlaps().is_empty());
}
