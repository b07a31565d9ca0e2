//! `settings.layout` / an entry's `layout`: each layout installs (from the Hub emulator and
//! from a local file), repairs, prunes and leaves no orphan; the hf-cache layout is read back
//! with the real `huggingface_hub` package, the ComfyUI paths file with PyYAML (ComfyUI's own
//! loader).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::Digest as _;

use crate::support::hub_server::{FakeFile, FakeRepo, git_sha1};
use crate::support::pyfix;
use crate::support::reconcile::{Work, assert_exit, lora_bytes, lora_repo};
use crate::support::stdout;

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// Runs `script` with the venv's python (huggingface_hub, PyYAML); returns its stdout as JSON.
fn python(script: &str, args: &[&str]) -> Value {
    let out = Command::new(pyfix::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HOME")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "python printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// What `huggingface_hub` finds for a repo in `cache`: the snapshot folder and the sha256 of
/// each file in it, what `try_to_load_from_cache` returns for `file`, and the cache scan.
const HF_READ: &str = r#"
import hashlib, json, os, sys, warnings
from huggingface_hub import snapshot_download, try_to_load_from_cache, scan_cache_dir
cache, repo, revision, file = sys.argv[1:5]
folder = snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True)
files = {}
for root, _, names in os.walk(folder):
    for n in names:
        p = os.path.join(root, n)
        files[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
hit = try_to_load_from_cache(repo, file, cache_dir=cache, revision=revision)
info = scan_cache_dir(cache)
repos = {r.repo_id: {"refs": sorted(x for rev in r.revisions for x in rev.refs),
                     "revisions": sorted(rev.commit_hash for rev in r.revisions),
                     "files": r.nb_files} for r in info.repos}
print(json.dumps({"folder": folder, "files": files, "cached": hit if isinstance(hit, str) else None,
                  "repos": repos, "warnings": [str(w) for w in info.warnings]}))
"#;

fn hf_read(cache: &Path, repo: &str, revision: &str, file: &str) -> Value {
    python(HF_READ, &[cache.to_str().unwrap(), repo, revision, file])
}

/// The store of a work folder whose manifest puts it at `state/modelsync.db`.
fn state_store(w: &Work) -> Box<dyn modelsync::RecordStore> {
    modelsync::store::open(&w.path().join("state/modelsync.db")).expect("open store")
}

fn record_path(w: &Work, store: &dyn modelsync::RecordStore, entry: &str) -> PathBuf {
    let r = store
        .all_models()
        .unwrap()
        .into_iter()
        .find(|r| {
            r.common()
                .managed
                .as_ref()
                .is_some_and(|m| m.entry == entry)
        })
        .unwrap_or_else(|| panic!("no record of {entry}"));
    r.resolved_path(&w.models())
}

/// Orphans as `status` reports them; `sync` (InvokeAI's model search) agrees there is
/// nothing unrecorded.
fn status_orphans(w: &Work) -> Vec<Value> {
    let o = w.run(&["sync", "--exit-code"]);
    assert_exit(&o, 0);
    let o = w.run(&["status", "-o", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("status JSON: {e}\n{}", String::from_utf8_lossy(&o.stderr)));
    assert_exit(&o, 0);
    v["orphan_paths"].as_array().cloned().unwrap_or_default()
}

fn link_of(p: &Path) -> String {
    std::fs::read_link(p)
        .unwrap_or_else(|e| panic!("{} is no symlink: {e}", p.display()))
        .to_string_lossy()
        .into_owned()
}

/// Hub repo (whole), Hub single file and local file in the hf-cache layout: laid out as
/// huggingface_hub lays out its cache (blob names, relative links, refs), found by
/// `snapshot_download(local_files_only=True)` and `try_to_load_from_cache`, listed by
/// `scan_cache_dir` without warnings; status sees no orphan; a deleted link and a corrupted
/// blob are repaired; a pruned model takes its repo folder along.
#[test]
fn hf_cache_layout_is_what_huggingface_hub_reads() {
    let w = Work::new();
    let readme = br#"{"note": "a small git file"}"#.to_vec();
    let weights = lora_bytes(1, 3);
    w.hub.add_repo(
        FakeRepo::new("owner/whole")
            .file("config.json", readme.clone())
            .file("lora.safetensors", weights.clone()),
    );
    w.hub.add_repo(lora_repo("owner/single", 2, 2));
    let single_bytes = lora_bytes(2, 2);
    let local = w.local_lora("mine.safetensors", 3);
    let local_bytes = std::fs::read(&local).unwrap();
    let entries = |with_single: bool| {
        let mut m = String::from("  - name: whole\n    source: owner/whole\n");
        if with_single {
            m.push_str("  - name: single\n    source: owner/single::lora.safetensors\n");
        }
        let _ = writeln!(m, "  - name: local-lora\n    source: {}", local.display());
        m
    };
    let settings = "  layout: hf-cache\n  database: state/modelsync.db\n";
    w.manifest(settings, &entries(true));
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);

    let models = w.models();
    let commit = w.hub.commit("owner/whole", "main");
    let repo = models.join("models--owner--whole");
    let snap = repo.join("snapshots").join(&commit);
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        commit
    );
    // Blob names are the Hub's ETags: the LFS sha256, the git blob sha1 of a small file.
    assert_eq!(
        link_of(&snap.join("lora.safetensors")),
        format!("../../blobs/{}", sha256(&weights))
    );
    assert_eq!(
        link_of(&snap.join("config.json")),
        format!("../../blobs/{}", git_sha1(&readme))
    );
    let store = state_store(&w);
    assert_eq!(record_path(&w, store.as_ref(), "whole"), snap);
    let single_commit = w.hub.commit("owner/single", "main");
    assert_eq!(
        record_path(&w, store.as_ref(), "single"),
        models.join(format!(
            "models--owner--single/snapshots/{single_commit}/lora.safetensors"
        ))
    );

    let got = hf_read(&models, "owner/whole", "main", "lora.safetensors");
    assert_eq!(got["folder"], snap.to_str().unwrap());
    assert_eq!(got["files"]["lora.safetensors"], sha256(&weights));
    assert_eq!(got["files"]["config.json"], sha256(&readme));
    assert_eq!(
        got["cached"],
        snap.join("lora.safetensors").to_str().unwrap()
    );
    assert_eq!(
        got["repos"]["owner/whole"]["refs"],
        serde_json::json!(["main"])
    );
    assert_eq!(got["repos"]["owner/whole"]["files"], 2);
    assert_eq!(
        got["repos"]["owner/single"]["revisions"],
        serde_json::json!([single_commit])
    );
    // The store lives outside models_dir; what is left is modelsync's staging folder, if any.
    let warnings: Vec<&Value> = got["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| !w.as_str().unwrap().contains("/.tmp"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    // A local file: repo `modelsync/<entry name>`, revision main, its sha256 as the blob.
    let got = hf_read(&models, "modelsync/local-lora", "main", "mine.safetensors");
    assert_eq!(got["files"]["mine.safetensors"], sha256(&local_bytes));
    let local_path = record_path(&w, store.as_ref(), "local-lora");
    assert_eq!(got["cached"], local_path.to_str().unwrap());
    assert!(link_of(&local_path).ends_with(&format!("blobs/{}", sha256(&local_bytes))));

    assert!(status_orphans(&w).is_empty());

    // Repair: a deleted link, a small file's blob and a single file's blob corrupted through
    // their links.
    std::fs::remove_file(snap.join("lora.safetensors")).unwrap();
    std::fs::write(snap.join("config.json"), b"{\"note\": \"edited by hand\"}").unwrap();
    let single_path = record_path(&w, store.as_ref(), "single");
    let mut bad = single_bytes.clone();
    bad[200] ^= 0xff;
    std::fs::write(&single_path, &bad).unwrap();
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("whole: repaired"), "{}", stdout(&o));
    assert_eq!(
        link_of(&snap.join("lora.safetensors")),
        format!("../../blobs/{}", sha256(&weights))
    );
    assert_eq!(std::fs::read(snap.join("config.json")).unwrap(), readme);
    assert_eq!(
        link_of(&snap.join("config.json")),
        format!("../../blobs/{}", git_sha1(&readme))
    );
    assert_eq!(std::fs::read(&single_path).unwrap(), single_bytes);
    assert!(single_path.is_symlink());
    assert_exit(&w.run(&["verify"]), 0);
    assert!(status_orphans(&w).is_empty());

    // Prune: the single file's snapshot, ref, blob and repo folder go.
    w.manifest(settings, &entries(false));
    let o = w.run(&["apply", "--prune"]);
    assert_exit(&o, 0);
    assert!(!models.join("models--owner--single").exists());
    assert!(snap.join("lora.safetensors").is_file());
    assert!(status_orphans(&w).is_empty());
}

/// Two entries of one repo at two revisions share a blob: pruning one keeps the shared blob,
/// removes its own blobs, its snapshot and its ref; huggingface_hub still reads the other.
#[test]
fn hf_cache_prune_keeps_a_blob_another_snapshot_links() {
    let w = Work::new();
    let weights = lora_bytes(4, 2);
    w.hub.add_repo(
        FakeRepo::new("owner/shared")
            .file("config.json", "{\"v\": 1}")
            .file("lora.safetensors", weights.clone())
            .branch(
                "v2",
                vec![
                    FakeFile::small("config.json", "{\"v\": 2}"),
                    FakeFile::lfs("lora.safetensors", weights.clone()),
                ],
            ),
    );
    let settings = "  layout: hf-cache\n  database: state/modelsync.db\n";
    let both =
        "  - name: one\n    source: owner/shared\n  - name: two\n    source: owner/shared@v2\n";
    w.manifest(settings, both);
    assert_exit(&w.run(&["apply"]), 0);
    let repo = w.models().join("models--owner--shared");
    let (c1, c2) = (
        w.hub.commit("owner/shared", "main"),
        w.hub.commit("owner/shared", "v2"),
    );
    assert_eq!(std::fs::read_to_string(repo.join("refs/v2")).unwrap(), c2);
    let blob = repo.join("blobs").join(sha256(&weights));
    let v2_readme = repo.join("blobs").join(git_sha1(b"{\"v\": 2}"));
    assert!(blob.is_file() && v2_readme.is_file());
    assert!(status_orphans(&w).is_empty());

    w.manifest(settings, "  - name: one\n    source: owner/shared\n");
    assert_exit(&w.run(&["apply", "--prune"]), 0);
    assert!(blob.is_file(), "the blob snapshot {c1} links to is kept");
    assert!(!v2_readme.exists());
    assert!(!repo.join("snapshots").join(&c2).exists());
    assert!(!repo.join("refs/v2").exists());
    let got = hf_read(&w.models(), "owner/shared", "main", "lora.safetensors");
    assert_eq!(got["files"]["lora.safetensors"], sha256(&weights));
    assert!(status_orphans(&w).is_empty());
}

/// `apply --refresh` after the branch moved: the new commit is a new snapshot, `refs/main`
/// names it, the old snapshot goes, the blob both commits share stays.
#[test]
fn hf_cache_upgrade_is_a_new_snapshot() {
    let w = Work::new();
    let weights = lora_bytes(7, 2);
    let repo_at = |note: &str| {
        FakeRepo::new("owner/moving")
            .file("config.json", format!("{{\"note\": \"{note}\"}}"))
            .file("lora.safetensors", weights.clone())
    };
    w.hub.add_repo(repo_at("one"));
    let settings = "  layout: hf-cache\n  database: state/modelsync.db\n";
    w.manifest(settings, "  - name: moving\n    source: owner/moving\n");
    assert_exit(&w.run(&["apply"]), 0);
    let c1 = w.hub.commit("owner/moving", "main");
    w.hub.add_repo(repo_at("two"));
    let c2 = w.hub.commit("owner/moving", "main");
    assert_ne!(c1, c2);
    let o = w.run(&["apply", "--refresh"]);
    assert_exit(&o, 0);
    let repo = w.models().join("models--owner--moving");
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), c2);
    assert!(!repo.join("snapshots").join(&c1).exists());
    let store = state_store(&w);
    assert_eq!(
        record_path(&w, store.as_ref(), "moving"),
        repo.join("snapshots").join(&c2)
    );
    let got = hf_read(&w.models(), "owner/moving", "main", "config.json");
    assert_eq!(got["files"]["config.json"], sha256(br#"{"note": "two"}"#));
    assert_eq!(got["files"]["lora.safetensors"], sha256(&weights));
    let blobs: Vec<_> = std::fs::read_dir(repo.join("blobs")).unwrap().collect();
    assert_eq!(
        blobs.len(),
        2,
        "the old config.json blob goes, the shared LoRA stays"
    );
    assert!(status_orphans(&w).is_empty());
}

fn embedding(w: &Work) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/weights/embeddings/tiny-ti-sd15.safetensors");
    let to = w.path().join("src/tiny-ti.safetensors");
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, &to).unwrap();
    to
}

/// A flat layout: a Hub LoRA and a local LoRA with the same file name land in the LoRA folder
/// side by side (the second with its key's first characters), the embedding in its own
/// folder; a deleted file is repaired, a pruned one goes, no orphan at any point.
fn flat_layout(layout: &str, loras: &str, embeddings: &str) -> Work {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/hub-lora", 5, 2));
    let hub_bytes = lora_bytes(5, 2);
    let local = w.local_lora("lora.safetensors", 6);
    let local_bytes = std::fs::read(&local).unwrap();
    let emb = embedding(&w);
    let entries = |with_local: bool| {
        let mut m =
            String::from("  - name: hub-lora\n    source: owner/hub-lora::lora.safetensors\n");
        if with_local {
            let _ = writeln!(m, "  - name: local-lora\n    source: {}", local.display());
        }
        let _ = writeln!(m, "  - name: emb\n    source: {}", emb.display());
        m
    };
    let settings = format!("  layout: {layout}\n");
    w.manifest(&settings, &entries(true));
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    let store = w.store();
    let hub_path = record_path(&w, store.as_ref(), "hub-lora");
    let local_path = record_path(&w, store.as_ref(), "local-lora");
    let dir = w.models().join(loras);
    assert_eq!(hub_path.parent().unwrap(), dir);
    assert_eq!(local_path.parent().unwrap(), dir);
    // The first installed keeps the name, the second gets `-<key prefix>`.
    let mut names = [hub_path.clone(), local_path.clone()]
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
    names.sort_by_key(String::len);
    assert_eq!(names[0], "lora.safetensors", "{names:?}");
    assert!(
        names[1].starts_with("lora-") && names[1].ends_with(".safetensors") && names[1].len() == 25,
        "{names:?}"
    );
    assert_eq!(std::fs::read(&hub_path).unwrap(), hub_bytes);
    assert_eq!(std::fs::read(&local_path).unwrap(), local_bytes);
    assert_eq!(
        record_path(&w, store.as_ref(), "emb"),
        w.models().join(embeddings).join("tiny-ti.safetensors")
    );
    assert!(status_orphans(&w).is_empty());

    std::fs::remove_file(&hub_path).unwrap();
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("hub-lora: repaired"), "{}", stdout(&o));
    assert_eq!(std::fs::read(&hub_path).unwrap(), hub_bytes);

    w.manifest(&settings, &entries(false));
    assert_exit(&w.run(&["apply", "--prune"]), 0);
    assert!(!local_path.exists());
    assert!(hub_path.is_file());
    assert!(status_orphans(&w).is_empty());
    w
}

#[test]
fn comfyui_layout_sorts_by_type_and_writes_extra_model_paths() {
    let w = flat_layout("comfyui", "loras", "embeddings");
    let paths = w.models().join("extra_model_paths.yaml");
    let got = python(
        "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        &[paths.to_str().unwrap()],
    );
    let m = &got["modelsync"];
    assert_eq!(
        m["base_path"],
        std::path::absolute(w.models()).unwrap().to_str().unwrap()
    );
    for folder in [
        "checkpoints",
        "loras",
        "vae",
        "controlnet",
        "embeddings",
        "upscale_models",
        "clip_vision",
        "text_encoders",
        "diffusion_models",
    ] {
        assert_eq!(m[folder], format!("{folder}/"), "{got}");
    }
}

#[test]
fn a1111_layout_sorts_by_type() {
    let w = flat_layout("a1111", "Lora", "embeddings");
    assert!(!w.models().join("extra_model_paths.yaml").exists());
}

/// A diffusers folder goes to ComfyUI's `diffusers/<name>/`; changing the entry's layout
/// replaces the model: installed anew in the new layout, the old files gone.
#[test]
fn changing_an_entrys_layout_moves_the_model() {
    let w = Work::new();
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/weights/tiny-sd15");
    let entry = |layout: &str| {
        format!(
            "  - name: tiny\n    source: {}\n    layout: {layout}\n",
            tiny.display()
        )
    };
    w.manifest("", &entry("invokeai"));
    assert_exit(&w.run(&["apply"]), 0);
    let store = w.store();
    let old = record_path(&w, store.as_ref(), "tiny");
    assert!(old.join("model_index.json").is_file());

    w.manifest("", &entry("comfyui"));
    let o = w.run(&["diff"]);
    assert!(stdout(&o).contains("-/+"), "{}", stdout(&o));
    assert_exit(&w.run(&["apply"]), 0);
    let new = record_path(&w, store.as_ref(), "tiny");
    assert_eq!(new, w.models().join("diffusers/tiny"));
    assert!(new.join("unet/config.json").is_file());
    assert!(!old.exists());
    assert_eq!(store.all_models().unwrap().len(), 1);
    assert!(status_orphans(&w).is_empty());
}

#[test]
fn dest_with_the_hf_cache_layout_is_refused_at_its_line() {
    let w = Work::new();
    w.manifest(
        "  layout: hf-cache\n",
        "  - name: x\n    source: owner/x\n    dest: loras/x.safetensors\n",
    );
    let o = w.run(&["diff"]);
    assert_exit(&o, 1);
    let err = crate::support::stderr(&o);
    assert!(err.contains("models.yaml:8:11"), "{err}");
    assert!(err.contains("hf-cache"), "{err}");
}

/// `import --layout` lays one model out as the manifest's `layout` would.
#[test]
fn import_takes_a_layout() {
    let w = Work::new();
    let lora = w.local_lora("detail.safetensors", 8);
    let o = w.run(&[
        "import",
        lora.to_str().unwrap(),
        "--layout",
        "a1111",
        "--models-dir",
        "models",
        "--database",
        "models/modelsync.db",
    ]);
    assert_exit(&o, 0);
    let store = w.store();
    let r = &store.all_models().unwrap()[0];
    assert_eq!(r.common().path, "Lora/detail.safetensors");
    assert_eq!(
        std::fs::read(w.models().join("Lora/detail.safetensors")).unwrap(),
        std::fs::read(&lora).unwrap()
    );
    let o = w.run(&["import", lora.to_str().unwrap(), "--layout", "nowhere"]);
    assert_exit(&o, 1);
    let err = crate::support::stderr(&o);
    assert!(
        err.contains("invalid layout `nowhere`: expected one of invokeai, hf-cache"),
        "{err}"
    );
}
