//! `load`.

use clap::Args;

use super::{Context, Status, not_implemented};

/// `load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// A record key or name.
    pub model: String,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Submodel of a main model (unet, vae, text_encoder …).
    #[arg(long)]
    pub submodel: Option<String>,
}

pub fn load(_ctx: &Context, _a: LoadArgs) -> anyhow::Result<Status> {
    Err(not_implemented("load"))
}
