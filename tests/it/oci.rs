//! `oci://` sources against a real CNCF Distribution registry (`docker-registry`, started by
//! `support::registry` in open, htpasswd and token-auth modes), with artifacts pushed by the
//! `oras` Python client (not by modelsync): plain ORAS artifacts and ModelPack-shaped ones,
//! pulled by `apply` and `import`; credentials from the entry and the Docker config; a
//! corrupted blob, traversal paths, a moved tag with `--refresh`, `--locked`, and a pull
//! killed mid-blob that resumes with `Range`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::pyfix::{self, Spec};
use crate::support::reconcile::{Work, assert_exit, lora_bytes};
use crate::support::registry::{self, Auth, PASSWORD, Proxy, Registry, USER};
use crate::support::{stderr, stdout};

/// `oras push` from Python: `spec` has `host`, `target`, `dir`, `files` (paths relative to
/// `dir`, `path:mediatype` to set a media type), optional `annotations` (oras' annotation
/// file: blob path → annotations, `$manifest`), `config` (`path:mediatype`), `user`,
/// `password` and `backend` (`basic` or `token`). Prints the manifest digest.
const PUSH: &str = r#"
import json, os, sys
import oras.client
spec = json.loads(sys.argv[1])
os.chdir(spec["dir"])
c = oras.client.OrasClient(hostname=spec["host"], insecure=True, auth_backend=spec.get("backend", "token"))
if spec.get("user"):
    c.auth.set_basic_auth(spec["user"], spec["password"])
af = None
if spec.get("annotations"):
    af = os.path.join(spec["dir"], "annotations.json")
    with open(af, "w") as f:
        json.dump(spec["annotations"], f)
r = c.push(target=spec["target"], files=spec["files"], annotation_file=af,
           manifest_config=spec.get("config"), disable_path_validation=True, quiet=True)
print(r.headers.get("Docker-Content-Digest", ""))
"#;

fn push(spec: &Value) -> String {
    registry::python(PUSH, &[&spec.to_string()])
        .trim()
        .to_owned()
}

/// Pushes `data` as `lora.safetensors` to `repo_tag` on `reg` with oras; `auth` adds the
/// push's `user`, `password` and `backend`. Returns the manifest digest oras reports.
fn push_lora(reg: &Registry, repo_tag: &str, data: &[u8], auth: &Value) -> String {
    let src = crate::support::tmp();
    std::fs::write(src.path().join("lora.safetensors"), data).unwrap();
    let mut spec = json!({
        "host": reg.host(), "target": format!("{}/{repo_tag}", reg.host()),
        "dir": src.path(), "files": ["lora.safetensors"],
    });
    if let (Some(spec), Some(auth)) = (spec.as_object_mut(), auth.as_object()) {
        spec.extend(auth.clone());
    }
    push(&spec)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

/// A LoRA written by the `safetensors` package (kohya key names, sd_v1 metadata).
fn real_lora(path: &Path, rank: u64) -> Vec<u8> {
    let k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    pyfix::write(&[Spec::safetensors(
        path.to_path_buf(),
        vec![
            (format!("{k}.alpha"), vec![]),
            (format!("{k}.lora_down.weight"), vec![rank, 768]),
            (format!("{k}.lora_up.weight"), vec![320, rank]),
        ],
    )
    .metadata(json!({"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora"}))]);
    std::fs::read(path).unwrap()
}

/// The binary in `w` with an empty Docker config (no credentials from this machine).
fn run(w: &Work, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = w.command(args);
    c.env("DOCKER_CONFIG", w.path().join(".docker"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("modelsync runs")
}

fn insecure(host: &str) -> String {
    format!("  registries:\n    \"{host}\":\n      insecure: true\n")
}

fn records(w: &Work) -> Vec<modelsync::AnyModelConfig> {
    if !w.models().join("modelsync.db").exists() {
        return Vec::new();
    }
    w.store().all_models().unwrap()
}

fn one_record(w: &Work) -> modelsync::AnyModelConfig {
    let all = records(w);
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
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

/// A LoRA pushed by `oras` (a plain ORAS artifact: the file named by
/// `org.opencontainers.image.title`) is pulled by `apply` and identified by the probe; the tag
/// resolved to the digest oras reported, which goes in models.lock; the file's sha256 is the
/// layer digest.
#[test]
fn an_oras_pushed_lora_is_pulled_identified_and_locked_by_digest() {
    let reg = Registry::start(Auth::Open);
    let src = crate::support::tmp();
    let data = real_lora(&src.path().join("lora.safetensors"), 4);
    let digest = push(&json!({
        "host": reg.host(), "target": format!("{}/team/lora:v1", reg.host()),
        "dir": src.path(), "files": ["lora.safetensors"],
    }));
    assert!(digest.starts_with("sha256:"), "{digest}");
    let w = Work::new();
    w.manifest(
        &insecure(&reg.host()),
        &format!("  - name: lora\n    source: {}\n", reg.oci("team/lora:v1")),
    );
    assert_exit(&run(&w, &["apply"], &[]), 0);
    let rec = one_record(&w);
    let c = rec.common();
    assert_eq!(rec.model_type().to_string(), "lora");
    assert_eq!(rec.base().to_string(), "sd-1");
    assert_eq!(c.source, reg.oci("team/lora:v1"));
    let path = rec.resolved_path(&w.models());
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let lock = w.lock();
    let l = &lock.entries["lora"];
    assert_eq!(l.resolved_commit.as_deref(), Some(digest.as_str()));
    assert_eq!(l.revision.as_deref(), Some("v1"));
    assert_eq!(l.files.len(), 1);
    assert_eq!(
        l.files[0].sha256.as_deref(),
        Some(sha256_hex(&data).as_str())
    );
    // Converged: a second apply fetches nothing and changes nothing.
    let o = run(&w, &["diff", "--exit-code"], &[]);
    assert_exit(&o, 0);
}

/// A ModelPack-shaped artifact (ModelPack config media type, `weight`/`weight.config` raw
/// layers placed by `org.cncf.model.filepath`, a `doc` tar layer), built with oras from
/// Python, is imported with `modelsync import oci://…` into the paths the annotations name
/// (not the file names oras put in the titles).
#[test]
fn a_modelpack_artifact_is_imported_with_paths_from_its_filepath_annotations() {
    let reg = Registry::start(Auth::Open);
    let src = crate::support::tmp();
    let weights = real_lora(&src.path().join("w.bin"), 2);
    std::fs::write(src.path().join("cfg.json"), br#"{"rank": 2}"#).unwrap();
    std::fs::write(
        src.path().join("modelpack.json"),
        json!({"descriptor": {"name": "demo"}, "config": {"format": "safetensors"},
               "modelfs": {"type": "layers", "diffIds": []}})
        .to_string(),
    )
    .unwrap();
    registry::python(
        r##"
import sys, tarfile, io, os
d = sys.argv[1]
with tarfile.open(os.path.join(d, "docs.tar"), "w") as t:
    for name, data in [("README.md", b"# demo\n"), ("docs/LICENSE", b"Apache-2.0\n")]:
        info = tarfile.TarInfo(name); info.size = len(data)
        t.addfile(info, io.BytesIO(data))
"##,
        &[src.path().to_str().unwrap()],
    );
    push(&json!({
        "host": reg.host(), "target": format!("{}/team/demo:v1", reg.host()),
        "dir": src.path(),
        "files": [
            "w.bin:application/vnd.cncf.model.weight.v1.raw",
            "cfg.json:application/vnd.cncf.model.weight.config.v1.raw",
            "docs.tar:application/vnd.cncf.model.doc.v1.tar",
        ],
        "annotations": {
            "w.bin": {"org.cncf.model.filepath": "weights/lora.safetensors"},
            "cfg.json": {"org.cncf.model.filepath": "weights/config.json"},
        },
        "config": "modelpack.json:application/vnd.cncf.model.config.v1+json",
    }));
    let w = Work::new();
    w.manifest(&insecure(&reg.host()), "  []\n");
    let o = run(&w, &["import", &reg.oci("team/demo:v1")], &[]);
    assert_exit(&o, 0);
    let rec = one_record(&w);
    let root = rec.resolved_path(&w.models());
    assert_eq!(
        std::fs::read(root.join("weights/lora.safetensors")).unwrap(),
        weights
    );
    assert_eq!(
        std::fs::read(root.join("weights/config.json")).unwrap(),
        br#"{"rank": 2}"#
    );
    assert_eq!(std::fs::read(root.join("README.md")).unwrap(), b"# demo\n");
    assert_eq!(
        std::fs::read(root.join("docs/LICENSE")).unwrap(),
        b"Apache-2.0\n"
    );
    assert!(!root.join("w.bin").exists() && !root.join("docs.tar").exists());
    assert_eq!(rec.common().source, reg.oci("team/demo:v1"));
}

/// Layer paths are untrusted: a ModelPack `filepath` with `..` or an absolute path is refused
/// with the Hub's unsafe-path error, nothing is registered and nothing is written outside
/// models_dir.
#[test]
fn traversal_paths_in_annotations_are_refused() {
    let reg = Registry::start(Auth::Open);
    let src = crate::support::tmp();
    std::fs::write(src.path().join("w.bin"), b"evil").unwrap();
    std::fs::write(src.path().join("modelpack.json"), b"{}").unwrap();
    for (tag, path) in [
        ("dotdot", "../../escape.safetensors"),
        ("abs", "/tmp/escape.safetensors"),
    ] {
        push(&json!({
            "host": reg.host(), "target": format!("{}/team/evil:{tag}", reg.host()),
            "dir": src.path(),
            "files": ["w.bin:application/vnd.cncf.model.weight.v1.raw"],
            "annotations": {"w.bin": {"org.cncf.model.filepath": path}},
            "config": "modelpack.json:application/vnd.cncf.model.config.v1+json",
        }));
        let w = Work::new();
        w.manifest(
            &insecure(&reg.host()),
            &format!(
                "  - name: evil\n    source: {}\n",
                reg.oci(&format!("team/evil:{tag}"))
            ),
        );
        let o = run(&w, &["apply"], &[]);
        assert_ne!(o.status.code(), Some(0));
        let err = stderr(&o) + &stdout(&o);
        assert!(err.contains("unsafe file path"), "{err}");
        assert!(records(&w).is_empty());
        let escaped: Vec<_> = walk(w.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("escape"))
            .collect();
        assert!(escaped.is_empty(), "{escaped:?}");
    }
}

/// A blob whose bytes in the registry's storage no longer match its digest is refused by the
/// download's sha256 check: the entry fails naming the digest mismatch, nothing is registered
/// and no model file is left in models_dir.
#[test]
fn a_corrupted_blob_is_refused_and_nothing_is_registered() {
    let reg = Registry::start(Auth::Open);
    let data = lora_bytes(3, 8);
    push_lora(&reg, "team/lora:v1", &data, &json!({}));
    let blob = reg.blob_data_path(&format!("sha256:{}", sha256_hex(&data)));
    let mut bad = data.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&blob, &bad).unwrap();
    let w = Work::new();
    w.manifest(
        &insecure(&reg.host()),
        &format!("  - name: lora\n    source: {}\n", reg.oci("team/lora:v1")),
    );
    let o = run(&w, &["apply"], &[]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o) + &stdout(&o);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(records(&w).is_empty());
    let promoted: Vec<_> = walk(&w.models())
        .into_iter()
        .filter(|p| {
            !p.starts_with(w.models().join(".tmp"))
                && p.extension().is_some_and(|e| e == "safetensors")
        })
        .collect();
    assert!(promoted.is_empty(), "{promoted:?}");
}

/// An htpasswd registry (Basic): without credentials the pull fails saying what the registry
/// wants; with the entry's `username`/`password` from `${VAR}`s, or with the Docker config's
/// base64 `auth`, it succeeds. The password shows nowhere: not in the output, models.lock,
/// the record store or staging.
#[test]
fn basic_auth_takes_entry_credentials_or_the_docker_config_and_never_stores_them() {
    let reg = Registry::start(Auth::Htpasswd);
    let data = lora_bytes(4, 4);
    push_lora(
        &reg,
        "team/lora:v1",
        &data,
        &json!({"user": USER, "password": PASSWORD, "backend": "basic"}),
    );
    let source = reg.oci("team/lora:v1");

    let anon = Work::new();
    anon.manifest(
        &insecure(&reg.host()),
        &format!("  - name: lora\n    source: {source}\n"),
    );
    let o = run(&anon, &["apply"], &[]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o) + &stdout(&o);
    assert!(err.contains("user name and password"), "{err}");

    let w = Work::new();
    w.manifest(
        &insecure(&reg.host()),
        &format!(
            "  - name: lora\n    source: {source}\n    username: ${{REG_USER}}\n    password: ${{REG_PASSWORD}}\n"
        ),
    );
    let o = run(
        &w,
        &["apply"],
        &[("REG_USER", USER), ("REG_PASSWORD", PASSWORD)],
    );
    assert_exit(&o, 0);
    assert_eq!(
        std::fs::read(one_record(&w).resolved_path(&w.models())).unwrap(),
        data
    );
    let mut seen = stdout(&o) + &stderr(&o);
    for p in walk(w.path()) {
        seen.push_str(&String::from_utf8_lossy(
            &std::fs::read(&p).unwrap_or_default(),
        ));
    }
    assert!(!seen.contains(PASSWORD), "the password leaked");

    let d = Work::new();
    std::fs::create_dir_all(d.path().join(".docker")).unwrap();
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    };
    std::fs::write(
        d.path().join(".docker/config.json"),
        json!({"auths": {reg.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    d.manifest(&insecure(&reg.host()), "  []\n");
    assert_exit(&run(&d, &["import", &source], &[]), 0);
    assert_eq!(one_record(&d).common().source, source);
}

/// A token-auth registry: the 401's `Bearer realm=…,service=…,scope=…` challenge sends the
/// client to the token server with Basic credentials and the repository's pull scope; the
/// JWT it returns (RS256, verified by the registry against its `rootcertbundle`) opens the
/// manifest and the blobs, which the download queue fetches with the same token. Without
/// credentials the anonymous token grants nothing and the pull fails.
#[test]
fn token_auth_follows_the_bearer_challenge() {
    let reg = Registry::start(Auth::Token);
    let data = lora_bytes(5, 4);
    push_lora(
        &reg,
        "team/lora:v1",
        &data,
        &json!({"user": USER, "password": PASSWORD, "backend": "token"}),
    );
    let source = reg.oci("team/lora:v1");
    let ts = reg.token_server().expect("token mode");
    ts.seen.lock().unwrap().clear();

    let w = Work::new();
    w.manifest(
        &insecure(&reg.host()),
        &format!(
            "  - name: lora\n    source: {source}\n    username: {USER}\n    password: ${{REG_PASSWORD}}\n"
        ),
    );
    assert_exit(&run(&w, &["apply"], &[("REG_PASSWORD", PASSWORD)]), 0);
    assert_eq!(
        std::fs::read(one_record(&w).resolved_path(&w.models())).unwrap(),
        data
    );
    let seen = ts.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(q, ok)| *ok
            && q.contains("scope=repository%3Ateam%2Flora%3Apull")
            && q.contains("service=modelsync-test-registry")),
        "{seen:?}"
    );

    let anon = Work::new();
    anon.manifest(
        &insecure(&reg.host()),
        &format!("  - name: lora\n    source: {source}\n"),
    );
    let o = run(&anon, &["apply"], &[]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o) + &stdout(&o);
    assert!(
        err.contains(&format!("registry {} refused access", reg.host())),
        "{err}"
    );
    assert!(records(&anon).is_empty());
}

/// A tag that moves: `diff` without `--refresh` trusts the lock; `diff --refresh` asks the
/// registry (a manifest HEAD) and shows an upgrade from the locked digest; `apply --locked`
/// elsewhere pulls the locked digest, not the tag's new one; `apply --refresh` upgrades in
/// place and locks the new digest.
#[test]
fn a_moved_tag_is_followed_by_refresh_and_locked_pulls_the_digest() {
    let reg = Registry::start(Auth::Open);
    let src = crate::support::tmp();
    let one = lora_bytes(1, 4);
    let two = lora_bytes(2, 4);
    let push_tag = |data: &[u8]| {
        std::fs::write(src.path().join("lora.safetensors"), data).unwrap();
        push(&json!({
            "host": reg.host(), "target": format!("{}/team/lora:stable", reg.host()),
            "dir": src.path(), "files": ["lora.safetensors"],
        }))
    };
    let first = push_tag(&one);
    let models = format!(
        "  - name: lora\n    source: {}\n",
        reg.oci("team/lora:stable")
    );
    let w = Work::new();
    w.manifest(&insecure(&reg.host()), &models);
    assert_exit(&run(&w, &["apply"], &[]), 0);
    let key = one_record(&w).key().to_owned();
    assert_eq!(
        w.lock().entries["lora"].resolved_commit.as_deref(),
        Some(first.as_str())
    );

    let second = push_tag(&two);
    assert_ne!(first, second);
    assert_exit(&run(&w, &["diff", "--exit-code"], &[]), 0);
    let o = run(&w, &["diff", "--refresh", "--exit-code"], &[]);
    assert_exit(&o, 2);
    let out = stdout(&o);
    assert!(out.contains("stable moved upstream"), "{out}");
    assert!(
        out.contains(&first[7..19]) && out.contains(&second[7..19]),
        "{out}"
    );

    // Elsewhere, the same manifest and lock: `--locked` pulls the locked digest.
    let elsewhere = Work::new();
    elsewhere.manifest(&insecure(&reg.host()), &models);
    std::fs::copy(
        w.path().join("models.lock"),
        elsewhere.path().join("models.lock"),
    )
    .unwrap();
    assert_exit(&run(&elsewhere, &["apply", "--locked"], &[]), 0);
    assert_eq!(
        std::fs::read(one_record(&elsewhere).resolved_path(&elsewhere.models())).unwrap(),
        one
    );

    assert_exit(&run(&w, &["apply", "--refresh"], &[]), 0);
    let rec = one_record(&w);
    assert_eq!(rec.key(), key, "upgraded in place");
    assert_eq!(std::fs::read(rec.resolved_path(&w.models())).unwrap(), two);
    assert_eq!(
        w.lock().entries["lora"].resolved_commit.as_deref(),
        Some(second.as_str())
    );
}

/// A pull killed with SIGKILL in the middle of a blob resumes: the next `apply` asks the
/// registry (through a loopback proxy that logs request heads and paces the first run) for
/// the rest with `Range: bytes=N-`, N > 0, and the file is whole and verified.
#[test]
fn a_killed_pull_resumes_the_blob_with_range() {
    let reg = Registry::start(Auth::Open);
    let proxy = Proxy::start(reg.port());
    // ~4.3 MB in one stream (below the parallel-range threshold).
    let big = lora_bytes(7, 2000);
    push_lora(&reg, "team/big:v1", &big, &json!({}));
    let digest = format!("sha256:{}", sha256_hex(&big));
    let w = Work::new();
    w.manifest(
        &insecure(&proxy.host()),
        &format!(
            "  - name: big\n    source: oci://{}/team/big:v1\n",
            proxy.host()
        ),
    );
    proxy.throttle(Some((64 << 10, Duration::from_millis(100))));
    let mut child = w
        .command(&["apply"])
        .env("DOCKER_CONFIG", w.path().join(".docker"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("apply starts");
    let tmp = w.models().join(".tmp");
    crate::support::wait_for(Duration::from_mins(1), || {
        walk(&tmp)
            .into_iter()
            .any(|p| {
                p.to_string_lossy().ends_with(".part")
                    && std::fs::metadata(&p).is_ok_and(|m| m.len() >= 1 << 20)
            })
            .then_some(())
    })
    .expect("no partial blob appeared");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(records(&w).is_empty());

    proxy.throttle(None);
    assert_exit(&run(&w, &["apply"], &[]), 0);
    let ranges = proxy.ranges_for(&digest);
    assert!(
        ranges
            .iter()
            .any(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-")),
        "{ranges:?}"
    );
    assert_eq!(
        std::fs::read(one_record(&w).resolved_path(&w.models())).unwrap(),
        big
    );
}

/// Pushes with raw distribution-API requests from Python (`requests`): `blobs` (base64,
/// uploaded monolithically) and `manifests` (`[ref, media_type, json]`, in order, serialised
/// compactly). Prints the digest of each manifest, one per line.
const RAW_PUSH: &str = r#"
import base64, hashlib, json, sys, requests
spec = json.loads(sys.argv[1])
base = "http://%s/v2/%s" % (spec["host"], spec["repo"])
for b in spec["blobs"]:
    data = base64.b64decode(b)
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(base + "/blobs/uploads/")
    r.raise_for_status()
    loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = "http://%s%s" % (spec["host"], loc)
    r = requests.put(loc + ("&" if "?" in loc else "?") + "digest=" + d, data=data,
                     headers={"Content-Type": "application/octet-stream"})
    r.raise_for_status()
for ref, media, body in spec["manifests"]:
    data = json.dumps(body, separators=(",", ":")).encode()
    r = requests.put(base + "/manifests/" + ref, data=data, headers={"Content-Type": media})
    r.raise_for_status()
    print("sha256:" + hashlib.sha256(data).hexdigest())
"#;

fn desc(media: &str, data: &[u8], annotations: &Value) -> Value {
    json!({
        "mediaType": media,
        "digest": format!("sha256:{}", sha256_hex(data)),
        "size": data.len(),
        "annotations": annotations,
    })
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// An image index: with two model manifests the entry fails listing both (digest, name
/// annotation) and says to pin one; with one model manifest beside a non-model one that one
/// is taken; a digest pins a manifest of the index directly.
#[test]
fn image_indexes_take_their_one_model_or_list_the_choices() {
    let reg = Registry::start(Auth::Open);
    let (cfg, w16, w32) = (b"{}".to_vec(), lora_bytes(8, 2), lora_bytes(9, 2));
    let manifest = |weights: &[u8]| {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.cncf.model.manifest.v1+json",
            "config": desc("application/vnd.cncf.model.config.v1+json", &cfg, &json!({})),
            "layers": [desc(
                "application/vnd.cncf.model.weight.v1.raw",
                weights,
                &json!({"org.cncf.model.filepath": "lora.safetensors"}),
            )],
        })
    };
    let (m16, m32) = (manifest(&w16), manifest(&w32));
    let d16 = format!("sha256:{}", sha256_hex(m16.to_string().as_bytes()));
    let entry = |m: &Value, name: &str, artifact: &str| {
        let body = m.to_string();
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256_hex(body.as_bytes())),
            "size": body.len(),
            "artifactType": artifact,
            "annotations": {"org.opencontainers.image.ref.name": name},
        })
    };
    let model = "application/vnd.cncf.model.manifest.v1+json";
    let index = |entries: Vec<Value>| json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    // Python's compact `json.dumps` of these values gives the bytes hashed here.
    let out = registry::python(
        RAW_PUSH,
        &[&json!({
            "host": reg.host(), "repo": "team/multi",
            "blobs": [b64(&cfg), b64(&w16), b64(&w32)],
            "manifests": [
                [d16.clone(), "application/vnd.oci.image.manifest.v1+json", m16],
                ["m32", "application/vnd.oci.image.manifest.v1+json", m32],
                ["both", "application/vnd.oci.image.index.v1+json",
                    index(vec![entry(&m16, "fp16", model), entry(&m32, "fp32", model)])],
                ["one", "application/vnd.oci.image.index.v1+json",
                    index(vec![entry(&m16, "fp16", model), entry(&m32, "sig", "application/vnd.example.signature")])],
            ],
        })
        .to_string()],
    );
    assert!(out.lines().next() == Some(d16.as_str()), "{out} vs {d16}");

    let w = Work::new();
    w.manifest(
        &insecure(&reg.host()),
        &format!(
            "  - name: both\n    source: {}\n  - name: one\n    source: {}\n  - name: pinned\n    source: {}\n",
            reg.oci("team/multi:both"),
            reg.oci("team/multi:one"),
            reg.oci(&format!("team/multi@{d16}")),
        ),
    );
    let o = run(&w, &["apply"], &[]);
    assert_exit(&o, 1);
    let err = stderr(&o) + &stdout(&o);
    assert!(
        err.contains("several manifests") && err.contains("name=fp16") && err.contains("name=fp32"),
        "{err}"
    );
    let got: Vec<(String, Vec<u8>)> = records(&w)
        .iter()
        .map(|r| {
            let entry = r.common().managed.as_ref().unwrap().entry.clone();
            (entry, std::fs::read(r.resolved_path(&w.models())).unwrap())
        })
        .collect();
    let mut got = got;
    got.sort();
    assert_eq!(
        got,
        [("one".to_owned(), w16.clone()), ("pinned".to_owned(), w16)]
    );
}

/// The manifest's checks of `oci://` entries: credentials only on `oci://` sources, a
/// `username` with its `password`, one way to log in, no `include`, and a bad reference.
#[test]
fn oci_entries_are_checked_by_the_manifest_parser() {
    let dir = crate::support::tmp();
    let path = dir.path().join("models.yaml");
    let parse = |models: &str| {
        modelsync::manifest::parse_str(
            &format!("version: 1\nmodels:\n{models}"),
            &path,
            &|_: &str| None,
        )
    };
    for (models, want) in [
        (
            "  - name: a\n    source: owner/name\n    username: u\n    password: p\n",
            "applies to oci:// sources only",
        ),
        (
            "  - name: a\n    source: oci://r.example/team/m:v1\n    username: u\n",
            "`username` needs a `password`",
        ),
        (
            "  - name: a\n    source: oci://r.example/team/m:v1\n    username: u\n    password: p\n    token: t\n",
            "two ways to log in",
        ),
        (
            "  - name: a\n    source: oci://r.example/team/m:v1\n    include: ['*.json']\n",
            "does not apply to an oci:// source",
        ),
        (
            "  - name: a\n    source: oci://r.example/../m\n",
            "invalid OCI reference",
        ),
    ] {
        let e = parse(models).expect_err(models).to_string();
        assert!(e.contains(want), "{models}: {e}");
    }
    let m = parse(
        "  - name: a\n    source: oci://r.example/team/m:v1\n    username: u\n    password: p\n",
    )
    .unwrap();
    match &m.models[0].source {
        modelsync::hub::ModelSource::Oci(o) => {
            assert!(matches!(
                o.credentials,
                Some(modelsync::oci::Credentials::Basic { .. })
            ));
            assert!(!o.insecure);
        }
        other => panic!("{other:?}"),
    }
    assert!(!m.models[0].is_pinned());
}
