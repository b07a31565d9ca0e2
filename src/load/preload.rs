//! Glue between the load service and the rest of modelsync: budgets from the manifest's
//! `settings.cache`, a pickle gate backed by [`crate::scan`], and the
//! [`Preloader`](crate::reconcile::apply::Preloader) that `apply --preload` and `watch` call.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{LoadError, LoadEvent, LoadSettings, ModelLoadService, Precision};
use crate::config::AnyModelConfig;
use crate::events::Reporter;
use crate::manifest::{CacheSettings, ModelEntry};
use crate::retry::Failure;
use crate::scan::{ScanVerdict, scan_path};
use crate::units::HumanBytes;

impl LoadSettings {
    /// Budgets, device, precision and keep-alive from the manifest's `settings.cache`; unset
    /// budgets keep the defaults (8 GiB RAM, 16 GiB VRAM, 3 GiB working memory).
    pub fn from_cache_settings(cache: &CacheSettings) -> Result<Self, LoadError> {
        let defaults = Self::default();
        Ok(Self {
            ram: cache.ram.unwrap_or(defaults.ram),
            vram: cache.vram.unwrap_or(defaults.vram),
            working_memory: cache.working_memory.unwrap_or(defaults.working_memory),
            device: cache.device.parse()?,
            precision: parse_precision(&cache.precision)?,
            keep_alive: cache.keep_alive,
            pin_preloaded: cache.pin_preloaded,
            ..defaults
        })
    }
}

/// A precision string the manifest parser checked.
fn parse_precision(s: &str) -> Result<Precision, LoadError> {
    s.parse().map_err(|_| LoadError::InvalidPrecision {
        value: s.to_owned(),
    })
}

/// Allows a pickle checkpoint only when the scanner finds nothing but known-safe imports.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanGate;

impl super::PickleGate for ScanGate {
    fn check(&self, path: &Path) -> Result<(), String> {
        let report = scan_path(path).map_err(|e| crate::retry::one_line(&e))?;
        match report.verdict {
            ScanVerdict::Clean => Ok(()),
            verdict => {
                let imports: Vec<String> = report
                    .globals
                    .iter()
                    .filter(|g| !matches!(g.class, crate::scan::GlobalClass::Safe))
                    .map(|g| format!("{}.{}", g.module, g.name))
                    .collect();
                Err(format!(
                    "pickle scan of {} is {verdict} (imports {}); only clean pickles are loaded",
                    path.display(),
                    imports.join(", ")
                ))
            }
        }
    }
}

/// Builds the load service the CLI and the reconciler use: manifest budgets, the scanner as
/// pickle gate, events to `reporter`.
pub fn service_for(
    models_dir: &Path,
    cache: &CacheSettings,
    reporter: Arc<dyn Reporter<LoadEvent>>,
) -> Result<ModelLoadService, LoadError> {
    Ok(
        ModelLoadService::new(models_dir, &LoadSettings::from_cache_settings(cache)?)?
            .with_pickle_gate(Arc::new(ScanGate))
            .with_reporter(reporter),
    )
}

/// Warms `preload: true` entries into the load cache (for `apply --preload` and `watch`).
pub struct ServicePreloader {
    service: ModelLoadService,
}

impl ServicePreloader {
    /// Wraps a load service.
    pub fn new(service: ModelLoadService) -> Self {
        Self { service }
    }

    /// The service, e.g. for its cache statistics.
    pub fn service(&self) -> &ModelLoadService {
        &self.service
    }
}

impl crate::reconcile::apply::Preloader for ServicePreloader {
    fn check_fits(&self, records: &[AnyModelConfig]) -> Result<(), Failure> {
        self.service
            .check_preload_fits(records)
            .map(|_| ())
            .map_err(|e| Failure::from_error(&e))
    }

    fn preload(&self, entry: &str, record: &AnyModelConfig) -> Result<String, Failure> {
        self.preload_as(entry, record, None)
    }

    fn preload_entry(
        &self,
        entry: &ModelEntry,
        record: &AnyModelConfig,
    ) -> Result<String, Failure> {
        let precision = entry
            .precision
            .as_deref()
            .map(parse_precision)
            .transpose()
            .map_err(|e| {
                Failure::new(
                    crate::retry::FailureKind::Other,
                    format!("{}: {e}", entry.name),
                )
            })?;
        self.preload_as(&entry.name, record, precision)
    }
}

impl ServicePreloader {
    fn preload_as(
        &self,
        entry: &str,
        record: &AnyModelConfig,
        precision: Option<Precision>,
    ) -> Result<String, Failure> {
        // A record that changed since it was last warmed must not be served stale.
        self.service.cache().drop_model(record.key());
        let needed = self
            .service
            .check_preload_fits(std::slice::from_ref(record))
            .map_err(|e| Failure::from_error(&e).context(format!("preloading {entry}")))?;
        let started = Instant::now();
        let parts = self
            .service
            .preload_as(record, precision)
            .map_err(|e| Failure::from_error(&e).context(format!("preloading {entry}")))?;
        Ok(format!(
            "{} part(s), {} on {} in {:.2?}",
            parts.len(),
            HumanBytes(needed),
            self.service.cache().device(),
            started.elapsed()
        ))
    }
}
