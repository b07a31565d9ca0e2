//! `fetch` (hidden): one download through the queue. For tests (kill and resume a real
//! process) and `scripts/bench-download`; not a user command.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::download::{
    AccessToken, DownloadEvent, DownloadJob, DownloadQueue, DownloadQueueConfig,
};
use crate::events::{Event, NullReporter, Reporter};

use super::{Context, Status};

/// `fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The http(s) URL.
    pub url: String,
    /// Destination file, or an existing directory (then the server names the file).
    pub dest: PathBuf,
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
    /// Skip the fsync before the rename.
    #[arg(long)]
    pub no_sync: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    crate::units::parse_size(s).map_err(|e| e.to_string())
}

/// Draws one progress bar from running events.
struct Bar(indicatif::ProgressBar);

impl Reporter for Bar {
    fn report(&self, event: &Event) {
        if let Event::Download(ev) = event {
            let job = ev.job();
            if job.total_bytes > 0 {
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
}

pub fn fetch(ctx: &Context, a: FetchArgs) -> anyhow::Result<Status> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let reporter: Arc<dyn Reporter> = if ctx.progress {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Arc::new(Bar(bar))
    } else {
        Arc::new(NullReporter)
    };
    let path = rt.block_on(async {
        let defaults = DownloadQueueConfig::default();
        let cfg = DownloadQueueConfig {
            connections_per_file: a.connections.unwrap_or(defaults.connections_per_file),
            parallel_threshold: a.threshold.unwrap_or(defaults.parallel_threshold),
            sync_before_rename: !a.no_sync,
            ..defaults
        };
        let queue = DownloadQueue::new(cfg, reporter)?;
        let job = DownloadJob::new(a.url, a.dest)
            .with_sha256(a.sha256)
            .with_access_token(a.token.map(AccessToken::new));
        anyhow::Ok(queue.download(job).await?)
    })?;
    println!("{}", path.display());
    Ok(Status::Success)
}
