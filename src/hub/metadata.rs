//! The seed's model metadata ("This Meta be Good"): `HuggingFaceMetadata`, kept as JSON in a
//! record's `source_api_response`, and `AnyModelRepoMetadata`, the union discriminated by
//! `type`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::info::ModelInfo;
use super::spec::DownloadSpec;

/// One file of the repo that was installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteModelFile {
    /// Where it was downloaded from (the `/resolve/` URL; never carries a token).
    pub url: String,
    /// Path inside the repo.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content, when the Hub told us (LFS files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Metadata of a Hugging Face model (the seed's `HuggingFaceMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuggingFaceMetadata {
    /// The repo id.
    pub id: String,
    /// The repo's name for the model (the part after the owner).
    pub name: String,
    /// The model's author (owner).
    #[serde(default)]
    pub author: Option<String>,
    /// Repo tags.
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Tags of the form `key:value`, split at the first `:`; a key seen more than once maps to
    /// an array of its values, in tag order.
    #[serde(default)]
    pub tag_dict: BTreeMap<String, serde_json::Value>,
    /// Date of the last commit (RFC 3339, as the Hub sent it).
    #[serde(default)]
    pub last_modified: Option<String>,
    /// The commit the files came from.
    #[serde(default)]
    pub commit: Option<String>,
    /// The files installed from the repo.
    #[serde(default)]
    pub files: Vec<RemoteModelFile>,
}

/// The union of repo metadata kinds, tagged by `type` (only `huggingface` so far).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AnyModelRepoMetadata {
    /// Hugging Face.
    #[serde(rename = "huggingface")]
    HuggingFace(HuggingFaceMetadata),
}

/// Metadata JSON that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid model metadata JSON")]
pub struct MetadataError(#[from] serde_json::Error);

/// Splits `key:value` tags into a dictionary.
pub fn tag_dict(tags: &[String]) -> BTreeMap<String, serde_json::Value> {
    let mut out: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for t in tags {
        let Some((k, v)) = t.split_once(':') else {
            continue;
        };
        if k.is_empty() {
            continue;
        }
        let v = serde_json::Value::String(v.to_owned());
        match out.get_mut(k) {
            None => {
                out.insert(k.to_owned(), v);
            }
            Some(serde_json::Value::Array(a)) => a.push(v),
            Some(prev) => {
                let first = prev.take();
                *prev = serde_json::Value::Array(vec![first, v]);
            }
        }
    }
    out
}

impl HuggingFaceMetadata {
    /// Builds the metadata from the model info and the download specs of the selected files.
    pub fn from_info(info: &ModelInfo, files: &[DownloadSpec]) -> Self {
        let name = info
            .id
            .rsplit_once('/')
            .map_or(info.id.as_str(), |(_, n)| n)
            .to_owned();
        let author = info
            .author
            .clone()
            .or_else(|| info.id.split_once('/').map(|(o, _)| o.to_owned()));
        Self {
            id: info.id.clone(),
            name,
            author,
            tags: info.tags.iter().cloned().collect(),
            tag_dict: tag_dict(&info.tags),
            last_modified: info.last_modified.clone(),
            commit: info.sha.clone(),
            files: files
                .iter()
                .map(|s| RemoteModelFile {
                    url: s.url.to_string(),
                    path: s.repo_path.clone(),
                    size: s.size,
                    sha256: match &s.expected {
                        super::spec::ExpectedHash::Sha256(h) => Some(h.clone()),
                        super::spec::ExpectedHash::GitBlobSha1(_) => None,
                    },
                })
                .collect(),
        }
    }

    /// The tagged JSON form (`{"type": "huggingface", …}`) for `source_api_response`.
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(AnyModelRepoMetadata::HuggingFace(self.clone()))
            .unwrap_or(serde_json::Value::Null)
    }

    /// The tagged JSON form as a string.
    pub fn to_json(&self) -> String {
        self.to_json_value().to_string()
    }

    /// Parses the tagged JSON form (what [`Self::to_json`] writes).
    pub fn from_json(s: &str) -> Result<Self, MetadataError> {
        let AnyModelRepoMetadata::HuggingFace(m) = serde_json::from_str(s)?;
        Ok(m)
    }

    /// Parses the tagged JSON value (a record's `source_api_response`).
    pub fn from_json_value(v: &serde_json::Value) -> Result<Self, MetadataError> {
        let AnyModelRepoMetadata::HuggingFace(m) = AnyModelRepoMetadata::deserialize(v)?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::info::Gated;

    fn info() -> ModelInfo {
        ModelInfo {
            id: "runwayml/stable-diffusion-v1-5".into(),
            sha: Some("a".repeat(40)),
            last_modified: Some("2024-01-02T03:04:05.000Z".into()),
            private: false,
            gated: Gated::No,
            tags: vec![
                "diffusers".into(),
                "license:creativeml-openrail-m".into(),
                "dataset:a".into(),
                "dataset:b".into(),
                "base_model:x/y".into(),
            ],
            author: None,
            card_data: None,
            pipeline_tag: None,
            library_name: None,
            siblings: vec![],
        }
    }

    #[test]
    fn from_info_and_round_trip() {
        let spec = DownloadSpec {
            url: reqwest::Url::parse("http://h/r/resolve/c/unet/x.safetensors").unwrap(),
            repo_id: "runwayml/stable-diffusion-v1-5".into(),
            repo_path: "unet/x.safetensors".into(),
            dest: "unet/x.safetensors".into(),
            size: 10,
            expected: super::super::spec::ExpectedHash::Sha256("b".repeat(64)),
            access_token: None,
        };
        let m = HuggingFaceMetadata::from_info(&info(), &[spec]);
        assert_eq!(m.name, "stable-diffusion-v1-5");
        assert_eq!(m.author.as_deref(), Some("runwayml"));
        assert_eq!(
            m.tag_dict["license"],
            serde_json::json!("creativeml-openrail-m")
        );
        assert_eq!(m.tag_dict["dataset"], serde_json::json!(["a", "b"]));
        assert_eq!(m.tag_dict["base_model"], serde_json::json!("x/y"));
        assert!(!m.tag_dict.contains_key("diffusers"));
        let json = m.to_json();
        assert!(json.contains("\"type\":\"huggingface\""), "{json}");
        assert_eq!(HuggingFaceMetadata::from_json(&json).unwrap(), m);
        assert_eq!(
            HuggingFaceMetadata::from_json_value(&m.to_json_value()).unwrap(),
            m
        );
        assert!(HuggingFaceMetadata::from_json(r#"{"type":"civitai","id":"x"}"#).is_err());
        assert!(HuggingFaceMetadata::from_json("not json").is_err());
    }
}
