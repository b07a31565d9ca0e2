//! Read-only mounts for tests: a command runs in its own mount namespace (`unshare -m`) where
//! the given folders are bind-mounted read-only over themselves, as Kubernetes mounts a
//! ConfigMap or a `readOnly: true` volume. Needs root (CI runs as root); elsewhere
//! [`available`] is false and the tests that need it skip with a message.

use std::path::Path;
use std::process::{Command, Stdio};

const SCRIPT: &str = r#"set -e
while [ "$1" != "--" ]; do
  mount --bind "$1" "$1"
  mount -o remount,ro,bind "$1" "$1"
  shift
done
shift
exec "$@""#;

/// Whether read-only bind mounts can be made here (tried on a scratch folder: the mount
/// must hold, and a write under it must fail).
pub fn available() -> bool {
    let dir = super::tmp();
    let d = dir.path().to_string_lossy().into_owned();
    let probe = format!("{d}/probe");
    Command::new("unshare")
        .args(["-m", "--", "sh", "-c", SCRIPT, "sh", &d, "--", "sh", "-c"])
        .arg(format!("! touch '{probe}' 2>/dev/null"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && !Path::new(&probe).exists()
}

/// Prints why a test skips (when [`available`] is false).
pub fn skip(test: &str) {
    eprintln!("skipped {test}: read-only bind mounts need root and `unshare -m` (CI runs as root)");
}

/// `cmd` run with each of `dirs` mounted read-only (in a private mount namespace: nothing
/// outside the command sees the mounts). Program, arguments, environment and working folder
/// are carried over.
pub fn read_only(dirs: &[&Path], cmd: &Command) -> Command {
    let mut c = Command::new("unshare");
    c.args(["-m", "--", "sh", "-c", SCRIPT, "sh"]);
    for d in dirs {
        c.arg(d);
    }
    c.arg("--").arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c
}
