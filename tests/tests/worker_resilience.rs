//! The worker when things change or break, against the real broker, registry and stores: workers joining and
//! leaving the group mid-stream (1 -> 3 -> 1), partitions paused and resumed by back pressure over and over, a
//! store down for 60 seconds, a worker killed with SIGKILL mid-batch. Each ends with exact accounting per record
//! id: nothing lost, and no duplicate documents.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use millrace_tests::config::{Binding, TestConfig};
use millrace_tests::e2e::{
    committed, committed_partitions, create_db, es_docs, metric_record, metric_sum, metric_value,
    metrics_text, probe, produce, spawn_worker_process, terminate, wait_docs, wait_points,
};
use millrace_tests::{TcpProxy, addr, eventually, free_port, http_url, push_plugin, unique};
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

/// A worker of the setup's group, writing documents to the Elasticsearch API at `es_url`.
fn config(s: &Setup, es_url: &str, metrics_port: u16) -> TestConfig {
    TestConfig::for_group(&s.group)
        .binding(
            Binding::topic(&s.topic)
                .plugin(&s.router)
                .measurements(["env_"])
                .indices([format!("svc{}-", s.uid)]),
        )
        .influxdb(&s.db)
        .elasticsearch_urls([es_url])
        .dead_letter(&s.dlq)
        .metrics_port(metrics_port)
        .registry_cache(s.cache.path())
}

fn log(uid: &str, id: u64) -> (String, Vec<u8>) {
    (
        format!("k{id}"),
        json!({"type": "log", "service": format!("svc{uid}"), "rid": id})
            .to_string()
            .into_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_joining_and_leaving_mid_stream_lose_nothing() -> Result<()> {
    let s = setup().await?;
    let worker = |port| {
        config(&s, &http_url("elasticsearch"), port)
            .batching(|b| b.set("linger", "50ms"))
            .start()
    };
    let (stop1, w1) = worker(free_port())?;

    // Records keep arriving while the group changes.
    let topic = s.topic.clone();
    let producer = tokio::spawn(async move {
        for chunk in 0..40u64 {
            let batch: Vec<_> = (chunk * 100..chunk * 100 + 100).map(metric_record).collect();
            produce(&topic, &batch).await?;
            // Pacing, the point of the test: the stream goes on for a while (40 chunks) as the group changes.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        anyhow::Ok(())
    });
    // 1 -> 3 -> 1 workers under load: two more join once the stream is under way, one after the other (each
    // rebalance completes before the next begins, as a rolling scale-up does), then leave again, gracefully.
    wait_points(&s.db, 300, Duration::from_secs(60), "the stream to be under way").await;
    let assigned = |port: u16| async move {
        eventually(
            Duration::from_secs(120),
            "a joining worker to be assigned partitions",
            || async {
                metric_value(port, "millrace_assigned_partitions ")
                    .await
                    .filter(|n| *n > 0.0)
            },
        )
        .await;
    };
    let port2 = free_port();
    let (stop2, w2) = worker(port2)?;
    assigned(port2).await;
    let port3 = free_port();
    let (stop3, w3) = worker(port3)?;
    assigned(port3).await;
    stop3.send(()).ok();
    w3.await??;
    stop2.send(()).ok();
    w2.await??;
    producer.await??;

    let want: BTreeSet<u64> = (0..4000).collect();
    let got = wait_points(&s.db, 4000, Duration::from_secs(120), "all 4000 points").await;
    assert_eq!(got, want);
    stop1.send(()).ok();
    w1.await??;
    assert_eq!(committed(&s.group, &[&s.topic])?.get(&s.topic), Some(&4000));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_paused_and_resumed_by_back_pressure_take_every_record_once() -> Result<()> {
    let s = setup().await?;
    // A backlog before the worker starts, larger than the smallest memory budget lets one binding hold in
    // flight (a quarter of a quarter of 64 MiB: ~12,000 of these records), and few records in flight per
    // partition: the partitions pause and resume over and over with records still waiting in the topic. Each
    // resume goes on from one past the last record taken (the worker seeks there to wake librdkafka's
    // fetcher): a wrong position would skip records (missing points, offsets short) or take some twice (more
    // records taken than produced).
    let n = 60_000u64;
    produce(&s.topic, &(0..n).map(metric_record).collect::<Vec<_>>()).await?;
    let port = free_port();
    let (stop, worker) = config(&s, &http_url("elasticsearch"), port)
        .batching(|b| b.set("linger", "20ms"))
        .pipeline(|p| {
            p.set("max_in_flight_per_partition", 30)
                .set("memory_budget", "64MiB")
        })
        .start()?;
    let got = wait_points(
        &s.db,
        n as usize,
        Duration::from_secs(120),
        "every record's point",
    )
    .await;
    assert_eq!(got, (0..n).collect::<BTreeSet<u64>>(), "every record landed");
    let taken = eventually(Duration::from_secs(30), "the records taken counted", || async {
        let text = metrics_text(port).await;
        let taken = metric_sum(&text, "millrace_records_in_total", &[]);
        (taken >= n as f64).then_some((taken, metric_sum(&text, "millrace_pauses_total", &[])))
    })
    .await;
    assert_eq!(taken.0, n as f64, "each record taken once");
    assert!(
        taken.1 >= 10.0,
        "partitions paused and resumed many times: {} pauses",
        taken.1
    );
    stop.send(()).ok();
    worker.await??;
    assert_eq!(committed(&s.group, &[&s.topic])?.get(&s.topic), Some(&(n as i64)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_down_for_60_seconds_pauses_consumption_and_loses_nothing() -> Result<()> {
    let s = setup().await?;
    let proxy = TcpProxy::start(&addr("elasticsearch")).await?;
    let port = free_port();
    let (stop, worker) = config(&s, &format!("http://{}", proxy.addr), port)
        .batching(|b| {
            b.set("linger", "50ms")
                .set("max_records", 50)
                .set("retry_max_backoff", "1s")
        })
        .pipeline(|p| p.set("max_in_flight_per_partition", 40))
        .start()?;
    let index = format!("svc{}-logs-daily", s.uid);

    produce(&s.topic, &(0..200).map(|i| log(&s.uid, i)).collect::<Vec<_>>()).await?;
    wait_docs(&index, 200, Duration::from_secs(60), "the first 200 documents").await;

    assert_eq!(probe(port, "/readyz").await, 200, "ready while the store answers");
    proxy.set_down(true);
    produce(&s.topic, &(200..1200).map(|i| log(&s.uid, i)).collect::<Vec<_>>()).await?;
    let outage = std::time::Instant::now();
    let mut saw_pause = false;
    while outage.elapsed() < Duration::from_secs(60) {
        // The outage lasting 60 seconds is the point of the test; it is watched every 2 seconds.
        tokio::time::sleep(Duration::from_secs(2)).await;
        saw_pause |= metric_value(port, "millrace_paused_partitions")
            .await
            .unwrap_or(0.0)
            > 0.0;
        // Never a committed offset past a record that is not in the store.
        // Default ids: `<topic>-<topic id>-<partition>-<offset>-<output>` (the topic id may hold `-`).
        let prefix = format!("{}-", s.topic);
        let landed: BTreeSet<(i32, i64)> = es_docs(&index)
            .await?
            .into_iter()
            .filter_map(|(_, id)| {
                let mut parts = id.strip_prefix(&prefix)?.rsplit('-').skip(1);
                let offset = parts.next()?.parse().ok()?;
                Some((parts.next()?.parse().ok()?, offset))
            })
            .collect();
        for (partition, o) in committed_partitions(&s.group, &s.topic)? {
            for off in 0..o {
                assert!(
                    landed.contains(&(partition, off)),
                    "offset {o} committed on partition {partition} but record {off} is not in the store"
                );
            }
        }
    }
    assert!(saw_pause, "consumption paused while the store was down");
    assert_eq!(
        probe(port, "/readyz").await,
        503,
        "not ready while a store is unreachable"
    );
    assert_eq!(probe(port, "/healthz").await, 200, "alive all the same");
    assert!(
        es_docs(&index).await?.len() < 1200,
        "the store really was unreachable"
    );

    proxy.set_down(false);
    let docs = wait_docs(
        &index,
        1200,
        Duration::from_secs(90),
        "all 1200 documents after the outage",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing() -> Result<()> {
    let s = setup().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("worker.toml");
    config(&s, &http_url("elasticsearch"), 0)
        .batching(|b| b.set("linger", "300ms").set("max_records", 200))
        .write(&file)?;
    let index = format!("svc{}-logs-daily", s.uid);
    let records: Vec<_> = (0..3000)
        .map(|i| {
            if i % 2 == 0 {
                log(&s.uid, i)
            } else {
                metric_record(i)
            }
        })
        .collect();
    produce(&s.topic, &records).await?;

    let mut first = spawn_worker_process(&file)?;
    wait_docs(
        &index,
        100,
        Duration::from_secs(60),
        "the first worker to write some documents",
    )
    .await;
    first.kill()?; // SIGKILL: no drain, no commit
    first.wait()?;
    assert!(es_docs(&index).await?.len() < 1500, "killed before the end");

    let second = spawn_worker_process(&file)?;
    let docs = wait_docs(
        &index,
        1500,
        Duration::from_secs(120),
        "all documents after the restart",
    )
    .await;
    let ids: BTreeSet<u64> = docs.iter().map(|(rid, _)| *rid).collect();
    assert_eq!(ids, (0..3000).step_by(2).collect::<BTreeSet<u64>>());
    assert_eq!(
        docs.len(),
        1500,
        "redelivered records overwrote their documents (deterministic ids)"
    );
    let points = wait_points(&s.db, 1500, Duration::from_secs(60), "all points").await;
    assert_eq!(points, (1..3000).step_by(2).collect::<BTreeSet<u64>>());

    // SIGTERM: the worker drains and commits before it leaves.
    let status = terminate(second).await?;
    assert!(status.success(), "graceful exit on SIGTERM: {status}");
    assert_eq!(committed(&s.group, &[&s.topic])?.get(&s.topic), Some(&3000));
    Ok(())
}
