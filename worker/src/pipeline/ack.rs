//! Stage 5 of the pipeline, acknowledgements: a record in flight and the tokens that finish it.
//!
//! A record taken from Kafka starts with one [`Share`] (its processing). Every stage that takes part of the
//! record's work splits a share off an existing one (one per output queued to a store, one per dead letter) and
//! gives it back by [`Share::finish`] (written), [`Share::dead_letter`] (failed for good), [`Share::abandon`]
//! (binding removed: never commit it) or [`Share::redeliver`] (the partition left: the next owner redelivers).
//! When the last share of a record is finished the record is finished in its partition's tracker, and the
//! committable offset may move past it.
//!
//! A share that is dropped without any of these (a forgotten path, a panic, a queue that went away) does not
//! stall its partition silently, in the spirit of Vector's finalizers: its record is dead-lettered as
//! `unacknowledged` and counted, or, when the partition was revoked or the pipeline has stopped, left
//! unfinished to be delivered again (counted too).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::offsets::PartitionTracker;
use crate::bindings::ProcessedBy;
use crate::kinds::DeadLetterKind;

/// What happened to a share that was dropped without being given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The record was dead-lettered as `unacknowledged`.
    DeadLettered,
    /// The record was left unfinished: it will be delivered again (partition revoked, pipeline stopped).
    Redelivered,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeadLettered => "dead_lettered",
            Self::Redelivered => "redelivered",
        }
    }
}

/// Where failed records go: the dead-letter topic. A trait so that this module does not depend on the
/// producer (and tests can watch what arrives).
pub trait Fallback: Send + Sync + std::fmt::Debug {
    /// Writes `share`'s record to the dead-letter topic, then finishes the share.
    fn dead_letter(&self, share: Share, kind: DeadLetterKind, message: String);
    /// True once the pipeline has committed its last offsets: nothing finished after that matters.
    fn is_closed(&self) -> bool;
    /// Counts a share dropped without being given back.
    fn dropped(&self, record: &InFlight, outcome: Dropped);
}

/// What the records of one partition share, held by one reference per record: the record takes one
/// reference on the poll thread and gives it back on whichever thread finishes it, instead of one for each of
/// its partition's tracker, the latency histogram and the dead-letter fallback. Those counts are shared by
/// every record and touched by every thread, so each costs more than its work on two cores.
#[derive(Debug)]
pub struct Origin {
    tracker: Arc<PartitionTracker>,
    /// The partition's topic, shared by its records.
    topic: Arc<str>,
    /// Where to observe the time from a record's timestamp to its completion.
    latency: Option<prometheus::Histogram>,
    fallback: Arc<dyn Fallback>,
}

impl Origin {
    pub fn new(
        tracker: Arc<PartitionTracker>,
        latency: Option<prometheus::Histogram>,
        fallback: Arc<dyn Fallback>,
    ) -> Arc<Self> {
        Arc::new(Self {
            topic: Arc::from(tracker.topic.as_str()),
            tracker,
            latency,
            fallback,
        })
    }

    pub fn tracker(&self) -> &Arc<PartitionTracker> {
        &self.tracker
    }
}

/// A record between the moment it was taken and the moment all its outputs were acknowledged.
pub struct InFlight {
    origin: Arc<Origin>,
    /// The binding and plugin version (manifest digest) that processed the record, set by its lane.
    pub processed_by: OnceLock<Arc<ProcessedBy>>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Set by the first dead letter of the record (later ones are not written twice).
    pub dead_lettered: AtomicBool,
    pub taken: Instant,
    /// Shares not given back yet.
    outstanding: AtomicU32,
    /// What the record holds in memory, counted in its tracker until the record is dropped.
    bytes: usize,
}

/// Memory a record is counted for besides its key, value and headers (the record's own bookkeeping).
const RECORD_OVERHEAD: usize = 256;

impl Drop for InFlight {
    fn drop(&mut self) {
        self.origin.tracker.release_bytes(self.bytes);
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("topic", self.topic())
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("outstanding", &self.outstanding.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The Kafka record's fields, as the pipeline keeps them.
#[derive(Debug, Default)]
pub struct RecordData {
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl InFlight {
    /// The topic the record came from.
    pub fn topic(&self) -> &Arc<str> {
        &self.origin.topic
    }

    /// The id (KIP-516) of the topic incarnation the record came from, when the broker reports one.
    pub fn topic_id(&self) -> Option<&str> {
        self.origin.tracker.topic_id()
    }

    /// Registers a record just taken from `origin`'s partition and returns its processing share.
    pub fn begin(origin: Arc<Origin>, offset: i64, data: RecordData) -> Share {
        Self::begin_at(origin, offset, data, Instant::now())
    }

    /// [`InFlight::begin`] for a record taken at `taken`: the poll thread reads the clock once per round of
    /// records it takes (all already fetched, taken within microseconds), not once per record.
    pub fn begin_at(origin: Arc<Origin>, offset: i64, data: RecordData, taken: Instant) -> Share {
        origin.tracker.begin(offset);
        let bytes = RECORD_OVERHEAD
            + data.key.as_ref().map_or(0, Vec::len)
            + data.value.as_ref().map_or(0, Vec::len)
            + data
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        origin.tracker.hold_bytes(bytes);
        let record = Arc::new(Self {
            partition: origin.tracker.partition,
            origin,
            processed_by: OnceLock::new(),
            offset,
            timestamp_ms: data.timestamp_ms,
            key: data.key,
            value: data.value,
            headers: data.headers,
            dead_lettered: AtomicBool::new(false),
            taken,
            outstanding: AtomicU32::new(1),
            bytes,
        });
        Share {
            record,
            on_drop: OnDrop::DeadLetter,
        }
    }

    pub fn tracker(&self) -> &Arc<PartitionTracker> {
        &self.origin.tracker
    }

    /// Bytes the record is counted for while it is in memory.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Shares not given back yet.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Acquire)
    }

    fn finish_one(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.origin.tracker.finish(self.offset);
            if let (Some(h), Some(ts)) = (&self.origin.latency, self.timestamp_ms) {
                h.observe(latency_seconds(now_ms(), ts));
            }
        }
    }
}

/// Milliseconds since the Unix epoch, as Kafka timestamps count.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn latency_seconds(now_ms: i64, timestamp_ms: i64) -> f64 {
    (now_ms - timestamp_ms).max(0) as f64 / 1e3
}

/// [`Share::finish`] for every share of a store's answered batch. The same outcome as finishing them one by
/// one, for less: the records completed are finished in their partition's tracker under one lock per
/// partition (which the poll thread takes for every record it registers), their latencies are read against
/// one clock reading and counted in the shared histogram once. A sink's acknowledgements were 7% of the
/// worker's CPU in the pipeline benchmark, one lock, clock reading and histogram update per record.
pub fn finish_all(mut shares: Vec<Share>) {
    /// The records completed from one partition (one origin).
    struct Completed<'a> {
        origin: &'a Origin,
        offsets: Vec<i64>,
        latency: Option<prometheus::local::LocalHistogram>,
    }
    let mut now = None;
    let mut groups: Vec<Completed<'_>> = Vec::new();
    // Index of each origin's group (by address): batches hold records of many partitions.
    let mut index: crate::hashing::FastMap<usize, usize> = crate::hashing::FastMap::default();
    for share in &mut shares {
        share.on_drop = OnDrop::Nothing;
        let record: &InFlight = &share.record;
        if record.outstanding.fetch_sub(1, Ordering::AcqRel) != 1 {
            continue; // another share of the record is still out
        }
        let origin: &Origin = &record.origin;
        let last = groups.len().checked_sub(1);
        let g = match last.filter(|&i| std::ptr::eq(groups[i].origin, origin)) {
            Some(i) => i,
            None => *index
                .entry(std::ptr::from_ref(origin) as usize)
                .or_insert_with(|| {
                    groups.push(Completed {
                        origin,
                        offsets: Vec::new(),
                        latency: origin.latency.as_ref().map(prometheus::Histogram::local),
                    });
                    groups.len() - 1
                }),
        };
        let group = &mut groups[g];
        group.offsets.push(record.offset);
        if let (Some(h), Some(ts)) = (&group.latency, record.timestamp_ms) {
            h.observe(latency_seconds(*now.get_or_insert_with(now_ms), ts));
        }
    }
    for group in groups {
        group.origin.tracker.finish_all(&group.offsets);
        if let Some(h) = group.latency {
            h.flush();
        }
    }
}

/// What a dropped share does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDrop {
    /// Dead-letter the record as `unacknowledged` (unless its partition left or the pipeline stopped).
    DeadLetter,
    /// Leave the record unfinished: it is delivered again (the share of a dead letter being written).
    Redeliver,
    /// Given back: nothing.
    Nothing,
}

/// One outstanding part of a record's completion: the acknowledgement token. See the module header.
#[must_use = "a share must be finished, dead-lettered, abandoned or redelivered"]
pub struct Share {
    record: Arc<InFlight>,
    on_drop: OnDrop,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("topic", self.record.topic())
            .field("partition", &self.record.partition)
            .field("offset", &self.record.offset)
            .finish()
    }
}

impl Share {
    pub fn record(&self) -> &Arc<InFlight> {
        &self.record
    }

    /// Another share of the same record (an output queued to a store, a dead letter): the record is not
    /// finished before this one is given back too.
    pub fn split(&self) -> Share {
        self.record.outstanding.fetch_add(1, Ordering::AcqRel);
        Share {
            record: self.record.clone(),
            on_drop: OnDrop::DeadLetter,
        }
    }

    /// Done: this part of the record was written.
    pub fn finish(mut self) {
        self.on_drop = OnDrop::Nothing;
        self.record.finish_one();
    }

    /// This part failed for good: the record goes to the dead-letter topic (which finishes the share).
    pub fn dead_letter(self, kind: DeadLetterKind, message: String) {
        let origin = self.record.origin.clone();
        origin.fallback.dead_letter(self, kind, message);
    }

    /// The record will not be processed (its binding was removed): it leaves the in-flight set but the
    /// partition's committable offset stops before it, so it stays for whoever consumes it next.
    pub fn abandon(mut self) {
        self.on_drop = OnDrop::Nothing;
        self.record.origin.tracker.abandon(self.record.offset);
    }

    /// The record's partition moved to another worker (or the worker stops): leave the record unfinished
    /// on purpose; it is delivered again.
    pub fn redeliver(mut self) {
        self.on_drop = OnDrop::Nothing;
    }

    /// For the share a dead letter holds while it is written: if the write is given up (shutdown), the
    /// record stays unfinished and is delivered again, rather than dead-lettered a second time.
    pub fn redeliver_if_dropped(mut self) -> Share {
        self.on_drop = OnDrop::Nothing;
        Share {
            record: self.record.clone(),
            on_drop: OnDrop::Redeliver,
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let on_drop = std::mem::replace(&mut self.on_drop, OnDrop::Nothing);
        let record = &self.record;
        // Borrowed, not cloned: every finished share passes here, and a clone would be two contended atomic
        // writes per share for nothing.
        let fallback = &record.origin.fallback;
        match on_drop {
            OnDrop::Nothing => {}
            OnDrop::Redeliver => fallback.dropped(record, Dropped::Redelivered),
            OnDrop::DeadLetter if record.origin.tracker.is_revoked() || fallback.is_closed() => {
                fallback.dropped(record, Dropped::Redelivered)
            }
            OnDrop::DeadLetter => {
                fallback.dropped(record, Dropped::DeadLettered);
                tracing::error!(topic = %record.topic(), partition = record.partition, offset = record.offset,
                    "an acknowledgement was dropped without being given back; dead-lettering the record");
                // The count this share holds passes to the dead letter's share.
                let share = Share {
                    record: record.clone(),
                    on_drop: OnDrop::Redeliver,
                };
                fallback.dead_letter(
                    share,
                    DeadLetterKind::Unacknowledged,
                    "the worker dropped this record's acknowledgement without acknowledging it".into(),
                );
            }
        }
    }
}

impl crate::sinks::Acker for Share {
    fn ok(self) {
        self.finish();
    }

    fn ok_all(acks: Vec<Self>) {
        finish_all(acks);
    }

    fn rejected(self, reason: String) {
        self.dead_letter(DeadLetterKind::StoreRejected, reason);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A fallback that keeps the dead letters it is given, to finish them when a test says so.
    #[derive(Debug, Default)]
    pub(crate) struct Kept {
        pub letters: Mutex<Vec<(Share, DeadLetterKind)>>,
        pub dropped: Mutex<Vec<Dropped>>,
        pub closed: AtomicBool,
    }

    impl Fallback for Kept {
        fn dead_letter(&self, share: Share, kind: DeadLetterKind, _message: String) {
            self.letters
                .lock()
                .unwrap()
                .push((share.redeliver_if_dropped(), kind));
        }
        fn is_closed(&self) -> bool {
            self.closed.load(Ordering::Acquire)
        }
        fn dropped(&self, _record: &InFlight, outcome: Dropped) {
            self.dropped.lock().unwrap().push(outcome);
        }
    }

    pub(crate) fn take(t: &Arc<PartitionTracker>, offset: i64, fallback: &Arc<Kept>) -> Share {
        let f: Arc<dyn Fallback> = fallback.clone();
        InFlight::begin(Origin::new(t.clone(), None, f), offset, RecordData::default())
    }

    #[test]
    fn a_record_is_finished_when_its_last_share_is() {
        let kept = Arc::new(Kept::default());
        let t = PartitionTracker::new("t", 0);
        let a = take(&t, 10, &kept);
        let b = take(&t, 11, &kept);
        let c = take(&t, 12, &kept);
        let (b1, b2) = (b.split(), b.split()); // two outputs
        b.finish(); // processing
        c.finish(); // no outputs: finished at once
        assert_eq!(t.committable(), Some(10), "10 is still running");
        a.finish();
        assert_eq!(t.committable(), Some(11), "11 waits for its outputs");
        b1.finish();
        assert_eq!(t.committable(), Some(11));
        b2.finish();
        assert_eq!(t.committable(), Some(13));
        assert_eq!(t.in_flight(), 0);
        assert!(kept.dropped.lock().unwrap().is_empty());
    }

    #[test]
    fn finishing_a_batch_at_once_finishes_what_finishing_one_by_one_would() {
        let kept: Arc<dyn Fallback> = Arc::new(Kept::default());
        let latency = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("l", "l")).unwrap();
        let (t, u) = (PartitionTracker::new("t", 0), PartitionTracker::new("t", 1));
        let (ot, ou) = [&t, &u]
            .map(|p| Origin::new(p.clone(), Some(latency.clone()), kept.clone()))
            .into();
        let at = |origin: &Arc<Origin>, offset| {
            let data = RecordData {
                timestamp_ms: Some(1),
                ..RecordData::default()
            };
            InFlight::begin(origin.clone(), offset, data)
        };
        let t0 = at(&ot, 0);
        let t1 = at(&ot, 1);
        let u0 = at(&ou, 0);
        let t2 = at(&ot, 2);
        let (t0_out, t1_out, u0_out, t2_out) = (t0.split(), t1.split(), u0.split(), t2.split());
        for processing in [t0, t1, u0, t2] {
            processing.finish();
        }
        let t1_second = t1_out.split(); // record 1 of t has a second output, still out
        // The partitions interleave in the batch, as records of several partitions do in a store's batch.
        finish_all(vec![t2_out, u0_out, t1_out, t0_out]);
        assert_eq!(
            t.committable(),
            Some(1),
            "t's record 1 waits for its second output"
        );
        assert_eq!((t.in_flight(), u.in_flight()), (1, 0));
        assert_eq!(u.committable(), Some(1));
        assert_eq!(latency.get_sample_count(), 3, "one latency per record completed");
        finish_all(vec![t1_second]);
        assert_eq!((t.committable(), t.in_flight()), (Some(3), 0));
        assert_eq!(latency.get_sample_count(), 4);
    }

    #[test]
    fn a_forgotten_acknowledgement_dead_letters_its_record_instead_of_stalling_the_partition() {
        let kept = Arc::new(Kept::default());
        let t = PartitionTracker::new("t", 0);
        let a = take(&t, 0, &kept);
        let output = a.split();
        a.finish();
        let b = take(&t, 1, &kept);
        b.finish();
        drop(output); // a stage forgot to acknowledge
        assert_eq!(*kept.dropped.lock().unwrap(), vec![Dropped::DeadLettered]);
        let (letter, kind) = kept.letters.lock().unwrap().pop().unwrap();
        assert_eq!(kind, DeadLetterKind::Unacknowledged);
        assert_eq!(letter.record().offset, 0);
        assert_eq!(t.committable(), Some(0), "held until the dead letter is written");
        letter.finish(); // the dead letter was acknowledged
        assert_eq!(t.committable(), Some(2), "the partition moves on");
    }

    #[test]
    fn a_dropped_share_of_a_revoked_partition_or_a_stopped_pipeline_is_redelivered() {
        let kept = Arc::new(Kept::default());
        let t = PartitionTracker::new("t", 0);
        let a = take(&t, 0, &kept);
        t.revoke();
        drop(a);
        let u = PartitionTracker::new("u", 0);
        let b = take(&u, 0, &kept);
        kept.closed.store(true, Ordering::Release);
        drop(b);
        assert_eq!(
            *kept.dropped.lock().unwrap(),
            vec![Dropped::Redelivered, Dropped::Redelivered]
        );
        assert!(kept.letters.lock().unwrap().is_empty());
        assert_eq!(t.committable(), Some(0), "not committed past");
        assert_eq!(u.committable(), Some(0), "not committed past");
    }

    #[test]
    fn a_dead_letter_given_up_leaves_its_record_for_redelivery() {
        let kept = Arc::new(Kept::default());
        let t = PartitionTracker::new("t", 0);
        let a = take(&t, 0, &kept);
        a.dead_letter(DeadLetterKind::Trap, "boom".into());
        let (letter, _) = kept.letters.lock().unwrap().pop().unwrap();
        drop(letter); // the write was given up (shutdown)
        assert_eq!(*kept.dropped.lock().unwrap(), vec![Dropped::Redelivered]);
        assert!(kept.letters.lock().unwrap().is_empty(), "not dead-lettered twice");
        assert_eq!(t.committable(), Some(0));
    }

    #[test]
    fn abandoned_records_hold_the_offset_back_without_blocking_a_drain() {
        let kept = Arc::new(Kept::default());
        let t = PartitionTracker::new("t", 0);
        let a = take(&t, 5, &kept);
        let b = take(&t, 6, &kept);
        let c = take(&t, 7, &kept);
        a.finish();
        b.abandon();
        c.finish();
        assert_eq!(t.in_flight(), 0, "nothing to wait for");
        assert_eq!(t.committable(), Some(6), "but 6 and later stay uncommitted");
    }

    #[test]
    fn acknowledgements_in_any_order_never_skip_an_unwritten_record() {
        // Finish 100 records in a scrambled order; after each step, everything below the committable offset
        // must be finished.
        let kept = Arc::new(Kept::default());
        let t = PartitionTracker::new("t", 1);
        let mut recs: Vec<Option<Share>> = (0..100).map(|o| Some(take(&t, o, &kept))).collect();
        let mut order: Vec<usize> = (0..100).collect();
        let mut x: u64 = 7;
        for i in (1..order.len()).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (x >> 33) as usize % (i + 1));
        }
        let mut finished = [false; 100];
        for i in order {
            recs[i].take().unwrap().finish();
            finished[i] = true;
            let c = t.committable().unwrap() as usize;
            assert!(
                finished[..c].iter().all(|f| *f),
                "committable {c} passes an unfinished record"
            );
            assert!(c == 100 || !finished[c]);
        }
        assert_eq!(t.committable(), Some(100));
    }
}
