//! Smoke tests of the local stack through the product's own clients: one test per server, each failing when
//! the server is down or the data did not land. They prove the foundation the real tests stand on.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use millrace_tests::e2e::vm_export_with;
use millrace_tests::{addr, eventually, http_url, oras_push, stack_dir, unique};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);

/// rdkafka: produce records, consume them back in a consumer group with manual commits, and check the
/// group's committed offsets account for every record.
#[tokio::test]
async fn kafka_produce_and_consume_in_a_group() -> Result<()> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let brokers = addr("kafka");
    let topic = unique("smoke-kafka");
    let group = unique("smoke-group");
    const N: usize = 200;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.timeout.ms", "15000")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    for i in 0..N {
        let key = format!("k{i}");
        let payload = json!({"id": i, "topic": topic}).to_string();
        producer
            .send(FutureRecord::to(&topic).key(&key).payload(&payload), WAIT)
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing record {i} to {topic} at {brokers}"))?;
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let mut seen = BTreeSet::new();
    while seen.len() < N {
        let msg = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .with_context(|| format!("consumed only {} of {N} records", seen.len()))??;
        let v: Value = serde_json::from_slice(msg.payload().context("record without payload")?)?;
        let id = v["id"].as_u64().context("record without id")?;
        ensure!(v["topic"] == topic.as_str(), "foreign record {v}");
        seen.insert(id);
        consumer.commit_message(&msg, CommitMode::Sync)?;
    }
    assert_eq!(seen, (0..N as u64).collect::<BTreeSet<_>>());

    let committed = consumer.committed(WAIT)?;
    let total: i64 = committed
        .elements()
        .iter()
        .filter_map(|e| e.offset().to_raw())
        .filter(|o| *o >= 0)
        .sum();
    assert_eq!(total, N as i64, "committed offsets {committed:?}");
    Ok(())
}

/// oci-client pulls, by tag and by digest, an artifact pushed with the ORAS Python SDK, and the layer's
/// sha256 matches the file that was pushed.
#[tokio::test]
async fn registry_oci_client_pulls_what_oras_pushed() -> Result<()> {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    use oci_client::{Client, Reference};

    let registry = addr("registry");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("smoke.wasm");
    let mut content = b"\0asm\x01\0\0\0".to_vec();
    content.extend(unique("payload").bytes());
    std::fs::write(&file, &content)?;
    let expected = format!("sha256:{}", hex::encode(Sha256::digest(&content)));

    let repo = unique("smoke/oras");
    let tagged = format!("{registry}/{repo}:v1");
    let manifest_digest = oras_push(&tagged, &file, Some("application/wasm"), None)?;

    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    for reference in [tagged.clone(), format!("{registry}/{repo}@{manifest_digest}")] {
        let reference: Reference = reference.parse()?;
        let image = client
            .pull(&reference, &RegistryAuth::Anonymous, vec!["application/wasm"])
            .await
            .with_context(|| format!("pulling {reference}"))?;
        assert_eq!(image.digest.as_deref(), Some(manifest_digest.as_str()));
        assert_eq!(image.layers.len(), 1);
        let layer = &image.layers[0];
        assert_eq!(layer.media_type, "application/wasm");
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&layer.data))),
            expected
        );
        assert_eq!(layer.data.as_ref(), content.as_slice());
    }
    Ok(())
}

/// Line protocol into InfluxDB 1.x through `/write`, read back with InfluxQL.
#[tokio::test]
async fn influxdb_v1_write_and_query_back() -> Result<()> {
    let base = http_url("influxdb");
    let http = reqwest::Client::new();
    let db = unique("smoke").replace('-', "_");

    let r = http
        .post(format!("{base}/query"))
        .query(&[("q", format!("CREATE DATABASE \"{db}\""))])
        .send()
        .await?;
    ensure!(r.status().is_success(), "CREATE DATABASE: {}", r.text().await?);

    let lines: String = (0..10)
        .map(|i| {
            format!(
                "env_metrics,source=s{i},unit=C value={}.5 {}\n",
                i,
                1_700_000_000_000_000_000i64 + i
            )
        })
        .collect();
    // InfluxDB 1.x applies CREATE DATABASE to its meta store asynchronously: a write right after it can
    // still see "database not found", so retry that one answer for a while.
    let write = eventually(WAIT, "InfluxDB to accept the write", || {
        let (http, base, db, lines) = (http.clone(), base.clone(), db.clone(), lines.clone());
        async move {
            let r = http
                .post(format!("{base}/write"))
                .query(&[("db", db.as_str()), ("precision", "ns")])
                .body(lines)
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (!text.contains("database not found")).then_some((status, text))
        }
    })
    .await;
    ensure!(write.0 == 204, "/write answered {}: {}", write.0, write.1);

    let r: Value = http
        .get(format!("{base}/query"))
        .query(&[
            ("db", db.as_str()),
            ("q", "SELECT source, value FROM env_metrics"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let values = r["results"][0]["series"][0]["values"]
        .as_array()
        .with_context(|| format!("no series in {r}"))?;
    assert_eq!(values.len(), 10, "{r}");
    let sum: f64 = values.iter().filter_map(|v| v[2].as_f64()).sum();
    assert_eq!(sum, (0..10).map(|i| i as f64 + 0.5).sum::<f64>());
    assert_eq!(values[3][1], "s3");
    Ok(())
}

/// Line protocol into VictoriaMetrics through the InfluxDB v2 write API (`/api/v2/write`) with the
/// influxdb2 crate, read back with VictoriaMetrics' export API.
#[tokio::test]
async fn victoriametrics_v2_write_via_influxdb2_and_read_back() -> Result<()> {
    let base = http_url("victoriametrics");
    let client = influxdb2::Client::new(&base, "millrace", "smoke-token");
    let measurement = unique("smoke").replace('-', "_");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let lines: String = (0..5)
        .map(|i| {
            format!(
                "{measurement},host=h{i} value={i} {}\n",
                (now_ms - 5 + i) * 1_000_000
            )
        })
        .collect();
    client
        .write_line_protocol("millrace", "smoke", lines)
        .await
        .context("influxdb2 write_line_protocol to VictoriaMetrics")?;

    let http = reqwest::Client::new();
    let selector = format!("{{__name__=\"{measurement}_value\"}}");
    let series: Vec<Value> = eventually(WAIT, "VictoriaMetrics to return the written points", || async {
        let series = vm_export_with(&http, &base, &selector).await.ok()?;
        (series.len() == 5).then_some(series)
    })
    .await;
    let mut hosts: Vec<(String, f64)> = series
        .iter()
        .map(|s| {
            (
                s["metric"]["host"].as_str().unwrap_or_default().to_string(),
                s["values"][0].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    hosts.sort_by(|a, b| a.0.cmp(&b.0));
    let expected: Vec<(String, f64)> = (0..5).map(|i| (format!("h{i}"), i as f64)).collect();
    assert_eq!(hosts, expected);
    Ok(())
}

/// `_bulk` through the elasticsearch crate, then `_search` back.
#[tokio::test]
async fn elasticsearch_bulk_and_search_back() -> Result<()> {
    use elasticsearch::http::request::JsonBody;
    use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
    use elasticsearch::params::Refresh;
    use elasticsearch::{BulkParts, Elasticsearch, SearchParts};

    let url = elasticsearch::http::Url::parse(&http_url("elasticsearch"))?;
    let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .disable_proxy()
        .build()?;
    let client = Elasticsearch::new(transport);
    let index = unique("smoke-logs");

    let mut body: Vec<JsonBody<Value>> = Vec::new();
    for i in 0..20 {
        body.push(json!({"index": {"_id": format!("doc-{i}")}}).into());
        body.push(
            json!({"service": "checkout", "level": if i % 4 == 0 { "error" } else { "info" }, "n": i}).into(),
        );
    }
    let resp = client
        .bulk(BulkParts::Index(&index))
        .refresh(Refresh::True)
        .body(body)
        .send()
        .await?;
    ensure!(
        resp.status_code().is_success(),
        "_bulk answered {}",
        resp.status_code()
    );
    let resp: Value = resp.json().await?;
    assert_eq!(resp["errors"], false, "{resp}");
    assert_eq!(resp["items"].as_array().map(Vec::len), Some(20));

    let resp: Value = client
        .search(SearchParts::Index(&[&index]))
        .body(json!({"query": {"term": {"level": "error"}}, "size": 100}))
        .send()
        .await?
        .json()
        .await?;
    let mut ids: Vec<String> = resp["hits"]["hits"]
        .as_array()
        .with_context(|| format!("no hits in {resp}"))?
        .iter()
        .filter_map(|h| h["_id"].as_str().map(String::from))
        .collect();
    ids.sort();
    assert_eq!(ids, ["doc-0", "doc-12", "doc-16", "doc-4", "doc-8"]);
    Ok(())
}

/// Prometheus scrapes a `/metrics` endpoint served with the prometheus crate, found through the stack's
/// file-discovered targets, and reports it up with our sample's value.
#[tokio::test]
async fn prometheus_reports_a_file_discovered_target_up() -> Result<()> {
    let registry = prometheus::Registry::new();
    let counter = prometheus::IntCounter::new("millrace_smoke_scrapes_total", "smoke test counter")?;
    registry.register(Box::new(counter.clone()))?;
    counter.inc_by(42);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let target = listener.local_addr()?.to_string();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                prometheus::TextEncoder::new()
                    .encode_to_string(&registry.gather())
                    .unwrap_or_default()
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let job = unique("smoke");
    let targets_dir = stack_dir().join("prometheus-targets");
    std::fs::create_dir_all(&targets_dir)?;
    let sd_file = targets_dir.join(format!("{job}.json"));
    std::fs::write(
        &sd_file,
        json!([{"targets": [target], "labels": {"test": job}}]).to_string(),
    )?;

    let base = http_url("prometheus");
    let http = reqwest::Client::new();
    let result = eventually(WAIT, "Prometheus to scrape the target", || {
        let http = http.clone();
        let base = base.clone();
        let job = job.clone();
        async move {
            let q = format!("millrace_smoke_scrapes_total{{test=\"{job}\"}} and on(instance) up == 1");
            let r: Value = http
                .get(format!("{base}/api/v1/query"))
                .query(&[("query", q)])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let v = r["data"]["result"][0]["value"][1].as_str()?.to_string();
            Some(v)
        }
    })
    .await;
    let _ = std::fs::remove_file(&sd_file);
    server.abort();
    assert_eq!(result, "42");
    Ok(())
}
