//! Settings resolved once (`cli::Context`), through the real binary: every command that
//! changes the store waits for its lock the same way, and `watch` says where it listens only
//! once it does.

use std::path::Path;

use modelsync::store::{self, lock::StoreLock};

use crate::support::{modelsync, stderr, tmp};

/// A manifest whose store lock gives up after `lock_timeout`, and an (empty) store.
fn setup(dir: &Path, lock_timeout: &str) {
    std::fs::write(
        dir.join("models.yaml"),
        format!(
            "version: 1\nsettings:\n  models_dir: models\n  lock_timeout: {lock_timeout}\nmodels: []\n"
        ),
    )
    .unwrap();
    drop(store::open(&dir.join("models/modelsync.db")).unwrap());
}

/// The one wait line and the one timeout, whatever the command: said while another process
/// holds the lock, naming the store, the wait, the purpose and the holder.
#[test]
fn every_command_that_changes_the_store_waits_for_its_lock_alike() {
    let d = tmp();
    setup(d.path(), "150ms");
    std::fs::write(d.path().join("x.safetensors"), b"not really").unwrap();
    std::fs::create_dir_all(d.path().join("invokeai")).unwrap();
    let held = StoreLock::acquire(
        &d.path().join("models/modelsync.db"),
        std::time::Duration::ZERO,
        |_| {},
    )
    .unwrap();
    let pid = format!("held by pid {}", std::process::id());
    let commands: [(&[&str], &str); 7] = [
        (&["apply", "--no-progress"], "apply the manifest"),
        (&["remove", "x"], "remove a record"),
        (&["import", "x.safetensors"], "import a model"),
        (&["sync", "--yes"], "register the models no record owns"),
        (
            &["adopt", "invokeai", "invokeai", "--yes"],
            "adopt the install",
        ),
        (&["gc", "--yes"], "collect garbage"),
        (
            &["init", "--from-store", "--force"],
            "declare its records in a manifest",
        ),
    ];
    for (args, purpose) in commands {
        let o = modelsync(d.path(), args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        let wait = format!(
            "waiting for the store lock on {} (up to 150ms) to {purpose}: {pid}",
            d.path().join("models/modelsync.db").display()
        );
        assert!(err.contains(&wait), "{args:?}: {err}");
        assert!(err.contains("timed out after 150ms"), "{args:?}: {err}");
    }
    // `--lock-timeout` wins over the manifest's, before or after the command; `-q` keeps the
    // wait to itself and says only the error.
    for args in [
        &["--lock-timeout", "50ms", "remove", "x"][..],
        &["remove", "x", "--lock-timeout", "50ms"],
    ] {
        let o = modelsync(d.path(), args);
        let err = stderr(&o);
        assert!(err.contains("(up to 50ms) to remove a record"), "{err}");
        assert!(err.contains("timed out after 50ms"), "{err}");
    }
    let o = modelsync(d.path(), &["-q", "gc", "--yes"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: timed out after 150ms"), "{err}");
    // The manifest was not touched by the `init --force` that could not lock.
    assert!(
        std::fs::read_to_string(d.path().join("models.yaml"))
            .unwrap()
            .contains("lock_timeout: 150ms")
    );
    drop(held);
}

/// A port it cannot listen on stops `watch` with an error naming the address, before any
/// line says it listens there.
#[test]
fn watch_says_where_it_listens_only_once_bound() {
    let d = tmp();
    setup(d.path(), "5m");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = modelsync(d.path(), &["watch", "--listen", &addr]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&addr), "{err}");
    assert!(!err.contains("listening on"), "{err}");
}
