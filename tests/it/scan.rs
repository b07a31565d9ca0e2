//! Pickle safety scan: clean torch saves, payloads by GLOBAL, STACK_GLOBAL, hidden members and
//! stacked pickles — and nothing ever runs.

use std::fs;
use std::io::Write;

use modelsync::cli::{Status, run};
use modelsync::scan::{GlobalClass, ScanVerdict, scan_path};

use crate::support::probe_fixtures as fx;

#[test]
fn torch_saves_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    fx::corpus(dir.path());
    for f in [
        "sd15-zip.ckpt",
        "sd2-inpaint-legacy.ckpt",
        "control_sd15_canny.pth",
        "ti-sd2.pt",
        "lora-sd1.pt",
    ] {
        let r = scan_path(&dir.path().join(f)).unwrap();
        assert_eq!(r.verdict, ScanVerdict::Clean, "{f}: {r:?}");
        assert_eq!(r.files_scanned, 1);
        assert!(r.globals.iter().all(|g| g.class == GlobalClass::Safe));
        assert!(
            r.globals
                .iter()
                .any(|g| g.module == "collections" && g.name == "OrderedDict"),
            "{f}"
        );
    }
    let r = scan_path(&dir.path().join("sd15.safetensors")).unwrap();
    assert_eq!(
        (r.verdict, r.files_scanned, r.globals.len()),
        (ScanVerdict::Clean, 1, 0)
    );
    let r = scan_path(&dir.path().join("flux1-dev-Q8_0.gguf")).unwrap();
    assert_eq!((r.verdict, r.files_scanned), (ScanVerdict::Clean, 1));
}

#[test]
fn os_system_is_dangerous_and_not_executed() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let p = dir.path().join("evil.pt");
    fs::write(
        &p,
        fx::malicious_system(&format!("touch {}", marker.display())),
    )
    .unwrap();
    let r = scan_path(&p).unwrap();
    assert_eq!(r.verdict, ScanVerdict::Dangerous);
    let bad: Vec<_> = r
        .dangerous()
        .map(|g| format!("{}.{}", g.module, g.name))
        .collect();
    assert_eq!(bad, vec!["posix.system"]);
    assert_eq!(r.globals[0].file, "evil.pt");
    assert!(!marker.exists(), "the payload ran");
}

#[test]
fn stack_global_eval_is_dangerous() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("evil4.bin");
    fs::write(&p, fx::malicious_eval("__import__('os').system('true')")).unwrap();
    let r = scan_path(&p).unwrap();
    assert_eq!(r.verdict, ScanVerdict::Dangerous);
    assert!(
        r.dangerous()
            .any(|g| g.module == "builtins" && g.name == "eval"),
        "{r:?}"
    );
}

#[test]
fn every_pkl_in_a_zip_is_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sneaky.ckpt");
    let payload = fx::malicious_system("id");
    fx::torch_zip(
        &p,
        "archive",
        &fx::od(&[("w", fx::t(&[2, 2]))]),
        &[("extra/hidden.pkl", &payload)],
    );
    let r = scan_path(&p).unwrap();
    assert_eq!(r.verdict, ScanVerdict::Dangerous);
    let g = r.dangerous().next().unwrap();
    assert_eq!(g.file, "sneaky.ckpt:archive/extra/hidden.pkl");
    // The main data.pkl globals are listed too, under their own member name.
    assert!(
        r.globals
            .iter()
            .any(|g| g.file == "sneaky.ckpt:archive/data.pkl" && g.class == GlobalClass::Safe)
    );
}

#[test]
fn a_payload_stacked_after_a_clean_pickle_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stacked.pkl");
    let mut clean = fx::Pickler::new(false);
    clean.value(&fx::dict(&[("a", fx::Py::Int(1))]));
    let mut bytes = clean.finish().0;
    bytes.extend_from_slice(&fx::malicious_system("id"));
    fs::write(&p, bytes).unwrap();
    let r = scan_path(&p).unwrap();
    assert_eq!(r.verdict, ScanVerdict::Dangerous, "{r:?}");
}

#[test]
fn unknown_imports_and_broken_pickles_are_suspicious() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lightning.ckpt");
    let mut v = vec![0x80, 2];
    v.extend_from_slice(b"cpytorch_lightning.callbacks.model_checkpoint\nModelCheckpoint\n)\x81.");
    fs::write(&p, v).unwrap();
    let r = scan_path(&p).unwrap();
    assert_eq!(r.verdict, ScanVerdict::Suspicious);
    assert_eq!(r.globals[0].class, GlobalClass::Unknown);

    let p = dir.path().join("broken.pt");
    fs::write(&p, [0x80, 2, b'}', b'(', b'X', 0xff, 0, 0, 0]).unwrap();
    let r = scan_path(&p).unwrap();
    assert_eq!(r.verdict, ScanVerdict::Suspicious);
    assert!(
        r.problems[0].contains("broken.pt") && r.problems[0].contains("more bytes"),
        "{:?}",
        r.problems
    );

    // A dangerous import before the break still counts: Python would have run it already.
    let p = dir.path().join("broken-evil.pt");
    let mut v = fx::malicious_system("id");
    v.truncate(v.len() - 3);
    fs::write(&p, v).unwrap();
    assert_eq!(scan_path(&p).unwrap().verdict, ScanVerdict::Dangerous);
}

#[test]
fn folders_scan_weight_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("model");
    fs::create_dir_all(d.join("sub")).unwrap();
    fx::safetensors(&d.join("a.safetensors"), &[("w", &[2])], None);
    fx::torch_legacy(&d.join("sub/b.bin"), &fx::od(&[("w", fx::t(&[2]))]));
    fs::write(d.join("config.json"), b"{}").unwrap();
    fs::write(d.join("README.md"), b"# import os").unwrap();
    let r = scan_path(&d).unwrap();
    assert_eq!((r.verdict, r.files_scanned), (ScanVerdict::Clean, 2));
    assert!(r.globals.iter().all(|g| g.file == "sub/b.bin"));

    fs::write(d.join("sub/evil.pkl"), fx::malicious_system("id")).unwrap();
    let r = scan_path(&d).unwrap();
    assert_eq!(r.verdict, ScanVerdict::Dangerous);
    assert_eq!(r.dangerous().next().unwrap().file, "sub/evil.pkl");
}

#[test]
fn not_a_zip_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("corrupt.ckpt");
    let mut f = fs::File::create(&p).unwrap();
    f.write_all(b"PK\x03\x04 garbage garbage").unwrap();
    let e = scan_path(&p).unwrap_err().to_string();
    assert!(e.contains("corrupt.ckpt") && e.contains("zip"), "{e}");
    assert!(
        scan_path(&dir.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("no such file")
    );
}

#[test]
fn cli_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.ckpt");
    fx::torch_legacy(&clean, &fx::od(&[("w", fx::t(&[2]))]));
    let evil = dir.path().join("evil.ckpt");
    fs::write(&evil, fx::malicious_system("id")).unwrap();
    let s = |p: &std::path::Path| p.display().to_string();
    assert_eq!(run(["modelsync", "scan", &s(&clean)]), Status::Success);
    assert_eq!(run(["modelsync", "scan", &s(&evil)]), Status::Pending);
    assert_eq!(
        run(["modelsync", "scan", "-o", "json", &s(&evil)]),
        Status::Pending
    );
    assert_eq!(
        run(["modelsync", "scan", &s(&dir.path().join("missing"))]),
        Status::Error
    );
}

/// Writes `payload` (Python bytes literal expressions, evaluated by CPython) to `path`.
fn py_write(path: &std::path::Path, expr: &str) {
    let code =
        format!("import sys, struct, pickle, zipfile, io\nopen(sys.argv[1], 'wb').write({expr})");
    let st = std::process::Command::new("python3")
        .args(["-c", &code, &path.display().to_string()])
        .status()
        .expect("python3 runs");
    assert!(st.success(), "python3 failed writing {}", path.display());
}

#[test]
fn names_decode_as_cpython_resolves_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // STRING escapes: CPython's escape_decode makes this `os`.
        (
            "escaped.pkl",
            r#"b"\x80\x04S'o\\x73'\nS'sys\\164em'\n\x93.""#,
            "os",
            "system",
        ),
        (
            "unicode.pkl",
            r#"b"\x80\x04V\\u006fs\nVsystem\n\x93.""#,
            "os",
            "system",
        ),
        // Protocol 4 resolves dotted names attribute by attribute: this is builtins.eval.
        (
            "dotted.pkl",
            r#"b"\x80\x04\x8c\x08builtins\x8c\x11len.__self__.eval\x93.""#,
            "builtins",
            "len.__self__.eval",
        ),
        // POP of a MARK pops the mark (CPython), and the stream goes on.
        ("markpop.pkl", r#"b"(0cos\nsystem\n.""#, "os", "system"),
    ];
    for (file, expr, module, name) in cases {
        let p = dir.path().join(file);
        py_write(&p, expr);
        let r = scan_path(&p).unwrap();
        assert_eq!(r.verdict, ScanVerdict::Dangerous, "{file}: {r:?}");
        assert!(
            r.dangerous().any(|g| g.module == module && g.name == name),
            "{file}: {r:?}"
        );
    }
}

#[test]
fn a_pickle_that_starts_like_safetensors_is_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.bin");
    // BINFLOAT whose last byte is `{`: the first 9 bytes read as a safetensors length + `{`.
    py_write(
        &p,
        r#"b"G\x00\x00\x00\x00\x00\x00\x00{0\x8c\x40" + b"x" * 64 + b"0cos\nsystem\n(S'true'\ntR.""#,
    );
    assert_eq!(scan_path(&p).unwrap().verdict, ScanVerdict::Dangerous);
    // The same in a folder (what install and load scan).
    let r = scan_path(dir.path()).unwrap();
    assert_eq!(r.verdict, ScanVerdict::Dangerous, "{r:?}");
    // A pickle under any name is found by its PROTO byte.
    fs::remove_file(&p).unwrap();
    fs::write(
        dir.path().join("weights.data-00001"),
        fx::malicious_system("id"),
    )
    .unwrap();
    assert_eq!(
        scan_path(dir.path()).unwrap().verdict,
        ScanVerdict::Dangerous
    );
}

/// Hostile files written by tests/py/bombs.py, each scanned by the built binary under a
/// `ulimit -v` of the documented 256 MiB ceiling plus 64 MiB for the process itself: every
/// scan ends with a verdict (exit 0 or 2), none is killed.
#[test]
fn bombs_stay_under_the_memory_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/bombs.py");
    let st = std::process::Command::new("python3")
        .args([script, &dir.path().display().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let bin = env!("CARGO_BIN_EXE_modelsync");
    for (file, verdict) in [
        ("dup.ckpt", "suspicious"),
        ("memo.ckpt", "suspicious"),
        ("zipbomb.ckpt", "suspicious"),
        ("marks.pkl", "suspicious"),
        ("memo-slots.pkl", "suspicious"),
        ("globals.pkl", "suspicious"),
        ("text.pkl", "clean"),
        ("shapes.pkl", "clean"),
    ] {
        let out = std::process::Command::new("bash")
            .args([
                "-c",
                "ulimit -v $((320 * 1024)); exec \"$0\" scan -o json \"$1\"",
                bin,
                &dir.path().join(file).display().to_string(),
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "{file}: {:?} {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(doc["verdict"], verdict, "{file}: {doc}");
    }
}

/// A small run of the differential test against CPython's unpickler (the full one is
/// `scripts/check-pickle-gate`): every generated pickle on which CPython would resolve a
/// global outside the allow-list is refused by the built binary.
#[test]
fn cpython_differential_small() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/pickle_gate.py");
    let out = std::process::Command::new("python3")
        .args([
            script,
            "--bin",
            env!("CARGO_BIN_EXE_modelsync"),
            "--random",
            "300",
            "--seed",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pickle inside a model folder is scanned whatever its name: one renamed to `notes.dat`
/// (written by CPython's own pickler) still makes the folder's scan dangerous.
#[test]
fn a_renamed_pickle_in_a_folder_is_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("vae");
    fs::create_dir(&model).unwrap();
    fx::write_json(
        &model.join("config.json"),
        &serde_json::json!({"_class_name": "AutoencoderKL", "latent_channels": 4}),
    );
    fx::safetensors(
        &model.join("diffusion_pytorch_model.safetensors"),
        &[("decoder.conv_in.weight", &[8, 4, 3, 3])],
        None,
    );
    py_write(
        &model.join("notes.dat"),
        "pickle.dumps(type('X', (object,), {'__reduce__': lambda s: (__import__('os').system, ('true',))})(), protocol=2)",
    );
    let r = modelsync::probe::probe(&model).unwrap();
    let scan = r.pickle_scan.expect("the folder is scanned");
    assert_eq!(scan.verdict, ScanVerdict::Dangerous, "{scan:?}");
    assert!(
        scan.globals.iter().any(|g| g.file.ends_with("notes.dat")),
        "{scan:?}"
    );
}
