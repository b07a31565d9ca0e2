//! `diff` and `apply` on URL sources: each URL entry that would be fetched is asked for its
//! size (a HEAD, or a one-byte ranged GET where HEAD is refused), against the real loopback file
//! server, which counts the requests.

use modelsync::units::HumanBytes;

use crate::support::fileserver::{FileServer, FileSpec};
use crate::support::reconcile::{Work, assert_exit, lora_bytes};
use crate::support::{stderr, stdout};

/// The file server on a runtime of its own, serving while the test holds the runtime.
fn file_server() -> (tokio::runtime::Runtime, FileServer) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let srv = rt.block_on(FileServer::start());
    (rt, srv)
}

fn row<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{out}"))
}

fn methods(srv: &FileServer, path: &str) -> Vec<String> {
    srv.seen(path).into_iter().map(|s| s.method).collect()
}

/// A URL that is not there (404), one that needs a token (401) and a server that refuses the
/// connection are `✗` rows with their reason, counted in the totals in text and JSON, and
/// `diff --exit-code` exits 1; a good URL's size (asked with the entry's token) shows. No body
/// is fetched, and the query's secret never shows.
#[test]
fn diff_shows_unreachable_urls_as_error_rows_in_text_and_json() {
    let (_rt, srv) = file_server();
    let good = lora_bytes(1, 2);
    srv.add("/good.safetensors", FileSpec::new(good.clone()));
    let mut private = FileSpec::new(lora_bytes(2, 2));
    private.token = Some("s3cret".into());
    srv.add("/private.safetensors", private.clone());
    srv.add("/tokened.safetensors", private);
    let w = Work::new();
    w.manifest(
        "",
        &format!(
            "  - name: good\n    source: {}\n\
             \x20 - name: gone\n    source: {}?sig=TOPSECRET\n\
             \x20 - name: private\n    source: {}\n\
             \x20 - name: tokened\n    source: {}\n    token: s3cret\n\
             \x20 - name: refused\n    source: http://127.0.0.1:9/x.safetensors\n",
            srv.url("/good.safetensors"),
            srv.url("/gone.safetensors"),
            srv.url("/private.safetensors"),
            srv.url("/tokened.safetensors"),
        ),
    );
    let o = w.run(&["diff", "--exit-code"]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    let r = row(&out, "good");
    assert!(r.starts_with('+'), "{r}");
    assert!(
        r.ends_with(&HumanBytes(good.len() as u64).to_string()),
        "{r}"
    );
    assert!(row(&out, "tokened").starts_with('+'), "{out}");
    for (name, why) in [
        ("gone", "HTTP 404: not found"),
        ("private", "HTTP 401: authentication required"),
        ("refused", "connection failed"),
    ] {
        let r = row(&out, name);
        assert!(r.starts_with('✗'), "{r}");
        assert!(r.contains(why), "{name}: {r}");
    }
    assert!(out.contains("2 to install"), "{out}");
    assert!(out.contains("3 in error"), "{out}");
    assert!(!out.contains("unknown size"), "{out}");
    assert!(!out.contains("TOPSECRET") && !stderr(&o).contains("TOPSECRET"));
    assert!(!stderr(&o).contains("not found"), "{}", stderr(&o));
    // The token went with the entry that has one; nothing but HEADs were sent.
    let tokened = srv.seen("/tokened.safetensors");
    assert_eq!(
        tokened.last().unwrap().authorization.as_deref(),
        Some("Bearer s3cret")
    );
    assert_eq!(tokened.last().unwrap().status, 200);
    for p in [
        "/good.safetensors",
        "/gone.safetensors",
        "/private.safetensors",
    ] {
        assert_eq!(methods(&srv, p), ["HEAD"], "{p}");
    }

    let o = w.run(&["diff", "--exit-code", "-o", "json"]);
    assert_exit(&o, 1);
    assert!(!stdout(&o).contains("TOPSECRET"));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let a = &plan["actions"];
    assert_eq!(a[0]["action"], "install");
    assert_eq!(a[0]["fetch_bytes"], good.len());
    assert_eq!(a[3]["action"], "install");
    assert_eq!(a[3]["fetch_bytes"], lora_bytes(2, 2).len());
    for (i, why) in [(1, "HTTP 404"), (2, "HTTP 401"), (4, "connection failed")] {
        assert_eq!(a[i]["action"], "error", "{}", a[i]);
        assert!(a[i]["reason"].as_str().unwrap().contains(why), "{}", a[i]);
    }
    assert_eq!(plan["totals"]["error"], 3);
    assert_eq!(plan["totals"]["install"], 2);
    assert_eq!(plan["totals"]["unknown_sizes"], 0);

    // apply fails the broken entries on their own, with their kind, and installs the rest.
    let o = w.run(&["apply", "-o", "json"]);
    assert_exit(&o, 1);
    let kinds: Vec<(String, String)> = stdout(&o)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"]["event"] == "action_failed")
        .map(|e| {
            (
                e["event"]["name"].as_str().unwrap_or_default().to_owned(),
                e["event"]["error_kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    for (name, kind) in [
        ("gone", "not_found"),
        ("private", "unauthorized"),
        ("refused", "connection"),
    ] {
        assert!(
            kinds.contains(&(name.to_owned(), kind.to_owned())),
            "{name}: {kinds:?}\n{}",
            stdout(&o)
        );
    }
    assert_eq!(w.store().all_models().unwrap().len(), 2);
}

/// A server that answers HEAD with 405 still tells the size, by a `Range: bytes=0-0` GET
/// (one byte sent, not the file).
#[test]
fn a_server_refusing_head_gives_the_size_by_a_ranged_get() {
    let (_rt, srv) = file_server();
    let bytes = lora_bytes(3, 2);
    let mut spec = FileSpec::new(bytes.clone());
    spec.no_head = true;
    srv.add("/nohead.safetensors", spec);
    let w = Work::new();
    w.manifest(
        "",
        &format!(
            "  - name: nohead\n    source: {}\n",
            srv.url("/nohead.safetensors")
        ),
    );
    let o = w.run(&["diff", "-o", "json"]);
    assert_exit(&o, 0);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(plan["actions"][0]["action"], "install");
    assert_eq!(plan["actions"][0]["fetch_bytes"], bytes.len());
    assert_eq!(plan["totals"]["unknown_sizes"], 0);
    let seen = srv.seen("/nohead.safetensors");
    let got: Vec<(&str, Option<&str>, u16)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.range.as_deref(), s.status))
        .collect();
    assert_eq!(got, [("HEAD", None, 405), ("GET", Some("bytes=0-0"), 206)]);
    assert!(srv.bytes_sent("/nohead.safetensors") <= 1);
}

/// A URL entry that is installed and in sync costs no request: not in `diff`, not in `apply`.
#[test]
fn a_converged_url_entry_makes_no_request() {
    let (_rt, srv) = file_server();
    srv.add("/m.safetensors", FileSpec::new(lora_bytes(4, 2)));
    let w = Work::new();
    w.manifest(
        "",
        &format!("  - name: m\n    source: {}\n", srv.url("/m.safetensors")),
    );
    assert_exit(&w.run(&["apply"]), 0);
    let before = srv.seen("/m.safetensors").len();
    assert_eq!(methods(&srv, "/m.safetensors")[0], "HEAD");
    assert_exit(&w.run(&["diff", "--exit-code"]), 0);
    assert_exit(&w.run(&["apply"]), 0);
    assert_eq!(
        srv.seen("/m.safetensors").len(),
        before,
        "{:?}",
        methods(&srv, "/m.safetensors")
    );
}

/// A server error that outlasts the retries is no verdict on the entry: its size stays
/// unknown, with a warning, and `diff --exit-code` says pending (2), not error.
#[test]
fn a_failing_url_server_leaves_the_size_unknown_with_a_warning() {
    let (_rt, srv) = file_server();
    let mut spec = FileSpec::new(lora_bytes(5, 2));
    spec.fail_first = 1000;
    srv.add("/flaky.safetensors", spec);
    let w = Work::new();
    w.manifest(
        "",
        &format!(
            "  - name: flaky\n    source: {}\n",
            srv.url("/flaky.safetensors")
        ),
    );
    let o = w.run(&["diff", "--exit-code"]);
    assert_exit(&o, 2);
    assert!(stdout(&o).contains("unknown size"), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("warning: flaky: size unknown"), "{err}");
    assert!(err.contains("HTTP 500"), "{err}");
    // Retried under the look-ups' budget, then given up.
    assert_eq!(methods(&srv, "/flaky.safetensors"), ["HEAD", "HEAD"]);
}

/// A redirect is followed to the file, as the download follows it.
#[test]
fn a_redirected_url_gives_the_size_of_its_target() {
    let (_rt, srv) = file_server();
    let bytes = lora_bytes(6, 2);
    srv.add("/real.safetensors", FileSpec::new(bytes.clone()));
    let moved = FileSpec {
        redirect: Some(srv.url("/real.safetensors")),
        ..FileSpec::default()
    };
    srv.add("/moved.safetensors", moved);
    let w = Work::new();
    w.manifest(
        "",
        &format!(
            "  - name: moved\n    source: {}\n",
            srv.url("/moved.safetensors")
        ),
    );
    let o = w.run(&["diff", "-o", "json"]);
    assert_exit(&o, 0);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(plan["actions"][0]["fetch_bytes"], bytes.len(), "{plan}");
    assert_eq!(methods(&srv, "/moved.safetensors"), ["HEAD"]);
    assert_eq!(methods(&srv, "/real.safetensors"), ["HEAD"]);
}
