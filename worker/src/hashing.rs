//! Hashing on the per-record paths. Every record is looked up in a few maps on its way (its topic and
//! partition on the poll thread, its route, instance and queue on its lane) and every output is hashed to pick
//! its sink writer. With the standard library's SipHash these lookups took a few percent of the worker's CPU
//! (profile in BENCHMARKS.md, tenth pass); foldhash does the same work in a fraction of the time.
//!
//! SipHash's point is resistance to keys chosen to collide. The keys of these maps are never record content:
//! topic names and partitions the group assigns, binding names and ids from the configuration. The writer of
//! an output is picked from its index and id or its series, which a plugin chooses: that hash is seeded at
//! random once per process (SipHash's `DefaultHasher::new()` used fixed keys), so a plugin cannot aim its
//! outputs at one writer, and a collision would only put more items on one of a sink's few writers anyway.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::OnceLock;

/// A `HashMap` for the per-record paths (see the module header for why its keys may be hashed fast).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A hash of `value` that is the same for equal values for the life of the process (for picking one of `n`
/// writers by key); seeded at random when the process first asks.
pub fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_hash_alike_and_spread() {
        assert_eq!(stable_hash(&("logs", "a")), stable_hash(&("logs", "a")));
        let writers: std::collections::HashSet<u64> = (0..64)
            .map(|i| stable_hash(&("logs", format!("id-{i}"))) % 4)
            .collect();
        assert_eq!(writers.len(), 4, "64 keys reach all 4 writers");
    }
}
