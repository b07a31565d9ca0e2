//! Real deployments: a manifest on a read-only ConfigMap mount, a lost `models.lock`, a store
//! on a read-only volume. The binary runs against the Hub emulator; read-only mounts come from
//! [`crate::support::rofs`] (root only; the tests that need them skip with a message
//! elsewhere).

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use modelsync::manifest::LockFile;

use crate::support::reconcile::{Work, assert_exit, body_requests, lora_repo};
use crate::support::rofs;

/// Bound for every wait; only a failing test reaches it.
const LIMIT: Duration = Duration::from_mins(1);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

const LORA_ENTRY: &str = "  - name: lora\n    source: owner/lora::lora.safetensors\n";

/// The DaemonSet's own command line (examples/k8s/daemonset.yaml), its paths moved into the
/// test's folder: the ConfigMap mount, the models volume, and a loopback port.
fn daemonset_args(cm: &Path, models: &Path, addr: SocketAddr) -> Vec<String> {
    let argv = crate::watch::k8s::daemonset_watch_argv();
    let mut out = Vec::new();
    let mut prev = "";
    for a in &argv[1..] {
        let moved = if prev == "--listen" {
            addr.to_string()
        } else if let Some(rest) = a.strip_prefix("/etc/modelsync/") {
            cm.join(rest).to_string_lossy().into_owned()
        } else if let Some(rest) = a.strip_prefix("/models") {
            format!("{}{rest}", models.display())
        } else {
            a.clone()
        };
        out.push(moved);
        prev = a;
    }
    out
}

#[cfg(unix)]
#[test]
fn the_daemonset_on_a_read_only_configmap_converges_and_turns_ready() {
    if !rofs::available() {
        rofs::skip("the_daemonset_on_a_read_only_configmap_converges_and_turns_ready");
        return;
    }
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 1, 2));
    let cm = w.path().join("configmap");
    std::fs::create_dir(&cm).expect("configmap dir");
    crate::watch::configmap_publish(&cm, 0, &format!("version: 1\nmodels:\n{LORA_ENTRY}"), true);
    let addr = free_port();
    let args = daemonset_args(&cm, &w.models(), addr);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = rofs::read_only(&[&cm], &w.command(&arg_refs))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("modelsync watch starts");
    let mut last = None;
    let ready = crate::support::wait_for(LIMIT, || {
        last = http_get(addr, "/readyz").or(last.take());
        if last.as_ref().is_some_and(|r| r.0 == 200) {
            Some(true)
        } else {
            // A watch that exited will never be ready.
            child.try_wait().ok().flatten().map(|_| false)
        }
    });
    if ready != Some(true) {
        let _ = child.kill();
        let _ = child.wait();
        let mut err = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        panic!("never ready (last /readyz {last:?}): {err}");
    }
    let (_, status) = http_get(addr, "/status").expect("/status");
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) with a pid we spawned and have not waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let code = child.wait().expect("wait");
    let mut err = String::new();
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert_eq!(code.code(), Some(0), "{err}");
    assert!(status.contains("\"lora\""), "{status}");
    assert!(!status.contains("\"failed\""), "{status}");
    // The lock could not be written beside the manifest: said once, not an error.
    assert_eq!(err.matches("cannot write").count(), 1, "{err}");
    assert!(!cm.join("models.lock").exists());
    let records = w.store().all_models().expect("records");
    assert_eq!(records.len(), 1);
}

#[test]
fn apply_with_an_unwritable_lock_converges_exits_0_and_warns_once() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 1, 2));
    w.manifest("", LORA_ENTRY);
    // A lock path under a regular file cannot be written, not even by root.
    std::fs::write(w.path().join("plain-file"), b"x").expect("file");
    let o = w.run(&[
        "apply",
        "--no-progress",
        "--lock-file",
        "plain-file/models.lock",
    ]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert_eq!(err.matches("warning: cannot write").count(), 1, "{err}");
    assert!(err.contains("plain-file/models.lock"), "{err}");
    assert_eq!(w.store().all_models().expect("records").len(), 1);
    assert!(!w.path().join("models.lock").exists());
    // The next run finds everything converged, and still exits 0.
    let o = w.run(&[
        "apply",
        "--no-progress",
        "--lock-file",
        "plain-file/models.lock",
    ]);
    assert_exit(&o, 0);
    // JSON output says why the lock is missing (the event, once per run).
    let o = w.run(&[
        "apply",
        "-o",
        "json",
        "--lock-file",
        "plain-file/models.lock",
    ]);
    assert_exit(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("\"lock_not_written\"").count(), 1, "{out}");
    assert!(out.contains("Not a directory"), "{out}");
}

#[cfg(unix)]
#[test]
fn apply_in_a_read_only_manifest_folder_exits_0_with_the_warning() {
    if !rofs::available() {
        rofs::skip("apply_in_a_read_only_manifest_folder_exits_0_with_the_warning");
        return;
    }
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 1, 2));
    let etc = w.path().join("etc");
    std::fs::create_dir(&etc).expect("etc");
    let models = w.models();
    std::fs::write(
        etc.join("models.yaml"),
        format!(
            "version: 1\nsettings:\n  models_dir: {}\nmodels:\n{LORA_ENTRY}",
            models.display()
        ),
    )
    .expect("manifest");
    let o = rofs::read_only(
        &[&etc],
        &w.command(&["apply", "--no-progress", "-f", "etc/models.yaml"]),
    )
    .output()
    .expect("apply runs");
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert_eq!(err.matches("warning: cannot write").count(), 1, "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(w.store().all_models().expect("records").len(), 1);
}

#[test]
fn settings_lock_file_moves_the_lock() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 1, 2));
    w.manifest("  lock_file: state/ci.lock\n", LORA_ENTRY);
    let o = w.run(&["apply", "--no-progress"]);
    assert_exit(&o, 0);
    assert!(!w.path().join("models.lock").exists());
    let lock = LockFile::read(&w.path().join("state/ci.lock"))
        .expect("lock parses")
        .expect("lock at settings.lock_file");
    assert!(lock.entries.contains_key("lora"));
    // Readers find it there too: --locked passes, verify checks against it.
    let o = w.run(&["apply", "--locked", "--no-progress"]);
    assert_exit(&o, 0);
    // And an empty setting is refused where it is written.
    w.manifest("  lock_file: \"\"\n", LORA_ENTRY);
    let o = w.run(&["diff"]);
    let err = stderr(&o);
    assert!(
        err.contains("models.yaml:4:") && err.contains("`lock_file` is empty"),
        "{err}"
    );
}

#[test]
fn a_lost_or_stripped_lock_is_rebuilt_from_the_store_without_downloading() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 1, 2));
    w.manifest("", LORA_ENTRY);
    assert_exit(&w.run(&["apply", "--no-progress"]), 0);
    let lock_path = w.path().join("models.lock");
    let original = std::fs::read_to_string(&lock_path).expect("lock written");
    let l = w.lock();
    let e = &l.entries["lora"];
    assert!(e.resolved_commit.is_some(), "{original}");
    assert!(e.files.iter().any(|f| f.sha256.is_some()), "{original}");

    // Lost: the next apply writes it again, the same, from the record.
    std::fs::remove_file(&lock_path).expect("rm lock");
    w.hub.clear_log();
    assert_exit(&w.run(&["apply", "--no-progress"]), 0);
    assert_eq!(
        std::fs::read_to_string(&lock_path).expect("lock back"),
        original
    );
    assert_eq!(body_requests(&w.hub), Vec::<String>::new());

    // Stripped (a kill between the record and the lock, an older modelsync): healed too.
    let mut l = w.lock();
    let e = l.entries.get_mut("lora").expect("entry");
    e.resolved_commit = None;
    e.record_hash = None;
    for f in &mut e.files {
        f.sha256 = None;
    }
    l.write(&lock_path).expect("write stripped");
    w.hub.clear_log();
    assert_exit(&w.run(&["apply", "--no-progress"]), 0);
    assert_eq!(
        std::fs::read_to_string(&lock_path).expect("lock healed"),
        original
    );
    assert_eq!(body_requests(&w.hub), Vec::<String>::new());
}

#[cfg(unix)]
#[test]
fn a_store_on_a_read_only_file_system_serves_reads_and_refuses_writes() {
    if !rofs::available() {
        rofs::skip("a_store_on_a_read_only_file_system_serves_reads_and_refuses_writes");
        return;
    }
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 1, 2));
    w.manifest("", LORA_ENTRY);
    assert_exit(&w.run(&["apply", "--no-progress"]), 0);
    let models = w.models();
    let ro = |args: &[&str]| {
        rofs::read_only(&[&models], &w.command(args))
            .output()
            .expect("modelsync runs")
    };
    // What the app container of init-container.yaml runs against its readOnly volume.
    for args in [
        &["list"][..],
        &["list", "-o", "json"],
        &["show", "lora"],
        &["status"],
        &["diff"],
        &["verify"],
    ] {
        let o = ro(args);
        assert_exit(&o, 0);
        let out = String::from_utf8_lossy(&o.stdout);
        if args[0] != "status" && args[0] != "diff" {
            assert!(out.contains("lora"), "{args:?}: {out}");
        }
    }
    let want = format!(
        "store {} is on a read-only file system",
        models.join("modelsync.db").display()
    );
    for args in [&["remove", "lora"][..], &["apply", "--no-progress"]] {
        let o = ro(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = stderr(&o);
        assert!(err.contains(&want), "{args:?}: {err}");
        assert!(!err.contains("Error code 14"), "{args:?}: {err}");
    }
    // Nothing was changed meanwhile.
    assert_eq!(w.store().all_models().expect("records").len(), 1);
}
