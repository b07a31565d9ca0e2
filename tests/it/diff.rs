//! `modelsync diff`: the table, the JSON plan, exit codes, sizes from the Hub, offline and
//! `--refresh`.

use crate::support::reconcile::{Work, assert_exit, body_requests, lora_bytes, lora_repo};
use crate::support::{stderr, stdout};

fn setup() -> Work {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/hub-lora", 1, 4));
    let local = w.local_lora("local.safetensors", 2);
    w.manifest(
        "",
        &format!(
            "  - name: hub-lora\n    source: owner/hub-lora::lora.safetensors\n\
             \x20 - name: local-lora\n    source: {}\n",
            local.display()
        ),
    );
    w
}

#[test]
fn diff_shows_the_plan_with_sizes_and_exit_codes() {
    let w = setup();
    let o = w.run(&["diff"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("+  hub-lora"), "{out}");
    assert!(out.contains("not installed"), "{out}");
    assert!(
        out.contains("Plan: 2 to install, 0 to update, 0 to repair, 0 to delete — "),
        "{out}"
    );
    assert!(out.contains(" free"), "{out}");
    // Sizes came from metadata: no file body was fetched, nothing was created.
    assert!(
        body_requests(&w.hub).is_empty(),
        "{:?}",
        body_requests(&w.hub)
    );
    assert!(!w.models().exists());
    assert_exit(&w.run(&["diff", "--exit-code"]), 2);

    let o = w.run(&["diff", "-o", "json"]);
    assert_exit(&o, 0);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let hub = &plan["actions"][0];
    assert_eq!(hub["action"], "install");
    assert_eq!(hub["name"], "hub-lora");
    assert_eq!(hub["fetch_bytes"], lora_bytes(1, 4).len());
    assert_eq!(plan["actions"][1]["fetch_bytes"], lora_bytes(2, 2).len());
    assert_eq!(plan["totals"]["install"], 2);
    assert_eq!(plan["totals"]["unknown_sizes"], 0);
    assert_eq!(plan["disk"]["fits"], true);
    assert!(plan["disk"]["free_bytes"].as_u64().unwrap() > 0);

    assert_exit(&w.run(&["apply"]), 0);
    let o = w.run(&["diff", "--exit-code"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("No changes: 2 model(s) in sync."));
}

#[test]
fn diff_works_offline_with_unknown_sizes() {
    let w = setup();
    let o = w
        .command(&["diff", "--exit-code"])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(
        stdout(&o).contains("(+ 1 of unknown size)"),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("offline"), "{}", stderr(&o));
    assert!(w.hub.requests().is_empty());

    // An unreachable Hub: the same, not an error.
    let o = w
        .command(&["diff", "--exit-code"])
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(stdout(&o).contains("unknown size"), "{}", stdout(&o));
}

#[test]
fn diff_refresh_sees_a_moved_revision() {
    let w = setup();
    assert_exit(&w.run(&["apply"]), 0);
    w.hub.clear_log();
    // Without --refresh nothing asks the Hub.
    assert_exit(&w.run(&["diff", "--exit-code"]), 0);
    assert!(w.hub.requests().is_empty());
    assert_exit(&w.run(&["diff", "--exit-code", "--refresh"]), 0);

    let old = w.hub.commit("owner/hub-lora", "main");
    w.hub.add_repo(lora_repo("owner/hub-lora", 8, 4));
    let new = w.hub.commit("owner/hub-lora", "main");
    let o = w.run(&["diff", "--exit-code", "--refresh"]);
    assert_exit(&o, 2);
    let out = stdout(&o);
    assert!(out.contains("↑  hub-lora"), "{out}");
    assert!(
        out.contains(&format!(
            "main moved upstream: {} → {}",
            &old[..7],
            &new[..7]
        )),
        "{out}"
    );
    assert!(out.contains("1 to upgrade"), "{out}");
    // The status report says the same.
    let o = w.run(&["status", "--refresh"]);
    assert_exit(&o, 2);
    assert!(stdout(&o).contains("hub-lora: upgrade"), "{}", stdout(&o));
}

#[test]
fn diff_of_a_bad_manifest_is_an_error_with_its_location() {
    let w = Work::new();
    std::fs::write(
        w.path().join("models.yaml"),
        "version: 1\nmodels:\n  - name: x\n    sorce: owner/x\n",
    )
    .unwrap();
    let o = w.run(&["diff", "--exit-code"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("models.yaml:4:5"), "{}", stderr(&o));
}

/// Broken entries are `✗` rows with their reason, counted in the totals (text and JSON), and
/// `diff --exit-code` says 1 (error), not 2 (pending); the entries that resolve still plan.
#[test]
fn diff_shows_broken_entries_as_error_rows_in_text_and_json() {
    let w = Work::new();
    w.hub.add_repo(lora_repo("owner/hub-lora", 1, 4));
    let missing_path = w.path().join("src/nowhere.safetensors");
    w.manifest(
        "",
        &format!(
            "  - name: good\n    source: owner/hub-lora::lora.safetensors\n\
             \x20 - name: no-repo\n    source: owner/not-there\n\
             \x20 - name: no-rev\n    source: owner/hub-lora::lora.safetensors\n    revision: v9\n\
             \x20 - name: no-file\n    source: owner/hub-lora::absent.safetensors\n\
             \x20 - name: no-path\n    source: {}\n\
             \x20 - name: no-var\n    source: owner/hub-lora::lora.safetensors\n    token: ${{MODELSYNC_TEST_UNSET_TOKEN}}\n",
            missing_path.display()
        ),
    );
    let o = w
        .command(&["diff", "--exit-code"])
        .env_remove("MODELSYNC_TEST_UNSET_TOKEN")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(out.contains("+  good "), "{out}");
    for (name, why) in [
        ("no-repo", "repository `owner/not-there` not found"),
        ("no-rev", "has no revision `v9`"),
        ("no-file", "no file `absent.safetensors`"),
        ("no-path", "nowhere.safetensors"),
        ("no-var", "MODELSYNC_TEST_UNSET_TOKEN` is not set"),
    ] {
        let row = out
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"));
        assert!(row.starts_with("✗"), "{row}");
        assert!(row.contains(why), "{name}: {row}");
    }
    assert!(out.contains("1 to install"), "{out}");
    assert!(out.contains("5 in error"), "{out}");
    // The unresolvable entries are errors, not warnings.
    assert!(!stderr(&o).contains("not found"), "{}", stderr(&o));

    // Without --exit-code diff only reports.
    assert_exit(
        &w.command(&["diff"])
            .env_remove("MODELSYNC_TEST_UNSET_TOKEN")
            .output()
            .unwrap(),
        0,
    );

    let o = w
        .command(&["diff", "--exit-code", "-o", "json"])
        .env_remove("MODELSYNC_TEST_UNSET_TOKEN")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let names: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["good", "no-repo", "no-rev", "no-file", "no-path", "no-var"],
        "manifest order"
    );
    assert_eq!(plan["actions"][0]["action"], "install");
    for a in &plan["actions"].as_array().unwrap()[1..] {
        assert_eq!(a["action"], "error", "{a}");
        assert!(!a["reason"].as_str().unwrap().is_empty(), "{a}");
    }
    assert!(
        plan["actions"][5]["reason"]
            .as_str()
            .unwrap()
            .contains("MODELSYNC_TEST_UNSET_TOKEN"),
        "{plan}"
    );
    assert_eq!(plan["totals"]["error"], 5);
    assert_eq!(plan["totals"]["install"], 1);
    assert_eq!(plan["totals"]["unknown_sizes"], 0);

    // apply installs what it can and fails only the broken entries.
    let o = w
        .command(&["apply"])
        .env_remove("MODELSYNC_TEST_UNSET_TOKEN")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(out.contains("5 failed"), "{out}");
    assert!(out.contains("✗ no-var"), "{out}");
    assert_eq!(w.store().all_models().unwrap().len(), 1);

    // The variable set: that entry resolves too, and the record of `good` stayed in sync.
    let o = w
        .command(&["diff", "-o", "json"])
        .env("MODELSYNC_TEST_UNSET_TOKEN", "hf_x")
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(plan["actions"][0]["action"], "unchanged", "{plan}");
    assert_eq!(plan["actions"][5]["action"], "install", "{plan}");
}
