//! The command line: clap definitions, settings resolution, printers. Only this module prints.
//!
//! Exit codes, everywhere: 0 success, 1 error, 2 changes/drift pending (only where
//! documented), 3 the plan does not fit on disk. A broken pipe on stdout is success.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod context;
mod fetch;
mod identify;
mod import;
mod loadcmd;
mod output;
mod push;
mod reconcile;
mod records;
mod sync;
mod watchcmd;

pub use context::{Context, Overrides};
pub use output::{OutputFormat, Printer};

/// Exit statuses with a meaning (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 0: done, in sync, clean.
    Success,
    /// 1: an error.
    Error,
    /// 2: changes or drift pending, or a suspicious scan.
    Pending,
    /// 3: the plan does not fit on disk.
    DoesNotFit,
    /// 130: stopped by Ctrl-C (or SIGTERM) half-way; partial downloads are kept.
    Interrupted,
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> Self {
        ExitCode::from(match s {
            Status::Success => 0,
            Status::Error => 1,
            Status::Pending => 2,
            Status::DoesNotFit => 3,
            Status::Interrupted => 130,
        })
    }
}

/// Declarative model manager: keeps model files in the state declared in models.yaml.
#[derive(Debug, Parser)]
#[command(name = "modelsync", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The manifest.
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        env = "MODELSYNC_FILE",
        default_value = "models.yaml"
    )]
    pub file: PathBuf,
    /// Models folder (overrides the manifest's settings.models_dir; default ./models).
    #[arg(long, global = true, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Record store, .db/.sqlite or .yaml (overrides settings.database; default <models_dir>/modelsync.db).
    #[arg(long, global = true, value_name = "PATH")]
    pub database: Option<PathBuf>,
    /// The lock file (overrides settings.lock_file; default beside the manifest, models.yaml → models.lock).
    #[arg(long, global = true, value_name = "PATH")]
    pub lock_file: Option<PathBuf>,
    /// Output format: text for people, json for programs.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail and log output (-v info, -vv debug, -vvv trace); no progress bars.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Give up waiting for another process's store lock after this long (every command that
    /// changes the store; default: settings.lock_timeout, 5m).
    #[arg(long, global = true, value_name = "DUR", value_parser = parse_duration)]
    pub lock_timeout: Option<std::time::Duration>,
    /// When to use colour (NO_COLOR is honoured with auto).
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::units::parse_duration(s).map_err(|e| e.to_string())
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stderr/stdout is a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter models.yaml.
    Init(reconcile::InitArgs),
    /// Show what apply would change (exit 0 in sync, 2 changes pending with --exit-code).
    Diff(reconcile::DiffArgs),
    /// Converge the store and the disk to the manifest.
    Apply(reconcile::ApplyArgs),
    /// Drift report: manifest vs store vs disk (exit 0 in sync, 2 drift).
    Status(reconcile::StatusArgs),
    /// Keep converging: on manifest change and every interval; serves health and metrics.
    Watch(watchcmd::WatchArgs),
    /// Install one model imperatively (unmanaged by the manifest).
    Import(import::ImportArgs),
    /// List model records.
    List(records::ListArgs),
    /// Show one record by key or name.
    Show(records::ShowArgs),
    /// Remove a record (and with --delete-files its files inside models_dir).
    Remove(records::RemoveArgs),
    /// Identify a model file or folder (type, base, format, variant).
    Probe(identify::ProbeArgs),
    /// Hash a model file or folder.
    Hash(identify::HashArgs),
    /// Scan pickle files for dangerous imports (exit 0 clean, 2 suspicious or dangerous).
    Scan(identify::ScanArgs),
    /// Re-hash installed models against their records and the lock.
    Verify(reconcile::VerifyArgs),
    /// Load a model through the cache and report bytes, time and device.
    Load(loadcmd::LoadArgs),
    /// Print the manifest JSON Schema.
    Schema,
    /// Remove stale partial downloads, the download cache and orphan files (dry run unless --yes).
    Gc(reconcile::GcArgs),
    /// Register models in models_dir that no record owns, report records whose files are gone
    /// (dry run unless --yes).
    Sync(sync::SyncArgs),
    /// Take over another tool's install: its records and models, in place (dry run unless --yes).
    Adopt(sync::AdoptArgs),
    /// Publish one record to an OCI registry as a ModelPack artifact.
    Push(push::PushArgs),
    /// Push every converged entry to an OCI registry and write the fleet's manifest, its
    /// sources `oci://…` pinned by digest.
    Publish(push::PublishArgs),
    /// Download one URL through the queue (for tests and benchmarks).
    #[command(hide = true)]
    Fetch(fetch::FetchArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    run(std::env::args_os()).into()
}

/// Parses `args` and runs the command; returns the exit status.
pub fn run<I, T>(args: I) -> Status
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Status::Success
                }
                _ => Status::Error,
            };
        }
    };
    let ctx = Context::new(&cli.global);
    output::init_logging(&ctx);
    let result = match cli.command {
        Command::Init(a) => reconcile::init(&ctx, a),
        Command::Diff(a) => reconcile::diff(&ctx, a),
        Command::Apply(a) => reconcile::apply(&ctx, a),
        Command::Status(a) => reconcile::status(&ctx, a),
        Command::Watch(a) => watchcmd::watch(&ctx, a),
        Command::Import(a) => import::import(&ctx, a),
        Command::List(a) => records::list(&ctx, a),
        Command::Show(a) => records::show(&ctx, a),
        Command::Remove(a) => records::remove(&ctx, a),
        Command::Probe(a) => identify::probe(&ctx, a),
        Command::Hash(a) => identify::hash(&ctx, a),
        Command::Scan(a) => identify::scan(&ctx, a),
        Command::Verify(a) => reconcile::verify(&ctx, a),
        Command::Load(a) => loadcmd::load(&ctx, a),
        Command::Schema => reconcile::schema(&ctx),
        Command::Gc(a) => reconcile::gc(&ctx, a),
        Command::Sync(a) => sync::sync(&ctx, a),
        Command::Adopt(a) => sync::adopt(&ctx, a),
        Command::Push(a) => push::push(&ctx, a),
        Command::Publish(a) => push::publish(&ctx, a),
        Command::Fetch(a) => fetch::fetch(&ctx, a),
    };
    match result {
        Ok(status) => status,
        Err(e) if output::is_broken_pipe(&e) => Status::Success,
        Err(e) => {
            output::print_error(&ctx, &e);
            Status::Error
        }
    }
}
