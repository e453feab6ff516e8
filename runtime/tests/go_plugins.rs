//! Go guests (plugins/sdk-go, plugins/examples/go-*) through the runtime with the default limits: each Go
//! example must produce exactly what the Rust example it ports produces for the same records, and the Go
//! runtime's costs (compile, `_initialize`, memory, fuel per record) must fit the defaults a binding gets.
//! `go_guest_costs` prints the figures the issue asks for (run with `--nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;
use common::dist;

use std::time::{Duration, Instant};

use millrace_runtime::{
    Contract, EngineConfig, Header, Limits, Output, PluginInstance, Processed, Record, Runtime, Verdict,
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

/// What a record produced, in a form two plugins can be compared by: outputs in order, or the reject
/// reason, or the error kind. A JSON parser's own wording differs between languages, so a reject for
/// invalid JSON compares by its prefix.
fn outcome(p: &Processed) -> Vec<String> {
    match &p.result {
        Ok(Verdict::Accepted(outputs)) => outputs
            .iter()
            .map(|o| match o {
                Output::Point(p) => format!("point {}", p.line()),
                Output::Document(d) => format!("document {} {:?} {}", d.index(), d.id(), d.body()),
            })
            .collect(),
        Ok(Verdict::Rejected { reason }) if reason.starts_with("invalid JSON") => {
            vec!["rejected: invalid JSON".into()]
        }
        Ok(Verdict::Rejected { reason }) => vec![format!("rejected: {reason}")],
        Err(e) => vec![format!("failed ({}): {e}", e.kind())],
    }
}

/// Runs every record through both modules (one instance each, default limits) and asserts equal
/// outcomes; returns the Go instance for further checks.
fn same_outcomes(rust: &str, go: &str, records: &[Record<'_>]) -> PluginInstance {
    let rt = runtime();
    let mut r = rt
        .compile(&dist(rust))
        .unwrap()
        .instance(Limits::default())
        .unwrap();
    let go_plugin = rt.compile(&dist(go)).unwrap();
    let mut g = go_plugin.instance(Limits::default()).unwrap();
    for (i, rec) in records.iter().enumerate() {
        let (pr, pg) = (r.process(rec), g.process(rec));
        let expected = outcome(&pr);
        assert!(
            !expected.iter().any(|o| o.starts_with("failed")),
            "record {i}: the Rust example failed: {expected:?}"
        );
        assert_eq!(
            outcome(&pg),
            expected,
            "record {i} ({:?}): Go differs from Rust; Go logs {:?}",
            rec.value.map(String::from_utf8_lossy),
            pg.logs
        );
    }
    g
}

const ROUTER_RECORDS: &[&str] = &[
    r#"{"type":"metric","source":"sensor 1","unit":"C","value":21.5,"timestamp":1700000000123}"#,
    r#"{"type":"metric","source":"s=1,x","value":3}"#,
    r#"{"type":"metric","source":"s","unit":"","value":-0.000001}"#,
    r#"{"type":"metric","source":"s","unit":"%","value":1e21}"#,
    r#"{"type":"metric","source":"s","unit":"C","value":null}"#,
    r#"{"type":"metric","unit":"C","value":1}"#,
    r#"{"type":"log","service":"Checkout","level":"error","message":"boom <&>"}"#,
    r#"{"type":"log","service":"pay_ment-2","nested":{"a":[1,2,{"b":null}]}}"#,
    r#"{"type":"log","service":"a/b"}"#,
    r#"{"type":"log","service":""}"#,
    r#"{"type":"log"}"#,
    r#"{"type":"trace"}"#,
    r#"{"value":1}"#,
    r#"{"type":null}"#,
    "{not json",
    "",
];

#[test]
fn go_router_matches_the_rust_seed_router() {
    let mut records: Vec<Record<'_>> = ROUTER_RECORDS.iter().map(|v| record(v)).collect();
    // A tombstone, and a record with headers and no key (the SDK decodes all of it).
    records.push(Record {
        value: None,
        ..record("")
    });
    let headers = [
        Header {
            name: "trace",
            value: Some(b"abc"),
        },
        Header {
            name: "none",
            value: None,
        },
    ];
    records.push(Record {
        key: None,
        timestamp_ms: None,
        headers: &headers,
        ..record(r#"{"type":"metric","source":"h","value":7}"#)
    });
    let g = same_outcomes("seed_router", "go_router", &records);
    let stats = g.stats();
    assert_eq!(
        stats.instantiations, 1,
        "one Go instance served every record: {stats:?}"
    );
    assert_eq!(stats.records, records.len() as u64);
}

#[test]
fn go_acme_iot_matches_the_rust_acme_iot() {
    let base = r#"{"device":{"id":"d-17","site":"Berlin","fw":"1.4.2","owner":"x"},"ts":"2026-11-22T10:00:00.250Z","readings":{"temp_f":70.3,"humidity_pct":41,"battery":{"mv":3012},"door_open":false,"note":"n/a"},"status":"ok"}"#;
    let values: Vec<String> = vec![
        base.into(),
        base.replace("\"ok\"", "\"overheat\""),
        base.replace("\"2026-11-22T10:00:00.250Z\"", "\"2026-11-22T11:00:00.25+01:00\""),
        base.replace("\"2026-11-22T10:00:00.250Z\"", "1795341600"),
        base.replace("\"2026-11-22T10:00:00.250Z\"", "1795341600250"),
        base.replace("\"2026-11-22T10:00:00.250Z\"", "1795341600.5"),
        base.replace("\"2026-11-22T10:00:00.250Z\"", "\"soon\""),
        base.replace("\"2026-11-22T10:00:00.250Z\"", "null"),
        base.replace("\"Berlin\"", "\"São PAULO\""),
        r#"{"device":{"id":"d 1,x=y"},"ts":"2026-01-01T00:00:00Z","readings":{"x":{"y":{"z_ms":1500}},"n":-3,"big":18446744073709551615,"f":0.1},"status":"low battery"}"#.into(),
        r#"{"readings":{"a":1}}"#.into(),
        r#"{"readings":{"s":"x"}}"#.into(),
        r#"{"device":{}}"#.into(),
        r#"{"readings":[1]}"#.into(),
        "[1,2]".into(),
        "{oops".into(),
    ];
    let records: Vec<Record<'_>> = values.iter().map(|v| record(v)).collect();
    let mut g = same_outcomes("acme_iot", "go_acme_iot", &records);
    // And the event carries the same log line.
    let p = g.process(&records[1]);
    assert_eq!(p.logs.len(), 1, "{:?}", p.logs);
    assert_eq!(p.logs[0].message, "event with status overheat");
}

#[test]
fn go_seed_contract_module_matches_the_rust_one() {
    let rt = runtime();
    let plugin = rt.compile(&dist("go_seed")).unwrap();
    assert_eq!(plugin.contract(), Contract::Seed);
    let records: Vec<Record<'_>> = [
        r#"{"type":"metric","source":"s 1","unit":"C","value":3,"timestamp":5}"#,
        r#"{"type":"metric","source":"s","value":2.5}"#,
        r#"{"type":"log","service":"Billing"}"#,
        r#"{"type":"trace"}"#,
        "{oops",
    ]
    .iter()
    .map(|v| record(v))
    .collect();
    let mut g = same_outcomes("seed_compat", "go_seed", &records);
    // fmt.Printf in the guest arrives as a stdout log line, as println! does from the Rust module.
    let p = g.process(&records[2]);
    assert_eq!(p.logs.len(), 1, "{:?}", p.logs);
    assert_eq!(
        p.logs[0].message,
        "routing a log of Billing to billing-logs-daily"
    );
    let p = g.process(&records[3]);
    assert!(p.logs[0].message.contains("unknown record type"), "{:?}", p.logs);
}

/// The fuel a fresh instance of `wasm` spends in `_initialize`, to within 1% (start-up gets
/// `INIT_BUDGET` times the record's fuel: found through the smallest `fuel_per_record` that suffices).
fn initialize_fuel(rt: &Runtime, wasm: &[u8]) -> u64 {
    smallest_init_fuel_per_record(rt, wasm) * millrace_runtime::INIT_BUDGET
}

/// The smallest `fuel_per_record` with which a fresh instance of `wasm` initialises, to within 1%.
fn smallest_init_fuel_per_record(rt: &Runtime, wasm: &[u8]) -> u64 {
    let plugin = rt.compile(wasm).unwrap();
    let ok = |fuel: u64| {
        plugin
            .instance(Limits {
                fuel_per_record: fuel,
                timeout: Duration::from_secs(10),
                ..Limits::default()
            })
            .unwrap()
            .prepare()
            .is_ok()
    };
    let (mut lo, mut hi) = (1u64, Limits::default().fuel_per_record);
    assert!(
        ok(hi),
        "_initialize does not fit the default fuel_per_record of {hi}"
    );
    while hi - lo > hi / 100 {
        let mid = lo + (hi - lo) / 2;
        if ok(mid) { hi = mid } else { lo = mid }
    }
    hi
}

struct Costs {
    compile: Duration,
    instantiate: Duration,
    init_fuel: u64,
    memory_after_init: usize,
    memory_after_run: usize,
    fuel_per_record: u64,
    time_per_record: Duration,
}

fn costs(rt: &Runtime, name: &str, corpus: &[Record<'_>], rounds: usize) -> Costs {
    let wasm = dist(name);
    let start = Instant::now();
    let plugin = rt.compile(&wasm).unwrap();
    let compile = start.elapsed();
    let init_fuel = initialize_fuel(rt, &wasm);
    let mut inst = plugin.instance(Limits::default()).unwrap();
    let start = Instant::now();
    inst.prepare().unwrap();
    let instantiate = start.elapsed();
    let memory_after_init = inst.memory_bytes();
    let (mut fuel, mut n) = (0u64, 0u64);
    let start = Instant::now();
    for _ in 0..rounds {
        for rec in corpus {
            let p = inst.process(rec);
            assert!(p.result.is_ok(), "{name}: {:?}", p.result);
            fuel += p.fuel_used;
            n += 1;
        }
    }
    let elapsed = start.elapsed();
    let stats = inst.stats();
    assert_eq!(
        stats.instantiations,
        1,
        "{name}: the instance was recycled while running {n} records ({stats:?}, memory {} bytes)",
        inst.memory_bytes()
    );
    Costs {
        compile,
        instantiate,
        init_fuel,
        memory_after_init,
        memory_after_run: inst.memory_bytes(),
        fuel_per_record: fuel / n,
        time_per_record: elapsed / n as u32,
    }
}

/// The Go runtime's costs against the Rust example's on the same records, with the default limits: the
/// Go module must initialise within a record's fuel and deadline, stay under the memory high-water mark
/// (or every record would pay a fresh instance), and run records well within the fuel limit.
#[test]
fn go_guest_costs() {
    let rt = runtime();
    let corpus: Vec<Record<'_>> = ROUTER_RECORDS[..8].iter().map(|v| record(v)).collect();
    let rounds = 250;
    let rust = costs(&rt, "seed_router", &corpus, rounds);
    let go = costs(&rt, "go_router", &corpus, rounds);
    let defaults = Limits::default();
    eprintln!(
        "{:<12} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "module", "compile", "instantiate", "init fuel", "mem init", "mem run", "fuel/rec", "time/rec"
    );
    for (name, c) in [("seed_router", &rust), ("go_router", &go)] {
        eprintln!(
            "{name:<12} {:>10.1?} {:>12.1?} {:>12} {:>12} {:>12} {:>10} {:>10.1?}",
            c.compile,
            c.instantiate,
            c.init_fuel,
            c.memory_after_init,
            c.memory_after_run,
            c.fuel_per_record,
            c.time_per_record
        );
    }
    assert!(
        go.init_fuel < defaults.fuel_per_record / 2,
        "Go _initialize fuel {}",
        go.init_fuel
    );
    assert!(
        go.instantiate < defaults.timeout,
        "Go instantiation took {:?}",
        go.instantiate
    );
    assert!(
        (go.memory_after_run as u64) < defaults.recycle_memory_bytes,
        "Go instance memory {} reaches the default recycle_memory_bytes {}",
        go.memory_after_run,
        defaults.recycle_memory_bytes
    );
    assert!(
        go.fuel_per_record < defaults.fuel_per_record / 100,
        "Go fuel per record {}",
        go.fuel_per_record
    );
    // The Go guest costs more than the Rust one, and the figures must show it (a sanity check that the
    // measurement measures something).
    assert!(go.fuel_per_record > rust.fuel_per_record && go.init_fuel > rust.init_fuel);
}

/// What a Go author sees when a plugin misbehaves, with the default limits: each failure is typed and
/// names its cause, and the next record runs on a fresh instance.
#[test]
fn go_plugin_failures_name_their_cause() {
    let rt = runtime();
    let plugin = rt.compile(&dist("go_hostile")).unwrap();
    let mut inst = plugin.instance(Limits::default()).unwrap();
    let mut fail_then_recover = |what: &str| {
        let p = inst.process(&record(what));
        let err = p.result.expect_err(what);
        let ok = inst.process(&record("ok"));
        assert_eq!(outcome(&ok), ["point ok n=1i"], "after `{what}`: {:?}", ok.logs);
        err
    };
    // A panic is a trap whose message carries the panic's text and where it was raised (the SDK recovers
    // it to print that, since Go's own fatal path needs poll_oneoff to sleep and dies before printing).
    let err = fail_then_recover("panic");
    assert_eq!(err.kind(), "trap");
    assert!(
        err.to_string().contains(
            "panic: go plugin panics on purpose at main.misbehave (millrace.dev/hostile-go/main.go:"
        ),
        "{err}"
    );
    let err = fail_then_recover("nil-map");
    assert_eq!(err.kind(), "trap");
    assert!(
        err.to_string().contains("assignment to entry in nil map"),
        "{err}"
    );
    // The Go runtime's "out of memory" is reported as the limit it hit.
    let err = fail_then_recover("memory");
    assert_eq!(
        err,
        millrace_runtime::PluginError::MemoryLimit {
            limit: Limits::default().max_memory_bytes
        }
    );
    let err = fail_then_recover("exit");
    assert_eq!(err, millrace_runtime::PluginError::Exit { code: 3 });
    // An endless loop ends at whichever of the fuel and the deadline comes first on this machine.
    let err = fail_then_recover("loop");
    assert!(matches!(err.kind(), "out_of_fuel" | "timeout"), "{err}");
    assert_eq!(inst.stats().recycled_after_trap, 5);
}

/// Start-up runs once per instance on a budget of its own (`INIT_BUDGET` x a record's fuel and time), so an
/// instance starts with a per-record fuel below what its runtime's start-up costs; a budget too small for
/// start-up is an error that names the binding option to raise, not a bare "out of fuel".
#[test]
fn go_start_up_has_its_own_budget_and_a_limit_too_small_names_the_option() {
    let rt = runtime();
    let wasm = dist("go_router");
    let smallest = smallest_init_fuel_per_record(&rt, &wasm);
    let start_up = smallest * millrace_runtime::INIT_BUDGET;
    let plugin = rt.compile(&wasm).unwrap();
    let record = Record {
        topic: "t",
        value: Some(br#"{"type":"metric","source":"s1","unit":"C","value":1.5}"#),
        ..Default::default()
    };
    let mut probe = plugin.instance(Limits::default()).unwrap();
    let first = probe.process(&record).fuel_used;
    // Measured here: start-up costs about as much as a first record (~0.8 M units each for the Go router),
    // far below the default fuel of 50 M. A record's fuel that is a tenth of the start-up's cost still lets
    // an instance start: start-up has its own budget.
    eprintln!("Go start-up {start_up} fuel, first record {first}");
    assert!(smallest < start_up);
    plugin
        .instance(Limits {
            fuel_per_record: smallest,
            ..Limits::default()
        })
        .unwrap()
        .prepare()
        .unwrap();

    let err = plugin
        .instance(Limits {
            fuel_per_record: smallest / 4,
            ..Limits::default()
        })
        .unwrap()
        .prepare()
        .unwrap_err();
    assert_eq!(err.kind(), "instantiate");
    assert!(
        err.to_string().contains("raise the binding's limits.fuel"),
        "{err}"
    );
}
