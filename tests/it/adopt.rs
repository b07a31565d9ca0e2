//! `modelsync adopt invokeai ROOT` and `init --from-store` (issue 14, item 4), against a real
//! InvokeAI 6.14.2 install made by InvokeAI's own code (`tests/fixtures/invokeai-6.14/`),
//! copied to a temp dir first (its database is in WAL mode), with the in-place LoRA's path
//! relocated in the copy's database as the fixture's README says.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::reconcile::assert_exit;
use crate::support::{modelsync, stdout, tmp};

const DEAD: &str = "65385054-dee9-533d-9f81-07f8fda1125c";
const INPLACE: &str = "316cad1f-d170-53b9-becf-b5d37739e5f3";
const PREFIX: &str = "/tmp/invokeai-fixture-inplace";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invokeai-6.14")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A copy of the install: `<dir>/root` and `<dir>/inplace`, the in-place path relocated.
struct Install {
    dir: tempfile::TempDir,
}

impl Install {
    fn new() -> Self {
        let dir = tmp();
        copy_tree(&fixture().join("root"), &dir.path().join("root"));
        copy_tree(&fixture().join("inplace"), &dir.path().join("inplace"));
        let db = dir.path().join("root/databases/invokeai.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let to = dir.path().join("inplace");
        let n = conn
            .execute(
                "UPDATE models SET config = replace(config, ?1, ?2) WHERE id = ?3",
                rusqlite::params![PREFIX, to.to_str().unwrap(), INPLACE],
            )
            .unwrap();
        assert_eq!(n, 1);
        drop(conn);
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    fn store_path(&self) -> PathBuf {
        self.path().join("ms/store.db")
    }

    /// Runs modelsync with `--models-dir models_dir --database ms/store.db` and `args`.
    fn run(&self, models_dir: &Path, args: &[&str]) -> std::process::Output {
        let db = self.store_path();
        let mut all = vec![
            "--models-dir",
            models_dir.to_str().unwrap(),
            "--database",
            db.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        modelsync(self.path(), &all)
    }

    fn adopt(&self, models_dir: &Path, yes: bool) -> Value {
        let root = self.root();
        let mut args = vec!["-o", "json", "adopt", "invokeai", root.to_str().unwrap()];
        if yes {
            args.push("--yes");
        }
        let o = self.run(models_dir, &args);
        assert_exit(&o, 0);
        serde_json::from_str(&stdout(&o)).unwrap()
    }

    fn records(&self) -> Vec<Value> {
        let store = modelsync::store::open(&self.store_path()).unwrap();
        store
            .all_models()
            .unwrap()
            .iter()
            .map(modelsync::AnyModelConfig::to_json)
            .collect()
    }
}

/// InvokeAI's own view of the records, the in-place path relocated.
fn invokeai_records(install: &Install) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture().join("records.json")).unwrap();
    let to = install.path().join("inplace");
    let text = text.replace(PREFIX, to.to_str().unwrap());
    serde_json::from_str(&text).unwrap()
}

fn phrases(v: &Value) -> BTreeSet<String> {
    v["trigger_phrases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect()
}

fn state_of<'a>(report: &'a Value, key: &str) -> &'a str {
    report["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == key)
        .unwrap_or_else(|| panic!("{key} not in the report: {report}"))["state"]
        .as_str()
        .unwrap()
}

#[test]
fn an_invokeai_install_is_adopted_record_for_record() {
    let install = Install::new();
    let models = install.root().join("models");
    let expected = invokeai_records(&install);
    assert_eq!(expected.len(), 12);

    // Dry run: everything listed, nothing written.
    let dry = install.adopt(&models, false);
    assert_eq!(dry["applied"], false);
    assert_eq!(dry["totals"]["import"], 11, "{dry}");
    assert_eq!(dry["totals"]["missing"], 1, "{dry}");
    assert_eq!(state_of(&dry, DEAD), "missing");
    assert!(!install.store_path().exists());

    let done = install.adopt(&models, true);
    assert_eq!(done["totals"]["imported"], 11, "{done}");
    assert_eq!(state_of(&done, DEAD), "missing");
    let records = install.records();
    assert_eq!(records.len(), 11);
    for want in &expected {
        let key = want["key"].as_str().unwrap();
        let got = records.iter().find(|r| r["key"] == key);
        if key == DEAD {
            assert!(got.is_none(), "the dead record was imported");
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("{key} ({}) not adopted", want["name"]));
        for field in [
            "key",
            "type",
            "base",
            "format",
            "name",
            "path",
            "hash",
            "description",
        ] {
            assert_eq!(
                got.get(field).unwrap_or(&Value::Null),
                want.get(field).unwrap_or(&Value::Null),
                "{key}: field {field}"
            );
        }
        assert_eq!(
            got.get("variant").filter(|v| !v.is_null()),
            want.get("variant").filter(|v| !v.is_null()),
            "{key}: variant"
        );
        assert_eq!(phrases(got), phrases(want), "{key}: trigger_phrases");
    }
    let inplace = records.iter().find(|r| r["key"] == INPLACE).unwrap();
    let relocated = install
        .path()
        .join("inplace/loras/inplace-sd15-lokr.safetensors");
    assert_eq!(inplace["path"], relocated.to_str().unwrap());
    assert!(!phrases(inplace).is_empty());
    // Nothing moved or was copied.
    assert!(relocated.is_file());
    assert!(
        models
            .join("e2ef507d-1131-5914-b35a-7979c3281880/model_index.json")
            .is_file()
    );

    // Adopting again changes nothing.
    let again = install.adopt(&models, true);
    assert_eq!(again["totals"]["imported"], 0, "{again}");
    assert_eq!(again["totals"]["present"], 11, "{again}");
    assert_eq!(again["totals"]["conflicts"], 0, "{again}");
    assert_eq!(install.records(), records);

    // The store's fingerprints match the files: status sees no drift in them.
    let o = install.run(&models, &["sync"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("In sync"), "{}", stdout(&o));
}

#[test]
fn models_outside_models_dir_stay_where_they_are_with_absolute_paths() {
    let install = Install::new();
    let elsewhere = install.path().join("modelsync-models");
    let done = install.adopt(&elsewhere, true);
    assert_eq!(done["totals"]["imported"], 11, "{done}");
    let invoke_models = std::fs::canonicalize(install.root().join("models")).unwrap();
    for r in install.records() {
        let p = PathBuf::from(r["path"].as_str().unwrap());
        assert!(p.is_absolute(), "{p:?}");
        assert!(p.exists(), "{p:?}");
        if r["key"] != INPLACE {
            assert!(p.starts_with(&invoke_models), "{p:?}");
        }
    }
    assert!(!elsewhere.join(INPLACE).exists());
}

#[test]
fn init_from_store_declares_the_adopted_install_and_applying_it_changes_nothing() {
    let install = Install::new();
    let models = install.root().join("models");
    install.adopt(&models, true);
    let manifest = install.path().join("ms/models.yaml");
    let m = manifest.to_str().unwrap();
    let o = install.run(&models, &["-f", m, "init", "--from-store"]);
    assert_exit(&o, 0);
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("inplace: true"), "{text}");
    assert!(
        text.contains("config: { type: \"lora\", base: \"sd-1\" }"),
        "{text}"
    );
    let before = install.records();
    assert!(
        before.iter().all(|r| r["managed"]["entry"].is_string()),
        "every record is managed"
    );

    // The manifest alone (its own settings) describes the install.
    let o = modelsync(install.path(), &["-f", m, "diff", "--exit-code"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("No changes: 11 model(s) in sync."),
        "{}",
        stdout(&o)
    );
    let o = modelsync(install.path(), &["-f", m, "apply"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("No changes"), "{}", stdout(&o));
    assert_eq!(install.records(), before, "apply changed a record");
    let o = modelsync(install.path(), &["-f", m, "status", "-o", "json"]);
    let status: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(status["drift"], Value::Array(vec![]), "{status}");
    assert_eq!(status["in_sync"], 11);
}

#[test]
fn a_path_the_store_already_records_under_another_key_is_a_conflict() {
    let install = Install::new();
    let models = install.root().join("models");
    // `sync` registers InvokeAI's files first: the same paths under new keys.
    let o = install.run(&models, &["-o", "json", "sync", "--yes"]);
    assert_exit(&o, 0);
    let synced: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(synced["totals"]["registered"], 10, "{synced}");
    let before = install.records();

    let root = install.root();
    let o = install.run(
        &models,
        &[
            "-o",
            "json",
            "adopt",
            "invokeai",
            root.to_str().unwrap(),
            "--yes",
        ],
    );
    assert_exit(&o, 1);
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["totals"]["conflicts"], 10, "{r}");
    assert_eq!(r["totals"]["imported"], 1, "{r}");
    assert_eq!(state_of(&r, INPLACE), "imported");
    assert_eq!(state_of(&r, DEAD), "missing");
    let lora = "62b1b24f-2f6e-55c7-acb2-5910a30b4164";
    assert_eq!(state_of(&r, lora), "conflict");
    // The records `sync` made are untouched.
    let after = install.records();
    for b in &before {
        assert!(after.contains(b), "{b} changed");
    }
}
