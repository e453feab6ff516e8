//! TLS for the sink tests: a throwaway CA and server certificate (made with the `openssl` command), InfluxDB and
//! VictoriaMetrics started with their own TLS listeners, and a TLS-terminating proxy for servers without one
//! (osmem-server). Every server runs on a free loopback port with its data in a temp dir and is killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

/// A CA and a server certificate for `127.0.0.1` / `localhost` signed by it (PEM files, PKCS#8 keys).
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
    /// The CA certificate: what clients trust.
    pub ca: PathBuf,
    /// The server certificate and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (Debian package openssl)")?;
    ensure!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl TestCa {
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=millrace test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        )?;
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )?;
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        )?;
        Ok(Self {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            dir,
        })
    }

    /// A client that trusts this CA (and no other).
    pub fn client(&self) -> Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca)?)?;
        Ok(reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(10))
            .build()?)
    }

    /// A file that is not a certificate, for the refusal tests.
    pub fn garbage_file(&self) -> Result<PathBuf> {
        let p = self.dir.path().join("not-a-cert.pem");
        std::fs::write(&p, "this is not a certificate\n")?;
        Ok(p)
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A server process of a test's own, killed on drop.
#[derive(Debug)]
pub struct TlsServer {
    child: Child,
    _dir: tempfile::TempDir,
    /// `https://127.0.0.1:<port>`
    pub url: String,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsServer {
    /// InfluxDB 1.x serving HTTPS only.
    pub async fn influxdb(ca: &TestCa) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (http, rpc) = (free_port()?, free_port()?);
        let d = dir.path();
        let conf = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{m}\"\n[data]\n  \
             dir = \"{data}\"\n  wal-dir = \"{wal}\"\n  query-log-enabled = false\n[http]\n  bind-address = \
             \"127.0.0.1:{http}\"\n  log-enabled = false\n  https-enabled = true\n  https-certificate = \"{cert}\"\n  \
             https-private-key = \"{key}\"\n[monitor]\n  store-enabled = false\n",
            m = d.join("meta").display(),
            data = d.join("data").display(),
            wal = d.join("wal").display(),
            cert = ca.cert.display(),
            key = ca.key.display(),
        );
        std::fs::write(d.join("influxdb.conf"), conf)?;
        let child = Command::new("influxd")
            .args(["run", "-config"])
            .arg(d.join("influxdb.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("influxd.log"))?)
            .spawn()
            .context("starting influxd (Debian package influxdb)")?;
        Self::started(child, dir, http, ca, "/ping").await
    }

    /// VictoriaMetrics (the InfluxDB v2 write API) serving HTTPS only.
    pub async fn victoriametrics(ca: &TestCa) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let child = Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.path().join("data").display()))
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=WARN")
            .arg("-tls")
            .arg(format!("-tlsCertFile={}", ca.cert.display()))
            .arg(format!("-tlsKeyFile={}", ca.key.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("vm.log"))?)
            .spawn()
            .context("starting victoria-metrics (Debian package victoria-metrics)")?;
        Self::started(child, dir, port, ca, "/health").await
    }

    /// The server just spawned, once it answers `path` over TLS on `port`.
    async fn started(
        child: Child,
        dir: tempfile::TempDir,
        port: u16,
        ca: &TestCa,
        path: &str,
    ) -> Result<Self> {
        let s = Self {
            child,
            _dir: dir,
            url: format!("https://127.0.0.1:{port}"),
        };
        s.wait_ready(ca, path).await?;
        Ok(s)
    }

    async fn wait_ready(&self, ca: &TestCa, path: &str) -> Result<()> {
        let client = ca.client()?;
        for _ in 0..300 {
            if let Ok(r) = client.get(format!("{}{path}", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("{} did not answer {path} over TLS within 30 s", self.url)
    }
}

/// A TLS-terminating proxy (OpenSSL through native-tls) in front of a plain-HTTP server.
#[derive(Debug)]
pub struct TlsProxy {
    /// `https://127.0.0.1:<port>`
    pub url: String,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TlsProxy {
    pub async fn start(upstream: &str, ca: &TestCa) -> Result<Self> {
        let identity = tokio_native_tls::native_tls::Identity::from_pkcs8(
            &std::fs::read(&ca.cert)?,
            &std::fs::read(&ca.key)?,
        )?;
        let acceptor = tokio_native_tls::TlsAcceptor::from(
            tokio_native_tls::native_tls::TlsAcceptor::builder(identity).build()?,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        let upstream = upstream.to_string();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return; // a client that does not trust the CA hangs up here
                    };
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                    }
                });
            }
        });
        Ok(Self { url, accept })
    }
}
