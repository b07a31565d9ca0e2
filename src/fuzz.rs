//! Bounded-time fuzz loops, one per parser that reads untrusted input: the manifest, the
//! safetensors header, the pickle machine (and the scan's stream reader), GGUF headers,
//! source specs and units. Each mutates a few seeds with a xorshift generator and runs the
//! parser under `catch_unwind`; a panic, or an input that takes longer than
//! [`SLOW`], is a finding (printed as hex, then the test fails).
//!
//! The loops are `#[ignore]`d: `scripts/fuzz` runs them for `FUZZ_SECS` seconds each (CI: 20).
//! A short run of every target (`FUZZ_ITERS`, 200 by default) is part of `cargo test`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

/// An input slower than this is reported as a hang.
const SLOW: Duration = Duration::from_secs(5);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x80\x04\x95",
    b"(",
    b"\x93",
    b"\n",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"-1",
    b"18446744073709551615",
    b"${",
    b"\\x",
    b"\\u",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = u8::try_from(rng.next() & 0xff).unwrap_or(0);
            }
            1 => v.insert(at, u8::try_from(rng.next() & 0xff).unwrap_or(0)),
            2 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            3 => {
                let s = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(at..at, s.iter().copied());
            }
            4 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(32)).min(v.len());
                let chunk = v[start..end].to_vec();
                v.splice(at..at, chunk);
            }
            5 => v.truncate(at),
            _ => {
                if let Some(b) = v.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
    }
    v
}

/// Runs `target` on mutations of `seeds` for `FUZZ_SECS` seconds, or `FUZZ_ITERS` inputs.
fn fuzz(name: &str, seeds: &[Vec<u8>], target: impl Fn(&[u8])) {
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let iters = std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(200);
    let deadline = secs.map(|s| Instant::now() + Duration::from_secs(s));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let mut findings = Vec::new();
    let mut n = 0u64;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    loop {
        match deadline {
            Some(d) if Instant::now() >= d => break,
            None if n >= iters => break,
            _ => {}
        }
        let seed = &seeds[rng.below(seeds.len())];
        let input = if n < seeds.len() as u64 {
            seed.clone()
        } else {
            mutate(&mut rng, seed)
        };
        let started = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| target(&input)));
        if r.is_err() || started.elapsed() > SLOW {
            findings.push((r.is_err(), hex::encode(&input)));
            if findings.len() >= 5 {
                break;
            }
        }
        n += 1;
    }
    std::panic::set_hook(hook);
    for (panicked, h) in &findings {
        eprintln!(
            "{name}: {} on input {h}",
            if *panicked { "panic" } else { "hang" }
        );
    }
    eprintln!("{name}: {n} inputs");
    assert!(findings.is_empty(), "{name}: {} findings", findings.len());
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn manifest_seeds() -> Vec<Vec<u8>> {
    vec![
        b"version: 1\nsettings:\n  models_dir: models\n  cache: { ram: 8GiB, vram: 512MiB }\n  lock_timeout: 30s\nmodels:\n  - name: sd15\n    source: runwayml/stable-diffusion-v1-5\n    include: [\"*.safetensors\"]\n    token: ${HF_TOKEN}\n    config: { type: vae, base: sd-1 }\n    unsafe_pickle: allow\n  - name: x\n    source: https://example.com/a.safetensors?x=1\n    hash: blake3:00ff\n".to_vec(),
        b"version: 1\nmodels: []\n".to_vec(),
    ]
}

fn safetensors_seeds() -> Vec<Vec<u8>> {
    vec![
        br#"{"__metadata__":{"a":"b"},"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"v":{"dtype":"F4","shape":[4],"data_offsets":[12,14]}}"#.to_vec(),
        br#"{"a\u0041":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}}"#.to_vec(),
    ]
}

fn pickle_seeds() -> Vec<Vec<u8>> {
    let mut torch = vec![0x80, 2, b'}', b'q', 0, b'X', 1, 0, 0, 0, b'w'];
    torch.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nHalfStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtRs.");
    vec![
        torch,
        b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93h\x00h\x01\x86R.".to_vec(),
        b"(dp0\nS'a\\x41'\np1\nV\\u0041\np2\nsI01\nL5L\ng1\n(lp3\nF1.5\nacos\nsystem\n(tRb.".to_vec(),
        [crate::probe::pickle::LEGACY_MAGIC_PICKLE, b"\x80\x02]q\x00(K\x01\x8a\x02\xff\x7fe\x8f\x90\x91\x92."].concat(),
    ]
}

fn gguf_seed() -> Vec<u8> {
    let s = |out: &mut Vec<u8>, t: &str| {
        out.extend_from_slice(&(t.len() as u64).to_le_bytes());
        out.extend_from_slice(t.as_bytes());
    };
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes());
    out.extend_from_slice(&3u64.to_le_bytes());
    s(&mut out, "general.architecture");
    out.extend_from_slice(&8u32.to_le_bytes());
    s(&mut out, "flux");
    s(&mut out, "general.alignment");
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&32u32.to_le_bytes());
    s(&mut out, "tokens");
    out.extend_from_slice(&9u32.to_le_bytes());
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&2u64.to_le_bytes());
    s(&mut out, "a");
    s(&mut out, "b");
    s(&mut out, "img_in.weight");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&64u64.to_le_bytes());
    out.extend_from_slice(&2u64.to_le_bytes());
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    out.resize(out.len() + 4 * 34, 0);
    out
}

fn run_manifest(b: &[u8]) {
    let _ = crate::manifest::parse_str(&text(b), Path::new("/m/models.yaml"), &|v| {
        (v == "HF_TOKEN").then(|| "hf_x".to_owned())
    });
}

fn run_safetensors(b: &[u8]) {
    let p = Path::new("f.safetensors");
    for len in [0, 8 + b.len() as u64, 8 + b.len() as u64 + 14, u64::MAX] {
        let _ = crate::probe::safetensors::parse_header_json(p, b, len);
        // The fast scanner gives up or agrees with the validating parser (else: a finding).
        let (fast, slow) = crate::probe::safetensors::parse_both(b, len);
        assert!(fast.is_none_or(|f| f == slow));
    }
}

fn run_pickle(b: &[u8]) {
    let mut m = crate::probe::pickle::Machine::default();
    let mut c = crate::probe::pickle::Cursor::new(b);
    if let Ok(root) = m.run(&mut c) {
        let _ = m.tensors(root);
    }
    for (module, name) in &m.globals {
        let _ = crate::scan::classify(module, name);
    }
    // The scan's reader of zip members (a BufRead stream) and of files (a slice).
    let _ = crate::scan::scan_bytes_for_fuzz(b);
}

fn run_gguf(b: &[u8]) {
    let _ = crate::probe::gguf::read_header(Path::new("f.gguf"), b);
}

fn run_source(b: &[u8]) {
    let s = text(b);
    if let Ok(src) = crate::hub::ModelSource::parse(&s) {
        let _ = src.to_string();
    }
    let _ = crate::hub::ModelSource::parse_in(&s, Path::new("/base"));
}

fn run_units(b: &[u8]) {
    let s = text(b);
    let _ = crate::units::parse_size(&s);
    let _ = crate::units::parse_duration(&s);
}

fn unit_seeds() -> Vec<Vec<u8>> {
    [
        "8GiB",
        "512MiB",
        "1.5 GB",
        "30s",
        "1h30m",
        "250ms",
        "0",
        "18446744073709551615B",
        "2d",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn source_seeds() -> Vec<Vec<u8>> {
    [
        "runwayml/stable-diffusion-v1-5",
        "stabilityai/sdxl:vae@main",
        "https://civitai.com/api/download/models/1?token=${T}",
        "/abs/path/model.safetensors",
        "./rel/model.ckpt",
        "hf://org/repo/sub/file.safetensors",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

#[test]
#[ignore = "long-running fuzz loop; scripts/fuzz runs it"]
fn fuzz_manifest() {
    fuzz("manifest", &manifest_seeds(), run_manifest);
}

#[test]
#[ignore = "long-running fuzz loop; scripts/fuzz runs it"]
fn fuzz_safetensors_header() {
    fuzz("safetensors", &safetensors_seeds(), run_safetensors);
}

#[test]
#[ignore = "long-running fuzz loop; scripts/fuzz runs it"]
fn fuzz_pickle_scan() {
    fuzz("pickle", &pickle_seeds(), run_pickle);
}

#[test]
#[ignore = "long-running fuzz loop; scripts/fuzz runs it"]
fn fuzz_gguf() {
    fuzz("gguf", &[gguf_seed()], run_gguf);
}

#[test]
#[ignore = "long-running fuzz loop; scripts/fuzz runs it"]
fn fuzz_source_spec() {
    fuzz("source", &source_seeds(), run_source);
}

#[test]
#[ignore = "long-running fuzz loop; scripts/fuzz runs it"]
fn fuzz_units() {
    fuzz("units", &unit_seeds(), run_units);
}

/// A short run of every target, in the default test suite.
#[test]
fn fuzz_smoke() {
    fuzz("manifest", &manifest_seeds(), run_manifest);
    fuzz("safetensors", &safetensors_seeds(), run_safetensors);
    fuzz("pickle", &pickle_seeds(), run_pickle);
    fuzz("gguf", &[gguf_seed()], run_gguf);
    fuzz("source", &source_seeds(), run_source);
    fuzz("units", &unit_seeds(), run_units);
}
