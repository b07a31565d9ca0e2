//! Raw arguments become validated settings once (ripgrep's LowArgs → HiArgs): the global
//! flags when the command starts; the manifest and the store paths on first use, then kept,
//! so every command resolves them by the same rules and reads the manifest at most once.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;

use crate::manifest::{self, Manifest, Settings};
use crate::store::{self, RecordStore, lock::StoreLock};

use super::output::Printer;
use super::{ColorChoice, GlobalArgs, OutputFormat};

/// `--models-dir`, `--database` and `--lock-file`: they win over the manifest's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--models-dir`.
    pub models_dir: Option<PathBuf>,
    /// `--database`.
    pub database: Option<PathBuf>,
    /// `--lock-file`.
    pub lock_file: Option<PathBuf>,
}

/// Settings every command receives, resolved from global flags, the environment and (where a
/// command reads it) the manifest.
#[derive(Debug, Clone)]
pub struct Context {
    /// The manifest path (`-f`).
    pub manifest_path: PathBuf,
    /// Paths given on the command line over the manifest's settings.
    pub overrides: Overrides,
    /// `-o`: what stdout carries.
    pub output: OutputFormat,
    /// How the command talks on stderr: `-q`, `-v`, `--no-progress`, bars.
    pub printer: Printer,
    /// Use colour on stdout/stderr.
    pub color: bool,
    /// `--lock-timeout`, if given.
    lock_timeout: Option<Duration>,
    /// The `modelsync=…` log level of `-q` / `-v`.
    log_level: &'static str,
    /// The manifest with the overrides applied, once loaded.
    manifest: OnceLock<Manifest>,
    /// The manifest's own `settings` (no overrides), once read; `None`: no manifest file.
    settings: OnceLock<Option<Settings>>,
}

impl Context {
    /// Resolves the global flags.
    pub fn new(g: &GlobalArgs) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = match g.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => !no_color_env && terminal,
        };
        let log_level = if g.quiet {
            "error"
        } else {
            match g.verbose {
                0 => "warn",
                1 => "info",
                2 => "debug",
                _ => "trace",
            }
        };
        Self {
            manifest_path: g.file.clone(),
            overrides: Overrides {
                models_dir: g.models_dir.clone(),
                database: g.database.clone(),
                lock_file: g.lock_file.clone(),
            },
            output: g.output,
            printer: Printer::new(g.quiet, g.verbose, g.no_progress, g.output, terminal),
            color,
            lock_timeout: g.lock_timeout,
            log_level,
            manifest: OnceLock::new(),
            settings: OnceLock::new(),
        }
    }

    /// The level of this crate's log lines (`RUST_LOG` overrides it).
    pub fn log_level(&self) -> &'static str {
        self.log_level
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

    /// The manifest (`-f`), validated, with `--models-dir` / `--database` / `--lock-file`
    /// applied over its settings; loaded on the first call. A missing file is an error with a
    /// hint to run `modelsync init`.
    pub fn manifest(&self) -> anyhow::Result<&Manifest> {
        if let Some(m) = self.manifest.get() {
            return Ok(m);
        }
        let path = &self.manifest_path;
        if !path.exists() {
            anyhow::bail!(
                "no manifest at {}\nhint: run `modelsync init` to write a starter one, or pass -f PATH (env MODELSYNC_FILE)",
                path.display()
            );
        }
        let mut m = manifest::load(path)?;
        // The settings as the file says them, so `settings()` need not parse the file again.
        let _ = self.settings.set(Some(m.settings.clone()));
        let o = &self.overrides;
        if let Some(d) = &o.models_dir {
            m.settings.models_dir.clone_from(d);
        }
        if let Some(d) = &o.database {
            m.settings.database = Some(d.clone());
        }
        if let Some(d) = &o.lock_file {
            m.settings.lock_file = Some(d.clone());
        }
        store::check_kind(&m.settings.database_path())?;
        Ok(self.manifest.get_or_init(|| m))
    }

    /// The manifest when its file exists (as [`manifest`](Self::manifest): an invalid one is
    /// an error), else `None`: for commands that work without one (`verify`, `gc`, `sync`).
    pub fn manifest_if_present(&self) -> anyhow::Result<Option<&Manifest>> {
        if self.manifest_path.is_file() {
            self.manifest().map(Some)
        } else {
            Ok(None)
        }
    }

    /// The manifest's own `settings` (without the overrides) when the file exists; only the
    /// settings are checked, so an unset `${HF_TOKEN}` in an entry does not stop `list`.
    pub fn settings(&self) -> anyhow::Result<Option<&Settings>> {
        if let Some(s) = self.settings.get() {
            return Ok(s.as_ref());
        }
        let s = if self.manifest_path.is_file() {
            Some(
                manifest::load_settings(&self.manifest_path).with_context(|| {
                    format!(
                        "reading settings from {} (pass --models-dir and --database to do without it)",
                        self.manifest_path.display()
                    )
                })?,
            )
        } else {
            None
        };
        Ok(self.settings.get_or_init(|| s).as_ref())
    }

    /// The models folder and database for commands that work on the store. Flags win; then
    /// the manifest's settings when the manifest file exists (not read at all when both flags
    /// are given); else `./models` and `<models_dir>/modelsync.db`.
    pub fn store_paths(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let o = &self.overrides;
        let settings = if o.models_dir.is_some() && o.database.is_some() {
            None
        } else {
            self.settings()?
        };
        let models_dir = o
            .models_dir
            .clone()
            .or_else(|| settings.map(|s| s.models_dir.clone()))
            .unwrap_or_else(|| PathBuf::from("models"));
        // A manifest's explicit database wins over the default; the default follows the
        // effective models_dir, so `--models-dir X` alone means `X/modelsync.db`.
        let database = o
            .database
            .clone()
            .or_else(|| settings.and_then(|s| s.database.clone()))
            .unwrap_or_else(|| models_dir.join("modelsync.db"));
        store::check_kind(&database)?;
        Ok((models_dir, database))
    }

    /// The record store opened read-only, for commands that only read; `None` when it does
    /// not exist yet (a query does not create it).
    pub fn read_store(&self) -> anyhow::Result<Option<Box<dyn RecordStore>>> {
        let (_, database) = self.store_paths()?;
        if !database.exists() {
            tracing::info!("no record store at {} yet", database.display());
            return Ok(None);
        }
        Ok(Some(store::open_read_only(&database)?))
    }

    /// How long a command waits for another process's store lock: `--lock-timeout`, else
    /// the manifest's `settings.lock_timeout`, else 5 minutes — the same for every command
    /// that changes the store (`apply`, `watch`, `import`, `remove`, `sync --yes`,
    /// `adopt --yes`, `gc --yes`, `init --from-store`). A manifest whose settings do not
    /// parse has stopped the command already unless both `--models-dir` and `--database`
    /// are given; then its timeout is not used.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout.unwrap_or_else(|| {
            self.settings()
                .ok()
                .flatten()
                .map_or(manifest::DEFAULT_INTERVAL, |s| s.lock_timeout)
        })
    }

    /// Takes the store lock (one mutating process per store), waiting up to
    /// [`lock_timeout`](Self::lock_timeout) and saying once per holder (unless `-q`) whom it
    /// waits for and why: `waiting for the store lock on DB (up to 5m) to PURPOSE: held by
    /// pid N (modelsync apply) since …`.
    pub fn lock_store(&self, purpose: &str) -> anyhow::Result<StoreLock> {
        let (_, database) = self.store_paths()?;
        let timeout = self.lock_timeout();
        let printer = self.printer;
        Ok(StoreLock::acquire(&database, timeout, |holder| {
            printer.say(format_args!(
                "waiting for the store lock on {} (up to {}) to {purpose}: held by {holder}",
                database.display(),
                crate::units::HumanDuration(timeout)
            ));
        })?)
    }

    /// The async runtime a command's network and disk work runs on (one kind for every
    /// command).
    #[allow(
        clippy::unused_self,
        reason = "a setting like the others: commands build it through the context"
    )]
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("modelsync")
            .build()
            .context("starting the async runtime")
    }
}
