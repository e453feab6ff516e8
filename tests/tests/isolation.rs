//! Isolation between clients, against the real broker, registry and stores: a topic regex takes whole topic
//! names only; a live reload that would give a topic to two bindings is refused and the previous bindings keep
//! serving; and a topic that two regex bindings match (too large to compare when loaded) is processed by
//! neither, its offsets held until the bindings are fixed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use millrace_tests::config::{Binding, TestConfig, bindings_file};
use millrace_tests::e2e::{committed, create_db, influx_ids, metric_record, metrics_text, produce};
use millrace_tests::{addr, eventually, free_port, push_plugin, unique};

struct Iso {
    uid: String,
    db: String,
    group: String,
    dir: tempfile::TempDir,
    port: u16,
    plugin: String,
}

impl Iso {
    async fn new() -> Result<Self> {
        let uid = unique("iso").replace('-', "");
        let db = format!("db_{uid}");
        create_db(&db).await?;
        let plugin = push_plugin(&format!("{}/iso/{uid}:v1", addr("registry")), "seed_router")?;
        Ok(Self {
            plugin: format!("{}/iso/{uid}@{plugin}", addr("registry")),
            group: format!("group-{uid}"),
            db,
            uid,
            dir: tempfile::tempdir()?,
            port: free_port(),
        })
    }

    fn bindings_path(&self) -> PathBuf {
        self.dir.path().join("bindings.toml")
    }

    /// Replaces the bindings file the way a ConfigMap update does: a new file renamed over the old one.
    /// `bindings`: name, `topic` or `topic_regex`, its value.
    fn write_bindings(&self, bindings: &[(&str, &str, &str)]) {
        let bindings: Vec<Binding> = bindings
            .iter()
            .map(|(name, field, value)| {
                let b = if *field == "topic_regex" {
                    Binding::topic_regex(value)
                } else {
                    Binding::topic(value)
                };
                b.name(name).plugin(&self.plugin).measurements(["env"])
            })
            .collect();
        let tmp = self.dir.path().join("bindings.toml.new");
        std::fs::write(&tmp, bindings_file(&bindings)).unwrap();
        std::fs::rename(&tmp, self.bindings_path()).unwrap();
    }

    /// A worker of this test's group reading its bindings from the bindings file, checked every 300 ms.
    fn start(&self) -> millrace_tests::e2e::RunningWorker {
        TestConfig::for_group(&self.group)
            .bindings_file(&self.bindings_path())
            .reload_interval("300ms")
            .influxdb(&self.db)
            .dead_letter(&format!("dlq-{}", self.uid))
            .metrics_port(self.port)
            .registry_cache(&self.dir.path().join("cache"))
            .batching(|b| b.set("linger", "50ms"))
            .start()
            .expect("worker config")
    }

    async fn metrics(&self) -> String {
        metrics_text(self.port).await
    }

    async fn wait_metric(&self, line: &str) {
        eventually(Duration::from_secs(60), line, || async {
            self.metrics().await.lines().any(|l| l == line).then_some(())
        })
        .await
    }

    /// Waits until the store holds every id of `ids`; returns all the ids it holds.
    async fn wait_ids(&self, what: &str, ids: impl Iterator<Item = u64> + Clone) -> BTreeSet<u64> {
        eventually(Duration::from_secs(90), what, || {
            let (db, ids) = (self.db.clone(), ids.clone());
            async move {
                let have = influx_ids(&db).await.ok()?;
                let mut ids = ids;
                ids.all(|id| have.contains(&id)).then_some(have)
            }
        })
        .await
    }
}

fn records(ids: std::ops::Range<u64>) -> Vec<(String, Vec<u8>)> {
    ids.map(metric_record).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_giving_a_topic_to_two_bindings_is_refused_and_the_previous_bindings_keep_serving()
-> Result<()> {
    let iso = Iso::new().await?;
    let a = format!("iso{}-a", iso.uid);
    let ab = format!("iso{}-ab", iso.uid);
    produce(&a, &records(0..100)).await?;
    produce(&ab, &records(1000..1100)).await?;
    // A regex binding of `a`: before whole-name matching it also took `ab`.
    iso.write_bindings(&[("a", "topic_regex", &a)]);
    let (stop, worker) = iso.start();
    iso.wait_ids("the records of `a`", 0..100).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        influx_ids(&iso.db).await?,
        (0..100).collect::<BTreeSet<u64>>(),
        "the regex `{a}` took records of `{ab}`"
    );

    // `ab` gets a binding of its own: no overlap.
    iso.write_bindings(&[("a", "topic_regex", &a), ("ab", "topic", &ab)]);
    iso.wait_ids("the records of `ab`, under its own binding", 1000..1100)
        .await;

    // A third binding whose regex takes both topics: the whole reload is refused.
    let intruder = format!("iso{}-a.*", iso.uid);
    iso.write_bindings(&[
        ("a", "topic_regex", &a),
        ("ab", "topic", &ab),
        ("intruder", "topic_regex", &intruder),
    ]);
    iso.wait_metric("millrace_reloads_total{reason=\"invalid_bindings\",result=\"refused\"} 1")
        .await;
    assert!(
        !iso.metrics()
            .await
            .contains("millrace_plugin_info{binding=\"intruder\""),
        "the overlapping binding was applied"
    );

    // The previous bindings keep serving, each its own topic.
    produce(&a, &records(100..200)).await?;
    produce(&ab, &records(1100..1200)).await?;
    iso.wait_ids(
        "new records under the previous bindings",
        (100..200).chain(1100..1200),
    )
    .await;
    iso.wait_metric("millrace_records_in_total{binding=\"a\"} 200")
        .await;
    iso.wait_metric("millrace_records_in_total{binding=\"ab\"} 200")
        .await;
    let m = iso.metrics().await;
    assert!(
        !m.contains("millrace_records_in_total{binding=\"intruder\""),
        "{m}"
    );
    stop.send(()).ok();
    worker.await??;
    let c = committed(&iso.group, &[&a, &ab])?;
    assert_eq!((c.get(&a), c.get(&ab)), (Some(&200), Some(&200)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_two_regex_bindings_match_is_processed_by_neither_and_not_committed() -> Result<()> {
    let iso = Iso::new().await?;
    let wide = format!("iso{}-.*", iso.uid);
    // "an `a` 20 characters before the end": a DFA too large to compare when loading.
    let narrow = format!("iso{}-[a-z]*a[a-z]{{20}}", iso.uid);
    let both = format!("iso{}-{}", iso.uid, "a".repeat(21));
    let solo = format!("iso{}-solo", iso.uid);
    produce(&both, &records(0..50)).await?;
    produce(&solo, &records(100..150)).await?;
    iso.write_bindings(&[("wide", "topic_regex", &wide), ("narrow", "topic_regex", &narrow)]);
    let (stop, worker) = iso.start();
    iso.wait_ids("the records of the topic only `wide` matches", 100..150)
        .await;
    iso.wait_metric("millrace_records_unrouted_total{reason=\"ambiguous_binding\"} 50")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids = influx_ids(&iso.db).await?;
    assert!(
        (0..50).all(|id| !ids.contains(&id)),
        "a record of a topic two bindings match was processed"
    );
    let m = iso.metrics().await;
    assert!(
        m.contains("millrace_records_in_total{binding=\"wide\"} 50")
            && !m.contains("millrace_records_in_total{binding=\"narrow\""),
        "{m}"
    );
    stop.send(()).ok();
    worker.await??;
    let c = committed(&iso.group, &[&both, &solo])?;
    assert_eq!(
        c.get(&both).copied().unwrap_or(0),
        0,
        "offsets of the ambiguous topic were committed"
    );
    assert_eq!(c.get(&solo), Some(&50));

    // Fixed bindings: the held records are delivered again, and processed once.
    iso.write_bindings(&[("wide", "topic_regex", &wide)]);
    let (stop, worker) = iso.start();
    iso.wait_ids("the held records, under the fixed bindings", 0..50)
        .await;
    stop.send(()).ok();
    worker.await??;
    assert_eq!(committed(&iso.group, &[&both])?.get(&both), Some(&50));
    Ok(())
}
