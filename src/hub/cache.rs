//! Hub metadata fetched once per run: the model info at a revision and the tree at a commit,
//! shared by every client that holds the same [`MetadataCache`] (the reconciler's look-ups and
//! the installer's client), while a run holds a [`MetadataRun`].
//!
//! A run is one `apply` (in `watch`, the applies that overlap): the size look-up of `diff`'s
//! plan and the install that follows read the same answer, and a branch that moves between
//! them cannot make the two disagree. Once the last run ends the answers are forgotten, so the
//! next run (a later resync) asks the Hub again; in `watch`, where applies may overlap for
//! hours (a long download), an answer is also forgotten after [`MAX_AGE`], so a branch that
//! moved is seen by the next resync. Only answers are kept, never errors; two
//! look-ups of one key at once share one request. Keys carry the endpoint, the repository,
//! the revision and a digest of the token (another token may see another repository).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::info::{ModelInfo, RepoFile};
use super::token::ResolvedToken;

/// The longest an answer is kept, even while runs go on.
pub const MAX_AGE: Duration = Duration::from_mins(1);

type Cell<T> = (Instant, Arc<OnceCell<T>>);

#[derive(Default)]
struct Inner {
    /// Runs in progress; the maps are used only while one is.
    runs: AtomicUsize,
    info: Mutex<HashMap<String, Cell<ModelInfo>>>,
    tree: Mutex<HashMap<String, Cell<Vec<RepoFile>>>>,
}

/// Hub metadata shared by clients for the length of a run. Cheap to clone.
#[derive(Clone, Default)]
pub struct MetadataCache(Arc<Inner>);

impl std::fmt::Debug for MetadataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataCache")
            .field("runs", &self.0.runs.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A run in progress: while one is alive, the cache keeps answers.
#[derive(Debug)]
#[must_use = "the run ends when this is dropped"]
pub struct MetadataRun(MetadataCache);

impl Drop for MetadataRun {
    fn drop(&mut self) {
        let inner = &(self.0).0;
        if inner.runs.fetch_sub(1, Ordering::AcqRel) == 1 {
            lock(&inner.info).clear();
            lock(&inner.tree).clear();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MetadataCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a run: answers are kept until the last run ends.
    pub fn run(&self) -> MetadataRun {
        self.0.runs.fetch_add(1, Ordering::AcqRel);
        MetadataRun(self.clone())
    }

    fn active(&self) -> bool {
        self.0.runs.load(Ordering::Acquire) > 0
    }

    /// The key of a look-up.
    pub(crate) fn key(
        endpoint: &str,
        repo: &str,
        revision: Option<&str>,
        auth: &ResolvedToken,
    ) -> String {
        let token = auth.token.as_ref().map_or_else(String::new, |t| {
            blake3::hash(t.expose().as_bytes()).to_hex()[..16].to_owned()
        });
        format!(
            "{endpoint}\u{1f}{repo}\u{1f}{}\u{1f}{token}",
            revision.unwrap_or("")
        )
    }

    pub(crate) async fn info<E, F>(&self, key: String, fetch: F) -> Result<ModelInfo, E>
    where
        F: Future<Output = Result<ModelInfo, E>>,
    {
        if !self.active() {
            return fetch.await;
        }
        let cell = fresh(&mut lock(&self.0.info), key);
        cell.get_or_try_init(|| fetch).await.cloned()
    }

    pub(crate) async fn tree<E, F>(&self, key: String, fetch: F) -> Result<Vec<RepoFile>, E>
    where
        F: Future<Output = Result<Vec<RepoFile>, E>>,
    {
        if !self.active() {
            return fetch.await;
        }
        let cell = fresh(&mut lock(&self.0.tree), key);
        cell.get_or_try_init(|| fetch).await.cloned()
    }
}

/// The cell of `key`, a new one when there is none or it is older than [`MAX_AGE`].
fn fresh<T>(map: &mut HashMap<String, Cell<T>>, key: String) -> Arc<OnceCell<T>> {
    let now = Instant::now();
    let e = map
        .entry(key)
        .or_insert_with(|| (now, Arc::new(OnceCell::new())));
    if now.duration_since(e.0) > MAX_AGE {
        *e = (now, Arc::new(OnceCell::new()));
    }
    e.1.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(sha: &str) -> ModelInfo {
        ModelInfo::from_wire("o/n", &serde_json::json!({"id": "o/n", "sha": sha})).unwrap()
    }

    #[test]
    fn answers_are_kept_only_while_a_run_lasts() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let cache = MetadataCache::new();
            let calls = AtomicUsize::new(0);
            let get = |sha: &'static str| {
                let calls = &calls;
                let cache = &cache;
                async move {
                    cache
                        .info("k".into(), async {
                            calls.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, ()>(info(sha))
                        })
                        .await
                        .unwrap()
                }
            };
            // No run: every look-up asks.
            get("a").await;
            get("a").await;
            assert_eq!(calls.load(Ordering::Relaxed), 2);
            let run = cache.run();
            let second = cache.run();
            assert_eq!(get("b").await.sha.as_deref(), Some("b"));
            assert_eq!(get("c").await.sha.as_deref(), Some("b"), "kept for the run");
            drop(second);
            assert_eq!(get("d").await.sha.as_deref(), Some("b"), "one run still on");
            assert_eq!(calls.load(Ordering::Relaxed), 3);
            drop(run);
            let _next = cache.run();
            assert_eq!(
                get("e").await.sha.as_deref(),
                Some("e"),
                "a new run asks again"
            );
            // A failure is not kept.
            let failed = cache
                .info("f".into(), async { Err::<ModelInfo, _>("offline") })
                .await;
            assert!(failed.is_err());
            let ok = cache
                .info("f".into(), async { Ok::<_, &str>(info("g")) })
                .await;
            assert_eq!(ok.unwrap().sha.as_deref(), Some("g"));
        });
    }
}
