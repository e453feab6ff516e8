//! The dead-letter stage of the pipeline: a record that cannot be written (the plugin rejected or failed it, an output was
//! not allowed, a store refused it) goes there with its original key, value and headers, plus headers saying
//! why and where it came from. Writing it is part of the record's completion: its offset is not committed
//! until the dead letter is acknowledged (idempotent producer, `acks=all`); a failing dead-letter topic is
//! retried without limit, so nothing is lost.
//!
//! A dead letter carries the time it was produced as its Kafka timestamp (the source record's stays in the
//! `millrace.source.timestamp` header), so the dead-letter topic's retention counts from the failure, not from
//! when the record was first produced. Failures that retrying cannot fix do not pin the partition silently: a
//! dead letter too large for the producer or the broker is written again cut down (the value to 64 KiB, then
//! without value and original headers), with a `millrace.truncated` header saying what was cut; a topic that
//! does not exist or may not be written, and a fatal producer error, fail the worker's health (it drains and
//! exits non-zero, so the operator sees it) while the record stays uncommitted, to be delivered again.

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
    /// Set when the dead letter had to be cut down to be accepted: what was cut.
    pub const TRUNCATED: &str = "millrace.truncated";
}

/// How far a dead letter is cut down after the producer or the broker found it too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Trim {
    /// As it is.
    Whole,
    /// The value cut to [`CUT_VALUE_TO`] bytes.
    Value,
    /// Without value and without the record's own headers: key and millrace headers only.
    Bare,
}

/// Bytes of the value a cut-down dead letter keeps.
const CUT_VALUE_TO: usize = 64 * 1024;

/// What becomes of a dead letter whose write failed.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Too large: write it again cut down further (or, already bare, retry).
    TooLarge,
    /// Retrying cannot fix it (no such topic, not authorized, fatal producer error): fail the worker's health.
    Permanent,
    /// Try again later.
    Retry,
}

fn classify(e: &rdkafka::error::KafkaError) -> Verdict {
    use rdkafka::types::RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge) => Verdict::TooLarge,
        Some(
            C::UnknownTopic
            | C::UnknownTopicOrPartition
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::InvalidTopic
            | C::Fatal,
        ) => Verdict::Permanent,
        _ => Verdict::Retry,
    }
}

/// Characters of the error message a dead letter's header keeps.
const MESSAGE_CHARS: usize = 4096;

/// The error message cut to [`MESSAGE_CHARS`] characters.
fn cut_message(message: &str) -> &str {
    if message.len() <= MESSAGE_CHARS {
        return message; // no more characters than bytes: nothing to count
    }
    message
        .char_indices()
        .nth(MESSAGE_CHARS)
        .map_or(message, |(end, _)| &message[..end])
}

/// Writes dead letters. Cheap to clone.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: Arc<str>,
    /// Shared: a dead letter's task holds a clone of all of this, and `Metrics` is a few dozen handles.
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
    /// Set once the pipeline committed its last offsets (see `Fallback::is_closed`).
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Failed when the dead-letter topic cannot be written at all.
    health: crate::health::Health,
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
        health: crate::health::Health,
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
            metrics: Arc::new(metrics),
            runtime,
            closed: Arc::default(),
            health,
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
        trim: Trim,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let partition = r.partition.to_string();
        let offset = r.offset.to_string();
        let timestamp = r.timestamp_ms.map(|t| t.to_string());
        let mut h = OwnedHeaders::new_with_capacity(r.headers.len() + 9);
        if trim < Trim::Bare {
            for (name, value) in &r.headers {
                h = h.insert(Header {
                    key: name,
                    value: value.as_deref(),
                });
            }
        }
        let message = cut_message(message);
        let (binding, digest) = r
            .processed_by
            .get()
            .map_or(("none", ""), |p| (p.binding.as_ref(), p.digest.as_ref()));
        let value_len = r.value.as_ref().map_or(0, Vec::len);
        let truncated = match trim {
            Trim::Whole => None,
            Trim::Value => Some(format!(
                "value cut from {value_len} to {} bytes",
                value_len.min(CUT_VALUE_TO)
            )),
            Trim::Bare => Some(format!(
                "value ({value_len} bytes) and the record's {} headers left out",
                r.headers.len()
            )),
        };
        for (key, value) in [
            (headers::KIND, Some(kind.as_str())),
            (headers::MESSAGE, Some(message)),
            (headers::PLUGIN_DIGEST, Some(digest)),
            (headers::BINDING, Some(binding)),
            (headers::TOPIC, Some(r.topic().as_ref())),
            (headers::PARTITION, Some(partition.as_str())),
            (headers::OFFSET, Some(offset.as_str())),
            (headers::TIMESTAMP, timestamp.as_deref()),
            (headers::TRUNCATED, truncated.as_deref()),
        ] {
            if let Some(v) = value {
                h = h.insert(Header { key, value: Some(v) });
            }
        }
        // No timestamp: the producer stamps the dead letter with the time it is written.
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(h);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        match (&r.value, trim) {
            (Some(v), Trim::Whole) => rec = rec.payload(v.as_slice()),
            (Some(v), Trim::Value) => rec = rec.payload(&v[..v.len().min(CUT_VALUE_TO)]),
            _ => {}
        }
        self.producer
            .send(rec, Timeout::After(Duration::from_secs(60)))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Writes the record's dead letter until it is acknowledged: cut down when too large, the worker's health
    /// failed when the topic cannot be written at all (it keeps trying while the worker drains).
    async fn deliver(&self, record: &InFlight, kind: DeadLetterKind, message: &str) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut trim = Trim::Whole;
        loop {
            let e = match self.write(record, kind, message, trim).await {
                Ok(()) => return,
                Err(e) => e,
            };
            match classify(&e) {
                Verdict::TooLarge if trim < Trim::Bare => {
                    trim = if trim == Trim::Whole {
                        Trim::Value
                    } else {
                        Trim::Bare
                    };
                    self.metrics.dead_letters_truncated.inc();
                    tracing::warn!(topic = %self.topic, error = %e, source = %record.topic(),
                        partition = record.partition, offset = record.offset, ?trim,
                        "dead letter too large; writing it cut down");
                    continue;
                }
                Verdict::Permanent => self.health.fail(format!(
                    "the dead-letter topic `{}` cannot be written: {e}",
                    self.topic
                )),
                Verdict::TooLarge | Verdict::Retry => {}
            }
            let delay = backoff.next_delay();
            tracing::warn!(topic = %self.topic, error = %e, ?delay, "dead-letter write failed; retrying");
            tokio::time::sleep(delay).await;
        }
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
        tracing::debug!(topic = %record.topic(), partition = record.partition, offset = record.offset,
            kind = kind.as_str(), %message, "dead-lettering a record");
        // Given up (the runtime shuts down), the share leaves the record to be delivered again.
        let share = share.redeliver_if_dropped();
        let this = self.clone();
        self.runtime.spawn(async move {
            this.deliver(share.record(), kind, &message).await;
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

#[cfg(test)]
mod tests {
    use super::{MESSAGE_CHARS, Verdict, classify, cut_message};
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as C;

    #[test]
    fn error_messages_are_cut_to_their_first_characters() {
        assert_eq!(cut_message("short"), "short");
        let ascii = "x".repeat(MESSAGE_CHARS);
        assert_eq!(cut_message(&ascii), ascii);
        assert_eq!(cut_message(&format!("{ascii}y")), ascii);
        // Multi-byte characters: counted as characters, cut on a character boundary.
        let wide = "é".repeat(MESSAGE_CHARS);
        assert_eq!(cut_message(&wide), wide);
        assert_eq!(cut_message(&format!("{wide}ü")), wide);
        let mixed: String = "aé€😀".repeat(MESSAGE_CHARS);
        assert_eq!(
            cut_message(&mixed),
            mixed.chars().take(MESSAGE_CHARS).collect::<String>()
        );
    }

    #[test]
    fn failures_are_classified_by_what_a_retry_can_do() {
        let v = |c| classify(&KafkaError::MessageProduction(c));
        assert_eq!(v(C::MessageSizeTooLarge), Verdict::TooLarge);
        assert_eq!(v(C::UnknownTopicOrPartition), Verdict::Permanent);
        assert_eq!(v(C::UnknownTopic), Verdict::Permanent);
        assert_eq!(v(C::TopicAuthorizationFailed), Verdict::Permanent);
        assert_eq!(v(C::Fatal), Verdict::Permanent);
        assert_eq!(v(C::MessageTimedOut), Verdict::Retry);
        assert_eq!(v(C::BrokerTransportFailure), Verdict::Retry);
        assert_eq!(v(C::NotEnoughReplicas), Verdict::Retry);
    }
}
