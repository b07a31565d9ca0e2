//! `watch`: converge continuously (issue #7). The loop is [`crate::watch`]; the work is
//! [`ManifestConverger`]. Logs go to stderr (`RUST_LOG` filters them; `-v` shows each
//! action's start and end at info); with `-o json`, reconcile events are also written to
//! stdout as JSON Lines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::{Context, OutputFormat, Status};
use crate::events::Reporter;
use crate::reconcile::{ManifestConverger, ReconcileEvent};
use crate::report::Event;
use crate::watch::WatchConfig;

/// `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Full resync interval [default: the manifest's settings.watch_interval, 5m]. Read at
    /// start.
    #[arg(long)]
    pub interval: Option<String>,
    /// Address of the health/metrics server.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: String,
}

/// Runs until SIGTERM or SIGINT, then exits 0 after a bounded shutdown (running downloads
/// stop with their partial files kept). A manifest that does not load at start is an error,
/// and so is an address it cannot listen on, before the line that says where it listens;
/// later bad edits are reported in `/status` and the metrics while the last good one stays in
/// force.
pub fn watch(ctx: &Context, a: WatchArgs) -> anyhow::Result<Status> {
    let m = ctx.manifest()?;
    let config = watch_config(ctx, a, m.settings.watch_interval)?;
    let lock = ctx.lock_store("watch the manifest")?;
    let reporter = Arc::new(LogReporter {
        json: ctx.output == OutputFormat::Json,
    });
    // The load service keeps `preload: true` entries warm; /readyz waits for them and
    // /metrics reports the cache's bytes per device.
    let preloader = Arc::new(crate::load::ServicePreloader::new(
        crate::load::service_for(&m.settings.models_dir, &m.settings.cache, reporter.clone())?,
    ));
    let usage = preloader.clone();
    let converger = ManifestConverger::new(m, lock, reporter)
        .with_path_overrides(
            ctx.overrides.models_dir.clone(),
            ctx.overrides.database.clone(),
        )
        .with_lock_file(ctx.overrides.lock_file.clone())
        .with_cache_usage(move || {
            usage
                .service()
                .cache()
                .stats()
                .bytes_by_device
                .into_iter()
                .map(|(device, bytes)| crate::watch::DeviceUsage { device, bytes })
                .collect()
        })
        .with_preloader(Some(preloader));
    for name in converger.unpreloadable(m) {
        ctx.printer.say(format_args!(
            "warning: entry `{name}` has preload: true, but this build has no load service wired into watch: it is not preloaded and /readyz does not wait for it"
        ));
    }
    let (manifest_path, interval) = (config.manifest_path.clone(), config.interval);
    crate::watch::block_on_watch(config, Arc::new(converger), |listen| {
        ctx.printer.say(format_args!(
            "modelsync watch: manifest {}, models in {}, listening on http://{listen} (/healthz /readyz /status /metrics), resync every {}",
            manifest_path.display(),
            m.settings.models_dir.display(),
            crate::units::HumanDuration(interval)
        ));
    })?;
    ctx.printer.say("modelsync watch: stopped");
    Ok(Status::Success)
}

/// What the reconciler does, as log lines (text) or JSON Lines on stdout (`-o json`).
struct LogReporter {
    json: bool,
}

/// Only the reconciler's events; the others are what it says per entry.
impl<E: Clone + Into<Event>> Reporter<E> for LogReporter {
    fn report(&self, event: &E) {
        let Event::Reconcile(e) = event.clone().into() else {
            return;
        };
        if self.json {
            if let Ok(line) = serde_json::to_string(&Event::Reconcile(e)) {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            return;
        }
        match &e {
            ReconcileEvent::ActionStarted { name, action, .. } => {
                tracing::info!("{name}: {} started", super::reconcile::action_name(*action));
            }
            ReconcileEvent::ActionCompleted {
                name,
                action,
                downloaded_bytes,
                ..
            } => tracing::info!(
                "{name}: {} done ({} downloaded)",
                super::reconcile::action_name(*action),
                crate::units::HumanBytes(*downloaded_bytes)
            ),
            ReconcileEvent::ActionFailed {
                name,
                action,
                error,
                causes,
                ..
            } => tracing::warn!(
                "{name}: {} failed: {}",
                super::reconcile::action_name(*action),
                super::output::one_line(error, causes)
            ),
            ReconcileEvent::Warning { name, message } => tracing::warn!("{name}: {message}"),
            ReconcileEvent::LockWritten { path, .. } => {
                tracing::info!("wrote {}", path.display());
            }
            ReconcileEvent::LockNotWritten { path, error } => tracing::warn!(
                "cannot write {}: {error}; the lock is kept in memory and the models converge without it (set settings.lock_file or --lock-file to a writable place)",
                path.display()
            ),
            _ => {}
        }
    }
}

/// The validated settings of `watch` (the manifest is `-f`); `default_interval` applies
/// without `--interval`.
fn watch_config(
    ctx: &Context,
    a: WatchArgs,
    default_interval: Duration,
) -> anyhow::Result<WatchConfig> {
    let WatchArgs { interval, listen } = a;
    let mut config = WatchConfig::new(&ctx.manifest_path);
    config.interval = match interval {
        Some(i) => crate::units::parse_duration(&i).context("--interval")?,
        None => default_interval,
    };
    config.listen = listen.parse::<SocketAddr>().with_context(|| {
        format!("--listen `{listen}`: expected IP:PORT, for example 127.0.0.1:9090 or 0.0.0.0:9090")
    })?;
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> anyhow::Result<WatchConfig> {
        let cli = Cli::try_parse_from(args)?;
        let ctx = Context::new(&cli.global);
        let Command::Watch(a) = cli.command else {
            anyhow::bail!("not watch");
        };
        watch_config(&ctx, a, Duration::from_mins(5))
    }

    #[test]
    fn flags_become_settings() {
        let c = parse(&[
            "modelsync",
            "-f",
            "/etc/ms/models.yaml",
            "watch",
            "--interval",
            "90s",
            "--listen",
            "0.0.0.0:9191",
        ])
        .expect("valid flags");
        assert_eq!(c.interval.as_secs(), 90);
        assert_eq!(c.listen.port(), 9191);
        assert_eq!(c.manifest_path.to_str(), Some("/etc/ms/models.yaml"));

        let d = parse(&["modelsync", "watch"]).expect("defaults");
        assert_eq!(d.interval.as_secs(), 300);
        assert_eq!(d.listen.to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn bad_flags_say_which() {
        let e = parse(&["modelsync", "watch", "--listen", "localhost"]).unwrap_err();
        assert!(format!("{e:#}").contains("--listen `localhost`"), "{e:#}");
        let e = parse(&["modelsync", "watch", "--interval", "soon"]).unwrap_err();
        assert!(format!("{e:#}").contains("--interval"), "{e:#}");
        let e = parse(&["modelsync", "watch", "--interval", "0s"]).unwrap_err();
        assert!(format!("{e:#}").contains("interval"), "{e:#}");
    }
}
