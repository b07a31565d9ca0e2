//! Manifests, indexes and descriptors (the OCI image spec's JSON, read with serde; Docker's
//! schema 2 has the same fields), and what an artifact's layers become on disk ([`Artifact`]).
//!
//! | artifact | recognised by | a layer's path |
//! |---|---|---|
//! | CNCF ModelPack | artifactType `application/vnd.cncf.model.manifest.v1+json` or config `application/vnd.cncf.model.config.v1+json` | `org.cncf.model.filepath` (raw layers); tar layers unpack their own paths |
//! | KitOps ModelKit | artifactType or config `application/vnd.kitops.modelkit.*` | tar layers unpack their own paths; raw ones take `org.cncf.model.filepath` or the title |
//! | any other (ORAS) | — | `org.opencontainers.image.title`; `io.deis.oras.content.unpack: "true"` marks an `oras push DIR` tarball |
//!
//! Layer media types end in `.raw` (the file itself: its digest is its sha256, the Hub's LFS
//! oid), `.tar`, `.tar+gzip` or `.tar+zstd`; a plain ORAS file layer is raw whatever its
//! media type. zstd layers are refused with the media type named (no decoder is built in).
//! Every path is untrusted and goes through [`crate::hub::validate_repo_path`] as a Hub file
//! name does; tar entries are checked the same way when unpacked ([`super::unpack`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::OciError;

/// OCI image manifest.
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What a manifest GET accepts.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// ModelPack's artifact type.
pub const MODELPACK_ARTIFACT: &str = "application/vnd.cncf.model.manifest.v1+json";
/// ModelPack's config media type.
pub const MODELPACK_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
/// ModelPack's layer media types start with this.
pub const MODELPACK_LAYER_PREFIX: &str = "application/vnd.cncf.model.";
/// KitOps media types start with this.
pub const KITOPS_PREFIX: &str = "application/vnd.kitops.modelkit.";
/// A ModelPack layer's path.
pub const ANNOTATION_FILEPATH: &str = "org.cncf.model.filepath";
/// An ORAS layer's file name.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// ORAS: the layer is a tarball of a folder to unpack.
pub const ANNOTATION_ORAS_UNPACK: &str = "io.deis.oras.content.unpack";
/// A manifest's name in an index.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Largest manifest or index body read (Distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Most layers one artifact may have.
pub const MAX_LAYERS: usize = 10_000;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The content's media type.
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// An index entry's artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// An index entry's platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    /// A descriptor with no annotations.
    pub fn new(media_type: impl Into<String>, digest: impl Into<String>, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest: digest.into(),
            size,
            annotations: BTreeMap::new(),
            artifact_type: None,
            platform: None,
        }
    }
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// 2.
    pub schema_version: u32,
    /// The manifest's media type, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// OCI 1.1 artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, in order.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (or Docker manifest list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// 2.
    pub schema_version: u32,
    /// The index's media type, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest or an index, as the registry sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// An image manifest.
    Manifest(ImageManifest),
    /// An index.
    Index(ImageIndex),
}

impl Fetched {
    /// Parses a body by its `Content-Type` (or, without a useful one, by its `mediaType` field
    /// and shape: `manifests` makes an index).
    pub fn parse(content_type: Option<&str>, body: &[u8], what: &str) -> Result<Self, OciError> {
        let bad = |reason: String| OciError::BadManifest {
            reference: what.to_owned(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
        let ct = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_owned())
            .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
        let media = ct.or_else(|| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        });
        let is_index = match media.as_deref() {
            Some(MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST) => true,
            Some(MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST) => false,
            Some(other) if other.starts_with("application/vnd.docker.distribution.manifest.v1") => {
                return Err(bad(format!(
                    "media type {other} (Docker schema 1) is not supported"
                )));
            }
            _ => v.get("manifests").is_some(),
        };
        if is_index {
            let idx: ImageIndex =
                serde_json::from_value(v).map_err(|e| bad(format!("not an image index: {e}")))?;
            Ok(Self::Index(idx))
        } else {
            let m: ImageManifest = serde_json::from_value(v)
                .map_err(|e| bad(format!("not an image manifest: {e}")))?;
            if m.layers.len() > MAX_LAYERS {
                return Err(bad(format!(
                    "{} layers, more than the {MAX_LAYERS} modelsync reads",
                    m.layers.len()
                )));
            }
            Ok(Self::Manifest(m))
        }
    }
}

/// Which kind of model artifact a manifest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// CNCF ModelPack.
    ModelPack,
    /// KitOps ModelKit.
    KitOps,
    /// Any other artifact (as `oras push` makes them).
    Oras,
}

impl ArtifactKind {
    /// Of a manifest.
    pub fn of(m: &ImageManifest) -> Self {
        let at = m.artifact_type.as_deref().unwrap_or_default();
        let cfg = m.config.media_type.as_str();
        if at == MODELPACK_ARTIFACT || cfg == MODELPACK_CONFIG {
            Self::ModelPack
        } else if at.starts_with(KITOPS_PREFIX) || cfg.starts_with(KITOPS_PREFIX) {
            Self::KitOps
        } else {
            Self::Oras
        }
    }

    /// How it is named in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModelPack => "ModelPack",
            Self::KitOps => "KitOps ModelKit",
            Self::Oras => "OCI artifact",
        }
    }
}

/// How a layer's bytes become files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packing {
    /// The file itself, at this path.
    Raw(String),
    /// A tar archive, unpacked at the model's root.
    Tar,
    /// A gzip-compressed tar archive.
    TarGzip,
}

/// One layer to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The blob.
    pub descriptor: Descriptor,
    /// What to do with it.
    pub packing: Packing,
}

/// A manifest read as a model: which kind, and the layers that make its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The kind.
    pub kind: ArtifactKind,
    /// The layers to fetch, in manifest order.
    pub layers: Vec<Layer>,
}

impl Artifact {
    /// Reads `m` (of `what`, for messages). Refuses unsafe or duplicate paths, zstd and
    /// unknown packings; skips plain ORAS layers without a title, as `oras pull` does.
    pub fn from_manifest(m: &ImageManifest, what: &str) -> Result<Self, OciError> {
        let kind = ArtifactKind::of(m);
        let mut layers = Vec::new();
        let mut paths = BTreeSet::new();
        for d in &m.layers {
            super::reference::check_digest(&d.digest).map_err(|reason| OciError::BadManifest {
                reference: what.to_owned(),
                reason,
            })?;
            let Some(packing) = packing_of(kind, d)? else {
                continue;
            };
            if let Packing::Raw(p) = &packing {
                crate::hub::validate_repo_path(what, p)?;
                if !paths.insert(p.clone()) {
                    return Err(OciError::BadManifest {
                        reference: what.to_owned(),
                        reason: format!("two layers write the file {p:?}"),
                    });
                }
            }
            layers.push(Layer {
                descriptor: d.clone(),
                packing,
            });
        }
        if layers.is_empty() {
            return Err(OciError::BadManifest {
                reference: what.to_owned(),
                reason: format!(
                    "the {} has no layer modelsync can place (a file layer needs the annotation {ANNOTATION_FILEPATH} or {ANNOTATION_TITLE})",
                    kind.as_str()
                ),
            });
        }
        Ok(Self { kind, layers })
    }

    /// The one file of an artifact made of a single raw layer.
    pub fn single_file(&self) -> Option<&str> {
        match self.layers.as_slice() {
            [
                Layer {
                    packing: Packing::Raw(p),
                    ..
                },
            ] if !p.contains('/') => Some(p),
            _ => None,
        }
    }

    /// Total bytes of the layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.descriptor.size).sum()
    }
}

fn packing_of(kind: ArtifactKind, d: &Descriptor) -> Result<Option<Packing>, OciError> {
    let mt = d.media_type.as_str();
    let path = d
        .annotations
        .get(ANNOTATION_FILEPATH)
        .or_else(|| d.annotations.get(ANNOTATION_TITLE))
        .cloned();
    let unsupported = || OciError::UnsupportedMediaType {
        media_type: mt.to_owned(),
        digest: d.digest.clone(),
    };
    let model_typed = mt.starts_with(MODELPACK_LAYER_PREFIX) || mt.starts_with(KITOPS_PREFIX);
    if kind == ArtifactKind::Oras && !model_typed {
        let unpack = d
            .annotations
            .get(ANNOTATION_ORAS_UNPACK)
            .is_some_and(|v| v == "true");
        return Ok(match (path, unpack) {
            (None, _) => None,
            (Some(_), true) if mt.ends_with("gzip") => Some(Packing::TarGzip),
            (Some(_), true) if mt.ends_with("tar") => Some(Packing::Tar),
            (Some(_), true) => return Err(unsupported()),
            (Some(p), false) => Some(Packing::Raw(p)),
        });
    }
    // The packing is the media type's last `.` part: `raw`, `tar`, `tar+gzip`, `tar+zstd`
    // (KitOps also writes `v1+tar`, and `tar.gz`-style suffixes occur).
    let lower = mt.to_ascii_lowercase();
    let last = lower.rsplit('.').next().unwrap_or(&lower);
    let before = lower
        .strip_suffix(last)
        .and_then(|s| s.strip_suffix('.'))
        .map_or("", |s| s.rsplit('.').next().unwrap_or(s));
    match last {
        "tar+zstd" | "zstd" => return Err(unsupported()),
        "tar+gzip" => return Ok(Some(Packing::TarGzip)),
        "gz" | "gzip" if before == "tar" => return Ok(Some(Packing::TarGzip)),
        "tar" => return Ok(Some(Packing::Tar)),
        l if l.ends_with("+tar") => return Ok(Some(Packing::Tar)),
        _ => {}
    }
    if last == "raw" || !model_typed {
        return match path {
            Some(p) => Ok(Some(Packing::Raw(p))),
            None => Err(OciError::BadManifest {
                reference: d.digest.clone(),
                reason: format!(
                    "layer {} ({mt}) has no {ANNOTATION_FILEPATH} or {ANNOTATION_TITLE} annotation",
                    d.digest
                ),
            }),
        };
    }
    Err(unsupported())
}

/// An index's choice: the one model manifest in it, else an error listing every entry.
pub fn choose(index: &ImageIndex, what: &str) -> Result<Descriptor, OciError> {
    let is_model = |d: &Descriptor| {
        d.artifact_type
            .as_deref()
            .is_some_and(|a| a == MODELPACK_ARTIFACT || a.starts_with(KITOPS_PREFIX))
    };
    let manifests: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            matches!(
                d.media_type.as_str(),
                MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST
            )
        })
        .collect();
    let models: Vec<&Descriptor> = manifests.iter().copied().filter(|d| is_model(d)).collect();
    match (manifests.as_slice(), models.as_slice()) {
        ([one], _) | (_, [one]) => return Ok((*one).clone()),
        _ => {}
    }
    let mut choices: Vec<String> = index
        .manifests
        .iter()
        .take(50)
        .map(|d| {
            let mut s = d.digest.clone();
            for (label, v) in [
                ("name", d.annotations.get(ANNOTATION_REF_NAME).cloned()),
                ("title", d.annotations.get(ANNOTATION_TITLE).cloned()),
                ("artifactType", d.artifact_type.clone()),
                ("platform", d.platform.as_ref().map(ToString::to_string)),
            ] {
                if let Some(v) = v {
                    let _ = write!(s, " {label}={}", v.chars().take(120).collect::<String>());
                }
            }
            s
        })
        .collect();
    if index.manifests.len() > 50 {
        choices.push(format!("… and {} more", index.manifests.len() - 50));
    }
    Err(OciError::AmbiguousIndex {
        reference: what.to_owned(),
        choices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(media: &str, ann: &[(&str, &str)]) -> Descriptor {
        let mut x = Descriptor::new(media, format!("sha256:{}", "a".repeat(64)), 3);
        for (k, v) in ann {
            x.annotations.insert((*k).to_owned(), (*v).to_owned());
        }
        x
    }

    fn manifest(artifact: Option<&str>, config: &str, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_MANIFEST.into()),
            artifact_type: artifact.map(str::to_owned),
            config: Descriptor::new(config, format!("sha256:{}", "b".repeat(64)), 2),
            layers,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn kinds_and_paths() {
        let m = manifest(
            Some(MODELPACK_ARTIFACT),
            MODELPACK_CONFIG,
            vec![
                d(
                    "application/vnd.cncf.model.weight.v1.raw",
                    &[(ANNOTATION_FILEPATH, "unet/model.safetensors")],
                ),
                d("application/vnd.cncf.model.doc.v1.tar", &[]),
                d("application/vnd.cncf.model.code.v1.tar+gzip", &[]),
            ],
        );
        let a = Artifact::from_manifest(&m, "x").unwrap();
        assert_eq!(a.kind, ArtifactKind::ModelPack);
        assert_eq!(
            a.layers
                .iter()
                .map(|l| l.packing.clone())
                .collect::<Vec<_>>(),
            [
                Packing::Raw("unet/model.safetensors".into()),
                Packing::Tar,
                Packing::TarGzip
            ]
        );
        assert_eq!(a.single_file(), None);
        let oras = manifest(
            None,
            "application/vnd.oci.empty.v1+json",
            vec![
                d(
                    "application/octet-stream",
                    &[(ANNOTATION_TITLE, "lora.safetensors")],
                ),
                d("application/octet-stream", &[]),
            ],
        );
        let a = Artifact::from_manifest(&oras, "x").unwrap();
        assert_eq!(a.kind, ArtifactKind::Oras);
        assert_eq!(a.single_file(), Some("lora.safetensors"));
        let kit = manifest(
            None,
            "application/vnd.kitops.modelkit.config.v1+json",
            vec![d("application/vnd.kitops.modelkit.model.v1.tar+gzip", &[])],
        );
        assert_eq!(
            Artifact::from_manifest(&kit, "x").unwrap().kind,
            ArtifactKind::KitOps
        );
    }

    #[test]
    fn hostile_layers_refused() {
        for p in ["../x", "/etc/passwd", "a/../../b", "a\\b", ""] {
            let m = manifest(
                Some(MODELPACK_ARTIFACT),
                MODELPACK_CONFIG,
                vec![d(
                    "application/vnd.cncf.model.weight.v1.raw",
                    &[(ANNOTATION_FILEPATH, p)],
                )],
            );
            assert!(Artifact::from_manifest(&m, "x").is_err(), "{p}");
        }
        let zstd = manifest(
            Some(MODELPACK_ARTIFACT),
            MODELPACK_CONFIG,
            vec![d("application/vnd.cncf.model.weight.v1.tar+zstd", &[])],
        );
        let e = Artifact::from_manifest(&zstd, "x").unwrap_err().to_string();
        assert!(e.contains("tar+zstd"), "{e}");
        let dup = manifest(
            None,
            "x",
            vec![
                d("a", &[(ANNOTATION_TITLE, "f")]),
                d("a", &[(ANNOTATION_TITLE, "f")]),
            ],
        );
        assert!(Artifact::from_manifest(&dup, "x").is_err());
    }

    #[test]
    fn index_choice() {
        let mut one = d(MEDIA_OCI_MANIFEST, &[(ANNOTATION_REF_NAME, "fp16")]);
        one.artifact_type = Some(MODELPACK_ARTIFACT.into());
        let mut two = d(MEDIA_OCI_MANIFEST, &[(ANNOTATION_REF_NAME, "fp32")]);
        two.artifact_type = Some(MODELPACK_ARTIFACT.into());
        let idx = ImageIndex {
            schema_version: 2,
            media_type: None,
            manifests: vec![one.clone()],
            annotations: BTreeMap::new(),
        };
        assert_eq!(choose(&idx, "x").unwrap(), one);
        let idx = ImageIndex {
            manifests: vec![one, two],
            ..idx
        };
        let e = choose(&idx, "x").unwrap_err().to_string();
        assert!(e.contains("fp16") && e.contains("fp32"), "{e}");
    }

    #[test]
    fn bodies_parse_by_type() {
        let body = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            Fetched::parse(None, body, "x").unwrap(),
            Fetched::Index(_)
        ));
        assert!(Fetched::parse(Some(MEDIA_OCI_MANIFEST), body, "x").is_err());
        assert!(Fetched::parse(None, b"[", "x").is_err());
    }
}
