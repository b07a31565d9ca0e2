//! `modelsync status`, `verify` and `gc`, and the shipped examples.

use crate::support::reconcile::{Work, assert_exit, lora_repo};
use crate::support::{stderr, stdout};

fn installed() -> Work {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/hub-lora", 1, 4));
    let local = w.local_lora("local.safetensors", 2);
    w.manifest(
        "",
        &format!(
            "  - name: hub-lora\n    source: owner/hub-lora::lora.safetensors\n\
             \x20 - name: local-lora\n    source: {}\n    dest: loras/local.safetensors\n",
            local.display()
        ),
    );
    assert_exit(&w.run(&["apply"]), 0);
    w
}

#[test]
fn status_reports_missing_and_orphan_files() {
    let w = installed();
    let o = w.run(&["status"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("In sync: 2 model(s)."));

    std::fs::remove_file(w.models().join("loras/local.safetensors")).unwrap();
    std::fs::write(w.models().join("stray.bin"), b"left behind").unwrap();
    std::fs::create_dir_all(w.models().join(".tmp/partial")).unwrap();
    let o = w.run(&["status"]);
    assert_exit(&o, 2);
    let out = stdout(&o);
    assert!(out.contains("local-lora: repair — 1 file missing"), "{out}");
    assert!(out.contains("stray.bin: in "), "{out}");
    assert!(!out.contains("partial"), "{out}");

    let o = w.run(&["status", "-o", "json"]);
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["drifted"], true);
    assert_eq!(r["drift"][0]["action"], "repair");
    assert_eq!(r["orphan_paths"][0]["path"], "stray.bin");
    assert_eq!(r["orphan_paths"][0]["bytes"], 11);
    assert_eq!(r["missing_paths"][0]["entry"], "local-lora");
}

#[test]
fn verify_names_the_damaged_file() {
    let w = installed();
    assert_exit(&w.run(&["verify"]), 0);
    let p = w.models().join("loras/local.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&p, &bytes).unwrap();
    let o = w.run(&["verify", "local-lora"]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(out.contains("BAD local-lora"), "{out}");
    assert!(out.contains("file `local.safetensors`"), "{out}");
    assert!(out.contains("content hash"), "{out}");
    // The other model is fine on its own.
    assert_exit(&w.run(&["verify", "hub-lora"]), 0);
    let o = w.run(&["verify", "nope"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("no model named `nope`"));
}

#[test]
fn gc_is_a_dry_run_unless_yes() {
    let w = installed();
    // A partial last touched two hours ago, and one being written now.
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_hours(2);
    std::fs::create_dir_all(w.models().join(".tmp/stale")).unwrap();
    std::fs::write(w.models().join(".tmp/stale/x.part"), b"partial").unwrap();
    for p in [".tmp/stale/x.part", ".tmp/stale"] {
        std::fs::File::open(w.models().join(p))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    std::fs::create_dir_all(w.models().join(".tmp/fresh")).unwrap();
    std::fs::write(w.models().join(".tmp/fresh/y.part"), b"in flight").unwrap();
    std::fs::create_dir_all(w.models().join(".cache/abc")).unwrap();
    std::fs::write(w.models().join("orphan.safetensors"), b"orphan").unwrap();
    let o = w.run(&["gc"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("partial  .tmp/stale"), "{out}");
    assert!(!out.contains(".tmp/fresh"), "{out}");
    assert!(out.contains("cache    .cache/abc"), "{out}");
    assert!(out.contains("orphan   orphan.safetensors"), "{out}");
    assert!(out.contains("Would remove 3 item(s)"), "{out}");
    assert!(
        out.contains("Kept 1 partial download(s) changed within --min-age 1h."),
        "{out}"
    );
    assert!(w.models().join("orphan.safetensors").exists());

    let o = w.run(&["gc", "--yes"]);
    assert_exit(&o, 0);
    assert!(!w.models().join("orphan.safetensors").exists());
    assert!(!w.models().join(".tmp/stale").exists());
    assert!(w.models().join(".tmp/fresh/y.part").is_file());
    assert!(!w.models().join(".cache/abc").exists());

    // `--min-age 0s` collects every partial.
    let o = w.run(&["gc", "--yes", "--min-age", "0s", "-o", "json"]);
    assert_exit(&o, 0);
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["spared_partials"], 0, "{j}");
    assert!(!w.models().join(".tmp/fresh").exists());
    assert_exit(&w.run(&["status"]), 0);
    assert_exit(&w.run(&["verify"]), 0);
}

#[test]
fn the_quick_start_example_applies_offline() {
    let w = Work::new();
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/models.yaml");
    let models = w.models();
    let models = models.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["-f", manifest, "--models-dir", models];
        all.extend_from_slice(args);
        w.command(&all).env("HF_HUB_OFFLINE", "1").output().unwrap()
    };
    let o = run(&["apply", "--preload"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("Apply complete: 3 change(s)"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("preloaded tiny-sd15: 5 part(s)"),
        "{}",
        stdout(&o)
    );
    let o = run(&["diff", "--exit-code"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("No changes: 3 model(s) in sync."));
    let o = run(&["list", "-o", "json"]);
    let list = stdout(&o);
    for (name, ty) in [
        ("detail-lora", "lora"),
        ("tiny-embedding", "embedding"),
        ("tiny-sd15", "main"),
    ] {
        assert!(list.contains(&format!("\"name\": \"{name}\"")), "{list}");
        assert!(list.contains(&format!("\"type\": \"{ty}\"")), "{list}");
    }
    assert_exit(&run(&["verify"]), 0);
    assert!(w.hub.requests().is_empty());
}

#[test]
fn the_huggingface_example_parses() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/huggingface.yaml"
    ));
    let text = std::fs::read_to_string(path).unwrap();
    let env = |var: &str| (var == "HF_TOKEN").then(|| "hf_example".to_owned());
    let m = modelsync::manifest::parse_str(&text, path, &env).unwrap();
    let names: Vec<&str> = m.models.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "sd15",
            "sdxl-vae",
            "sdxl",
            "sd15-inpaint-ckpt",
            "flux-dev",
            "detail-tweaker",
            "controlnet-canny"
        ]
    );
    assert!(m.entry("sdxl-vae").unwrap().is_pinned());
    assert_eq!(
        m.entry("sd15").unwrap().canonical_source(),
        "stable-diffusion-v1-5/stable-diffusion-v1-5@main:fp16"
    );
    assert!(
        m.entry("controlnet-canny")
            .unwrap()
            .canonical_source()
            .contains("/resolve/main/")
    );
}

/// The store (in a subfolder), the manifest and its lock file all live in models_dir, and
/// two models were moved to another disk and symlinked back: gc keeps all of it, removes the
/// real orphans, and unlinks an orphan symlink without touching its target.
#[test]
fn gc_keeps_the_store_the_manifest_and_symlinked_models() {
    use std::os::unix::fs::symlink;

    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/hub-lora", 1, 4));
    let local = w.local_lora("local.safetensors", 2);
    let models = w.models();
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(
        models.join("cluster.yaml"),
        format!(
            "version: 1\nsettings:\n  models_dir: .\nmodels:\n\
             \x20 - name: hub-lora\n    source: owner/hub-lora::lora.safetensors\n\
             \x20 - name: local-lora\n    source: {}\n    dest: loras/local.safetensors\n",
            local.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut all = vec![
            "-f",
            "models/cluster.yaml",
            "--database",
            "models/state/modelsync.db",
        ];
        all.extend_from_slice(args);
        w.run(&all)
    };
    assert_exit(&run(&["apply"]), 0);
    let db = models.join("state/modelsync.db");
    assert!(db.is_file());
    assert!(models.join("cluster.lock").is_file());

    // Move both models to "another disk" and symlink them back.
    let disk2 = w.path().join("disk2");
    std::fs::create_dir_all(&disk2).unwrap();
    let store = modelsync::store::open(&db).unwrap();
    let hub_key = store
        .all_models()
        .unwrap()
        .into_iter()
        .find(|c| c.common().name == "hub-lora")
        .unwrap()
        .common()
        .path
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    drop(store);
    for name in [hub_key.as_str(), "loras"] {
        std::fs::rename(models.join(name), disk2.join(name)).unwrap();
        symlink(disk2.join(name), models.join(name)).unwrap();
    }
    // Real garbage: a stray file, a stray folder, and a stray symlink to a file elsewhere.
    std::fs::write(models.join("stray.bin"), b"left behind").unwrap();
    std::fs::create_dir_all(models.join("old/sub")).unwrap();
    std::fs::write(models.join("old/sub/x.bin"), b"x").unwrap();
    let outside = w.path().join("outside.bin");
    std::fs::write(&outside, b"not gc's").unwrap();
    symlink(&outside, models.join("link.bin")).unwrap();
    std::fs::write(models.join("state/notes.txt"), b"stray next to the store").unwrap();

    let o = run(&["gc"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    for kept in ["cluster", "modelsync.db", "loras", hub_key.as_str()] {
        assert!(!out.contains(kept), "gc lists {kept}:\n{out}");
    }
    assert!(out.contains("Would remove 4 item(s)"), "{out}");

    let o = run(&["gc", "--yes"]);
    assert_exit(&o, 0);
    for kept in [
        db.clone(),
        models.join("state/modelsync.db.lock"),
        models.join("cluster.yaml"),
        models.join("cluster.lock"),
        outside.clone(),
    ] {
        assert!(kept.exists(), "gc removed {}", kept.display());
    }
    for link in [hub_key.as_str(), "loras"] {
        let md = std::fs::symlink_metadata(models.join(link)).unwrap();
        assert!(md.file_type().is_symlink(), "{link}");
    }
    assert!(disk2.join("loras/local.safetensors").is_file());
    for gone in ["stray.bin", "old", "link.bin", "state/notes.txt"] {
        assert!(
            std::fs::symlink_metadata(models.join(gone)).is_err(),
            "{gone} survived"
        );
    }
    assert_exit(&run(&["status"]), 0);
    assert_exit(&run(&["verify"]), 0);
}

/// Runs `args` with the debug-build pause hook at `delete` (between unregistering a model and
/// deleting its files), waits until the process says it is there, and kills it with SIGKILL.
fn kill_at_delete(w: &Work, args: &[&str]) {
    use std::io::BufRead as _;
    let mut child = w
        .command(args)
        .env("MODELSYNC_TEST_PAUSE", "delete")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        if line == "modelsync-test: paused at delete" {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        seen.push(line);
    }
    panic!(
        "{args:?} ended ({:?}) without reaching the delete pause:\n{}",
        child.wait().unwrap(),
        seen.join("\n")
    );
}

fn key_of(w: &Work, name: &str) -> Option<String> {
    w.store()
        .all_models()
        .unwrap()
        .into_iter()
        .find(|c| c.common().name == name)
        .map(|c| c.common().key.clone())
}

/// `remove --delete-files` and `apply --prune` killed between their steps leave an orphan
/// that gc collects, never a record whose files are gone.
#[test]
fn a_kill_during_delete_leaves_an_orphan_not_a_broken_record() {
    let w = installed();
    let hub_key = key_of(&w, "hub-lora").unwrap();
    let hub_file = w.models().join(&hub_key).join("lora.safetensors");
    assert!(hub_file.is_file());

    kill_at_delete(&w, &["remove", &hub_key, "--delete-files"]);
    assert_eq!(key_of(&w, "hub-lora"), None, "the record goes first");
    assert!(hub_file.is_file(), "the kill came before the files went");
    let o = w.run(&["status", "-o", "json"]);
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["orphan_paths"][0]["path"], hub_key.as_str(), "{r}");
    assert_eq!(r["missing_paths"], serde_json::json!([]), "{r}");

    let local = w.models().join("loras/local.safetensors");
    w.manifest("", "  []\n");
    kill_at_delete(&w, &["apply", "--prune"]);
    assert_eq!(key_of(&w, "local-lora"), None);
    assert!(local.is_file());

    assert_exit(&w.run(&["gc", "--yes"]), 0);
    assert!(!w.models().join(&hub_key).exists());
    assert!(!local.exists());
    assert_exit(&w.run(&["status"]), 0);
    assert!(w.store().all_models().unwrap().is_empty());
}

/// A single-file model lives in `<key>/<file>`; deleting it takes the folder too.
#[test]
fn remove_delete_files_leaves_no_empty_key_folder() {
    let w = installed();
    let hub_key = key_of(&w, "hub-lora").unwrap();
    assert!(w.models().join(&hub_key).is_dir());
    let o = w.run(&["remove", &hub_key, "--delete-files"]);
    assert_exit(&o, 0);
    assert!(!w.models().join(&hub_key).exists(), "{}", stdout(&o));
    let o = w.run(&["status", "-o", "json"]);
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["orphan_paths"], serde_json::json!([]), "{r}");
}
