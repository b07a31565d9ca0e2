//! The spec hash of an entry: what `Managed.spec_hash` stores so the plan can tell what
//! changed without keeping the whole entry in the record.
//!
//! Format: `src:<hex>;rec:<hex>`, each `<hex>` the sha256 of a canonical JSON document
//! (fixed key order, no whitespace, lists of globs and tags sorted and deduplicated):
//!
//! - `src` (a change means **replace**: the files must be fetched again):
//!   `{"v":1,"source":<canonical source incl. variant, subfolder, revision>,"inplace":…,
//!   "include":[…],"exclude":[…],"dest":…,"hash":…,"unsafe_pickle":…[,"layout":…]}` (`layout`
//!   only when it is not the default `invokeai`)
//! - `rec` (a change means **update**: only the record changes):
//!   `{"v":1,"name":…,"description":…,"tags":[…],"config":{overrides},"preload":…}`
//!
//! Tokens are never part of either. `v` versions the documents: a future change of what is
//! hashed bumps it, and records written before read as changed.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{ConfigOverrides, UnsafePickle};

/// An entry's spec hash, split into its source part and its record part.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SpecHash {
    /// sha256 hex of the source-level spec.
    pub source: String,
    /// sha256 hex of the record-level spec.
    pub record: String,
}

impl SpecHash {
    /// Reads the stored form `src:<hex>;rec:<hex>`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (src, rec) = s.split_once(';')?;
        let source = src.strip_prefix("src:")?;
        let record = rec.strip_prefix("rec:")?;
        let ok = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
        (ok(source) && ok(record)).then(|| Self {
            source: source.to_owned(),
            record: record.to_owned(),
        })
    }
}

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src:{};rec:{}", self.source, self.record)
    }
}

#[derive(Serialize)]
pub(super) struct SourceSpec<'a> {
    pub v: u32,
    pub source: &'a str,
    pub inplace: bool,
    pub include: Vec<&'a str>,
    pub exclude: Vec<&'a str>,
    pub dest: Option<&'a str>,
    pub hash: Option<&'a str>,
    pub unsafe_pickle: UnsafePickle,
    /// Left out for the default layout, so specs written before layouts existed keep their
    /// hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<crate::install::Layout>,
}

#[derive(Serialize)]
pub(super) struct RecordSpec<'a> {
    pub v: u32,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub tags: Vec<&'a str>,
    pub config: &'a ConfigOverrides,
    pub preload: bool,
}

/// Sorted, deduplicated view of a list of strings: order and repeats do not change meaning.
pub(super) fn set_of(v: &[String]) -> Vec<&str> {
    let mut s: Vec<&str> = v.iter().map(String::as_str).collect();
    s.sort_unstable();
    s.dedup();
    s
}

fn sha256_json<T: Serialize>(v: &T) -> String {
    // Serialising these plain structs cannot fail.
    let json = serde_json::to_vec(v).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

pub(super) fn compute(src: &SourceSpec<'_>, rec: &RecordSpec<'_>) -> SpecHash {
    SpecHash {
        source: sha256_json(src),
        record: sha256_json(rec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_junk() {
        let h = SpecHash {
            source: "a".repeat(64),
            record: "b".repeat(64),
        };
        let s = h.to_string();
        assert_eq!(s, format!("src:{};rec:{}", "a".repeat(64), "b".repeat(64)));
        assert_eq!(SpecHash::parse(&s), Some(h));
        for bad in ["", "deadbeef", "src:aa;rec:bb", "rec:x;src:y"] {
            assert_eq!(SpecHash::parse(bad), None, "{bad}");
        }
    }
}
