//! The worker's configuration: a TOML or YAML file plus `MILLRACE__SECTION__KEY` environment overrides
//! (the `config` crate), deserialized strictly (an unknown key is an error naming it) and validated section
//! by section into the typed settings the worker uses. Secrets may come from files, as Kubernetes mounts them.
//!
//! Every option is declared once, in the section modules: its type (durations and sizes are parsed while
//! deserializing), its default and its `///` documentation. `docs/configuration.md` is generated from those
//! declarations (see [`reference_markdown`]), and a test fails when it is stale.

mod bindings;
mod docs;
mod kafka;
mod pipeline;
mod registry;
mod secret;
mod sinks;

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

pub use bindings::{
    BindingConfig, PointTimestamps, TopicMatch, TopicRegex, load_bindings_file, owner, parse_bindings,
};
pub use docs::reference_markdown;
pub use kafka::KafkaConfig;
pub use pipeline::{BatchingConfig, PipelineConfig};
pub use secret::Secret;
pub use sinks::{ElasticsearchConfig, EsAuth, InfluxV1Config, InfluxV2Config};

/// A worker configuration file, as written (TOML or YAML) and documented.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// Where records come from.
    kafka: kafka::KafkaSection,
    /// One or more, here or in `bindings_file`.
    #[serde(default)]
    bindings: Vec<bindings::BindingSection>,
    /// A file holding the `[[bindings]]` (TOML, or YAML by extension) instead of this file. It is watched: a
    /// change (in Kubernetes, a mounted ConfigMap's symlink swap) takes effect without a restart.
    bindings_file: Option<PathBuf>,
    /// Bindings live: how `bindings_file` is followed.
    #[serde(default)]
    reload: bindings::ReloadSection,
    /// Where outputs are written.
    #[serde(default)]
    sinks: sinks::SinksSection,
    /// Requests to the stores.
    #[serde(default)]
    batching: BatchingConfig,
    /// Where records go that cannot be written.
    #[serde(default)]
    dead_letter: pipeline::DeadLetterSection,
    /// The observability endpoint.
    #[serde(default)]
    metrics: MetricsSection,
    /// Where plugins come from.
    #[serde(default)]
    registry: registry::RegistrySection,
    /// Threads and back pressure.
    #[serde(default)]
    pipeline: PipelineConfig,
}

/// Prometheus metrics and health checks over HTTP.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct MetricsSection {
    /// Serves `/metrics`, `/healthz` (alive) and `/readyz` (in the consumer group and every store reachable).
    address: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            address: "0.0.0.0:9187".into(),
        }
    }
}

impl MetricsSection {
    fn validate(self) -> Result<std::net::SocketAddr, ConfigError> {
        self.address
            .parse()
            .map_err(|e| invalid("metrics.address", format!("`{}`: {e}", self.address)))
    }
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
    /// Shortest time between two versions of one binding when only its tag moved.
    pub min_version_interval: Duration,
}

// ------------------------------------------------------------------------------------------ errors

/// An invalid configuration; `key` is the path of the offending option (empty: the whole file). The worker's
/// own error wraps it (`WorkerError::Config`), so this module does not depend on the worker's other parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration{}: {message}", if key.is_empty() { String::new() } else { format!(" `{key}`") })]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn invalid(key: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.to_string(),
    }
}

/// A `config` crate error as a configuration error naming the full key (`batching.linger`,
/// `bindings[0].limits.memory`) when the crate knows it; `whole` names what was read otherwise.
fn config_error(whole: &str, e: config::ConfigError) -> ConfigError {
    let in_origin = |origin: Option<String>| origin.map(|o| format!(" in {o}")).unwrap_or_default();
    match e {
        config::ConfigError::At {
            error,
            origin,
            key: Some(key),
        } => invalid(&dotted(&key), format!("{error}{}", in_origin(origin))),
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            key: Some(key),
        } => invalid(
            &dotted(&key),
            format!(
                "invalid type: {unexpected}, expected {expected}{}",
                in_origin(origin)
            ),
        ),
        config::ConfigError::NotFound(key) => invalid(&dotted(&key), "missing: this option is required"),
        other => invalid(whole, other),
    }
}

/// The `config` crate writes an element's field as `bindings[0]plugin`; the key is `bindings[0].plugin`.
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|n| *n != '.' && *n != '[') {
            out.push('.');
        }
    }
    out
}

// ------------------------------------------------------------------------------------------ loading

impl WorkerConfig {
    /// Reads `path` (TOML or YAML by extension) with `MILLRACE__SECTION__KEY` overrides and validates it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source = config::Config::builder()
            .add_source(config::File::from(path).format(bindings::file_format(path)))
            .add_source(
                config::Environment::with_prefix("MILLRACE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| invalid("", format!("reading {}: {e}", path.display())))?;
        Self::validate(source.try_deserialize().map_err(|e| config_error("", e))?)
    }

    /// Parses a TOML document (tests, and `config check` of a string).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let source = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| invalid("", e))?;
        Self::validate(source.try_deserialize().map_err(|e| config_error("", e))?)
    }

    /// Each section validates itself; what remains here are the rules across sections.
    fn validate(file: ConfigFile) -> Result<Self, ConfigError> {
        let kafka = file.kafka.validate()?;
        let bindings = match &file.bindings_file {
            Some(path) => {
                if !file.bindings.is_empty() {
                    return Err(invalid(
                        "bindings",
                        "give bindings inline or in `bindings_file`, not both",
                    ));
                }
                load_bindings_file(path)?
            }
            None => bindings::validate_bindings(file.bindings, "bindings")?,
        };
        if bindings.is_empty() && file.bindings_file.is_none() {
            return Err(invalid("bindings", "at least one binding is needed"));
        }
        let sinks = file.sinks.validate()?;
        let batching = file.batching.validate()?;
        let metrics_address = file.metrics.validate()?;
        let registry = file.registry.validate()?;
        let pipeline = file.pipeline.validate()?;
        let dead_letter_topic = file.dead_letter.validate()?;
        if let Some(b) = bindings.iter().find(|b| b.topics.matches(&dead_letter_topic)) {
            return Err(invalid(
                "dead_letter.topic",
                format!(
                    "`{dead_letter_topic}` is consumed by binding `{}`: dead letters would be processed again, forever",
                    b.name
                ),
            ));
        }
        Ok(Self {
            kafka,
            bindings,
            influxdb: sinks.influxdb,
            influxdb_v2: sinks.influxdb_v2,
            elasticsearch: sinks.elasticsearch,
            batching,
            dead_letter_topic,
            metrics_address,
            registry,
            pipeline,
            bindings_file: file.bindings_file,
            reload_interval: file.reload.interval,
            min_version_interval: file.reload.min_version_interval,
        })
    }

    /// The resolved configuration with every secret replaced by `<redacted>`, for `millrace config check`.
    /// (`Secret` and the registry's `Credentials` redact themselves; Kafka properties are plain strings, and a
    /// password written into a URL is scrubbed.)
    pub fn redacted(&self) -> String {
        let mut c = self.clone();
        for p in &self.kafka.secret_properties {
            if let Some(v) = c.kafka.properties.get_mut(p) {
                *v = "<redacted>".into();
            }
        }
        crate::redact::userinfo(&format!("{c:#?}"))
    }

    /// Settings that are valid but risky, for `config check` and the worker's start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.kafka.auto_offset_reset == "latest" {
            w.push(
                "kafka.auto_offset_reset = latest: a partition without a committed offset (a new client's topic, \
                 or one whose committed offset retention already deleted) starts at its end, and the records \
                 already there are skipped, never processed; `earliest` misses nothing"
                    .to_string(),
            );
        }
        w
    }

    /// The binding a topic belongs to: the one that matches it (none when two do).
    pub fn binding_for(&self, topic: &str) -> Option<&BindingConfig> {
        owner(&self.bindings, |b| &b.topics, topic).ok().flatten()
    }
}

#[cfg(test)]
mod tests;
