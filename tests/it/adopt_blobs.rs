//! Adopt instead of download: bytes already on the machine — a Hugging Face cache laid out by
//! the real `huggingface_hub` (`snapshot_download` against the Hub emulator), the store's own
//! files, a `settings.adopt_from` folder — are hard-linked (or copied) and checked instead of
//! fetched.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::pyfix;
use crate::support::reconcile::{Work, assert_exit, body_requests, lora_bytes, lora_repo};

/// `huggingface_hub.snapshot_download(repo, cache_dir=cache)` against the emulator: the cache
/// exactly as the real library lays it out (`models--owner--name/{blobs,snapshots,refs}`).
fn hf_snapshot(w: &Work, repo: &str, cache: &Path) -> PathBuf {
    let out = Command::new(pyfix::python())
        .arg("-c")
        .arg(
            "import sys\nfrom huggingface_hub import snapshot_download\n\
             print(snapshot_download(sys.argv[1], cache_dir=sys.argv[2]))",
        )
        .arg(repo)
        .arg(cache)
        .env("HF_ENDPOINT", w.hub.endpoint())
        .env("HF_HOME", w.path().join(".hf-python"))
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "snapshot_download failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The blob a snapshot file points at.
fn blob_of(snapshot: &Path, file: &str) -> PathBuf {
    let p = snapshot.join(file);
    assert!(p.is_symlink(), "{} is a symlink into blobs/", p.display());
    p.canonicalize().unwrap()
}

/// The installed file of entry `name`.
fn installed(w: &Work, name: &str, file: &str) -> PathBuf {
    let store = w.store();
    let r = store
        .all_models()
        .unwrap()
        .into_iter()
        .find(|r| r.common().name == name)
        .unwrap_or_else(|| panic!("a record named {name}"));
    let p = r.resolved_path(&w.models());
    if p.is_dir() { p.join(file) } else { p }
}

fn lora_gets(w: &Work) -> Vec<String> {
    body_requests(&w.hub)
        .into_iter()
        .filter(|r| r.contains("lora.safetensors"))
        .collect()
}

#[test]
fn hf_cache_made_by_huggingface_hub_is_adopted_with_no_file_download() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 1, 4));
    let snap = hf_snapshot(&w, "owner/lora", &w.path().join(".hf/hub"));
    let blob = blob_of(&snap, "lora.safetensors");
    assert_eq!(std::fs::read(&blob).unwrap(), lora_bytes(1, 4));
    w.hub.clear_log();
    w.manifest("", "  - name: lora\n    source: owner/lora\n");

    let diff = w.run(&["diff"]);
    assert_exit(&diff, 0);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        text.contains("adopt from the HF cache (") && text.contains("no download)"),
        "{text}"
    );
    assert!(text.contains("— 0 B to fetch"), "{text}");

    let out = w.run(&["apply"]);
    assert_exit(&out, 0);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("adopted from the HF cache (no download)"),
        "{said}"
    );
    assert_eq!(body_requests(&w.hub), Vec::<String>::new(), "no file GETs");
    let file = installed(&w, "lora", "lora.safetensors");
    assert_eq!(std::fs::read(&file).unwrap(), lora_bytes(1, 4));
    let (a, b) = (file.metadata().unwrap(), blob.metadata().unwrap());
    assert_eq!(
        (a.dev(), a.ino()),
        (b.dev(), b.ino()),
        "hard-linked to the blob"
    );
    // The cache is as huggingface_hub left it: the snapshot still resolves to the blob.
    assert_eq!(blob_of(&snap, "lora.safetensors"), blob);
    assert!(
        w.path()
            .join(".hf/hub/models--owner--lora/refs/main")
            .is_file()
    );

    // Deleting the model unlinks modelsync's name only: the cache keeps its bytes.
    let yaml = "  []\n";
    w.manifest("  prune: true\n", yaml);
    assert_exit(&w.run(&["apply"]), 0);
    assert!(!file.exists());
    assert_eq!(std::fs::read(&blob).unwrap(), lora_bytes(1, 4));
}

#[test]
fn a_cache_blob_whose_bytes_do_not_match_its_name_is_not_adopted() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 2, 4));
    let snap = hf_snapshot(&w, "owner/lora", &w.path().join(".hf/hub"));
    let blob = blob_of(&snap, "lora.safetensors");
    // Same size, other bytes: a damaged cache.
    let other = lora_bytes(3, 4);
    assert_eq!(other.len(), lora_bytes(2, 4).len());
    std::fs::write(&blob, &other).unwrap();
    let inode = blob.metadata().unwrap().ino();
    w.hub.clear_log();
    w.manifest("", "  - name: lora\n    source: owner/lora\n");

    assert_exit(&w.run(&["apply"]), 0);
    assert_eq!(lora_gets(&w).len(), 1, "downloaded instead");
    let file = installed(&w, "lora", "lora.safetensors");
    assert_eq!(std::fs::read(&file).unwrap(), lora_bytes(2, 4));
    assert_ne!(file.metadata().unwrap().ino(), inode);
    // The cache is untouched: same file, same (wrong) bytes, nothing beside it.
    assert_eq!(blob.metadata().unwrap().ino(), inode);
    assert_eq!(std::fs::read(&blob).unwrap(), other);
    let names: Vec<_> = std::fs::read_dir(blob.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "README.md's blob and the weights' only: {names:?}"
    );
}

#[test]
fn two_entries_sharing_a_blob_are_stored_once() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 4, 4));
    w.manifest("", "  - name: first\n    source: owner/lora\n");
    assert_exit(&w.run(&["apply"]), 0);
    assert_eq!(lora_gets(&w).len(), 1);
    w.hub.clear_log();

    // A second entry of the same files: the store's own copy is adopted.
    w.manifest(
        "",
        "  - name: first\n    source: owner/lora\n  - name: second\n    source: owner/lora\n    description: the same weights again\n",
    );
    let diff = w.run(&["diff"]);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(text.contains("adopt from the store (model "), "{text}");
    let out = w.run(&["apply"]);
    assert_exit(&out, 0);
    assert_eq!(lora_gets(&w), Vec::<String>::new(), "no second download");
    let a = installed(&w, "first", "lora.safetensors");
    let b = installed(&w, "second", "lora.safetensors");
    assert_ne!(a, b, "two installs");
    assert_eq!(
        a.metadata().unwrap().ino(),
        b.metadata().unwrap().ino(),
        "one file on disk"
    );

    // Repairing one name writes a new file and renames it over: the other keeps its bytes.
    std::fs::remove_file(&a).unwrap();
    assert_exit(&w.run(&["apply"]), 0);
    assert_eq!(std::fs::read(&a).unwrap(), lora_bytes(4, 4));
    assert_eq!(std::fs::read(&b).unwrap(), lora_bytes(4, 4));
}

/// Both entries new in one run: both download at once, and the second to be promoted links to
/// the first's file.
#[test]
fn two_new_entries_in_one_apply_share_one_file() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 7, 4));
    w.manifest(
        "",
        "  - name: first\n    source: owner/lora\n  - name: second\n    source: owner/lora\n    description: the same weights again\n",
    );
    assert_exit(&w.run(&["apply"]), 0);
    let a = installed(&w, "first", "lora.safetensors");
    let b = installed(&w, "second", "lora.safetensors");
    assert_ne!(a, b);
    assert_eq!(a.metadata().unwrap().ino(), b.metadata().unwrap().ino());
    assert_eq!(std::fs::read(&b).unwrap(), lora_bytes(7, 4));
}

#[test]
fn settings_adopt_from_folder_is_searched_by_name_and_size() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 5, 4));
    let stash = w.path().join("stash/loras");
    std::fs::create_dir_all(&stash).unwrap();
    std::fs::write(stash.join("lora.safetensors"), lora_bytes(5, 4)).unwrap();
    w.manifest(
        "  adopt_from: [stash]\n",
        "  - name: lora\n    source: owner/lora\n",
    );
    let diff = w.run(&["diff"]);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        text.contains("stash (") && text.contains("no download)"),
        "{text}"
    );
    assert_exit(&w.run(&["apply"]), 0);
    assert_eq!(lora_gets(&w), Vec::<String>::new());
    let file = installed(&w, "lora", "lora.safetensors");
    assert_eq!(
        file.metadata().unwrap().ino(),
        stash.join("lora.safetensors").metadata().unwrap().ino()
    );
}

/// A URL entry with `hash: sha256:…` and a folder of blobs named by their sha256, as Ollama
/// names them (`sha256-<hex>`).
#[test]
fn a_url_entry_with_a_hash_adopts_a_blob_named_by_its_sha256() {
    use sha2::Digest as _;
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/lora", 8, 4));
    let bytes = lora_bytes(8, 4);
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let blobs = w.path().join("ollama/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("sha256-{sha}")), &bytes).unwrap();
    let url = format!(
        "{}/owner/lora/resolve/main/lora.safetensors",
        w.hub.endpoint()
    );
    w.manifest(
        "  adopt_from: [ollama]\n",
        &format!("  - name: lora\n    source: {url}\n    hash: sha256:{sha}\n"),
    );
    let diff = w.run(&["diff"]);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        text.contains("ollama (") && text.contains("no download)"),
        "{text}"
    );
    assert_exit(&w.run(&["apply"]), 0);
    assert_eq!(lora_gets(&w), Vec::<String>::new());
    let file = installed(&w, "lora", "lora.safetensors");
    assert!(file.ends_with("lora.safetensors"), "{}", file.display());
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}

/// Across file systems the bytes are copied: the HF cache on `/dev/shm` (tmpfs), the models
/// on the temp dir's file system.
#[test]
fn across_file_systems_the_cache_is_copied() {
    let w = Work::new();
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm is a tmpfs on Linux");
    assert_ne!(
        shm.path().metadata().unwrap().dev(),
        w.path().metadata().unwrap().dev(),
        "the cache and the models must be on two file systems for this test"
    );
    w.hub.add_repo(lora_repo("owner/lora", 6, 4));
    let snap = hf_snapshot(&w, "owner/lora", shm.path());
    let blob = blob_of(&snap, "lora.safetensors");
    w.hub.clear_log();
    w.manifest("", "  - name: lora\n    source: owner/lora\n");
    let out = w
        .command(&["apply"])
        .env("HF_HUB_CACHE", shm.path())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(body_requests(&w.hub), Vec::<String>::new());
    let file = installed(&w, "lora", "lora.safetensors");
    assert_eq!(std::fs::read(&file).unwrap(), lora_bytes(6, 4));
    assert_ne!(
        file.metadata().unwrap().dev(),
        blob.metadata().unwrap().dev()
    );
    assert_eq!(
        blob.metadata().unwrap().nlink(),
        1,
        "the cache's file is its own"
    );
}
