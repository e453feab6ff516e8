//! `[[bindings]]` and `[reload]`: which plugin processes which topics, under which limits, and how often a
//! bindings file is re-read. Bindings are read in two places (inline in the worker configuration, and from a
//! bindings file that is reloaded live), so their declaration and validation live here, apart from the rest.
//! Which topics a binding owns and which names it may write to (isolation between clients) is in [`matching`].

mod matching;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::ConfigError;
use super::{config_error, invalid};
pub use matching::{TopicMatch, TopicRegex, owner};

/// One or more, here or in `bindings_file`: a client's topics and the plugin that transforms their records.
///
/// A topic belongs to exactly one binding. Bindings whose topics overlap are refused, naming both: two equal
/// `topic`s, a `topic` that a `topic_regex` matches, or two `topic_regex`es that match a common topic name
/// (shown in the error). Two regexes too large to compare when loading are compared on each topic instead: the
/// records of a topic both match are not processed by either, and their offsets are not committed (logged
/// once per topic, counted in `millrace_records_unrouted_total{reason="ambiguous_binding"}`).
///
/// Allowlist entries (`allowed_indices`, `allowed_measurements`) admit whole name segments: `acme` admits
/// `acme`, `acme-x`, `acme_x` and `acme.x`, not `acmebank-x`; an entry ending with a separator (`-`, `_`, `.`)
/// is a prefix (`env_` admits `env_cpu`); an entry with `*` is a glob (`acme-*`, `*-logs`; `*` admits any
/// name). An empty entry is refused.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingSection {
    /// Label of the binding in metrics, logs and dead-letter headers.
    #[schemars(extend("x-default" = "the topic or regex"))]
    name: Option<String>,
    /// A topic name (give `topic` or `topic_regex`).
    topic: Option<String>,
    /// A regular expression of whole topic names (`client-a` matches `client-a`, not `client-ab`); new
    /// matching topics are consumed without a restart. librdkafka subscribes with it as `^(...)$`, so keep to
    /// the syntax Rust's `regex` and POSIX extended regexes share.
    topic_regex: Option<String>,
    /// OCI reference: `registry/repository@sha256:...` (pinned) or `:tag` (resolved per
    /// `registry.pull_policy`).
    plugin: String,
    /// Index names the plugin may write documents to: `acme` (`acme`, `acme-x`, `acme_x`, `acme.x`; not
    /// `acmebank-x`), `acme-` (a prefix), `acme-*` (a glob); `"*"` allows any. Others are dead-lettered as
    /// `output_not_allowed`.
    #[serde(default)]
    allowed_indices: Vec<String>,
    /// Measurement names the plugin may write points to, with the same rules as `allowed_indices`
    /// (`env_` is a prefix); `"*"` allows any.
    #[serde(default)]
    allowed_measurements: Vec<String>,
    /// Sandbox limits applied to every record of this binding.
    #[serde(default)]
    limits: LimitsSection,
    /// Sample record values; a new plugin version is applied only if each produces outputs without error.
    #[serde(default)]
    smoke: Vec<String>,
    /// Share of a lane's CPU this binding gets when clients compete (1 to 1000): lanes serve the bindings
    /// with records waiting in turn, each for its weight times a quantum of plugin time (deficit round
    /// robin), so one client's backlog delays another's records by about one record's deadline at most.
    #[serde(default = "default_weight")]
    weight: u32,
    /// Plugin CPU this binding may use, in cores (e.g. `0.5`), averaged over about a second across the worker's
    /// lanes. Above it the binding's partitions pause (throttled, counted in
    /// `millrace_binding_throttled_seconds_total`) until its credit is back, instead of taking lanes from other
    /// clients. Unset: no budget; fair scheduling alone shares the lanes.
    cpu_budget: Option<f64>,
    /// The timestamp of a point the plugin wrote without one. `unique` (the default): the record's timestamp
    /// in milliseconds, plus nanoseconds that tell apart the records of one millisecond (from the partition,
    /// the offset and the point's place among the record's points of its measurement), so that records
    /// produced in one burst never overwrite each other's points, and a redelivered record overwrites only its
    /// own. `record`: exactly the record's timestamp (points of one series with the same millisecond
    /// overwrite each other). See docs/guarantees.md for the scheme and its limits.
    #[serde(default)]
    #[schemars(extend("x-default" = "`unique`"))]
    point_timestamps: PointTimestamps,
}

fn default_weight() -> u32 {
    1
}

/// How a point without a timestamp is stamped (`point_timestamps`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PointTimestamps {
    /// The record's millisecond plus nanoseconds unique per partition, offset and point.
    #[default]
    Unique,
    /// Exactly the record's timestamp.
    Record,
}

/// Limits of the plugin's sandbox, applied to every record of the binding.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Fuel (roughly, WebAssembly instructions) one record may use.
    fuel: u64,
    /// Largest linear memory the plugin may grow to.
    #[serde(with = "crate::units::size")]
    #[schemars(schema_with = "crate::units::size::schema")]
    memory: u64,
    /// Wall-clock deadline of one record.
    #[serde(with = "crate::units::duration")]
    #[schemars(schema_with = "crate::units::duration::schema")]
    timeout: Duration,
    /// Most outputs (points plus documents) one record may produce.
    max_outputs: u32,
    /// Most output bytes (lines, index names, bodies, ids) one record may produce.
    #[serde(with = "crate::units::size")]
    #[schemars(schema_with = "crate::units::size::schema")]
    max_output_bytes: u64,
    /// Log lines kept per record; more are dropped and counted.
    max_log_lines: u32,
    /// Real clocks for the plugin; without them its clock reads the record's timestamp, so a replayed record
    /// produces the same outputs.
    grant_clock: bool,
    /// A fresh instance replaces the current one after this many records (bounds what a leaking plugin can
    /// accumulate; each replacement pays an instantiation: ~2 us for a Rust plugin, ~0.5 ms for a Go one).
    recycle_after_records: u64,
    /// A fresh instance replaces the current one once its linear memory reached this size. Keep it above what
    /// the plugin holds after a record (a Go runtime: ~4 MiB), or every record pays a new instance; the
    /// binding's load warns when its smoke samples show that.
    #[serde(with = "crate::units::size")]
    #[schemars(schema_with = "crate::units::size::schema")]
    recycle_memory: u64,
}

impl Default for LimitsSection {
    /// The runtime's defaults.
    fn default() -> Self {
        let d = millrace_runtime::Limits::default();
        Self {
            fuel: d.fuel_per_record,
            memory: d.max_memory_bytes,
            timeout: d.timeout,
            max_outputs: d.max_outputs_per_record,
            max_output_bytes: d.max_output_bytes_per_record,
            max_log_lines: d.max_log_lines_per_record,
            grant_clock: d.grant_clock,
            recycle_after_records: d.recycle_after_records,
            recycle_memory: d.recycle_memory_bytes,
        }
    }
}

impl LimitsSection {
    fn limits(self) -> millrace_runtime::Limits {
        millrace_runtime::Limits {
            fuel_per_record: self.fuel,
            max_memory_bytes: self.memory,
            timeout: self.timeout,
            max_outputs_per_record: self.max_outputs,
            max_output_bytes_per_record: self.max_output_bytes,
            max_log_lines_per_record: self.max_log_lines,
            grant_clock: self.grant_clock,
            recycle_after_records: self.recycle_after_records,
            recycle_memory_bytes: self.recycle_memory,
            ..millrace_runtime::Limits::default()
        }
    }
}

/// Bindings live: how `bindings_file` is followed.
///
/// A change is applied per binding: the new plugin version is pulled, verified, compiled and smoke-checked in
/// the background, then swapped in at a record boundary (each record is processed by exactly one version; the
/// version is the `plugin` label of `millrace_outputs_total`, `millrace_plugin_info`, and the
/// `millrace.plugin.digest` header of dead letters). A version that cannot be pulled, fails verification or
/// compilation, speaks another ABI, or fails its smoke samples is refused: the previous one keeps running,
/// and `millrace_reloads_total{result="refused",reason=...}` counts it. A version refused for a reason a retry
/// cannot fix is refused once, not at every check: it is tried again when the binding's entry or the tag's
/// digest changes, or on `SIGHUP`; a registry that cannot be reached, or a smoke check that found no instance
/// slot free (the host's shortage, after waiting ~1.3 s), is retried at every check. A malformed file is
/// refused whole (reason `invalid_bindings`) and the last good bindings stay. A new binding's topics
/// are subscribed; a removed binding's partitions stop being processed and their committed offsets stay
/// where they were. `millrace bindings check FILE` runs the same checks offline (for CI).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadSection {
    /// How often the bindings file is checked and tag references are re-resolved (per
    /// `registry.pull_policy`); `SIGHUP` checks at once.
    #[serde(with = "crate::units::duration")]
    #[schemars(schema_with = "crate::units::duration::schema")]
    pub(super) interval: Duration,
    /// Shortest time between two tag moves of one binding: a tag that moves again sooner than this after the
    /// last move it was followed to waits (the running version keeps serving; counted in
    /// `millrace_reloads_total{result="deferred"}`), so a client moving its tag every few seconds cannot keep
    /// the cores compiling. The first move after a quiet period, a change of the binding's configuration, and
    /// `SIGHUP` apply at once.
    #[serde(with = "crate::units::duration")]
    #[schemars(schema_with = "crate::units::duration::schema")]
    pub(super) min_version_interval: Duration,
}

impl Default for ReloadSection {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            min_version_interval: Duration::from_secs(30),
        }
    }
}

/// A bindings file: `[[bindings]]` entries and nothing else.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingsFile {
    #[serde(default)]
    bindings: Vec<BindingSection>,
}

/// A validated binding.
#[derive(Debug, Clone)]
pub struct BindingConfig {
    pub name: String,
    pub topics: TopicMatch,
    pub plugin: String,
    /// Index names documents may go to (see [`matching`] for the rules).
    pub allowed_indices: Vec<String>,
    /// Measurement names points may go to (see [`matching`] for the rules).
    pub allowed_measurements: Vec<String>,
    pub limits: millrace_runtime::Limits,
    /// Sample record values a new plugin version must process into outputs, without errors.
    pub smoke: Vec<String>,
    /// Share of a lane's CPU when clients compete (deficit round robin).
    pub weight: u32,
    /// Plugin CPU the binding may use, in cores; above it its partitions pause.
    pub cpu_budget: Option<f64>,
    /// How points without a timestamp are stamped.
    pub point_timestamps: PointTimestamps,
}

impl BindingConfig {
    pub fn allows_index(&self, index: &str) -> bool {
        matching::allowed(&self.allowed_indices, index)
    }

    pub fn allows_measurement(&self, measurement: &str) -> bool {
        matching::allowed(&self.allowed_measurements, measurement)
    }
}

impl BindingSection {
    /// Checks one binding; `key` makes the full key of a field (`bindings[0].topic`).
    fn validate(self, key: impl Fn(&str) -> String) -> Result<BindingConfig, ConfigError> {
        let topics = match (self.topic, self.topic_regex) {
            (Some(t), None) if !t.is_empty() => TopicMatch::Name(t),
            (None, Some(r)) => {
                TopicMatch::Regex(TopicRegex::new(&r).map_err(|e| invalid(&key("topic_regex"), e))?)
            }
            _ => {
                return Err(invalid(
                    &key("topic"),
                    "give exactly one of `topic` and `topic_regex`",
                ));
            }
        };
        matching::check_entries(&key("allowed_indices"), &self.allowed_indices)?;
        matching::check_entries(&key("allowed_measurements"), &self.allowed_measurements)?;
        millrace_plugin_registry::PluginRef::parse(&self.plugin).map_err(|e| invalid(&key("plugin"), e))?;
        if !(1..=1000).contains(&self.weight) {
            return Err(invalid(&key("weight"), "between 1 and 1000"));
        }
        if let Some(b) = self.cpu_budget
            && !(0.01..=256.0).contains(&b)
        {
            return Err(invalid(&key("cpu_budget"), "between 0.01 and 256 cores"));
        }
        let limits = self.limits.limits();
        limits
            .validate(&millrace_runtime::EngineConfig::default())
            .map_err(|e| invalid(&key("limits"), e))?;
        Ok(BindingConfig {
            name: self.name.unwrap_or_else(|| topics.as_written().to_string()),
            topics,
            plugin: self.plugin,
            allowed_indices: self.allowed_indices,
            allowed_measurements: self.allowed_measurements,
            limits,
            smoke: self.smoke,
            weight: self.weight,
            cpu_budget: self.cpu_budget,
            point_timestamps: self.point_timestamps,
        })
    }
}

/// Validates bindings, each and together (unique names, no topic in two bindings); `what` prefixes the keys in
/// errors (`bindings`, or the file's name).
pub(super) fn validate_bindings(
    sections: Vec<BindingSection>,
    what: &str,
) -> Result<Vec<BindingConfig>, ConfigError> {
    let bindings = sections
        .into_iter()
        .enumerate()
        .map(|(i, b)| b.validate(|field| format!("{what}[{i}].{field}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut names = HashSet::new();
    for b in &bindings {
        if !names.insert(b.name.as_str()) {
            return Err(invalid(what, format!("two bindings are named `{}`", b.name)));
        }
    }
    matching::check_overlaps(&bindings, what)?;
    Ok(bindings)
}

/// The format of a configuration or bindings file: YAML by its `.yaml`/`.yml` extension, else TOML.
pub(super) fn file_format(path: &Path) -> config::FileFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => config::FileFormat::Yaml,
        _ => config::FileFormat::Toml,
    }
}

/// Reads and validates a bindings file (TOML, or YAML by extension): `[[bindings]]` entries.
pub fn load_bindings_file(path: &Path) -> Result<Vec<BindingConfig>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid("bindings_file", format!("reading {}: {e}", path.display())))?;
    parse_bindings(&text, file_format(path), &path.display().to_string())
}

/// Parses and validates bindings given as text; `what` (the file's name) prefixes the keys in errors.
pub fn parse_bindings(
    text: &str,
    format: config::FileFormat,
    what: &str,
) -> Result<Vec<BindingConfig>, ConfigError> {
    let source = config::Config::builder()
        .add_source(config::File::from_str(text, format))
        .build()
        .map_err(|e| invalid(what, e))?;
    let file: BindingsFile = source.try_deserialize().map_err(|e| {
        // Keys inside the file are `bindings[0].limits.memory`; name them after the file instead.
        let ConfigError { key, message } = config_error(what, e);
        ConfigError {
            key: match key.strip_prefix("bindings") {
                Some(rest) if rest.is_empty() || rest.starts_with('[') => format!("{what}{rest}"),
                _ => key,
            },
            message,
        }
    })?;
    validate_bindings(file.bindings, what)
}
