//! Hashing a download while its bytes arrive. A blocking task follows the contiguous prefix of
//! the `.part` that is on disk (a single stream's bytes in order; a multi-range download's
//! completed ranges from the start, as they land) and hashes it: sha256 for verification, the
//! git blob sha1 of small Hub files, and the content hashes the caller asked for (the
//! installer's record hash). When the last byte is written only the bytes hashed after it
//! remain, instead of the whole file.
//!
//! The task reads the bytes back from the page cache the writers just filled (ranges arrive
//! out of order, so there is no single stream to hash); a resumed `.part` is hashed once, from
//! its start, while the rest of it downloads. sha256 (about a third of blake3's speed) gets a
//! thread of its own when other digests are wanted too, fed the buffers the reading thread
//! hashes, so the slowest hash sets the pace, not their sum, and each byte is read back once.
//! Memory stays at three 1 MiB buffers per download.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use sha1::Digest as _;

use crate::hash::HashAlgorithm;

/// Bytes read back per step.
const BUF: usize = 1 << 20;

/// What a download hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Want {
    /// sha256 (verification, or asked for as a content hash).
    pub sha256: bool,
    /// The git blob sha1 of a file of this many bytes.
    pub git_sha1_len: Option<u64>,
    /// BLAKE3 (`blake3` and `blake3_single` share the digest).
    pub blake3: bool,
}

impl Want {
    /// What to hash for these checks and content hashes. imohash samples three 16 KiB blocks of
    /// the finished file and is not computed here.
    pub fn new(sha256: bool, git_sha1_len: Option<u64>, content: &[HashAlgorithm]) -> Self {
        Self {
            sha256: sha256 || content.contains(&HashAlgorithm::Sha256),
            git_sha1_len,
            blake3: content
                .iter()
                .any(|a| matches!(a, HashAlgorithm::Blake3 | HashAlgorithm::Blake3Single)),
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.sha256 && self.git_sha1_len.is_none() && !self.blake3
    }

    /// The work of one hashing thread each: sha256 alone, and the rest together.
    fn per_thread(&self) -> Vec<Want> {
        let rest = Self {
            sha256: false,
            ..self.clone()
        };
        if self.sha256 && !rest.is_empty() {
            vec![
                Self {
                    sha256: true,
                    git_sha1_len: None,
                    blake3: false,
                },
                rest,
            ]
        } else {
            vec![self.clone()]
        }
    }
}

/// A finished download's digests (lowercase hex).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Digests {
    pub sha256: Option<String>,
    pub git_sha1: Option<String>,
    pub blake3: Option<String>,
}

impl Digests {
    /// These digests with those `other` has and these lack.
    fn or(self, other: Self) -> Self {
        Self {
            sha256: self.sha256.or(other.sha256),
            git_sha1: self.git_sha1.or(other.git_sha1),
            blake3: self.blake3.or(other.blake3),
        }
    }

    /// The content hashes as `algo:hex` (what [`super::DownloadJob::digests`] reports).
    pub fn content(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(h) = &self.blake3 {
            v.push(format!("blake3:{h}"));
        }
        if let Some(h) = &self.sha256 {
            v.push(format!("sha256:{h}"));
        }
        v
    }
}

struct Hashers {
    sha256: Option<sha2::Sha256>,
    sha1: Option<sha1::Sha1>,
    blake3: Option<Box<blake3::Hasher>>,
}

impl Hashers {
    fn new(want: &Want) -> Self {
        Self {
            sha256: want.sha256.then(sha2::Sha256::new),
            sha1: want.git_sha1_len.map(|len| {
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {len}\0").as_bytes());
                h
            }),
            blake3: want.blake3.then(|| Box::new(blake3::Hasher::new())),
        }
    }

    fn update(&mut self, b: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(b);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(b);
        }
        if let Some(h) = &mut self.blake3 {
            h.update(b);
        }
    }

    fn finish(self) -> Digests {
        Digests {
            sha256: self.sha256.map(|h| hex::encode(h.finalize())),
            git_sha1: self.sha1.map(|h| hex::encode(h.finalize())),
            blake3: self.blake3.map(|h| h.finalize().to_hex().to_string()),
        }
    }
}

#[derive(Default)]
struct FeedState {
    /// Bytes from the start of the file that are on disk.
    ready: u64,
    /// The file is complete with this many bytes.
    end: Option<u64>,
    aborted: bool,
}

/// What the writers tell the hashing task: how much of the file's start is on disk.
#[derive(Default)]
pub(crate) struct Feed {
    state: Mutex<FeedState>,
    cv: Condvar,
}

impl Feed {
    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The first `ready` bytes of the file are written.
    pub fn advance(&self, ready: u64) {
        let mut s = self.lock();
        if ready > s.ready {
            s.ready = ready;
            self.cv.notify_one();
        }
    }

    /// The file is complete at `len` bytes.
    fn close(&self, len: u64) {
        let mut s = self.lock();
        s.ready = len;
        s.end = Some(len);
        self.cv.notify_one();
    }

    fn abort(&self) {
        self.lock().aborted = true;
        self.cv.notify_one();
    }
}

/// Hashes `file`'s prefix as `feed` says it grows, until the feed is closed (`Some`) or
/// aborted (`None`). When sha256 and other digests are wanted, sha256 runs on a thread of its
/// own, fed the buffers this one reads (each byte is read back once).
fn follow(file: &File, feed: &Feed, want: &Want) -> io::Result<Option<Digests>> {
    let mut parts = want.per_thread();
    let rest = Hashers::new(&parts.pop().unwrap_or_default());
    let Some(sha) = parts.pop() else {
        let mut h = rest;
        let mut buf = vec![0u8; BUF];
        let done = read_prefix(feed, |at, n| {
            file.read_exact_at(&mut buf[..n], at)?;
            h.update(&buf[..n]);
            Ok(())
        })?;
        return Ok(done.then(|| h.finish()));
    };
    // Buffers go to the sha256 thread and come back; three of them keep both threads busy.
    let (to_sha, from_reader) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(2);
    let (to_reader, returned) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let sha_thread = scope.spawn(move || {
            let mut h = Hashers::new(&sha);
            for (buf, n) in from_reader {
                h.update(&buf[..n]);
                // The reader may be gone (aborted): then the buffer is just dropped.
                let _ = to_reader.send(buf);
            }
            h
        });
        let mut h = rest;
        let mut spare = 3;
        let done = read_prefix(feed, |at, n| {
            let mut buf = if spare > 0 {
                spare -= 1;
                vec![0u8; BUF]
            } else {
                returned
                    .recv()
                    .map_err(|_| io::Error::other("the sha256 thread stopped"))?
            };
            file.read_exact_at(&mut buf[..n], at)?;
            h.update(&buf[..n]);
            to_sha
                .send((buf, n))
                .map_err(|_| io::Error::other("the sha256 thread stopped"))
        });
        drop(to_sha);
        let sha = sha_thread
            .join()
            .map_err(|_| io::Error::other("the sha256 thread panicked"))?;
        Ok(done?.then(|| h.finish().or(sha.finish())))
    })
}

/// Calls `step(offset, len)` for each piece (at most [`BUF`] bytes) of the file's prefix as
/// `feed` reports it on disk, in order; `true` once the whole file went through, `false` when
/// the feed was aborted.
fn read_prefix(
    feed: &Feed,
    mut step: impl FnMut(u64, usize) -> io::Result<()>,
) -> io::Result<bool> {
    let mut hashed = 0u64;
    loop {
        let (ready, end) = {
            let mut s = feed.lock();
            while !s.aborted && s.ready <= hashed && s.end.is_none() {
                s = feed
                    .cv
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if s.aborted {
                return Ok(false);
            }
            (s.ready, s.end)
        };
        while hashed < ready {
            let n = (ready - hashed).min(BUF as u64) as usize;
            step(hashed, n)?;
            hashed += n as u64;
        }
        if end.is_some_and(|e| hashed >= e) {
            return Ok(true);
        }
    }
}

/// A running hashing task over one `.part`. Dropping it stops the task.
pub(crate) struct HashTask {
    feed: Arc<Feed>,
    handle: Option<tokio::task::JoinHandle<io::Result<Option<Digests>>>>,
}

impl HashTask {
    /// Starts hashing `part` (which must exist) from its first byte.
    pub fn start(part: &Path, want: Want) -> io::Result<Self> {
        let file = File::open(part)?;
        let feed = Arc::new(Feed::default());
        let f2 = feed.clone();
        let handle = tokio::task::spawn_blocking(move || follow(&file, &f2, &want));
        Ok(Self {
            feed,
            handle: Some(handle),
        })
    }

    /// Where writers report progress.
    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// Hashes what is left of a complete file of `len` bytes and returns the digests.
    pub async fn finish(mut self, len: u64) -> io::Result<Digests> {
        self.feed.close(len);
        let Some(handle) = self.handle.take() else {
            return Err(io::Error::other("the hashing task is gone"));
        };
        handle
            .await
            .map_err(io::Error::other)??
            .ok_or_else(|| io::Error::other("hashing was stopped"))
    }
}

impl Drop for HashTask {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.feed.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::state::RangedState;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// `d` holds the sha256, blake3 and git blob sha1 of `body`, computed here independently.
    fn assert_all_of(d: &Digests, body: &[u8]) {
        assert_eq!(
            d.sha256.as_deref(),
            Some(hex::encode(sha2::Sha256::digest(body)).as_str())
        );
        assert_eq!(
            d.blake3.as_deref(),
            Some(blake3::hash(body).to_hex().as_str())
        );
        let mut s1 = sha1::Sha1::new();
        s1.update(format!("blob {}\0", body.len()).as_bytes());
        s1.update(body);
        assert_eq!(d.git_sha1, Some(hex::encode(s1.finalize())));
    }

    /// Ranges land out of order; the hasher only ever sees the contiguous completed prefix,
    /// and its digests equal those of the whole content.
    #[test]
    fn prefix_hasher_follows_out_of_order_ranges() {
        let body = data(5 * 70_000 + 123);
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.part");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&part)
            .unwrap();
        file.set_len(body.len() as u64).unwrap();
        let mut state = RangedState::split(body.len() as u64, 0, 5, 1, u64::MAX);
        let want = Want::new(true, Some(body.len() as u64), &[HashAlgorithm::Blake3]);
        let feed = Arc::new(Feed::default());
        let (f2, w2) = (feed.clone(), want.clone());
        let reader = File::open(&part).unwrap();
        let t = std::thread::spawn(move || follow(&reader, &f2, &w2));
        let mut prefixes = Vec::new();
        // Last range first, then the middle ones, the first one last, each in two halves.
        for i in [4, 2, 3, 1, 0] {
            let r = state.ranges[i];
            let mid = r.start + (r.end - r.start) / 2;
            for (a, b) in [(r.start, mid), (mid, r.end)] {
                file.write_all_at(&body[a as usize..b as usize], a).unwrap();
                state.ranges[i].done += b - a;
                let p = state.contiguous_done();
                prefixes.push(p);
                feed.advance(p);
            }
        }
        assert_eq!(prefixes[..8], [0; 8], "no prefix before range 0 lands");
        assert!(prefixes[8] > 0 && prefixes[8] < body.len() as u64);
        assert_eq!(prefixes[9], body.len() as u64);
        feed.close(body.len() as u64);
        let d = t.join().unwrap().unwrap().unwrap();
        assert_all_of(&d, &body);
        assert_eq!(
            d.content(),
            vec![
                format!("blake3:{}", blake3::hash(&body).to_hex()),
                format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)))
            ]
        );
    }

    #[test]
    fn an_aborted_hasher_stops_without_digests() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.part");
        std::fs::write(&part, b"abc").unwrap();
        let feed = Arc::new(Feed::default());
        let f2 = feed.clone();
        let reader = File::open(&part).unwrap();
        let t = std::thread::spawn(move || follow(&reader, &f2, &Want::new(true, None, &[])));
        feed.advance(2);
        feed.abort();
        assert_eq!(t.join().unwrap().unwrap(), None);
    }

    /// sha256 gets a thread of its own; the two threads' digests together are the whole set.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sha256_and_the_rest_hash_on_two_threads() {
        let w = Want::new(true, Some(10), &[HashAlgorithm::Blake3]);
        let parts = w.per_thread();
        assert_eq!(parts.len(), 2);
        assert!(parts[0].sha256 && !parts[0].blake3 && parts[0].git_sha1_len.is_none());
        assert!(!parts[1].sha256 && parts[1].blake3 && parts[1].git_sha1_len == Some(10));
        assert_eq!(Want::new(true, None, &[]).per_thread().len(), 1);
        assert_eq!(
            Want::new(false, None, &[HashAlgorithm::Blake3])
                .per_thread()
                .len(),
            1
        );

        let body = data(3 * BUF + 17);
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.part");
        std::fs::write(&part, &body[..BUF]).unwrap();
        let task = HashTask::start(
            &part,
            Want::new(true, Some(body.len() as u64), &[HashAlgorithm::Blake3]),
        )
        .unwrap();
        task.feed().advance(BUF as u64);
        let file = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
        file.write_all_at(&body[BUF..], BUF as u64).unwrap();
        task.feed().advance(2 * BUF as u64);
        let d = task.finish(body.len() as u64).await.unwrap();
        assert_all_of(&d, &body);
    }

    #[test]
    fn want_maps_content_algorithms() {
        let w = Want::new(false, None, &[HashAlgorithm::Blake3Single]);
        assert!(w.blake3 && !w.sha256);
        let w = Want::new(
            false,
            None,
            &[HashAlgorithm::Sha256, HashAlgorithm::Imohash],
        );
        assert!(w.sha256 && !w.blake3);
        assert!(Want::new(false, None, &[HashAlgorithm::Imohash]).is_empty());
    }
}
