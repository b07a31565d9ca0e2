//! `import`: the seed's `heuristic_import` — one imperative, unmanaged install.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};

use super::reconcile::progress::{file_style, part_label, total_style};
use serde_json::{Map, Value};

use super::output::{OutputFormat, print_json};
use super::{Context, Status};
use crate::download::DownloadQueueConfig;
use crate::events::{Event, NullReporter, Reporter};
use crate::hub::ModelSource;
use crate::install::{InstallConfig, InstallEvent, job_outcome};
use crate::manager::ModelManager;
use crate::store::lock::StoreLock;

/// How long `import` waits for another process that is changing the store.
const LOCK_TIMEOUT: Duration = Duration::from_mins(5);

/// `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A local path, an HF repo id (`owner/name[:variant][:subfolder]`, `owner/name::path`) or a URL.
    pub source: String,
    /// Register a local model where it is instead of copying it into models_dir.
    #[arg(long)]
    pub inplace: bool,
    /// The record's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Install another copy even when the source is installed already (without it, the
    /// existing record is shown).
    #[arg(long)]
    pub force: bool,
    /// Config overrides, `key=value` (repeatable), e.g. `--config base=sdxl`. Values that parse
    /// as JSON are taken as JSON (`--config 'tags=["a","b"]'`), others as strings.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
}

/// Parses `--config k=v` pairs: JSON values when they parse, else strings.
pub fn parse_config(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for kv in pairs {
        let Some((k, v)) = kv.split_once('=') else {
            anyhow::bail!("--config `{kv}`: expected KEY=VALUE");
        };
        let k = k.trim();
        if k.is_empty() {
            anyhow::bail!("--config `{kv}`: empty key");
        }
        let value =
            serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        map.insert(k.to_owned(), value);
    }
    Ok(map)
}

/// Progress bars from install events: a total bar and one per file still downloading.
struct Bars {
    multi: MultiProgress,
    state: Mutex<BarState>,
}

#[derive(Default)]
struct BarState {
    total: Option<ProgressBar>,
    parts: HashMap<usize, ProgressBar>,
    spinner: Option<ProgressBar>,
}

impl Bars {
    fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            state: Mutex::new(BarState::default()),
        }
    }

    fn clear(st: &mut BarState) {
        for (_, b) in st.parts.drain() {
            b.finish_and_clear();
        }
        if let Some(t) = st.total.take() {
            t.finish_and_clear();
        }
        if let Some(s) = st.spinner.take() {
            s.finish_and_clear();
        }
    }
}

impl Reporter for Bars {
    fn report(&self, event: &Event) {
        let Event::Install(ev) = event else { return };
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match ev {
            InstallEvent::ModelInstallDownloading {
                source,
                local_path,
                bytes,
                total_bytes,
                parts,
                ..
            } => {
                // Nothing to draw until a size is known (no empty bar).
                if st.total.is_none() && *total_bytes == 0 {
                    return;
                }
                let total = st.total.get_or_insert_with(|| {
                    let b = self
                        .multi
                        .add(ProgressBar::new(*total_bytes).with_position(*bytes));
                    b.set_style(total_style());
                    b.set_prefix("total");
                    b
                });
                total.set_length((*total_bytes).max(*bytes));
                total.set_position(*bytes);
                for (i, p) in parts.iter().enumerate() {
                    let finished = p.total_bytes > 0 && p.bytes >= p.total_bytes;
                    if finished {
                        if let Some(b) = st.parts.remove(&i) {
                            b.finish_and_clear();
                        }
                        continue;
                    }
                    if p.bytes == 0 && !st.parts.contains_key(&i) {
                        continue;
                    }
                    let multi = &self.multi;
                    let bar = st.parts.entry(i).or_insert_with(|| {
                        let b = multi.add(ProgressBar::new(p.total_bytes).with_position(p.bytes));
                        b.set_style(file_style());
                        b.set_prefix(source.clone());
                        b.set_message(part_label(local_path, &p.local_path));
                        b
                    });
                    bar.set_length(p.total_bytes.max(p.bytes));
                    bar.set_position(p.bytes);
                }
            }
            InstallEvent::ModelInstallRunning { source, .. } => {
                Self::clear(&mut st);
                let s = self.multi.add(ProgressBar::new_spinner());
                s.set_message(format!("probing, hashing and registering {source}"));
                s.enable_steady_tick(Duration::from_millis(120));
                st.spinner = Some(s);
            }
            _ => Self::clear(&mut st),
        }
    }
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "the command signature every cli fn shares"
)]
pub fn import(ctx: &Context, a: ImportArgs) -> anyhow::Result<Status> {
    let (models_dir, database) = ctx.store_paths()?;
    let registries = ctx.registries()?;
    let mut config = parse_config(&a.config)?;
    if let Some(n) = &a.name {
        config.insert("name".into(), Value::String(n.clone()));
    }
    let mut source = ModelSource::parse(&a.source)?;
    if let ModelSource::Oci(o) = &mut source {
        o.apply_settings(&registries);
    }
    match &mut source {
        ModelSource::Local(l) => l.inplace = a.inplace,
        _ if a.inplace => {
            anyhow::bail!(
                "--inplace applies to local paths only; `{}` is remote",
                a.source
            )
        }
        _ => {}
    }
    std::fs::create_dir_all(&models_dir)
        .with_context(|| format!("cannot create {}", models_dir.display()))?;
    let _lock = StoreLock::acquire(&database, LOCK_TIMEOUT, |holder| {
        if !ctx.quiet {
            eprintln!(
                "waiting for the lock on {} held by {holder}",
                database.display()
            );
        }
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let reporter: Arc<dyn Reporter> = if ctx.progress {
        Arc::new(Bars::new())
    } else {
        Arc::new(NullReporter)
    };
    let outcome = rt.block_on(async {
        let cfg = InstallConfig::from_env(&models_dir, None)?;
        let manager = ModelManager::open(
            cfg,
            &database,
            DownloadQueueConfig::default(),
            reporter.clone(),
        )?;
        let rec = manager.recovery();
        for p in &rec.rolled_back {
            tracing::info!("rolled back an unfinished install: {}", p.display());
        }
        for p in &rec.removed {
            tracing::info!("removed stale staging {}", p.display());
        }
        let request = crate::install::InstallRequest::new(source, config).with_options(
            crate::install::InstallOptions {
                force: a.force,
                ..crate::install::InstallOptions::default()
            },
        );
        let job = manager.install().submit(request)?;
        let job = manager.install().wait_for_job(job.id, None).await?;
        anyhow::Ok((job_outcome(&job)?, manager))
    });
    // Bars are cleared by the final event; make sure nothing is left on an early error.
    drop(reporter);
    let (outcome, manager) = outcome?;
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    if outcome.existing && !ctx.quiet {
        eprintln!(
            "{} is installed already as {}; nothing was fetched (--force installs another copy)",
            outcome.source, outcome.key
        );
    }
    let record = &outcome.record;
    if ctx.output == OutputFormat::Json {
        print_json(&record.to_json())?;
        return Ok(Status::Success);
    }
    let mut fields: Vec<(String, String)> = record
        .to_json()
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "source_api_response")
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    fields.push(("resolved_path".into(), outcome.path.display().to_string()));
    if let Some(c) = &outcome.commit {
        fields.push(("commit".into(), c.clone()));
    }
    fields.push(("files".into(), outcome.files.len().to_string()));
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for (k, v) in fields {
        writeln!(out, "{:width$}  {v}", format!("{k}:"), width = width + 1)?;
    }
    out.flush()?;
    drop(manager);
    Ok(Status::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_json_when_they_parse() {
        let m = parse_config(&[
            "base=sdxl".into(),
            "tags=[\"a\",\"b\"]".into(),
            "upcast_attention=true".into(),
            "name=a=b".into(),
        ])
        .unwrap();
        assert_eq!(m["base"], "sdxl");
        assert_eq!(m["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(m["upcast_attention"], true);
        assert_eq!(m["name"], "a=b");
        assert!(parse_config(&["novalue".into()]).is_err());
    }
}
