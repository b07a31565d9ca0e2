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

/// How a command talks on stderr (uv's `Printer`), resolved once from `-q`, `-v`,
/// `--no-progress`, `-o` and whether stderr is a terminal. What stdout carries is
/// [`OutputFormat`]'s, apart from this, so `-o json -q` prints its JSON and, on stderr,
/// nothing but errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Printer {
    /// `-q`: errors only.
    Quiet,
    /// Warnings and progress lines; bars while stderr is a terminal and stdout is text.
    Default,
    /// `-v`: as `Default` with more detail (`diff`'s files, `status`'s unmanaged records, log
    /// lines at info and below) and no bars, which those log lines would tear (as uv does).
    Verbose,
    /// `--no-progress`, `-o json`, or stderr is not a terminal: as `Default` without bars.
    NoProgress,
}

impl Printer {
    /// The printer of these flags; `terminal`: stderr is a terminal.
    pub fn new(
        quiet: bool,
        verbose: u8,
        no_progress: bool,
        output: OutputFormat,
        terminal: bool,
    ) -> Self {
        if quiet {
            Self::Quiet
        } else if verbose > 0 {
            Self::Verbose
        } else if no_progress || output == OutputFormat::Json || !terminal {
            Self::NoProgress
        } else {
            Self::Default
        }
    }

    /// Whether anything but errors goes to stderr (and summaries meant for people to stdout).
    pub fn talks(self) -> bool {
        self != Self::Quiet
    }

    /// Whether progress bars are drawn.
    pub fn progress(self) -> bool {
        self == Self::Default
    }

    /// Whether commands show their extra detail (`-v`).
    pub fn verbose(self) -> bool {
        self == Self::Verbose
    }

    /// Says `line` on stderr, unless `-q`.
    pub fn say(self, line: impl std::fmt::Display) {
        if self.talks() {
            eprintln!("{line}");
        }
    }
}

/// Logs go to stderr through tracing; `RUST_LOG` overrides `-q`/`-v`.
pub fn init_logging(ctx: &Context) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("modelsync={}", ctx.log_level()))
    });
    // A second initialisation (tests calling `run` twice) keeps the first subscriber.
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

/// Prints an error with its causes (`error: …` / `  caused by: …`), or as JSON with `-o json`
/// (`{"error": …, "causes": […]}`).
pub fn print_error(ctx: &Context, e: &anyhow::Error) {
    let mut causes = crate::retry::messages(e.as_ref());
    let message = causes.remove(0);
    if ctx.output == OutputFormat::Json {
        let doc = serde_json::json!({"error": message, "causes": causes});
        eprintln!("{doc}");
        return;
    }
    let prefix = if ctx.color {
        "\x1b[1;31merror\x1b[0m"
    } else {
        "error"
    };
    let _ = write_chain(
        &mut std::io::stderr().lock(),
        &format!("{prefix}: {message}"),
        &causes,
        "  ",
    );
}

/// The one way an error chain becomes text: `head` on its line, then one
/// `{indent}caused by: …` line per cause, outermost first. Each message of the chain says its
/// own part once, so nothing is repeated.
pub fn write_chain(
    out: &mut dyn std::io::Write,
    head: &str,
    causes: &[String],
    indent: &str,
) -> std::io::Result<()> {
    writeln!(out, "{head}")?;
    for cause in causes {
        writeln!(out, "{indent}caused by: {cause}")?;
    }
    Ok(())
}

/// A chain on one line, for log lines: its messages `: `-joined.
pub fn one_line(message: &str, causes: &[String]) -> String {
    let mut line = message.to_owned();
    for c in causes {
        line.push_str(": ");
        line.push_str(c);
    }
    line
}

/// Writes `rows` as left-aligned columns under `headers`, two spaces apart. The last column is
/// not padded, so long paths do not drag trailing blanks along.
pub fn write_table(
    out: &mut impl std::io::Write,
    headers: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn std::io::Write, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < widths.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &mut headers.iter().copied())?;
    for row in rows {
        line(out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// Writes one JSON document (pretty, newline-terminated) to stdout.
pub fn print_json(value: &serde_json::Value) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printer_is_one_choice_made_from_every_flag() {
        use OutputFormat::{Json, Text};
        let p = Printer::new;
        // On a terminal, text output draws bars; every other flag turns them off.
        assert_eq!(p(false, 0, false, Text, true), Printer::Default);
        assert!(p(false, 0, false, Text, true).progress());
        assert_eq!(p(false, 0, true, Text, true), Printer::NoProgress);
        assert_eq!(p(false, 0, false, Json, true), Printer::NoProgress);
        assert_eq!(p(false, 0, false, Text, false), Printer::NoProgress);
        // -v: detail without bars, even on a terminal; -q wins over everything and says
        // nothing but errors, also with -o json (whose stdout is the output format's).
        assert_eq!(p(false, 2, false, Text, true), Printer::Verbose);
        assert!(p(false, 1, false, Json, false).verbose());
        assert!(!p(false, 1, false, Text, true).progress());
        assert_eq!(p(true, 0, false, Json, true), Printer::Quiet);
        assert!(!Printer::Quiet.talks() && Printer::NoProgress.talks());
    }

    #[test]
    fn table_columns_align_on_the_widest_cell() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            &["KEY", "NAME", "PATH"],
            &[
                vec!["ab".into(), "a-long-name".into(), "x".into()],
                vec!["abcdef".into(), "n".into(), "y/z".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "KEY     NAME         PATH\nab      a-long-name  x\nabcdef  n            y/z\n"
        );
    }
}
