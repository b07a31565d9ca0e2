//! `watch`.

use clap::Args;

use super::{Context, Status, not_implemented};

/// `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Full resync interval.
    #[arg(long, default_value = "5m")]
    pub interval: String,
    /// Address of the health/metrics server.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: String,
}

pub fn watch(_ctx: &Context, _a: WatchArgs) -> anyhow::Result<Status> {
    Err(not_implemented("watch"))
}
