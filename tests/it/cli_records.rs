//! `list`, `show`, `remove` through the real binary (stdout is what is checked).

use std::path::Path;

use modelsync::store::{self, RecordStore};
use serde_json::{Value, json};

use crate::support::{lora, main_ckpt, modelsync, record, stderr, stdout, tmp};

const K_SD15: &str = "aaaa1111bbbb2222cccc3333dddd4444";
const K_XL: &str = "aaaa9999bbbb2222cccc3333dddd4444";
const K_LORA: &str = "bbbb1111bbbb2222cccc3333dddd4444";

/// A models folder with a store of three records (one LoRA file really on disk).
fn setup(dir: &Path, db: &str) -> Box<dyn RecordStore> {
    std::fs::create_dir_all(dir.join("models/loras")).unwrap();
    std::fs::write(dir.join("models/loras/detail.safetensors"), b"weights").unwrap();
    let s = store::open(&dir.join("models").join(db)).unwrap();
    s.add_model(
        K_SD15,
        main_ckpt("sd15", "sd-1", "sd15/model.safetensors", &["sfw", "photo"]),
    )
    .unwrap();
    s.add_model(
        K_XL,
        main_ckpt(
            "juggernaut-xl",
            "sdxl",
            "/opt/models/jug.safetensors",
            &["sfw"],
        ),
    )
    .unwrap();
    s.add_model(K_LORA, lora("detail", "loras/detail.safetensors"))
        .unwrap();
    s
}

fn json_out(dir: &Path, args: &[&str]) -> Value {
    let o = modelsync(dir, args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&o)))
}

#[test]
fn list_text_is_an_aligned_table() {
    let d = tmp();
    drop(setup(d.path(), "modelsync.db"));
    let o = modelsync(d.path(), &["list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("KEY       NAME           TYPE  BASE  FORMAT      PATH"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(
            "bbbb1111  detail         lora  sd-1  lycoris     loras/detail.safetensors"
        ),
        "{text}"
    );
    assert!(
        lines[2].starts_with(
            "aaaa9999  juggernaut-xl  main  sdxl  checkpoint  /opt/models/jug.safetensors"
        ),
        "{text}"
    );
    assert!(
        lines[3]
            .starts_with("aaaa1111  sd15           main  sd-1  checkpoint  sd15/model.safetensors"),
        "{text}"
    );
    // Every column starts at the same offset on every line.
    let col = |l: &str| {
        l.find("PATH")
            .or_else(|| l.find("loras/"))
            .or_else(|| l.find("/opt"))
            .or_else(|| l.find("sd15/"))
    };
    assert!(lines.iter().all(|l| col(l) == col(lines[0])), "{text}");
}

#[test]
fn list_filters_and_json() {
    let d = tmp();
    drop(setup(d.path(), "modelsync.db"));
    let all = json_out(d.path(), &["list", "-o", "json"]);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["detail", "juggernaut-xl", "sd15"]);
    assert_eq!(all[2]["key"], K_SD15);
    assert_eq!(all[2]["type"], "main");
    assert_eq!(all[2]["tags"], json!(["sfw", "photo"]));

    let names_of = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["-o", "json", "list"];
        a.extend_from_slice(args);
        json_out(d.path(), &a)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names_of(&["--type", "main"]), ["juggernaut-xl", "sd15"]);
    assert_eq!(names_of(&["--type", "main", "--base", "sd-1"]), ["sd15"]);
    assert_eq!(names_of(&["--format", "lycoris"]), ["detail"]);
    assert_eq!(names_of(&["--name", "sd15"]), ["sd15"]);
    assert_eq!(names_of(&["--tag", "sfw"]), ["juggernaut-xl", "sd15"]);
    assert_eq!(names_of(&["--tag", "sfw", "--tag", "photo"]), ["sd15"]);
    assert_eq!(
        names_of(&["--tag", "sfw", "--base", "sdxl"]),
        ["juggernaut-xl"]
    );
    assert!(names_of(&["--base", "flux"]).is_empty());

    // Text output with no match says so on stderr and prints nothing.
    let o = modelsync(d.path(), &["list", "--base", "flux"]);
    assert!(o.status.success());
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("no matching models"), "{}", stderr(&o));
}

#[test]
fn unknown_filter_values_list_the_valid_ones() {
    let d = tmp();
    drop(setup(d.path(), "modelsync.db"));
    let o = modelsync(d.path(), &["list", "--type", "checkpoint"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("--type")
            && e.contains("`checkpoint`")
            && e.contains("main")
            && e.contains("t5_encoder"),
        "{e}"
    );
    let o = modelsync(d.path(), &["list", "--base", "sd-9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("sdxl-refiner"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

#[test]
fn list_on_a_yaml_store_and_a_missing_store() {
    let d = tmp();
    drop(setup(d.path(), "records.yaml"));
    let all = json_out(
        d.path(),
        &["list", "--database", "models/records.yaml", "-o", "json"],
    );
    assert_eq!(all.as_array().unwrap().len(), 3);

    // A query does not create a store.
    let o = modelsync(
        d.path(),
        &["list", "--database", "nowhere/x.db", "-o", "json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout).unwrap(),
        json!([])
    );
    assert!(!d.path().join("nowhere").exists());

    // A wrong-kind store is an error naming the file.
    std::fs::write(d.path().join("bad.db"), "not: sqlite\n").unwrap();
    let o = modelsync(d.path(), &["list", "--database", "bad.db"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.db") && stderr(&o).contains("not an SQLite database"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn show_by_key_name_and_prefix() {
    let d = tmp();
    drop(setup(d.path(), "modelsync.db"));
    for q in [K_SD15, "sd15", "aaaa1111"] {
        let r = json_out(d.path(), &["show", q, "-o", "json"]);
        assert_eq!(r["key"], K_SD15, "{q}");
        assert_eq!(r["path"], "sd15/model.safetensors");
        assert_eq!(r["format"], "checkpoint");
    }
    let o = modelsync(d.path(), &["show", "detail"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("key:") && text.contains(K_LORA), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("type:") && l.ends_with(" lora")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("resolved_path:")
                && l.ends_with("models/loras/detail.safetensors")),
        "{text}"
    );

    // Ambiguous prefix and unknown names are errors.
    let o = modelsync(d.path(), &["show", "aaaa"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("2 models have keys starting with `aaaa`"),
        "{}",
        stderr(&o)
    );
    let o = modelsync(d.path(), &["show", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no model with key or name `nope`"),
        "{}",
        stderr(&o)
    );
    let o = modelsync(d.path(), &["-o", "json", "show", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&o.stderr).unwrap();
    assert!(err["error"].as_str().unwrap().contains("nope"));
}

#[test]
fn show_ambiguous_name_lists_keys() {
    let d = tmp();
    let s = setup(d.path(), "modelsync.db");
    s.add_model("cccc", record(json!({"name": "sd15", "type": "vae", "format": "checkpoint", "base": "sd-1", "path": "vae.safetensors"}))).unwrap();
    drop(s);
    let o = modelsync(d.path(), &["show", "sd15"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("2 models are named `sd15`") && e.contains(K_SD15) && e.contains("cccc"),
        "{e}"
    );
}

#[test]
fn remove_record_and_files() {
    let d = tmp();
    drop(setup(d.path(), "modelsync.db"));
    let file = d.path().join("models/loras/detail.safetensors");

    // Record only: the file stays.
    let o = modelsync(d.path(), &["remove", K_SD15]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("removed sd15 ({K_SD15})\n"));

    // With --delete-files inside models_dir: both go; a folder the model shares stays.
    std::fs::write(d.path().join("models/loras/other.safetensors"), b"other").unwrap();
    let r = json_out(
        d.path(),
        &["remove", "bbbb1111", "--delete-files", "-o", "json"],
    );
    assert_eq!(r["removed"]["key"], K_LORA);
    assert!(
        r["deleted_path"]
            .as_str()
            .unwrap()
            .ends_with("loras/detail.safetensors")
    );
    assert!(!file.exists());
    assert!(
        d.path().join("models/loras/other.safetensors").is_file(),
        "only the model's own path is deleted"
    );

    let left = json_out(d.path(), &["list", "-o", "json"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    let o = modelsync(d.path(), &["remove", K_SD15]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(K_SD15), "{}", stderr(&o));
    // `remove` finds a record as `show` does: by key, name or unique key prefix.
    let o = modelsync(d.path(), &["remove", "juggernaut-xl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("removed juggernaut-xl ("),
        "{}",
        stdout(&o)
    );
    let left = json_out(d.path(), &["list", "-o", "json"]);
    assert_eq!(left.as_array().unwrap().len(), 0);
    let o = modelsync(d.path(), &["remove", "juggernaut-xl"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no model with key or name `juggernaut-xl`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn remove_refuses_to_delete_outside_models_dir() {
    let d = tmp();
    let outside = d.path().join("elsewhere/keep.safetensors");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    std::fs::write(&outside, b"precious").unwrap();
    let s = setup(d.path(), "modelsync.db");
    let abs = outside.to_str().unwrap();
    s.add_model("eeee1111", lora("outside", abs)).unwrap();
    s.add_model("eeee2222", lora("escape", "../elsewhere/keep.safetensors"))
        .unwrap();
    drop(s);

    for key in ["eeee1111", "eeee2222"] {
        let o = modelsync(d.path(), &["remove", key, "--delete-files"]);
        assert_eq!(o.status.code(), Some(1), "{key}");
        let e = stderr(&o);
        assert!(
            e.contains("refusing to delete") && e.contains("not inside the models folder"),
            "{e}"
        );
        assert!(outside.exists());
    }
    let left = json_out(d.path(), &["list", "-o", "json"]);
    assert_eq!(
        left.as_array().unwrap().len(),
        5,
        "refused removals keep the record"
    );

    // Without --delete-files the record goes and the file stays.
    let o = modelsync(d.path(), &["remove", "eeee1111"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(outside.exists());
}

#[test]
fn global_options_after_the_subcommand() {
    let d = tmp();
    drop(setup(d.path(), "modelsync.db"));
    let a = json_out(
        d.path(),
        &["--database", "models/modelsync.db", "-o", "json", "list"],
    );
    let b = json_out(
        d.path(),
        &["list", "--database", "models/modelsync.db", "-o", "json"],
    );
    assert_eq!(a, b);
    let o = modelsync(d.path(), &["--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("list") && stdout(&o).contains("--database"));
}

#[test]
fn shipped_example_store_lists_and_stays_unchanged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("examples/store/models.yaml");
    let before = std::fs::read(&example).unwrap();
    let o = modelsync(root, &["list", "--database", "examples/store/models.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(
        text.contains("sdxl-vae-fp16-fix") && text.contains("loras/add_detail.safetensors"),
        "{text}"
    );
    assert_eq!(std::fs::read(&example).unwrap(), before);
    assert!(
        !root.join("examples/store/models.yaml.write-lock").exists(),
        "a query takes no write lock"
    );
}

#[test]
fn remove_waits_for_the_store_lock_and_names_the_holder() {
    use std::io::BufRead;
    let d = tmp();
    drop(setup(d.path(), "modelsync.db"));
    let db = d.path().join("models/modelsync.db");
    let held =
        modelsync::store::lock::StoreLock::acquire(&db, std::time::Duration::ZERO, |_| {}).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_modelsync"))
        .args(["remove", K_SD15])
        .current_dir(d.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.contains("waiting for the store lock on models/modelsync.db (up to 5m) to remove a record: held by pid")
            && first.contains(&std::process::id().to_string()),
        "{first}"
    );
    // Still waiting: the record is there.
    assert!(store::open(&db).unwrap().exists(K_SD15).unwrap());
    drop(held);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), format!("removed sd15 ({K_SD15})\n"));
}

/// A store path whose extension names no store kind is refused by every command alike,
/// before anything is created (no lock file, no store), with the reason said once.
#[test]
fn an_unknown_store_extension_is_refused_by_every_command() {
    let d = tmp();
    std::fs::write(
        d.path().join("models.yaml"),
        "version: 1\nsettings:\n  models_dir: models\nmodels: []\n",
    )
    .unwrap();
    let commands: [&[&str]; 9] = [
        &["list"],
        &["show", "x"],
        &["remove", "x"],
        &["status"],
        &["diff"],
        &["verify"],
        &["gc"],
        &["apply"],
        &["gc", "--yes"],
    ];
    for c in commands {
        let mut args = vec!["--database", "store.txt", "-f", "models.yaml"];
        args.extend_from_slice(c);
        let o = modelsync(d.path(), &args);
        assert_eq!(o.status.code(), Some(1), "{c:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.matches("unknown store kind").count(), 1, "{c:?}: {err}");
        assert!(err.contains("store.txt"), "{c:?}: {err}");
    }
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["models.yaml"]);
}
