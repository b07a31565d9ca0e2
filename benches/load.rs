//! Load throughput and cache-hit latency. Run through `scripts/bench-load`; under `cargo test`
//! (which runs bench targets without `--bench`) it exits at once.
//!
//! Throughput: a 1 GiB safetensors file, already in the page cache (dropping caches needs root,
//! so both sides read warm), loaded through a fresh `ModelLoadService` and every byte of every
//! tensor summed — against `cat FILE > /dev/null` in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelsync::AnyModelConfig;
use modelsync::load::{BackendKind, DeviceSpec, LoadSettings, ModelLoadService, Precision};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

const GIB: u64 = 1 << 30;

fn settings() -> LoadSettings {
    LoadSettings {
        ram: 4 * GIB,
        vram: 0,
        device: DeviceSpec::Cpu,
        precision: Precision::Auto,
        backend: BackendKind::Host,
        ..LoadSettings::default()
    }
}

/// 1 GiB in 64 tensors of 16 MiB, bytes varying so the sum means something.
fn write_model(path: &Path) {
    let chunk: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    let names: Vec<String> = (0..64).map(|i| format!("layer.{i:02}.weight")).collect();
    let views: Vec<(String, TensorView<'_>)> = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, vec![4096, 1024], &chunk).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("write model");
}

fn sum_bytes(data: &[u8]) -> u64 {
    // Eight lanes of u64 words per 64-byte line, which the compiler vectorises: bandwidth-bound,
    // like a real consumer reading weights.
    let mut lines = data.chunks_exact(64);
    let mut acc = [0u64; 8];
    for line in &mut lines {
        for (a, w) in acc.iter_mut().zip(line.chunks_exact(8)) {
            *a = a.wrapping_add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
    }
    acc.iter().fold(0u64, |a, b| a.wrapping_add(*b))
        + lines.remainder().iter().map(|b| u64::from(*b)).sum::<u64>()
}

fn cat(path: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new("cat")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run cat");
    assert!(status.success());
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test` runs bench targets too; this one is only for scripts/bench-load.
    }
    let dir = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let tmp = tempfile::tempdir_in(&dir).expect("temp dir");
    let path = tmp.path().join("model.safetensors");
    write_model(&path);
    let size = std::fs::metadata(&path).expect("stat").len();
    let cfg = AnyModelConfig::from_json(serde_json::json!({
        "key": "bench", "name": "bench", "type": "lora", "format": "lycoris", "base": "sd-1",
        "path": path.to_str().expect("utf-8 path")
    }))
    .expect("record");

    // Warm the page cache for both contenders.
    cat(&path);
    cat(&path);

    let rounds = 5;
    let mut cat_times = Vec::new();
    let mut load_times = Vec::new();
    let mut load_only = Vec::new();
    let mut checksum = 0u64;
    for _ in 0..rounds {
        cat_times.push(cat(&path));
        let svc = ModelLoadService::new(tmp.path(), &settings()).expect("service");
        let start = Instant::now();
        let loaded = svc.load_model(&cfg, None).expect("load");
        load_only.push(start.elapsed());
        let sd = loaded.model().state_dict().expect("state dict");
        let mut sum = 0u64;
        for t in sd.iter() {
            sum = sum.wrapping_add(sum_bytes(t.data));
        }
        load_times.push(start.elapsed());
        checksum = std::hint::black_box(sum);
    }
    let gib = size as f64 / GIB as f64;
    let (c, l, lo) = (median(cat_times), median(load_times), median(load_only));
    println!("file: {size} bytes ({gib:.2} GiB), warm page cache, median of {rounds} rounds");
    println!(
        "cat > /dev/null:          {:>8.1} ms  {:>6.2} GiB/s",
        c.as_secs_f64() * 1e3,
        gib / c.as_secs_f64()
    );
    println!(
        "load (mmap+populate):     {:>8.1} ms  {:>6.2} GiB/s",
        lo.as_secs_f64() * 1e3,
        gib / lo.as_secs_f64()
    );
    println!(
        "load + sum every byte:    {:>8.1} ms  {:>6.2} GiB/s  ({:.2}x of cat; checksum {checksum:x})",
        l.as_secs_f64() * 1e3,
        gib / l.as_secs_f64(),
        c.as_secs_f64() / l.as_secs_f64()
    );

    // Cache hits: the full service path (record → key → cache → LoadedModel) and the bare cache.
    let svc = ModelLoadService::new(tmp.path(), &settings()).expect("service");
    svc.load_model(&cfg, None).expect("load");
    let n = 200_000u32;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(svc.load_model(&cfg, None).expect("hit"));
    }
    let per_hit = start.elapsed() / n;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(svc.cache().get("bench"));
    }
    let per_get = start.elapsed() / n;
    let loaded = svc.load_model(&cfg, None).expect("hit");
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(loaded.lock().expect("lock"));
    }
    let per_lock = start.elapsed() / n;
    println!(
        "cache hit, load_model:    {:>8.3} µs",
        per_hit.as_secs_f64() * 1e6
    );
    println!(
        "cache hit, cache.get:     {:>8.3} µs",
        per_get.as_secs_f64() * 1e6
    );
    println!(
        "lock + unlock (on device): {:>7.3} µs",
        per_lock.as_secs_f64() * 1e6
    );
    let _ = Arc::strong_count(loaded.model());
}
