//! What the install service hands the download queue for each selected repo file: where to get
//! it, where to put it, how big it must be and what its content must hash to.

use std::path::PathBuf;

use sha1::Digest as _;

use super::source::Token;

/// The content hash a downloaded file must have.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "algorithm", content = "hex", rename_all = "snake_case")]
pub enum ExpectedHash {
    /// sha256 of the content (LFS files: `lfs.sha256` / `X-Linked-Etag`).
    Sha256(String),
    /// Git blob sha1, `sha1("blob {len}\0" + content)` (regular files: `oid` / `ETag`).
    GitBlobSha1(String),
}

impl ExpectedHash {
    /// The expected hex digest.
    pub fn hex(&self) -> &str {
        match self {
            Self::Sha256(h) | Self::GitBlobSha1(h) => h,
        }
    }

    /// A streaming checker for a body of `size` bytes.
    pub fn verifier(&self, size: u64) -> ContentVerifier {
        ContentVerifier::new(self.clone(), size)
    }
}

impl std::fmt::Display for ExpectedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sha256(h) => write!(f, "sha256:{h}"),
            Self::GitBlobSha1(h) => write!(f, "git-sha1:{h}"),
        }
    }
}

/// One file to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSpec {
    /// `{endpoint}/{repo}/resolve/{commit}/{path}` on the Hub host. It redirects (LFS: to a CDN
    /// on another host; small files: to `/api/resolve-cache/…` on the same host).
    pub url: reqwest::Url,
    /// The repo this comes from.
    pub repo_id: String,
    /// The file's path in the repo (validated).
    pub repo_path: String,
    /// Where to put it, relative to the model's folder (validated: no `..`, not absolute).
    pub dest: PathBuf,
    /// Exact size in bytes.
    pub size: u64,
    /// Content hash to verify against before the file is promoted.
    pub expected: ExpectedHash,
    /// Bearer token for `url`'s own origin only: it must never be sent to another host a
    /// redirect leads to (reqwest's default redirect policy strips `Authorization` across
    /// hosts; a hand-rolled redirect loop must do the same).
    pub access_token: Option<Token>,
}

/// The git blob sha1 of `content`: `sha1("blob {len}\0" + content)`.
pub fn git_blob_sha1(content: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex::encode(h.finalize())
}

/// The sha256 of `content`, lowercase hex.
pub fn sha256_hex(content: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(content))
}

/// A body that does not match its listing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Wrong length.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    Size {
        /// From the listing.
        expected: u64,
        /// Received.
        actual: u64,
    },
    /// Wrong hash.
    #[error("content hash mismatch: expected {expected}, got {actual}")]
    Hash {
        /// From the listing.
        expected: String,
        /// Computed.
        actual: String,
    },
}

/// Hashes a body as it streams by and checks it against [`ExpectedHash`] and the size.
///
/// A resumed download feeds the bytes already on disk first, then the rest.
pub struct ContentVerifier {
    expected: ExpectedHash,
    size: u64,
    seen: u64,
    state: HashState,
}

enum HashState {
    Sha256(sha2::Sha256),
    Sha1(sha1::Sha1),
}

impl ContentVerifier {
    /// A verifier for `size` bytes hashing to `expected`.
    pub fn new(expected: ExpectedHash, size: u64) -> Self {
        let state = match &expected {
            ExpectedHash::Sha256(_) => HashState::Sha256(sha2::Sha256::new()),
            ExpectedHash::GitBlobSha1(_) => {
                // The git header needs the length up front: use the claimed one; a body of
                // another length fails the size check anyway.
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {size}\0").as_bytes());
                HashState::Sha1(h)
            }
        };
        Self {
            expected,
            size,
            seen: 0,
            state,
        }
    }

    /// Feeds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.seen += chunk.len() as u64;
        match &mut self.state {
            HashState::Sha256(h) => h.update(chunk),
            HashState::Sha1(h) => h.update(chunk),
        }
    }

    /// Bytes fed so far.
    pub fn bytes_seen(&self) -> u64 {
        self.seen
    }

    /// Checks size and hash.
    pub fn finish(self) -> Result<(), VerifyError> {
        if self.seen != self.size {
            return Err(VerifyError::Size {
                expected: self.size,
                actual: self.seen,
            });
        }
        let actual = match self.state {
            HashState::Sha256(h) => hex::encode(h.finalize()),
            HashState::Sha1(h) => hex::encode(h.finalize()),
        };
        if actual.eq_ignore_ascii_case(self.expected.hex()) {
            Ok(())
        } else {
            Err(VerifyError::Hash {
                expected: self.expected.to_string(),
                actual,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_sha1_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_sha1(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(
            git_blob_sha1(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
    }

    #[test]
    fn verifier_checks_chunks() {
        let body = b"some weights here";
        for expected in [
            ExpectedHash::Sha256(sha256_hex(body)),
            ExpectedHash::GitBlobSha1(git_blob_sha1(body)),
        ] {
            let mut v = expected.verifier(body.len() as u64);
            v.update(&body[..4]);
            v.update(&body[4..]);
            v.finish().unwrap();
            let mut v = expected.verifier(body.len() as u64);
            v.update(b"some weights HERE");
            assert!(matches!(v.finish(), Err(VerifyError::Hash { .. })));
            let mut v = expected.verifier(body.len() as u64);
            v.update(&body[..3]);
            assert!(matches!(v.finish(), Err(VerifyError::Size { .. })));
        }
    }
}
