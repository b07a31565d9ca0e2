//! `watch`.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Args;

use super::{Context, Status, not_implemented};
use crate::watch::WatchConfig;

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

pub fn watch(ctx: &Context, a: WatchArgs) -> anyhow::Result<Status> {
    let config = watch_config(ctx, a)?;
    // TODO(#6): plug the reconciler in. It implements `crate::watch::Converger`; then:
    //
    //     let converger = std::sync::Arc::new(crate::reconcile::<its converger>::open(ctx)?);
    //     crate::watch::block_on_watch(config, converger)?;
    //     Ok(Status::Success) // SIGTERM/SIGINT end the loop cleanly: exit 0
    //
    // Until then the settings are validated (bad flags still fail with a clear message) and
    // the command reports that it is not implemented.
    drop(config);
    Err(not_implemented("watch"))
}

/// The validated settings of `watch` (the manifest is `-f`).
fn watch_config(ctx: &Context, a: WatchArgs) -> anyhow::Result<WatchConfig> {
    let WatchArgs { interval, listen } = a;
    let mut config = WatchConfig::new(&ctx.manifest_path);
    config.interval = crate::units::parse_duration(&interval).context("--interval")?;
    config.listen = listen.parse::<SocketAddr>().with_context(|| {
        format!("--listen `{listen}`: expected IP:PORT, for example 127.0.0.1:9090 or 0.0.0.0:9090")
    })?;
    config.validate().context("watch settings")?;
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
        watch_config(&ctx, a)
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
