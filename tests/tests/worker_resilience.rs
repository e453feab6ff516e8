//! The worker when things change or break, against the real broker, registry and stores: workers joining and
//! leaving the group mid-stream, a store down for 20 seconds, a worker killed with SIGKILL mid-batch. Each
//! ends with exact accounting per record id: nothing lost, and no duplicate documents.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use millrace_tests::e2e::{committed, create_db, es_docs, influx_ids, produce, start_worker};
use millrace_tests::{TcpProxy, addr, eventually, free_port, http_url, push_plugin, repo_root, unique};
use serde_json::json;

struct Setup {
    uid: String,
    topic: String,
    group: String,
    db: String,
    dlq: String,
    router: String,
    cache: tempfile::TempDir,
}

async fn setup() -> Result<Setup> {
    let uid = unique("res").replace('-', "");
    let db = format!("db_{uid}");
    create_db(&db).await?;
    let registry = addr("registry");
    let digest = push_plugin(&format!("{registry}/res/router:v1"), "seed_router")?;
    Ok(Setup {
        topic: format!("client-{uid}"),
        group: format!("group-{uid}"),
        dlq: format!("dlq-{uid}"),
        router: format!("{registry}/res/router@{digest}"),
        cache: tempfile::tempdir()?,
        db,
        uid,
    })
}

fn config(s: &Setup, es_url: &str, metrics_port: u16, extra: &str) -> String {
    format!(
        r#"
        [kafka]
        brokers = "{kafka}"
        group_id = "{group}"
        session_timeout = "6s"
        [[bindings]]
        topic = "{topic}"
        plugin = "{router}"
        allowed_measurements = ["env_"]
        allowed_indices = ["svc{uid}-"]
        [sinks.influxdb]
        url = "{influx}"
        database = "{db}"
        [sinks.elasticsearch]
        urls = ["{es_url}"]
        [dead_letter]
        topic = "{dlq}"
        [metrics]
        address = "127.0.0.1:{metrics_port}"
        [registry]
        cache_dir = "{cache}"
        insecure = ["{registry}"]
        {extra}
        "#,
        kafka = addr("kafka"),
        group = s.group,
        topic = s.topic,
        router = s.router,
        uid = s.uid,
        influx = http_url("influxdb"),
        db = s.db,
        dlq = s.dlq,
        cache = s.cache.path().display(),
        registry = addr("registry"),
    )
}

fn metric(id: u64) -> (String, Vec<u8>) {
    (
        format!("k{id}"),
        json!({"type": "metric", "source": format!("r{id}"), "value": id, "rid": id})
            .to_string()
            .into_bytes(),
    )
}

fn log(uid: &str, id: u64) -> (String, Vec<u8>) {
    (
        format!("k{id}"),
        json!({"type": "log", "service": format!("svc{uid}"), "rid": id})
            .to_string()
            .into_bytes(),
    )
}

async fn metric_value(port: u16, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_joining_and_leaving_mid_stream_lose_nothing() -> Result<()> {
    let s = setup().await?;
    let text = |port| {
        config(
            &s,
            &http_url("elasticsearch"),
            port,
            "[batching]\nlinger = \"50ms\"",
        )
    };
    let (stop1, w1) = start_worker(&text(free_port()))?;
    let (stop2, w2) = start_worker(&text(free_port()))?;

    // Records keep arriving while the group changes.
    let topic = s.topic.clone();
    let producer = tokio::spawn(async move {
        for chunk in 0..30u64 {
            let batch: Vec<_> = (chunk * 100..chunk * 100 + 100).map(metric).collect();
            produce(&topic, &batch).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        anyhow::Ok(())
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (stop3, w3) = start_worker(&text(free_port()))?; // a third joins
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop1.send(()).ok(); // one leaves, gracefully
    w1.await??;
    producer.await??;

    let want: BTreeSet<u64> = (0..3000).collect();
    let got = eventually(Duration::from_secs(120), "all 3000 points", || {
        let db = s.db.clone();
        async move { influx_ids(&db).await.ok().filter(|ids| ids.len() >= 3000) }
    })
    .await;
    assert_eq!(got, want);
    stop2.send(()).ok();
    stop3.send(()).ok();
    w2.await??;
    w3.await??;
    assert_eq!(committed(&s.group, &[&s.topic])?.get(&s.topic), Some(&3000));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_down_for_20_seconds_pauses_consumption_and_loses_nothing() -> Result<()> {
    let s = setup().await?;
    let proxy = TcpProxy::start(&addr("elasticsearch")).await?;
    let port = free_port();
    let extra = "[batching]\nlinger = \"50ms\"\nmax_records = 50\nretry_max_backoff = \"1s\"\n[pipeline]\nmax_in_flight_per_partition = 40";
    let (stop, worker) = start_worker(&config(&s, &format!("http://{}", proxy.addr), port, extra))?;
    let index = format!("svc{}-logs-daily", s.uid);

    produce(&s.topic, &(0..200).map(|i| log(&s.uid, i)).collect::<Vec<_>>()).await?;
    eventually(Duration::from_secs(60), "the first 200 documents", || {
        let index = index.clone();
        async move { es_docs(&index).await.ok().filter(|d| d.len() >= 200) }
    })
    .await;

    let ready = |port: u16| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(ready(port).await, 200, "ready while the store answers");
    proxy.set_down(true);
    produce(&s.topic, &(200..1200).map(|i| log(&s.uid, i)).collect::<Vec<_>>()).await?;
    let outage = std::time::Instant::now();
    let mut saw_pause = false;
    while outage.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        saw_pause |= metric_value(port, "millrace_paused_partitions")
            .await
            .unwrap_or(0.0)
            > 0.0;
        // Never a committed offset past a record that is not in the store.
        let landed: BTreeSet<String> = es_docs(&index).await?.into_iter().map(|(_, id)| id).collect();
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", addr("kafka"))
            .set("group.id", &s.group)
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition(&s.topic, p);
        }
        let c = rdkafka::consumer::Consumer::committed_offsets(&consumer, tpl, Duration::from_secs(10))?;
        for e in c.elements() {
            if let Some(o) = e.offset().to_raw().filter(|o| *o > 0) {
                for off in 0..o {
                    let id = format!("{}-{}-{off}-0", s.topic, e.partition());
                    assert!(
                        landed.contains(&id),
                        "offset {o} committed on partition {} but {id} is not in the store",
                        e.partition()
                    );
                }
            }
        }
    }
    assert!(saw_pause, "consumption paused while the store was down");
    assert_eq!(ready(port).await, 503, "not ready while a store is unreachable");
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await?
        .status()
        .as_u16();
    assert_eq!(health, 200, "alive all the same");
    assert!(
        es_docs(&index).await?.len() < 1200,
        "the store really was unreachable"
    );

    proxy.set_down(false);
    let docs = eventually(
        Duration::from_secs(90),
        "all 1200 documents after the outage",
        || {
            let index = index.clone();
            async move { es_docs(&index).await.ok().filter(|d| d.len() >= 1200) }
        },
    )
    .await;
    let ids: BTreeSet<u64> = docs.iter().map(|(rid, _)| *rid).collect();
    assert_eq!(ids, (0..1200).collect::<BTreeSet<u64>>());
    assert_eq!(docs.len(), 1200, "no duplicates");
    assert!(
        metric_value(port, "millrace_sink_retries_total{sink=\"elasticsearch\"}")
            .await
            .unwrap_or(0.0)
            > 0.0
    );
    stop.send(()).ok();
    worker.await??;
    assert_eq!(committed(&s.group, &[&s.topic])?.get(&s.topic), Some(&1200));
    Ok(())
}

fn millrace_bin() -> PathBuf {
    let p = std::env::var_os("MILLRACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/millrace"));
    assert!(
        p.exists(),
        "{} missing: `cargo build -p millrace-worker` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing() -> Result<()> {
    let s = setup().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("worker.toml");
    std::fs::write(
        &file,
        config(
            &s,
            &http_url("elasticsearch"),
            0,
            "[batching]\nlinger = \"300ms\"\nmax_records = 200",
        ),
    )?;
    let spawn = || {
        std::process::Command::new(millrace_bin())
            .args(["worker", "--config"])
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    };
    let index = format!("svc{}-logs-daily", s.uid);
    let records: Vec<_> = (0..3000)
        .map(|i| if i % 2 == 0 { log(&s.uid, i) } else { metric(i) })
        .collect();
    produce(&s.topic, &records).await?;

    let mut first = spawn()?;
    eventually(
        Duration::from_secs(60),
        "the first worker to write some documents",
        || {
            let index = index.clone();
            async move { es_docs(&index).await.ok().filter(|d| d.len() >= 100) }
        },
    )
    .await;
    first.kill()?; // SIGKILL: no drain, no commit
    first.wait()?;
    assert!(es_docs(&index).await?.len() < 1500, "killed before the end");

    let mut second = spawn()?;
    let docs = eventually(
        Duration::from_secs(120),
        "all documents after the restart",
        || {
            let index = index.clone();
            async move { es_docs(&index).await.ok().filter(|d| d.len() >= 1500) }
        },
    )
    .await;
    let ids: BTreeSet<u64> = docs.iter().map(|(rid, _)| *rid).collect();
    assert_eq!(ids, (0..3000).step_by(2).collect::<BTreeSet<u64>>());
    assert_eq!(
        docs.len(),
        1500,
        "redelivered records overwrote their documents (deterministic ids)"
    );
    let points = eventually(Duration::from_secs(60), "all points", || {
        let db = s.db.clone();
        async move { influx_ids(&db).await.ok().filter(|p| p.len() >= 1500) }
    })
    .await;
    assert_eq!(points, (1..3000).step_by(2).collect::<BTreeSet<u64>>());

    // SIGTERM: the worker drains and commits before it leaves.
    let pid = second.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()?;
    let status = tokio::task::spawn_blocking(move || second.wait()).await??;
    assert!(status.success(), "graceful exit on SIGTERM: {status}");
    assert_eq!(committed(&s.group, &[&s.topic])?.get(&s.topic), Some(&3000));
    Ok(())
}
