//! The manifest: parsing, exact error locations, interpolation, paths, spec hashes, schema,
//! `init` and the CLI's settings resolution.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use modelsync::hub::source::ModelSource;
use modelsync::manifest::{self, Manifest, ManifestError, parse_str};
use modelsync::taxonomy::ModelRepoVariant;

fn env(name: &str) -> Option<String> {
    match name {
        "HF_TOKEN" => Some("hf_secret_value".into()),
        "MODELS_ROOT" => Some("/srv/models".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn parse(yaml: &str) -> Result<Manifest, ManifestError> {
    parse_str(yaml, Path::new("models.yaml"), &env)
}

/// The one error a manifest produces, as displayed.
fn error(yaml: &str) -> String {
    match parse(yaml) {
        Ok(m) => panic!("expected an error, parsed {m:?}"),
        Err(e) => {
            assert_eq!(e.diagnostics().len(), 1, "{e}");
            e.to_string()
        }
    }
}

fn entries(body: &str) -> String {
    format!("version: 1\nmodels:\n{body}")
}

#[test]
fn parses_the_design_example() {
    let m = parse(
        r#"# yaml-language-server: $schema=./models.schema.json
version: 1
settings:
  models_dir: models
  database: models/modelsync.db
  variant: fp16
  hash_algorithm: sha256
  prune: true
  max_parallel_downloads: 3
  hf_endpoint: http://127.0.0.1:9/
  lock_timeout: 30s
  cache: { ram: 8GiB, vram: 512MiB, device: "cuda:1" }
models:
  - name: sd15
    source: runwayml/stable-diffusion-v1-5
    subfolder: vae
    revision: main
    include: ["*.safetensors"]
    exclude: []
    token: ${HF_TOKEN}
    dest: vaes/sd15
    hash: blake3:00ff
    preload: true
    tags: [sfw]
    description: "the VAE"
    config: { type: vae, base: sd-1 }
    unsafe_pickle: allow
  - name: url
    source: https://example.invalid/m.safetensors
    token: ${EMPTY}
"#,
    )
    .unwrap();
    let cwd = std::env::current_dir().unwrap();
    let s = &m.settings;
    assert_eq!(s.models_dir, cwd.join("models"));
    assert_eq!(s.database_path(), cwd.join("models/modelsync.db"));
    assert_eq!(s.variant, Some(ModelRepoVariant::Fp16));
    assert_eq!(s.hash_algorithm.as_str(), "sha256");
    assert!(s.prune);
    assert_eq!(s.max_parallel_downloads, 3);
    assert_eq!(s.hf_endpoint.as_deref(), Some("http://127.0.0.1:9"));
    assert_eq!(s.lock_timeout.as_secs(), 30);
    assert_eq!(s.watch_interval.as_secs(), 300);
    assert_eq!(s.cache.ram, Some(8 << 30));
    assert_eq!(s.cache.vram, Some(512 << 20));
    assert_eq!(s.cache.device, "cuda:1");
    assert_eq!(
        s.unknown_models,
        modelsync::install::UnknownModels::Allow,
        "unknown models are allowed unless the manifest says deny"
    );
    let e = &m.models[0];
    assert_eq!(e.name, "sd15");
    // The settings' default variant, the subfolder and the revision are merged into the source.
    assert_eq!(
        e.canonical_source(),
        "runwayml/stable-diffusion-v1-5@main:fp16:vae"
    );
    assert_eq!(
        e.token().map(modelsync::hub::source::Token::expose),
        Some("hf_secret_value")
    );
    assert_eq!(e.dest.as_deref(), Some(Path::new("vaes/sd15")));
    assert_eq!(
        e.config
            .model_type
            .map(modelsync::taxonomy::ModelType::as_str),
        Some("vae")
    );
    assert_eq!((e.loc.line, e.loc.column), (14, 5));
    assert!(!e.is_pinned());
    // An empty token is no token.
    assert_eq!(m.models[1].token(), None);
    assert_eq!(m.lock_path(), PathBuf::from("models.lock"));
}

#[test]
fn unknown_keys_point_at_the_key_and_list_the_expected_ones() {
    let e = error(&entries("  - name: a\n    sorce: owner/name\n"));
    assert!(
        e.starts_with(
            "models.yaml:4:5: unknown field `sorce`, expected one of name, source, variant, subfolder, revision, include, exclude, token, inplace, dest, hash, preload, tags, description, config, unsafe_pickle"
        ),
        "{e}"
    );
    assert!(e.ends_with("did you mean `source`?"), "{e}");

    let e = error("version: 1\nsettings:\n  model_dir: x\n");
    assert!(
        e.starts_with("models.yaml:3:3: unknown field `model_dir`, expected one of models_dir"),
        "{e}"
    );
    assert!(e.ends_with("did you mean `models_dir`?"), "{e}");

    let e = error("version: 1\nmodel:\n  - name: a\n");
    assert!(
        e.starts_with("models.yaml:2:1: unknown field `model`"),
        "{e}"
    );

    let e = error(&entries(
        "  - name: a\n    source: o/n\n    config: { type: lora, bass: sd-1 }\n",
    ));
    assert!(
        e.starts_with("models.yaml:5:27: unknown field `bass`"),
        "{e}"
    );
}

#[test]
fn wrong_types_and_values_say_what_was_expected() {
    let e = error(&entries("  - name: a\n    source: o/n\n    variant: fp8\n"));
    assert_eq!(
        e,
        r#"models.yaml:5:14: invalid repo variant `fp8`: expected one of "", fp16, fp32, onnx, openvino, flax"#
    );
    let e = error(&entries(
        "  - name: a\n    source: o/n\n    config: { base: sd-9 }\n",
    ));
    assert!(
        e.starts_with(
            "models.yaml:5:21: invalid base model type `sd-9`: expected one of any, sd-1"
        ),
        "{e}"
    );
    let e = error("version: 1\nsettings:\n  max_parallel_downloads: many\n");
    assert_eq!(e, "models.yaml:3:27: expected a whole number (0 or more)");
    let e = error("version: 1\nsettings:\n  hash_algorithm: md5\n");
    assert_eq!(
        e,
        "models.yaml:3:19: invalid hash algorithm `md5`: expected one of blake3, blake3_single, sha256, imohash"
    );
    let e = error("version: 1\nsettings:\n  unknown_models: maybe\n");
    assert_eq!(
        e,
        "models.yaml:3:19: invalid unknown_models policy `maybe`: expected one of allow, deny"
    );
    let e = error(&entries(
        "  - name: a\n    source: o/n\n    config: { type: main, base: flux, variant: klein_4b }\n",
    ));
    assert!(
        e.contains("variant `klein_4b` is not valid for a `main` model of base `flux`"),
        "{e}"
    );
    let e = error(&entries(
        "  - name: a\n    source: o/n\n    unsafe_pickle: maybe\n",
    ));
    assert_eq!(
        e,
        "models.yaml:5:20: invalid unsafe_pickle policy `maybe`: expected one of deny, allow"
    );
    let e = error(&entries("  - source: o/n\n"));
    assert_eq!(e, "models.yaml:3:5: missing field `name`");
    let e = error(&entries(
        "  - name: a\n    source: o/n\n    preload: perhaps\n",
    ));
    assert!(
        e.starts_with("models.yaml:5:") && e.contains("expected true or false"),
        "{e}"
    );
    let e = error("version: 1\nversion: 1\n");
    assert_eq!(e, "models.yaml:2:1: duplicate key `version`");
    let e = error("version: 1\nmodels:\n  - name: [a\n");
    assert!(e.starts_with("models.yaml:3:"), "{e}");
    assert_eq!(
        error("# nothing here\n\n"),
        "models.yaml: the manifest is empty: expected at least `version: 1` and a `models:` list"
    );
    let e = error("models: []\n");
    assert!(e.contains("missing field `version`"), "{e}");
}

#[test]
fn version_must_be_one() {
    assert_eq!(
        error("version: 2\nmodels: []\n"),
        "models.yaml:1:10: unsupported manifest version 2: this modelsync reads `version: 1`"
    );
}

#[test]
fn duplicate_names_report_both_lines() {
    let e = error(&entries(
        "  - name: sd15\n    source: o/a\n  - name: other\n    source: o/b\n  - name: sd15\n    source: o/c\n",
    ));
    assert_eq!(
        e,
        "models.yaml:7:11: duplicate entry name `sd15` (first defined at line 3, column 11): names are the entries' identity and must be unique"
    );
}

#[test]
fn source_specific_fields_are_checked() {
    assert_eq!(
        error(&entries(
            "  - name: a\n    source: owner/name\n    inplace: true\n"
        )),
        "models.yaml:5:14: `inplace` applies to local paths only, and this source is a Hugging Face repo"
    );
    assert_eq!(
        error(&entries(
            "  - name: a\n    source: https://example.invalid/x.safetensors\n    variant: fp16\n"
        )),
        "models.yaml:5:14: `variant` applies to Hugging Face repo sources only, and this source is a URL"
    );
    assert_eq!(
        error(&entries(
            "  - name: a\n    source: https://example.invalid/x.safetensors\n    revision: v1\n"
        )),
        "models.yaml:5:15: `revision` applies to Hugging Face repo sources only, and this source is a URL"
    );
    assert_eq!(
        error(&entries(
            "  - name: a\n    source: https://example.invalid/x.safetensors\n    include: ['*.bin']\n"
        )),
        "models.yaml:5:15: `include` does not apply to a URL source (one file)"
    );
    assert_eq!(
        error(&entries(
            "  - name: a\n    source: /abs/model.safetensors\n    token: abc\n"
        )),
        "models.yaml:5:12: `token` does not apply to a local path"
    );
    assert_eq!(
        error(&entries(
            "  - name: a\n    source: owner/name:fp16\n    variant: fp32\n"
        )),
        "models.yaml:5:14: `variant` fp32 contradicts the variant in `source`"
    );
    assert_eq!(
        error(&entries(
            "  - name: a\n    source: owner/name@v1\n    revision: v2\n"
        )),
        "models.yaml:5:15: `revision` `v2` contradicts the `@revision` in `source`"
    );
    let e = error(&entries("  - name: a\n    source: justaname\n"));
    assert!(
        e.starts_with("models.yaml:4:13: `justaname` is not a model source: expected"),
        "{e}"
    );
    assert_eq!(
        error(&entries("  - name: ''\n    source: o/n\n")),
        "models.yaml:3:11: `name` is empty: every entry needs a unique name"
    );
}

#[test]
fn globs_sizes_durations_hashes_and_urls_are_validated() {
    let e = error(&entries(
        "  - name: a\n    source: o/n\n    include:\n      - '*.safetensors'\n      - 'unet/[a-'\n",
    ));
    assert!(
        e.starts_with("models.yaml:7:9: invalid glob in `include`: "),
        "{e}"
    );
    let e = error("version: 1\nsettings:\n  cache:\n    ram: 8XB\n");
    assert!(
        e.starts_with(
            "models.yaml:4:10: `cache.ram`: invalid size `8XB`: expected a number of bytes"
        ),
        "{e}"
    );
    let e = error("version: 1\nsettings:\n  lock_timeout: soon\n");
    assert!(
        e.starts_with("models.yaml:3:17: `lock_timeout`: invalid duration `soon`"),
        "{e}"
    );
    assert_eq!(
        error("version: 1\nsettings:\n  cache: { device: gpu }\n"),
        "models.yaml:3:20: invalid `cache.device` `gpu`: expected one of auto, cpu, cuda, cuda:N"
    );
    assert_eq!(
        error("version: 1\nsettings:\n  max_parallel_downloads: 0\n"),
        "models.yaml:3:27: `max_parallel_downloads` must be at least 1"
    );
    assert_eq!(
        error("version: 1\nsettings:\n  hf_endpoint: ftp://x\n"),
        "models.yaml:3:16: `hf_endpoint` `ftp://x` is not an http(s) URL, for example https://huggingface.co"
    );
    assert_eq!(
        error("version: 1\nsettings:\n  database: models/store.txt\n"),
        "models.yaml:3:13: `database` `models/store.txt` has no store kind: expected a .db/.sqlite file (SQLite) or a .yaml/.yml file (YAML store)"
    );
    let e = error(&entries("  - name: a\n    source: o/n\n    hash: md5:00\n"));
    assert_eq!(
        e,
        "models.yaml:5:11: `hash` `md5:00`: unknown algorithm `md5`: expected one of blake3, blake3_single, sha256, imohash"
    );
    // Every size form of the docs is accepted.
    for size in ["8GB", "8GiB", "512MiB", "1024"] {
        let m = parse(&format!(
            "version: 1\nsettings:\n  cache: {{ ram: {size} }}\nmodels: []\n"
        ))
        .unwrap();
        assert!(m.settings.cache.ram.unwrap() > 0, "{size}");
    }
}

#[test]
fn dest_must_stay_inside_models_dir() {
    assert_eq!(
        error(&entries(
            "  - name: a\n    source: o/n\n    dest: /etc/passwd\n"
        )),
        "models.yaml:5:11: `dest` `/etc/passwd` must be relative to models_dir, not absolute"
    );
    assert_eq!(
        error(&entries(
            "  - name: a\n    source: o/n\n    dest: loras/../../x\n"
        )),
        "models.yaml:5:11: `dest` `loras/../../x` must stay inside models_dir (no `..`)"
    );
    assert_eq!(
        error(&entries(
            "  - name: a\n    source: o/n\n    dest: x/y\n  - name: b\n    source: o/m\n    dest: ./x/y\n"
        )),
        "models.yaml:8:11: `dest` x/y is already used by entry `a` at line 5"
    );
    assert_eq!(
        error(&entries(
            "  - name: a\n    source: /m.safetensors\n    inplace: true\n    dest: x\n"
        )),
        "models.yaml:6:11: `dest` cannot be combined with `inplace: true` (an inplace model stays where it is)"
    );
}

#[test]
fn all_problems_are_reported_at_once_in_file_order() {
    let e = parse(&entries(
        "  - name: a\n    source: o/n\n    dest: /abs\n  - name: b\n    source: https://x.invalid/f\n    variant: fp16\n    inplace: true\n",
    ))
    .unwrap_err();
    let lines: Vec<String> = e.diagnostics().iter().map(|d| d.loc.to_string()).collect();
    assert_eq!(lines, ["5:11", "8:14", "9:14"]);
    assert_eq!(e.to_string().lines().count(), 3);
}

#[test]
fn interpolation_expands_defaults_and_escapes_keeping_locations() {
    let m = parse(
        "version: 1\nsettings:\n  models_dir: ${MODELS_ROOT}/sd\n  database: ${DB:-/var/lib/ms.db}\nmodels:\n  - name: a\n    source: o/n\n    description: \"costs $$${PRICE} and $5\"\n    tags: [\"${TAG:-default-tag}\"]\n",
    )
    .unwrap();
    assert_eq!(m.settings.models_dir, PathBuf::from("/srv/models/sd"));
    assert_eq!(m.settings.database, Some(PathBuf::from("/var/lib/ms.db")));
    assert_eq!(
        m.models[0].description.as_deref(),
        Some("costs $${PRICE} and $5")
    );
    assert_eq!(m.models[0].tags, ["default-tag"]);

    // An unset variable in an entry is that entry's error, not the manifest's.
    let m = parse(&entries(
        "  - name: a\n    source: o/n\n    token: ${NOT_SET}\n  - name: b\n    source: o/m\n    token: ${NOT_SET:-}\n",
    ))
    .unwrap();
    assert_eq!(m.models.len(), 1);
    assert_eq!(m.models[0].name, "b");
    assert!(m.models[0].token().is_none(), "an empty token is no token");
    assert_eq!(m.broken.len(), 1);
    assert_eq!(m.broken[0].name, "a");
    assert_eq!(m.broken[0].source, "o/n");
    assert_eq!(
        m.broken[0].reason,
        "line 5: in `token`: environment variable `NOT_SET` is not set (write `${NOT_SET:-default}` for a default, `$${` for a literal `${`)"
    );
    // In settings, and in an entry's name, it is still an error of the manifest.
    assert_eq!(
        error(&entries("  - name: ${NOT_SET}\n    source: o/n\n")),
        "models.yaml:3:11: in `name`: environment variable `NOT_SET` is not set (write `${NOT_SET:-default}` for a default, `$${` for a literal `${`)"
    );
    assert_eq!(
        error("version: 1\nsettings:\n  models_dir: \"x/${BROKEN\"\n"),
        "models.yaml:3:15: in `models_dir`: unterminated `${` (write `$${` for a literal `${`)"
    );
    // A value cannot inject YAML: it is substituted after parsing.
    let m = parse_str(
        "version: 1\nmodels:\n  - name: a\n    source: o/n\n    description: ${EVIL}\n",
        Path::new("models.yaml"),
        &|n| (n == "EVIL").then(|| "x\n  - name: injected".to_owned()),
    )
    .unwrap();
    assert_eq!(m.models.len(), 1);
}

#[test]
fn relative_paths_resolve_against_the_manifest_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("loras")).unwrap();
    std::fs::write(dir.path().join("loras/detail.safetensors"), b"x").unwrap();
    let path = dir.path().join("models.yaml");
    std::fs::write(
        &path,
        "version: 1\nsettings:\n  models_dir: ./store/../models\n  database: db/ms.yaml\nmodels:\n  - name: detail\n    source: loras/detail.safetensors\n    inplace: true\n  - name: dotted\n    source: ./loras/detail.safetensors\n",
    )
    .unwrap();
    let m = manifest::load(&path).unwrap();
    assert_eq!(m.base_dir, dir.path());
    assert_eq!(m.settings.models_dir, dir.path().join("models"));
    assert_eq!(m.settings.database_path(), dir.path().join("db/ms.yaml"));
    let want = dir.path().join("loras/detail.safetensors");
    match &m.models[0].source {
        ModelSource::Local(l) => {
            assert_eq!(l.path, want);
            assert!(l.inplace);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.models[1].canonical_source(), want.display().to_string());
    assert_eq!(m.lock_path(), dir.path().join("models.lock"));
    // Settings alone (what `list` reads).
    let s = manifest::load_settings(&path).unwrap();
    assert_eq!(s.models_dir, dir.path().join("models"));
    // A missing file names itself.
    let e = manifest::load(&dir.path().join("nope.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot read manifest ") && e.contains("nope.yaml"),
        "{e}"
    );
}

#[test]
fn spec_hash_separates_source_and_record_changes_and_ignores_tokens() {
    let base = "  - name: a\n    source: o/n\n    tags: [x, y]\n    include: ['*.safetensors', '*.json']\n";
    let spec = |extra: &str| {
        parse(&entries(&format!("{base}{extra}"))).unwrap().models[0]
            .spec_hash
            .clone()
    };
    let h0 = spec("");
    assert_eq!(h0.source.len(), 64);
    assert_eq!(manifest::SpecHash::parse(&h0.to_string()), Some(h0.clone()));
    // Tokens never reach the hash.
    assert_eq!(spec("    token: ${HF_TOKEN}\n"), h0);
    // Record-level.
    for extra in [
        "    description: d\n",
        "    preload: true\n",
        "    config: { base: sdxl }\n",
    ] {
        let h = spec(extra);
        assert_eq!(h.source, h0.source, "{extra}");
        assert_ne!(h.record, h0.record, "{extra}");
    }
    // Source-level.
    for extra in [
        "    variant: fp16\n",
        "    subfolder: vae\n",
        "    revision: v2\n",
        "    exclude: ['*.bin']\n",
        "    dest: a\n",
        "    hash: sha256:00\n",
    ] {
        let h = spec(extra);
        assert_ne!(h.source, h0.source, "{extra}");
        assert_eq!(h.record, h0.record, "{extra}");
    }
    // Order of tags and globs does not matter.
    let reordered = parse(&entries(
        "  - name: a\n    source: o/n\n    tags: [y, x]\n    include: ['*.json', '*.safetensors']\n",
    ))
    .unwrap();
    assert_eq!(reordered.models[0].spec_hash, h0);
    // The token is in memory only: not in Debug output.
    let m = parse(&entries(
        "  - name: a\n    source: o/n\n    token: ${HF_TOKEN}\n",
    ))
    .unwrap();
    assert!(!format!("{m:?}").contains("hf_secret_value"));
}

#[test]
fn schema_file_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest::schema::SCHEMA_REPO_PATH);
    let want = manifest::schema::json_schema_string();
    if std::env::var_os("MODELSYNC_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale: regenerate it with `MODELSYNC_BLESS=1 cargo test --test it manifest::schema` or `cargo run -- schema > {}`",
        path.display(),
        manifest::schema::SCHEMA_REPO_PATH
    );
}

#[test]
fn init_writes_a_starter_that_parses_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models.yaml");
    let run = |extra: &[&str]| {
        let mut args = vec!["modelsync", "-q", "-f", path.to_str().unwrap(), "init"];
        args.extend_from_slice(extra);
        modelsync::cli::run(args)
    };
    assert_eq!(run(&[]), modelsync::cli::Status::Success);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.lines().next(),
        Some("# yaml-language-server: $schema=./models.schema.json")
    );
    let schema = std::fs::read_to_string(dir.path().join("models.schema.json")).unwrap();
    assert_eq!(schema, manifest::schema::json_schema_string());
    let m = manifest::load(&path).unwrap();
    assert!(m.models.is_empty());
    assert_eq!(m.settings.models_dir, dir.path().join("models"));

    // Uncommenting every indented example still gives a manifest that parses.
    let uncommented: String = text
        .lines()
        .map(|l| {
            let body = l.trim_start();
            match body.strip_prefix("# ") {
                Some(rest) if l.len() > body.len() => {
                    format!("{}{rest}\n", &l[..l.len() - body.len()])
                }
                _ => format!("{l}\n"),
            }
        })
        .collect();
    let full = dir.path().join("full.yaml");
    std::fs::write(&full, &uncommented).unwrap();
    let m = manifest::load(&full).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    let names: Vec<&str> = m.models.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["sd15", "detail-lora"]);
    assert!(uncommented.contains("stable-diffusion-v1-5/stable-diffusion-v1-5"));

    std::fs::write(&path, "version: 1\nmodels: []\n# mine\n").unwrap();
    assert_eq!(run(&[]), modelsync::cli::Status::Error);
    assert!(std::fs::read_to_string(&path).unwrap().contains("# mine"));
    assert_eq!(run(&["--force"]), modelsync::cli::Status::Success);
    assert!(!std::fs::read_to_string(&path).unwrap().contains("# mine"));
}

#[test]
fn store_paths_read_the_manifest_and_flags_win() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models.yaml");
    std::fs::write(
        &path,
        "version: 1\nsettings:\n  models_dir: m\nmodels:\n  - name: a\n    source: o/n\n    token: ${MODELSYNC_TEST_NEVER_SET}\n",
    )
    .unwrap();
    let paths = |args: &[&str]| {
        let mut all = vec!["modelsync", "-f", path.to_str().unwrap()];
        all.extend_from_slice(args);
        all.push("list");
        let cli = modelsync::cli::Cli::try_parse_from(all).unwrap();
        modelsync::cli::Context::new(&cli.global)
            .store_paths()
            .unwrap()
    };
    // An unset variable in an entry does not stop commands that need only the settings.
    assert_eq!(
        paths(&[]),
        (dir.path().join("m"), dir.path().join("m/modelsync.db"))
    );
    assert_eq!(
        paths(&["--models-dir", "/x"]),
        (PathBuf::from("/x"), PathBuf::from("/x/modelsync.db"))
    );
    assert_eq!(
        paths(&["--database", "/y.db"]),
        (dir.path().join("m"), PathBuf::from("/y.db"))
    );
    // In the full manifest it is that entry's error.
    let cli =
        modelsync::cli::Cli::try_parse_from(["modelsync", "-f", path.to_str().unwrap(), "diff"])
            .unwrap();
    let ctx = modelsync::cli::Context::new(&cli.global);
    let m = ctx.manifest().unwrap();
    assert!(
        m.broken[0].reason.contains("MODELSYNC_TEST_NEVER_SET"),
        "{m:?}"
    );
    // No manifest: the defaults, and a hint from load_manifest.
    let cli = modelsync::cli::Cli::try_parse_from([
        "modelsync",
        "-f",
        "/nonexistent/models.yaml",
        "diff",
    ])
    .unwrap();
    let ctx = modelsync::cli::Context::new(&cli.global);
    assert_eq!(
        ctx.store_paths().unwrap(),
        (
            PathBuf::from("models"),
            PathBuf::from("models/modelsync.db")
        )
    );
    assert!(
        ctx.manifest()
            .unwrap_err()
            .to_string()
            .contains("modelsync init")
    );
}

#[test]
fn schema_command_prints_the_checked_in_schema() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelsync"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        manifest::schema::json_schema_string()
    );
}

#[test]
fn lock_drops_entries_that_left_and_ignores_entries_of_another_source() {
    let m = parse(&entries(
        "  - name: a\n    source: o/a\n  - name: b\n    source: o/b:fp16\n",
    ))
    .unwrap();
    let mut lock = manifest::LockFile::new();
    for (name, source) in [("a", "o/a"), ("b", "o/b"), ("gone", "o/gone")] {
        lock.entries.insert(
            name.into(),
            manifest::LockEntry {
                source: source.into(),
                ..manifest::LockEntry::default()
            },
        );
    }
    assert_eq!(lock.retain_manifest(&m), ["gone"]);
    assert_eq!(lock.entries.len(), 2);
    assert!(lock.entry_for(&m.models[0]).is_some());
    // `b` now asks for the fp16 files: the lock entry describes something else.
    assert!(lock.entry_for(&m.models[1]).is_none());
}

#[test]
fn download_timeout_is_a_positive_duration_with_a_default() {
    let m = parse("version: 1\n").unwrap();
    assert_eq!(
        m.settings.download_timeout,
        std::time::Duration::from_hours(24)
    );
    let m = parse("version: 1\nsettings:\n  download_timeout: 1h30m\n").unwrap();
    assert_eq!(
        m.settings.download_timeout,
        std::time::Duration::from_mins(90)
    );
    let e = error("version: 1\nsettings:\n  download_timeout: 0\n");
    assert!(
        e.starts_with("models.yaml:3:21: `download_timeout` must be longer than 0"),
        "{e}"
    );
    let e = error("version: 1\nsettings:\n  download_timeout: later\n");
    assert!(
        e.starts_with("models.yaml:3:21: `download_timeout`: invalid duration `later`"),
        "{e}"
    );
}

/// The JSON Schema and the parser accept and refuse the same manifests: each case is
/// validated by Python's `jsonschema` (an implementation we did not write) against the
/// generated schema and parsed by `parse_str`, and both must give the expected verdict.
#[test]
fn schema_and_parser_agree_both_ways() {
    let entry = |extra: &str| format!("version: 1\nmodels:\n  - name: a\n    source: o/n\n{extra}");
    let cases: Vec<(String, bool)> = vec![
        (entry(""), true),
        (entry("    tags: [sfw, x]\n"), true),
        (entry("    tags: [1, 2]\n"), false),
        (entry("    tags: [\"\"]\n"), false),
        (entry("    preload: true\n"), true),
        (entry("    preload: \"true\"\n"), false),
        (entry("    description: 5\n"), false),
        (entry("    hash: blake3:00ff\n"), true),
        (entry("    hash: md5:zz\n"), false),
        (entry("    hash: sha256:xyz\n"), false),
        (entry("    hash: ${EXPECTED_HASH:-sha256:00}\n"), true),
        (entry("    dest: loras/x\n"), true),
        (entry("    dest: /etc/x\n"), false),
        (entry("    dest: ../x\n"), false),
        (entry("    dest: a/../../x\n"), false),
        (entry("    dest: .tmp/x\n"), false),
        (entry("    dest: ~/x\n"), false),
        (entry("    inplace: \"yes\"\n"), false),
        (entry("    revision: \"\"\n"), false),
        (
            "version: 1\nmodels:\n  - name: \"\"\n    source: o/n\n".to_owned(),
            false,
        ),
        (
            "version: 1\nmodels:\n  - name: \" a\"\n    source: o/n\n".to_owned(),
            false,
        ),
        (
            "version: 1\nmodels:\n  - name: 7\n    source: o/n\n".to_owned(),
            false,
        ),
        (
            "version: 1\nmodels:\n  - name: a\n    source: \"\"\n".to_owned(),
            false,
        ),
        (
            "version: 1\nsettings:\n  cache: { ram: 8GiB, vram: 1024 }\n".to_owned(),
            true,
        ),
        (
            "version: 1\nsettings:\n  cache: { ram: -1 }\n".to_owned(),
            false,
        ),
        (
            "version: 1\nsettings:\n  cache: { device: mps }\n".to_owned(),
            false,
        ),
        (
            "version: 1\nsettings:\n  cache: { device: cuda:1, precision: bf16, working_memory: 2GiB, keep_alive: 5m, pin_preloaded: false }\n".to_owned(),
            true,
        ),
        (
            "version: 1\nsettings:\n  cache: { keep_alive: 0 }\n".to_owned(),
            true,
        ),
        (
            "version: 1\nsettings:\n  cache: { precision: fp8 }\n".to_owned(),
            false,
        ),
        (
            "version: 1\nsettings:\n  cache: { pin_preloaded: \"no\" }\n".to_owned(),
            false,
        ),
        (entry("    precision: fp16\n"), true),
        (entry("    precision: half\n"), false),
        (
            "version: 1\nsettings:\n  cache: { ram: \"-1\" }\n".to_owned(),
            false,
        ),
        (
            "version: 1\nsettings:\n  max_parallel_downloads: 0\n".to_owned(),
            false,
        ),
        (
            "version: 1\nsettings:\n  prune: \"false\"\n".to_owned(),
            false,
        ),
        ("version: 1\nsettings:\n  models_dir: 5\n".to_owned(), false),
        ("version: 2\n".to_owned(), false),
        ("version: 1\n".to_owned(), true),
    ];
    let instances: Vec<serde_json::Value> = cases
        .iter()
        .map(|(yaml, _)| serde_saphyr::from_str(yaml).expect("case is YAML"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cases.json");
    std::fs::write(
        &input,
        serde_json::to_string(&serde_json::json!({
            "schema": modelsync::manifest::schema::json_schema(),
            "instances": instances,
        }))
        .unwrap(),
    )
    .unwrap();
    // The fixtures' venv (scripts/setup-pyenv, made on first use) holds jsonschema.
    let o = std::process::Command::new(crate::support::pyfix::python())
        .args([
            "-c",
            "import json, sys, jsonschema\n\
             d = json.load(open(sys.argv[1]))\n\
             cls = jsonschema.validators.validator_for(d['schema'])\n\
             v = cls(d['schema'], format_checker=cls.FORMAT_CHECKER)\n\
             print(json.dumps([v.is_valid(i) for i in d['instances']]))",
        ])
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let by_schema: Vec<bool> = serde_json::from_slice(&o.stdout).unwrap();
    let mut wrong = Vec::new();
    for ((yaml, want), schema_ok) in cases.iter().zip(by_schema) {
        let parsed = parse(yaml);
        let parser_ok = parsed.is_ok();
        if schema_ok != *want || parser_ok != *want {
            wrong.push(format!(
                "{yaml:?}: want {want}, schema {schema_ok}, parser {parser_ok} ({:?})",
                parsed.err().map(|e| e.to_string())
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// 100k entries: the YAML parser's budget grows with the document, so large fleets' manifests
/// and locks parse (the default budget stopped a manifest near 33k entries, a lock near 16k).
#[test]
fn manifests_and_locks_of_100k_entries_parse() {
    const N: usize = 100_000;
    let mut yaml = String::from("version: 1\nmodels:\n");
    for i in 0..N {
        writeln!(
            yaml,
            "  - name: m{i}\n    source: owner/repo-{i}\n    tags: [a, b]"
        )
        .unwrap();
    }
    let m = parse(&yaml).expect("a 100k-entry manifest parses");
    assert_eq!(m.models.len(), N);
    assert_eq!(m.models[N - 1].name, format!("m{}", N - 1));

    let mut lock = String::from("version: 1\nentries:\n");
    for i in 0..N {
        writeln!(lock, "  m{i}:\n    source: owner/repo-{i}\n    files:\n    - path: model.safetensors\n      size: {i}\n      sha256: {i:064x}\n    record_hash: blake3:{i:064x}").unwrap();
    }
    let lock = manifest::LockFile::parse(&lock, Path::new("models.lock"))
        .expect("a 100k-entry lock parses");
    assert_eq!(lock.entries.len(), N);
}

/// The budget grows with the input, not with what aliases replay: 2,000 entries that each
/// replay one anchored 1,000-tag list (2M nodes from 80 KB) are refused with a located error
/// instead of being expanded.
#[test]
fn alias_amplification_is_still_refused() {
    let tags = vec!["lol"; 1000].join(", ");
    let mut yaml =
        format!("version: 1\nmodels:\n  - name: m0\n    source: o/r0\n    tags: &t [{tags}]\n");
    for i in 1..2000 {
        writeln!(yaml, "  - name: m{i}\n    source: o/r{i}\n    tags: *t").unwrap();
    }
    let text = error(&yaml);
    assert!(text.starts_with("models.yaml:"), "{text}");
    assert!(text.contains("exceeds the YAML parser's limits"), "{text}");
}
