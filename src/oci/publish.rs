//! `modelsync publish`: the fleet's manifest, written from the manifest that was applied and
//! where each entry was pushed.
//!
//! Every entry keeps its fields as written (`${VAR}`s unexpanded: name, dest, hash, tags,
//! description, preload, precision, `config:` hints, unsafe_pickle); its `source` becomes the
//! pushed `oci://HOST/PREFIX/REPO:TAG@sha256:…`, pinned by digest, and the fields that belong
//! to the old source's kind (`variant`, `subfolder`, `revision`, `include`, `exclude`,
//! `token`, `inplace`, `username`, `password`) go. `settings` stay as written, plus
//! `registries.HOST.insecure` when the push was plain HTTP. Comments are not carried over.
//! The repository of an entry is its name made a repository component ([`repository_name`]).

use serde_json::{Map, Value};

/// Fields of an entry that describe a source other than an `oci://` one.
const SOURCE_FIELDS: &[&str] = &[
    "variant",
    "subfolder",
    "revision",
    "include",
    "exclude",
    "token",
    "inplace",
    "username",
    "password",
];

/// Why the fleet manifest could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The manifest text does not parse as YAML.
    #[error("the manifest is not valid YAML: {0}")]
    Yaml(String),
    /// Its shape is not a manifest's (no `models` list of mappings).
    #[error("{0}")]
    Shape(String),
}

/// An entry name as one repository path component: lowercase ASCII letters and digits, runs
/// of anything else one `-` (`SDXL Base 1.0` → `sdxl-base-1-0`); `model` when nothing is left.
pub fn repository_name(entry: &str) -> String {
    let mut out = String::new();
    for c in entry.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        "model".to_owned()
    } else {
        out
    }
}

/// The fleet manifest: `manifest_text` (the applied manifest, as written) with each entry
/// named in `pinned` (entry name → `oci://…@sha256:…`) pointing there; `insecure_host` is
/// added to `settings.registries` as plain HTTP. Entries not in `pinned` are left out.
pub fn fleet_manifest(
    manifest_text: &str,
    pinned: &[(String, String)],
    insecure_host: Option<&str>,
) -> Result<String, PublishError> {
    let mut doc: Value =
        serde_saphyr::from_str(manifest_text).map_err(|e| PublishError::Yaml(e.to_string()))?;
    let root = doc
        .as_object_mut()
        .ok_or_else(|| PublishError::Shape("the manifest is not a mapping".into()))?;
    if let Some(host) = insecure_host {
        let settings = root
            .entry("settings")
            .or_insert_with(|| Value::Object(Map::new()));
        if settings.is_null() {
            *settings = Value::Object(Map::new());
        }
        if let Some(s) = settings.as_object_mut() {
            let regs = s
                .entry("registries")
                .or_insert_with(|| Value::Object(Map::new()));
            if !regs.is_object() {
                *regs = Value::Object(Map::new());
            }
            if let Some(r) = regs.as_object_mut() {
                r.insert(host.to_owned(), serde_json::json!({"insecure": true}));
            }
        }
    }
    let models = root
        .get_mut("models")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| PublishError::Shape("the manifest has no `models` list".into()))?;
    let mut kept = Vec::new();
    for m in models.drain(..) {
        let Value::Object(mut entry) = m else {
            continue;
        };
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some((_, source)) = pinned.iter().find(|(n, _)| n == name) else {
            continue;
        };
        entry.insert("source".into(), Value::String(source.clone()));
        for f in SOURCE_FIELDS {
            entry.remove(*f);
        }
        kept.push(Value::Object(entry));
    }
    *models = kept;
    let mut out = String::from(
        "# Written by `modelsync publish`: every entry's source is the artifact it was pushed to,\n# pinned by digest.\n",
    );
    emit(&doc, 0, &mut out);
    Ok(out)
}

/// Block YAML of a JSON value (strings double-quoted as JSON, which YAML reads the same).
fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                out.push_str(&pad);
                out.push_str(&key(k));
                out.push(':');
                emit_value(val, indent, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        // The first key on the dash's line, the rest under it.
                        let mut first = true;
                        for (k, val) in m {
                            if first {
                                out.push(' ');
                                first = false;
                            } else {
                                out.push_str(&pad);
                                out.push_str("  ");
                            }
                            out.push_str(&key(k));
                            out.push(':');
                            emit_value(val, indent + 2, out);
                        }
                    }
                    other => emit_value(other, indent + 2, out),
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

/// After `key:` or `-`: a scalar on the same line, a collection on the lines below.
fn emit_value(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit(v, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit(v, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !k.starts_with(['-', '.']);
    if plain {
        k.to_owned()
    } else {
        Value::String(k.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        assert_eq!(repository_name("SDXL Base 1.0"), "sdxl-base-1-0");
        assert_eq!(repository_name("vae"), "vae");
        assert_eq!(repository_name("--x__y--"), "x-y");
        assert_eq!(repository_name("日本"), "model");
    }

    #[test]
    fn fleet_manifest_pins_sources_and_keeps_hints() {
        let text = r#"
version: 1
settings:
  models_dir: /models
models:
  - name: sdxl-vae
    source: madebyollin/sdxl-vae-fp16-fix
    variant: fp16
    include: ["*.safetensors"]
    token: ${HF_TOKEN}
    config: {base: sdxl, type: vae}
    hash: "blake3:00ff"
    tags: [a, "b c"]
  - name: not-pushed
    source: x/y
"#;
        let src = format!(
            "oci://reg:5000/fleet/sdxl-vae:latest@sha256:{}",
            "a".repeat(64)
        );
        let out =
            fleet_manifest(text, &[("sdxl-vae".into(), src.clone())], Some("reg:5000")).unwrap();
        let v: Value = serde_saphyr::from_str(&out).unwrap();
        let models = v["models"].as_array().unwrap();
        assert_eq!(models.len(), 1, "{out}");
        let e = &models[0];
        assert_eq!(e["source"], Value::String(src), "{out}");
        for f in ["variant", "include", "token"] {
            assert!(e.get(f).is_none(), "{f} kept:\n{out}");
        }
        assert_eq!(e["config"]["base"], "sdxl");
        assert_eq!(e["hash"], "blake3:00ff");
        assert_eq!(e["tags"], serde_json::json!(["a", "b c"]));
        assert_eq!(v["settings"]["models_dir"], "/models");
        assert_eq!(v["settings"]["registries"]["reg:5000"]["insecure"], true);
        assert!(fleet_manifest("[1]", &[], None).is_err());
    }
}
