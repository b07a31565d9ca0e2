//! Names from strangers: file names from `Content-Disposition` and URL paths, made into one safe
//! path component; and URLs made safe to print.

use reqwest::Url;

/// A URL without user info, query or fragment: what errors and logs show. Signed CDN URLs keep
/// their secrets in the query, and tokens sometimes travel there too.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// [`redact_url`] for a string that may not parse: then everything from the first `?` or `#`
/// is dropped, and so is anything before an `@` in the authority.
pub fn redact_url_str(url: &str) -> String {
    if let Ok(u) = Url::parse(url) {
        return redact_url(&u);
    }
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let s = &url[..cut];
    match (s.find("://"), s.rfind('@')) {
        (Some(i), Some(at)) if at > i => format!("{}{}", &s[..i + 3], &s[at + 1..]),
        _ => s.to_owned(),
    }
}

/// The mark that replaces a secret in a shown URL.
pub const REDACTED: &str = "***";

/// Whether a query parameter carries a secret, by its name (ASCII case and `-`/`_` ignored).
///
/// Secret: `token`, `auth`, `authorization`, `key`, `apikey`, `secret`, `password`, `passwd`,
/// `pwd`, `sig`, `signature`, `policy`, `credential`, `session`, `key_pair_id`, `hdnts`, and
/// every name ending in `_token`, `_key`, `_secret`, `_signature`, `_sig`, `_password` or
/// `_credential` (so `access_token`, `api_key`, `client_secret`, `X-Amz-Signature`,
/// `X-Amz-Credential`, `X-Amz-Security-Token`, `X-Goog-Signature` and CloudFront's
/// `Signature`/`Policy`/`Key-Pair-Id` are all covered). Anything else (`type`, `format`,
/// `download`, `X-Amz-Expires` …) is kept, so a shown URL still says what it fetches.
pub fn is_secret_param(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "token",
        "auth",
        "authorization",
        "key",
        "apikey",
        "secret",
        "password",
        "passwd",
        "pwd",
        "sig",
        "signature",
        "policy",
        "credential",
        "credentials",
        "session",
        "key_pair_id",
        "hdnts",
    ];
    const SUFFIXES: &[&str] = &[
        "_token",
        "_key",
        "_secret",
        "_signature",
        "_sig",
        "_password",
        "_credential",
    ];
    let n = name.to_ascii_lowercase().replace('-', "_");
    EXACT.contains(&n.as_str()) || SUFFIXES.iter().any(|s| n.ends_with(s))
}

/// A URL as it may be shown and stored (diff, lock file, records, events): user info replaced
/// by `***`, and the value of every secret query (or fragment) parameter
/// ([`is_secret_param`]) replaced by `***`; everything else is kept byte for byte, so
/// redacting twice gives the same string. Errors and logs use the stricter [`redact_url`].
pub fn redact_url_secrets(url: &Url) -> String {
    redact_url_secrets_with(url, &[])
}

/// [`redact_url_secrets`], also hiding the values of the query parameters named in `extra`
/// (compared like [`is_secret_param`] does).
pub fn redact_url_secrets_with(url: &Url, extra: &[String]) -> String {
    let redact_pairs = |q: &str| redact_pairs(q, extra);
    let mut u = url.clone();
    if !u.username().is_empty() {
        let _ = u.set_username(REDACTED);
    }
    if u.password().is_some() {
        let _ = u.set_password(Some(REDACTED));
    }
    if let Some(q) = u.query().map(redact_pairs)
        && Some(q.as_str()) != u.query()
    {
        u.set_query(Some(&q));
    }
    if let Some(f) = u.fragment().map(redact_pairs)
        && Some(f.as_str()) != u.fragment()
    {
        u.set_fragment(Some(&f));
    }
    u.to_string()
}

/// [`redact_url_secrets`] for a string that may not parse: then it is cut like
/// [`redact_url_str`].
pub fn redact_url_secrets_str(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => redact_url_secrets(&u),
        Err(_) if url.contains("://") => redact_url_str(url),
        Ok(_) | Err(_) => url.to_owned(),
    }
}

/// `a=1&token=x` → `a=1&token=***`: raw pairs, keys compared after percent-decoding.
fn redact_pairs(q: &str, extra: &[String]) -> String {
    let norm = |k: &str| k.to_ascii_lowercase().replace('-', "_");
    let secret = |k: &str| {
        let k = percent_decode(&k.replace('+', " "));
        is_secret_param(&k) || extra.iter().any(|e| norm(e) == norm(&k))
    };
    q.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if v != REDACTED && secret(k) => {
                format!("{k}={REDACTED}")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Why a name is refused.
pub type Refusal = &'static str;

/// Makes one safe file name out of a name from a stranger: takes the last component of a
/// path-like name (`../../x` → `x`, `C:\a\b.bin` → `b.bin`), then refuses what is still not a
/// plain name (empty, `.`, `..`, NUL or other control characters, longer than 255 bytes).
pub fn sanitize_file_name(name: &str) -> Result<String, Refusal> {
    if name.contains('\0') {
        return Err("it contains a NUL byte");
    }
    let last = name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    if last.is_empty() {
        return Err("it is empty");
    }
    if last == "." || last == ".." {
        return Err("it is `.` or `..`");
    }
    if last.chars().any(char::is_control) {
        return Err("it contains control characters");
    }
    if last.len() > 255 {
        return Err("it is longer than 255 bytes");
    }
    Ok(last.to_owned())
}

/// Checks a name the caller chose (`create_download_job(filename=…)`): it must already be one
/// plain component; nothing is silently rewritten.
pub fn check_caller_file_name(name: &str) -> Result<(), Refusal> {
    if name.contains(['/', '\\']) {
        return Err("it contains a path separator");
    }
    sanitize_file_name(name).map(|_| ())
}

/// The file name in a `Content-Disposition` header, if it names one. `filename*` (RFC 5987,
/// percent-encoded UTF-8) wins over `filename`. The result is raw: pass it through
/// [`sanitize_file_name`].
pub fn content_disposition_filename(header: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for param in split_params(header).into_iter().skip(1) {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        if key == "filename*" {
            // charset'lang'pct-encoded
            let mut parts = value.splitn(3, '\'');
            let charset = parts.next().unwrap_or("");
            let _lang = parts.next();
            if let Some(enc) = parts.next()
                && (charset.eq_ignore_ascii_case("utf-8") || charset.is_empty())
            {
                extended = Some(percent_decode(unquote(enc)));
            }
        } else if key == "filename" {
            plain = Some(unquote(value).to_owned());
        }
    }
    extended.or(plain)
}

/// The last non-empty segment of a URL path, percent-decoded (raw: sanitize it).
pub fn url_file_name(url: &Url) -> Option<String> {
    let seg = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    Some(percent_decode(seg))
}

/// Splits on `;` outside double quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_query_userinfo_and_fragment() {
        let u = Url::parse("https://user:pw@cdn.example:8443/a/b.bin?X-Amz-Signature=s3cr3t#f")
            .unwrap();
        assert_eq!(redact_url(&u), "https://cdn.example:8443/a/b.bin");
        assert_eq!(redact_url_str("not a url?token=abc"), "not a url");
        assert_eq!(redact_url_str("ht!tp://u:p@h/x?y"), "ht!tp://h/x");
    }

    #[test]
    fn shown_urls_keep_what_is_not_secret() {
        let r = |s: &str| redact_url_secrets(&Url::parse(s).unwrap());
        assert_eq!(
            r("https://civitai.com/api/download/models/1?type=Model&token=abc123"),
            "https://civitai.com/api/download/models/1?type=Model&token=***"
        );
        assert_eq!(
            r(
                "https://u:pw@cdn.example/a.bin?X-Amz-Expires=60&X-Amz-Signature=f00&X-Amz-Credential=AKIA%2F1&access_token=t&api_key=k&sig=s&Key-Pair-Id=K&download=true"
            ),
            "https://***:***@cdn.example/a.bin?X-Amz-Expires=60&X-Amz-Signature=***&X-Amz-Credential=***&access_token=***&api_key=***&sig=***&Key-Pair-Id=***&download=true"
        );
        assert_eq!(r("https://hf_tok@h/x"), "https://***@h/x");
        assert_eq!(
            r("https://h/x#access_token=t&a=b"),
            "https://h/x#access_token=***&a=b"
        );
        // A percent-encoded key is still recognised; a bare `token` without `=` has no value.
        assert_eq!(
            r("https://h/x?%74oken=v&token"),
            "https://h/x?%74oken=***&token"
        );
        for s in [
            "https://h/x?token=abc",
            "https://a:b@h/x?monkey=1&key=2",
            "https://h/x?q=a+b&sig=%2F",
        ] {
            let once = r(s);
            assert_eq!(r(&once), once);
        }
        assert_eq!(
            redact_url_secrets_with(
                &Url::parse("https://h/x?dl=v&Other-Name=w&k=z").unwrap(),
                &["dl".into(), "other_name".into()]
            ),
            "https://h/x?dl=***&Other-Name=***&k=z"
        );
        assert_eq!(
            redact_url_secrets_str("/local/path?token=x"),
            "/local/path?token=x"
        );
        assert_eq!(redact_url_secrets_str("http://[bad?token=x"), "http://[bad");
        assert!(!is_secret_param("monkey"));
        assert!(!is_secret_param("type"));
        assert!(is_secret_param("X-Goog-Signature"));
        assert!(is_secret_param("client_secret"));
    }

    #[test]
    fn content_disposition_forms() {
        assert_eq!(
            content_disposition_filename(r#"attachment; filename="model.safetensors""#).as_deref(),
            Some("model.safetensors")
        );
        assert_eq!(
            content_disposition_filename("attachment; filename=plain.bin").as_deref(),
            Some("plain.bin")
        );
        assert_eq!(
            content_disposition_filename(
                r#"attachment; filename="fallback.bin"; filename*=UTF-8''caf%C3%A9%20v2.bin"#
            )
            .as_deref(),
            Some("café v2.bin")
        );
        assert_eq!(
            content_disposition_filename(r#"attachment; filename="a;b.bin""#).as_deref(),
            Some("a;b.bin")
        );
        assert_eq!(content_disposition_filename("inline"), None);
    }

    #[test]
    fn hostile_names_are_reduced_or_refused() {
        assert_eq!(sanitize_file_name("../../x").unwrap(), "x");
        assert_eq!(sanitize_file_name("/etc/passwd").unwrap(), "passwd");
        assert_eq!(
            sanitize_file_name(r"C:\Windows\evil.dll").unwrap(),
            "evil.dll"
        );
        assert!(sanitize_file_name("").is_err());
        assert!(sanitize_file_name("..").is_err());
        assert!(sanitize_file_name(".").is_err());
        assert!(sanitize_file_name("a/..").is_err());
        assert!(sanitize_file_name("dir/").is_err());
        assert!(sanitize_file_name("a\0b").is_err());
        assert!(sanitize_file_name("a\nb").is_err());
        assert!(sanitize_file_name(&"x".repeat(300)).is_err());
        assert!(check_caller_file_name("a/b").is_err());
        assert!(check_caller_file_name("ok.bin").is_ok());
    }

    #[test]
    fn url_names() {
        let u = Url::parse("https://h/models/v1%20final.safetensors?download=true").unwrap();
        assert_eq!(url_file_name(&u).as_deref(), Some("v1 final.safetensors"));
        let u = Url::parse("https://h/dir/").unwrap();
        assert_eq!(url_file_name(&u).as_deref(), Some("dir"));
        let u = Url::parse("https://h/").unwrap();
        assert_eq!(url_file_name(&u), None);
    }
}
