//! `millrace plugin test|inspect|bench` as a plugin author runs them, on the example plugins built by
//! `make plugins`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

fn millrace(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_millrace"));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run millrace");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn dist(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/dist/{name}.wasm"));
    assert!(
        p.exists(),
        "{} missing: build the example plugins with `make plugins`",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn plugin_test_prints_outputs_rejects_and_costs() {
    let records = concat!(
        r#"{"type":"metric","source":"s1","unit":"C","value":21.5}"#,
        "\n",
        r#"{"type":"log","service":"checkout","msg":"hi"}"#,
        "\n\n",
        r#"{"type":"trace"}"#,
        "\n"
    );
    let out = millrace(
        &["plugin", "test", &dist("seed_router"), "--input", "-"],
        Some(records),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("point     env_metrics,source=s1,unit=C value=21.5"),
        "{stdout}"
    );
    assert!(stdout.contains("document  checkout-logs-daily"), "{stdout}");
    assert!(
        stdout.contains("rejected: unknown record type `trace`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 record(s): 2 accepted (2 outputs), 1 rejected, 0 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("fuel "), "{stdout}");

    let out = millrace(
        &[
            "plugin",
            "test",
            &dist("seed_router"),
            "-i",
            "-",
            "--fail-on-reject",
        ],
        Some(records),
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn plugin_test_fails_on_errors_and_applies_the_limits() {
    let out = millrace(
        &[
            "plugin",
            "test",
            &dist("hostile"),
            "-i",
            "-",
            "--fuel",
            "10000000",
            "--memory",
            "4MiB",
            "--json",
        ],
        Some("{\"do\":\"loop\"}\n{\"do\":\"memory\"}\n{\"do\":\"ok\"}\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["error_kind"], "out_of_fuel");
    assert_eq!(lines[0]["fuel"], 10_000_000);
    assert_eq!(lines[1]["error_kind"], "memory_limit");
    assert_eq!(lines[2]["verdict"], "accepted");
    assert_eq!(lines[2]["outputs"][0]["point"], "ok offset=2i");
}

#[test]
fn plugin_test_envelopes_carry_keys_headers_and_metadata() {
    let env = r#"{"value":{"a":1},"key":"k","headers":{"trace":"t1","flag":null},"topic":"Orders","partition":3,"offset":77,"timestamp":1700000000000}"#;
    let out = millrace(
        &[
            "plugin",
            "test",
            &dist("c_envelope"),
            "-i",
            "-",
            "--envelope",
            "--json",
        ],
        Some(env),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(
        v["outputs"][0]["point"],
        "kafka_records,topic=Orders bytes=7i,headers=2i,partition=3i 1700000000000000000"
    );
    assert_eq!(v["outputs"][1]["index"], "envelope-orders");
    assert_eq!(v["outputs"][1]["id"], "Orders-3-77");
    assert_eq!(v["outputs"][1]["document"]["key_hex"], "6b");
    assert_eq!(
        v["outputs"][1]["document"]["headers"],
        serde_json::json!(["flag", "trace"])
    );
}

#[test]
fn plugin_inspect_shows_contract_and_imports() {
    let out = millrace(&["plugin", "inspect", &dist("seed_compat")], None);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("contract  seed contract"), "{stdout}");
    assert!(stdout.contains("env.host_send_to_es"), "{stdout}");
    assert!(stdout.contains("process_data"), "{stdout}");

    let out = millrace(&["plugin", "inspect", &dist("seed_router"), "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["contract"], "v1");
    assert_eq!(v["abi_version"], 1);
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));

    let junk = std::env::temp_dir().join(format!("millrace-not-wasm-{}.wasm", std::process::id()));
    std::fs::write(&junk, "hello").unwrap();
    let out = millrace(&["plugin", "inspect", junk.to_str().unwrap()], None);
    let _ = std::fs::remove_file(&junk);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a WebAssembly module"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plugin_bench_reports_throughput_and_instance_costs() {
    let corpus = std::env::temp_dir().join(format!("millrace-bench-{}.ndjson", std::process::id()));
    std::fs::write(
        &corpus,
        "{\"type\":\"metric\",\"source\":\"s\",\"value\":1}\n{\"type\":\"x\"}\n",
    )
    .unwrap();
    let out = millrace(
        &[
            "plugin",
            "bench",
            &dist("seed_router"),
            "-i",
            corpus.to_str().unwrap(),
            "--seconds",
            "0.2",
            "--instantiations",
            "20",
            "--live-instances",
            "5",
        ],
        None,
    );
    let _ = std::fs::remove_file(&corpus);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["records_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["failed"], 0);
    let records = v["records"].as_u64().unwrap();
    assert_eq!(
        v["rejected"].as_u64().unwrap(),
        records / 2,
        "half the corpus is an unknown type"
    );
    assert!(v["instantiate_median_us"].as_f64().unwrap() > 0.0);
}
