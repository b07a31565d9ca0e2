//! `list`, `show`, `remove`.

use clap::Args;

use super::{Context, Status, not_implemented};

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only records with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only this model type.
    #[arg(long = "type")]
    pub model_type: Option<String>,
    /// Only this base model.
    #[arg(long)]
    pub base: Option<String>,
    /// Only this format.
    #[arg(long)]
    pub format: Option<String>,
    /// Only records with all these tags (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
}

/// `show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A record key or name.
    pub model: String,
}

/// `remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// A record key.
    pub key: String,
    /// Also delete the model's files (only inside models_dir).
    #[arg(long)]
    pub delete_files: bool,
}

pub fn list(_ctx: &Context, _a: ListArgs) -> anyhow::Result<Status> {
    Err(not_implemented("list"))
}

pub fn show(_ctx: &Context, _a: ShowArgs) -> anyhow::Result<Status> {
    Err(not_implemented("show"))
}

pub fn remove(_ctx: &Context, _a: RemoveArgs) -> anyhow::Result<Status> {
    Err(not_implemented("remove"))
}
