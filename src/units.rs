//! Human units on the command line and in the manifest: sizes (`512MiB`, `8GiB`, `8GB`, `1024`)
//! and durations (`30s`, `5m`, `1h`).

use std::fmt;
use std::time::Duration;

/// A size or duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: {hint}")]
pub struct UnitError {
    what: &'static str,
    value: String,
    hint: &'static str,
}

const SIZE_HINT: &str = "expected a number of bytes with an optional unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), for example 512MiB or 8GB";

/// Parses a byte size. Decimal units (`GB`) are powers of 1000, binary units (`GiB`) powers
/// of 1024, as in `hf download` and most disk tools. Fractions are allowed (`1.5GiB`).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError {
        what: "size",
        value: s.to_owned(),
        hint: SIZE_HINT,
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(err()),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(err);
    }
    let f: f64 = num.parse().map_err(|_| err())?;
    let v = f * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(err());
    }
    Ok(v.round() as u64)
}

/// Parses a duration such as `30s`, `5m`, `1h30m` or `250ms`. A bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|_| UnitError {
        what: "duration",
        value: s.to_owned(),
        hint: "expected a number with a unit, for example 30s, 5m, 1h or 1h30m",
    })
}

/// Formats a duration as the manifest spells one (`30s`, `5m`, `1h30m`, `250ms`), so a value
/// read from a setting prints as it was written. Below one second: milliseconds; a measured
/// time with a fraction of a second: one decimal under a minute (`5.2s`), else whole seconds
/// (`2m14s`). Never `5s 153us 679ns`.
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 && !self.0.is_zero() {
            return f.write_str("<1ms");
        }
        if ms < 1000 {
            return write!(f, "{ms}ms");
        }
        if !ms.is_multiple_of(1000) && ms < 60_000 {
            let tenths = (ms + 50) / 100;
            return if tenths.is_multiple_of(10) {
                write!(f, "{}s", tenths / 10)
            } else {
                write!(f, "{}.{}s", tenths / 10, tenths % 10)
            };
        }
        let total = (ms + 500) / 1000;
        let parts = [
            (total / 86_400, "d"),
            (total % 86_400 / 3600, "h"),
            (total % 3600 / 60, "m"),
            (total % 60, "s"),
        ];
        for (n, unit) in parts {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// Formats bytes for people, with decimal units as the totals line of `diff` uses (`4.2 GB`).
pub struct HumanBytes(pub u64);

impl fmt::Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
        let mut v = self.0 as f64;
        let mut i = 0;
        while v >= 1000.0 && i < UNITS.len() - 1 {
            v /= 1000.0;
            i += 1;
        }
        if i == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.1} {}", UNITS[i])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_size("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_size("8GB").unwrap(), 8_000_000_000);
        assert_eq!(parse_size("8 gb").unwrap(), 8_000_000_000);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        for bad in ["", "GB", "8XB", "-1GB", "1..2GB", "99999999999999TB"] {
            let e = parse_size(bad).unwrap_err().to_string();
            assert!(e.contains("invalid size"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_mins(5));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_hours(1));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .to_string()
                .contains("30s, 5m")
        );
    }

    #[test]
    fn human_durations_read_as_written() {
        for (d, text) in [
            (Duration::from_secs(30), "30s"),
            (Duration::from_mins(5), "5m"),
            (Duration::from_hours(1), "1h"),
            (Duration::from_mins(90), "1h30m"),
            (Duration::from_hours(24), "1d"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_micros(5_153_679), "5.2s"),
            (Duration::from_millis(134_400), "2m14s"),
            (Duration::from_nanos(10), "<1ms"),
            (Duration::ZERO, "0ms"),
        ] {
            assert_eq!(HumanDuration(d).to_string(), text, "{d:?}");
        }
        // What a setting says parses back to itself.
        for text in ["30s", "5m", "1h30m", "250ms", "1d"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(HumanDuration(d).to_string(), text);
        }
    }

    #[test]
    fn human_bytes() {
        assert_eq!(HumanBytes(999).to_string(), "999 B");
        assert_eq!(HumanBytes(4_200_000_000).to_string(), "4.2 GB");
    }
}
