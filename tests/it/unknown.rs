//! Models no probe rule identifies still sync (issue 11, item 1): the real binary against the
//! Hub emulator and real files. They install as type `unknown` with a warning that quotes the
//! evidence and names `config: {type, base}`; `diff`, `status` and `list` show them; `load`
//! refuses them with the same hint; `settings.unknown_models: deny` keeps the strict behaviour;
//! a `config` hint wins over the probe.

use modelsync::taxonomy::{BaseModelType, ModelFormat, ModelType};

use crate::support::hub_server::FakeRepo;
use crate::support::probe_fixtures as fx;
use crate::support::reconcile::{Work, assert_exit};
use crate::support::{stderr, stdout};

/// A Mamba language model as a single safetensors file: a layout no image-model rule knows.
fn mamba_bytes(w: &Work) -> Vec<u8> {
    let p = w.path().join("mamba.tmp.safetensors");
    fx::safetensors(
        &p,
        &[
            ("backbone.embeddings.weight", &[64, 16]),
            ("backbone.layers.0.mixer.A_log", &[32, 4]),
            ("backbone.layers.0.mixer.D", &[32]),
            ("backbone.layers.0.mixer.in_proj.weight", &[64, 16]),
            ("backbone.layers.0.mixer.out_proj.weight", &[16, 32]),
            ("backbone.norm_f.weight", &[16]),
            ("lm_head.weight", &[64, 16]),
        ],
        Some(serde_json::json!({"format": "pt"})),
    );
    let bytes = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    bytes
}

/// A diffusers-style component folder of an architecture nobody has a rule for.
fn new_arch_repo(w: &Work, id: &str) -> FakeRepo {
    let p = w.path().join("new-arch.tmp.safetensors");
    fx::safetensors(
        &p,
        &[
            ("patch_embed.proj.weight", &[32, 16, 1, 2, 2]),
            ("blocks.0.attn1.to_q.weight", &[32, 32]),
            ("proj_out.weight", &[64, 32]),
        ],
        None,
    );
    let weights = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    FakeRepo::new(id)
        .file(
            "config.json",
            r#"{"_class_name": "HoloVideoTransformer3DModel", "_diffusers_version": "0.40.0", "in_channels": 16}"#,
        )
        .file("diffusion_pytorch_model.safetensors", weights)
}

fn entry(name: &str, source: &str, extra: &str) -> String {
    format!("  - name: {name}\n    source: {source}\n{extra}")
}

fn record_of(w: &Work, name: &str) -> modelsync::AnyModelConfig {
    w.store()
        .all_models()
        .unwrap()
        .into_iter()
        .find(|r| r.name() == name)
        .unwrap_or_else(|| panic!("no record `{name}`"))
}

#[test]
fn unidentified_file_and_folder_install_as_unknown_with_a_warning_and_show_everywhere() {
    let w = Work::new();
    w.hub.add_repo(
        FakeRepo::new("owner/mamba-130m")
            .file("README.md", "# mamba\n")
            .file("model.safetensors", mamba_bytes(&w)),
    );
    w.hub.add_repo(new_arch_repo(&w, "owner/holo-video"));
    w.manifest(
        "",
        &format!(
            "{}{}",
            entry("mamba", "owner/mamba-130m::model.safetensors", ""),
            entry("holo", "owner/holo-video", "")
        ),
    );

    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    // One warning per model, quoting the evidence and naming the keys that settle it.
    let mamba_warning = err
        .lines()
        .find(|l| l.starts_with("warning: mamba:"))
        .unwrap_or_else(|| panic!("no warning for mamba:\n{err}"));
    assert!(
        mamba_warning.contains("`backbone.embeddings.weight`")
            && mamba_warning
                .contains("recorded as type `unknown` (format `checkpoint`, base `unknown`)")
            && mamba_warning.contains("`config: {type: …, base: …}`"),
        "{mamba_warning}"
    );
    let holo_warning = err
        .lines()
        .find(|l| l.starts_with("warning: holo:"))
        .unwrap_or_else(|| panic!("no warning for holo:\n{err}"));
    assert!(
        holo_warning.contains("`HoloVideoTransformer3DModel`")
            && holo_warning.contains("format `diffusers`")
            && holo_warning.contains("`config: {type: …, base: …}`"),
        "{holo_warning}"
    );

    let mamba = record_of(&w, "mamba");
    assert_eq!(mamba.model_type(), ModelType::Unknown);
    assert_eq!(mamba.format(), ModelFormat::Checkpoint);
    assert_eq!(mamba.base(), BaseModelType::Unknown);
    assert!(mamba.resolved_path(&w.models()).is_file());
    let holo = record_of(&w, "holo");
    assert_eq!(holo.model_type(), ModelType::Unknown);
    assert_eq!(holo.format(), ModelFormat::Diffusers);
    assert!(
        holo.resolved_path(&w.models())
            .join("config.json")
            .is_file()
    );
    let lock = w.lock();
    assert!(lock.entries.contains_key("mamba") && lock.entries.contains_key("holo"));

    // Converged: a second apply has nothing to do, diff and status are clean but list them.
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("No changes: 2 model(s) in sync"),
        "{}",
        stdout(&o)
    );
    let o = w.run(&["diff", "--exit-code"]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("Unidentified models"), "{text}");
    assert!(
        text.contains("? holo  entry `holo`, format `diffusers`")
            && text.contains("? mamba  entry `mamba`, format `checkpoint`"),
        "{text}"
    );
    let o = w.run(&["diff", "-o", "json"]);
    assert_exit(&o, 0);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let names: Vec<&str> = plan["unidentified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["holo", "mamba"]);

    let o = w.run(&["status"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("Unidentified models"), "{}", stdout(&o));
    let o = w.run(&["status", "-o", "json"]);
    assert_exit(&o, 0);
    let st: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(st["drifted"], false);
    assert_eq!(st["unidentified"].as_array().unwrap().len(), 2);

    let o = w.run(&["list"]);
    assert_exit(&o, 0);
    let mamba_row = stdout(&o)
        .lines()
        .find(|l| l.contains("mamba"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        mamba_row.contains("unknown") && mamba_row.contains("checkpoint"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("2 model(s) of type `unknown`"),
        "{}",
        stderr(&o)
    );

    // load refuses it, with the same hint.
    let o = w.run(&["load", "mamba", "--device", "cpu"]);
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("is of type `unknown`") && e.contains("`config: {type: …, base: …}`"),
        "{e}"
    );
}

#[test]
fn deny_keeps_the_strict_behaviour() {
    let w = Work::new();
    w.hub
        .add_repo(FakeRepo::new("owner/mamba-130m").file("model.safetensors", mamba_bytes(&w)));
    w.manifest(
        "  unknown_models: deny\n",
        &entry("mamba", "owner/mamba-130m::model.safetensors", ""),
    );
    let o = w.run(&["apply"]);
    assert_exit(&o, 1);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        out.contains("cannot tell what kind of model this is")
            && out.contains("`backbone.embeddings.weight`")
            && out.contains("`config: {type: …, base: …}`")
            && out.contains("settings.unknown_models: allow"),
        "{out}"
    );
    assert!(w.store().all_models().unwrap().is_empty());
    // Nothing was promoted (staging under `.tmp` is kept for the next try, as for any failure).
    let mut promoted = Vec::new();
    weight_files(&w.models(), &mut promoted);
    assert!(promoted.is_empty(), "{promoted:?}");
}

/// `.safetensors` files under `dir`, outside its dot-folders (`.tmp` staging).
fn weight_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.map(Result::unwrap) {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            weight_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "safetensors") {
            out.push(p);
        }
    }
}

#[test]
fn a_config_hint_wins_over_the_probe() {
    let w = Work::new();
    w.hub.add_repo(new_arch_repo(&w, "owner/holo-video"));
    w.manifest(
        "  unknown_models: deny\n",
        &entry(
            "holo",
            "owner/holo-video",
            "    config:\n      type: main\n      base: wan\n",
        ),
    );
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let r = record_of(&w, "holo");
    assert_eq!(r.model_type(), ModelType::Main);
    assert_eq!(r.base(), BaseModelType::Wan);
    assert_eq!(r.format(), ModelFormat::Diffusers);
    let o = w.run(&["diff", "--exit-code"]);
    assert_exit(&o, 0);
    assert!(!stdout(&o).contains("Unidentified"), "{}", stdout(&o));
}

#[test]
fn an_ambiguous_base_takes_the_fallback_with_a_warning_unless_denied() {
    let w = Work::new();
    // A VAE checkpoint whose layout fits sd-1 and sdxl alike.
    let p = w.path().join("vae.tmp.safetensors");
    fx::safetensors(
        &p,
        &[
            ("decoder.conv_in.weight", &[512, 4, 3, 3]),
            ("encoder.conv_out.weight", &[8, 512, 3, 3]),
        ],
        None,
    );
    let vae = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    w.hub
        .add_repo(FakeRepo::new("owner/some-vae").file("vae.safetensors", vae));
    let manifest = |settings: &str| {
        w.manifest(
            settings,
            &entry("vae", "owner/some-vae::vae.safetensors", ""),
        );
    };

    manifest("  unknown_models: deny\n");
    let o = w.run(&["apply"]);
    assert_exit(&o, 1);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        out.contains("the base model is ambiguous") && out.contains("config: {base: …}"),
        "{out}"
    );
    assert!(w.store().all_models().unwrap().is_empty());

    manifest("");
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert!(
        err.contains("warning: vae:") && err.contains("took `sd-1`"),
        "{err}"
    );
    let r = record_of(&w, "vae");
    assert_eq!(r.model_type(), ModelType::Vae);
    assert_eq!(r.base(), BaseModelType::StableDiffusion1);
}

#[test]
fn cli_import_warns_and_config_flags_identify_it() {
    let w = Work::new();
    w.manifest("", "");
    let first = w.path().join("mamba-a.safetensors");
    std::fs::write(&first, mamba_bytes(&w)).unwrap();
    let o = w.run(&["--no-progress", "import", first.to_str().unwrap()]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert!(
        err.contains("warning: no probe rule identifies `mamba-a.safetensors`")
            && err.contains("--config type=… --config base=…"),
        "{err}"
    );
    assert!(stdout(&o).contains("unknown"), "{}", stdout(&o));

    let second = w.path().join("mamba-b.safetensors");
    std::fs::write(&second, mamba_bytes(&w)).unwrap();
    let o = w.run(&[
        "--no-progress",
        "-o",
        "json",
        "import",
        second.to_str().unwrap(),
        "--config",
        "type=qwen3_encoder",
        "--config",
        "base=any",
    ]);
    assert_exit(&o, 0);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["format"].as_str(), v["base"].as_str()),
        (Some("qwen3_encoder"), Some("checkpoint"), Some("any"))
    );
}
