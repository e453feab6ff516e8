//! Sinks: batches of outputs in, per-item acknowledgements out. A sink knows nothing of plugins or Kafka:
//! it receives payloads with an acknowledgement handle, batches them by count, bytes and linger, writes them
//! to its store, retries what may succeed later (429, 5xx, connection errors: exponential backoff with
//! jitter, without limit, so nothing is dropped), and acknowledges each item as written or rejected with the
//! store's reason. While a store is down its queue fills up, the pipeline stops feeding it and pauses the
//! partitions behind it: memory stays bounded.

mod elasticsearch;
mod influx;
mod shim_start;
pub use self::shim_start::{SinkTasks, Sinks};

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use self::elasticsearch::ElasticsearchStore;
pub use self::influx::InfluxStore;
use crate::config::BatchingConfig;
use crate::metrics::Metrics;

/// One output to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// One line of InfluxDB line protocol, with its timestamp.
    Line(String),
    /// One document: index, id, compact JSON object body.
    Document { index: String, id: String, body: String },
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Self::Line(l) => l.len() + 1,
            Self::Document { index, id, body } => index.len() + id.len() + body.len() + 40,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What happens to an item once the store answered.
pub trait Acker: Send + 'static {
    /// Written.
    fn ok(self);
    /// Refused by the store for good, with its reason.
    fn rejected(self, reason: String);
}

/// One item handed to a sink.
#[derive(Debug)]
pub struct Item<A> {
    pub payload: Payload,
    pub ack: A,
}

/// A store's verdict on one item of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Ok,
    /// Not written now, may be later (429, 5xx of one item).
    Retry(String),
    /// Refused for good (mapping error, malformed line).
    Reject(String),
}

/// A whole request failed.
#[derive(Debug, Clone)]
pub struct WriteError {
    pub retriable: bool,
    pub message: String,
}

/// The protocol side of a sink.
pub trait Store: Send + Sync + 'static {
    /// The sink's name: a metric label and log field.
    fn name(&self) -> &'static str;

    /// Writes a batch; on success one result per payload, in order.
    fn write(
        &self,
        batch: &[&Payload],
    ) -> impl std::future::Future<Output = Result<Vec<ItemResult>, WriteError>> + Send;

    /// A cheap reachability check for readiness.
    fn ping(&self) -> impl std::future::Future<Output = bool> + Send;
}

/// A sink's queue: a bounded channel of chunks of items (the outputs of one record for this sink), so that a
/// record costs one hand-over, not one per output.
pub type SinkSender<A> = mpsc::Sender<Vec<Item<A>>>;

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Self {
            next: initial,
            initial,
            max,
            seed,
        }
    }

    /// The next delay: uniformly random between half and all of the current step, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let frac = 0.5 + (self.seed % 1000) as f64 / 2000.0;
        step.mul_f64(frac)
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Runs a sink until its channel is closed and everything received was written: receives items, batches
/// them, writes, retries, acknowledges.
pub async fn run<S: Store, A: Acker>(
    store: std::sync::Arc<S>,
    mut rx: mpsc::Receiver<Vec<Item<A>>>,
    batching: BatchingConfig,
    metrics: Metrics,
) {
    let name = store.name();
    // Up to `concurrency` batches in flight: a store's round trip does not stall the batches behind it.
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        // Wait for the first item of a batch, then fill it until a limit or the linger time.
        let Some(first) = rx.recv().await else { break };
        let mut batch: Vec<Item<A>> = Vec::with_capacity(batching.max_records);
        let mut bytes: usize = first.iter().map(|i| i.payload.len()).sum();
        batch.extend(first);
        let deadline = tokio::time::Instant::now() + batching.linger;
        while batch.len() < batching.max_records && bytes < batching.max_bytes {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(chunk)) => {
                    bytes += chunk.iter().map(|i| i.payload.len()).sum::<usize>();
                    batch.extend(chunk);
                }
                Ok(None) | Err(_) => break,
            }
        }
        metrics
            .sink_batch_records
            .with_label_values(&[name])
            .observe(batch.len() as f64);
        while in_flight.len() >= batching.concurrency.max(1) {
            let _ = in_flight.join_next().await;
        }
        let (store, metrics) = (store.clone(), metrics.clone());
        let mut backoff = Backoff::new(batching.retry_initial_backoff, batching.retry_max_backoff);
        in_flight.spawn(async move {
            deliver(&*store, &mut batch, &mut backoff, &metrics).await;
        });
    }
    while in_flight.join_next().await.is_some() {}
    tracing::debug!(sink = name, "sink stopped: its queue is closed and drained");
}

/// Writes a batch until every item is acknowledged one way or the other.
async fn deliver<S: Store, A: Acker>(
    store: &S,
    batch: &mut Vec<Item<A>>,
    backoff: &mut Backoff,
    metrics: &Metrics,
) {
    let name = store.name();
    while !batch.is_empty() {
        let started = Instant::now();
        let payloads: Vec<&Payload> = batch.iter().map(|i| &i.payload).collect();
        let result = store.write(&payloads).await;
        drop(payloads);
        let elapsed = started.elapsed().as_secs_f64();
        match result {
            Ok(results) if results.len() == batch.len() => {
                metrics
                    .sink_write_duration
                    .with_label_values(&[name, "ok"])
                    .observe(elapsed);
                metrics.sink_up.with_label_values(&[name]).set(1);
                let mut retry = Vec::new();
                let mut last_retry_reason = String::new();
                for (item, r) in batch.drain(..).zip(results) {
                    match r {
                        ItemResult::Ok => {
                            metrics.sink_items.with_label_values(&[name, "ok"]).inc();
                            item.ack.ok();
                        }
                        ItemResult::Reject(reason) => {
                            metrics.sink_items.with_label_values(&[name, "rejected"]).inc();
                            item.ack.rejected(reason);
                        }
                        ItemResult::Retry(reason) => {
                            last_retry_reason = reason;
                            retry.push(item);
                        }
                    }
                }
                *batch = retry;
                if batch.is_empty() {
                    backoff.reset();
                } else {
                    metrics.sink_retries.with_label_values(&[name]).inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(sink = name, items = batch.len(), reason = %last_retry_reason, ?delay,
                        "store asked to retry some items");
                    tokio::time::sleep(delay).await;
                }
            }
            Ok(results) => {
                // A store answering with the wrong number of results is a bug there or here: retry.
                metrics
                    .sink_write_duration
                    .with_label_values(&[name, "error"])
                    .observe(elapsed);
                tracing::error!(
                    sink = name,
                    sent = batch.len(),
                    answered = results.len(),
                    "store answered with a different number of results; retrying the batch"
                );
                metrics.sink_retries.with_label_values(&[name]).inc();
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) if e.retriable => {
                metrics
                    .sink_write_duration
                    .with_label_values(&[name, "error"])
                    .observe(elapsed);
                metrics.sink_up.with_label_values(&[name]).set(0);
                metrics.sink_retries.with_label_values(&[name]).inc();
                let delay = backoff.next_delay();
                tracing::warn!(sink = name, items = batch.len(), error = %e.message, ?delay,
                    "store write failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                metrics
                    .sink_write_duration
                    .with_label_values(&[name, "error"])
                    .observe(elapsed);
                tracing::error!(sink = name, items = batch.len(), error = %e.message, "store refused the batch");
                for item in batch.drain(..) {
                    metrics.sink_items.with_label_values(&[name, "rejected"]).inc();
                    item.ack.rejected(e.message.clone());
                }
            }
        }
    }
}

/// Maps an HTTP status of a whole request: retriable or not.
pub(crate) fn retriable_status(status: u16) -> bool {
    matches!(status, 408 | 429) || status >= 500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[7] >= Duration::from_millis(500) && delays[7] <= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
