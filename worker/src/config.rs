//! The worker's configuration: a TOML or YAML file plus `MILLRACE__SECTION__KEY` environment overrides
//! (the `config` crate), deserialized strictly (an unknown key is an error naming it) and validated once into
//! typed settings. Secrets may come from files, as Kubernetes mounts them. Every option is documented in
//! `docs/configuration.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::WorkerError;
use crate::units::{parse_duration, parse_size};

// ------------------------------------------------------------------------------------------ file format

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    kafka: RawKafka,
    #[serde(default)]
    bindings: Vec<RawBinding>,
    /// Bindings in a file of their own, watched and applied live.
    bindings_file: Option<PathBuf>,
    #[serde(default)]
    reload: RawReload,
    #[serde(default)]
    sinks: RawSinks,
    #[serde(default)]
    batching: RawBatching,
    #[serde(default)]
    dead_letter: RawDeadLetter,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    registry: RawRegistry,
    #[serde(default)]
    pipeline: RawPipeline,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: String,
    #[serde(default = "default_group")]
    group_id: String,
    #[serde(default = "default_session_timeout")]
    session_timeout: String,
    #[serde(default = "default_offset_reset")]
    auto_offset_reset: String,
    #[serde(default = "default_stats_interval")]
    statistics_interval: String,
    #[serde(default)]
    sasl: Option<RawSasl>,
    #[serde(default)]
    tls: Option<RawTls>,
    /// librdkafka properties passed through (nested keys or `_` are joined with `.`).
    #[serde(default)]
    client: BTreeMap<String, serde_json::Value>,
}

fn default_group() -> String {
    "millrace".into()
}
fn default_session_timeout() -> String {
    "10s".into()
}
fn default_offset_reset() -> String {
    "earliest".into()
}
fn default_stats_interval() -> String {
    "5s".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSasl {
    mechanism: String,
    username: String,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default = "yes")]
    verify_hostname: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReload {
    #[serde(default = "default_reload_interval")]
    interval: String,
}

impl Default for RawReload {
    fn default() -> Self {
        Self {
            interval: default_reload_interval(),
        }
    }
}

fn default_reload_interval() -> String {
    "2s".into()
}

/// A bindings file: `[[bindings]]` entries and nothing else.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBindingsFile {
    #[serde(default)]
    bindings: Vec<RawBinding>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinding {
    name: Option<String>,
    topic: Option<String>,
    topic_regex: Option<String>,
    plugin: String,
    #[serde(default)]
    allowed_indices: Vec<String>,
    #[serde(default)]
    allowed_measurements: Vec<String>,
    #[serde(default)]
    limits: RawLimits,
    /// Sample record values that must produce outputs without errors before a new plugin version is applied.
    #[serde(default)]
    smoke: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: Option<u64>,
    memory: Option<String>,
    timeout: Option<String>,
    max_outputs: Option<u32>,
    max_output_bytes: Option<String>,
    max_log_lines: Option<u32>,
    grant_clock: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSinks {
    influxdb: Option<RawInfluxV1>,
    influxdb_v2: Option<RawInfluxV2>,
    elasticsearch: Option<RawElasticsearch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInfluxV1 {
    url: String,
    database: String,
    retention_policy: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default = "yes")]
    gzip: bool,
    #[serde(default = "default_request_timeout")]
    timeout: String,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInfluxV2 {
    url: String,
    org: String,
    bucket: String,
    token: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default = "yes")]
    gzip: bool,
    #[serde(default = "default_request_timeout")]
    timeout: String,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawElasticsearch {
    urls: Vec<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    #[serde(default)]
    gzip: bool,
    #[serde(default = "default_request_timeout")]
    timeout: String,
    ca_file: Option<PathBuf>,
}

fn default_request_timeout() -> String {
    "30s".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatching {
    #[serde(default = "default_max_records")]
    max_records: usize,
    #[serde(default = "default_max_bytes")]
    max_bytes: String,
    #[serde(default = "default_linger")]
    linger: String,
    #[serde(default = "default_backoff_initial")]
    retry_initial_backoff: String,
    #[serde(default = "default_backoff_max")]
    retry_max_backoff: String,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
}

impl Default for RawBatching {
    fn default() -> Self {
        Self {
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            linger: default_linger(),
            retry_initial_backoff: default_backoff_initial(),
            retry_max_backoff: default_backoff_max(),
            concurrency: default_concurrency(),
        }
    }
}

fn default_max_records() -> usize {
    5000
}
fn default_max_bytes() -> String {
    "5MiB".into()
}
fn default_linger() -> String {
    "200ms".into()
}
fn default_backoff_initial() -> String {
    "100ms".into()
}
fn default_concurrency() -> usize {
    4
}
fn default_backoff_max() -> String {
    "30s".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeadLetter {
    #[serde(default = "default_dlq")]
    topic: String,
}

impl Default for RawDeadLetter {
    fn default() -> Self {
        Self { topic: default_dlq() }
    }
}

fn default_dlq() -> String {
    "millrace-dead-letter".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default = "default_metrics_addr")]
    address: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            address: default_metrics_addr(),
        }
    }
}

fn default_metrics_addr() -> String {
    "0.0.0.0:9187".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    #[serde(default = "default_cache_dir")]
    cache_dir: PathBuf,
    #[serde(default = "default_cache_max")]
    cache_max_bytes: String,
    #[serde(default = "default_pull_policy")]
    pull_policy: String,
    #[serde(default)]
    insecure: Vec<String>,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    docker_config: Option<PathBuf>,
    #[serde(default = "default_request_timeout")]
    timeout: String,
}

impl Default for RawRegistry {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            cache_max_bytes: default_cache_max(),
            pull_policy: default_pull_policy(),
            insecure: Vec::new(),
            ca_file: None,
            username: None,
            password: None,
            password_file: None,
            docker_config: None,
            timeout: default_request_timeout(),
        }
    }
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from("millrace-cache")
}
fn default_cache_max() -> String {
    "1GiB".into()
}
fn default_pull_policy() -> String {
    "if-not-present".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    lanes: Option<usize>,
    max_in_flight_per_partition: Option<usize>,
    drain_timeout: Option<String>,
    max_instances: Option<u32>,
}

// ---------------------------------------------------------------------------------------- typed config

/// A secret value: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    pub session_timeout: Duration,
    pub auto_offset_reset: String,
    pub statistics_interval: Duration,
    /// librdkafka properties derived from sasl/tls, then the passthrough ones (which win).
    pub properties: BTreeMap<String, String>,
    /// Property names whose values are secrets.
    pub secret_properties: Vec<String>,
}

/// What a binding's topics are.
#[derive(Debug, Clone)]
pub enum TopicMatch {
    Name(String),
    Regex(regex::Regex),
}

impl TopicMatch {
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Name(n) => n == topic,
            Self::Regex(r) => r.is_match(topic),
        }
    }

    /// The subscription pattern librdkafka understands (regexes start with `^`).
    pub fn subscription(&self) -> String {
        match self {
            Self::Name(n) => n.clone(),
            Self::Regex(r) => r.as_str().to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BindingConfig {
    pub name: String,
    pub topics: TopicMatch,
    pub plugin: String,
    /// Index name prefixes documents may go to; `*` allows any.
    pub allowed_indices: Vec<String>,
    /// Measurement name prefixes points may go to; `*` allows any.
    pub allowed_measurements: Vec<String>,
    pub limits: millrace_runtime::Limits,
    /// Sample record values a new plugin version must process into outputs, without errors.
    pub smoke: Vec<String>,
}

fn allowed(prefixes: &[String], name: &str) -> bool {
    prefixes.iter().any(|p| p == "*" || name.starts_with(p.as_str()))
}

impl BindingConfig {
    pub fn allows_index(&self, index: &str) -> bool {
        allowed(&self.allowed_indices, index)
    }

    pub fn allows_measurement(&self, measurement: &str) -> bool {
        allowed(&self.allowed_measurements, measurement)
    }
}

#[derive(Debug, Clone)]
pub struct InfluxV1Config {
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

#[derive(Debug, Clone)]
pub struct InfluxV2Config {
    pub url: String,
    /// PEM CA certificates trusted (besides the system's) for an `https://` URL.
    pub ca_file: Option<PathBuf>,
    pub org: String,
    pub bucket: String,
    pub token: Option<Secret>,
    pub gzip: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum EsAuth {
    None,
    Basic { username: String, password: Secret },
    ApiKey(Secret),
}

#[derive(Debug, Clone)]
pub struct ElasticsearchConfig {
    pub urls: Vec<String>,
    /// PEM CA certificate trusted (besides the system's) for `https://` URLs.
    pub ca_file: Option<PathBuf>,
    pub auth: EsAuth,
    pub gzip: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct BatchingConfig {
    pub max_records: usize,
    pub max_bytes: usize,
    pub linger: Duration,
    pub retry_initial_backoff: Duration,
    pub retry_max_backoff: Duration,
    /// Batches in flight per sink.
    pub concurrency: usize,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub lanes: usize,
    pub max_in_flight_per_partition: usize,
    pub drain_timeout: Duration,
    pub max_instances: u32,
}

/// The validated configuration of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub kafka: KafkaConfig,
    pub bindings: Vec<BindingConfig>,
    pub influxdb: Option<InfluxV1Config>,
    pub influxdb_v2: Option<InfluxV2Config>,
    pub elasticsearch: Option<ElasticsearchConfig>,
    pub batching: BatchingConfig,
    pub dead_letter_topic: String,
    pub metrics_address: std::net::SocketAddr,
    pub registry: millrace_plugin_registry::RegistryConfig,
    pub pipeline: PipelineConfig,
    /// Where bindings are watched, when they live in a file of their own.
    pub bindings_file: Option<PathBuf>,
    /// How often the bindings file is checked and tags are re-resolved.
    pub reload_interval: Duration,
}

// ------------------------------------------------------------------------------------------ loading

fn invalid(key: &str, message: impl std::fmt::Display) -> WorkerError {
    WorkerError::Config {
        key: key.to_string(),
        message: message.to_string(),
    }
}

fn duration(key: &str, v: &str) -> Result<Duration, WorkerError> {
    parse_duration(v).map_err(|e| invalid(key, e))
}

fn size(key: &str, v: &str) -> Result<u64, WorkerError> {
    parse_size(v).map_err(|e| invalid(key, e))
}

/// A secret given inline or in a file (trailing newline trimmed); not both.
fn secret(key: &str, inline: Option<String>, file: Option<PathBuf>) -> Result<Option<Secret>, WorkerError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(key, format!("give `{key}` or `{key}_file`, not both"))),
        (Some(v), None) => Ok(Some(Secret(v))),
        (None, Some(path)) => {
            let v = std::fs::read_to_string(&path)
                .map_err(|e| invalid(&format!("{key}_file"), format!("reading {}: {e}", path.display())))?;
            Ok(Some(Secret(v.trim_end_matches(['\n', '\r']).to_string())))
        }
        (None, None) => Ok(None),
    }
}

/// Flattens passthrough librdkafka properties: nested tables join with `.`, `_` becomes `.`.
fn flatten(
    prefix: &str,
    v: &serde_json::Value,
    out: &mut BTreeMap<String, String>,
) -> Result<(), WorkerError> {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let k = k.replace('_', ".");
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        serde_json::Value::Bool(b) => {
            out.insert(prefix.to_string(), b.to_string());
        }
        serde_json::Value::Number(n) => {
            out.insert(prefix.to_string(), n.to_string());
        }
        other => {
            return Err(invalid(
                &format!("kafka.client.{prefix}"),
                format!("unsupported value {other}"),
            ));
        }
    }
    Ok(())
}

/// Validates raw bindings; `what` prefixes the keys in errors (`bindings`, or the file's name).
fn validate_bindings(raw: Vec<RawBinding>, what: &str) -> Result<Vec<BindingConfig>, WorkerError> {
    let mut bindings = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("{what}[{i}].{field}");
        let topics = match (b.topic, b.topic_regex) {
            (Some(t), None) if !t.is_empty() => TopicMatch::Name(t),
            (None, Some(r)) => {
                let r = if r.starts_with('^') { r } else { format!("^{r}") };
                TopicMatch::Regex(regex::Regex::new(&r).map_err(|e| invalid(&key("topic_regex"), e))?)
            }
            _ => {
                return Err(invalid(
                    &key("topic"),
                    "give exactly one of `topic` and `topic_regex`",
                ));
            }
        };
        millrace_plugin_registry::PluginRef::parse(&b.plugin).map_err(|e| invalid(&key("plugin"), e))?;
        let d = millrace_runtime::Limits::default();
        let l = b.limits;
        let limits = millrace_runtime::Limits {
            fuel_per_record: l.fuel.unwrap_or(d.fuel_per_record),
            max_memory_bytes: match l.memory {
                Some(m) => size(&key("limits.memory"), &m)?,
                None => d.max_memory_bytes,
            },
            timeout: match l.timeout {
                Some(t) => duration(&key("limits.timeout"), &t)?,
                None => d.timeout,
            },
            max_outputs_per_record: l.max_outputs.unwrap_or(d.max_outputs_per_record),
            max_output_bytes_per_record: match l.max_output_bytes {
                Some(m) => size(&key("limits.max_output_bytes"), &m)?,
                None => d.max_output_bytes_per_record,
            },
            max_log_lines_per_record: l.max_log_lines.unwrap_or(d.max_log_lines_per_record),
            grant_clock: l.grant_clock.unwrap_or(false),
            ..d
        };
        limits
            .validate(&millrace_runtime::EngineConfig::default())
            .map_err(|e| invalid(&key("limits"), e))?;
        let name = b.name.unwrap_or_else(|| topics.subscription());
        bindings.push(BindingConfig {
            name,
            topics,
            plugin: b.plugin,
            allowed_indices: b.allowed_indices,
            allowed_measurements: b.allowed_measurements,
            limits,
            smoke: b.smoke,
        });
    }
    let mut names = std::collections::HashSet::new();
    for b in &bindings {
        if !names.insert(b.name.clone()) {
            return Err(invalid(what, format!("two bindings are named `{}`", b.name)));
        }
    }
    Ok(bindings)
}

/// Reads and validates a bindings file (TOML, or YAML by extension): `[[bindings]]` entries.
pub fn load_bindings_file(path: &Path) -> Result<Vec<BindingConfig>, WorkerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid("bindings_file", format!("reading {}: {e}", path.display())))?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => config::FileFormat::Yaml,
        _ => config::FileFormat::Toml,
    };
    parse_bindings(&text, format, &path.display().to_string())
}

/// Parses and validates bindings given as text.
pub fn parse_bindings(
    text: &str,
    format: config::FileFormat,
    what: &str,
) -> Result<Vec<BindingConfig>, WorkerError> {
    let source = config::Config::builder()
        .add_source(config::File::from_str(text, format))
        .build()
        .map_err(|e| invalid(what, e))?;
    let raw: RawBindingsFile = source.try_deserialize().map_err(|e| invalid(what, e))?;
    validate_bindings(raw.bindings, what)
}

impl WorkerConfig {
    /// Reads `path` (TOML or YAML by extension) with `MILLRACE__SECTION__KEY` overrides and validates it.
    pub fn load(path: &Path) -> Result<Self, WorkerError> {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => config::FileFormat::Yaml,
            _ => config::FileFormat::Toml,
        };
        let source = config::Config::builder()
            .add_source(config::File::from(path).format(format))
            .add_source(
                config::Environment::with_prefix("MILLRACE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| invalid("", format!("reading {}: {e}", path.display())))?;
        let raw: RawConfig = source.try_deserialize().map_err(|e| invalid("", e))?;
        Self::validate(raw)
    }

    /// Parses a TOML document (tests, and `config check` of a string).
    pub fn from_toml(text: &str) -> Result<Self, WorkerError> {
        let source = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| invalid("", e))?;
        let raw: RawConfig = source.try_deserialize().map_err(|e| invalid("", e))?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Self, WorkerError> {
        let k = raw.kafka;
        if k.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "empty"));
        }
        if !matches!(k.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(invalid("kafka.auto_offset_reset", "earliest or latest"));
        }
        let mut properties = BTreeMap::new();
        let mut secret_properties = Vec::new();
        if let Some(s) = k.sasl {
            let password = secret("kafka.sasl.password", s.password, s.password_file)?
                .ok_or_else(|| invalid("kafka.sasl.password", "required with sasl"))?;
            properties.insert("sasl.mechanisms".into(), s.mechanism);
            properties.insert("sasl.username".into(), s.username);
            properties.insert("sasl.password".into(), password.0);
            secret_properties.push("sasl.password".into());
            properties.insert(
                "security.protocol".into(),
                if k.tls.is_some() {
                    "SASL_SSL"
                } else {
                    "SASL_PLAINTEXT"
                }
                .into(),
            );
        }
        if let Some(t) = k.tls {
            properties
                .entry("security.protocol".into())
                .or_insert_with(|| "SSL".into());
            if let Some(ca) = t.ca_file {
                properties.insert("ssl.ca.location".into(), ca.display().to_string());
            }
            if let Some(c) = t.cert_file {
                properties.insert("ssl.certificate.location".into(), c.display().to_string());
            }
            if let Some(key) = t.key_file {
                properties.insert("ssl.key.location".into(), key.display().to_string());
            }
            if !t.verify_hostname {
                properties.insert("ssl.endpoint.identification.algorithm".into(), "none".into());
            }
        }
        for (key, v) in &k.client {
            let mut flat = BTreeMap::new();
            flatten(&key.replace('_', "."), v, &mut flat)?;
            properties.extend(flat);
        }
        for p in properties.keys() {
            if p.contains("password") || p.contains("secret") || p.ends_with(".key") || p.contains("token") {
                secret_properties.push(p.clone());
            }
        }
        let kafka = KafkaConfig {
            brokers: k.brokers,
            group_id: k.group_id,
            session_timeout: duration("kafka.session_timeout", &k.session_timeout)?,
            auto_offset_reset: k.auto_offset_reset,
            statistics_interval: duration("kafka.statistics_interval", &k.statistics_interval)?,
            properties,
            secret_properties,
        };

        let bindings_file = raw.bindings_file;
        let bindings = match &bindings_file {
            Some(path) => {
                if !raw.bindings.is_empty() {
                    return Err(invalid(
                        "bindings",
                        "give bindings inline or in `bindings_file`, not both",
                    ));
                }
                load_bindings_file(path)?
            }
            None => validate_bindings(raw.bindings, "bindings")?,
        };
        let reload_interval = duration("reload.interval", &raw.reload.interval)?;
        if bindings.is_empty() && bindings_file.is_none() {
            return Err(invalid("bindings", "at least one binding is needed"));
        }

        let s = raw.sinks;
        let influxdb = match s.influxdb {
            Some(i) => Some(InfluxV1Config {
                url: i.url.trim_end_matches('/').to_string(),
                ca_file: i.ca_file,
                database: i.database,
                retention_policy: i.retention_policy,
                password: secret("sinks.influxdb.password", i.password, i.password_file)?,
                username: i.username,
                gzip: i.gzip,
                timeout: duration("sinks.influxdb.timeout", &i.timeout)?,
            }),
            None => None,
        };
        let influxdb_v2 = match s.influxdb_v2 {
            Some(i) => Some(InfluxV2Config {
                url: i.url.trim_end_matches('/').to_string(),
                ca_file: i.ca_file,
                org: i.org,
                bucket: i.bucket,
                token: secret("sinks.influxdb_v2.token", i.token, i.token_file)?,
                gzip: i.gzip,
                timeout: duration("sinks.influxdb_v2.timeout", &i.timeout)?,
            }),
            None => None,
        };
        let elasticsearch = match s.elasticsearch {
            Some(e) => {
                if e.urls.is_empty() {
                    return Err(invalid("sinks.elasticsearch.urls", "at least one URL"));
                }
                let password = secret("sinks.elasticsearch.password", e.password, e.password_file)?;
                let api_key = secret("sinks.elasticsearch.api_key", e.api_key, e.api_key_file)?;
                let auth = match (e.username, password, api_key) {
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
                Some(ElasticsearchConfig {
                    urls: e.urls,
                    ca_file: e.ca_file,
                    auth,
                    gzip: e.gzip,
                    timeout: duration("sinks.elasticsearch.timeout", &e.timeout)?,
                })
            }
            None => None,
        };
        if influxdb.is_none() && influxdb_v2.is_none() && elasticsearch.is_none() {
            return Err(invalid(
                "sinks",
                "configure at least one of influxdb, influxdb_v2, elasticsearch",
            ));
        }

        let b = raw.batching;
        let batching = BatchingConfig {
            max_records: b.max_records.max(1),
            max_bytes: size("batching.max_bytes", &b.max_bytes)? as usize,
            linger: duration("batching.linger", &b.linger)?,
            retry_initial_backoff: duration("batching.retry_initial_backoff", &b.retry_initial_backoff)?,
            retry_max_backoff: duration("batching.retry_max_backoff", &b.retry_max_backoff)?,
            concurrency: b.concurrency.clamp(1, 64),
        };

        let metrics_address = raw
            .metrics
            .address
            .parse()
            .map_err(|e| invalid("metrics.address", format!("`{}`: {e}", raw.metrics.address)))?;

        let r = raw.registry;
        let mut registry = millrace_plugin_registry::RegistryConfig::new(r.cache_dir);
        registry.cache_max_bytes = size("registry.cache_max_bytes", &r.cache_max_bytes)?;
        registry.pull_policy = match r.pull_policy.as_str() {
            "if-not-present" | "IfNotPresent" => millrace_plugin_registry::PullPolicy::IfNotPresent,
            "always" | "Always" => millrace_plugin_registry::PullPolicy::Always,
            other => millrace_plugin_registry::PullPolicy::Interval(duration("registry.pull_policy", other)?),
        };
        registry.insecure_registries = r.insecure;
        registry.ca_file = r.ca_file;
        registry.timeout = duration("registry.timeout", &r.timeout)?;
        let password = secret("registry.password", r.password, r.password_file)?;
        registry.credentials = match (r.username, password, r.docker_config) {
            (Some(username), Some(password), None) => millrace_plugin_registry::Credentials::Basic {
                username,
                password: password.0,
            },
            (None, None, Some(path)) => millrace_plugin_registry::Credentials::DockerConfig { path },
            (None, None, None) => millrace_plugin_registry::Credentials::Anonymous,
            _ => {
                return Err(invalid(
                    "registry",
                    "give username and password, or docker_config, or neither",
                ));
            }
        };

        let p = raw.pipeline;
        let lanes = p
            .lanes
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let pipeline = PipelineConfig {
            lanes: lanes.max(1),
            max_in_flight_per_partition: p.max_in_flight_per_partition.unwrap_or(10_000).max(1),
            drain_timeout: match p.drain_timeout {
                Some(d) => duration("pipeline.drain_timeout", &d)?,
                None => Duration::from_secs(30),
            },
            max_instances: p.max_instances.unwrap_or(256),
        };
        if raw.dead_letter.topic.is_empty() {
            return Err(invalid("dead_letter.topic", "empty"));
        }
        if let Some(b) = bindings.iter().find(|b| b.topics.matches(&raw.dead_letter.topic)) {
            return Err(invalid(
                "dead_letter.topic",
                format!(
                    "`{}` is consumed by binding `{}`: dead letters would be processed again, forever",
                    raw.dead_letter.topic, b.name
                ),
            ));
        }

        Ok(Self {
            kafka,
            bindings,
            influxdb,
            influxdb_v2,
            elasticsearch,
            batching,
            dead_letter_topic: raw.dead_letter.topic,
            metrics_address,
            registry,
            pipeline,
            bindings_file,
            reload_interval,
        })
    }

    /// The resolved configuration with every secret replaced by `<redacted>`, for `millrace config check`.
    pub fn redacted(&self) -> String {
        let mut c = self.clone();
        for p in &self.kafka.secret_properties {
            if let Some(v) = c.kafka.properties.get_mut(p) {
                *v = "<redacted>".into();
            }
        }
        if !matches!(
            c.registry.credentials,
            millrace_plugin_registry::Credentials::Anonymous
        ) {
            // Credentials' Debug already redacts passwords.
        }
        format!("{c:#?}")
    }

    /// The binding a topic belongs to: the first that matches.
    pub fn binding_for(&self, topic: &str) -> Option<&BindingConfig> {
        self.bindings.iter().find(|b| b.topics.matches(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [kafka]
        brokers = "127.0.0.1:19092"
        [[bindings]]
        topic = "client-acme"
        plugin = "127.0.0.1:15000/acme/router:v1"
        allowed_measurements = ["env_"]
        [sinks.influxdb]
        url = "http://127.0.0.1:18086/"
        database = "metrics"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = WorkerConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(c.kafka.group_id, "millrace");
        assert_eq!(c.bindings[0].name, "client-acme");
        assert_eq!(c.influxdb.as_ref().unwrap().url, "http://127.0.0.1:18086");
        assert_eq!(c.batching.max_records, 5000);
        assert_eq!(c.dead_letter_topic, "millrace-dead-letter");
        assert!(c.bindings[0].allows_measurement("env_metrics"));
        assert!(!c.bindings[0].allows_measurement("cpu"));
        assert!(!c.bindings[0].allows_index("anything"));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = WorkerConfig::from_toml(&MINIMAL.replace("[kafka]", "[kafka]\nbrokerz = 1")).unwrap_err();
        assert!(err.to_string().contains("brokerz"), "{err}");
        let err = WorkerConfig::from_toml(&format!("{MINIMAL}\n[batching]\nlinger = \"soon\"")).unwrap_err();
        assert!(err.to_string().contains("batching.linger"), "{err}");
        let bad = MINIMAL.replace("topic = \"client-acme\"", "topic = \"a\"\ntopic_regex = \"b\"");
        assert!(
            WorkerConfig::from_toml(&bad)
                .unwrap_err()
                .to_string()
                .contains("bindings[0].topic")
        );
    }

    #[test]
    fn secrets_come_from_files_and_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let text = format!(
            "{MINIMAL}\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword_file = \"{}\"\n[kafka.client]\nfetch.min.bytes = 1\nsocket_keepalive_enable = true\n",
            pw.display()
        );
        // [kafka.sasl] after other tables is still the kafka section in TOML.
        let c = WorkerConfig::from_toml(&text).unwrap();
        assert_eq!(c.kafka.properties["sasl.password"], "s3cret");
        assert_eq!(c.kafka.properties["security.protocol"], "SASL_PLAINTEXT");
        assert_eq!(c.kafka.properties["fetch.min.bytes"], "1");
        assert_eq!(c.kafka.properties["socket.keepalive.enable"], "true");
        let shown = c.redacted();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn the_dead_letter_topic_cannot_be_a_bound_topic() {
        let text = format!("{MINIMAL}\n[dead_letter]\ntopic = \"client-acme\"\n");
        let err = WorkerConfig::from_toml(&text).unwrap_err().to_string();
        assert!(
            err.contains("dead_letter.topic") && err.contains("forever"),
            "{err}"
        );
    }

    #[test]
    fn regex_bindings_match_new_topics() {
        let c = WorkerConfig::from_toml(
            &MINIMAL.replace("topic = \"client-acme\"", "topic_regex = \"client-.*\""),
        )
        .unwrap();
        assert_eq!(c.bindings[0].topics.subscription(), "^client-.*");
        assert!(c.binding_for("client-zeta").is_some());
        assert!(c.binding_for("other").is_none());
    }
}
