//! The dead-letter stage of the pipeline: a record that cannot be written (the plugin rejected or failed it, an output was
//! not allowed, a store refused it) goes there with its original key, value and headers, plus headers saying
//! why and where it came from. Writing it is part of the record's completion: its offset is not committed
//! until the dead letter is acknowledged (idempotent producer, `acks=all`); a failing dead-letter topic is
//! retried without limit, so nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::ack::{Dropped, Fallback, InFlight, Share};
use crate::WorkerError;
use crate::config::KafkaConfig;
use crate::kinds::DeadLetterKind;
use crate::metrics::Metrics;
use crate::sinks::Backoff;

/// Header names of a dead letter (besides the original record's headers).
pub mod headers {
    pub const KIND: &str = "millrace.error.kind";
    pub const MESSAGE: &str = "millrace.error.message";
    pub const PLUGIN_DIGEST: &str = "millrace.plugin.digest";
    pub const BINDING: &str = "millrace.binding";
    pub const TOPIC: &str = "millrace.source.topic";
    pub const PARTITION: &str = "millrace.source.partition";
    pub const OFFSET: &str = "millrace.source.offset";
    pub const TIMESTAMP: &str = "millrace.source.timestamp";
}

/// Writes dead letters. Cheap to clone.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: Arc<str>,
    metrics: Metrics,
    runtime: tokio::runtime::Handle,
    /// Set once the pipeline committed its last offsets (see `Fallback::is_closed`).
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    pub fn new(
        kafka: &KafkaConfig,
        topic: &str,
        metrics: Metrics,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, WorkerError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5")
            .set("compression.type", "zstd");
        for (k, v) in &kafka.properties {
            c.set(k, v);
        }
        Ok(Self {
            producer: c.create()?,
            topic: topic.into(),
            metrics,
            runtime,
            closed: Arc::default(),
        })
    }

    /// Marks the pipeline closed: its last offsets are committed, nothing finished from now on matters.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
    }

    async fn write(
        &self,
        r: &InFlight,
        kind: DeadLetterKind,
        message: &str,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let partition = r.partition.to_string();
        let offset = r.offset.to_string();
        let timestamp = r.timestamp_ms.map(|t| t.to_string());
        let mut h = OwnedHeaders::new_with_capacity(r.headers.len() + 8);
        for (name, value) in &r.headers {
            h = h.insert(Header {
                key: name,
                value: value.as_deref(),
            });
        }
        let message: String = message.chars().take(4096).collect();
        let (binding, digest) = r
            .plugin
            .get()
            .map_or(("none", ""), |(b, d)| (b.as_ref(), d.as_ref()));
        for (key, value) in [
            (headers::KIND, Some(kind.as_str())),
            (headers::MESSAGE, Some(message.as_str())),
            (headers::PLUGIN_DIGEST, Some(digest)),
            (headers::BINDING, Some(binding)),
            (headers::TOPIC, Some(r.topic.as_ref())),
            (headers::PARTITION, Some(partition.as_str())),
            (headers::OFFSET, Some(offset.as_str())),
            (headers::TIMESTAMP, timestamp.as_deref()),
        ] {
            if let Some(v) = value {
                h = h.insert(Header { key, value: Some(v) });
            }
        }
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(h);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        if let Some(ts) = r.timestamp_ms {
            rec = rec.timestamp(ts);
        }
        self.producer
            .send(rec, Timeout::After(Duration::from_secs(60)))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Waits until queued dead letters are delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(error = %e, "flushing dead letters");
        }
    }
}

impl Fallback for DeadLetters {
    /// Sends the share's record to the dead-letter topic, then finishes the share. Only the first dead letter
    /// of a record is written; later ones finish at once (the record is finished only when the first is
    /// acknowledged anyway).
    fn dead_letter(&self, share: Share, kind: DeadLetterKind, message: String) {
        let record = share.record();
        if record
            .dead_lettered
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            share.finish();
            return;
        }
        self.metrics
            .dead_letters
            .with_label_values(&[kind.as_str()])
            .inc();
        tracing::debug!(topic = %record.topic, partition = record.partition, offset = record.offset,
            kind = kind.as_str(), %message, "dead-lettering a record");
        // Given up (the runtime shuts down), the share leaves the record to be delivered again.
        let share = share.redeliver_if_dropped();
        let this = self.clone();
        self.runtime.spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
            loop {
                match this.write(share.record(), kind, &message).await {
                    Ok(()) => break,
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(topic = %this.topic, error = %e, ?delay, "dead-letter write failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            share.finish();
        });
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn dropped(&self, _record: &InFlight, outcome: Dropped) {
        self.metrics
            .acks_dropped
            .with_label_values(&[outcome.as_str()])
            .inc();
    }
}
