//! The worker's error type at its boundary: configuration, Kafka, sinks, plugins, the HTTP endpoints.

use millrace_plugin_registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is invalid; `key` is the path of the offending option (empty: the whole file).
    #[error("configuration{}: {message}", if key.is_empty() { String::new() } else { format!(" `{key}`") })]
    Config { key: String, message: String },

    /// A sink could not be started; the message names the configuration key to fix.
    #[error("configuration `{key}`: {0}", key = .0.key())]
    Sink(#[from] crate::sinks::SinkError),

    /// Kafka client errors (creating the consumer/producer, subscribing, committing).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),

    /// A binding's plugin could not be loaded.
    #[error("binding `{binding}`: {error}")]
    Plugin {
        binding: String,
        error: Box<RegistryError>,
    },

    /// The plugin runtime could not start.
    #[error("plugin runtime: {0}")]
    Runtime(#[from] millrace_runtime::PluginError),

    /// Binding the metrics/health endpoint, or another I/O failure.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A pipeline thread (poll, lane) exited or panicked: the worker drained what it could and stopped.
    #[error("the worker is unhealthy: {reason}")]
    Unhealthy { reason: String },

    /// A metric could not be registered (a programming error: duplicate names).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl From<crate::config::ConfigError> for WorkerError {
    fn from(e: crate::config::ConfigError) -> Self {
        Self::Config {
            key: e.key,
            message: e.message,
        }
    }
}

impl WorkerError {
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Kafka(_) | Self::Io { .. } | Self::Unhealthy { .. } => true,
            Self::Plugin { error, .. } => error.is_retriable(),
            Self::Sink(e) => e.is_retriable(),
            _ => false,
        }
    }
}
