//! Raw arguments become validated settings once (ripgrep's LowArgs → HiArgs).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::manifest::{self, Manifest};

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
    /// `--lock-file`, if given.
    pub lock_file_flag: Option<PathBuf>,
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
            lock_file_flag: g.lock_file.clone(),
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
    /// the manifest's settings when the manifest file exists (only its `settings` are
    /// checked, so an unset `${HF_TOKEN}` in an entry does not stop `list`); else `./models`
    /// and `<models_dir>/modelsync.db`.
    pub fn store_paths(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let settings = if self.models_dir_flag.is_some() && self.database_flag.is_some() {
            None
        } else if self.manifest_path.is_file() {
            Some(manifest::load_settings(&self.manifest_path).with_context(|| {
                format!(
                    "reading settings from {} (pass --models-dir and --database to do without it)",
                    self.manifest_path.display()
                )
            })?)
        } else {
            None
        };
        let models_dir = self
            .models_dir_flag
            .clone()
            .or_else(|| settings.as_ref().map(|s| s.models_dir.clone()))
            .unwrap_or_else(|| PathBuf::from("models"));
        // A manifest's explicit database wins over the default; the default follows the
        // effective models_dir, so `--models-dir X` alone means `X/modelsync.db`.
        let database = self
            .database_flag
            .clone()
            .or_else(|| settings.as_ref().and_then(|s| s.database.clone()))
            .unwrap_or_else(|| models_dir.join("modelsync.db"));
        crate::store::check_kind(&database)?;
        Ok((models_dir, database))
    }

    /// `settings.registries` of the manifest when the file exists (for `import oci://…` of a
    /// plain-HTTP registry), else none.
    pub fn registries(&self) -> anyhow::Result<crate::oci::Registries> {
        if !self.manifest_path.is_file() {
            return Ok(crate::oci::Registries::new());
        }
        let settings = manifest::load_settings(&self.manifest_path)
            .with_context(|| format!("reading settings from {}", self.manifest_path.display()))?;
        Ok(settings.registries)
    }

    /// Loads and validates the manifest (`-f`), with `--models-dir` / `--database` /
    /// `--lock-file` applied
    /// over its settings. A missing file is an error with a hint to run `modelsync init`.
    pub fn load_manifest(&self) -> anyhow::Result<Manifest> {
        let path = &self.manifest_path;
        if !path.exists() {
            anyhow::bail!(
                "no manifest at {}\nhint: run `modelsync init` to write a starter one, or pass -f PATH (env MODELSYNC_FILE)",
                path.display()
            );
        }
        let mut m = manifest::load(path)?;
        if let Some(d) = &self.models_dir_flag {
            m.settings.models_dir.clone_from(d);
        }
        if let Some(d) = &self.database_flag {
            m.settings.database = Some(d.clone());
        }
        if let Some(d) = &self.lock_file_flag {
            m.settings.lock_file = Some(d.clone());
        }
        crate::store::check_kind(&m.settings.database_path())?;
        Ok(m)
    }
}
