//! Helpers shared by the end-to-end tests: where the stack's servers listen, unique names so that tests
//! sharing one server never collide, and the paths of the project's tools.
//!
//! The servers are started by `make stack-up` (or `make test`, which starts and stops them). A test finds a
//! server's address in `MILLRACE_STACK_<NAME>` or else in the stack's state dir (`.stack/<name>.addr`), and
//! fails with a message saying how to start the stack when the server is not there.

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
