//! Stores behind TLS with a private CA (as in most clusters): InfluxDB and VictoriaMetrics with their own TLS
//! listeners, the Elasticsearch API behind a TLS-terminating proxy. Without `ca_file` nothing is written and
//! nothing is committed; with it, every output lands; an unusable `ca_file` stops the worker with a typed error.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use millrace_tests::e2e::{committed, es_docs, produce, start_worker};
use millrace_tests::tls::{TestCa, TlsProxy, TlsServer};
use millrace_tests::{addr, eventually, free_port, push_plugin, unique};
use serde_json::{Value, json};

struct Setup {
    ca: TestCa,
    influx: TlsServer,
    vm: TlsServer,
    es: TlsProxy,
    uid: String,
    topic: String,
    group: String,
    plugin: String,
    cache: tempfile::TempDir,
}

impl Setup {
    /// A worker configuration; `ca` is the `ca_file` line of each sink (or nothing).
    fn config(&self, ca: &str, metrics_port: u16) -> String {
        format!(
            r#"
            [kafka]
            brokers = "{kafka}"
            group_id = "{group}"
            session_timeout = "6s"
            [[bindings]]
            topic = "{topic}"
            plugin = "{plugin}"
            allowed_measurements = ["env_"]
            allowed_indices = ["{uid}"]
            [sinks.influxdb]
            url = "{influx}"
            database = "tls"
            {ca}
            [sinks.influxdb_v2]
            url = "{vm}"
            org = "o"
            bucket = "b"
            {ca}
            [sinks.elasticsearch]
            urls = ["{es}"]
            {ca}
            [dead_letter]
            topic = "dlq-{uid}"
            [metrics]
            address = "127.0.0.1:{metrics_port}"
            [registry]
            cache_dir = "{cache}"
            insecure = ["{registry}"]
            [batching]
            linger = "50ms"
            retry_max_backoff = "1s"
            [pipeline]
            drain_timeout = "2s"
            "#,
            kafka = addr("kafka"),
            registry = addr("registry"),
            group = self.group,
            topic = self.topic,
            plugin = self.plugin,
            uid = self.uid,
            influx = self.influx.url,
            vm = self.vm.url,
            es = self.es.url,
            cache = self.cache.path().display(),
        )
    }

    /// `source` tags of the points in the TLS InfluxDB.
    async fn influx_sources(&self) -> Result<BTreeSet<u64>> {
        let v: Value = self
            .ca
            .client()?
            .get(format!("{}/query", self.influx.url))
            .query(&[
                ("db", "tls"),
                ("q", "SELECT \"source\", \"value\" FROM env_metrics"),
            ])
            .send()
            .await?
            .json()
            .await?;
        Ok(ids(v["results"][0]["series"][0]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row[1].as_str())))
    }

    /// `source` labels of the series in the TLS VictoriaMetrics.
    async fn vm_sources(&self) -> Result<BTreeSet<u64>> {
        let text = self
            .ca
            .client()?
            .get(format!("{}/api/v1/export", self.vm.url))
            .query(&[("match[]", "{__name__=\"env_metrics_value\"}")])
            .send()
            .await?
            .text()
            .await?;
        let rows: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Ok(ids(rows.iter().filter_map(|v| v["metric"]["source"].as_str())))
    }
}

fn ids<'a>(sources: impl Iterator<Item = &'a str>) -> BTreeSet<u64> {
    sources
        .filter_map(|s| s.strip_prefix('r')?.parse().ok())
        .collect()
}

async fn metric(port: u16, line_start: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sinks_reach_tls_stores_through_a_private_ca_and_lose_nothing_without_it() -> Result<()> {
    let ca = TestCa::new()?;
    let influx = TlsServer::influxdb(&ca).await?;
    let vm = TlsServer::victoriametrics(&ca).await?;
    let es = TlsProxy::start(&addr("elasticsearch"), &ca).await?;
    let r = ca
        .client()?
        .post(format!("{}/query", influx.url))
        .query(&[("q", "CREATE DATABASE tls")])
        .send()
        .await?;
    assert!(r.status().is_success());
    let uid = unique("tls");
    let registry = addr("registry");
    let s = Setup {
        plugin: format!(
            "{registry}/tls/router@{}",
            push_plugin(&format!("{registry}/tls/router:v1"), "seed_router")?
        ),
        topic: format!("client-{uid}"),
        group: format!("group-{uid}"),
        cache: tempfile::tempdir()?,
        ca,
        influx,
        vm,
        es,
        uid,
    };

    // 200 records: even ids are metrics, odd ids logs.
    let service = format!("{}-svc", s.uid);
    let records: Vec<_> = (0..200u64)
        .map(|id| {
            let v = if id % 2 == 0 {
                json!({"type": "metric", "source": format!("r{id}"), "unit": "C", "value": id, "rid": id})
            } else {
                json!({"type": "log", "service": service, "level": "info", "msg": "hello", "rid": id})
            };
            (format!("k{id}"), v.to_string().into_bytes())
        })
        .collect();
    produce(&s.topic, &records).await?;
    let metrics: BTreeSet<u64> = (0..200).step_by(2).collect();
    let logs: BTreeSet<u64> = (1..200).step_by(2).collect();
    let index = format!("{service}-logs-daily");

    // Without the CA: no store is trusted, every write fails and is retried, nothing is committed.
    let port = free_port();
    let (stop, worker) = start_worker(&s.config("", port))?;
    for sink in ["influxdb", "influxdb_v2", "elasticsearch"] {
        eventually(
            Duration::from_secs(30),
            &format!("{sink} to be down (untrusted certificate)"),
            || async move {
                let retries =
                    metric(port, &format!("millrace_sink_retries_total{{sink=\"{sink}\"}}")).await?;
                let up = metric(port, &format!("millrace_sink_up{{sink=\"{sink}\"}}")).await?;
                (retries >= 1.0 && up == 0.0).then_some(())
            },
        )
        .await;
    }
    stop.send(()).ok();
    worker.await??;
    assert!(s.influx_sources().await?.is_empty());
    assert!(s.vm_sources().await?.is_empty());
    assert!(es_docs(&index).await.map(|d| d.is_empty()).unwrap_or(true));
    let offsets = committed(&s.group, &[&s.topic])?;
    assert!(
        offsets.get(&s.topic).copied().unwrap_or(0) <= 0,
        "nothing committed while the stores were unreachable: {offsets:?}"
    );

    // With the CA: every output lands in the three stores, exactly.
    let ca_line = format!("ca_file = \"{}\"", s.ca.ca.display());
    let (stop, worker) = start_worker(&s.config(&ca_line, free_port()))?;
    let in_influx = eventually(
        Duration::from_secs(60),
        "the points in InfluxDB (TLS)",
        || async {
            s.influx_sources()
                .await
                .ok()
                .filter(|ids| ids.len() >= metrics.len())
        },
    )
    .await;
    assert_eq!(in_influx, metrics);
    let in_vm = eventually(
        Duration::from_secs(60),
        "the points in VictoriaMetrics (TLS)",
        || async { s.vm_sources().await.ok().filter(|ids| ids.len() >= metrics.len()) },
    )
    .await;
    assert_eq!(in_vm, metrics);
    let docs = eventually(Duration::from_secs(60), "the documents (TLS proxy)", || async {
        es_docs(&index).await.ok().filter(|d| d.len() >= logs.len())
    })
    .await;
    assert_eq!(docs.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>(), logs);
    eventually(Duration::from_secs(30), "offsets committed", || async {
        let c = committed(&s.group, &[&s.topic]).ok()?;
        (c.get(&s.topic).copied() == Some(200)).then_some(())
    })
    .await;
    stop.send(()).ok();
    worker.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_ca_file_stops_the_worker_with_a_config_error() -> Result<()> {
    let ca = TestCa::new()?;
    let garbage = ca.garbage_file()?;
    let cache = tempfile::tempdir()?;
    let registry = addr("registry");
    let plugin = push_plugin(&format!("{registry}/tls/router:v1"), "seed_router")?;
    for (sink, section) in [
        (
            "influxdb",
            "[sinks.influxdb]\nurl = \"https://127.0.0.1:1\"\ndatabase = \"x\"",
        ),
        (
            "influxdb_v2",
            "[sinks.influxdb_v2]\nurl = \"https://127.0.0.1:1\"\norg = \"o\"\nbucket = \"b\"",
        ),
        (
            "elasticsearch",
            "[sinks.elasticsearch]\nurls = [\"https://127.0.0.1:1\"]",
        ),
    ] {
        let config = format!(
            "[kafka]\nbrokers = \"{kafka}\"\n[[bindings]]\ntopic = \"t-{u}\"\nplugin = \"{registry}/tls/router@{plugin}\"\n\
             {section}\nca_file = \"{ca}\"\n[metrics]\naddress = \"127.0.0.1:0\"\n[registry]\ncache_dir = \"{cache}\"\n\
             insecure = [\"{registry}\"]\n",
            kafka = addr("kafka"),
            u = unique("x"),
            ca = garbage.display(),
            cache = cache.path().display(),
        );
        let (_stop, worker) = start_worker(&config)?;
        let err = worker
            .await?
            .expect_err("a worker with an unusable ca_file must not start");
        let text = err.to_string();
        assert!(
            text.contains(sink) && text.contains("not-a-cert.pem"),
            "{sink}: the error names the sink and the file: {text}"
        );
    }
    Ok(())
}
