//! The one driver of every sink: it takes items from the sink's queue, batches them (records, bytes, linger),
//! keeps up to `concurrency` batches in flight, writes each through its [`Store`] and applies the [`retry`]
//! policy to the answer: retries with backoff without limit (longer when the store sent `Retry-After`), splits
//! a batch in halves until the bad items are alone, and acknowledges every item as written or rejected. Stores
//! only encode, send and read.
//!
//! Writes of one key land in the order they came: the batches in flight come from `concurrency` writers, each
//! writing its batches one after the other, and an item's key (a document's index and id; a point's series and
//! timestamp) always picks the same writer. So a record that overwrites an earlier record's document or point
//! is never overtaken by it, also when the earlier one's batch is retried.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::mpsc;

use super::retry::{self, Backoff, Verdict};
use super::{Acker, Item, ItemResult, Payload, Store};
use crate::config::BatchingConfig;
use crate::hashing::stable_hash;
use crate::metrics::Metrics;

/// The metric handles of one sink, resolved once.
#[derive(Debug, Clone)]
struct SinkMetrics {
    batch_records: Histogram,
    write_ok: Histogram,
    write_error: Histogram,
    up: IntGauge,
    retries: IntCounter,
    items_ok: IntCounter,
    items_rejected: IntCounter,
}

impl SinkMetrics {
    fn new(m: &Metrics, sink: &str) -> Self {
        Self {
            batch_records: m.sink_batch_records.with_label_values(&[sink]),
            write_ok: m.sink_write_duration.with_label_values(&[sink, "ok"]),
            write_error: m.sink_write_duration.with_label_values(&[sink, "error"]),
            up: m.sink_up.with_label_values(&[sink]),
            retries: m.sink_retries.with_label_values(&[sink]),
            items_ok: m.sink_items.with_label_values(&[sink, "ok"]),
            items_rejected: m.sink_items.with_label_values(&[sink, "rejected"]),
        }
    }
}

/// Runs a sink until its channel is closed and everything received was written: receives items, hands each to
/// the writer of its key, which batches, writes, retries, splits and acknowledges.
pub async fn run<S: Store, A: Acker>(
    store: Arc<S>,
    mut rx: mpsc::Receiver<Vec<Item<A>>>,
    batching: BatchingConfig,
    metrics: Metrics,
) {
    let name = store.name();
    let m = SinkMetrics::new(&metrics, name);
    let n = batching.concurrency.max(1);
    let mut writers = tokio::task::JoinSet::new();
    let mut queues = Vec::with_capacity(n);
    for _ in 0..n {
        // A short queue per writer: a writer stuck on a store keeps the items of its keys waiting here, and
        // the sink's own queue (then the partitions) fills behind it.
        let (tx, rx) = mpsc::channel::<Vec<Item<A>>>(2);
        queues.push(tx);
        writers.spawn(writer(store.clone(), rx, batching.clone(), m.clone()));
    }
    while let Some(chunk) = rx.recv().await {
        let mut parts: Vec<Vec<Item<A>>> = (0..n).map(|_| Vec::new()).collect();
        if n == 1 {
            parts[0] = chunk;
        } else {
            for item in chunk {
                parts[writer_of(&item.payload, n)].push(item);
            }
        }
        for (queue, part) in queues.iter().zip(parts) {
            if !part.is_empty() && queue.send(part).await.is_err() {
                tracing::error!(sink = name, "a sink writer stopped; its items stay unfinished");
            }
        }
    }
    drop(queues);
    while let Some(r) = writers.join_next().await {
        joined(name, Some(r));
    }
    tracing::debug!(sink = name, "sink stopped: its queue is closed and drained");
}

/// One writer: its batches, one at a time.
async fn writer<S: Store, A: Acker>(
    store: Arc<S>,
    mut rx: mpsc::Receiver<Vec<Item<A>>>,
    batching: BatchingConfig,
    m: SinkMetrics,
) {
    while let Some(first) = rx.recv().await {
        let batch = fill(first, &mut rx, &batching).await;
        m.batch_records.observe(batch.len() as f64);
        let backoff = Backoff::new(batching.retry_initial_backoff, batching.retry_max_backoff);
        deliver(&*store, batch, backoff, &m).await;
    }
}

/// The writer of an item's key: a document's index and id; a point's series (measurement and tags) and
/// timestamp (every point has one by now; a line's last space-separated part).
fn writer_of(payload: &Payload, n: usize) -> usize {
    (key_hash(payload) % n as u64) as usize
}

/// A hash of an item's key (see [`writer_of`]): equal keys, equal hashes.
fn key_hash(payload: &Payload) -> u64 {
    match payload {
        Payload::Document { index, id, .. } => stable_hash(&(index, id)),
        Payload::Line(line) => stable_hash(&(series_of(line), line.rsplit_once(' ').map(|(_, ts)| ts))),
    }
}

/// The series of a line of line protocol: up to its first unescaped space.
fn series_of(line: &str) -> &str {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b' ' => return &line[..i],
            _ => i += 1,
        }
    }
    line
}

fn joined(sink: &'static str, r: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = r {
        tracing::error!(sink, error = %e, "a batch task failed; its records stay unfinished");
    }
}

/// A batch: `first`, then whatever arrives until a limit (records, bytes) or the linger time.
async fn fill<A>(
    first: Vec<Item<A>>,
    rx: &mut mpsc::Receiver<Vec<Item<A>>>,
    batching: &BatchingConfig,
) -> Vec<Item<A>> {
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
    batch
}

/// Writes a batch until every item is acknowledged one way or the other.
async fn deliver<S: Store, A: Acker>(store: &S, batch: Vec<Item<A>>, mut backoff: Backoff, m: &SinkMetrics) {
    let sink = store.name();
    // Batches still to write, the next one last: the halves of a split batch go back in order.
    let mut pending = vec![batch];
    while let Some(mut batch) = pending.pop() {
        while !batch.is_empty() {
            let started = Instant::now();
            let result = {
                let payloads: Vec<&Payload> = batch.iter().map(|i| &i.payload).collect();
                store.write(&payloads).await
            };
            let elapsed = started.elapsed().as_secs_f64();
            let error = match result {
                Ok(results) if results.len() == batch.len() => {
                    m.write_ok.observe(elapsed);
                    m.up.set(1);
                    let (rest, reason) = acknowledge(batch, results, m);
                    batch = rest;
                    if batch.is_empty() {
                        backoff.reset();
                    } else {
                        m.retries.inc();
                        let delay = backoff.next_delay();
                        tracing::warn!(sink, items = batch.len(), %reason, ?delay,
                            "store asked to retry some items");
                        tokio::time::sleep(delay).await;
                    }
                    continue;
                }
                Ok(results) => {
                    // A store answering with the wrong number of results is a bug there or here: retry.
                    m.write_error.observe(elapsed);
                    m.retries.inc();
                    let delay = backoff.next_delay();
                    tracing::error!(
                        sink,
                        sent = batch.len(),
                        answered = results.len(),
                        ?delay,
                        "store answered with a different number of results; retrying the batch"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(e) => e,
            };
            m.write_error.observe(elapsed);
            match retry::request_verdict(&error) {
                Verdict::Ok | Verdict::Retry => {
                    m.up.set(0);
                    m.retries.inc();
                    let delay = retry::retry_delay(&error, &mut backoff);
                    tracing::warn!(sink, key = error.key(), items = batch.len(), %error, ?delay,
                        "store write failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Verdict::Split if batch.len() > 1 => {
                    // The store answered: it is up, and something in the batch is bad.
                    m.up.set(1);
                    let mut first = std::mem::take(&mut batch);
                    let second = first.split_off(first.len() / 2);
                    tracing::debug!(sink, items = first.len() + second.len(), %error,
                        "store refused the batch; splitting it to isolate the bad items");
                    pending.push(second);
                    pending.push(first);
                }
                verdict @ (Verdict::Split | Verdict::Reject) => {
                    m.up.set(1);
                    if verdict == Verdict::Reject {
                        tracing::warn!(sink, key = error.key(), items = batch.len(), %error,
                            "store refused the batch; its items are dead-lettered");
                    } else {
                        tracing::debug!(sink, %error, "store refused an item");
                    }
                    let reason = error.to_string();
                    for item in batch.drain(..) {
                        m.items_rejected.inc();
                        item.ack.rejected(reason.clone());
                    }
                }
            }
        }
    }
}

/// Acknowledges the written and rejected items of an answered request; returns the items to retry and the
/// reason of the last of them.
///
/// A store may take a batch's later write of a key while it asks for an earlier one of the same key to be
/// retried (an Elasticsearch `_bulk` item answered 429 beside its successors). Retried alone, the earlier write
/// would land last and undo the later one; so the later writes of a retried key go again too, after it, in
/// their order (stores overwrite a document or point of the same key: writing it twice is harmless).
fn acknowledge<A: Acker>(
    batch: Vec<Item<A>>,
    results: Vec<ItemResult>,
    m: &SinkMetrics,
) -> (Vec<Item<A>>, String) {
    let mut retry = Vec::new();
    let mut last_reason = String::new();
    let mut written = Vec::with_capacity(batch.len());
    // Keys with a write to retry so far (hashed: a collision only writes an item once more).
    let mut retried_keys: HashSet<u64> = HashSet::new();
    for (item, r) in batch.into_iter().zip(results) {
        if !retried_keys.is_empty() && r == ItemResult::Ok && retried_keys.contains(&key_hash(&item.payload))
        {
            retry.push(item);
            continue;
        }
        match r {
            ItemResult::Ok => written.push(item.ack),
            ItemResult::Reject(reason) => {
                m.items_rejected.inc();
                item.ack.rejected(reason);
            }
            ItemResult::Retry(reason) => {
                last_reason = reason;
                retried_keys.insert(key_hash(&item.payload));
                retry.push(item);
            }
        }
    }
    m.items_ok.inc_by(written.len() as u64);
    A::ok_all(written);
    (retry, last_reason)
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
