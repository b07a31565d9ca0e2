//! The download queue against a real HTTP server on 127.0.0.1 with injected faults.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelsync::download::{
    AccessToken, DownloadError, DownloadEvent, DownloadEventHandler, DownloadJob,
    DownloadJobStatus, DownloadQueue, DownloadQueueConfig, RetryPolicy, TransferConfig,
};
use modelsync::report::{Event, Recorder};
use sha2::Digest as _;

use crate::support::fileserver::{FileServer, FileSpec, RawMode, RawServer, Seen};

fn data(n: usize, seed: u64) -> Vec<u8> {
    // xorshift: incompressible enough, reproducible.
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn cfg() -> DownloadQueueConfig {
    DownloadQueueConfig {
        transfer: TransferConfig {
            connections_per_file: 1,
            min_range_size: 16 * 1024,
            retry: RetryPolicy {
                max_attempts: 4,
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                max_retry_after: Duration::from_secs(2),
            },
            stall_timeout: Duration::from_secs(20),
            state_save_interval: Duration::from_millis(20),
            sync_before_rename: false,
            ..TransferConfig::default()
        },
        progress_interval: Duration::from_millis(10),
        ..DownloadQueueConfig::default()
    }
}

fn ranged_cfg() -> DownloadQueueConfig {
    DownloadQueueConfig {
        transfer: TransferConfig {
            connections_per_file: 4,
            parallel_threshold: 100 * 1024,
            ..cfg().transfer
        },
        ..cfg()
    }
}

fn queue(cfg: DownloadQueueConfig) -> (DownloadQueue, Recorder) {
    let rec = Recorder::new();
    let q = DownloadQueue::new(cfg, Arc::new(rec.clone())).unwrap();
    (q, rec)
}

/// Polls until `cond` holds (fails the test after 20 s: a hang, not a timing assertion).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

fn names(rec: &Recorder, id: u64) -> Vec<&'static str> {
    rec.events()
        .iter()
        .filter_map(|e| match e {
            Event::Download(d) if d.job().id == id => Some(d.name()),
            _ => None,
        })
        .collect()
}

async fn run_one(q: &DownloadQueue, job: DownloadJob) -> DownloadJob {
    let job = q.submit_download_job(job, true).unwrap();
    q.wait_for_job(job.id, Some(Duration::from_mins(1)))
        .await
        .unwrap()
}

fn err_of(job: &DownloadJob) -> String {
    assert_eq!(job.status, DownloadJobStatus::Error, "{job:?}");
    crate::support::chain(job.error.as_deref().unwrap())
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".part"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn single_file_downloads_with_events_and_no_leftovers() {
    let srv = FileServer::start().await;
    let body = data(300_000, 1);
    srv.add("/m.bin", FileSpec::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("sub/m.bin");
    let (q, rec) = queue(cfg());
    let job = run_one(
        &q,
        DownloadJob::new(srv.url("/m.bin"), &dest)
            .with_expected_size(Some(300_000))
            .with_sha256(Some(sha256_hex(&body))),
    )
    .await;
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(job.download_path.as_deref(), Some(dest.as_path()));
    assert_eq!((job.bytes, job.total_bytes), (300_000, 300_000));
    assert!(job.job_sequence.is_some() && job.job_started.is_some() && job.job_ended.is_some());
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(leftovers(&dir.path().join("sub")).is_empty());
    let ev = names(&rec, job.id);
    assert_eq!(ev.first(), Some(&"enqueued"));
    assert_eq!(ev.last(), Some(&"completed"));
    assert!(ev.contains(&"running"));
    // Exactly one enqueued and one terminal event.
    assert_eq!(ev.iter().filter(|e| **e == "enqueued").count(), 1);
    assert_eq!(job.result().unwrap(), dest.as_path());
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_destination_takes_content_disposition_then_url_name() {
    let srv = FileServer::start().await;
    let body = data(50_000, 2);
    let mut spec = FileSpec::new(body.clone());
    spec.content_disposition = Some(r#"attachment; filename="civitai model.safetensors""#.into());
    srv.add("/api/download/models/123", spec);
    srv.add("/files/plain.ckpt", FileSpec::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(ranged_cfg());
    let a = q
        .create_download_job(
            &srv.url("/api/download/models/123"),
            dir.path(),
            None,
            true,
            10,
            None,
            vec![],
        )
        .unwrap();
    let b = q
        .create_download_job(
            &srv.url("/files/plain.ckpt?download=true"),
            dir.path(),
            None,
            true,
            10,
            None,
            vec![],
        )
        .unwrap();
    let c = q
        .create_download_job(
            &srv.url("/files/plain.ckpt"),
            dir.path(),
            Some("forced.bin"),
            true,
            10,
            None,
            vec![],
        )
        .unwrap();
    q.join().await;
    let a = q.id_to_job(a.id).unwrap();
    assert_eq!(
        a.download_path,
        Some(dir.path().join("civitai model.safetensors")),
        "{a:?}"
    );
    let b = q.id_to_job(b.id).unwrap();
    assert_eq!(
        b.download_path,
        Some(dir.path().join("plain.ckpt")),
        "{b:?}"
    );
    let c = q.id_to_job(c.id).unwrap();
    assert_eq!(
        c.download_path,
        Some(dir.path().join("forced.bin")),
        "{c:?}"
    );
    for p in [&a, &b, &c] {
        assert_eq!(
            std::fs::read(p.download_path.as_ref().unwrap()).unwrap(),
            body
        );
    }
    assert!(matches!(
        q.create_download_job(
            &srv.url("/files/plain.ckpt"),
            dir.path(),
            Some("../x"),
            true,
            10,
            None,
            vec![]
        ),
        Err(DownloadError::UnsafeFileName { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_content_disposition_names_are_sanitised_or_refused() {
    let srv = FileServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b");
    std::fs::create_dir_all(&dir).unwrap();
    let (q, _) = queue(cfg());
    let cases = [
        (r#"attachment; filename="../../x""#, Some("x")),
        (r#"attachment; filename="/etc/passwd""#, Some("passwd")),
        (r#"attachment; filename="..\\..\\win.bin""#, Some("win.bin")),
        (r#"attachment; filename="""#, None),
        (r#"attachment; filename="..""#, None),
    ];
    for (i, (cd, want)) in cases.iter().enumerate() {
        let path = format!("/cd/{i}/");
        let mut spec = FileSpec::new(b"payload".to_vec());
        spec.content_disposition = Some((*cd).to_owned());
        srv.add(&path, spec);
        let job = run_one(&q, DownloadJob::new(srv.url(&path), &dir)).await;
        if let Some(name) = want {
            assert_eq!(job.status, DownloadJobStatus::Completed, "{cd}: {job:?}");
            assert_eq!(job.download_path, Some(dir.join(name)));
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), b"payload");
        } else {
            let e = err_of(&job);
            assert!(e.contains("refusing file name"), "{e}");
        }
    }
    // Nothing escaped the destination folder.
    assert!(!root.path().join("x").exists() && !root.path().join("a/x").exists());
    let mut outside: Vec<_> = std::fs::read_dir(root.path().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside.sort();
    assert_eq!(outside, vec![std::ffi::OsString::from("b")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn lower_priority_runs_first_with_one_slot() {
    let srv = FileServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (q, rec) = queue(DownloadQueueConfig {
        max_parallel_dl: 1,
        ..cfg()
    });
    let mut ids = Vec::new();
    for (i, prio) in [30, 10, 20].into_iter().enumerate() {
        let path = format!("/p{i}.bin");
        srv.add(&path, FileSpec::new(data(20_000, i as u64)));
        let job = DownloadJob::new(srv.url(&path), dir.path().join(format!("p{i}.bin")))
            .with_priority(prio);
        ids.push((prio, q.submit_download_job(job, false).unwrap().id));
    }
    assert!(
        q.list_jobs()
            .iter()
            .all(|j| j.status == DownloadJobStatus::Idle)
    );
    q.start_all();
    q.join().await;
    let mut by_seq: Vec<_> = q
        .list_jobs()
        .into_iter()
        .map(|j| (j.job_sequence.unwrap(), j.priority, j.status))
        .collect();
    by_seq.sort_unstable();
    assert_eq!(
        by_seq.iter().map(|x| (x.1, x.2)).collect::<Vec<_>>(),
        vec![
            (10, DownloadJobStatus::Completed),
            (20, DownloadJobStatus::Completed),
            (30, DownloadJobStatus::Completed)
        ]
    );
    let completed: Vec<i32> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Download(DownloadEvent::Completed { job }) => Some(job.priority),
            _ => None,
        })
        .collect();
    assert_eq!(completed, vec![10, 20, 30]);
    q.prune_jobs();
    assert!(q.list_jobs().is_empty());
    assert!(matches!(
        q.id_to_job(ids[0].1),
        Err(DownloadError::UnknownJobId(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_then_resume_continues_from_the_partial() {
    let srv = FileServer::start().await;
    let body = data(1_000_000, 3);
    let mut spec = FileSpec::new(body.clone());
    spec.stall_after = Some(262_144);
    srv.add("/p.bin", spec);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("p.bin");
    let (q, rec) = queue(cfg());
    let job = q
        .submit_download_job(
            DownloadJob::new(srv.url("/p.bin"), &dest).with_sha256(Some(sha256_hex(&body))),
            true,
        )
        .unwrap();
    until("the first 256 KiB", || {
        q.id_to_job(job.id).unwrap().bytes >= 262_144
    })
    .await;
    q.pause_job(job.id).unwrap();
    until("paused", || {
        q.id_to_job(job.id).unwrap().status == DownloadJobStatus::Paused
    })
    .await;
    let part = dir.path().join("p.bin.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 262_144);
    assert_eq!(q.id_to_job(job.id).unwrap().bytes, 262_144);
    q.start_job(job.id).unwrap();
    let done = q
        .wait_for_job(job.id, Some(Duration::from_mins(1)))
        .await
        .unwrap();
    assert_eq!(done.status, DownloadJobStatus::Completed, "{done:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let seen = srv.seen("/p.bin");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].range.as_deref(), Some("bytes=262144-"));
    assert_eq!(seen[1].status, 206);
    assert_eq!(seen[1].sent(), 1_000_000 - 262_144);
    let ev = names(&rec, job.id);
    let paused_at = ev.iter().position(|e| *e == "paused").unwrap();
    assert_eq!(ev[paused_at + 1], "running", "{ev:?}");
    assert_eq!(ev.iter().filter(|e| **e == "enqueued").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_removes_the_partial_unless_preserved() {
    let srv = FileServer::start().await;
    for preserve in [false, true] {
        let path = format!("/c{preserve}.bin");
        let mut spec = FileSpec::new(data(500_000, 4));
        spec.stall_after = Some(100_000);
        srv.add(&path, spec);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("c.bin");
        let (q, rec) = queue(cfg());
        let job = q
            .submit_download_job(
                DownloadJob::new(srv.url(&path), &dest).with_preserve_partial_downloads(preserve),
                true,
            )
            .unwrap();
        until("some bytes", || {
            q.id_to_job(job.id).unwrap().bytes >= 100_000
        })
        .await;
        q.cancel_job(job.id).unwrap();
        let done = q
            .wait_for_job(job.id, Some(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(done.status, DownloadJobStatus::Cancelled);
        assert_eq!(names(&rec, job.id).last(), Some(&"cancelled"));
        assert!(!dest.exists());
        assert_eq!(dir.path().join("c.bin.part").exists(), preserve);
        // A finished job cannot start again.
        assert!(matches!(
            q.start_job(job.id),
            Err(DownloadError::InvalidState { .. })
        ));
    }
}

/// A file server with `body` at `/NAME` whose requests up to number `drop_after.0` break
/// after `drop_after.1` bytes, a temp dir, and the destination NAME in it.
async fn dropping(
    name: &str,
    body: &[u8],
    drop_after: (u32, u64),
) -> (FileServer, tempfile::TempDir, PathBuf) {
    let srv = FileServer::start().await;
    let mut spec = FileSpec::new(body.to_vec());
    spec.drop_after = Some(drop_after);
    srv.add(&format!("/{name}"), spec);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join(name);
    (srv, dir, dest)
}

#[tokio::test(flavor = "multi_thread")]
async fn resumes_after_a_dropped_connection() {
    let body = data(400_000, 5);
    let (srv, _dir, dest) = dropping("d.bin", &body, (1, 100_000)).await;
    let (q, _) = queue(cfg());
    let job = run_one(
        &q,
        DownloadJob::new(srv.url("/d.bin"), &dest).with_sha256(Some(sha256_hex(&body))),
    )
    .await;
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let seen = srv.seen("/d.bin");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].range.is_some(), "{seen:?}");
    let from: u64 = seen[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .unwrap()
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 100_000, "{from}");
    assert_eq!(seen[1].sent(), 400_000 - from);
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_5xx_and_429_then_gives_up_with_the_last_cause() {
    let srv = FileServer::start().await;
    let body = data(30_000, 6);
    let mut s500 = FileSpec::new(body.clone());
    s500.fail_first = 2;
    srv.add("/500.bin", s500);
    let mut s429 = FileSpec::new(body.clone());
    s429.rate_limit_first = (1, 1);
    srv.add("/429.bin", s429);
    let mut always = FileSpec::new(body.clone());
    always.fail_first = 1000;
    srv.add("/always.bin", always);
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(cfg());
    let ok500 = run_one(
        &q,
        DownloadJob::new(srv.url("/500.bin"), dir.path().join("a")),
    )
    .await;
    assert_eq!(ok500.status, DownloadJobStatus::Completed, "{ok500:?}");
    assert_eq!(
        srv.seen("/500.bin")
            .iter()
            .map(|s| s.status)
            .collect::<Vec<_>>(),
        // The 416 to `bytes=30000-` confirms the 200's Content-Length (nothing else vouches
        // for the size of this download).
        vec![500, 500, 200, 416]
    );
    let ok429 = run_one(
        &q,
        DownloadJob::new(srv.url("/429.bin"), dir.path().join("b")),
    )
    .await;
    assert_eq!(ok429.status, DownloadJobStatus::Completed, "{ok429:?}");
    assert_eq!(
        srv.seen("/429.bin")
            .iter()
            .map(|s| s.status)
            .collect::<Vec<_>>(),
        vec![429, 200, 416]
    );
    let gave_up = run_one(
        &q,
        DownloadJob::new(srv.url("/always.bin"), dir.path().join("c")),
    )
    .await;
    let e = err_of(&gave_up);
    assert!(
        e.contains("gave up after 4 attempts") && e.contains("HTTP 500"),
        "{e}"
    );
    assert_eq!(srv.seen("/always.bin").len(), 4);
    assert!(!dir.path().join("c").exists() && !dir.path().join("c.part").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_stream_is_retried_from_where_it_stopped() {
    let srv = FileServer::start().await;
    let body = data(200_000, 7);
    let mut spec = FileSpec::new(body.clone());
    spec.stall_after = Some(50_000);
    srv.add("/s.bin", spec);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("s.bin");
    let (q, _) = queue(DownloadQueueConfig {
        transfer: TransferConfig {
            stall_timeout: Duration::from_millis(300),
            ..cfg().transfer
        },
        ..cfg()
    });
    let job = run_one(&q, DownloadJob::new(srv.url("/s.bin"), &dest)).await;
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let seen = srv.seen("/s.bin");
    assert_eq!(seen[1].range.as_deref(), Some("bytes=50000-"));
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_range_download_equals_the_source() {
    let srv = FileServer::start().await;
    let body = data(3_000_000, 8);
    srv.add("/big.bin", FileSpec::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.bin");
    let (q, rec) = queue(ranged_cfg());
    let job = run_one(
        &q,
        DownloadJob::new(srv.url("/big.bin"), &dest).with_sha256(Some(sha256_hex(&body))),
    )
    .await;
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(leftovers(dir.path()).is_empty());
    let seen = srv.seen("/big.bin");
    let ranged: Vec<_> = seen
        .iter()
        .filter(|s| s.status == 206 && s.range.as_deref() != Some("bytes=0-0"))
        .collect();
    assert_eq!(ranged.len(), 4, "{seen:?}");
    // Every byte was sent once (plus the one-byte probe).
    assert_eq!(srv.bytes_sent("/big.bin"), 3_000_001);
    let running: Vec<u64> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Download(DownloadEvent::Running { job }) => Some(job.bytes),
            _ => None,
        })
        .collect();
    assert!(running.windows(2).all(|w| w[0] <= w[1]), "{running:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_range_resumes_a_dropped_range_and_a_single_stream_partial() {
    let body = data(1_000_000, 9);
    // The probe is request 1; requests 2..=3 (the first ranges) break after 10 kB.
    let (srv, dir, dest) = dropping("r.bin", &body, (3, 10_000)).await;
    // A single-stream partial of the right bytes is kept as a done prefix.
    std::fs::write(dir.path().join("r.bin.part"), &body[..300_000]).unwrap();
    let (q, _) = queue(ranged_cfg());
    let job = run_one(
        &q,
        DownloadJob::new(srv.url("/r.bin"), &dest).with_sha256(Some(sha256_hex(&body))),
    )
    .await;
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    for s in srv.seen("/r.bin") {
        let r = s.range.unwrap();
        assert!(
            r == "bytes=0-0" || !r.starts_with("bytes=0-"),
            "re-fetched the prefix: {r}"
        );
    }
}

/// A file in more ranges than streams (ranges of at most `max_range_size`): two of them break
/// part-way and resume where they stopped; every byte is sent once, the digests are the file's.
#[tokio::test(flavor = "multi_thread")]
async fn many_small_ranges_resume_where_they_broke_and_send_each_byte_once() {
    let body = data(1_000_000, 11);
    // The probe is request 1; requests 2..=3 (the first two ranges) break after 10 kB.
    let (srv, dir, dest) = dropping("m.bin", &body, (3, 10_000)).await;
    let mut config = ranged_cfg();
    config.transfer.max_range_size = 64 * 1024;
    let (q, _) = queue(config);
    let job = run_one(
        &q,
        DownloadJob::new(srv.url("/m.bin"), &dest)
            .with_sha256(Some(sha256_hex(&body)))
            .with_hash_algorithms(vec![modelsync::hash::HashAlgorithm::Blake3]),
    )
    .await;
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(
        job.digest(modelsync::hash::HashAlgorithm::Blake3),
        Some(format!("blake3:{}", blake3::hash(&body).to_hex()).as_str())
    );
    assert!(leftovers(dir.path()).is_empty());
    let seen = srv.seen("/m.bin");
    let ranged = seen
        .iter()
        .filter(|s| s.range.as_deref() != Some("bytes=0-0"))
        .count();
    assert!(ranged >= 1_000_000usize.div_ceil(64 * 1024) + 2, "{seen:?}");
    assert_eq!(srv.bytes_sent("/m.bin"), 1_000_001, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_process_resumes_every_range_without_refetching() {
    let srv = FileServer::start().await;
    let mib = 1u64 << 20;
    let body = data(4 * mib as usize, 10);
    let hang = Arc::new(AtomicBool::new(true));
    let mut spec = FileSpec::new(body.clone());
    spec.hang = Some((3 * mib, 64 * 1024, hang.clone()));
    srv.add("/k.bin", spec);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("k.bin");
    let state = dir.path().join("k.bin.part.state");
    let fetch = |d: &Path| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_modelsync"));
        c.args(["fetch", &srv.url("/k.bin")])
            .arg(d)
            .args([
                "--connections",
                "4",
                "--threshold",
                "1MiB",
                "--no-sync",
                "--no-progress",
            ])
            .args(["--sha256", &sha256_hex(&body)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        c
    };
    let mut child = fetch(&dest).spawn().unwrap();
    let three_done = || {
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| {
                let r = &v["ranges"];
                (0..3).all(|i| r[i]["done"].as_u64() == Some(mib))
            })
    };
    until("three ranges saved as done", three_done).await;
    child.kill().await.unwrap();
    assert!(!dest.exists());
    let before = srv.seen("/k.bin").len();
    hang.store(false, Ordering::SeqCst);
    let out = fetch(&dest).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dest.display().to_string()
    );
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!state.exists());
    let second: Vec<_> = srv.seen("/k.bin").into_iter().skip(before).collect();
    for s in &second {
        let r = s.range.as_deref().unwrap();
        let from: u64 = r["bytes=".len()..]
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            r == "bytes=0-0" || from >= 3 * mib,
            "completed range re-fetched: {r}"
        );
    }
    let sent: u64 = second.iter().map(Seen::sent).sum();
    assert!(sent <= mib + 1, "second run fetched {sent} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_mismatch_is_an_error_and_nothing_is_promoted() {
    let srv = FileServer::start().await;
    let body = data(300_000, 11);
    let mut spec = FileSpec::new(body.clone());
    spec.flip_byte = Some(123_456);
    srv.add("/flip.bin", spec);
    for config in [cfg(), ranged_cfg()] {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("flip.bin");
        let (q, _) = queue(config);
        let job = run_one(
            &q,
            DownloadJob::new(srv.url("/flip.bin"), &dest)
                .with_sha256(Some(sha256_hex(&body)))
                .with_preserve_partial_downloads(true),
        )
        .await;
        let e = err_of(&job);
        assert!(
            e.contains("sha256 mismatch") && e.contains(&sha256_hex(&body)),
            "{e}"
        );
        assert!(!dest.exists());
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn git_blob_sha1_and_size_are_verified() {
    let srv = FileServer::start().await;
    let body = b"{\"_class_name\": \"UNet2DConditionModel\"}\n".to_vec();
    srv.add("/config.json", FileSpec::new(body.clone()));
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", body.len()).as_bytes());
    h.update(&body);
    let good = hex::encode(h.finalize());
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(cfg());
    let ok = run_one(
        &q,
        DownloadJob::new(srv.url("/config.json"), dir.path().join("a.json"))
            .with_git_sha1(Some(good)),
    )
    .await;
    assert_eq!(ok.status, DownloadJobStatus::Completed, "{ok:?}");
    let bad = run_one(
        &q,
        DownloadJob::new(srv.url("/config.json"), dir.path().join("b.json"))
            .with_git_sha1(Some("0".repeat(40))),
    )
    .await;
    assert!(err_of(&bad).contains("git sha1 mismatch"));
    assert!(!dir.path().join("b.json").exists());
    let size = run_one(
        &q,
        DownloadJob::new(srv.url("/config.json"), dir.path().join("c.json"))
            .with_expected_size(Some(7)),
    )
    .await;
    assert!(err_of(&size).contains("size mismatch"));
    assert!(!dir.path().join("c.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_errors_name_the_url_but_never_the_token() {
    let srv = FileServer::start().await;
    let mut spec = FileSpec::new(b"secret weights".to_vec());
    spec.token = Some("hf_GOODTOKEN".into());
    srv.add("/private.bin", spec);
    let dir = tempfile::tempdir().unwrap();
    let (q, rec) = queue(cfg());
    let url = srv.url("/private.bin?X-Signature=SIGSECRET");
    let cases = [
        (None, 401, "none was sent"),
        (Some("hf_BADTOKEN"), 403, "access denied"),
    ];
    for (token, status, says) in cases {
        let job = run_one(
            &q,
            DownloadJob::new(&url, dir.path().join("p.bin"))
                .with_access_token(token.map(AccessToken::from)),
        )
        .await;
        let e = err_of(&job);
        assert!(
            e.contains(&format!("HTTP {status}")) && e.contains(says),
            "{e}"
        );
        assert!(e.contains(&srv.url("/private.bin")), "{e}");
        assert!(!e.contains("BADTOKEN") && !e.contains("SIGSECRET"), "{e}");
        assert_eq!(job.error.as_ref().unwrap().http_status(), Some(status));
    }
    let missing = run_one(
        &q,
        DownloadJob::new(srv.url("/nope.bin"), dir.path().join("n.bin")),
    )
    .await;
    let e = err_of(&missing);
    assert!(e.contains("HTTP 404") && e.contains("/nope.bin"), "{e}");
    let good = run_one(
        &q,
        DownloadJob::new(&url, dir.path().join("p.bin"))
            .with_access_token(Some("hf_GOODTOKEN".into())),
    )
    .await;
    assert_eq!(good.status, DownloadJobStatus::Completed);
    // Nothing the queue reported carries a token or a signature.
    let all = serde_json::to_string(&rec.events()).unwrap() + &format!("{:?}", rec.events());
    assert!(!all.contains("TOKEN") && !all.contains("SIGSECRET"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_not_sent_to_a_redirect_host() {
    let hub = FileServer::start().await;
    let cdn = FileServer::start().await;
    let body = data(150_000, 12);
    cdn.add("/blob/abc", FileSpec::new(body.clone()));
    let mut redirect = FileSpec::new(Vec::new());
    redirect.redirect = Some(cdn.url("/blob/abc?sig=1"));
    hub.add("/repo/resolve/main/model.bin", redirect);
    let mut same = FileSpec::new(Vec::new());
    same.redirect = Some("/repo/resolve/main/model.bin".into());
    hub.add("/old/name.bin", same);
    let dir = tempfile::tempdir().unwrap();
    for config in [cfg(), ranged_cfg()] {
        let (q, _) = queue(config);
        let job = run_one(
            &q,
            DownloadJob::new(hub.url("/old/name.bin"), dir.path().join("m.bin"))
                .with_access_token(Some("hf_TOKEN".into())),
        )
        .await;
        assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
        assert_eq!(std::fs::read(dir.path().join("m.bin")).unwrap(), body);
    }
    for s in hub
        .seen("/old/name.bin")
        .iter()
        .chain(&hub.seen("/repo/resolve/main/model.bin"))
    {
        assert_eq!(
            s.authorization.as_deref(),
            Some("Bearer hf_TOKEN"),
            "same host keeps the token"
        );
    }
    let cdn_seen = cdn.seen("/blob/abc");
    assert!(!cdn_seen.is_empty());
    assert!(
        cdn_seen.iter().all(|s| s.authorization.is_none()),
        "{cdn_seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn html_instead_of_a_model_is_rejected() {
    let srv = FileServer::start().await;
    let mut spec = FileSpec::new(b"<html><body>Please log in</body></html>".to_vec());
    spec.content_type = Some("text/html; charset=utf-8".into());
    srv.add("/model.safetensors", spec.clone());
    srv.add("/page.html", spec);
    let dir = tempfile::tempdir().unwrap();
    for config in [cfg(), ranged_cfg()] {
        let (q, _) = queue(config);
        let job = run_one(
            &q,
            DownloadJob::new(
                srv.url("/model.safetensors"),
                dir.path().join("m.safetensors"),
            ),
        )
        .await;
        assert!(err_of(&job).contains("HTML page instead of the file `m.safetensors`"));
        assert!(!dir.path().join("m.safetensors").exists());
        let page = run_one(
            &q,
            DownloadJob::new(srv.url("/page.html"), dir.path().join("page.html")),
        )
        .await;
        assert_eq!(page.status, DownloadJobStatus::Completed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_job_times_out() {
    let srv = FileServer::start().await;
    let mut spec = FileSpec::new(data(100_000, 13));
    spec.stall_after = Some(1000);
    srv.add("/slow.bin", spec);
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(cfg());
    let job = q
        .submit_download_job(
            DownloadJob::new(srv.url("/slow.bin"), dir.path().join("s")),
            true,
        )
        .unwrap();
    let r = q
        .wait_for_job(job.id, Some(Duration::from_millis(50)))
        .await;
    assert!(
        matches!(r, Err(DownloadError::Timeout { id, .. }) if id == job.id),
        "{r:?}"
    );
    q.cancel_all();
    let done = q.wait_for_job(job.id, None).await.unwrap();
    assert_eq!(done.status, DownloadJobStatus::Cancelled);
    assert!(matches!(
        q.wait_for_job(999, None).await,
        Err(DownloadError::UnknownJobId(999))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_and_panicking_handlers_never_fail_the_download() {
    let srv = FileServer::start().await;
    srv.add("/h.bin", FileSpec::new(data(10_000, 14)));
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let l1 = log.clone();
    let l2 = log.clone();
    let (q, _) = queue(DownloadQueueConfig {
        event_handlers: vec![DownloadEventHandler::new(move |j| {
            l2.lock().unwrap().push(format!("default:{}", j.status));
            Err("default handler says no".into())
        })],
        ..cfg()
    });
    let job = DownloadJob::new(srv.url("/h.bin"), dir.path().join("h.bin"))
        .with_handler(DownloadEventHandler::infallible(move |j| {
            l1.lock().unwrap().push(format!("job:{}", j.status));
        }))
        .with_handler(DownloadEventHandler::infallible(|_| panic!("handler bug")));
    let done = run_one(&q, job).await;
    assert_eq!(done.status, DownloadJobStatus::Completed);
    let log = log.lock().unwrap().clone();
    assert_eq!(log.first().map(String::as_str), Some("job:enqueued"));
    assert_eq!(log.get(1).map(String::as_str), Some("default:enqueued"));
    assert_eq!(log.last().map(String::as_str), Some("default:completed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn partial_edge_cases_416_200_and_disk_space() {
    let srv = FileServer::start().await;
    let body = data(64_000, 15);
    srv.add("/e.bin", FileSpec::new(body.clone()));
    let mut no_ranges = FileSpec::new(body.clone());
    no_ranges.no_ranges = true;
    srv.add("/nr.bin", no_ranges);
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(cfg());
    // A whole .part (killed before the rename): 416 → promoted without a byte re-sent.
    std::fs::write(dir.path().join("a.bin.part"), &body).unwrap();
    let a = run_one(
        &q,
        DownloadJob::new(srv.url("/e.bin"), dir.path().join("a.bin"))
            .with_sha256(Some(sha256_hex(&body))),
    )
    .await;
    assert_eq!(a.status, DownloadJobStatus::Completed, "{a:?}");
    assert_eq!(srv.seen("/e.bin")[0].status, 416);
    assert_eq!(srv.bytes_sent("/e.bin"), 0);
    // A server without ranges answers 200: start over, garbage prefix discarded.
    std::fs::write(dir.path().join("b.bin.part"), b"garbage").unwrap();
    let b = run_one(
        &q,
        DownloadJob::new(srv.url("/nr.bin"), dir.path().join("b.bin"))
            .with_sha256(Some(sha256_hex(&body))),
    )
    .await;
    assert_eq!(b.status, DownloadJobStatus::Completed, "{b:?}");
    assert_eq!(std::fs::read(dir.path().join("b.bin")).unwrap(), body);
    // Known size larger than the disk: fails before any request.
    let before = srv.seen("/e.bin").len();
    let c = run_one(
        &q,
        DownloadJob::new(srv.url("/e.bin"), dir.path().join("c.bin"))
            .with_expected_size(Some(1 << 60)),
    )
    .await;
    assert!(err_of(&c).contains("not enough disk space"));
    assert_eq!(srv.seen("/e.bin").len(), before);
    // Bad URLs are refused at submission.
    assert!(matches!(
        q.submit_download_job(DownloadJob::new("ftp://x/y", dir.path().join("d")), true),
        Err(DownloadError::InvalidUrl { .. })
    ));
}

// ------------------------------------------------------------------ hostile servers

/// A server that always answers 200 with the whole Content-Length, sends 40 % and closes,
/// ignoring Range: every attempt starts over from 0 and breaks at the same place. No attempt
/// after the first makes net progress, so the download gives up after `max_attempts`
/// requests (it used to reset its count on any byte and loop forever).
#[tokio::test(flavor = "multi_thread")]
async fn a_truncating_server_that_restarts_from_zero_runs_out_of_attempts() {
    let body = Arc::new(data(100_000, 21));
    let srv = RawServer::start(RawMode::Truncating {
        data: body.clone(),
        cut: 40_000,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("t.bin");
    let (q, _) = queue(cfg());
    let job = run_one(&q, DownloadJob::new(srv.url("/t.bin"), &dest)).await;
    let e = err_of(&job);
    assert!(e.contains("gave up after 4 attempts"), "{e}");
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    // It did ask to resume; the server did not.
    assert!(reqs[1].contains("bytes=40000-"), "{}", reqs[1]);
    assert!(!dest.exists());
}

/// A server that accepts and reads the request but never answers: every attempt ends at the
/// response timeout, and the download fails after `max_attempts` requests.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_fails_after_bounded_attempts() {
    let srv = RawServer::start(RawMode::Silent).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("s.bin");
    let (q, _) = queue(DownloadQueueConfig {
        transfer: TransferConfig {
            response_timeout: Duration::from_millis(100),
            retry: RetryPolicy {
                max_attempts: 3,
                ..cfg().transfer.retry
            },
            ..cfg().transfer
        },
        ..cfg()
    });
    let job = run_one(&q, DownloadJob::new(srv.url("/s.bin?token=s3cr3t"), &dest)).await;
    let e = err_of(&job);
    assert!(
        e.contains("gave up after 3 attempts") && e.contains("no response within 100ms"),
        "{e}"
    );
    assert!(!e.contains("s3cr3t"), "{e}");
    assert_eq!(srv.requests().len(), 3);
    assert!(!dest.exists());
}

/// A server that never stalls and never ends (one byte at a time) is stopped by the file's
/// total time budget.
#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_server_is_stopped_by_the_download_timeout() {
    let srv = RawServer::start(RawMode::Drip {
        data: Arc::new(data(1 << 20, 22)),
        every: Duration::from_millis(2),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d.bin");
    let (q, _) = queue(DownloadQueueConfig {
        file_timeout: Some(Duration::from_millis(300)),
        ..cfg()
    });
    let job = run_one(&q, DownloadJob::new(srv.url("/d.bin"), &dest)).await;
    let e = err_of(&job);
    assert!(
        e.contains("did not finish within 300ms (the download timeout)"),
        "{e}"
    );
    assert_eq!(srv.requests().len(), 1);
    assert!(!dest.exists());
}

/// No Content-Length and a close after half the file: the end of the body cannot be told from
/// the end of the file. A server that answers Range gets asked for the rest until its
/// Content-Range total is reached; one that does not cannot confirm, and nothing is promoted.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_without_content_length_cut_short_is_never_complete() {
    let body = Arc::new(data(100_000, 23));
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = queue(cfg());

    let ranged = RawServer::start(RawMode::CloseDelimited {
        data: body.clone(),
        cut: 50_000,
        ranges: true,
    })
    .await;
    let dest = dir.path().join("ranged.bin");
    let job = run_one(&q, DownloadJob::new(ranged.url("/m.bin"), &dest)).await;
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), *body);
    let reqs = ranged.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[1].contains("bytes=50000-"), "{}", reqs[1]);

    let plain = RawServer::start(RawMode::CloseDelimited {
        data: body.clone(),
        cut: 50_000,
        ranges: false,
    })
    .await;
    let dest = dir.path().join("plain.bin");
    let job = run_one(&q, DownloadJob::new(plain.url("/m.bin"), &dest)).await;
    let e = err_of(&job);
    assert!(
        e.contains("cannot tell whether the file is complete"),
        "{e}"
    );
    assert!(!dest.exists());
    assert_eq!(plain.requests().len(), 2);

    // The same server with the whole body: still unconfirmable without a hash, accepted with
    // one (the content is then checked).
    let whole = RawServer::start(RawMode::CloseDelimited {
        data: body.clone(),
        cut: usize::MAX,
        ranges: false,
    })
    .await;
    let dest = dir.path().join("whole.bin");
    let job = run_one(&q, DownloadJob::new(whole.url("/m.bin"), &dest)).await;
    assert!(err_of(&job).contains("cannot tell"));
    let job = run_one(
        &q,
        DownloadJob::new(whole.url("/m.bin"), &dest).with_sha256(Some(sha256_hex(&body))),
    )
    .await;
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), *body);

    // A complete close-delimited body from a server that answers Range: one 416 confirms it.
    let confirmed = RawServer::start(RawMode::CloseDelimited {
        data: body.clone(),
        cut: usize::MAX,
        ranges: true,
    })
    .await;
    let dest = dir.path().join("confirmed.bin");
    let job = run_one(&q, DownloadJob::new(confirmed.url("/m.bin"), &dest)).await;
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), *body);
    assert!(confirmed.requests()[1].contains("bytes=100000-"));
}

/// A Content-Length smaller than the body: the client reads what it announced, then asks for
/// what follows, and gets the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_content_length_smaller_than_the_body_is_not_the_whole_file() {
    let body = Arc::new(data(100_000, 24));
    let srv = RawServer::start(RawMode::ShortLength {
        data: body.clone(),
        claimed: 30_000,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("short.bin");
    let (q, _) = queue(cfg());
    let job = run_one(&q, DownloadJob::new(srv.url("/m.bin"), &dest)).await;
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(std::fs::read(&dest).unwrap().len(), body.len());
    assert_eq!(std::fs::read(&dest).unwrap(), *body);
}

// ------------------------------------------------------------------ secrets in URLs

const SECRET: &str = "civ_s3cr3t_T0KEN_4242";

fn binary(cwd: &Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_modelsync"));
    c.args(args)
        .current_dir(cwd)
        .env_remove("MODELSYNC_FILE")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("CIVITAI_TOKEN", SECRET);
    c
}

/// Every file under `dir` whose bytes contain the secret.
fn files_with_secret(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(b) = std::fs::read(&p)
                && b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes())
            {
                out.push(p);
            }
        }
    }
    out
}

/// A manifest URL with `?token=${CIVITAI_TOKEN}`: the real binary downloads with the token,
/// and no output (text or JSON, stdout or stderr) and no file it writes (lock file, store,
/// lock-holder record, models) contains the token's value.
#[test]
fn url_tokens_never_reach_an_output_or_a_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("fixture.safetensors");
    let k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    crate::support::probe_fixtures::safetensors(
        &src,
        &[
            (&format!("{k}.lora_down.weight"), &[4, 768]),
            (&format!("{k}.lora_up.weight"), &[320, 4]),
        ],
        Some(
            serde_json::json!({"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora"}),
        ),
    );
    let bytes = std::fs::read(&src).unwrap();
    std::fs::remove_file(&src).unwrap();
    let srv = rt.block_on(FileServer::start());
    srv.add(
        "/api/download/models/1",
        FileSpec {
            content_disposition: Some(r#"attachment; filename="detail.safetensors""#.into()),
            ..FileSpec::new(bytes)
        },
    );
    let hang = rt.block_on(RawServer::start(RawMode::Drip {
        data: Arc::new(data(1 << 20, 31)),
        every: Duration::from_millis(50),
    }));
    let manifest = format!(
        "version: 1\nsettings:\n  models_dir: models\nmodels:\n  - name: detail\n    source: http://u:${{CIVITAI_TOKEN}}@{}/api/download/models/1?type=Model&token=${{CIVITAI_TOKEN}}&sig=${{CIVITAI_TOKEN}}&dl=${{CIVITAI_TOKEN}}\n",
        srv.addr
    );
    std::fs::write(dir.path().join("models.yaml"), &manifest).unwrap();

    let mut outputs = Vec::new();
    let mut run = |args: &[&str]| {
        let o = binary(dir.path(), args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        outputs.push((args.join(" "), text.clone()));
        (o.status, text)
    };
    let (_, diff) = run(&["diff"]);
    assert!(diff.contains("token=***"), "{diff}");
    run(&["-o", "json", "diff"]);
    let (st, applied) = run(&["apply"]);
    assert!(st.success(), "{applied}");
    run(&["-o", "json", "apply"]);
    run(&["status"]);
    run(&["-o", "json", "status"]);
    run(&["list"]);
    run(&["-o", "json", "list"]);
    run(&["-o", "json", "show", "detail"]);
    run(&["verify"]);
    // The download itself carried the token.
    let seen = srv.seen("/api/download/models/1");
    assert!(
        seen.iter()
            .any(|s| s.query.as_deref().is_some_and(|q| q.contains(SECRET))),
        "{seen:?}"
    );
    let lock = std::fs::read_to_string(dir.path().join("models.lock")).unwrap();
    // Secret by name (`token`, `sig`) or by coming from `${VAR}` (`dl`); the rest is kept.
    assert!(
        lock.contains("?type=Model&token=***&sig=***&dl=***"),
        "{lock}"
    );

    // A secret on the command line never reaches the lock-holder record, nor the message of
    // the process that waits for it.
    let hang_url = format!("{}?token={SECRET}", hang.url("/x/big.safetensors"));
    let mut holder = binary(dir.path(), &["import", &hang_url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    rt.block_on(until("the import to start downloading", || {
        !hang.requests().is_empty()
    }));
    let record = std::fs::read_to_string(dir.path().join("models/modelsync.db.lock")).unwrap();
    assert!(record.contains("modelsync import"), "{record}");
    let secret_files = files_with_secret(dir.path());
    let (st, waiter) = run(&["apply", "--lock-timeout", "0s"]);
    assert!(!st.success(), "{waiter}");
    assert!(waiter.contains("modelsync import"), "{waiter}");
    holder.kill().unwrap();
    let o = holder.wait_with_output().unwrap();
    outputs.push((
        "import".into(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    ));

    for (cmd, text) in &outputs {
        assert!(
            !text.contains(SECRET),
            "`modelsync {cmd}` printed the token:\n{text}"
        );
    }
    assert!(
        secret_files.is_empty(),
        "the token was written to {secret_files:?}"
    );
    let after = files_with_secret(dir.path());
    assert!(after.is_empty(), "the token was written to {after:?}");
}

/// `settings.download_timeout` reaches the queue `apply` uses: a server that trickles bytes
/// forever fails the entry with the budget in the message, and nothing is registered.
#[test]
fn apply_honours_settings_download_timeout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let drip = rt.block_on(RawServer::start(RawMode::Drip {
        data: Arc::new(data(1 << 20, 32)),
        every: Duration::from_millis(5),
    }));
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        "version: 1\nsettings:\n  models_dir: models\n  download_timeout: 1s\nmodels:\n  - name: slow\n    source: {}\n",
        drip.url("/slow.safetensors")
    );
    std::fs::write(dir.path().join("models.yaml"), manifest).unwrap();
    let o = binary(dir.path(), &["apply"]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("did not finish within 1s (the download timeout)"),
        "{text}"
    );
    // One download (after the size look-up's HEAD), not retried past the timeout.
    let gets = drip.requests();
    assert_eq!(
        gets.iter().filter(|r| r.starts_with("GET ")).count(),
        1,
        "{gets:?}"
    );
    let o = binary(dir.path(), &["-o", "json", "list"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
}

/// A `Retry-After` of a day is capped by `max_retry_after`: the download waits the cap, not
/// the day.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_retry_after_is_capped() {
    let srv = FileServer::start().await;
    let body = data(20_000, 33);
    let mut spec = FileSpec::new(body.clone());
    spec.rate_limit_first = (2, 86_400);
    srv.add("/r.bin", spec);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("r.bin");
    let (q, _) = queue(DownloadQueueConfig {
        transfer: TransferConfig {
            retry: RetryPolicy {
                max_retry_after: Duration::from_millis(20),
                ..cfg().transfer.retry
            },
            ..cfg().transfer
        },
        ..cfg()
    });
    let job = run_one(
        &q,
        DownloadJob::new(srv.url("/r.bin"), &dest).with_expected_size(Some(20_000)),
    )
    .await;
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    let statuses: Vec<u16> = srv.seen("/r.bin").iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![429, 429, 200]);
}

/// `apply` on a URL whose server cuts the body at half and sends no Content-Length: the entry
/// fails, no record is written and no model file is left in place.
#[test]
fn apply_never_registers_a_body_cut_short() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cut = rt.block_on(RawServer::start(RawMode::CloseDelimited {
        data: Arc::new(data(200_000, 34)),
        cut: 100_000,
        ranges: false,
    }));
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        "version: 1\nsettings:\n  models_dir: models\nmodels:\n  - name: half\n    source: {}\n",
        cut.url("/half.safetensors")
    );
    std::fs::write(dir.path().join("models.yaml"), manifest).unwrap();
    let o = binary(dir.path(), &["apply"]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("cannot tell whether the file is complete"),
        "{text}"
    );
    let o = binary(dir.path(), &["-o", "json", "list"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
    let mut todo = vec![dir.path().join("models")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            assert!(
                !p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .ends_with("half.safetensors"),
                "left {}",
                p.display()
            );
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
}
