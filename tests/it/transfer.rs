//! One pass over the bytes and the connection budget, against the Hub emulator: promotion
//! takes the digests the download computed, files in flight share the queue's connections,
//! a `/resolve` redirect is followed once per file, and a run fetches Hub metadata once.

use std::fs;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::time::Duration;

use modelsync::download::{
    DownloadEventHandler, DownloadJob, DownloadJobStatus, DownloadQueue, DownloadQueueConfig,
    RetryPolicy, TransferConfig,
};
use modelsync::events::NullReporter;
use modelsync::hash::HashAlgorithm;
use modelsync::hub::{HubClient, HubEnv, HubOptions};
use modelsync::install::InstallConfig;
use modelsync::manager::ModelManager;
use modelsync::report::Recorder;
use modelsync::store::{self, RecordStore};
use sha2::Digest as _;

use crate::support::hub_server::{FakeRepo, HubServer, LoggedRequest};
use crate::support::reconcile::{Work, assert_exit, lora_repo};

/// A real safetensors file of exactly `n` bytes: one U8 tensor of pseudo-random data.
fn st_weights(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    crate::support::st_exact(
        n,
        std::iter::repeat_with(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }),
    )
}

fn transfer() -> TransferConfig {
    TransferConfig {
        connections_per_file: 8,
        parallel_threshold: 64 * 1024,
        min_range_size: 16 * 1024,
        retry: RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            max_retry_after: Duration::from_millis(20),
        },
        sync_before_rename: false,
        ..TransferConfig::default()
    }
}

/// Requests for one LFS file: its `/resolve` GETs on the Hub, its GETs on the CDN.
fn requests_for(hub: &HubServer, path: &str, sha256: &str) -> (usize, Vec<LoggedRequest>) {
    let resolves = hub
        .hub_requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/resolve/") && r.path.ends_with(path))
        .count();
    let cdn = hub
        .cdn_requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(sha256))
        .collect();
    (resolves, cdn)
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// Several files in flight share the budget: with a budget of 4 and 4 files, each gets one
/// stream (one CDN request, no probe); a lone large file takes the whole budget as 4 ranges.
/// Either way the `/resolve` redirect is followed once per file, and every file is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_flight_share_the_connection_budget_and_resolve_once() {
    let hub = HubServer::start();
    let shards: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("shard-{i}.safetensors"), st_weights(i, 300_000)))
        .collect();
    let lone = st_weights(9, 400_000);
    let mut repo = FakeRepo::new("owner/shards").file("lone.safetensors", lone.clone());
    for (p, b) in &shards {
        repo = repo.file(p, b.clone());
    }
    hub.add_repo(repo);
    let commit = hub.commit("owner/shards", "main");
    let url = |p: &str| format!("{}/owner/shards/resolve/{commit}/{p}", hub.endpoint());
    let dir = crate::support::tmp();
    let q = DownloadQueue::new(
        DownloadQueueConfig {
            max_connections: 4,
            transfer: transfer(),
            progress_interval: Duration::from_millis(10),
            ..DownloadQueueConfig::default()
        },
        Arc::new(NullReporter),
    )
    .unwrap();

    let mut ids = Vec::new();
    for (p, b) in &shards {
        let job = DownloadJob::new(url(p), dir.path().join(p))
            .with_expected_size(Some(b.len() as u64))
            .with_sha256(Some(sha256_hex(b)));
        ids.push(q.submit_download_job(job, false).unwrap().id);
    }
    q.start_jobs(&ids).unwrap();
    for id in &ids {
        let job = q.wait_for_job(*id, None).await.unwrap();
        assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    }
    for (p, b) in &shards {
        assert_eq!(&fs::read(dir.path().join(p)).unwrap(), b);
        let (resolves, cdn) = requests_for(&hub, p, &sha256_hex(b));
        assert_eq!(resolves, 1, "{p}: {:?}", hub.hub_requests());
        assert_eq!(cdn.len(), 1, "{p}: one stream, no probe: {cdn:?}");
        assert_eq!(cdn[0].header("range"), None, "{cdn:?}");
    }

    hub.clear_log();
    let job = DownloadJob::new(url("lone.safetensors"), dir.path().join("lone.safetensors"))
        .with_expected_size(Some(lone.len() as u64))
        .with_sha256(Some(sha256_hex(&lone)));
    let id = q.submit_download_job(job, true).unwrap().id;
    let job = q.wait_for_job(id, None).await.unwrap();
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(fs::read(dir.path().join("lone.safetensors")).unwrap(), lone);
    let (resolves, cdn) = requests_for(&hub, "lone.safetensors", &sha256_hex(&lone));
    assert_eq!(
        resolves,
        1,
        "one redirect for the file: {:?}",
        hub.hub_requests()
    );
    let mut ranges: Vec<&str> = cdn.iter().filter_map(|r| r.header("range")).collect();
    ranges.sort_unstable();
    assert_eq!(ranges.len(), 5, "a probe and 4 ranges: {ranges:?}");
    assert!(ranges.contains(&"bytes=0-0"), "{ranges:?}");
    // The digest reported is the content's.
    assert_eq!(
        job.digest(HashAlgorithm::Sha256),
        Some(format!("sha256:{}", sha256_hex(&lone)).as_str())
    );
}

/// A large file becomes more ranges than streams, none over `max_range_size`, taken in file
/// order: every range request goes to the resolved CDN URL (one `/resolve` for the file),
/// the ranges tile the file, and the file and its digests are whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_fetched_as_small_ranges_in_file_order() {
    let hub = HubServer::start();
    let body = st_weights(5, 1_000_000);
    hub.add_repo(FakeRepo::new("owner/big").file("big.safetensors", body.clone()));
    let commit = hub.commit("owner/big", "main");
    let dir = crate::support::tmp();
    let q = DownloadQueue::new(
        DownloadQueueConfig {
            max_connections: 3,
            transfer: TransferConfig {
                max_range_size: 64 * 1024,
                ..transfer()
            },
            progress_interval: Duration::from_millis(10),
            ..DownloadQueueConfig::default()
        },
        Arc::new(NullReporter),
    )
    .unwrap();
    let url = format!(
        "{}/owner/big/resolve/{commit}/big.safetensors",
        hub.endpoint()
    );
    let job = DownloadJob::new(url, dir.path().join("big.safetensors"))
        .with_expected_size(Some(body.len() as u64))
        .with_sha256(Some(sha256_hex(&body)))
        .with_hash_algorithms(vec![HashAlgorithm::Blake3]);
    let id = q.submit_download_job(job, true).unwrap().id;
    let job = q.wait_for_job(id, None).await.unwrap();
    assert_eq!(job.status, DownloadJobStatus::Completed, "{job:?}");
    assert_eq!(fs::read(dir.path().join("big.safetensors")).unwrap(), body);
    assert_eq!(
        job.digest(HashAlgorithm::Blake3),
        Some(format!("blake3:{}", blake3::hash(&body).to_hex()).as_str())
    );
    let (resolves, cdn) = requests_for(&hub, "big.safetensors", &sha256_hex(&body));
    assert_eq!(resolves, 1, "{:?}", hub.hub_requests());
    let ranges: Vec<(u64, u64)> = cdn
        .iter()
        .filter_map(|r| r.header("range"))
        .filter(|r| *r != "bytes=0-0")
        .map(|r| {
            let (a, b) = r.trim_start_matches("bytes=").split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let n = body.len().div_ceil(64 * 1024);
    assert_eq!(ranges.len(), n, "{ranges:?}");
    assert!(ranges.iter().all(|(a, b)| b - a < 64 * 1024), "{ranges:?}");
    // Asked for in file order (three streams: each one starts after the one before).
    let starts: Vec<u64> = ranges.iter().map(|r| r.0).collect();
    let mut sorted = starts.clone();
    sorted.sort_unstable();
    let out_of_place = starts.iter().zip(&sorted).filter(|(a, b)| a != b).count();
    assert!(out_of_place <= 2 * 3, "{starts:?}");
    let mut at = 0;
    for (a, b) in {
        let mut r = ranges.clone();
        r.sort_unstable();
        r
    } {
        assert_eq!(a, at);
        at = b + 1;
    }
    assert_eq!(at, body.len() as u64);
}

/// Promotion takes the record hash from the download: a handler that changes a byte of each
/// file after its download completed (and before promotion) does not change the recorded
/// hash, which equals the hash of the bytes that were downloaded. A promote that read the
/// files again would record the changed bytes' hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_takes_the_record_hash_from_the_download_without_reading_again() {
    let hub = HubServer::start();
    let big = st_weights(1, 300_000);
    let small = st_weights(2, 20_000);
    hub.add_repo(
        FakeRepo::new("owner/kit")
            .file("README.md", b"# kit".to_vec())
            .file("a/big.safetensors", big.clone())
            .file("b/small.safetensors", small.clone()),
    );
    hub.add_repo(FakeRepo::new("owner/one").file("one.safetensors", big.clone()));
    let dir = crate::support::tmp();
    let models = dir.path().join("models");
    fs::create_dir_all(&models).unwrap();
    // Flips the last byte (tensor data) of every completed download.
    let flip = DownloadEventHandler::infallible(|job: &DownloadJob| {
        if job.status == DownloadJobStatus::Completed
            && let Some(p) = &job.download_path
        {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .unwrap();
            let len = f.metadata().unwrap().len();
            let mut b = [0u8];
            f.read_exact_at(&mut b, len - 1).unwrap();
            f.write_all_at(&[b[0] ^ 0xff], len - 1).unwrap();
        }
    });
    let queue = DownloadQueue::new(
        DownloadQueueConfig {
            transfer: transfer(),
            event_handlers: vec![flip],
            ..DownloadQueueConfig::default()
        },
        Arc::new(NullReporter),
    )
    .unwrap();
    let mut o = HubOptions::new(hub.endpoint_url());
    o.retry_base_delay = Duration::from_millis(1);
    let env = HubEnv {
        home: Some(dir.path().to_path_buf()),
        ..HubEnv::empty()
    };
    let cfg = InstallConfig::new(&models, HubClient::with_options(o).unwrap(), env);
    let store: Arc<dyn RecordStore> = Arc::from(store::open(&models.join("modelsync.db")).unwrap());
    let rec = Recorder::new();
    let mgr = ModelManager::from_parts(cfg, store, queue, Arc::new(rec)).unwrap();
    let svc = mgr.install();

    let install = |source: &'static str| {
        let svc = svc.clone();
        async move {
            let job = svc
                .heuristic_import(source, serde_json::Map::new(), None)
                .unwrap();
            let job = svc
                .wait_for_job(job.id, Some(Duration::from_mins(1)))
                .await
                .unwrap();
            assert!(job.complete(), "{source}: {:?}", job.error);
            job.config_out.unwrap()
        }
    };

    // One file: its blake3.
    let rec = install("owner/one::one.safetensors").await;
    assert_eq!(
        rec.common().hash,
        format!("blake3:{}", blake3::hash(&big).to_hex())
    );
    let on_disk = fs::read(rec.resolved_path(&models)).unwrap();
    assert_ne!(
        on_disk, big,
        "the handler changed the file after its download"
    );

    // A folder: the folder hash over each weight file's downloaded bytes, as `hash_path`
    // computes it from those bytes.
    let rec = install("owner/kit").await;
    let expected = tempfile::tempdir().unwrap();
    for (p, b) in [("a/big.safetensors", &big), ("b/small.safetensors", &small)] {
        let to = expected.path().join(p);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::write(to, b).unwrap();
    }
    let want = modelsync::hash::hash_path(expected.path(), HashAlgorithm::Blake3).unwrap();
    assert_eq!(rec.common().hash, want);
    let installed = rec.resolved_path(&models);
    assert_ne!(
        modelsync::hash::hash_path(&installed, HashAlgorithm::Blake3).unwrap(),
        want,
        "the files on disk were changed after their downloads"
    );
    assert_eq!(
        fs::read(installed.join("b/small.safetensors"))
            .unwrap()
            .len(),
        small.len()
    );
}

/// The first apply of a Hub entry asks for its info and its tree once each: the plan's size
/// look-up and the install share them. So does `diff` (its size look-up and its search for
/// the files on this machine already), with or without `--refresh`.
#[test]
fn an_apply_fetches_hub_metadata_once_per_repo_and_revision() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/meta", 1, 4));
    w.manifest("", "  - name: meta\n    source: owner/meta\n");
    let counts = |w: &Work| {
        let reqs = w.hub.hub_requests();
        let info = reqs
            .iter()
            .filter(|r| r.path.starts_with("/api/models/owner/meta") && !r.path.contains("/tree/"))
            .count();
        let tree = reqs.iter().filter(|r| r.path.contains("/tree/")).count();
        w.hub.clear_log();
        (info, tree, format!("{reqs:?}"))
    };
    for args in [&["diff"][..], &["diff", "--refresh"]] {
        assert_exit(&w.run(args), 0);
        let (info, tree, reqs) = counts(&w);
        assert_eq!((info, tree), (1, 1), "{args:?}: {reqs}");
    }
    assert_exit(&w.run(&["apply"]), 0);
    let (info, tree, reqs) = counts(&w);
    assert_eq!((info, tree), (1, 1), "{reqs}");
    assert_eq!(w.store().all_models().unwrap().len(), 1);
}
