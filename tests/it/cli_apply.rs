//! What `modelsync apply` says and does as a user sees it: Ctrl-C half-way, and the texts of
//! its messages. The real binary against the Hub emulator; every wait is on an output line or
//! a file, bounded only so that a failing test ends.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::hub_server::FakeRepo;
use crate::support::reconcile::{Work, assert_exit, lora_bytes};
use crate::support::stdout;

/// Bound for every wait; only a failing test reaches it.
const LIMIT: Duration = Duration::from_mins(1);

fn files_named(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill failed");
}

/// Spawns `apply` with its stdout lines sent to the returned channel as they come.
fn spawn_apply(w: &Work, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut all = vec!["apply"];
    all.extend_from_slice(args);
    let mut child = w
        .command(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("modelsync apply starts");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    crate::support::wait_for(LIMIT, || child.try_wait().expect("try_wait")).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("modelsync apply did not exit")
    })
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read as _;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

#[test]
fn ctrl_c_mid_download_keeps_the_partial_says_what_finished_exits_130_and_the_rerun_resumes() {
    let w = Work::new();
    // ~6 MB through the CDN at ~640 kB/s: it is still running when the local entry is done.
    let big = lora_bytes(7, 2000);
    w.hub.add_repo(
        FakeRepo::new("owner/big")
            .file("README.md", "# big\n")
            .file("lora.safetensors", big.clone()),
    );
    w.hub.set_cdn_throttle(16 << 10, Duration::from_millis(25));
    let local = w.local_lora("small.safetensors", 3);
    w.manifest(
        "",
        &format!(
            "  - name: big\n    source: owner/big::lora.safetensors\n\
             \x20 - name: small\n    source: {}\n",
            local.display()
        ),
    );
    let (mut child, lines) = spawn_apply(&w, &[]);

    // Wait for the local entry's line and for the download to have written into its `.part`.
    let tmp = w.models().join(".tmp");
    let mut seen = Vec::new();
    let got_going = crate::support::wait_for(LIMIT, || {
        seen.extend(lines.try_iter());
        let small_done = seen.iter().any(|l| l.contains("small: installed"));
        let part_started = files_named(&tmp, ".part")
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
        if small_done && part_started {
            Some(true)
        } else {
            // An apply that ended early will never get there.
            child.try_wait().ok().flatten().map(|_| false)
        }
    });
    if got_going != Some(true) {
        let _ = child.kill();
        panic!(
            "the download never got going: {seen:?} {}",
            stderr_of(&mut child)
        );
    }
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    seen.extend(lines.iter());
    let out = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{out}\n{err}");
    assert!(
        out.contains(
            "Interrupted: 1 finished (small), 1 interrupted (big); partial downloads are kept and the next `modelsync apply` resumes them."
        ),
        "{out}"
    );
    // The interruption is said once, not as a failure of `big`.
    assert!(!out.contains("✗"), "{out}");
    assert!(!out.contains("Apply incomplete"), "{out}");
    assert!(
        err.contains("interrupting: stopping the downloads"),
        "{err}"
    );

    // The partial is kept; what finished is recorded and locked, the rest is not.
    let parts = files_named(&tmp, ".part");
    assert_eq!(parts.len(), 1, "{parts:?}");
    let kept = std::fs::metadata(&parts[0]).expect("part").len();
    assert!(kept > 0 && kept < big.len() as u64, "{kept}");
    let records = w.store().all_models().expect("records");
    let names: Vec<&str> = records.iter().map(|r| r.common().name.as_str()).collect();
    assert_eq!(names, ["small"]);
    let lock = w.lock();
    assert!(lock.entries.contains_key("small"));
    assert!(!lock.entries.contains_key("big"));

    // The next apply resumes the download with a Range request past 0 and finishes.
    w.hub.clear_log();
    w.hub.set_cdn_throttle(1 << 20, Duration::ZERO);
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("big: installed"), "{}", stdout(&o));
    let resumed = w.hub.cdn_requests().iter().any(|r| {
        r.header("range")
            .is_some_and(|v| v.starts_with("bytes=") && !v.starts_with("bytes=0-"))
    });
    assert!(resumed, "{:?}", w.hub.cdn_requests());
    assert!(files_named(&tmp, ".part").is_empty());
    let store = w.store();
    let rec = store
        .all_models()
        .expect("records")
        .into_iter()
        .find(|r| r.common().name == "big")
        .expect("big's record");
    assert_eq!(
        std::fs::read(rec.resolved_path(&w.models())).expect("file"),
        big
    );
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir").flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

fn relative_files(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = files_named(root, "")
        .iter()
        .map(|p| {
            p.strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn include_and_exclude_select_the_files_of_a_local_folder() {
    let w = Work::new();
    // The shipped tiny diffusers pipeline, plus files the entry leaves out.
    let src = w.path().join("src/tiny");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/weights/tiny-sd15"),
        &src,
    );
    std::fs::write(
        src.join("unet/diffusion_pytorch_model.bin"),
        vec![7u8; 5000],
    )
    .unwrap();
    std::fs::write(src.join("README.md"), "# notes\n").unwrap();
    std::fs::create_dir_all(src.join("samples")).unwrap();
    std::fs::write(src.join("samples/cat.png"), vec![1u8; 3000]).unwrap();
    w.manifest(
        "",
        "  - name: tiny\n    source: ./src/tiny\n    include: [\"*.json\", \"*.safetensors\", \"samples/*\"]\n    exclude: [\"*.bin\", \"samples/**\"]\n",
    );
    let wanted: Vec<String> = relative_files(&src)
        .into_iter()
        .filter(|f| {
            let ext = Path::new(f).extension().and_then(|e| e.to_str());
            matches!(ext, Some("json" | "safetensors")) && !f.starts_with("samples")
        })
        .collect();
    assert_eq!(wanted.len(), 9, "{wanted:?}");
    let wanted_bytes: u64 = wanted
        .iter()
        .map(|f| std::fs::metadata(src.join(f)).unwrap().len())
        .sum();

    // `diff` counts only the selected files.
    let o = w.run(&["diff", "-o", "json"]);
    assert_exit(&o, 0);
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("plan JSON");
    assert_eq!(plan["actions"][0]["fetch_bytes"], wanted_bytes, "{plan}");

    // `apply` copies only them, and the record is still a diffusers pipeline.
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    let store = w.store();
    let recs = store.all_models().expect("records");
    assert_eq!(recs.len(), 1);
    let installed = recs[0].resolved_path(&w.models());
    assert_eq!(relative_files(&installed), wanted);
    let rec = serde_json::to_value(&recs[0]).expect("record JSON");
    assert_eq!(rec["format"], "diffusers", "{rec}");
    // Converged: the left-out files are no drift.
    assert_exit(&w.run(&["diff", "--exit-code"]), 0);
    assert_exit(&w.run(&["status"]), 0);
    // A repair brings back what is missing, and still not what the globs leave out.
    std::fs::remove_file(installed.join("unet/config.json")).unwrap();
    let o = w.run(&["apply"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("tiny: repaired"), "{}", stdout(&o));
    assert_eq!(relative_files(&installed), wanted);

    // A selection that leaves nothing is that entry's error, saying which globs.
    w.manifest(
        "",
        "  - name: none\n    source: ./src/tiny\n    include: [\"*.gguf\"]\n",
    );
    let o = w.run(&["apply"]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains("no file of") && out.contains("is left after include [*.gguf]"),
        "{out}"
    );

    // With `inplace: true` there is no copy to select from: refused where it is written.
    w.manifest(
        "",
        "  - name: tiny\n    source: ./src/tiny\n    inplace: true\n    exclude: [\"*.bin\"]\n",
    );
    let o = w.run(&["diff"]);
    assert_exit(&o, 1);
    let err = crate::support::stderr(&o);
    assert!(
        err.contains("models.yaml:8:")
            && err.contains("`exclude` cannot be combined with `inplace: true`"),
        "{err}"
    );
}

/// A pickle that runs `os.system` on load, written by CPython's own `pickle`.
fn evil_pickle(path: &Path) {
    let script = format!(
        "import os, pickle\nclass E:\n    def __reduce__(self):\n        return (os.system, ('true',))\nopen({:?}, 'wb').write(pickle.dumps({{'state_dict': E()}}, protocol=2))\n",
        path.display().to_string()
    );
    let o = std::process::Command::new(crate::support::pyfix::python())
        .args(["-c", &script])
        .output()
        .expect("python runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn tiny_pipeline() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/weights/tiny-sd15");
    relative_files(&root)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(root.join(&f)).expect("read");
            (f, bytes)
        })
        .collect()
}

#[test]
fn failures_name_the_source_paths_and_the_pickle_hint_names_the_manifest_key() {
    let w = Work::new();
    let local = w.path().join("src/evil.ckpt");
    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
    evil_pickle(&local);
    let bytes = std::fs::read(&local).unwrap();
    w.hub
        .add_repo(FakeRepo::new("owner/evil").file("model.ckpt", bytes.clone()));
    w.manifest(
        "",
        &format!(
            "  - name: local-evil\n    source: {}\n    config: {{ type: main, base: sd-1 }}\n\
             \x20 - name: hub-evil\n    source: owner/evil::model.ckpt\n    config: {{ type: main, base: sd-1 }}\n",
            local.display()
        ),
    );
    let o = w.run(&["apply"]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    // Never the staging folder: the user's file, the repo's file.
    assert!(
        !out.contains("models/.tmp/") && !out.contains("/files/"),
        "{out}"
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("✗")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    let local_line = lines.iter().find(|l| l.contains("local-evil")).unwrap();
    assert!(
        local_line.contains(&format!("{}: refusing a dangerous pickle", local.display())),
        "{local_line}"
    );
    let hub_line = lines.iter().find(|l| l.contains("hub-evil")).unwrap();
    assert!(
        hub_line.contains("owner/evil::model.ckpt: refusing a dangerous pickle"),
        "{hub_line}"
    );
    for l in lines {
        assert!(
            l.ends_with(
                "set `unsafe_pickle: allow` on its manifest entry (`--config unsafe_pickle=allow` for `import`) to install it anyway"
            ),
            "{l}"
        );
        assert!(l.contains("posix.system"), "{l}");
    }
    // The key the hint names is the one the manifest takes.
    w.manifest(
        "",
        &format!(
            "  - name: local-evil\n    source: {}\n    config: {{ type: main, base: sd-1 }}\n    unsafe_pickle: allow\n",
            local.display()
        ),
    );
    assert_exit(&w.run(&["apply"]), 0);
}

#[test]
fn imported_folders_are_named_after_the_folder_the_repo_or_the_subfolder() {
    let w = Work::new();
    let files = tiny_pipeline();
    w.hub.add_repo(
        FakeRepo::new("owner/tiny-pipe").files(files.iter().map(|(p, b)| (p.as_str(), b.clone()))),
    );
    let nested: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, b)| (format!("pipes/sd-tiny/{p}"), b.clone()))
        .collect();
    w.hub.add_repo(
        FakeRepo::new("owner/bundle")
            .file("README.md", "# bundle\n")
            .files(nested.iter().map(|(p, b)| (p.as_str(), b.clone()))),
    );
    let src = w.path().join("src/my-pipeline");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/weights/tiny-sd15"),
        &src,
    );
    let name_of = |source: &str| -> (String, String) {
        let o = w.run(&["import", source, "-o", "json"]);
        assert_exit(&o, 0);
        let rec: serde_json::Value = serde_json::from_slice(&o.stdout).expect("record JSON");
        (
            rec["name"].as_str().unwrap_or_default().to_owned(),
            rec["description"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let (name, description) = name_of(src.to_str().unwrap());
    assert_eq!(name, "my-pipeline");
    assert!(!description.contains("files"), "{description}");
    assert_eq!(name_of("owner/tiny-pipe").0, "tiny-pipe");
    assert_eq!(name_of("owner/bundle::pipes/sd-tiny").0, "sd-tiny");
    // A file keeps its stem.
    let lora = w.local_lora("detail-v2.safetensors", 4);
    assert_eq!(name_of(lora.to_str().unwrap()).0, "detail-v2");
}

#[test]
fn a_failure_is_told_once_and_the_summary_names_it() {
    let w = Work::new();
    let local = w.local_lora("good.safetensors", 5);
    w.manifest(
        "",
        &format!(
            "  - name: good\n    source: {}\n\
             \x20 - name: gone\n    source: {}\n",
            local.display(),
            w.path().join("src/gone.safetensors").display()
        ),
    );
    for quiet in [false, true] {
        let args: &[&str] = if quiet { &["apply", "-q"] } else { &["apply"] };
        let o = w.run(args);
        assert_exit(&o, 1);
        let all = format!("{}{}", stdout(&o), crate::support::stderr(&o));
        assert_eq!(all.matches("gone.safetensors").count(), 1, "{all}");
        if !quiet {
            assert!(
                stdout(&o)
                    .contains("Apply incomplete: 1 failed, 1 change(s) done.\n  ✗ gone (error)\n"),
                "{all}"
            );
        }
    }
}
