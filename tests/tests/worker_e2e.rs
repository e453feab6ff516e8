//! The worker end to end against the real broker, registry and stores: records produced to client topics
//! land in InfluxDB and Elasticsearch or in the dead-letter topic, with exact accounting per record id, and
//! the group's committed offsets cover everything once the worker drained.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use millrace_tests::{addr, eventually, http_url, oras_push, repo_root, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

fn dist(name: &str) -> PathBuf {
    let p = repo_root().join(format!("plugins/dist/{name}.wasm"));
    assert!(
        p.exists(),
        "{} missing: build the example plugins with `make plugins`",
        p.display()
    );
    p
}

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

    fn config(&self, router: &str, compat: &str, cache: &std::path::Path) -> String {
        let registry = addr("registry");
        format!(
            r#"
            [kafka]
            brokers = "{kafka}"
            group_id = "{group}"
            session_timeout = "6s"
            statistics_interval = "1s"
            [[bindings]]
            topic = "{v1}"
            plugin = "{registry}/e2e/router@{router}"
            allowed_measurements = ["env_"]
            allowed_indices = ["{a}-", "{b}-"]
            [[bindings]]
            topic = "{seed}"
            plugin = "{registry}/e2e/compat@{compat}"
            allowed_measurements = ["env_"]
            allowed_indices = ["*"]
            [sinks.influxdb]
            url = "{influx}"
            database = "{db}"
            [sinks.elasticsearch]
            urls = ["{es}"]
            [dead_letter]
            topic = "{dlq}"
            [metrics]
            address = "127.0.0.1:0"
            [registry]
            cache_dir = "{cache}"
            insecure = ["{registry}"]
            [batching]
            linger = "50ms"
            max_records = 500
            [pipeline]
            drain_timeout = "20s"
            "#,
            kafka = addr("kafka"),
            group = self.group,
            v1 = self.topic_v1,
            seed = self.topic_seed,
            a = self.service("checkout"),
            b = self.service("billing"),
            influx = http_url("influxdb"),
            db = self.db,
            es = http_url("elasticsearch"),
            dlq = self.dlq,
            cache = cache.display(),
        )
    }
}

async fn create_db(db: &str) -> Result<()> {
    let r = reqwest::Client::new()
        .post(format!("{}/query", http_url("influxdb")))
        .query(&[("q", format!("CREATE DATABASE \"{db}\""))])
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success());
    Ok(())
}

async fn produce(topic: &str, records: &[(String, Vec<u8>)]) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    // Distinct timestamps: InfluxDB keeps one point per series and timestamp.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let sends = records.iter().enumerate().map(|(i, (key, value))| {
        producer.send(
            FutureRecord::to(topic)
                .timestamp(base + i as i64)
                .key(key.as_bytes())
                .payload(value.as_slice())
                .headers(
                    rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                        key: "origin",
                        value: Some("e2e"),
                    }),
                ),
            Duration::from_secs(30),
        )
    });
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Record ids of the points in the database (the `source` tag is `r<id>`).
async fn influx_ids(db: &str) -> Result<BTreeSet<u64>> {
    let v: Value = reqwest::Client::new()
        .get(format!("{}/query", http_url("influxdb")))
        .query(&[("db", db), ("q", "SELECT \"source\", \"value\" FROM env_metrics")])
        .send()
        .await?
        .json()
        .await?;
    let mut ids = BTreeSet::new();
    if let Some(values) = v["results"][0]["series"][0]["values"].as_array() {
        for row in values {
            if let Some(id) = row[1]
                .as_str()
                .and_then(|s| s.strip_prefix('r'))
                .and_then(|s| s.parse().ok())
            {
                ids.insert(id);
            }
        }
    }
    Ok(ids)
}

/// Record ids and document ids of an index.
async fn es_docs(index: &str) -> Result<Vec<(u64, String)>> {
    let r = reqwest::Client::new()
        .post(format!("{}/{index}/_search", http_url("elasticsearch")))
        .header("Content-Type", "application/json")
        .body(json!({"size": 10000, "query": {"match_all": {}}}).to_string())
        .send()
        .await?;
    if r.status().as_u16() == 404 {
        return Ok(Vec::new());
    }
    let v: Value = r.json().await?;
    Ok(v["hits"]["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .filter_map(|h| Some((h["_source"]["rid"].as_u64()?, h["_id"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

/// Dead letters: record id -> (kind, source topic, offset, original header kept).
async fn dead_letters(topic: &str, expect: usize) -> Result<BTreeMap<u64, (String, String, i64, bool)>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .set("group.id", unique("dlq-reader"))
        .set("topic.metadata.refresh.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut out = BTreeMap::new();
    while out.len() < expect {
        let Ok(msg) = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await else {
            break;
        };
        let msg = match msg {
            Ok(m) => m,
            // The dead-letter topic appears with the first dead letter.
            Err(e) if e.to_string().contains("Unknown topic") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let value = String::from_utf8_lossy(msg.payload().unwrap_or_default()).to_string();
        let id: u64 = value
            .split("rid")
            .nth(1)
            .and_then(|s| {
                s.trim_start_matches(['"', ':'])
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
            })
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("dead letter without rid: {value}"))?;
        let mut h = BTreeMap::new();
        if let Some(headers) = msg.headers() {
            for hd in headers.iter() {
                h.insert(
                    hd.key.to_string(),
                    String::from_utf8_lossy(hd.value.unwrap_or_default()).to_string(),
                );
            }
        }
        out.insert(
            id,
            (
                h.get("millrace.error.kind").cloned().unwrap_or_default(),
                h.get("millrace.source.topic").cloned().unwrap_or_default(),
                h.get("millrace.source.offset")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(-1),
                h.get("origin").map(String::as_str) == Some("e2e"),
            ),
        );
    }
    Ok(out)
}

/// The group's committed offsets summed per topic.
fn committed(group: &str, topics: &[&str]) -> Result<BTreeMap<String, i64>> {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .set("group.id", group)
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in topics {
        for p in 0..4 {
            tpl.add_partition(t, p);
        }
    }
    let c = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    let mut sums = BTreeMap::new();
    for e in c.elements() {
        if let Some(o) = e.offset().to_raw().filter(|o| *o >= 0) {
            *sums.entry(e.topic().to_string()).or_insert(0) += o;
        }
    }
    Ok(sums)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_land_in_both_stores_or_the_dead_letter_topic_exactly() -> Result<()> {
    let s = Scenario::new();
    create_db(&s.db).await?;
    let registry = addr("registry");
    let router = oras_push(
        &format!("{registry}/e2e/router:v1"),
        &dist("seed_router"),
        Some("application/wasm"),
        None,
    )?;
    let compat = oras_push(
        &format!("{registry}/e2e/compat:v1"),
        &dist("seed_compat"),
        Some("application/wasm"),
        None,
    )?;

    // ABI v1 topic: metrics, logs of two allowed services, logs of a service not allowed, bad JSON, unknown.
    let mut v1 = Vec::new();
    let mut expect_points = BTreeSet::new();
    let mut expect_docs: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut expect_dead: BTreeMap<u64, &str> = BTreeMap::new();
    for id in 0..600u64 {
        let value = match id % 6 {
            0 | 1 => {
                expect_points.insert(id);
                json!({"type": "metric", "source": format!("r{id}"), "unit": "C", "value": id as f64 / 2.0, "rid": id}).to_string()
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
            json!({"type": "metric", "source": format!("r{id}"), "value": 1, "rid": id})
                .to_string()
                .into_bytes(),
        ));
    }
    produce(&s.topic_v1, &v1).await?;
    produce(&s.topic_seed, &seed).await?;

    let cache = tempfile::tempdir()?;
    let config = millrace_worker::WorkerConfig::from_toml(&s.config(&router, &compat, cache.path()))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(millrace_worker::pipeline::run(config, async move {
        let _ = stop_rx.await;
    }));

    let points = eventually(Duration::from_secs(90), "all points in InfluxDB", || {
        let db = s.db.clone();
        let want = expect_points.len();
        async move { influx_ids(&db).await.ok().filter(|ids| ids.len() >= want) }
    })
    .await;
    assert_eq!(points, expect_points, "exactly the metric records, once each");

    for (index, want) in &expect_docs {
        let docs = eventually(Duration::from_secs(60), "documents in Elasticsearch", || {
            let index = index.clone();
            let want = want.len();
            async move { es_docs(&index).await.ok().filter(|d| d.len() >= want) }
        })
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
    let hostile = oras_push(
        &format!("{registry}/e2e/hostile:v1"),
        &dist("hostile"),
        Some("application/wasm"),
        None,
    )?;
    let cache = tempfile::tempdir()?;
    let text = format!(
        r#"
        [kafka]
        brokers = "{kafka}"
        group_id = "{group}"
        session_timeout = "6s"
        [[bindings]]
        topic = "{topic}"
        plugin = "{registry}/e2e/hostile@{hostile}"
        allowed_measurements = ["ok"]
        [bindings.limits]
        fuel = 20000000
        memory = "8MiB"
        timeout = "200ms"
        [sinks.influxdb]
        url = "{influx}"
        database = "{db}"
        [dead_letter]
        topic = "{dlq}"
        [metrics]
        address = "127.0.0.1:0"
        [registry]
        cache_dir = "{cache}"
        insecure = ["{registry}"]
        [batching]
        linger = "50ms"
        "#,
        kafka = addr("kafka"),
        group = s.group,
        topic = s.topic_v1,
        influx = http_url("influxdb"),
        db = s.db,
        dlq = s.dlq,
        cache = cache.path().display(),
    );
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
    let config = millrace_worker::WorkerConfig::from_toml(&text)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(millrace_worker::pipeline::run(config, async move {
        let _ = stop_rx.await;
    }));
    let dead = dead_letters(&s.dlq, expect_dead.len()).await?;
    let kinds: BTreeMap<u64, &str> = dead.iter().map(|(id, (k, ..))| (*id, k.as_str())).collect();
    assert_eq!(kinds, expect_dead);
    // The well-behaved records, interleaved with the hostile ones, all landed.
    let oks = eventually(Duration::from_secs(60), "the ok records' points", || {
        let db = s.db.clone();
        async move {
            let v: Value = reqwest::Client::new()
                .get(format!("{}/query", http_url("influxdb")))
                .query(&[("db", db.as_str()), ("q", "SELECT count(\"offset\") FROM ok")])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let n = v["results"][0]["series"][0]["values"][0][1].as_u64()?;
            (n == 10).then_some(n)
        }
    })
    .await;
    assert_eq!(oks, 10);
    stop_tx.send(()).ok();
    worker.await??;
    assert_eq!(committed(&s.group, &[&s.topic_v1])?.get(&s.topic_v1), Some(&80));
    Ok(())
}
