//! Registry credentials and the `WWW-Authenticate` challenge.
//!
//! Where credentials come from, first match wins: the entry's `username`/`password` or
//! `token` (already `${VAR}`-interpolated by the manifest), then the Docker config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; `auths.HOST.auth` is
//! base64 `user:password`, or `username`/`password`), else anonymous. Credential helpers
//! (`credsStore`, `credHelpers`) and OAuth refresh tokens (`identitytoken`) are not run: a
//! registry that needs them is logged into with a password or a token in the entry.
//! Secrets are [`Token`]s: never printed, logged, stored or written to the lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::hub::Token;

/// What to log in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user and password: sent as `Basic` to a registry that asks for it, and to the token
    /// service of a `Bearer` challenge.
    Basic {
        /// The user name.
        username: String,
        /// The password (or a personal access token used as one).
        password: Token,
    },
    /// A registry token sent as `Authorization: Bearer` as it is (no token service).
    Bearer(Token),
}

impl Credentials {
    /// `user:password` for a `Basic` header, base64.
    pub(crate) fn basic_header(username: &str, password: &Token) -> String {
        let raw = format!("{username}:{}", password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`.
    Bearer {
        /// The token service URL.
        realm: String,
        /// `service`, when given.
        service: Option<String>,
        /// `scope`, when given.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value (one challenge; `None` for schemes other than
/// Basic and Bearer or a Bearer without a realm).
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `k="v", k2=v2`, quoted strings with `\` escapes; keys lowercased.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return out;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), val.trim().to_owned());
    }
}

/// The Docker config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(Path::new(&d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
}

/// The Docker config's credentials for `registry` (`host[:port]`), if any. A missing or
/// unreadable file is no credentials (anonymous), as `docker pull` treats it; a file over
/// 1 MiB is not read.
pub fn docker_credentials(registry: &str) -> Option<Credentials> {
    let path = docker_config_path()?;
    let meta = std::fs::metadata(&path).ok()?;
    if meta.len() > 1 << 20 {
        tracing::warn!("{}: larger than 1 MiB, not read", path.display());
        return None;
    }
    let text = std::fs::read(&path).ok()?;
    let parsed = credentials_in(&text, registry);
    if parsed.is_none() {
        tracing::debug!("no credentials for {registry} in {}", path.display());
    }
    parsed
}

/// Credentials for `registry` in a Docker config document.
pub fn credentials_in(config_json: &[u8], registry: &str) -> Option<Credentials> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        auth: Option<String>,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        #[serde(default)]
        registrytoken: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
    }
    let cfg: Config = serde_json::from_slice(config_json).ok()?;
    let want = registry.to_ascii_lowercase();
    let entry = cfg
        .auths
        .iter()
        .find(|(k, _)| config_key_host(k) == want)
        .map(|(_, e)| e)?;
    if let Some(t) = entry.registrytoken.as_deref().and_then(Token::new) {
        return Some(Credentials::Bearer(t));
    }
    if let Some(a) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (user, pass) = raw.split_once(':')?;
        return Some(Credentials::Basic {
            username: user.to_owned(),
            password: Token::new(pass)?,
        });
    }
    match (
        &entry.username,
        entry.password.as_deref().and_then(Token::new),
    ) {
        (Some(u), Some(p)) => Some(Credentials::Basic {
            username: u.clone(),
            password: p,
        }),
        _ => None,
    }
}

/// A config key as a host: `https://host:port/v1/` → `host:port`.
fn config_key_host(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(""), None);
        // Escapes and unquoted values.
        assert_eq!(
            parse_challenge(r#"bearer realm="a\"b", scope=x"#),
            Some(Challenge::Bearer {
                realm: "a\"b".into(),
                service: None,
                scope: Some("x".into()),
            })
        );
    }

    #[test]
    fn docker_config_entries() {
        let cfg = br#"{"auths": {
            "https://reg.example:5000/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "other.example": {"username": "u2", "password": "p2"},
            "tok.example": {"registrytoken": "abc"}
        }}"#;
        match credentials_in(cfg, "reg.example:5000") {
            Some(Credentials::Basic { username, password }) => {
                assert_eq!((username.as_str(), password.expose()), ("user", "pa:ss"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            credentials_in(cfg, "other.example"),
            Some(Credentials::Basic { .. })
        ));
        assert!(matches!(
            credentials_in(cfg, "tok.example"),
            Some(Credentials::Bearer(_))
        ));
        assert_eq!(credentials_in(cfg, "reg.example"), None);
        assert_eq!(credentials_in(b"not json", "reg.example"), None);
        // Debug never shows the secret.
        let shown = format!("{:?}", credentials_in(cfg, "reg.example:5000"));
        assert!(!shown.contains("pa:ss"), "{shown}");
    }
}
