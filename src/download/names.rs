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
