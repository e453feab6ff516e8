//! `[registry]`: where plugins come from and where they are cached. The options are declared here once and
//! validated into the plugin store's own `RegistryConfig`; the pull policy and the credentials are read by
//! the plugin registry's parsers, the same ones the `millrace plugin` commands use.

use std::path::PathBuf;
use std::time::Duration;

use millrace_plugin_registry::signature::{TrustRule, TrustedKey};
use millrace_plugin_registry::{CompiledKey, Credentials, PullPolicy, RegistryConfig};
use schemars::JsonSchema;
use serde::Deserialize;

use super::ConfigError;
use super::invalid;
use super::secret::Secret;

/// The OCI registries plugins are pulled from, and the plugin cache.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// Plugin cache (modules, manifests, compiled artifacts). Created private (0700); an existing directory
    /// owned by another user or open to group or others is refused. In Kubernetes, a subdirectory of the
    /// cache volume (whose root is world-writable).
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
    /// Token services on another host than their registry (`host` or `host:port`) trusted with the
    /// registry's credentials, e.g. `auth.docker.io` for Docker Hub. A registry's own host always is; any
    /// other token service gets an anonymous token request, never the credentials.
    token_realms: Vec<String>,
    /// User name of basic credentials (the registry's token flow is followed).
    username: Option<String>,
    /// Password of `username`.
    password: Option<Secret>,
    /// A file holding the password.
    password_file: Option<PathBuf>,
    /// A Docker `config.json` with credentials per registry (imagePullSecrets).
    docker_config: Option<PathBuf>,
    /// Key (at least 16 bytes) that authenticates compiled plugin artifacts in the cache, for a cache
    /// shared or kept across restarts (a PersistentVolumeClaim): artifacts whose MAC does not verify under
    /// it are compiled again, never loaded. Without it, a random key per process: every start compiles.
    compiled_key: Option<Secret>,
    /// A file holding `compiled_key` (a mounted Secret).
    compiled_key_file: Option<PathBuf>,
    /// Which plugins must be signed (cosign signatures in the registry) and by whom: rules per registry or
    /// repository prefix; the longest matching prefix decides. A plugin that breaks its rule is refused at
    /// start and at reload (reason `unsigned` or `bad_signature`); a running version keeps serving.
    trust: Vec<TrustSection>,
    /// Deadline of each registry operation as a whole (resolving a tag, pulling a manifest or a module):
    /// a registry that trickles bytes cannot hold a pull for longer.
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
            token_realms: Vec::new(),
            username: None,
            password: None,
            password_file: None,
            docker_config: None,
            compiled_key: None,
            compiled_key_file: None,
            trust: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// One rule of `registry.trust`, an array of tables: `[[registry.trust]]` once per rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// A registry (`host[:port]`) or a repository prefix (`host[:port]/team/`), matched on whole path
    /// components.
    prefix: String,
    /// Whether plugins under the prefix must carry a signature by one of `keys` (`false` exempts a
    /// narrower prefix from a wider rule).
    #[serde(default = "yes")]
    require_signature: bool,
    /// Public keys (PEM files, e.g. a mounted Secret; cosign's `cosign.pub` works as is): ECDSA P-256/384/521,
    /// RSA >= 2048 bits or Ed25519. A signature by any one of them is accepted.
    #[serde(default)]
    keys: Vec<PathBuf>,
}

fn yes() -> bool {
    true
}

impl TrustSection {
    fn validate(self, i: usize) -> Result<TrustRule, ConfigError> {
        let key = |k: &str| format!("registry.trust[{i}].{k}");
        let prefix = self.prefix.trim().trim_end_matches('/').to_string();
        if prefix.is_empty() || prefix.contains("://") {
            return Err(invalid(
                &key("prefix"),
                "give a registry host[:port] or a repository prefix host[:port]/path, without a scheme",
            ));
        }
        if self.require_signature && self.keys.is_empty() {
            return Err(invalid(
                &key("keys"),
                "a rule that requires signatures needs at least one public key",
            ));
        }
        let keys = self
            .keys
            .iter()
            .map(TrustedKey::from_file)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&key("keys"), e))?;
        Ok(TrustRule {
            prefix,
            require_signature: self.require_signature,
            keys,
        })
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
        registry.token_realms = self.token_realms;
        let mut prefixes = std::collections::HashSet::new();
        for (i, rule) in self.trust.into_iter().enumerate() {
            let rule = rule.validate(i)?;
            if !prefixes.insert(rule.prefix.clone()) {
                return Err(invalid(
                    &format!("registry.trust[{i}].prefix"),
                    format!("`{}` has a rule already", rule.prefix),
                ));
            }
            registry.trust.rules.push(rule);
        }
        if let Some(key) =
            Secret::inline_or_file("registry.compiled_key", self.compiled_key, self.compiled_key_file)?
        {
            registry.compiled_key = Some(
                CompiledKey::from_secret(key.expose().as_bytes())
                    .map_err(|e| invalid("registry.compiled_key", e))?,
            );
        }
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
