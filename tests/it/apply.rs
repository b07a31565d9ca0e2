//! `modelsync apply` end to end: the real binary against the Hub emulator and local sources.

use std::time::Duration;

use crate::support::reconcile::{Work, assert_exit, body_requests, lora_repo};
use crate::support::{stderr, stdout};

fn two_entries(w: &Work) {
    w.hub.add_repo(lora_repo("owner/hub-lora", 1, 4));
    let local = w.local_lora("local.safetensors", 2);
    w.manifest(
        "",
        &format!(
            "  - name: hub-lora\n    source: owner/hub-lora::lora.safetensors\n    tags: [a]\n\
             \x20 - name: local-lora\n    source: {}\n    dest: loras/local.safetensors\n",
            local.display()
        ),
    );
}

#[test]
fn apply_installs_writes_the_lock_and_a_second_apply_does_nothing() {
    let w = Work::new();
    two_entries(&w);
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("hub-lora: installed"), "{}", stdout(&o));
    assert!(stdout(&o).contains("local-lora: installed"));
    assert!(w.models().join("loras/local.safetensors").is_file());

    let store = w.store();
    let recs = store.all_models().unwrap();
    assert_eq!(recs.len(), 2);
    for r in &recs {
        let m = r.common().managed.as_ref().expect("managed");
        assert_eq!(m.entry, r.common().name);
    }

    let lock = w.lock();
    let hub = &lock.entries["hub-lora"];
    assert_eq!(hub.source, "owner/hub-lora::lora.safetensors");
    assert_eq!(
        hub.resolved_commit.as_deref(),
        Some(w.hub.commit("owner/hub-lora", "main").as_str())
    );
    assert_eq!(hub.files.len(), 1);
    assert_eq!(hub.files[0].path, "lora.safetensors");
    assert!(hub.files[0].sha256.as_ref().is_some_and(|s| s.len() == 64));
    assert!(
        hub.record_hash
            .as_ref()
            .is_some_and(|h| h.starts_with("blake3:"))
    );
    let local = &lock.entries["local-lora"];
    assert!(local.resolved_commit.is_none());
    assert!(local.files[0].sha256.is_some());

    // Converged: nothing to do, not one request to the Hub, the lock untouched.
    let lock_text = std::fs::read_to_string(w.path().join("models.lock")).unwrap();
    w.hub.clear_log();
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("No changes: 2 model(s) in sync"),
        "{}",
        stdout(&o)
    );
    assert!(w.hub.requests().is_empty(), "{:?}", w.hub.requests());
    assert_eq!(
        std::fs::read_to_string(w.path().join("models.lock")).unwrap(),
        lock_text
    );
    let o = w.run(&["diff", "--exit-code"]);
    assert_exit(&o, 0);
    assert!(w.hub.requests().is_empty());
}

#[test]
fn one_failing_entry_does_not_stop_the_others() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/good", 1, 4));
    w.hub
        .add_repo(lora_repo("owner/gated", 3, 4).gated("manual"));
    w.hub.add_repo(lora_repo("owner/hashed", 4, 4));
    w.manifest(
        "",
        "  - name: good\n    source: owner/good::lora.safetensors\n\
         \x20 - name: missing\n    source: owner/does-not-exist::lora.safetensors\n\
         \x20 - name: gated\n    source: owner/gated::lora.safetensors\n\
         \x20 - name: hashed\n    source: owner/hashed::lora.safetensors\n    hash: blake3:0000000000000000000000000000000000000000000000000000000000000000\n",
    );
    let o = w.run(&["apply", "--no-progress"]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(out.contains("good: installed"), "{out}");
    assert!(out.contains("Apply incomplete: 3 failed"), "{out}");
    // What the Hub says is not there (or not for this token) fails before any download.
    for (name, action) in [
        ("missing", "error"),
        ("gated", "error"),
        ("hashed", "install"),
    ] {
        assert!(
            out.contains(&format!("✗ {name} ({action})")),
            "{name}: {out}"
        );
    }
    let recs = w.store().all_models().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].common().name, "good");
    // The lock records what converged only.
    let lock = w.lock();
    assert_eq!(lock.entries.keys().collect::<Vec<_>>(), vec!["good"]);
    // Nothing half-installed of the failures is left in models_dir.
    let o = w.run(&["status"]);
    assert!(!stdout(&o).contains("no record owns"), "{}", stdout(&o));
}

#[test]
fn json_lines_of_events() {
    let w = Work::new();
    two_entries(&w);
    let o = w.run(&["apply", "-o", "json"]);
    assert_exit(&o, 0);
    let events: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let reconcile: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "reconcile")
        .map(|e| &e["event"])
        .collect();
    assert_eq!(reconcile.first().unwrap()["event"], "planned");
    assert_eq!(reconcile.first().unwrap()["totals"]["install"], 2);
    let completed = reconcile
        .iter()
        .filter(|e| e["event"] == "action_completed")
        .count();
    assert_eq!(completed, 2);
    let last = reconcile.last().unwrap();
    assert_eq!(last["event"], "finished");
    assert_eq!(last["converged"], true);
    assert!(events.iter().any(|e| e["kind"] == "install"));
}

#[test]
fn locked_refuses_what_the_lock_does_not_pin() {
    let w = Work::new();
    two_entries(&w);
    assert_exit(&w.run(&["apply"]), 0);
    // Upstream moves; a fresh machine with the same manifest and lock (CI).
    w.hub.add_repo(lora_repo("owner/hub-lora", 9, 4));
    std::fs::remove_dir_all(w.models()).unwrap();
    let o = w.run(&["apply", "--locked"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("--locked"), "{err}");
    assert!(
        err.contains("entry `hub-lora`: main moved upstream"),
        "{err}"
    );
    assert!(
        !w.models().join("modelsync.db").exists() || w.store().all_models().unwrap().is_empty()
    );

    // An entry the lock does not know is refused too.
    let text = std::fs::read_to_string(w.path().join("models.yaml")).unwrap();
    std::fs::write(
        w.path().join("models.yaml"),
        text.replace("name: local-lora", "name: local-lora-2"),
    )
    .unwrap();
    let o = w.run(&["apply", "--locked"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("entry `local-lora-2` is not in models.lock"),
        "{}",
        stderr(&o)
    );

    // Without --locked it resolves and rewrites the lock (dropping the renamed entry).
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    let lock = w.lock();
    assert_eq!(
        lock.entries["hub-lora"].resolved_commit.as_deref(),
        Some(w.hub.commit("owner/hub-lora", "main").as_str())
    );
    assert!(!lock.entries.contains_key("local-lora"));
    // And --locked now passes.
    std::fs::remove_dir_all(w.models()).unwrap();
    assert_exit(&w.run(&["apply", "--locked"]), 0);
}

#[test]
fn a_second_apply_waits_for_the_lock_and_gives_up_after_the_timeout() {
    let w = Work::new();
    two_entries(&w);
    std::fs::create_dir_all(w.models()).unwrap();
    let db = w.models().join("modelsync.db");
    let held = modelsync::store::lock::StoreLock::acquire(&db, Duration::ZERO, |_| {}).unwrap();
    let o = w.run(&["apply", "--lock-timeout", "300ms"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("waiting for the store lock"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    // The wait as the flag spelled it, in both places it appears.
    assert!(err.contains("(up to 300ms)"), "{err}");
    assert!(err.contains("timed out after 300ms"), "{err}");

    // A waiting apply goes on once the holder lets go: released when it says it waits.
    let mut child = w
        .command(&["apply", "--lock-timeout", "30s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    assert!(first.contains("waiting for the store lock"), "{first}");
    drop(held);
    let o = child.wait_with_output().unwrap();
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("hub-lora: installed"), "{}", stdout(&o));
    assert_eq!(w.store().all_models().unwrap().len(), 2);
}

#[test]
fn an_unmounted_models_dir_is_an_error_and_nothing_is_deleted() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/hub-lora", 1, 4));
    w.manifest(
        "  database: store/modelsync.db\n  prune: true\n",
        "  - name: hub-lora\n    source: owner/hub-lora::lora.safetensors\n",
    );
    assert_exit(&w.run(&["apply"]), 0);
    let store_path = w.path().join("store/modelsync.db");
    // Missing, then present but empty: both look like an unmounted volume.
    std::fs::remove_dir_all(w.models()).unwrap();
    for round in 0..2 {
        w.hub.clear_log();
        let o = w.run(&["apply"]);
        assert_exit(&o, 1);
        assert!(
            stderr(&o).contains("is the volume mounted"),
            "{}",
            stderr(&o)
        );
        let store = modelsync::store::open(&store_path).unwrap();
        assert_eq!(store.all_models().unwrap().len(), 1, "round {round}");
        assert!(w.hub.requests().is_empty());
        let o = w.run(&["diff"]);
        assert_exit(&o, 1);
        std::fs::create_dir_all(w.models()).unwrap();
    }
}

#[test]
fn prune_deletes_only_managed_records_whose_entries_left() {
    let w = Work::new();
    two_entries(&w);
    assert_exit(&w.run(&["apply"]), 0);
    // An unmanaged record (what `import` makes), with its file in models_dir.
    let own = w.models().join("mine.safetensors");
    std::fs::write(&own, crate::support::reconcile::lora_bytes(7, 2)).unwrap();
    let mut rec = crate::support::lora("mine", "mine.safetensors");
    rec.common_mut().key = "unmanaged0".into();
    w.store().add_model("unmanaged0", rec).unwrap();

    // hub-lora leaves the manifest.
    let text = std::fs::read_to_string(w.path().join("models.yaml")).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains("hub-lora") && !l.contains("tags: [a]"))
        .flat_map(|l| [l, "\n"])
        .collect();
    std::fs::write(w.path().join("models.yaml"), kept).unwrap();
    let hub_rec = w
        .store()
        .all_models()
        .unwrap()
        .into_iter()
        .find(|r| r.common().name == "hub-lora")
        .unwrap();
    let hub_path = hub_rec.resolved_path(&w.models());

    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("1 orphaned record(s) kept"),
        "{}",
        stdout(&o)
    );
    assert_eq!(w.store().all_models().unwrap().len(), 3);

    let o = w.run(&["apply", "--prune"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("hub-lora: deleted"), "{}", stdout(&o));
    let names: Vec<String> = w
        .store()
        .all_models()
        .unwrap()
        .iter()
        .map(|r| r.common().name.clone())
        .collect();
    assert_eq!(names, vec!["local-lora", "mine"]);
    assert!(!hub_path.exists());
    assert!(own.is_file());
    assert!(!w.lock().entries.contains_key("hub-lora"));
}

#[test]
fn update_repair_and_replace() {
    let w = Work::new();
    two_entries(&w);
    assert_exit(&w.run(&["apply"]), 0);
    let key_of = |name: &str| {
        w.store()
            .all_models()
            .unwrap()
            .into_iter()
            .find(|r| r.common().name == name)
            .unwrap()
    };
    let before = key_of("hub-lora");

    // Record-level change: update in place, nothing fetched.
    let text = std::fs::read_to_string(w.path().join("models.yaml")).unwrap();
    std::fs::write(
        w.path().join("models.yaml"),
        text.replace("tags: [a]", "tags: [a, b]\n    description: hello"),
    )
    .unwrap();
    w.hub.clear_log();
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("hub-lora: updated"), "{}", stdout(&o));
    assert!(body_requests(&w.hub).is_empty());
    let after = key_of("hub-lora");
    assert_eq!(after.key(), before.key());
    assert_eq!(after.common().tags, vec!["a", "b"]);
    assert_eq!(after.common().description.as_deref(), Some("hello"));

    // A file goes missing: repair fetches it again.
    std::fs::remove_file(after.resolved_path(&w.models())).unwrap();
    let o = w.run(&["diff", "--exit-code"]);
    assert_exit(&o, 2);
    assert!(stdout(&o).contains("1 to repair"), "{}", stdout(&o));
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("hub-lora: repaired"), "{}", stdout(&o));
    let repaired = key_of("hub-lora");
    assert!(repaired.resolved_path(&w.models()).is_file());
    assert_eq!(w.store().all_models().unwrap().len(), 2);

    // The local file at a fixed dest changes source: replace.
    let other = w.local_lora("other.safetensors", 5);
    let text = std::fs::read_to_string(w.path().join("models.yaml")).unwrap();
    let old_src = w.path().join("src/local.safetensors");
    std::fs::write(
        w.path().join("models.yaml"),
        text.replace(&old_src.display().to_string(), &other.display().to_string()),
    )
    .unwrap();
    let old_local = key_of("local-lora");
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("local-lora: replaced"),
        "{}",
        stdout(&o)
    );
    let new_local = key_of("local-lora");
    assert_ne!(new_local.key(), old_local.key());
    assert_eq!(
        std::fs::read(w.models().join("loras/local.safetensors")).unwrap(),
        std::fs::read(&other).unwrap()
    );
    assert_eq!(w.store().all_models().unwrap().len(), 2);
    assert_exit(&w.run(&["status"]), 0);
}

/// The disk gate is per entry: on a small file system the entries that fit are installed,
/// the one that does not fails with a message naming it, and apply exits 3. Runs on a real
/// 1 MiB tmpfs in a private mount namespace (root only: CI runs as root).
#[test]
fn apply_installs_what_fits_and_fails_only_what_does_not() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/small-a", 1, 2));
    // About 2 MB: more than the whole file system.
    w.hub.add_repo(lora_repo("owner/big", 2, 700));
    w.hub.add_repo(lora_repo("owner/small-b", 3, 2));
    w.manifest(
        "",
        "  - name: small-a\n    source: owner/small-a::lora.safetensors\n\
         \x20 - name: big\n    source: owner/big::lora.safetensors\n\
         \x20 - name: small-b\n    source: owner/small-b::lora.safetensors\n",
    );
    std::fs::create_dir_all(w.models()).unwrap();
    let bin = env!("CARGO_BIN_EXE_modelsync");
    let script = format!(
        "mount -t tmpfs -o size=1M tmpfs models || exit 99\n\
         {bin} apply --no-progress; echo \"apply-exit=$?\"\n\
         {bin} diff -o json\n"
    );
    // The environment of `Work::command` (the emulator, no tokens), around the shell.
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
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(out.contains("apply-exit=3"), "{out}\n{err}");
    assert!(out.contains("small-a: installed"), "{out}");
    assert!(out.contains("small-b: installed"), "{out}");
    assert!(out.contains("✗ big (error): does not fit on disk"), "{out}");
    assert!(
        err.contains("not enough free disk for `big`; the other entries were applied"),
        "{err}"
    );
    let json = &out[out.find("apply-exit=3").unwrap() + "apply-exit=3".len()..];
    let plan: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let action = |n: &str| {
        plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == n)
            .unwrap()["action"]
            .clone()
    };
    assert_eq!(action("small-a"), "unchanged", "{plan}");
    assert_eq!(action("small-b"), "unchanged", "{plan}");
    assert_eq!(action("big"), "install", "{plan}");
    assert_eq!(plan["disk"]["fits"], false, "{plan}");
}
