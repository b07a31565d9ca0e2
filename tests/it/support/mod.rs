//! Helpers shared by the integration tests.

#![allow(dead_code, reason = "each area uses a different subset")]

pub mod fileserver;
pub mod hub_server;
pub mod probe_fixtures;
pub mod pyfix;
pub mod reconcile;
pub mod registry;
pub mod rofs;

use std::path::{Path, PathBuf};
use std::process::Output;

use modelsync::AnyModelConfig;
use serde_json::json;

/// An error and its causes on one line (`a: b: c`), to look for words anywhere in the chain.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An install job's error with its causes on one line (empty when it has none).
pub fn job_error(job: &modelsync::install::ModelInstallJob) -> String {
    let mut s = job.error.clone().unwrap_or_default();
    for c in &job.error_causes {
        s.push_str(": ");
        s.push_str(c);
    }
    s
}

/// A real safetensors file of exactly `n` bytes: one U8 tensor whose data comes from `fill`
/// (installs check every header against its file's size).
pub fn st_exact(n: usize, fill: impl Iterator<Item = u8>) -> Vec<u8> {
    let header =
        |m: usize| format!(r#"{{"w":{{"dtype":"U8","shape":[{m}],"data_offsets":[0,{m}]}}}}"#);
    let room = header(n).len();
    let m = n - 8 - room;
    let mut h = header(m);
    while h.len() < room {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend(fill.take(m));
    out
}

/// A fresh temporary folder, removed on drop.
pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temp dir")
}

/// A record from a JSON dict, panicking on invalid test data.
pub fn record(value: serde_json::Value) -> AnyModelConfig {
    AnyModelConfig::from_json(value).expect("valid test record")
}

/// A LoRA record with the given name and path.
pub fn lora(name: &str, path: &str) -> AnyModelConfig {
    record(json!({
        "name": name, "type": "lora", "format": "lycoris", "base": "sd-1",
        "path": path, "hash": format!("blake3:{name}"), "source": path,
    }))
}

/// A main checkpoint record.
pub fn main_ckpt(name: &str, base: &str, path: &str, tags: &[&str]) -> AnyModelConfig {
    record(json!({
        "name": name, "type": "main", "format": "checkpoint", "base": base,
        "path": path, "hash": format!("blake3:{name}"), "tags": tags,
        "source": "runwayml/stable-diffusion-v1-5", "source_type": "hf_repo_id",
    }))
}

/// Runs the real `modelsync` binary in `cwd` with `args`.
pub fn modelsync(cwd: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_modelsync"))
        .args(args)
        .current_dir(cwd)
        .env_remove("MODELSYNC_FILE")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("the modelsync binary runs")
}

/// Stdout of a finished command as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of a finished command as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The names of the entries of a folder, sorted.
pub fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

/// Waits until `probe` returns `Some`: state another process makes observable (a partial file,
/// an HTTP status, its exit), checked every 10 ms. `None` once `limit` has passed — a bound for
/// a hung process, never a timing assumption; the caller says what never happened.
pub fn wait_for<T>(limit: std::time::Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
