//! The registry's metrics, registered into the `prometheus::Registry` the embedding process serves (the
//! worker's `/metrics`). Names are listed in `docs/metrics.md` with the worker's; labels are bounded.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// Counters and histograms of plugin pulls and the plugin cache.
#[derive(Debug, Clone)]
pub struct RegistryMetrics {
    /// Pulls from a registry by result (`ok` or an error kind).
    pub pulls: IntCounterVec,
    /// Bytes of verified modules pulled.
    pub pull_bytes: IntCounter,
    /// Time from reference to verified module bytes (network pulls only), by result.
    pub pull_duration: HistogramVec,
    /// Cache lookups that found what they needed without the network, by layer: `memory`, `compiled`,
    /// `module`, `manifest`, `tag`.
    pub cache_hits: IntCounterVec,
    /// Cache lookups that missed, by the same layers.
    pub cache_misses: IntCounterVec,
    /// Content that failed verification, by what: `manifest`, `module` (registry), `cache` (corrupt entry or
    /// compiled artifact whose MAC does not verify), `unsigned`, `bad_signature` (trust policy).
    pub verification_failures: IntCounterVec,
    /// Compilations of modules (cache misses of compiled artifacts), by result.
    pub compilations: IntCounterVec,
}

impl RegistryMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            pulls: IntCounterVec::new(
                Opts::new(
                    "millrace_plugin_pulls_total",
                    "Plugin pulls from OCI registries, by result",
                ),
                &["result"],
            )?,
            pull_bytes: IntCounter::new(
                "millrace_plugin_pull_bytes_total",
                "Bytes of plugin modules pulled",
            )?,
            pull_duration: HistogramVec::new(
                HistogramOpts::new(
                    "millrace_plugin_pull_duration_seconds",
                    "Time to pull and verify a plugin from a registry",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["result"],
            )?,
            cache_hits: IntCounterVec::new(
                Opts::new("millrace_plugin_cache_hits_total", "Plugin cache hits, by layer"),
                &["layer"],
            )?,
            cache_misses: IntCounterVec::new(
                Opts::new(
                    "millrace_plugin_cache_misses_total",
                    "Plugin cache misses, by layer",
                ),
                &["layer"],
            )?,
            verification_failures: IntCounterVec::new(
                Opts::new(
                    "millrace_plugin_verification_failures_total",
                    "Plugin content refused by verification, by what: manifest, module, cache (digest mismatch), unsigned, bad_signature (trust policy)",
                ),
                &["what"],
            )?,
            compilations: IntCounterVec::new(
                Opts::new(
                    "millrace_plugin_compilations_total",
                    "Plugin module compilations, by result",
                ),
                &["result"],
            )?,
        };
        registry.register(Box::new(m.pulls.clone()))?;
        registry.register(Box::new(m.pull_bytes.clone()))?;
        registry.register(Box::new(m.pull_duration.clone()))?;
        registry.register(Box::new(m.cache_hits.clone()))?;
        registry.register(Box::new(m.cache_misses.clone()))?;
        registry.register(Box::new(m.verification_failures.clone()))?;
        registry.register(Box::new(m.compilations.clone()))?;
        // Every series exists from the start (at zero), for rates, alerts and dashboards.
        for layer in ["memory", "compiled", "module", "manifest", "tag"] {
            m.cache_hits.with_label_values(&[layer]);
            m.cache_misses.with_label_values(&[layer]);
        }
        for what in ["manifest", "module", "cache", "unsigned", "bad_signature"] {
            m.verification_failures.with_label_values(&[what]);
        }
        for result in ["ok", "error"] {
            m.compilations.with_label_values(&[result]);
        }
        for result in std::iter::once("ok").chain(crate::RegistryError::KINDS.iter().copied()) {
            m.pulls.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// Metrics registered nowhere (tools that do not serve `/metrics`).
    pub fn unregistered() -> Self {
        #[allow(clippy::expect_used)] // static, valid metric definitions: cannot fail
        Self::new(&Registry::new()).expect("registry metrics definitions are valid")
    }
}
