//! InfluxDB sinks: the 1.x `/write` API and the 2.x write API `/api/v2/write` (InfluxDB 2/3, VictoriaMetrics
//! and other implementations of it). Both take newline-separated line protocol, optionally gzipped; they
//! differ only in the URL, its query and the credentials, so one store serves both: [`request`] encodes a
//! write, [`service`] sends it and turns the answer into results or a [`SinkError`] for the shared policy.
//!
//! Written with `reqwest` rather than the `influxdb2` crate, which the worker no longer depends on (the
//! end-to-end tests still use it as an independent client): the policy needs the status of every answer (a
//! 400 splits the batch to isolate a bad line, a 401 or 404 is retried, a 5xx is retried), and the crate folds
//! them into one opaque error; it also covers only the 2.x API.

mod request;
mod service;

use reqwest::Url;

use self::request::WriteRequest;
use super::SinkError;
use super::tls::CaBundle;
use crate::config::{InfluxV1Config, InfluxV2Config};

/// The configuration keys of one InfluxDB sink, for errors.
#[derive(Debug, Clone, Copy)]
struct Keys {
    section: &'static str,
    url: &'static str,
    ca_file: &'static str,
}

const V1: Keys = Keys {
    section: "sinks.influxdb",
    url: "sinks.influxdb.url",
    ca_file: "sinks.influxdb.ca_file",
};

const V2: Keys = Keys {
    section: "sinks.influxdb_v2",
    url: "sinks.influxdb_v2.url",
    ca_file: "sinks.influxdb_v2.ca_file",
};

/// An InfluxDB write endpoint: 1.x `/write` or the 2.x write API `/api/v2/write`.
#[derive(Debug)]
pub struct InfluxStore {
    name: &'static str,
    key: &'static str,
    client: reqwest::Client,
    request: WriteRequest,
    ping_url: Url,
}

impl InfluxStore {
    /// InfluxDB 1.x `/write` (database, retention policy, basic credentials), named `influxdb`.
    pub fn v1(c: &InfluxV1Config) -> Result<Self, SinkError> {
        let base = base_url(&c.url, V1)?;
        Ok(Self {
            name: "influxdb",
            key: V1.section,
            client: client(c.timeout, c.ca_file.as_deref(), V1)?,
            request: WriteRequest::v1(&base, c),
            ping_url: join(&base, "ping", V1)?,
        })
    }

    /// The InfluxDB 2.x write API `/api/v2/write` (org, bucket, token), named `influxdb_v2`.
    pub fn v2(c: &InfluxV2Config) -> Result<Self, SinkError> {
        let base = base_url(&c.url, V2)?;
        Ok(Self {
            name: "influxdb_v2",
            key: V2.section,
            client: client(c.timeout, c.ca_file.as_deref(), V2)?,
            request: WriteRequest::v2(&base, c),
            ping_url: join(&base, "health", V2)?,
        })
    }
}

/// The configured URL, as the base of the API paths.
fn base_url(url: &str, keys: Keys) -> Result<Url, SinkError> {
    let err = |message: String| SinkError::Url {
        key: keys.url,
        url: crate::redact::userinfo(url),
        message,
    };
    let mut base = Url::parse(url).map_err(|e| err(e.to_string()))?;
    if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
        return Err(err("not an http:// or https:// URL".into()));
    }
    // `http://host:8086/prefix` + `write` = `http://host:8086/prefix/write`.
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

fn join(base: &Url, path: &str, keys: Keys) -> Result<Url, SinkError> {
    base.join(path).map_err(|e| SinkError::Url {
        key: keys.url,
        url: crate::redact::userinfo(base.as_str()),
        message: e.to_string(),
    })
}

/// The HTTP client of one sink: its timeout, and the CA certificates of `ca_file` trusted besides the system's.
fn client(
    timeout: std::time::Duration,
    ca_file: Option<&std::path::Path>,
    keys: Keys,
) -> Result<reqwest::Client, SinkError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(4);
    if let Some(path) = ca_file {
        b = b.tls_certs_merge(CaBundle::load(keys.ca_file, path)?.reqwest()?);
    }
    b.build().map_err(|e| SinkError::Client {
        key: keys.section,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_joined_to_the_configured_url() {
        let base = base_url("http://127.0.0.1:8086", V1).unwrap();
        assert_eq!(
            join(&base, "ping", V1).unwrap().as_str(),
            "http://127.0.0.1:8086/ping"
        );
        let base = base_url("https://proxy:443/influx", V2).unwrap();
        assert_eq!(
            join(&base, "api/v2/write", V2).unwrap().as_str(),
            "https://proxy/influx/api/v2/write"
        );
    }

    #[test]
    fn a_bad_url_or_ca_file_names_its_key() {
        let e = base_url("influx:8086", V2).unwrap_err();
        assert_eq!(e.key(), "sinks.influxdb_v2.url");
        let e = base_url("not a url", V1).unwrap_err();
        assert_eq!(e.key(), "sinks.influxdb.url");
        let e = client(
            std::time::Duration::from_secs(1),
            Some(std::path::Path::new("/nonexistent/not-a-cert.pem")),
            V2,
        )
        .unwrap_err();
        assert_eq!(e.key(), "sinks.influxdb_v2.ca_file");
        assert!(e.to_string().contains("not-a-cert.pem"), "{e}");
    }
}
