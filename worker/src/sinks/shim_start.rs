//! TEMPORARY (replaced by the sinks restructure): starts every configured sink.

use std::sync::Arc;
use std::time::Duration;

use super::{Acker, ElasticsearchStore, InfluxStore, SinkSender};
use crate::WorkerError;
use crate::config::WorkerConfig;
use crate::http::Pinger;
use crate::metrics::Metrics;

/// Started sinks: where to send outputs, and how to wait for them at shutdown.
#[derive(Debug)]
pub struct Sinks<A: Acker> {
    pub points: Vec<SinkSender<A>>,
    pub documents: Option<SinkSender<A>>,
    pub pingers: Vec<(&'static str, Pinger)>,
    pub tasks: SinkTasks,
}

#[derive(Debug)]
pub struct SinkTasks(Vec<tokio::task::JoinHandle<()>>);

impl SinkTasks {
    pub async fn finish(self, grace: Duration) -> bool {
        let aborts: Vec<_> = self.0.iter().map(|t| t.abort_handle()).collect();
        let done = async {
            for t in self.0 {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, done).await.is_err() {
            for a in aborts {
                a.abort();
            }
            return false;
        }
        true
    }
}

impl<A: Acker + std::fmt::Debug> Sinks<A> {
    pub fn start(config: &WorkerConfig, metrics: &Metrics) -> Result<Self, WorkerError> {
        let capacity = config.batching.max_records.max(1024);
        let mut s = Self {
            points: Vec::new(),
            documents: None,
            pingers: Vec::new(),
            tasks: SinkTasks(Vec::new()),
        };
        if let Some(c) = &config.influxdb {
            let st = Arc::new(InfluxStore::v1(c).map_err(|message| WorkerError::Config {
                key: "sinks.influxdb.ca_file".into(),
                message,
            })?);
            let (tx, rx) = tokio::sync::mpsc::channel(capacity);
            s.pingers.push(("influxdb", crate::http::pinger(st.clone())));
            s.tasks.0.push(tokio::spawn(super::run(
                st,
                rx,
                config.batching.clone(),
                metrics.clone(),
            )));
            s.points.push(tx);
        }
        if let Some(c) = &config.influxdb_v2 {
            let st = Arc::new(InfluxStore::v2(c).map_err(|message| WorkerError::Config {
                key: "sinks.influxdb_v2.ca_file".into(),
                message,
            })?);
            let (tx, rx) = tokio::sync::mpsc::channel(capacity);
            s.pingers.push(("influxdb_v2", crate::http::pinger(st.clone())));
            s.tasks.0.push(tokio::spawn(super::run(
                st,
                rx,
                config.batching.clone(),
                metrics.clone(),
            )));
            s.points.push(tx);
        }
        if let Some(c) = &config.elasticsearch {
            let st = Arc::new(ElasticsearchStore::new(c).map_err(|message| WorkerError::Config {
                key: "sinks.elasticsearch".into(),
                message,
            })?);
            let (tx, rx) = tokio::sync::mpsc::channel(capacity);
            s.pingers.push(("elasticsearch", crate::http::pinger(st.clone())));
            s.tasks.0.push(tokio::spawn(super::run(
                st,
                rx,
                config.batching.clone(),
                metrics.clone(),
            )));
            s.documents = Some(tx);
        }
        Ok(s)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.pingers.iter().map(|(n, _)| *n).collect()
    }
}
