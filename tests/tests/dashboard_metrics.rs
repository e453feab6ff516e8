//! The Grafana dashboard and the alert rules shipped in the Helm chart reference only metrics a running
//! worker really exports: checked against a live `/metrics` of a worker that processed records.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use millrace_tests::e2e::{create_db, influx_ids, produce, start_worker};
use millrace_tests::{addr, eventually, free_port, http_url, oras_push, repo_root, unique};
use serde_json::{Value, json};

/// `millrace_*` names in a text, without histogram suffixes.
fn referenced(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"millrace_[a-z_]+").unwrap();
    re.find_iter(text)
        .map(|m| {
            let n = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_and_alerts_use_only_exported_metrics() -> Result<()> {
    let uid = unique("dash").replace('-', "");
    let db = format!("db_{uid}");
    create_db(&db).await?;
    let registry = addr("registry");
    let digest = oras_push(
        &format!("{registry}/dash/router:v1"),
        &repo_root().join("plugins/dist/seed_router.wasm"),
        Some("application/wasm"),
        None,
    )?;
    let topic = format!("client-{uid}");
    let port = free_port();
    let cache = tempfile::tempdir()?;
    let (tx, worker) = start_worker(&format!(
        r#"
        [kafka]
        brokers = "{kafka}"
        group_id = "group-{uid}"
        session_timeout = "6s"
        statistics_interval = "1s"
        [[bindings]]
        topic = "{topic}"
        plugin = "{registry}/dash/router@{digest}"
        allowed_measurements = ["env_"]
        allowed_indices = ["*"]
        [sinks.influxdb]
        url = "{influx}"
        database = "{db}"
        [sinks.elasticsearch]
        urls = ["{es}"]
        [dead_letter]
        topic = "dlq-{uid}"
        [metrics]
        address = "127.0.0.1:{port}"
        [registry]
        cache_dir = "{cache}"
        insecure = ["{registry}"]
        [batching]
        linger = "50ms"
        "#,
        kafka = addr("kafka"),
        influx = http_url("influxdb"),
        es = http_url("elasticsearch"),
        cache = cache.path().display(),
    ))?;
    let mut records: Vec<_> = (0..20u64)
        .map(|id| {
            (
                format!("k{id}"),
                json!({"type": "metric", "source": format!("r{id}"), "value": id})
                    .to_string()
                    .into_bytes(),
            )
        })
        .collect();
    records.push(("bad".into(), b"not json".to_vec()));
    records.push((
        "log".into(),
        json!({"type": "log", "service": "svc"}).to_string().into_bytes(),
    ));
    produce(&topic, &records).await?;
    eventually(Duration::from_secs(60), "the records to land", || {
        let db = db.clone();
        async move { influx_ids(&db).await.ok().filter(|ids| ids.len() >= 20) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await; // a statistics round for the lag gauge
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| referenced(l.split(['{', ' ']).next().unwrap_or("")))
        .flat_map(|s| s.into_iter())
        .collect();
    tx.send(()).ok();
    worker.await??;

    let chart = repo_root().join("charts/millrace");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(chart.join("dashboards/millrace.json"))?)?;
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect();
    assert!(exprs.len() >= 14, "the dashboard has its panels");
    let in_dashboard: BTreeSet<String> = exprs.iter().flat_map(|e| referenced(e)).collect();
    let in_alerts = referenced(&std::fs::read_to_string(
        chart.join("templates/prometheusrule.yaml"),
    )?);
    for name in in_dashboard.iter().chain(in_alerts.iter()) {
        assert!(
            exported.contains(name),
            "{name} is referenced but not exported; exported: {exported:?}"
        );
    }
    assert!(in_dashboard.len() >= 15, "{in_dashboard:?}");
    Ok(())
}
