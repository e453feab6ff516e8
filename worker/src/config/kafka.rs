//! `[kafka]`: the cluster records come from and dead letters go to. The options are declared here once
//! (with their defaults and documentation); validation turns SASL, TLS and passthrough properties into the
//! flat librdkafka property map the consumer and the dead-letter producer are created from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::ConfigError;
use super::invalid;
use super::secret::Secret;

/// The Kafka cluster: bootstrap servers, consumer group, security, and librdkafka properties.
///
/// The worker always sets: `enable.auto.offset.store=false` (offsets are stored only once a record's outputs
/// were acknowledged), `enable.auto.commit=true` every second (commits what was stored),
/// `partition.assignment.strategy=cooperative-sticky`, `topic.metadata.refresh.interval.ms=10000` (new
/// topics matching a regex binding are picked up within 10 s), `fetch.wait.max.ms=100` (librdkafka's 500 ms
/// default let a broker hold a fetch for half a second at low rates: most of the end-to-end latency), and
/// `fetch.queue.backoff.ms=50` (librdkafka stops fetching for this long once its queue of fetched records is
/// full; its 1,000 ms default left a worker with a backlog idle for part of every second); `[kafka.client]`
/// may override the last four.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap servers, `host:port[,host:port...]`.
    brokers: String,
    /// Consumer group; every worker of a fleet uses the same one.
    #[serde(default = "KafkaSection::default_group_id")]
    group_id: String,
    /// Group session timeout.
    #[serde(
        default = "KafkaSection::default_session_timeout",
        with = "crate::units::duration"
    )]
    #[schemars(schema_with = "crate::units::duration::schema")]
    session_timeout: Duration,
    /// Where a partition without a committed offset starts: `earliest` (nothing missed) or `latest`.
    #[serde(default = "KafkaSection::default_auto_offset_reset")]
    auto_offset_reset: String,
    /// librdkafka statistics interval (the consumer lag metric).
    #[serde(
        default = "KafkaSection::default_statistics_interval",
        with = "crate::units::duration"
    )]
    #[schemars(schema_with = "crate::units::duration::schema")]
    statistics_interval: Duration,
    /// SASL authentication.
    sasl: Option<SaslSection>,
    /// TLS to the brokers.
    tls: Option<TlsSection>,
    /// Any librdkafka property, passed through and overriding the above: nested keys or `_` join with `.`
    /// (`fetch.min.bytes = 1024`, or `MILLRACE__KAFKA__CLIENT__FETCH_MIN_BYTES=1024`). Refused: the
    /// properties the delivery guarantees rest on (`enable.auto.commit`, `enable.auto.offset.store`, `acks`,
    /// `enable.idempotence`) and those a typed option sets (`group.id`, `bootstrap.servers`,
    /// `auto.offset.reset`, `session.timeout.ms`, `statistics.interval.ms`).
    #[serde(default)]
    client: BTreeMap<String, serde_json::Value>,
}

impl KafkaSection {
    fn default_group_id() -> String {
        "millrace".into()
    }
    fn default_session_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_auto_offset_reset() -> String {
        "earliest".into()
    }
    fn default_statistics_interval() -> Duration {
        Duration::from_secs(5)
    }
}

/// SASL authentication of the worker's Kafka user; sets `security.protocol` to `SASL_SSL` with `[kafka.tls]`,
/// else `SASL_PLAINTEXT`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaslSection {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    mechanism: String,
    /// The SASL user name.
    username: String,
    /// The SASL password (required, here or in `password_file`).
    password: Option<Secret>,
    /// A file holding the SASL password.
    password_file: Option<PathBuf>,
}

/// TLS to the brokers: CA, client certificate and key; sets `security.protocol = SSL` (`SASL_SSL` with
/// `[kafka.sasl]`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM CA certificate(s) the brokers' certificates are checked against (`ssl.ca.location`).
    ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (`ssl.certificate.location`).
    cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (`ssl.key.location`).
    key_file: Option<PathBuf>,
    /// Check that a broker's certificate names its host; `false` sets
    /// `ssl.endpoint.identification.algorithm=none`.
    #[serde(default = "TlsSection::yes")]
    verify_hostname: bool,
}

impl TlsSection {
    fn yes() -> bool {
        true
    }
}

/// The validated Kafka settings the consumer and the dead-letter producer are created from.
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

impl KafkaSection {
    /// Checks the section and derives the librdkafka properties; errors name `kafka.*` keys.
    pub(super) fn validate(self) -> Result<KafkaConfig, ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "empty"));
        }
        if !matches!(self.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(invalid("kafka.auto_offset_reset", "earliest or latest"));
        }
        let mut properties = BTreeMap::new();
        let mut secret_properties = Vec::new();
        if let Some(s) = self.sasl {
            let password = Secret::inline_or_file("kafka.sasl.password", s.password, s.password_file)?
                .ok_or_else(|| invalid("kafka.sasl.password", "required with sasl"))?;
            properties.insert("sasl.mechanisms".into(), s.mechanism);
            properties.insert("sasl.username".into(), s.username);
            properties.insert("sasl.password".into(), password.into_inner());
            secret_properties.push("sasl.password".into());
            let protocol = if self.tls.is_some() {
                "SASL_SSL"
            } else {
                "SASL_PLAINTEXT"
            };
            properties.insert("security.protocol".into(), protocol.into());
        }
        if let Some(t) = self.tls {
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
        for (key, v) in &self.client {
            let mut flat = BTreeMap::new();
            flatten(&key.replace('_', "."), v, &mut flat)?;
            if let Some((p, why)) = flat.keys().find_map(|p| RESERVED.iter().find(|(r, _)| r == p)) {
                return Err(invalid(&format!("kafka.client.{p}"), *why));
            }
            properties.extend(flat);
        }
        for p in properties.keys() {
            if crate::redact::is_secret_kafka_property(p) && !secret_properties.contains(p) {
                secret_properties.push(p.clone());
            }
        }
        Ok(KafkaConfig {
            brokers: self.brokers,
            group_id: self.group_id,
            session_timeout: self.session_timeout,
            auto_offset_reset: self.auto_offset_reset,
            statistics_interval: self.statistics_interval,
            properties,
            secret_properties,
        })
    }
}

/// librdkafka properties `kafka.client` may not set: the delivery guarantees rest on them (offsets stored only
/// once a record's outputs are acknowledged, committed by the worker; dead letters acknowledged by every
/// replica, without duplicates or reordering), or a typed option says the same.
const RESERVED: &[(&str, &str)] = &[
    (
        "enable.auto.commit",
        "the worker commits offsets itself, only those of records whose outputs were acknowledged",
    ),
    (
        "auto.commit.enable",
        "the worker commits offsets itself, only those of records whose outputs were acknowledged",
    ),
    (
        "enable.auto.offset.store",
        "the worker stores an offset only once every output of the records before it was acknowledged",
    ),
    (
        "acks",
        "dead letters are acknowledged by every in-sync replica (acks=all)",
    ),
    (
        "request.required.acks",
        "dead letters are acknowledged by every in-sync replica (acks=all)",
    ),
    (
        "enable.idempotence",
        "the dead-letter producer is idempotent: a retried dead letter is written once, in order",
    ),
    ("group.id", "set kafka.group_id"),
    ("bootstrap.servers", "set kafka.brokers"),
    ("metadata.broker.list", "set kafka.brokers"),
    ("auto.offset.reset", "set kafka.auto_offset_reset"),
    ("session.timeout.ms", "set kafka.session_timeout"),
    ("statistics.interval.ms", "set kafka.statistics_interval"),
];

/// Flattens passthrough librdkafka properties: nested tables join with `.`, `_` becomes `.`.
fn flatten(
    prefix: &str,
    v: &serde_json::Value,
    out: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
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
