//! The reconciler benchmark (run by `scripts/bench-reconcile`, never by `cargo test`):
//!
//! 1. `plan` for a 10,000-entry manifest against 10,000 installed records (goal ≤ 100 ms);
//!    the manifest parse is timed separately.
//! 2. A no-op `modelsync apply` over 1,000 installed models (goal ≤ 0.3 s wall, 0 file-body
//!    requests) and over 10,000 (goal ≤ 10× the 1,000 figure, same run, interleaved): the
//!    release binary is run against manifests of local LoRA files it installed first. Local
//!    sources make no HTTP requests at all; the Hub path's zero requests on a converged state
//!    is asserted by the integration tests (`tests/it/apply.rs`).
//!
//! Usage: `bench_reconcile <path to the modelsync binary>`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use modelsync::reconcile::{
    DirState, FileState, FileStatus, Inventory, InventoryRecord, PlanOptions, plan,
};
use modelsync::store::ModelFile;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench_plan(n: usize) {
    let mut text = String::from("version: 1\nsettings:\n  models_dir: /srv/models\nmodels:\n");
    for i in 0..n {
        let _ = write!(
            text,
            "  - name: m{i:05}\n    source: owner/repo-{i:05}:fp16\n    tags: [t{}]\n",
            i % 7
        );
    }
    let path = Path::new("/bench/models.yaml");
    let t = Instant::now();
    let m = modelsync::manifest::parse_str(&text, path, &|_| None).expect("manifest parses");
    let parse = t.elapsed();

    let records: Vec<InventoryRecord> = m
        .models
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let key = format!("{i:032x}");
            InventoryRecord {
                key: key.clone(),
                name: e.name.clone(),
                model_type: modelsync::taxonomy::ModelType::Lora,
                format: modelsync::taxonomy::ModelFormat::Lycoris,
                managed: Some(modelsync::config::Managed {
                    entry: e.name.clone(),
                    spec_hash: e.spec_hash.to_string(),
                }),
                source: e.canonical_source(),
                source_type: modelsync::config::ModelSourceType::HfRepoId,
                path: key.clone(),
                resolved_path: PathBuf::from("/srv/models").join(&key),
                in_models_dir: true,
                path_exists: true,
                hash: "blake3:00".into(),
                file_size: 3000,
                files: (0..3)
                    .map(|f| FileState {
                        recorded: ModelFile {
                            relative_path: format!("f{f}.safetensors"),
                            size: 1000,
                            mtime_ns: 1,
                            sha256: None,
                        },
                        status: FileStatus::Ok,
                    })
                    .collect(),
                fields: serde_json::Map::new(),
                source_tags: Vec::new(),
            }
        })
        .collect();
    let inv = Inventory {
        models_dir: PathBuf::from("/srv/models"),
        models_dir_state: DirState::Present,
        records,
    };
    let opts = PlanOptions::default();
    let mut times = Vec::new();
    let mut unchanged = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let p = plan(&m, &inv, &opts).expect("plans");
        times.push(t.elapsed());
        unchanged = p.totals.unchanged;
    }
    assert_eq!(unchanged, n, "every entry is in sync");
    println!(
        "plan: {n} entries x {n} records: median {:.1} ms of 7 (goal <= 100 ms); manifest parse {:.1} ms",
        median(times).as_secs_f64() * 1e3,
        parse.as_secs_f64() * 1e3
    );
}

fn lora(seed: u32) -> Vec<u8> {
    let k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    let header = format!(
        concat!(
            "{{\"__metadata__\":{{\"ss_base_model_version\":\"sd_v1\"}},",
            "\"{k}.lora_down.weight\":{{\"dtype\":\"F16\",\"shape\":[1,768],\"data_offsets\":[0,1536]}},",
            "\"{k}.lora_up.weight\":{{\"dtype\":\"F16\",\"shape\":[320,1],\"data_offsets\":[1536,2176]}}}}"
        ),
        k = k
    );
    let mut h = header.into_bytes();
    while !(h.len() + 8).is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(7);
    for _ in 0..2176 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.push((x >> 16) as u8 & 0x3f);
    }
    out
}

/// A folder with `n` local LoRA entries, installed by a first apply.
struct Installed {
    dir: tempfile::TempDir,
    n: u32,
}

impl Installed {
    fn new(bin: &Path, n: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        let mut text = String::from("version: 1\nsettings:\n  models_dir: models\nmodels:\n");
        for i in 0..n {
            let p = src.join(format!("lora-{i:05}.safetensors"));
            std::fs::write(&p, lora(i)).expect("write lora");
            let _ = write!(
                text,
                "  - name: lora-{i:05}\n    source: {}\n    config: {{ type: lora, base: sd-1 }}\n",
                p.display()
            );
        }
        std::fs::write(dir.path().join("models.yaml"), text).expect("write manifest");
        let me = Self { dir, n };
        let first = me.apply(bin);
        println!(
            "apply: installed {n} local models in {:.2} s (setup)",
            first.as_secs_f64()
        );
        me
    }

    fn apply(&self, bin: &Path) -> Duration {
        let t = Instant::now();
        let o = std::process::Command::new(bin)
            .args(["apply", "-q", "--no-progress"])
            .current_dir(self.dir.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .expect("modelsync runs");
        assert!(
            o.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        t.elapsed()
    }
}

/// No-op applies over 1,000 and 10,000 installed models, interleaved (so both see the same
/// load), 5 rounds: the 1k median (goal <= 0.3 s) and the ratio of the medians (goal <= 10).
fn bench_noop_apply(bin: &Path) {
    let small = Installed::new(bin, 1_000);
    let large = Installed::new(bin, 10_000);
    let (mut ts, mut tl) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        ts.push(small.apply(bin));
        tl.push(large.apply(bin));
    }
    let (ms, ml) = (median(ts), median(tl));
    for (set, m) in [(&small, ms), (&large, ml)] {
        println!(
            "no-op apply over {} installed models: median {:.3} s of 5, 0 HTTP requests (local sources, HF_HUB_OFFLINE=1)",
            set.n,
            m.as_secs_f64()
        );
    }
    println!(
        "no-op apply 10k / 1k: {:.2}x (goal <= 10x; 1k goal <= 0.3 s)",
        ml.as_secs_f64() / ms.as_secs_f64()
    );
}

/// The machine, for the numbers table: cores and load average.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cores} cores, load average {}", load.join(" "))
}

fn main() {
    let bin = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/release/modelsync"), PathBuf::from);
    println!("machine: {}", machine());
    bench_plan(10_000);
    bench_noop_apply(&bin);
    println!("machine: {}", machine());
}
