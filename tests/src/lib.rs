//! Helpers shared by the end-to-end tests: where the stack's servers listen, unique names so that tests
//! sharing one server never collide, the paths of the project's tools, waits tied to conditions
//! ([`eventually`]), worker configurations ([`config`]), what landed in the stores ([`e2e`]), and the plugins,
//! topics and records of many clients at once ([`clients`]).
//!
//! The servers are started by `make stack-up` (or `make test`, which starts and stops them). A test finds a
//! server's address in `MILLRACE_STACK_<NAME>` or else in the stack's state dir (`.stack/<name>.addr`), and
//! fails with a message saying how to start the stack when the server is not there.

pub mod clients;
pub mod config;
pub mod e2e;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(crate_dir).to_path_buf()
}

/// The stack's state dir: PID, address and log of every server, and Prometheus' file-discovered targets.
pub fn stack_dir() -> PathBuf {
    std::env::var_os("MILLRACE_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".stack"))
}

/// `host:port` of one of the stack's servers: `kafka`, `registry`, `influxdb`, `victoriametrics`,
/// `elasticsearch` or `prometheus`. Panics with instructions when the server is not up.
pub fn addr(server: &str) -> String {
    let var = format!("MILLRACE_STACK_{}", server.to_uppercase());
    if let Ok(addr) = std::env::var(&var) {
        return addr;
    }
    let file = stack_dir().join(format!("{server}.addr"));
    match std::fs::read_to_string(&file) {
        Ok(addr) => addr.trim().to_string(),
        Err(_) => panic!(
            "the stack's {server} is not running (no {var}, no {}); start the servers with `make stack-up`",
            file.display()
        ),
    }
}

/// `http://host:port` of an HTTP server of the stack.
pub fn http_url(server: &str) -> String {
    format!("http://{}", addr(server))
}

/// A name no other test (nor an earlier run against the same servers) uses: `prefix-<pid>-<time>-<n>`.
/// Lower case, so it is valid as a Kafka topic, an index, a database and a repository name.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{}-{:x}-{n}",
        std::process::id(),
        nanos % 0xffff_ffff_ffff
    )
}

/// The Python interpreter of the project's virtualenv (ORAS SDK and friends).
pub fn venv_python() -> PathBuf {
    std::env::var_os("MILLRACE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"))
        .join("bin/python")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pushes `file` to `reference` (`host:port/repo:tag`) with the ORAS Python SDK, the way plugin authors push
/// with `oras push`. `media_type` `None` keeps the ORAS default layer type. Returns the manifest digest.
pub fn oras_push(
    reference: &str,
    file: &Path,
    media_type: Option<&str>,
    config: Option<(&Path, &str)>,
) -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new(venv_python());
    cmd.arg(repo_root().join("scripts/oras-push.py"))
        .arg(reference)
        .arg(file)
        .arg("--insecure");
    if let Some(mt) = media_type {
        cmd.arg("--media-type").arg(mt);
    }
    if let Some((path, mt)) = config {
        cmd.arg("--config").arg(path).arg("--config-media-type").arg(mt);
    }
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "oras push {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A CNCF distribution registry of a test's own (on a free port, data in a temp dir), for tests that stop
/// it, tamper with its storage or need authentication, without disturbing the shared stack registry.
#[derive(Debug)]
pub struct PrivateRegistry {
    child: Option<std::process::Child>,
    pub addr: String,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
    tls: Option<(PathBuf, PathBuf)>,
}

impl PrivateRegistry {
    /// Starts a registry that serves HTTPS only, with this certificate and key (see [`tls::TestCa`]).
    pub fn start_tls(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut r = Self {
            child: None,
            addr: format!("127.0.0.1:{port}"),
            dir: tempfile::tempdir()?,
            auth: None,
            tls: Some((cert.to_path_buf(), key.to_path_buf())),
        };
        r.restart()?;
        Ok(r)
    }

    /// Starts a registry; with `auth`, it demands basic authentication with that user and password.
    pub fn start(auth: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut r = Self {
            child: None,
            addr: format!("127.0.0.1:{port}"),
            dir: tempfile::tempdir()?,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            tls: None,
        };
        r.restart()?;
        Ok(r)
    }

    /// The registry's storage root (blobs live under `docker/registry/v2/blobs/sha256/`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The file holding blob `digest` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops the registry (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same address with the same data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let config = self.dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n",
            self.storage().display(),
            self.addr
        );
        if let Some((cert, key)) = &self.tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((user, password)) = &self.auth {
            let out = std::process::Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "htpasswd failed (apt install apache2-utils)"
            );
            let htpasswd = self.dir.path().join("htpasswd");
            std::fs::write(&htpasswd, out.stdout)?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: millrace-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(self.dir.path().join("registry.log"))?;
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
                anyhow::bail!("private registry on {} did not start: {log}", self.addr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy in front of a real server, to cut the network between the worker and a store (an outage)
/// without losing the store's data.
#[derive(Debug)]
pub struct TcpProxy {
    pub addr: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let upstream = upstream.to_string();
        let accept = {
            let (down, conns) = (down.clone(), conns.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if down.load(std::sync::atomic::Ordering::Acquire) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    if let Ok(mut c) = conns.lock() {
                        c.retain(|h| !h.is_finished());
                        c.push(task.abort_handle());
                    }
                }
            })
        };
        Ok(Self {
            addr,
            down,
            conns,
            accept,
        })
    }

    /// Cuts (`true`) or restores (`false`) the connection; cutting also drops open connections.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::Release);
        if down && let Ok(mut c) = self.conns.lock() {
            for h in c.drain(..) {
                h.abort();
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set_down(true);
    }
}

/// A free TCP port on loopback (for a server the test starts right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Pushes the example plugin `name` (see [`dist`]) with the wasm layer media type; returns the manifest digest.
pub fn push_plugin(reference: &str, name: &str) -> anyhow::Result<String> {
    oras_push(reference, &dist(name), Some("application/wasm"), None)
}

/// An example plugin built by `make plugins` (`plugins/dist/<name>.wasm`).
pub fn dist(name: &str) -> PathBuf {
    let p = repo_root().join(format!("plugins/dist/{name}.wasm"));
    assert!(
        p.exists(),
        "{} missing: build the example plugins with `make plugins`",
        p.display()
    );
    p
}

/// Runs the independent cosign-format signer (`scripts/cosign-sign.py`: Python `cryptography` and the ORAS
/// SDK, no code of ours) with `args`; `what` names the call in the error.
fn cosign_script(what: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let out = std::process::Command::new(venv_python())
        .arg(repo_root().join("scripts/cosign-sign.py"))
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cosign-sign.py {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Writes a P-256 key pair `<prefix>.key`/`<prefix>.pub` with the independent signer.
pub fn cosign_keygen(prefix: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    cosign_script("--generate-key", &["--generate-key".as_ref(), prefix.as_os_str()])?;
    let with = |ext: &str| PathBuf::from(format!("{}.{ext}", prefix.display()));
    Ok((with("key"), with("pub")))
}

/// Signs `registry/repository@digest` with the independent signer and pushes the signature to the
/// `sha256-<hex>.sig` tag (plain HTTP).
pub fn cosign_sign(registry: &str, repository: &str, digest: &str, key: &Path) -> anyhow::Result<()> {
    cosign_script(
        &format!("{registry}/{repository}@{digest}"),
        &[
            "--registry".as_ref(),
            registry.as_ref(),
            "--repository".as_ref(),
            repository.as_ref(),
            "--digest".as_ref(),
            digest.as_ref(),
            "--key".as_ref(),
            key.as_os_str(),
            "--insecure".as_ref(),
        ],
    )
}
