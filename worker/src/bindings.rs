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

use futures::StreamExt;
use millrace_plugin_registry::{PluginRef, PluginStore};
use millrace_runtime::{Plugin, PluginError, Record, Verdict};

use crate::WorkerError;
use crate::config::{BindingConfig, load_bindings_file};
use crate::metrics::Metrics;
use crate::resident::{Residency, ResidentPlugin};

/// One version of a binding: its configuration and the plugin it runs.
#[derive(Debug)]
pub struct Binding {
    /// Unique per version: a lane keeps one plugin instance per id.
    pub id: u64,
    pub config: BindingConfig,
    /// The compiled plugin, which may leave memory while the binding is idle (`resident.rs`).
    pub plugin: Arc<ResidentPlugin>,
    /// The manifest digest the reference resolved to.
    pub digest: Arc<str>,
    pub name: Arc<str>,
    /// The binding's CPU budget, charged by every lane (`cpu_budget`).
    pub budget: Option<crate::budget::CpuBudget>,
    /// When this version replaced the previous one because the tag moved (not the configuration): a tag that
    /// moves again sooner than `reload.min_version_interval` waits.
    pub moved_at: Option<Instant>,
}

/// Which binding and plugin version processed a record, as its dead letters say (`millrace.binding`,
/// `millrace.plugin.digest`): a binding version's name and digest. Each lane makes one per binding version it
/// routes to (`pipeline::lane::LaneBinding`) and every record it runs takes a reference: one reference, not one
/// to each name, on a count that neither the binding's own fields nor the other lane share.
#[derive(Debug)]
pub struct ProcessedBy {
    pub binding: Arc<str>,
    pub digest: Arc<str>,
}

/// The bindings in force. Readers take a snapshot per record; the reloader replaces it whole.
#[derive(Debug)]
pub struct BindingTable {
    current: RwLock<Arc<Vec<Arc<Binding>>>>,
    generation: AtomicU64,
    /// Set once the first load of the bindings finished (some may have been refused).
    loaded: std::sync::atomic::AtomicBool,
    /// Topics already reported as matched by two bindings (once per topic and table).
    ambiguous: Mutex<HashSet<String>>,
}

impl BindingTable {
    pub fn new(bindings: Vec<Arc<Binding>>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(bindings)),
            generation: AtomicU64::new(1),
            loaded: std::sync::atomic::AtomicBool::new(false),
            ambiguous: Mutex::new(HashSet::new()),
        })
    }

    pub fn snapshot(&self) -> Arc<Vec<Arc<Binding>>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the first load of the bindings finished.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn set_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
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

/// Why a binding's smoke samples did not pass.
#[derive(Debug)]
pub struct SmokeFailure {
    pub message: String,
    /// The host's own shortage, not the plugin's fault (no instance slot free, even after waiting): the
    /// version is tried again at the next reload tick instead of being refused until it changes.
    pub retriable: bool,
}

impl std::fmt::Display for SmokeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Tries for an instance slot this many times, waiting 5 ms doubling to 640 ms between (~1.3 s in all), before
/// a smoke check gives up for this reload tick.
const SMOKE_SLOT_TRIES: u32 = 9;

/// Runs the binding's smoke samples through a fresh instance: each must be accepted with outputs. As on the
/// lanes, the host's shortage is not blamed on the plugin: a sample that passes its wall-clock deadline gets
/// one more try (a busy host may not have run the thread), and a full instance pool is waited for, then
/// reported as retriable.
pub fn smoke_check(config: &BindingConfig, plugin: &Plugin) -> Result<(), SmokeFailure> {
    if config.smoke.is_empty() {
        return Ok(());
    }
    let fail = |message: String| SmokeFailure {
        message,
        retriable: false,
    };
    let mut instance = plugin
        .instance(config.limits.clone())
        .map_err(|e| fail(e.to_string()))?;
    for (i, sample) in config.smoke.iter().enumerate() {
        let record = Record {
            topic: "millrace-smoke-check",
            value: Some(sample.as_bytes()),
            timestamp_ms: Some(0),
            ..Default::default()
        };
        let mut timed_out = false;
        let mut slot_waits = 0;
        let mut delay = std::time::Duration::from_millis(5);
        let result = loop {
            match instance.process(&record).result {
                Err(PluginError::Timeout { .. }) if !timed_out => timed_out = true,
                Err(e @ PluginError::NoCapacity { .. }) => {
                    slot_waits += 1;
                    if slot_waits >= SMOKE_SLOT_TRIES {
                        return Err(SmokeFailure {
                            message: format!("smoke sample {i} found no instance slot free: {e}"),
                            retriable: true,
                        });
                    }
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                other => break other,
            }
        };
        match result {
            Ok(Verdict::Accepted(outputs)) if !outputs.is_empty() => {}
            Ok(Verdict::Accepted(_)) => return Err(fail(format!("smoke sample {i} produced no output"))),
            Ok(Verdict::Rejected { reason }) => {
                return Err(fail(format!("smoke sample {i} was rejected: {reason}")));
            }
            Err(e) => return Err(fail(format!("smoke sample {i} failed ({}): {e}", e.kind()))),
        }
    }
    let memory = instance.memory_bytes() as u64;
    if memory >= config.limits.recycle_memory_bytes {
        tracing::warn!(binding = %config.name, memory_bytes = memory,
            recycle_memory_bytes = config.limits.recycle_memory_bytes,
            "after its smoke samples the plugin holds at least limits.recycle_memory: every record will pay a \
             new instance; raise the binding's limits.recycle_memory above what the plugin holds");
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
        && a.weight == b.weight
        && a.cpu_budget == b.cpu_budget
        && a.point_timestamps == b.point_timestamps
}

/// Keeps the table in line with the bindings' source.
#[derive(Debug)]
pub struct Reloader {
    store: PluginStore,
    residency: Arc<Residency>,
    table: Arc<BindingTable>,
    metrics: Metrics,
    file: Option<PathBuf>,
    static_bindings: Vec<BindingConfig>,
    last_file: Option<Vec<u8>>,
    min_version_interval: std::time::Duration,
    /// No binding may consume it, also after a change (its records would be dead-lettered again, forever).
    dead_letter_topic: String,
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
    /// The reloader with an empty table: the first [`Reloader::reload`] loads the bindings, publishing those
    /// ready while the others still load, so a worker with many bindings joins its group and serves the first
    /// clients at once. A binding that cannot load is refused (logged, counted) like a live change; the others
    /// run. Only an unreadable bindings file fails here.
    pub async fn start(
        store: PluginStore,
        residency: Arc<Residency>,
        metrics: Metrics,
        file: Option<PathBuf>,
        static_bindings: Vec<BindingConfig>,
        min_version_interval: std::time::Duration,
        dead_letter_topic: String,
    ) -> Result<Self, WorkerError> {
        if let Some(path) = &file {
            load_bindings_file(path)?;
        }
        Ok(Self {
            store,
            residency,
            table: BindingTable::new(Vec::new()),
            metrics,
            file,
            static_bindings,
            last_file: None,
            min_version_interval,
            dead_letter_topic,
            refused: HashMap::new(),
        })
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
        // A binding that would consume the dead-letter topic is refused; its current version (if it had one
        // that did not) keeps running.
        let desired: Vec<BindingConfig> = desired
            .into_iter()
            .filter_map(|b| {
                if !b.topics.matches(&self.dead_letter_topic) {
                    return Some(b);
                }
                refusals.push(self.refuse(Refusal {
                    binding: b.name.clone(),
                    reason: "dead_letter_topic",
                    message: format!(
                        "binding `{}` would consume the dead-letter topic `{}`: its dead letters would be \
                         processed again, forever",
                        b.name, self.dead_letter_topic
                    ),
                }));
                current
                    .iter()
                    .find(|c| c.config.name == b.name)
                    .map(|c| c.config.clone())
            })
            .collect();
        let first = !self.table.is_loaded();
        let by_name: HashMap<&str, &Arc<Binding>> =
            current.iter().map(|b| (b.config.name.as_str(), b)).collect();
        // Bindings are prepared (resolved, pulled, compiled, smoke-checked) a few at a time; those ready are
        // published as they come, so the first clients are served while the others still compile.
        let mut done: Vec<Option<Outcome>> = desired.iter().map(|_| None).collect();
        let mut last_publish = Instant::now();
        {
            let this = &*self;
            let by_name = &by_name;
            let jobs: Vec<Prepared<'_>> = desired
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let existing = by_name.get(b.name.as_str()).copied().cloned();
                    Box::pin(async move { (i, this.prepare(b, existing, force).await) }) as Prepared<'_>
                })
                .collect();
            let mut prepared = futures::stream::iter(jobs).buffer_unordered(load_concurrency(first));
            while let Some((i, outcome)) = prepared.next().await {
                done[i] = Some(outcome);
                if last_publish.elapsed() >= PUBLISH_EVERY {
                    last_publish = Instant::now();
                    let partial = assemble(&desired, &done, by_name);
                    this.apply(partial, started, None);
                }
            }
        }
        for outcome in done.iter().flatten() {
            match outcome {
                Outcome::Refused {
                    refusal, remember, ..
                } => {
                    refusals.push(refusal.clone());
                    if let Some(r) = remember {
                        let (config, digest) = &**r;
                        self.refused
                            .insert(config.name.clone(), (config.clone(), digest.clone()));
                    }
                }
                Outcome::Loaded(b) => {
                    self.refused.remove(b.config.name.as_str());
                }
                Outcome::Keep(_) => {}
            }
        }
        let next = assemble(&desired, &done, &by_name);
        self.apply(next, started, Some(&current));
        if first {
            self.table.set_loaded();
            tracing::info!(
                bindings = self.table.snapshot().len(),
                refused = refusals.len(),
                ms = started.elapsed().as_millis() as u64,
                "initial bindings loaded"
            );
        }
        refusals
    }

    /// Publishes `next` if it differs from the table now. `before` is the table when the reload began: the
    /// reload's final table (`before` given) is counted as applied when it differs from that, also when the
    /// changes were already published part by part while other bindings loaded.
    fn apply(&self, next: Vec<Arc<Binding>>, started: Instant, before: Option<&[Arc<Binding>]>) {
        let current = self.table.snapshot();
        let applied = before.is_some_and(|before| differs(&next, before));
        if differs(&next, &current) {
            let removed: Vec<&str> = current
                .iter()
                .filter(|c| !next.iter().any(|n| n.config.name == c.config.name))
                .map(|c| c.config.name.as_str())
                .collect();
            if !removed.is_empty() {
                tracing::info!(bindings = ?removed, "bindings removed");
            }
            self.publish_info(&current, &next);
            if before.is_none() {
                tracing::info!(
                    ms = started.elapsed().as_millis() as u64,
                    "bindings applied so far (more are loading)"
                );
            }
            self.table.replace(next);
        }
        if applied {
            self.metrics
                .reloads
                .with_label_values(&["applied", "changed"])
                .inc();
            self.metrics
                .reload_duration
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(ms = started.elapsed().as_millis() as u64, "bindings applied");
        }
    }

    /// Resolves, loads and checks one desired binding against its current version.
    async fn prepare(&self, b: &BindingConfig, existing: Option<Arc<Binding>>, force: bool) -> Outcome {
        let refused = |reason: &'static str, message: String, remember: Option<String>| Outcome::Refused {
            keep: existing.clone(),
            refusal: self.refuse(Refusal {
                binding: b.name.clone(),
                reason,
                message,
            }),
            remember: remember.map(|d| Box::new((b.clone(), d))),
        };
        let reference = match PluginRef::parse(&b.plugin) {
            Ok(r) => r,
            Err(e) => return refused("invalid_reference", e.to_string(), None),
        };
        let digest = match self.store.resolve(&reference).await {
            Ok(r) => r.manifest_digest,
            Err(e) => return refused(e.kind(), e.to_string(), None),
        };
        if let Some(old) = &existing
            && same_config(&old.config, b)
            && *old.digest == *digest
        {
            return Outcome::Keep(existing);
        }
        if !force
            && let Some(old) = &existing
            && same_config(&old.config, b)
            && old
                .moved_at
                .is_some_and(|t| t.elapsed() < self.min_version_interval)
        {
            // Only the tag moved, again, soon after the last move: the change waits.
            self.metrics
                .reloads
                .with_label_values(&["deferred", "too_frequent"])
                .inc();
            tracing::debug!(binding = %b.name, digest = %digest, running = %old.digest,
                "the tag moved again within reload.min_version_interval; the change waits");
            return Outcome::Keep(existing);
        }
        if !force
            && let Some((config, refused_digest)) = self.refused.get(b.name.as_str())
            && same_config(config, b)
            && *refused_digest == *digest
        {
            return Outcome::Keep(existing);
        }
        // New or changed: load in the background of the running pipeline, then check it.
        let loaded = match self.store.load(&reference.pinned(&digest)).await {
            Ok(l) => l,
            Err(e) => {
                let remember = (!e.is_retriable()).then(|| digest.to_string());
                return refused(e.kind(), e.to_string(), remember);
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
            Ok((Err(failure), _)) => {
                let remember = (!failure.retriable).then(|| digest.to_string());
                return refused("smoke_check", failure.message, remember);
            }
            Err(e) => return refused("smoke_check", e.to_string(), None),
        };
        tracing::info!(binding = %b.name, plugin = %reference, digest = %digest,
            source = ?loaded.source, ms = loaded.elapsed.as_millis() as u64,
            previous = existing.as_ref().map(|e| e.digest.to_string()), "binding loaded");
        let (name, digest): (Arc<str>, Arc<str>) = (Arc::from(b.name.as_str()), Arc::from(digest.as_str()));
        Outcome::Loaded(Arc::new(Binding {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name,
            config: b.clone(),
            plugin: self.residency.admit(reference.pinned(&digest), plugin),
            digest,
            budget: b.cpu_budget.map(crate::budget::CpuBudget::new),
            moved_at: existing
                .as_ref()
                .filter(|old| same_config(&old.config, b))
                .map(|_| Instant::now()),
        }))
    }
}

/// What became of one desired binding in a reload.
#[derive(Debug)]
enum Outcome {
    /// Unchanged, or a version refused before: the current one (if any) stays.
    Keep(Option<Arc<Binding>>),
    /// A new version, checked.
    Loaded(Arc<Binding>),
    /// Refused now: the current one (if any) stays; `remember` marks a version not to try again until it
    /// changes (a retry cannot fix it).
    Refused {
        keep: Option<Arc<Binding>>,
        refusal: Refusal,
        remember: Option<Box<(BindingConfig, String)>>,
    },
}

/// Whether two tables hold different binding versions.
fn differs(a: &[Arc<Binding>], b: &[Arc<Binding>]) -> bool {
    a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.id != y.id)
}

/// One binding being prepared, with its place in the desired list.
type Prepared<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = (usize, Outcome)> + Send + 'a>>;

/// Bindings prepared at a time (each compilation takes one core): at start as many as cores (2 to 8), so that
/// every client is served soon; later, for live changes, half of the cores, leaving the others to the lanes.
fn load_concurrency(first: bool) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    if first {
        cores.clamp(2, 8)
    } else {
        (cores / 2).clamp(1, 4)
    }
}

/// How often a reload publishes the bindings it has ready while others still load.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The table for the desired bindings: those prepared as their outcome says, the others as they are now
/// (a binding not yet prepared keeps its current version, or is not there yet).
fn assemble(
    desired: &[BindingConfig],
    done: &[Option<Outcome>],
    current: &HashMap<&str, &Arc<Binding>>,
) -> Vec<Arc<Binding>> {
    desired
        .iter()
        .zip(done)
        .filter_map(|(b, outcome)| match outcome {
            Some(Outcome::Loaded(n)) => Some(n.clone()),
            Some(Outcome::Keep(keep) | Outcome::Refused { keep, .. }) => keep.clone(),
            None => current.get(b.name.as_str()).map(|c| (*c).clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_runtime::{EngineConfig, Limits, Runtime};

    fn binding_with_smoke() -> BindingConfig {
        crate::config::parse_bindings(
            r#"
            [[bindings]]
            topic = "client-acme"
            plugin = "127.0.0.1:15000/acme/router:v1"
            allowed_measurements = ["m"]
            smoke = ['{"v":1}']
            "#,
            config::FileFormat::Toml,
            "bindings.toml",
        )
        .unwrap()
        .remove(0)
    }

    /// A module that writes one point per record (`m v=1`), or none when it is `quiet`.
    fn plugin(rt: &Runtime, quiet: bool) -> Plugin {
        let body = if quiet {
            "i32.const 0"
        } else {
            "(drop (call $emit (i32.const 0) (i32.const 5))) i32.const 0"
        };
        rt.compile(
            &wat::parse_str(format!(
                r#"(module
                    (import "millrace" "emit_point" (func $emit (param i32 i32) (result i32)))
                    (memory (export "memory") 1)
                    (data (i32.const 0) "m v=1")
                    (func (export "millrace_abi_version") (result i32) i32.const 1)
                    (func (export "millrace_input") (param i32) (result i32) i32.const 1024)
                    (func (export "millrace_process") (param i32 i32) (result i32) {body}))"#
            ))
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_smoke_check_that_finds_no_instance_slot_is_retriable_and_a_failing_sample_is_not() {
        let rt = Runtime::new(EngineConfig {
            max_instances: 1,
            ..EngineConfig::default()
        })
        .unwrap();
        let config = binding_with_smoke();
        smoke_check(&config, &plugin(&rt, false)).expect("a plugin that writes passes");
        let quiet = smoke_check(&config, &plugin(&rt, true)).unwrap_err();
        assert!(!quiet.retriable, "the plugin's fault: {quiet}");
        assert!(quiet.message.contains("produced no output"), "{quiet}");

        // The lanes hold every slot of the pool: the host's shortage, tried again at the next tick.
        let good = plugin(&rt, false);
        let mut holder = good.instance(Limits::default()).unwrap();
        holder.prepare().unwrap();
        let busy = smoke_check(&config, &good).unwrap_err();
        assert!(busy.retriable, "{busy}");
        assert!(busy.message.contains("no instance slot"), "{busy}");
        drop(holder);
        smoke_check(&config, &good).expect("passes once a slot is free");
    }
}
