//! `push` (one record to a registry as a ModelPack artifact) and `publish` (every entry of
//! the manifest, and the fleet's manifest of where they went).
//!
//! Credentials for the target registry come from the Docker config (`docker login`,
//! `oras login`, `$DOCKER_CONFIG`), else the push is anonymous; `--plain-http` (or the
//! manifest's `settings.registries.HOST.insecure`) talks HTTP to a test or in-cluster
//! registry.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

use super::output::{OutputFormat, print_json};
use super::{Context, Status};
use crate::events::{NullReporter, Reporter};
use crate::oci::push::{PushEvent, PushOptions, PushOutcome, Pusher};
use crate::oci::{OciReference, RegistryClient, RegistrySettings, docker_credentials};
use crate::store::RecordStore;
use crate::units::HumanBytes;

/// Shared by `push` and `publish`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Files up to this size go up in one request, larger ones in chunks of this size.
    #[arg(long, value_name = "SIZE", default_value = "64MiB")]
    pub chunk_size: String,
    /// Mount blobs from this repository of the same registry when it has them (repeatable).
    #[arg(long, value_name = "REPO")]
    pub mount_from: Vec<String>,
    /// Talk plain HTTP to the registry (a test or in-cluster registry).
    #[arg(long)]
    pub plain_http: bool,
}

/// `push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// A record key, name or unique key prefix (as `show` takes).
    pub model: String,
    /// Where: `oci://HOST[:PORT]/REPO[:TAG]` (tag `latest` when none).
    pub target: String,
    #[command(flatten)]
    pub upload: UploadArgs,
}

/// `publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Where: `oci://HOST[:PORT]/PREFIX`; each entry goes to `PREFIX/<entry name>`
    /// (lowercased, other characters `-`).
    #[arg(long, value_name = "oci://HOST/PREFIX")]
    pub to: String,
    /// The tag every entry is pushed under (the fleet manifest pins digests either way).
    #[arg(long, default_value = "latest")]
    pub tag: String,
    /// Write the fleet's manifest here (default: stdout, the summary then going to stderr).
    #[arg(long, value_name = "PATH")]
    pub write: Option<PathBuf>,
    #[command(flatten)]
    pub upload: UploadArgs,
}

/// Prints push events as lines on stderr.
struct Lines;

impl Reporter<PushEvent> for Lines {
    fn report(&self, e: &PushEvent) {
        let line = match e {
            PushEvent::PushStarted {
                reference,
                files,
                total_bytes,
            } => format!(
                "pushing {files} file(s), {} to {reference}",
                HumanBytes(*total_bytes)
            ),
            PushEvent::BlobSkipped { path, .. } => format!("  {path}: in the registry already"),
            PushEvent::BlobMounted { path, from, .. } => format!("  {path}: mounted from {from}"),
            PushEvent::BlobUploaded {
                path, size, chunks, ..
            } => format!(
                "  {path}: uploaded {} in {chunks} request(s)",
                HumanBytes(*size)
            ),
            PushEvent::BlobUploading { .. } | PushEvent::PushCompleted { .. } => return,
        };
        eprintln!("{line}");
    }
}

fn reporter(ctx: &Context) -> Box<dyn Reporter<PushEvent>> {
    if !ctx.printer.talks() || ctx.output == OutputFormat::Json {
        Box::new(NullReporter)
    } else {
        Box::new(Lines)
    }
}

fn options(a: &UploadArgs) -> anyhow::Result<PushOptions> {
    let chunk_size = crate::units::parse_size(&a.chunk_size)
        .map_err(|e| anyhow::anyhow!("--chunk-size: {e}"))?;
    if chunk_size == 0 {
        bail!("--chunk-size must be more than 0");
    }
    Ok(PushOptions {
        chunk_size,
        mount_from: a.mount_from.clone(),
    })
}

fn client(
    mut registries: crate::oci::Registries,
    target: &OciReference,
    plain_http: bool,
) -> anyhow::Result<RegistryClient> {
    if plain_http {
        registries.insert(target.registry.clone(), RegistrySettings { insecure: true });
    }
    Ok(RegistryClient::new(registries)?)
}

fn summary(o: &PushOutcome) -> String {
    format!(
        "{}: {} uploaded ({}), {} already there, {} mounted",
        o.reference,
        o.uploaded.len(),
        HumanBytes(o.uploaded_bytes),
        o.skipped.len(),
        o.mounted.len()
    )
}

/// `push`: one record as a ModelPack artifact.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the command signature every cli fn shares"
)]
pub fn push(ctx: &Context, a: PushArgs) -> anyhow::Result<Status> {
    let target = OciReference::parse(&a.target)?;
    let opts = options(&a.upload)?;
    let (models_dir, database) = ctx.store_paths()?;
    let Some(store) = ctx.read_store()? else {
        bail!(
            "no model `{}`: there is no record store at {}",
            a.model,
            database.display()
        );
    };
    let record = super::records::find(store.as_ref(), &a.model)?;
    let root = record.resolved_path(&models_dir);
    let client = client(ctx.registries()?, &target, a.upload.plain_http)?;
    let creds = docker_credentials(&target.registry);
    let reporter = reporter(ctx);
    let outcome = ctx.runtime()?.block_on(async {
        let mut pusher = Pusher::new(&client, creds, reporter.as_ref());
        pusher.push(&record, &root, &target, &opts).await
    });
    let outcome = outcome.with_context(|| format!("pushing {} to {target}", record.name()))?;
    if ctx.output == OutputFormat::Json {
        print_json(&serde_json::to_value(&outcome)?)?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", outcome.reference)?;
        out.flush()?;
        if ctx.printer.talks() {
            eprintln!("{}", summary(&outcome));
        }
    }
    Ok(Status::Success)
}

/// `publish`: every entry of the manifest pushed, then the fleet's manifest.
///
/// Every entry must be converged first (its record managed by it, at the entry's spec, and
/// its files in place): otherwise nothing is pushed and the entries are named, so a fleet
/// manifest never misses a model. Entries go to `PREFIX/<repository_name(entry)>:TAG`, one
/// after the other; a blob pushed for one entry is mounted into another that shares it.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the command signature every cli fn shares"
)]
pub fn publish(ctx: &Context, a: PublishArgs) -> anyhow::Result<Status> {
    let prefix = OciReference::parse(&a.to)?;
    if prefix.tag.is_some() || prefix.digest.is_some() {
        bail!(
            "--to {}: give the registry and a repository prefix only (the tag is --tag)",
            a.to
        );
    }
    let opts = options(&a.upload)?;
    let manifest = ctx.manifest()?;
    let text = std::fs::read_to_string(&manifest.path)
        .with_context(|| format!("reading {}", manifest.path.display()))?;
    let models_dir = manifest.settings.models_dir.clone();
    if let Some(b) = manifest.broken.first() {
        bail!("entry `{}` cannot be published: {}", b.name, b.reason);
    }
    let store: Option<Box<dyn RecordStore>> = ctx.read_store()?;
    let records = match &store {
        Some(s) => s.all_models()?,
        None => Vec::new(),
    };
    let mut plan = Vec::new();
    let mut missing = Vec::new();
    let mut repos = std::collections::HashMap::new();
    for entry in &manifest.models {
        let found = records.iter().find(|r| {
            r.common().managed.as_ref().is_some_and(|m| {
                m.entry == entry.name && m.spec_hash == entry.spec_hash.to_string()
            })
        });
        let Some(record) = found.filter(|r| r.resolved_path(&models_dir).exists()) else {
            missing.push(entry.name.clone());
            continue;
        };
        let repo = format!(
            "{}/{}",
            prefix.repository,
            crate::oci::publish::repository_name(&entry.name)
        );
        if let Some(other) = repos.insert(repo.clone(), entry.name.clone()) {
            bail!(
                "entries `{other}` and `{}` would both go to {repo}; rename one",
                entry.name
            );
        }
        let target = OciReference::parse(&format!(
            "{}{}/{repo}:{}",
            crate::oci::reference::SCHEME,
            prefix.registry,
            a.tag
        ))?;
        plan.push((entry.name.clone(), record.clone(), target));
    }
    if !missing.is_empty() {
        bail!(
            "not converged, so not published: {} (run `modelsync apply` first)",
            missing.join(", ")
        );
    }
    let client = client(
        manifest.settings.registries.clone(),
        &prefix,
        a.upload.plain_http,
    )?;
    let creds = docker_credentials(&prefix.registry);
    let reporter = reporter(ctx);
    let outcomes = ctx.runtime()?.block_on(async {
        let mut pusher = Pusher::new(&client, creds, reporter.as_ref());
        let mut out = Vec::new();
        for (name, record, target) in &plan {
            let root = record.resolved_path(&models_dir);
            let o = pusher
                .push(record, &root, target, &opts)
                .await
                .with_context(|| format!("pushing entry `{name}` to {target}"))?;
            out.push((name.clone(), o));
        }
        anyhow::Ok(out)
    })?;
    let pinned: Vec<(String, String)> = outcomes
        .iter()
        .map(|(n, o)| (n.clone(), o.reference.clone()))
        .collect();
    let insecure = a.upload.plain_http.then_some(prefix.registry.as_str());
    let fleet = crate::oci::publish::fleet_manifest(&text, &pinned, insecure)?;
    // The fleet manifest must load as a manifest before anyone ships it.
    crate::manifest::parse_str(&fleet, &manifest.path, &|k| std::env::var(k).ok())
        .context("the fleet manifest written does not load")?;
    let summary_to_stdout = a.write.is_some();
    if let Some(p) = &a.write {
        std::fs::write(p, &fleet).with_context(|| format!("writing {}", p.display()))?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(fleet.as_bytes())?;
        out.flush()?;
    }
    if ctx.output == OutputFormat::Json && summary_to_stdout {
        let v: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|(n, o)| serde_json::json!({"entry": n, "push": o}))
            .collect();
        print_json(&serde_json::Value::Array(v))?;
    } else if ctx.printer.talks() {
        for (n, o) in &outcomes {
            let line = format!("{n}: {}", summary(o));
            if summary_to_stdout {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }
    Ok(Status::Success)
}
