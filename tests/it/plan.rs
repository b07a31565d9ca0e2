//! The pure plan against hand-built inventories, and its renderings.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use modelsync::config::Managed;
use modelsync::manifest::{LockEntry, LockFile, LockedFile, Manifest, parse_str};
use modelsync::reconcile::{
    ActionKind, DirState, FileState, FileStatus, Inventory, InventoryRecord, PlanError,
    PlanOptions, plan, render_text,
};
use modelsync::store::ModelFile;

const MODELS_DIR: &str = "/srv/models";
const COMMIT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const COMMIT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn manifest(body: &str) -> Manifest {
    parse_str(
        &format!("version: 1\nmodels:\n{body}"),
        Path::new("/proj/models.yaml"),
        &|_| None,
    )
    .unwrap()
}

fn standard() -> Manifest {
    manifest(
        "  - name: sd15\n    source: runwayml/stable-diffusion-v1-5\n    variant: fp16\n  - name: vae\n    source: owner/vae\n  - name: lora\n    source: /data/lora.safetensors\n    inplace: true\n",
    )
}

/// A managed record for `entry` carrying `spec` and intact files.
fn record(key: &str, m: &Manifest, entry: &str) -> InventoryRecord {
    let e = m.entry(entry).unwrap();
    InventoryRecord {
        key: key.into(),
        name: entry.into(),
        model_type: modelsync::taxonomy::ModelType::Lora,
        format: modelsync::taxonomy::ModelFormat::Lycoris,
        managed: Some(Managed {
            entry: entry.into(),
            spec_hash: e.spec_hash.to_string(),
        }),
        source: e.canonical_source(),
        source_type: e.source.source_type(),
        path: key.into(),
        resolved_path: Path::new(MODELS_DIR).join(key),
        in_models_dir: true,
        path_exists: true,
        hash: "blake3:00".into(),
        file_size: 300,
        files: vec![file("a.safetensors", 100), file("b.safetensors", 200)],
        fields: serde_json::json!({"name": entry, "tags": e.tags})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        source_tags: Vec::new(),
    }
}

fn file(rel: &str, size: u64) -> FileState {
    FileState {
        recorded: ModelFile {
            relative_path: rel.into(),
            size,
            mtime_ns: 1,
            sha256: None,
        },
        status: FileStatus::Ok,
    }
}

fn inventory(records: Vec<InventoryRecord>) -> Inventory {
    Inventory {
        models_dir: PathBuf::from(MODELS_DIR),
        models_dir_state: DirState::Present,
        records,
    }
}

fn installed(m: &Manifest) -> Vec<InventoryRecord> {
    let mut lora = record("k3", m, "lora");
    lora.path = "/data/lora.safetensors".into();
    lora.resolved_path = PathBuf::from("/data/lora.safetensors");
    lora.in_models_dir = false;
    lora.files = vec![file("", 50)];
    vec![record("k1", m, "sd15"), record("k2", m, "vae"), lora]
}

fn kinds(p: &modelsync::reconcile::Plan) -> Vec<(String, ActionKind)> {
    p.actions
        .iter()
        .map(|a| (a.name.clone(), a.kind()))
        .collect()
}

fn kind(k: &[(&str, ActionKind)]) -> Vec<(String, ActionKind)> {
    k.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect()
}

#[test]
fn fresh_machine_installs_everything_with_sizes_from_the_lock() {
    let m = standard();
    let mut lock = LockFile::new();
    lock.entries.insert(
        "sd15".into(),
        LockEntry {
            source: m.entry("sd15").unwrap().canonical_source(),
            files: vec![
                LockedFile {
                    path: "unet/x.safetensors".into(),
                    size: 3_000_000_000,
                    sha256: None,
                },
                LockedFile {
                    path: "vae/y.safetensors".into(),
                    size: 1_200_000_000,
                    sha256: None,
                },
            ],
            ..LockEntry::default()
        },
    );
    // A lock entry written for another source says nothing about this one.
    lock.entries.insert(
        "vae".into(),
        LockEntry {
            source: "owner/old-vae".into(),
            files: vec![LockedFile {
                path: "v.safetensors".into(),
                size: 7,
                sha256: None,
            }],
            ..LockEntry::default()
        },
    );
    let opts = PlanOptions {
        lock: Some(&lock),
        free_bytes: Some(61_000_000_000),
        ..PlanOptions::default()
    };
    let p = plan(&m, &Inventory::empty(MODELS_DIR), &opts).unwrap();
    assert_eq!(
        kinds(&p),
        kind(&[
            ("sd15", ActionKind::Install),
            ("vae", ActionKind::Install),
            ("lora", ActionKind::Install),
        ])
    );
    assert_eq!(p.actions[0].fetch_bytes, Some(4_200_000_000));
    assert_eq!(p.actions[1].fetch_bytes, None);
    assert_eq!(p.actions[2].fetch_bytes, Some(0), "inplace fetches nothing");
    assert_eq!(
        p.actions[0].spec_hash(),
        Some(m.models[0].spec_hash.to_string().as_str())
    );
    assert_eq!(p.totals.install, 3);
    assert_eq!(p.totals.fetch_bytes, 4_200_000_000);
    assert_eq!(p.totals.unknown_sizes, 1);
    assert!(p.fits() && p.has_changes());
    assert_eq!(
        render_text(&p, false),
        "\
+  sd15  runwayml/stable-diffusion-v1-5:fp16  not installed  4.2 GB
+  vae   owner/vae                            not installed       ?
+  lora  /data/lora.safetensors               not installed       -

Plan: 3 to install, 0 to update, 0 to repair, 0 to delete — 4.2 GB to fetch (+ 1 of unknown size), 61.0 GB free
"
    );
}

#[test]
fn converged_state_is_unchanged() {
    let m = standard();
    let p = plan(&m, &inventory(installed(&m)), &PlanOptions::default()).unwrap();
    assert!(p.actions.iter().all(|a| a.kind() == ActionKind::Unchanged));
    assert!(!p.has_changes());
    assert_eq!(p.totals.unchanged, 3);
    assert_eq!(p.actions[1].key(), Some("k2"));
    assert_eq!(render_text(&p, false), "No changes: 3 model(s) in sync.\n");
    let verbose = render_text(&p, true);
    assert!(
        verbose.starts_with("=  sd15  runwayml/stable-diffusion-v1-5:fp16  in sync"),
        "{verbose}"
    );
}

#[test]
fn record_level_change_updates_and_source_level_change_replaces() {
    let old = standard();
    let inv = inventory(installed(&old));
    let new = manifest(
        "  - name: sd15\n    source: runwayml/stable-diffusion-v1-5\n    variant: fp16\n    tags: [sfw]\n    description: SD 1.5\n  - name: vae\n    source: owner/vae\n    exclude: ['*.bin']\n  - name: lora\n    source: /data/lora-v2.safetensors\n    inplace: true\n",
    );
    let p = plan(
        &new,
        &inv,
        &PlanOptions {
            remote_sizes: BTreeMap::from([("vae".to_owned(), 334_000_000)]),
            ..PlanOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        kinds(&p),
        kind(&[
            ("sd15", ActionKind::Update),
            ("vae", ActionKind::Replace),
            ("lora", ActionKind::Replace),
        ])
    );
    assert_eq!(p.actions[0].fetch_bytes, Some(0));
    // The reason names only what changed: the name and config are as they were.
    assert_eq!(p.actions[0].reason, "description, tags changed");
    assert_eq!(p.actions[1].fetch_bytes, Some(334_000_000));
    assert!(
        p.actions[1].reason.starts_with("source options changed"),
        "{}",
        p.actions[1].reason
    );
    assert_eq!(
        p.actions[2].reason,
        "source changed: /data/lora.safetensors → /data/lora-v2.safetensors"
    );
    assert_eq!(p.actions[1].key(), Some("k2"));
    assert_eq!(p.totals.update, 1);
    assert_eq!(p.totals.replace, 2);
    // A variant change is a source change too.
    let fp32 = manifest(
        "  - name: sd15\n    source: runwayml/stable-diffusion-v1-5\n    variant: fp32\n  - name: vae\n    source: owner/vae\n  - name: lora\n    source: /data/lora.safetensors\n    inplace: true\n",
    );
    let p = plan(&fp32, &inv, &PlanOptions::default()).unwrap();
    assert_eq!(p.actions[0].kind(), ActionKind::Replace);
    assert_eq!(p.actions[0].fetch_bytes, None);
    assert!(
        p.actions[0]
            .reason
            .contains(":fp16 → runwayml/stable-diffusion-v1-5:fp32")
    );
}

#[test]
fn missing_or_changed_files_are_repaired_and_a_vanished_inplace_source_is_an_error() {
    let m = standard();
    let mut recs = installed(&m);
    recs[0].files[0].status = FileStatus::Missing;
    recs[1].files[1].status = FileStatus::Changed {
        size: 5,
        mtime_ns: 2,
    };
    recs[2].path_exists = false;
    recs[2].files[0].status = FileStatus::Missing;
    let p = plan(&m, &inventory(recs), &PlanOptions::default()).unwrap();
    assert_eq!(
        kinds(&p),
        kind(&[
            ("sd15", ActionKind::Repair),
            ("vae", ActionKind::Repair),
            ("lora", ActionKind::Error),
        ])
    );
    assert_eq!(p.actions[0].reason, "1 file missing");
    assert_eq!(p.actions[0].files(), ["a.safetensors"]);
    assert_eq!(p.actions[0].fetch_bytes, Some(100));
    assert_eq!(p.actions[1].reason, "1 file changed");
    assert_eq!(p.actions[1].fetch_bytes, Some(200));
    assert_eq!(
        p.actions[2].reason,
        "inplace source /data/lora.safetensors is gone: restore it or remove the entry"
    );
    assert!(p.has_errors());
    assert_eq!(p.totals.repair, 2);
    assert_eq!(p.totals.error, 1);
    assert_eq!(
        render_text(&p, false),
        "\
!  sd15  runwayml/stable-diffusion-v1-5:fp16  1 file missing                                                                 100 B
!  vae   owner/vae                            1 file changed                                                                 200 B
✗  lora  /data/lora.safetensors               inplace source /data/lora.safetensors is gone: restore it or remove the entry      -

Plan: 0 to install, 0 to update, 2 to repair, 0 to delete, 1 in error — 300 B to fetch
"
    );
}

#[test]
fn changed_inplace_files_are_rehashed_not_fetched() {
    let m = standard();
    let mut recs = installed(&m);
    recs[2].files[0].status = FileStatus::Changed {
        size: 51,
        mtime_ns: 9,
    };
    let p = plan(&m, &inventory(recs), &PlanOptions::default()).unwrap();
    let a = p.action("lora").unwrap();
    assert_eq!(a.kind(), ActionKind::Repair);
    assert_eq!(a.fetch_bytes, Some(0));
    assert_eq!(
        a.reason,
        "1 file changed (inplace: re-hash, nothing to fetch)"
    );
}

#[test]
fn refresh_upgrades_unpinned_revisions_that_moved() {
    let m = manifest(
        "  - name: moving\n    source: owner/moving\n  - name: pinned\n    source: owner/pinned\n    revision: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n  - name: still\n    source: owner/still\n    revision: v1\n  - name: nolock\n    source: owner/nolock\n",
    );
    let recs = vec![
        record("k1", &m, "moving"),
        record("k2", &m, "pinned"),
        record("k3", &m, "still"),
        record("k4", &m, "nolock"),
    ];
    let mut lock = LockFile::new();
    for e in &m.models {
        if e.name == "nolock" {
            continue;
        }
        lock.entries.insert(
            e.name.clone(),
            LockEntry {
                source: e.canonical_source(),
                resolved_commit: Some(COMMIT_A.into()),
                ..LockEntry::default()
            },
        );
    }
    let opts = PlanOptions {
        lock: Some(&lock),
        upstream_commits: ["moving", "pinned", "still", "nolock"]
            .iter()
            .map(|n| {
                let c = if *n == "still" { COMMIT_A } else { COMMIT_B };
                ((*n).to_owned(), c.to_owned())
            })
            .collect(),
        remote_sizes: BTreeMap::from([("moving".to_owned(), 1_500_000_000)]),
        ..PlanOptions::default()
    };
    let p = plan(&m, &inventory(recs), &opts).unwrap();
    assert_eq!(
        kinds(&p),
        kind(&[
            ("moving", ActionKind::Upgrade),
            ("pinned", ActionKind::Unchanged),
            ("still", ActionKind::Unchanged),
            ("nolock", ActionKind::Upgrade),
        ])
    );
    assert_eq!(
        p.actions[0].reason,
        "main moved upstream: aaaaaaa → bbbbbbb"
    );
    assert_eq!(p.actions[0].fetch_bytes, Some(1_500_000_000));
    assert_eq!(
        p.actions[3].reason,
        "main is at bbbbbbb upstream; the installed commit is unknown (no lock entry)"
    );
    assert_eq!(p.actions[3].fetch_bytes, None);
    assert!(render_text(&p, false).contains("2 to upgrade"));
}

#[test]
fn entries_that_left_are_orphaned_or_deleted_with_prune_and_unmanaged_are_listed() {
    let m = standard();
    let mut recs = installed(&m);
    let gone_manifest = manifest("  - name: old\n    source: owner/old\n");
    recs.push(record("k9", &gone_manifest, "old"));
    let mut imported = record("k8", &m, "vae");
    imported.managed = None;
    imported.name = "my-import".into();
    imported.source = "owner/imported".into();
    recs.push(imported);
    let inv = inventory(recs);

    let p = plan(&m, &inv, &PlanOptions::default()).unwrap();
    let old = p.action("old").unwrap();
    assert_eq!(old.kind(), ActionKind::Orphaned);
    assert_eq!(old.key(), Some("k9"));
    assert_eq!(
        old.reason,
        "entry `old` left the manifest; kept (apply --prune deletes it)"
    );
    assert!(
        !p.has_changes(),
        "orphaned records are reported, not changed"
    );
    assert_eq!(p.unmanaged.len(), 1);
    assert_eq!(p.unmanaged[0].key, "k8");
    assert_eq!(
        render_text(&p, false),
        "\
?  old  owner/old  entry `old` left the manifest; kept (apply --prune deletes it)  -

Unmanaged records (not in the manifest; never touched): 1
No changes: 3 model(s) in sync. 1 orphaned record(s) kept (apply --prune deletes them).
"
    );

    let p = plan(
        &m,
        &inv,
        &PlanOptions {
            prune: true,
            ..PlanOptions::default()
        },
    )
    .unwrap();
    assert_eq!(p.action("old").unwrap().kind(), ActionKind::Delete);
    assert_eq!(p.totals.delete, 1);
    // Prune never touches the unmanaged record.
    assert!(p.actions.iter().all(|a| a.key() != Some("k8")));
    assert_eq!(p.totals.unmanaged, 1);
}

#[test]
fn adopt_takes_over_an_intact_unmanaged_record_with_the_same_source() {
    let m = standard();
    let mut imported = record("k7", &m, "vae");
    imported.managed = None;
    let inv = inventory(vec![imported]);
    let p = plan(&m, &inv, &PlanOptions::default()).unwrap();
    let vae = p.action("vae").unwrap();
    assert_eq!(vae.kind(), ActionKind::Install);
    assert!(
        vae.reason.contains("--adopt takes it over"),
        "{}",
        vae.reason
    );
    assert_eq!(p.unmanaged.len(), 1);

    let p = plan(
        &m,
        &inv,
        &PlanOptions {
            adopt: true,
            ..PlanOptions::default()
        },
    )
    .unwrap();
    let vae = p.action("vae").unwrap();
    assert_eq!(vae.kind(), ActionKind::Adopt);
    assert_eq!(vae.key(), Some("k7"));
    assert_eq!(vae.fetch_bytes, Some(0));
    assert!(p.unmanaged.is_empty());
    assert!(render_text(&p, false).contains("1 to adopt"));
}

#[test]
fn an_unmounted_volume_plans_nothing() {
    let m = standard();
    for state in [DirState::Missing, DirState::Empty] {
        let mut recs = installed(&m);
        for r in &mut recs {
            r.path_exists = false;
            for f in &mut r.files {
                f.status = FileStatus::Missing;
            }
        }
        let inv = Inventory {
            models_dir_state: state,
            ..inventory(recs)
        };
        let e = plan(
            &m,
            &inv,
            &PlanOptions {
                prune: true,
                ..PlanOptions::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e,
            PlanError::VolumeNotMounted {
                models_dir: PathBuf::from(MODELS_DIR),
                missing: state == DirState::Missing,
                records: 2,
            }
        );
        assert!(e.to_string().contains("is the volume mounted?"), "{e}");
    }
    // Only inplace records outside models_dir: an empty models_dir is normal.
    let inv = Inventory {
        models_dir_state: DirState::Missing,
        ..inventory(vec![installed(&m).remove(2)])
    };
    let p = plan(&m, &inv, &PlanOptions::default()).unwrap();
    assert_eq!(p.action("lora").unwrap().kind(), ActionKind::Unchanged);
}

#[test]
fn only_limits_entries_and_deletions() {
    let m = standard();
    let mut recs = installed(&m);
    recs.remove(1);
    let gone = manifest("  - name: old\n    source: owner/old\n");
    recs.push(record("k9", &gone, "old"));
    let inv = inventory(recs);
    let p = plan(
        &m,
        &inv,
        &PlanOptions {
            only: vec!["vae".into()],
            prune: true,
            ..PlanOptions::default()
        },
    )
    .unwrap();
    assert_eq!(kinds(&p), kind(&[("vae", ActionKind::Install)]));
    let e = plan(
        &m,
        &inv,
        &PlanOptions {
            only: vec!["vae".into(), "nope".into()],
            ..PlanOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--only: no entry named `nope` in the manifest"
    );
}

#[test]
fn duplicate_records_of_one_entry_keep_the_best_and_the_spec_hash_must_be_readable() {
    let m = standard();
    let mut recs = installed(&m);
    let mut stale = record("k0", &m, "sd15");
    stale.managed.as_mut().unwrap().spec_hash = "garbage".into();
    recs.push(stale);
    let p = plan(&m, &inventory(recs), &PlanOptions::default()).unwrap();
    assert_eq!(p.action("sd15").unwrap().kind(), ActionKind::Unchanged);
    let extra = p.actions.last().unwrap();
    assert_eq!(extra.kind(), ActionKind::Orphaned);
    assert_eq!(extra.key(), Some("k0"));
    assert!(extra.reason.starts_with("another record of entry `sd15`"));

    let mut recs = installed(&m);
    recs[0].managed.as_mut().unwrap().spec_hash = "v0:whatever".into();
    let p = plan(&m, &inventory(recs), &PlanOptions::default()).unwrap();
    assert_eq!(p.actions[0].kind(), ActionKind::Replace);
}

#[test]
fn free_disk_check_counts_fetch_plus_staging() {
    let m = standard();
    let opts = |free| PlanOptions {
        remote_sizes: BTreeMap::from([
            ("sd15".to_owned(), 4_000_000_000),
            ("vae".to_owned(), 300_000_000),
        ]),
        free_bytes: Some(free),
        staging_bytes: 500_000_000,
        ..PlanOptions::default()
    };
    let p = plan(&m, &Inventory::empty(MODELS_DIR), &opts(4_800_000_000)).unwrap();
    assert!(p.fits());
    assert_eq!(p.disk.required_bytes, 4_800_000_000);
    let p = plan(&m, &Inventory::empty(MODELS_DIR), &opts(4_799_999_999)).unwrap();
    assert!(!p.fits());
    let text = render_text(&p, false);
    assert!(
        text.ends_with(
            "Plan: 3 to install, 0 to update, 0 to repair, 0 to delete — 4.3 GB to fetch, 4.8 GB free\nDoes not fit: 4.8 GB needed (fetch plus staging), 4.8 GB free.\n"
        ),
        "{text}"
    );
    // Nothing to fetch needs no staging either.
    let p = plan(&m, &inventory(installed(&m)), &opts(0)).unwrap();
    assert!(p.fits());
    assert_eq!(p.disk.required_bytes, 0);
}

#[test]
fn json_shape_is_as_documented() {
    let m = standard();
    let mut recs = installed(&m);
    recs[0].files[1].status = FileStatus::Missing;
    let p = plan(
        &m,
        &inventory(recs),
        &PlanOptions {
            free_bytes: Some(1000),
            ..PlanOptions::default()
        },
    )
    .unwrap();
    let v = serde_json::to_value(&p).unwrap();
    let a = &v["actions"][0];
    assert_eq!(a["action"], "repair");
    assert_eq!(a["name"], "sd15");
    assert_eq!(a["source"], "runwayml/stable-diffusion-v1-5:fp16");
    assert_eq!(a["key"], "k1");
    assert_eq!(a["fetch_bytes"], 200);
    assert_eq!(a["files"], serde_json::json!(["b.safetensors"]));
    assert!(a["spec_hash"].as_str().unwrap().starts_with("src:"));
    assert_eq!(v["totals"]["repair"], 1);
    assert_eq!(v["totals"]["unchanged"], 2);
    assert_eq!(
        v["disk"],
        serde_json::json!({"free_bytes": 1000, "required_bytes": 200, "fits": true})
    );
    assert_eq!(v["unmanaged"], serde_json::json!([]));
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["actions", "unmanaged", "unidentified", "totals", "disk"]
    );
    assert_eq!(v["unidentified"], serde_json::json!([]));
}

#[test]
fn plans_ten_thousand_entries() {
    // Correctness at scale (speed is measured by the bench script, not asserted here).
    let mut body = String::new();
    for i in 0..10_000 {
        writeln!(body, "  - name: m{i}\n    source: owner/model-{i}").unwrap();
    }
    let m = manifest(&body);
    let recs: Vec<InventoryRecord> = (0..10_000)
        .map(|i| record(&format!("k{i}"), &m, &format!("m{i}")))
        .collect();
    let p = plan(&m, &inventory(recs), &PlanOptions::default()).unwrap();
    assert_eq!(p.totals.unchanged, 10_000);
}

#[test]
fn action_kind_names_are_the_json_names() {
    use modelsync::reconcile::plan::ActionKind;
    for k in ActionKind::ALL {
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str(), "{k:?}");
    }
}

/// The JSON rows of every kind, byte for byte: the shape `diff -o json`, `status -o json`
/// and `apply -o json` print, whatever the types behind it.
#[test]
fn json_rows_are_pinned_byte_for_byte() {
    let m = standard();
    let mut recs = installed(&m);
    // sd15: no record (install); vae: a file missing (repair); lora: inplace source gone
    // (error with a key); a departed entry's record (orphaned, or delete with prune).
    recs.remove(0);
    recs[0].files[1].status = FileStatus::Missing;
    recs[1].path_exists = false;
    let gone_manifest = manifest("  - name: old\n    source: owner/old\n");
    recs.push(record("k9", &gone_manifest, "old"));
    let inv = inventory(recs);
    let p = plan(&m, &inv, &PlanOptions::default()).unwrap();
    let rows = serde_json::to_string(&p.actions).unwrap();
    let spec = |n: &str| m.entry(n).unwrap().spec_hash.to_string();
    let want = format!(
        concat!(
            r#"[{{"action":"install","name":"sd15","source":"runwayml/stable-diffusion-v1-5:fp16","key":null,"reason":"not installed","fetch_bytes":null,"files":[],"spec_hash":"{sd15}"}},"#,
            r#"{{"action":"repair","name":"vae","source":"owner/vae","key":"k2","reason":"1 file missing","fetch_bytes":200,"files":["b.safetensors"],"spec_hash":"{vae}"}},"#,
            r#"{{"action":"error","name":"lora","source":"/data/lora.safetensors","key":"k3","reason":"inplace source /data/lora.safetensors is gone: restore it or remove the entry","fetch_bytes":0,"files":[],"spec_hash":"{lora}"}},"#,
            r#"{{"action":"orphaned","name":"old","source":"owner/old","key":"k9","reason":"entry `old` left the manifest; kept (apply --prune deletes it)","fetch_bytes":0,"files":[],"spec_hash":null}}]"#
        ),
        sd15 = spec("sd15"),
        vae = spec("vae"),
        lora = spec("lora"),
    );
    assert_eq!(rows, want);
    let p = plan(
        &m,
        &inv,
        &PlanOptions {
            prune: true,
            unresolvable: BTreeMap::from([("vae".to_owned(), "no such repo".to_owned())]),
            ..PlanOptions::default()
        },
    )
    .unwrap();
    let rows = serde_json::to_string(&p.actions[1..]).unwrap();
    let want = format!(
        concat!(
            r#"[{{"action":"error","name":"vae","source":"owner/vae","key":"k2","reason":"no such repo","fetch_bytes":0,"files":[],"spec_hash":"{vae}"}},"#,
            r#"{{"action":"error","name":"lora","source":"/data/lora.safetensors","key":"k3","reason":"inplace source /data/lora.safetensors is gone: restore it or remove the entry","fetch_bytes":0,"files":[],"spec_hash":"{lora}"}},"#,
            r#"{{"action":"delete","name":"old","source":"owner/old","key":"k9","reason":"entry `old` left the manifest","fetch_bytes":0,"files":[],"spec_hash":null}}]"#
        ),
        vae = spec("vae"),
        lora = spec("lora"),
    );
    assert_eq!(rows, want);
}

/// What the caller found on this machine is not fetched: the bytes leave `fetch_bytes` and
/// the totals, the reason says from where, and a partial find says how many files.
#[test]
fn adoptable_bytes_are_not_fetched_and_the_reason_says_from_where() {
    let m = standard();
    let inv = inventory(Vec::new());
    let mut opts = PlanOptions {
        remote_sizes: BTreeMap::from([("sd15".into(), 3_000_000_000), ("vae".into(), 400)]),
        ..PlanOptions::default()
    };
    opts.adoptable.insert(
        "sd15".into(),
        modelsync::reconcile::Adoptable {
            bytes: 2_100_000_000,
            files: 2,
            of_files: 2,
            rest: Some(0),
            from: vec!["the HF cache".into()],
        },
    );
    opts.adoptable.insert(
        "vae".into(),
        modelsync::reconcile::Adoptable {
            bytes: 300,
            files: 1,
            of_files: 3,
            rest: None,
            from: vec!["/stash".into(), "the HF cache".into()],
        },
    );
    let p = plan(&m, &inv, &opts).unwrap();
    let sd = p.action("sd15").unwrap();
    assert_eq!(sd.kind(), ActionKind::Install);
    assert_eq!(sd.fetch_bytes, Some(0));
    assert_eq!(sd.adopt_bytes, 2_100_000_000);
    assert_eq!(
        sd.reason,
        "not installed; adopt from the HF cache (2.1 GB, no download)"
    );
    let vae = p.action("vae").unwrap();
    assert_eq!(vae.fetch_bytes, Some(100));
    assert_eq!(
        vae.reason,
        "not installed; adopt 1 of 3 files from /stash and elsewhere (300 B, no download)"
    );
    assert_eq!(p.totals.fetch_bytes, 100);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["actions"][0]["adopt_bytes"], 2_100_000_000u64);
    assert!(
        json["actions"][2].get("adopt_bytes").is_none(),
        "absent when 0"
    );
}
