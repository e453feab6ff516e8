//! Compiled plugins in memory. A worker with a thousand bindings cannot keep every compiled plugin mapped
//! (each is its native code, data and metadata: ~0.3-1 MiB for small plugins, ~10 MiB for a Go guest), and
//! most clients are idle most of the time. Each binding holds its plugin through a [`ResidentPlugin`]; the
//! [`Residency`] keeps the compiled plugins within their share of `pipeline.memory_budget`, unloading the
//! least recently used when a load would pass it. An unloaded plugin comes back from the on-disk compiled
//! cache (milliseconds, no compilation) when its binding next has a record; lanes drop their instances of an
//! unloaded plugin so that its memory is really freed.
//!
//! A binding's new version replaces its old one (which leaves memory with it), so a client moving its tag
//! does not add to the resident set; only bindings with records keep plugins resident.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use millrace_plugin_registry::{PluginRef, PluginStore, RegistryError};
use millrace_runtime::Plugin;

use crate::metrics::Metrics;

/// The compiled plugins of a worker's bindings, within a byte budget.
#[derive(Debug)]
pub struct Residency {
    budget: u64,
    store: PluginStore,
    /// Where a lane thread runs a load from the disk cache (or, if the cache lost it, the registry).
    runtime: tokio::runtime::Handle,
    handles: Mutex<Vec<Weak<ResidentPlugin>>>,
    /// Held through each enforcement: two lanes loading at once would otherwise both see the same excess and
    /// each unload that much (the second, finding its first choices already gone, going further down the list).
    enforcing: Mutex<()>,
    /// Changes whenever a plugin is unloaded: lanes then drop their instances of unloaded plugins.
    generation: AtomicU64,
    epoch: Instant,
    metrics: Metrics,
}

/// One binding version's compiled plugin: in memory, or unloaded and loadable again by its pinned reference.
#[derive(Debug)]
pub struct ResidentPlugin {
    /// The plugin pinned by its manifest digest.
    reference: PluginRef,
    module: Mutex<Option<Plugin>>,
    /// Compiled bytes while resident, 0 when unloaded.
    bytes: AtomicU64,
    /// Milliseconds since the residency's epoch at the last use.
    last_used: AtomicU64,
    residency: Arc<Residency>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Residency {
    /// Compiled plugins kept within `budget` bytes (one may pass it alone: the one in use is never unloaded).
    pub fn new(
        budget: u64,
        store: PluginStore,
        runtime: tokio::runtime::Handle,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            budget,
            store,
            runtime,
            handles: Mutex::new(Vec::new()),
            enforcing: Mutex::new(()),
            generation: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        })
    }

    /// Takes a freshly loaded plugin into memory, unloading others if the budget is passed.
    pub fn admit(self: &Arc<Self>, reference: PluginRef, plugin: Plugin) -> Arc<ResidentPlugin> {
        let handle = Arc::new(ResidentPlugin {
            reference,
            bytes: AtomicU64::new(plugin.compiled_bytes() as u64),
            module: Mutex::new(Some(plugin)),
            last_used: AtomicU64::new(self.now()),
            residency: self.clone(),
        });
        lock(&self.handles).push(Arc::downgrade(&handle));
        self.enforce(&handle);
        handle
    }

    /// Changes whenever a plugin leaves memory.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Unloads the least recently used plugins other than `keep` until the resident ones fit the budget, and
    /// publishes the resident set in the metrics.
    fn enforce(&self, keep: &ResidentPlugin) {
        let _one_at_a_time = lock(&self.enforcing);
        let mut handles = lock(&self.handles);
        handles.retain(|h| h.strong_count() > 0);
        let live: Vec<Arc<ResidentPlugin>> = handles.iter().filter_map(Weak::upgrade).collect();
        drop(handles);
        // Each plugin's last use is read once: other lanes touch plugins while this one sorts, and a key that
        // changes under the sort breaks its total order (the standard sort panics on that).
        let mut resident: Vec<(u64, &Arc<ResidentPlugin>)> = live
            .iter()
            .filter(|h| h.is_resident())
            .map(|h| (h.last_used.load(Ordering::Acquire), h))
            .collect();
        let mut total: u64 = resident
            .iter()
            .map(|(_, h)| h.bytes.load(Ordering::Acquire))
            .sum();
        if total > self.budget {
            resident.sort_by_key(|&(last_used, _)| last_used);
            let mut unloaded = 0;
            for (_, h) in &resident {
                if total <= self.budget {
                    break;
                }
                if std::ptr::eq(Arc::as_ptr(h), keep) {
                    continue;
                }
                total = total.saturating_sub(h.unload());
                unloaded += 1;
            }
            if unloaded > 0 {
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.metrics.plugin_unloads.inc_by(unloaded);
                tracing::debug!(
                    unloaded,
                    resident_bytes = total,
                    budget = self.budget,
                    "compiled plugins unloaded (least recently used)"
                );
            }
        }
        let count = live.iter().filter(|h| h.is_resident()).count();
        self.metrics.plugins_resident.set(count as i64);
        self.metrics.plugins_resident_bytes.set(total as i64);
    }
}

impl ResidentPlugin {
    /// Whether the compiled plugin is in memory.
    pub fn is_resident(&self) -> bool {
        lock(&self.module).is_some()
    }

    /// Marks the plugin used now: a binding whose lane keeps an instance live never calls [`Self::get`] again,
    /// and would otherwise look idle to the least-recently-used choice however busy it is.
    pub fn touch(&self) {
        self.last_used.store(self.residency.now(), Ordering::Release);
    }

    /// The reference it is loaded again from (pinned by digest).
    pub fn reference(&self) -> &PluginRef {
        &self.reference
    }

    /// The compiled plugin, loaded again if it was unloaded: from the store's memory when another holder
    /// still has it, else from the on-disk compiled cache, else from the registry. Blocks the calling thread
    /// for the load: call it from a lane thread, never from inside the async runtime.
    pub fn get(&self) -> Result<Plugin, RegistryError> {
        let residency = &self.residency;
        self.touch();
        if let Some(p) = lock(&self.module).as_ref() {
            return Ok(p.clone());
        }
        let started = Instant::now();
        let loaded = residency.runtime.block_on(residency.store.load(&self.reference));
        let outcome = if loaded.is_ok() { "ok" } else { "error" };
        residency
            .metrics
            .plugin_reloads
            .with_label_values(&[outcome])
            .inc();
        let plugin = loaded?.plugin;
        tracing::debug!(plugin = %self.reference, ms = started.elapsed().as_millis() as u64,
            "compiled plugin loaded again");
        {
            let mut module = lock(&self.module);
            if module.is_none() {
                self.bytes
                    .store(plugin.compiled_bytes() as u64, Ordering::Release);
                *module = Some(plugin.clone());
            }
        }
        residency.enforce(self);
        Ok(plugin)
    }

    /// Drops the compiled plugin (the lanes drop their instances of it too); returns the bytes it held.
    fn unload(&self) -> u64 {
        // Under the module's lock, as `get` sets both: a plugin is never resident with 0 bytes counted.
        let mut module = lock(&self.module);
        match module.take() {
            Some(_) => self.bytes.swap(0, Ordering::AcqRel),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_plugin_registry::{RegistryConfig, RegistryMetrics};
    use millrace_runtime::{EngineConfig, Runtime};

    /// Lanes mark plugins used while another lane's load unloads the least recently used: the choice must
    /// hold up when the marks move under it (it once sorted on the live marks, and the sort panicked).
    #[test]
    fn unloading_the_least_recently_used_holds_while_other_lanes_mark_plugins_used() {
        let rt = Runtime::new(EngineConfig {
            max_instances: 4,
            ..EngineConfig::default()
        })
        .unwrap();
        let plugin = rt
            .compile(
                &wat::parse_str(
                    r#"(module
                    (memory (export "memory") 1)
                    (func (export "millrace_abi_version") (result i32) i32.const 1)
                    (func (export "millrace_input") (param i32) (result i32) i32.const 1024)
                    (func (export "millrace_process") (param i32 i32) (result i32) i32.const 0))"#,
                )
                .unwrap(),
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::new(
            RegistryConfig::new(dir.path().join("cache")),
            rt,
            RegistryMetrics::unregistered(),
        )
        .unwrap();
        let tokio = tokio::runtime::Runtime::new().unwrap();
        let metrics = Metrics::new().unwrap();
        let each = plugin.compiled_bytes() as u64;
        // Room for 24 of the 64: every admission past that sorts all of them and unloads some.
        let residency = Residency::new(24 * each, store, tokio.handle().clone(), metrics.clone());
        let digest = "sha256:".to_owned() + &"ab".repeat(32);
        let handles: Vec<Arc<ResidentPlugin>> = (0..64)
            .map(|i| {
                let reference = PluginRef::parse(&format!("r.test/p{i}@{digest}")).unwrap();
                residency.admit(reference, plugin.clone())
            })
            .collect();
        assert_eq!(metrics.plugins_resident.get(), 24);

        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let marker = {
            let (handles, done) = (handles.clone(), done.clone());
            std::thread::spawn(move || {
                let mut mark = 0u64;
                while !done.load(Ordering::Acquire) {
                    for h in &handles {
                        // Marks that move backwards and forwards, as fast as the thread can store them.
                        mark = mark
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        h.last_used.store(mark >> 40, Ordering::Release);
                    }
                }
            })
        };
        for round in 0..2_000 {
            for h in &handles {
                h.module.lock().unwrap().get_or_insert_with(|| plugin.clone());
                h.bytes.store(each, Ordering::Release);
            }
            residency.enforce(&handles[round % handles.len()]);
            assert_eq!(metrics.plugins_resident.get(), 24, "round {round}");
            assert!(
                handles[round % handles.len()].is_resident(),
                "the one in use stays"
            );
        }
        done.store(true, Ordering::Release);
        marker.join().unwrap();
    }
}
