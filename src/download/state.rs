//! The `.part.state` sidecar of a multi-range download: which bytes of each range are on disk,
//! so a killed process resumes every range where it was.
//!
//! The state is saved after the data it describes was written (never before), so it can only
//! under-claim: a resumed range may re-fetch what arrived after the last save, never skip bytes.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;

/// One byte range `[start, end)`; `done` bytes from `start` are on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RangeState {
    pub start: u64,
    pub end: u64,
    pub done: u64,
}

impl RangeState {
    pub fn next_offset(&self) -> u64 {
        self.start + self.done
    }

    pub fn is_complete(&self) -> bool {
        self.start + self.done >= self.end
    }
}

/// Progress of a multi-range download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RangedState {
    pub version: u32,
    pub total: u64,
    pub ranges: Vec<RangeState>,
}

impl RangedState {
    /// Splits `[prefix, total)` into ranges for `parts` streams: `parts` ranges of at least
    /// `min_range` bytes, or more of at most `max_range` bytes when the file is large, so
    /// that streams taking them in order keep the completed prefix (what is hashed while the
    /// file downloads) close behind the fastest stream. The first `prefix` bytes (an earlier
    /// single-stream partial) count as done.
    pub fn split(total: u64, prefix: u64, parts: u32, min_range: u64, max_range: u64) -> Self {
        let mut ranges = Vec::new();
        let prefix = prefix.min(total);
        if prefix > 0 {
            ranges.push(RangeState {
                start: 0,
                end: prefix,
                done: prefix,
            });
        }
        let rest = total - prefix;
        let n = u64::from(parts.max(1))
            .min(rest.div_ceil(min_range.max(1)))
            .max(1);
        let size = rest.div_ceil(n).min(max_range.max(min_range).max(1));
        let mut start = prefix;
        while start < total {
            let end = (start + size).min(total);
            ranges.push(RangeState {
                start,
                end,
                done: 0,
            });
            start = end;
        }
        Self {
            version: VERSION,
            total,
            ranges,
        }
    }

    pub fn done_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| r.done.min(r.end - r.start))
            .sum()
    }

    /// Bytes from the start of the file that are on disk without a gap: the completed
    /// ranges in order, then what the first incomplete one holds.
    pub fn contiguous_done(&self) -> u64 {
        let mut n = 0;
        for r in &self.ranges {
            let done = r.done.min(r.end - r.start);
            n += done;
            if r.start + done < r.end {
                break;
            }
        }
        n
    }

    /// Ranges must tile `[0, total)` in order, with `done` inside each.
    fn is_consistent(&self) -> bool {
        let mut at = 0;
        for r in &self.ranges {
            if r.start != at || r.end < r.start || r.done > r.end - r.start {
                return false;
            }
            at = r.end;
        }
        at == self.total && self.version == VERSION
    }

    /// Loads a sidecar; `None` when it is missing, unreadable or inconsistent (the caller
    /// then starts over: a state that cannot be trusted must not skip bytes).
    pub fn load(path: &Path) -> Option<Self> {
        let text = std::fs::read(path).ok()?;
        let s: Self = serde_json::from_slice(&text).ok()?;
        s.is_consistent().then_some(s)
    }

    /// Saves atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let tmp = sibling(path, ".tmp");
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The partial file of a destination.
pub(crate) fn part_path(dest: &Path) -> PathBuf {
    sibling(dest, ".part")
}

/// The range-state sidecar of a destination.
pub(crate) fn state_path(dest: &Path) -> PathBuf {
    sibling(dest, ".part.state")
}

/// Length of a file, `None` when it cannot be read.
pub(crate) fn file_len(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

/// Removes a file; a missing one is fine, another failure is logged.
pub(crate) fn remove_quietly(p: &Path) {
    if let Err(e) = std::fs::remove_file(p)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("could not remove {}: {e}", p.display());
    }
}

/// Removes a destination's partial file and range state.
pub(crate) fn remove_partial(dest: &Path) {
    remove_quietly(&part_path(dest));
    remove_quietly(&state_path(dest));
}

/// Bytes on disk for a destination's partial download.
pub(crate) fn partial_len(dest: &Path) -> u64 {
    if let Some(s) = RangedState::load(&state_path(dest)) {
        return s.done_bytes();
    }
    file_len(&part_path(dest)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tiles_the_file() {
        let s = RangedState::split(1000, 0, 4, 1, u64::MAX);
        assert_eq!(s.ranges.len(), 4);
        assert!(s.is_consistent());
        assert_eq!(s.ranges[3].end, 1000);
        let s = RangedState::split(1000, 300, 4, 1, u64::MAX);
        assert_eq!(
            s.ranges[0],
            RangeState {
                start: 0,
                end: 300,
                done: 300
            }
        );
        assert!(s.is_consistent());
        assert_eq!(s.done_bytes(), 300);
        let s = RangedState::split(1000, 0, 8, 400, u64::MAX);
        assert_eq!(s.ranges.len(), 3);
        assert!(s.is_consistent());
        // A large file: ranges of at most max_range, more of them than streams.
        let s = RangedState::split(1000, 100, 2, 1, 128);
        assert_eq!(s.ranges.len(), 1 + 900usize.div_ceil(128));
        assert!(s.ranges[1..].iter().all(|r| r.end - r.start <= 128));
        assert!(s.is_consistent());
        // max_range never goes below min_range.
        let s = RangedState::split(1000, 0, 2, 400, 100);
        assert_eq!(s.ranges.len(), 3);
        assert!(s.is_consistent());
    }

    #[test]
    fn save_load_roundtrip_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.part.state");
        let mut s = RangedState::split(10_000, 0, 3, 1, u64::MAX);
        s.ranges[1].done = 17;
        s.save(&p).unwrap();
        assert_eq!(RangedState::load(&p), Some(s.clone()));
        s.ranges[1].done = 1_000_000;
        s.save(&p).unwrap();
        assert_eq!(RangedState::load(&p), None);
        std::fs::write(&p, b"{not json").unwrap();
        assert_eq!(RangedState::load(&p), None);
    }
}
