//! `modelsync init --from-store`: a manifest of what the store holds, so an adopted install
//! can be managed declaratively.
//!
//! Each record becomes one entry: named after the record (or after the entry that already
//! manages it; a repeated name gets `-<key prefix>`), its source the model's absolute path,
//! registered in place (`inplace: true`: nothing is copied), with `config: {type, base}` hints
//! so a re-probe (a repair, a replace) identifies the same model, and the record's description
//! and tags. Then every record is stamped as managed by its entry with the entry's spec hash,
//! so applying the manifest at once is a no-op. A model that should be repaired from the Hub
//! instead gets its `source:` edited by hand (that is a replace: the files are fetched again).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::config::AnyModelConfig;
use crate::manifest::Manifest;
use crate::store::{ConfigChange, RecordStore, StoreError};
use crate::taxonomy::{BaseModelType, ModelType};

/// The manifest text and, per entry, the key of its record.
#[derive(Debug, Clone)]
pub struct StoreManifest {
    /// The YAML.
    pub text: String,
    /// `(entry name, record key)`, in manifest order.
    pub entries: Vec<(String, String)>,
}

fn quote(s: &str) -> String {
    // A JSON string is a YAML double-quoted scalar.
    Value::String(s.to_owned()).to_string()
}

fn entry_name(record: &AnyModelConfig, taken: &mut HashSet<String>) -> String {
    let c = record.common();
    let base: String = c
        .managed
        .as_ref()
        .map_or(c.name.as_str(), |m| m.entry.as_str())
        .chars()
        .map(|ch| if ch.is_control() { '_' } else { ch })
        .collect::<String>()
        .trim()
        .to_owned();
    let base = if base.is_empty() { c.key.clone() } else { base };
    let mut name = base.clone();
    if taken.contains(&name) {
        name = format!("{base}-{}", &c.key[..c.key.len().min(8)]);
    }
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{}-{n}", &c.key[..c.key.len().min(8)]);
        n += 1;
    }
    taken.insert(name.clone());
    name
}

/// Writes the manifest of `records` (see the module docs). `models_dir` and `database` are
/// written as given (absolute is safest); `database: None` leaves the default.
pub fn manifest_from_store(
    records: &[AnyModelConfig],
    models_dir: &Path,
    database: Option<&Path>,
) -> StoreManifest {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Written by `modelsync init --from-store`: one entry per record, each registered in\n# place where its files are. `modelsync diff` shows nothing to do until you edit it."
    );
    let _ = writeln!(text, "version: 1\nsettings:");
    let _ = writeln!(
        text,
        "  models_dir: {}",
        quote(&abs(models_dir).to_string_lossy())
    );
    if let Some(db) = database {
        let _ = writeln!(text, "  database: {}", quote(&abs(db).to_string_lossy()));
    }
    if records.is_empty() {
        let _ = writeln!(text, "models: []");
        return StoreManifest {
            text,
            entries: Vec::new(),
        };
    }
    let _ = writeln!(text, "models:");
    let mut taken = HashSet::new();
    let mut entries = Vec::new();
    for r in records {
        let c = r.common();
        let name = entry_name(r, &mut taken);
        let path = abs(&r.resolved_path(models_dir));
        let _ = writeln!(text, "  - name: {}", quote(&name));
        let _ = writeln!(text, "    source: {}", quote(&path.to_string_lossy()));
        let _ = writeln!(text, "    inplace: true");
        let mut hints = Vec::new();
        if r.model_type() != ModelType::Unknown {
            hints.push(format!("type: {}", quote(r.model_type().as_str())));
        }
        if r.base() != BaseModelType::Unknown {
            hints.push(format!("base: {}", quote(r.base().as_str())));
        }
        if !hints.is_empty() {
            let _ = writeln!(text, "    config: {{ {} }}", hints.join(", "));
        }
        if let Some(d) = c.description.as_deref().filter(|d| !d.is_empty()) {
            let _ = writeln!(text, "    description: {}", quote(d));
        }
        if !c.tags.is_empty() {
            let tags: Vec<String> = c.tags.iter().map(|t| quote(t)).collect();
            let _ = writeln!(text, "    tags: [{}]", tags.join(", "));
        }
        entries.push((name, c.key.clone()));
    }
    StoreManifest { text, entries }
}

/// Marks each record as managed by its entry of `manifest` (the manifest written from
/// [`manifest_from_store`] and parsed back), with the entry's spec hash. Returns how many.
pub fn take_over(
    store: &dyn RecordStore,
    manifest: &Manifest,
    entries: &[(String, String)],
) -> Result<usize, StoreError> {
    let mut n = 0;
    for (name, key) in entries {
        let Some(entry) = manifest.entry(name) else {
            continue;
        };
        let mut change = Map::new();
        change.insert(
            "managed".into(),
            json!({"entry": name, "spec_hash": entry.spec_hash.to_string()}),
        );
        store.update_model(key, ConfigChange::Sparse(change))?;
        n += 1;
    }
    Ok(n)
}
