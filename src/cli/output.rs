//! Printers and logging: data to stdout, talk to stderr.

use clap::ValueEnum;

use super::Context;

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and sentences for people.
    Text,
    /// JSON: one document for queries, JSON Lines of events for long operations.
    Json,
}

/// Logs go to stderr through tracing; `RUST_LOG` overrides `-q`/`-v`.
pub fn init_logging(ctx: &Context) {
    let level = if ctx.quiet {
        "error"
    } else {
        match ctx.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("modelsync={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ctx.color)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Whether an error is stdout going away (`modelsync list | head`): that is success.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints an error with its causes (`error: …` / `  caused by: …`), or as JSON with `-o json`.
pub fn print_error(ctx: &Context, e: &anyhow::Error) {
    if ctx.output == OutputFormat::Json {
        let causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
        let doc = serde_json::json!({"error": e.to_string(), "causes": causes});
        eprintln!("{doc}");
        return;
    }
    let prefix = if ctx.color {
        "\x1b[1;31merror\x1b[0m"
    } else {
        "error"
    };
    eprintln!("{prefix}: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}
