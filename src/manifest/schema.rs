//! The manifest's JSON Schema, generated from the wire types in [`super::parse`].
//!
//! The checked-in copy is `schemas/models.schema.json`; a test fails when it is stale.
//! Regenerate it with `MODELSYNC_BLESS=1 cargo test --test it manifest` or
//! `modelsync schema > schemas/models.schema.json`.

use super::parse::ManifestFile;

/// Where the checked-in schema lives, relative to the repository root.
pub const SCHEMA_REPO_PATH: &str = "schemas/models.schema.json";

/// The schema as a JSON value.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ManifestFile)).unwrap_or(serde_json::Value::Null)
}

/// The schema as the checked-in file holds it: pretty JSON ending in a newline.
pub fn json_schema_string() -> String {
    let mut s = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_denies_unknown_keys_and_describes_fields() {
        let s = super::json_schema();
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], serde_json::json!(["version"]));
        let entry = &s["$defs"]["EntryFile"];
        assert_eq!(entry["additionalProperties"], false);
        assert!(
            entry["properties"]["source"]["description"]
                .as_str()
                .unwrap()
                .contains("owner/name")
        );
        assert_eq!(
            s["$defs"]["SettingsFile"]["properties"]["variant"]["anyOf"][0]["$ref"],
            "#/$defs/ModelRepoVariant"
        );
        assert_eq!(
            s["$defs"]["ModelRepoVariant"]["enum"]
                .as_array()
                .map(Vec::len),
            Some(6)
        );
    }
}
