//! `[batching]`, `[pipeline]` and `[dead_letter]`: how records flow through the worker (lanes, back pressure,
//! batches to the stores, retries) and where records go that cannot be written. These sections deserialize
//! straight into the settings the pipeline uses; validation only brings numbers into their working range.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::ConfigError;
use super::invalid;

/// Requests to the stores: batches of outputs, retries, concurrency.
///
/// One policy decides for both stores what becomes of a request by its HTTP status: 408, 429, 5xx, no answer,
/// and 401/403/404 (credentials, database or bucket missing: an operator fixes them, the data is kept) are
/// retried with backoff; 400, 413 and 422 split the batch in halves until the bad outputs are alone, and those
/// are dead-lettered as `store_rejected` with the store's message; other statuses dead-letter the batch. Items
/// of an Elasticsearch bulk answer: 408, 429 and 5xx are retried, other failures dead-lettered.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Outputs per request to a store (at least 1).
    pub max_records: usize,
    /// Bytes per request.
    #[serde(with = "crate::units::size")]
    #[schemars(schema_with = "crate::units::size::schema")]
    pub max_bytes: usize,
    /// How long a batch waits to fill (at high rates batches fill first: `max_records`, `max_bytes`); part of
    /// every record's latency at low rates.
    #[serde(with = "crate::units::duration")]
    #[schemars(schema_with = "crate::units::duration::schema")]
    pub linger: Duration,
    /// First retry delay of a failed request (429, 5xx, connection errors); doubles with jitter.
    #[serde(with = "crate::units::duration")]
    #[schemars(schema_with = "crate::units::duration::schema")]
    pub retry_initial_backoff: Duration,
    /// Longest retry delay; requests are retried without limit, nothing is dropped.
    #[serde(with = "crate::units::duration")]
    #[schemars(schema_with = "crate::units::duration::schema")]
    pub retry_max_backoff: Duration,
    /// Batches in flight per sink, 1 to 64 (each acknowledged item by item; order across batches does not
    /// matter: offsets follow records, not batches).
    pub concurrency: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_records: 5000,
            max_bytes: 5 << 20,
            linger: Duration::from_millis(50),
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(30),
            concurrency: 4,
        }
    }
}

impl BatchingConfig {
    /// Brings `max_records` and `concurrency` into their working range.
    pub(super) fn validate(self) -> Result<Self, ConfigError> {
        Ok(Self {
            max_records: self.max_records.max(1),
            concurrency: self.concurrency.clamp(1, 64),
            ..self
        })
    }
}

/// Processing threads and back pressure.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Processing threads; a partition always maps to the same lane (records in order).
    #[schemars(extend("x-default" = "number of cores"))]
    pub lanes: usize,
    /// Records taken and not yet written above which a partition pauses (resumes at half). Throughput is
    /// about records in flight / time to acknowledge (linger + write): at 10,000 a worker paused and resumed
    /// its partitions several times a second and moved 60-85k records/s on 2 cores, at 50,000 120-180k
    /// (`make bench`). Memory stays bounded by `memory_budget` whatever this is; lower it for a faster drain
    /// (`drain_timeout`) against slow stores.
    pub max_in_flight_per_partition: usize,
    /// On revoke and on SIGTERM, how long in-flight records may take to finish before offsets are committed.
    #[serde(with = "crate::units::duration")]
    #[schemars(schema_with = "crate::units::duration::schema")]
    pub drain_timeout: Duration,
    /// Plugin instance slots of the engine, shared by all bindings: each lane keeps at most its share live
    /// (8 are kept for plugin loads) and releases the least recently used idle instance when a binding needs
    /// one, so any number of bindings fits; a record waits for a slot rather than failing.
    #[schemars(extend("x-default" = "a quarter of memory_budget / 2MiB, between lanes + 8 and 1024"))]
    pub max_instances: Option<u32>,
    /// Memory the worker may use, in four quarters. (1) Records in flight across all partitions: above it
    /// every partition pauses until half of that is free, and one binding's records may hold a quarter of that
    /// share (above it that binding's partitions pause), so one client cannot take the budget from the others.
    /// (2) Compiled plugins: above it those of the least recently used bindings are unloaded, and come back
    /// from the disk cache when their binding has a record. (3) Live plugin instances: the default
    /// `max_instances`, and the memory of each lane's live instances (above its share, idle instances are
    /// released). (4) The rest: sink batches, librdkafka's buffers, the heap.
    /// Set it to the container's memory limit, or a bit below.
    #[serde(with = "crate::units::size")]
    #[schemars(schema_with = "crate::units::size::schema")]
    #[schemars(extend("x-default" = "the container's memory limit (cgroup), else 2GiB"))]
    pub memory_budget: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            lanes: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_in_flight_per_partition: 50_000,
            drain_timeout: Duration::from_secs(30),
            max_instances: None,
            memory_budget: container_memory_limit().unwrap_or(2 << 30),
        }
    }
}

/// The memory limit of the container this process runs in (cgroup v2, then v1), if one is set.
fn container_memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|s| s.trim().parse::<u64>().ok())
    // "max" does not parse; v1 reports an absurd number for "no limit".
    .find(|n| *n < 1 << 50)
}

/// Instance slots kept free of the lanes, for plugin loads and smoke checks.
pub const LOAD_SLOTS: usize = 8;

/// Memory one instance slot stands for when `max_instances` is derived from the budget.
const BYTES_PER_SLOT: u64 = 2 << 20;

impl PipelineConfig {
    /// The engine's instance slots: `max_instances`, or derived from the memory budget.
    pub fn instance_slots(&self) -> u32 {
        self.max_instances.unwrap_or_else(|| {
            let floor = (self.lanes.max(1) + LOAD_SLOTS) as u64;
            (self.memory_budget / 4 / BYTES_PER_SLOT).clamp(floor, 1024.max(floor)) as u32
        })
    }

    /// Instances each lane keeps live at most: its share of the engine's slots, besides those for loads.
    pub fn live_instances_per_lane(&self) -> usize {
        (self.instance_slots() as usize).saturating_sub(LOAD_SLOTS) / self.lanes.max(1)
    }

    /// Bytes of linear memory each lane's live instances may hold before idle ones are released.
    pub fn instance_memory_per_lane(&self) -> usize {
        (self.memory_budget / 4) as usize / self.lanes.max(1)
    }

    /// Bytes of compiled plugins kept in memory.
    pub fn compiled_plugins_budget(&self) -> u64 {
        self.memory_budget / 4
    }

    /// Bytes of records in flight across all partitions.
    pub fn max_bytes_in_flight(&self) -> usize {
        (self.memory_budget / 4) as usize
    }

    /// Bytes of one binding's records in flight.
    pub fn max_bytes_per_binding(&self) -> usize {
        self.max_bytes_in_flight() / 4
    }
}

impl PipelineConfig {
    /// At least one lane, room for at least one record per partition, and a slot per lane besides those
    /// kept for plugin loads.
    pub(super) fn validate(self) -> Result<Self, ConfigError> {
        let lanes = self.lanes.max(1);
        if let Some(n) = self.max_instances
            && (n as usize) < lanes + LOAD_SLOTS
        {
            return Err(invalid(
                "pipeline.max_instances",
                format!(
                    "at least lanes + {LOAD_SLOTS} = {} ({LOAD_SLOTS} slots are kept for plugin loads)",
                    lanes + LOAD_SLOTS
                ),
            ));
        }
        if self.memory_budget < 64 << 20 {
            return Err(invalid("pipeline.memory_budget", "at least 64MiB"));
        }
        Ok(Self {
            lanes: self.lanes.max(1),
            max_in_flight_per_partition: self.max_in_flight_per_partition.max(1),
            ..self
        })
    }
}

/// Where records go that cannot be written.
///
/// Kinds (`millrace.error.kind`): `invalid_input` (the plugin rejected the record), `out_of_fuel`, `timeout`,
/// `memory_limit`, `trap`, `abi_violation`, `output_limit`, `invalid_output`, `exit`, `instantiate` (the
/// plugin's failures on the record), `output_not_allowed` (outside the binding's allowlist, or no store for
/// it), `store_rejected` (a store refused it for good), `unacknowledged` (a stage dropped the record's
/// acknowledgement: a worker bug made visible). A shortage of the host's own (instance slots, a store down)
/// never dead-letters a record: it waits with its offset held.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterSection {
    /// Where records go that cannot be written: original key, value and headers, plus `millrace.error.kind`,
    /// `millrace.error.message`, `millrace.plugin.digest`, `millrace.binding`, `millrace.source.topic`,
    /// `millrace.source.partition`, `millrace.source.offset`, `millrace.source.timestamp`.
    pub(super) topic: String,
}

impl Default for DeadLetterSection {
    fn default() -> Self {
        Self {
            topic: "millrace-dead-letter".into(),
        }
    }
}

impl DeadLetterSection {
    /// The dead-letter topic: a legal Kafka topic name (1 to 249 of `a-z A-Z 0-9 . _ -`, not `.` or `..`).
    pub(super) fn validate(self) -> Result<String, ConfigError> {
        let t = &self.topic;
        if t.is_empty() {
            return Err(invalid("dead_letter.topic", "empty"));
        }
        if t.len() > 249
            || t == "."
            || t == ".."
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                "dead_letter.topic",
                format!("`{t}` is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -, not . or ..)"),
            ));
        }
        Ok(self.topic)
    }
}
