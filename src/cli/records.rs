//! `list`, `show`, `remove`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;

use super::output::{OutputFormat, print_json, write_table};
use super::{Context, Status};
use crate::config::AnyModelConfig;
use crate::store::{self, RecordStore, StoreError};
use crate::taxonomy::{BaseModelType, ModelFormat, ModelType};

/// Characters of the key shown in tables; `show` and `remove` accept any unique prefix.
const SHORT_KEY: usize = 8;

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only records with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only this model type.
    #[arg(long = "type")]
    pub model_type: Option<String>,
    /// Only this base model.
    #[arg(long)]
    pub base: Option<String>,
    /// Only this format.
    #[arg(long)]
    pub format: Option<String>,
    /// Only records with all these tags (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
}

/// `show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A record key or name.
    pub model: String,
}

/// `remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// A record key, name or unique key prefix (as `show` takes); a name several records share
    /// is refused with their keys.
    pub key: String,
    /// Also delete the model's files (only inside models_dir).
    #[arg(long)]
    pub delete_files: bool,
}

/// Opens the store for a query. A store that does not exist yet is not created by a query:
/// `None` (no records).
/// (models_dir, database, the store if it exists).
type QueryStore = (PathBuf, PathBuf, Option<Box<dyn RecordStore>>);

fn open_for_query(ctx: &Context) -> anyhow::Result<QueryStore> {
    let (models_dir, database) = ctx.store_paths()?;
    Ok((models_dir, database, ctx.read_store()?))
}

/// `list`: the records matching every filter, as a table or a JSON array.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the command signature every cli fn shares"
)]
pub fn list(ctx: &Context, a: ListArgs) -> anyhow::Result<Status> {
    let model_type = a
        .model_type
        .as_deref()
        .map(str::parse::<ModelType>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--type: {e}"))?;
    let base = a
        .base
        .as_deref()
        .map(str::parse::<BaseModelType>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--base: {e}"))?;
    let format = a
        .format
        .as_deref()
        .map(str::parse::<ModelFormat>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--format: {e}"))?;
    let (_, database, store) = open_for_query(ctx)?;
    let records = match store {
        None => Vec::new(),
        Some(store) => {
            let mut found = store.search_by_name(a.name.as_deref(), base, model_type)?;
            if !a.tag.is_empty() {
                let tagged: std::collections::HashSet<String> = store
                    .search_by_tag(&a.tag)?
                    .iter()
                    .map(|m| m.key().to_owned())
                    .collect();
                found.retain(|m| tagged.contains(m.key()));
            }
            if let Some(f) = format {
                found.retain(|m| m.format() == f);
            }
            found
        }
    };
    if ctx.output == OutputFormat::Json {
        print_json(&serde_json::Value::Array(
            records.iter().map(AnyModelConfig::to_json).collect(),
        ))?;
        return Ok(Status::Success);
    }
    if records.is_empty() {
        ctx.printer
            .say(format_args!("no matching models in {}", database.display()));
        return Ok(Status::Success);
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|m| {
            vec![
                m.key().chars().take(SHORT_KEY).collect(),
                m.name().to_owned(),
                m.model_type().to_string(),
                m.base().to_string(),
                m.format().to_string(),
                m.path().to_owned(),
            ]
        })
        .collect();
    let mut out = std::io::stdout().lock();
    write_table(
        &mut out,
        &["KEY", "NAME", "TYPE", "BASE", "FORMAT", "PATH"],
        &rows,
    )?;
    out.flush()?;
    let unknown = records
        .iter()
        .filter(|m| m.model_type() == ModelType::Unknown)
        .count();
    if unknown > 0 && ctx.printer.talks() {
        eprintln!(
            "{unknown} model(s) of type `unknown`: no probe rule identified them and `load` refuses them; {}",
            crate::config::IDENTIFY_HINT
        );
    }
    Ok(Status::Success)
}

/// `show`: one record by key, name or unique key prefix.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the command signature every cli fn shares"
)]
pub fn show(ctx: &Context, a: ShowArgs) -> anyhow::Result<Status> {
    let (models_dir, database, store) = open_for_query(ctx)?;
    let Some(store) = store else {
        bail!(
            "no model `{}`: there is no record store at {} yet",
            a.model,
            database.display()
        );
    };
    let record = find(store.as_ref(), &a.model)?;
    if ctx.output == OutputFormat::Json {
        print_json(&record.to_json())?;
        return Ok(Status::Success);
    }
    let json = record.to_json();
    let mut fields: Vec<(String, String)> = json
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    let resolved = record.resolved_path(&models_dir);
    if resolved.as_path() != Path::new(record.path()) {
        fields.push(("resolved_path".into(), resolved.display().to_string()));
    }
    let files = store.model_files(record.key())?;
    if !files.is_empty() {
        fields.push(("files".into(), files.len().to_string()));
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for (k, v) in fields {
        writeln!(out, "{:width$}  {v}", format!("{k}:"), width = width + 1)?;
    }
    out.flush()?;
    Ok(Status::Success)
}

/// `remove`: deletes a record (by key, name or unique key prefix, as `show`), and with `--delete-files` its
/// files, which must lie inside models_dir.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the command signature every cli fn shares"
)]
pub fn remove(ctx: &Context, a: RemoveArgs) -> anyhow::Result<Status> {
    let (models_dir, database) = ctx.store_paths()?;
    if !database.exists() {
        bail!(
            "no model `{}`: there is no record store at {}",
            a.key,
            database.display()
        );
    }
    let _lock = ctx.lock_store("remove a record")?;
    let store = store::open(&database)?;
    let record = find(store.as_ref(), &a.key)?;
    // Checks first, then the record, then the files: a kill in between leaves an orphan that
    // `gc` collects, never a record whose files are gone.
    let target = record.resolved_path(&models_dir);
    let mut present = false;
    if a.delete_files {
        match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    "{} does not exist; removing only the record",
                    target.display()
                );
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot inspect {}", target.display()));
            }
            Ok(_) => {
                check_inside(&models_dir, &target)?;
                present = true;
            }
        }
    }
    store.del_model(record.key())?;
    let mut deleted = None;
    if present {
        crate::install::service::pause_point("delete");
        std::fs::symlink_metadata(&target)
            .with_context(|| format!("cannot inspect {}", target.display()))
            .and_then(|md| {
                if md.is_dir() {
                    std::fs::remove_dir_all(&target)
                } else {
                    std::fs::remove_file(&target)
                }
                .with_context(|| {
                    format!(
                        "the record {} is removed, but deleting {} failed (`modelsync gc` collects it)",
                        record.key(),
                        target.display()
                    )
                })
            })?;
        // A single-file model lives in `<key>/<file>`: the folder goes with the file.
        crate::install::staging::remove_empty_parents(&models_dir, &target);
        deleted = Some(target);
    }
    if ctx.output == OutputFormat::Json {
        print_json(&serde_json::json!({
            "removed": record.to_json(),
            "deleted_path": deleted.as_ref().map(|p| p.display().to_string()),
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "removed {} ({})", record.name(), record.key())?;
        if let Some(p) = &deleted {
            writeln!(out, "deleted {}", p.display())?;
        }
        out.flush()?;
    }
    Ok(Status::Success)
}

/// Refuses to delete `target` unless it lies strictly inside `models_dir`. Symlinks in the
/// folder part are resolved; the last component is not, so a link inside models_dir is
/// deleted as a link and never followed.
fn check_inside(models_dir: &Path, target: &Path) -> anyhow::Result<()> {
    let refuse = |why: &str| {
        anyhow::anyhow!(
            "refusing to delete {}: {why}; nothing was removed (without --delete-files only the record is removed)",
            target.display()
        )
    };
    let root = models_dir.canonicalize().map_err(|e| {
        refuse(&format!(
            "models folder {} is not accessible: {e}",
            models_dir.display()
        ))
    })?;
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(refuse("it has no parent folder"));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let real = parent
        .canonicalize()
        .map_err(|e| refuse(&format!("cannot resolve its folder: {e}")))?
        .join(name);
    if real == root || !real.starts_with(&root) || name == ".." || name == "." {
        return Err(refuse(&format!(
            "it is not inside the models folder {}",
            root.display()
        )));
    }
    Ok(())
}

/// Finds a record by exact key, then by name, then by unique key prefix.
pub(super) fn find(store: &dyn RecordStore, query: &str) -> anyhow::Result<AnyModelConfig> {
    let location = store.location().display().to_string();
    match store.get_model(query) {
        Ok(m) => return Ok(m),
        Err(StoreError::UnknownModel(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let describe = |ms: &[AnyModelConfig]| {
        ms.iter()
            .map(|m| format!("{} ({} {} {})", m.key(), m.name(), m.model_type(), m.base()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let named = store.search_by_name(Some(query), None, None)?;
    match named.len() {
        0 => {}
        1 => return Ok(named.into_iter().next().expect("one element")),
        n => bail!(
            "{n} models are named `{query}`: {}; use a key",
            describe(&named)
        ),
    }
    if query.len() >= 4 {
        let mut prefixed: Vec<AnyModelConfig> = store
            .all_models()?
            .into_iter()
            .filter(|m| m.key().starts_with(query))
            .collect();
        match prefixed.len() {
            0 => {}
            1 => return Ok(prefixed.remove(0)),
            n => bail!(
                "{n} models have keys starting with `{query}`: {}",
                describe(&prefixed)
            ),
        }
    }
    bail!("no model with key or name `{query}` in {location}")
}
