//! Fixtures from the real producers: `write_fixtures.py` run by a venv python that holds the
//! `safetensors` package (safetensors files via its numpy API) and CPython's `pickle` (torch
//! zip and legacy saves, protocols 1–5).
//!
//! The venv is `scripts/setup-pyenv`'s (`~/.cache/modelsync/pyenv`, or `MODELSYNC_PYENV`).
//! The first use in a test process runs that script under a file lock, so a plain `cargo
//! test` on a fresh machine creates the venv once (pip from PyPI) and parallel test binaries
//! wait for it instead of racing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

/// How a fixture file is written.
#[derive(Debug, Clone)]
pub enum Kind {
    /// `safetensors.numpy.save_file`, with optional `__metadata__`.
    Safetensors(Option<Value>),
    /// `torch.save` zip layout; the state dict nested under `wrap` keys.
    TorchZip { protocol: u8, wrap: Vec<String> },
    /// [`Kind::TorchZip`] with storage `0` broken: `deflate`d, `short` by a byte, or `missing`.
    TorchZipMangled {
        protocol: u8,
        wrap: Vec<String>,
        mangle: &'static str,
    },
    /// `torch.save(..., _use_new_zipfile_serialization=False)`.
    TorchLegacy { protocol: u8, wrap: Vec<String> },
}

/// One file: where, how, and its tensors `(name, shape, dtype)` in state-dict order.
#[derive(Debug, Clone)]
pub struct Spec {
    pub path: PathBuf,
    pub kind: Kind,
    pub tensors: Vec<(String, Vec<u64>, &'static str)>,
}

impl Spec {
    pub fn safetensors(path: PathBuf, tensors: Vec<(String, Vec<u64>)>) -> Self {
        Self {
            path,
            kind: Kind::Safetensors(None),
            tensors: f16(tensors),
        }
    }

    pub fn torch_zip(path: PathBuf, tensors: Vec<(String, Vec<u64>)>) -> Self {
        Self {
            path,
            kind: Kind::TorchZip {
                protocol: 2,
                wrap: Vec::new(),
            },
            tensors: f16(tensors),
        }
    }

    /// Safetensors `__metadata__`.
    pub fn metadata(mut self, m: Value) -> Self {
        self.kind = Kind::Safetensors(Some(m));
        self
    }

    /// Breaks a torch zip's storage `0` (see [`Kind::TorchZipMangled`]).
    pub fn mangle(mut self, mangle: &'static str) -> Self {
        if let Kind::TorchZip { protocol, wrap } = &self.kind {
            self.kind = Kind::TorchZipMangled {
                protocol: *protocol,
                wrap: wrap.clone(),
                mangle,
            };
        }
        self
    }

    /// `dtype` for every tensor (`F32` …; F16 by default).
    pub fn dtype(mut self, dtype: &'static str) -> Self {
        for t in &mut self.tensors {
            t.2 = dtype;
        }
        self
    }

    /// Nests a pickled state dict under `keys` (`params_ema` …).
    pub fn wrap(mut self, keys: &[&str]) -> Self {
        if let Kind::TorchZip { wrap, .. } | Kind::TorchLegacy { wrap, .. } = &mut self.kind {
            *wrap = keys.iter().map(|k| (*k).to_owned()).collect();
        }
        self
    }

    fn to_json(&self) -> Value {
        let tensors: Vec<Value> = self
            .tensors
            .iter()
            .map(|(n, s, d)| json!([n, s, d]))
            .collect();
        let mut v = json!({"path": self.path, "tensors": tensors});
        let o = v.as_object_mut().unwrap();
        match &self.kind {
            Kind::Safetensors(m) => {
                o.insert("kind".into(), json!("safetensors"));
                o.insert("metadata".into(), m.clone().unwrap_or(Value::Null));
            }
            Kind::TorchZip { protocol, wrap } => {
                o.insert("kind".into(), json!("torch_zip"));
                o.insert("protocol".into(), json!(protocol));
                o.insert("wrap".into(), json!(wrap));
            }
            Kind::TorchZipMangled {
                protocol,
                wrap,
                mangle,
            } => {
                o.insert("kind".into(), json!("torch_zip"));
                o.insert("protocol".into(), json!(protocol));
                o.insert("wrap".into(), json!(wrap));
                o.insert("mangle".into(), json!(mangle));
            }
            Kind::TorchLegacy { protocol, wrap } => {
                o.insert("kind".into(), json!("torch_legacy"));
                o.insert("protocol".into(), json!(protocol));
                o.insert("wrap".into(), json!(wrap));
            }
        }
        v
    }
}

fn f16(tensors: Vec<(String, Vec<u64>)>) -> Vec<(String, Vec<u64>, &'static str)> {
    tensors.into_iter().map(|(n, s)| (n, s, "F16")).collect()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("MODELSYNC_PYENV") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"),
        PathBuf::from,
    );
    cache.join("modelsync").join("pyenv")
}

/// The venv's python, created by `scripts/setup-pyenv` on first use (under a file lock).
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let dir = env_dir();
        std::fs::create_dir_all(dir.parent().expect("venv has a parent")).unwrap();
        let lock_path = dir.with_extension("lock");
        let lock = std::fs::File::create(&lock_path)
            .unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
        lock.lock().expect("lock the pyenv");
        let out = Command::new(repo_root().join("scripts/setup-pyenv"))
            .env("MODELSYNC_PYENV", &dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/setup-pyenv");
        drop(lock);
        assert!(
            out.status.success(),
            "scripts/setup-pyenv failed ({}); it needs python3 with venv and pip, and PyPI",
            out.status
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// Writes every spec with one python process.
pub fn write(specs: &[Spec]) {
    let doc = Value::Array(specs.iter().map(Spec::to_json).collect());
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/it/support/write_fixtures.py"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run write_fixtures.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "write_fixtures.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
