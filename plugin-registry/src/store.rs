//! The plugin store: reference in, verified module bytes or a compiled, loaded plugin out. It decides when
//! the network is needed (pull policy, cache layers), verifies everything before storing or compiling it,
//! makes concurrent requests for one plugin fetch and compile once, and starts offline from the cache.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use millrace_runtime::{Plugin, Runtime, WeakPlugin};
use oci_client::manifest::OciImageManifest;

use crate::cache::{CompiledKey, DiskCache, Lookup, sha256};
use crate::oci::OciSource;
use crate::signature::{self, SignatureError, TrustPolicy};
use crate::{Credentials, PluginRef, RegistryError, RegistryMetrics, lock, media};

/// When a tag is resolved again (a digest never is: it names immutable content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Resolve a tag once; afterwards use the remembered digest. The tag `latest` is always resolved, as in
    /// Kubernetes and Istio.
    IfNotPresent,
    /// Resolve the tag on every request.
    Always,
    /// Resolve the tag when the remembered resolution is older than this.
    Interval(Duration),
}

/// A pull policy that is neither `if-not-present`, `always` nor a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a pull policy: give if-not-present, always or a duration such as 5m ({reason})")]
pub struct PullPolicyParseError {
    /// What was given.
    pub value: String,
    /// Why it is not a duration either.
    pub reason: String,
}

/// The one reading of a pull policy, shared by the worker's configuration and the command line:
/// `if-not-present` (or `IfNotPresent`, as Kubernetes writes it), `always` (`Always`), or a duration (`5m`).
impl std::str::FromStr for PullPolicy {
    type Err = PullPolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "if-not-present" | "IfNotPresent" => Ok(Self::IfNotPresent),
            "always" | "Always" => Ok(Self::Always),
            other => humantime::parse_duration(other)
                .map(Self::Interval)
                .map_err(|e| PullPolicyParseError {
                    value: other.to_string(),
                    reason: e.to_string(),
                }),
        }
    }
}

/// Settings of the plugin store.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub cache_dir: PathBuf,
    /// Bound of the disk cache (modules, manifests, compiled artifacts); least recently used go first.
    pub cache_max_bytes: u64,
    pub max_module_bytes: u64,
    pub max_manifest_bytes: u64,
    pub pull_policy: PullPolicy,
    /// Registries (`host:port`) spoken to over plain HTTP; every other one over TLS.
    pub insecure_registries: Vec<String>,
    /// PEM CA certificates trusted besides the system's (a registry signed by a private CA).
    pub ca_file: Option<PathBuf>,
    /// Token services (`host` or `host:port`) on another host than their registry that may receive the
    /// registry's credentials (Docker Hub: `auth.docker.io`). A realm on the registry's own host always may.
    pub token_realms: Vec<String>,
    pub credentials: Credentials,
    /// Which plugins must be signed, and by whom (cosign signatures in the registry).
    pub trust: TrustPolicy,
    /// Key of the compiled artifacts' MACs. `None`: a random one per process, so compiled artifacts of
    /// earlier processes (or anyone else who could write the cache) are compiled again, never loaded.
    pub compiled_key: Option<CompiledKey>,
    /// Deadline of each registry operation as a whole (a manifest, a module, a tag resolution).
    pub timeout: Duration,
}

impl RegistryConfig {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            cache_max_bytes: 1 << 30,
            max_module_bytes: 32 << 20,
            max_manifest_bytes: 4 << 20,
            pull_policy: PullPolicy::IfNotPresent,
            insecure_registries: Vec::new(),
            ca_file: None,
            token_realms: Vec::new(),
            credentials: Credentials::Anonymous,
            compiled_key: None,
            trust: TrustPolicy::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Where a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Already loaded in this process.
    Memory,
    /// From the disk cache, without the network.
    Cache,
    /// Pulled from the registry.
    Registry,
}

/// A reference resolved to a manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub manifest_digest: String,
    pub source: Source,
    /// The registry was unreachable and the last known resolution of the tag was used.
    pub stale: bool,
}

/// Verified module bytes.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub manifest_digest: String,
    pub module_digest: String,
    pub bytes: Vec<u8>,
    pub source: Source,
}

/// A compiled plugin, ready to instantiate.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub plugin: Plugin,
    pub manifest_digest: String,
    pub module_digest: String,
    pub source: Source,
    pub elapsed: Duration,
}

/// Reference in, verified bytes or a compiled plugin out. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PluginStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RegistryConfig,
    cache: DiskCache,
    source: OciSource,
    runtime: Runtime,
    engine_key: String,
    metrics: RegistryMetrics,
    /// Plugins loaded and still held by someone (a binding), by repository and manifest digest (a digest is
    /// never served to another repository than the one it came from): asking again for one gives
    /// the same compiled plugin. The store itself does not keep a plugin in memory; what nobody holds any
    /// more comes back from the disk cache.
    loaded: Mutex<HashMap<String, (WeakPlugin, String)>>,
    /// `registry/repository@digest` whose signature verified under the trust policy (this process).
    verified: Mutex<std::collections::HashSet<String>>,
    /// One lock per manifest digest being fetched or compiled.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// `registry/repository` of a reference: the scope in which a cached digest may be served.
fn repository_of(reference: &PluginRef) -> String {
    format!("{}/{}", reference.registry(), reference.repository())
}

fn offline(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Unreachable { .. })
}

impl PluginStore {
    pub fn new(
        config: RegistryConfig,
        runtime: Runtime,
        metrics: RegistryMetrics,
    ) -> Result<Self, RegistryError> {
        let key = match &config.compiled_key {
            Some(k) => k.clone(),
            None => CompiledKey::generate()?,
        };
        let cache = DiskCache::open(&config.cache_dir, config.cache_max_bytes, key)?;
        let ca_certs = match &config.ca_file {
            Some(path) => crate::oci::read_pem_certificates(path)?,
            None => Vec::new(),
        };
        let source = OciSource::new(
            config.credentials.clone(),
            &config.insecure_registries,
            &config.token_realms,
            ca_certs,
            config.timeout,
            config.max_manifest_bytes,
            config.max_module_bytes,
        )?;
        let engine_key = runtime.compatibility_key();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                cache,
                source,
                runtime,
                engine_key,
                metrics,
                loaded: Mutex::new(HashMap::new()),
                verified: Mutex::new(std::collections::HashSet::new()),
                flights: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &RegistryMetrics {
        &self.inner.metrics
    }

    /// Bytes the disk cache holds.
    pub fn cache_size(&self) -> u64 {
        self.inner.cache.size()
    }

    fn hit(&self, layer: &str) {
        self.inner.metrics.cache_hits.with_label_values(&[layer]).inc();
    }

    fn miss(&self, layer: &str) {
        self.inner.metrics.cache_misses.with_label_values(&[layer]).inc();
    }

    /// The manifest digest `reference` stands for now, per the pull policy.
    pub async fn resolve(&self, reference: &PluginRef) -> Result<Resolved, RegistryError> {
        if let Some(d) = reference.digest() {
            return Ok(Resolved {
                manifest_digest: d.to_string(),
                source: Source::Cache,
                stale: false,
            });
        }
        let remembered = self.inner.cache.get_tag(reference.as_str());
        let fresh_enough = match (&remembered, self.inner.config.pull_policy) {
            (None, _) | (_, PullPolicy::Always) => false,
            (Some(_), PullPolicy::IfNotPresent) => reference.tag() != Some("latest"),
            (Some(t), PullPolicy::Interval(max_age)) => t.age() < max_age,
        };
        if fresh_enough && let Some(t) = remembered {
            self.hit("tag");
            return Ok(Resolved {
                manifest_digest: t.digest,
                source: Source::Cache,
                stale: false,
            });
        }
        self.miss("tag");
        match self.inner.source.resolve(reference).await {
            Ok(digest) => {
                if let Err(e) = self.inner.cache.put_tag(reference.as_str(), &digest) {
                    tracing::warn!(error = %e, "could not remember a tag resolution");
                }
                Ok(Resolved {
                    manifest_digest: digest,
                    source: Source::Registry,
                    stale: false,
                })
            }
            Err(e) if offline(&e) => match remembered {
                Some(t) => {
                    tracing::warn!(reference = %reference, digest = %t.digest, error = %e,
                        "registry unreachable; using the last known resolution of the tag");
                    Ok(Resolved {
                        manifest_digest: t.digest,
                        source: Source::Cache,
                        stale: true,
                    })
                }
                None => Err(RegistryError::NotCached {
                    reference: reference.to_string(),
                    cause: e.to_string(),
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// Verified module bytes of `reference`, from the cache or the registry.
    pub async fn fetch(&self, reference: &PluginRef) -> Result<Fetched, RegistryError> {
        let resolved = self.resolve(reference).await?;
        self.check_signature(reference, &resolved.manifest_digest).await?;
        let flight = self.flight(&resolved.manifest_digest);
        let _guard = flight.lock().await;
        self.fetch_resolved(reference, &resolved.manifest_digest).await
    }

    fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = lock(&self.inner.flights);
        flights.retain(|_, f| Arc::strong_count(f) > 1);
        flights.entry(key.to_string()).or_default().clone()
    }

    fn cached_manifest(&self, digest: &str) -> Result<Option<OciImageManifest>, RegistryError> {
        match self.inner.cache.get_blob(digest)? {
            Lookup::Hit(raw) => match serde_json::from_slice(&raw) {
                Ok(m) => {
                    self.hit("manifest");
                    Ok(Some(m))
                }
                Err(_) => {
                    self.miss("manifest");
                    Ok(None)
                }
            },
            Lookup::Miss => {
                self.miss("manifest");
                Ok(None)
            }
            Lookup::Corrupt => {
                self.inner
                    .metrics
                    .verification_failures
                    .with_label_values(&["cache"])
                    .inc();
                self.miss("manifest");
                Ok(None)
            }
        }
    }

    fn cached_module(&self, digest: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        match self.inner.cache.get_blob(digest)? {
            Lookup::Hit(b) => {
                self.hit("module");
                Ok(Some(b))
            }
            Lookup::Miss => {
                self.miss("module");
                Ok(None)
            }
            Lookup::Corrupt => {
                tracing::warn!(digest, "corrupt module in the plugin cache, fetching it again");
                self.inner
                    .metrics
                    .verification_failures
                    .with_label_values(&["cache"])
                    .inc();
                self.miss("module");
                Ok(None)
            }
        }
    }

    async fn fetch_resolved(
        &self,
        reference: &PluginRef,
        manifest_digest: &str,
    ) -> Result<Fetched, RegistryError> {
        // Fully cached: no network at all (offline start), when this repository is known to hold it.
        if let Some(manifest) = self.cached_manifest(manifest_digest)? {
            self.check_repository_holds(reference, manifest_digest).await?;
            let layer =
                media::select_layer(&manifest).map_err(|detail| RegistryError::UnsupportedArtifact {
                    reference: reference.to_string(),
                    detail,
                })?;
            if let Some(bytes) = self.cached_module(&layer.digest)? {
                return Ok(Fetched {
                    manifest_digest: manifest_digest.to_string(),
                    module_digest: layer.digest.clone(),
                    bytes,
                    source: Source::Cache,
                });
            }
        }
        let start = Instant::now();
        let result = self.pull(reference, manifest_digest).await;
        let label = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        let m = &self.inner.metrics;
        m.pulls.with_label_values(&[label]).inc();
        m.pull_duration
            .with_label_values(&[label])
            .observe(start.elapsed().as_secs_f64());
        if let Err(RegistryError::DigestMismatch { what, .. }) = &result {
            let what = if what.starts_with("manifest") {
                "manifest"
            } else {
                "module"
            };
            m.verification_failures.with_label_values(&[what]).inc();
        }
        match result {
            Err(e) if offline(&e) => Err(RegistryError::NotCached {
                reference: reference.pinned(manifest_digest).to_string(),
                cause: e.to_string(),
            }),
            other => other,
        }
    }

    /// Pulls manifest and module, verifies both, and only then stores them.
    async fn pull(&self, reference: &PluginRef, manifest_digest: &str) -> Result<Fetched, RegistryError> {
        let (raw, manifest) = self.inner.source.manifest(reference, manifest_digest).await?;
        let layer = media::select_layer(&manifest).map_err(|detail| RegistryError::UnsupportedArtifact {
            reference: reference.to_string(),
            detail,
        })?;
        let (bytes, source) = match self.cached_module(&layer.digest)? {
            Some(b) => (b, Source::Cache),
            None => {
                let b = self.inner.source.module(reference, layer).await?;
                self.inner.metrics.pull_bytes.inc_by(b.len() as u64);
                (b, Source::Registry)
            }
        };
        self.inner.cache.put_blob(&layer.digest, &bytes)?;
        self.inner.cache.put_blob(manifest_digest, &raw)?;
        self.inner
            .cache
            .put_repo(&repository_of(reference), manifest_digest)?;
        tracing::info!(reference = %reference, manifest = manifest_digest, module = %layer.digest,
            bytes = bytes.len(), "plugin pulled and verified");
        Ok(Fetched {
            manifest_digest: manifest_digest.to_string(),
            module_digest: layer.digest.clone(),
            bytes,
            source: if source == Source::Cache {
                Source::Cache
            } else {
                Source::Registry
            },
        })
    }

    /// The compiled plugin of `reference`: from memory, from the compiled-artifact cache, or fetched and
    /// compiled. Concurrent calls for one plugin fetch and compile once.
    pub async fn load(&self, reference: &PluginRef) -> Result<Loaded, RegistryError> {
        let start = Instant::now();
        let resolved = self.resolve(reference).await?;
        let digest = resolved.manifest_digest;
        self.check_signature(reference, &digest).await?;
        let key = format!("{}@{digest}", repository_of(reference));
        if let Some(loaded) = self.in_memory(&key, &digest, start) {
            return Ok(loaded);
        }
        let flight = self.flight(&digest);
        let _guard = flight.lock().await;
        if let Some(loaded) = self.in_memory(&key, &digest, start) {
            return Ok(loaded);
        }
        self.miss("memory");
        // Fastest path from disk: manifest and compiled artifact cached; the module itself is not needed.
        if let Some(manifest) = self.cached_manifest(&digest)? {
            self.check_repository_holds(reference, &digest).await?;
            if let Ok(layer) = media::select_layer(&manifest)
                && let Some(plugin) = self
                    .load_compiled(&layer.digest, layer.size.max(0) as usize)
                    .await?
            {
                self.remember(&key, &plugin, &layer.digest);
                return Ok(Loaded {
                    plugin,
                    manifest_digest: digest,
                    module_digest: layer.digest.clone(),
                    source: Source::Cache,
                    elapsed: start.elapsed(),
                });
            }
        }
        let fetched = self.fetch_resolved(reference, &digest).await?;
        let plugin = self.compile(&fetched).await?;
        self.remember(&key, &plugin, &fetched.module_digest);
        Ok(Loaded {
            plugin,
            manifest_digest: digest,
            module_digest: fetched.module_digest,
            source: fetched.source,
            elapsed: start.elapsed(),
        })
    }

    fn remember(&self, key: &str, plugin: &Plugin, module_digest: &str) {
        let mut loaded = lock(&self.inner.loaded);
        loaded.retain(|_, (p, _)| p.upgrade().is_some());
        loaded.insert(key.to_string(), (plugin.downgrade(), module_digest.to_string()));
    }

    /// Whether the cache may serve manifest `digest` to the repository of `reference`: it was pulled from
    /// there, or the registry confirms the repository holds it now. A digest cached for another repository
    /// is not this one's: one client must not load another client's private plugin by naming its digest.
    /// A repository that does not hold the digest is a `not_found` error.
    async fn check_repository_holds(&self, reference: &PluginRef, digest: &str) -> Result<(), RegistryError> {
        let repository = repository_of(reference);
        if self.inner.cache.repo_has(&repository, digest) {
            return Ok(());
        }
        match self.inner.source.has_manifest(reference, digest).await {
            Ok(true) => self.inner.cache.put_repo(&repository, digest),
            Ok(false) => Err(RegistryError::NotFound {
                reference: reference.pinned(digest).to_string(),
                message: format!(
                    "repository {repository} does not hold manifest {digest} (a copy cached from another \
                     repository is not served to this one)"
                ),
            }),
            Err(e) if offline(&e) => Err(RegistryError::NotCached {
                reference: reference.pinned(digest).to_string(),
                cause: format!(
                    "cached only for another repository, and the registry cannot confirm this one holds it: {e}"
                ),
            }),
            Err(e) => Err(e),
        }
    }

    /// Enforces the trust policy: where the rule for the reference's repository requires a signature, a
    /// cosign signature of `digest` (tag `sha256-<hex>.sig` in the same repository) must verify with one of
    /// its keys and name this digest and repository. The signature manifest is kept in the cache, so an
    /// offline start verifies it again from there; a verdict is remembered for the process.
    async fn check_signature(&self, reference: &PluginRef, digest: &str) -> Result<(), RegistryError> {
        let repository = repository_of(reference);
        let Some(rule) = self.inner.config.trust.rule_for(&repository) else {
            return Ok(());
        };
        if !rule.require_signature {
            return Ok(());
        }
        let verdict_key = format!("{repository}@{digest}");
        if lock(&self.inner.verified).contains(&verdict_key) {
            return Ok(());
        }
        let pinned = reference.pinned(digest);
        match self
            .verify_signature(reference, &repository, digest, &rule.keys)
            .await
        {
            Ok(by) => {
                tracing::info!(reference = %pinned, key = %by.key, "plugin signature verified");
                lock(&self.inner.verified).insert(verdict_key);
                Ok(())
            }
            Err(e) => Err(self.signature_refusal(&pinned, e)),
        }
    }

    /// The registry error a failed signature check stands for, counted and logged.
    fn signature_refusal(&self, pinned: &PluginRef, failure: SignatureError) -> RegistryError {
        let registry = pinned.registry().to_string();
        let error = match failure {
            SignatureError::Unsigned { detail, .. } => RegistryError::Unsigned {
                reference: pinned.to_string(),
                detail,
            },
            SignatureError::Fetch {
                message, retriable, ..
            } => {
                let message = format!("fetching the signature of {pinned}: {message}");
                return if retriable {
                    RegistryError::Unreachable { registry, message }
                } else {
                    RegistryError::Protocol { registry, message }
                };
            }
            other => RegistryError::BadSignature {
                reference: pinned.to_string(),
                reason: other.to_string(),
            },
        };
        self.inner
            .metrics
            .verification_failures
            .with_label_values(&[error.kind()])
            .inc();
        tracing::warn!(reference = %pinned, reason = error.kind(), error = %error,
            "plugin refused by the trust policy");
        error
    }

    /// Verifies the cosign signature of what `reference` names with `keys`, whatever the trust policy says
    /// (`millrace plugin verify`); returns the manifest digest and who signed it.
    pub async fn verify(
        &self,
        reference: &PluginRef,
        keys: &[signature::TrustedKey],
    ) -> Result<(String, signature::VerifiedBy), RegistryError> {
        let digest = self.resolve(reference).await?.manifest_digest;
        let pinned = reference.pinned(&digest);
        self.verify_signature(reference, &repository_of(reference), &digest, keys)
            .await
            .map(|by| (digest, by))
            .map_err(|e| self.signature_refusal(&pinned, e))
    }

    /// Signs the manifest `reference` names with `key`, in cosign's format, and pushes the signature to
    /// the `sha256-<hex>.sig` tag of the same repository; returns the signed manifest's digest.
    pub async fn sign(
        &self,
        reference: &PluginRef,
        key: &signature::SigningKey,
    ) -> Result<String, RegistryError> {
        let digest = self.resolve(reference).await?.manifest_digest;
        let bad_key = |e: SignatureError| RegistryError::Credentials {
            source_name: key.name().to_string(),
            message: e.to_string(),
        };
        let payload = signature::payload(&repository_of(reference), &digest);
        let signed = key.sign(&payload).map_err(bad_key)?;
        let (manifest, config) = signature::signature_manifest(&payload, &signed);
        let tag = signature::signature_tag(&digest).map_err(bad_key)?;
        self.inner
            .source
            .push_signature(reference, &tag, &payload, &config, manifest)
            .await?;
        Ok(digest)
    }

    /// Fetches (or reads from the cache, offline) the signature artifact of `digest` and verifies it.
    async fn verify_signature(
        &self,
        reference: &PluginRef,
        repository: &str,
        digest: &str,
        keys: &[signature::TrustedKey],
    ) -> Result<signature::VerifiedBy, SignatureError> {
        let tag = signature::signature_tag(digest)?;
        let fetch_error = |e: RegistryError| match e {
            RegistryError::DigestMismatch { .. } | RegistryError::TooLarge { .. } => {
                SignatureError::BadSignature {
                    digest: digest.to_string(),
                    reason: e.to_string(),
                }
            }
            e => SignatureError::Fetch {
                digest: digest.to_string(),
                message: e.to_string(),
                retriable: e.is_retriable(),
            },
        };
        let cache = &self.inner.cache;
        let manifest = match self.inner.source.manifest_by_tag(reference, &tag).await {
            Ok(Some(raw)) => {
                if let Err(e) = cache.put_signature(repository, digest, &raw) {
                    tracing::warn!(error = %e, "could not keep a signature manifest in the cache");
                }
                raw
            }
            Ok(None) => {
                return Err(SignatureError::Unsigned {
                    digest: digest.to_string(),
                    detail: format!("no signature artifact at tag {tag} of {repository}"),
                });
            }
            Err(e) if offline(&e) => match cache.get_signature(repository, digest) {
                Ok(Some(raw)) => raw,
                _ => return Err(fetch_error(e)),
            },
            Err(e) => return Err(fetch_error(e)),
        };
        let layers = signature::signature_layers(&manifest, digest)?;
        let expected = repository.to_string();
        let mut first = None;
        for layer in &layers {
            if layer.size > signature::MAX_PAYLOAD_BYTES as u64 {
                first.get_or_insert(SignatureError::BadSignature {
                    digest: digest.to_string(),
                    reason: format!("payload {} is {} bytes, over the limit", layer.digest, layer.size),
                });
                continue;
            }
            let blob = match cache.get_blob(&layer.digest) {
                Ok(Lookup::Hit(b)) => b,
                _ => {
                    let b = self
                        .inner
                        .source
                        .blob(reference, &layer.digest, layer.size)
                        .await
                        .map_err(fetch_error)?;
                    let _ = cache.put_blob(&layer.digest, &b);
                    b
                }
            };
            match layer.verify(&blob, digest, Some(&expected), keys) {
                Ok(by) => return Ok(by),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| SignatureError::Unsigned {
            digest: digest.to_string(),
            detail: "no signature layer".into(),
        }))
    }

    fn in_memory(&self, key: &str, manifest_digest: &str, start: Instant) -> Option<Loaded> {
        let (plugin, module_digest) = {
            let loaded = lock(&self.inner.loaded);
            let (weak, module_digest) = loaded.get(key)?;
            (weak.upgrade()?, module_digest.clone())
        };
        self.hit("memory");
        Some(Loaded {
            plugin,
            manifest_digest: manifest_digest.to_string(),
            module_digest,
            source: Source::Memory,
            elapsed: start.elapsed(),
        })
    }

    /// The plugin from its cached compiled artifact alone, if there is a good one.
    async fn load_compiled(&self, module_digest: &str, size: usize) -> Result<Option<Plugin>, RegistryError> {
        let inner = self.inner.clone();
        let module_digest = module_digest.to_string();
        let join = tokio::task::spawn_blocking(move || cached_plugin(&inner, &module_digest, size));
        join.await.map_err(|e| RegistryError::Cache {
            path: self.inner.cache.root().display().to_string(),
            message: format!("loading task failed: {e}"),
        })?
    }

    /// Loads the module's compiled artifact from the cache, or compiles and caches it.
    async fn compile(&self, fetched: &Fetched) -> Result<Plugin, RegistryError> {
        let inner = self.inner.clone();
        let module_digest = fetched.module_digest.clone();
        let bytes = fetched.bytes.clone();
        let join = tokio::task::spawn_blocking(move || -> Result<Plugin, RegistryError> {
            let plugin_err = |error| RegistryError::Plugin {
                digest: module_digest.clone(),
                error,
            };
            if let Some(p) = cached_plugin(&inner, &module_digest, bytes.len())? {
                return Ok(p);
            }
            inner.metrics.cache_misses.with_label_values(&["compiled"]).inc();
            let compiled = inner.runtime.precompile(&bytes).and_then(|artifact| {
                match inner
                    .runtime
                    .load_precompiled(&artifact, &module_digest, bytes.len())
                {
                    Ok(plugin) => Ok((artifact, Ok(plugin))),
                    // Compiled, but its probe found no instance slot (the host's shortage): the artifact is
                    // kept, so that the next try loads it (and probes it then) instead of compiling again.
                    Err(error) if error.is_retriable() => Ok((artifact, Err(error))),
                    Err(error) => Err(error),
                }
            });
            let label = if compiled.is_ok() { "ok" } else { "error" };
            inner.metrics.compilations.with_label_values(&[label]).inc();
            let (artifact, plugin) = compiled.map_err(plugin_err)?;
            inner
                .cache
                .put_compiled(&inner.engine_key, &module_digest, &artifact)?;
            plugin.map_err(plugin_err)
        });
        join.await.map_err(|e| RegistryError::Cache {
            path: self.inner.cache.root().display().to_string(),
            message: format!("compilation task failed: {e}"),
        })?
    }

    /// Pushes a module as a wasm OCI artifact; returns the manifest digest. The module is checked to load as
    /// a plugin first, so a broken module never reaches the registry.
    pub async fn push(
        &self,
        wasm: &[u8],
        file_name: &str,
        reference: &PluginRef,
    ) -> Result<String, RegistryError> {
        let digest = sha256(wasm);
        self.inner
            .runtime
            .compile(wasm)
            .map_err(|error| RegistryError::Plugin { digest, error })?;
        self.inner.source.push(reference, wasm, file_name).await
    }
}

/// The plugin from its cached compiled artifact alone, if there is a good one: `None` when there is none, or it
/// is corrupt or does not load (compile it again then). Blocking (disk, deserialisation, a probe instance).
fn cached_plugin(inner: &Inner, module_digest: &str, size: usize) -> Result<Option<Plugin>, RegistryError> {
    match inner.cache.get_compiled(&inner.engine_key, module_digest)? {
        Lookup::Hit(artifact) => {
            match inner.runtime.load_precompiled(&artifact, module_digest, size) {
                Ok(p) => {
                    inner.metrics.cache_hits.with_label_values(&["compiled"]).inc();
                    Ok(Some(p))
                }
                // No instance slot for the probe: the host's shortage, not the artifact's fault;
                // compiling again would only burn CPU and fail the same way.
                Err(error) if error.is_retriable() => Err(RegistryError::Plugin {
                    digest: module_digest.to_string(),
                    error,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, digest = %module_digest,
                    "cached compiled artifact does not load; compiling again");
                    Ok(None)
                }
            }
        }
        Lookup::Corrupt => {
            inner
                .metrics
                .verification_failures
                .with_label_values(&["cache"])
                .inc();
            Ok(None)
        }
        Lookup::Miss => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policies_parse_from_their_names_or_a_duration() {
        assert_eq!("if-not-present".parse(), Ok(PullPolicy::IfNotPresent));
        assert_eq!("IfNotPresent".parse(), Ok(PullPolicy::IfNotPresent));
        assert_eq!("always".parse(), Ok(PullPolicy::Always));
        assert_eq!("Always".parse(), Ok(PullPolicy::Always));
        assert_eq!("5m".parse(), Ok(PullPolicy::Interval(Duration::from_secs(300))));
        let err = "sometimes".parse::<PullPolicy>().unwrap_err();
        assert_eq!(err.value, "sometimes");
        assert!(
            err.to_string().contains("if-not-present, always or a duration"),
            "{err}"
        );
    }
}
