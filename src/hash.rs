//! Content hashing of model files and folders. Issue #3 fills in the algorithms.

crate::string_enum! {
    /// A content hash algorithm. Results are strings `algo:hex`.
    HashAlgorithm, "hash algorithm" {
        /// BLAKE3, multi-threaded over a memory map (the default).
        Blake3 = "blake3",
        /// BLAKE3 on one thread (for comparison and small machines).
        Blake3Single = "blake3_single",
        /// SHA-256.
        Sha256 = "sha256",
        /// imohash-style sampled hash: constant time per file.
        Imohash = "imohash",
    }
}

impl Default for HashAlgorithm {
    fn default() -> Self {
        Self::Blake3
    }
}
