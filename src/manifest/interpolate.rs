//! `${VAR}` interpolation in manifest string values.
//!
//! | written | becomes |
//! |---|---|
//! | `${NAME}` | the variable's value; an error naming it when unset |
//! | `${NAME:-default}` | the value when set and not empty, else `default` (taken literally) |
//! | `$${` | a literal `${` |
//! | any other `$` | itself |
//!
//! Names are `[A-Za-z_][A-Za-z0-9_]*`. Interpolation runs on string values after YAML parsing
//! (never on the raw text), so a value's line and column stay those of the file, and a value
//! can never inject YAML structure. Booleans, numbers and enum fields are not interpolated.

/// A string whose `${…}` cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    /// `${NAME}` without a default, and `NAME` is not set.
    #[error(
        "environment variable `{0}` is not set (write `${{{0}:-default}}` for a default, `$${{` for a literal `${{`)"
    )]
    Unset(String),
    /// `${` without its `}`.
    #[error("unterminated `${{` (write `$${{` for a literal `${{`)")]
    Unterminated,
    /// `${…}` whose name is not a variable name.
    #[error(
        "`${{{0}}}` is not a variable reference: expected `${{NAME}}` or `${{NAME:-default}}` with NAME of letters, digits and `_`"
    )]
    BadName(String),
}

/// Expands `${…}` in `s`, looking variables up with `lookup`.
pub fn interpolate(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or(InterpolateError::Unterminated)?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !is_name(name) {
                return Err(InterpolateError::BadName(inner.to_owned()));
            }
            match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(InterpolateError::Unset(name.to_owned())),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Looks variables up in the process environment (non-UTF-8 values count as unset).
pub fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/me".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands() {
        let i = |s| interpolate(s, &env);
        assert_eq!(i("plain").unwrap(), "plain");
        assert_eq!(i("${HOME_DIR}/m").unwrap(), "/home/me/m");
        assert_eq!(i("a${HOME_DIR}b${HOME_DIR}").unwrap(), "a/home/meb/home/me");
        assert_eq!(i("${NOPE:-dflt}").unwrap(), "dflt");
        assert_eq!(i("${EMPTY:-dflt}").unwrap(), "dflt");
        assert_eq!(i("${EMPTY}").unwrap(), "");
        assert_eq!(i("${HOME_DIR:-x}").unwrap(), "/home/me");
        assert_eq!(i("${NOPE:-}").unwrap(), "");
        assert_eq!(i("$${HOME_DIR}").unwrap(), "${HOME_DIR}");
        assert_eq!(i("cost $5 $x $").unwrap(), "cost $5 $x $");
        assert_eq!(i("$$${HOME_DIR}").unwrap(), "$${HOME_DIR}");
    }

    #[test]
    fn errors() {
        let i = |s| interpolate(s, &env);
        assert_eq!(i("${NOPE}"), Err(InterpolateError::Unset("NOPE".into())));
        assert_eq!(i("x${NOPE"), Err(InterpolateError::Unterminated));
        assert_eq!(i("${1X}"), Err(InterpolateError::BadName("1X".into())));
        assert_eq!(i("${}"), Err(InterpolateError::BadName(String::new())));
        assert!(i("${NOPE}").unwrap_err().to_string().contains("`NOPE`"));
    }
}
