//! The demo's client side (`make demo`): produces client records to a topic, and summarises the dead-letter
//! topic by error kind.
//!
//! ```text
//! demo_client produce BROKERS TOPIC COUNT SERVICE_PREFIX   # prints {"metrics":..,"logs":..,"bad":..}
//! demo_client dead-letters BROKERS TOPIC EXPECTED          # prints {"total":..,"by_kind":{..},"sample":{..}}
//! ```
//!
//! `DEMO_CLIENT_RATE=N` paces `produce` at N records/s with wall-clock timestamps (steady traffic for the
//! dashboard picture); by default records go out as fast as the broker takes them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a demo tool: failures end it with the message

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("produce") if args.len() == 6 => produce(&args[2], &args[3], args[4].parse()?, &args[5]).await,
        Some("dead-letters") if args.len() == 5 => dead_letters(&args[2], &args[3], args[4].parse()?).await,
        _ => bail!(
            "usage: demo_client produce BROKERS TOPIC COUNT SERVICE_PREFIX | dead-letters BROKERS TOPIC EXPECTED"
        ),
    }
}

async fn produce(brokers: &str, topic: &str, count: u64, prefix: &str) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "10")
        .create()?;
    let (mut metrics, mut logs, mut bad) = (0u64, 0u64, 0u64);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let services = ["checkout", "billing", "search"];
    let rate: Option<u64> = std::env::var("DEMO_CLIENT_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0);
    let flush_every = rate.map_or(500, |r| (r / 20).clamp(1, 500)) as usize;
    let started = std::time::Instant::now();
    let mut last_ts = 0i64;
    let mut sends = Vec::new();
    for i in 0..count {
        // Distinct timestamps: InfluxDB keeps one point per series and timestamp.
        let ts = match rate {
            None => base + i as i64,
            Some(_) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis() as i64;
                last_ts = now.max(last_ts + 1);
                last_ts
            }
        };
        let value = match i % 20 {
            0 => {
                bad += 1;
                "{\"type\":\"metric\", this is not JSON".to_string()
            }
            1 => {
                bad += 1;
                json!({"type": "trace", "span": i}).to_string()
            }
            n if n % 2 == 0 => {
                metrics += 1;
                json!({"type": "metric", "source": format!("sensor-{}", i % 50), "unit": "C",
                       "value": 20.0 + (i % 100) as f64 / 10.0, "seq": i})
                .to_string()
            }
            _ => {
                logs += 1;
                let svc = services[(i % 3) as usize];
                json!({"type": "log", "service": format!("{prefix}{svc}"), "level": if i % 7 == 0 { "error" } else { "info" },
                       "message": format!("request {i} handled"), "seq": i})
                .to_string()
            }
        };
        let key = format!("k{i}");
        let producer = producer.clone();
        sends.push(async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&value).timestamp(ts),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
        });
        if sends.len() == flush_every {
            for r in futures::future::join_all(sends.drain(..)).await {
                r.context("producing")?;
            }
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64((i + 1) as f64 / rate as f64);
                tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
            }
        }
    }
    for r in futures::future::join_all(sends).await {
        r.context("producing")?;
    }
    println!(
        "{}",
        json!({"topic": topic, "records": count, "metrics": metrics, "logs": logs, "bad": bad})
    );
    Ok(())
}

async fn dead_letters(brokers: &str, topic: &str, expected: usize) -> Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("demo-dlq-reader-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut sample: BTreeMap<String, String> = BTreeMap::new();
    let mut total = 0usize;
    while total < expected {
        let msg = match tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await {
            Err(_) => break,
            Ok(Err(e)) if e.to_string().contains("Unknown topic") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Ok(r) => r?,
        };
        total += 1;
        let mut kind = String::new();
        let mut message = String::new();
        if let Some(h) = msg.headers() {
            for hd in h.iter() {
                let v = String::from_utf8_lossy(hd.value.unwrap_or_default()).to_string();
                match hd.key {
                    "millrace.error.kind" => kind = v,
                    "millrace.error.message" => message = v,
                    _ => {}
                }
            }
        }
        *by_kind.entry(kind.clone()).or_default() += 1;
        sample.entry(kind).or_insert(message);
    }
    println!(
        "{}",
        json!({"total": total, "by_kind": by_kind, "sample": sample})
    );
    Ok(())
}
