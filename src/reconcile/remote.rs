//! What the plan may learn from outside the machine: where unpinned revisions point upstream
//! (`--refresh`) and how many bytes an entry would fetch. Both are best effort: an offline or
//! unreachable Hub gives warnings and unknown values, never an error, so `diff` works offline.
//! A URL source is asked for its size too (a HEAD, or a one-byte ranged GET): a URL has no Hub
//! to fall back on, so an answer that it is not there (404/410), refused (401/403) or that its
//! server cannot be reached at all (DNS, connection refused) makes the entry an error row;
//! what may pass (timeouts, 5xx after retries, no length) leaves the size unknown, with a
//! warning.
//!
//! And what is on this machine already ([`adoptable`]): the files a fetch wants whose bytes
//! the store, the HF cache or `settings.adopt_from` hold, found by name and metadata only.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::Serialize;

use super::inventory::Inventory;
use super::plan::{Adoptable, Plan, Step};
use crate::download::{AccessToken, DownloadError, SizeProbe, TransferConfig};
use crate::hub::ExpectedHash;
use crate::hub::{
    FileFilter, HubClient, HubEnv, HubError, HubOptions, ModelSource, resolve_endpoint,
    resolve_token,
};
use crate::install::AdoptSources;
use crate::install::blobs::BlobIndex;
use crate::manifest::{LockFile, Manifest, ModelEntry, Settings};
use crate::retry::{Failure, FailureKind, RetryPolicy};
use crate::store::RecordStore;

/// Hub requests at once while measuring.
const CONCURRENCY: usize = 8;

/// Something the Hub could not tell; the value stays unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteWarning {
    /// The entry.
    pub name: String,
    /// What failed.
    pub message: String,
    /// The entry itself cannot be resolved (no such repo, revision, file or local path): the
    /// plan shows it as an error row rather than a size it does not know. False for what may
    /// pass (offline, network, rate limits, server errors).
    #[serde(skip)]
    pub unresolvable: bool,
    /// What kind of failure it was (an unresolvable entry's error row takes it).
    #[serde(skip)]
    pub kind: FailureKind,
}

impl RemoteWarning {
    /// A warning about a value that stays unknown.
    pub fn new(name: String, message: String) -> Self {
        Self {
            name,
            message,
            unresolvable: false,
            kind: FailureKind::Other,
        }
    }
}

/// A look-up's value, or whether the entry is unresolvable and why.
type Lookup<T> = Result<T, (bool, Failure)>;

/// The warning of a failed look-up: the failure on one line, and its kind.
fn warning(name: String, (unresolvable, f): (bool, Failure)) -> RemoteWarning {
    RemoteWarning {
        name,
        message: format!("{f:#}"),
        unresolvable,
        kind: f.kind,
    }
}

/// Whether a Hub answer says the entry names something that is not there, as opposed to a
/// failure that may pass.
fn is_unresolvable(e: &HubError) -> bool {
    matches!(
        e,
        HubError::RepoNotFound { .. }
            | HubError::RevisionNotFound { .. }
            | HubError::EntryNotFound { .. }
            | HubError::BadRepoId { .. }
            | HubError::Gated { .. }
            | HubError::Unauthorized { .. }
            | HubError::Select(_)
    )
}

impl std::fmt::Display for RemoteWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

/// A Hub client for the reconciler's look-ups: the manifest's endpoint, the process
/// environment's offline switch, few retries and a short timeout (a `diff` must not hang on a
/// dead network).
pub fn lookup_client(settings: &Settings, env: &HubEnv) -> Result<HubClient, HubError> {
    let mut opts = HubOptions::new(resolve_endpoint(settings.hf_endpoint.as_deref(), env)?);
    opts.offline = env.offline;
    opts.max_retries = 1;
    opts.retry_base_delay = Duration::from_millis(100);
    opts.timeout = Duration::from_secs(20);
    HubClient::with_options(opts)
}

/// The retry budget of the look-ups: as [`lookup_client`]'s, one retry after a short wait.
fn lookup_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(100),
        ..RetryPolicy::default()
    }
}

/// The size look-ups of URL sources as the reconciler makes them: `probe` (the download
/// queue's, or [`lookup_probe`]'s) under the look-ups' retry budget and timeout.
pub fn lookup_budget(probe: SizeProbe) -> SizeProbe {
    probe
        .with_retry(lookup_retry())
        .with_response_timeout(Duration::from_secs(20))
}

/// A [`SizeProbe`] for the commands that have no download queue (`diff`): the download
/// path's client with the look-ups' budget ([`lookup_budget`]).
pub fn lookup_probe() -> Result<SizeProbe, DownloadError> {
    SizeProbe::new(&TransferConfig::default()).map(lookup_budget)
}

/// For each unpinned Hugging Face entry, the commit its revision points at upstream now.
/// Entries the Hub cannot answer for are left out, with a warning each.
pub async fn upstream_commits(
    hub: &HubClient,
    env: &HubEnv,
    entries: &[&ModelEntry],
) -> (BTreeMap<String, String>, Vec<RemoteWarning>) {
    let wanted: Vec<&ModelEntry> = entries
        .iter()
        .copied()
        .filter(|e| !e.is_pinned() && matches!(e.source, ModelSource::Hf(_) | ModelSource::Oci(_)))
        .collect();
    if wanted.is_empty() {
        return (BTreeMap::new(), Vec::new());
    }
    // `HF_HUB_OFFLINE` keeps Hub look-ups off the network; registries are not the Hub.
    let mut offline_warnings = Vec::new();
    let wanted = if hub.is_offline() {
        let (oci, hf): (Vec<&ModelEntry>, Vec<&ModelEntry>) = wanted
            .into_iter()
            .partition(|e| matches!(e.source, ModelSource::Oci(_)));
        offline_warnings = offline(&hf, "upstream revision");
        oci
    } else {
        wanted
    };
    // The futures are collected before they become a stream: a stream holding the closure
    // across the await makes the caller's future fail `Send` checks (higher-ranked lifetimes),
    // which watch mode needs.
    let lookups: Vec<_> = wanted
        .into_iter()
        .map(|e| async move { (e.name.clone(), upstream_commit(hub, env, e).await) })
        .collect();
    let results: Vec<(String, Lookup<String>)> = futures_util::stream::iter(lookups)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut commits = BTreeMap::new();
    let mut warnings = offline_warnings;
    for (name, r) in results {
        match r {
            Ok(c) => {
                commits.insert(name, c);
            }
            Err(e) => warnings.push(warning(name, e)),
        }
    }
    warnings.sort_by(|a, b| a.name.cmp(&b.name));
    (commits, warnings)
}

/// The commit an entry's revision points at upstream (Hugging Face sources), or the digest
/// an `oci://` source's tag points at now (a manifest `HEAD`).
pub async fn upstream_commit(hub: &HubClient, env: &HubEnv, entry: &ModelEntry) -> Lookup<String> {
    if let ModelSource::Oci(o) = &entry.source {
        return oci_digest(o).await;
    }
    let ModelSource::Hf(src) = &entry.source else {
        return Err((
            false,
            Failure::new(FailureKind::Invalid, "not a Hugging Face source"),
        ));
    };
    let auth = resolve_token(entry.token(), env);
    let info = hub
        .model_info(&src.repo_id, src.revision.as_deref(), &auth)
        .await
        .map_err(|e| (is_unresolvable(&e), Failure::from_error(&e)))?;
    info.sha.ok_or_else(|| {
        (
            false,
            Failure::new(
                FailureKind::Http,
                format!("the Hub did not say which commit `{}` is at", src.repo_id),
            ),
        )
    })
}

/// Bytes each entry would fetch in full: local sources by walking them (no content read),
/// Hugging Face sources from the Hub's metadata (the files the variant, subfolder and globs
/// select), URLs from their server ([`url_size`]). An offline or failing Hub gives warnings,
/// not values. `HF_HUB_OFFLINE` also keeps the URL look-ups from the network.
pub async fn entry_sizes(
    hub: &HubClient,
    urls: &SizeProbe,
    env: &HubEnv,
    entries: &[&ModelEntry],
) -> (BTreeMap<String, u64>, Vec<RemoteWarning>) {
    let mut sizes = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut hf = Vec::new();
    let mut url = Vec::new();
    let mut oci = Vec::new();
    for e in entries {
        match &e.source {
            ModelSource::Local(l) => match local_entry_size(e, &l.path) {
                Ok(n) => {
                    sizes.insert(e.name.clone(), if e.inplace { 0 } else { n });
                }
                Err((unresolvable, message)) => warnings.push(RemoteWarning {
                    name: e.name.clone(),
                    message,
                    unresolvable,
                    kind: if unresolvable {
                        FailureKind::NotFound
                    } else {
                        FailureKind::Other
                    },
                }),
            },
            ModelSource::Hf(_) => hf.push(*e),
            ModelSource::Url(_) => url.push(*e),
            ModelSource::Oci(_) => oci.push(*e),
        }
    }
    if hub.is_offline() {
        warnings.extend(offline(&hf, "size"));
        warnings.extend(offline(&url, "size"));
        hf.clear();
        url.clear();
    }
    // Collected first: see `upstream_commits`.
    let lookups: Vec<_> = hf
        .into_iter()
        .chain(url)
        .chain(oci)
        .map(|e| async move { (e.name.clone(), remote_size(hub, urls, env, e).await) })
        .collect();
    let results: Vec<(String, Lookup<Option<u64>>)> = futures_util::stream::iter(lookups)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (name, r) in results {
        match r {
            Ok(Some(n)) => {
                sizes.insert(name, n);
            }
            Ok(None) => warnings.push(RemoteWarning::new(
                name,
                "size unknown: the server did not say how large the file is".into(),
            )),
            Err(e) => warnings.push(warning(name, e)),
        }
    }
    warnings.sort_by(|a, b| a.name.cmp(&b.name));
    (sizes, warnings)
}

/// What a URL entry's server says its file's size is, asked with the entry's token as the
/// download sends it. Not found (404/410), refused (401/403) and unreachable (DNS, connection
/// refused) make the entry unresolvable; the rest leave the size unknown. Messages carry the
/// URL redacted, as every download error does.
async fn url_size(hub: &HubClient, probe: &SizeProbe, entry: &ModelEntry) -> Lookup<Option<u64>> {
    let ModelSource::Url(src) = &entry.source else {
        return Err((
            false,
            Failure::new(FailureKind::Invalid, "not a URL source"),
        ));
    };
    // The URL the install fetches: a `/blob/` page of the configured Hub is its `/resolve/`.
    let mut url = src.url.clone();
    crate::hub::source::blob_to_resolve(&mut url, hub.endpoint());
    let token = entry.token().map(|t| AccessToken::new(t.expose()));
    probe.size(&url, token.as_ref()).await.map_err(|e| {
        let f = Failure::from_error(&e);
        let unresolvable = matches!(f.kind, FailureKind::NotFound | FailureKind::Unauthorized)
            || cannot_connect(&e);
        if unresolvable {
            (true, f)
        } else {
            (false, f.context("size unknown"))
        }
    })
}

/// Whether no connection could be made at all (DNS, refused), as opposed to a connection that
/// broke or timed out, which may pass.
fn cannot_connect(e: &DownloadError) -> bool {
    match e {
        DownloadError::RetriesExhausted { last, .. } => cannot_connect(last),
        DownloadError::Connection { source, .. } => source.is_connect() && !source.is_timeout(),
        _ => false,
    }
}

/// A Hub or URL entry's size from its server (`None`: it did not say).
async fn remote_size(
    hub: &HubClient,
    urls: &SizeProbe,
    env: &HubEnv,
    entry: &ModelEntry,
) -> Lookup<Option<u64>> {
    match entry.source {
        ModelSource::Url(_) => url_size(hub, urls, entry).await,
        ModelSource::Oci(_) => oci_size(entry).await.map(Some),
        _ => hub_size(hub, env, entry).await.map(Some),
    }
}

async fn hub_size(hub: &HubClient, env: &HubEnv, entry: &ModelEntry) -> Lookup<u64> {
    let ModelSource::Hf(src) = &entry.source else {
        return Err((
            false,
            Failure::new(FailureKind::Invalid, "not a Hugging Face source"),
        ));
    };
    let auth = resolve_token(entry.token(), env);
    let filter =
        FileFilter::from_source(src).with_globs(entry.include.clone(), entry.exclude.clone());
    let plan = hub
        .plan_source(src, &filter, &auth)
        .await
        .map_err(|e| (is_unresolvable(&e), Failure::from_error(&e)))?;
    Ok(plan.total_bytes())
}

/// A registry failure as a look-up failure: not found and refused make the entry
/// unresolvable, as for the Hub.
fn oci_failure(e: &crate::oci::OciError) -> (bool, Failure) {
    let f = Failure::from_error(e);
    (
        matches!(f.kind, FailureKind::NotFound | FailureKind::Unauthorized),
        f,
    )
}

/// The digest an `oci://` source's tag points at now.
async fn oci_digest(o: &crate::oci::OciModelSource) -> Lookup<String> {
    let client = o.client().map_err(|e| oci_failure(&e))?;
    let creds = o.resolve_credentials();
    match client.head_manifest(&o.reference, creds.as_ref()).await {
        Ok(Some(d)) => Ok(d.digest),
        Ok(None) => Err((
            true,
            Failure::new(
                FailureKind::NotFound,
                format!("{} not found in the registry", o.reference),
            ),
        )),
        Err(e) => Err(oci_failure(&e)),
    }
}

/// An `oci://` source's size: its layers' sizes from the manifest's descriptors.
async fn oci_size(entry: &ModelEntry) -> Lookup<u64> {
    let ModelSource::Oci(o) = &entry.source else {
        return Err((
            false,
            Failure::new(FailureKind::Invalid, "not an oci:// source"),
        ));
    };
    let client = o.client().map_err(|e| oci_failure(&e))?;
    let creds = o.resolve_credentials();
    let resolved = crate::install::oci::resolve(&client, &o.reference, creds.as_ref())
        .await
        .map_err(|e| oci_failure(&e))?;
    Ok(resolved.artifact.size())
}

fn offline(entries: &[&ModelEntry], what: &str) -> Vec<RemoteWarning> {
    entries
        .iter()
        .map(|e| {
            RemoteWarning::new(
                e.name.clone(),
                format!("{what} unknown: the Hub is offline (HF_HUB_OFFLINE)"),
            )
        })
        .collect()
}

/// What a local entry copies: the files its `include`/`exclude` select (all without globs).
fn local_entry_size(e: &ModelEntry, path: &Path) -> Result<u64, (bool, String)> {
    if e.include.is_empty() && e.exclude.is_empty() {
        return local_size(path).map_err(|err| {
            (
                err.kind() == std::io::ErrorKind::NotFound,
                format!("cannot read {}: {err}", path.display()),
            )
        });
    }
    let sel = crate::install::LocalSelection::new(&e.include, &e.exclude)
        .map_err(|err| (true, err.to_string()))?;
    crate::install::selected_size(path, &sel).map_err(|err| {
        (
            matches!(err, crate::install::InstallError::NotFound(_)),
            err.to_string(),
        )
    })
}

/// Bytes of a file, or of every file under a folder (symlinks followed), by metadata only.
pub fn local_size(path: &Path) -> std::io::Result<u64> {
    let md = std::fs::metadata(path)?;
    if !md.is_dir() {
        return Ok(md.len());
    }
    let mut total = 0u64;
    for entry in std::fs::read_dir(path)? {
        total = total.saturating_add(local_size(&entry?.path())?);
    }
    Ok(total)
}

/// One file a fetch wants: its digest, size and name.
type WantedFile = (ExpectedHash, u64, String);

fn last_component(p: &str) -> String {
    p.rsplit('/').next().unwrap_or(p).to_owned()
}

/// What of each fetching action's files is on this machine already
/// ([`crate::install::blobs`]: the store's files, the HF cache, `settings.adopt_from`), for
/// [`super::PlanOptions::adoptable`]. A repair's files are known by the sha256 their
/// fingerprints recorded; an install's by the lock's sha256s, else by the Hub's listing (LFS
/// sha256s and git blob sha1s; `hub` `None` or a Hub that does not answer leaves the entry
/// out); a URL's by its entry's `hash: sha256:…`. Reads names and metadata only: what is
/// found is checked when it is adopted.
#[allow(
    clippy::too_many_arguments,
    reason = "the facts diff already holds, passed as they are"
)]
pub async fn adoptable(
    plan: &Plan,
    manifest: &Manifest,
    inventory: &Inventory,
    lock: Option<&LockFile>,
    hub: Option<&HubClient>,
    env: &HubEnv,
    sources: &AdoptSources,
    store: Option<&dyn RecordStore>,
) -> BTreeMap<String, Adoptable> {
    let mut wanted: Vec<(String, Vec<WantedFile>)> = Vec::new();
    for a in plan.changes() {
        let Some(entry) = manifest.entry(&a.name) else {
            continue;
        };
        if entry.inplace {
            continue;
        }
        let files = match &a.step {
            Step::Repair { key, files, .. } => repair_files(inventory, Some(key), files),
            Step::Install { .. } | Step::Replace { .. } => {
                match install_files(entry, lock, hub, env).await {
                    Some(f) => f,
                    None => continue,
                }
            }
            _ => continue,
        };
        if !files.is_empty() {
            wanted.push((a.name.clone(), files));
        }
    }
    if wanted.is_empty() {
        return BTreeMap::new();
    }
    let shas: Vec<&str> = wanted
        .iter()
        .flat_map(|(_, files)| files.iter().map(|(hash, _, _)| hash.hex()))
        .collect();
    let ix = BlobIndex::gather(
        sources,
        store.map(|s| (s, inventory.models_dir.as_path())),
        &shas,
    );
    let mut out = BTreeMap::new();
    for (name, files) in wanted {
        let mut found = Adoptable {
            of_files: files.len(),
            ..Adoptable::default()
        };
        let mut rest = 0u64;
        let mut sizes_known = true;
        for (hash, size, file) in &files {
            let size = if *size == 0 {
                let Some(n) = ix.size_of(hash.hex(), file) else {
                    sizes_known = false;
                    continue;
                };
                n
            } else {
                *size
            };
            match ix.lookup(hash.hex(), size, file, &inventory.models_dir) {
                Some(f) => {
                    found.bytes += size;
                    found.files += 1;
                    let label = f.origin.to_string();
                    if !found.from.contains(&label) {
                        found.from.push(label);
                    }
                }
                None => rest += size,
            }
        }
        found.rest = sizes_known.then_some(rest);
        if found.files > 0 {
            out.insert(name, found);
        }
    }
    out
}

/// A repair's damaged files, by the sha256 their fingerprints recorded.
fn repair_files(inventory: &Inventory, key: Option<&str>, damaged: &[String]) -> Vec<WantedFile> {
    let Some(r) = inventory
        .records
        .iter()
        .find(|r| Some(r.key.as_str()) == key)
    else {
        return Vec::new();
    };
    r.files
        .iter()
        .filter(|f| damaged.contains(&f.recorded.relative_path))
        .filter_map(|f| {
            let sha = f.recorded.sha256.clone()?;
            let name = if f.recorded.relative_path.is_empty() {
                r.resolved_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                last_component(&f.recorded.relative_path)
            };
            Some((ExpectedHash::Sha256(sha), f.recorded.size, name))
        })
        .collect()
}

/// An install's files: the lock's when it has a sha256 for each, else the Hub's listing, else
/// (URL) the entry's `hash: sha256:…`. `None`: not known.
async fn install_files(
    entry: &ModelEntry,
    lock: Option<&LockFile>,
    hub: Option<&HubClient>,
    env: &HubEnv,
) -> Option<Vec<WantedFile>> {
    if let Some(l) = lock.and_then(|l| l.entry_for(entry))
        && !l.files.is_empty()
        && l.files.iter().all(|f| f.sha256.is_some())
    {
        return Some(
            l.files
                .iter()
                .filter_map(|f| {
                    Some((
                        ExpectedHash::Sha256(f.sha256.clone()?),
                        f.size,
                        last_component(&f.path),
                    ))
                })
                .collect(),
        );
    }
    match &entry.source {
        ModelSource::Hf(src) => {
            let hub = hub.filter(|h| !h.is_offline())?;
            let auth = resolve_token(entry.token(), env);
            let filter = FileFilter::from_source(src)
                .with_globs(entry.include.clone(), entry.exclude.clone());
            let plan = hub.plan_source(src, &filter, &auth).await.ok()?;
            Some(
                plan.downloads
                    .iter()
                    .map(|d| {
                        let name = d
                            .dest
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        (d.expected.clone(), d.size, name)
                    })
                    .collect(),
            )
        }
        ModelSource::Url(u) => {
            let sha = entry.hash.as_deref()?.strip_prefix("sha256:")?;
            let name = u.url.path_segments()?.next_back()?.to_owned();
            if !name.contains('.') {
                return None;
            }
            Some(vec![(
                ExpectedHash::Sha256(sha.to_ascii_lowercase()),
                0,
                name,
            )])
        }
        // A registry's layers are named by their sha256 too; not looked up yet.
        ModelSource::Local(_) | ModelSource::Oci(_) => None,
    }
}
