//! The Kafka side: a consumer in the group with cooperative-sticky assignment, regex subscriptions, offsets
//! stored by the pipeline (never automatically) and committed in the background, and the rebalance hooks that
//! drain a revoked partition's in-flight records, store its final offset and commit before letting it go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::WorkerError;
use crate::config::WorkerConfig;
use crate::metrics::Metrics;
use crate::tracker::PartitionTracker;

/// Assigned partitions and their trackers, shared by the poll loop and the rebalance hooks.
pub type Trackers = Arc<Mutex<HashMap<(String, i32), Arc<PartitionTracker>>>>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

/// Stores the committable offsets of `trackers` in the consumer (committed by the next commit).
pub fn store_offsets<C: ConsumerContext>(consumer: &BaseConsumer<C>, trackers: &[Arc<PartitionTracker>]) {
    let mut tpl = TopicPartitionList::new();
    for t in trackers {
        if t.is_revoked() {
            continue;
        }
        if let Some(o) = t.take_committable() {
            let _ = tpl.add_partition_offset(&t.topic, t.partition, Offset::Offset(o));
        }
    }
    if tpl.count() > 0
        && let Err(e) = consumer.store_offsets(&tpl)
    {
        tracing::debug!(error = %e, "storing offsets (a partition may just have been revoked)");
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
        let drained = drain(&revoked, self.drain_timeout);
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

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                let mut trackers = lock(&self.trackers);
                for e in tpl.elements() {
                    trackers
                        .entry((e.topic().to_string(), e.partition()))
                        .or_insert_with(|| PartitionTracker::new(e.topic(), e.partition()));
                }
                self.metrics.assigned_partitions.set(trackers.len() as i64);
                self.joined.store(true, Ordering::Release);
                tracing::info!(
                    added = tpl.count(),
                    assigned = trackers.len(),
                    "partitions assigned"
                );
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

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
        .set("topic.metadata.refresh.interval.ms", "10000");
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
