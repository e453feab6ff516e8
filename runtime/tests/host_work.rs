//! Host work is bounded (issue 12): a plugin cannot make the host work without limit inside one host call.
//! Floods of `fd_write` iovecs, huge log and output buffers, `random_get` and multi-line seed outputs end
//! the record with a typed error close to its deadline, with fuel metering on and off, and the next record
//! on the same binding is processed normally. Time bounds are generous behaviour bounds (5x the deadline),
//! not benchmarks: the debug build must pass them too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;
use common::dist;

use std::time::{Duration, Instant};

use millrace_runtime::{
    EngineConfig, Limits, Output, PluginError, PluginInstance, Processed, Record, Runtime, Verdict,
};

const DEADLINE: Duration = Duration::from_millis(100);

fn runtime(meter_fuel: bool) -> Runtime {
    Runtime::new(EngineConfig {
        max_instances: 8,
        meter_fuel,
        ..EngineConfig::default()
    })
    .expect("runtime")
}

fn limits() -> Limits {
    Limits {
        timeout: DEADLINE,
        ..Limits::default()
    }
}

fn record(value: &str) -> Record<'_> {
    Record {
        topic: "acme",
        offset: 41,
        timestamp_ms: Some(1_700_000_000_000),
        value: Some(value.as_bytes()),
        ..Record::default()
    }
}

fn points(p: &Processed) -> Vec<String> {
    match &p.result {
        Ok(Verdict::Accepted(outputs)) => outputs
            .iter()
            .filter_map(|o| match o {
                Output::Point(p) => Some(p.line().to_string()),
                Output::Document(_) => None,
            })
            .collect(),
        other => panic!("expected accepted, got {other:?} (logs {:?})", p.logs),
    }
}

/// Runs `bad`, checks it failed within 5x the deadline, then that `good` on the same instance gives
/// `expected`; returns the error.
fn flood_then_recover(inst: &mut PluginInstance, bad: &str, good: &str, expected: &str) -> PluginError {
    let start = Instant::now();
    let p = inst.process(&record(bad));
    let held = start.elapsed();
    let err = match p.result {
        Err(e) => e,
        other => panic!("`{bad}` should fail, got {other:?}"),
    };
    assert!(
        held < DEADLINE * 5,
        "`{bad}` held the lane for {held:?} (deadline {DEADLINE:?}), ending with {err}"
    );
    let ok = inst.process(&record(good));
    assert_eq!(points(&ok), [expected], "after `{bad}`");
    err
}

fn hostile(meter_fuel: bool) -> PluginInstance {
    runtime(meter_fuel)
        .compile(&dist("hostile"))
        .unwrap()
        .instance(limits())
        .unwrap()
}

fn hostile_flood(inst: &mut PluginInstance, what: &str) -> PluginError {
    let bad = format!(r#"{{"do":"{what}"}}"#);
    flood_then_recover(inst, &bad, r#"{"do":"ok"}"#, "ok offset=41i")
}

#[test]
fn an_fd_write_of_1024_iovecs_over_all_memory_runs_out_of_fuel_at_once() {
    let mut inst = hostile(true);
    let err = hostile_flood(&mut inst, "stdio-flood");
    assert_eq!(
        err,
        PluginError::OutOfFuel {
            limit: limits().fuel_per_record
        }
    );
}

#[test]
fn without_fuel_metering_the_fd_write_flood_stops_at_the_deadline() {
    let mut inst = hostile(false);
    let err = hostile_flood(&mut inst, "stdio-flood");
    assert_eq!(err, PluginError::Timeout { limit: DEADLINE });
}

#[test]
fn huge_log_buffers_pay_for_their_bytes() {
    let mut inst = hostile(true);
    let err = hostile_flood(&mut inst, "log-huge");
    assert_eq!(err.kind(), "out_of_fuel", "{err}");
    let mut inst = hostile(false);
    let err = hostile_flood(&mut inst, "log-huge");
    assert_eq!(err, PluginError::Timeout { limit: DEADLINE });
}

#[test]
fn a_huge_point_hits_the_output_limit_before_it_is_parsed() {
    for meter_fuel in [true, false] {
        let mut inst = hostile(meter_fuel);
        let err = hostile_flood(&mut inst, "point-huge");
        assert_eq!(err.kind(), "output_limit", "{err}");
        assert!(err.to_string().contains("output bytes"), "{err}");
    }
}

// --------------------------------------------------------------------------- hand-written modules (WAT)

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid WAT")
}

/// A seed-contract module with `pages` of 64 KiB of memory: the value `flood` runs `flood` (a loop body
/// over `$size`, the bytes of memory), any other value emits `ok v=1`.
fn seed_module(pages: u32, imports: &str, flood: &str) -> Vec<u8> {
    wat(&format!(
        r#"(module
            (import "env" "host_send_to_influx" (func $influx (param i32 i32) (result i32)))
            {imports}
            (memory (export "memory") {pages})
            (global $size i32 (i32.const {size}))
            (data (i32.const 0) "ok v=1")
            (func (export "allocate") (param i32) (result i32) i32.const 64)
            (func (export "deallocate") (param i32 i32))
            (func (export "process_data") (param $ptr i32) (param $len i32)
                (if (i32.ne (local.get $len) (i32.const 5))
                    (then (drop (call $influx (i32.const 0) (i32.const 6))) (return)))
                (loop $again {flood} (br $again))))"#,
        size = pages * 65536,
    ))
}

#[test]
fn random_get_over_all_memory_stops_at_the_deadline_or_the_fuel() {
    // 16 MiB per call, called until something stops it.
    let module = seed_module(
        256,
        r#"(import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))"#,
        "(drop (call $random (i32.const 4096) (i32.sub (global.get $size) (i32.const 4096))))",
    );
    for meter_fuel in [true, false] {
        let mut inst = runtime(meter_fuel)
            .compile(&module)
            .unwrap()
            .instance(limits())
            .unwrap();
        let err = flood_then_recover(&mut inst, "flood", "ok", "ok v=1");
        if meter_fuel {
            assert!(matches!(err.kind(), "timeout" | "out_of_fuel"), "{err}");
        } else {
            assert_eq!(err, PluginError::Timeout { limit: DEADLINE });
        }
    }
}

#[test]
fn blank_lines_of_line_protocol_count_as_output_bytes() {
    // Memory full of newlines handed to `host_send_to_influx`: nothing to emit, everything to scan.
    let module = seed_module(
        256,
        "",
        r#"(memory.fill (i32.const 4096) (i32.const 10) (i32.sub (global.get $size) (i32.const 4096)))
           (drop (call $influx (i32.const 4096) (i32.sub (global.get $size) (i32.const 4096))))"#,
    );
    for meter_fuel in [true, false] {
        let mut inst = runtime(meter_fuel)
            .compile(&module)
            .unwrap()
            .instance(limits())
            .unwrap();
        let err = flood_then_recover(&mut inst, "flood", "ok", "ok v=1");
        assert_eq!(err.kind(), "output_limit", "{err}");
    }
    // With an output limit large enough to scan it all, the deadline stops the scanning mid-call.
    let mut inst = runtime(false)
        .compile(&module)
        .unwrap()
        .instance(Limits {
            max_output_bytes_per_record: 1 << 40,
            ..limits()
        })
        .unwrap();
    let err = flood_then_recover(&mut inst, "flood", "ok", "ok v=1");
    assert_eq!(err, PluginError::Timeout { limit: DEADLINE });
}

/// An ABI v1 module whose `millrace_process` logs `len` bytes once and emits a point.
fn v1_logging(len: u32) -> Vec<u8> {
    wat(&format!(
        r#"(module
            (import "millrace" "log" (func $log (param i32 i32 i32)))
            (import "millrace" "emit_point" (func $emit (param i32 i32) (result i32)))
            (memory (export "memory") 32)
            (data (i32.const 0) "logged v=1")
            (func (export "millrace_abi_version") (result i32) i32.const 1)
            (func (export "millrace_input") (param i32) (result i32) i32.const 1024)
            (func (export "millrace_process") (param i32 i32) (result i32)
                (call $log (i32.const 2) (i32.const 4096) (i32.const {len}))
                (drop (call $emit (i32.const 0) (i32.const 10)))
                i32.const 0))"#
    ))
}

#[test]
fn the_fuel_of_a_host_call_grows_with_the_bytes_it_names() {
    let rt = runtime(true);
    let fuel = |len: u32| {
        let mut inst = rt.compile(&v1_logging(len)).unwrap().instance(limits()).unwrap();
        let p = inst.process(&record("{}"));
        assert_eq!(points(&p), ["logged v=1"]);
        p.fuel_used
    };
    let (small, large) = (fuel(8), fuel(8 + (1 << 20)));
    // The same instructions; the host charged one unit per 8 bytes more.
    assert_eq!(large - small, (1 << 20) / 8);
    // An out-of-bounds buffer is an ABI violation, not a fuel matter, however large it claims to be.
    let mut inst = rt
        .compile(&v1_logging(u32::MAX))
        .unwrap()
        .instance(limits())
        .unwrap();
    let err = inst.process(&record("{}")).result.unwrap_err();
    assert_eq!(err.kind(), "abi_violation", "{err}");
}

#[test]
fn poll_oneoff_answers_a_sleep_at_once_and_refuses_too_many_subscriptions() {
    // A clock subscription (a sleep of 10 s) with userdata 0x1122334455667788: one event, at once, with the
    // subscription's userdata and type clock, no error; 65 subscriptions: EINVAL. "ok v=1" when all holds.
    let module = wat(r#"(module
        (import "env" "host_send_to_influx" (func $influx (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 0) "ok v=1")
        (data (i32.const 16) "bad v=1")
        (func (export "allocate") (param i32) (result i32) i32.const 64)
        (func (export "deallocate") (param i32 i32))
        (func (export "process_data") (param i32 i32)
            (i64.store (i32.const 1024) (i64.const 0x1122334455667788))
            (i32.store8 (i32.const 1032) (i32.const 0))
            (i64.store (i32.const 1048) (i64.const 10000000000))
            (if (i32.and
                    (i32.and
                        (i32.eqz (call $poll (i32.const 1024) (i32.const 4096) (i32.const 1) (i32.const 8192)))
                        (i32.eq (i32.load (i32.const 8192)) (i32.const 1)))
                    (i32.and
                        (i64.eq (i64.load (i32.const 4096)) (i64.const 0x1122334455667788))
                        (i32.and
                            (i32.eqz (i32.load16_u (i32.const 4104)))
                            (i32.eq (call $poll (i32.const 1024) (i32.const 4096) (i32.const 65) (i32.const 8192))
                                    (i32.const 28)))))
                (then (drop (call $influx (i32.const 0) (i32.const 6))))
                (else (drop (call $influx (i32.const 16) (i32.const 7)))))))"#);
    let mut inst = runtime(true)
        .compile(&module)
        .unwrap()
        .instance(limits())
        .unwrap();
    let started = std::time::Instant::now();
    let p = inst.process(&record("sleep"));
    assert_eq!(points(&p), ["ok v=1"], "{:?}", p.result);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the 10 s sleep did not wait"
    );
}
