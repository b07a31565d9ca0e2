//! `import`.

use clap::Args;

use super::{Context, Status, not_implemented};

/// `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A local path, an HF repo id (`owner/name[:variant][:subfolder]`, `owner/name::path`) or a URL.
    pub source: String,
    /// Register a local model where it is instead of copying it into models_dir.
    #[arg(long)]
    pub inplace: bool,
    /// The record's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Config overrides, `key=value` (repeatable), e.g. `--config base=sdxl`.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
}

pub fn import(_ctx: &Context, _a: ImportArgs) -> anyhow::Result<Status> {
    Err(not_implemented("import"))
}
