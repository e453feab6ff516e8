//! At-least-once bookkeeping. Every record taken from a partition is tracked until each of its outputs was
//! acknowledged by its store or the record was written to the dead-letter topic. The partition's committable
//! offset only ever moves to the first record that is not finished yet: an offset is never stored past an
//! unwritten record, whatever order the stores acknowledge in.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The state of one assigned partition.
#[derive(Debug)]
pub struct PartitionTracker {
    pub topic: String,
    pub partition: i32,
    state: Mutex<State>,
    revoked: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Offsets taken and not finished.
    pending: BTreeSet<i64>,
    /// One past the highest offset taken.
    end: Option<i64>,
    /// The committable offset last handed out by `take_committable`.
    stored: Option<i64>,
    /// The lowest record given up without being written (its binding was removed): the committable offset
    /// never passes it, so the records stay where they were for whoever consumes them next.
    abandoned: Option<i64>,
}

fn committable(s: &State) -> Option<i64> {
    let c = s.pending.first().copied().or(s.end)?;
    Some(s.abandoned.map_or(c, |a| a.min(c)))
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
        })
    }

    /// Registers a record taken from the partition (offsets arrive in increasing order).
    pub fn begin(&self, offset: i64) {
        let mut s = lock(&self.state);
        s.pending.insert(offset);
        s.end = Some(s.end.map_or(offset + 1, |e| e.max(offset + 1)));
    }

    /// Marks a record finished (all outputs acknowledged or dead-lettered).
    pub fn finish(&self, offset: i64) {
        lock(&self.state).pending.remove(&offset);
    }

    /// Gives a record up: it leaves the in-flight set (a drain does not wait for it) but the committable
    /// offset stops before it.
    pub fn abandon(&self, offset: i64) {
        let mut s = lock(&self.state);
        s.pending.remove(&offset);
        s.abandoned = Some(s.abandoned.map_or(offset, |a| a.min(offset)));
    }

    /// Records taken and not finished.
    pub fn in_flight(&self) -> usize {
        lock(&self.state).pending.len()
    }

    /// The offset to commit (the next one to consume): the first unfinished record, or one past the last
    /// record taken when all are finished. `None` before the first record.
    pub fn committable(&self) -> Option<i64> {
        committable(&lock(&self.state))
    }

    /// The committable offset if it moved since the last call.
    pub fn take_committable(&self) -> Option<i64> {
        let mut s = lock(&self.state);
        let c = committable(&s)?;
        if s.stored == Some(c) {
            return None;
        }
        s.stored = Some(c);
        Some(c)
    }

    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

/// A record in flight: how many of its outputs (plus the processing itself) are still outstanding. When the
/// count reaches zero the record is finished in its partition's tracker.
#[derive(Debug)]
pub struct Completion {
    tracker: Arc<PartitionTracker>,
    offset: i64,
    outstanding: AtomicU32,
    /// The record's timestamp and where to observe the time from it to completion.
    latency: Option<(i64, prometheus::Histogram)>,
}

impl Completion {
    /// A record just taken; it holds one token for its processing.
    pub fn new(tracker: Arc<PartitionTracker>, offset: i64) -> Arc<Self> {
        tracker.begin(offset);
        Arc::new(Self {
            tracker,
            offset,
            outstanding: AtomicU32::new(1),
            latency: None,
        })
    }

    /// Like `new`, observing the time from the record's timestamp to its completion in `latency`.
    pub fn timed(
        tracker: Arc<PartitionTracker>,
        offset: i64,
        timestamp_ms: Option<i64>,
        latency: prometheus::Histogram,
    ) -> Arc<Self> {
        tracker.begin(offset);
        Arc::new(Self {
            tracker,
            offset,
            outstanding: AtomicU32::new(1),
            latency: timestamp_ms.map(|ts| (ts, latency)),
        })
    }

    pub fn tracker(&self) -> &Arc<PartitionTracker> {
        &self.tracker
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Adds `n` outstanding items (outputs sent to stores, a dead-letter write).
    pub fn add(&self, n: u32) {
        self.outstanding.fetch_add(n, Ordering::AcqRel);
    }

    /// One item is done; the last one finishes the record.
    pub fn done(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.finish(self.offset);
            if let Some((ts, h)) = &self.latency {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                h.observe((now - ts).max(0) as f64 / 1e3);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committable_offset_waits_for_the_oldest_unfinished_record() {
        let t = PartitionTracker::new("t", 0);
        assert_eq!(t.committable(), None);
        let a = Completion::new(t.clone(), 10);
        let b = Completion::new(t.clone(), 11);
        let c = Completion::new(t.clone(), 12);
        b.add(2); // two outputs
        b.done(); // processing token
        c.done(); // no outputs: finished at once
        assert_eq!(t.committable(), Some(10), "10 is still running");
        a.done();
        assert_eq!(t.committable(), Some(11), "11 waits for its outputs");
        b.done();
        assert_eq!(t.committable(), Some(11));
        b.done();
        assert_eq!(t.committable(), Some(13));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.take_committable(), Some(13));
        assert_eq!(t.take_committable(), None, "only when it moves");
    }

    #[test]
    fn abandoned_records_hold_the_offset_back_without_blocking_a_drain() {
        let t = PartitionTracker::new("t", 0);
        let a = Completion::new(t.clone(), 5);
        let _b = Completion::new(t.clone(), 6);
        let c = Completion::new(t.clone(), 7);
        a.done();
        t.abandon(6);
        c.done();
        assert_eq!(t.in_flight(), 0, "nothing to wait for");
        assert_eq!(t.committable(), Some(6), "but 6 and later stay uncommitted");
    }

    #[test]
    fn acknowledgements_in_any_order_never_skip_an_unwritten_record() {
        // Finish 100 records in a scrambled order; after each step, everything below the committable offset
        // must be finished.
        let t = PartitionTracker::new("t", 1);
        let recs: Vec<_> = (0..100).map(|o| Completion::new(t.clone(), o)).collect();
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
            recs[i].done();
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
