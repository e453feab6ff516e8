//! Microbenchmarks of the worker's per-record bookkeeping (issue 16), the part of the host path that is not the
//! plugin: taking a record into the in-flight set, splitting a share per output, finishing the shares as the
//! stores acknowledge, and the partition's committable offset. The profile of the pipeline benchmark put these
//! at a few percent of the worker's CPU; here each shows on its own, without Kafka or stores, so that a change
//! to them can be measured where the end-to-end figures are lost in the machine's noise.
//! `cargo bench -p millrace-worker --bench record_path` (or `make bench`); never part of `make test`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a failed unwrap is a broken setup

use std::collections::VecDeque;
use std::sync::Arc;

use divan::{Bencher, black_box};
use millrace_worker::kinds::DeadLetterKind;
use millrace_worker::pipeline::ack::{Dropped, Fallback, InFlight, Origin, RecordData, Share};
use millrace_worker::pipeline::offsets::PartitionTracker;

fn main() {
    divan::main();
}

/// A fallback that is never asked for anything: every share is given back.
#[derive(Debug)]
struct Unused;

impl Fallback for Unused {
    fn dead_letter(&self, share: Share, _kind: DeadLetterKind, _message: String) {
        share.finish();
    }
    fn is_closed(&self) -> bool {
        false
    }
    fn dropped(&self, _record: &InFlight, _outcome: Dropped) {
        panic!("a share was dropped in the benchmark");
    }
}

fn data() -> RecordData {
    RecordData {
        timestamp_ms: Some(1_700_000_000_000),
        key: Some(b"sensor-0042".to_vec()),
        value: Some(br#"{"type":"metric","source":"sensor-0042","unit":"celsius","value":21.75}"#.to_vec()),
        headers: Vec::new(),
    }
}

/// Steady state with `in_flight` records of one partition waiting for their stores: each iteration takes a
/// record, splits two output shares (a point and a document), finishes its processing share, and the oldest
/// record's outputs are acknowledged (one store before the other, as two sinks do); every 256 records the
/// committable offset is stored, as the poll thread does.
#[divan::bench(args = [256, 4096])]
fn take_split_acknowledge(bencher: Bencher, in_flight: usize) {
    let tracker = PartitionTracker::new("client-acme", 3);
    let fallback: Arc<dyn Fallback> = Arc::new(Unused);
    let mut waiting: VecDeque<(Share, Share)> = VecDeque::with_capacity(in_flight + 1);
    let mut offset = 0i64;
    let origin = Origin::new(tracker.clone(), None, fallback);
    let mut take = |waiting: &mut VecDeque<(Share, Share)>| {
        let processing = InFlight::begin(origin.clone(), offset, data());
        let outputs = (processing.split(), processing.split());
        processing.finish();
        waiting.push_back(outputs);
        offset += 1;
    };
    for _ in 0..in_flight {
        take(&mut waiting);
    }
    let mut n = 0u32;
    let mut step = |waiting: &mut VecDeque<(Share, Share)>| {
        take(waiting);
        let (point, document) = waiting.pop_front().unwrap();
        point.finish();
        document.finish();
        n = n.wrapping_add(1);
        if n.is_multiple_of(256)
            && let Some(o) = tracker.to_store()
        {
            tracker.mark_stored(black_box(o));
        }
    };
    // Into the steady state first: buffers grown once are not counted in the first sample.
    for _ in 0..2 * in_flight {
        step(&mut waiting);
    }
    bencher.bench_local(|| step(&mut waiting));
    for (a, b) in waiting {
        a.finish();
        b.finish();
    }
}

/// The offsets tracker alone with `in_flight` records pending, finished out of order within a window of 64
/// (two sinks' batches acknowledged in turn): begin, finish, and the committable offset.
#[divan::bench(args = [256, 4096])]
fn offsets_begin_finish(bencher: Bencher, in_flight: usize) {
    let tracker = PartitionTracker::new("client-acme", 3);
    let mut next = 0i64;
    for _ in 0..in_flight {
        tracker.begin(next);
        next += 1;
    }
    // Finish the oldest record of each group of 64 last: the committable offset stalls, then jumps.
    let mut oldest = 0i64;
    let mut step = || {
        tracker.begin(next);
        next += 1;
        let o = oldest;
        let finished = if o % 64 == 63 { o - 63 } else { o + 1 };
        tracker.finish(finished);
        oldest += 1;
        black_box(tracker.committable())
    };
    // Into the steady state first, as above.
    for _ in 0..2 * in_flight {
        step();
    }
    bencher.bench_local(step);
}
