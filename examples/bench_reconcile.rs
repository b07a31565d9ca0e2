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
//! 3. `watch` ready on N converged models (issue #17: 1,000 ≤ 3 s, 10,000 ≤ 30 s): N local
//!    LoRA files installed by `apply`, then `modelsync watch` started and timed until `/readyz`
//!    answers 200, with its CPU time; then a manifest edit that changes no entry (a resync of
//!    all of them) and the CPU time until `/status` shows every entry seen converged after it.
//!    Before that, the same N entries on a fresh folder: `watch` installs every one (each
//!    entry dispatched), timed the same way.
//!    An optional peer binary (the previous build) runs the same rounds, alternated, each
//!    bounded by `BENCH_WATCH_LIMIT` seconds (default 120); `BENCH_WATCH_ROUNDS` rounds
//!    (default 3 up to 1,000 models, else 1).
//!
//! Usage: `bench_reconcile <path to the modelsync binary>`, or
//! `bench_reconcile <binary> watch <N>… [--peer <binary>]`.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
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
        let me = Self {
            dir: local_loras(n),
            n,
        };
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

/// A manifest of `n` local LoRA files in a temp dir.
fn local_loras(n: u32) -> tempfile::TempDir {
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
    dir
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_mins(1))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((code, body.to_owned()));
    }
    let (mut rest, mut out) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    Some((code, out))
}

/// utime + stime of `pid`, in seconds (Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the `)`: state (field 3), ppid, …; utime and stime are fields 14 and 15.
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    ticks as f64 / 100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct WatchRound {
    ready: Option<Duration>,
    ready_cpu: f64,
    resync_cpu: Option<f64>,
}

/// Starts `bin watch` in `dir`, times `/readyz`, then one resync. `None`s: past `limit`.
fn watch_round(bin: &Path, dir: &Path, n: u32, limit: Duration, round: u32) -> WatchRound {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let t = Instant::now();
    let mut child = std::process::Command::new(bin)
        .args(["watch", "--interval", "1h", "--listen", &port.to_string()])
        .current_dir(dir)
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("watch starts");
    let pid = child.id();
    let mut out = WatchRound {
        ready: None,
        ready_cpu: 0.0,
        resync_cpu: None,
    };
    while t.elapsed() < limit {
        if http_get(port, "/readyz").is_some_and(|(c, _)| c == 200) {
            out.ready = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    out.ready_cpu = cpu_seconds(pid);
    if out.ready.is_some() {
        // An edit that changes no entry: every entry is looked at again.
        let m = dir.join("models.yaml");
        let text = std::fs::read_to_string(&m).expect("manifest");
        let mut body = String::new();
        for l in text.lines().filter(|l| !l.starts_with("# round")) {
            body.push_str(l);
            body.push('\n');
        }
        std::fs::write(&m, format!("# round {round}\n{body}")).expect("edit");
        let mark = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let before = cpu_seconds(pid);
        let t = Instant::now();
        while t.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(250));
            let Some((200, body)) = http_get(port, "/status") else {
                continue;
            };
            let Ok(st) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let entries = st["entries"].as_array().map_or(&[][..], Vec::as_slice);
            let done = entries.len() == n as usize
                && entries.iter().all(|e| {
                    e["state"] == "converged"
                        && e["last_success"]
                            .as_str()
                            .is_some_and(|s| s >= mark.as_str())
                });
            if done {
                out.resync_cpu = Some(cpu_seconds(pid) - before);
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    out
}

fn bench_watch(bin: &Path, peer: Option<&Path>, sizes: &[u32]) {
    let limit = Duration::from_secs(
        std::env::var("BENCH_WATCH_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    );
    let show = |r: &WatchRound| {
        let ready = r.ready.map_or_else(
            || format!("> {} s", limit.as_secs()),
            |d| format!("{:.2} s", d.as_secs_f64()),
        );
        let resync = r
            .resync_cpu
            .map_or_else(|| "—".to_owned(), |c| format!("{c:.2} s"));
        format!(
            "ready {ready} (CPU {:.2} s), resync CPU {resync}",
            r.ready_cpu
        )
    };
    for &n in sizes {
        // Every entry dispatched: watch installs the N models itself (its per-entry work must
        // follow the entry, not the store, or this grows as N squared).
        let fresh = local_loras(n);
        let ours = watch_round(bin, fresh.path(), n, limit, 0);
        println!(
            "watch {n}, installing every entry: ours {}; load average {}",
            show(&ours),
            load_average()
        );
        drop(fresh);
        if let Some(peer) = peer {
            let fresh = local_loras(n);
            let theirs = watch_round(peer, fresh.path(), n, limit, 0);
            println!("watch {n}, installing every entry: peer {}", show(&theirs));
        }
        let dir = local_loras(n);
        let t = Instant::now();
        let o = std::process::Command::new(bin)
            .args(["apply", "-q", "--no-progress"])
            .current_dir(dir.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .expect("modelsync runs");
        assert!(
            o.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        println!(
            "watch {n}: installed {n} local models in {:.1} s (setup); load average {}",
            t.elapsed().as_secs_f64(),
            load_average()
        );
        let rounds = std::env::var("BENCH_WATCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if n <= 1000 { 3 } else { 1 });
        for round in 0..rounds {
            let ours = watch_round(bin, dir.path(), n, limit, 2 * round);
            println!("  ours:     {}", show(&ours));
            if let Some(peer) = peer {
                let theirs = watch_round(peer, dir.path(), n, limit, 2 * round + 1);
                println!("  peer:     {}", show(&theirs));
            }
        }
        println!("  load average after: {}", load_average());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bin = args
        .first()
        .map_or_else(|| PathBuf::from("target/release/modelsync"), PathBuf::from);
    // The watch rounds run in temp dirs.
    let bin = std::fs::canonicalize(&bin).unwrap_or(bin);
    if args.get(1).map(String::as_str) == Some("watch") {
        let mut sizes = Vec::new();
        let mut peer = None;
        let mut rest = args[2..].iter();
        while let Some(a) = rest.next() {
            if a == "--peer" {
                peer = rest
                    .next()
                    .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p)));
            } else {
                sizes.push(a.parse().expect("a number of models"));
            }
        }
        bench_watch(&bin, peer.as_deref(), &sizes);
        return;
    }
    println!("machine: {}", machine());
    bench_plan(10_000);
    bench_noop_apply(&bin);
    println!("machine: {}", machine());
}
