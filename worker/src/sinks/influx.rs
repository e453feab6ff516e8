//! InfluxDB sinks: the 1.x `/write` API and the 2.x `/api/v2/write` API (InfluxDB 2/3, VictoriaMetrics,
//! and other implementations of it). Both take newline-separated line protocol, optionally gzipped.
//!
//! Written with `reqwest` rather than the `influxdb2` crate: a sink needs the status of every answer to tell
//! retriable failures from bad points, and the crate folds them into one opaque error. A 400 (a point the
//! server cannot parse) splits the batch in halves until the bad points are isolated; they are rejected
//! with the server's message and everything else is written.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::{ItemResult, Payload, Store, WriteError, retriable_status};
use crate::config::{InfluxV1Config, InfluxV2Config};

struct LineWriter {
    client: reqwest::Client,
    url: String,
    query: Vec<(String, String)>,
    auth: Option<String>,
    basic: Option<(String, String)>,
    gzip: bool,
}

enum Outcome {
    Written,
    BadRequest(String),
}

impl LineWriter {
    async fn post(&self, lines: &[&str]) -> Result<Outcome, WriteError> {
        let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            body.extend_from_slice(l.as_bytes());
            body.push(b'\n');
        }
        let mut req = self.client.post(&self.url).query(&self.query);
        if self.gzip {
            let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
            enc.write_all(&body).map_err(|e| WriteError {
                retriable: true,
                message: format!("gzip: {e}"),
            })?;
            body = enc.finish().map_err(|e| WriteError {
                retriable: true,
                message: format!("gzip: {e}"),
            })?;
            req = req.header("Content-Encoding", "gzip");
        }
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        if let Some((u, p)) = &self.basic {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(|e| WriteError {
                retriable: true,
                message: format!("{}: {e}", self.url),
            })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(Outcome::Written);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = format!("{} answered {status}: {}", self.url, text.trim());
        match status {
            400 | 422 => Ok(Outcome::BadRequest(message)),
            // Too large: treat like a bad request so the batch is split.
            413 => Ok(Outcome::BadRequest(message)),
            s if retriable_status(s) => Err(WriteError {
                retriable: true,
                message,
            }),
            // 401, 403, 404 (database not found): a configuration problem that an operator fixes. Retrying
            // keeps the data; the partitions pause and the metrics and logs say why.
            _ => Err(WriteError {
                retriable: true,
                message,
            }),
        }
    }

    /// Writes lines, isolating unparseable ones by halving.
    async fn write(&self, batch: &[&Payload]) -> Result<Vec<ItemResult>, WriteError> {
        let lines: Vec<&str> = batch
            .iter()
            .map(|p| match p {
                Payload::Line(l) => l.as_str(),
                Payload::Document { .. } => "",
            })
            .collect();
        let mut results = vec![ItemResult::Ok; lines.len()];
        for (i, p) in batch.iter().enumerate() {
            if matches!(p, Payload::Document { .. }) {
                results[i] = ItemResult::Reject("a document was routed to an InfluxDB sink".into());
            }
        }
        let mut stack = vec![(0usize, lines.len())];
        while let Some((start, end)) = stack.pop() {
            let idx: Vec<usize> = (start..end).filter(|i| results[*i] == ItemResult::Ok).collect();
            if idx.is_empty() {
                continue;
            }
            let part: Vec<&str> = idx.iter().map(|i| lines[*i]).collect();
            match self.post(&part).await? {
                Outcome::Written => {}
                Outcome::BadRequest(msg) if end - start == 1 => results[start] = ItemResult::Reject(msg),
                Outcome::BadRequest(_) => {
                    let mid = start + (end - start) / 2;
                    stack.push((mid, end));
                    stack.push((start, mid));
                }
            }
        }
        Ok(results)
    }
}

/// The HTTP client of one sink: its timeout, and the CA certificates of `ca_file` trusted besides the system's.
fn client(
    timeout: std::time::Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(4);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
}

/// An InfluxDB write endpoint: 1.x `/write` or the 2.x write API `/api/v2/write`.
pub struct InfluxStore {
    name: &'static str,
    w: LineWriter,
    ping_url: String,
}

impl InfluxStore {
    /// InfluxDB 1.x `/write` (database, retention policy, basic credentials). Fails on an unusable `ca_file`.
    pub fn v1(c: &InfluxV1Config) -> Result<Self, String> {
        let mut query = vec![
            ("db".to_string(), c.database.clone()),
            ("precision".into(), "ns".into()),
        ];
        if let Some(rp) = &c.retention_policy {
            query.push(("rp".into(), rp.clone()));
        }
        let basic = match (&c.username, &c.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.expose().to_string())),
            _ => None,
        };
        Ok(Self {
            name: "influxdb",
            w: LineWriter {
                client: client(c.timeout, c.ca_file.as_deref())?,
                url: format!("{}/write", c.url),
                query,
                auth: None,
                basic,
                gzip: c.gzip,
            },
            ping_url: format!("{}/ping", c.url),
        })
    }

    /// The InfluxDB 2.x write API `/api/v2/write` (org, bucket, token). Fails on an unusable `ca_file`.
    pub fn v2(c: &InfluxV2Config) -> Result<Self, String> {
        let query = vec![
            ("org".to_string(), c.org.clone()),
            ("bucket".into(), c.bucket.clone()),
            ("precision".into(), "ns".into()),
        ];
        Ok(Self {
            name: "influxdb_v2",
            w: LineWriter {
                client: client(c.timeout, c.ca_file.as_deref())?,
                url: format!("{}/api/v2/write", c.url),
                query,
                auth: c.token.as_ref().map(|t| format!("Token {}", t.expose())),
                basic: None,
                gzip: c.gzip,
            },
            ping_url: format!("{}/health", c.url),
        })
    }
}

impl Store for InfluxStore {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn write(&self, batch: &[&Payload]) -> Result<Vec<ItemResult>, WriteError> {
        self.w.write(batch).await
    }

    async fn ping(&self) -> bool {
        self.w
            .client
            .get(&self.ping_url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

impl std::fmt::Debug for InfluxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxStore")
            .field("name", &self.name)
            .field("url", &self.w.url)
            .finish_non_exhaustive()
    }
}
