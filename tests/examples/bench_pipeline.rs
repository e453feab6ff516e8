//! Pieces of the end-to-end benchmark (`make bench`, pipeline section):
//!
//! ```text
//! bench_pipeline produce BROKERS TOPIC CORPUS [RATE]     # the corpus to TOPIC, as fast as possible or RATE/s
//! bench_pipeline raw BROKERS TOPIC COUNT                 # a do-nothing consumer: records/s of the broker
//! bench_pipeline blackhole PORT                          # an InfluxDB + Elasticsearch endpoint that counts
//! bench_pipeline wait BROKERS GROUP TOPIC COUNT PID [METRICS]
//!                                                        # waits for COUNT committed; prints time and CPU
//!                                                        # (with METRICS, the worker's metrics address, the
//!                                                        # span is timed by records finished, not commits)
//! bench_pipeline influx-ceiling URL DB CORPUS            # InfluxDB alone: the corpus's points, written as
//!                                                        # the worker batches them; prints points/s
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failures end it with the message

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("produce") if a.len() >= 5 => {
            produce(&a[2], &a[3], &a[4], a.get(5).map(|r| r.parse()).transpose()?).await
        }
        Some("raw") if a.len() == 5 => raw(&a[2], &a[3], a[4].parse()?),
        Some("blackhole") if a.len() == 3 => blackhole(a[2].parse()?).await,
        Some("wait") if a.len() == 7 || a.len() == 8 => wait(
            &a[2],
            &a[3],
            &a[4],
            a[5].parse()?,
            a[6].parse()?,
            a.get(7).map(String::as_str),
        ),
        Some("influx-ceiling") if a.len() == 5 => influx_ceiling(&a[2], &a[3], &a[4]).await,
        _ => bail!("see the usage in the source"),
    }
}

async fn produce(brokers: &str, topic: &str, corpus: &str, rate: Option<f64>) -> Result<()> {
    let lines: Vec<String> = std::fs::read_to_string(corpus)?
        .lines()
        .map(str::to_string)
        .collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let start = Instant::now();
    let mut pending = Vec::with_capacity(10_000);
    for (i, line) in lines.iter().enumerate() {
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(i as f64 / r);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let key = format!("k{i}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        pending.push(
            producer
                .send_result(FutureRecord::to(topic).key(&key).payload(line).timestamp(now))
                .map_err(|(e, _)| e)?,
        );
        if pending.len() >= 10_000 {
            for d in pending.drain(..) {
                d.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for d in pending {
        d.await?.map_err(|(e, _)| e)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"produced": lines.len(), "seconds": secs, "records_per_s": lines.len() as f64 / secs})
    );
    Ok(())
}

fn raw(brokers: &str, topic: &str, count: u64) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-raw-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("topic.metadata.refresh.interval.ms", "500")
        // As the worker's consumer (its default), so that the baseline's delivery lag compares.
        .set("fetch.wait.max.ms", "100")
        .set("fetch.queue.backoff.ms", "50")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut n = 0u64;
    let mut start = None;
    let mut lags = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while n < count && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = match m {
                Ok(m) => m,
                Err(e) if e.to_string().contains("Unknown topic") => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(ts) = rdkafka::Message::timestamp(&m).to_millis() {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis() as i64;
                lags.push(now - ts);
            }
            start.get_or_insert_with(|| (Instant::now(), cpu_seconds(std::process::id())));
            n += 1;
        }
    }
    let secs = start.map_or(0.0, |(s, _)| s.elapsed().as_secs_f64());
    // This process's CPU over the same span: librdkafka fetching and handing over each record and nothing else,
    // the floor under what any consumer of the topic spends per record (the worker's CPU per record compares).
    let cpu = start.map_or(0.0, |(_, c0)| cpu_seconds(std::process::id()) - c0);
    lags.sort_unstable();
    let p = |q: f64| {
        lags.get(((lags.len() as f64 * q) as usize).min(lags.len().saturating_sub(1)))
            .copied()
    };
    println!(
        "{}",
        json!({"consumed": n, "seconds": secs, "records_per_s": n as f64 / secs,
               "cpu_seconds": cpu, "cpu_us_per_record": cpu * 1e6 / n.max(1) as f64,
               "timestamp_lag_ms_p50": p(0.5), "timestamp_lag_ms_p99": p(0.99)})
    );
    Ok(())
}

async fn blackhole(port: u16) -> Result<()> {
    use axum::Router;
    use axum::routing::{get, post};
    let count = Arc::new(AtomicU64::new(0));
    let lines = count.clone();
    let docs = count.clone();
    let app = Router::new()
        .route(
            "/write",
            post(move |body: axum::body::Bytes| {
                let lines = lines.clone();
                async move {
                    lines.fetch_add(
                        memchr::memchr_iter(b'\n', &body).count() as u64,
                        Ordering::Relaxed,
                    );
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/_bulk",
            post(move |body: axum::body::Bytes| {
                let docs = docs.clone();
                async move {
                    // Counted and answered as cheaply as it can be (it shares the 2 cores with the worker it
                    // measures): newlines found by memchr, the answer's items written as one repeated string.
                    let n = memchr::memchr_iter(b'\n', &body).count() / 2;
                    docs.fetch_add(n as u64, Ordering::Relaxed);
                    const ITEM: &str = r#"{"index":{"status":201}}"#;
                    let mut answer = String::with_capacity(48 + n * (ITEM.len() + 1));
                    answer.push_str(r#"{"errors":false,"took":0,"items":["#);
                    for i in 0..n {
                        if i > 0 {
                            answer.push(',');
                        }
                        answer.push_str(ITEM);
                    }
                    answer.push_str("]}");
                    ([(axum::http::header::CONTENT_TYPE, "application/json")], answer)
                }
            }),
        )
        .route("/ping", get(|| async { axum::http::StatusCode::NO_CONTENT }))
        .route("/", get(|| async { "{}" }))
        .route(
            "/count",
            get(move || {
                let c = count.clone();
                async move { c.load(Ordering::Relaxed).to_string() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(") ")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Records the worker finished (all outputs acknowledged or dead-lettered): the count of its latency
/// histogram, which observes every finished record with a timestamp (the corpus's all have one).
fn finished(metrics: &str) -> Option<i64> {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(metrics).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(conn, "GET /metrics HTTP/1.0\r\nHost: {metrics}\r\n\r\n").ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("millrace_record_latency_seconds_count "))?;
    line.rsplit(' ').next()?.parse::<f64>().ok().map(|n| n as i64)
}

/// The span of a worker run: from a quarter of the records finished to the last, with the worker's CPU time
/// at both ends. Records finished are read from the worker's metrics every 20 ms: committed offsets move
/// once per commit (every second), so a span timed by them ended up to a second after the last record, in
/// runs of two to three seconds (a spread of +-15% between runs of the same build).
fn finished_span(metrics: &str, count: i64, pid: u32) -> Result<(f64, f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, f64, i64)> = None;
    loop {
        let done = finished(metrics).unwrap_or(0);
        let now = Instant::now();
        if done >= count / 4 && first.is_none() {
            first = Some((now, cpu_seconds(pid), done));
        }
        if done >= count {
            let (t0, c0, d0) = first.unwrap_or((now, cpu_seconds(pid), done));
            return Ok((
                (done - d0) as f64,
                now.duration_since(t0).as_secs_f64(),
                cpu_seconds(pid) - c0,
            ));
        }
        if now > deadline {
            bail!("timed out with {done} of {count} finished");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait(brokers: &str, group: &str, topic: &str, count: i64, pid: u32, metrics: Option<&str>) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()?;
    // Timed by records finished; then the commits below still have to reach every record.
    let by_finished = metrics.map(|m| finished_span(m, count, pid)).transpose()?;
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let mut first_progress = None;
    loop {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition(topic, p);
        }
        let c = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let done: i64 = c
            .elements()
            .iter()
            .filter_map(|e| e.offset().to_raw())
            .filter(|o| *o > 0)
            .sum();
        // The span starts once a quarter is committed: at the first commit the worker has already fetched and
        // processed many more records than it committed (the start-up burst), whose CPU would fall outside
        // the span while the records fell inside it.
        if done >= count / 4 && first_progress.is_none() {
            first_progress = Some((Instant::now(), cpu_seconds(pid), done));
        }
        if done >= count {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("timed out with {done} of {count} committed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Measured from a quarter committed (plugins loaded, group joined, start-up burst over) to the last.
    let (t0, c0, d0) = first_progress.unwrap_or((start, cpu0, 0));
    let (records, secs, cpu) = by_finished.unwrap_or_else(|| {
        (
            (count - d0) as f64,
            t0.elapsed().as_secs_f64(),
            cpu_seconds(pid) - c0,
        )
    });
    println!(
        "{}",
        json!({"records": records, "seconds": secs, "records_per_s": records / secs,
               "cpu_seconds": cpu, "cpu_us_per_record": cpu * 1e6 / records})
    );
    Ok(())
}

/// What InfluxDB alone takes: the points `seed-router` makes of the corpus (its metrics), written in batches
/// of the worker's default size (5,000), gzipped, 4 requests at once (`batching.concurrency`), as fast as
/// the store answers.
async fn influx_ceiling(url: &str, db: &str, corpus: &str) -> Result<()> {
    use std::io::Write as _;
    const BATCH: usize = 5000;
    const CONCURRENCY: usize = 4;
    let text = std::fs::read_to_string(corpus)?;
    let mut records = 0usize;
    let mut lines = Vec::new();
    for (i, l) in text.lines().enumerate() {
        records += 1;
        let v: serde_json::Value = match serde_json::from_str(l) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v["type"] != "metric" {
            continue;
        }
        let (Some(source), Some(unit), Some(value)) =
            (v["source"].as_str(), v["unit"].as_str(), v["value"].as_f64())
        else {
            continue;
        };
        let ts = v["timestamp"].as_i64().unwrap_or(1_795_000_000_000) * 1_000_000 + i as i64 % 1_000_000;
        lines.push(format!(
            "env_metrics,source={source},unit={unit} value={value} {ts}"
        ));
    }
    let bodies: Vec<Vec<u8>> = lines
        .chunks(BATCH)
        .map(|c| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(c.join("\n").as_bytes()).unwrap();
            gz.finish().unwrap()
        })
        .collect();
    let client = reqwest::Client::new();
    let write_url = format!("{url}/write?db={db}&precision=ns");
    let next = Arc::new(AtomicU64::new(0));
    let bodies = Arc::new(bodies);
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, url, next, bodies) =
                (client.clone(), write_url.clone(), next.clone(), bodies.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(body) = bodies.get(i) else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    let r = client
                        .post(&url)
                        .header("Content-Encoding", "gzip")
                        .body(body.clone())
                        .send()
                        .await?;
                    if !r.status().is_success() {
                        bail!(
                            "InfluxDB answered {}: {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        );
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"points": lines.len(), "seconds": secs, "points_per_s": lines.len() as f64 / secs,
               "points_per_record": lines.len() as f64 / records.max(1) as f64,
               "batch": BATCH, "concurrency": CONCURRENCY})
    );
    Ok(())
}
