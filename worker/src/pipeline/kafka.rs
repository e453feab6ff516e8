//! Stages 1 and 6 of the pipeline, the Kafka side: a consumer in the group with cooperative-sticky
//! assignment and regex subscriptions; the poll thread that takes records, registers them with their
//! partition's tracker and hands them to the lane of their partition; offsets stored by the pipeline (never
//! automatically, never past an unfinished record) and committed in the background; partitions paused while
//! too many of their records are in flight; and the rebalance hooks that drain a revoked partition's in-flight
//! records, store its final offset and commit before letting it go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Headers;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::ack::{Fallback, InFlight, Origin, RecordData, Share};
use super::backpressure::{self, Backpressure, Load};
use super::offsets::PartitionTracker;
use super::topic_ids::{self, TopicId};
use crate::WorkerError;
use crate::bindings::{self, BindingTable};
use crate::config::WorkerConfig;
use crate::hashing::FastMap;
use crate::metrics::Metrics;

/// Assigned partitions and their trackers, shared by the poll loop and the rebalance hooks.
pub type Trackers = Arc<Mutex<HashMap<(String, i32), Arc<PartitionTracker>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// librdkafka callbacks: rebalances and statistics.
#[derive(Debug)]
pub struct SourceContext {
    pub trackers: Trackers,
    pub metrics: Metrics,
    pub drain_timeout: Duration,
    /// Set once the first assignment (possibly empty) arrived: the worker is in the group.
    pub joined: Arc<AtomicBool>,
    /// Set when the worker stops: the shutdown already drained once, so the revoke that leaving the group
    /// starts does not wait a second `drain_timeout` (the grace period is one drain plus a few seconds).
    pub stopping: Arc<AtomicBool>,
}

/// Waits until the trackers have nothing in flight, or the timeout.
pub fn drain(trackers: &[Arc<PartitionTracker>], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left: usize = trackers.iter().map(|t| t.in_flight()).sum();
        if left == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                in_flight = left,
                ?timeout,
                "drain timed out; those records will be delivered again"
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Moves the committable offset of every partition of `trackers` with nothing in flight to where the consumer
/// stands, over the transaction markers (and aborted records) it skipped: see
/// [`PartitionTracker::pass_skipped`]. Call it on the poll thread (or in its rebalance callbacks), between
/// polls: every record the consumer handed out is then already taken.
pub fn pass_skipped<C: ConsumerContext>(consumer: &BaseConsumer<C>, trackers: &[Arc<PartitionTracker>]) {
    let idle: HashMap<(&str, i32), &Arc<PartitionTracker>> = trackers
        .iter()
        .filter(|t| !t.is_revoked() && t.in_flight() == 0)
        .map(|t| ((t.topic.as_str(), t.partition), t))
        .collect();
    if idle.is_empty() {
        return;
    }
    let Ok(positions) = consumer.position() else {
        return;
    };
    for e in positions.elements() {
        if let Offset::Offset(position) = e.offset()
            && let Some(t) = idle.get(&(e.topic(), e.partition()))
            && t.pass_skipped(position)
        {
            tracing::debug!(
                topic = e.topic(),
                partition = e.partition(),
                position,
                "committable offset moved over records the consumer skipped (transaction markers)"
            );
        }
    }
}

/// Stores the committable offsets of `trackers` in the consumer (committed by the next commit). An offset is
/// marked stored only once the consumer took it: one whose store failed is stored again next time. When the
/// call fails as a whole (one partition was just revoked), the partitions are stored one by one, so that one
/// partition's failure does not hold the others back.
pub fn store_offsets<C: ConsumerContext>(consumer: &BaseConsumer<C>, trackers: &[Arc<PartitionTracker>]) {
    let due: Vec<(&Arc<PartitionTracker>, i64)> = trackers
        .iter()
        .filter(|t| !t.is_revoked())
        .filter_map(|t| Some((t, t.to_store()?)))
        .collect();
    if due.is_empty() {
        return;
    }
    let list = |items: &[(&Arc<PartitionTracker>, i64)]| {
        let mut tpl = TopicPartitionList::new();
        for (t, o) in items {
            let _ = tpl.add_partition_offset(&t.topic, t.partition, Offset::Offset(*o));
        }
        tpl
    };
    if consumer.store_offsets(&list(&due)).is_ok() {
        for (t, o) in &due {
            t.mark_stored(*o);
        }
        return;
    }
    for item in &due {
        match consumer.store_offsets(&list(std::slice::from_ref(item))) {
            Ok(()) => item.0.mark_stored(item.1),
            Err(e) => tracing::debug!(topic = %item.0.topic, partition = item.0.partition, error = %e,
                "storing an offset failed (the partition may just have been revoked); stored again next time"),
        }
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &p.to_string()])
                        .set(part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        self.metrics.rebalances.with_label_values(&["revoke"]).inc();
        let revoked: Vec<Arc<PartitionTracker>> = {
            let trackers = lock(&self.trackers);
            tpl.elements()
                .iter()
                .filter_map(|e| trackers.get(&(e.topic().to_string(), e.partition())).cloned())
                .collect()
        };
        tracing::info!(
            partitions = revoked.len(),
            "partitions revoked: draining in-flight records"
        );
        let drained = if self.stopping.load(Ordering::Acquire) {
            revoked.iter().all(|t| t.in_flight() == 0)
        } else {
            drain(&revoked, self.drain_timeout)
        };
        // Not while stopping: the shutdown already passed the markers of the partitions it processed, and a
        // partition assigned during the final wait had its records polled and thrown away by the leave loop
        // (the consumer's position is past them, though none was processed).
        if !self.stopping.load(Ordering::Acquire) {
            pass_skipped(consumer, &revoked);
        }
        store_offsets(consumer, &revoked);
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "commit on revoke");
        }
        let mut trackers = lock(&self.trackers);
        for t in &revoked {
            t.revoke();
            trackers.remove(&(t.topic.clone(), t.partition));
        }
        self.metrics.assigned_partitions.set(trackers.len() as i64);
        tracing::info!(partitions = revoked.len(), drained, "partitions released");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                // librdkafka keeps a partition paused across assignments: one paused for back pressure, revoked
                // and assigned back would never resume (its new tracker has nothing in flight to resume for).
                // Back pressure pauses it again if it must.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::warn!(error = %e, "resuming newly assigned partitions");
                }
                let (assigned, added) = {
                    let mut trackers = lock(&self.trackers);
                    let added: Vec<Arc<PartitionTracker>> = tpl
                        .elements()
                        .iter()
                        .map(|e| {
                            trackers
                                .entry((e.topic().to_string(), e.partition()))
                                .or_insert_with(|| PartitionTracker::new(e.topic(), e.partition()))
                                .clone()
                        })
                        .collect();
                    (trackers.len(), added)
                };
                // Before any record of these partitions is taken: their documents' default ids carry it.
                learn_topic_ids(consumer.client(), &added, &self.metrics);
                self.metrics.assigned_partitions.set(assigned as i64);
                self.joined.store(true, Ordering::Release);
                tracing::info!(added = tpl.count(), assigned, "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// How long one topic id lookup may take, and how many are tried, before a topic's partitions go on without
/// an id (their documents' default ids then carry the record's timestamp instead: `router`).
const TOPIC_ID_TIMEOUT: Duration = Duration::from_secs(5);
const TOPIC_ID_ATTEMPTS: u32 = 3;

/// Looks up the topic ids (KIP-516) of `trackers` that do not know theirs yet, one request for all their
/// topics, and gives each tracker its answer. A lookup that keeps failing leaves the topics without an id
/// (counted as `failed`, logged): records still flow, only their default document ids use the fallback form.
fn learn_topic_ids<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    trackers: &[Arc<PartitionTracker>],
    metrics: &Metrics,
) {
    let mut topics: Vec<&str> = trackers
        .iter()
        .filter(|t| !t.knows_topic_id())
        .map(|t| t.topic.as_str())
        .collect();
    topics.sort_unstable();
    topics.dedup();
    if topics.is_empty() {
        return;
    }
    let mut answers: HashMap<String, Option<Arc<str>>> = HashMap::new();
    let mut last_error = None;
    for attempt in 1..=TOPIC_ID_ATTEMPTS {
        let missing: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|t| !answers.contains_key(*t))
            .collect();
        if missing.is_empty() {
            break;
        }
        match topic_ids::describe(client, &missing, TOPIC_ID_TIMEOUT) {
            Ok(found) => {
                for (topic, answer) in found {
                    match answer {
                        Ok(TopicId::Id(id)) => {
                            metrics.topic_id_lookups.with_label_values(&["id"]).inc();
                            answers.insert(topic, Some(Arc::from(id)));
                        }
                        Ok(TopicId::NotReported) => {
                            metrics
                                .topic_id_lookups
                                .with_label_values(&["not_reported"])
                                .inc();
                            answers.insert(topic, None);
                        }
                        Err(e) => last_error = Some(e),
                    }
                }
            }
            Err(e) => last_error = Some(e),
        }
        if attempt < TOPIC_ID_ATTEMPTS && answers.len() < topics.len() {
            std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
        }
    }
    for topic in &topics {
        if !answers.contains_key(*topic) {
            metrics.topic_id_lookups.with_label_values(&["failed"]).inc();
            tracing::warn!(
                topic,
                error = last_error.as_ref().map(ToString::to_string),
                "no topic id: default document ids of this assignment use the record timestamp instead"
            );
        }
    }
    for t in trackers {
        t.set_topic_id(answers.get(&t.topic).cloned().flatten());
    }
}

/// How often idle partitions' offsets are moved over transaction markers (a `position()` call for the whole
/// assignment).
const MARKER_PASS_INTERVAL: Duration = Duration::from_secs(1);

/// Most records the poll thread takes before handing them to the lanes (fewer when no more are fetched).
const POLL_BATCH: usize = 64;

/// Creates the consumer and subscribes it to every binding's topics.
pub fn consumer(
    config: &WorkerConfig,
    subscriptions: &[String],
    context: SourceContext,
) -> Result<BaseConsumer<SourceContext>, WorkerError> {
    let k = &config.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", &k.auto_offset_reset)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", k.session_timeout.as_millis().to_string())
        .set(
            "statistics.interval.ms",
            k.statistics_interval.as_millis().to_string(),
        )
        // New client topics matching a regex binding are found within this time.
        .set("topic.metadata.refresh.interval.ms", "10000")
        // A fetch waits at most this long for data: the latency floor at low rates (librdkafka's 500 ms
        // default made it most of a record's time from producer to store).
        .set("fetch.wait.max.ms", "100")
        // When librdkafka's queue of fetched records passes its thresholds (queued.min.messages: 100,000) it
        // stops fetching for this long. The poll thread empties that queue in well under a second, so
        // librdkafka's 1,000 ms default left the worker with nothing to run for the rest of the second, again
        // and again, whenever it had a backlog (BENCHMARKS.md, tenth pass).
        .set("fetch.queue.backoff.ms", "50");
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    let consumer: BaseConsumer<SourceContext> = c.create_with_context(context)?;
    let refs: Vec<&str> = subscriptions.iter().map(String::as_str).collect();
    if !refs.is_empty() {
        consumer.subscribe(&refs)?;
    }
    tracing::info!(group = %k.group_id, topics = ?subscriptions, "subscribed");
    Ok(consumer)
}

/// What the poll thread needs.
pub(super) struct Poll {
    pub consumer: BaseConsumer<SourceContext>,
    pub trackers: Trackers,
    /// One queue per lane.
    pub lanes: Vec<mpsc::Sender<Vec<Share>>>,
    pub table: Arc<BindingTable>,
    pub metrics: Metrics,
    pub fallback: Arc<dyn Fallback>,
    /// Set by `run()` to stop taking records.
    pub stop: Arc<AtomicBool>,
    /// When partitions pause (records per partition, bytes in flight overall and per binding).
    pub limits: backpressure::Limits,
    pub drain_timeout: Duration,
}

/// Per topic: its binding; per partition: what its records share (the tracker, the topic name) and its lane.
struct TopicInfo {
    /// The binding the topic belongs to (as of the binding table's generation when this was made).
    binding: Option<Arc<str>>,
    /// What the records of each partition seen share (its tracker among them).
    partitions: FastMap<i32, Arc<Origin>>,
    /// The lane of each partition seen (`lane_of`, hashed once).
    lanes: FastMap<i32, usize>,
}

/// The poll thread's knowledge of `topic`, made once per binding table (matching a topic against every
/// binding is not free with hundreds of them).
fn topic_info<'a>(
    topics: &'a mut FastMap<String, TopicInfo>,
    table: &BindingTable,
    topic: &str,
) -> &'a mut TopicInfo {
    // Looked up before inserting: no key allocated per record.
    if !topics.contains_key(topic) {
        let info = TopicInfo {
            binding: bindings::find(&table.snapshot(), topic)
                .ok()
                .flatten()
                .map(|b| b.name.clone()),
            partitions: FastMap::default(),
            lanes: FastMap::default(),
        };
        topics.insert(topic.to_string(), info);
    }
    topics
        .get_mut(topic)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

impl Poll {
    /// The poll thread: takes records, dispatches them to lanes, stores offsets, pauses and resumes; at the
    /// end (stop, or a lane gone) drains what is in flight, commits and leaves the group.
    pub(super) fn run(self) {
        let mut paused = Backpressure::default();
        let mut last_housekeeping = Instant::now();
        let mut last_marker_pass = Instant::now();
        // Bytes that may still be taken before the memory budget is reached, as of the last housekeeping:
        // crossing it runs housekeeping at once (which pauses), so the budget is overshot by one record at
        // most, not by what a 50 ms round takes.
        let mut budget_left = self.limits.max_bytes as i64;
        let mut binding_left: FastMap<Arc<str>, i64> = FastMap::default();
        let mut topics: FastMap<String, TopicInfo> = FastMap::default();
        let mut generation = self.table.generation();
        let mut subscribed = bindings::subscriptions(&self.table.snapshot());
        let mut batches: Vec<Vec<Share>> = (0..self.lanes.len()).map(|_| Vec::new()).collect();
        while !self.stop.load(Ordering::Acquire) {
            // Bindings changed: subscribe to the new set of topics (a rebalance hands out their partitions).
            if self.table.generation() != generation {
                generation = self.table.generation();
                topics.clear(); // their bindings may have changed
                let subs = bindings::subscriptions(&self.table.snapshot());
                if subs != subscribed {
                    let refs: Vec<&str> = subs.iter().map(String::as_str).collect();
                    match self.consumer.subscribe(&refs) {
                        Ok(()) => {
                            tracing::info!(topics = ?subs, "subscription changed");
                            subscribed = subs;
                        }
                        Err(e) => tracing::error!(error = %e, "changing the subscription"),
                    }
                }
            }
            // Up to POLL_BATCH records (all already fetched: only the first poll waits), handed to each lane
            // as one batch: one hand-over and at most one wake-up per lane instead of one per record.
            let mut wait = Duration::from_millis(50);
            let mut lane_gone = false;
            // One clock reading for the round, once its first record is there.
            let mut taken = None;
            for _ in 0..POLL_BATCH {
                match self.consumer.poll(wait) {
                    Some(Ok(msg)) => {
                        wait = Duration::ZERO;
                        let now = *taken.get_or_insert_with(Instant::now);
                        let (share, binding, lane) = self.take(&msg, &mut topics, now);
                        let bytes = share.record().bytes() as i64;
                        budget_left -= bytes;
                        if let Some(b) = binding {
                            let left = binding_left
                                .entry(b)
                                .or_insert(self.limits.max_bytes_per_binding as i64);
                            *left -= bytes;
                            if *left < 0 {
                                budget_left = -1; // this binding's share is used up: decide now
                            }
                        }
                        batches[lane].push(share);
                        if budget_left < 0 {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                    None => break,
                }
            }
            for (lane, batch) in batches.iter_mut().enumerate() {
                // The next round's batch is allocated for a full round: no regrowth per record.
                if !batch.is_empty()
                    && self.lanes[lane]
                        .send(std::mem::replace(batch, Vec::with_capacity(POLL_BATCH)))
                        .is_err()
                {
                    // The records' shares come back in the error and are dropped: dead-lettered visibly.
                    tracing::error!(lane, "a lane stopped; stopping");
                    lane_gone = true;
                }
            }
            if lane_gone {
                break;
            }
            if budget_left < 0 || last_housekeeping.elapsed() >= Duration::from_millis(50) {
                let since_last = last_housekeeping.elapsed();
                last_housekeeping = Instant::now();
                // Once a second, idle partitions' offsets move over the markers the consumer went past.
                let pass_markers = last_marker_pass.elapsed() >= MARKER_PASS_INTERVAL;
                if pass_markers {
                    last_marker_pass = Instant::now();
                }
                let (bytes, per_binding) =
                    self.housekeeping(&mut paused, &mut topics, since_last, pass_markers);
                budget_left = self.limits.max_bytes as i64 - bytes as i64;
                binding_left = per_binding
                    .into_iter()
                    .map(|(b, n)| (b, self.limits.max_bytes_per_binding as i64 - n as i64))
                    .collect();
            }
        }

        // Shutdown: take no more records, drain what is in flight, commit, leave the group.
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
        let all: Vec<Arc<PartitionTracker>> = lock(&self.trackers).values().cloned().collect();
        let drained = drain(&all, self.drain_timeout);
        pass_skipped(&self.consumer, &all);
        store_offsets(&self.consumer, &all);
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit");
        }
        tracing::info!(drained, "offsets committed; leaving the group");
        self.consumer.unsubscribe();
        // Serve the rebalance that leaving starts before the consumer is closed: librdkafka aborts the
        // process when a consumer is destroyed while an (incremental) assignment is still in progress.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut settled = 0;
        while settled < 3 && Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(50));
            let empty = self.consumer.assignment().map_or(true, |a| a.count() == 0);
            settled = if empty { settled + 1 } else { 0 };
        }
    }

    /// Registers a record with its partition's tracker; returns its processing share, its binding and its
    /// lane.
    fn take(
        &self,
        msg: &rdkafka::message::BorrowedMessage<'_>,
        topics: &mut FastMap<String, TopicInfo>,
        taken: Instant,
    ) -> (Share, Option<Arc<str>>, usize) {
        let topic = msg.topic();
        let info = topic_info(topics, &self.table, topic);
        let partition = msg.partition();
        let n_lanes = self.lanes.len();
        let lane = *info
            .lanes
            .entry(partition)
            .or_insert_with(|| lane_of(topic, partition, n_lanes));
        let origin = match info.partitions.get(&partition) {
            Some(o) if !o.tracker().is_revoked() => o.clone(),
            _ => {
                let t = lock(&self.trackers)
                    .entry((topic.to_string(), partition))
                    .or_insert_with(|| PartitionTracker::new(topic, partition))
                    .clone();
                // A partition taken from without an assignment callback (not expected): its id is looked up
                // here, before its first record.
                learn_topic_ids(self.consumer.client(), std::slice::from_ref(&t), &self.metrics);
                let origin = Origin::new(
                    t,
                    Some(self.metrics.record_latency.clone()),
                    self.fallback.clone(),
                );
                info.partitions.insert(partition, origin.clone());
                origin
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
        let share = InFlight::begin_at(
            origin,
            msg.offset(),
            RecordData {
                timestamp_ms: msg.timestamp().to_millis(),
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec),
                headers,
            },
            taken,
        );
        (share, info.binding.clone(), lane)
    }

    /// Offsets to store, partitions to pause or resume, gauges; returns the bytes in flight, overall and
    /// per binding.
    fn housekeeping(
        &self,
        paused: &mut Backpressure,
        topics: &mut FastMap<String, TopicInfo>,
        since_last: Duration,
        pass_markers: bool,
    ) -> (usize, HashMap<Arc<str>, usize>) {
        let all: Vec<Arc<PartitionTracker>> = lock(&self.trackers).values().cloned().collect();
        if pass_markers {
            pass_skipped(&self.consumer, &all);
        }
        store_offsets(&self.consumer, &all);
        let table = self.table.snapshot();
        // Bindings that spent their CPU budget are throttled; the time counts.
        let mut spent: HashMap<&str, bool> = HashMap::new();
        for b in table.iter() {
            if let Some(budget) = &b.budget {
                let is_spent = budget.is_spent();
                if is_spent {
                    self.metrics
                        .binding_throttled
                        .with_label_values(&[&b.name])
                        .inc_by(since_last.as_secs_f64());
                }
                spent.insert(&b.name, is_spent);
            }
        }
        let loads: Vec<Load> = all
            .iter()
            .map(|t| {
                let binding = topic_info(topics, &self.table, &t.topic).binding.clone();
                let throttled = binding
                    .as_ref()
                    .is_some_and(|b| spent.get(b.as_ref()).copied().unwrap_or(false));
                Load {
                    key: (t.topic.clone(), t.partition),
                    binding,
                    records: t.in_flight(),
                    bytes: t.bytes_in_flight(),
                    throttled,
                }
            })
            .collect();
        let d = paused.decide(&loads, self.limits);
        let list = |keys: &[backpressure::Key]| {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in keys {
                tpl.add_partition(topic, *partition);
            }
            tpl
        };
        if !d.pause.is_empty() {
            tracing::info!(partitions = d.pause.len(), records = d.records, bytes = d.bytes,
                reasons = ?d.paused_for, "pausing partitions");
            for (reason, n) in d.paused_for {
                if n > 0 {
                    self.metrics.pauses.with_label_values(&[reason]).inc_by(n as u64);
                }
            }
            if let Err(e) = self.consumer.pause(&list(&d.pause)) {
                tracing::warn!(error = %e, "pause");
            }
        }
        if !d.resume.is_empty() {
            tracing::info!(partitions = d.resume.len(), "resuming partitions");
            if let Err(e) = self.consumer.resume(&list(&d.resume)) {
                tracing::warn!(error = %e, "resume");
            }
            self.wake_fetcher(&d.resume);
        }
        self.metrics.in_flight.set(d.records as i64);
        self.metrics.in_flight_bytes.set(d.bytes as i64);
        self.metrics.paused_partitions.set(paused.paused() as i64);
        (d.bytes, d.binding_bytes)
    }
}

impl Poll {
    /// Makes librdkafka fetch resumed partitions now. A resume only clears a flag: the thread that fetches
    /// from a broker looks at it again when that thread next wakes, and a thread with every one of its
    /// partitions paused sleeps up to a second (librdkafka's longest block), so a worker whose partitions
    /// had all paused sat with nothing to run for 0.2-0.6 s after each resume (librdkafka's fetch debug log:
    /// the resume, then no fetch decision until the timer; confluent-kafka-go#630 shows the same). A seek of
    /// each resumed partition to where it stands (one past the last record taken, which is where the resume
    /// would fetch from) restarts its fetcher, and librdkafka wakes the broker's thread for that: no request
    /// goes to the broker, and nothing is skipped or read twice (a paused partition's fetched and untaken
    /// records were dropped by the pause; none of the partition's records were taken since). Asynchronous:
    /// the poll thread does not wait for it. A partition nothing was taken from yet resumes as it is. The
    /// position carries no leader epoch (the consumer does not give records' epochs), so the first fetch after
    /// it skips the epoch check of KIP-320, as any seek by offset does; later fetches have it again.
    fn wake_fetcher(&self, resumed: &[backpressure::Key]) {
        let mut seek = TopicPartitionList::new();
        {
            let trackers = lock(&self.trackers);
            for key in resumed {
                if let Some(next) = trackers.get(key).and_then(|t| t.next_to_take()) {
                    let _ = seek.add_partition_offset(&key.0, key.1, Offset::Offset(next));
                }
            }
        }
        if seek.count() > 0
            && let Err(e) = self.consumer.seek_partitions(seek, Duration::ZERO)
        {
            tracing::debug!(error = %e, "seek after resume");
        }
    }
}

/// Lane of a partition: records of one partition always go to the same lane, in order. The topic's hash picks
/// the lane of its partition 0 and its other partitions take the next lanes in turn, so a topic with at least
/// as many partitions as there are lanes keeps every lane busy. (Hashing each partition on its own put all 4
/// partitions of a topic on one of 2 lanes one time in 8, and 3 on one lane half the time: one lane worked
/// while the other idled.) Topics still spread over the lanes by their hash.
fn lane_of(topic: &str, partition: i32, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let lanes = lanes.max(1) as u64;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    let first = h.finish() % lanes;
    ((first + u64::from(partition.unsigned_abs()) % lanes) % lanes) as usize
}

#[cfg(test)]
mod tests {
    use super::lane_of;

    #[test]
    fn a_topics_partitions_take_the_lanes_in_turn() {
        for lanes in 1..=4 {
            for t in 0..50 {
                let topic = format!("client-{t}");
                let mut per_lane = vec![0; lanes];
                for p in 0..(3 * lanes as i32) {
                    let lane = lane_of(&topic, p, lanes);
                    assert_eq!(lane, lane_of(&topic, p, lanes), "always the same lane");
                    per_lane[lane] += 1;
                }
                assert!(
                    per_lane.iter().all(|&n| n == 3),
                    "{topic}: 3 partitions per lane of {lanes}, got {per_lane:?}"
                );
            }
        }
    }

    #[test]
    fn single_partition_topics_spread_over_the_lanes() {
        let lanes = 4;
        let mut per_lane = [0; 4];
        for t in 0..400 {
            per_lane[lane_of(&format!("client-{t}"), 0, lanes)] += 1;
        }
        assert!(
            per_lane.iter().all(|&n| n > 60),
            "400 one-partition topics over 4 lanes: {per_lane:?}"
        );
    }
}
