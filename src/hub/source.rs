//! Model sources: the seed's `LocalModelSource`, `URLModelSource` and `HFModelSource`, and the
//! `heuristic_import` string forms.
//!
//! | form | source |
//! |---|---|
//! | an existing path, or one starting with `/`, `./`, `../`, `~/` | local |
//! | `owner/name` | HF repo, default variant |
//! | `owner/name:fp16` | HF repo, variant |
//! | `owner/name:fp16:vae` | variant + subfolder |
//! | `owner/name::vae` | subfolder, default variant |
//! | `owner/name::path/to/file.safetensors` | one file of the repo |
//! | `owner/name@revision…` | any of the above at a branch, tag or commit (modelsync's extension) |
//! | `http://…`, `https://…` | URL (HF `/blob/` URLs become `/resolve/`) |
//! | `oci://HOST[:PORT]/REPO[:TAG][@sha256:…]` | an artifact in an OCI registry ([`crate::oci`]) |
//!
//! Formatting a parsed source and parsing it again gives the same source (`inplace` and tokens
//! are not part of the string form). InvokeAI's own formatter drops the subfolder when a variant
//! is present (`repo:fp16::vae`); ours writes `repo:fp16:vae`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::taxonomy::ModelRepoVariant;

/// A source string that is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Empty string.
    #[error("empty model source")]
    Empty,
    /// Not a path, repo id or URL.
    #[error(
        "`{0}` is not a model source: expected an existing local path, a Hugging Face repo id (owner/name, owner/name:fp16, owner/name:fp16:vae, owner/name::vae, owner/name::path/file.safetensors), an http(s) URL or an oci:// reference"
    )]
    Unrecognised(String),
    /// A bad part of a repo id.
    #[error("invalid Hugging Face source `{source_str}`: {reason}")]
    BadRepo { source_str: String, reason: String },
    /// An `oci://` reference that does not parse.
    #[error(transparent)]
    BadOci(#[from] crate::oci::ReferenceError),
    /// A URL that does not parse.
    #[error("invalid URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    /// A NUL or other control character (a pasted newline, an escape sequence): no form of
    /// source may contain one, and a file name with one cannot be written safely.
    #[error(
        "model source `{shown}` contains the control character {character:?} at byte {position}; sources must be printable text"
    )]
    ControlCharacter {
        /// The source with control characters escaped (and URL secrets redacted).
        shown: String,
        /// The first control character.
        character: char,
        /// Its byte offset in the (trimmed) source.
        position: usize,
    },
}

/// An access token. Never printed, logged or serialised: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token string (trimmed). Empty strings are no token.
    pub fn new(s: impl Into<String>) -> Option<Self> {
        let s = s.into().trim().to_owned();
        if s.is_empty() { None } else { Some(Self(s)) }
    }

    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A path on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModelSource {
    /// The file or folder.
    pub path: PathBuf,
    /// Register it where it is instead of copying it into `models_dir`.
    pub inplace: bool,
}

/// An http(s) URL. `Debug` shows it redacted, like `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlModelSource {
    /// The URL (HF `/blob/` already rewritten to `/resolve/`).
    pub url: reqwest::Url,
    /// Bearer token for the URL's host.
    pub access_token: Option<Token>,
    /// Query parameters shown as `***` besides the ones whose name says they are secret
    /// ([`crate::download::names::is_secret_param`]): the manifest sets those whose value it
    /// took from `${VAR}`.
    pub secret_params: Vec<String>,
}

impl fmt::Debug for UrlModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlModelSource")
            .field(
                "url",
                &crate::download::names::redact_url_secrets_with(&self.url, &self.secret_params),
            )
            .field("access_token", &self.access_token)
            .field("secret_params", &self.secret_params)
            .finish()
    }
}

/// A Hugging Face repo, or part of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfModelSource {
    /// `owner/name`.
    pub repo_id: String,
    /// File variant to select (`None`: the default files).
    pub variant: Option<ModelRepoVariant>,
    /// A folder of the repo, or one file (`path/to/file.safetensors`).
    pub subfolder: Option<String>,
    /// Branch, tag or commit (`None`: `main`).
    pub revision: Option<String>,
    /// Token for gated or private repos.
    pub access_token: Option<Token>,
}

impl HfModelSource {
    /// The revision to ask for.
    pub fn revision_or_main(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// When the subfolder names a single file (its last component has an extension), that file.
    pub fn single_file(&self) -> Option<&str> {
        let sub = self.subfolder.as_deref()?;
        let last = sub.rsplit('/').next().unwrap_or(sub);
        match last.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => Some(sub),
            _ => None,
        }
    }
}

/// Any model source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local path.
    Local(LocalModelSource),
    /// An http(s) URL.
    Url(UrlModelSource),
    /// A Hugging Face repo id.
    Hf(HfModelSource),
    /// An artifact in an OCI registry.
    Oci(crate::oci::OciModelSource),
}

impl ModelSource {
    /// Parses a source string, resolving relative local paths against the current directory.
    pub fn parse(s: &str) -> Result<Self, SourceError> {
        Self::parse_in(s, Path::new("."))
    }

    /// Parses a source string; relative local paths are resolved against `base_dir` (the
    /// manifest's folder) and tested for existence there. The order is the seed's: an existing
    /// path, then a repo id, then a URL — with URLs recognised by their scheme first so that
    /// `https://…` is never taken for a path.
    pub fn parse_in(s: &str, base_dir: &Path) -> Result<Self, SourceError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(SourceError::Empty);
        }
        if let Some((position, character)) = s.char_indices().find(|(_, c)| c.is_control()) {
            return Err(SourceError::ControlCharacter {
                shown: crate::download::names::redact_url_secrets_str(s)
                    .escape_debug()
                    .to_string(),
                character,
                position,
            });
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with(crate::oci::reference::SCHEME) {
            return Ok(Self::Oci(crate::oci::OciModelSource {
                reference: crate::oci::OciReference::parse(s)?,
                credentials: None,
                insecure: false,
            }));
        }
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return parse_url(s).map(|url| {
                Self::Url(UrlModelSource {
                    url,
                    access_token: None,
                    secret_params: Vec::new(),
                })
            });
        }
        let expanded = expand_home(s);
        let candidate = if expanded.is_absolute() {
            expanded.clone()
        } else {
            base_dir.join(&expanded)
        };
        let looks_local = s.starts_with('/')
            || s.starts_with("./")
            || s.starts_with("../")
            || s.starts_with("~/")
            || s == "."
            || s == ".."
            || s.contains('\\');
        if looks_local || candidate.exists() {
            return Ok(Self::Local(LocalModelSource {
                path: normalise_relative(&candidate),
                inplace: false,
            }));
        }
        parse_hf(s).map(Self::Hf)
    }

    /// The canonical string form (no token, no `inplace`, URL secrets redacted — see
    /// [`crate::download::names::redact_url_secrets`]): what records, the lock file, the plan
    /// and every message show. `parse(canonical(x)).canonical() == canonical(x)`.
    pub fn canonical(&self) -> String {
        self.to_string()
    }

    /// The access token, if any.
    pub fn access_token(&self) -> Option<&Token> {
        match self {
            Self::Local(_) => None,
            Self::Url(u) => u.access_token.as_ref(),
            Self::Hf(h) => h.access_token.as_ref(),
            Self::Oci(o) => match &o.credentials {
                Some(crate::oci::Credentials::Bearer(t)) => Some(t),
                _ => None,
            },
        }
    }

    /// Sets the access token (ignored for local sources).
    pub fn set_access_token(&mut self, token: Option<Token>) {
        match self {
            Self::Local(_) => {}
            Self::Url(u) => u.access_token = token,
            Self::Hf(h) => h.access_token = token,
            Self::Oci(o) => {
                o.credentials = token.map(crate::oci::Credentials::Bearer);
            }
        }
    }

    /// The record's `source_type`.
    pub fn source_type(&self) -> crate::config::ModelSourceType {
        match self {
            Self::Local(_) => crate::config::ModelSourceType::Path,
            // InvokeAI knows path, url and hf_repo_id only; an `oci://` reference is a URL.
            Self::Url(_) | Self::Oci(_) => crate::config::ModelSourceType::Url,
            Self::Hf(_) => crate::config::ModelSourceType::HfRepoId,
        }
    }
}

/// Drops `.` components after the first, so formatting and parsing again does not grow the
/// path (`.` joined with `./a` is `././a`); a relative path keeps its leading `./`, the form
/// that parses as a local path again.
/// A trailing `/` is kept (so a name ending in a space stays one after the trim of `parse`).
fn normalise_relative(p: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    use std::path::Component;
    let mut out = if p.is_absolute() {
        p.components().collect()
    } else {
        let mut out = PathBuf::from(".");
        for c in p.components() {
            if c != Component::CurDir {
                out.push(c);
            }
        }
        out
    };
    if p.as_os_str().as_bytes().ends_with(b"/") && !out.as_os_str().as_bytes().ends_with(b"/") {
        let mut s = out.into_os_string();
        s.push("/");
        out = PathBuf::from(s);
    }
    out
}

fn expand_home(s: &str) -> PathBuf {
    if let Some(rest) = s.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    PathBuf::from(s)
}

fn parse_url(s: &str) -> Result<reqwest::Url, SourceError> {
    let mut url = reqwest::Url::parse(s).map_err(|e| SourceError::BadUrl {
        url: crate::download::names::redact_url_secrets_str(s),
        reason: e.to_string(),
    })?;
    if url.host_str().is_none() {
        return Err(SourceError::BadUrl {
            url: crate::download::names::redact_url_secrets_str(s),
            reason: "no host".into(),
        });
    }
    let is_hf = url
        .host_str()
        .is_some_and(|h| h == "huggingface.co" || h == "hf.co" || h.ends_with(".huggingface.co"));
    if is_hf {
        // /{owner}/{name}/blob/{rev}/{path} → /{owner}/{name}/resolve/{rev}/{path}
        let segs: Vec<String> = url
            .path_segments()
            .map(|p| p.map(str::to_owned).collect())
            .unwrap_or_default();
        if segs.len() >= 5 && segs[2] == "blob" {
            let mut new = segs.clone();
            "resolve".clone_into(&mut new[2]);
            url.set_path(&new.join("/"));
        }
    }
    Ok(url)
}

/// Rewrites a Hub `/blob/` URL (the page showing a file) into its `/resolve/` form (the file)
/// when it points at `endpoint`, the configured Hub (`HF_ENDPOINT`, `settings.hf_endpoint`: a
/// mirror or a private Hub), as [`ModelSource::parse`] does for huggingface.co. Anything else
/// is left alone.
pub fn blob_to_resolve(url: &mut reqwest::Url, endpoint: &reqwest::Url) {
    if url.scheme() != endpoint.scheme()
        || url.host_str() != endpoint.host_str()
        || url.port_or_known_default() != endpoint.port_or_known_default()
    {
        return;
    }
    let base: Vec<&str> = endpoint
        .path_segments()
        .map(|p| p.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let segs: Vec<String> = url
        .path_segments()
        .map(|p| p.map(str::to_owned).collect())
        .unwrap_or_default();
    if segs.len() < base.len() + 5 || segs.iter().zip(&base).any(|(a, b)| a != b) {
        return;
    }
    let at = base.len() + 2;
    if segs[at] == "blob" {
        let mut new = segs.clone();
        "resolve".clone_into(&mut new[at]);
        url.set_path(&new.join("/"));
    }
}

fn valid_repo_part(p: &str) -> bool {
    !p.is_empty()
        && p != "."
        && p != ".."
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_hf(s: &str) -> Result<HfModelSource, SourceError> {
    let bad = |reason: &str| SourceError::BadRepo {
        source_str: s.to_owned(),
        reason: reason.to_owned(),
    };
    let (head, rest) = match s.split_once(':') {
        Some((h, r)) => (h, Some(r)),
        None => (s, None),
    };
    let (repo_id, revision) = match head.split_once('@') {
        Some((r, rev)) if !rev.is_empty() => (r, Some(rev.to_owned())),
        Some(_) => return Err(bad("empty revision after `@`")),
        None => (head, None),
    };
    let mut parts = repo_id.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SourceError::Unrecognised(s.to_owned()));
    };
    if !valid_repo_part(owner) || !valid_repo_part(name) {
        return Err(SourceError::Unrecognised(s.to_owned()));
    }
    let (variant, subfolder) = match rest {
        None => (None, None),
        Some(r) => {
            let (v, sub) = match r.split_once(':') {
                Some((v, sub)) => (v, Some(sub)),
                None => (r, None),
            };
            let variant = if v.is_empty() {
                None
            } else {
                Some(
                    v.parse::<ModelRepoVariant>()
                        .map_err(|e| bad(&e.to_string()))?,
                )
            };
            let subfolder = match sub {
                None => None,
                Some(sub) => {
                    let sub = sub.trim_matches('/');
                    if sub.is_empty() {
                        return Err(bad("empty subfolder after `::`"));
                    }
                    if sub.contains(':')
                        || sub.contains('\\')
                        || sub
                            .split('/')
                            .any(|c| c.is_empty() || c == "." || c == "..")
                    {
                        return Err(bad("the subfolder must be a relative path inside the repo"));
                    }
                    Some(sub.to_owned())
                }
            };
            (
                variant.filter(|v| *v != ModelRepoVariant::Default),
                subfolder,
            )
        }
    };
    Ok(HfModelSource {
        repo_id: repo_id.to_owned(),
        variant,
        subfolder,
        revision,
        access_token: None,
    })
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(l) => write!(f, "{}", l.path.display()),
            Self::Url(u) => f.write_str(&crate::download::names::redact_url_secrets_with(
                &u.url,
                &u.secret_params,
            )),
            Self::Oci(o) => write!(f, "{}", o.reference),
            Self::Hf(h) => {
                f.write_str(&h.repo_id)?;
                if let Some(rev) = &h.revision {
                    write!(f, "@{rev}")?;
                }
                match (&h.variant, &h.subfolder) {
                    (None, None) => Ok(()),
                    (Some(v), None) => write!(f, ":{v}"),
                    (Some(v), Some(s)) => write!(f, ":{v}:{s}"),
                    (None, Some(s)) => write!(f, "::{s}"),
                }
            }
        }
    }
}

impl std::str::FromStr for ModelSource {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(s: &str) -> HfModelSource {
        match ModelSource::parse_in(s, Path::new("/nonexistent-base")).unwrap() {
            ModelSource::Hf(h) => h,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn every_form_round_trips() {
        for s in [
            "runwayml/stable-diffusion-v1-5",
            "runwayml/stable-diffusion-v1-5:fp16",
            "runwayml/stable-diffusion-v1-5:fp16:vae",
            "runwayml/stable-diffusion-v1-5::vae",
            "owner/name::path/to/file.safetensors",
            "owner/name@v1.0:fp16:text_encoder_2",
            "owner/name@0123abcd",
            "https://example.invalid/api/download/models/123?type=Model",
            "/abs/path/model.safetensors",
            "oci://127.0.0.1:5000/team/sdxl:v1",
        ] {
            let parsed = ModelSource::parse_in(s, Path::new("/nonexistent-base")).unwrap();
            assert_eq!(parsed.to_string(), s);
            assert_eq!(
                ModelSource::parse_in(&parsed.to_string(), Path::new("/nonexistent-base")).unwrap(),
                parsed
            );
        }
    }

    #[test]
    fn hf_parts() {
        let h = hf("owner/name:fp16:vae");
        assert_eq!(h.variant, Some(ModelRepoVariant::Fp16));
        assert_eq!(h.subfolder.as_deref(), Some("vae"));
        assert_eq!(h.single_file(), None);
        let h = hf("owner/name::unet/diffusion_pytorch_model.fp16.safetensors");
        assert_eq!(h.variant, None);
        assert_eq!(
            h.single_file(),
            Some("unet/diffusion_pytorch_model.fp16.safetensors")
        );
        assert_eq!(hf("owner/name").revision_or_main(), "main");
        assert_eq!(hf("owner/name@dev").revision_or_main(), "dev");
    }

    #[test]
    fn blob_urls_of_the_configured_endpoint_become_resolve() {
        let ep = reqwest::Url::parse("http://127.0.0.1:8080/hf").unwrap();
        let mut u =
            reqwest::Url::parse("http://127.0.0.1:8080/hf/o/n/blob/main/a/b.safetensors").unwrap();
        blob_to_resolve(&mut u, &ep);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8080/hf/o/n/resolve/main/a/b.safetensors"
        );
        for other in [
            "http://127.0.0.1:9090/hf/o/n/blob/main/x",
            "http://127.0.0.1:8080/other/o/n/blob/main/x",
            "http://127.0.0.1:8080/hf/o/n/tree/main/x",
            "http://127.0.0.1:8080/hf/o/blob/main",
        ] {
            let mut u = reqwest::Url::parse(other).unwrap();
            blob_to_resolve(&mut u, &ep);
            assert_eq!(u.as_str(), other);
        }
    }

    #[test]
    fn blob_urls_become_resolve() {
        let s = ModelSource::parse("https://huggingface.co/owner/name/blob/main/model.safetensors")
            .unwrap();
        assert_eq!(
            s.to_string(),
            "https://huggingface.co/owner/name/resolve/main/model.safetensors"
        );
        let s = ModelSource::parse("https://example.invalid/owner/name/blob/main/x").unwrap();
        assert_eq!(
            s.to_string(),
            "https://example.invalid/owner/name/blob/main/x"
        );
    }

    #[test]
    fn local_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lora.safetensors"), b"x").unwrap();
        match ModelSource::parse_in("lora.safetensors", dir.path()).unwrap() {
            ModelSource::Local(l) => assert_eq!(l.path, dir.path().join("lora.safetensors")),
            other => panic!("{other:?}"),
        }
        // A relative path that exists and looks like owner/name is still local (seed order).
        std::fs::create_dir_all(dir.path().join("owner/name")).unwrap();
        assert!(matches!(
            ModelSource::parse_in("owner/name", dir.path()).unwrap(),
            ModelSource::Local(_)
        ));
        assert!(matches!(
            ModelSource::parse_in("./missing.ckpt", dir.path()).unwrap(),
            ModelSource::Local(_)
        ));
    }

    #[test]
    fn bad_sources() {
        let base = Path::new("/nonexistent-base");
        assert_eq!(ModelSource::parse_in("  ", base), Err(SourceError::Empty));
        for s in [
            "justaname",
            "a/b/c",
            "owner/name:fp8",
            "owner/name::",
            "owner/name::../etc",
            "owner/na me",
            "owner/name@:fp16",
            "https://",
        ] {
            let e = ModelSource::parse_in(s, base).unwrap_err();
            assert!(!e.to_string().is_empty(), "{s}");
        }
        let e = ModelSource::parse_in("owner/name:fp8", base)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fp16"), "{e}");
    }

    #[test]
    fn control_characters_are_refused() {
        let base = Path::new("/nonexistent-base");
        for s in [
            "owner/name\0",
            "owner/na\0me",
            "owner/name@ma\nin",
            "owner/name::vae\x1b[31m",
            "/models/a\0b.safetensors",
            "https://h/x\u{7f}?token=s3cr3t",
            "https://h/x?token=s3cr3t\u{85}x",
        ] {
            let e = ModelSource::parse_in(s, base).unwrap_err();
            assert!(
                matches!(e, SourceError::ControlCharacter { .. }),
                "{s:?}: {e}"
            );
            let msg = e.to_string();
            assert!(msg.contains("control character"), "{msg}");
            assert!(!msg.contains("s3cr3t"), "{msg}");
            assert!(!msg.chars().any(char::is_control), "{msg:?}");
        }
        // Surrounding whitespace (a YAML block scalar's newline) is trimmed, not refused.
        assert!(ModelSource::parse_in("owner/name\n", base).is_ok());
    }

    /// `parse(canonical(x)).canonical() == canonical(x)` over generated sources: pieces of
    /// every form glued at random (fixed seed, so a failure reproduces).
    #[test]
    fn canonical_is_idempotent() {
        const PIECES: &[&str] = &[
            "owner",
            "name",
            "o-1",
            "n.x",
            "/",
            "//",
            ":",
            "::",
            "@",
            "@main",
            "@refs/pr/1",
            "fp16",
            "FP16",
            "default",
            "vae",
            "unet/",
            "x.safetensors",
            ".",
            "..",
            "./",
            "../",
            "~/",
            "\\",
            " ",
            "%2F",
            "%",
            "?",
            "#",
            "&",
            "=",
            "token=",
            "t0k",
            "sig=",
            "+",
            "https://",
            "HTTP://",
            "h.example",
            "huggingface.co",
            "/blob/main/",
            ":8080",
            "u:p@",
            "[::1]",
            "é",
            "\u{1F600}",
            "\t",
            "\0",
            "\u{7f}",
            "\u{200b}",
            "a b",
            "*",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // The bases `parse` (`.`) and the manifest (its absolute folder) use.
        let bases = [Path::new("/nonexistent-base"), Path::new(".")];
        let (mut ok, mut checked) = (0, 0);
        for _ in 0..20_000 {
            let n = 1 + next() % 8;
            let s: String = (0..n)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let base = bases[(next() % bases.len() as u64) as usize];
            checked += 1;
            let Ok(first) = ModelSource::parse_in(&s, base) else {
                continue;
            };
            ok += 1;
            let c = first.canonical();
            let again = ModelSource::parse_in(&c, base)
                .unwrap_or_else(|e| panic!("{s:?} → {c:?} does not parse again: {e}"));
            assert_eq!(again.canonical(), c, "{s:?}");
            assert!(!c.chars().any(char::is_control), "{s:?} → {c:?}");
        }
        // The generator reaches every form, not only errors.
        assert!(ok > checked / 10, "{ok} of {checked} parsed");
    }

    #[test]
    fn url_secrets_never_show() {
        let s = ModelSource::parse("https://u:pw@h/x?token=s3cr3t&type=Model").unwrap();
        for shown in [s.to_string(), s.canonical(), format!("{s:?}")] {
            assert!(
                !shown.contains("s3cr3t") && !shown.contains("pw"),
                "{shown}"
            );
            assert!(shown.contains("type=Model"), "{shown}");
        }
        let e = ModelSource::parse("https://[::1/x?token=s3cr3t").unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn tokens_never_show() {
        let t = Token::new("hf_secret").unwrap();
        assert_eq!(format!("{t} {t:?}"), "*** Token(***)");
        assert!(Token::new("  ").is_none());
    }
}
