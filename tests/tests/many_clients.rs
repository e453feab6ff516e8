//! Issue 12 end to end, against the real broker, registry and stores: one worker fleet shared by many clients.
//!
//! - Hundreds of clients, each with its own topic and its own plugin digest, on one worker with the default
//!   engine (256 instance slots, one lane per core): more bindings than slots. Every record of every client
//!   lands in both stores, none is dead-lettered (before lanes released idle instances, half of them went to
//!   the dead-letter topic as `instantiate`), and the worker reports the instances it released to make room.
//! - A noisy neighbour on a single lane: a backlog of records that each run to their fuel limit does not hold
//!   back a quiet client's records (fair scheduling per binding): the quiet client's outputs are all in the
//!   store while the noisy backlog is still being worked off, and in the end every noisy record is
//!   dead-lettered as `out_of_fuel` and every quiet record landed.
//! - A worker with the fewest instance slots it accepts and more bindings than slots: nothing is
//!   dead-lettered, instances are released and recreated instead.
//! - A worker whose memory budget holds fewer compiled plugins than it has bindings: the least recently used
//!   plugins leave memory, and a second wave of records for every client brings them back from the disk
//!   cache; nothing is dead-lettered.
//!
//! `millrace_resource_waits_total` (a record waiting because the engine itself had no slot free) is reported,
//! not asserted: the lanes' shares add up to the engine's slots minus those kept for plugin loads, so these
//! runs release instances (`millrace_instance_evictions_total`) and are not expected to wait.
//!
//! Every client gets its own digest by appending a WebAssembly custom section with a unique payload to the
//! same example module, pushed in-process ([`millrace_tests::clients`], shared with the many-clients
//! benchmark `tests/examples/bench_many.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use millrace_tests::clients::{Batch, create_topics, produce_to, push_modules, with_custom_section};
use millrace_tests::config::{Binding, TestConfig};
use millrace_tests::e2e::{
    committed, create_db, dead_letters, es_hits, influx_query, metric_record, metric_sum, metrics_text,
    wait_points,
};
use millrace_tests::{addr, dist, eventually, free_port, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;

/// Names, database, port and cache of one test, none shared with another test or an earlier run.
/// The workers of these tests run one at a time: each test measures what one worker does with the machine's two
/// cores (fairness, instance slots), which a second worker of the same process would distort.
static ONE_WORKER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Fleet {
    uid: String,
    /// The test's repository in the stack's registry.
    repo: String,
    db: String,
    group: String,
    dlq: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl Fleet {
    async fn new(prefix: &str) -> Result<Self> {
        let uid = unique(prefix).replace('-', "");
        let db = format!("db_{uid}");
        create_db(&db).await?;
        Ok(Self {
            repo: format!("{}/many/{uid}", addr("registry")),
            group: format!("group-{uid}"),
            dlq: format!("dlq-{uid}"),
            db,
            uid,
            port: free_port(),
            dir: tempfile::tempdir()?,
        })
    }

    /// A worker of this test's group: the stack's stores, dead-letter topic, metrics on the test's port.
    /// Everything else keeps the worker's defaults.
    fn worker(&self) -> TestConfig {
        TestConfig::for_group(&self.group)
            .influxdb(&self.db)
            .elasticsearch()
            .dead_letter(&self.dlq)
            .metrics_port(self.port)
            .registry_cache(&self.dir.path().join("cache"))
    }

    async fn metrics(&self) -> String {
        metrics_text(self.port).await
    }
}

fn sha256(bytes: &[u8]) -> String {
    millrace_plugin_registry::sha256(bytes)
}

/// Records written to a topic so far (the sum of its partitions' high watermarks); 0 while it does not exist.
fn topic_size(topic: &str) -> Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .set("group.id", unique("watermarks"))
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut size = 0;
    for t in metadata.topics() {
        if t.error().is_some() {
            continue;
        }
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            size += high - low;
        }
    }
    Ok(size)
}

/// Whether the worker's /metrics has a sample of `name` for this binding.
fn has_series(text: &str, name: &str, binding: &str) -> bool {
    let label = format!("binding=\"{binding}\"");
    text.lines()
        .any(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
}

/// Points of `kafka_records` per `topic` tag in the database.
async fn influx_counts_per_topic(db: &str) -> Result<BTreeMap<String, u64>> {
    let v = influx_query(
        db,
        "SELECT count(\"bytes\") FROM kafka_records GROUP BY \"topic\"",
    )
    .await?;
    Ok(v["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["tags"]["topic"].as_str()?.to_string(),
                s["values"][0][1].as_u64()?,
            ))
        })
        .collect())
}

/// Documents per `topic` in the indices matching `pattern`.
async fn es_counts_per_topic(pattern: &str) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for hit in es_hits(pattern).await? {
        if let Some(topic) = hit["_source"]["topic"].as_str() {
            *counts.entry(topic.to_string()).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// Waits up to 120 s until the counts per topic that `counts` reads from a store add up to `want`. A timeout
/// fails with what the store held and the worker's sink and in-flight metrics (those not 0), so that a run
/// whose accepted records do not land says where their outputs stopped (unwritten, retried, a sink down).
async fn landed<F, Fut>(f: &Fleet, what: &str, want: u64, mut counts: F) -> BTreeMap<String, u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<BTreeMap<String, u64>>>,
{
    let timeout = Duration::from_secs(120);
    let deadline = Instant::now() + timeout;
    loop {
        let read = counts().await;
        if let Ok(c) = &read
            && c.values().sum::<u64>() >= want
        {
            return c.clone();
        }
        if Instant::now() >= deadline {
            let held = match &read {
                Ok(c) => {
                    let mut fewest: Vec<_> = c.iter().collect();
                    fewest.sort_by_key(|(_, n)| **n);
                    fewest.truncate(5);
                    format!(
                        "{} of {want} in {} topics, the fewest: {fewest:?}",
                        c.values().sum::<u64>(),
                        c.len()
                    )
                }
                Err(e) => format!("the store could not be read: {e:#}"),
            };
            let text = f.metrics().await;
            let worker: Vec<&str> = text
                .lines()
                .filter(|l| {
                    [
                        "millrace_sink_",
                        "millrace_in_flight_",
                        "millrace_dead_letters_total",
                    ]
                    .iter()
                    .any(|p| l.starts_with(p))
                        && !l.contains("_bucket{")
                        && !l.ends_with(" 0")
                })
                .collect();
            panic!(
                "timed out after {timeout:?} waiting for {what}: {held}; the worker's metrics: {worker:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one many-clients run observed.
#[derive(Debug)]
struct Figures {
    evictions: BTreeMap<String, f64>,
    waits: f64,
    /// The worker's /metrics once every record of the first wave ran.
    first_wave: String,
    /// The worker's /metrics once every record ran.
    metrics: String,
}

/// `clients` clients, each with its own topic of `partitions` partitions, its own digest of the `c_envelope`
/// example plugin (a point to InfluxDB and a document to Elasticsearch per record) and `records` records per
/// wave, on one worker configured by `tune` on top of the defaults. The first wave is in the topics before the
/// worker starts; each later wave is produced once every record of the waves before it ran, so every client
/// has records again after the worker settled. Asserts exact accounting per client and zero dead letters;
/// returns the worker's resource figures.
async fn many_clients(
    prefix: &str,
    clients: usize,
    partitions: i32,
    records: usize,
    waves: usize,
    tune: impl FnOnce(TestConfig) -> TestConfig,
) -> Result<Figures> {
    let started = Instant::now();
    let f = Fleet::new(prefix).await?;
    // c_envelope rather than seed_router: a debug build compiles it about three times faster, and the worker
    // compiles each of the distinct modules at startup (one client = one digest = one compilation).
    let base = std::fs::read(dist("c_envelope"))?;
    let modules: Vec<(String, Vec<u8>)> = (0..clients)
        .map(|i| {
            let tag = format!("c{i:03}");
            let wasm = with_custom_section(
                &base,
                "millrace-test-client",
                format!("{}-{tag}", f.uid).as_bytes(),
            );
            (tag, wasm)
        })
        .collect();
    let digests = push_modules(&f.repo, &modules).await?;
    let distinct: BTreeSet<&String> = digests.iter().collect();
    assert_eq!(distinct.len(), clients, "every client has its own digest");
    let pushed = started.elapsed();

    let topics: Vec<String> = (0..clients).map(|i| format!("{}-c{i:03}", f.uid)).collect();
    create_topics(&addr("kafka"), &topics, partitions).await?;
    // Wave `w`'s records: `records` per client, ids distinct across clients and waves.
    let wave = |w: usize| -> Vec<Batch> {
        topics
            .iter()
            .enumerate()
            .map(|(c, topic)| {
                let recs = (0..records)
                    .map(|r| {
                        let rid = (w * clients + c) * records + r;
                        (
                            format!("k{rid}"),
                            json!({"client": c, "rid": rid}).to_string().into_bytes(),
                        )
                    })
                    .collect();
                (topic.clone(), recs)
            })
            .collect()
    };
    produce_to(&addr("kafka"), &wave(0)).await?;
    let produced = started.elapsed();

    let mut config = tune(f.worker());
    for (i, (topic, digest)) in topics.iter().zip(&digests).enumerate() {
        config = config.binding(
            Binding::topic(topic)
                .name(&format!("c{i:03}"))
                .plugin(&format!("{}@{digest}", f.repo))
                .measurements(["kafka_records"])
                .indices(["envelope-"]),
        );
    }
    let (stop_tx, worker) = config.start()?;
    // /metrics answers once every binding's plugin loaded (pulled, verified, compiled).
    eventually(
        Duration::from_secs(600),
        "the worker to load every plugin",
        || async { (!f.metrics().await.is_empty()).then_some(()) },
    )
    .await;
    let loaded = started.elapsed();

    // Every record of each wave ran, and was accepted or dead-lettered (a worker that dead-letters fails here,
    // with the kinds, rather than by waiting for outputs that never come).
    let mut first_wave = String::new();
    let mut text = String::new();
    for w in 0..waves {
        if w > 0 {
            produce_to(&addr("kafka"), &wave(w)).await?;
        }
        let ran = (clients * records * (w + 1)) as f64;
        text = eventually(
            Duration::from_secs(300),
            "every record accepted or dead-lettered",
            || async {
                let text = f.metrics().await;
                let accepted = metric_sum(
                    &text,
                    "millrace_records_processed_total",
                    &["outcome=\"accepted\""],
                );
                let dead = metric_sum(&text, "millrace_dead_letters_total", &[]);
                (accepted + dead >= ran).then_some(text)
            },
        )
        .await;
        if w == 0 {
            first_wave = text.clone();
        }
    }
    let records = records * waves;
    let total = (clients * records) as f64;
    let processed = |outcome: &str| metric_sum(&text, "millrace_records_processed_total", &[outcome]);
    let (accepted, rejected, failed) = (
        processed("outcome=\"accepted\""),
        processed("outcome=\"rejected\""),
        processed("outcome=\"failed\""),
    );
    let dead = metric_sum(&text, "millrace_dead_letters_total", &[]);
    let waits = metric_sum(&text, "millrace_resource_waits_total", &[]);
    let evictions: BTreeMap<String, f64> = ["lane_share", "memory", "no_capacity"]
        .iter()
        .map(|r| {
            let label = format!("reason=\"{r}\"");
            (
                r.to_string(),
                metric_sum(&text, "millrace_instance_evictions_total", &[&label]),
            )
        })
        .collect();
    let nonzero = |prefix: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix) && !l.ends_with(" 0"))
            .map(str::to_string)
            .collect()
    };
    let dead_kinds = nonzero("millrace_dead_letters_total{");
    println!(
        "{clients} clients x {partitions} partitions x {records} records: accepted {accepted}, rejected \
         {rejected}, failed {failed}, dead letters {dead} {dead_kinds:?}; millrace_resource_waits_total {waits}, \
         millrace_instance_evictions_total {evictions:?}"
    );
    assert_eq!(
        (rejected, failed, dead),
        (0.0, 0.0, 0.0),
        "nothing failed or was dead-lettered: {dead_kinds:?}, plugin errors (first 5) {:?}",
        nonzero("millrace_plugin_errors_total{")
            .iter()
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(accepted, total, "every record ran once, accepted");

    let want: BTreeMap<String, u64> = topics.iter().map(|t| (t.clone(), records as u64)).collect();
    let points = landed(
        &f,
        "every client's points in InfluxDB",
        (clients * records) as u64,
        || influx_counts_per_topic(&f.db),
    )
    .await;
    assert_eq!(points, want, "points per client");
    let pattern = format!("envelope-{}-*", f.uid);
    let docs = landed(
        &f,
        "every client's documents in Elasticsearch",
        (clients * records) as u64,
        || es_counts_per_topic(&pattern),
    )
    .await;
    assert_eq!(docs, want, "documents per client");
    let landed = started.elapsed();

    stop_tx.send(()).ok();
    worker.await??;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let offsets = committed(&f.group, &topic_refs)?;
    let want_offsets: BTreeMap<String, i64> = topics.iter().map(|t| (t.clone(), records as i64)).collect();
    assert_eq!(offsets, want_offsets, "every record committed");
    assert_eq!(topic_size(&f.dlq)?, 0, "nothing in the dead-letter topic");
    println!(
        "timings: pushed {clients} modules {pushed:?}, topics and records {:?}, worker loaded the plugins {:?}, \
         everything landed {:?}, total {:?}",
        produced - pushed,
        loaded - produced,
        landed - loaded,
        started.elapsed()
    );
    Ok(Figures {
        evictions,
        waits,
        first_wave,
        metrics: text,
    })
}

/// 300 clients, 3 partitions each, on one worker with the default engine and lanes: more bindings than the
/// 256 instance slots, so lanes release idle instances; no record is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_clients_with_their_own_plugins_share_one_worker_without_dead_letters() -> Result<()> {
    let _one_worker = ONE_WORKER_AT_A_TIME.lock().await;
    // 2 GiB: the default budget of a worker without a container limit, whatever limit the test machine has
    // (256 instance slots).
    let figures = many_clients("many", 300, 3, 10, 1, |c| {
        c.pipeline(|p| p.set("memory_budget", "2GiB"))
    })
    .await?;
    let evictions: f64 = figures.evictions.values().sum();
    println!(
        "300 clients, default engine: {evictions} instances released {:?}, {} waits for a slot",
        figures.evictions, figures.waits
    );
    assert!(
        evictions > 0.0,
        "300 bindings on 256 slots must release instances: {figures:?}"
    );
    Ok(())
}

/// The fewest slots the worker accepts (lanes + 8: the two lanes get one live instance each) and 30 bindings:
/// every record still lands, by releasing and recreating instances, never by dead-lettering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fewest_instance_slots_for_many_bindings_dead_letter_nothing() -> Result<()> {
    let _one_worker = ONE_WORKER_AT_A_TIME.lock().await;
    let figures = many_clients("scarce", 30, 3, 10, 1, |c| {
        c.pipeline(|p| p.set("lanes", 2).set("max_instances", 10))
    })
    .await?;
    let evictions: f64 = figures.evictions.values().sum();
    println!(
        "30 clients, 10 slots: {evictions} instances released {:?}, {} waits for a slot",
        figures.evictions, figures.waits
    );
    assert!(evictions > 0.0, "30 bindings on 2 live slots: {figures:?}");
    Ok(())
}

/// The smallest memory budget (64 MiB: 16 MiB for compiled plugins) and 160 clients with their own digests
/// (~131 KiB compiled each, 20 MiB in all): the least recently used plugins leave memory while the others load.
/// A second wave of records, produced once the first one ran, gives every client records again: each plugin
/// that was out of memory then comes back from the disk cache. Every record lands, nothing is dead-lettered,
/// and what stays resident fits the budget.
///
/// Whether a first-wave record finds its plugin unloaded depends on timing (plugins load while the first
/// clients' records already run), so the reloads are asserted on the second wave, where they are certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compiled_plugins_of_idle_clients_leave_memory_and_come_back_for_their_records() -> Result<()> {
    let _one_worker = ONE_WORKER_AT_A_TIME.lock().await;
    let figures = many_clients("resident", 160, 2, 5, 2, |c| {
        c.pipeline(|p| p.set("memory_budget", "64MiB"))
    })
    .await?;
    let resident_count = |text: &str| metric_sum(text, "millrace_compiled_plugins_resident", &[]);
    let first = &figures.first_wave;
    let first_unloads = metric_sum(first, "millrace_compiled_plugin_unloads_total", &[]);
    let out_of_memory = 160.0 - resident_count(first);
    let text = &figures.metrics;
    let unloads = metric_sum(text, "millrace_compiled_plugin_unloads_total", &[]);
    let reloaded = metric_sum(
        text,
        "millrace_compiled_plugin_reloads_total",
        &["outcome=\"ok\""],
    );
    let failed = metric_sum(
        text,
        "millrace_compiled_plugin_reloads_total",
        &["outcome=\"error\""],
    );
    let resident = metric_sum(text, "millrace_compiled_plugins_resident_bytes", &[]);
    let count = resident_count(text);
    println!(
        "160 clients, 64 MiB budget: after the first wave {first_unloads} plugins unloaded, {out_of_memory} out \
         of memory; in the end {unloads} unloaded, {reloaded} loaded again ({failed} failed), {count} resident \
         in {resident} bytes"
    );
    assert!(
        first_unloads > 0.0 && out_of_memory > 0.0,
        "20 MiB of plugins in a 16 MiB share: some must leave memory"
    );
    assert!(
        reloaded >= out_of_memory,
        "every plugin out of memory after the first wave is loaded again for its second-wave records: \
         {reloaded} reloads for {out_of_memory}"
    );
    assert_eq!(failed, 0.0, "the disk cache had every plugin");
    assert!(
        resident <= (16 << 20) as f64 && count < 160.0,
        "resident plugins within the budget: {count} in {resident} bytes"
    );
    Ok(())
}

/// One lane, a noisy client whose every record runs to its fuel limit, a quiet client: the quiet client's
/// records are served between the noisy client's, not after its backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_noisy_neighbour_does_not_hold_back_a_quiet_client_on_one_lane() -> Result<()> {
    let _one_worker = ONE_WORKER_AT_A_TIME.lock().await;
    const NOISY: u64 = 2000;
    const QUIET: u64 = 20;
    let f = Fleet::new("noisy").await?;
    let modules = vec![
        ("hostile".to_string(), std::fs::read(dist("hostile"))?),
        ("router".to_string(), std::fs::read(dist("seed_router"))?),
    ];
    let digests = push_modules(&f.repo, &modules).await?;
    let (noisy_topic, quiet_topic) = (format!("{}-noisy", f.uid), format!("{}-quiet", f.uid));
    create_topics(&addr("kafka"), &[noisy_topic.clone(), quiet_topic.clone()], 3).await?;
    let noisy_records: Vec<(String, Vec<u8>)> = (0..NOISY)
        .map(|id| {
            (
                format!("k{id}"),
                json!({"do": "loop", "rid": id}).to_string().into_bytes(),
            )
        })
        .collect();
    produce_to(&addr("kafka"), &[(noisy_topic.clone(), noisy_records)]).await?;

    let config = f
        .worker()
        .pipeline(|p| p.set("lanes", 1))
        .binding(
            Binding::topic(&noisy_topic)
                .name("noisy")
                .plugin(&format!("{}@{}", f.repo, digests[0]))
                .measurements(["ok"])
                // The default fuel limit, a few ms of plugin time per record: the backlog takes seconds to work
                // off. The wall-clock deadline is generous so that the fuel limit, not a lane thread preempted
                // on a busy machine for 100 ms, is what stops every record.
                .limits(|l| l.set("fuel", 50_000_000).set("timeout", "5s")),
        )
        .binding(
            Binding::topic(&quiet_topic)
                .name("quiet")
                .plugin(&format!("{}@{}", f.repo, digests[1]))
                .measurements(["env_"]),
        );
    let (stop_tx, worker) = config.start()?;
    let noisy_done = |text: &str| {
        metric_sum(
            text,
            "millrace_records_processed_total",
            &["binding=\"noisy\"", "outcome=\"failed\""],
        )
    };
    // The worker took the backlog and is working it off.
    eventually(
        Duration::from_secs(120),
        "the noisy client's first failures",
        || async {
            let text = f.metrics().await;
            let fuel = metric_sum(
                &text,
                "millrace_plugin_errors_total",
                &["binding=\"noisy\"", "kind=\"out_of_fuel\""],
            );
            (fuel > 0.0).then_some(())
        },
    )
    .await;
    let at_quiet_start = noisy_done(&f.metrics().await);
    let quiet: Vec<(String, Vec<u8>)> = (0..QUIET).map(|i| metric_record(10_000 + i)).collect();
    produce_to(&addr("kafka"), &[(quiet_topic.clone(), quiet)]).await?;
    let quiet_sent = Instant::now();

    let points = wait_points(
        &f.db,
        QUIET as usize,
        Duration::from_secs(120),
        "the quiet client's points",
    )
    .await;
    // Read after the quiet client's last point was seen: counters only grow, so the backlog was at least this
    // large when that point landed.
    let text = f.metrics().await;
    let at_quiet_done = noisy_done(&text);
    let noisy_queued = metric_sum(&text, "millrace_binding_queued_records", &["binding=\"noisy\""]);
    let noisy_kinds: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("millrace_plugin_errors_total{binding=\"noisy\"") && !l.ends_with(" 0"))
        .collect();
    println!(
        "noisy records processed: {at_quiet_start} when the quiet client produced, {at_quiet_done} when its \
         {QUIET} points were all in InfluxDB, {:?} after they were produced ({noisy_queued} noisy records \
         still queued in the lane); noisy errors: {noisy_kinds:?}",
        quiet_sent.elapsed()
    );
    assert_eq!(points, (10_000..10_000 + QUIET).collect::<BTreeSet<u64>>());
    assert!(
        at_quiet_done < NOISY as f64,
        "the quiet client waited for the whole noisy backlog ({at_quiet_done} of {NOISY} processed)"
    );
    assert!(noisy_queued > 0.0, "the noisy client still had records waiting");

    // In the end every noisy record failed on its fuel limit and went to the dead-letter topic.
    let dead = dead_letters(&f.dlq, NOISY as usize).await?;
    assert_eq!(dead.len(), NOISY as usize);
    let kinds: BTreeMap<&str, usize> = dead.values().fold(BTreeMap::new(), |mut m, (kind, ..)| {
        *m.entry(kind.as_str()).or_insert(0) += 1;
        m
    });
    let odd: Vec<_> = dead
        .iter()
        .filter(|(_, (kind, ..))| kind != "out_of_fuel")
        .take(10)
        .collect();
    assert_eq!(
        kinds,
        BTreeMap::from([("out_of_fuel", NOISY as usize)]),
        "dead letters by kind; others than out_of_fuel: {odd:?}"
    );
    assert!(dead.values().all(|(_, topic, ..)| *topic == noisy_topic));
    assert_eq!(
        dead.keys().copied().collect::<BTreeSet<u64>>(),
        (0..NOISY).collect()
    );

    let text = f.metrics().await;
    for binding in ["noisy", "quiet"] {
        for name in [
            "millrace_scheduling_delay_seconds_count",
            "millrace_binding_queued_records",
        ] {
            assert!(has_series(&text, name, binding), "{name} of {binding}");
        }
        let label = format!("binding=\"{binding}\"");
        let delay = metric_sum(&text, "millrace_scheduling_delay_seconds_sum", &[&label])
            / metric_sum(&text, "millrace_scheduling_delay_seconds_count", &[&label]);
        println!("{binding}: mean scheduling delay {delay:.4} s");
        assert_eq!(
            metric_sum(&text, "millrace_binding_queued_records", &[&label]),
            0.0,
            "{binding}: nothing left queued"
        );
    }
    assert_eq!(noisy_done(&text), NOISY as f64);

    stop_tx.send(()).ok();
    worker.await??;
    let offsets = committed(&f.group, &[&noisy_topic, &quiet_topic])?;
    assert_eq!(
        offsets,
        BTreeMap::from([(noisy_topic, NOISY as i64), (quiet_topic, QUIET as i64)])
    );
    Ok(())
}

/// A client over its CPU budget is throttled: its partitions pause (counted, with the time) instead of it
/// keeping a lane busy, and its records are all processed in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_over_its_cpu_budget_is_throttled_and_still_processed() -> Result<()> {
    let _one_worker = ONE_WORKER_AT_A_TIME.lock().await;
    const N: u64 = 30;
    /// Cores: 20 ms of plugin time per second, with a burst of 20 ms.
    const BUDGET: f64 = 0.02;
    let f = Fleet::new("budget").await?;
    let digests = push_modules(
        &f.repo,
        &[("hostile".to_string(), std::fs::read(dist("hostile"))?)],
    )
    .await?;
    let topic = format!("{}-greedy", f.uid);
    create_topics(&addr("kafka"), std::slice::from_ref(&topic), 1).await?;
    let records: Vec<(String, Vec<u8>)> = (0..N)
        .map(|id| {
            (
                format!("k{id}"),
                json!({"do": "loop", "rid": id}).to_string().into_bytes(),
            )
        })
        .collect();
    produce_to(&addr("kafka"), &[(topic.clone(), records)]).await?;
    let (stop_tx, worker) = f
        .worker()
        .binding(
            Binding::topic(&topic)
                .name("greedy")
                .plugin(&format!("{}@{}", f.repo, digests[0]))
                .measurements(["ok"])
                .set("cpu_budget", BUDGET)
                .limits(|l| l.set("fuel", 50_000_000).set("timeout", "5s")),
        )
        .start()?;
    let started = Instant::now();
    let failed = |text: &str| {
        metric_sum(
            text,
            "millrace_records_processed_total",
            &["binding=\"greedy\"", "outcome=\"failed\""],
        )
    };
    let text = eventually(Duration::from_secs(180), "all records processed", || async {
        let text = f.metrics().await;
        (failed(&text) >= N as f64).then_some(text)
    })
    .await;
    let took = started.elapsed().as_secs_f64();
    let throttled = metric_sum(
        &text,
        "millrace_binding_throttled_seconds_total",
        &["binding=\"greedy\""],
    );
    let pauses = metric_sum(&text, "millrace_pauses_total", &["reason=\"budget\""]);
    let plugin_seconds = metric_sum(
        &text,
        "millrace_plugin_duration_seconds_sum",
        &["binding=\"greedy\""],
    );
    eprintln!(
        "greedy client: {N} records, {plugin_seconds:.2} s of plugin time in {took:.1} s, throttled {throttled:.2} s, {pauses} pauses"
    );
    // The budget bounds the rate from above, so the run cannot be faster than this (a slower machine only
    // makes it longer): plugin time beyond the burst, at the budget's rate, less one record's worth.
    let floor = (plugin_seconds - BUDGET - plugin_seconds / N as f64) / BUDGET;
    assert!(
        took >= floor * 0.9,
        "{plugin_seconds:.2} s of plugin time took {took:.1} s: faster than a {BUDGET}-core budget allows ({floor:.1} s)"
    );
    assert!(pauses > 0.0, "its partition paused for the budget");
    assert!(throttled > 0.0, "the throttled time is counted");
    assert_eq!(
        failed(&text),
        N as f64,
        "every record processed (out of fuel), none lost"
    );
    stop_tx.send(()).ok();
    worker.await??;
    Ok(())
}

#[test]
fn a_custom_section_changes_the_digest_not_the_module() -> Result<()> {
    let base = std::fs::read(dist("c_envelope"))?;
    let a = with_custom_section(&base, "millrace-test-client", b"a");
    let b = with_custom_section(&base, "millrace-test-client", &[7u8; 300]);
    assert_ne!(sha256(&a), sha256(&b));
    // The section: id 0, size (LEB128), name length, name, payload.
    assert_eq!(&a[base.len()..base.len() + 3], &[0, 22, 20]);
    assert_eq!(b[base.len() + 1..base.len() + 3], [0xc1, 0x02]); // 321 = 0x41 | 0x80, 0x02
    let runtime = millrace_runtime::Runtime::new(millrace_runtime::EngineConfig::default())?;
    for module in [&a, &b] {
        runtime
            .compile(module)
            .map(|_| ())
            .context("the module with a custom section still loads")?;
    }
    Ok(())
}
