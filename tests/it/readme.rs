//! README's quick start shows what the commands really print: every `$ cargo run --release --
//! …` line of its console block is run (the real binary, on a copy of `examples/`), and its
//! output must be the lines the README shows under it. Compared after normalising what differs
//! between runs and machines: the clone's folder, random keys, the free disk space, runs of
//! spaces (column widths follow path lengths), and the order of lines (`apply` prints entries
//! as they finish).

use std::path::Path;

use crate::support::{stderr, tmp};

/// The commands of README's quick start console block, each with the lines shown under it.
fn quick_start() -> Vec<(Vec<String>, Vec<String>)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = &readme[readme
        .find("## Quick start")
        .expect("a Quick start section")..];
    let block = &section[section.find("```console\n").expect("a console block") + 11..];
    let block = &block[..block.find("```").expect("the block ends")];
    let mut out: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for line in block.lines() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            let cmd = cmd.split("  #").next().unwrap_or(cmd);
            let args = cmd
                .strip_prefix("cargo run --release -- ")
                .unwrap_or_else(|| panic!("not a `cargo run --release --` line: {line}"));
            out.push((
                args.split_whitespace().map(str::to_owned).collect(),
                Vec::new(),
            ));
        } else if !line.trim().is_empty() {
            out.last_mut()
                .expect("output after a command")
                .1
                .push(line.to_owned());
        }
    }
    out
}

/// One line with what differs between runs made uniform.
fn normalise(line: &str, clone: &str) -> String {
    let line = line.replace(clone, "<clone>");
    let mut words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    // `…, 34.2 GB free`: the machine's.
    if let Some(i) = words.iter().position(|w| w == "free")
        && i >= 2
    {
        words[i - 2] = "<n>".into();
        words[i - 1] = "<unit>".into();
    }
    let joined = words.join(" ");
    // Keys: 32 hex digits, or their 8-digit prefix in `list`.
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String, next: Option<char>| {
        let bounded = next.is_none_or(|c| !c.is_ascii_alphanumeric());
        if bounded
            && (run.len() == 32 || run.len() == 8)
            && !out.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            out.push_str("<key>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in joined.chars() {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
        } else {
            flush(&mut run, &mut out, Some(c));
            out.push(c);
        }
    }
    flush(&mut run, &mut out, None);
    out
}

#[test]
fn readme_quick_start_shows_what_the_commands_print() {
    let d = tmp();
    // Same folder name as in README, so only the part above it differs.
    let root = d.path().join("modelsync");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    copy(
        &examples.join("models.yaml"),
        &root.join("examples/models.yaml"),
    );
    copy_tree(&examples.join("weights"), &root.join("examples/weights"));
    let clone = root.display().to_string();
    let steps = quick_start();
    assert!(steps.len() >= 4, "{steps:?}");
    for (args, shown) in steps {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_modelsync"))
            .args(&args)
            .current_dir(&root)
            .env_remove("MODELSYNC_FILE")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .output()
            .expect("modelsync runs");
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let mut got: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| normalise(l, &clone))
            .collect();
        let mut want: Vec<String> = shown
            .iter()
            .map(|l| normalise(l, "/tmp/modelsync"))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(
            got,
            want,
            "README's output of `{}` is stale:\n{text}",
            args.join(" ")
        );
    }
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    std::fs::copy(from, to).expect("copy");
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            copy(&e.path(), &target);
        }
    }
}

#[test]
fn normalising_keeps_what_matters() {
    assert_eq!(
        normalise(
            "+ tiny-sd15: installed (f91a1111e8a94b8f22cb56c085e17771)",
            "/x"
        ),
        "+ tiny-sd15: installed (<key>)"
    );
    assert_eq!(
        normalise(
            "f91a1111  tiny-sd15   main  sd-1  diffusers  f91a1111e8a94b8f22cb56c085e17771",
            "/x"
        ),
        "<key> tiny-sd15 main sd-1 diffusers <key>"
    );
    assert_eq!(
        normalise("Plan: 3 to install — 44.7 kB to fetch, 34.2 GB free", "/x"),
        "Plan: 3 to install — 44.7 kB to fetch, <n> <unit> free"
    );
    // Names and sizes are not keys.
    assert_eq!(
        normalise("detail-sd15 21.9 kB blake3", "/x"),
        "detail-sd15 21.9 kB blake3"
    );
}
