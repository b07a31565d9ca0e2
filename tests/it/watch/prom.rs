//! A small validating parser of the Prometheus text exposition format (0.0.4): enough to
//! reject what a scraper would reject, and to read values back.

use std::collections::{BTreeMap, HashSet};

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
}

impl Exposition {
    /// The value of the sample `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.families
            .values()
            .flat_map(|f| f.samples.iter())
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    pub fn kind(&self, family: &str) -> Option<&str> {
        self.families.get(family).map(|f| f.kind.as_str())
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value `{s}`")),
    }
}

/// Parses `{a="b",c="d"}` at the start of `s`; returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    let mut rest = s.strip_prefix('{').ok_or("expected `{`")?;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without `=`")?;
        let name = rest[..eq].trim();
        if !valid_label_name(name) {
            return Err(format!("bad label name `{name}`"));
        }
        rest = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in label value")),
                },
                Some((_, '\n')) => return Err("raw newline in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label `{name}` twice"));
        }
        rest = rest[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

/// The family a sample belongs to (histogram and summary samples carry suffixes).
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(f) = families.get(base)
        {
            let ok = match suffix {
                "_bucket" => f.kind == "histogram",
                _ => f.kind == "histogram" || f.kind == "summary",
            };
            if ok {
                return Some(base);
            }
        }
    }
    None
}

pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut exp = Exposition::default();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: `{line}`", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if !valid_metric_name(name) {
                return Err(at(format!("bad metric name `{name}`")));
            }
            let f = exp.families.entry(name.to_owned()).or_insert(Family {
                kind: "untyped".into(),
                help: None,
                samples: Vec::new(),
            });
            if f.help.replace(help.to_owned()).is_some() {
                return Err(at("second HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without a type".into()))?;
            if !valid_metric_name(name) {
                return Err(at(format!("bad metric name `{name}`")));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type `{kind}`")));
            }
            let f = exp.families.entry(name.to_owned()).or_insert(Family {
                kind: "untyped".into(),
                help: None,
                samples: Vec::new(),
            });
            if !f.samples.is_empty() {
                return Err(at("TYPE after the family's samples".into()));
            }
            if f.kind != "untyped" {
                return Err(at("second TYPE".into()));
            }
            kind.clone_into(&mut f.kind);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at(format!("bad metric name `{name}`")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Labels::new(), &line[name_end..])
        };
        let mut parts = rest.split_whitespace();
        let value = parse_value(parts.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp `{ts}`")))?;
        }
        if parts.next().is_some() {
            return Err(at("trailing text".into()));
        }
        let fam = family_of(name, &exp.families)
            .ok_or_else(|| at(format!("sample `{name}` has no TYPE line before it")))?
            .to_owned();
        if current.as_deref() != Some(fam.as_str()) {
            if let Some(prev) = current.take() {
                finished.insert(prev);
            }
            if finished.contains(&fam) {
                return Err(at(format!("samples of `{fam}` are not contiguous")));
            }
            current = Some(fam.clone());
        }
        let f = exp.families.get_mut(&fam).expect("family looked up above");
        if f.samples
            .iter()
            .any(|s| s.name == name && s.labels == labels)
        {
            return Err(at("duplicate sample".into()));
        }
        if f.kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("negative or NaN counter".into()));
        }
        if f.kind == "histogram" && name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(at("bucket without `le`".into()));
        }
        f.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for (name, f) in &exp.families {
        if f.help.is_none() {
            return Err(format!("family `{name}` has no HELP"));
        }
        if f.kind == "counter" && !name.ends_with("_total") {
            return Err(format!("counter `{name}` should end in _total"));
        }
        if f.kind == "histogram" {
            check_histogram(name, f)?;
        }
    }
    Ok(exp)
}

fn check_histogram(name: &str, f: &Family) -> Result<(), String> {
    let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for s in f.samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let mut rest = s.labels.clone();
        let le = parse_value(&rest.remove("le").unwrap_or_default())
            .map_err(|e| format!("{name}: le: {e}"))?;
        series.entry(rest).or_default().push((le, s.value));
    }
    if series.is_empty() {
        return Err(format!("histogram `{name}` has no buckets"));
    }
    for (labels, buckets) in series {
        let mut prev = (f64::NEG_INFINITY, 0.0);
        for &(le, v) in &buckets {
            if le <= prev.0 {
                return Err(format!("{name}: buckets not in increasing `le` order"));
            }
            if v < prev.1 {
                return Err(format!("{name}: bucket counts are not cumulative"));
            }
            prev = (le, v);
        }
        if prev.0 != f64::INFINITY {
            return Err(format!("{name}: no +Inf bucket"));
        }
        let find = |suffix: &str| {
            f.samples
                .iter()
                .find(|s| s.name == format!("{name}{suffix}") && s.labels == labels)
                .map(|s| s.value)
        };
        let count = find("_count").ok_or(format!("{name}: no _count"))?;
        find("_sum").ok_or(format!("{name}: no _sum"))?;
        if (count - prev.1).abs() > f64::EPSILON {
            return Err(format!("{name}: +Inf bucket {} != _count {count}", prev.1));
        }
    }
    Ok(())
}
