//! `examples/k8s`: every YAML document parses, and every `modelsync` command line in the
//! examples (and the Dockerfile) uses subcommands and flags the CLI really has.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use modelsync::cli::Cli;
use serde_json::Value;

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/k8s")
}

/// A `modelsync …` command line found in an example, with where it came from.
#[derive(Debug)]
struct Invocation {
    origin: String,
    argv: Vec<String>,
    container: Option<Value>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has_ext(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn is_modelsync(program: &str) -> bool {
    Path::new(program)
        .file_name()
        .is_some_and(|n| n == "modelsync")
}

/// Finds containers anywhere in a document (Pod specs of Deployments, DaemonSets, Jobs …).
fn collect_containers(v: &Value, origin: &str, out: &mut Vec<Invocation>) {
    match v {
        Value::Object(map) => {
            for key in ["containers", "initContainers"] {
                for c in map.get(key).and_then(Value::as_array).into_iter().flatten() {
                    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                    let command = strings(c.get("command"));
                    let args = strings(c.get("args"));
                    let argv: Vec<String> = if command.is_empty() {
                        // The image's ENTRYPOINT is modelsync (see the Dockerfile).
                        if !image.contains("modelsync") {
                            continue;
                        }
                        std::iter::once("modelsync".to_owned())
                            .chain(args)
                            .collect()
                    } else {
                        command.into_iter().chain(args).collect()
                    };
                    if argv.first().is_some_and(|p| is_modelsync(p)) {
                        let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                        out.push(Invocation {
                            origin: format!("{origin} container {name}"),
                            argv,
                            container: Some(c.clone()),
                        });
                    }
                }
            }
            for child in map.values() {
                collect_containers(child, origin, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                collect_containers(child, origin, out);
            }
        }
        _ => {}
    }
}

/// The exec-form `ENTRYPOINT` + `CMD` of the final stage.
fn dockerfile_invocation(text: &str) -> Invocation {
    let json_array = |line: &str, kw: &str| -> Option<Vec<String>> {
        let rest = line.strip_prefix(kw)?.trim();
        Some(serde_json::from_str(rest).unwrap_or_else(|e| {
            panic!("Dockerfile {kw} must use the JSON exec form: `{line}`: {e}")
        }))
    };
    let mut entrypoint = Vec::new();
    let mut cmd = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            entrypoint.clear();
            cmd.clear();
        }
        if let Some(v) = json_array(line, "ENTRYPOINT ") {
            entrypoint = v;
        }
        if let Some(v) = json_array(line, "CMD ") {
            cmd = v;
        }
    }
    Invocation {
        origin: "Dockerfile".into(),
        argv: entrypoint.into_iter().chain(cmd).collect(),
        container: None,
    }
}

/// Checks every flag of `argv` against the clap definition; returns the subcommand.
fn check_flags(inv: &Invocation) -> String {
    let root = Cli::command();
    let sub_name = inv.argv.iter().skip(1).find(|a| !a.starts_with('-'));
    let sub_name =
        sub_name.unwrap_or_else(|| panic!("{}: no subcommand in {:?}", inv.origin, inv.argv));
    let Some(sub) = root.find_subcommand(sub_name) else {
        panic!("{}: `modelsync {sub_name}` is not a subcommand", inv.origin);
    };
    let longs: Vec<String> = root
        .get_arguments()
        .chain(sub.get_arguments())
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let shorts: Vec<char> = root
        .get_arguments()
        .chain(sub.get_arguments())
        .filter_map(clap::Arg::get_short)
        .collect();
    for arg in &inv.argv[1..] {
        if let Some(long) = arg.strip_prefix("--") {
            let long = long.split('=').next().unwrap_or_default();
            assert!(
                longs.iter().any(|l| l == long),
                "{}: `modelsync {sub_name}` has no flag --{long} (has: {longs:?})",
                inv.origin
            );
        } else if let Some(short) = arg.strip_prefix('-') {
            for c in short.chars() {
                assert!(shorts.contains(&c), "{}: no flag -{c}", inv.origin);
            }
        }
    }
    // And the whole line parses, values included.
    if let Err(e) = Cli::try_parse_from(&inv.argv) {
        panic!("{}: {:?} does not parse: {e}", inv.origin, inv.argv);
    }
    sub_name.clone()
}

/// The `--listen` port of a watch command line.
fn listen_port(argv: &[String]) -> u16 {
    let pos = argv.iter().position(|a| a == "--listen");
    let addr = pos
        .and_then(|i| argv.get(i + 1))
        .map_or("127.0.0.1:9090", String::as_str);
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad --listen {addr}"))
}

/// The container port a probe's `port` (number or name) refers to.
fn probe_port(container: &Value, probe: &Value) -> u16 {
    let port = &probe["httpGet"]["port"];
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).expect("port fits");
    }
    let name = port.as_str().expect("probe port is a number or a name");
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .map_or_else(
            || panic!("probe port `{name}` is not a named container port"),
            |n| u16::try_from(n).expect("port fits"),
        )
}

#[test]
fn examples_parse_and_use_real_flags() {
    let dir = k8s_dir();
    let mut invocations = Vec::new();
    let mut yaml_files = 0;
    let mut documents = 0;
    let mut entries = std::fs::read_dir(&dir)
        .expect("examples/k8s exists")
        .map(|e| e.expect("dir entry").path())
        .collect::<Vec<_>>();
    entries.sort();
    for path in &entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = std::fs::read_to_string(path).expect("readable example");
        if has_ext(path, &["yaml", "yml"]) {
            yaml_files += 1;
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
            for (i, doc) in docs.iter().enumerate() {
                if doc.is_null() {
                    continue;
                }
                documents += 1;
                for key in ["apiVersion", "kind", "metadata"] {
                    assert!(doc.get(key).is_some(), "{name} document {i} has no {key}");
                }
                if doc["kind"] == "ConfigMap" {
                    for (file, body) in doc["data"].as_object().into_iter().flatten() {
                        if has_ext(Path::new(file), &["yaml", "yml"]) {
                            let inner: Result<Value, _> =
                                serde_saphyr::from_str(body.as_str().unwrap_or_default());
                            assert!(inner.is_ok(), "{name}: data.{file} is not YAML: {inner:?}");
                        }
                    }
                }
                collect_containers(doc, &format!("{name} document {i}"), &mut invocations);
            }
        } else if name == "Dockerfile" {
            let froms = text
                .lines()
                .filter(|l| l.trim_start().starts_with("FROM "))
                .count();
            assert!(froms >= 2, "the Dockerfile must be multi-stage");
            let user = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("USER "))
                .next_back()
                .expect("the Dockerfile sets USER");
            let uid = user.split(':').next().unwrap_or_default();
            assert!(
                uid != "root" && uid != "0",
                "the runtime user must not be root"
            );
            invocations.push(dockerfile_invocation(&text));
        }
    }
    assert!(
        yaml_files >= 3 && documents >= 3,
        "{yaml_files} YAML files, {documents} documents"
    );

    let mut subcommands = Vec::new();
    let mut watch_containers = 0;
    for inv in &invocations {
        let sub = check_flags(inv);
        if sub == "watch"
            && let Some(c) = &inv.container
        {
            watch_containers += 1;
            let port = listen_port(&inv.argv);
            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                let p = c
                    .get(probe)
                    .unwrap_or_else(|| panic!("{}: no {probe}", inv.origin));
                let got = p["httpGet"]["path"].as_str().unwrap_or_default();
                assert_eq!(got, path, "{}: {probe} path", inv.origin);
                assert!(modelsync::watch::ROUTES.contains(&got));
                assert_eq!(
                    probe_port(c, p),
                    port,
                    "{}: {probe} port vs --listen",
                    inv.origin
                );
            }
            assert!(
                c["resources"]["requests"].is_object(),
                "{}: no resource requests",
                inv.origin
            );
            assert!(
                !inv.argv.iter().any(|a| a.starts_with("127.0.0.1")),
                "{}: a probe cannot reach a loopback listener",
                inv.origin
            );
        }
        subcommands.push(sub);
    }
    assert!(
        watch_containers >= 1,
        "no watch container found: {invocations:#?}"
    );
    let apply_locked = invocations.iter().any(|i| {
        i.argv.get(1).is_some_and(|s| s == "apply") && i.argv.iter().any(|a| a == "--locked")
    });
    assert!(
        apply_locked,
        "no init container runs `apply --locked`: {invocations:#?}"
    );
    assert!(subcommands.len() >= 3, "{subcommands:?}");
}

#[test]
fn flag_check_catches_unknown_flags() {
    let bad = Invocation {
        origin: "test".into(),
        argv: vec![
            "modelsync".into(),
            "watch".into(),
            "--port".into(),
            "9090".into(),
        ],
        container: None,
    };
    let caught = std::panic::catch_unwind(|| check_flags(&bad));
    assert!(
        caught.is_err(),
        "--port is not a watch flag and must be reported"
    );
}

/// The `modelsync watch` command line of `examples/k8s/daemonset.yaml`, exactly as shipped.
pub(crate) fn daemonset_watch_argv() -> Vec<String> {
    let path = k8s_dir().join("daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("daemonset.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("daemonset.yaml is YAML");
    let mut found = Vec::new();
    for doc in &docs {
        collect_containers(doc, "daemonset.yaml", &mut found);
    }
    found
        .into_iter()
        .map(|i| i.argv)
        .find(|a| a.get(1).is_some_and(|s| s == "watch"))
        .expect("daemonset.yaml runs modelsync watch")
}
