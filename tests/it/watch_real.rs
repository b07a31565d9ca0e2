//! Watch mode with the real reconciler (`ManifestConverger`) against the Hub emulator and real
//! files: through the library (`Watch::bind` on 127.0.0.1:0, short interval) and through the
//! spawned binary (SIGTERM during a throttled download, then a resume).
//!
//! Waits poll a condition with a generous bound (only a failing test reaches it); nothing
//! asserts on elapsed time.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelsync::hub::HubEnv;
use modelsync::reconcile::{ManifestConverger, ReconcileEvent};
use modelsync::report::{Event, Recorder};
use modelsync::retry::FailureKind;
use modelsync::store::lock::StoreLock;
use modelsync::watch::{
    BackoffConfig, CancelSource, EntryPhase, EntryStatus, StatusReport, Watch, WatchConfig,
    WatchError, WatchHandle,
};
use tokio::task::JoinHandle;

use crate::support::hub_server::{Fault, Target};
use crate::support::reconcile::{Work, lora_bytes, lora_repo};
use crate::watch::prom;

/// Bound for every wait; only a failing test reaches it.
const LIMIT: Duration = Duration::from_secs(30);

struct Running {
    handle: WatchHandle,
    addr: SocketAddr,
    stop: CancelSource,
    join: JoinHandle<Result<(), WatchError>>,
}

fn settings(w: &Work, extra: &str) -> String {
    format!("  hf_endpoint: {}\n{extra}", w.hub.endpoint())
}

fn entry(name: &str, source: &str) -> String {
    format!("  - name: {name}\n    source: {source}\n")
}

/// Starts watch mode in-process over `w`'s manifest, with a real converger.
async fn start(w: &Work, tweak: impl FnOnce(&mut WatchConfig)) -> Running {
    start_recording(w, Recorder::new(), tweak).await
}

/// [`start`], with the converger's events going to `events`.
async fn start_recording(
    w: &Work,
    events: Recorder,
    tweak: impl FnOnce(&mut WatchConfig),
) -> Running {
    let manifest_path = w.path().join("models.yaml");
    let m = modelsync::manifest::load(&manifest_path).expect("manifest loads");
    let lock = StoreLock::acquire(&m.settings.database_path(), Duration::ZERO, |_| {})
        .expect("store lock");
    let env = HubEnv {
        hf_home: Some(w.path().join(".hf")),
        ..HubEnv::empty()
    };
    let conv = ManifestConverger::new(&m, lock, Arc::new(events)).with_hub_env(env);
    let mut config = WatchConfig::new(&manifest_path);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.interval = Duration::from_millis(300);
    config.debounce = Duration::from_millis(100);
    config.backoff = BackoffConfig {
        base: Duration::from_mins(10),
        max: Duration::from_mins(20),
        jitter: 0.0,
    };
    tweak(&mut config);
    let watch = Watch::bind(config, Arc::new(conv)).await.expect("binds");
    let (stop, token) = CancelSource::new();
    let handle = watch.handle();
    let addr = watch.local_addr();
    let join = tokio::spawn(watch.run(token));
    Running {
        handle,
        addr,
        stop,
        join,
    }
}

impl Running {
    fn entry(&self, name: &str) -> Option<EntryStatus> {
        self.handle
            .status()
            .entries
            .into_iter()
            .find(|e| e.name == name)
    }

    async fn eventually(&self, what: &str, cond: impl Fn(&StatusReport) -> bool) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let st = self.handle.status();
            if cond(&st) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}; status: {st:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let resp = client
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .expect("request");
        let code = resp.status().as_u16();
        (code, resp.text().await.expect("body"))
    }

    async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(LIMIT, self.join)
            .await
            .expect("watch stops in time")
            .expect("watch task");
        assert!(r.is_ok(), "{r:?}");
    }
}

fn converged(st: &StatusReport, name: &str) -> bool {
    st.entries
        .iter()
        .any(|e| e.name == name && e.state == EntryPhase::Converged)
}

/// The path of the record of entry `name`.
fn model_path(w: &Work, name: &str) -> PathBuf {
    let store = w.store();
    let rec = store
        .all_models()
        .expect("records")
        .into_iter()
        .find(|r| r.common().managed.as_ref().is_some_and(|m| m.entry == name))
        .unwrap_or_else(|| panic!("no record of {name}"));
    rec.resolved_path(&w.models())
}

fn write_manifest(w: &Work, text: &str) {
    // Written beside and renamed over, as editors and ConfigMaps do: no half-written reads.
    let tmp = w.path().join(".models.yaml.tmp");
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, w.path().join("models.yaml")).expect("rename manifest");
}

fn manifest_text(settings: &str, models: &str) -> String {
    format!("version: 1\nsettings:\n  models_dir: models\n{settings}models:\n{models}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_serves_status_picks_up_edits_heals_and_prunes() {
    let w = Work::new();
    for (id, seed) in [("owner/a", 1), ("owner/b", 2), ("owner/c", 3)] {
        w.hub.add_repo(lora_repo(id, seed, 2));
    }
    let s = settings(&w, "");
    let two = format!(
        "{}{}",
        entry("a", "owner/a::lora.safetensors"),
        entry("b", "owner/b::lora.safetensors")
    );
    w.manifest(&s, &two);
    let r = start(&w, |_| {}).await;

    // Start: both entries install, /readyz turns 200, /status and /metrics say so.
    r.eventually("a and b converge", |st| st.ready).await;
    let (code, body) = r.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = r.get("/status").await;
    assert_eq!(code, 200);
    let st: StatusReport = serde_json::from_str(&body).expect("status JSON");
    for name in ["a", "b"] {
        let e = st.entries.iter().find(|e| e.name == name).expect("entry");
        assert_eq!(e.state, EntryPhase::Converged, "{e:?}");
        // The lock file written beside the manifest is a file event in the watched folder, so
        // an entry may already have been re-run (and found unchanged) by the time we look.
        assert!(
            matches!(e.last_action.as_deref(), Some("install" | "unchanged")),
            "{e:?}"
        );
        assert!(e.last_success.is_some());
    }
    assert_eq!(
        std::fs::read(model_path(&w, "a")).expect("a's file"),
        lora_bytes(1, 2)
    );
    let (code, text) = r.get("/metrics").await;
    assert_eq!(code, 200);
    let m = prom::parse(&text).expect("valid Prometheus text");
    assert_eq!(
        m.value("modelsync_entries", &[("state", "converged")]),
        Some(2.0)
    );
    let downloaded = m
        .value("modelsync_downloaded_bytes_total", &[])
        .expect("bytes metric");
    assert!(
        downloaded >= 2.0 * lora_bytes(1, 2).len() as f64,
        "{downloaded}"
    );
    // Concurrent applies merged their results into one lock file.
    let lock = w.lock();
    assert!(
        lock.entries.contains_key("a") && lock.entries.contains_key("b"),
        "{lock:?}"
    );

    // A manifest that does not parse: reported with file:line:col, the previous one stays.
    write_manifest(&w, &manifest_text(&s, &format!("{two}  - name: [\n")));
    r.eventually("the bad edit is reported", |st| st.manifest.error.is_some())
        .await;
    let err = r.handle.status().manifest.error.expect("error");
    assert!(err.contains("models.yaml:"), "{err}");
    assert!(
        r.handle.readiness().ready,
        "the last good state stays ready"
    );

    // An added entry installs after the debounce.
    let three = format!("{two}{}", entry("c", "owner/c::lora.safetensors"));
    write_manifest(&w, &manifest_text(&s, &three));
    r.eventually("c converges", |st| {
        converged(st, "c") && st.manifest.error.is_none()
    })
    .await;
    assert_eq!(
        std::fs::read(model_path(&w, "c")).expect("c's file"),
        lora_bytes(3, 2)
    );
    assert_eq!(w.lock().entries.len(), 3);

    // A deleted model file comes back at the next resync, as a repair.
    let a_path = model_path(&w, "a");
    std::fs::remove_file(&a_path).expect("delete a's file");
    r.eventually("a is repaired", |st| {
        st.entries
            .iter()
            .any(|e| e.name == "a" && e.last_action.as_deref() == Some("repair"))
    })
    .await;
    assert_eq!(
        std::fs::read(model_path(&w, "a")).expect("a's file again"),
        lora_bytes(1, 2)
    );

    // Without prune, an entry that leaves keeps its record and files; its lock entry goes
    // (the sweep's, once per batch). Back in the manifest, it is converged as it was.
    let c_path = model_path(&w, "c");
    write_manifest(&w, &manifest_text(&s, &two));
    r.eventually("c leaves the lock", |st| {
        r.entry("c").is_none() && st.manifest.error.is_none() && !w.lock().entries.contains_key("c")
    })
    .await;
    assert!(c_path.exists(), "c's file is kept without prune");
    assert_eq!(w.lock().entries.len(), 2);
    write_manifest(&w, &manifest_text(&s, &three));
    r.eventually("c is back", |st| {
        converged(st, "c") && w.lock().entries.contains_key("c")
    })
    .await;

    // With prune, an entry that leaves is deleted by the sweep (record, files, lock entry).
    let b_path = model_path(&w, "b");
    let without_b = format!(
        "{}{}",
        entry("a", "owner/a::lora.safetensors"),
        entry("c", "owner/c::lora.safetensors")
    );
    write_manifest(
        &w,
        &manifest_text(&settings(&w, "  prune: true\n"), &without_b),
    );
    let deadline = Instant::now() + LIMIT;
    while b_path.exists() || w.lock().entries.contains_key("b") {
        assert!(Instant::now() < deadline, "b was not pruned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(r.entry("b").is_none());
    let store = w.store();
    let left: Vec<String> = store
        .all_models()
        .expect("records")
        .iter()
        .map(|r| r.common().name.clone())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&"b".to_owned()), "{left:?}");
    drop(store);

    r.stop().await;
    // The converger was dropped with the loop: the store lock is free again.
    let lock = StoreLock::acquire(&w.models().join("modelsync.db"), Duration::ZERO, |_| {});
    assert!(lock.is_ok(), "the store lock was not released");
}

/// How many events of the reconciler's `kind` were recorded.
fn count(events: &Recorder, kind: fn(&ReconcileEvent) -> bool) -> usize {
    events
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Reconcile(r) if kind(r)))
        .count()
}

/// Watch is linear in the number of entries (issue #17): a resync over converged entries is
/// one observe and one plan (one `planned` event), not one per entry, and reconciles none of
/// them; the lock is written once per batch, not once per entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_plans_once_for_all_entries_and_a_batch_writes_the_lock_once() {
    let w = Work::new();
    let names = ["a", "b", "c", "d"];
    let mut models = String::new();
    for (seed, name) in (1..).zip(names) {
        let id = format!("owner/{name}");
        w.hub.add_repo(lora_repo(&id, seed, 2));
        models.push_str(&entry(name, &format!("{id}::lora.safetensors")));
    }
    let s = settings(&w, "");
    w.manifest(&s, &models);
    let events = Recorder::new();
    let r = start_recording(&w, events.clone(), |c| {
        // One resync (at start); the next one is the edit below.
        c.interval = Duration::from_hours(1);
        c.concurrency = names.len();
    })
    .await;
    r.eventually("all converge", |st| st.ready).await;
    let planned = |e: &ReconcileEvent| matches!(e, ReconcileEvent::Planned { .. });
    let written = |e: &ReconcileEvent| matches!(e, ReconcileEvent::LockWritten { .. });
    assert_eq!(count(&events, written), 1, "one batch, one lock write");
    assert_eq!(w.lock().entries.len(), names.len());
    let runs: Vec<u64> = names
        .iter()
        .map(|n| r.entry(n).expect("entry").runs)
        .collect();
    let planned_before = count(&events, planned);

    // A manifest edit that changes no entry: a survey of all of them, nothing reconciled.
    let mark = modelsync::watch::rfc3339_now();
    write_manifest(&w, &format!("# edited\n{}", manifest_text(&s, &models)));
    r.eventually("every entry is seen converged after the edit", |st| {
        st.entries.iter().all(|e| {
            e.last_success
                .as_deref()
                .is_some_and(|t| t >= mark.as_str())
        })
    })
    .await;
    assert_eq!(count(&events, planned), planned_before + 1, "one plan");
    let after: Vec<u64> = names
        .iter()
        .map(|n| r.entry(n).expect("entry").runs)
        .collect();
    assert_eq!(after, runs, "no entry was reconciled");
    assert_eq!(
        count(&events, written),
        1,
        "nothing changed, nothing written"
    );

    // The lock lost: the next resync rewrites it, once.
    std::fs::remove_file(w.path().join("models.lock")).expect("remove the lock");
    write_manifest(
        &w,
        &format!("# edited again\n{}", manifest_text(&s, &models)),
    );
    r.eventually("the lock is back", |_| count(&events, written) == 2)
        .await;
    assert_eq!(w.lock().entries.len(), names.len());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_entry_backs_off_while_the_good_one_converges() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/good", 1, 2));
    let models = format!(
        "{}{}",
        entry("good", "owner/good::lora.safetensors"),
        entry("broken", "owner/missing::lora.safetensors")
    );
    w.manifest(&settings(&w, ""), &models);
    let r = start(&w, |_| {}).await;

    r.eventually("good converges and broken fails once", |st| {
        converged(st, "good")
            && st
                .entries
                .iter()
                .any(|e| e.name == "broken" && e.consecutive_failures == 1)
    })
    .await;
    let broken = r.entry("broken").expect("broken");
    assert_eq!(broken.state, EntryPhase::Failed);
    let err = broken.last_error.expect("an error");
    assert!(err.contains("owner/missing"), "{err}");
    assert!(!r.handle.readiness().ready);
    let asked = |w: &Work| {
        w.hub
            .requests()
            .iter()
            .filter(|q| q.path.contains("owner/missing"))
            .count()
    };
    let after_first = asked(&w);
    assert!(after_first >= 1);

    // Several resyncs go by while the broken one waits for its backoff: not one more request
    // for it. The good one is found converged by each resync's survey, not reconciled again.
    let resyncs = |r: &Running| {
        prom::parse(&r.handle.metrics_text())
            .expect("metrics")
            .value(
                "modelsync_manifest_reloads_total",
                &[("result", "unchanged")],
            )
            .unwrap_or_default()
    };
    let (before, runs) = (resyncs(&r), r.entry("good").expect("good").runs);
    r.eventually("five more resyncs", |_| resyncs(&r) >= before + 5.0)
        .await;
    assert_eq!(asked(&w), after_first, "{:?}", w.hub.requests());
    assert_eq!(r.entry("good").expect("good").runs, runs);
    let broken = r.entry("broken").expect("broken");
    assert_eq!(broken.consecutive_failures, 1, "{broken:?}");
    assert!(broken.next_retry_in_seconds.is_some_and(|s| s > 60.0));
    let (code, body) = r.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("broken"), "{body}");
    r.stop().await;
}

/// The Hub answers 429 with a `Retry-After` of an hour for one entry's repository: that entry
/// fails as rate limited without asking again inline, and watch schedules its next attempt at
/// the server's delay, not at its own one-second backoff; the other entry converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_entry_is_retried_after_the_hubs_retry_after() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/good", 1, 2));
    w.hub.add_repo(lora_repo("owner/busy", 2, 2));
    w.hub.fail_next(
        Target::Repo("owner/busy"),
        1000,
        Fault::RateLimit { retry_after: 3600 },
    );
    let models = format!(
        "{}{}",
        entry("good", "owner/good::lora.safetensors"),
        entry("busy", "owner/busy::lora.safetensors")
    );
    w.manifest(&settings(&w, ""), &models);
    let r = start(&w, |c| {
        c.backoff = BackoffConfig {
            base: Duration::from_secs(1),
            max: Duration::from_hours(2),
            jitter: 0.0,
        };
    })
    .await;
    r.eventually("good converges and busy fails once", |st| {
        converged(st, "good")
            && st
                .entries
                .iter()
                .any(|e| e.name == "busy" && e.consecutive_failures == 1)
    })
    .await;
    let busy = r.entry("busy").expect("busy");
    assert_eq!(
        busy.last_error_kind,
        Some(FailureKind::RateLimited),
        "{busy:?}"
    );
    let due = busy.next_retry_in_seconds.expect("a retry is scheduled");
    assert!(due > 3000.0 && due <= 3600.0, "{busy:?}");
    assert!(
        busy.last_error_causes
            .iter()
            .any(|c| c.contains("the server asks to wait 1h")),
        "{busy:?}"
    );
    // One 429 per look-up and one for the install: no inline retry asked again early.
    let asked: Vec<u16> = w
        .hub
        .requests()
        .iter()
        .filter(|q| q.path.contains("owner/busy"))
        .map(|q| q.status)
        .collect();
    assert!(asked.iter().all(|s| *s == 429), "{asked:?}");
    assert!(asked.len() <= 3, "{asked:?}");
    r.stop().await;
}

// ------------------------------------------------------------------ the binary

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A minimal HTTP/1.0 GET; `None` while nothing listens.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

fn files_named(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

fn sigterm(child: &std::process::Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill failed");
}

/// Waits for the child's exit, killing it if it overruns `LIMIT` (a failing test).
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("modelsync watch did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_watch(w: &Work, addr: SocketAddr) -> std::process::Child {
    w.command(&["watch", "--listen", &addr.to_string(), "--interval", "1h"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("modelsync watch starts")
}

fn stderr_of(child: &mut std::process::Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

#[test]
fn sigterm_mid_download_exits_0_keeps_the_partial_and_the_next_start_resumes() {
    let w = Work::new();
    // ~4.3 MB, one stream (below the parallel-range threshold), throttled to ~2.5 MB/s.
    let big = lora_bytes(7, 2000);
    w.hub.add_repo(
        crate::support::hub_server::FakeRepo::new("owner/big")
            .file("README.md", "# big\n")
            .file("lora.safetensors", big.clone()),
    );
    w.hub.set_cdn_throttle(64 << 10, Duration::from_millis(25));
    w.manifest("", &entry("big", "owner/big::lora.safetensors"));
    let addr = free_port();
    let mut child = spawn_watch(&w, addr);

    // Wait until the download runs and has put at least 1 MiB in its `.part`.
    let tmp = w.models().join(".tmp");
    let deadline = Instant::now() + LIMIT;
    loop {
        let started = !w.hub.cdn_requests().is_empty();
        let part_big = files_named(&tmp, ".part")
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= 1 << 20));
        if started && part_big {
            break;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!("the download never got going: {}", stderr_of(&mut child));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(http_get(addr, "/readyz").map(|r| r.0), Some(503));
    sigterm(&child);
    let status = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("modelsync watch: manifest"), "{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
    // The partial is kept, nothing was promoted or recorded.
    let parts = files_named(&tmp, ".part");
    assert_eq!(parts.len(), 1, "{parts:?}");
    let kept = std::fs::metadata(&parts[0]).expect("part").len();
    assert!(kept > 0 && kept < big.len() as u64, "{kept}");
    assert!(w.store().all_models().expect("records").is_empty());

    // The next start resumes where it stopped: a Range request past 0, the whole file.
    w.hub.clear_log();
    w.hub.set_cdn_throttle(1 << 20, Duration::ZERO);
    let mut child = spawn_watch(&w, addr);
    let deadline = Instant::now() + LIMIT;
    while http_get(addr, "/readyz").map(|r| r.0) != Some(200) {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!("never ready: {}", stderr_of(&mut child));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let resumed = w.hub.cdn_requests().iter().any(|r| {
        r.header("range")
            .is_some_and(|v| v.starts_with("bytes=") && !v.starts_with("bytes=0-"))
    });
    assert!(resumed, "{:?}", w.hub.cdn_requests());
    let (code, body) = http_get(addr, "/status").expect("status");
    assert_eq!(code, 200);
    let st: StatusReport = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(st.entries[0].last_action.as_deref(), Some("install"));
    sigterm(&child);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0), "{}", stderr_of(&mut child));
    assert_eq!(std::fs::read(model_path(&w, "big")).expect("file"), big);
    assert!(files_named(&tmp, ".part").is_empty());
}

/// A preloader that records its calls and waits for `open` before answering.
#[derive(Default)]
struct GatePreloader {
    calls: std::sync::Mutex<Vec<(String, String)>>,
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl GatePreloader {
    fn open(&self) {
        *self.open.lock().expect("gate") = true;
        self.opened.notify_all();
    }

    fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().expect("calls").clone()
    }
}

impl modelsync::reconcile::Preloader for GatePreloader {
    fn preload(
        &self,
        entry: &str,
        record: &modelsync::AnyModelConfig,
    ) -> Result<String, modelsync::retry::Failure> {
        self.calls
            .lock()
            .expect("calls")
            .push((entry.to_owned(), record.common().name.clone()));
        let open = self.open.lock().expect("gate");
        let (open, _) = self
            .opened
            .wait_timeout_while(open, LIMIT, |o| !*o)
            .expect("gate");
        if *open {
            Ok("loaded".into())
        } else {
            Err(modelsync::retry::Failure::new(
                modelsync::retry::FailureKind::Other,
                "gate never opened",
            ))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_preloads_and_without_a_preloader_does_not() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/warm", 1, 2));
    w.manifest(
        &settings(&w, ""),
        "  - name: warm\n    source: owner/warm::lora.safetensors\n    preload: true\n",
    );
    let manifest_path = w.path().join("models.yaml");
    let m = modelsync::manifest::load(&manifest_path).expect("manifest loads");

    // With a preloader: converged, then preloaded, and only then ready.
    let gate = Arc::new(GatePreloader::default());
    let preloader: Arc<dyn modelsync::reconcile::Preloader> = gate.clone();
    let lock = StoreLock::acquire(&m.settings.database_path(), Duration::ZERO, |_| {})
        .expect("store lock");
    let conv = ManifestConverger::new(&m, lock, Arc::new(Recorder::new()))
        .with_hub_env(HubEnv::empty())
        .with_preloader(Some(preloader));
    assert!(conv.unpreloadable(&m).is_empty());
    let mut config = WatchConfig::new(&manifest_path);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.interval = Duration::from_hours(1);
    let watch = Watch::bind(config, Arc::new(conv)).await.expect("binds");
    let (stop, token) = CancelSource::new();
    let r = Running {
        handle: watch.handle(),
        addr: watch.local_addr(),
        stop,
        join: tokio::spawn(watch.run(token)),
    };
    let deadline = Instant::now() + LIMIT;
    while gate.calls().is_empty() {
        assert!(Instant::now() < deadline, "the preloader was never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gate.calls(), [("warm".to_owned(), "warm".to_owned())]);
    let readiness = r.handle.readiness();
    assert!(!readiness.ready, "ready before the preload finished");
    gate.open();
    r.eventually("ready after the preload", |st| st.ready).await;
    let e = r.entry("warm").expect("warm");
    assert!(e.preload && e.preloaded, "{e:?}");
    r.stop().await;

    // Without one: the entry is not announced as a preload entry, so readiness does not wait.
    let lock = StoreLock::acquire(&m.settings.database_path(), Duration::ZERO, |_| {})
        .expect("store lock after the first watch");
    let conv =
        ManifestConverger::new(&m, lock, Arc::new(Recorder::new())).with_hub_env(HubEnv::empty());
    assert_eq!(conv.unpreloadable(&m), ["warm"]);
    let mut config = WatchConfig::new(&manifest_path);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let watch = Watch::bind(config, Arc::new(conv)).await.expect("binds");
    let (stop, token) = CancelSource::new();
    let r = Running {
        handle: watch.handle(),
        addr: watch.local_addr(),
        stop,
        join: tokio::spawn(watch.run(token)),
    };
    r.eventually("ready without preloading", |st| st.ready)
        .await;
    let e = r.entry("warm").expect("warm");
    assert!(!e.preload && !e.preloaded, "{e:?}");
    assert_eq!(e.last_action.as_deref(), Some("unchanged"));
    r.stop().await;
}

/// `/status` of the spawned watcher, parsed; `None` while it does not answer.
fn status_of(addr: SocketAddr) -> Option<StatusReport> {
    let (code, body) = http_get(addr, "/status")?;
    (code == 200).then(|| serde_json::from_str(&body).expect("status parses"))
}

/// Waits until `/status` says `name` converged (the child must stay alive meanwhile).
fn wait_converged(child: &mut std::process::Child, addr: SocketAddr, name: &str) {
    let deadline = Instant::now() + LIMIT;
    while !status_of(addr).is_some_and(|st| converged(&st, name)) {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!("{name} never converged: {}", stderr_of(child));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Idle loopback connections, as many as asked for (the ones the server refused or closed
/// already count: they were attempts all the same).
fn flood(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect()
}

/// A flood of idle connections, more than the process has descriptors, against a watcher
/// whose descriptor limit is lowered: `/healthz` keeps answering and a manifest edit still
/// converges (the reconciler still has descriptors to read the manifest and write models).
#[test]
fn a_flood_of_idle_connections_leaves_healthz_and_the_reconciler_working() {
    use std::os::unix::process::CommandExt as _;
    const FD_LIMIT: libc::rlim_t = 200;
    const FLOOD: usize = 260;

    let w = Work::new();
    let a = w.local_lora("a.safetensors", 1);
    let b = w.local_lora("b.safetensors", 2);
    w.manifest("", &entry("a", &a.display().to_string()));
    let addr = free_port();
    let mut cmd = w.command(&["watch", "--listen", &addr.to_string(), "--interval", "1h"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit(2) is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: FD_LIMIT,
                rlim_max: FD_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().expect("modelsync watch starts");
    wait_converged(&mut child, addr, "a");

    let held = flood(addr, FLOOD);
    assert_eq!(
        http_get(addr, "/healthz").map(|r| r.0),
        Some(200),
        "/healthz behind {} idle connections",
        held.len()
    );

    // A second wave while the reconciler reads the edited manifest and installs `b` (the
    // first wave closes first, keeping this process's own descriptors bounded).
    drop(held);
    write_manifest(
        &w,
        &manifest_text(
            "",
            &format!(
                "{}{}",
                entry("a", &a.display().to_string()),
                entry("b", &b.display().to_string())
            ),
        ),
    );
    let held2 = flood(addr, FLOOD);
    wait_converged(&mut child, addr, "b");
    assert_eq!(http_get(addr, "/healthz").map(|r| r.0), Some(200));
    drop(held2);

    sigterm(&child);
    let status = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(model_path(&w, "b").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unidentified_model_converges_and_readyz_turns_200() {
    let w = Work::new();
    let tmp = w.path().join("llm.tmp.safetensors");
    // A Mamba language model: no probe rule knows it, so it is recorded as type `unknown`.
    crate::support::probe_fixtures::safetensors(
        &tmp,
        &[
            ("backbone.embeddings.weight", &[64, 16]),
            ("backbone.layers.0.mixer.A_log", &[32, 4]),
            ("lm_head.weight", &[64, 16]),
        ],
        None,
    );
    let bytes = std::fs::read(&tmp).expect("llm bytes");
    std::fs::remove_file(&tmp).expect("rm");
    w.hub.add_repo(
        crate::support::hub_server::FakeRepo::new("owner/llm").file("model.safetensors", bytes),
    );
    w.hub.add_repo(lora_repo("owner/a", 1, 2));
    let set = settings(&w, "");
    w.manifest(
        &set,
        &format!(
            "{}{}",
            entry("llm", "owner/llm::model.safetensors"),
            entry("a", "owner/a::lora.safetensors")
        ),
    );
    let r = start(&w, |_| {}).await;
    r.eventually("llm and a converge", |st| st.ready).await;
    let (code, body) = r.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    let e = r.entry("llm").expect("llm entry");
    assert_eq!(e.state, EntryPhase::Converged, "{e:?}");
    let rec = w
        .store()
        .all_models()
        .expect("records")
        .into_iter()
        .find(|m| m.name() == "llm")
        .expect("llm record");
    assert_eq!(rec.model_type(), modelsync::taxonomy::ModelType::Unknown);
    r.stop().await;
}

/// `settings.refresh_interval`: watch follows a branch that moves, upgrading the entry in place
/// (same key, new bytes, the lock at the new commit); a pinned entry of the same repo stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_interval_follows_a_moving_branch_and_leaves_pins_alone() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/moving", 1, 2));
    let pinned_at = w.hub.commit("owner/moving", "main");
    let models = format!(
        "{}{}    revision: {pinned_at}\n",
        entry("follows", "owner/moving::lora.safetensors"),
        entry("pinned", "owner/moving::lora.safetensors"),
    );
    w.manifest(&settings(&w, "  refresh_interval: 1s\n"), &models);
    let r = start(&w, |_| {}).await;
    r.eventually("both converge", |st| {
        converged(st, "follows") && converged(st, "pinned")
    })
    .await;
    let key_of = |w: &Work, name: &str| {
        w.store()
            .all_models()
            .expect("records")
            .into_iter()
            .find(|r| r.common().managed.as_ref().is_some_and(|m| m.entry == name))
            .map(|r| r.key().to_owned())
            .expect("a record")
    };
    let key = key_of(&w, "follows");
    let pinned_key = key_of(&w, "pinned");

    w.hub.add_repo(lora_repo("owner/moving", 9, 2));
    let moved_to = w.hub.commit("owner/moving", "main");
    r.eventually("the branch's entry upgrades", |_| {
        std::fs::read(model_path(&w, "follows")).is_ok_and(|b| b == lora_bytes(9, 2))
    })
    .await;
    r.eventually("the lock follows", |_| {
        modelsync::manifest::LockFile::read(&w.path().join("models.lock"))
            .ok()
            .flatten()
            .is_some_and(|l| l.entries["follows"].resolved_commit.as_deref() == Some(&*moved_to))
    })
    .await;
    assert_eq!(key_of(&w, "follows"), key);
    assert_eq!(key_of(&w, "pinned"), pinned_key);
    assert_eq!(
        std::fs::read(model_path(&w, "pinned")).expect("pinned file"),
        lora_bytes(1, 2)
    );
    r.stop().await;
}
