//! Adopting an InvokeAI install (`modelsync adopt invokeai ROOT`).
//!
//! What InvokeAI keeps (6.x, checked against a real 6.14 root made by its own code, in
//! `tests/fixtures/invokeai-6.14/`):
//! - `ROOT/invokeai.yaml` may move the models folder (`models_dir`, default `models`) and the
//!   database folder (`db_dir`, default `databases`), both relative to the root;
//! - `<db_dir>/invokeai.db` is SQLite in WAL mode; its `models` table has the key in `id` and
//!   the whole record as JSON in `config` (the other columns are generated from it);
//! - a record's relative `path` is relative to the models folder, an in-place model's is
//!   absolute.
//!
//! The database is never opened where it lies: a WAL database cannot be opened read-only in
//! a folder the reader cannot write (SQLite wants its `-shm`), and a running InvokeAI must not
//! see a second writer. It and its `-wal`, when there is one, are copied to a temporary folder
//! and read there.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{
    AdoptError, AdoptOptions, AdoptReport, AdoptState, AdoptedModel, fingerprints, stored_path,
};
use crate::config::{AnyModelConfig, resolve_path};
use crate::store::RecordStore;

/// The part of `invokeai.yaml` adopting needs.
#[derive(Debug, Default, Deserialize)]
struct InvokeAiYaml {
    #[serde(default)]
    models_dir: Option<String>,
    #[serde(default)]
    db_dir: Option<String>,
}

/// One row of InvokeAI's `models` table.
#[derive(Debug, Clone)]
pub struct InvokeAiRecord {
    /// `id`.
    pub key: String,
    /// `config`, parsed.
    pub config: Value,
}

/// What an InvokeAI root holds.
#[derive(Debug, Clone)]
pub struct InvokeAiInstall {
    /// The root.
    pub root: PathBuf,
    /// Its database.
    pub database: PathBuf,
    /// Its models folder.
    pub models_dir: PathBuf,
    /// Its records, by key.
    pub records: Vec<InvokeAiRecord>,
}

/// Reads an InvokeAI root: its config, then its database (on a copy).
pub fn read_install(root: &Path) -> Result<InvokeAiInstall, AdoptError> {
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let yaml_path = root.join("invokeai.yaml");
    let yaml: InvokeAiYaml = match std::fs::read_to_string(&yaml_path) {
        Ok(text) => serde_saphyr::from_str(&text).map_err(|e| AdoptError::NotAnInstall {
            path: yaml_path.clone(),
            reason: format!("not an InvokeAI config: {e}"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => InvokeAiYaml::default(),
        Err(source) => {
            return Err(AdoptError::Io {
                op: "reading",
                path: yaml_path,
                source,
            });
        }
    };
    let under_root = |p: Option<&str>, default: &str| {
        let p = Path::new(p.unwrap_or(default));
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        }
    };
    let models_dir = under_root(yaml.models_dir.as_deref(), "models");
    let database = under_root(yaml.db_dir.as_deref(), "databases").join("invokeai.db");
    if !database.is_file() {
        return Err(AdoptError::NotAnInstall {
            path: root.clone(),
            reason: format!(
                "no InvokeAI database at {} (is this an InvokeAI root?)",
                database.display()
            ),
        });
    }
    let records = read_records(&database)?;
    Ok(InvokeAiInstall {
        root,
        database,
        models_dir,
        records,
    })
}

fn read_records(database: &Path) -> Result<Vec<InvokeAiRecord>, AdoptError> {
    let tmp = tempfile::tempdir().map_err(|source| AdoptError::Io {
        op: "creating a temporary folder for a copy of",
        path: database.to_path_buf(),
        source,
    })?;
    let copy = tmp.path().join("invokeai.db");
    let copy_file = |from: &Path, to: &Path| {
        std::fs::copy(from, to).map_err(|source| AdoptError::Io {
            op: "copying",
            path: from.to_path_buf(),
            source,
        })
    };
    copy_file(database, &copy)?;
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    if wal.is_file() {
        copy_file(&wal, &tmp.path().join("invokeai.db-wal"))?;
    }
    let db_err = |source| AdoptError::Database {
        path: database.to_path_buf(),
        source,
    };
    let conn = rusqlite::Connection::open(&copy).map_err(db_err)?;
    let has_models: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'models'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(db_err)?
        > 0;
    if !has_models {
        return Err(AdoptError::NotAnInstall {
            path: database.to_path_buf(),
            reason: "the database has no `models` table (not an InvokeAI 4+ database)".into(),
        });
    }
    let mut stmt = conn
        .prepare("SELECT id, config FROM models ORDER BY id")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(db_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (key, config) = row.map_err(db_err)?;
        // A row whose JSON does not parse becomes a conflict row of the report, not an error.
        let config = serde_json::from_str(&config).unwrap_or(Value::Null);
        out.push(InvokeAiRecord { key, config });
    }
    Ok(out)
}

fn text(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// One record, planned: the row of the report and the record to write (for `Import`).
fn plan_one(
    install: &InvokeAiInstall,
    r: &InvokeAiRecord,
    existing: &[AnyModelConfig],
    opts: &AdoptOptions,
) -> (AdoptedModel, Option<AnyModelConfig>) {
    let source_path = text(&r.config, "path");
    let resolved = resolve_path(&install.models_dir, &source_path);
    let path = stored_path(&opts.models_dir, &resolved);
    let mut row = AdoptedModel {
        key: r.key.clone(),
        name: text(&r.config, "name"),
        model_type: text(&r.config, "type"),
        base: text(&r.config, "base"),
        format: text(&r.config, "format"),
        source_path,
        resolved_path: resolved.clone(),
        path: path.clone(),
        state: AdoptState::Import,
        reason: String::new(),
    };
    let conflict = |mut row: AdoptedModel, why: String| {
        row.state = AdoptState::Conflict;
        row.reason = why;
        (row, None)
    };
    if std::fs::symlink_metadata(&resolved).is_err() {
        row.state = AdoptState::Missing;
        row.reason = format!(
            "files missing at {}: not imported (InvokeAI keeps it and warns \"Missing model file\")",
            resolved.display()
        );
        return (row, None);
    }
    let mut config = r.config.clone();
    let Some(obj) = config.as_object_mut() else {
        return conflict(row, "its `config` column is not a JSON object".into());
    };
    obj.insert("key".into(), Value::String(r.key.clone()));
    obj.insert("path".into(), Value::String(path.clone()));
    let record = match AnyModelConfig::from_json(config) {
        Ok(rec) => rec,
        Err(e) => return conflict(row, format!("not a record modelsync reads: {e}")),
    };
    if let Some(old) = existing.iter().find(|e| e.key() == r.key) {
        let same = old.path() == path && old.common().hash == record.common().hash;
        if same {
            row.state = AdoptState::Present;
            row.reason = "already in the store".into();
            return (row, None);
        }
        return conflict(
            row,
            format!(
                "the store has another record with this key (`{}` at {})",
                old.name(),
                old.path()
            ),
        );
    }
    if let Some(old) = existing.iter().find(|e| e.path() == path) {
        return conflict(
            row,
            format!(
                "record `{}` ({}) already points at {path}",
                old.name(),
                old.key()
            ),
        );
    }
    row.reason = if Path::new(&path).is_absolute() {
        "stays where it is (absolute path)".into()
    } else {
        "inside models_dir".into()
    };
    (row, Some(record))
}

/// What adopting `root` would do against the store's `existing` records; writes nothing.
pub fn plan_invokeai(
    root: &Path,
    existing: &[AnyModelConfig],
    opts: &AdoptOptions,
) -> Result<AdoptReport, AdoptError> {
    let install = read_install(root)?;
    let models = install
        .records
        .iter()
        .map(|r| plan_one(&install, r, existing, opts).0)
        .collect();
    let mut report = AdoptReport {
        root: install.root.clone(),
        database: install.database.clone(),
        source_models_dir: install.models_dir.clone(),
        applied: false,
        models,
        totals: super::AdoptTotals::default(),
    };
    report.count();
    Ok(report)
}

/// Adopts `root` into `store`: every record whose files are there and whose key and path are
/// free is added with its file fingerprints. With `write` false it is [`plan_invokeai`]. The
/// caller holds the store lock.
pub fn adopt_invokeai(
    root: &Path,
    store: &dyn RecordStore,
    opts: &AdoptOptions,
    write: bool,
) -> Result<AdoptReport, AdoptError> {
    let existing = store.all_models()?;
    if !write {
        return plan_invokeai(root, &existing, opts);
    }
    let install = read_install(root)?;
    let mut models = Vec::new();
    for r in &install.records {
        let (mut row, record) = plan_one(&install, r, &existing, opts);
        if let Some(record) = record {
            let files = fingerprints(&row.resolved_path)?;
            store.add_model(&r.key, record)?;
            if let Err(e) = store.set_model_files(&r.key, &files) {
                let _ = store.del_model(&r.key);
                return Err(e.into());
            }
            row.state = AdoptState::Imported;
        }
        models.push(row);
    }
    let mut report = AdoptReport {
        root: install.root.clone(),
        database: install.database.clone(),
        source_models_dir: install.models_dir.clone(),
        applied: true,
        models,
        totals: super::AdoptTotals::default(),
    };
    report.count();
    Ok(report)
}
