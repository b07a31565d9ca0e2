//! `oci://` sources: the tag resolved to a digest (an index narrowed to its one model
//! manifest), every layer's blob fetched by the download queue into `staging/blobs/` (its
//! parallelism, `Range` resume, sha256 = the digest checked before the blob is kept), then
//! `files/` built from the blobs (raw layers hard-linked at their checked paths, tar layers
//! unpacked with the same checks) and handed to the same probe and record transaction as any
//! other source. The digest is the install's commit: it goes in `models.lock`, and `--locked`
//! (`InstallOptions::revision`) pulls it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::ModelSourceType;
use crate::hub::ModelSource;
use crate::oci::manifest::{Artifact, Fetched, choose};
use crate::oci::{
    Credentials, ImageManifest, OciError, OciModelSource, OciReference, Packing, RegistryClient,
};

use super::error::InstallError;
use super::job::{InstallJobId, InstallPart};
use super::promote::Staged;
use super::remote::{Want, len_of, part_of, run_downloads};
use super::request::InstallOptions;
use super::service::{Cancel, Inner, record_source};
use super::staging::{Staging, StagingKind};

/// A resolved artifact: the digest the reference points at (an index's, when it is one),
/// the manifest chosen, and its layers as files.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The digest `models.lock` pins.
    pub digest: String,
    /// The image manifest (the index's choice).
    pub manifest: ImageManifest,
    /// Its layers.
    pub artifact: Artifact,
}

/// Resolves `reference` to its digest and model manifest: a tag is looked up, an index is
/// narrowed to its one model manifest ([`choose`]; nested indexes are refused).
pub async fn resolve(
    client: &RegistryClient,
    reference: &OciReference,
    creds: Option<&Credentials>,
) -> Result<Resolved, OciError> {
    let top = client.get_manifest(reference, creds).await?;
    let what = reference.to_string();
    let manifest = match top.parsed {
        Fetched::Manifest(m) => m,
        Fetched::Index(idx) => {
            let chosen = choose(&idx, &what)?;
            let inner = client
                .get_manifest(&reference.at_digest(&chosen.digest), creds)
                .await?;
            match inner.parsed {
                Fetched::Manifest(m) => m,
                Fetched::Index(_) => {
                    return Err(OciError::BadManifest {
                        reference: what,
                        reason: "an index inside an index is not followed".into(),
                    });
                }
            }
        }
    };
    let artifact = Artifact::from_manifest(&manifest, &what)?;
    Ok(Resolved {
        digest: top.digest,
        manifest,
        artifact,
    })
}

fn oci_err(source_str: &str) -> impl Fn(OciError) -> InstallError + '_ {
    move |error| InstallError::Registry {
        source_str: source_str.to_owned(),
        error: Box::new(error),
    }
}

/// `staging/blobs/sha256-<hex>`.
fn blob_path(staging: &Staging, digest: &str) -> PathBuf {
    staging.dir.join("blobs").join(digest.replace(':', "-"))
}

pub(crate) async fn fetch_oci(
    inner: &Arc<Inner>,
    id: InstallJobId,
    src: &OciModelSource,
    opts: &InstallOptions,
    staging: Staging,
    cancel: &Arc<Cancel>,
) -> Result<Staged, InstallError> {
    let source_str = record_source(&ModelSource::Oci(src.clone()));
    let source_for_err = source_str.clone();
    let err = oci_err(&source_for_err);
    let client = RegistryClient::new(inner.cfg.registries.clone()).map_err(&err)?;
    let creds = src.resolve_credentials();
    // `--locked` and repairs pass the digest to pull again.
    let reference = match opts.revision.as_deref() {
        Some(d) if d.starts_with("sha256:") => src.reference.at_digest(d),
        _ => src.reference.clone(),
    };
    let resolved = tokio::select! {
        r = resolve(&client, &reference, creds.as_ref()) => r.map_err(&err)?,
        () = cancel.wait() => return Err(InstallError::Cancelled(source_str)),
    };
    staging.prepare(&source_str, StagingKind::Oci, Some(&resolved.digest))?;
    let blobs_dir = staging.dir.join("blobs");
    std::fs::create_dir_all(&blobs_dir)
        .map_err(|e| InstallError::io("creating staging folder", &blobs_dir, e))?;
    let mut wants = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for layer in &resolved.artifact.layers {
        let d = &layer.descriptor;
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        let dest = blob_path(&staging, &d.digest);
        let (url, token) = client
            .blob_download(&reference, &d.digest, creds.as_ref())
            .await
            .map_err(&err)?;
        let hex = d.digest.trim_start_matches("sha256:").to_owned();
        let job = crate::download::DownloadJob::new(url.to_string(), dest.clone())
            .with_expected_size(Some(d.size))
            .with_sha256(Some(hex))
            .with_access_token(token)
            .with_preserve_partial_downloads(true);
        // Only the queue writes whole blobs, and only after checking their digest.
        let done = dest.is_file() && len_of(&dest) == d.size;
        wants.push(Want {
            job,
            part: InstallPart {
                source: format!("{}@{}", reference.at_digest(&resolved.digest), d.digest),
                local_path: dest.clone(),
                bytes: if done {
                    d.size
                } else {
                    len_of(&part_of(&dest)).min(d.size)
                },
                total_bytes: d.size,
            },
            done,
        });
    }
    let downloaded = run_downloads(inner, id, &source_str, &staging, wants, cancel).await?;
    let files = staging.files();
    let artifact = resolved.artifact.clone();
    let staging2 = staging.clone();
    let sha256 = tokio::task::spawn_blocking(move || build_files(&staging2, &artifact))
        .await
        .map_err(|e| InstallError::Setup(format!("unpack worker failed: {e}")))?
        .map_err(&err)?;
    let (model_path, moved_from, single_file) = match resolved.artifact.single_file() {
        Some(name) => (files.join(name), format!("files/{name}"), true),
        None => (files.clone(), "files".to_owned(), false),
    };
    let metadata = serde_json::json!({
        "registry": src.reference.registry,
        "repository": src.reference.repository,
        "digest": resolved.digest,
        "artifact": resolved.artifact.kind,
        "annotations": resolved.manifest.annotations,
    });
    Ok(Staged {
        model_path,
        staging: Some(staging),
        moved_from,
        single_file,
        source: source_str,
        source_type: ModelSourceType::Url,
        metadata: Some(metadata),
        tags: Vec::new(),
        commit: Some(resolved.digest),
        sha256,
        downloaded,
    })
}

/// (Re)builds `files/` from the verified blobs: raw layers hard-linked (copied where links
/// fail) at their paths, tar layers unpacked. Returns the raw files' sha256 by path.
fn build_files(
    staging: &Staging,
    artifact: &Artifact,
) -> Result<HashMap<String, String>, OciError> {
    let files = staging.files();
    let io = |digest: &str, source: std::io::Error| OciError::Unpack {
        digest: digest.to_owned(),
        source,
    };
    if files.exists() {
        std::fs::remove_dir_all(&files).map_err(|e| io("-", e))?;
    }
    std::fs::create_dir_all(&files).map_err(|e| io("-", e))?;
    let mut sha256 = HashMap::new();
    let single = artifact.single_file().is_some();
    for layer in &artifact.layers {
        let d = &layer.descriptor;
        let blob = blob_path(staging, &d.digest);
        match &layer.packing {
            Packing::Raw(path) => {
                let local = crate::hub::paths::repo_path_to_local(&d.digest, path)?;
                let target = files.join(&local);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io(&d.digest, e))?;
                }
                link_or_copy(&blob, &target).map_err(|e| io(&d.digest, e))?;
                let key = if single {
                    path.rsplit('/').next().unwrap_or(path).to_owned()
                } else {
                    path.clone()
                };
                sha256.insert(key, d.digest.trim_start_matches("sha256:").to_owned());
            }
            packing => {
                let limit = crate::oci::unpack::unpacked_limit(packing, d.size);
                crate::oci::unpack::unpack(&blob, packing, &files, &d.digest, limit)?;
            }
        }
    }
    Ok(sha256)
}

fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map(|_| ())
}
