//! The whole path of a record, in one place:
//!
//! 1. **source** (`poll_loop`): the consumer thread takes a record from an assigned partition, registers it
//!    with the partition's tracker, and hands it to the lane its partition maps to (records of a partition
//!    stay in order; partitions spread over the lanes, one per core);
//! 2. **runtime** (`Lane::process`): the lane runs the record through its binding's plugin instance;
//! 3. **router** (`Lane::route`): each output is checked against the binding's allowed indices and
//!    measurements, given a deterministic id / default timestamp, and queued to its sinks; rejected and failed
//!    records, and outputs not allowed, go to the dead-letter topic;
//! 4. **sinks** (`sinks::Sinks`): batches are written; each item is acknowledged (`OutputAck`) as written, or
//!    dead-lettered when the store refuses it;
//! 5. **acks -> offsets**: when the last item of a record is acknowledged its completion finishes it in the
//!    tracker; the poll loop stores each partition's committable offset (never past an unfinished record) and
//!    librdkafka commits it. Partitions with too many records in flight are paused until they drain.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use millrace_plugin_registry::{PluginStore, RegistryMetrics};
use millrace_runtime::{EngineConfig, Header, Output, PluginInstance, Record, Runtime, Verdict};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Headers;
use rdkafka::topic_partition_list::TopicPartitionList;

use crate::WorkerError;
use crate::bindings::{self, Binding, BindingTable, Reloader};
use crate::config::WorkerConfig;
use crate::dlq::DeadLetters;
use crate::metrics::Metrics;
use crate::sinks::{self, Acker, Item, Payload, SinkSender};
use crate::source::{self, SourceContext, Trackers, lock};
use crate::tracker::{Completion, PartitionTracker};

/// A record between the moment it was taken and the moment all its outputs were acknowledged.
#[derive(Debug)]
pub struct InFlight {
    pub completion: Arc<Completion>,
    /// The binding and plugin version (manifest digest) that processed the record, set by its lane.
    pub plugin: std::sync::OnceLock<(Arc<str>, Arc<str>)>,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub dead_lettered: AtomicBool,
    pub taken: Instant,
}

/// What every acknowledgement handle needs, shared.
#[derive(Debug)]
struct AckShared {
    dlq: DeadLetters,
}

/// The acknowledgement handle of one output queued to a sink.
#[derive(Debug)]
pub struct OutputAck {
    record: Arc<InFlight>,
    shared: Arc<AckShared>,
}

impl Acker for OutputAck {
    fn ok(self) {
        self.record.completion.done();
    }

    fn rejected(self, reason: String) {
        self.shared
            .dlq
            .send(self.record.clone(), "store_rejected", reason);
    }
}

/// Metric handles of one binding, resolved once (label lookups are not free on the per-record path).
#[derive(Debug)]
struct BindingMetrics {
    records_in: prometheus::IntCounter,
    accepted: prometheus::IntCounter,
    rejected: prometheus::IntCounter,
    failed: prometheus::IntCounter,
    points: prometheus::IntCounter,
    documents: prometheus::IntCounter,
    duration: prometheus::Histogram,
    fuel: prometheus::Histogram,
    logs_dropped: prometheus::IntCounter,
}

impl BindingMetrics {
    fn new(m: &Metrics, name: &str, digest: &str) -> Self {
        let this = Self {
            records_in: m.records_in.with_label_values(&[name]),
            accepted: m.records_processed.with_label_values(&[name, "accepted"]),
            rejected: m.records_processed.with_label_values(&[name, "rejected"]),
            failed: m.records_processed.with_label_values(&[name, "failed"]),
            points: m.outputs.with_label_values(&[name, digest, "point"]),
            documents: m.outputs.with_label_values(&[name, digest, "document"]),
            duration: m.plugin_duration.with_label_values(&[name]),
            fuel: m.plugin_fuel.with_label_values(&[name]),
            logs_dropped: m.plugin_logs_dropped.with_label_values(&[name]),
        };
        for kind in [
            "out_of_fuel",
            "timeout",
            "memory_limit",
            "trap",
            "abi_violation",
            "output_limit",
            "invalid_output",
        ] {
            m.plugin_errors.with_label_values(&[name, kind]);
        }
        this
    }
}

/// Where a lane sends outputs.
#[derive(Clone, Debug)]
struct Routes {
    /// Every configured InfluxDB sink gets every point.
    points: Vec<SinkSender<OutputAck>>,
    documents: Option<SinkSender<OutputAck>>,
}

/// A processing lane: a thread with its own plugin instances.
struct Lane {
    table: Arc<BindingTable>,
    /// One instance per binding version (id); dropped when that version leaves the table.
    instances: HashMap<u64, (PluginInstance, BindingMetrics)>,
    seen_generation: u64,
    routes: Routes,
    dlq: DeadLetters,
    shared: Arc<AckShared>,
    metrics: Metrics,
}

impl Lane {
    fn process(&mut self, rec: Arc<InFlight>) {
        if rec.completion.tracker().is_revoked() {
            return; // the partition moved to another worker, which will deliver the record again
        }
        let generation = self.table.generation();
        let table = self.table.snapshot();
        if generation != self.seen_generation {
            // Versions that left the table: their instances go.
            self.instances.retain(|id, _| table.iter().any(|b| b.id == *id));
            self.seen_generation = generation;
        }
        let Some(binding) = bindings::find(&table, &rec.topic) else {
            // The binding was removed: the record is not processed and its offset is not committed.
            rec.completion.tracker().abandon(rec.offset);
            return;
        };
        let _ = rec.plugin.set((binding.name.clone(), binding.digest.clone()));
        let name = binding.config.name.as_str();
        if !self.instances.contains_key(&binding.id) {
            match binding.plugin.instance(binding.config.limits.clone()) {
                Ok(i) => {
                    let bm = BindingMetrics::new(&self.metrics, name, &binding.digest);
                    self.instances.insert(binding.id, (i, bm));
                }
                Err(e) => {
                    rec.completion.add(1);
                    self.dlq.send(rec.clone(), e.kind(), e.to_string());
                    rec.completion.done();
                    return;
                }
            }
        }
        let Some((instance, bm)) = self.instances.get_mut(&binding.id) else {
            return;
        };
        bm.records_in.inc();
        let headers: Vec<Header<'_>> = rec
            .headers
            .iter()
            .map(|(n, v)| Header {
                name: n,
                value: v.as_deref(),
            })
            .collect();
        let processed = instance.process(&Record {
            topic: &rec.topic,
            partition: rec.partition,
            offset: rec.offset,
            timestamp_ms: rec.timestamp_ms,
            key: rec.key.as_deref(),
            value: rec.value.as_deref(),
            headers: &headers,
        });
        bm.duration.observe(processed.elapsed.as_secs_f64());
        bm.fuel.observe(processed.fuel_used as f64);
        if processed.logs_dropped > 0 {
            bm.logs_dropped.inc_by(u64::from(processed.logs_dropped));
        }
        for l in &processed.logs {
            forward_log(name, &rec, l);
        }
        match processed.result {
            Ok(Verdict::Accepted(outputs)) => {
                bm.accepted.inc();
                let (points, documents) = (bm.points.clone(), bm.documents.clone());
                self.route(&binding, &rec, outputs, &points, &documents);
            }
            Ok(Verdict::Rejected { reason }) => {
                bm.rejected.inc();
                rec.completion.add(1);
                self.dlq.send(rec.clone(), "invalid_input", reason);
            }
            Err(e) => {
                bm.failed.inc();
                self.metrics
                    .plugin_errors
                    .with_label_values(&[name, e.kind()])
                    .inc();
                rec.completion.add(1);
                self.dlq.send(rec.clone(), e.kind(), e.to_string());
            }
        }
        rec.completion.done(); // the processing token
    }

    /// Checks each output against the binding, gives it its id or timestamp, and queues it.
    fn route(
        &self,
        binding: &Binding,
        rec: &Arc<InFlight>,
        outputs: Vec<Output>,
        point_counter: &prometheus::IntCounter,
        document_counter: &prometheus::IntCounter,
    ) {
        // One chunk per sink: index 0.. for the InfluxDB sinks, then the Elasticsearch sink.
        let n_sinks = self.routes.points.len() + 1;
        let mut chunks: Vec<Vec<Item<OutputAck>>> = (0..n_sinks).map(|_| Vec::new()).collect();
        let mut queued: u32 = 0;
        let mut refused: Vec<String> = Vec::new();
        let default_ts_ns = rec
            .timestamp_ms
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64)
            })
            .saturating_mul(1_000_000);
        for (i, output) in outputs.into_iter().enumerate() {
            match output {
                Output::Point(p) => {
                    point_counter.inc();
                    if !binding.config.allows_measurement(p.measurement()) {
                        refused.push(format!(
                            "output {i}: measurement `{}` is not allowed",
                            p.measurement()
                        ));
                    } else if self.routes.points.is_empty() {
                        refused.push(format!("output {i}: a point, and no InfluxDB sink is configured"));
                    } else {
                        let line = p.line_with_default_timestamp(default_ts_ns);
                        let last = self.routes.points.len() - 1;
                        for chunk in chunks.iter_mut().take(last) {
                            chunk.push(self.item(rec, Payload::Line(line.clone())));
                        }
                        chunks[last].push(self.item(rec, Payload::Line(line)));
                        queued += self.routes.points.len() as u32;
                    }
                }
                Output::Document(d) => {
                    document_counter.inc();
                    if !binding.config.allows_index(d.index()) {
                        refused.push(format!("output {i}: index `{}` is not allowed", d.index()));
                    } else if self.routes.documents.is_some() {
                        let id = d.id().map_or_else(
                            || format!("{}-{}-{}-{i}", rec.topic, rec.partition, rec.offset),
                            str::to_string,
                        );
                        let (index, body, _) = d.into_parts();
                        chunks[n_sinks - 1].push(self.item(rec, Payload::Document { index, id, body }));
                        queued += 1;
                    } else {
                        refused.push(format!(
                            "output {i}: a document, and no Elasticsearch sink is configured"
                        ));
                    }
                }
            }
        }
        rec.completion.add(queued + u32::from(!refused.is_empty()));
        for (k, chunk) in chunks.into_iter().enumerate() {
            if chunk.is_empty() {
                continue;
            }
            let sender = if k < self.routes.points.len() {
                &self.routes.points[k]
            } else {
                match &self.routes.documents {
                    Some(s) => s,
                    None => continue,
                }
            };
            // Blocks while the sink's queue is full: backpressure, and the partition pauses behind it.
            if let Err(e) = sender.blocking_send(chunk) {
                // The sink is gone (shutdown): the record stays unfinished and is delivered again.
                tracing::warn!(error = %e, "sink queue closed");
            }
        }
        if !refused.is_empty() {
            self.dlq
                .send(rec.clone(), "output_not_allowed", refused.join("; "));
        }
    }
}

impl Lane {
    fn item(&self, rec: &Arc<InFlight>, payload: Payload) -> Item<OutputAck> {
        Item {
            payload,
            ack: OutputAck {
                record: rec.clone(),
                shared: self.shared.clone(),
            },
        }
    }
}

fn forward_log(binding: &str, rec: &InFlight, l: &millrace_runtime::LogLine) {
    use millrace_runtime::LogLevel::*;
    let (topic, partition, offset) = (rec.topic.as_ref(), rec.partition, rec.offset);
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

/// Readiness inputs for `/readyz`.
#[derive(Clone, Debug)]
pub struct Readiness {
    pub joined: Arc<AtomicBool>,
    pub table: Arc<BindingTable>,
    pub stores: Vec<(&'static str, crate::http::Pinger)>,
}

/// Runs a worker until `shutdown` resolves: loads plugins, serves `/metrics`, `/healthz` and `/readyz`,
/// consumes, processes, writes, commits; then drains and commits what is in flight and leaves the group.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let metrics = Metrics::new()?;
    let registry_metrics = RegistryMetrics::new(&metrics.registry)?;
    let runtime = Runtime::new(EngineConfig {
        max_instances: config.pipeline.max_instances,
        ..EngineConfig::default()
    })?;
    let store = PluginStore::new(config.registry.clone(), runtime, registry_metrics).map_err(|error| {
        WorkerError::Plugin {
            binding: "*".into(),
            error: Box::new(error),
        }
    })?;
    let mut reloader = Reloader::start(
        store,
        metrics.clone(),
        config.bindings_file.clone(),
        config.bindings.clone(),
    )
    .await?;
    let table = reloader.table();

    let handle = tokio::runtime::Handle::current();
    let dlq = DeadLetters::new(
        &config.kafka,
        &config.dead_letter_topic,
        metrics.clone(),
        handle.clone(),
    )?;

    // Sinks: every configured store, each with its queue and its driver task.
    let sinks = sinks::Sinks::<OutputAck>::start(&config, &metrics)?;
    metrics.initialize(&sinks.names());
    let sinks::Sinks {
        points,
        documents,
        pingers: stores,
        tasks: sink_tasks,
    } = sinks;
    let routes = Routes { points, documents };

    // Observability endpoints.
    let joined = Arc::new(AtomicBool::new(false));
    let readiness = Readiness {
        joined: joined.clone(),
        table: table.clone(),
        stores,
    };
    let http = crate::http::serve(config.metrics_address, metrics.clone(), readiness).await?;

    // Lanes.
    let mut lane_senders = Vec::new();
    let mut lane_threads = Vec::new();
    let shared = Arc::new(AckShared { dlq: dlq.clone() });
    for i in 0..config.pipeline.lanes {
        let (tx, rx) = mpsc::channel::<Arc<InFlight>>();
        let mut lane = Lane {
            table: table.clone(),
            instances: HashMap::new(),
            seen_generation: 0,
            routes: routes.clone(),
            dlq: dlq.clone(),
            shared: shared.clone(),
            metrics: metrics.clone(),
        };
        let t = std::thread::Builder::new()
            .name(format!("millrace-lane-{i}"))
            .spawn(move || {
                while let Ok(rec) = rx.recv() {
                    lane.process(rec);
                }
            })
            .map_err(|source| WorkerError::Io {
                what: "starting a lane thread".into(),
                source,
            })?;
        lane_senders.push(tx);
        lane_threads.push(t);
    }
    drop(routes);

    // The consumer thread.
    let stop = Arc::new(AtomicBool::new(false));
    let trackers: Trackers = Default::default();
    let context = SourceContext {
        trackers: trackers.clone(),
        metrics: metrics.clone(),
        drain_timeout: config.pipeline.drain_timeout,
        joined,
    };
    let consumer = source::consumer(&config, &bindings::subscriptions(&table.snapshot()), context)?;
    let poll = {
        let stop = stop.clone();
        let table = table.clone();
        let metrics = metrics.clone();
        let max_in_flight = config.pipeline.max_in_flight_per_partition;
        let drain_timeout = config.pipeline.drain_timeout;
        std::thread::Builder::new()
            .name("millrace-poll".into())
            .spawn(move || {
                poll_loop(
                    consumer,
                    trackers,
                    lane_senders,
                    table,
                    metrics,
                    stop,
                    max_in_flight,
                    drain_timeout,
                )
            })
            .map_err(|source| WorkerError::Io {
                what: "starting the poll thread".into(),
                source,
            })?
    };

    // Live changes: the bindings file and moved tags are checked every interval, and at once on SIGHUP.
    let reloads = {
        let interval = config.reload_interval;
        tokio::spawn(async move {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let force = tokio::select! {
                    _ = tokio::time::sleep(interval) => false,
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                        tracing::info!("SIGHUP: reloading bindings");
                        true
                    }
                };
                reloader.reload(force).await;
            }
        })
    };

    shutdown.await;
    reloads.abort();
    tracing::info!("shutting down: draining in-flight records");
    stop.store(true, Ordering::Release);
    let _ = tokio::task::spawn_blocking(move || poll.join()).await;
    // Lanes finish their queues, then the sinks theirs. A store that is still down after the grace period
    // keeps its records unfinished: they were not committed and will be delivered again.
    let lanes_done = tokio::task::spawn_blocking(move || {
        for t in lane_threads {
            let _ = t.join();
        }
    });
    sink_tasks.finish(Duration::from_secs(10)).await;
    let _ = lanes_done.await;
    let d = dlq.clone();
    let _ = tokio::task::spawn_blocking(move || d.flush(Duration::from_secs(10))).await;
    http.abort();
    tracing::info!("stopped");
    Ok(())
}

/// The consumer thread: takes records, dispatches them to lanes, stores offsets, pauses and resumes.
#[allow(clippy::too_many_arguments)]
fn poll_loop(
    consumer: BaseConsumer<SourceContext>,
    trackers: Trackers,
    lanes: Vec<mpsc::Sender<Arc<InFlight>>>,
    table: Arc<BindingTable>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    max_in_flight: usize,
    drain_timeout: Duration,
) {
    let mut paused: HashSet<(String, i32)> = HashSet::new();
    let mut last_housekeeping = Instant::now();
    // Per topic: its name, binding and plugin digest, shared by every record; per partition: the tracker.
    struct TopicInfo {
        name: Arc<str>,
        partitions: HashMap<i32, Arc<PartitionTracker>>,
    }
    let mut topics: HashMap<String, TopicInfo> = HashMap::new();
    let mut generation = table.generation();
    let mut subscribed = bindings::subscriptions(&table.snapshot());
    while !stop.load(Ordering::Acquire) {
        // Bindings changed: subscribe to the new set of topics (a rebalance hands out their partitions).
        if table.generation() != generation {
            generation = table.generation();
            let subs = bindings::subscriptions(&table.snapshot());
            if subs != subscribed {
                let refs: Vec<&str> = subs.iter().map(String::as_str).collect();
                match consumer.subscribe(&refs) {
                    Ok(()) => {
                        tracing::info!(topics = ?subs, "subscription changed");
                        subscribed = subs;
                    }
                    Err(e) => tracing::error!(error = %e, "changing the subscription"),
                }
            }
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(msg)) => {
                let topic = msg.topic();
                if !topics.contains_key(topic) {
                    topics.insert(
                        topic.to_string(),
                        TopicInfo {
                            name: Arc::from(topic),
                            partitions: HashMap::new(),
                        },
                    );
                }
                let Some(info) = topics.get_mut(topic) else {
                    continue;
                };
                let partition = msg.partition();
                let tracker = match info.partitions.get(&partition) {
                    Some(t) if !t.is_revoked() => t.clone(),
                    _ => {
                        let t = lock(&trackers)
                            .entry((topic.to_string(), partition))
                            .or_insert_with(|| PartitionTracker::new(topic, partition))
                            .clone();
                        info.partitions.insert(partition, t.clone());
                        t
                    }
                };
                let headers = msg
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                let rec = Arc::new(InFlight {
                    completion: Completion::timed(
                        tracker,
                        msg.offset(),
                        msg.timestamp().to_millis(),
                        metrics.record_latency.clone(),
                    ),
                    plugin: std::sync::OnceLock::new(),
                    topic: info.name.clone(),
                    partition,
                    offset: msg.offset(),
                    timestamp_ms: msg.timestamp().to_millis(),
                    key: msg.key().map(<[u8]>::to_vec),
                    value: msg.payload().map(<[u8]>::to_vec),
                    headers,
                    dead_lettered: AtomicBool::new(false),
                    taken: Instant::now(),
                });
                let lane = lane_of(topic, partition, lanes.len());
                if lanes[lane].send(rec).is_err() {
                    tracing::error!("a lane stopped; stopping");
                    break;
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
        if last_housekeeping.elapsed() >= Duration::from_millis(50) {
            last_housekeeping = Instant::now();
            housekeeping(&consumer, &trackers, &mut paused, &metrics, max_in_flight);
        }
    }

    // Shutdown: take no more records, drain what is in flight, commit, leave the group.
    if let Ok(assignment) = consumer.assignment() {
        let _ = consumer.pause(&assignment);
    }
    let all: Vec<Arc<PartitionTracker>> = lock(&trackers).values().cloned().collect();
    let drained = source::drain(&all, drain_timeout);
    source::store_offsets(&consumer, &all);
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final commit");
    }
    tracing::info!(drained, "offsets committed; leaving the group");
    consumer.unsubscribe();
    drop(consumer);
    drop(lanes);
}

/// Offsets to store, partitions to pause or resume, gauges.
fn housekeeping(
    consumer: &BaseConsumer<SourceContext>,
    trackers: &Trackers,
    paused: &mut HashSet<(String, i32)>,
    metrics: &Metrics,
    max_in_flight: usize,
) {
    let all: Vec<Arc<PartitionTracker>> = lock(trackers).values().cloned().collect();
    source::store_offsets(consumer, &all);
    let mut in_flight = 0;
    let mut to_pause = TopicPartitionList::new();
    let mut to_resume = TopicPartitionList::new();
    let assigned: HashSet<(String, i32)> = all.iter().map(|t| (t.topic.clone(), t.partition)).collect();
    paused.retain(|k| assigned.contains(k));
    for t in &all {
        let n = t.in_flight();
        in_flight += n;
        let key = (t.topic.clone(), t.partition);
        if n >= max_in_flight && !paused.contains(&key) {
            to_pause.add_partition(&t.topic, t.partition);
            paused.insert(key);
        } else if n <= max_in_flight / 2 && paused.contains(&key) {
            to_resume.add_partition(&t.topic, t.partition);
            paused.remove(&key);
        }
    }
    if to_pause.count() > 0 {
        tracing::info!(
            partitions = to_pause.count(),
            "pausing partitions: too many records in flight"
        );
        if let Err(e) = consumer.pause(&to_pause) {
            tracing::warn!(error = %e, "pause");
        }
    }
    if to_resume.count() > 0 {
        tracing::info!(partitions = to_resume.count(), "resuming partitions");
        if let Err(e) = consumer.resume(&to_resume) {
            tracing::warn!(error = %e, "resume");
        }
    }
    metrics.in_flight.set(in_flight as i64);
    metrics.paused_partitions.set(paused.len() as i64);
}

/// Lane of a partition: records of one partition always go to the same lane, in order.
fn lane_of(topic: &str, partition: i32, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    partition.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}
