//! Microbenchmarks of the per-record host path, so that a regression shows without the whole stack (issue 16):
//! encoding a record into the guest, the call, and the host's validation of every output, for the example
//! plugins built by `make plugins`; and the output validators alone. `cargo bench -p millrace-runtime` (or
//! `make bench`, which records the figures); never part of `make test`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a failed unwrap is a broken setup

use std::path::PathBuf;

use divan::{Bencher, black_box};
use millrace_runtime::{Document, EngineConfig, Limits, Plugin, Point, Record, Runtime, Verdict};

fn main() {
    divan::main();
}

fn plugin(name: &str) -> Plugin {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/dist/{name}.wasm"));
    let wasm = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the example plugins with `make plugins`",
            path.display()
        )
    });
    let rt = Runtime::new(EngineConfig {
        max_instances: 4,
        ..EngineConfig::default()
    })
    .unwrap();
    rt.compile(&wasm).unwrap()
}

const METRIC: &[u8] = br#"{"type":"metric","source":"sensor-0042","unit":"celsius","value":21.75}"#;
const LOG: &[u8] =
    br#"{"type":"log","service":"checkout","level":"warn","message":"payment provider slow: 812 ms","rid":7}"#;
const IOT: &[u8] = br#"{"device":{"id":"d-01234","site":"Berlin","fw":"1.4.2","owner":"ops@acme.example"},"ts":"2026-11-22T10:01:02.345Z","readings":{"temp_f":71.25,"humidity_pct":40,"battery":{"mv":3012},"door_open":false,"rssi_dbm":-67},"location":{"lat":52.52,"lon":13.405},"tags":["fleet-a","indoor","batch-7"],"status":"ok"}"#;

/// One record through an instance of the plugin: encode, call, validate the outputs.
fn process(bencher: Bencher, name: &str, value: &'static [u8]) {
    let plugin = plugin(name);
    let mut instance = plugin.instance(Limits::default()).unwrap();
    let record = Record {
        topic: "client-acme",
        partition: 3,
        offset: 123_456,
        timestamp_ms: Some(1_700_000_000_000),
        key: Some(b"sensor-0042"),
        value: Some(value),
        headers: &[],
    };
    // Warm: the instance exists and has processed a record.
    assert!(matches!(
        instance.process(&record).result,
        Ok(Verdict::Accepted(_) | Verdict::Rejected { .. })
    ));
    bencher.bench_local(|| instance.process(black_box(&record)));
}

#[divan::bench]
fn seed_router_metric(bencher: Bencher) {
    process(bencher, "seed_router", METRIC);
}

#[divan::bench]
fn seed_router_log(bencher: Bencher) {
    process(bencher, "seed_router", LOG);
}

#[divan::bench]
fn acme_iot(bencher: Bencher) {
    process(bencher, "acme_iot", IOT);
}

/// The boundary alone: a plugin that returns no output.
#[divan::bench]
fn noop(bencher: Bencher) {
    process(bencher, "noop", METRIC);
}

#[divan::bench]
fn validate_point(bencher: Bencher) {
    let line = "env_metrics,source=sensor-0042,unit=celsius value=21.75,raw=\"21.75 C\" 1700000000000000000";
    bencher.bench_local(|| Point::parse(black_box(line)).unwrap());
}

#[divan::bench]
fn validate_document(bencher: Bencher) {
    let body = br#"{"service":"checkout","level":"warn","message":"payment provider slow: 812 ms","rid":7,"@timestamp":"2023-11-14T22:13:20Z"}"#;
    bencher
        .bench_local(|| Document::new(black_box("svc-checkout-logs"), black_box(body), Some("k-7")).unwrap());
}
