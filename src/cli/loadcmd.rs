//! `load`: loads one model through the cache and reports what it took.

use std::time::Instant;

use anyhow::Context as _;
use clap::Args;

use super::{Context, OutputFormat, Status};
use crate::load::{DeviceSpec, LoadSettings, ModelLoadService, Precision};
use crate::store::StoreError;
use crate::taxonomy::SubModelType;
use crate::units::{HumanBytes, parse_size};
use crate::{AnyModelConfig, RecordStore};

/// `load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// A record key or name.
    pub model: String,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Submodel of a main model (unet, vae, text_encoder …).
    #[arg(long)]
    pub submodel: Option<String>,
    /// RAM budget of the cache.
    #[arg(long, default_value = "8GiB", value_name = "SIZE")]
    pub ram: String,
    /// VRAM budget of the cache.
    #[arg(long, default_value = "16GiB", value_name = "SIZE")]
    pub vram: String,
    /// Precision of device copies: auto (keep the file's), fp16, bf16 or fp32.
    #[arg(long, default_value = "auto")]
    pub precision: String,
}

/// The record with this key, else the one record with this name.
fn find(store: &dyn RecordStore, what: &str) -> anyhow::Result<AnyModelConfig> {
    match store.get_model(what) {
        Ok(c) => return Ok(c),
        Err(StoreError::UnknownModel(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut found = store.search_by_name(Some(what), None, None)?;
    match found.len() {
        0 => anyhow::bail!(
            "no model with key or name `{what}` in {}",
            store.location().display()
        ),
        1 => Ok(found.remove(0)),
        n => anyhow::bail!(
            "{n} models are named `{what}`; use a key: {}",
            found
                .iter()
                .map(AnyModelConfig::key)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "every command takes its args by value (see cli/mod.rs)"
)]
pub fn load(ctx: &Context, a: LoadArgs) -> anyhow::Result<Status> {
    let device: DeviceSpec = a.device.parse().context("--device")?;
    let precision: Precision = a.precision.parse().context("--precision")?;
    let submodel = a
        .submodel
        .as_deref()
        .map(str::parse::<SubModelType>)
        .transpose()
        .context("--submodel")?;
    let settings = LoadSettings {
        ram: parse_size(&a.ram).context("--ram")?,
        vram: parse_size(&a.vram).context("--vram")?,
        device,
        precision,
        ..LoadSettings::default()
    };
    let (models_dir, database) = ctx.store_paths()?;
    // Opening creates a missing store; a read-only command should not.
    if !database.exists() {
        anyhow::bail!(
            "no model store at {} (run `modelsync apply` or `modelsync import` first, or pass --database)",
            database.display()
        );
    }
    let store = crate::store::open(&database)?;
    let config = find(store.as_ref(), &a.model)?;
    let service = ModelLoadService::new(&models_dir, &settings)?;

    let start = Instant::now();
    let loaded = service
        .load_model(&config, submodel)
        .with_context(|| format!("loading {} (`{}`)", config.key(), config.name()))?;
    let loaded_at = start.elapsed();
    let guard = loaded.lock()?;
    let total = start.elapsed();
    let stats = service.cache().stats();
    let device = service.cache().device();
    let host_bytes = loaded.model().bytes();
    let device_bytes = guard.device_bytes();
    let tensors = guard.tensor_count();
    drop(guard);

    match ctx.output {
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "key": config.key(),
                "name": config.name(),
                "submodel": submodel,
                "backend": service.cache().backend_name(),
                "device": device,
                "precision": precision,
                "host_bytes": host_bytes,
                "device_bytes": device_bytes,
                "tensors": tensors,
                "load_seconds": loaded_at.as_secs_f64(),
                "total_seconds": total.as_secs_f64(),
                "cache": stats,
            });
            println!("{doc}");
        }
        OutputFormat::Text => {
            let what = submodel.map_or_else(
                || config.name().to_owned(),
                |s| format!("{}:{s}", config.name()),
            );
            println!(
                "loaded {what} ({}) on {device} [{} backend]",
                config.key(),
                service.cache().backend_name()
            );
            println!("  tensors: {tensors}");
            println!("  host:    {}", HumanBytes(host_bytes));
            if device_bytes > 0 {
                println!("  device:  {} ({precision})", HumanBytes(device_bytes));
            }
            println!(
                "  time:    {:.3}s (read {:.3}s)",
                total.as_secs_f64(),
                loaded_at.as_secs_f64()
            );
        }
    }
    Ok(Status::Success)
}
