//! The Grafana dashboard and the alert rules shipped in the Helm chart reference only metrics a running
//! worker really exports: checked against a live `/metrics` of a worker that processed records.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use millrace_tests::config::{Binding, TestConfig};
use millrace_tests::e2e::{create_db, metrics_text, produce, wait_points};
use millrace_tests::{addr, eventually, free_port, push_plugin, repo_root, unique};
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
    let digest = push_plugin(&format!("{registry}/dash/router:v1"), "seed_router")?;
    let topic = format!("client-{uid}");
    let port = free_port();
    let cache = tempfile::tempdir()?;
    let (tx, worker) = TestConfig::for_group(&format!("group-{uid}"))
        .set("kafka", "statistics_interval", "1s")
        .binding(
            Binding::topic(&topic)
                .plugin(&format!("{registry}/dash/router@{digest}"))
                .measurements(["env_"])
                .indices(["*"]),
        )
        .influxdb(&db)
        .elasticsearch()
        .dead_letter(&format!("dlq-{uid}"))
        .metrics_port(port)
        .registry_cache(cache.path())
        .batching(|b| b.set("linger", "50ms"))
        .start()?;
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
    wait_points(&db, 20, Duration::from_secs(60), "the records to land").await;
    // The lag gauge appears with a statistics round after the records were consumed.
    let text = eventually(
        Duration::from_secs(30),
        "a statistics round (the consumer lag gauge)",
        || async {
            let text = metrics_text(port).await;
            text.contains("millrace_consumer_lag{").then_some(text)
        },
    )
    .await;
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
