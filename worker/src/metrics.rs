//! Every metric the worker exports, defined in one place (the registry crate's own are in
//! `plugin-registry/src/metrics.rs`; `docs/metrics.md` lists both). All names start with `millrace_`; labels are
//! bounded: binding, sink, error kind, outcome, and topic/partition only for consumer lag.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    exponential_buckets,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub records_in: IntCounterVec,
    pub records_processed: IntCounterVec,
    pub records_unrouted: IntCounterVec,
    pub outputs: IntCounterVec,
    pub plugin_duration: HistogramVec,
    pub plugin_fuel: HistogramVec,
    pub plugin_errors: IntCounterVec,
    pub plugin_logs_dropped: IntCounterVec,
    pub plugin_info: IntGaugeVec,
    pub dead_letters: IntCounterVec,
    pub acks_dropped: IntCounterVec,
    pub dead_letters_truncated: prometheus::IntCounter,
    pub stage_up: IntGaugeVec,
    pub binding_queued: IntGaugeVec,
    pub binding_throttled: prometheus::CounterVec,
    pub scheduling_delay: HistogramVec,
    pub resource_waits: IntCounterVec,
    pub instance_evictions: IntCounterVec,
    pub plugins_resident: IntGauge,
    pub plugins_resident_bytes: IntGauge,
    pub plugin_unloads: prometheus::IntCounter,
    pub plugin_reloads: IntCounterVec,
    pub sink_items: IntCounterVec,
    pub sink_batch_records: HistogramVec,
    pub sink_write_duration: HistogramVec,
    pub sink_retries: IntCounterVec,
    pub sink_up: IntGaugeVec,
    pub in_flight: IntGauge,
    pub in_flight_bytes: IntGauge,
    pub paused_partitions: IntGauge,
    pub pauses: IntCounterVec,
    pub assigned_partitions: IntGauge,
    pub consumer_lag: IntGaugeVec,
    pub rebalances: IntCounterVec,
    pub topic_id_lookups: IntCounterVec,
    pub record_latency: Histogram,
    pub reloads: IntCounterVec,
    pub reload_duration: Histogram,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram = |name: &str,
                         help: &str,
                         labels: &[&str],
                         buckets: Vec<f64>|
         -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let seconds = exponential_buckets(0.000_005, 4.0, 12)?; // 5 us .. ~84 s
        let m = Self {
            records_in: counter(
                "millrace_records_in_total",
                "Records taken from Kafka",
                &["binding"],
            )?,
            records_processed: counter(
                "millrace_records_processed_total",
                "Records run through their plugin, by outcome (accepted, rejected, failed)",
                &["binding", "outcome"],
            )?,
            records_unrouted: counter(
                "millrace_records_unrouted_total",
                "Records not processed and not committed because their topic belongs to no binding (no_binding: removed) or to two (ambiguous_binding)",
                &["reason"],
            )?,
            outputs: counter(
                "millrace_outputs_total",
                "Outputs produced by plugins, by plugin version (manifest digest) and kind (point, document)",
                &["binding", "plugin", "kind"],
            )?,
            plugin_duration: histogram(
                "millrace_plugin_duration_seconds",
                "Time a plugin took per record",
                &["binding"],
                seconds.clone(),
            )?,
            plugin_fuel: histogram(
                "millrace_plugin_fuel_used",
                "Fuel a plugin used per record",
                &["binding"],
                exponential_buckets(1000.0, 4.0, 12)?,
            )?,
            plugin_errors: counter(
                "millrace_plugin_errors_total",
                "Records a plugin failed on, by error kind (out_of_fuel, timeout, trap, ...)",
                &["binding", "kind"],
            )?,
            plugin_logs_dropped: counter(
                "millrace_plugin_logs_dropped_total",
                "Plugin log lines dropped by the per-record and rate limits",
                &["binding"],
            )?,
            plugin_info: gauge(
                "millrace_plugin_info",
                "The plugin each binding runs (value 1)",
                &["binding", "digest"],
            )?,
            dead_letters: counter(
                "millrace_dead_letters_total",
                "Records written to the dead-letter topic, by error kind",
                &["kind"],
            )?,
            acks_dropped: counter(
                "millrace_acks_dropped_total",
                "Acknowledgements dropped without being given back, by what became of the record (dead_lettered as unacknowledged, or redelivered)",
                &["outcome"],
            )?,
            stage_up: gauge(
                "millrace_stage_up",
                "1 while every thread of a pipeline stage runs, 0 after one exited or panicked",
                &["stage"],
            )?,
            binding_queued: gauge(
                "millrace_binding_queued_records",
                "Records of a binding waiting in the lanes for their turn (fair scheduling)",
                &["binding"],
            )?,
            binding_throttled: {
                let c = prometheus::CounterVec::new(
                    Opts::new(
                        "millrace_binding_throttled_seconds_total",
                        "Time a binding's partitions were paused because it spent its CPU budget",
                    ),
                    &["binding"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            scheduling_delay: histogram(
                "millrace_scheduling_delay_seconds",
                "From taking a record from Kafka to its plugin run starting",
                &["binding"],
                exponential_buckets(0.0001, 4.0, 10)?,
            )?,
            resource_waits: counter(
                "millrace_resource_waits_total",
                "Times a record waited for the host's resources (an instance slot) instead of failing",
                &["resource"],
            )?,
            instance_evictions: counter(
                "millrace_instance_evictions_total",
                "Idle plugin instances released to make room for another binding's, by reason",
                &["reason"],
            )?,
            dead_letters_truncated: prometheus::IntCounter::new(
                "millrace_dead_letters_truncated_total",
                "Dead letters cut down because the producer or the broker found them too large (header millrace.truncated)",
            )?,
            plugins_resident: IntGauge::new(
                "millrace_compiled_plugins_resident",
                "Compiled plugins held in memory (the others are loaded again from the disk cache on use)",
            )?,
            plugins_resident_bytes: IntGauge::new(
                "millrace_compiled_plugins_resident_bytes",
                "Bytes of the compiled plugins held in memory (bounded by a quarter of pipeline.memory_budget)",
            )?,
            plugin_unloads: prometheus::IntCounter::new(
                "millrace_compiled_plugin_unloads_total",
                "Compiled plugins of idle bindings unloaded to stay within the memory budget (least recently used first)",
            )?,
            plugin_reloads: counter(
                "millrace_compiled_plugin_reloads_total",
                "Unloaded compiled plugins loaded again for a record, by outcome (ok, error: the record waits and retries)",
                &["outcome"],
            )?,
            sink_items: counter(
                "millrace_sink_items_total",
                "Outputs written by a sink, by result (ok, rejected)",
                &["sink", "result"],
            )?,
            sink_batch_records: histogram(
                "millrace_sink_batch_records",
                "Outputs per batch sent to a store",
                &["sink"],
                exponential_buckets(1.0, 4.0, 9)?,
            )?,
            sink_write_duration: histogram(
                "millrace_sink_write_duration_seconds",
                "Time of one batch request to a store, by result",
                &["sink", "result"],
                seconds,
            )?,
            sink_retries: counter("millrace_sink_retries_total", "Batch requests retried", &["sink"])?,
            sink_up: gauge(
                "millrace_sink_up",
                "Whether the last request to the store succeeded (1) or failed (0)",
                &["sink"],
            )?,
            in_flight: IntGauge::new(
                "millrace_in_flight_records",
                "Records taken and not yet fully written",
            )?,
            in_flight_bytes: IntGauge::new(
                "millrace_in_flight_bytes",
                "Bytes of records taken and still held in memory (bounded by pipeline.memory_budget)",
            )?,
            pauses: counter(
                "millrace_pauses_total",
                "Partitions paused, by reason (records: too many in flight; memory: the budget; binding: one client's share)",
                &["reason"],
            )?,
            paused_partitions: IntGauge::new(
                "millrace_paused_partitions",
                "Partitions paused because too many of their records are in flight (stores slow or down)",
            )?,
            assigned_partitions: IntGauge::new(
                "millrace_assigned_partitions",
                "Partitions assigned to this worker",
            )?,
            consumer_lag: gauge(
                "millrace_consumer_lag",
                "Consumer lag per partition, from librdkafka statistics",
                &["topic", "partition"],
            )?,
            rebalances: counter(
                "millrace_rebalances_total",
                "Consumer group rebalances, by kind",
                &["kind"],
            )?,
            topic_id_lookups: counter(
                "millrace_topic_id_lookups_total",
                "Topic ids (KIP-516) looked up for newly assigned partitions, by result",
                &["result"],
            )?,
            record_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "millrace_record_latency_seconds",
                    "From a record's Kafka timestamp to all its outputs acknowledged",
                )
                .buckets(exponential_buckets(0.001, 2.0, 18)?),
            )?,
            reloads: counter(
                "millrace_reloads_total",
                "Binding changes applied, or refused by reason (invalid_bindings, smoke_check, a registry error kind, ...)",
                &["result", "reason"],
            )?,
            reload_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "millrace_reload_duration_seconds",
                    "From noticing a binding change to the new version being active",
                )
                .buckets(exponential_buckets(0.001, 2.0, 16)?),
            )?,
            registry: registry.clone(),
        };
        registry.register(Box::new(m.reload_duration.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.paused_partitions.clone()))?;
        registry.register(Box::new(m.in_flight_bytes.clone()))?;
        registry.register(Box::new(m.plugins_resident.clone()))?;
        registry.register(Box::new(m.plugins_resident_bytes.clone()))?;
        registry.register(Box::new(m.plugin_unloads.clone()))?;
        registry.register(Box::new(m.dead_letters_truncated.clone()))?;
        registry.register(Box::new(m.assigned_partitions.clone()))?;
        registry.register(Box::new(m.record_latency.clone()))?;
        Ok(m)
    }

    /// Creates the label sets known up front, so that every series exists (at zero) from the start: rates and
    /// alerts work before the first event, and dashboards find every metric.
    pub fn initialize(&self, sinks: &[&str]) {
        for kind in crate::kinds::DeadLetterKind::ALL {
            self.dead_letters.with_label_values(&[kind.as_str()]);
        }
        for reason in ["no_binding", "ambiguous_binding"] {
            self.records_unrouted.with_label_values(&[reason]);
        }
        for outcome in ["dead_lettered", "redelivered"] {
            self.acks_dropped.with_label_values(&[outcome]);
        }
        for resource in ["instance_slot", "plugin_load", "deadline"] {
            self.resource_waits.with_label_values(&[resource]);
        }
        for outcome in ["ok", "error"] {
            self.plugin_reloads.with_label_values(&[outcome]);
        }
        for reason in ["records", "memory", "binding", "budget"] {
            self.pauses.with_label_values(&[reason]);
        }
        for reason in ["lane_share", "memory", "no_capacity"] {
            self.instance_evictions.with_label_values(&[reason]);
        }
        for stage in ["poll", "lane"] {
            self.stage_up.with_label_values(&[stage]).set(1);
        }
        for sink in sinks {
            for result in ["ok", "rejected"] {
                self.sink_items.with_label_values(&[sink, result]);
            }
            self.sink_retries.with_label_values(&[sink]);
            self.sink_up.with_label_values(&[sink]).set(1);
        }
        self.reloads.with_label_values(&["applied", "changed"]);
        // A refusal's first occurrence must show in `increase()` (the rollout-refused alert): every reason exists.
        let reasons = ["invalid_bindings", "invalid_reference", "smoke_check"];
        for reason in reasons
            .iter()
            .chain(millrace_plugin_registry::RegistryError::KINDS)
        {
            self.reloads.with_label_values(&["refused", reason]);
        }
        for kind in ["assign", "revoke"] {
            self.rebalances.with_label_values(&[kind]);
        }
        for result in ["id", "not_reported", "failed"] {
            self.topic_id_lookups.with_label_values(&[result]);
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
