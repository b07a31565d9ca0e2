//! What users read when something fails: the exact text of each failure class, from the real
//! binary against the Hub emulator (the stall, whose timeout the CLI does not expose, through
//! the download queue). Each message of a chain says its own part once: the URL or the
//! repository appears once, the cause on its own `caused by:` line.

use std::sync::Arc;
use std::time::Duration;

use modelsync::download::{
    DownloadJob, DownloadQueue, DownloadQueueConfig, RetryPolicy, TransferConfig,
};
use modelsync::events::NullReporter;
use modelsync::retry::{Failure, FailureKind};

use crate::support::fileserver::{FileServer, FileSpec};
use crate::support::reconcile::{Work, assert_exit, lora_repo};
use crate::support::{stderr, stdout};

/// `text` with the emulator's addresses, the work folder and digests (commits, hashes, staging
/// folder names: runs of 16 or more hex digits) replaced by placeholders.
fn norm(w: &Work, text: &str) -> String {
    let text = text
        .replace(&w.hub.cdn_endpoint(), "CDN")
        .replace(&w.hub.endpoint(), "HUB")
        .replace(&w.path().display().to_string(), "WORK");
    let mut out = String::new();
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() >= 16 { "<hex>" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

fn entry(name: &str, source: &str) -> String {
    format!("  - name: {name}\n    source: {source}\n")
}

/// A URL that is not there is found by the plan's size look-up, before any download: an error
/// row whose message names the URL once, with its kind.
#[test]
fn a_404_names_its_url_once() {
    let w = Work::new();
    let url = format!("{}/files/nope.safetensors", w.hub.cdn_endpoint());
    w.manifest("", &entry("nope", &url));
    let why = "CDN/files/nope.safetensors: HTTP 404: not found: no file at this URL (check the repository, revision and file name)";
    let o = w.run(&["apply", "-q"]);
    assert_exit(&o, 1);
    assert_eq!(
        norm(&w, &stderr(&o)),
        format!("error: nope (error): {why}\n")
    );
    let o = w.run(&["apply", "--no-progress"]);
    assert_exit(&o, 1);
    let out = norm(&w, &stdout(&o));
    assert!(
        out.ends_with(&format!(
            "✗ nope: {why}\n\
             Apply incomplete: 1 failed, 0 change(s) done.\n  \
             ✗ nope (error)\n"
        )),
        "{out}"
    );
    let o = w.run(&["apply", "-o", "json"]);
    assert_exit(&o, 1);
    let failed: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"]["event"] == "action_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{}", stdout(&o));
    let ev = &failed[0]["event"];
    assert_eq!(norm(&w, ev["error"].as_str().unwrap()), why);
    assert_eq!(ev["error_kind"], "not_found");
    assert_eq!(ev["causes"], serde_json::json!([]));
    // Nothing was downloaded: the look-ups were HEADs.
    let gets: Vec<_> = w
        .hub
        .cdn_requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert!(gets.is_empty(), "{gets:?}");
}

#[test]
fn a_gated_repo_says_which_token_sources_were_tried() {
    let w = Work::new();
    w.hub
        .add_repo(lora_repo("owner/gated", 1, 2).gated("manual"));
    w.manifest("", &entry("gated", "owner/gated::lora.safetensors"));
    let o = w.run(&["apply", "-q"]);
    assert_exit(&o, 1);
    assert_eq!(
        norm(&w, &stderr(&o)),
        "error: gated (error): `owner/gated` is a gated repository and downloading `lora.safetensors` at `<hex>` was refused (HTTP 401): \
         no token was sent (tried the entry's token, HF_TOKEN, the token file WORK/.hf/token); \
         accept the conditions at HUB/owner/gated, then provide a token (the entry's `token:`, HF_TOKEN, or `hf auth login`)\n"
    );

    let o = w
        .command(&["apply", "-q"])
        .env("HF_TOKEN", "hf_without_access")
        .output()
        .expect("runs");
    assert_exit(&o, 1);
    assert_eq!(
        norm(&w, &stderr(&o)),
        "error: gated (error): `owner/gated` is a gated repository and downloading `lora.safetensors` at `<hex>` was refused (HTTP 403): \
         the token from HF_TOKEN was sent; that token has not been granted access: \
         accept the conditions at HUB/owner/gated with its account, or use another token\n"
    );
}

#[test]
fn a_corrupted_body_is_a_hash_mismatch_said_once() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 1, 2));
    w.hub.corrupt_lfs("owner/lora", "lora.safetensors");
    w.manifest("", &entry("lora", "owner/lora::lora.safetensors"));
    let o = w.run(&["apply", "-q"]);
    assert_exit(&o, 1);
    assert_eq!(
        norm(&w, &stderr(&o)),
        "error: lora (install): download failed\n  \
         caused by: HUB/owner/lora/resolve/<hex>/lora.safetensors: sha256 mismatch: expected <hex>, got <hex>\n"
    );
}

#[test]
fn a_manifest_error_points_at_the_line() {
    let w = Work::new();
    std::fs::write(
        w.path().join("models.yaml"),
        "version: 1\nmodels:\n  - name: a\n    sauce: owner/a\n",
    )
    .unwrap();
    let o = w.run(&["apply"]);
    assert_exit(&o, 1);
    assert_eq!(
        stderr(&o),
        "error: models.yaml:4:5: unknown field `sauce`, expected one of name, source, variant, subfolder, revision, include, exclude, \
         token, inplace, dest, hash, preload, tags, description, config, unsafe_pickle, precision, layout, username, password; did you mean `source`?\n"
    );
    let o = w.run(&["apply", "-o", "json"]);
    assert_exit(&o, 1);
    let doc: serde_json::Value = serde_json::from_str(&stderr(&o)).expect("one JSON document");
    assert_eq!(
        doc,
        serde_json::json!({
            "error": "models.yaml:4:5: unknown field `sauce`, expected one of name, source, variant, subfolder, revision, include, exclude, \
                      token, inplace, dest, hash, preload, tags, description, config, unsafe_pickle, precision, layout, username, password; did you mean `source`?",
            "causes": [],
        })
    );
}

/// Runs `apply -q` with `models/` on a tmpfs of `size` in a private mount namespace; returns
/// its exit code and stderr. `None` where tmpfs cannot be mounted (not root).
fn apply_on_tmpfs(w: &Work, size: &str) -> Option<(String, String)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return None;
    }
    std::fs::create_dir_all(w.models()).unwrap();
    let bin = env!("CARGO_BIN_EXE_modelsync");
    let script = format!(
        "mount -t tmpfs -o size={size} tmpfs models || exit 99\n{bin} apply -q; echo \"exit=$?\"\n"
    );
    let base = w.command(&[]);
    let mut c = std::process::Command::new("unshare");
    c.args(["-m", "sh", "-c", &script]).current_dir(w.path());
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c.output().unwrap();
    assert_ne!(o.status.code(), Some(99), "{}", stderr(&o));
    Some((stdout(&o), norm(w, &stderr(&o))))
}

/// The disk gate: an entry whose files do not fit fails on its own, before a byte is fetched.
#[test]
fn a_model_larger_than_the_disk_is_refused_before_fetching() {
    let w = Work::new();
    // About 2 MB on a 1 MiB file system.
    w.hub.add_repo(lora_repo("owner/big", 2, 700));
    w.manifest("", &entry("big", "owner/big::lora.safetensors"));
    let Some((out, err)) = apply_on_tmpfs(&w, "1M") else {
        return;
    };
    assert!(out.ends_with("exit=3\n"), "{out}\n{err}");
    // The free space depends on the file system's own overhead.
    let mut digits = false;
    let err: String = err
        .chars()
        .filter_map(|c| {
            let was = std::mem::replace(&mut digits, c.is_ascii_digit());
            match (c.is_ascii_digit(), was) {
                (true, true) => None,
                (true, false) => Some('N'),
                _ => Some(c),
            }
        })
        .collect();
    assert_eq!(
        err,
        "error: big (error): does not fit on disk: needs N.N MB, N.N kB left for it (of N.N kB free)\n"
    );
}

/// A disk that fills up under the record store: each message says its part once.
#[test]
fn a_full_disk_under_the_store_says_so_once() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 1, 2));
    w.manifest("", &entry("lora", "owner/lora::lora.safetensors"));
    let Some((out, err)) = apply_on_tmpfs(&w, "64k") else {
        return;
    };
    assert_eq!(out, "exit=1\n", "{err}");
    assert_eq!(
        err,
        "error: opening the record store\n  \
         caused by: database WORK/models/modelsync.db: migrating the schema to version 2 failed\n  \
         caused by: rusqlite_migration error while executing query '': database or disk is full\n  \
         caused by: Error code 13: database or disk is full\n"
    );
}

/// A body that stops arriving, through the queue (the CLI keeps the 30 s stall timeout).
#[tokio::test(flavor = "multi_thread")]
async fn a_stall_gives_up_with_the_stall_as_the_cause() {
    let srv = FileServer::start().await;
    let mut spec = FileSpec::new(vec![7u8; 100_000]);
    spec.stall_after = Some(1000);
    srv.add("/s.bin", spec);
    let mut spec2 = FileSpec::new(vec![7u8; 100_000]);
    spec2.hang = Some((0, 0, Arc::new(std::sync::atomic::AtomicBool::new(true))));
    srv.add("/h.bin", spec2);
    let dir = crate::support::tmp();
    let q = DownloadQueue::new(
        DownloadQueueConfig {
            transfer: TransferConfig {
                connections_per_file: 1,
                retry: RetryPolicy {
                    max_attempts: 2,
                    initial_backoff: Duration::from_millis(5),
                    max_backoff: Duration::from_millis(5),
                    max_retry_after: Duration::from_millis(5),
                },
                stall_timeout: Duration::from_millis(200),
                sync_before_rename: false,
                ..TransferConfig::default()
            },
            ..DownloadQueueConfig::default()
        },
        Arc::new(NullReporter),
    )
    .unwrap();
    let job = q
        .submit_download_job(
            DownloadJob::new(srv.url("/h.bin"), dir.path().join("s")),
            true,
        )
        .unwrap();
    let job = q
        .wait_for_job(job.id, Some(Duration::from_mins(1)))
        .await
        .unwrap();
    let f = Failure::from_error(job.error.as_deref().expect("an error"));
    assert_eq!(f.kind, FailureKind::Stalled);
    assert_eq!(
        f.chain()
            .map(|m| m.replace(&srv.url(""), "SRV"))
            .collect::<Vec<_>>(),
        [
            "gave up after 2 attempts",
            "SRV/h.bin: no data received for 200ms"
        ]
    );
}
