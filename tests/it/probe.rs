//! Probe: one fixture per (type, base) rule, negatives, overrides, record conversion, CLI.

use std::fs;
use std::path::Path;

use modelsync::AnyModelConfig;
use modelsync::probe::{ProbeError, probe, probe_with_overrides};
use modelsync::scan::ScanVerdict;
use modelsync::taxonomy::{
    AnyVariant, BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SchedulerPredictionType,
    SubModelType,
};
use serde_json::json;

use crate::support::probe_fixtures::{self as fx, Py};

fn overrides(v: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn every_fixture_is_identified() {
    let dir = tempfile::tempdir().unwrap();
    let cases = fx::corpus(dir.path());
    let mut failures = Vec::new();
    for c in &cases {
        let r = match probe(&c.path) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: error {e}", c.name));
                continue;
            }
        };
        let got = (
            r.model_type.as_str(),
            r.base.as_str(),
            r.format.as_str(),
            r.variant.map(AnyVariant::as_str),
            r.prediction_type.map(SchedulerPredictionType::as_str),
        );
        let want = (c.model_type, c.base, c.format, c.variant, c.prediction);
        if got != want {
            failures.push(format!(
                "{}: got {got:?}, want {want:?}; evidence: {:?}",
                c.name, r.evidence
            ));
        }
        assert!(!r.evidence.is_empty(), "{}: no evidence", c.name);
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fixture_becomes_a_valid_record() {
    let dir = tempfile::tempdir().unwrap();
    for c in fx::corpus(dir.path()) {
        let r = probe(&c.path).unwrap();
        let mut raw = r.to_raw_config();
        raw.path = Some(c.path.display().to_string());
        raw.hash = Some("blake3:00".into());
        let rec = AnyModelConfig::from_raw(&raw).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(rec.model_type(), r.model_type, "{}", c.name);
        assert_eq!(rec.format(), r.format, "{}", c.name);
        assert_eq!(rec.base(), r.base, "{}", c.name);
        assert_eq!(rec.common().file_size, r.file_size, "{}", c.name);
    }
}

#[test]
fn evidence_names_the_deciding_key_and_width() {
    let dir = tempfile::tempdir().unwrap();
    fx::corpus(dir.path());
    let r = probe(&dir.path().join("sdxl-refiner.safetensors")).unwrap();
    let e = r.evidence.join("\n");
    assert!(
        e.contains("attn2.to_k.weight") && e.contains("1280 → sdxl-refiner"),
        "{e}"
    );
    assert_eq!(r.name, "sdxl-refiner");
    assert!(
        r.file_size > 20_000_000,
        "sparse data region counts: {}",
        r.file_size
    );
    assert_eq!(
        r.description.as_deref(),
        Some("sdxl-refiner main model sdxl-refiner")
    );

    let r = probe(&dir.path().join("flux1-dev.safetensors")).unwrap();
    assert_eq!(r.config_path.as_deref(), Some("flux-dev"));
    let r = probe(&dir.path().join("flux1-schnell.safetensors")).unwrap();
    assert_eq!(r.config_path.as_deref(), Some("flux-schnell"));
    let r = probe(&dir.path().join("flux1-fill-dev.safetensors")).unwrap();
    assert_eq!(r.config_path.as_deref(), Some("flux-dev-fill"));

    let r = probe(&dir.path().join("sd21.safetensors")).unwrap();
    assert!(r.upcast_attention);
}

#[test]
fn pickle_checkpoints_carry_a_clean_scan() {
    let dir = tempfile::tempdir().unwrap();
    fx::corpus(dir.path());
    for f in [
        "sd15-zip.ckpt",
        "sd2-inpaint-legacy.ckpt",
        "control_sd15_canny.pth",
        "ti-sd2.pt",
    ] {
        let r = probe(&dir.path().join(f)).unwrap();
        let scan = r.pickle_scan.unwrap_or_else(|| panic!("{f}: no scan"));
        assert_eq!(scan.verdict, ScanVerdict::Clean, "{f}: {scan:?}");
        assert!(
            scan.globals.iter().any(|g| g.name == "_rebuild_tensor_v2"),
            "{f}"
        );
    }
    let r = probe(&dir.path().join("sd15.safetensors")).unwrap();
    assert!(r.pickle_scan.is_none());
}

#[test]
fn folders_with_pickles_are_scanned() {
    let dir = tempfile::tempdir().unwrap();
    fx::corpus(dir.path());
    let r = probe(&dir.path().join("ip_adapter_sdxl")).unwrap();
    assert_eq!(r.pickle_scan.unwrap().verdict, ScanVerdict::Clean);
    let sd = dir.path().join("stable-diffusion-v1-5");
    assert!(
        probe(&sd).unwrap().pickle_scan.is_none(),
        "safetensors only"
    );
    fs::write(sd.join("safety_checker.bin"), fx::malicious_system("id")).unwrap();
    let r = probe(&sd).unwrap();
    assert_eq!(r.model_type, ModelType::Main);
    let s = r.pickle_scan.unwrap();
    assert_eq!(s.verdict, ScanVerdict::Dangerous);
    assert_eq!(s.dangerous().next().unwrap().file, "safety_checker.bin");
}

#[test]
fn diffusers_folders_report_repo_variant_and_submodels() {
    let dir = tempfile::tempdir().unwrap();
    fx::corpus(dir.path());
    let r = probe(&dir.path().join("stable-diffusion-v1-5")).unwrap();
    assert_eq!(r.repo_variant.map(ModelRepoVariant::as_str), Some("fp16"));
    let subs = r.submodels.unwrap();
    for s in [
        SubModelType::UNet,
        SubModelType::Vae,
        SubModelType::TextEncoder,
        SubModelType::Tokenizer,
        SubModelType::Scheduler,
    ] {
        assert!(subs.contains_key(&s), "{s} missing");
    }
    assert_eq!(subs[&SubModelType::Vae].model_type, ModelType::Vae);
    assert_eq!(subs[&SubModelType::UNet].path_or_prefix, "unet");

    let r = probe(&dir.path().join("stable-diffusion-2-1")).unwrap();
    assert_eq!(r.repo_variant.map(ModelRepoVariant::as_str), Some(""));
    assert!(r.upcast_attention);

    let r = probe(&dir.path().join("stable-diffusion-xl-refiner-1.0")).unwrap();
    let subs = r.submodels.unwrap();
    assert!(
        !subs.contains_key(&SubModelType::TextEncoder),
        "null components are not submodels"
    );
    assert!(subs.contains_key(&SubModelType::TextEncoder2));

    let r = probe(&dir.path().join("FLUX.1-dev")).unwrap();
    let subs = r.submodels.unwrap();
    assert_eq!(
        subs[&SubModelType::TextEncoder2].model_type,
        ModelType::T5Encoder
    );
    assert_eq!(subs[&SubModelType::Transformer].model_type, ModelType::Main);
}

#[test]
fn ambiguous_vae_takes_the_fallback_with_a_warning_and_a_base_override_settles_it() {
    let dir = tempfile::tempdir().unwrap();
    fx::corpus(dir.path());
    let path = dir.path().join("vae-ft-mse.pt");
    let r = probe(&path).unwrap();
    // InvokeAI's name rule: `vae` in the name → sd-1; still a guess between the candidates.
    assert_eq!(r.base, BaseModelType::StableDiffusion1);
    assert!(r.base_is_ambiguous() && r.base_is_guessed());
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("ambiguous (`sd-1` or `sdxl`); took `sd-1`")
            && r.warnings[0].contains("`config: {base: …}`"),
        "{:?}",
        r.warnings
    );
    assert_eq!(
        r.base_candidates,
        vec![
            BaseModelType::StableDiffusion1,
            BaseModelType::StableDiffusionXL
        ]
    );
    assert!(
        r.evidence.join(" ").contains("contains `vae` → sd-1"),
        "{:?}",
        r.evidence
    );

    let r = probe_with_overrides(&path, &overrides(&json!({"base": "sdxl"}))).unwrap();
    assert_eq!(r.base, BaseModelType::StableDiffusionXL);
    assert!(!r.base_is_ambiguous() && !r.base_is_guessed());
    assert!(r.base_candidates.is_empty());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn overrides_win_and_type_conflicts_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    fx::corpus(dir.path());
    let sd2 = dir.path().join("sd21.safetensors");
    let r = probe_with_overrides(
        &sd2,
        &overrides(&json!({"prediction_type": "epsilon", "upcast_attention": false, "name": "sd2 base", "description": "d", "variant": "inpaint", "tags": ["ignored"]})),
    )
    .unwrap();
    assert_eq!(r.prediction_type.unwrap().as_str(), "epsilon");
    assert!(!r.upcast_attention);
    assert_eq!(r.name, "sd2 base");
    assert_eq!(r.description.as_deref(), Some("d"));
    assert_eq!(r.variant.unwrap().as_str(), "inpaint");

    let lora = dir.path().join("lora-sd1.safetensors");
    let e = probe_with_overrides(&lora, &overrides(&json!({"type": "main"}))).unwrap_err();
    assert!(matches!(e, ProbeError::TypeConflict { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("type `main`") && msg.contains("`lora`"),
        "{msg}"
    );

    // Same type: fine.
    assert!(probe_with_overrides(&lora, &overrides(&json!({"type": "lora"}))).is_ok());

    let e = probe_with_overrides(&lora, &overrides(&json!({"base": "sd-9"})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`base`") && e.contains("sd-9"), "{e}");
    let e = probe_with_overrides(&lora, &overrides(&json!({"format": "gguf_quantized"})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("valid formats: lycoris, omi, diffusers"), "{e}");
    let e = probe_with_overrides(&lora, &overrides(&json!({"upcast_attention": "yes"})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("upcast_attention"), "{e}");
}

#[test]
fn type_hint_names_an_unknown_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mystery.safetensors");
    fx::safetensors(
        &p,
        &[
            ("net.0.weight", &[64, 3, 3, 3]),
            ("net.2.weight", &[64, 64, 3, 3]),
        ],
        None,
    );
    let r = probe(&p).unwrap();
    assert_eq!(r.model_type, ModelType::Unknown);
    assert!(
        r.evidence
            .iter()
            .any(|e| e.contains("`net.0.weight` [64, 3, 3, 3]")),
        "{:?}",
        r.evidence
    );
    let r = probe_with_overrides(
        &p,
        &overrides(&json!({"type": "spandrel_image_to_image", "base": "any"})),
    )
    .unwrap();
    assert_eq!(r.model_type, ModelType::SpandrelImageToImage);
    assert_eq!(r.format.as_str(), "checkpoint");
    let mut raw = r.to_raw_config();
    raw.path = Some("x".into());
    AnyModelConfig::from_raw(&raw).unwrap();
}

#[test]
fn unknown_layouts_are_results_with_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t5.safetensors");
    fx::safetensors(
        &p,
        &[(
            "encoder.block.0.layer.0.SelfAttention.q.weight",
            &[4096, 4096],
        )],
        None,
    );
    let r = probe(&p).unwrap();
    assert_eq!(r.model_type, ModelType::Unknown);
    assert!(
        r.evidence.iter().any(|e| e.contains("T5 encoder")),
        "{:?}",
        r.evidence
    );

    let p = dir.path().join("llama.gguf");
    fx::gguf(
        &p,
        &[("general.architecture", "llama")],
        &[("blk.0.attn_q.weight", &[4096, 4096])],
    );
    let r = probe(&p).unwrap();
    assert_eq!(r.model_type, ModelType::Unknown);
    assert_eq!(r.format.as_str(), "gguf_quantized");
    assert!(
        r.evidence.iter().any(|e| e.contains("llama")),
        "{:?}",
        r.evidence
    );

    let d = dir.path().join("just-docs");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("README.md"), "hi").unwrap();
    let r = probe(&d).unwrap();
    assert_eq!(r.model_type, ModelType::Unknown);
    assert!(r.evidence[0].contains("README.md"), "{:?}", r.evidence);

    let p = dir.path().join("random.dat");
    fs::write(&p, b"\x01\x02\x03 not a model at all").unwrap();
    let r = probe(&p).unwrap();
    assert_eq!(r.model_type, ModelType::Unknown);
    assert!(
        r.evidence[0].contains("not a safetensors"),
        "{:?}",
        r.evidence
    );
}

fn write_header(path: &Path, declared: u64, body: &[u8]) {
    let mut v = declared.to_le_bytes().to_vec();
    v.extend_from_slice(body);
    fs::write(path, v).unwrap();
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);

    fs::write(p("trunc.safetensors"), b"abcd").unwrap();
    let e = probe(&p("trunc.safetensors")).unwrap_err().to_string();
    assert!(
        e.contains("trunc.safetensors") && e.contains("truncated header"),
        "{e}"
    );

    write_header(&p("past-eof.safetensors"), 1000, b"{\"a\":");
    let e = probe(&p("past-eof.safetensors")).unwrap_err().to_string();
    assert!(
        e.contains("header length 1000 bytes runs past the end of the file (13 bytes"),
        "{e}"
    );

    let big = p("huge-header.safetensors");
    write_header(&big, 200_000_000, b"{");
    fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(300_000_000)
        .unwrap();
    let e = probe(&big).unwrap_err().to_string();
    assert!(e.contains("exceeds the 100000000-byte limit"), "{e}");

    write_header(&p("notjson.safetensors"), 10, b"not json!!");
    let e = probe(&p("notjson.safetensors")).unwrap_err().to_string();
    assert!(
        e.contains("notjson.safetensors") && e.contains("not valid safetensors JSON"),
        "{e}"
    );

    write_header(&p("badentry.safetensors"), 16, br#"{"w": [1, 2, 3]}"#);
    let e = probe(&p("badentry.safetensors")).unwrap_err().to_string();
    assert!(e.contains("bad safetensors header"), "{e}");

    fs::write(p("empty.ckpt"), b"").unwrap();
    let e = probe(&p("empty.ckpt")).unwrap_err();
    assert!(matches!(e, ProbeError::EmptyFile(_)), "{e}");

    let zp = p("notes.zip.ckpt");
    {
        let mut z = zip::ZipWriter::new(fs::File::create(&zp).unwrap());
        z.start_file("hello.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut z, b"hello").unwrap();
        z.finish().unwrap();
    }
    let e = probe(&zp).unwrap_err().to_string();
    assert!(e.contains("not a torch save"), "{e}");

    // A pickle cut in the middle of the state dict.
    let full = p("full.ckpt");
    fx::torch_legacy(&full, &fx::od(&[("w", fx::t(&[4, 4]))]));
    let bytes = fs::read(&full).unwrap();
    fs::write(p("cut.ckpt"), &bytes[..60]).unwrap();
    let e = probe(&p("cut.ckpt")).unwrap_err().to_string();
    assert!(
        e.contains("cut.ckpt") && e.contains("unreadable pickle"),
        "{e}"
    );

    fs::write(
        p("bad.gguf"),
        b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff",
    )
    .unwrap();
    let e = probe(&p("bad.gguf")).unwrap_err().to_string();
    assert!(e.contains("bad GGUF header"), "{e}");

    let d = p("badcfg");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("model_index.json"), b"{ nope").unwrap();
    let e = probe(&d).unwrap_err().to_string();
    assert!(
        e.contains("model_index.json") && e.contains("bad config"),
        "{e}"
    );

    let e = probe(&p("nope.safetensors")).unwrap_err();
    assert!(matches!(e, ProbeError::NotFound(_)), "{e}");
}

#[test]
fn dangerous_pickle_probe_reports_the_scan_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let p = dir.path().join("evil.ckpt");
    fs::write(
        &p,
        fx::malicious_system(&format!("touch {}", marker.display())),
    )
    .unwrap();
    let r = probe(&p).unwrap();
    assert_eq!(r.model_type, ModelType::Unknown);
    let s = r.pickle_scan.unwrap();
    assert_eq!(s.verdict, ScanVerdict::Dangerous);
    assert!(!marker.exists(), "the payload ran");
}

#[test]
fn nested_non_state_dict_pickles_flatten() {
    // {'model': {'ip_adapter': …}} style nesting flattens with dots.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nested.pt");
    fx::torch_zip(
        &p,
        "nested",
        &fx::dict(&[
            (
                "image_proj",
                fx::od(&[("proj.weight", fx::t(&[3072, 1024]))]),
            ),
            (
                "ip_adapter",
                fx::od(&[("1.to_k_ip.weight", fx::t(&[320, 768]))]),
            ),
            ("meta", Py::Str("x".into())),
        ]),
        &[],
    );
    let r = probe(&p).unwrap();
    assert_eq!(
        (r.model_type, r.base),
        (ModelType::IpAdapter, BaseModelType::StableDiffusion1),
        "{:?}",
        r.evidence
    );
}

#[test]
fn cli_probe_text_and_json() {
    use crate::support::{modelsync, stderr, stdout};
    let dir = tempfile::tempdir().unwrap();
    fx::corpus(dir.path());
    let f = dir.path().join("sd15.safetensors").display().to_string();
    let g = dir
        .path()
        .join("lora-sd1.safetensors")
        .display()
        .to_string();
    // Text: the file, then its aligned fields.
    let o = modelsync(dir.path(), &["probe", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], f, "{text}");
    for field in [
        "type:       main",
        "base:       sd-1",
        "format:     checkpoint",
    ] {
        assert!(lines.iter().any(|l| l.trim() == field), "{field}: {text}");
    }
    // JSON: one object for one file, an array for several, in the order given.
    let o = modelsync(dir.path(), &["probe", "-o", "json", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["base"].as_str()),
        (Some("main"), Some("sd-1"))
    );
    let o = modelsync(dir.path(), &["probe", &f, &g, "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let types: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["main", "lora"]);
    // A missing file fails the command in both forms, naming the path.
    let missing = dir.path().join("missing.safetensors").display().to_string();
    let o = modelsync(dir.path(), &["probe", &missing]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("{missing}: no such file or folder")),
        "{}",
        stderr(&o)
    );
    let o = modelsync(dir.path(), &["probe", "-o", "json", &f, &missing]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&missing), "{}", stderr(&o));
}

#[test]
fn probe_result_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    fx::corpus(dir.path());
    let r = probe(&dir.path().join("sd15-zip.ckpt")).unwrap();
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["type"], "main");
    assert_eq!(v["base"], "sd-1");
    assert_eq!(v["format"], "checkpoint");
    assert_eq!(v["variant"], "normal");
    assert_eq!(v["pickle_scan"]["verdict"], "clean");
    assert!(v["evidence"].as_array().unwrap().len() >= 2);
}

/// Writes the fixture corpus to `$MODELSYNC_FIXTURE_DIR` for manual runs of the CLI
/// (`cargo test --test it write_fixture_corpus -- --ignored`).
#[test]
#[ignore = "writes to a caller-chosen folder"]
fn write_fixture_corpus() {
    let dir = std::env::var_os("MODELSYNC_FIXTURE_DIR").expect("set MODELSYNC_FIXTURE_DIR");
    fs::create_dir_all(&dir).unwrap();
    let cases = fx::corpus(Path::new(&dir));
    assert!(!cases.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Real-producer fixtures (safetensors package, CPython pickle in torch.save's layouts).

#[test]
fn every_real_producer_fixture_is_identified() {
    let dir = tempfile::tempdir().unwrap();
    let cases = fx::real_corpus(dir.path());
    let mut failures = Vec::new();
    for c in &cases {
        match probe(&c.path) {
            Ok(r) => {
                let got = (r.model_type.as_str(), r.base.as_str(), r.format.as_str());
                if got != (c.model_type, c.base, c.format) {
                    failures.push(format!(
                        "{}: got {got:?}, want {:?}; evidence: {:?}; decision: {}",
                        c.name,
                        (c.model_type, c.base, c.format),
                        r.evidence,
                        r.decision
                    ));
                }
                let mut raw = r.to_raw_config();
                raw.path = Some(c.path.display().to_string());
                raw.hash = Some("blake3:00".into());
                if let Err(e) = AnyModelConfig::from_raw(&raw) {
                    failures.push(format!("{}: record: {e}", c.name));
                }
            }
            Err(e) => failures.push(format!("{}: error {e}", c.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn torch_zip_saves_of_every_pickle_protocol_are_read() {
    let dir = tempfile::tempdir().unwrap();
    for p in fx::esrgan_zip_every_protocol(dir.path()) {
        let r = probe(&p).unwrap();
        assert_eq!(
            r.model_type,
            ModelType::SpandrelImageToImage,
            "{}: {:?}",
            p.display(),
            r.evidence
        );
        assert_eq!(r.pickle_scan.as_ref().unwrap().verdict, ScanVerdict::Clean);
        assert!(
            r.evidence.iter().any(|e| e.contains("under `params_ema`")),
            "{:?}",
            r.evidence
        );
    }
}

#[test]
fn legacy_torch_saves_of_protocol_2_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fx::esrgan_legacy_every_protocol(dir.path());
    let r = probe(&paths[1]).unwrap();
    assert_eq!(
        r.model_type,
        ModelType::SpandrelImageToImage,
        "{:?}",
        r.evidence
    );
}

#[test]
fn legacy_torch_saves_of_every_protocol_are_read() {
    let dir = tempfile::tempdir().unwrap();
    for p in fx::esrgan_legacy_every_protocol(dir.path()) {
        let r = probe(&p).unwrap();
        assert_eq!(
            r.model_type,
            ModelType::SpandrelImageToImage,
            "{}: {:?}",
            p.display(),
            r.evidence
        );
    }
}

#[test]
fn xlabs_flux_lora_is_never_a_main_model() {
    let dir = tempfile::tempdir().unwrap();
    fx::real_corpus(dir.path());
    let r = probe(&dir.path().join("xlabs-realism-lora.safetensors")).unwrap();
    assert_eq!(
        (r.model_type, r.base),
        (ModelType::Lora, BaseModelType::Flux)
    );
    assert!(
        r.candidates.iter().all(|c| c.model_type != ModelType::Main),
        "{:?}",
        r.candidates
    );
    assert!(
        r.evidence[0].contains("XLabs FLUX LoRA"),
        "{:?}",
        r.evidence
    );
    // A `type: main` hint cannot make it one: the LoRA keys are strong evidence.
    let e = probe_with_overrides(
        &dir.path().join("xlabs-realism-lora.safetensors"),
        &overrides(&json!({"type": "main"})),
    )
    .unwrap_err();
    assert!(matches!(e, ProbeError::TypeConflict { .. }), "{e}");
}

#[test]
fn candidates_list_every_matching_rule_and_why_the_winner_won() {
    let dir = tempfile::tempdir().unwrap();
    fx::real_corpus(dir.path());
    let merged = dir.path().join("merged-sd15.safetensors");
    let r = probe(&merged).unwrap();
    let rules: Vec<(&str, ModelType, bool)> = r
        .candidates
        .iter()
        .map(|c| (c.rule.as_str(), c.model_type, c.winner))
        .collect();
    // InvokeAI's order: a main checkpoint with merged LoRA keys is a main model.
    assert_eq!(
        rules,
        [
            ("main_sd", ModelType::Main, true),
            ("lora", ModelType::Lora, false),
            ("vae", ModelType::Vae, false)
        ],
        "{}",
        r.decision
    );
    assert!(
        r.decision.contains("`main_sd` wins over `lora`, `vae`")
            && r.decision.contains("main outranks lora"),
        "{}",
        r.decision
    );
    // A type hint picks a candidate that matched instead of contradicting the evidence.
    let r = probe_with_overrides(&merged, &overrides(&json!({"type": "lora"}))).unwrap();
    assert_eq!(
        (r.model_type, r.format),
        (ModelType::Lora, ModelFormat::Lycoris)
    );
    assert!(r.candidates[0].winner && r.candidates[0].rule == "lora");
    assert!(r.decision.contains("type override"), "{}", r.decision);

    // One match: the decision says so; no match: no candidates.
    let r = probe(&dir.path().join("HAT-S_x4.safetensors")).unwrap();
    assert_eq!(r.candidates.len(), 1);
    assert_eq!(r.decision, "only `spandrel` matched");

    // The JSON of `probe -o json` carries them.
    let o = crate::support::modelsync(
        dir.path(),
        &["probe", "-o", "json", merged.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", crate::support::stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["candidates"][0]["rule"], "main_sd");
    assert_eq!(v["candidates"][0]["winner"], true);
    assert_eq!(v["candidates"][1]["type"], "lora");
    assert!(v["decision"].as_str().unwrap().contains("wins over"));
}

#[test]
fn checkpoint_vae_base_follows_invokeai_name_rule_and_is_marked_guessed() {
    let dir = tempfile::tempdir().unwrap();
    fx::real_corpus(dir.path());
    for (file, base) in [
        ("sdxl_vae.safetensors", BaseModelType::StableDiffusionXL),
        (
            "vae-ft-mse-840000-ema-pruned.ckpt",
            BaseModelType::StableDiffusion1,
        ),
        ("anything.safetensors", BaseModelType::StableDiffusion1),
    ] {
        let r = probe(&dir.path().join(file)).unwrap();
        assert_eq!(r.base, base, "{file}: {:?}", r.evidence);
        assert!(r.base_is_guessed() && r.base_is_ambiguous(), "{file}");
        assert!(
            r.warnings.iter().any(|w| w.contains("ambiguous")),
            "{file}: {:?}",
            r.warnings
        );
    }
    let r = probe_with_overrides(
        &dir.path().join("anything.safetensors"),
        &overrides(&json!({"base": "sdxl"})),
    )
    .unwrap();
    assert_eq!(r.base, BaseModelType::StableDiffusionXL);
    assert!(!r.base_is_guessed());
}

#[test]
fn real_producer_folders_are_identified() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for c in fx::real_folders(dir.path()) {
        let r = match probe(&c.path) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", c.name));
                continue;
            }
        };
        let got = (
            r.model_type.as_str(),
            r.base.as_str(),
            r.repo_variant.map(ModelRepoVariant::as_str),
        );
        if got != (c.model_type, c.base, c.repo_variant) {
            failures.push(format!(
                "{}: got {got:?}, want {:?}; evidence {:?}",
                c.name,
                (c.model_type, c.base, c.repo_variant),
                r.evidence
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn diffusers_vae_fallback_is_a_guess_a_config_decision_is_not() {
    let dir = tempfile::tempdir().unwrap();
    fx::real_folders(dir.path());
    let r = probe(&dir.path().join("sd-vae-ft-mse")).unwrap();
    assert!(r.base_is_guessed(), "{:?}", r.evidence);
    let r = probe(&dir.path().join("sdxl-vae")).unwrap();
    assert!(!r.base_is_guessed(), "{:?}", r.evidence);
    let r = probe(&dir.path().join("taesdxl-fp16")).unwrap();
    assert!(
        r.evidence.iter().any(|e| e.contains("taesdxl-fp16")),
        "{:?}",
        r.evidence
    );
}

#[test]
fn newer_families_are_identified() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (c, variant) in fx::newer_corpus(dir.path()) {
        match probe(&c.path) {
            Ok(r) => {
                let got = (
                    r.model_type.as_str(),
                    r.base.as_str(),
                    r.format.as_str(),
                    r.variant.map(|v| v.to_string()),
                );
                let mut raw = r.to_raw_config();
                raw.path = Some(c.path.display().to_string());
                raw.hash = Some("blake3:00".into());
                if let Err(e) = AnyModelConfig::from_raw(&raw) {
                    failures.push(format!("{}: record: {e}", c.name));
                }
                let want = (c.model_type, c.base, c.format, variant.map(str::to_owned));
                if got != want {
                    failures.push(format!(
                        "{}: got {got:?}, want {want:?}; evidence: {:?}; candidates: {:?}",
                        c.name, r.evidence, r.candidates
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: error {e}", c.name)),
        }
    }
    for (name, path, t, base, variant) in fx::newer_folders(dir.path()) {
        match probe(&path) {
            Ok(r) => {
                let got = (
                    r.model_type.as_str(),
                    r.base.as_str(),
                    r.variant.map(|v| v.to_string()),
                );
                let want = (t, base, variant.map(str::to_owned));
                if got != want {
                    failures.push(format!(
                        "{name}: got {got:?}, want {want:?}; evidence: {:?}",
                        r.evidence
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// InvokeAI 6.x parity: every config class of its factory has a rule and a real-producer fixture.

#[test]
fn invokeai_parity_files_are_identified() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let cases = fx::parity_corpus(dir.path());
    assert!(cases.len() >= 26, "{} cases", cases.len());
    for (c, variant) in cases {
        match probe(&c.path) {
            Ok(r) => {
                let got = (
                    r.model_type.as_str(),
                    r.base.as_str(),
                    r.format.as_str(),
                    r.variant.map(|v| v.to_string()),
                );
                let want = (c.model_type, c.base, c.format, variant.map(str::to_owned));
                if got != want {
                    failures.push(format!(
                        "{}: got {got:?}, want {want:?}; evidence: {:?}; candidates: {:?}",
                        c.name, r.evidence, r.candidates
                    ));
                }
                let mut raw = r.to_raw_config();
                raw.path = Some(c.path.display().to_string());
                raw.hash = Some("blake3:00".into());
                if let Err(e) = AnyModelConfig::from_raw(&raw) {
                    failures.push(format!("{}: record: {e}", c.name));
                }
            }
            Err(e) => failures.push(format!("{}: error {e}", c.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invokeai_parity_folders_are_identified() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let folders = fx::parity_folders(dir.path());
    assert!(folders.len() >= 18, "{} folders", folders.len());
    for (name, path, t, base, format, variant) in folders {
        match probe(&path) {
            Ok(r) => {
                let got = (
                    r.model_type.as_str(),
                    r.base.as_str(),
                    r.format.as_str(),
                    r.variant.map(|v| v.to_string()),
                );
                let want = (t, base, format, variant.map(str::to_owned));
                if got != want {
                    failures.push(format!(
                        "{name}: got {got:?}, want {want:?}; evidence: {:?}",
                        r.evidence
                    ));
                }
                if let Some(e) = r.evidence.iter().find(|e| e.contains("invalid")) {
                    failures.push(format!("{name}: evidence reports an error: {e}"));
                }
                let mut raw = r.to_raw_config();
                raw.path = Some(path.display().to_string());
                raw.hash = Some("blake3:00".into());
                if let Err(e) = AnyModelConfig::from_raw(&raw) {
                    failures.push(format!("{name}: record: {e}"));
                }
            }
            Err(e) => failures.push(format!("{name}: error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn files_invokeai_leaves_unidentified_are_unknown_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    for (name, path, hint) in fx::parity_unknown(dir.path()) {
        let r = probe(&path).unwrap();
        assert_eq!(r.model_type, ModelType::Unknown, "{name}: {:?}", r.evidence);
        assert!(
            r.evidence.iter().any(|e| e.contains(hint)),
            "{name}: no `{hint}` in {:?}",
            r.evidence
        );
    }
}

#[test]
fn encoders_with_a_vision_tower_or_mistral_geometry_are_not_qwen3() {
    let dir = tempfile::tempdir().unwrap();
    fx::parity_corpus(dir.path());
    for file in [
        "qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "qwen3vl_4b.safetensors",
        "mistral_3_small_flux2_cow.safetensors",
    ] {
        let r = probe(&dir.path().join(file)).unwrap();
        assert!(
            r.candidates
                .iter()
                .all(|c| c.model_type != ModelType::Qwen3Encoder),
            "{file}: {:?}",
            r.candidates
        );
    }
}

#[test]
fn a_t5_encoder_narrower_than_xxl_is_recorded_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t5-v1_1-base-encoder.safetensors");
    crate::support::pyfix::write(&[crate::support::pyfix::Spec::safetensors(
        path.clone(),
        fx::t5_encoder_keys(768, false),
    )]);
    let r = probe(&path).unwrap();
    assert_eq!(
        (r.model_type, r.format),
        (ModelType::T5Encoder, ModelFormat::Checkpoint)
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("768") && w.contains("4096")),
        "{:?}",
        r.warnings
    );
    let xxl = dir.path().join("t5xxl_fp16.safetensors");
    crate::support::pyfix::write(&[crate::support::pyfix::Spec::safetensors(
        xxl.clone(),
        fx::t5_encoder_keys(4096, false),
    )]);
    assert!(probe(&xxl).unwrap().warnings.is_empty());
}

#[test]
fn a_wan_lora_with_a_replacement_input_conv_is_never_a_main_model() {
    let dir = tempfile::tempdir().unwrap();
    fx::parity_corpus(dir.path());
    let r = probe(&dir.path().join("wan22-i2v-lightx2v-lora.safetensors")).unwrap();
    assert_eq!(
        (r.model_type, r.base),
        (ModelType::Lora, BaseModelType::Wan)
    );
    assert!(
        r.candidates.iter().all(|c| c.model_type != ModelType::Main),
        "{:?}",
        r.candidates
    );
}

#[test]
fn a_pid_decoder_whose_name_names_no_backbone_takes_the_fallback_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pid_decoder.safetensors");
    crate::support::pyfix::write(&[crate::support::pyfix::Spec::safetensors(
        path.clone(),
        fx::pid_decoder_keys(),
    )]);
    let r = probe(&path).unwrap();
    assert_eq!(r.model_type, ModelType::PidDecoder);
    assert_eq!(r.base, BaseModelType::Flux, "{:?}", r.evidence);
    assert!(
        r.warnings.iter().any(|w| w.contains("ambiguous")),
        "{:?}",
        r.warnings
    );
    let r = probe_with_overrides(&path, &overrides(&json!({"base": "sd-3"}))).unwrap();
    assert_eq!(r.base, BaseModelType::StableDiffusion3);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn gguf_t5_and_mistral_encoders_are_identified() {
    let dir = tempfile::tempdir().unwrap();
    let t5 = dir.path().join("t5-v1_1-xxl-encoder-Q8_0.gguf");
    fx::gguf(
        &t5,
        &[("general.architecture", "t5encoder")],
        &[
            ("token_embd.weight", &[32128, 4096]),
            ("enc.blk.0.attn_q.weight", &[4096, 4096]),
            ("enc.blk.0.attn_rel_b.weight", &[64, 32]),
            ("enc.output_norm.weight", &[4096]),
        ],
    );
    let r = probe(&t5).unwrap();
    assert_eq!(
        (r.model_type, r.format),
        (ModelType::T5Encoder, ModelFormat::GgufQuantized),
        "{:?}",
        r.evidence
    );
    let mistral = dir.path().join("Mistral-Small-3.2-24B-Q8_0.gguf");
    let norms: Vec<String> = (0..40)
        .map(|l| format!("blk.{l}.attn_norm.weight"))
        .collect();
    let mut tensors: Vec<(&str, &[u64])> = vec![
        ("token_embd.weight", &[131_072, 5120]),
        ("blk.0.attn_k.weight", &[1024, 5120]),
        ("output_norm.weight", &[5120]),
    ];
    tensors.extend(norms.iter().map(|n| (n.as_str(), &[5120u64][..])));
    fx::gguf(&mistral, &[("general.architecture", "llama")], &tensors);
    let r = probe(&mistral).unwrap();
    assert_eq!(
        (r.model_type, r.format, r.variant.map(|v| v.to_string())),
        (
            ModelType::MistralEncoder,
            ModelFormat::GgufQuantized,
            Some("mistral3_24b".to_owned())
        ),
        "{:?}",
        r.evidence
    );
}
