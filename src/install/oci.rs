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

use super::config::{Cancel, record_source};
use super::error::InstallError;
use super::job::InstallJobId;
use super::promote::Staged;
use super::remote::{Want, run_downloads};
use super::request::InstallOptions;
use super::service::Inner;
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

/// A pull's start, shared by installs and repairs: the source as records show it, a client
/// and credentials for its registry, the reference to pull (`--locked` and repairs pass the
/// digest to pull again) and what it resolved to.
struct Pull {
    source_str: String,
    client: RegistryClient,
    creds: Option<Credentials>,
    reference: OciReference,
    resolved: Resolved,
}

impl Pull {
    async fn open(
        src: &OciModelSource,
        opts: &InstallOptions,
        cancel: &Cancel,
    ) -> Result<Self, InstallError> {
        let source_str = record_source(&ModelSource::Oci(src.clone()));
        let err = oci_err(&source_str);
        let client = src.client().map_err(&err)?;
        let creds = src.resolve_credentials();
        let reference = match opts.revision.as_deref() {
            Some(d) if d.starts_with("sha256:") => src.reference.at_digest(d),
            _ => src.reference.clone(),
        };
        let resolved = tokio::select! {
            r = resolve(&client, &reference, creds.as_ref()) => r.map_err(&err)?,
            () = cancel.wait() => return Err(InstallError::Cancelled(source_str.clone())),
        };
        drop(err); // it borrows `source_str`, which moves below
        Ok(Self {
            source_str,
            client,
            creds,
            reference,
            resolved,
        })
    }
}

pub(crate) async fn fetch_oci(
    inner: &Arc<Inner>,
    id: InstallJobId,
    src: &OciModelSource,
    opts: &InstallOptions,
    staging: Staging,
    cancel: &Arc<Cancel>,
) -> Result<Staged, InstallError> {
    let Pull {
        source_str,
        client,
        creds,
        reference,
        resolved,
    } = Pull::open(src, opts, cancel).await?;
    let source_for_err = source_str.clone();
    let err = oci_err(&source_for_err);
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
        wants.push(
            blob_want(
                &client,
                &reference,
                &resolved.digest,
                &staging,
                d,
                creds.as_ref(),
            )
            .await
            .map_err(&err)?,
        );
    }
    let downloaded = run_downloads(&inner.fetch_ctx(id), &source_str, &staging, wants, cancel)
        .await?
        .bytes;
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
        // Files are built from the blobs (links, tar unpacks): promote hashes them.
        digests: HashMap::new(),
        downloaded,
        adopted: Vec::new(),
    })
}

/// (Re)builds `files/` from the verified blobs: raw layers hard-linked (copied where links
/// fail) at their paths, tar layers unpacked. Returns the raw files' sha256 by path.
fn build_files(
    staging: &Staging,
    artifact: &Artifact,
) -> Result<HashMap<String, String>, OciError> {
    build_files_as(staging, artifact, artifact.single_file())
}

/// [`build_files`] of some of an artifact's layers; `single` names the file of a one-file
/// artifact (its sha256 is keyed by the file name).
fn build_files_as(
    staging: &Staging,
    artifact: &Artifact,
    single: Option<&str>,
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
    let single = single.is_some();
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

/// A repair or upgrade in place of an `oci://` record: the artifact at the digest to restore
/// (the lock's, or the moved tag's for an upgrade), raw layers checked where they are (size
/// and sha256, the recorded fingerprint trusted unless the plan saw damage) and fetched only
/// when not right, tar layers fetched and unpacked again; files the artifact no longer has
/// are removed.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the pieces are the job's"
)]
pub(super) async fn refit_oci(
    inner: &Arc<Inner>,
    id: InstallJobId,
    src: &OciModelSource,
    req: &super::request::InstallRequest,
    ip: &super::request::InPlace,
    target: &Path,
    recorded: &HashMap<String, crate::store::ModelFile>,
    staging: &Staging,
    cancel: &Arc<Cancel>,
) -> Result<super::refit::Fetched, InstallError> {
    use super::refit::{Fetched as Refit, file_name, is_present};
    let opts = &req.options;
    let Pull {
        source_str,
        client,
        creds,
        reference,
        resolved,
    } = Pull::open(src, opts, cancel).await?;
    let source_for_err = source_str.clone();
    let err = oci_err(&source_for_err);
    let single = resolved.artifact.single_file().is_some();
    let mut out = Refit {
        commit: Some(resolved.digest.clone()),
        metadata: Some(serde_json::json!({
            "registry": src.reference.registry,
            "repository": src.reference.repository,
            "digest": resolved.digest,
            "artifact": resolved.artifact.kind,
            "annotations": resolved.manifest.annotations,
        })),
        ..Refit::default()
    };
    // Which layers must be fetched: raw ones not right where they are, every tar layer.
    let mut checks = Vec::new();
    for (i, layer) in resolved.artifact.layers.iter().enumerate() {
        let d = &layer.descriptor;
        let hex = d.digest.trim_start_matches("sha256:").to_owned();
        if let Packing::Raw(path) = &layer.packing {
            crate::hub::validate_repo_path(&source_str, path)
                .map_err(|e| err(OciError::UnsafePath(e)))?;
            let (rel, lock_name, at) = if single {
                (String::new(), file_name(target), target.to_path_buf())
            } else {
                (path.clone(), path.clone(), target.join(path))
            };
            if let Some(locked) = ip.locked_sha256.get(&lock_name)
                && !locked.eq_ignore_ascii_case(&hex)
            {
                return Err(InstallError::InvalidOption {
                    option: "models.lock",
                    reason: format!(
                        "`{lock_name}` is locked at sha256 {locked}, but {source_str} at {} has {hex}",
                        resolved.digest
                    ),
                });
            }
            out.sha256.insert(lock_name, hex.clone());
            let trusted = recorded
                .get(&rel)
                .filter(|_| !ip.damaged.contains(&rel))
                .cloned();
            checks.push((i, at, d.size, hex, trusted));
        }
    }
    let present: std::collections::HashSet<usize> = tokio::task::spawn_blocking(move || {
        checks
            .into_iter()
            .filter(|(_, p, size, hex, fp)| {
                is_present(
                    p,
                    *size,
                    &crate::hub::ExpectedHash::Sha256(hex.clone()),
                    fp.as_ref(),
                )
            })
            .map(|(i, ..)| i)
            .collect()
    })
    .await
    .map_err(|e| InstallError::Setup(format!("checking worker failed: {e}")))?;
    let fetch: Vec<&crate::oci::Layer> = resolved
        .artifact
        .layers
        .iter()
        .enumerate()
        .filter(|(i, _)| !present.contains(i))
        .map(|(_, l)| l)
        .collect();
    let has_tar = resolved
        .artifact
        .layers
        .iter()
        .any(|l| !matches!(l.packing, Packing::Raw(_)));
    if fetch.is_empty() && !has_tar {
        if !single {
            let listed: std::collections::HashSet<&str> = resolved
                .artifact
                .layers
                .iter()
                .filter_map(|l| match &l.packing {
                    Packing::Raw(p) => Some(p.as_str()),
                    _ => None,
                })
                .collect();
            out.remove = recorded
                .keys()
                .filter(|r| !r.is_empty() && !listed.contains(r.as_str()))
                .map(|r| target.join(r))
                .collect();
        }
        return Ok(out);
    }
    staging.prepare(&source_str, StagingKind::Oci, Some(&resolved.digest))?;
    let blobs_dir = staging.dir.join("blobs");
    std::fs::create_dir_all(&blobs_dir)
        .map_err(|e| InstallError::io("creating staging folder", &blobs_dir, e))?;
    let mut wants = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for layer in &fetch {
        let d = &layer.descriptor;
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        wants.push(
            blob_want(
                &client,
                &reference,
                &resolved.digest,
                staging,
                d,
                creds.as_ref(),
            )
            .await
            .map_err(&err)?,
        );
    }
    out.downloaded = run_downloads(&inner.fetch_ctx(id), &source_str, staging, wants, cancel)
        .await?
        .bytes;
    let partial = Artifact {
        kind: resolved.artifact.kind,
        layers: fetch.into_iter().cloned().collect(),
    };
    let staging2 = staging.clone();
    let single_name = resolved.artifact.single_file().map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        build_files_as(&staging2, &partial, single_name.as_deref())
    })
    .await
    .map_err(|e| InstallError::Setup(format!("unpack worker failed: {e}")))?
    .map_err(&err)?;
    // Every file now in staging replaces its counterpart; what the artifact no longer has
    // goes (the artifact's files: its raw paths and what its tar layers unpacked).
    let files = staging.files();
    let mut staged = Vec::new();
    walk(&files, &files, &mut staged).map_err(|e| InstallError::io("reading", &files, e))?;
    let mut listed: std::collections::HashSet<String> = resolved
        .artifact
        .layers
        .iter()
        .filter_map(|l| match &l.packing {
            Packing::Raw(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    for (abs, rel) in staged {
        let dest = if single {
            target.to_path_buf()
        } else {
            target.join(&rel)
        };
        listed.insert(rel);
        out.moves.push((abs, dest));
    }
    if !single {
        out.remove = recorded
            .keys()
            .filter(|r| !r.is_empty() && !listed.contains(*r))
            .map(|r| target.join(r))
            .collect();
    }
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            walk(root, &p, out)?;
        } else {
            let rel = p
                .strip_prefix(root)
                .map(super::refit::slash)
                .unwrap_or_default();
            out.push((p, rel));
        }
    }
    Ok(())
}

/// The download of one blob into `staging/blobs/`.
async fn blob_want(
    client: &RegistryClient,
    reference: &OciReference,
    manifest_digest: &str,
    staging: &Staging,
    d: &crate::oci::Descriptor,
    creds: Option<&Credentials>,
) -> Result<Want, OciError> {
    let dest = blob_path(staging, &d.digest);
    let (url, token) = client.blob_download(reference, &d.digest, creds).await?;
    let hex = d.digest.trim_start_matches("sha256:").to_owned();
    let job = crate::download::DownloadJob::new(url.to_string(), dest.clone())
        .with_expected_size(Some(d.size))
        .with_sha256(Some(hex))
        .with_access_token(token)
        .with_preserve_partial_downloads(true);
    Ok(Want::sized(
        job,
        format!("{}@{}", reference.at_digest(manifest_digest), d.digest),
        &dest,
        d.size,
    ))
}
