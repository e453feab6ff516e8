//! Why the process sets one allocator option: mimalloc (v3) gives memory freed and not reused within its purge
//! delay (1 s by default, 10 s for whole arenas) back to the kernel. The worker frees and takes back large
//! blocks all the time (sink batches and request bodies of hundreds of KiB, records in flight), so at the
//! default the kernel kept zeroing fresh (huge) pages for it: 6% of the worker's CPU in a perf profile of the
//! pipeline benchmark. With a 10 s delay the same run used 7% less CPU per record (an A/B of 3,000,000 records
//! through the pipeline benchmark's blackhole run: BENCHMARKS.md, fourth pass).
//! Memory after a burst still goes back, only later; what the worker holds at its peak is bounded by
//! `pipeline.memory_budget` either way. `MIMALLOC_PURGE_DELAY` in the environment (milliseconds; `-1` never
//! purges) overrides this, as for any mimalloc program.

// The one call into mimalloc's C API: it stores an integer in mimalloc's option table.
#![allow(unsafe_code)]

/// Index of `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (libmimalloc-sys has no constant for it;
/// the test below checks that the index still names the purge delay).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The purge delay the worker runs with, in milliseconds.
pub const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets the purge delay, unless `MIMALLOC_PURGE_DELAY` chose one.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` takes any option index and value and only writes mimalloc's option table, which
    // is safe from any thread at any time (mimalloc reads options with relaxed atomics).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay() -> std::ffi::c_long {
        // SAFETY: reads mimalloc's option table.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn the_option_index_is_mimallocs_purge_delay_and_tune_sets_it() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment decides: nothing of ours to check
        }
        // mimalloc v3's documented default: a different value means the index names another option now.
        assert_eq!(
            purge_delay(),
            1_000,
            "option {MI_OPTION_PURGE_DELAY} is not the purge delay"
        );
        tune();
        assert_eq!(purge_delay(), PURGE_DELAY_MS);
    }
}
