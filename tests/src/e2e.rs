//! Helpers of the worker's end-to-end tests: produce client records, read back what landed in InfluxDB,
//! Elasticsearch and the dead-letter topic, read a group's committed offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::{addr, http_url, unique};

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
pub async fn influx_ids(db: &str) -> Result<BTreeSet<u64>> {
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
pub async fn es_docs(index: &str) -> Result<Vec<(u64, String)>> {
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

/// The group's committed offsets summed per topic.
pub fn committed(group: &str, topics: &[&str]) -> Result<BTreeMap<String, i64>> {
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
