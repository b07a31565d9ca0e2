//! Raw arguments become validated settings once (ripgrep's LowArgs → HiArgs).

use std::io::IsTerminal;
use std::path::PathBuf;

use super::{ColorChoice, GlobalArgs, OutputFormat};

/// Settings every command receives, resolved from global flags, the environment and (where a
/// command reads it) the manifest.
#[derive(Debug, Clone)]
pub struct Context {
    /// The manifest path (`-f`).
    pub manifest_path: PathBuf,
    /// `--models-dir`, if given.
    pub models_dir_flag: Option<PathBuf>,
    /// `--database`, if given.
    pub database_flag: Option<PathBuf>,
    /// `-o`.
    pub output: OutputFormat,
    /// `-q`.
    pub quiet: bool,
    /// `-v` count.
    pub verbose: u8,
    /// Draw progress bars (not with --no-progress, -q, -o json, or when stderr is no terminal).
    pub progress: bool,
    /// Use colour on stdout/stderr.
    pub color: bool,
}

impl Context {
    /// Resolves the global flags.
    pub fn new(g: &GlobalArgs) -> Self {
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = match g.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => !no_color_env && std::io::stderr().is_terminal(),
        };
        Self {
            manifest_path: g.file.clone(),
            models_dir_flag: g.models_dir.clone(),
            database_flag: g.database.clone(),
            output: g.output,
            quiet: g.quiet,
            verbose: g.verbose,
            progress: !g.no_progress
                && !g.quiet
                && g.output == OutputFormat::Text
                && std::io::stderr().is_terminal(),
            color,
        }
    }

    /// The models folder and database for commands that work on the store. Flags win; then
    /// the manifest's settings when the manifest exists; else `./models` and
    /// `<models_dir>/modelsync.db`.
    pub fn store_paths(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let models_dir = self
            .models_dir_flag
            .clone()
            .unwrap_or_else(|| PathBuf::from("models"));
        let database = self
            .database_flag
            .clone()
            .unwrap_or_else(|| models_dir.join("modelsync.db"));
        Ok((models_dir, database))
    }
}
