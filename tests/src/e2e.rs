//! Helpers of the worker's end-to-end tests: produce client records, read back what landed in InfluxDB,
//! VictoriaMetrics, Elasticsearch and the dead-letter topic (or wait until it did), read a group's committed
//! offsets, scrape a worker's `/metrics`, start a worker in this process or as a `millrace` process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::{addr, eventually, http_url, repo_root, unique};

pub async fn create_db(db: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let url = format!("{}/query", http_url("influxdb"));
    let r = client
        .post(&url)
        .query(&[("q", format!("CREATE DATABASE \"{db}\""))])
        .send()
        .await?;
    let status = r.status();
    let body = r.text().await?;
    anyhow::ensure!(
        status.is_success() && !body.contains("\"error\""),
        "CREATE DATABASE {db}: {status} {body}"
    );
    // InfluxDB answers before every service sees the new database; wait until it is listed.
    for _ in 0..100 {
        let listed = client
            .get(&url)
            .query(&[("q", "SHOW DATABASES")])
            .send()
            .await?
            .text()
            .await?;
        if listed.contains(&format!("[\"{db}\"]")) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("database {db} was created but is not listed by SHOW DATABASES")
}

pub async fn produce(topic: &str, records: &[(String, Vec<u8>)]) -> Result<()> {
    // Distinct timestamps: InfluxDB keeps one point per series and timestamp.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    produce_at(topic, records, base).await
}

/// Like [`produce`], with record `i` at the timestamp `base + i` (ms).
pub async fn produce_at(topic: &str, records: &[(String, Vec<u8>)], base: i64) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
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

/// Runs an InfluxQL query against an InfluxDB at `base` (`http(s)://host:port`) with `client`.
pub async fn influx_query_with(client: &reqwest::Client, base: &str, db: &str, q: &str) -> Result<Value> {
    Ok(client
        .get(format!("{base}/query"))
        .query(&[("db", db), ("q", q)])
        .send()
        .await?
        .json()
        .await?)
}

/// Runs an InfluxQL query against the stack's InfluxDB.
pub async fn influx_query(db: &str, q: &str) -> Result<Value> {
    influx_query_with(&reqwest::Client::new(), &http_url("influxdb"), db, q).await
}

/// Record ids from `source` tags and labels (`r<id>`); others are skipped.
pub fn source_ids<'a>(sources: impl IntoIterator<Item = &'a str>) -> BTreeSet<u64> {
    sources
        .into_iter()
        .filter_map(|s| s.strip_prefix('r')?.parse().ok())
        .collect()
}

/// Record ids of the points of `env_metrics` in database `db` of an InfluxDB at `base`.
pub async fn influx_ids_with(client: &reqwest::Client, base: &str, db: &str) -> Result<BTreeSet<u64>> {
    let v = influx_query_with(client, base, db, "SELECT \"source\", \"value\" FROM env_metrics").await?;
    Ok(source_ids(
        v["results"][0]["series"][0]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row[1].as_str()),
    ))
}

/// Record ids of the points in the database (the `source` tag is `r<id>`).
pub async fn influx_ids(db: &str) -> Result<BTreeSet<u64>> {
    influx_ids_with(&reqwest::Client::new(), &http_url("influxdb"), db).await
}

/// `SELECT count("<field>") FROM <measurement>` in the stack's InfluxDB; 0 while there is no such series.
pub async fn influx_count(db: &str, measurement: &str, field: &str) -> Result<u64> {
    let v = influx_query(db, &format!("SELECT count(\"{field}\") FROM {measurement}")).await?;
    Ok(v["results"][0]["series"][0]["values"][0][1].as_u64().unwrap_or(0))
}

/// Waits until the database holds at least `at_least` points of `env_metrics`; returns their record ids.
pub async fn wait_points(db: &str, at_least: usize, timeout: Duration, what: &str) -> BTreeSet<u64> {
    eventually(timeout, what, || async move {
        influx_ids(db).await.ok().filter(|ids| ids.len() >= at_least)
    })
    .await
}

/// The series of a VictoriaMetrics at `base` matching `selector`, as `/api/v1/export` gives them (one JSON
/// object a series: `metric` labels, `values`, `timestamps`).
pub async fn vm_export_with(client: &reqwest::Client, base: &str, selector: &str) -> Result<Vec<Value>> {
    let text = client
        .get(format!("{base}/api/v1/export"))
        .query(&[("match[]", selector)])
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Record ids from the `source` labels of the series of a VictoriaMetrics at `base` matching `selector`.
pub async fn vm_source_ids_with(
    client: &reqwest::Client,
    base: &str,
    selector: &str,
) -> Result<BTreeSet<u64>> {
    let series = vm_export_with(client, base, selector).await?;
    Ok(source_ids(
        series.iter().filter_map(|v| v["metric"]["source"].as_str()),
    ))
}

/// The hits of an index of the stack's Elasticsearch API (`_source`, `_id`, ...); none while it does not exist.
pub async fn es_hits(index: &str) -> Result<Vec<Value>> {
    let r = reqwest::Client::new()
        .post(format!("{}/{index}/_search", http_url("elasticsearch")))
        .header("Content-Type", "application/json")
        .body(json!({"size": 10000, "query": {"match_all": {}}}).to_string())
        .send()
        .await?;
    if r.status().as_u16() == 404 {
        return Ok(Vec::new());
    }
    let mut v: Value = r.json().await?;
    Ok(match v["hits"]["hits"].take() {
        Value::Array(hits) => hits,
        _ => Vec::new(),
    })
}

/// Record ids and document ids of an index.
pub async fn es_docs(index: &str) -> Result<Vec<(u64, String)>> {
    Ok(es_hits(index)
        .await?
        .iter()
        .filter_map(|h| Some((h["_source"]["rid"].as_u64()?, h["_id"].as_str()?.to_string())))
        .collect())
}

/// The `_count` of an index of the stack's Elasticsearch API.
pub async fn es_count(index: &str) -> Result<u64> {
    let v: Value = reqwest::Client::new()
        .get(format!("{}/{index}/_count", http_url("elasticsearch")))
        .send()
        .await?
        .json()
        .await?;
    v["count"]
        .as_u64()
        .with_context(|| format!("no count for {index}: {v}"))
}

/// Waits until the index holds at least `at_least` documents; returns their record and document ids.
pub async fn wait_docs(index: &str, at_least: usize, timeout: Duration, what: &str) -> Vec<(u64, String)> {
    eventually(timeout, what, || async move {
        es_docs(index).await.ok().filter(|d| d.len() >= at_least)
    })
    .await
}

/// One dead letter as read back from the topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub headers: BTreeMap<String, String>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The Kafka timestamp of the dead letter (milliseconds).
    pub timestamp_ms: Option<i64>,
}

/// The first `expect` dead letters of `topic` (fewer if none comes for 30 s).
pub async fn read_dead_letters(topic: &str, expect: usize) -> Result<Vec<DeadLetter>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr("kafka"))
        .set("group.id", unique("dlq-reader"))
        .set("topic.metadata.refresh.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut out = Vec::new();
    while out.len() < expect {
        let Ok(msg) = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await else {
            break;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) if e.to_string().contains("Unknown topic") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let headers = msg
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(DeadLetter {
            headers,
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            timestamp_ms: msg.timestamp().to_millis(),
        });
    }
    Ok(out)
}

/// Dead letters: record id -> (kind, source topic, offset, original header kept).
pub async fn dead_letters(topic: &str, expect: usize) -> Result<BTreeMap<u64, (String, String, i64, bool)>> {
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

/// The group's committed offsets of partitions 0 to 3 of these topics, as (topic, partition, offset), where
/// one is committed.
fn committed_offsets(group: &str, topics: &[&str]) -> Result<Vec<(String, i32, i64)>> {
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
    Ok(c.elements()
        .iter()
        .filter_map(|e| {
            let o = e.offset().to_raw().filter(|o| *o >= 0)?;
            Some((e.topic().to_string(), e.partition(), o))
        })
        .collect())
}

/// The group's committed offsets summed per topic.
pub fn committed(group: &str, topics: &[&str]) -> Result<BTreeMap<String, i64>> {
    let mut sums = BTreeMap::new();
    for (topic, _, o) in committed_offsets(group, topics)? {
        *sums.entry(topic).or_insert(0) += o;
    }
    Ok(sums)
}

/// The group's committed offset of each partition of `topic` that has one.
pub fn committed_partitions(group: &str, topic: &str) -> Result<BTreeMap<i32, i64>> {
    Ok(committed_offsets(group, &[topic])?
        .into_iter()
        .map(|(_, p, o)| (p, o))
        .collect())
}

/// A metric record of the seed contract: key `k<id>`, `source` tag `r<id>`, value and `rid` `id`.
pub fn metric_record(id: u64) -> (String, Vec<u8>) {
    (
        format!("k{id}"),
        json!({"type": "metric", "source": format!("r{id}"), "value": id, "rid": id})
            .to_string()
            .into_bytes(),
    )
}

/// The text of a worker's `/metrics` on this port (empty while it does not answer).
pub async fn metrics_text(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of the first line of a worker's `/metrics` starting with `line_start` (a name, with labels).
pub async fn metric_value(port: u16, line_start: &str) -> Option<f64> {
    metrics_text(port)
        .await
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The sum of the samples of metric `name` whose labels contain every one of `labels` (`key="value"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum::<f64>()
        + 0.0 // an empty sum is -0
}

/// The HTTP status of `path` (`/readyz`, `/healthz`) of a worker's metrics server; 0 when it does not answer.
pub async fn probe(port: u16, path: &str) -> u16 {
    reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The `millrace` binary (`MILLRACE_BIN`, else the workspace's debug build).
pub fn millrace_bin() -> PathBuf {
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

/// Starts `millrace worker --config <config>` as a process of its own (warnings only, output discarded).
pub fn spawn_worker_process(config: &Path) -> Result<std::process::Child> {
    Ok(std::process::Command::new(millrace_bin())
        .args(["worker", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?)
}

/// Sends a signal (`TERM`, `HUP`, ...) to a process.
pub fn signal(child: &std::process::Child, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {}: {status}", child.id());
    Ok(())
}

/// Sends SIGTERM and waits for the process to exit (it drains and commits first); returns its exit status.
pub async fn terminate(mut child: std::process::Child) -> Result<std::process::ExitStatus> {
    signal(&child, "TERM")?;
    Ok(tokio::task::spawn_blocking(move || child.wait()).await??)
}

/// A worker running in this process, stopped by sending on (or dropping) the sender.
pub type RunningWorker = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), millrace_worker::WorkerError>>,
);

/// Starts a worker with a TOML configuration.
pub fn start_worker(config_toml: &str) -> Result<RunningWorker> {
    let config = millrace_worker::WorkerConfig::from_toml(config_toml)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(millrace_worker::pipeline::run(config, async move {
        let _ = rx.await;
    }));
    Ok((tx, handle))
}
