//! Native baseline for `make bench`: runs an example transform, compiled for the host, over an NDJSON corpus
//! through the SDK's host stubs (the same record encoding the wasm guest decodes), and prints records/s as
//! JSON. The wasm side of the comparison is `millrace plugin bench` over the same corpus, in the same run.
//!
//! Usage: `bench-native <seed-router|acme-iot> <corpus.ndjson> [seconds]`

use std::time::{Duration, Instant};

use millrace_plugin_sdk::Transform;
use millrace_plugin_sdk::testing::{TestRecord, run_encoded};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bench-native <seed-router|acme-iot> <corpus.ndjson> [seconds]");
        std::process::exit(2);
    }
    let transform: Transform = match args[1].as_str() {
        "seed-router" => seed_router::route,
        "acme-iot" => acme_iot::transform,
        other => {
            eprintln!("unknown transform {other}");
            std::process::exit(2);
        }
    };
    let corpus = match std::fs::read_to_string(&args[2]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reading {}: {e}", args[2]);
            std::process::exit(2);
        }
    };
    let seconds: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let encoded: Vec<Vec<u8>> = corpus
        .lines()
        .enumerate()
        .map(|(i, l)| {
            TestRecord::json(l)
                .with_topic("bench")
                .with_offset(0, i as i64)
                .encode()
        })
        .collect();
    if encoded.is_empty() {
        eprintln!("empty corpus");
        std::process::exit(2);
    }
    // Warm up, then run whole passes over the corpus until the time is up.
    let mut outputs = 0usize;
    for e in &encoded {
        outputs += std::hint::black_box(run_encoded(transform, e)).points.len();
    }
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut records = 0u64;
    while start.elapsed() < budget {
        for e in &encoded {
            let o = std::hint::black_box(run_encoded(transform, e));
            outputs += o.points.len() + o.documents.len();
        }
        records += encoded.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"transform\":\"{}\",\"records\":{records},\"seconds\":{secs:.3},\"records_per_s\":{:.0},\"ns_per_record\":{:.1},\"outputs\":{outputs}}}",
        args[1],
        records as f64 / secs,
        secs * 1e9 / records as f64
    );
}
