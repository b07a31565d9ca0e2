//! `init`, `diff`, `apply`, `status`, `verify`, `gc`, `schema`.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use clap::Args;

use super::{Context, OutputFormat, Status};
use crate::manifest;

mod commands;
pub(crate) mod progress;

pub use commands::{apply, diff, gc, status, verify};
pub(crate) use progress::action_name;

/// `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing manifest.
    #[arg(long)]
    pub force: bool,
    /// Declare what the record store holds (one in-place entry per record) and mark the
    /// records as managed by those entries, so the first apply changes nothing.
    #[arg(long)]
    pub from_store: bool,
}

/// `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Ask the hub whether unpinned revisions moved.
    #[arg(long)]
    pub refresh: bool,
    /// Exit 0 in sync, 2 changes pending, 1 error.
    #[arg(long)]
    pub exit_code: bool,
}

/// `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Delete managed models whose entries left the manifest.
    #[arg(long)]
    pub prune: bool,
    /// Resolve nothing the lock file does not pin.
    #[arg(long)]
    pub locked: bool,
    /// Ask the Hub where unpinned revisions point now and upgrade the entries whose branch
    /// moved (in place: same record key).
    #[arg(long, conflicts_with = "locked")]
    pub refresh: bool,
    /// Only these entries (repeatable): their records alone are looked at and planned.
    #[arg(long, num_args = 1..)]
    pub only: Vec<String>,
    /// Load preload entries into the cache afterwards.
    #[arg(long)]
    pub preload: bool,
    /// Take over unmanaged records whose source equals an entry's instead of installing.
    #[arg(long)]
    pub adopt: bool,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Ask the hub whether unpinned revisions moved.
    #[arg(long)]
    pub refresh: bool,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Entry names (all when none).
    pub names: Vec<String>,
}

/// `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Really delete (default is a dry run).
    #[arg(long)]
    pub yes: bool,
    /// Spare partial downloads changed more recently than this (a running or interrupted
    /// download resumes from them); `0s` collects every partial.
    #[arg(long, value_name = "DUR", default_value = "1h")]
    pub min_age: String,
}

/// The starter manifest `init` writes after its `$schema` line. It parses as is and declares
/// nothing, so a first `apply` downloads nothing; with every indented example uncommented it
/// still parses (tests check both), and its repo ids exist on the Hub.
const STARTER: &str = r"# Models this machine should have. `modelsync diff` shows what `modelsync apply` would do.
# Strings may use ${VAR} and ${VAR:-default}; relative paths are relative to this file.
version: 1
settings:
  models_dir: models
  # database: models/modelsync.db    # .db/.sqlite: SQLite; .yaml/.yml: YAML file store
  # lock_file: models/models.lock    # default beside this file (models.yaml -> models.lock)
  # variant: fp16                    # default Hugging Face repo variant
  # hash_algorithm: blake3           # blake3 | blake3_single | sha256 | imohash
  # prune: false                     # delete managed models that left this file
  # unknown_models: allow            # allow | deny: install models no probe rule names
  # sync: report                     # watch: off | report | register models no record owns
  # max_parallel_downloads: 5
  # max_connections: 8               # across all downloads (default 4 per core, 8 to 32)
  # download_timeout: 24h            # longest one file may take, retries included
  # cache: { ram: 8GiB, vram: 16GiB, device: auto }
models:
  # - name: sd15
  #   source: stable-diffusion-v1-5/stable-diffusion-v1-5   # repo id, owner/name:fp16, owner/name::vae, URL or local path
  #   variant: fp16
  #   token: ${HF_TOKEN:-}                      # never stored
  #   tags: [sfw]
  # - name: detail-lora
  #   source: ./loras/detail.safetensors
  #   inplace: true                             # register where it is, do not copy
  #   config: { type: lora, base: sd-1 }
";

/// The schema file `init` writes next to the manifest, and the `$schema` comment's target.
const SCHEMA_FILE: &str = "models.schema.json";

/// The first line of a manifest `init` writes: yaml-language-server (VS Code's YAML
/// extension and others) validates and completes against the schema file beside it.
pub fn schema_comment() -> String {
    format!("# yaml-language-server: $schema=./{SCHEMA_FILE}")
}

/// `init`: writes a starter manifest at `-f` (refusing to overwrite one without `--force`)
/// and the JSON Schema beside it as `models.schema.json` (always rewritten: it is generated,
/// and matches this modelsync), so editors validate offline.
#[allow(
    clippy::needless_pass_by_value,
    reason = "every command takes its parsed arguments by value"
)]
pub fn init(ctx: &Context, a: InitArgs) -> anyhow::Result<Status> {
    let path = &ctx.manifest_path;
    if path.exists() && !a.force {
        anyhow::bail!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        );
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let schema_path = dir.join(SCHEMA_FILE);
    write_atomic(&schema_path, &manifest::schema::json_schema_string())?;
    if a.from_store {
        return init_from_store(ctx, path, &schema_path);
    }
    write_atomic(path, &format!("{}\n{STARTER}", schema_comment()))?;
    if ctx.output == OutputFormat::Json {
        let doc = serde_json::json!({"manifest": path, "schema": schema_path});
        writeln!(std::io::stdout(), "{doc}")?;
    } else if ctx.printer.talks() {
        writeln!(
            std::io::stdout(),
            "Wrote {} and {}.\nNext: add models to it, then run `modelsync diff` and `modelsync apply`.",
            path.display(),
            schema_path.display()
        )?;
    }
    Ok(Status::Success)
}

/// `init --from-store`: the manifest of the store (see [`crate::adopt::manifest`]), written,
/// parsed back, and its entries' spec hashes stamped on the records under the store lock.
fn init_from_store(ctx: &Context, path: &Path, schema_path: &Path) -> anyhow::Result<Status> {
    let (models_dir, database) = ctx.store_paths()?;
    if !database.exists() {
        anyhow::bail!(
            "no record store at {}: nothing to declare (pass --models-dir / --database)",
            database.display()
        );
    }
    let _lock = ctx.lock_store("declare its records in a manifest")?;
    let store = crate::store::open(&database)?;
    let records = store.all_models()?;
    let default_db = models_dir.join("modelsync.db");
    let generated = crate::adopt::manifest_from_store(
        &records,
        &models_dir,
        (database != default_db).then_some(database.as_path()),
    );
    write_atomic(path, &format!("{}\n{}", schema_comment(), generated.text))?;
    let m = manifest::load(path)
        .with_context(|| format!("reading back the manifest written to {}", path.display()))?;
    let n = crate::adopt::take_over(store.as_ref(), &m, &generated.entries)?;
    if ctx.output == OutputFormat::Json {
        let doc = serde_json::json!({"manifest": path, "schema": schema_path, "entries": n});
        writeln!(std::io::stdout(), "{doc}")?;
    } else if ctx.printer.talks() {
        writeln!(
            std::io::stdout(),
            "Wrote {} with {n} entr{} (one per record, in place) and {}; the records are now managed by it.\nNext: `modelsync diff` shows nothing to do; edit the manifest to change what this machine holds.",
            path.display(),
            if n == 1 { "y" } else { "ies" },
            schema_path.display()
        )?;
    }
    Ok(Status::Success)
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    // Temp files are created 0600; a manifest is meant to be read by others.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `schema`: prints the manifest JSON Schema (the content of `schemas/models.schema.json`).
pub fn schema(_ctx: &Context) -> anyhow::Result<Status> {
    std::io::stdout().write_all(manifest::schema::json_schema_string().as_bytes())?;
    Ok(Status::Success)
}
