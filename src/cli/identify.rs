//! `probe`, `hash`, `scan`.

use std::path::PathBuf;

use clap::Args;

use super::{Context, Status, not_implemented};

/// `probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// A model file or folder.
    pub path: PathBuf,
}

/// `hash`.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// A model file or folder.
    pub path: PathBuf,
    /// blake3 (default), blake3_single, sha256 or imohash.
    #[arg(long, default_value = "blake3")]
    pub algo: String,
}

/// `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// A pickle/checkpoint file or a folder.
    pub path: PathBuf,
}

pub fn probe(_ctx: &Context, _a: ProbeArgs) -> anyhow::Result<Status> {
    Err(not_implemented("probe"))
}

pub fn hash(_ctx: &Context, _a: HashArgs) -> anyhow::Result<Status> {
    Err(not_implemented("hash"))
}

pub fn scan(_ctx: &Context, _a: ScanArgs) -> anyhow::Result<Status> {
    Err(not_implemented("scan"))
}
