//! `oci://HOST[:PORT]/REPO[:TAG][@sha256:DIGEST]`: where an artifact lives in a registry.
//!
//! The host is the registry (Distribution, Harbor, GHCR, ECR…; `settings.registries.HOST`
//! marks a plain-HTTP one), the repository is the distribution spec's
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/…)*`, the tag `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`. A
//! digest pins the artifact (and wins over a tag written beside it); with neither, the tag
//! is `latest`, as `docker pull` and `oras pull` take it. Credentials never go in the
//! string: they come from the entry (`username`/`password`, `token`) or the Docker config.

use std::fmt;

/// The scheme prefix.
pub const SCHEME: &str = "oci://";

/// The tag used when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// Why an `oci://` reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid OCI reference `{reference}`: {reason}")]
pub struct ReferenceError {
    /// The reference as written.
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed `oci://` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciReference {
    /// `host` or `host:port`, as written (lowercased).
    pub registry: String,
    /// `team/model`.
    pub repository: String,
    /// The tag, if written.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, if written.
    pub digest: Option<String>,
}

impl OciReference {
    /// Parses `oci://…` (the scheme is required, in any case).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let bad = |reason: &str| ReferenceError {
            reference: s.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = s
            .get(..SCHEME.len())
            .filter(|p| p.eq_ignore_ascii_case(SCHEME))
            .map(|_| &s[SCHEME.len()..])
            .ok_or_else(|| bad("it must start with oci://"))?;
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected oci://HOST/REPOSITORY[:TAG|@sha256:DIGEST]"))?;
        if host.contains('@') {
            return Err(bad(
                "credentials do not belong in the reference; use the entry's `username`/`password` or `token`, or `docker login`",
            ));
        }
        check_host(host).map_err(|r| bad(&r))?;
        let (name_tag, digest) = match path.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (path, None),
        };
        let (repository, tag) = match name_tag.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t)),
            _ => (name_tag, None),
        };
        check_repository(repository).map_err(|r| bad(&r))?;
        if let Some(t) = tag {
            check_tag(t).map_err(|r| bad(&r))?;
        }
        if let Some(d) = digest {
            check_digest(d).map_err(|r| bad(&r))?;
        }
        Ok(Self {
            registry: host.to_ascii_lowercase(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }

    /// What to ask the registry for: the digest when there is one, else the tag (`latest`
    /// when none is written).
    pub fn target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The tag to resolve (`latest` when none is written); `None` when a digest pins it.
    pub fn tag_or_default(&self) -> Option<&str> {
        if self.digest.is_some() {
            None
        } else {
            Some(self.tag.as_deref().unwrap_or(DEFAULT_TAG))
        }
    }

    /// Whether a digest pins the reference, so the registry can never move it.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// The same repository at `digest` (the tag kept, for the reader).
    #[must_use]
    pub fn at_digest(&self, digest: &str) -> Self {
        Self {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// The same artifact in another repository of the same registry (`repo` validated).
    pub fn with_repository(&self, repository: &str) -> Result<Self, ReferenceError> {
        check_repository(repository).map_err(|reason| ReferenceError {
            reference: format!("{SCHEME}{}/{repository}", self.registry),
            reason,
        })?;
        Ok(Self {
            repository: repository.to_owned(),
            ..self.clone()
        })
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for OciReference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(']') || host.starts_with('[') => (n, Some(p)),
        _ => (host, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(format!("port `{p}` is not a number from 0 to 65535"));
    }
    let ipv6 = name.starts_with('[') && name.ends_with(']') && name.len() > 2;
    let ok = ipv6
        && name[1..name.len() - 1]
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        || !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a registry host name"))
    }
}

/// The distribution spec's repository name: lowercase alphanumeric components separated by
/// `.`, `_`, `__` or dashes, joined by `/`; at most 255 characters.
pub fn check_repository(repo: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "repository `{repo}` must be lowercase letters, digits and single `.`/`_`/`__`/`-…` separators between `/`-separated parts"
        ))
    };
    if repo.is_empty() || repo.len() > 255 {
        return bad();
    }
    for comp in repo.split('/') {
        let bytes = comp.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return bad();
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if alnum(b) {
                i += 1;
                continue;
            }
            // A separator run: `.`, `_`, `__` or one or more `-`.
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &comp[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            if !ok {
                return bad();
            }
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag `{tag}` must be 1 to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
        ))
    }
}

/// `sha256:` and 64 lowercase hex digits: the only digest algorithm modelsync pulls (the one
/// every registry uses, and the Hub's LFS oid).
pub fn check_digest(d: &str) -> Result<(), String> {
    match d.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) =>
        {
            Ok(())
        }
        Some((alg, _)) if alg != "sha256" => {
            Err(format!("digest `{d}`: only sha256 digests are supported"))
        }
        _ => Err(format!(
            "digest `{d}` must be sha256: followed by 64 lowercase hex digits"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn forms_round_trip() {
        for s in [
            "oci://127.0.0.1:5000/team/sdxl",
            "oci://registry.example.com/team/sdxl:v1.0",
            &format!("oci://ghcr.io/o/m@{D}"),
            &format!("oci://localhost:5000/a/b/c:main@{D}"),
        ] {
            let r = OciReference::parse(s).unwrap();
            assert_eq!(r.to_string(), s);
        }
        let r = OciReference::parse("oci://h:5000/team/sdxl").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.target()),
            ("h:5000", "team/sdxl", "latest")
        );
        let r = OciReference::parse(&format!("oci://h/team/sdxl:v1@{D}")).unwrap();
        assert_eq!(r.target(), D);
        assert!(r.is_pinned());
        assert_eq!(r.tag_or_default(), None);
    }

    #[test]
    fn hostile_or_malformed_refused() {
        for s in [
            "oci://",
            "oci://host",
            "oci://host/",
            "oci://user:pw@host/repo",
            "oci://host:99999/repo",
            "oci://host/../etc",
            "oci://host/a/../b",
            "oci://host/Repo",
            "oci://host/repo:",
            "oci://host/repo:-x",
            "oci://host/repo@sha256:short",
            "oci://host/repo@sha512:00",
            "oci://host/re..po",
            "oci://ho_st/repo",
            "https://host/repo",
        ] {
            assert!(OciReference::parse(s).is_err(), "{s}");
        }
    }
}
