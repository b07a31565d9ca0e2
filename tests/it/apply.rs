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
    // Upstream moves; a fresh machine with the same manifest and lock (CI): --locked never
    // looks upstream, it installs the locked commit.
    let locked_commit = w.hub.commit("owner/hub-lora", "main");
    let lock_text = std::fs::read_to_string(w.path().join("models.lock")).unwrap();
    w.hub.add_repo(lora_repo("owner/hub-lora", 9, 4));
    std::fs::remove_dir_all(w.models()).unwrap();
    w.hub.clear_log();
    let o = w.run(&["apply", "--locked"]);
    assert_exit(&o, 0);
    assert!(
        w.hub
            .hub_requests()
            .iter()
            .all(|r| !r.path.contains("/resolve/main/") && !r.path.ends_with("/revision/main")),
        "{:?}",
        w.hub.hub_requests()
    );
    let rec = w.store().all_models().unwrap();
    let hub_rec = rec.iter().find(|r| r.common().name == "hub-lora").unwrap();
    assert_eq!(
        std::fs::read(hub_rec.resolved_path(&w.models())).unwrap(),
        crate::support::reconcile::lora_bytes(1, 4)
    );
    assert_eq!(
        std::fs::read_to_string(w.path().join("models.lock")).unwrap(),
        lock_text
    );
    assert_eq!(
        w.lock().entries["hub-lora"].resolved_commit.as_deref(),
        Some(locked_commit.as_str())
    );

    std::fs::remove_dir_all(w.models()).unwrap();

    // An entry the lock does not know is refused.
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
    // The reason once, when it happens; the summary names the entry.
    assert!(out.contains("✗ big: does not fit on disk"), "{out}");
    assert!(out.contains("\n  ✗ big (error)\n"), "{out}");
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

/// A Hub repo that installs as a folder of several files: two LoRA weights (LFS) and a small
/// git file, tagged by the Hub.
fn folder_repo(id: &str, second_seed: u8) -> crate::support::hub_server::FakeRepo {
    crate::support::hub_server::FakeRepo::new(id)
        .file("notes.txt", format!("notes of {id}\n"))
        .file(
            "lora.safetensors",
            crate::support::reconcile::lora_bytes(1, 4),
        )
        .file(
            "second.safetensors",
            crate::support::reconcile::lora_bytes(second_seed, 3),
        )
        .tags(&["hubtag"])
}

/// The repo paths of the files fetched through `/resolve/` (the CDN's follow-ups carry no
/// name).
fn resolved_files(w: &Work) -> Vec<String> {
    body_requests(&w.hub)
        .iter()
        .filter_map(|r| r.split_once("/resolve/").map(|(_, p)| p.to_owned()))
        .filter_map(|p| p.split_once('/').map(|(_, f)| f.to_owned()))
        .collect()
}

fn only_record(w: &Work, entry: &str) -> modelsync::AnyModelConfig {
    w.store()
        .all_models()
        .unwrap()
        .into_iter()
        .find(|r| {
            r.common()
                .managed
                .as_ref()
                .is_some_and(|m| m.entry == entry)
        })
        .unwrap_or_else(|| panic!("a record of {entry}"))
}

fn completed_bytes(out: &str, name: &str) -> u64 {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"]["event"] == "action_completed" && v["event"]["name"] == name)
        .and_then(|v| v["event"]["downloaded_bytes"].as_u64())
        .unwrap_or_else(|| panic!("no action_completed for {name} in\n{out}"))
}

/// One deleted file and one corrupted file: repair asks the Hub for exactly those files,
/// keeps the record (key, created_at, tags: the manifest's plus the Hub's) and counts only
/// the bytes it fetched.
#[test]
fn repair_fetches_only_the_damaged_files_and_keeps_the_record() {
    let w = Work::new();
    w.hub.add_repo(folder_repo("owner/folder", 2));
    w.manifest(
        "",
        "  - name: kit\n    source: owner/folder\n    tags: [mine]\n",
    );
    assert_exit(&w.run(&["apply"]), 0);
    let before = only_record(&w, "kit");
    assert_eq!(before.common().tags, vec!["hubtag", "mine"]);
    let dir = before.resolved_path(&w.models());
    let size = |f: &str| std::fs::metadata(dir.join(f)).unwrap().len();
    let lora_size = size("lora.safetensors");

    std::fs::remove_file(dir.join("lora.safetensors")).unwrap();
    w.hub.clear_log();
    let o = w.run(&["apply", "-o", "json"]);
    assert_exit(&o, 0);
    assert_eq!(resolved_files(&w), ["lora.safetensors"]);
    assert_eq!(completed_bytes(&stdout(&o), "kit"), lora_size);
    let after = only_record(&w, "kit");
    assert_eq!(after.key(), before.key());
    assert_eq!(after.common().created_at, before.common().created_at);
    assert_eq!(after.common().tags, before.common().tags);
    assert_eq!(after.common().hash, before.common().hash);
    assert_eq!(after.resolved_path(&w.models()), dir);
    assert_eq!(w.store().all_models().unwrap().len(), 1);
    // `show KEY` still finds it.
    assert_exit(&w.run(&["show", before.key()]), 0);

    // Same size, other bytes: only that file comes again, and the content is right.
    let second = dir.join("second.safetensors");
    let mut bytes = std::fs::read(&second).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&second, &bytes).unwrap();
    w.hub.clear_log();
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("kit: repaired"), "{}", stdout(&o));
    assert_eq!(resolved_files(&w), ["second.safetensors"]);
    assert_eq!(
        std::fs::read(&second).unwrap(),
        crate::support::reconcile::lora_bytes(2, 3)
    );
    assert_eq!(only_record(&w, "kit").key(), before.key());
    let o = w.run(&["diff", "--exit-code"]);
    assert_exit(&o, 0);

    // An update keeps the Hub's tags beside the manifest's, and says what changed.
    let text = std::fs::read_to_string(w.path().join("models.yaml")).unwrap();
    std::fs::write(
        w.path().join("models.yaml"),
        text.replace("tags: [mine]", "tags: [yours]"),
    )
    .unwrap();
    let o = w.run(&["diff"]);
    assert!(stdout(&o).contains("tags changed"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("description"), "{}", stdout(&o));
    assert_exit(&w.run(&["apply"]), 0);
    let updated = only_record(&w, "kit");
    assert_eq!(updated.key(), before.key());
    assert_eq!(updated.common().tags, vec!["hubtag", "yours"]);
}

/// A local copy and a URL download are repaired in place too: same key, same path.
#[test]
fn local_and_url_sources_are_repaired_in_place() {
    let w = Work::new();
    let local = w.local_lora("local.safetensors", 2);
    let url = w.hub.add_url_download(
        "77",
        "civit.safetensors",
        crate::support::reconcile::lora_bytes(3, 2),
    );
    w.manifest(
        "",
        &format!(
            "  - name: local\n    source: {}\n  - name: url\n    source: {url}\n",
            local.display(),
        ),
    );
    assert_exit(&w.run(&["apply"]), 0);
    let (l0, u0) = (only_record(&w, "local"), only_record(&w, "url"));
    std::fs::remove_file(l0.resolved_path(&w.models())).unwrap();
    std::fs::write(u0.resolved_path(&w.models()), b"not the model").unwrap();
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("local: repaired"), "{}", stdout(&o));
    assert!(stdout(&o).contains("url: repaired"), "{}", stdout(&o));
    let (l1, u1) = (only_record(&w, "local"), only_record(&w, "url"));
    assert_eq!((l1.key(), u1.key()), (l0.key(), u0.key()));
    assert_eq!((l1.path(), u1.path()), (l0.path(), u0.path()));
    assert_eq!(
        std::fs::read(u1.resolved_path(&w.models())).unwrap(),
        crate::support::reconcile::lora_bytes(3, 2)
    );
    assert_eq!(
        std::fs::read(l1.resolved_path(&w.models())).unwrap(),
        std::fs::read(&local).unwrap()
    );
    assert_exit(&w.run(&["diff", "--exit-code"]), 0);
}

/// A Hub `/blob/` URL (the page of a file) on the configured endpoint installs the file, as
/// one on huggingface.co does.
#[test]
fn blob_urls_of_the_configured_endpoint_install_the_file() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/blobby", 4, 2));
    w.manifest(
        "",
        &format!(
            "  - name: blobby
    source: {}/owner/blobby/blob/main/lora.safetensors
",
            w.hub.endpoint()
        ),
    );
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    let rec = only_record(&w, "blobby");
    assert!(
        rec.common().source.contains("/resolve/main/"),
        "{}",
        rec.common().source
    );
    assert_eq!(
        std::fs::read(rec.resolved_path(&w.models())).unwrap(),
        crate::support::reconcile::lora_bytes(4, 2)
    );
}

/// `diff --refresh` sees the branch move; plain `apply` does not look; `apply --refresh`
/// upgrades in place: same key, only the changed file fetched, the lock at the new commit.
#[test]
fn apply_refresh_upgrades_a_moving_branch_in_place() {
    let w = Work::new();
    w.hub.add_repo(folder_repo("owner/moving", 2));
    w.manifest("", "  - name: kit\n    source: owner/moving\n");
    assert_exit(&w.run(&["apply"]), 0);
    let before = only_record(&w, "kit");
    let old_commit = w.hub.commit("owner/moving", "main");
    assert_eq!(
        w.lock().entries["kit"].resolved_commit.as_deref(),
        Some(old_commit.as_str())
    );

    w.hub.add_repo(folder_repo("owner/moving", 7));
    let new_commit = w.hub.commit("owner/moving", "main");
    assert_ne!(new_commit, old_commit);
    let o = w.run(&["diff", "--refresh"]);
    assert!(stdout(&o).contains("↑"), "{}", stdout(&o));
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert_eq!(only_record(&w, "kit").common().hash, before.common().hash);

    w.hub.clear_log();
    let o = w.run(&["apply", "--refresh"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("kit: upgraded"), "{}", stdout(&o));
    assert_eq!(resolved_files(&w), ["second.safetensors"]);
    let after = only_record(&w, "kit");
    assert_eq!(after.key(), before.key());
    assert_eq!(after.common().created_at, before.common().created_at);
    assert_ne!(after.common().hash, before.common().hash);
    assert_eq!(
        std::fs::read(after.resolved_path(&w.models()).join("second.safetensors")).unwrap(),
        crate::support::reconcile::lora_bytes(7, 3)
    );
    assert_eq!(
        w.lock().entries["kit"].resolved_commit.as_deref(),
        Some(new_commit.as_str())
    );
    // Converged: a refresh finds nothing to do; --locked does not ask the Hub at all.
    let o = w.run(&["apply", "--refresh"]);
    assert!(stdout(&o).contains("No changes"), "{}", stdout(&o));
    w.hub.clear_log();
    assert_exit(&w.run(&["apply", "--locked"]), 0);
    assert!(w.hub.requests().is_empty(), "{:?}", w.hub.requests());
    let o = w.run(&["apply", "--locked", "--refresh"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

/// Two entries with one source are two installs: two records, each owned by its entry, each
/// checked against its own hash.
#[test]
fn two_entries_with_one_source_are_two_records() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/shared", 1, 4));
    w.manifest(
        "",
        "  - name: plain\n    source: owner/shared::lora.safetensors\n\
         \x20 - name: placed\n    source: owner/shared::lora.safetensors\n    dest: loras/shared.safetensors\n    tags: [x]\n",
    );
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    let plain = only_record(&w, "plain");
    let placed = only_record(&w, "placed");
    assert_ne!(plain.key(), placed.key());
    assert_eq!(placed.common().path, "loras/shared.safetensors");
    assert!(plain.resolved_path(&w.models()).is_file());
    assert_eq!(w.store().all_models().unwrap().len(), 2);
    let lock = w.lock();
    assert!(lock.entries.contains_key("plain") && lock.entries.contains_key("placed"));
    assert_exit(&w.run(&["diff", "--exit-code"]), 0);

    // A wrong hash on one of them fails that one only.
    let mut text = std::fs::read_to_string(w.path().join("models.yaml")).unwrap();
    text.push_str(
        "  - name: hashed\n    source: owner/shared::lora.safetensors\n    hash: blake3:",
    );
    text.push_str(&"0".repeat(64));
    text.push('\n');
    std::fs::write(w.path().join("models.yaml"), text).unwrap();
    let o = w.run(&["apply"]);
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("hashed") || stderr(&o).contains("hashed"));
    assert_eq!(w.store().all_models().unwrap().len(), 2);
}

/// `import` of a source already installed returns that record; `--force` installs a copy.
#[test]
fn import_is_idempotent_unless_forced() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/imp", 1, 4));
    let o = w.run(&[
        "--models-dir",
        "models",
        "import",
        "owner/imp::lora.safetensors",
        "-o",
        "json",
    ]);
    assert_exit(&o, 0);
    let first: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    w.hub.clear_log();
    let o = w.run(&[
        "--models-dir",
        "models",
        "import",
        "owner/imp::lora.safetensors",
        "-o",
        "json",
    ]);
    assert_exit(&o, 0);
    let again: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(again["key"], first["key"]);
    assert!(stderr(&o).contains("installed already"), "{}", stderr(&o));
    assert!(w.hub.requests().is_empty(), "{:?}", w.hub.requests());
    let o = w.run(&[
        "--models-dir",
        "models",
        "import",
        "owner/imp::lora.safetensors",
        "--force",
        "-o",
        "json",
    ]);
    assert_exit(&o, 0);
    let forced: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_ne!(forced["key"], first["key"]);
}

/// `gc` spares the partials of a running apply: the apply holds the store lock for its whole
/// run, and `gc --yes` removes nothing without it (even with `--min-age 0s`).
#[test]
fn gc_spares_the_partials_of_a_running_apply() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/slow", 1, 64));
    w.hub.set_cdn_throttle(256, Duration::from_millis(100));
    w.manifest(
        "",
        "  - name: slow\n    source: owner/slow::lora.safetensors\n",
    );
    let mut child = w
        .command(&["apply"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("apply starts");
    let tmp = w.models().join(".tmp");
    let partial = || {
        walk(&tmp)
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(".part"))
    };
    let part =
        crate::support::wait_for(Duration::from_mins(1), partial).expect("no partial appeared");
    let o = w.run(&["gc", "--yes", "--min-age", "0s", "--lock-timeout", "0s"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(part.exists(), "{}", part.display());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A repair killed mid-download resumes: the next apply asks for the rest with `Range`, counts
/// only those bytes, and the record keeps its key.
#[test]
fn a_killed_repair_resumes_its_partial() {
    let w = Work::new();
    // ~4.3 MB in one stream (below the parallel-range threshold).
    let big = crate::support::reconcile::lora_bytes(7, 2000);
    w.hub.add_repo(
        crate::support::hub_server::FakeRepo::new("owner/resume")
            .file("notes.txt", "notes\n")
            .file("lora.safetensors", big.clone()),
    );
    w.manifest("", "  - name: kit\n    source: owner/resume\n");
    assert_exit(&w.run(&["apply"]), 0);
    let before = only_record(&w, "kit");
    let file = before.resolved_path(&w.models()).join("lora.safetensors");
    std::fs::remove_file(&file).unwrap();

    // Throttled to ~640 kB/s; killed (no chance to clean up) once 1 MiB is on disk.
    w.hub.set_cdn_throttle(64 << 10, Duration::from_millis(100));
    let mut child = w
        .command(&["apply"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("apply starts");
    let tmp = w.models().join(".tmp");
    crate::support::wait_for(Duration::from_mins(1), || {
        walk(&tmp)
            .into_iter()
            .any(|p| {
                p.to_string_lossy().ends_with("lora.safetensors.part")
                    && std::fs::metadata(&p).is_ok_and(|m| m.len() >= 1 << 20)
            })
            .then_some(())
    })
    .expect("no partial appeared");
    child.kill().unwrap();
    child.wait().unwrap();

    w.hub.set_cdn_throttle(1 << 30, Duration::ZERO);
    w.hub.clear_log();
    let o = w.run(&["apply", "-o", "json"]);
    assert_exit(&o, 0);
    let ranged = w
        .hub
        .cdn_requests()
        .iter()
        .filter_map(|r| r.header("range").map(str::to_owned))
        .collect::<Vec<_>>();
    assert!(
        ranged
            .iter()
            .any(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-")),
        "{ranged:?}"
    );
    let fetched = completed_bytes(&stdout(&o), "kit");
    let size = big.len() as u64;
    assert!(fetched > 0 && fetched < size, "{fetched} of {size}");
    assert_eq!(only_record(&w, "kit").key(), before.key());
    assert_eq!(std::fs::read(&file).unwrap(), big);
}
