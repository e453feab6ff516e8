//! Live changes without a restart, against the real broker, registry and stores, under load: a new plugin
//! version rolled out mid-stream, broken versions refused, a client topic and binding added, a binding removed.
//! Exact accounting per record id throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use millrace_tests::config::{Binding, TestConfig, bindings_file};
use millrace_tests::e2e::{
    committed, create_db, dead_letters, es_hits, influx_ids, metric_record, metrics_text, probe, produce,
    signal, spawn_worker_process, terminate, wait_points,
};
use millrace_tests::{
    addr, cosign_keygen, cosign_sign, eventually, free_port, oras_push, push_plugin, unique,
};

struct Live {
    uid: String,
    /// The test's repository in the stack's registry.
    repo: String,
    db: String,
    group: String,
    dlq: String,
    dir: tempfile::TempDir,
    port: u16,
}

impl Live {
    async fn new() -> Result<Self> {
        let uid = unique("live").replace('-', "");
        let db = format!("db_{uid}");
        create_db(&db).await?;
        Ok(Self {
            repo: format!("{}/live/{uid}", addr("registry")),
            group: format!("group-{uid}"),
            dlq: format!("dlq-{uid}"),
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
    fn write_bindings(&self, bindings: &[Binding]) {
        self.write_bindings_text(&bindings_file(bindings));
    }

    /// Replaces the bindings file with this text (valid or not).
    fn write_bindings_text(&self, text: &str) {
        let tmp = self.dir.path().join("bindings.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.bindings_path()).unwrap();
    }

    /// A worker of this group reading its bindings from the bindings file, checked every 300 ms.
    fn config(&self) -> TestConfig {
        TestConfig::for_group(&self.group)
            .bindings_file(&self.bindings_path())
            .reload_interval("300ms")
            .influxdb(&self.db)
            .elasticsearch()
            .dead_letter(&self.dlq)
            .metrics_port(self.port)
            .registry_cache(&self.dir.path().join("cache"))
            .batching(|b| b.set("linger", "50ms"))
    }

    fn start(&self) -> millrace_tests::e2e::RunningWorker {
        self.config().start().expect("worker config")
    }

    async fn metrics(&self) -> String {
        metrics_text(self.port).await
    }

    /// Waits until the binding runs the plugin with this manifest digest; returns how long that took.
    async fn wait_active(&self, binding: &str, digest: &str) -> Duration {
        let start = Instant::now();
        let needle = format!("millrace_plugin_info{{binding=\"{binding}\",digest=\"{digest}\"}} 1");
        eventually(
            Duration::from_secs(60),
            &format!("{binding} to run {digest}"),
            || async { self.metrics().await.contains(&needle).then_some(()) },
        )
        .await;
        start.elapsed()
    }
}

/// A named binding of a topic to a plugin, with a smoke sample, allowed to write anything.
fn binding(name: &str, topic: &str, plugin: &str) -> Binding {
    Binding::topic(topic)
        .name(name)
        .plugin(plugin)
        .measurements(["env_", "kafka_records"])
        .indices(["*"])
        .smoke([r#"{"type":"metric","source":"smoke","value":1}"#])
}

/// Record ids in the envelope documents of an index (c-envelope embeds the record value).
async fn envelope_ids(index: &str) -> Result<BTreeSet<u64>> {
    Ok(es_hits(index)
        .await?
        .iter()
        .filter_map(|d| d["_source"]["value"]["rid"].as_u64())
        .collect())
}

/// An always-trapping ABI v1 module: valid, compiles, fails every record.
fn trapping_module(dir: &Path) -> PathBuf {
    let wasm = wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (func (export "millrace_abi_version") (result i32) i32.const 1)
            (func (export "millrace_input") (param i32) (result i32) i32.const 1024)
            (func (export "millrace_process") (param i32 i32) (result i32) unreachable))"#,
    )
    .unwrap();
    let p = dir.join("trap.wasm");
    std::fs::write(&p, wasm).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_version_rolls_out_mid_stream_and_broken_versions_are_refused() -> Result<()> {
    let live = Live::new().await?;
    let repo = &live.repo;
    let v1 = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let v2 = push_plugin(&format!("{repo}:v2"), "c_envelope")?;
    let topic = format!("client-{}", live.uid);
    live.write_bindings(&[binding("acme", &topic, &format!("{repo}@{v1}"))]);
    let (stop, worker) = live.start();

    // Phase 1 under v1.
    produce(&topic, &(0..500).map(metric_record).collect::<Vec<_>>()).await?;
    wait_points(&live.db, 500, Duration::from_secs(60), "phase 1 under v1").await;
    // Load continues while the binding changes to v2 (cold: v2 is not in the cache).
    let producer = {
        let topic = topic.clone();
        tokio::spawn(async move {
            for chunk in 0..10u64 {
                produce(
                    &topic,
                    &(500 + chunk * 50..500 + chunk * 50 + 50)
                        .map(metric_record)
                        .collect::<Vec<_>>(),
                )
                .await?;
                // Pacing, the point of the test: load goes on while the binding changes.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
    };
    live.write_bindings(&[binding("acme", &topic, &format!("{repo}@{v2}"))]);
    let cold = live.wait_active("acme", &v2).await;
    producer.await??;
    // Phase 2, after the switch: v2 only.
    produce(&topic, &(1000..1500).map(metric_record).collect::<Vec<_>>()).await?;

    // Broken v3s: not wasm at all, and a module that traps on every record. Both refused; v2 keeps running.
    let dir = tempfile::tempdir()?;
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, "this is not a WebAssembly module")?;
    let not_wasm = oras_push(&format!("{repo}:v3"), &junk, Some("application/wasm"), None)?;
    let traps = oras_push(
        &format!("{repo}:v3t"),
        &trapping_module(dir.path()),
        Some("application/wasm"),
        None,
    )?;
    for broken in [&not_wasm, &traps] {
        let refused_before = refused(&live).await;
        live.write_bindings(&[binding("acme", &topic, &format!("{repo}@{broken}"))]);
        eventually(
            Duration::from_secs(30),
            "the broken version to be refused",
            || async { (refused(&live).await > refused_before).then_some(()) },
        )
        .await;
    }
    // A broken version stays in the file: it is refused once, not again at every check (300 ms here).
    let refusals = refused(&live).await;
    // A window of some checks, the point of this assertion: nothing is to happen in it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(refused(&live).await, refusals, "a broken version is refused once");
    assert_eq!(
        probe(live.port, "/readyz").await,
        200,
        "still ready after refused rollouts"
    );
    assert!(live.metrics().await.contains(&format!(
        "millrace_plugin_info{{binding=\"acme\",digest=\"{v2}\"}} 1"
    )));
    // Phase 3 with a broken version in the file: still v2.
    produce(&topic, &(1500..2000).map(metric_record).collect::<Vec<_>>()).await?;

    // Every record processed by exactly one version, nothing lost.
    let index = format!("envelope-{topic}");
    let (by_v1, by_v2) = eventually(
        Duration::from_secs(90),
        "all 2000 records in one store or the other",
        || {
            let (db, index) = (live.db.clone(), index.clone());
            async move {
                let v1 = influx_ids(&db).await.ok()?;
                let v2 = envelope_ids(&index).await.ok()?;
                (v1.len() + v2.len() >= 2000).then_some((v1, v2))
            }
        },
    )
    .await;
    assert!(by_v1.is_disjoint(&by_v2), "a record processed by both versions");
    let all: BTreeSet<u64> = by_v1.union(&by_v2).copied().collect();
    assert_eq!(all, (0..2000).collect::<BTreeSet<u64>>(), "lost records");
    assert!((0..500).all(|id| by_v1.contains(&id)), "phase 1 ran on v1");
    assert!(
        (1000..2000).all(|id| by_v2.contains(&id)),
        "after the switch, v2's outputs"
    );
    let dead = dead_letters(&live.dlq, 1).await?;
    assert!(
        dead.is_empty(),
        "nothing dead-lettered because of the rollouts: {dead:?}"
    );

    // Back to v1: warm (in memory).
    live.write_bindings(&[binding("acme", &topic, &format!("{repo}@{v1}"))]);
    let warm = live.wait_active("acme", &v1).await;
    eprintln!("time from binding change to active: cold {cold:?}, warm {warm:?}");
    stop.send(()).ok();
    worker.await??;
    assert_eq!(committed(&live.group, &[&topic])?.get(&topic), Some(&2000));
    Ok(())
}

/// The `millrace plugin ...` command line with the stack's registry over plain HTTP; (exit code, stdout,
/// stderr).
fn plugin_cli(args: &[&str], cache: &Path) -> (i32, String, String) {
    let out = std::process::Command::new(millrace_tests::e2e::millrace_bin())
        .arg("plugin")
        .args(args)
        .arg("--insecure")
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn refusals_for(metrics: &str, reason: &str) -> u64 {
    let needle = format!("millrace_reloads_total{{reason=\"{reason}\",result=\"refused\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Issue 14: a trust policy on the binding's repository. A version signed by an independent cosign-format
/// signer runs; an unsigned version and one signed by an untrusted key are refused at reload with their
/// reasons while the signed version keeps serving; signing the waiting version with `millrace plugin sign`
/// lets it roll out (an unsigned version is tried again: signatures are often pushed after the plugin).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_signed_versions_roll_out_and_the_running_one_keeps_serving() -> Result<()> {
    let live = Live::new().await?;
    let repo = &live.repo;
    let registry = addr("registry");
    let repository = repo.strip_prefix(&format!("{registry}/")).unwrap().to_string();
    let keys = tempfile::tempdir()?;
    let cli_cache = keys.path().join("cli-cache");
    let (independent_key, independent_pub) = cosign_keygen(&keys.path().join("independent"))?;
    let ours = keys.path().join("ours");
    let out = std::process::Command::new(millrace_tests::e2e::millrace_bin())
        .args(["plugin", "keygen"])
        .arg(&ours)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours_key = keys.path().join("ours.key");
    let ours_pub = keys.path().join("ours.pub");
    let (untrusted_key, _) = cosign_keygen(&keys.path().join("untrusted"))?;
    std::fs::write(keys.path().join("v3-config.json"), "{}")?;

    let v1 = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    // v2 would pass the smoke check (as v3 does): only its signature stops it.
    let v2 = push_plugin(&format!("{repo}:v2"), "c_envelope")?;
    cosign_sign(&registry, &repository, &v1, &independent_key)?;
    cosign_sign(&registry, &repository, &v2, &untrusted_key)?;
    let v3 = oras_push(
        &format!("{repo}:v3"),
        &millrace_tests::dist("c_envelope"),
        Some("application/wasm"),
        Some((
            &keys.path().join("v3-config.json"),
            "application/vnd.oci.empty.v1+json",
        )),
    )?;

    let topic = format!("client-{}", live.uid);
    live.write_bindings(&[binding("acme", &topic, &format!("{repo}@{v1}"))]);
    let trust = format!(
        "[[registry.trust]]\nprefix = \"{registry}/live\"\nkeys = [\"{}\", \"{}\"]\n",
        independent_pub.display(),
        ours_pub.display()
    );
    let (stop, worker) = live.config().extra(&trust).start().expect("worker config");
    live.wait_active("acme", &v1).await;
    produce(&topic, &(0..200).map(metric_record).collect::<Vec<_>>()).await?;
    wait_points(
        &live.db,
        200,
        Duration::from_secs(60),
        "records under the signed v1",
    )
    .await;

    for (version, reason) in [(&v2, "bad_signature"), (&v3, "unsigned")] {
        live.write_bindings(&[binding("acme", &topic, &format!("{repo}@{version}"))]);
        eventually(
            Duration::from_secs(30),
            &format!("{reason} to be refused"),
            || async { (refusals_for(&live.metrics().await, reason) > 0).then_some(()) },
        )
        .await;
        let metrics = live.metrics().await;
        assert!(
            metrics.contains(&format!(
                "millrace_plugin_info{{binding=\"acme\",digest=\"{v1}\"}} 1"
            )),
            "v1 keeps serving"
        );
        assert!(
            metrics.contains(&format!(
                "millrace_plugin_verification_failures_total{{what=\"{reason}\"}}"
            )),
            "counted by reason"
        );
    }
    produce(&topic, &(200..400).map(metric_record).collect::<Vec<_>>()).await?;
    wait_points(
        &live.db,
        400,
        Duration::from_secs(60),
        "v1 still serving after the refusals",
    )
    .await;

    // `millrace plugin verify` agrees with the worker; `millrace plugin sign` makes v3 acceptable, and the
    // waiting binding picks it up without another change to the file.
    let pinned = |d: &str| format!("{repo}@{d}");
    let pub_path = ours_pub.to_str().unwrap();
    let (code, _, err) = plugin_cli(&["verify", &pinned(&v3), "--key", pub_path], &cli_cache);
    assert_eq!(code, 1, "unsigned: {err}");
    assert!(err.contains("unsigned"), "{err}");
    let (code, out, err) = plugin_cli(
        &["sign", &pinned(&v3), "--key", ours_key.to_str().unwrap()],
        &cli_cache,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), v3);
    let (code, out, err) = plugin_cli(&["verify", &pinned(&v3), "--key", pub_path], &cli_cache);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("verified with"), "{out}");
    let (code, _, err) = plugin_cli(
        &["verify", &pinned(&v1), "--key", independent_pub.to_str().unwrap()],
        &cli_cache,
    );
    assert_eq!(
        code, 0,
        "the independent signature verifies on the command line too: {err}"
    );
    live.wait_active("acme", &v3).await;

    stop.send(()).ok();
    worker.await??;
    Ok(())
}

async fn refused(live: &Live) -> u64 {
    live.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("millrace_reloads_total{") && l.contains("result=\"refused\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bindings_added_and_removed_take_effect_without_a_restart() -> Result<()> {
    let live = Live::new().await?;
    let repo = &live.repo;
    let v1 = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let first = format!("client-{}-a", live.uid);
    let second = format!("client-{}-b", live.uid);
    let plugin = format!("{repo}@{v1}");
    live.write_bindings(&[binding("a", &first, &plugin)]);
    let (stop, worker) = live.start();
    produce(&first, &(0..300).map(metric_record).collect::<Vec<_>>()).await?;
    wait_points(
        &live.db,
        300,
        Duration::from_secs(60),
        "the first client's records",
    )
    .await;

    // A new client: its topic and binding appear while the worker runs.
    produce(&second, &(10_000..10_300).map(metric_record).collect::<Vec<_>>()).await?;
    live.write_bindings(&[binding("a", &first, &plugin), binding("b", &second, &plugin)]);
    let ids = wait_points(&live.db, 600, Duration::from_secs(90), "the new client's records").await;
    assert!((10_000..10_300).all(|id| ids.contains(&id)));

    // Remove the first client's binding: its new records are not processed and its offsets stay.
    let before = committed(&live.group, &[&first])?.get(&first).copied();
    assert_eq!(before, Some(300));
    live.write_bindings(&[binding("b", &second, &plugin)]);
    eventually(Duration::from_secs(30), "binding a to be gone", || async {
        (!live
            .metrics()
            .await
            .contains("millrace_plugin_info{binding=\"a\""))
        .then_some(())
    })
    .await;
    produce(&first, &(300..400).map(metric_record).collect::<Vec<_>>()).await?;
    produce(&second, &(10_300..10_400).map(metric_record).collect::<Vec<_>>()).await?;
    let ids = eventually(
        Duration::from_secs(60),
        "the remaining client's new records",
        || {
            let db = live.db.clone();
            async move {
                influx_ids(&db)
                    .await
                    .ok()
                    .filter(|ids| (10_300..10_400).all(|id| ids.contains(&id)))
            }
        },
    )
    .await;
    // A window in which the removed binding's records would have landed, the point of this assertion.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids_later = influx_ids(&live.db).await?;
    assert!(
        (300..400).all(|id| !ids.contains(&id) && !ids_later.contains(&id)),
        "removed binding still processed"
    );
    stop.send(()).ok();
    worker.await??;
    assert_eq!(
        committed(&live.group, &[&first])?.get(&first),
        Some(&300),
        "offsets of the removed binding stayed"
    );
    assert_eq!(committed(&live.group, &[&second])?.get(&second), Some(&400));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_bindings_file_is_refused_and_the_last_good_one_stays() -> Result<()> {
    let live = Live::new().await?;
    let repo = &live.repo;
    let v1 = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let topic = format!("client-{}", live.uid);
    live.write_bindings(&[binding("acme", &topic, &format!("{repo}@{v1}"))]);
    let (stop, worker) = live.start();
    live.wait_active("acme", &v1).await;
    live.write_bindings_text("[[bindings]]\nname = \"acme\"\ntopic = ");
    eventually(
        Duration::from_secs(30),
        "the malformed file to be refused",
        || async {
            live.metrics()
                .await
                .contains("millrace_reloads_total{reason=\"invalid_bindings\",result=\"refused\"} 1")
                .then_some(())
        },
    )
    .await;
    produce(&topic, &(0..200).map(metric_record).collect::<Vec<_>>()).await?;
    let ids = wait_points(
        &live.db,
        200,
        Duration::from_secs(60),
        "records under the last good bindings",
    )
    .await;
    assert_eq!(ids, (0..200).collect::<BTreeSet<u64>>());
    stop.send(()).ok();
    worker.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_regex_binding_picks_up_a_client_topic_created_while_running() -> Result<()> {
    let live = Live::new().await?;
    let repo = &live.repo;
    let v1 = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let existing = format!("tenant-{}-one", live.uid);
    produce(&existing, &(0..50).map(metric_record).collect::<Vec<_>>()).await?;
    live.write_bindings(&[Binding::topic_regex(&format!("tenant-{}-.*", live.uid))
        .name("tenants")
        .plugin(&format!("{repo}@{v1}"))
        .measurements(["env_"])]);
    let (stop, worker) = live.start();
    // 15 s alone; over 60 s once in `make test` on 2 cores, with the other files' workers joining their groups.
    wait_points(
        &live.db,
        50,
        Duration::from_secs(120),
        "the existing tenant's records",
    )
    .await;
    let created = format!("tenant-{}-two", live.uid);
    produce(&created, &(100..150).map(metric_record).collect::<Vec<_>>()).await?;
    let ids = wait_points(
        &live.db,
        100,
        Duration::from_secs(90),
        "the new tenant topic's records, without a restart",
    )
    .await;
    assert!((100..150).all(|id| ids.contains(&id)));
    stop.send(()).ok();
    worker.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_applies_a_binding_change_at_once() -> Result<()> {
    let live = Live::new().await?;
    let repo = &live.repo;
    let v1 = push_plugin(&format!("{repo}:v1"), "seed_router")?;
    let v2 = push_plugin(&format!("{repo}:v2"), "seed_compat")?;
    let topic = format!("client-{}", live.uid);
    live.write_bindings(&[binding("acme", &topic, &format!("{repo}@{v1}"))]);
    // A worker process that only looks at its bindings every hour, unless told.
    let file = live.dir.path().join("worker.toml");
    live.config().reload_interval("1h").write(&file)?;
    let child = spawn_worker_process(&file)?;
    live.wait_active("acme", &v1).await;
    live.write_bindings(&[binding("acme", &topic, &format!("{repo}@{v2}"))]);
    // A window in which a worker checking its file would apply the change, the point of this assertion.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!live.metrics().await.contains(&v2), "not applied before SIGHUP");
    signal(&child, "HUP")?;
    let took = live.wait_active("acme", &v2).await;
    eprintln!("SIGHUP to active: {took:?}");
    let status = terminate(child).await?;
    assert!(status.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_moved_to_a_new_digest_rolls_out_under_the_always_policy() -> Result<()> {
    let live = Live::new().await?;
    let tag = format!("{}:stable", live.repo);
    let v1 = push_plugin(&tag, "seed_router")?;
    let topic = format!("client-{}", live.uid);
    live.write_bindings(&[binding("acme", &topic, &tag)]);
    let (tx, worker) = live.config().set("registry", "pull_policy", "always").start()?;
    live.wait_active("acme", &v1).await;
    let v2 = push_plugin(&tag, "seed_compat")?;
    let took = live.wait_active("acme", &v2).await;
    eprintln!("tag move to active: {took:?}");
    tx.send(()).ok();
    worker.await??;
    Ok(())
}

/// A client moving its tag again and again: the first move is followed at once, a second one soon after waits
/// (`reload.min_version_interval`; counted as deferred) while the running version keeps serving, and another
/// client's records keep landing with its plugin never unloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_moving_again_and_again_is_followed_at_most_once_per_interval() -> Result<()> {
    let live = Live::new().await?;
    let tag = format!("{}:stable", live.repo);
    let v1 = push_plugin(&tag, "seed_router")?;
    let steady = push_plugin(&format!("{}:steady", live.repo), "seed_router")?;
    let (mover_topic, steady_topic) = (format!("mover-{}", live.uid), format!("steady-{}", live.uid));
    live.write_bindings(&[
        binding("mover", &mover_topic, &tag),
        binding("steady", &steady_topic, &format!("{}@{steady}", live.repo)),
    ]);
    let (tx, worker) = live
        .config()
        .set("registry", "pull_policy", "always")
        .set("reload", "min_version_interval", "1h")
        .start()?;
    live.wait_active("mover", &v1).await;
    // The first move after a quiet period applies at once.
    let v2 = push_plugin(&tag, "seed_compat")?;
    live.wait_active("mover", &v2).await;
    // The next one, right after, waits: the worker sees it (deferred) and keeps running v2.
    let v3 = push_plugin(&tag, "c_envelope")?;
    let deferred = "millrace_reloads_total{reason=\"too_frequent\",result=\"deferred\"}";
    let text = eventually(
        Duration::from_secs(60),
        "the second move to be seen and deferred",
        || async {
            let text = live.metrics().await;
            text.lines()
                .any(|l| l.starts_with(deferred) && !l.ends_with(" 0"))
                .then_some(text)
        },
    )
    .await;
    let active = |d: &str| format!("millrace_plugin_info{{binding=\"mover\",digest=\"{d}\"}} 1");
    assert!(text.contains(&active(&v2)), "v2 keeps running");
    assert!(
        !text.contains(&active(&v3)),
        "v3 is not loaded within the interval"
    );
    // The other client is served throughout, its plugin never unloaded.
    let records: Vec<_> = (0..50).map(metric_record).collect();
    produce(&steady_topic, &records).await?;
    let ids = wait_points(
        &live.db,
        50,
        Duration::from_secs(60),
        "the steady client's points",
    )
    .await;
    assert!((0..50).all(|id| ids.contains(&id)));
    let text = live.metrics().await;
    assert!(
        text.contains("millrace_compiled_plugin_unloads_total 0"),
        "no plugin unloaded: {:?}",
        text.lines()
            .find(|l| l.starts_with("millrace_compiled_plugin_unloads_total"))
    );
    assert!(
        !text.contains(&active(&v3)),
        "still v2 after the other client's records"
    );
    tx.send(()).ok();
    worker.await??;
    Ok(())
}

/// A bindings file changed so that a binding's regex also matches the dead-letter topic: the change is refused
/// (its dead letters would be processed again, forever) and the binding keeps its previous topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_that_would_consume_the_dead_letter_topic_is_refused() -> Result<()> {
    let live = Live::new().await?;
    let digest = push_plugin(&format!("{}:v1", live.repo), "seed_router")?;
    let plugin = format!("{}@{digest}", live.repo);
    let topic = format!("client-{}", live.uid);
    live.write_bindings(&[binding("acme", &topic, &plugin)]);
    let (tx, worker) = live.start();
    live.wait_active("acme", &digest).await;
    // `dlq-<uid>` is this worker's dead-letter topic.
    let greedy = Binding::topic_regex(&format!(".*{}", live.uid))
        .name("acme")
        .plugin(&plugin)
        .measurements(["env_"]);
    live.write_bindings(&[greedy]);
    let refused = "millrace_reloads_total{reason=\"dead_letter_topic\",result=\"refused\"}";
    eventually(Duration::from_secs(30), "the change to be refused", || async {
        live.metrics()
            .await
            .lines()
            .any(|l| l.starts_with(refused) && !l.ends_with(" 0"))
            .then_some(())
    })
    .await;
    // The previous version still serves its topic.
    produce(&topic, &[metric_record(1)]).await?;
    let ids = wait_points(&live.db, 1, Duration::from_secs(60), "the topic's point").await;
    assert!(ids.contains(&1));
    tx.send(()).ok();
    worker.await??;
    Ok(())
}
