//! `[sinks]`: the stores outputs are written to (InfluxDB 1.x, the InfluxDB 2.x write API, Elasticsearch or
//! OpenSearch). Each store's options are declared once here; validation resolves secrets and authentication
//! and checks URLs when the configuration is loaded (or `config check`ed), not first when the worker starts.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::ConfigError;
use super::invalid;
use super::secret::Secret;

/// The stores outputs are written to (at least one): points to every configured InfluxDB sink, documents to
/// Elasticsearch.
///
/// A store whose certificate is not trusted is treated like a store that is down: writes are retried,
/// consumption pauses, nothing is committed or lost (`millrace_sink_up` is 0). A `ca_file` that cannot be
/// read or holds no certificate stops the worker at start with an error naming the sink and the file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinksSection {
    /// InfluxDB 1.x `/write`.
    influxdb: Option<InfluxV1Section>,
    /// The InfluxDB 2.x write API `/api/v2/write` (InfluxDB 2/3, VictoriaMetrics, ...).
    influxdb_v2: Option<InfluxV2Section>,
    /// Elasticsearch 7/8/9 or OpenSearch `_bulk`.
    elasticsearch: Option<ElasticsearchSection>,
}

fn yes() -> bool {
    true
}

fn request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// InfluxDB 1.x `/write`.
///
/// A point without a timestamp gets the record's millisecond plus nanoseconds unique per partition, offset and
/// point (binding option `point_timestamps`), so that a burst never merges and a redelivered record overwrites
/// its own points.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfluxV1Section {
    /// Base URL, e.g. `http://influxdb:8086` (`http` or `https`).
    url: String,
    /// Target database (must exist).
    database: String,
    /// Retention policy written to.
    #[schemars(extend("x-default" = "server default"))]
    retention_policy: Option<String>,
    /// User name (basic credentials).
    username: Option<String>,
    /// Password of `username`.
    password: Option<Secret>,
    /// A file holding the password.
    password_file: Option<PathBuf>,
    /// Compress request bodies.
    #[serde(default = "yes")]
    gzip: bool,
    /// Timeout of each request.
    #[serde(default = "request_timeout", with = "crate::units::duration")]
    #[schemars(schema_with = "crate::units::duration::schema")]
    timeout: Duration,
    /// PEM CA certificate(s) trusted besides the system's, for an `https://` URL signed by a private CA.
    ca_file: Option<PathBuf>,
}

/// The InfluxDB 2.x write API `/api/v2/write` (InfluxDB 2/3, VictoriaMetrics, ...).
///
/// Every point goes to every configured InfluxDB sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfluxV2Section {
    /// Base URL, e.g. `http://victoriametrics:8428` (`http` or `https`).
    url: String,
    /// Organization written to.
    org: String,
    /// Bucket written to.
    bucket: String,
    /// API token (`Authorization: Token ...`).
    token: Option<Secret>,
    /// A file holding the token.
    token_file: Option<PathBuf>,
    /// Compress request bodies.
    #[serde(default = "yes")]
    gzip: bool,
    /// Timeout of each request.
    #[serde(default = "request_timeout", with = "crate::units::duration")]
    #[schemars(schema_with = "crate::units::duration::schema")]
    timeout: Duration,
    /// PEM CA certificate(s) trusted besides the system's, for an `https://` URL signed by a private CA.
    ca_file: Option<PathBuf>,
}

/// Elasticsearch 7/8/9 or OpenSearch `_bulk`.
///
/// Documents are indexed with the plugin's id, or `<topic>-<topic id>-<partition>-<offset>-<output number>`
/// (`<topic>-<partition>-<offset>-<timestamp ms>-<output number>` where the broker reports no topic id): a
/// redelivered record overwrites its documents instead of duplicating them, and a topic deleted and created
/// again (offsets from 0) does not overwrite the old topic's documents.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSection {
    /// One or more node URLs (`http` or `https`), used round robin.
    urls: Vec<String>,
    /// User name (basic auth).
    username: Option<String>,
    /// Password of `username`.
    password: Option<Secret>,
    /// A file holding the password.
    password_file: Option<PathBuf>,
    /// An encoded API key (instead of basic auth).
    api_key: Option<Secret>,
    /// A file holding the API key.
    api_key_file: Option<PathBuf>,
    /// Compress request bodies.
    #[serde(default)]
    gzip: bool,
    /// Timeout of each request.
    #[serde(default = "request_timeout", with = "crate::units::duration")]
    #[schemars(schema_with = "crate::units::duration::schema")]
    timeout: Duration,
    /// PEM CA certificate trusted besides the system's (Elasticsearch 8 generates its own CA).
    ca_file: Option<PathBuf>,
    /// Index names written with `create` instead of `index`, as data streams require (globs with `*`). The
    /// defaults are Elasticsearch's built-in data stream patterns. A `create` that finds its document there
    /// already (a redelivered record) counts as written; empty: `index` for every document.
    #[serde(default = "default_data_streams")]
    data_streams: Vec<String>,
}

fn default_data_streams() -> Vec<String> {
    ["logs-*-*", "metrics-*-*", "traces-*-*", "synthetics-*-*"]
        .map(String::from)
        .to_vec()
}

/// A validated InfluxDB 1.x sink.
#[derive(Debug, Clone)]
pub struct InfluxV1Config {
    /// Base URL without a trailing `/`.
    pub url: String,
    /// PEM CA certificates trusted (besides the system's) for an `https://` URL.
    pub ca_file: Option<PathBuf>,
    pub database: String,
    pub retention_policy: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub gzip: bool,
    pub timeout: Duration,
}

/// A validated InfluxDB 2.x write API sink.
#[derive(Debug, Clone)]
pub struct InfluxV2Config {
    /// Base URL without a trailing `/`.
    pub url: String,
    /// PEM CA certificates trusted (besides the system's) for an `https://` URL.
    pub ca_file: Option<PathBuf>,
    pub org: String,
    pub bucket: String,
    pub token: Option<Secret>,
    pub gzip: bool,
    pub timeout: Duration,
}

/// How the worker authenticates to Elasticsearch.
#[derive(Debug, Clone)]
pub enum EsAuth {
    None,
    Basic { username: String, password: Secret },
    ApiKey(Secret),
}

/// A validated Elasticsearch sink.
#[derive(Debug, Clone)]
pub struct ElasticsearchConfig {
    pub urls: Vec<String>,
    /// PEM CA certificate trusted (besides the system's) for `https://` URLs.
    pub ca_file: Option<PathBuf>,
    pub auth: EsAuth,
    pub gzip: bool,
    pub timeout: Duration,
    /// Index globs written with `create` (data streams).
    pub data_streams: Vec<String>,
}

/// The validated sinks: at least one is configured.
#[derive(Debug, Clone)]
pub(super) struct Sinks {
    pub(super) influxdb: Option<InfluxV1Config>,
    pub(super) influxdb_v2: Option<InfluxV2Config>,
    pub(super) elasticsearch: Option<ElasticsearchConfig>,
}

/// A store URL must parse and speak HTTP.
fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let shown = crate::redact::userinfo(url);
    let url = shown.as_str();
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(key, format!("`{url}`: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(key, format!("`{url}`: give an http:// or https:// URL")));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(key, format!("`{url}`: no host")));
    }
    Ok(())
}

impl SinksSection {
    /// Checks every configured store; errors name `sinks.*` keys.
    pub(super) fn validate(self) -> Result<Sinks, ConfigError> {
        let sinks = Sinks {
            influxdb: self.influxdb.map(InfluxV1Section::validate).transpose()?,
            influxdb_v2: self.influxdb_v2.map(InfluxV2Section::validate).transpose()?,
            elasticsearch: self
                .elasticsearch
                .map(ElasticsearchSection::validate)
                .transpose()?,
        };
        if sinks.influxdb.is_none() && sinks.influxdb_v2.is_none() && sinks.elasticsearch.is_none() {
            return Err(invalid(
                "sinks",
                "configure at least one of influxdb, influxdb_v2, elasticsearch",
            ));
        }
        Ok(sinks)
    }
}

impl InfluxV1Section {
    fn validate(self) -> Result<InfluxV1Config, ConfigError> {
        check_url("sinks.influxdb.url", &self.url)?;
        Ok(InfluxV1Config {
            url: self.url.trim_end_matches('/').to_string(),
            ca_file: self.ca_file,
            database: self.database,
            retention_policy: self.retention_policy,
            password: Secret::inline_or_file("sinks.influxdb.password", self.password, self.password_file)?,
            username: self.username,
            gzip: self.gzip,
            timeout: self.timeout,
        })
    }
}

impl InfluxV2Section {
    fn validate(self) -> Result<InfluxV2Config, ConfigError> {
        check_url("sinks.influxdb_v2.url", &self.url)?;
        Ok(InfluxV2Config {
            url: self.url.trim_end_matches('/').to_string(),
            ca_file: self.ca_file,
            org: self.org,
            bucket: self.bucket,
            token: Secret::inline_or_file("sinks.influxdb_v2.token", self.token, self.token_file)?,
            gzip: self.gzip,
            timeout: self.timeout,
        })
    }
}

impl ElasticsearchSection {
    fn validate(self) -> Result<ElasticsearchConfig, ConfigError> {
        if self.urls.is_empty() {
            return Err(invalid("sinks.elasticsearch.urls", "at least one URL"));
        }
        for (i, url) in self.urls.iter().enumerate() {
            check_url(&format!("sinks.elasticsearch.urls[{i}]"), url)?;
        }
        let password =
            Secret::inline_or_file("sinks.elasticsearch.password", self.password, self.password_file)?;
        let api_key = Secret::inline_or_file("sinks.elasticsearch.api_key", self.api_key, self.api_key_file)?;
        let auth = match (self.username, password, api_key) {
            (Some(username), Some(password), None) => EsAuth::Basic { username, password },
            (None, None, Some(k)) => EsAuth::ApiKey(k),
            (None, None, None) => EsAuth::None,
            _ => {
                return Err(invalid(
                    "sinks.elasticsearch",
                    "give username and password, or api_key, or neither",
                ));
            }
        };
        Ok(ElasticsearchConfig {
            urls: self.urls,
            ca_file: self.ca_file,
            auth,
            gzip: self.gzip,
            timeout: self.timeout,
            data_streams: self.data_streams,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_must_be_http() {
        assert!(check_url("k", "http://127.0.0.1:8086").is_ok());
        assert!(check_url("k", "https://es.example:9200/").is_ok());
        for bad in ["127.0.0.1:8086", "influxdb:8086", "ftp://x", "http//x", ""] {
            let err = check_url("sinks.influxdb.url", bad).unwrap_err();
            assert!(
                matches!(&err, ConfigError { key, .. } if key == "sinks.influxdb.url"),
                "{bad}: {err}"
            );
        }
    }
}
