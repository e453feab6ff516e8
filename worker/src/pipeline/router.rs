//! Stage 3 of the pipeline, the router: each output of an accepted record is checked against its binding's
//! allowed indices and measurements, given its deterministic id (documents: [`default_document_id`], so a
//! redelivered record overwrites itself) or its default timestamp (points without one get the record's
//! millisecond plus nanoseconds unique per partition, offset and point: [`unique_timestamp_ns`]), and queued
//! to its sinks with one share of the record each. Outputs not allowed, or for a store that is not
//! configured, dead-letter the record as `output_not_allowed`; the allowed ones are still written.

use std::time::Duration;

use millrace_runtime::Output;

use super::ack::Share;
use super::lane::BindingMetrics;
use crate::bindings::Binding;
use crate::config::PointTimestamps;
use crate::kinds::DeadLetterKind;
use crate::sinks::{Item, Payload, SinkSender};

/// Records whose outputs a lane gathers before handing them to the sinks in one chunk per sink.
const OUTBOX_RECORDS: usize = 64;
/// Plugin time a lane spends (on any records) after the first output entered the outbox before it flushes:
/// outputs never wait behind a backlog of slow or failing records.
const OUTBOX_AGE: Duration = Duration::from_millis(1);

/// Where outputs go: every configured InfluxDB sink gets every point; documents go to Elasticsearch.
///
/// Each lane has its own router (a clone), whose outbox gathers the outputs of up to [`OUTBOX_RECORDS`]
/// records, in record order, before handing them over: one hand-over (and at most one wake-up of a sink task)
/// per chunk instead of per record. The lane flushes it whenever it has nothing else to do, so a record
/// never waits in the outbox for records that have not arrived, and after [`OUTBOX_AGE`] of plugin time, so
/// it never waits long behind records that produce nothing (failing, rejected, another client's slow ones).
#[derive(Debug)]
pub(super) struct Router {
    points: Vec<SinkSender<Share>>,
    documents: Option<SinkSender<Share>>,
    /// One chunk per sink: index 0.. for the InfluxDB sinks, then the Elasticsearch sink.
    outbox: Vec<Vec<Item<Share>>>,
    /// Records whose outputs are in the outbox.
    outbox_records: usize,
    /// Plugin time the lane spent since the outbox's first record.
    outbox_age: Duration,
}

impl Clone for Router {
    /// A router for another lane: the same sinks, an empty outbox.
    fn clone(&self) -> Self {
        Self::new(self.points.clone(), self.documents.clone())
    }
}

impl Router {
    pub(super) fn new(points: Vec<SinkSender<Share>>, documents: Option<SinkSender<Share>>) -> Self {
        let outbox = (0..=points.len()).map(|_| Vec::new()).collect();
        Self {
            points,
            documents,
            outbox,
            outbox_records: 0,
            outbox_age: Duration::ZERO,
        }
    }

    /// Counts `spent` (a record's plugin time) against the outbox's age; flushes it when old enough.
    pub(super) fn spent(&mut self, spent: Duration) {
        if self.outbox_records == 0 {
            return;
        }
        self.outbox_age += spent;
        if self.outbox_age >= OUTBOX_AGE {
            self.flush();
        }
    }

    /// Hands the outbox to the sinks. Blocks while a sink's queue is full: backpressure, and the partitions
    /// pause behind it.
    pub(super) fn flush(&mut self) {
        if self.outbox_records == 0 {
            return;
        }
        self.outbox_records = 0;
        self.outbox_age = Duration::ZERO;
        let n_points = self.points.len();
        for (k, chunk) in self.outbox.iter_mut().enumerate() {
            if chunk.is_empty() {
                continue;
            }
            let sender = if k < n_points {
                &self.points[k]
            } else {
                match &self.documents {
                    Some(s) => s,
                    None => continue,
                }
            };
            let chunk = std::mem::replace(chunk, Vec::with_capacity(chunk.capacity()));
            if let Err(e) = sender.blocking_send(chunk) {
                // The sink is gone: the chunk's shares are dropped, which dead-letters the records visibly
                // (or leaves them for redelivery when the pipeline is stopping).
                tracing::warn!(error = %e, "sink queue closed");
            }
        }
    }

    /// Routes `outputs` of the record `share` belongs to into the outbox (flushed when full); the caller then
    /// finishes its own share.
    pub(super) fn route(
        &mut self,
        binding: &Binding,
        share: &Share,
        outputs: Vec<Output>,
        bm: &BindingMetrics,
    ) {
        let rec = share.record();
        let n_sinks = self.points.len() + 1;
        let chunks = &mut self.outbox;
        let mut refused: Vec<String> = Vec::new();
        let record_ms = rec.timestamp_ms.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        let unique = binding.config.point_timestamps == PointTimestamps::Unique;
        let stamps = default_timestamps(&outputs, unique, record_ms, rec.partition, rec.offset);
        for (i, (output, stamp)) in outputs.into_iter().zip(stamps).enumerate() {
            match output {
                Output::Point(p) => {
                    bm.points.inc();
                    if !binding.config.allows_measurement(p.measurement()) {
                        refused.push(format!(
                            "output {i}: measurement `{}` is not allowed",
                            p.measurement()
                        ));
                    } else if self.points.is_empty() {
                        refused.push(format!("output {i}: a point, and no InfluxDB sink is configured"));
                    } else {
                        let line = match stamp {
                            Some(ns) => p.line_with_default_timestamp(ns),
                            None => p.line().to_string(),
                        };
                        let last = self.points.len() - 1;
                        for chunk in chunks.iter_mut().take(last) {
                            chunk.push(Item {
                                payload: Payload::Line(line.clone()),
                                ack: share.split(),
                            });
                        }
                        chunks[last].push(Item {
                            payload: Payload::Line(line),
                            ack: share.split(),
                        });
                    }
                }
                Output::Document(d) => {
                    bm.documents.inc();
                    if !binding.config.allows_index(d.index()) {
                        refused.push(format!("output {i}: index `{}` is not allowed", d.index()));
                    } else if self.documents.is_some() {
                        let id = d.id().map_or_else(
                            || {
                                default_document_id(
                                    rec.topic(),
                                    rec.topic_id(),
                                    rec.partition,
                                    rec.offset,
                                    rec.timestamp_ms,
                                    i,
                                )
                            },
                            str::to_string,
                        );
                        let (index, body, _) = d.into_parts();
                        chunks[n_sinks - 1].push(Item {
                            payload: Payload::Document { index, id, body },
                            ack: share.split(),
                        });
                    } else {
                        refused.push(format!(
                            "output {i}: a document, and no Elasticsearch sink is configured"
                        ));
                    }
                }
            }
        }
        if !refused.is_empty() {
            share
                .split()
                .dead_letter(DeadLetterKind::OutputNotAllowed, refused.join("; "));
        }
        self.outbox_records += 1;
        if self.outbox_records >= OUTBOX_RECORDS {
            self.flush();
        }
    }
}

/// The id of a document the plugin wrote without one: `<topic>-<topic id>-<partition>-<offset>-<output>`.
/// Deterministic (a redelivered record overwrites its own documents), and distinct across incarnations of a
/// topic: a topic deleted and created again starts its offsets at 0, and its records would overwrite the old
/// topic's documents if the id held the offset alone. The topic id (KIP-516, looked up when the partition is
/// assigned: `topic_ids`) tells the incarnations apart. Where the broker reports none (or the lookup
/// failed) the id is `<topic>-<partition>-<offset>-<timestamp ms>-<output>`: the record's timestamp stands
/// in, and only a record of the new topic with the same partition, offset and millisecond as one of the old
/// would meet it.
pub(super) fn default_document_id(
    topic: &str,
    topic_id: Option<&str>,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    output: usize,
) -> String {
    // Joined by hand (integers by `itoa`): `format!` here was 2% of the worker's CPU in the pipeline
    // benchmark (one id per document); a test compares both forms.
    let mut digits = itoa::Buffer::new();
    let mut s = String::with_capacity(topic.len() + topic_id.map_or(0, str::len) + 64);
    s.push_str(topic);
    s.push('-');
    if let Some(id) = topic_id {
        s.push_str(id);
        s.push('-');
    }
    s.push_str(digits.format(partition));
    s.push('-');
    s.push_str(digits.format(offset));
    s.push('-');
    if topic_id.is_none() {
        match timestamp_ms {
            Some(ts) => s.push_str(digits.format(ts)),
            None => s.push_str("none"),
        }
        s.push('-');
    }
    s.push_str(digits.format(output));
    s
}

/// The timestamp each output gets if it is a point without one (`None` for the others).
fn default_timestamps(
    outputs: &[Output],
    unique: bool,
    record_ms: i64,
    partition: i32,
    offset: i64,
) -> Vec<Option<i64>> {
    let bare = |o: &Output| matches!(o, Output::Point(p) if !p.has_timestamp());
    let several = outputs.iter().filter(|o| bare(o)).nth(1).is_some();
    // Measurements of this record's points without a timestamp so far, with how many each had (only needed,
    // and only allocated, when the record has several such points).
    let mut seen: Vec<(&str, u32)> = Vec::new();
    outputs
        .iter()
        .map(|o| match o {
            Output::Point(p) if !p.has_timestamp() => Some(if !unique {
                record_ms.saturating_mul(1_000_000)
            } else {
                let nth = if !several {
                    0
                } else if let Some((_, n)) = seen.iter_mut().find(|(m, _)| *m == p.measurement()) {
                    *n += 1;
                    *n
                } else {
                    seen.push((p.measurement(), 0));
                    0
                };
                unique_timestamp_ns(record_ms, partition, offset, nth)
            }),
            _ => None,
        })
        .collect()
}

/// The timestamp of a point without one (`point_timestamps = "unique"`): the record's millisecond, plus
/// nanoseconds that differ for every record of one partition within that millisecond and for every point of
/// one measurement within the record, so that a burst of records never overwrites itself in InfluxDB (a point
/// is identified by its series and timestamp), and a redelivered record overwrites exactly its own points.
///
/// The 1,000,000 nanoseconds of a millisecond are laid out as `partition % 10` (x 100,000), `offset % 10,000`
/// (x 10) and `nth % 10` (the point's place among the record's points of its measurement without timestamp).
/// Two distinct points of one series can only meet when, within the same millisecond, (a) one partition
/// holds more than 10,000 records, (b) partitions `p` and `p + 10k` both hold records whose offsets are equal
/// modulo 10,000, or (c) one record writes more than 10 such points of one measurement. Stores that keep
/// milliseconds only (VictoriaMetrics) drop the nanoseconds: there, points of one series and millisecond
/// still merge; give each point a timestamp in the plugin when that matters.
pub(super) fn unique_timestamp_ns(record_ms: i64, partition: i32, offset: i64, nth: u32) -> i64 {
    let partition = i64::from(partition.rem_euclid(10));
    let offset = offset.rem_euclid(10_000);
    let nth = i64::from(nth % 10);
    record_ms
        .saturating_mul(1_000_000)
        .saturating_add(partition * 100_000 + offset * 10 + nth)
}

#[cfg(test)]
mod tests {
    use super::{default_timestamps, unique_timestamp_ns};
    use millrace_runtime::{Output, Point};
    use std::collections::HashSet;

    #[test]
    fn points_of_one_measurement_in_a_record_are_told_apart_and_given_timestamps_are_kept() {
        let point = |l: &str| Output::Point(Point::parse(l).unwrap());
        let outputs = [
            point("m,s=a v=1"),
            point("m,s=b v=2"),
            point("n v=3"),
            point("m v=4 123"),
            point("m,s=a v=5"),
        ];
        let at = |nth| Some(unique_timestamp_ns(7, 1, 2, nth));
        assert_eq!(
            default_timestamps(&outputs, true, 7, 1, 2),
            [at(0), at(1), at(0), None, at(2)]
        );
        let ms = Some(7_000_000);
        assert_eq!(
            default_timestamps(&outputs, false, 7, 1, 2),
            [ms, ms, ms, None, ms]
        );
        assert_eq!(default_timestamps(&outputs[..1], true, 7, 1, 2), [at(0)]);
    }

    #[test]
    fn default_document_ids_are_deterministic_and_differ_across_topic_incarnations() {
        use super::default_document_id as id;
        let old = id(
            "t",
            Some("AaJGEIc4cpCHBHnoErSyWw"),
            1,
            0,
            Some(1_700_000_000_000),
            2,
        );
        assert_eq!(old, "t-AaJGEIc4cpCHBHnoErSyWw-1-0-2");
        assert_eq!(
            old,
            id(
                "t",
                Some("AaJGEIc4cpCHBHnoErSyWw"),
                1,
                0,
                Some(1_800_000_000_000),
                2
            ),
            "the topic id, not the timestamp, tells incarnations apart"
        );
        assert_ne!(
            old,
            id(
                "t",
                Some("AaJGEI8MfjKdQNfCLkE5eA"),
                1,
                0,
                Some(1_700_000_000_000),
                2
            )
        );
        // Without a topic id the timestamp stands in.
        let bare = id("t", None, 1, 0, Some(1_700_000_000_000), 2);
        assert_eq!(bare, "t-1-0-1700000000000-2");
        assert_ne!(bare, id("t", None, 1, 0, Some(1_800_000_000_000), 2));
        assert_eq!(id("t", None, 0, 5, None, 0), "t-0-5-none-0");
    }

    #[test]
    fn default_document_ids_are_what_format_wrote() {
        // The form the ids had when they were written with `format!`: stored documents keep their ids.
        let formatted =
            |topic: &str, tid: Option<&str>, p: i32, o: i64, ts: Option<i64>, out: usize| match (tid, ts) {
                (Some(id), _) => format!("{topic}-{id}-{p}-{o}-{out}"),
                (None, Some(ts)) => format!("{topic}-{p}-{o}-{ts}-{out}"),
                (None, None) => format!("{topic}-{p}-{o}-none-{out}"),
            };
        for topic in ["t", "client-7.metrics", "ünïcode-тема", ""] {
            for tid in [None, Some("AaJGEIc4cpCHBHnoErSyWw"), Some("")] {
                for p in [0, 1, 9, 10, 4095, i32::MAX, -1, i32::MIN] {
                    for o in [0, 7, 1_000_000_007, i64::MAX, -1001, i64::MIN] {
                        for ts in [None, Some(0), Some(1_700_000_000_123), Some(-5), Some(i64::MIN)] {
                            for out in [0, 3, 99, usize::MAX] {
                                assert_eq!(
                                    super::default_document_id(topic, tid, p, o, ts, out),
                                    formatted(topic, tid, p, o, ts, out)
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_burst_of_records_in_one_millisecond_gets_distinct_timestamps_within_it() {
        let ms = 1_700_000_000_123;
        let mut seen = HashSet::new();
        // 4 partitions x 10,000 records each, 3 points of one measurement per record, all in one millisecond.
        for partition in 0..4 {
            for offset in 5_000..15_000 {
                for nth in 0..3 {
                    let ns = unique_timestamp_ns(ms, partition, offset, nth);
                    assert_eq!(ns / 1_000_000, ms, "stays within the record's millisecond");
                    assert!(seen.insert(ns), "p{partition} o{offset} n{nth} collides");
                }
            }
        }
    }

    #[test]
    fn the_same_record_and_point_always_get_the_same_timestamp() {
        assert_eq!(
            unique_timestamp_ns(42, 3, 123_456, 1),
            unique_timestamp_ns(42, 3, 123_456, 1)
        );
        assert_eq!(
            unique_timestamp_ns(42, 3, 123_456, 1),
            42_000_000 + 300_000 + 3_456 * 10 + 1
        );
    }

    #[test]
    fn the_documented_limits_are_where_points_meet() {
        // 10,000 records of one partition apart, partitions ten apart, the eleventh point of a measurement.
        assert_eq!(
            unique_timestamp_ns(1, 0, 7, 0),
            unique_timestamp_ns(1, 0, 10_007, 0)
        );
        assert_eq!(unique_timestamp_ns(1, 2, 7, 0), unique_timestamp_ns(1, 12, 7, 0));
        assert_eq!(unique_timestamp_ns(1, 0, 7, 0), unique_timestamp_ns(1, 0, 7, 10));
    }
}
