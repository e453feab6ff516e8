//! Fairness inside a lane: records wait per binding (client), not in one queue, and the lane serves the
//! bindings with records waiting by deficit round robin over the measured cost of their records (the plugin's
//! wall time, host work included). Each binding in turn gets `weight x QUANTUM` of credit; it is served while
//! its credit lasts, and a record that costs more than its credit leaves the binding in debt for the next
//! rounds. So a client with a backlog of expensive records (a plugin running to its fuel limit, say) delays
//! another client's next record by at most one of its own records (bounded by the binding's deadline) per
//! round, instead of by its whole backlog. Records of one binding stay in the order they arrived, so each
//! partition's order is kept.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::ack::Share;
use crate::hashing::FastMap;
use crate::metrics::Metrics;

/// Plugin time a binding of weight 1 is served per round.
pub(super) const QUANTUM: Duration = Duration::from_millis(2);

/// The records of one binding waiting in a lane.
#[derive(Debug)]
struct Queue {
    /// The binding's name, the lane's own copy: the lane clones it for every record it runs, and a count
    /// shared with the binding table and the other lanes would be written by every lane for every record.
    name: Arc<str>,
    records: VecDeque<Share>,
    /// Credit left, in nanoseconds of plugin time (negative: in debt).
    deficit: i64,
    weight: u32,
    queued: prometheus::IntGauge,
    /// Records queued minus records taken since `queued` was last updated (see [`Scheduler::flush_gauges`]).
    unflushed: i64,
}

/// Per-binding queues of one lane, served in deficit round robin.
#[derive(Debug)]
pub(super) struct Scheduler {
    queues: FastMap<Arc<str>, Queue>,
    /// Bindings with records waiting, in serving order; the front one is being served.
    active: VecDeque<Arc<str>>,
    metrics: Metrics,
    quantum: i64,
}

impl Scheduler {
    pub(super) fn new(metrics: Metrics) -> Self {
        Self::with_quantum(metrics, QUANTUM)
    }

    fn with_quantum(metrics: Metrics, quantum: Duration) -> Self {
        Self {
            queues: FastMap::default(),
            active: VecDeque::new(),
            metrics,
            quantum: quantum.as_nanos() as i64,
        }
    }

    /// Records waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Queues a record of `binding` (of `weight`).
    pub(super) fn push(&mut self, binding: &str, weight: u32, share: Share) {
        let quantum = self.quantum;
        if !self.queues.contains_key(binding) {
            let name: Arc<str> = Arc::from(binding);
            let queue = Queue {
                name: name.clone(),
                records: VecDeque::new(),
                deficit: 0,
                weight,
                queued: self.metrics.binding_queued.with_label_values(&[binding]),
                unflushed: 0,
            };
            self.queues.insert(name, queue);
        }
        let Some(q) = self.queues.get_mut(binding) else {
            return; // inserted above; unreachable (the dropped share would dead-letter its record visibly)
        };
        q.weight = weight.max(1);
        if q.records.is_empty() {
            // Joins the round at its end, with one turn of credit (a debt from an earlier busy period stays).
            q.deficit = q.deficit.min(0) + quantum * i64::from(q.weight);
            self.active.push_back(q.name.clone());
        }
        q.records.push_back(share);
        q.unflushed += 1;
    }

    /// Brings the queued-records gauges up to date. The lane counts in its queues and updates the gauges, which
    /// the lanes share, once per batch of records it takes and whenever it flushes its other metrics, not
    /// twice per record.
    pub(super) fn flush_gauges(&mut self) {
        for q in self.queues.values_mut() {
            if q.unflushed != 0 {
                q.queued.add(q.unflushed);
                q.unflushed = 0;
            }
        }
    }

    /// The next record to run and its binding, or `None` when nothing waits or every binding with records
    /// waiting is `held` (spent its CPU budget).
    pub(super) fn next(&mut self, held: impl Fn(&str) -> bool) -> Option<(Arc<str>, Share)> {
        let mut skipped = 0;
        loop {
            if skipped >= self.active.len() {
                return None;
            }
            let key = self.active.front()?.clone();
            let Some(q) = self.queues.get_mut(&key) else {
                self.active.pop_front();
                continue;
            };
            if q.records.is_empty() {
                // Nothing left: leaves the round (keeping a debt, dropping unused credit).
                q.deficit = q.deficit.min(0);
                self.active.pop_front();
                continue;
            }
            if held(&key) {
                self.active.rotate_left(1);
                skipped += 1;
                continue;
            }
            skipped = 0;
            if q.deficit > 0 {
                if let Some(share) = q.records.pop_front() {
                    q.unflushed -= 1;
                    return Some((key, share));
                }
                continue;
            }
            // Out of credit: a new turn's credit, at the end of the round.
            q.deficit += self.quantum * i64::from(q.weight);
            self.active.rotate_left(1);
        }
    }

    /// Takes every record waiting (the lane stops: they are left for redelivery).
    pub(super) fn drain_all(&mut self) -> Vec<Share> {
        self.active.clear();
        let mut all = Vec::new();
        for q in self.queues.values_mut() {
            q.unflushed -= q.records.len() as i64;
            all.extend(q.records.drain(..));
        }
        self.flush_gauges();
        all
    }

    /// Charges `binding` for a record that took `cost` to run; a binding whose queue ran dry leaves the round.
    pub(super) fn charge(&mut self, binding: &Arc<str>, cost: Duration) {
        if let Some(q) = self.queues.get_mut(binding) {
            q.deficit -= cost.as_nanos().min(i64::MAX as u128) as i64;
            if q.records.is_empty() {
                q.deficit = q.deficit.min(0);
                if self.active.front() == Some(binding) {
                    self.active.pop_front();
                } else {
                    self.active.retain(|b| b != binding);
                }
            }
        }
    }

    /// Drops the queues of bindings that have nothing waiting and no debt (bindings removed long ago).
    pub(super) fn forget_idle(&mut self) {
        self.flush_gauges();
        self.queues.retain(|_, q| !q.records.is_empty() || q.deficit < 0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::ack::tests::{Kept, take};
    use crate::pipeline::offsets::PartitionTracker;

    fn shares(n: i64, t: &Arc<PartitionTracker>, kept: &Arc<Kept>) -> Vec<Share> {
        (0..n).map(|o| take(t, o, kept)).collect()
    }

    /// Runs the scheduler to the end with a cost per binding; returns the order bindings were served in.
    fn drain(s: &mut Scheduler, cost: impl Fn(&str) -> Duration) -> Vec<String> {
        let mut order = Vec::new();
        while let Some((b, share)) = s.next(|_| false) {
            order.push(b.to_string());
            share.finish();
            s.charge(&b, cost(&b));
        }
        order
    }

    #[test]
    fn a_backlog_of_expensive_records_does_not_hold_back_another_client() {
        let kept = Arc::new(Kept::default());
        let (ta, tb) = (PartitionTracker::new("a", 0), PartitionTracker::new("b", 0));
        let mut s = Scheduler::with_quantum(Metrics::new().unwrap(), Duration::from_millis(1));
        let (a, b): (Arc<str>, Arc<str>) = ("noisy".into(), "quiet".into());
        for share in shares(1000, &ta, &kept) {
            s.push(&a, 1, share);
        }
        for share in shares(20, &tb, &kept) {
            s.push(&b, 1, share);
        }
        // The noisy client's records cost 100 ms (its deadline), the quiet one's 50 us.
        let order = drain(&mut s, |b| {
            if b == "noisy" {
                Duration::from_millis(100)
            } else {
                Duration::from_micros(50)
            }
        });
        let last_quiet = order.iter().rposition(|b| b == "quiet").unwrap();
        let noisy_before: usize = order[..last_quiet].iter().filter(|b| *b == "noisy").count();
        assert!(
            noisy_before <= 1,
            "the quiet client's 20 records waited for {noisy_before} noisy records"
        );
        assert_eq!(order.len(), 1020);
        assert_eq!(ta.committable(), Some(1000));
        assert_eq!(tb.committable(), Some(20));
    }

    #[test]
    fn equal_costs_alternate_and_weights_share_time_in_proportion() {
        let kept = Arc::new(Kept::default());
        let (ta, tb) = (PartitionTracker::new("a", 0), PartitionTracker::new("b", 0));
        let mut s = Scheduler::with_quantum(Metrics::new().unwrap(), Duration::from_millis(1));
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        for share in shares(300, &ta, &kept) {
            s.push(&a, 1, share);
        }
        for share in shares(300, &tb, &kept) {
            s.push(&b, 2, share);
        }
        let order = drain(&mut s, |_| Duration::from_millis(1));
        // While both have records, b (weight 2) is served twice as often as a.
        let first: Vec<&String> = order.iter().take(300).collect();
        let bs = first.iter().filter(|x| x.as_str() == "b").count();
        assert!((190..=210).contains(&bs), "b got {bs} of the first 300 turns");
    }

    #[test]
    fn a_held_binding_waits_while_the_others_are_served() {
        let kept = Arc::new(Kept::default());
        let (ta, tb) = (PartitionTracker::new("a", 0), PartitionTracker::new("b", 0));
        let mut s = Scheduler::new(Metrics::new().unwrap());
        let (a, b): (Arc<str>, Arc<str>) = ("spent".into(), "fine".into());
        for share in shares(5, &ta, &kept) {
            s.push(&a, 1, share);
        }
        for share in shares(5, &tb, &kept) {
            s.push(&b, 1, share);
        }
        let mut served = Vec::new();
        while let Some((k, share)) = s.next(|k| k == "spent") {
            served.push(k.to_string());
            share.finish();
            s.charge(&k, Duration::from_millis(1));
        }
        assert_eq!(served, vec!["fine"; 5]);
        assert!(!s.is_empty(), "the held binding's records still wait");
        let left = s.drain_all();
        assert_eq!(left.len(), 5);
        for share in left {
            share.redeliver();
        }
        assert!(s.is_empty());
    }

    #[test]
    fn records_of_a_binding_keep_their_order() {
        let kept = Arc::new(Kept::default());
        let t = PartitionTracker::new("a", 0);
        let mut s = Scheduler::new(Metrics::new().unwrap());
        let a: Arc<str> = "a".into();
        for share in shares(50, &t, &kept) {
            s.push(&a, 1, share);
        }
        let mut offsets = Vec::new();
        while let Some((b, share)) = s.next(|_| false) {
            offsets.push(share.record().offset);
            share.finish();
            s.charge(&b, Duration::from_millis(5));
        }
        assert_eq!(offsets, (0..50).collect::<Vec<_>>());
        assert!(s.is_empty());
    }
}
