//! Bounded memory against the real broker and stores: with the document store down, a client producing large
//! records fills only its own share of `pipeline.memory_budget` (its partitions pause at a quarter of the
//! in-flight quarter of the budget), while another client's records keep flowing to InfluxDB; when the store
//! comes back, every record lands, exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use millrace_tests::config::{Binding, TestConfig};
use millrace_tests::e2e::{
    committed, create_db, metric_record, metric_value, produce, wait_docs, wait_points,
};
use millrace_tests::{TcpProxy, addr, free_port, push_plugin, unique};
use serde_json::json;

/// 64 MiB of budget: 16 MiB for records in flight, 4 MiB of it for one binding.
const BUDGET: &str = "64MiB";
const BINDING_SHARE: f64 = (64u64 << 20) as f64 / 16.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_cannot_fill_the_memory_budget_while_a_store_is_down() -> Result<()> {
    let uid = unique("mem").replace('-', "");
    let db = format!("db_{uid}");
    create_db(&db).await?;
    let registry = addr("registry");
    let digest = push_plugin(&format!("{registry}/mem/router:v1"), "seed_router")?;
    let router = format!("{registry}/mem/router@{digest}");
    let (big, small) = (format!("big-{uid}"), format!("small-{uid}"));
    let proxy = TcpProxy::start(&addr("elasticsearch")).await?;
    proxy.set_down(true);
    let cache = tempfile::tempdir()?;
    let port = free_port();
    let group = format!("group-{uid}");
    let (stop, worker) = TestConfig::for_group(&group)
        .binding(
            Binding::topic(&big)
                .plugin(&router)
                .indices([format!("svc{uid}-")]),
        )
        .binding(Binding::topic(&small).plugin(&router).measurements(["env_"]))
        .influxdb(&db)
        .elasticsearch_urls([format!("http://{}", proxy.addr)])
        .dead_letter(&format!("dlq-{uid}"))
        .metrics_port(port)
        .registry_cache(cache.path())
        .batching(|b| b.set("linger", "50ms").set("retry_max_backoff", "1s"))
        .pipeline(|p| p.set("memory_budget", BUDGET))
        .start()?;

    // 600 records of ~20 KB (12 MB) from the big client: three times its share.
    let pad = "x".repeat(20_000);
    let logs: Vec<(String, Vec<u8>)> = (0..600u64)
        .map(|id| {
            (
                format!("k{id}"),
                json!({"type": "log", "service": format!("svc{uid}"), "rid": id, "pad": pad})
                    .to_string()
                    .into_bytes(),
            )
        })
        .collect();
    produce(&big, &logs).await?;

    // The big client fills its share and pauses; memory stays near its share all the while.
    let mut peak: f64 = 0.0;
    let mut paused_for_binding = false;
    for _ in 0..40 {
        // Watched every 250 ms for 10 s: the store stays down meanwhile, which is the point.
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(
            metric_value(port, "millrace_in_flight_bytes ")
                .await
                .unwrap_or(0.0),
        );
        paused_for_binding |= metric_value(port, "millrace_pauses_total{reason=\"binding\"}")
            .await
            .unwrap_or(0.0)
            > 0.0;
    }
    eprintln!("peak bytes in flight: {peak} (the binding's share: {BINDING_SHARE})");
    assert!(
        peak > BINDING_SHARE / 2.0,
        "the big client filled its share ({peak} bytes in flight at most)"
    );
    assert!(
        peak <= BINDING_SHARE + 256.0 * 1024.0,
        "{peak} bytes in flight: more than the binding's share of {BINDING_SHARE}"
    );
    assert!(
        paused_for_binding,
        "its partitions paused for the binding's share"
    );

    // Meanwhile the other client is not held back.
    let metrics: Vec<_> = (0..100).map(metric_record).collect();
    produce(&small, &metrics).await?;
    let got = wait_points(&db, 100, Duration::from_secs(60), "the small client's 100 points").await;
    assert_eq!(got, (0..100).collect::<BTreeSet<u64>>());

    // The store comes back: everything lands, exactly once.
    proxy.set_down(false);
    let index = format!("svc{uid}-logs-daily");
    let docs = wait_docs(&index, 600, Duration::from_secs(120), "all 600 documents").await;
    let ids: BTreeSet<u64> = docs.iter().map(|(rid, _)| *rid).collect();
    assert_eq!(ids, (0..600).collect::<BTreeSet<u64>>());
    assert_eq!(docs.len(), 600, "no duplicates");
    stop.send(()).ok();
    worker.await??;
    let c = committed(&group, &[&big, &small])?;
    assert_eq!(c.get(&big), Some(&600));
    assert_eq!(c.get(&small), Some(&100));
    Ok(())
}
