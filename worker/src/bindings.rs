//! Live bindings: the table of topic -> plugin every lane reads per record, and the reloader that changes it
//! without a restart. A change (the bindings file, a tag moved to a new digest, SIGHUP) is applied per binding:
//! the new plugin is pulled, verified, compiled and smoke-checked in the background, then swapped in at a record
//! boundary. Anything that fails (pull, verification, compilation, ABI, smoke check, a malformed file) is
//! refused: the previous version keeps running, the refusal is logged and counted. A topic belongs to exactly
//! one binding: bindings that overlap are refused when loaded (`config::bindings`), and a topic that two regex
//! bindings too large to compare then both match is refused here, per topic ([`find`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use millrace_plugin_registry::{PluginRef, PluginStore};
use millrace_runtime::{Plugin, Record, Verdict};

use crate::WorkerError;
use crate::config::{BindingConfig, load_bindings_file};
use crate::metrics::Metrics;

/// One version of a binding: its configuration and the plugin it runs.
#[derive(Debug)]
pub struct Binding {
    /// Unique per version: a lane keeps one plugin instance per id.
    pub id: u64,
    pub config: BindingConfig,
    pub plugin: Plugin,
    /// The manifest digest the reference resolved to.
    pub digest: Arc<str>,
    pub name: Arc<str>,
}

/// The bindings in force. Readers take a snapshot per record; the reloader replaces it whole.
#[derive(Debug)]
pub struct BindingTable {
    current: RwLock<Arc<Vec<Arc<Binding>>>>,
    generation: AtomicU64,
    /// Topics already reported as matched by two bindings (once per topic and table).
    ambiguous: Mutex<HashSet<String>>,
}

impl BindingTable {
    pub fn new(bindings: Vec<Arc<Binding>>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(bindings)),
            generation: AtomicU64::new(1),
            ambiguous: Mutex::new(HashSet::new()),
        })
    }

    pub fn snapshot(&self) -> Arc<Vec<Arc<Binding>>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes every time the table is replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn replace(&self, bindings: Vec<Arc<Binding>>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(bindings);
        self.ambiguous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Logs a topic two bindings match, once per topic while this table is in force.
    pub fn report_ambiguous(&self, topic: &str, e: &Ambiguous) {
        let first = self
            .ambiguous
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(topic.to_string());
        if first {
            tracing::error!(topic, first = %e.first, second = %e.second,
                "{e}: its records are not processed and its offsets are not committed until the bindings are fixed");
        }
    }
}

/// A topic that more than one binding matches: it belongs to none of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the topic is matched by bindings `{first}` and `{second}`")]
pub struct Ambiguous {
    pub first: Arc<str>,
    pub second: Arc<str>,
}

/// The binding a topic belongs to: the one that matches it; `None` when no binding does (removed), an error
/// when two do (two regexes that could not be compared when loaded). Never the first of several.
pub fn find(table: &[Arc<Binding>], topic: &str) -> Result<Option<Arc<Binding>>, Ambiguous> {
    match crate::config::owner(table, |b| &b.config.topics, topic) {
        Ok(b) => Ok(b.cloned()),
        Err((i, j)) => Err(Ambiguous {
            first: table[i].name.clone(),
            second: table[j].name.clone(),
        }),
    }
}

/// What the topics of a table subscribe to.
pub fn subscriptions(table: &[Arc<Binding>]) -> Vec<String> {
    let mut subs: Vec<String> = table.iter().map(|b| b.config.topics.subscription()).collect();
    subs.sort();
    subs.dedup();
    subs
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Runs the binding's smoke samples through a fresh instance: each must be accepted with outputs.
pub fn smoke_check(config: &BindingConfig, plugin: &Plugin) -> Result<(), String> {
    if config.smoke.is_empty() {
        return Ok(());
    }
    let mut instance = plugin
        .instance(config.limits.clone())
        .map_err(|e| e.to_string())?;
    for (i, sample) in config.smoke.iter().enumerate() {
        let p = instance.process(&Record {
            topic: "millrace-smoke-check",
            value: Some(sample.as_bytes()),
            timestamp_ms: Some(0),
            ..Default::default()
        });
        match p.result {
            Ok(Verdict::Accepted(outputs)) if !outputs.is_empty() => {}
            Ok(Verdict::Accepted(_)) => return Err(format!("smoke sample {i} produced no output")),
            Ok(Verdict::Rejected { reason }) => {
                return Err(format!("smoke sample {i} was rejected: {reason}"));
            }
            Err(e) => return Err(format!("smoke sample {i} failed ({}): {e}", e.kind())),
        }
    }
    Ok(())
}

fn same_config(a: &BindingConfig, b: &BindingConfig) -> bool {
    a.name == b.name
        && a.topics.subscription() == b.topics.subscription()
        && a.plugin == b.plugin
        && a.allowed_indices == b.allowed_indices
        && a.allowed_measurements == b.allowed_measurements
        && a.limits == b.limits
        && a.smoke == b.smoke
}

/// Keeps the table in line with the bindings' source.
#[derive(Debug)]
pub struct Reloader {
    store: PluginStore,
    table: Arc<BindingTable>,
    metrics: Metrics,
    file: Option<PathBuf>,
    static_bindings: Vec<BindingConfig>,
    last_file: Option<Vec<u8>>,
    /// Versions refused for a reason that a retry cannot fix (verification, compilation, ABI, smoke samples), by
    /// binding: not tried again at every tick, only when the binding's configuration or digest changes, or on
    /// SIGHUP. Failures a retry can fix (registry unreachable) are retried at every tick.
    refused: HashMap<String, (BindingConfig, String)>,
}

/// Why a reload, or one binding of it, was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub binding: String,
    pub reason: &'static str,
    pub message: String,
}

impl Reloader {
    /// Loads every binding (all must load) and returns the reloader with its table.
    pub async fn start(
        store: PluginStore,
        metrics: Metrics,
        file: Option<PathBuf>,
        static_bindings: Vec<BindingConfig>,
    ) -> Result<Self, WorkerError> {
        let (configs, last_file) = match &file {
            Some(path) => (load_bindings_file(path)?, std::fs::read(path).ok()),
            None => (static_bindings.clone(), None),
        };
        let mut bindings = Vec::new();
        for b in configs {
            let reference = PluginRef::parse(&b.plugin).map_err(|error| WorkerError::Plugin {
                binding: b.name.clone(),
                error: Box::new(error),
            })?;
            let loaded = store
                .load(&reference)
                .await
                .map_err(|error| WorkerError::Plugin {
                    binding: b.name.clone(),
                    error: Box::new(error),
                })?;
            smoke_check(&b, &loaded.plugin).map_err(|message| WorkerError::Config {
                key: format!("bindings `{}`.smoke", b.name),
                message,
            })?;
            tracing::info!(binding = %b.name, plugin = %reference, digest = %loaded.manifest_digest,
                source = ?loaded.source, ms = loaded.elapsed.as_millis() as u64, "plugin loaded");
            bindings.push(Arc::new(Binding {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                name: Arc::from(b.name.as_str()),
                config: b,
                plugin: loaded.plugin,
                digest: Arc::from(loaded.manifest_digest.as_str()),
            }));
        }
        let table = BindingTable::new(bindings);
        let r = Self {
            store,
            table,
            metrics,
            file,
            static_bindings,
            last_file,
            refused: HashMap::new(),
        };
        r.publish_info(&[], &r.table.snapshot());
        Ok(r)
    }

    pub fn table(&self) -> Arc<BindingTable> {
        self.table.clone()
    }

    fn refuse(&self, r: Refusal) -> Refusal {
        self.metrics
            .reloads
            .with_label_values(&["refused", r.reason])
            .inc();
        tracing::warn!(binding = %r.binding, reason = r.reason, message = %r.message,
            "change refused; the previous version keeps running");
        r
    }

    fn publish_info(&self, old: &[Arc<Binding>], new: &[Arc<Binding>]) {
        for b in old {
            let _ = self
                .metrics
                .plugin_info
                .remove_label_values(&[&b.name, &b.digest]);
        }
        for b in new {
            self.metrics
                .plugin_info
                .with_label_values(&[&b.name, &b.digest])
                .set(1);
        }
    }

    /// Checks the source once: re-reads the bindings file when it changed (or `force`), re-resolves tags per the
    /// pull policy, and applies what loads. Returns the refusals.
    pub async fn reload(&mut self, force: bool) -> Vec<Refusal> {
        let started = Instant::now();
        let mut refusals = Vec::new();
        let desired = match &self.file {
            Some(path) => {
                let bytes = std::fs::read(path).ok();
                if bytes.is_some() && bytes != self.last_file {
                    tracing::info!(file = %path.display(), "bindings file changed");
                }
                match load_bindings_file(path) {
                    Ok(b) => {
                        self.last_file = bytes;
                        b
                    }
                    Err(e) => {
                        if force || bytes != self.last_file {
                            refusals.push(self.refuse(Refusal {
                                binding: "*".into(),
                                reason: "invalid_bindings",
                                message: e.to_string(),
                            }));
                            // Remember it, so that one bad file is refused once, not at every tick.
                            self.last_file = bytes;
                        }
                        return refusals;
                    }
                }
            }
            None => self.static_bindings.clone(),
        };
        let current = self.table.snapshot();
        let by_name: HashMap<&str, &Arc<Binding>> =
            current.iter().map(|b| (b.config.name.as_str(), b)).collect();
        let mut next: Vec<Arc<Binding>> = Vec::with_capacity(desired.len());
        for b in desired {
            let existing = by_name.get(b.name.as_str()).copied();
            let reference = match PluginRef::parse(&b.plugin) {
                Ok(r) => r,
                Err(e) => {
                    refusals.push(self.refuse(Refusal {
                        binding: b.name.clone(),
                        reason: "invalid_reference",
                        message: e.to_string(),
                    }));
                    next.extend(existing.cloned());
                    continue;
                }
            };
            let digest = match self.store.resolve(&reference).await {
                Ok(r) => r.manifest_digest,
                Err(e) => {
                    refusals.push(self.refuse(Refusal {
                        binding: b.name.clone(),
                        reason: e.kind(),
                        message: e.to_string(),
                    }));
                    next.extend(existing.cloned());
                    continue;
                }
            };
            if let Some(old) = existing
                && same_config(&old.config, &b)
                && *old.digest == *digest
            {
                next.push(old.clone());
                continue;
            }
            if !force
                && let Some((config, refused_digest)) = self.refused.get(b.name.as_str())
                && same_config(config, &b)
                && *refused_digest == *digest
            {
                next.extend(existing.cloned());
                continue;
            }
            // New or changed: load in the background of the running pipeline, then check it.
            let loaded = match self.store.load(&reference.pinned(&digest)).await {
                Ok(l) => l,
                Err(e) => {
                    if !e.is_retriable() {
                        self.refused
                            .insert(b.name.clone(), (b.clone(), digest.to_string()));
                    }
                    refusals.push(self.refuse(Refusal {
                        binding: b.name.clone(),
                        reason: e.kind(),
                        message: e.to_string(),
                    }));
                    next.extend(existing.cloned());
                    continue;
                }
            };
            let plugin = loaded.plugin;
            let config = b.clone();
            let smoke = tokio::task::spawn_blocking(move || {
                let r = smoke_check(&config, &plugin);
                (r, plugin)
            })
            .await;
            let plugin = match smoke {
                Ok((Ok(()), plugin)) => plugin,
                Ok((Err(message), _)) => {
                    self.refused
                        .insert(b.name.clone(), (b.clone(), digest.to_string()));
                    refusals.push(self.refuse(Refusal {
                        binding: b.name.clone(),
                        reason: "smoke_check",
                        message,
                    }));
                    next.extend(existing.cloned());
                    continue;
                }
                Err(e) => {
                    refusals.push(self.refuse(Refusal {
                        binding: b.name.clone(),
                        reason: "smoke_check",
                        message: e.to_string(),
                    }));
                    next.extend(existing.cloned());
                    continue;
                }
            };
            self.refused.remove(b.name.as_str());
            tracing::info!(binding = %b.name, plugin = %reference, digest = %digest,
                previous = existing.map(|e| e.digest.to_string()), "binding changed: new version loaded");
            next.push(Arc::new(Binding {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                name: Arc::from(b.name.as_str()),
                config: b,
                plugin,
                digest: Arc::from(digest.as_str()),
            }));
        }
        let changed =
            next.len() != current.len() || next.iter().zip(current.iter()).any(|(a, b)| a.id != b.id);
        if changed {
            let removed: Vec<&str> = current
                .iter()
                .filter(|c| !next.iter().any(|n| n.config.name == c.config.name))
                .map(|c| c.config.name.as_str())
                .collect();
            if !removed.is_empty() {
                tracing::info!(bindings = ?removed, "bindings removed");
            }
            self.publish_info(&current, &next);
            self.table.replace(next);
            self.metrics
                .reloads
                .with_label_values(&["applied", "changed"])
                .inc();
            self.metrics
                .reload_duration
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(ms = started.elapsed().as_millis() as u64, "bindings applied");
        }
        refusals
    }
}
