//! The import graph stays honest: built from the `crate::…`, `super::…` and `self::…` paths
//! of `src/` (`use` trees expanded; comments, strings and char literals skipped), it shows
//! `reconcile::plan` importing nothing that does I/O, no import circle between `events` and
//! the modules that report, between `install::remote` and `install::service`, or between
//! `download::http` and `download::queue`, and ARCHITECTURE.md's table naming every module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module path inside the crate: `["download", "http"]`; `[]` is the crate root.
type Module = Vec<String>;

/// Every module of `src/` with the code (comments, strings and chars removed) of its file,
/// up to its unit tests (`#[cfg(test)] mod tests`, last in the file by convention): what a
/// module's tests use is not what the module imports, and their `super` is the module itself.
fn modules() -> BTreeMap<Module, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).expect("src is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("src/main.rs")
            {
                let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
                let rel = path
                    .strip_prefix(&src)
                    .expect("under src")
                    .with_extension("");
                let mut module: Module = rel
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|l| l == "mod" || l == "lib") {
                    module.pop();
                }
                let text = std::fs::read_to_string(&path).expect("source is text");
                let text = text
                    .find("\n#[cfg(test)]\nmod tests")
                    .map_or(text.as_str(), |at| &text[..at]);
                out.insert(module, code_only(text));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

/// `text` with comments, string literals (raw ones too) and char literals blanked out, so a
/// path in a doc comment or an error message is no import.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) == Some(&'"') {
                j += 1;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            } else {
                out.push(c[i]);
                i += 1;
            }
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}'), else a lifetime or label.
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The paths of every `use` tree in `code`, expanded (`use a::{b, c::d}` → `a::b`, `a::c::d`),
/// and every other `crate::`/`super::`/`self::` path written inline.
fn paths(code: &str) -> Vec<Vec<String>> {
    fn expand(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        let (head, group) = match tree.find('{') {
            Some(open) => {
                let close = tree.rfind('}').unwrap_or(tree.len());
                (&tree[..open], Some(&tree[open + 1..close]))
            }
            None => (tree, None),
        };
        let mut path = prefix.to_vec();
        for seg in head.split("::").map(str::trim).filter(|s| !s.is_empty()) {
            let seg = seg.split_whitespace().next().unwrap_or(seg);
            path.push(seg.to_owned());
        }
        match group {
            None => out.push(path),
            Some(g) => {
                let mut depth = 0;
                let mut start = 0;
                for (k, ch) in g.char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            expand(&g[start..k], &path, out);
                            start = k + 1;
                        }
                        _ => {}
                    }
                }
                if !g[start..].trim().is_empty() {
                    expand(&g[start..], &path, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + 4..];
        if before.is_none_or(|b| !(b.is_alphanumeric() || b == '_'))
            && let Some(end) = after.find(';')
        {
            expand(&after[..end], &[], &mut out);
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    let bytes: Vec<char> = code.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < bytes.len() {
        if (i == 0 || !word(bytes[i - 1])) && word(bytes[i]) {
            let mut j = i;
            let mut path = Vec::new();
            loop {
                let s = j;
                while j < bytes.len() && word(bytes[j]) {
                    j += 1;
                }
                path.push(bytes[s..j].iter().collect::<String>());
                if bytes.get(j) == Some(&':')
                    && bytes.get(j + 1) == Some(&':')
                    && bytes.get(j + 2).is_some_and(|&c| word(c))
                {
                    j += 2;
                } else {
                    break;
                }
            }
            if path.len() > 1 && ["crate", "super", "self"].contains(&path[0].as_str()) {
                out.push(path);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// The module graph: module → the other modules its code names (the longest known module
/// prefix of each path).
fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let mods = modules();
    let known: BTreeSet<&Module> = mods.keys().collect();
    let mut g = BTreeMap::new();
    for (m, code) in &mods {
        // A file module's `super` is its parent; `self` is itself.
        let mut edges = BTreeSet::new();
        for p in paths(code) {
            let mut base: Module = Vec::new();
            let mut segs = p.as_slice();
            match segs.first().map(String::as_str) {
                Some("crate") => segs = &segs[1..],
                Some("super") => {
                    base.clone_from(m);
                    while segs.first().is_some_and(|s| s == "super") {
                        base.pop();
                        segs = &segs[1..];
                    }
                }
                Some("self") => {
                    base.clone_from(m);
                    segs = &segs[1..];
                }
                // `use child::X` in a module's own file.
                Some(first) if known.contains(&[m.clone(), vec![first.to_owned()]].concat()) => {
                    base.clone_from(m);
                }
                _ => continue,
            }
            let mut target = base.clone();
            let mut best = base;
            for s in segs {
                target.push(s.clone());
                if known.contains(&target) {
                    best.clone_from(&target);
                }
            }
            if !best.is_empty() && &best != m {
                edges.insert(best);
            }
        }
        g.insert(m.clone(), edges);
    }
    g
}

fn module(path: &str) -> Module {
    path.split("::").map(str::to_owned).collect()
}

fn names(g: &BTreeMap<Module, BTreeSet<Module>>, from: &str) -> Vec<String> {
    g.get(&module(from))
        .unwrap_or_else(|| panic!("no module {from}"))
        .iter()
        .map(|m| m.join("::"))
        .collect()
}

/// The graph sees what the code says: a few edges every version of the crate has.
#[test]
fn the_graph_sees_use_trees_inline_paths_and_super() {
    let g = graph();
    assert!(names(&g, "cli::watchcmd").contains(&"reconcile".to_owned()));
    assert!(names(&g, "reconcile::plan").contains(&"reconcile::inventory".to_owned()));
    assert!(names(&g, "reconcile::plan").contains(&"manifest".to_owned()));
    // Grouped `use super::{…}` and comments: a path in a comment or a string is no edge.
    let p = paths(&code_only(
        "use super::{a::B, c::{d, e::F}};\n// crate::ghost::X\nlet s = \"crate::nope::Y\"; crate::x::y();\nlet c = '\"'; crate::z::w;",
    ));
    let p: Vec<String> = p.iter().map(|v| v.join("::")).collect();
    assert_eq!(
        p,
        [
            "super::a::B",
            "super::c::d",
            "super::c::e::F",
            "crate::x::y",
            "crate::z::w"
        ]
    );
}

/// `reconcile::plan` is a pure function: it names only data modules and no I/O API.
#[test]
fn the_plan_imports_nothing_that_does_io() {
    let g = graph();
    let allowed = [
        "config",
        "manifest",
        "taxonomy",
        "units",
        "reconcile::inventory",
    ];
    for m in names(&g, "reconcile::plan") {
        assert!(
            allowed.contains(&m.as_str()),
            "reconcile::plan imports {m}, which is not one of the data modules {allowed:?}"
        );
    }
    let code = &modules()[&module("reconcile::plan")];
    let io = [
        "std::fs",
        "std::net",
        "std::process",
        "std::io",
        "std::thread",
        "std::env",
        "tokio",
        "reqwest",
        "rusqlite",
        "hyper",
        "axum",
        "notify",
        "memmap2",
        "tempfile",
    ];
    for p in paths(code) {
        let p = p.join("::");
        for bad in io {
            assert!(!p.starts_with(bad), "reconcile::plan uses {p}");
        }
    }
    for bad in ["std::fs", "tokio::", "reqwest::", "rusqlite::", "File::"] {
        assert!(!code.contains(bad), "reconcile::plan uses {bad}");
    }
}

/// `events` knows no module's event types: it names no other module of the crate, so no
/// module that reports through it is in a circle with it.
#[test]
fn events_knows_no_module() {
    let g = graph();
    let mut out: Vec<String> = Vec::new();
    for (m, edges) in &g {
        if m.first().is_some_and(|f| f == "events") {
            out.extend(
                edges
                    .iter()
                    .filter(|e| e.first().is_none_or(|f| f != "events"))
                    .map(|e| e.join("::")),
            );
        }
    }
    assert_eq!(out, Vec::<String>::new(), "events imports these");
}

fn assert_no_circle(a: &str, b: &str) {
    let g = graph();
    let ab = names(&g, a).contains(&b.to_owned());
    let ba = names(&g, b).contains(&a.to_owned());
    assert!(
        !(ab && ba),
        "{a} and {b} import each other: {a} → {:?}, {b} → {:?}",
        names(&g, a),
        names(&g, b)
    );
}

/// `install::remote` works through a narrow context and a sink, not the service's insides.
#[test]
fn install_remote_and_service_are_no_circle() {
    assert_no_circle("install::remote", "install::service");
}

/// `download::http` has its own transfer config, embedded in the queue's.
#[test]
fn download_http_and_queue_are_no_circle() {
    assert_no_circle("download::http", "download::queue");
}

/// ARCHITECTURE.md's module table names every top-level module of the crate.
#[test]
fn architecture_names_every_module() {
    let arch =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    let table: String = arch
        .lines()
        .filter(|l| l.starts_with("| `"))
        .collect::<Vec<_>>()
        .join("\n");
    let top: BTreeSet<String> = modules()
        .keys()
        .filter(|m| m.len() == 1)
        .map(|m| m[0].clone())
        .collect();
    for m in top {
        assert!(
            table.contains(&format!("`{m}`")),
            "ARCHITECTURE.md's table has no row for `{m}`"
        );
    }
}
