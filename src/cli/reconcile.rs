//! `init`, `diff`, `apply`, `status`, `verify`, `gc`, `schema`.

use clap::Args;

use super::{Context, Status, not_implemented};

/// `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing manifest.
    #[arg(long)]
    pub force: bool,
}

/// `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Ask the hub whether unpinned revisions moved.
    #[arg(long)]
    pub refresh: bool,
    /// Exit 0 in sync, 2 changes pending, 1 error.
    #[arg(long)]
    pub exit_code: bool,
}

/// `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Delete managed models whose entries left the manifest.
    #[arg(long)]
    pub prune: bool,
    /// Resolve nothing the lock file does not pin.
    #[arg(long)]
    pub locked: bool,
    /// Only these entries (repeatable).
    #[arg(long, num_args = 1..)]
    pub only: Vec<String>,
    /// Load preload entries into the cache afterwards.
    #[arg(long)]
    pub preload: bool,
    /// Give up waiting for another process's lock after this long.
    #[arg(long, default_value = "5m")]
    pub lock_timeout: String,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Ask the hub whether unpinned revisions moved.
    #[arg(long)]
    pub refresh: bool,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Entry names (all when none).
    pub names: Vec<String>,
}

/// `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Really delete (default is a dry run).
    #[arg(long)]
    pub yes: bool,
}

pub fn init(_ctx: &Context, _a: InitArgs) -> anyhow::Result<Status> {
    Err(not_implemented("init"))
}

pub fn diff(_ctx: &Context, _a: DiffArgs) -> anyhow::Result<Status> {
    Err(not_implemented("diff"))
}

pub fn apply(_ctx: &Context, _a: ApplyArgs) -> anyhow::Result<Status> {
    Err(not_implemented("apply"))
}

pub fn status(_ctx: &Context, _a: StatusArgs) -> anyhow::Result<Status> {
    Err(not_implemented("status"))
}

pub fn verify(_ctx: &Context, _a: VerifyArgs) -> anyhow::Result<Status> {
    Err(not_implemented("verify"))
}

pub fn gc(_ctx: &Context, _a: GcArgs) -> anyhow::Result<Status> {
    Err(not_implemented("gc"))
}

pub fn schema(_ctx: &Context) -> anyhow::Result<Status> {
    Err(not_implemented("schema"))
}
