//! A real CNCF Distribution registry (Debian's `docker-registry`, installed by
//! `scripts/setup-apt`) on a free loopback port, filesystem storage in a temp dir, in one of
//! three modes: open, htpasswd (Basic, bcrypt), or token auth (a small token server here
//! signs RS256 JWTs with a key whose self-signed certificate is the registry's
//! `rootcertbundle`; keys and signatures by the `openssl` command).
//!
//! The registry's stdout and stderr (its access log shows each request and status, so a
//! `206` on a blob GET is a ranged read) go to `registry.log` in the temp dir.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;

/// The test user of the auth modes.
pub const USER: &str = "fleet";
/// Its password.
pub const PASSWORD: &str = "s3cret-pw";

/// How the registry authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anonymous pull and push.
    Open,
    /// htpasswd: Basic with [`USER`]/[`PASSWORD`].
    Htpasswd,
    /// Bearer tokens from [`TokenServer`], which takes Basic [`USER`]/[`PASSWORD`].
    Token,
}

/// A running registry; killed on drop.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    token: Option<TokenServer>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `docker-registry` binary, or a panic saying how to install it. When it is missing,
/// `scripts/setup-apt` runs first (once per test process), as the venv's script does for the
/// Python fixtures, so a plain `cargo test` works on a fresh Debian machine with root or sudo;
/// it installs `skopeo` and `openssl` too.
pub fn registry_binary() -> PathBuf {
    static SETUP: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if let Some(p) = find_registry() {
        return p;
    }
    SETUP.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-apt");
        let _ = Command::new(script).status();
    });
    find_registry().unwrap_or_else(|| {
        panic!(
            "docker-registry (the CNCF Distribution registry) is not installed and scripts/setup-apt could not install it (Debian package docker-registry; needs root or sudo); the OCI tests need a real registry"
        )
    })
}

fn find_registry() -> Option<PathBuf> {
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
    {
        let p = dir.join("docker-registry");
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// Status code of `GET path` on 127.0.0.1:port, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Registry {
    /// Starts a registry in `auth` mode and waits until it answers `/v2/`.
    pub fn start(auth: Auth) -> Self {
        let bin = registry_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut token = None;
        let auth_yaml = match auth {
            Auth::Open => String::new(),
            Auth::Htpasswd => {
                let hash = bcrypt::hash(PASSWORD, 5).expect("bcrypt");
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{USER}:{hash}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: modelsync-test\n    path: {}\n",
                    path.display()
                )
            }
            Auth::Token => {
                let t = TokenServer::start(dir.path());
                let yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    t.realm(),
                    TokenServer::SERVICE,
                    TokenServer::ISSUER,
                    t.cert.display()
                );
                token = Some(t);
                yaml
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: modelsync-test-secret\n{auth_yaml}",
            storage.display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut reg = Self {
            child,
            dir,
            port,
            token,
        };
        let up = super::wait_for(Duration::from_secs(30), || {
            if let Ok(Some(status)) = reg.child.try_wait() {
                return Some(Err(status));
            }
            http_status(port, "/v2/").map(Ok)
        });
        match up {
            Some(Ok(_)) => reg,
            Some(Err(status)) => panic!(
                "docker-registry exited ({status}) before answering:\n{}",
                reg.log()
            ),
            None => panic!(
                "docker-registry did not answer on port {port}:\n{}",
                reg.log()
            ),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `oci://127.0.0.1:PORT/REPO_AND_TAG`.
    pub fn oci(&self, repo_and_tag: &str) -> String {
        format!("oci://{}/{repo_and_tag}", self.host())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The registry's log (startup messages and the access log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The access-log lines of requests for `path_part` (e.g. a blob digest).
    pub fn requests_for(&self, path_part: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(path_part) && l.contains("HTTP/1.1\""))
            .map(str::to_owned)
            .collect()
    }

    /// Where the registry keeps a blob's bytes (filesystem driver layout).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The temp dir (for fixtures that belong with this registry).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The token server, in token mode.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token service for [`Auth::Token`]: `GET /token?service=…&scope=…` with Basic
/// [`USER`]/[`PASSWORD`] answers `{"token": JWT}` granting pull and push on each scope's
/// repository; without them (anonymous) the token grants nothing.
pub struct TokenServer {
    port: u16,
    cert: PathBuf,
    stop: Arc<AtomicBool>,
    /// Each request's query and whether it carried valid credentials.
    pub seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl TokenServer {
    /// The `service` the registry expects in `aud`.
    pub const SERVICE: &'static str = "modelsync-test-registry";
    /// The `iss` it expects.
    pub const ISSUER: &'static str = "modelsync-test-issuer";

    fn start(dir: &Path) -> Self {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-subj", "/CN=modelsync-test-token"])
            .output()
            .expect("the openssl command (token auth test keys)");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl x509");
        assert!(der.status.success());
        let x5c = base64::engine::general_purpose::STANDARD.encode(&der.stdout);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(false).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = serve_token(conn, &key, &x5c, &seen2);
            }
        });
        Self {
            port,
            cert,
            stop,
            seen,
        }
    }

    /// The realm URL.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn serve_token(
    conn: TcpStream,
    key: &Path,
    x5c: &str,
    seen: &Mutex<Vec<(String, bool)>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
            );
            authorized = value.trim() == want;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    seen.lock().unwrap().push((query.to_owned(), authorized));
    let url = reqwest::Url::parse(&format!("http://x/?{query}")).unwrap();
    let mut access = Vec::new();
    if authorized {
        for (k, v) in url.query_pairs() {
            if k == "scope" {
                // repository:NAME:ACTIONS
                let mut parts = v.splitn(3, ':');
                // The test user may pull and push everything: oras-py asks for a push
                // scope only once and then reuses its first (pull) token.
                if let (Some(kind), Some(name), Some(_)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    access.push(serde_json::json!({
                        "type": kind, "name": name, "actions": ["pull", "push"],
                    }));
                }
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TokenServer::ISSUER, "sub": if authorized { USER } else { "" },
        "aud": TokenServer::SERVICE, "exp": now + 3600, "nbf": now - 60, "iat": now - 60,
        "jti": format!("{now}-{}", seen.lock().unwrap().len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(signing_input.as_bytes())?;
    let mut sig = Vec::new();
    child.stdout.take().expect("stdout").read_to_end(&mut sig)?;
    child.wait()?;
    let jwt = format!("{signing_input}.{}", b64url(&sig));
    let body = serde_json::json!({"token": jwt, "expires_in": 3600}).to_string();
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// Runs `script` with the test venv's python (`oras` installed), `argv` after it; returns
/// stdout, panicking with stderr on failure.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(super::pyfix::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run the venv python");
    assert!(
        out.status.success(),
        "python failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback TCP proxy in front of a registry: it logs each request's head (so a test sees
/// the `Range` a resumed download sends) and, while throttled, passes answers on in
/// `chunk`-byte pieces with a pause after each (so a pull is still running when a test kills
/// it). The pause paces the transfer; no test asserts on time.
pub struct Proxy {
    port: u16,
    throttle: Arc<Mutex<Option<(usize, Duration)>>>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// A proxy to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let throttle = Arc::new(Mutex::new(None));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (t2, h2) = (throttle.clone(), heads.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (t3, h3) = (t2.clone(), h2.clone());
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut pending = Vec::new();
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                            h3.lock().unwrap().push(head);
                            pending.drain(..end + 4);
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 256 << 10];
                    loop {
                        let limit: Option<(usize, Duration)> = *t3.lock().unwrap();
                        let size = limit.map_or(buf.len(), |(c, _)| c.min(buf.len()));
                        match s_read.read(&mut buf[..size]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if c_write.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                        if let Some((_, pause)) = limit {
                            std::thread::sleep(pause);
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self {
            port,
            throttle,
            heads,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Passes answers on `chunk` bytes per `pause`, or at full speed with `None`.
    pub fn throttle(&self, t: Option<(usize, Duration)>) {
        *self.throttle.lock().unwrap() = t;
    }

    /// Every request head seen so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// The `Range` values of requests whose first line contains `path_part`.
    pub fn ranges_for(&self, path_part: &str) -> Vec<String> {
        self.heads()
            .iter()
            .filter(|h| h.lines().next().is_some_and(|l| l.contains(path_part)))
            .filter_map(|h| {
                h.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("range").then(|| v.trim().to_owned())
                })
            })
            .collect()
    }
}

impl Registry {
    /// The registry's port (for a [`Proxy`]).
    pub fn port(&self) -> u16 {
        self.port
    }
}
