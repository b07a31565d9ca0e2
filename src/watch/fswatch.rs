//! Watching the manifest: notify + debouncer on the manifest's parent directory, and the
//! content-hash check that turns events into "changed" or "no-op".
//!
//! Why the directory: Kubernetes mounts a ConfigMap as
//! `dir/..2026_11_29_10_00_00.123/models.yaml`, `dir/..data -> ..2026_…`,
//! `dir/models.yaml -> ..data/models.yaml`, and updates it by writing a new timestamped
//! directory and renaming a new `..data` symlink over the old one. A watch on the file itself
//! follows the first inode and goes silent after the first swap; a watch on the directory
//! sees every swap.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use super::WatchError;

/// Whether a file event at `event_path` can change the manifest named `manifest_name`: the
/// file itself, or a ConfigMap's `..data` link or `..<timestamp>` directories (any name
/// starting with `..`).
pub fn is_relevant_event_path(event_path: &Path, manifest_name: &OsStr) -> bool {
    match event_path.file_name() {
        Some(n) if n == manifest_name => true,
        Some(n) => n.as_encoded_bytes().starts_with(b".."),
        None => false,
    }
}

/// The live directory watch. Dropping it stops the watch thread.
pub(crate) struct ManifestWatch {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl ManifestWatch {
    /// Watches `manifest`'s parent directory; sends `()` on `tx` after each debounced burst
    /// of relevant events (and after watcher errors, so the manifest is re-read to be safe).
    pub(crate) fn start(
        manifest: &Path,
        debounce: Duration,
        tx: mpsc::UnboundedSender<()>,
    ) -> Result<Self, WatchError> {
        let (dir, name) = split(manifest);
        let watch_err = |source| WatchError::Watch {
            dir: dir.clone(),
            source,
        };
        let handler = move |res: DebounceEventResult| {
            let relevant = match res {
                Ok(events) => events
                    .iter()
                    .flat_map(|e| e.paths.iter())
                    .any(|p| is_relevant_event_path(p, &name)),
                Err(errors) => {
                    for e in errors {
                        tracing::warn!("manifest watch error: {e}");
                    }
                    true
                }
            };
            if relevant {
                // The loop may be gone during shutdown; nothing to do then.
                let _ = tx.send(());
            }
        };
        // A tick of a quarter of the timeout keeps the delivery latency close to `debounce`.
        let tick = (debounce / 4).max(Duration::from_millis(10));
        let mut debouncer = new_debouncer(debounce, Some(tick), handler).map_err(watch_err)?;
        debouncer
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(watch_err)?;
        Ok(Self {
            _debouncer: debouncer,
        })
    }
}

/// The absolute parent directory and the file name of `manifest`.
fn split(manifest: &Path) -> (PathBuf, std::ffi::OsString) {
    let abs = std::path::absolute(manifest).unwrap_or_else(|_| manifest.to_path_buf());
    let name = abs.file_name().map(OsStr::to_os_string).unwrap_or_default();
    let dir = match abs.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    (dir, name)
}

/// The content hash compared between reads (`blake3:<hex>`).
pub(crate) fn content_hash(content: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(content).to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevant_paths() {
        let name = OsStr::new("models.yaml");
        let yes = [
            "/etc/ms/models.yaml",
            "/etc/ms/..data",
            "/etc/ms/..data_tmp",
            "/etc/ms/..2026_11_29_10_00_00.123456789",
        ];
        let no = [
            "/etc/ms/models.lock",
            "/etc/ms/other.yaml",
            "/etc/ms/.models.yaml.swp",
            "/",
        ];
        for p in yes {
            assert!(is_relevant_event_path(Path::new(p), name), "{p}");
        }
        for p in no {
            assert!(!is_relevant_event_path(Path::new(p), name), "{p}");
        }
    }

    #[test]
    fn split_relative_manifest() {
        let (dir, name) = split(Path::new("models.yaml"));
        assert!(dir.is_absolute());
        assert_eq!(name, "models.yaml");
    }
}
