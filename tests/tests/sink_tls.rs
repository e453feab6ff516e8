//! Stores behind TLS with a private CA (as in most clusters): InfluxDB and VictoriaMetrics with their own TLS
//! listeners, the Elasticsearch API behind a TLS-terminating proxy. Without `ca_file` nothing is written and
//! nothing is committed; with it, every output lands; an unusable `ca_file` stops the worker with a typed error.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use millrace_tests::config::{Binding, TestConfig};
use millrace_tests::e2e::{
    committed, es_docs, influx_ids_with, metric_value, produce, vm_source_ids_with, wait_docs,
};
use millrace_tests::tls::{TestCa, TlsProxy, TlsServer};
use millrace_tests::{addr, eventually, free_port, push_plugin, unique};
use serde_json::json;

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
    /// A worker configuration; `ca` is the `ca_file` of each sink (or none).
    fn config(&self, ca: Option<&Path>, metrics_port: u16) -> TestConfig {
        let config = TestConfig::for_group(&self.group)
            .binding(
                Binding::topic(&self.topic)
                    .plugin(&self.plugin)
                    .measurements(["env_"])
                    .indices([&self.uid]),
            )
            .influxdb_url(&self.influx.url, "tls")
            .influxdb_v2_url(&self.vm.url, "o", "b")
            .elasticsearch_urls([&self.es.url]);
        match ca {
            Some(ca) => config.sinks_ca_file(ca),
            None => config,
        }
        .dead_letter(&format!("dlq-{}", self.uid))
        .metrics_port(metrics_port)
        .registry_cache(self.cache.path())
        .batching(|b| b.set("linger", "50ms").set("retry_max_backoff", "1s"))
        .pipeline(|p| p.set("drain_timeout", "2s"))
    }

    /// `source` tags of the points in the TLS InfluxDB.
    async fn influx_sources(&self) -> Result<BTreeSet<u64>> {
        influx_ids_with(&self.ca.client()?, &self.influx.url, "tls").await
    }

    /// `source` labels of the series in the TLS VictoriaMetrics.
    async fn vm_sources(&self) -> Result<BTreeSet<u64>> {
        vm_source_ids_with(
            &self.ca.client()?,
            &self.vm.url,
            "{__name__=\"env_metrics_value\"}",
        )
        .await
    }
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
    let (stop, worker) = s.config(None, port).start()?;
    for sink in ["influxdb", "influxdb_v2", "elasticsearch"] {
        eventually(
            Duration::from_secs(30),
            &format!("{sink} to be down (untrusted certificate)"),
            || async move {
                let retries =
                    metric_value(port, &format!("millrace_sink_retries_total{{sink=\"{sink}\"}}")).await?;
                let up = metric_value(port, &format!("millrace_sink_up{{sink=\"{sink}\"}}")).await?;
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
    let (stop, worker) = s.config(Some(&s.ca.ca), free_port()).start()?;
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
    let docs = wait_docs(
        &index,
        logs.len(),
        Duration::from_secs(60),
        "the documents (TLS proxy)",
    )
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
    for sink in ["influxdb", "influxdb_v2", "elasticsearch"] {
        let config = TestConfig::new().binding(
            Binding::topic(&format!("t-{}", unique("x"))).plugin(&format!("{registry}/tls/router@{plugin}")),
        );
        let config = match sink {
            "influxdb" => config.influxdb_url("https://127.0.0.1:1", "x"),
            "influxdb_v2" => config.influxdb_v2_url("https://127.0.0.1:1", "o", "b"),
            _ => config.elasticsearch_urls(["https://127.0.0.1:1"]),
        }
        .sinks_ca_file(&garbage)
        .metrics_port(0)
        .registry_cache(cache.path());
        let (_stop, worker) = config.start()?;
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
