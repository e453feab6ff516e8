//! Every configured sink started from the configuration in one call ([`Sinks::start`]): the stores are built
//! first (so that a bad `ca_file` or URL starts nothing), then each gets its queue and its driver task. The
//! pipeline gets back where to send outputs, the reachability checks for `/readyz`, and the tasks to wait for
//! at shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinHandle;

use super::{Acker, ElasticsearchStore, InfluxStore, SinkError, SinkSender, Store, driver};
use crate::config::WorkerConfig;
use crate::metrics::Metrics;

/// Started sinks: where to send outputs, and how to wait for them at shutdown.
#[derive(Debug)]
pub struct Sinks<A: Acker> {
    /// Every configured InfluxDB sink (v1, then v2) gets every point.
    pub points: Vec<SinkSender<A>>,
    /// The Elasticsearch sink, if configured.
    pub documents: Option<SinkSender<A>>,
    /// (name, reachability check) of each store, for /readyz; names are "influxdb", "influxdb_v2",
    /// "elasticsearch".
    pub pingers: Vec<(&'static str, Pinger)>,
    pub tasks: SinkTasks,
}

impl<A: Acker> Sinks<A> {
    /// Builds every configured store and spawns its driver; must be called inside a tokio runtime. Fails,
    /// starting nothing, when a store cannot be built from its configuration (the error names the key).
    pub fn start(config: &WorkerConfig, metrics: &Metrics) -> Result<Self, SinkError> {
        let influxdb = config.influxdb.as_ref().map(InfluxStore::v1).transpose()?;
        let influxdb_v2 = config.influxdb_v2.as_ref().map(InfluxStore::v2).transpose()?;
        let elasticsearch = config
            .elasticsearch
            .as_ref()
            .map(ElasticsearchStore::new)
            .transpose()?;
        let mut sinks = Self {
            points: Vec::new(),
            documents: None,
            pingers: Vec::new(),
            tasks: SinkTasks { tasks: Vec::new() },
        };
        for store in [influxdb, influxdb_v2].into_iter().flatten() {
            let tx = sinks.spawn(store, config, metrics);
            sinks.points.push(tx);
        }
        if let Some(store) = elasticsearch {
            sinks.documents = Some(sinks.spawn(store, config, metrics));
        }
        Ok(sinks)
    }

    /// The names of the started sinks (metric labels).
    pub fn names(&self) -> Vec<&'static str> {
        self.pingers.iter().map(|(n, _)| *n).collect()
    }

    fn spawn<S: Store>(&mut self, store: S, config: &WorkerConfig, metrics: &Metrics) -> SinkSender<A> {
        // Chunks (one per record and sink) waiting for a sink: bounded, so a slow store backs up into the lanes.
        let capacity = config.batching.max_records.max(1024);
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let store = Arc::new(store);
        let name = store.name();
        self.pingers.push((name, pinger(store.clone())));
        let task = tokio::spawn(driver::run(store, rx, config.batching.clone(), metrics.clone()));
        self.tasks.tasks.push((name, task));
        tracing::info!(sink = name, "sink started");
        tx
    }
}

/// The driver tasks of the started sinks.
#[derive(Debug)]
pub struct SinkTasks {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl SinkTasks {
    /// Waits until every sink wrote what it was given (all senders dropped), up to `grace`, then aborts the
    /// rest; true if all finished. Outputs of an aborted sink stay unacknowledged: their records are not
    /// committed and are delivered again.
    pub async fn finish(self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        let mut unfinished = Vec::new();
        for (name, mut task) in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(sink = name, error = %e, "sink task failed"),
                Err(_) => {
                    task.abort();
                    unfinished.push(name);
                }
            }
        }
        if !unfinished.is_empty() {
            tracing::warn!(sinks = ?unfinished, ?grace,
                "stores did not take the last outputs in time; they will be delivered again");
        }
        unfinished.is_empty()
    }
}

type PingFn = dyn Fn() -> BoxFuture<'static, bool> + Send + Sync;

/// A store's reachability check.
#[derive(Clone)]
pub struct Pinger(Arc<PingFn>);

impl Pinger {
    /// True when the store answers.
    pub async fn ping(&self) -> bool {
        (self.0)().await
    }
}

impl std::fmt::Debug for Pinger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pinger")
    }
}

/// The reachability check of a store.
pub fn pinger<S: Store>(store: Arc<S>) -> Pinger {
    Pinger(Arc::new(move || {
        let s = store.clone();
        Box::pin(async move { s.ping().await })
    }))
}
