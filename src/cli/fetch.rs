//! `fetch` (hidden): one download through the queue. For tests (kill and resume a real
//! process) and `scripts/bench-download`; not a user command.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::download::{
    AccessToken, DownloadEvent, DownloadJob, DownloadQueue, DownloadQueueConfig, TransferConfig,
};
use crate::events::{NullReporter, Reporter};

use super::{Context, Status};

/// `fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The http(s) URL(s), then the destination: a file, or an existing directory (then the
    /// server names each file; required with several URLs).
    #[arg(required = true, num_args = 2.., value_name = "URL... DEST")]
    pub args: Vec<String>,
    /// Expected sha256 (hex).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Connections for a large file.
    #[arg(long)]
    pub connections: Option<u32>,
    /// Size from which a file downloads in parallel ranges (e.g. 64MiB).
    #[arg(long, value_parser = parse_size)]
    pub threshold: Option<u64>,
    /// Bearer token.
    #[arg(long, env = "MODELSYNC_FETCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Jobs running at once (with several URLs).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Skip the fsync before the rename.
    #[arg(long)]
    pub no_sync: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    crate::units::parse_size(s).map_err(|e| e.to_string())
}

/// Draws one progress bar from running events.
struct Bar(indicatif::ProgressBar);

impl Reporter<DownloadEvent> for Bar {
    fn report(&self, ev: &DownloadEvent) {
        let job = ev.job();
        if job.total_bytes > 0 {
            // Drawn only once there is something to show (no empty bar).
            if self.0.is_hidden() && !self.0.is_finished() {
                self.0
                    .set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            self.0.set_length(job.total_bytes);
        }
        self.0.set_position(job.bytes);
        if !matches!(
            ev,
            DownloadEvent::Running { .. } | DownloadEvent::Enqueued { .. }
        ) {
            self.0.finish_and_clear();
        }
    }
}

pub fn fetch(ctx: &Context, a: FetchArgs) -> anyhow::Result<Status> {
    let rt = ctx.runtime()?;
    let reporter: Arc<dyn Reporter<DownloadEvent>> = if ctx.printer.progress() {
        let bar = indicatif::ProgressBar::hidden();
        bar.set_style(super::reconcile::progress::total_style());
        bar.set_prefix("total");
        Arc::new(Bar(bar))
    } else {
        Arc::new(NullReporter)
    };
    let mut args = a.args;
    let dest = PathBuf::from(args.pop().unwrap_or_default());
    if args.len() > 1 && !dest.is_dir() {
        anyhow::bail!(
            "with several URLs the destination must be an existing directory: {}",
            dest.display()
        );
    }
    let paths = rt.block_on(async {
        let defaults = DownloadQueueConfig::default();
        let cfg = DownloadQueueConfig {
            transfer: TransferConfig {
                connections_per_file: a
                    .connections
                    .unwrap_or(defaults.transfer.connections_per_file),
                parallel_threshold: a.threshold.unwrap_or(defaults.transfer.parallel_threshold),
                sync_before_rename: !a.no_sync,
                ..defaults.transfer.clone()
            },
            max_parallel_dl: a.parallel.unwrap_or(defaults.max_parallel_dl),
            // `--connections` for one file is not cut down by the default budget.
            max_connections: defaults
                .max_connections
                .max(a.connections.unwrap_or(0) as usize),
            ..defaults
        };
        let queue = DownloadQueue::new(cfg, reporter)?;
        let mut ids = Vec::new();
        for url in args {
            let job = DownloadJob::new(url, dest.clone())
                .with_sha256(a.sha256.clone())
                .with_access_token(a.token.clone().map(AccessToken::new));
            ids.push(queue.submit_download_job(job, true)?.id);
        }
        let mut paths = Vec::new();
        for id in ids {
            let job = queue.wait_for_job(id, None).await?;
            paths.push(job.result()?.to_path_buf());
        }
        anyhow::Ok(paths)
    })?;
    for p in paths {
        println!("{}", p.display());
    }
    Ok(Status::Success)
}
