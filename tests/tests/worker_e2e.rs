//! The worker end to end against the real broker, registry and stores: records produced to client topics
//! land in InfluxDB and Elasticsearch or in the dead-letter topic, with exact accounting per record id, and
//! the group's committed offsets cover everything once the worker drained.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use millrace_tests::config::{Binding, TestConfig};
use millrace_tests::e2e::{
    committed, create_db, dead_letters, es_count, influx_count, produce, vm_source_ids_with, wait_docs,
    wait_points,
};
use millrace_tests::{addr, eventually, http_url, push_plugin, unique};
use serde_json::json;

/// Everything one test needs, with names no other test uses.
struct Scenario {
    uid: String,
    topic_v1: String,
    topic_seed: String,
    dlq: String,
    db: String,
    group: String,
}

impl Scenario {
    fn new() -> Self {
        let uid = unique("e2e").replace('-', "");
        Self {
            topic_v1: format!("client-{uid}-v1"),
            topic_seed: format!("client-{uid}-seed"),
            dlq: format!("dlq-{uid}"),
            db: format!("db_{uid}"),
            group: format!("group-{uid}"),
            uid,
        }
    }

    fn service(&self, s: &str) -> String {
        format!("{s}{}", self.uid)
    }

    /// A worker of this scenario's group writing to its database and dead-letter topic.
    fn worker(&self, cache: &std::path::Path) -> TestConfig {
        TestConfig::for_group(&self.group)
            .influxdb(&self.db)
            .dead_letter(&self.dlq)
            .metrics_port(0)
            .registry_cache(cache)
    }

    fn config(&self, router: &str, compat: &str, cache: &std::path::Path) -> TestConfig {
        let registry = addr("registry");
        self.worker(cache)
            .set("kafka", "statistics_interval", "1s")
            .binding(
                Binding::topic(&self.topic_v1)
                    .plugin(&format!("{registry}/e2e/router@{router}"))
                    .measurements(["env_"])
                    .indices([
                        format!("{}-", self.service("checkout")),
                        format!("{}-", self.service("billing")),
                    ]),
            )
            .binding(
                Binding::topic(&self.topic_seed)
                    .plugin(&format!("{registry}/e2e/compat@{compat}"))
                    .measurements(["env_"])
                    .indices(["*"]),
            )
            .influxdb_v2("e2e", "e2e")
            .set("sinks.influxdb_v2", "token", "t")
            .elasticsearch()
            .batching(|b| b.set("linger", "50ms").set("max_records", 500))
            .pipeline(|p| p.set("drain_timeout", "20s"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_land_in_both_stores_or_the_dead_letter_topic_exactly() -> Result<()> {
    let s = Scenario::new();
    create_db(&s.db).await?;
    let registry = addr("registry");
    let router = push_plugin(&format!("{registry}/e2e/router:v1"), "seed_router")?;
    let compat = push_plugin(&format!("{registry}/e2e/compat:v1"), "seed_compat")?;

    // ABI v1 topic: metrics, logs of two allowed services, logs of a service not allowed, bad JSON, unknown.
    let mut v1 = Vec::new();
    let mut expect_points = BTreeSet::new();
    let mut expect_docs: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut expect_dead: BTreeMap<u64, &str> = BTreeMap::new();
    for id in 0..600u64 {
        let value = match id % 6 {
            0 | 1 => {
                expect_points.insert(id);
                json!({"type": "metric", "source": format!("r{id}"), "unit": s.uid, "value": id as f64 / 2.0, "rid": id}).to_string()
            }
            2 | 3 => {
                let svc = s.service(if id % 6 == 2 { "checkout" } else { "billing" });
                expect_docs
                    .entry(format!("{svc}-logs-daily"))
                    .or_default()
                    .insert(id);
                json!({"type": "log", "service": svc, "level": "info", "msg": "ok", "rid": id}).to_string()
            }
            4 => {
                if id % 12 == 4 {
                    expect_dead.insert(id, "output_not_allowed");
                    json!({"type": "log", "service": s.service("forbidden"), "rid": id}).to_string()
                } else {
                    expect_dead.insert(id, "invalid_input");
                    format!("{{\"rid\":{id}, broken")
                }
            }
            _ => {
                expect_dead.insert(id, "invalid_input");
                json!({"type": "trace", "rid": id}).to_string()
            }
        };
        v1.push((format!("k{id}"), value.into_bytes()));
    }
    // Seed-contract topic: metrics only, ids 1000..1100.
    let mut seed = Vec::new();
    for id in 1000..1100u64 {
        expect_points.insert(id);
        seed.push((
            format!("k{id}"),
            json!({"type": "metric", "source": format!("r{id}"), "unit": s.uid, "value": 1, "rid": id})
                .to_string()
                .into_bytes(),
        ));
    }
    produce(&s.topic_v1, &v1).await?;
    produce(&s.topic_seed, &seed).await?;

    let cache = tempfile::tempdir()?;
    let (stop_tx, worker) = s.config(&router, &compat, cache.path()).start()?;

    let points = wait_points(
        &s.db,
        expect_points.len(),
        Duration::from_secs(90),
        "all points in InfluxDB",
    )
    .await;
    assert_eq!(points, expect_points, "exactly the metric records, once each");
    // The same points through the InfluxDB v2 write API (VictoriaMetrics), by their `source` tag.
    let vm_sources = eventually(Duration::from_secs(60), "the points in VictoriaMetrics", || {
        let want = expect_points.len();
        let selector = format!("{{__name__=\"env_metrics_value\",unit=\"{}\"}}", s.uid);
        async move {
            let ids = vm_source_ids_with(&reqwest::Client::new(), &http_url("victoriametrics"), &selector)
                .await
                .ok()?;
            (ids.len() >= want).then_some(ids)
        }
    })
    .await;
    assert!(
        expect_points.is_subset(&vm_sources),
        "every point reached the v2 write API too"
    );

    for (index, want) in &expect_docs {
        let docs = wait_docs(
            index,
            want.len(),
            Duration::from_secs(60),
            "documents in Elasticsearch",
        )
        .await;
        let ids: BTreeSet<u64> = docs.iter().map(|(rid, _)| *rid).collect();
        assert_eq!(&ids, want, "index {index}");
        for (_, doc_id) in &docs {
            assert!(
                doc_id.starts_with(&format!("{}-", s.topic_v1)) && doc_id.ends_with("-0"),
                "deterministic id {doc_id}"
            );
        }
    }

    let dead = dead_letters(&s.dlq, expect_dead.len()).await?;
    assert_eq!(dead.len(), expect_dead.len());
    for (id, kind) in &expect_dead {
        let (got_kind, topic, offset, origin_header) = &dead[id];
        assert_eq!(got_kind, kind, "record {id}");
        assert_eq!(topic, &s.topic_v1);
        assert!(*offset >= 0);
        assert!(origin_header, "original headers are kept");
    }

    // Exact accounting: every record landed or was dead-lettered, none twice, none lost.
    let landed_docs: usize = expect_docs.values().map(BTreeSet::len).sum();
    assert_eq!(points.len() + landed_docs + dead.len(), v1.len() + seed.len());

    stop_tx.send(()).ok();
    worker.await??;
    let offsets = committed(&s.group, &[&s.topic_v1, &s.topic_seed])?;
    assert_eq!(
        offsets.get(&s.topic_v1),
        Some(&(v1.len() as i64)),
        "all of v1 committed: {offsets:?}"
    );
    assert_eq!(
        offsets.get(&s.topic_seed),
        Some(&(seed.len() as i64)),
        "all of seed committed: {offsets:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_plugins_are_dead_lettered_with_their_kind_and_the_worker_keeps_going() -> Result<()> {
    let s = Scenario::new();
    create_db(&s.db).await?;
    let registry = addr("registry");
    let hostile = push_plugin(&format!("{registry}/e2e/hostile:v1"), "hostile")?;
    let cache = tempfile::tempdir()?;
    let config = s
        .worker(cache.path())
        .binding(
            Binding::topic(&s.topic_v1)
                .plugin(&format!("{registry}/e2e/hostile@{hostile}"))
                .measurements(["ok"])
                .limits(|l| {
                    l.set("fuel", 20_000_000)
                        .set("memory", "8MiB")
                        .set("timeout", "200ms")
                }),
        )
        .batching(|b| b.set("linger", "50ms"));
    let acts = [
        "loop",
        "memory",
        "panic",
        "flood",
        "abort",
        "exit",
        "bad-output",
        "ok",
    ];
    let mut records = Vec::new();
    let mut expect_dead = BTreeMap::new();
    for id in 0..80u64 {
        let act = acts[id as usize % acts.len()];
        let kind = match act {
            "loop" => Some("out_of_fuel"),
            "memory" => Some("memory_limit"),
            "panic" | "abort" => Some("trap"),
            "flood" => Some("output_limit"),
            "exit" => Some("exit"),
            "bad-output" => Some("invalid_output"),
            _ => None,
        };
        if let Some(k) = kind {
            expect_dead.insert(id, k);
        }
        records.push((
            format!("k{id}"),
            json!({"do": act, "rid": id}).to_string().into_bytes(),
        ));
    }
    produce(&s.topic_v1, &records).await?;
    let (stop_tx, worker) = config.start()?;
    let dead = dead_letters(&s.dlq, expect_dead.len()).await?;
    let kinds: BTreeMap<u64, &str> = dead.iter().map(|(id, (k, ..))| (*id, k.as_str())).collect();
    assert_eq!(kinds, expect_dead);
    // The well-behaved records, interleaved with the hostile ones, all landed.
    let oks = eventually(Duration::from_secs(60), "the ok records' points", || async {
        influx_count(&s.db, "ok", "offset")
            .await
            .ok()
            .filter(|n| *n == 10)
    })
    .await;
    assert_eq!(oks, 10);
    stop_tx.send(()).ok();
    worker.await??;
    assert_eq!(committed(&s.group, &[&s.topic_v1])?.get(&s.topic_v1), Some(&80));
    Ok(())
}

/// A record that passes its wall-clock deadline gets one more try before it is blamed (a busy host may not
/// have run the lane); a plugin that is really too slow times out twice and is dead-lettered as `timeout`,
/// while the well-behaved records beside it land.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_past_its_deadline_is_tried_once_more_before_it_is_dead_lettered() -> Result<()> {
    let s = Scenario::new();
    create_db(&s.db).await?;
    let registry = addr("registry");
    // A repository of its own: the hostile-plugins test above pushes the same blob to `e2e/hostile` at the
    // same time, and two concurrent uploads of one blob to one repository can fail the registry's digest check.
    let hostile = push_plugin(&format!("{registry}/e2e/hostile-deadline:v1"), "hostile")?;
    let cache = tempfile::tempdir()?;
    let port = millrace_tests::free_port();
    let config = s
        .worker(cache.path())
        .metrics_port(port)
        .binding(
            Binding::topic(&s.topic_v1)
                .plugin(&format!("{registry}/e2e/hostile-deadline@{hostile}"))
                .measurements(["ok"])
                // Fuel enough for seconds of looping: the deadline, not the fuel, stops the loop.
                .limits(|l| l.set("fuel", 100_000_000_000i64).set("timeout", "50ms")),
        )
        .batching(|b| b.set("linger", "50ms"));
    let records: Vec<(String, Vec<u8>)> = (0..8u64)
        .map(|id| {
            let act = if id % 2 == 0 { "loop" } else { "ok" };
            (
                format!("k{id}"),
                json!({"do": act, "rid": id}).to_string().into_bytes(),
            )
        })
        .collect();
    produce(&s.topic_v1, &records).await?;
    let (stop_tx, worker) = config.start()?;
    let dead = dead_letters(&s.dlq, 4).await?;
    let kinds: BTreeMap<u64, &str> = dead.iter().map(|(id, (k, ..))| (*id, k.as_str())).collect();
    assert_eq!(kinds, (0..8).step_by(2).map(|id| (id, "timeout")).collect());
    let oks = eventually(Duration::from_secs(60), "the ok records' points", || async {
        influx_count(&s.db, "ok", "offset").await.ok().filter(|n| *n == 4)
    })
    .await;
    assert_eq!(oks, 4);
    // Each looping record was tried twice: one retry each (more only if a busy host also delayed an ok one).
    let retries =
        millrace_tests::e2e::metric_value(port, "millrace_resource_waits_total{resource=\"deadline\"}")
            .await
            .unwrap_or(0.0);
    assert!(retries >= 4.0, "{retries} retries for 4 looping records");
    stop_tx.send(()).ok();
    worker.await??;
    assert_eq!(committed(&s.group, &[&s.topic_v1])?.get(&s.topic_v1), Some(&8));
    Ok(())
}

/// A store refusing an output for good (here InfluxDB's field type conflict) sends the record to the
/// dead-letter topic with the store's reason, while its other outputs are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outputs_a_store_refuses_are_dead_lettered_with_its_reason() -> Result<()> {
    let s = Scenario::new();
    create_db(&s.db).await?;
    // `bytes` is a float in this database; the plugin writes it as an integer.
    let r = reqwest::Client::new()
        .post(format!("{}/write", http_url("influxdb")))
        .query(&[("db", s.db.as_str())])
        .body("kafka_records,topic=seed bytes=1.5")
        .send()
        .await?;
    let status = r.status().as_u16();
    assert_eq!(status, 204, "seeding the float field: {}", r.text().await?);
    let registry = addr("registry");
    let envelope = push_plugin(&format!("{registry}/e2e/envelope:v1"), "c_envelope")?;
    let cache = tempfile::tempdir()?;
    let config = s
        .worker(cache.path())
        .binding(
            Binding::topic(&s.topic_v1)
                .plugin(&format!("{registry}/e2e/envelope@{envelope}"))
                .measurements(["kafka_records"])
                .indices(["envelope-"]),
        )
        .elasticsearch()
        .batching(|b| b.set("linger", "50ms"));
    let records: Vec<_> = (0..20u64)
        .map(|id| (format!("k{id}"), json!({"rid": id}).to_string().into_bytes()))
        .collect();
    produce(&s.topic_v1, &records).await?;
    let (stop_tx, worker) = config.start()?;
    let dead = dead_letters(&s.dlq, 20).await?;
    assert_eq!(dead.len(), 20);
    assert!(
        dead.values().all(|(kind, ..)| kind == "store_rejected"),
        "{dead:?}"
    );
    // The documents of the same records were written.
    let index = format!("envelope-{}", s.topic_v1);
    let docs = eventually(Duration::from_secs(60), "the envelope documents", || async {
        es_count(&index).await.ok().filter(|c| *c >= 20)
    })
    .await;
    assert_eq!(docs, 20);
    stop_tx.send(()).ok();
    worker.await??;
    assert_eq!(committed(&s.group, &[&s.topic_v1])?.get(&s.topic_v1), Some(&20));
    Ok(())
}
