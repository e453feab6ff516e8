//! The whole path of a record, one file per stage:
//!
//! 1. **source** (`kafka.rs`, the poll thread): takes a record from an assigned partition, registers it with
//!    the partition's tracker (`offsets.rs`) as an [`ack::InFlight`] holding one [`ack::Share`] (its
//!    processing), and hands it to the lane its partition maps to (records of a partition stay in order;
//!    partitions spread over the lanes, one per core); when partitions are assigned, their topics' ids
//!    (KIP-516) are looked up for default document ids (`topic_ids.rs`);
//! 2. **lane** (`lane.rs`): runs the record through its binding's plugin instance; a rejected or failed
//!    record goes to the dead-letter topic with its kind (`dead_letter.rs`);
//! 3. **router** (`router.rs`): checks each output against the binding's allowed indices and measurements,
//!    gives it a deterministic id / default timestamp, and queues it to its sinks with a share of the record;
//!    outputs not allowed dead-letter the record;
//! 4. **sinks** (`crate::sinks`): batches are written; each item's share is acknowledged as written, or
//!    dead-lettered when the store refuses it;
//! 5. **acks** (`ack.rs`): when the last share of a record is given back the record is finished in its
//!    tracker; a share dropped without being given back dead-letters the record as `unacknowledged` instead
//!    of stalling the partition;
//! 6. **offsets** (`offsets.rs`, `kafka.rs`): the poll thread stores each partition's committable offset
//!    (never past an unfinished record) and librdkafka commits it. Partitions with too many records in flight
//!    are paused until they drain.
//!
//! `supervisor.rs` watches the poll and lane threads: one that exits or panics makes `/healthz` fail and
//! `run()` drain and return an error. `run()` below wires the stages together and shuts them down in order.

pub mod ack;
mod backpressure;
pub mod dead_letter;
pub mod kafka;
mod lane;
pub mod offsets;
mod router;
mod scheduler;
pub mod supervisor;
mod topic_ids;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use millrace_plugin_registry::{PluginStore, RegistryMetrics};
use millrace_runtime::{EngineConfig, Runtime};

use self::ack::Share;
use self::dead_letter::DeadLetters;
use self::kafka::{Poll, SourceContext, Trackers};
use self::lane::Lane;
use self::router::Router;
use self::supervisor::Supervisor;
use crate::WorkerError;
use crate::bindings::{self, Reloader};
use crate::config::WorkerConfig;
use crate::health::Health;
use crate::http::Readiness;
use crate::metrics::Metrics;
use crate::resident::Residency;
use crate::sinks;

/// How long the stores get, after the drain, to write the last outputs at shutdown. The drain already waited
/// up to `drain_timeout` for every record's outputs: what is left is a store that is down or slow, whose
/// records stay uncommitted and are delivered again; the whole shutdown stays within `drain_timeout` plus a
/// few seconds.
const SINK_GRACE: Duration = Duration::from_secs(2);

/// Runs a worker until `shutdown` resolves: loads plugins, serves `/metrics`, `/healthz` and `/readyz`,
/// consumes, processes, writes, commits; then drains and commits what is in flight and leaves the group.
/// Returns an error, after draining what it can, when a pipeline thread died.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let metrics = Metrics::new()?;
    let registry_metrics = RegistryMetrics::new(&metrics.registry)?;
    // Slots from the memory budget; one core per compilation (loads run a few at a time, beside the lanes).
    let runtime = Runtime::new(EngineConfig {
        max_instances: config.pipeline.instance_slots(),
        parallel_compilation: false,
        ..EngineConfig::default()
    })?;
    let store = PluginStore::new(config.registry.clone(), runtime, registry_metrics).map_err(|error| {
        WorkerError::Plugin {
            binding: "*".into(),
            error: Box::new(error),
        }
    })?;
    let residency = Residency::new(
        config.pipeline.compiled_plugins_budget(),
        store.clone(),
        tokio::runtime::Handle::current(),
        metrics.clone(),
    );
    let mut reloader = Reloader::start(
        store,
        residency.clone(),
        metrics.clone(),
        config.bindings_file.clone(),
        config.bindings.clone(),
        config.min_version_interval,
        config.dead_letter_topic.clone(),
    )
    .await?;
    let table = reloader.table();

    // The worker's health: failed by a pipeline thread that dies, or a dead-letter topic that cannot be written.
    let health = Health::new();
    let dlq = DeadLetters::new(
        &config.kafka,
        &config.dead_letter_topic,
        metrics.clone(),
        tokio::runtime::Handle::current(),
        health.clone(),
    )?;

    let sinks = sinks::Sinks::<Share>::start(&config, &metrics)?;
    metrics.initialize(&sinks.names());
    let router = Router::new(sinks.points, sinks.documents);

    // Observability endpoints.
    let supervisor = Supervisor::new(health.clone(), metrics.clone());
    let joined = Arc::new(AtomicBool::new(false));
    let readiness = Readiness {
        joined: joined.clone(),
        table: table.clone(),
        stores: sinks.pingers,
    };
    let http = crate::http::serve(config.metrics_address, metrics.clone(), readiness, health.clone()).await?;

    // Lanes: each keeps at most its share of the engine's instance slots live, leaving a few for plugin loads
    // and smoke checks.
    let stop = Arc::new(AtomicBool::new(false));
    let lanes = config.pipeline.lanes.max(1);
    let max_live = config.pipeline.live_instances_per_lane();
    let mut lane_senders = Vec::new();
    let mut lane_threads = Vec::new();
    for i in 0..lanes {
        let (tx, rx) = mpsc::channel::<Vec<Share>>();
        let lane = Lane::new(
            table.clone(),
            router.clone(),
            metrics.clone(),
            lane::Capacity {
                max_live,
                memory: config.pipeline.instance_memory_per_lane(),
            },
            residency.clone(),
            stop.clone(),
        );
        lane_threads.push(supervisor.spawn("lane", format!("millrace-lane-{i}"), move || lane.run(rx))?);
        lane_senders.push(tx);
    }
    drop(router);

    // The consumer thread.
    let trackers: Trackers = Default::default();
    let context = SourceContext {
        trackers: trackers.clone(),
        metrics: metrics.clone(),
        drain_timeout: config.pipeline.drain_timeout,
        joined,
        stopping: stop.clone(),
    };
    let consumer = kafka::consumer(&config, &bindings::subscriptions(&table.snapshot()), context)?;
    let poll = Poll {
        consumer,
        trackers,
        lanes: lane_senders,
        table: table.clone(),
        metrics: metrics.clone(),
        fallback: Arc::new(dlq.clone()),
        stop: stop.clone(),
        limits: backpressure::Limits {
            max_records_per_partition: config.pipeline.max_in_flight_per_partition,
            max_bytes: config.pipeline.max_bytes_in_flight(),
            max_bytes_per_binding: config.pipeline.max_bytes_per_binding(),
        },
        drain_timeout: config.pipeline.drain_timeout,
    };
    let poll = supervisor.spawn("poll", "millrace-poll".into(), move || poll.run())?;

    // Live changes: the bindings file and moved tags are checked every interval, and at once on SIGHUP.
    let reloads = {
        let interval = config.reload_interval;
        tokio::spawn(async move {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            // The first load, at once: bindings are published as they are ready.
            reloader.reload(true).await;
            loop {
                let force = tokio::select! {
                    _ = tokio::time::sleep(interval) => false,
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                        tracing::info!("SIGHUP: reloading bindings");
                        true
                    }
                };
                reloader.reload(force).await;
            }
        })
    };

    let failure = tokio::select! {
        () = shutdown => None,
        f = health.failed() => Some(f),
    };
    reloads.abort();
    match &failure {
        None => tracing::info!("shutting down: draining in-flight records"),
        Some(f) => {
            tracing::error!(failure = %f, "a pipeline thread died: draining what can be drained, then exiting")
        }
    }
    supervisor.stopping();
    stop.store(true, Ordering::Release);
    let _ = tokio::task::spawn_blocking(move || poll.join()).await;
    // The last offsets are committed: shares dropped from now on leave their records to be delivered again.
    dlq.close();
    // Lanes finish their queues, then the sinks theirs. A store that is still down after the grace period
    // keeps its records unfinished: they were not committed and will be delivered again.
    let lanes_done = tokio::task::spawn_blocking(move || {
        for t in lane_threads {
            let _ = t.join();
        }
    });
    if !sinks.tasks.finish(SINK_GRACE).await {
        tracing::warn!("stores did not take the last outputs in time; they will be delivered again");
    }
    let _ = lanes_done.await;
    let d = dlq.clone();
    let _ = tokio::task::spawn_blocking(move || d.flush(Duration::from_secs(10))).await;
    http.abort();
    match failure {
        None => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(reason) => Err(WorkerError::Unhealthy { reason }),
    }
}
