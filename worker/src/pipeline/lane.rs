//! Stage 2 of the pipeline, the lane: a thread that runs records through their binding's plugin. A lane
//! keeps one plugin instance per binding version it has seen (dropped when that version leaves the binding
//! table), counts per-binding metrics, forwards plugin log lines to `tracing`, and hands accepted outputs to
//! the router; rejected and failed records go to the dead-letter topic with their kind. A record whose topic
//! belongs to no binding (removed), or to two (ambiguous), is not processed and its offset is not committed.

use std::collections::HashMap;
use std::sync::Arc;

use millrace_runtime::{Header, PluginInstance, Record, Verdict};

use super::ack::{InFlight, Share};
use super::router::Router;
use crate::bindings::{self, Ambiguous, Binding, BindingTable};
use crate::kinds::DeadLetterKind;
use crate::metrics::Metrics;

/// Metric handles of one binding, resolved once (label lookups are not free on the per-record path).
#[derive(Debug)]
pub(super) struct BindingMetrics {
    records_in: prometheus::IntCounter,
    accepted: prometheus::IntCounter,
    rejected: prometheus::IntCounter,
    failed: prometheus::IntCounter,
    pub(super) points: prometheus::IntCounter,
    pub(super) documents: prometheus::IntCounter,
    duration: prometheus::Histogram,
    fuel: prometheus::Histogram,
    logs_dropped: prometheus::IntCounter,
}

impl BindingMetrics {
    fn new(m: &Metrics, name: &str, digest: &str) -> Self {
        let this = Self {
            records_in: m.records_in.with_label_values(&[name]),
            accepted: m.records_processed.with_label_values(&[name, "accepted"]),
            rejected: m.records_processed.with_label_values(&[name, "rejected"]),
            failed: m.records_processed.with_label_values(&[name, "failed"]),
            points: m.outputs.with_label_values(&[name, digest, "point"]),
            documents: m.outputs.with_label_values(&[name, digest, "document"]),
            duration: m.plugin_duration.with_label_values(&[name]),
            fuel: m.plugin_fuel.with_label_values(&[name]),
            logs_dropped: m.plugin_logs_dropped.with_label_values(&[name]),
        };
        for kind in millrace_runtime::PluginError::RECORD_KINDS {
            if *kind != "instantiate" {
                m.plugin_errors.with_label_values(&[name, kind]);
            }
        }
        this
    }
}

/// A processing lane: a thread with its own plugin instances.
pub(super) struct Lane {
    table: Arc<BindingTable>,
    /// One instance per binding version (id); dropped when that version leaves the table.
    instances: HashMap<u64, (PluginInstance, BindingMetrics)>,
    seen_generation: u64,
    /// The binding of each topic seen, for the table of `seen_generation`.
    routes: HashMap<Arc<str>, Result<Option<Arc<Binding>>, Ambiguous>>,
    router: Router,
    metrics: Metrics,
    unrouted_no_binding: prometheus::IntCounter,
    unrouted_ambiguous: prometheus::IntCounter,
}

impl Lane {
    pub(super) fn new(table: Arc<BindingTable>, router: Router, metrics: Metrics) -> Self {
        Self {
            table,
            instances: HashMap::new(),
            seen_generation: 0,
            routes: HashMap::new(),
            router,
            unrouted_no_binding: metrics.records_unrouted.with_label_values(&["no_binding"]),
            unrouted_ambiguous: metrics.records_unrouted.with_label_values(&["ambiguous_binding"]),
            metrics,
        }
    }

    /// Runs one record: its processing share is given back here, whatever happens.
    pub(super) fn process(&mut self, share: Share) {
        let rec = share.record().clone();
        if rec.tracker().is_revoked() {
            // The partition moved to another worker, which will deliver the record again.
            share.redeliver();
            return;
        }
        let generation = self.table.generation();
        let table = self.table.snapshot();
        if generation != self.seen_generation {
            // Versions that left the table: their instances go.
            self.instances.retain(|id, _| table.iter().any(|b| b.id == *id));
            self.routes.clear();
            self.seen_generation = generation;
        }
        let route = match self.routes.get(&rec.topic) {
            Some(r) => r.clone(),
            None => {
                let r = bindings::find(&table, &rec.topic);
                if let Err(e) = &r {
                    self.table.report_ambiguous(&rec.topic, e);
                }
                self.routes.insert(rec.topic.clone(), r.clone());
                r
            }
        };
        let binding = match route {
            Ok(Some(b)) => b,
            Ok(None) => {
                // The binding was removed: the record is not processed and its offset is not committed.
                self.unrouted_no_binding.inc();
                share.abandon();
                return;
            }
            Err(_) => {
                // Two bindings match the topic: neither processes it, and its offset is not committed.
                self.unrouted_ambiguous.inc();
                share.abandon();
                return;
            }
        };
        let _ = rec.plugin.set((binding.name.clone(), binding.digest.clone()));
        let name = binding.config.name.as_str();
        if !self.instances.contains_key(&binding.id) {
            match binding.plugin.instance(binding.config.limits.clone()) {
                Ok(i) => {
                    let bm = BindingMetrics::new(&self.metrics, name, &binding.digest);
                    self.instances.insert(binding.id, (i, bm));
                }
                Err(e) => {
                    share.dead_letter(DeadLetterKind::of_plugin_error(&e), e.to_string());
                    return;
                }
            }
        }
        let Some((instance, bm)) = self.instances.get_mut(&binding.id) else {
            // Inserted just above: unreachable; the dropped share would dead-letter the record visibly.
            return;
        };
        bm.records_in.inc();
        let headers = Header::borrow_all(&rec.headers);
        let processed = instance.process(&Record {
            topic: &rec.topic,
            partition: rec.partition,
            offset: rec.offset,
            timestamp_ms: rec.timestamp_ms,
            key: rec.key.as_deref(),
            value: rec.value.as_deref(),
            headers: &headers,
        });
        bm.duration.observe(processed.elapsed.as_secs_f64());
        bm.fuel.observe(processed.fuel_used as f64);
        if processed.logs_dropped > 0 {
            bm.logs_dropped.inc_by(u64::from(processed.logs_dropped));
        }
        for l in &processed.logs {
            forward_log(name, &rec, l);
        }
        match processed.result {
            Ok(Verdict::Accepted(outputs)) => {
                bm.accepted.inc();
                self.router.route(&binding, &share, outputs, bm);
                share.finish();
            }
            Ok(Verdict::Rejected { reason }) => {
                bm.rejected.inc();
                share.dead_letter(DeadLetterKind::InvalidInput, reason);
            }
            Err(e) => {
                bm.failed.inc();
                self.metrics
                    .plugin_errors
                    .with_label_values(&[name, e.kind()])
                    .inc();
                share.dead_letter(DeadLetterKind::of_plugin_error(&e), e.to_string());
            }
        }
    }
}

fn forward_log(binding: &str, rec: &InFlight, l: &millrace_runtime::LogLine) {
    use millrace_runtime::LogLevel::*;
    let (topic, partition, offset) = (rec.topic.as_ref(), rec.partition, rec.offset);
    // Plugin logs are rate-limited per instance by the runtime.
    match l.level {
        Error => {
            tracing::error!(target: "millrace::plugin", binding, topic, partition, offset, source = ?l.source, "{}", l.message)
        }
        Warn => {
            tracing::warn!(target: "millrace::plugin", binding, topic, partition, offset, source = ?l.source, "{}", l.message)
        }
        Info => {
            tracing::info!(target: "millrace::plugin", binding, topic, partition, offset, source = ?l.source, "{}", l.message)
        }
        Debug | Trace => {
            tracing::debug!(target: "millrace::plugin", binding, topic, partition, offset, source = ?l.source, "{}", l.message)
        }
    }
}
