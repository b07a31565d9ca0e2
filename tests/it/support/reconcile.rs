//! Helpers of the reconciler tests (apply, diff, status, faults): a work folder with a
//! manifest, the Hub emulator, and the real binary run against both.

#![allow(dead_code, reason = "each reconciler test module uses a part")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::hub_server::{FakeRepo, HubServer};

/// A real safetensors file: a kohya LoRA for SD 1.x whose tensor data is derived from `seed`,
/// so two seeds give two different files that probe the same way. `rank` scales its size
/// (about 3 KB per unit).
pub fn lora_bytes(seed: u8, rank: u64) -> Vec<u8> {
    let k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    let tensors: Vec<(String, Vec<u64>)> = vec![
        (format!("{k}.alpha"), vec![]),
        (format!("{k}.lora_down.weight"), vec![rank, 768]),
        (format!("{k}.lora_up.weight"), vec![320, rank]),
    ];
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora"}),
    );
    let mut offset = 0u64;
    for (name, shape) in &tensors {
        let n = shape.iter().product::<u64>() * 2;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while !(text.len() + 8).is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    for _ in 0..offset {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.push((x >> 16) as u8 & 0x3f);
    }
    out
}

/// A Hub repo holding one LoRA file `lora.safetensors` (LFS).
pub fn lora_repo(id: &str, seed: u8, rank: u64) -> FakeRepo {
    FakeRepo::new(id)
        .file("README.md", format!("# {id}\n"))
        .file("lora.safetensors", lora_bytes(seed, rank))
}

/// A test work folder: `models.yaml` in it, models in `models/`, the Hub emulator.
pub struct Work {
    /// The folder (removed on drop).
    pub dir: tempfile::TempDir,
    /// The emulator.
    pub hub: HubServer,
}

impl Work {
    /// A fresh folder and emulator.
    pub fn new() -> Self {
        Self {
            dir: super::tmp(),
            hub: HubServer::start(),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `models/` in it.
    pub fn models(&self) -> PathBuf {
        self.path().join("models")
    }

    /// Writes `models.yaml`: `settings` lines (indented by the caller as YAML under
    /// `settings:`) and the `models:` list as given.
    pub fn manifest(&self, settings: &str, models: &str) {
        let text =
            format!("version: 1\nsettings:\n  models_dir: models\n{settings}models:\n{models}");
        std::fs::write(self.path().join("models.yaml"), text).expect("write manifest");
    }

    /// Writes a local LoRA file under the folder; returns its path.
    pub fn local_lora(&self, name: &str, seed: u8) -> PathBuf {
        let p = self.path().join("src").join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, lora_bytes(seed, 2)).expect("write lora");
        p
    }

    /// The binary, in the folder, against the emulator, with no token anywhere.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_modelsync"));
        c.args(args)
            .current_dir(self.path())
            .env("HF_ENDPOINT", self.hub.endpoint())
            .env("HF_HOME", self.path().join(".hf"))
            .env("NO_COLOR", "1")
            .env_remove("HF_TOKEN")
            .env_remove("HUGGING_FACE_HUB_TOKEN")
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("HF_TOKEN_PATH")
            .env_remove("MODELSYNC_FILE")
            .env_remove("RUST_LOG");
        c
    }

    /// Runs the binary to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("modelsync runs")
    }

    /// The record store of `models/`.
    pub fn store(&self) -> Box<dyn modelsync::RecordStore> {
        modelsync::store::open(&self.models().join("modelsync.db")).expect("open store")
    }

    /// The lock file, parsed.
    pub fn lock(&self) -> modelsync::manifest::LockFile {
        modelsync::manifest::LockFile::read(&self.path().join("models.lock"))
            .expect("lock parses")
            .expect("lock exists")
    }
}

/// Asserts an exit code, showing both streams when it differs.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Requests for file bodies (GET on resolve URLs, the CDN or URL downloads), as
/// `method path`.
pub fn body_requests(hub: &HubServer) -> Vec<String> {
    hub.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && !r.path.starts_with("/api/models"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}
