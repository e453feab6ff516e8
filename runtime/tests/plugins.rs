//! The runtime against real guest modules: the example plugins built by `make plugins` (Rust SDK, raw seed
//! contract, C) and hand-written WebAssembly for what no compiler would emit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;
use common::dist;

use std::time::Duration;

use millrace_runtime::{
    Contract, EngineConfig, Header, Limits, LogSource, Output, Plugin, PluginError, Record, Runtime, Verdict,
};

fn runtime() -> Runtime {
    Runtime::new(EngineConfig {
        max_instances: 16,
        ..EngineConfig::default()
    })
    .expect("runtime")
}

fn record(value: &str) -> Record<'_> {
    Record {
        topic: "acme",
        partition: 2,
        offset: 41,
        timestamp_ms: Some(1_700_000_000_000),
        key: Some(b"k1"),
        value: Some(value.as_bytes()),
        headers: &[],
    }
}

fn accepted(p: &millrace_runtime::Processed) -> &[Output] {
    match &p.result {
        Ok(Verdict::Accepted(o)) => o,
        other => panic!("expected accepted, got {other:?} (logs {:?})", p.logs),
    }
}

fn points(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Point(p) => Some(p.line().to_string()),
            Output::Document(_) => None,
        })
        .collect()
}

#[test]
fn seed_router_routes_metrics_logs_and_rejects_the_rest() {
    let rt = runtime();
    let plugin = rt.compile(&dist("seed_router")).unwrap();
    assert_eq!(plugin.contract(), Contract::V1);
    assert_eq!(plugin.info().abi_version, Some(1));
    assert!(plugin.digest().starts_with("sha256:"));
    let mut inst = plugin.instance(Limits::default()).unwrap();

    let p = inst.process(&record(
        r#"{"type":"metric","source":"s1","unit":"C","value":21.5}"#,
    ));
    assert_eq!(points(accepted(&p)), ["env_metrics,source=s1,unit=C value=21.5"]);
    assert!(p.fuel_used > 0 && p.fuel_used < 1_000_000, "fuel {}", p.fuel_used);
    let Output::Point(point) = &accepted(&p)[0] else {
        unreachable!()
    };
    assert_eq!(point.measurement(), "env_metrics");
    assert!(!point.has_timestamp());

    let body = r#"{"type":"log","service":"checkout","level":"error","msg":"x"}"#;
    let p = inst.process(&record(body));
    match accepted(&p) {
        [Output::Document(d)] => {
            assert_eq!(d.index(), "checkout-logs-daily");
            assert_eq!(d.body(), body);
            assert_eq!(d.id(), None);
        }
        other => panic!("{other:?}"),
    }

    let p = inst.process(&record(r#"{"type":"trace"}"#));
    assert_eq!(
        p.result,
        Ok(Verdict::Rejected {
            reason: "unknown record type `trace`".into()
        })
    );
    let p = inst.process(&record("{oops"));
    assert!(matches!(&p.result, Ok(Verdict::Rejected { reason }) if reason.starts_with("invalid JSON")));
    // Text beyond ASCII passes through the host's UTF-8 flag (the guest then skips its own check) ...
    let p = inst.process(&record(r#"{"type":"metric","source":"café 😀","value":1}"#));
    assert_eq!(
        points(accepted(&p)),
        [r"env_metrics,source=café\ 😀,unit=none value=1"]
    );
    // ... and bytes that are not UTF-8 get no flag: the guest's parser refuses them as before.
    for bad in [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80"] {
        let mut value = br#"{"type":"metric","value":1,"source":"a"#.to_vec();
        value.extend_from_slice(bad);
        value.extend_from_slice(br#""}"#);
        let p = inst.process(&Record {
            value: Some(&value),
            ..record("")
        });
        assert!(
            matches!(&p.result, Ok(Verdict::Rejected { reason }) if reason.starts_with("invalid JSON")),
            "{bad:?}: {:?}",
            p.result
        );
    }
    // A tombstone (no value) is rejected by the plugin, not a host error.
    let p = inst.process(&Record {
        value: None,
        ..record("")
    });
    assert_eq!(
        p.result,
        Ok(Verdict::Rejected {
            reason: "record has no value".into()
        })
    );
    let stats = inst.stats();
    assert_eq!(
        stats.instantiations, 1,
        "one instance served every record: {stats:?}"
    );
    assert_eq!(stats.records, 9);
}

#[test]
fn seed_contract_modules_run_unmodified() {
    let rt = runtime();
    let plugin = rt.compile(&dist("seed_compat")).unwrap();
    assert_eq!(plugin.contract(), Contract::Seed);
    assert_eq!(plugin.info().abi_version, None);
    let mut inst = plugin.instance(Limits::default()).unwrap();

    let p = inst.process(&record(
        r#"{"type":"metric","source":"s 1","unit":"C","value":3,"timestamp":5}"#,
    ));
    assert_eq!(
        points(accepted(&p)),
        [r"env_metrics,source=s\ 1,unit=C value=3 5000000"]
    );

    let p = inst.process(&record(r#"{"type":"log","service":"Billing"}"#));
    match accepted(&p) {
        [Output::Document(d)] => assert_eq!(d.index(), "billing-logs-daily"),
        other => panic!("{other:?}"),
    }
    // println! in the guest arrives as a log line from stdout.
    assert_eq!(p.logs.len(), 1, "{:?}", p.logs);
    assert_eq!(p.logs[0].source, LogSource::Stdout);
    assert_eq!(
        p.logs[0].message,
        "routing a log of Billing to billing-logs-daily"
    );

    // The seed contract cannot reject: unknown records produce nothing and a log line.
    let p = inst.process(&record(r#"{"type":"trace"}"#));
    assert!(accepted(&p).is_empty());
    assert_eq!(p.logs[0].source, LogSource::Log);
    assert!(p.logs[0].message.contains("unknown record type"), "{:?}", p.logs);
}

#[test]
fn c_plugin_speaks_abi_v1() {
    let rt = runtime();
    let plugin = rt.compile(&dist("c_envelope")).unwrap();
    assert_eq!(plugin.contract(), Contract::V1);
    let mut inst = plugin.instance(Limits::default()).unwrap();
    let headers = [
        Header {
            name: "trace-id",
            value: Some(b"abc"),
        },
        Header {
            name: "empty",
            value: None,
        },
    ];
    let value = r#"{"a":1}"#;
    let p = inst.process(&Record {
        headers: &headers,
        ..record(value)
    });
    let outputs = accepted(&p);
    assert_eq!(
        points(outputs),
        ["kafka_records,topic=acme bytes=7i,headers=2i,partition=2i 1700000000000000000"]
    );
    let Some(Output::Document(d)) = outputs.get(1) else {
        panic!("{outputs:?}")
    };
    assert_eq!(d.index(), "envelope-acme");
    assert_eq!(d.id(), Some("acme-2-41"));
    let body: serde_json::Value = serde_json::from_str(d.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"topic":"acme","partition":2,"offset":41,"timestamp":1_700_000_000_000i64,
            "key_hex":"6b31","headers":["trace-id","empty"],"value":{"a":1}})
    );
    let p = inst.process(&Record {
        value: None,
        ..record("")
    });
    assert!(matches!(&p.result, Ok(Verdict::Rejected { reason }) if reason.starts_with("tombstone")));
}

#[test]
fn acme_iot_transform_runs_in_the_sandbox() {
    let rt = runtime();
    let mut inst = rt
        .compile(&dist("acme_iot"))
        .unwrap()
        .instance(Limits::default())
        .unwrap();
    let msg = r#"{"device":{"id":"d-17","site":"Berlin"},"ts":"2026-11-22T10:00:00Z","readings":{"temp_f":212,"battery":{"mv":3000}},"status":"door"}"#;
    let p = inst.process(&record(msg));
    let outputs = accepted(&p);
    assert_eq!(
        points(outputs),
        ["acme_iot,device_id=d-17,site=berlin battery_v=3,temp_c=100 1795341600000000000"]
    );
    assert!(matches!(&outputs[1], Output::Document(d) if d.index() == "acme-iot-events"));
}

// ------------------------------------------------------------------------------------- hostile plugins

fn hostile(limits: Limits) -> (Plugin, millrace_runtime::PluginInstance) {
    let rt = runtime();
    let plugin = rt.compile(&dist("hostile")).unwrap();
    let inst = plugin.instance(limits).unwrap();
    (plugin, inst)
}

fn act(what: &str) -> String {
    format!(r#"{{"do":"{what}"}}"#)
}

/// Runs a misbehaviour, then proves the next record on the same binding is processed normally.
fn misbehave_then_recover(inst: &mut millrace_runtime::PluginInstance, what: &str) -> PluginError {
    let bad = act(what);
    let p = inst.process(&record(&bad));
    let err = match p.result {
        Err(e) => e,
        other => panic!("`{what}` should fail, got {other:?}"),
    };
    let ok = inst.process(&record(r#"{"do":"ok"}"#));
    assert_eq!(points(accepted(&ok)), ["ok offset=41i"], "after `{what}`");
    err
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let (_, mut inst) = hostile(Limits {
        fuel_per_record: 5_000_000,
        ..Limits::default()
    });
    let err = misbehave_then_recover(&mut inst, "loop");
    assert_eq!(err, PluginError::OutOfFuel { limit: 5_000_000 });
    assert_eq!(err.kind(), "out_of_fuel");
    assert_eq!(inst.stats().recycled_after_trap, 1);
}

#[test]
fn infinite_loop_with_ample_fuel_hits_the_deadline() {
    let (_, mut inst) = hostile(Limits {
        fuel_per_record: u64::MAX / 4,
        timeout: Duration::from_millis(30),
        ..Limits::default()
    });
    let start = std::time::Instant::now();
    let err = misbehave_then_recover(&mut inst, "loop");
    assert_eq!(
        err,
        PluginError::Timeout {
            limit: Duration::from_millis(30)
        }
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the deadline did not stop the loop in time"
    );
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let (_, mut inst) = hostile(Limits {
        max_memory_bytes: 8 << 20,
        ..Limits::default()
    });
    let err = misbehave_then_recover(&mut inst, "memory");
    assert_eq!(err, PluginError::MemoryLimit { limit: 8 << 20 });
}

#[test]
fn output_flood_hits_the_output_limit() {
    let (_, mut inst) = hostile(Limits {
        max_outputs_per_record: 100,
        ..Limits::default()
    });
    let err = misbehave_then_recover(&mut inst, "flood");
    assert_eq!(err.kind(), "output_limit");
    assert!(err.to_string().contains("more than 100 outputs"), "{err}");
}

#[test]
fn deep_recursion_traps() {
    let (_, mut inst) = hostile(Limits {
        fuel_per_record: u64::MAX / 4,
        timeout: Duration::from_secs(5),
        ..Limits::default()
    });
    let err = misbehave_then_recover(&mut inst, "recurse");
    assert_eq!(err.kind(), "trap", "{err}");
}

#[test]
fn panic_and_abort_trap_with_the_message() {
    let (_, mut inst) = hostile(Limits::default());
    let err = misbehave_then_recover(&mut inst, "panic");
    assert_eq!(err.kind(), "trap");
    assert!(
        err.to_string().contains("hostile plugin panics on purpose"),
        "{err}"
    );
    let err = misbehave_then_recover(&mut inst, "abort");
    assert_eq!(err.kind(), "trap");
    let err = misbehave_then_recover(&mut inst, "exit");
    assert_eq!(err, PluginError::Exit { code: 3 });
}

#[test]
fn malformed_outputs_are_refused_with_the_reason() {
    let (_, mut inst) = hostile(Limits::default());
    let err = misbehave_then_recover(&mut inst, "bad-output");
    assert_eq!(err.kind(), "invalid_output");
    assert!(err.to_string().contains("this is not line protocol"), "{err}");
    let err = misbehave_then_recover(&mut inst, "bad-index");
    assert_eq!(err.kind(), "invalid_output");
    assert!(
        err.to_string().contains("invalid index name `UPPER/case`"),
        "{err}"
    );
    // Refusing an output is not a trap: the instance was kept.
    assert_eq!(inst.stats().recycled_after_trap, 0);
}

#[test]
fn log_floods_are_capped_per_record() {
    let (_, mut inst) = hostile(Limits {
        max_log_lines_per_record: 10,
        ..Limits::default()
    });
    let p = inst.process(&record(&act("log-flood")));
    assert_eq!(points(accepted(&p)), ["logged n=1000i"]);
    assert_eq!(p.logs.len(), 10);
    assert_eq!(p.logs_dropped, 991, "1000 log lines and one stdout line");
}

#[test]
fn log_lines_are_rate_limited_per_instance() {
    let (_, mut inst) = hostile(Limits {
        max_log_lines_per_record: 5_000,
        max_log_lines_per_second: 50,
        ..Limits::default()
    });
    let p = inst.process(&record(&act("log-flood")));
    assert!((50..60).contains(&p.logs.len()), "kept {} lines", p.logs.len());
    assert_eq!(p.logs.len() as u32 + p.logs_dropped, 1001);
    // The bucket is empty now: the next record's lines are dropped until it refills.
    let p = inst.process(&record(&act("log-flood")));
    assert!(p.logs.len() < 10, "kept {} lines", p.logs.len());
}

#[test]
fn the_sandbox_grants_no_files_no_environment_and_a_deterministic_clock() {
    let (_, mut inst) = hostile(Limits::default());
    let p = inst.process(&record(&act("fs")));
    assert_eq!(points(accepted(&p)), ["sandbox fs_denied=true"], "{:?}", p.logs);
    let p = inst.process(&record(&act("env")));
    assert_eq!(points(accepted(&p)), ["sandbox env_vars=0i,args=0i"]);
    let p = inst.process(&record(&act("clock")));
    assert_eq!(points(accepted(&p)), ["sandbox clock_ms=1700000000000i"]);
    let p = inst.process(&record(&act("random")));
    assert_eq!(points(accepted(&p)), ["sandbox hashmap=1i"]);

    let (_, mut granted) = hostile(Limits {
        grant_clock: true,
        ..Limits::default()
    });
    let p = granted.process(&record(&act("clock")));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let line = &points(accepted(&p))[0];
    let ms: i64 = line
        .trim_start_matches("sandbox clock_ms=")
        .trim_end_matches('i')
        .parse()
        .unwrap();
    assert!(
        (now_ms - ms).abs() < 60_000,
        "granted clock reads {ms}, now is {now_ms}"
    );
}

#[test]
fn instances_recycle_after_n_records_and_on_memory_high_water() {
    let (_, mut inst) = hostile(Limits {
        recycle_after_records: 3,
        ..Limits::default()
    });
    for _ in 0..7 {
        accepted(&inst.process(&record(r#"{"do":"ok"}"#)));
    }
    let s = inst.stats();
    assert_eq!(
        (s.records, s.recycled_after_records, s.instantiations),
        (7, 2, 3),
        "{s:?}"
    );

    let (_, mut inst) = hostile(Limits {
        recycle_memory_bytes: 64 * 1024,
        ..Limits::default()
    });
    accepted(&inst.process(&record(r#"{"do":"ok"}"#)));
    assert_eq!(inst.stats().recycled_after_memory, 1);
    assert_eq!(inst.memory_bytes(), 0, "no live instance after recycling");
}

#[test]
fn precompiled_artifacts_load_and_run() {
    let rt = runtime();
    let wasm = dist("seed_router");
    let artifact = rt.precompile(&wasm).unwrap();
    let digest = millrace_runtime::sha256_digest(&wasm);
    let plugin = rt.load_precompiled(&artifact, &digest, wasm.len()).unwrap();
    assert_eq!(plugin.digest(), digest);
    let mut inst = plugin.instance(Limits::default()).unwrap();
    let p = inst.process(&record(r#"{"type":"metric","source":"a","value":1}"#));
    assert_eq!(points(accepted(&p)), ["env_metrics,source=a,unit=none value=1"]);
    assert_eq!(rt.compatibility_key(), runtime().compatibility_key());
}

// ------------------------------------------------------------------ hand-written hostile modules (WAT)

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid WAT")
}

/// A minimal ABI v1 module whose `millrace_process` body is `body`.
fn v1_module(imports: &str, body: &str) -> Vec<u8> {
    wat(&format!(
        r#"(module
            {imports}
            (memory (export "memory") 1)
            (func (export "millrace_abi_version") (result i32) i32.const 1)
            (func (export "millrace_input") (param i32) (result i32) i32.const 1024)
            (func (export "millrace_process") (param i32 i32) (result i32) {body}))"#
    ))
}

/// Runs one record through a fresh instance of `module` (default limits) and returns its error.
fn record_error(rt: &Runtime, module: &[u8]) -> PluginError {
    let mut inst = rt.compile(module).unwrap().instance(Limits::default()).unwrap();
    inst.process(&record("{}")).result.unwrap_err()
}

#[test]
fn out_of_bounds_pointers_are_abi_violations_not_crashes() {
    let rt = runtime();
    let module = v1_module(
        r#"(import "millrace" "emit_point" (func $emit (param i32 i32) (result i32)))"#,
        "(drop (call $emit (i32.const 65000) (i32.const 100000))) i32.const 0",
    );
    let err = record_error(&rt, &module);
    assert_eq!(err.kind(), "abi_violation");
    assert!(err.to_string().contains("emit_point"), "{err}");
    // Negative lengths are huge unsigned ones: out of bounds too.
    let module = v1_module(
        r#"(import "millrace" "reject" (func $reject (param i32 i32)))"#,
        "(call $reject (i32.const 0) (i32.const -1)) i32.const 0",
    );
    assert_eq!(record_error(&rt, &module).kind(), "abi_violation");
}

#[test]
fn an_input_buffer_outside_memory_is_an_abi_violation() {
    let rt = runtime();
    let module = wat(r#"(module
        (memory (export "memory") 1)
        (func (export "millrace_abi_version") (result i32) i32.const 1)
        (func (export "millrace_input") (param i32) (result i32) i32.const 65530)
        (func (export "millrace_process") (param i32 i32) (result i32) i32.const 0))"#);
    let err = record_error(&rt, &module);
    assert_eq!(err.kind(), "abi_violation");
    assert!(
        err.to_string().contains("millrace_input returned buffer"),
        "{err}"
    );
}

#[test]
fn wrong_export_signatures_are_refused_at_load() {
    let rt = runtime();
    let module = wat(r#"(module
        (memory (export "memory") 1)
        (func (export "millrace_abi_version") (result i32) i32.const 1)
        (func (export "millrace_input") (param i32) (result i32) i32.const 0)
        (func (export "millrace_process") (param i32) (result i32) i32.const 0))"#);
    let err = rt.compile(&module).unwrap_err();
    assert_eq!(
        err,
        PluginError::BadExport {
            name: "millrace_process".into(),
            expected: "func (i32, i32) -> i32".into(),
            found: "func (i32) -> i32".into(),
        }
    );
    let module = wat(r#"(module (func (export "process_data") (param i32 i32)))"#);
    assert_eq!(rt.compile(&module).unwrap_err().kind(), "bad_export");
}

/// AssemblyScript's compiler imports `env.abort(message, file, line, column)` by default; its strings are
/// UTF-16 with their byte length in the four bytes before the pointer. A module built that way loads, and an
/// abort ends the record as a `trap` that says what and where.
#[test]
fn assemblyscript_abort_loads_and_ends_the_record_with_its_message() {
    let rt = runtime();
    // "bad: é" at 20 (length 12 at 16), "a.ts" at 52 (length 8 at 48), as AssemblyScript lays them out.
    let module = v1_module(
        r#"(import "env" "abort" (func $abort (param i32 i32 i32 i32)))
           (data (i32.const 16) "\0c\00\00\00b\00a\00d\00:\00 \00\e9\00")
           (data (i32.const 48) "\08\00\00\00a\00.\00t\00s\00")"#,
        "(call $abort (i32.const 20) (i32.const 52) (i32.const 7) (i32.const 3)) i32.const 0",
    );
    let err = record_error(&rt, &module);
    assert_eq!(err.kind(), "trap");
    assert!(err.to_string().contains("abort: bad: é at a.ts:7:3"), "{err}");
    // Pointers that name no string (null, past memory) still end the record, with what is known.
    let module = v1_module(
        r#"(import "env" "abort" (func $abort (param i32 i32 i32 i32)))"#,
        "(call $abort (i32.const 0) (i32.const 70000) (i32.const 1) (i32.const 2)) i32.const 0",
    );
    let err = record_error(&rt, &module);
    assert_eq!(err.kind(), "trap");
    assert!(err.to_string().contains("abort: (no message) at ?:1:2"), "{err}");
    // The seed contract grants it too; another signature is refused at load.
    let seed = wat(r#"(module
        (import "env" "abort" (func (param i32 i32 i32 i32)))
        (memory (export "memory") 1)
        (func (export "allocate") (param i32) (result i32) i32.const 1024)
        (func (export "deallocate") (param i32 i32))
        (func (export "process_data") (param i32 i32)))"#);
    assert!(rt.compile(&seed).is_ok());
    let err = rt
        .compile(&v1_module(
            r#"(import "env" "abort" (func (param i32)))"#,
            "i32.const 0",
        ))
        .unwrap_err();
    assert_eq!(err.kind(), "unsupported_import");
    assert!(err.to_string().contains("AssemblyScript"), "{err}");
}

#[test]
fn unknown_imports_are_refused_at_load() {
    let rt = runtime();
    for (import, needle) in [
        (
            r#"(import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32) (result i32)))"#,
            "sock_open",
        ),
        (
            r#"(import "env" "connect" (func (param i32) (result i32)))"#,
            "connect",
        ),
        (
            r#"(import "wasi:sockets/tcp" "connect" (func))"#,
            "wasi:sockets/tcp",
        ),
        (
            r#"(import "millrace" "emit_point" (func (param i32) (result i32)))"#,
            "expected signature",
        ),
        (r#"(import "env" "mem" (memory 1))"#, "functions only"),
    ] {
        let err = rt.compile(&v1_module(import, "i32.const 0")).unwrap_err();
        assert_eq!(err.kind(), "unsupported_import", "{import}: {err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    // Known WASI file-system functions link, and answer "not capable" at run time.
    let module = v1_module(
        r#"(import "wasi_snapshot_preview1" "path_open"
              (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
           (import "millrace" "emit_point" (func $emit (param i32 i32) (result i32)))
           (data (i32.const 0) "errno v=76")"#,
        r#"(if (i32.eq (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 0)
                                 (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 8)) (i32.const 76))
             (then (drop (call $emit (i32.const 0) (i32.const 10)))))
           i32.const 0"#,
    );
    let mut inst = rt.compile(&module).unwrap().instance(Limits::default()).unwrap();
    assert_eq!(points(accepted(&inst.process(&record("{}")))), ["errno v=76"]);
}

#[test]
fn not_wasm_other_abi_versions_and_non_plugins_are_refused() {
    let rt = runtime();
    assert_eq!(
        rt.compile(b"#!/bin/sh\necho hi\n").unwrap_err().kind(),
        "not_wasm"
    );
    assert_eq!(rt.compile(b"").unwrap_err().kind(), "not_wasm");
    assert_eq!(
        rt.compile(b"\0asm\x01\0\0\0\xff\xff").unwrap_err().kind(),
        "invalid_module"
    );
    let v2 = wat(r#"(module
        (memory (export "memory") 1)
        (func (export "millrace_abi_version") (result i32) i32.const 2)
        (func (export "millrace_input") (param i32) (result i32) i32.const 0)
        (func (export "millrace_process") (param i32 i32) (result i32) i32.const 0))"#);
    let err = rt.compile(&v2).unwrap_err();
    assert_eq!(
        err,
        PluginError::UnsupportedAbi {
            found: 2,
            supported: 1
        }
    );
    assert!(err.to_string().contains("ABI version 2 is not supported"));
    let err = rt
        .compile(&wat(r#"(module (func (export "main")))"#))
        .unwrap_err();
    assert_eq!(err.kind(), "not_a_plugin");
}

/// What TinyGo builds by default: a WASI command whose `_start` initialises the runtime and ends with
/// `proc_exit(0)`, then serves `process_data` calls.
#[test]
fn seed_command_modules_are_started_once_and_may_exit_zero() {
    let rt = runtime();
    let module = wat(r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (import "env" "host_send_to_influx" (func $influx (param i32 i32) (result i32)))
        (memory (export "memory") 1)
        (global $ready (mut i32) (i32.const 0))
        (data (i32.const 0) "started v=1")
        (func (export "_start") (global.set $ready (i32.const 1)) (call $exit (i32.const 0)))
        (func (export "allocate") (param i32) (result i32) i32.const 1024)
        (func (export "deallocate") (param i32 i32))
        (func (export "process_data") (param i32 i32)
            (if (global.get $ready) (then (drop (call $influx (i32.const 0) (i32.const 11)))))))"#);
    let plugin = rt.compile(&module).unwrap();
    assert_eq!(plugin.contract(), Contract::Seed);
    let mut inst = plugin.instance(Limits::default()).unwrap();
    for _ in 0..3 {
        assert_eq!(points(accepted(&inst.process(&record("{}")))), ["started v=1"]);
    }
    assert_eq!(inst.stats().instantiations, 1);
}

#[test]
fn a_trapping_start_function_fails_instantiation_cleanly() {
    let rt = runtime();
    let module = wat(r#"(module
        (memory (export "memory") 1)
        (func (export "_initialize") unreachable)
        (func (export "millrace_abi_version") (result i32) i32.const 1)
        (func (export "millrace_input") (param i32) (result i32) i32.const 0)
        (func (export "millrace_process") (param i32 i32) (result i32) i32.const 0))"#);
    let err = rt.compile(&module).unwrap_err();
    assert_eq!(err.kind(), "instantiate", "{err}");
    assert!(err.to_string().contains("_initialize"), "{err}");
}

#[test]
fn running_out_of_instance_slots_is_the_hosts_shortage_not_the_records_fault() {
    let rt = Runtime::new(EngineConfig {
        max_instances: 2,
        ..EngineConfig::default()
    })
    .unwrap();
    let plugin = rt.compile(&dist("seed_router")).unwrap();
    let value = r#"{"type":"metric","source":"s","unit":"c","value":1}"#;
    let mut a = plugin.instance(Limits::default()).unwrap();
    let mut b = plugin.instance(Limits::default()).unwrap();
    let mut c = plugin.instance(Limits::default()).unwrap();
    assert!(a.process(&record(value)).result.is_ok());
    assert!(b.process(&record(value)).result.is_ok());
    assert!(a.is_live() && b.is_live());
    let err = c.process(&record(value)).result.unwrap_err();
    assert!(
        matches!(err, PluginError::NoCapacity { .. }),
        "every slot is taken: {err}"
    );
    assert_eq!(err.kind(), "no_capacity");
    assert!(
        err.is_retriable(),
        "the same record can succeed once a slot is free"
    );
    a.release();
    assert!(!a.is_live());
    assert!(
        c.process(&record(value)).result.is_ok(),
        "a released slot serves another instance"
    );
    assert!(a.process(&record(value)).result.unwrap_err().is_retriable());
}
