//! `[registry]`: where plugins come from and where they are cached. The options are declared here once and
//! validated into the plugin store's own `RegistryConfig`; the pull policy and the credentials are read by
//! the plugin registry's parsers, the same ones the `millrace plugin` commands use.

use std::path::PathBuf;
use std::time::Duration;

use millrace_plugin_registry::{Credentials, PullPolicy, RegistryConfig};
use schemars::JsonSchema;
use serde::Deserialize;

use super::ConfigError;
use super::invalid;
use super::secret::Secret;

/// The OCI registries plugins are pulled from, and the plugin cache.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// Plugin cache (modules, manifests, compiled artifacts); must be private to the worker.
    cache_dir: PathBuf,
    /// Bound of the cache (least recently used first).
    #[serde(with = "crate::units::size")]
    #[schemars(schema_with = "crate::units::size::schema")]
    cache_max_bytes: u64,
    /// When tags are resolved again: `if-not-present` (`latest` always), `always`, or a duration.
    pull_policy: String,
    /// Registries (`host:port`) spoken to over plain HTTP.
    insecure: Vec<String>,
    /// PEM CA certificate(s) trusted besides the system's, for a registry signed by a private CA
    /// (`millrace plugin ... --ca-file`).
    ca_file: Option<PathBuf>,
    /// User name of basic credentials (the registry's token flow is followed).
    username: Option<String>,
    /// Password of `username`.
    password: Option<Secret>,
    /// A file holding the password.
    password_file: Option<PathBuf>,
    /// A Docker `config.json` with credentials per registry (imagePullSecrets).
    docker_config: Option<PathBuf>,
    /// Timeout of each request.
    #[serde(with = "crate::units::duration")]
    #[schemars(schema_with = "crate::units::duration::schema")]
    timeout: Duration,
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("millrace-cache"),
            cache_max_bytes: 1 << 30,
            pull_policy: "if-not-present".into(),
            insecure: Vec::new(),
            ca_file: None,
            username: None,
            password: None,
            password_file: None,
            docker_config: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl RegistrySection {
    /// The plugin store's settings; errors name `registry.*` keys.
    pub(super) fn validate(self) -> Result<RegistryConfig, ConfigError> {
        let mut registry = RegistryConfig::new(self.cache_dir);
        registry.cache_max_bytes = self.cache_max_bytes;
        registry.pull_policy = self
            .pull_policy
            .parse::<PullPolicy>()
            .map_err(|e| invalid("registry.pull_policy", e))?;
        registry.insecure_registries = self.insecure;
        registry.ca_file = self.ca_file;
        registry.timeout = self.timeout;
        let password = Secret::inline_or_file("registry.password", self.password, self.password_file)?;
        registry.credentials = Credentials::from_parts(
            self.username,
            password.map(Secret::into_inner),
            self.docker_config,
        )
        .map_err(|e| {
            invalid(
                "registry",
                format!("give username and password, or docker_config, or neither ({e})"),
            )
        })?;
        Ok(registry)
    }
}
