//! Stage 6 of the pipeline, offsets: at-least-once bookkeeping per partition. Every record taken from a
//! partition is tracked until each of its outputs was acknowledged by its store or the record was written to
//! the dead-letter topic (`ack.rs` says when). The partition's committable
//! offset only ever moves to the first record that is not finished yet: an offset is never stored past an
//! unwritten record, whatever order the stores acknowledge in.
//!
//! The records of a partition are kept as a window in offset order (taken records arrive in increasing order;
//! finished ones leave from the front), so that taking and finishing a record costs the same whatever the
//! number in flight (`cargo bench -p millrace-worker --bench record_path`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The state of one assigned partition.
#[derive(Debug)]
pub struct PartitionTracker {
    pub topic: String,
    pub partition: i32,
    state: Mutex<State>,
    revoked: AtomicBool,
    /// Bytes of the partition's records still held in memory (taken, not yet dropped by every stage).
    bytes: AtomicUsize,
    /// The topic's id (KIP-516) as the broker gave it when the partition was assigned: `Some(None)` when
    /// the broker reports none or the lookup failed (see `topic_ids`), unset before the lookup.
    topic_id: OnceLock<Option<Arc<str>>>,
}

#[derive(Debug, Default)]
struct State {
    /// Offsets taken, in increasing order, each with whether it is finished; the front is never finished
    /// (finished records at the front leave at once).
    window: VecDeque<(i64, bool)>,
    /// Records in `window` not finished.
    unfinished: usize,
    /// One past the highest offset taken.
    end: Option<i64>,
    /// The committable offset last stored in the consumer (`mark_stored`).
    stored: Option<i64>,
    /// The lowest record given up without being written (its binding was removed): the committable offset
    /// never passes it, so the records stay where they were for whoever consumes them next.
    abandoned: Option<i64>,
}

fn committable(s: &State) -> Option<i64> {
    let c = s.window.front().map(|&(o, _)| o).or(s.end)?;
    Some(s.abandoned.map_or(c, |a| a.min(c)))
}

/// A window larger than this many entries gives memory back once it is mostly empty again.
const WINDOW_KEEP: usize = 1024;

impl State {
    fn begin(&mut self, offset: i64) {
        match self.window.back() {
            Some(&(last, _)) if last >= offset => {
                // Not expected (a partition's offsets are taken in increasing order), but kept exact.
                if let Err(i) = self.window.binary_search_by_key(&offset, |&(o, _)| o) {
                    self.window.insert(i, (offset, false));
                    self.unfinished += 1;
                }
            }
            _ => {
                self.window.push_back((offset, false));
                self.unfinished += 1;
            }
        }
        self.end = Some(self.end.map_or(offset + 1, |e| e.max(offset + 1)));
    }

    /// Marks `offset` finished (no-op if it is not in flight) and lets finished records leave the front.
    fn finish(&mut self, offset: i64) {
        let Some(&(first, _)) = self.window.front() else {
            return;
        };
        // Offsets are usually consecutive: try the direct position before searching.
        let guess = offset.checked_sub(first).and_then(|d| usize::try_from(d).ok());
        let i = match guess.and_then(|g| self.window.get(g).map(|e| (g, e.0))) {
            Some((g, o)) if o == offset => g,
            _ => match self.window.binary_search_by_key(&offset, |&(o, _)| o) {
                Ok(i) => i,
                Err(_) => return,
            },
        };
        let Some(entry) = self.window.get_mut(i) else {
            return;
        };
        if entry.1 {
            return;
        }
        entry.1 = true;
        self.unfinished -= 1;
        while self.window.front().is_some_and(|&(_, done)| done) {
            self.window.pop_front();
        }
        if self.window.capacity() > WINDOW_KEEP && self.window.len() < self.window.capacity() / 8 {
            self.window.shrink_to(WINDOW_KEEP.max(self.window.len() * 2));
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PartitionTracker {
    pub fn new(topic: &str, partition: i32) -> Arc<Self> {
        Arc::new(Self {
            topic: topic.to_string(),
            partition,
            state: Mutex::new(State::default()),
            revoked: AtomicBool::new(false),
            bytes: AtomicUsize::new(0),
            topic_id: OnceLock::new(),
        })
    }

    /// The topic's id, if it was looked up and the broker has one.
    pub fn topic_id(&self) -> Option<&str> {
        self.topic_id.get().and_then(Option::as_deref)
    }

    /// Whether the topic's id was looked up (successfully or not) for this assignment.
    pub fn knows_topic_id(&self) -> bool {
        self.topic_id.get().is_some()
    }

    /// Sets the topic's id once; later calls are ignored (an assignment keeps the id it started with).
    pub fn set_topic_id(&self, id: Option<Arc<str>>) {
        let _ = self.topic_id.set(id);
    }

    /// Registers a record taken from the partition (offsets arrive in increasing order).
    pub fn begin(&self, offset: i64) {
        lock(&self.state).begin(offset);
    }

    /// Marks a record finished (all outputs acknowledged or dead-lettered).
    pub fn finish(&self, offset: i64) {
        lock(&self.state).finish(offset);
    }

    /// Marks records finished, under one lock.
    pub fn finish_all(&self, offsets: &[i64]) {
        let mut s = lock(&self.state);
        for &offset in offsets {
            s.finish(offset);
        }
    }

    /// Gives a record up: it leaves the in-flight set (a drain does not wait for it) but the committable
    /// offset stops before it.
    pub fn abandon(&self, offset: i64) {
        let mut s = lock(&self.state);
        s.finish(offset);
        s.abandoned = Some(s.abandoned.map_or(offset, |a| a.min(offset)));
    }

    /// Records taken and not finished.
    pub fn in_flight(&self) -> usize {
        lock(&self.state).unfinished
    }

    /// One past the highest offset taken (where fetching goes on from): `None` before the first record.
    pub fn next_to_take(&self) -> Option<i64> {
        lock(&self.state).end
    }

    /// The offset to commit (the next one to consume): the first unfinished record, or one past the last
    /// record taken when all are finished. `None` before the first record.
    pub fn committable(&self) -> Option<i64> {
        committable(&lock(&self.state))
    }

    /// The committable offset if it is ahead of the one last stored: to store now, then [`Self::mark_stored`]
    /// once the consumer took it (one whose store failed is handed out again).
    pub fn to_store(&self) -> Option<i64> {
        let s = lock(&self.state);
        let c = committable(&s)?;
        match s.stored {
            Some(stored) if stored >= c => None,
            _ => Some(c),
        }
    }

    /// Moves the committable offset over records the consumer skipped without handing them out (transaction
    /// markers; an aborted transaction's records under `read_committed`), once every record taken is finished.
    /// `position` is where the consumer stands in the partition: one past the last record or marker it went
    /// over, which only the poll thread moves. Without this, a partition whose last entry is a marker (every
    /// transactional producer's) would keep its committed offset one short forever: a lag of 1 that never
    /// drains. Only once a record was taken in this assignment: taking one sets the consumer's position afresh,
    /// whereas before it the position may still be the one a previous assignment of the partition left (it is
    /// reset asynchronously). Returns whether it moved.
    pub fn pass_skipped(&self, position: i64) -> bool {
        let mut s = lock(&self.state);
        if s.unfinished > 0 || s.abandoned.is_some() || s.end.is_none_or(|e| e >= position) {
            return false;
        }
        s.end = Some(position);
        true
    }

    /// Records that the consumer stored `offset`; a lower one never replaces a higher (offsets committed never
    /// move backwards).
    pub fn mark_stored(&self, offset: i64) {
        let mut s = lock(&self.state);
        s.stored = Some(s.stored.map_or(offset, |o| o.max(offset)));
    }

    /// Counts `n` bytes of a record taken into memory.
    pub fn hold_bytes(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
    }

    /// Uncounts `n` bytes of a record that left memory.
    pub fn release_bytes(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes of this partition's records in memory.
    pub fn bytes_in_flight(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committable_offset_waits_for_the_oldest_unfinished_record() {
        let t = PartitionTracker::new("t", 0);
        assert_eq!(t.committable(), None);
        for o in 10..13 {
            t.begin(o);
        }
        t.finish(12);
        assert_eq!(t.committable(), Some(10), "10 is still running");
        t.finish(10);
        assert_eq!(t.committable(), Some(11), "11 waits for its outputs");
        t.finish(11);
        assert_eq!(t.committable(), Some(13));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.to_store(), Some(13));
        t.mark_stored(13);
        assert_eq!(t.to_store(), None, "only when it moves");
    }

    #[test]
    fn an_offset_whose_store_failed_is_stored_again_and_stored_offsets_never_move_back() {
        let t = PartitionTracker::new("t", 0);
        t.begin(5);
        t.finish(5);
        assert_eq!(t.to_store(), Some(6));
        // The consumer refused it (not marked): handed out again.
        assert_eq!(t.to_store(), Some(6), "stored again after a failure");
        t.mark_stored(6);
        assert_eq!(t.to_store(), None);
        t.mark_stored(3);
        assert_eq!(t.to_store(), None, "a lower offset never replaces a higher one");
        t.begin(6);
        t.finish(6);
        assert_eq!(t.to_store(), Some(7));
    }

    #[test]
    fn skipped_markers_are_passed_only_once_every_record_taken_is_finished() {
        let t = PartitionTracker::new("t", 0);
        t.begin(10);
        t.begin(11);
        // Offset 12 is a commit marker the consumer went over: it stands at 13.
        assert!(!t.pass_skipped(13), "records 10 and 11 are not finished");
        t.finish(11);
        assert!(!t.pass_skipped(13), "record 10 is not finished");
        assert_eq!(t.to_store(), Some(10));
        t.finish(10);
        assert_eq!(t.to_store(), Some(12));
        assert!(t.pass_skipped(13));
        assert_eq!(t.to_store(), Some(13), "past the marker");
        assert!(!t.pass_skipped(13) && !t.pass_skipped(12), "never backwards");
        t.begin(13);
        assert_eq!(t.committable(), Some(13));
        // A record given up holds the offset where it is, markers or not.
        t.abandon(13);
        assert!(!t.pass_skipped(20));
        assert_eq!(t.committable(), Some(13));

        // Nothing taken in this assignment: the consumer's position may be a previous assignment's.
        let fresh = PartitionTracker::new("t", 1);
        assert!(!fresh.pass_skipped(7));
        assert_eq!(fresh.to_store(), None);
    }

    /// The window against the obvious model (a sorted set of unfinished offsets), over random orders of
    /// finishing, with gaps in the offsets (compacted topics, transaction markers), repeated finishes and
    /// finishes of offsets never taken.
    #[test]
    fn the_window_agrees_with_a_sorted_set_of_unfinished_offsets() {
        use std::collections::BTreeSet;
        let mut rng = fastrand::Rng::with_seed(16);
        for _ in 0..200 {
            let t = PartitionTracker::new("t", 0);
            let mut model = BTreeSet::new();
            let mut end = None;
            let mut next = rng.i64(0..1000);
            for _ in 0..rng.usize(1..400) {
                if (rng.u8(0..3) == 0 && !model.is_empty()) || rng.u8(0..20) == 0 {
                    let o = if rng.bool() || model.is_empty() {
                        rng.i64(0..next + 2)
                    } else {
                        *model.iter().nth(rng.usize(0..model.len())).unwrap()
                    };
                    t.finish(o);
                    model.remove(&o);
                } else {
                    t.begin(next);
                    model.insert(next);
                    end = Some(next + 1);
                    next += if rng.u8(0..10) == 0 { rng.i64(2..50) } else { 1 };
                }
                assert_eq!(t.in_flight(), model.len());
                assert_eq!(t.committable(), model.first().copied().or(end));
            }
        }
    }

    #[test]
    fn abandoned_records_hold_the_offset_back_without_blocking_a_drain() {
        let t = PartitionTracker::new("t", 0);
        for o in 5..8 {
            t.begin(o);
        }
        t.finish(5);
        t.abandon(6);
        t.finish(7);
        assert_eq!(t.in_flight(), 0, "nothing to wait for");
        assert_eq!(t.committable(), Some(6), "but 6 and later stay uncommitted");
    }
}
