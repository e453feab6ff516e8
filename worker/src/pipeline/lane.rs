//! Stage 2 of the pipeline, the lane: a thread that runs records through their binding's plugin. Records
//! wait in the lane per binding and are served fairly (`scheduler.rs`). A lane keeps a plugin instance per
//! binding version it has seen (dropped when that version leaves the binding table), but only its share of
//! the engine's instance slots live at once: the least recently used idle instance is released when a binding
//! needs one, or when the memory of its live instances passes its share of the budget (instances come back in
//! microseconds from the pool). A binding whose compiled plugin was unloaded (`resident.rs`) loses its
//! instances here too, and its plugin is loaded again from the disk cache for its next record. A record never
//! fails because the host ran short of slots or could not load its plugin again: it waits, counted, with its
//! offset held. The lane counts per-binding metrics, forwards
//! plugin log lines to `tracing`, and hands accepted outputs to the router; rejected and failed records go to
//! the dead-letter topic with their kind. A record whose topic belongs to no binding (removed), or to
//! two (ambiguous), is not processed and its offset is not committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use millrace_runtime::{Header, PluginError, PluginInstance, Processed, Record, Verdict};
use prometheus::local::{LocalHistogram, LocalIntCounter};

use super::ack::{InFlight, Share};
use super::router::Router;
use super::scheduler::Scheduler;
use crate::bindings::{self, Ambiguous, Binding, BindingTable, ProcessedBy};
use crate::hashing::FastMap;
use crate::kinds::DeadLetterKind;
use crate::metrics::Metrics;
use crate::resident::{Residency, ResidentPlugin};

/// Metric handles of one binding, resolved once (label lookups are not free on the per-record path).
///
/// The per-record ones count in the lane and reach the shared metrics at [`BindingMetrics::flush`]: the lanes
/// of a binding would otherwise update the same atomics for every record, moving their cache lines between
/// cores (~17 atomic updates per record). A lane flushes every [`METRICS_FLUSH_RECORDS`] records and whenever
/// it would wait, and a slot flushes when it is dropped, so `/metrics` lags a busy lane by about a
/// millisecond of its work.
#[derive(Debug)]
pub(super) struct BindingMetrics {
    records_in: LocalIntCounter,
    accepted: LocalIntCounter,
    rejected: LocalIntCounter,
    failed: LocalIntCounter,
    pub(super) points: LocalIntCounter,
    pub(super) documents: LocalIntCounter,
    duration: LocalHistogram,
    fuel: LocalHistogram,
    logs_dropped: prometheus::IntCounter,
    scheduling_delay: LocalHistogram,
}

/// Records a lane runs between two flushes of its bindings' metrics while it stays busy.
const METRICS_FLUSH_RECORDS: u32 = 256;

impl BindingMetrics {
    fn new(m: &Metrics, name: &str, digest: &str) -> Self {
        let this = Self {
            records_in: m.records_in.with_label_values(&[name]).local(),
            accepted: m.records_processed.with_label_values(&[name, "accepted"]).local(),
            rejected: m.records_processed.with_label_values(&[name, "rejected"]).local(),
            failed: m.records_processed.with_label_values(&[name, "failed"]).local(),
            points: m.outputs.with_label_values(&[name, digest, "point"]).local(),
            documents: m.outputs.with_label_values(&[name, digest, "document"]).local(),
            duration: m.plugin_duration.with_label_values(&[name]).local(),
            fuel: m.plugin_fuel.with_label_values(&[name]).local(),
            logs_dropped: m.plugin_logs_dropped.with_label_values(&[name]),
            scheduling_delay: m.scheduling_delay.with_label_values(&[name]).local(),
        };
        for kind in millrace_runtime::PluginError::RECORD_KINDS {
            if *kind != "instantiate" {
                m.plugin_errors.with_label_values(&[name, kind]);
            }
        }
        this
    }

    /// Adds what this lane counted since the last flush to the shared metrics.
    fn flush(&self) {
        for c in [
            &self.records_in,
            &self.accepted,
            &self.rejected,
            &self.failed,
            &self.points,
            &self.documents,
        ] {
            c.flush();
        }
        for h in [&self.duration, &self.fuel, &self.scheduling_delay] {
            h.flush();
        }
    }
}

impl Drop for BindingMetrics {
    fn drop(&mut self) {
        self.flush();
    }
}

/// What a lane may hold live.
#[derive(Debug, Clone, Copy)]
pub(super) struct Capacity {
    /// Live instances: the lane's share of the engine's slots.
    pub max_live: usize,
    /// Bytes of linear memory of its live instances: the lane's share of the memory budget.
    pub memory: usize,
}

/// A binding version's instance in a lane, with when it was last used (least recently used goes first).
struct Slot {
    instance: PluginInstance,
    /// The compiled plugin the instance runs: when it is unloaded, the slot goes too.
    resident: Arc<ResidentPlugin>,
    metrics: BindingMetrics,
    last_used: u64,
    /// Its metrics counted something since the lane's last flush (it is in `Lane::counted`).
    counted: bool,
}

/// A lane's own handle on a binding, made when the lane routes a topic to it. The lane takes a reference to
/// the binding for every record it runs, and every record keeps who processed it (for its dead letters): on
/// the binding's own counts both lanes and the sinks' threads would write one cache line for every record.
/// These counts are this lane's (the sinks' threads still drop the records' references to `processed_by`).
#[derive(Debug)]
pub(super) struct LaneBinding {
    pub binding: Arc<Binding>,
    /// The binding's name and digest, allocated for this lane.
    pub processed_by: Arc<ProcessedBy>,
}

impl LaneBinding {
    fn new(binding: Arc<Binding>) -> Arc<Self> {
        let processed_by = Arc::new(ProcessedBy {
            binding: binding.name.clone(),
            digest: binding.digest.clone(),
        });
        Arc::new(Self {
            binding,
            processed_by,
        })
    }
}

impl std::ops::Deref for LaneBinding {
    type Target = Binding;

    fn deref(&self) -> &Binding {
        &self.binding
    }
}

/// A processing lane: a thread with its own plugin instances.
pub(super) struct Lane {
    table: Arc<BindingTable>,
    /// One instance per binding version (id); dropped when that version leaves the table.
    instances: FastMap<u64, Slot>,
    seen_generation: u64,
    /// The binding of each topic seen, for the table of `seen_generation`.
    routes: FastMap<Arc<str>, Result<Option<Arc<LaneBinding>>, Ambiguous>>,
    router: Router,
    metrics: Metrics,
    scheduler: Scheduler,
    /// Most instances (and their memory) this lane keeps live.
    capacity: Capacity,
    residency: Arc<Residency>,
    /// The residency generation the instances were last checked against.
    seen_residency: u64,
    /// Use counter for least-recently-used eviction.
    clock: u64,
    /// Set when the pipeline stops: a record waiting for capacity is left for redelivery.
    stop: Arc<AtomicBool>,
    /// Bindings with a CPU budget, by name: their records wait in the lane while the budget is spent.
    budgets: FastMap<Arc<str>, Arc<Binding>>,
    unrouted_no_binding: prometheus::IntCounter,
    unrouted_ambiguous: prometheus::IntCounter,
    /// Records run since the bindings' metrics were last flushed.
    unflushed: u32,
    /// The slots whose metrics counted since then: a flush touches these, not every binding the lane holds.
    counted: Vec<u64>,
}

impl Lane {
    pub(super) fn new(
        table: Arc<BindingTable>,
        router: Router,
        metrics: Metrics,
        capacity: Capacity,
        residency: Arc<Residency>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            table,
            instances: FastMap::default(),
            seen_generation: 0,
            routes: FastMap::default(),
            router,
            scheduler: Scheduler::new(metrics.clone()),
            unrouted_no_binding: metrics.records_unrouted.with_label_values(&["no_binding"]),
            unrouted_ambiguous: metrics.records_unrouted.with_label_values(&["ambiguous_binding"]),
            metrics,
            capacity: Capacity {
                max_live: capacity.max_live.max(1),
                ..capacity
            },
            residency,
            seen_residency: 0,
            clock: 0,
            stop,
            budgets: FastMap::default(),
            unflushed: 0,
            counted: Vec::new(),
        }
    }

    /// Before the lane waits (or stops): the outputs gathered so far go to the sinks, and what the lane
    /// counted goes to the shared metrics.
    fn flush(&mut self) {
        self.router.flush();
        self.flush_metrics();
    }

    fn flush_metrics(&mut self) {
        self.scheduler.flush_gauges();
        // A slot dropped since (its binding or plugin left) flushed its counts as it went.
        for id in self.counted.drain(..) {
            if let Some(slot) = self.instances.get_mut(&id) {
                slot.metrics.flush();
                slot.counted = false;
            }
        }
        self.unflushed = 0;
    }

    /// The lane's thread: takes records as they arrive, queues them per binding and runs them fairly until
    /// its queue is closed and everything queued ran.
    pub(super) fn run(mut self, rx: mpsc::Receiver<Vec<Share>>) {
        let mut open = true;
        loop {
            if self.scheduler.is_empty() {
                // Nothing else to do: the outputs gathered so far go to the sinks before the lane waits.
                self.flush();
                if !open {
                    break;
                }
                match rx.recv() {
                    Ok(batch) => self.enqueue_all(batch),
                    Err(_) => break,
                }
            }
            // Everything that arrived meanwhile joins its binding's queue before the next pick.
            while open {
                match rx.try_recv() {
                    Ok(batch) => self.enqueue_all(batch),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => open = false,
                }
            }
            let budgets = &self.budgets;
            let held = |name: &str| {
                budgets
                    .get(name)
                    .and_then(|b| b.budget.as_ref())
                    .is_some_and(|b| b.is_spent())
            };
            match self.scheduler.next(held) {
                Some((binding, share)) => {
                    let cost = self.process(share);
                    self.scheduler.charge(&binding, cost);
                    self.router.spent(cost);
                    self.unflushed += 1;
                    if self.unflushed >= METRICS_FLUSH_RECORDS {
                        self.flush_metrics();
                    }
                }
                None => {
                    // Nothing to run now: the outputs gathered so far go to the sinks before the lane waits.
                    self.flush();
                    if self.stop.load(Ordering::Acquire) {
                        // Stopping, and only throttled clients' records wait: they are delivered again later.
                        for share in self.scheduler.drain_all() {
                            share.redeliver();
                        }
                    } else if open {
                        // Every client with records waiting spent its CPU budget: wait for records or credit.
                        match rx.recv_timeout(Duration::from_millis(5)) {
                            Ok(batch) => self.enqueue_all(batch),
                            Err(mpsc::RecvTimeoutError::Timeout) => {}
                            Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
                        }
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        self.flush();
    }

    /// Queues a batch of records from the poll thread, in order.
    fn enqueue_all(&mut self, batch: Vec<Share>) {
        for share in batch {
            self.enqueue(share);
        }
        self.scheduler.flush_gauges();
    }

    /// Queues a record under its binding (records of no binding, or of two, under their topic: they are
    /// left unprocessed when their turn comes).
    fn enqueue(&mut self, share: Share) {
        self.follow_table();
        // Borrowed from the lane's cache, not cloned: the binding's (and the topic's) reference counts are
        // shared with the other lanes and threads, and would be written twice per record.
        match cached_route(&mut self.routes, &self.table, share.record().topic()) {
            Ok(Some(b)) => {
                if b.budget.is_some() && !self.budgets.contains_key(&*b.name) {
                    self.budgets.insert(b.name.clone(), b.binding.clone());
                }
                self.scheduler.push(&b.name, b.config.weight, share)
            }
            Ok(None) | Err(_) => {
                let topic = share.record().topic().clone();
                self.scheduler.push(&topic, 1, share)
            }
        }
    }

    /// Catches up with a new binding table: versions that left it lose their instances, topics are routed
    /// afresh.
    fn follow_table(&mut self) {
        let generation = self.table.generation();
        if generation == self.seen_generation {
            return;
        }
        let table = self.table.snapshot();
        self.instances.retain(|id, _| table.iter().any(|b| b.id == *id));
        self.scheduler.forget_idle();
        self.routes.clear();
        self.budgets.clear();
        self.seen_generation = generation;
    }

    /// The binding of `topic`, cached per topic until the table changes.
    fn route(&mut self, topic: &Arc<str>) -> Result<Option<Arc<LaneBinding>>, Ambiguous> {
        cached_route(&mut self.routes, &self.table, topic).clone()
    }

    /// Runs one record: its processing share is given back here, whatever happens. Returns the plugin time.
    fn process(&mut self, share: Share) -> Duration {
        let rec = share.record().clone();
        if rec.tracker().is_revoked() {
            // The partition moved to another worker, which will deliver the record again.
            share.redeliver();
            return Duration::ZERO;
        }
        self.follow_table();
        let binding = match self.route(rec.topic()) {
            Ok(Some(b)) => b,
            Ok(None) => {
                // The binding was removed: the record is not processed and its offset is not committed.
                self.unrouted_no_binding.inc();
                share.abandon();
                return Duration::ZERO;
            }
            Err(_) => {
                // Two bindings match the topic: neither processes it, and its offset is not committed.
                self.unrouted_ambiguous.inc();
                share.abandon();
                return Duration::ZERO;
            }
        };
        let _ = rec.processed_by.set(binding.processed_by.clone());
        let name = binding.config.name.as_str();
        self.follow_residency();
        if !self.instances.contains_key(&binding.id) {
            let Some(plugin) = self.load_plugin(&binding, &rec) else {
                // Stopping while the plugin could not be loaded: delivered again later.
                share.redeliver();
                return Duration::ZERO;
            };
            match plugin.instance(binding.config.limits.clone()) {
                Ok(instance) => {
                    let metrics = BindingMetrics::new(&self.metrics, name, &binding.digest);
                    self.instances.insert(
                        binding.id,
                        Slot {
                            instance,
                            resident: binding.plugin.clone(),
                            metrics,
                            last_used: 0,
                            counted: false,
                        },
                    );
                }
                Err(e) => {
                    share.dead_letter(DeadLetterKind::of_plugin_error(&e), e.to_string());
                    return Duration::ZERO;
                }
            }
        }
        if let Some(slot) = self.instances.get_mut(&binding.id) {
            // The first of the record's metrics: the slot's counts are flushed with the lane's next flush.
            if !slot.counted {
                slot.counted = true;
                self.counted.push(binding.id);
            }
            slot.metrics
                .scheduling_delay
                .observe(rec.taken.elapsed().as_secs_f64());
        }
        let Some(processed) = self.run_with_capacity(&binding, &rec) else {
            // Stopping while waiting for capacity: delivered again by whoever consumes the partition next.
            share.redeliver();
            return Duration::ZERO;
        };
        if let Some(budget) = &binding.budget {
            budget.charge(processed.elapsed);
        }
        let Some(slot) = self.instances.get_mut(&binding.id) else {
            // Inserted above: unreachable; the dropped share would dead-letter the record visibly.
            return processed.elapsed;
        };
        let bm = &slot.metrics;
        bm.duration.observe(processed.elapsed.as_secs_f64());
        bm.fuel.observe(processed.fuel_used as f64);
        if processed.logs_dropped > 0 {
            bm.logs_dropped.inc_by(u64::from(processed.logs_dropped));
        }
        for l in &processed.logs {
            forward_log(name, &rec, l);
        }
        let elapsed = processed.elapsed;
        match processed.result {
            Ok(Verdict::Accepted(outputs)) => {
                bm.accepted.inc();
                self.router.route(&binding, &share, outputs, bm);
                share.finish();
            }
            Ok(Verdict::Rejected { reason }) => {
                bm.rejected.inc();
                share.dead_letter(DeadLetterKind::InvalidInput, reason);
            }
            Err(e) => {
                bm.failed.inc();
                self.metrics
                    .plugin_errors
                    .with_label_values(&[name, e.kind()])
                    .inc();
                share.dead_letter(DeadLetterKind::of_plugin_error(&e), e.to_string());
            }
        }
        elapsed
    }

    /// Drops the instances of plugins that were unloaded since the last look, so that their memory goes.
    fn follow_residency(&mut self) {
        let generation = self.residency.generation();
        if generation != self.seen_residency {
            self.instances.retain(|_, s| s.resident.is_resident());
            self.seen_residency = generation;
        }
    }

    /// The binding's compiled plugin, loaded again if it was unloaded. A load that fails (the disk cache lost
    /// it and the registry is unreachable) is the host's shortage, not the record's: the record waits, counted,
    /// and the load is tried again with backoff; `None` if the pipeline stops or the partition moves meanwhile.
    fn load_plugin(&mut self, binding: &Binding, rec: &InFlight) -> Option<millrace_runtime::Plugin> {
        let mut delay = Duration::from_millis(50);
        loop {
            match binding.plugin.get() {
                Ok(p) => return Some(p),
                Err(e) => {
                    self.metrics
                        .resource_waits
                        .with_label_values(&["plugin_load"])
                        .inc();
                    if let millrace_plugin_registry::RegistryError::Plugin {
                        error: PluginError::NoCapacity { .. },
                        ..
                    } = e
                    {
                        // The load's probe instance found no slot: this lane's idle instances make room.
                        self.release_idle(binding.id, 1, "no_capacity");
                    }
                    tracing::warn!(binding = %binding.name, plugin = %binding.plugin.reference(), error = %e,
                        ?delay, "the binding's plugin could not be loaded again; its record waits");
                }
            }
            if self.stop.load(Ordering::Acquire) || rec.tracker().is_revoked() {
                return None;
            }
            // Earlier records' outputs do not wait with this one.
            self.flush();
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Runs the record on the binding's instance, making room first when this lane holds its share of live
    /// instances. When the engine has no slot anyway (other lanes, a plugin load), the record waits: idle
    /// instances are released and the run is tried again with backoff, counted; `None` if the pipeline stops
    /// meanwhile.
    fn run_with_capacity(&mut self, binding: &Binding, rec: &InFlight) -> Option<Processed> {
        let id = binding.id;
        self.clock += 1;
        let now = self.clock;
        if !self.instances.get(&id).is_some_and(|s| s.instance.is_live()) {
            let live = self.instances.values().filter(|s| s.instance.is_live()).count();
            if live >= self.capacity.max_live {
                self.release_idle(id, live + 1 - self.capacity.max_live, "lane_share");
            }
            self.release_over_memory(id);
        }
        if let Some(slot) = self.instances.get(&id) {
            slot.metrics.records_in.inc();
        }
        let mut delay = Duration::from_millis(5);
        // Time of a first try that passed its deadline (see below), charged with the second.
        let mut timed_out: Option<Duration> = None;
        loop {
            let slot = self.instances.get_mut(&id)?;
            slot.last_used = now;
            slot.resident.touch();
            let headers = Header::borrow_all(&rec.headers);
            let processed = slot.instance.process(&Record {
                topic: rec.topic(),
                partition: rec.partition,
                offset: rec.offset,
                timestamp_ms: rec.timestamp_ms,
                key: rec.key.as_deref(),
                value: rec.value.as_deref(),
                headers: &headers,
            });
            if matches!(processed.result, Err(PluginError::Timeout { .. })) && timed_out.is_none() {
                // The deadline is wall-clock time: a lane thread that a busy host did not run for a while
                // passes it without the plugin's doing. The record gets one more try (on a fresh instance:
                // a trapped one is recycled) before it is blamed; a plugin really too slow times out again,
                // and its binding is charged both tries.
                self.metrics.resource_waits.with_label_values(&["deadline"]).inc();
                timed_out = Some(processed.elapsed);
                continue;
            }
            if !matches!(processed.result, Err(PluginError::NoCapacity { .. })) {
                let mut processed = processed;
                processed.elapsed += timed_out.unwrap_or_default();
                return Some(processed);
            }
            self.metrics
                .resource_waits
                .with_label_values(&["instance_slot"])
                .inc();
            if self.release_idle(id, usize::MAX, "no_capacity") == 0 {
                if self.stop.load(Ordering::Acquire) || rec.tracker().is_revoked() {
                    return None;
                }
                tracing::debug!(binding = %binding.name, ?delay, "no instance slot free; waiting");
                self.flush();
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// Releases idle instances, least recently used first, while the live instances' memory passes the lane's
    /// share of the budget.
    fn release_over_memory(&mut self, keep: u64) {
        let mut used: usize = self.instances.values().map(|s| s.instance.memory_bytes()).sum();
        while used > self.capacity.memory {
            let lru = self
                .instances
                .iter()
                .filter(|(id, s)| **id != keep && s.instance.is_live())
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id);
            let Some(slot) = lru.and_then(|id| self.instances.get_mut(&id)) else {
                break;
            };
            used -= slot.instance.memory_bytes();
            slot.instance.release();
            self.metrics
                .instance_evictions
                .with_label_values(&["memory"])
                .inc();
        }
    }

    /// Releases up to `n` live instances other than `keep`'s, least recently used first; returns how many.
    fn release_idle(&mut self, keep: u64, n: usize, reason: &str) -> usize {
        let mut live: Vec<(u64, u64)> = self
            .instances
            .iter()
            .filter(|(id, s)| **id != keep && s.instance.is_live())
            .map(|(id, s)| (s.last_used, *id))
            .collect();
        live.sort_unstable();
        let mut released = 0;
        for (_, id) in live.into_iter().take(n) {
            if let Some(s) = self.instances.get_mut(&id) {
                s.instance.release();
                released += 1;
            }
        }
        if released > 0 {
            self.metrics
                .instance_evictions
                .with_label_values(&[reason])
                .inc_by(released as u64);
        }
        released
    }
}

fn forward_log(binding: &str, rec: &InFlight, l: &millrace_runtime::LogLine) {
    use millrace_runtime::LogLevel::*;
    let (topic, partition, offset) = (rec.topic().as_ref(), rec.partition, rec.offset);
    // Plugin logs are rate-limited per instance by the runtime.
    match l.level {
        Error => {
            tracing::error!(target: "millrace::plugin", binding, topic, partition, offset, source = ?l.source, "{}", l.message)
        }
        Warn => {
            tracing::warn!(target: "millrace::plugin", binding, topic, partition, offset, source = ?l.source, "{}", l.message)
        }
        Info => {
            tracing::info!(target: "millrace::plugin", binding, topic, partition, offset, source = ?l.source, "{}", l.message)
        }
        Debug | Trace => {
            tracing::debug!(target: "millrace::plugin", binding, topic, partition, offset, source = ?l.source, "{}", l.message)
        }
    }
}

/// The binding of `topic` from a lane's cache (`routes`, cleared when the table changes), looked up in the table
/// the first time (reporting a topic two bindings match).
fn cached_route<'a>(
    routes: &'a mut FastMap<Arc<str>, Result<Option<Arc<LaneBinding>>, Ambiguous>>,
    table: &BindingTable,
    topic: &Arc<str>,
) -> &'a Result<Option<Arc<LaneBinding>>, Ambiguous> {
    if !routes.contains_key(&**topic) {
        let r = bindings::find(&table.snapshot(), topic);
        if let Err(e) = &r {
            table.report_ambiguous(topic, e);
        }
        routes.insert(topic.clone(), r.map(|b| b.map(LaneBinding::new)));
    }
    routes
        .get(&**topic)
        .unwrap_or_else(|| unreachable!("inserted above"))
}
