//! `modelsync push`: a record published as a CNCF ModelPack artifact.
//!
//! The artifact: one raw layer per file of the model (a folder's files in path order, hidden
//! ones left out as the hash leaves them out), each with `org.cncf.model.filepath` (and
//! `org.opencontainers.image.title`, so `oras pull` places it too). Media types by file:
//! weights `application/vnd.cncf.model.weight.v1.raw`, JSON/YAML/text configs and tokenizers
//! `weight.config`, README/licence/Markdown `doc`, Python `code`. The config blob
//! (`application/vnd.cncf.model.config.v1+json`) fills ModelPack's fields where the record has
//! one (`descriptor.name`, `descriptor.family` = base, `descriptor.description`,
//! `descriptor.sourceURL`, `config.format`, `modelfs.diff_ids` = the layer digests); every
//! record field (type, base, format, variant, name, source, hash) is also a manifest
//! annotation `org.modelsync.model.*`. Nothing time-dependent goes in, so the same model
//! pushed twice is the same manifest digest.
//!
//! Uploads (distribution spec): a blob the repository has already (`HEAD`) is skipped; one
//! another repository of the registry is known to hold is mounted
//! (`POST …/blobs/uploads/?mount=&from=`; a registry that declines answers with an upload
//! session, which is then used); others go up in one `PUT` when at most
//! [`PushOptions::chunk_size`] bytes, else in `PATCH` chunks of that size and a closing `PUT`
//! — so memory stays bounded by one chunk. The default, 64 MiB, is above ECR's 5 MiB floor
//! for chunks and keeps configs and LoRAs to one request.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

use super::OciError;
use super::auth::Credentials;
use super::client::{Access, RegistryClient, sha256_digest};
use super::manifest::{
    ANNOTATION_FILEPATH, ANNOTATION_TITLE, Descriptor, ImageManifest, MEDIA_OCI_MANIFEST,
    MODELPACK_ARTIFACT, MODELPACK_CONFIG,
};
use super::reference::OciReference;
use crate::config::AnyModelConfig;
use crate::events::Reporter;

/// The manifest annotations carrying the record's fields: `org.modelsync.model.<field>`.
pub const ANNOTATION_PREFIX: &str = "org.modelsync.model.";
/// The record's name (also the manifest's `org.opencontainers.image.title`).
pub const ANNOTATION_NAME: &str = "org.modelsync.model.name";
/// Default [`PushOptions::chunk_size`]: 64 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Files up to this size go in one `PUT`; larger ones in `PATCH` chunks of this size.
    pub chunk_size: u64,
    /// Repositories of the same registry to mount blobs from (`--mount-from`).
    pub mount_from: Vec<String>,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            mount_from: Vec::new(),
        }
    }
}

/// What a push reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PushEvent {
    /// The files are hashed; uploads start.
    PushStarted {
        /// The target, `oci://HOST/REPO:TAG`.
        reference: String,
        /// Layers.
        files: usize,
        /// Their bytes.
        total_bytes: u64,
    },
    /// The repository has the blob already.
    BlobSkipped {
        /// The file.
        path: String,
        /// Its digest.
        digest: String,
        /// Bytes.
        size: u64,
    },
    /// The blob was mounted from another repository.
    BlobMounted {
        /// The file.
        path: String,
        /// Its digest.
        digest: String,
        /// Bytes.
        size: u64,
        /// The repository it came from.
        from: String,
    },
    /// Bytes of a blob sent so far (after each chunk).
    BlobUploading {
        /// The file.
        path: String,
        /// Its digest.
        digest: String,
        /// Sent.
        bytes: u64,
        /// Of.
        total_bytes: u64,
    },
    /// A blob is in the registry.
    BlobUploaded {
        /// The file (`<config>` for the config blob).
        path: String,
        /// Its digest.
        digest: String,
        /// Bytes.
        size: u64,
        /// Requests that carried its bytes (1: monolithic).
        chunks: u32,
    },
    /// The manifest is in; the tag points at it.
    PushCompleted {
        /// `oci://HOST/REPO:TAG@sha256:…`.
        reference: String,
        /// The manifest digest.
        digest: String,
        /// Blobs uploaded.
        uploaded: usize,
        /// Blobs skipped (already there).
        skipped: usize,
        /// Blobs mounted.
        mounted: usize,
        /// Bytes uploaded.
        uploaded_bytes: u64,
    },
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushOutcome {
    /// `oci://HOST/REPO:TAG@sha256:…`: what a manifest entry pins.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// Layers (files).
    pub layers: usize,
    /// Digests uploaded (the config blob counts).
    pub uploaded: Vec<String>,
    /// Digests the repository had.
    pub skipped: Vec<String>,
    /// Digests mounted from another repository.
    pub mounted: Vec<String>,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
}

/// Push failures.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] OciError),
    /// A model file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Nothing to push, or a file name the artifact cannot carry.
    #[error("{0}")]
    Model(String),
    /// A tag is needed to push to.
    #[error("push needs a tag, not a digest: {0}")]
    Pinned(String),
}

/// One file of the model.
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// Where it is.
    pub local: PathBuf,
    /// Its `/`-joined path in the artifact (the file name for a one-file model).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// `sha256:…`.
    pub digest: String,
}

/// The layer media type of a file, by its name.
pub fn media_type_of(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    let stem = name.split('.').next().unwrap_or_default();
    if matches!(
        stem,
        "readme" | "license" | "licence" | "notice" | "copying"
    ) || ext == "md"
    {
        "application/vnd.cncf.model.doc.v1.raw"
    } else if ext == "py" {
        "application/vnd.cncf.model.code.v1.raw"
    } else if matches!(
        ext,
        "json" | "yaml" | "yml" | "txt" | "toml" | "cfg" | "ini" | "model" | "tiktoken" | "jinja"
    ) {
        "application/vnd.cncf.model.weight.config.v1.raw"
    } else {
        "application/vnd.cncf.model.weight.v1.raw"
    }
}

/// The files of a model at `root` (a file, or a folder walked in path order; hidden entries
/// and symlinked folders left out, symlinked files followed), each hashed (sha256). Blocking.
pub fn model_files(root: &Path) -> Result<Vec<ModelFile>, PushError> {
    let read = |path: &Path, source| PushError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(root).map_err(|e| read(root, e))?;
    let mut found = Vec::new();
    if meta.is_dir() {
        walk(root, root, &mut found).map_err(|e| read(root, e))?;
        found.sort_by(|a, b| a.1.cmp(&b.1));
    } else {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.push((root.to_path_buf(), name));
    }
    if found.is_empty() {
        return Err(PushError::Model(format!(
            "{} holds no files to push",
            root.display()
        )));
    }
    let mut out = Vec::new();
    for (local, path) in found {
        crate::hub::validate_repo_path(&root.display().to_string(), &path)
            .map_err(|e| PushError::Model(e.to_string()))?;
        let size = std::fs::metadata(&local)
            .map_err(|e| read(&local, e))?
            .len();
        let hex = crate::hash::sha256_file(&local)
            .map_err(|e| PushError::Model(format!("hashing {}: {e}", local.display())))?;
        out.push(ModelFile {
            local,
            path,
            size,
            digest: format!("sha256:{hex}"),
        });
    }
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(root, &p, out)?;
        } else if ft.is_file() || (ft.is_symlink() && p.is_file()) {
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((p, rel));
        }
    }
    Ok(())
}

/// The record's fields as manifest annotations (`org.modelsync.model.*`, plus the OCI title
/// and description).
pub fn record_annotations(record: &AnyModelConfig) -> BTreeMap<String, String> {
    let c = record.common();
    let mut a = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            a.insert(format!("{ANNOTATION_PREFIX}{k}"), v);
        }
    };
    put("type", record.model_type().as_str().to_owned());
    put("base", record.base().as_str().to_owned());
    put("format", record.format().as_str().to_owned());
    if let Some(v) = record.variant() {
        put("variant", v.to_string());
    }
    put("name", c.name.clone());
    put("source", c.source.clone());
    put("hash", c.hash.clone());
    a.insert(ANNOTATION_TITLE.to_owned(), c.name.clone());
    if let Some(d) = c.description.as_deref().filter(|d| !d.is_empty()) {
        a.insert(
            "org.opencontainers.image.description".to_owned(),
            d.to_owned(),
        );
    }
    a
}

/// The ModelPack config JSON of `record` with these layers (deterministic bytes).
pub fn modelpack_config(record: &AnyModelConfig, layers: &[Descriptor]) -> Vec<u8> {
    let c = record.common();
    let mut descriptor = serde_json::Map::new();
    descriptor.insert("name".into(), Value::from(c.name.clone()));
    if record.base() != crate::taxonomy::BaseModelType::Unknown {
        descriptor.insert("family".into(), Value::from(record.base().as_str()));
    }
    if let Some(d) = c.description.as_deref().filter(|d| !d.is_empty()) {
        descriptor.insert("description".into(), Value::from(d));
    }
    if let Some(url) = source_url(&c.source) {
        descriptor.insert("sourceURL".into(), Value::from(url));
    }
    let v = json!({
        "descriptor": descriptor,
        "config": {"format": record.format().as_str()},
        "modelfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
        },
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A record source as a URL, where it is one: http(s) as is, a Hub repo as its page; local
/// paths and `oci://` references have none (the `source` annotation carries them).
fn source_url(source: &str) -> Option<String> {
    if source.starts_with("https://") || source.starts_with("http://") {
        return Some(source.to_owned());
    }
    match crate::hub::ModelSource::parse(source).ok()? {
        crate::hub::ModelSource::Hf(h) => Some(format!("https://huggingface.co/{}", h.repo_id)),
        _ => None,
    }
}

/// A pusher over one registry client; remembers which repository holds which blob so a later
/// push to another repository (a `publish` run) mounts instead of uploading.
pub struct Pusher<'a> {
    client: &'a RegistryClient,
    creds: Option<Credentials>,
    reporter: &'a dyn Reporter<PushEvent>,
    /// digest → a repository of the same registry known to hold it, by registry.
    known: HashMap<(String, String), String>,
}

impl<'a> Pusher<'a> {
    /// A pusher with these credentials (`None`: anonymous; the caller resolves the Docker
    /// config's).
    pub fn new(
        client: &'a RegistryClient,
        creds: Option<Credentials>,
        reporter: &'a dyn Reporter<PushEvent>,
    ) -> Self {
        Self {
            client,
            creds,
            reporter,
            known: HashMap::new(),
        }
    }

    fn report(&self, e: &PushEvent) {
        self.reporter.report(e);
    }

    /// Pushes `record`, whose files are at `root`, to `target` (a tag; `latest` when none is
    /// written). The record's own `oci://` source on the same registry, and
    /// `opts.mount_from`, are where blobs are mounted from.
    pub async fn push(
        &mut self,
        record: &AnyModelConfig,
        root: &Path,
        target: &OciReference,
        opts: &PushOptions,
    ) -> Result<PushOutcome, PushError> {
        if target.is_pinned() {
            return Err(PushError::Pinned(target.to_string()));
        }
        let tag = target.tag_or_default().unwrap_or("latest").to_owned();
        let target = OciReference {
            tag: Some(tag.clone()),
            ..target.clone()
        };
        let root2 = root.to_path_buf();
        let files = tokio::task::spawn_blocking(move || model_files(&root2))
            .await
            .map_err(|e| PushError::Model(format!("hashing worker failed: {e}")))??;
        let mut from: Vec<String> = opts.mount_from.clone();
        if let Ok(src) = OciReference::parse(&record.common().source)
            && src.registry == target.registry
        {
            from.insert(0, src.repository);
        }
        from.retain(|r| r != &target.repository);
        self.report(&PushEvent::PushStarted {
            reference: target.to_string(),
            files: files.len(),
            total_bytes: files.iter().map(|f| f.size).sum(),
        });
        let mut out = PushOutcome {
            reference: String::new(),
            digest: String::new(),
            layers: files.len(),
            uploaded: Vec::new(),
            skipped: Vec::new(),
            mounted: Vec::new(),
            uploaded_bytes: 0,
        };
        let mut layers = Vec::new();
        let mut done = std::collections::HashSet::new();
        for f in &files {
            let mut d = Descriptor::new(media_type_of(&f.path), f.digest.clone(), f.size);
            d.annotations
                .insert(ANNOTATION_FILEPATH.to_owned(), f.path.clone());
            d.annotations
                .insert(ANNOTATION_TITLE.to_owned(), f.path.clone());
            layers.push(d);
            if !done.insert(f.digest.clone()) {
                continue;
            }
            let blob = Blob::File(f.local.clone());
            self.put_blob(
                &target, &f.path, &f.digest, f.size, blob, &from, opts, &mut out,
            )
            .await?;
        }
        let config = Bytes::from(modelpack_config(record, &layers));
        let config_digest = sha256_digest(&config);
        let size = config.len() as u64;
        self.put_blob(
            &target,
            "<config>",
            &config_digest,
            size,
            Blob::Bytes(config),
            &from,
            opts,
            &mut out,
        )
        .await?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_MANIFEST.to_owned()),
            artifact_type: Some(MODELPACK_ARTIFACT.to_owned()),
            config: Descriptor::new(MODELPACK_CONFIG, config_digest, size),
            layers,
            annotations: record_annotations(record),
        };
        let body = Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default());
        let digest = sha256_digest(&body);
        let url = self.client.manifest_url(&target, &tag)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(MEDIA_OCI_MANIFEST),
        );
        let resp = self
            .client
            .send(
                &target,
                Access::Push,
                self.creds.as_ref(),
                Method::PUT,
                &url,
                &headers,
                Some(body),
            )
            .await?;
        expect(resp, StatusCode::CREATED, &target, "putting the manifest").await?;
        for d in out.uploaded.iter().chain(&out.skipped).chain(&out.mounted) {
            self.known.insert(
                (target.registry.clone(), d.clone()),
                target.repository.clone(),
            );
        }
        out.reference = target.at_digest(&digest).to_string();
        out.digest = digest.clone();
        self.report(&PushEvent::PushCompleted {
            reference: out.reference.clone(),
            digest,
            uploaded: out.uploaded.len(),
            skipped: out.skipped.len(),
            mounted: out.mounted.len(),
            uploaded_bytes: out.uploaded_bytes,
        });
        Ok(out)
    }

    /// The `POST` that starts an upload session (or, with `mount`/`from` in `url`, mounts).
    async fn start_upload(
        &self,
        target: &OciReference,
        url: &Url,
    ) -> Result<reqwest::Response, PushError> {
        Ok(self
            .client
            .send(
                target,
                Access::Push,
                self.creds.as_ref(),
                Method::POST,
                url,
                &HeaderMap::new(),
                Some(Bytes::new()),
            )
            .await?)
    }

    /// One blob: skipped, mounted or uploaded.
    #[allow(clippy::too_many_arguments, reason = "one blob's parts")]
    async fn put_blob(
        &mut self,
        target: &OciReference,
        path: &str,
        digest: &str,
        size: u64,
        blob: Blob,
        from: &[String],
        opts: &PushOptions,
        out: &mut PushOutcome,
    ) -> Result<(), PushError> {
        let creds = self.creds.clone();
        if self
            .client
            .head_blob(target, digest, Access::Push, creds.as_ref())
            .await?
            .is_some()
        {
            self.report(&PushEvent::BlobSkipped {
                path: path.to_owned(),
                digest: digest.to_owned(),
                size,
            });
            out.skipped.push(digest.to_owned());
            return Ok(());
        }
        // Mount from the repository known to hold it, else the first candidate: a registry
        // that does not have it there answers with a plain upload session, so trying costs
        // no request.
        let mount = self
            .known
            .get(&(target.registry.clone(), digest.to_owned()))
            .filter(|r| *r != &target.repository)
            .cloned()
            .or_else(|| from.first().cloned());
        let mut start = self.client.repo_url(target, "blobs/uploads/")?;
        if let Some(m) = &mount {
            start
                .query_pairs_mut()
                .append_pair("mount", digest)
                .append_pair("from", m);
        }
        let mut resp = self.start_upload(target, &start).await?;
        if mount.is_some() && matches!(resp.status().as_u16(), 401 | 403) {
            // A token for this repository may not cover pulling from the other one: upload.
            start.set_query(None);
            resp = self.start_upload(target, &start).await?;
        }
        if resp.status() == StatusCode::CREATED
            && let Some(m) = mount
        {
            self.report(&PushEvent::BlobMounted {
                path: path.to_owned(),
                digest: digest.to_owned(),
                size,
                from: m,
            });
            out.mounted.push(digest.to_owned());
            return Ok(());
        }
        let resp = expect(resp, StatusCode::ACCEPTED, target, "starting an upload").await?;
        let mut location = upload_location(&resp, &start, target)?;
        let mut chunks = 0u32;
        let final_body = match blob {
            Blob::Bytes(b) => {
                chunks = 1;
                Some(b)
            }
            Blob::File(p) if size <= opts.chunk_size => {
                let b = tokio::fs::read(&p).await.map_err(|e| PushError::Read {
                    path: p.clone(),
                    source: e,
                })?;
                chunks = 1;
                Some(Bytes::from(b))
            }
            Blob::File(p) => {
                let read = |e| PushError::Read {
                    path: p.clone(),
                    source: e,
                };
                let mut file = tokio::fs::File::open(&p).await.map_err(read)?;
                let mut sent = 0u64;
                while sent < size {
                    let n = opts.chunk_size.min(size - sent);
                    let mut buf = vec![0u8; n as usize];
                    file.read_exact(&mut buf).await.map_err(read)?;
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    if let Ok(v) = HeaderValue::from_str(&format!("{sent}-{}", sent + n - 1)) {
                        headers.insert(header::CONTENT_RANGE, v);
                    }
                    let resp = self
                        .client
                        .send(
                            target,
                            Access::Push,
                            creds.as_ref(),
                            Method::PATCH,
                            &location,
                            &headers,
                            Some(Bytes::from(buf)),
                        )
                        .await?;
                    let resp =
                        expect(resp, StatusCode::ACCEPTED, target, "uploading a chunk").await?;
                    location = upload_location(&resp, &location, target)?;
                    sent += n;
                    chunks += 1;
                    self.report(&PushEvent::BlobUploading {
                        path: path.to_owned(),
                        digest: digest.to_owned(),
                        bytes: sent,
                        total_bytes: size,
                    });
                }
                None
            }
        };
        location.query_pairs_mut().append_pair("digest", digest);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let resp = self
            .client
            .send(
                target,
                Access::Push,
                creds.as_ref(),
                Method::PUT,
                &location,
                &headers,
                Some(final_body.unwrap_or_default()),
            )
            .await?;
        expect(resp, StatusCode::CREATED, target, "closing an upload").await?;
        self.report(&PushEvent::BlobUploaded {
            path: path.to_owned(),
            digest: digest.to_owned(),
            size,
            chunks,
        });
        out.uploaded.push(digest.to_owned());
        out.uploaded_bytes += size;
        Ok(())
    }
}

/// A blob's bytes: a file, or in memory (the config).
enum Blob {
    File(PathBuf),
    Bytes(Bytes),
}

/// The upload session's `Location` (relative to the request URL when relative).
fn upload_location(
    resp: &reqwest::Response,
    base: &Url,
    target: &OciReference,
) -> Result<Url, PushError> {
    let loc = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            PushError::Registry(OciError::BadManifest {
                reference: target.to_string(),
                reason: "the registry answered an upload without a Location".into(),
            })
        })?;
    base.join(loc).map_err(|e| {
        PushError::Registry(OciError::BadManifest {
            reference: target.to_string(),
            reason: format!("upload Location `{loc}`: {e}"),
        })
    })
}

/// The response when its status is `want`, else the registry's error (its codes and
/// messages) naming the step.
async fn expect(
    resp: reqwest::Response,
    want: StatusCode,
    target: &OciReference,
    step: &str,
) -> Result<reqwest::Response, PushError> {
    let status = resp.status();
    if status == want || (status.is_success() && want != StatusCode::ACCEPTED) {
        return Ok(resp);
    }
    let url = crate::download::names::redact_url(resp.url());
    let body = resp.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(2048)])
        .trim()
        .to_owned();
    if matches!(status.as_u16(), 401 | 403) {
        return Err(OciError::Unauthorized {
            registry: target.registry.clone(),
            repository: target.repository.clone(),
            detail: format!("{step}: HTTP {}: {text}", status.as_u16()),
        }
        .into());
    }
    Err(OciError::Http {
        url,
        status: status.as_u16(),
        message: format!("{step}: {text}"),
        retry_after: None,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_by_name() {
        assert_eq!(
            media_type_of("unet/diffusion_pytorch_model.safetensors"),
            "application/vnd.cncf.model.weight.v1.raw"
        );
        assert_eq!(
            media_type_of("unet/config.json"),
            "application/vnd.cncf.model.weight.config.v1.raw"
        );
        assert_eq!(
            media_type_of("tokenizer/merges.txt"),
            "application/vnd.cncf.model.weight.config.v1.raw"
        );
        assert_eq!(
            media_type_of("README.md"),
            "application/vnd.cncf.model.doc.v1.raw"
        );
        assert_eq!(
            media_type_of("LICENSE"),
            "application/vnd.cncf.model.doc.v1.raw"
        );
        assert_eq!(
            media_type_of("model.gguf"),
            "application/vnd.cncf.model.weight.v1.raw"
        );
    }

    #[test]
    fn source_urls() {
        assert_eq!(
            source_url("stabilityai/sdxl-vae").as_deref(),
            Some("https://huggingface.co/stabilityai/sdxl-vae")
        );
        assert_eq!(
            source_url("https://example.com/x.safetensors").as_deref(),
            Some("https://example.com/x.safetensors")
        );
        assert_eq!(source_url("/models/x.safetensors"), None);
    }
}
