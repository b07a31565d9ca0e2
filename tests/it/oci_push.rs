//! `push` and `publish` against a real Distribution registry (Debian's `docker-registry`),
//! checked by clients nobody here wrote: `skopeo inspect --raw`, the `oras` Python client, and
//! the registry's own access log and digest checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::support::probe_fixtures as fx;
use crate::support::pyfix::{self, Spec};
use crate::support::registry::{self, Auth, Registry};
use crate::support::{stderr, stdout, tmp};

/// Runs the binary in `cwd`; `DOCKER_CONFIG` is an empty folder unless `env` sets it, so no
/// credentials of the machine are used.
fn run(cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let empty = cwd.join(".no-docker-config");
    std::fs::create_dir_all(&empty).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_modelsync"));
    c.args(args)
        .current_dir(cwd)
        .env_remove("MODELSYNC_FILE")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("DOCKER_CONFIG", &empty);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the modelsync binary runs")
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let o = run(cwd, args, &[]);
    assert!(o.status.success(), "{args:?}:\n{}", stderr(&o));
    stdout(&o)
}

/// A diffusers SDXL VAE folder (stabilityai/sdxl-vae's config, weights written by the
/// `safetensors` package) with a README.
fn vae_folder(dir: &Path) -> PathBuf {
    let root = dir.join("sdxl-vae");
    pyfix::write(&[Spec::safetensors(
        root.join("diffusion_pytorch_model.safetensors"),
        fx::sd_vae_keys(),
    )]);
    fx::write_json(&root.join("config.json"), &fx::sdxl_vae_config());
    std::fs::write(root.join("README.md"), "# sdxl-vae\nThe SDXL VAE.\n").unwrap();
    root
}

/// A peft SD 1.5 LoRA file written by the `safetensors` package.
fn lora_file(dir: &Path) -> PathBuf {
    let p = dir.join("detail-lora.safetensors");
    pyfix::write(&[Spec::safetensors(p.clone(), fx::peft_sd15_lora_keys())]);
    p
}

/// A manifest that only says the registry speaks plain HTTP (for `import oci://…`).
fn registries_manifest(dir: &Path, reg: &Registry) {
    std::fs::write(
        dir.join("models.yaml"),
        format!(
            "version: 1\nsettings:\n  registries:\n    \"{}\": {{insecure: true}}\nmodels: []\n",
            reg.host()
        ),
    )
    .unwrap();
}

fn records(dir: &Path) -> Vec<Value> {
    let out = ok(dir, &["list", "-o", "json"]);
    match serde_json::from_str(&out).unwrap() {
        Value::Array(a) => a,
        other => panic!("{other}"),
    }
}

/// The fields a pushed and pulled-back record keeps.
fn fields(r: &Value) -> Value {
    json!({
        "type": r["type"], "base": r["base"], "format": r["format"],
        "variant": r.get("variant").cloned().unwrap_or(Value::Null),
        "name": r["name"], "hash": r["hash"],
    })
}

fn import(dir: &Path, source: &Path) -> Value {
    let out = ok(dir, &["import", &source.to_string_lossy(), "-o", "json"]);
    serde_json::from_str(&out).unwrap()
}

fn push(dir: &Path, key: &str, target: &str, extra: &[&str]) -> Value {
    let mut args = vec!["push", key, target, "--plain-http", "-o", "json"];
    args.extend_from_slice(extra);
    let out = ok(dir, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn sha256_hex(p: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// Access-log lines of `method` requests whose path contains `part`, with their status.
fn requests(reg: &Registry, method: &str, part: &str) -> Vec<(String, u16)> {
    reg.requests_for(part)
        .into_iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once(&format!("\"{method} "))?;
            let (path, after) = rest.split_once(" HTTP/1.1\" ")?;
            let status = after.split_whitespace().next()?.parse().ok()?;
            Some((path.to_owned(), status))
        })
        .collect()
}

#[test]
fn a_pushed_folder_and_file_pull_back_as_the_same_records() {
    let reg = Registry::start(Auth::Open);
    let src = tmp();
    let vae = import(src.path(), &vae_folder(src.path()));
    let lora = import(src.path(), &lora_file(src.path()));
    assert_eq!(vae["type"], "vae", "{vae}");
    assert_eq!(lora["type"], "lora", "{lora}");
    // Small chunks: the weights go up in PATCH chunks, the config and README in one PUT.
    let target = reg.oci("models/sdxl-vae:v1");
    let pushed = push(
        src.path(),
        vae["key"].as_str().unwrap(),
        &target,
        &["--chunk-size", "16KiB"],
    );
    let lora_target = reg.oci("models/detail-lora:v1");
    push(src.path(), lora["key"].as_str().unwrap(), &lora_target, &[]);
    let reference = pushed["reference"].as_str().unwrap();
    assert!(
        reference.starts_with(&format!("{target}@sha256:")),
        "{pushed}"
    );
    let patches = requests(&reg, "PATCH", "/v2/models/sdxl-vae/blobs/uploads/");
    assert!(patches.len() >= 2, "{patches:?}\n{}", reg.log());
    assert!(patches.iter().all(|(_, s)| *s == 202), "{patches:?}");

    let dst = tmp();
    registries_manifest(dst.path(), &reg);
    ok(dst.path(), &["import", &target]);
    ok(dst.path(), &["import", &lora_target]);
    let back = records(dst.path());
    for orig in [&vae, &lora] {
        let twin = back
            .iter()
            .find(|r| r["name"] == orig["name"])
            .unwrap_or_else(|| panic!("no {} in {back:#?}", orig["name"]));
        assert_eq!(fields(twin), fields(orig));
        assert!(
            twin["source"].as_str().unwrap().starts_with("oci://"),
            "{twin}"
        );
    }
    let vae_back = back.iter().find(|r| r["name"] == vae["name"]).unwrap();
    let folder = dst
        .path()
        .join("models")
        .join(vae_back["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(folder.join("README.md")).unwrap(),
        "# sdxl-vae\nThe SDXL VAE.\n"
    );
}

#[test]
fn skopeo_and_oras_read_what_push_wrote() {
    let reg = Registry::start(Auth::Open);
    let src = tmp();
    let folder = vae_folder(src.path());
    let vae = import(src.path(), &folder);
    let pushed = push(
        src.path(),
        vae["key"].as_str().unwrap(),
        &reg.oci("team/sdxl-vae:1.0"),
        &[],
    );

    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/team/sdxl-vae:1.0", reg.host()))
        .output()
        .expect("skopeo (scripts/setup-apt installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = out.stdout;
    {
        use sha2::Digest as _;
        assert_eq!(
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw))),
            pushed["digest"].as_str().unwrap()
        );
    }
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.cncf.model.config.v1+json"
    );
    let ann = &m["annotations"];
    for (k, v) in [
        ("type", "vae"),
        ("base", "sdxl"),
        ("format", "diffusers"),
        ("name", vae["name"].as_str().unwrap()),
        ("hash", vae["hash"].as_str().unwrap()),
    ] {
        assert_eq!(ann[format!("org.modelsync.model.{k}")], v, "{k}: {ann}");
    }
    let layers = m["layers"].as_array().unwrap();
    let by_path: std::collections::BTreeMap<&str, &Value> = layers
        .iter()
        .map(|l| {
            (
                l["annotations"]["org.cncf.model.filepath"]
                    .as_str()
                    .unwrap(),
                l,
            )
        })
        .collect();
    assert_eq!(
        by_path.keys().copied().collect::<Vec<_>>(),
        [
            "README.md",
            "config.json",
            "diffusion_pytorch_model.safetensors"
        ]
    );
    for (path, media) in [
        ("README.md", "application/vnd.cncf.model.doc.v1.raw"),
        (
            "config.json",
            "application/vnd.cncf.model.weight.config.v1.raw",
        ),
        (
            "diffusion_pytorch_model.safetensors",
            "application/vnd.cncf.model.weight.v1.raw",
        ),
    ] {
        let l = by_path[path];
        assert_eq!(l["mediaType"], media, "{path}");
        let file = folder.join(path);
        assert_eq!(
            l["digest"],
            format!("sha256:{}", sha256_hex(&file)),
            "{path}"
        );
        assert_eq!(l["size"], std::fs::metadata(&file).unwrap().len(), "{path}");
    }

    // oras: the tag is listed, the manifest validates against its schema, and a pull writes
    // the same bytes under the titles.
    let outdir = src.path().join("oras-out");
    let script = r#"
import json, os, sys
import oras.client
host, repo, tag, outdir = sys.argv[1:5]
c = oras.client.OrasClient(hostname=host, insecure=True)
tags = c.get_tags(f"{host}/{repo}")
m = c.get_manifest(f"{host}/{repo}:{tag}")
files = c.pull(target=f"{host}/{repo}:{tag}", outdir=outdir)
print(json.dumps({"tags": tags, "layers": len(m["layers"]), "files": sorted(os.path.relpath(f, outdir) for f in files)}))
"#;
    let said: Value = serde_json::from_str(&registry::python(
        script,
        &[
            &reg.host(),
            "team/sdxl-vae",
            "1.0",
            &outdir.to_string_lossy(),
        ],
    ))
    .unwrap();
    assert_eq!(said["tags"], json!(["1.0"]), "{said}");
    assert_eq!(said["layers"], 3, "{said}");
    assert_eq!(
        said["files"],
        json!([
            "README.md",
            "config.json",
            "diffusion_pytorch_model.safetensors"
        ]),
        "{said}"
    );
    for f in [
        "README.md",
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(outdir.join(f)).unwrap(),
            std::fs::read(folder.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn a_second_push_uploads_nothing_and_another_repository_mounts() {
    let reg = Registry::start(Auth::Open);
    let src = tmp();
    let vae = import(src.path(), &vae_folder(src.path()));
    let key = vae["key"].as_str().unwrap();
    let first = push(src.path(), key, &reg.oci("a/sdxl-vae:v1"), &[]);
    assert_eq!(first["uploaded"].as_array().unwrap().len(), 4, "{first}");
    let puts = || requests(&reg, "PUT", "/blobs/uploads/").len();
    let before = puts();
    assert_eq!(before, 4);
    let again = push(src.path(), key, &reg.oci("a/sdxl-vae:v1"), &[]);
    assert_eq!(puts(), before, "the second push uploaded:\n{}", reg.log());
    assert_eq!(
        again["digest"], first["digest"],
        "same model, same manifest"
    );
    assert_eq!(again["skipped"].as_array().unwrap().len(), 4, "{again}");

    // Into another repository with --mount-from: every blob is mounted, none uploaded.
    let mounted = push(
        src.path(),
        key,
        &reg.oci("b/sdxl-vae:v1"),
        &["--mount-from", "a/sdxl-vae"],
    );
    assert_eq!(puts(), before, "{}", reg.log());
    let mounts = requests(&reg, "POST", "/v2/b/sdxl-vae/blobs/uploads/");
    assert_eq!(mounts.len(), 4, "{mounts:?}");
    for (path, status) in &mounts {
        assert!(
            path.contains("mount=sha256") && path.contains("from=a%2Fsdxl-vae"),
            "{path}"
        );
        assert_eq!(*status, 201, "{path}");
    }
    assert_eq!(mounted["mounted"].as_array().unwrap().len(), 4, "{mounted}");

    // A record pulled from the registry mounts from where it came, without the flag.
    let dst = tmp();
    registries_manifest(dst.path(), &reg);
    let pulled = ok(
        dst.path(),
        &["import", &reg.oci("a/sdxl-vae:v1"), "-o", "json"],
    );
    let pulled: Value = serde_json::from_str(&pulled).unwrap();
    push(
        dst.path(),
        pulled["key"].as_str().unwrap(),
        &reg.oci("c/sdxl-vae:v1"),
        &[],
    );
    assert_eq!(puts(), before, "{}", reg.log());
    let mounts = requests(&reg, "POST", "/v2/c/sdxl-vae/blobs/uploads/");
    assert!(
        mounts
            .iter()
            .all(|(p, s)| p.contains("from=a%2Fsdxl-vae") && *s == 201),
        "{mounts:?}"
    );
}

/// Pushes with the Docker config's credentials to a registry in `auth` mode (anonymous is
/// refused first); returns the registry.
fn push_with_login(auth: Auth) -> Registry {
    let reg = Registry::start(auth);
    let src = tmp();
    let lora = import(src.path(), &lora_file(src.path()));
    let key = lora["key"].as_str().unwrap();
    let target = reg.oci("private/detail-lora:v1");
    let args = ["push", key, &target, "--plain-http"];
    let anonymous = run(src.path(), &args, &[]);
    assert!(!anonymous.status.success());
    let err = stderr(&anonymous);
    assert!(
        err.contains("refused") || err.contains("user name"),
        "{auth:?}: {err}"
    );

    let cfg = src.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let login = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            registry::USER,
            registry::PASSWORD
        ))
    };
    std::fs::write(
        cfg.join("config.json"),
        json!({"auths": {reg.host(): {"auth": login}}}).to_string(),
    )
    .unwrap();
    let o = run(src.path(), &args, &[("DOCKER_CONFIG", &cfg)]);
    assert!(o.status.success(), "{auth:?}: {}", stderr(&o));
    assert!(!stderr(&o).contains(registry::PASSWORD));
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("--creds={}:{}", registry::USER, registry::PASSWORD))
        .arg(format!("docker://{}/private/detail-lora:v1", reg.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        m["layers"][0]["annotations"]["org.cncf.model.filepath"],
        "detail-lora.safetensors"
    );
    reg
}

#[test]
fn push_logs_in_with_the_docker_config_to_htpasswd_and_token_registries() {
    push_with_login(Auth::Htpasswd);
    let reg = push_with_login(Auth::Token);
    let seen = reg.token_server().unwrap().seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(q, authed)| {
            let url = reqwest::Url::parse(&format!("http://x/?{q}")).unwrap();
            *authed
                && url
                    .query_pairs()
                    .any(|(k, v)| k == "scope" && v == "repository:private/detail-lora:pull,push")
        }),
        "{seen:?}"
    );
}

#[test]
fn publish_writes_a_fleet_manifest_that_applies_from_the_registry_alone() {
    let reg = Registry::start(Auth::Open);
    let ci = tmp();
    let sources = ci.path().join("sources");
    let vae = vae_folder(&sources);
    let lora = lora_file(&sources);
    std::fs::write(
        ci.path().join("models.yaml"),
        format!(
            r#"version: 1
settings:
  models_dir: models
models:
  - name: SDXL VAE
    source: {}
    include: ["*.json", "*.safetensors", "*.md"]
    config: {{base: sdxl}}
    tags: [vae]
  - name: detail-lora
    source: {}
    description: adds detail
"#,
            vae.display(),
            lora.display()
        ),
    )
    .unwrap();
    // Nothing applied yet: nothing is published.
    let o = run(
        ci.path(),
        &["publish", "--to", &reg.oci("fleet"), "--plain-http"],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not converged"), "{}", stderr(&o));

    ok(ci.path(), &["apply"]);
    let applied = records(ci.path());
    assert_eq!(applied.len(), 2);
    ok(
        ci.path(),
        &[
            "publish",
            "--to",
            &reg.oci("fleet"),
            "--plain-http",
            "--write",
            "fleet.yaml",
        ],
    );
    let fleet = std::fs::read_to_string(ci.path().join("fleet.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&fleet).unwrap();
    let entries = doc["models"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{fleet}");
    let vae_entry = &entries[0];
    assert_eq!(vae_entry["name"], "SDXL VAE");
    let src = vae_entry["source"].as_str().unwrap();
    assert!(
        src.starts_with(&format!("{}@sha256:", reg.oci("fleet/sdxl-vae:latest"))),
        "{fleet}"
    );
    assert!(vae_entry.get("include").is_none(), "{fleet}");
    assert_eq!(vae_entry["config"]["base"], "sdxl");
    assert_eq!(vae_entry["tags"], json!(["vae"]));
    assert_eq!(entries[1]["description"], "adds detail");
    assert_eq!(
        doc["settings"]["registries"][reg.host()]["insecure"],
        true,
        "{fleet}"
    );

    // A node: only the fleet manifest and the registry (the CI's sources are gone).
    std::fs::remove_dir_all(&sources).unwrap();
    let node = tmp();
    std::fs::write(node.path().join("models.yaml"), &fleet).unwrap();
    ok(node.path(), &["apply"]);
    let o = run(node.path(), &["diff", "--exit-code"], &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let synced = records(node.path());
    assert_eq!(synced.len(), 2);
    for orig in &applied {
        let twin = synced
            .iter()
            .find(|r| r["name"] == orig["name"])
            .unwrap_or_else(|| panic!("no {} in {synced:#?}", orig["name"]));
        assert_eq!(fields(twin), fields(orig));
        assert_eq!(twin["tags"], orig["tags"]);
        assert_eq!(twin["description"], orig["description"]);
    }
}

#[test]
fn the_fleet_configmap_example_is_a_manifest_of_pinned_oci_sources() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/k8s/configmap-oci.yaml");
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let text = doc["data"]["models.yaml"]
        .as_str()
        .expect("data.models.yaml");
    let m =
        modelsync::manifest::parse_str(text, &path, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    assert!(!m.models.is_empty());
    for e in &m.models {
        match &e.source {
            modelsync::hub::ModelSource::Oci(o) => {
                assert!(o.reference.is_pinned(), "{}: {}", e.name, o.reference);
            }
            other => panic!("{}: not an oci:// source: {other}", e.name),
        }
    }
}
