//! Where the Hub client's settings come from: the endpoint, offline mode and the access token.
//!
//! The process environment is read once into a [`HubEnv`] snapshot so that tests (and callers
//! that want to pin settings) can pass their own instead of mutating the global environment.
//!
//! Token chain (huggingface_hub's, without the legacy names): the entry's `token:` →
//! `HF_TOKEN` → the file `$HF_TOKEN_PATH`, else `$HF_HOME/token`, else
//! `$XDG_CACHE_HOME/huggingface/token`, else `~/.cache/huggingface/token`. The result says which
//! source was used and which were tried, so a refused download can say so without the value.

use std::fmt;
use std::path::{Path, PathBuf};

use super::source::Token;

/// The public Hugging Face Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A snapshot of the environment variables the Hub client honours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubEnv {
    /// `HF_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `HF_TOKEN` (kept as a [`Token`], so it never prints).
    pub token: Option<Token>,
    /// `HF_TOKEN_PATH`: overrides the token file's location.
    pub token_path: Option<PathBuf>,
    /// `HF_HOME`.
    pub hf_home: Option<PathBuf>,
    /// `XDG_CACHE_HOME`: `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`.
    pub xdg_cache_home: Option<PathBuf>,
    /// `HOME`.
    pub home: Option<PathBuf>,
    /// `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`): the hub cache's folder.
    pub hub_cache: Option<PathBuf>,
    /// `HF_HUB_OFFLINE` is true (`1`, `true`, `yes`, `on`).
    pub offline: bool,
}

impl HubEnv {
    /// Reads the variables of this process.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let path = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            endpoint: var("HF_ENDPOINT"),
            token: var("HF_TOKEN").and_then(Token::new),
            token_path: path("HF_TOKEN_PATH"),
            hf_home: path("HF_HOME"),
            xdg_cache_home: path("XDG_CACHE_HOME"),
            home: path("HOME"),
            hub_cache: path("HF_HUB_CACHE").or_else(|| path("HUGGINGFACE_HUB_CACHE")),
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v)),
        }
    }

    /// An empty environment (no endpoint override, no token, online, no token file).
    pub fn empty() -> Self {
        Self::default()
    }

    /// The token file this environment points at, if any home is known.
    pub fn token_file(&self) -> Option<PathBuf> {
        if let Some(p) = &self.token_path {
            return Some(p.clone());
        }
        Some(self.hf_home_dir()?.join("token"))
    }

    /// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
    fn hf_home_dir(&self) -> Option<PathBuf> {
        self.hf_home.clone().or_else(|| {
            self.xdg_cache_home
                .clone()
                .or_else(|| self.home.as_ref().map(|h| h.join(".cache")))
                .map(|c| c.join("huggingface"))
        })
    }

    /// The Hugging Face hub cache, as `huggingface_hub` finds it: `HF_HUB_CACHE`, else
    /// `HF_HOME/hub` (with `HF_HOME`'s own defaults). `None` when no home is known.
    pub fn hf_hub_cache(&self) -> Option<PathBuf> {
        self.hub_cache
            .clone()
            .or_else(|| Some(self.hf_home_dir()?.join("hub")))
    }
}

fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Where a token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The manifest entry's `token:` (or the caller's `access_token`).
    Entry,
    /// The `HF_TOKEN` environment variable.
    EnvHfToken,
    /// A token file.
    TokenFile(PathBuf),
    /// No token at all.
    None,
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Entry => f.write_str("the entry's token"),
            Self::EnvHfToken => f.write_str("HF_TOKEN"),
            Self::TokenFile(p) => write!(f, "the token file {}", p.display()),
            Self::None => f.write_str("no token"),
        }
    }
}

/// The outcome of the token chain: the token (if any), where it came from, and every source
/// that was looked at, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedToken {
    /// The token to send to the Hub host (never to another host).
    pub token: Option<Token>,
    /// Where `token` came from ([`TokenSource::None`] when there is none).
    pub source: TokenSource,
    /// The sources consulted, in order, up to and including the one used.
    pub tried: Vec<TokenSource>,
}

impl ResolvedToken {
    /// No token, nothing tried: anonymous requests.
    pub fn anonymous() -> Self {
        Self {
            token: None,
            source: TokenSource::None,
            tried: Vec::new(),
        }
    }

    /// A token given explicitly by the caller.
    pub fn from_entry(token: Token) -> Self {
        Self {
            token: Some(token),
            source: TokenSource::Entry,
            tried: vec![TokenSource::Entry],
        }
    }

    /// A sentence for error messages: which token was sent, or which sources were tried.
    /// Never contains the token itself.
    pub fn describe(&self) -> String {
        if self.token.is_some() {
            return format!("the token from {} was sent", self.source);
        }
        if self.tried.is_empty() {
            return "no token was sent".to_owned();
        }
        let tried: Vec<String> = self.tried.iter().map(ToString::to_string).collect();
        format!("no token was sent (tried {})", tried.join(", "))
    }
}

/// Runs the token chain: `entry` → `HF_TOKEN` → the token file. A token file that is missing,
/// unreadable or empty counts as tried and yields nothing.
pub fn resolve_token(entry: Option<&Token>, env: &HubEnv) -> ResolvedToken {
    let mut tried = vec![TokenSource::Entry];
    if let Some(t) = entry {
        return ResolvedToken {
            token: Some(t.clone()),
            source: TokenSource::Entry,
            tried,
        };
    }
    tried.push(TokenSource::EnvHfToken);
    if let Some(t) = &env.token {
        return ResolvedToken {
            token: Some(t.clone()),
            source: TokenSource::EnvHfToken,
            tried,
        };
    }
    if let Some(file) = env.token_file() {
        tried.push(TokenSource::TokenFile(file.clone()));
        if let Some(t) = read_token_file(&file) {
            return ResolvedToken {
                token: Some(t),
                source: TokenSource::TokenFile(file),
                tried,
            };
        }
    }
    ResolvedToken {
        token: None,
        source: TokenSource::None,
        tried,
    }
}

fn read_token_file(path: &Path) -> Option<Token> {
    let text = std::fs::read_to_string(path).ok()?;
    // huggingface-cli writes the token alone; tolerate a trailing newline or a first line only.
    Token::new(text.lines().next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_order_and_sources() {
        let dir = tempfile::tempdir().unwrap();
        let hf_home = dir.path().join("hf");
        std::fs::create_dir_all(&hf_home).unwrap();
        let mut env = HubEnv {
            hf_home: Some(hf_home.clone()),
            ..HubEnv::empty()
        };
        // Nothing anywhere: every source tried, in order.
        let r = resolve_token(None, &env);
        assert_eq!(r.token, None);
        assert_eq!(
            r.tried,
            vec![
                TokenSource::Entry,
                TokenSource::EnvHfToken,
                TokenSource::TokenFile(hf_home.join("token"))
            ]
        );
        let d = r.describe();
        assert!(d.contains("HF_TOKEN") && d.contains("hf/token"), "{d}");

        std::fs::write(hf_home.join("token"), "hf_file\n").unwrap();
        let r = resolve_token(None, &env);
        assert_eq!(r.token.as_ref().map(Token::expose), Some("hf_file"));
        assert_eq!(r.source, TokenSource::TokenFile(hf_home.join("token")));

        env.token = Token::new("hf_env");
        let r = resolve_token(None, &env);
        assert_eq!(r.source, TokenSource::EnvHfToken);
        assert!(!r.describe().contains("hf_env"));

        let entry = Token::new("hf_entry").unwrap();
        let r = resolve_token(Some(&entry), &env);
        assert_eq!(r.source, TokenSource::Entry);
        assert_eq!(r.token.unwrap().expose(), "hf_entry");
    }

    #[test]
    fn token_file_defaults() {
        let env = HubEnv {
            home: Some("/home/u".into()),
            ..HubEnv::empty()
        };
        assert_eq!(
            env.token_file(),
            Some(PathBuf::from("/home/u/.cache/huggingface/token"))
        );
        let env = HubEnv {
            home: Some("/home/u".into()),
            xdg_cache_home: Some("/xdg".into()),
            ..HubEnv::empty()
        };
        assert_eq!(
            env.token_file(),
            Some(PathBuf::from("/xdg/huggingface/token"))
        );
        let env = HubEnv {
            token_path: Some("/t".into()),
            hf_home: Some("/h".into()),
            ..HubEnv::empty()
        };
        assert_eq!(env.token_file(), Some(PathBuf::from("/t")));
        assert!(is_true("ON") && is_true("1") && !is_true("0") && !is_true(""));
    }
}
