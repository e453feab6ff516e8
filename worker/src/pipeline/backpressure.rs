//! Back pressure, decided in one place: which partitions the poll thread pauses and resumes. A partition is
//! paused while any of these holds, each with hysteresis (it resumes once back under half the limit):
//! - **records**: too many of its records are in flight (`pipeline.max_in_flight_per_partition`);
//! - **memory**: the records in flight across ALL partitions hold more bytes than the worker's share of its
//!   memory budget for them: every partition pauses, so memory stays bounded whatever the number of clients;
//! - **binding**: one binding's records hold more than its share of that budget: only that binding's
//!   partitions pause, so one client cannot take the whole budget from the others;
//! - **budget**: the binding spent its CPU budget (`cpu_budget`): its partitions pause (throttled) until its
//!   credit is back.
//!
//! Bytes are counted from the moment a record is taken until every stage dropped it (see `ack.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A partition's key: topic and partition.
pub(super) type Key = (String, i32);

/// The limits, in records and bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_records_per_partition: usize,
    /// Bytes of records in flight across all partitions.
    pub max_bytes: usize,
    /// Bytes of one binding's records in flight.
    pub max_bytes_per_binding: usize,
}

/// What one partition holds now.
#[derive(Debug, Clone)]
pub(super) struct Load {
    pub key: Key,
    /// The binding its topic belongs to (none: no binding, e.g. just removed).
    pub binding: Option<Arc<str>>,
    pub records: usize,
    pub bytes: usize,
    /// Its binding spent its CPU budget.
    pub throttled: bool,
}

/// Why a partition is paused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reasons {
    records: bool,
    memory: bool,
    binding: bool,
    budget: bool,
}

impl Reasons {
    fn any(self) -> bool {
        self.records || self.memory || self.binding || self.budget
    }
}

/// What to change, and figures for metrics.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Decision {
    pub pause: Vec<Key>,
    pub resume: Vec<Key>,
    pub records: usize,
    pub bytes: usize,
    /// Partitions newly paused, per reason (`records`, `memory`, `binding`, `budget`).
    pub paused_for: [(&'static str, usize); 4],
    /// Bytes in flight per binding.
    pub binding_bytes: HashMap<Arc<str>, usize>,
}

/// The pause state across calls.
#[derive(Debug, Default)]
pub(super) struct Backpressure {
    paused: HashMap<Key, Reasons>,
    memory_over: bool,
    bindings_over: HashSet<Arc<str>>,
}

impl Backpressure {
    /// Partitions paused now.
    pub(super) fn paused(&self) -> usize {
        self.paused.len()
    }

    /// Decides from the current loads of every assigned partition (partitions not listed are forgotten).
    pub(super) fn decide(&mut self, loads: &[Load], limits: Limits) -> Decision {
        let records: usize = loads.iter().map(|l| l.records).sum();
        let bytes: usize = loads.iter().map(|l| l.bytes).sum();
        self.memory_over = over(self.memory_over, bytes, limits.max_bytes);
        let mut per_binding: HashMap<&Arc<str>, usize> = HashMap::new();
        for l in loads {
            if let Some(b) = &l.binding {
                *per_binding.entry(b).or_default() += l.bytes;
            }
        }
        let mut bindings_over = HashSet::new();
        let mut binding_bytes = HashMap::new();
        for (b, n) in per_binding {
            if over(self.bindings_over.contains(b), n, limits.max_bytes_per_binding) {
                bindings_over.insert(b.clone());
            }
            binding_bytes.insert(b.clone(), n);
        }
        self.bindings_over = bindings_over;

        let mut d = Decision {
            records,
            bytes,
            paused_for: [("records", 0), ("memory", 0), ("binding", 0), ("budget", 0)],
            binding_bytes,
            ..Decision::default()
        };
        let mut next = HashMap::new();
        for l in loads {
            let before = self.paused.get(&l.key).copied().unwrap_or_default();
            let now = Reasons {
                records: if before.records {
                    l.records > limits.max_records_per_partition / 2
                } else {
                    l.records >= limits.max_records_per_partition
                },
                memory: self.memory_over,
                binding: l.binding.as_ref().is_some_and(|b| self.bindings_over.contains(b)),
                budget: l.throttled,
            };
            match (before.any(), now.any()) {
                (false, true) => {
                    d.pause.push(l.key.clone());
                    let reasons = [now.records, now.memory, now.binding, now.budget];
                    for (i, r) in reasons.into_iter().enumerate() {
                        d.paused_for[i].1 += usize::from(r);
                    }
                }
                (true, false) => d.resume.push(l.key.clone()),
                _ => {}
            }
            if now.any() {
                next.insert(l.key.clone(), now);
            }
        }
        self.paused = next;
        d
    }
}

/// Over `limit`, or still over half of it once it was over (hysteresis).
fn over(was_over: bool, value: usize, limit: usize) -> bool {
    if was_over {
        value > limit / 2
    } else {
        value > limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(topic: &str, binding: &str, records: usize, bytes: usize) -> Load {
        Load {
            key: (topic.into(), 0),
            binding: Some(binding.into()),
            records,
            bytes,
            throttled: false,
        }
    }

    const LIMITS: Limits = Limits {
        max_records_per_partition: 100,
        max_bytes: 1000,
        max_bytes_per_binding: 400,
    };

    #[test]
    fn a_partition_with_too_many_records_pauses_and_resumes_below_half() {
        let mut b = Backpressure::default();
        let d = b.decide(&[load("a", "a", 100, 10)], LIMITS);
        assert_eq!(d.pause, vec![("a".to_string(), 0)]);
        assert_eq!(d.paused_for[0], ("records", 1));
        assert!(b.decide(&[load("a", "a", 60, 10)], LIMITS).resume.is_empty());
        assert_eq!(b.decide(&[load("a", "a", 50, 10)], LIMITS).resume.len(), 1);
        assert_eq!(b.paused(), 0);
    }

    #[test]
    fn over_the_memory_budget_every_partition_pauses_until_half_of_it_is_free() {
        let mut b = Backpressure::default();
        let loads = [
            load("a", "a", 1, 350),
            load("b", "b", 1, 350),
            load("c", "c", 1, 350),
            load("idle", "d", 0, 0),
        ];
        let d = b.decide(&loads, LIMITS);
        assert_eq!(d.pause.len(), 4, "fetching stops everywhere");
        assert_eq!(d.bytes, 1050);
        assert_eq!(d.paused_for[1], ("memory", 4));
        let lower = [
            load("a", "a", 1, 300),
            load("b", "b", 1, 300),
            load("c", "c", 0, 0),
            load("idle", "d", 0, 0),
        ];
        assert!(b.decide(&lower, LIMITS).resume.is_empty(), "600 > half");
        let low = [
            load("a", "a", 1, 250),
            load("b", "b", 1, 200),
            load("c", "c", 0, 0),
            load("idle", "d", 0, 0),
        ];
        assert_eq!(b.decide(&low, LIMITS).resume.len(), 4);
    }

    #[test]
    fn a_binding_that_spent_its_cpu_budget_is_throttled_until_it_has_credit() {
        let mut b = Backpressure::default();
        let mut spent = load("greedy", "greedy", 1, 10);
        spent.throttled = true;
        let d = b.decide(&[spent.clone(), load("other", "other", 1, 10)], LIMITS);
        assert_eq!(d.pause, vec![("greedy".to_string(), 0)]);
        assert_eq!(d.paused_for[3], ("budget", 1));
        assert!(
            b.decide(&[spent, load("other", "other", 1, 10)], LIMITS)
                .resume
                .is_empty()
        );
        let credit = load("greedy", "greedy", 1, 10);
        assert_eq!(b.decide(&[credit], LIMITS).resume.len(), 1);
    }

    #[test]
    fn one_binding_over_its_share_pauses_only_its_own_partitions() {
        let mut b = Backpressure::default();
        let loads = [
            load("big-0", "big", 10, 250),
            load("big-1", "big", 10, 250),
            load("small", "small", 10, 100),
        ];
        let d = b.decide(&loads, LIMITS);
        assert_eq!(d.pause.len(), 2);
        assert!(d.pause.iter().all(|(t, _)| t.starts_with("big")));
        assert_eq!(d.paused_for[2], ("binding", 2));
        let drained = [
            load("big-0", "big", 1, 90),
            load("big-1", "big", 1, 90),
            load("small", "small", 10, 100),
        ];
        assert_eq!(b.decide(&drained, LIMITS).resume.len(), 2);
    }
}
