//! The knobs of the sandbox: engine-wide settings (one per process) and per-binding limits (one per client
//! topic). Plain structs with defaults; the worker's configuration layer parses and validates user input
//! into them.

use std::time::Duration;

use crate::PluginError;

/// Engine-wide settings, fixed for the life of a [`crate::Runtime`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Instance slots of the pooling allocator: the most plugin instances alive at once, across bindings.
    pub max_instances: u32,
    /// The ceiling any binding's memory limit may ask for (size of each pooled memory slot).
    pub max_memory_bytes: u64,
    /// Granularity of wall-clock deadlines: the epoch advances once per tick.
    pub epoch_tick: Duration,
    /// Compile functions of a module on several threads.
    pub parallel_compilation: bool,
    /// Fuel metering (per-record fuel limits). Only `millrace plugin bench` turns it off, to measure what
    /// it costs; without it an endless loop is stopped by the deadline alone.
    pub meter_fuel: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(1),
            parallel_compilation: true,
            meter_fuel: true,
        }
    }
}

impl EngineConfig {
    pub(crate) fn validate(&self) -> Result<(), PluginError> {
        let bad = |detail: String| Err(PluginError::Config { detail });
        if self.max_instances == 0 {
            return bad("max_instances must be at least 1".into());
        }
        if self.max_memory_bytes < 64 * 1024 || self.max_memory_bytes > 4 << 30 {
            return bad(format!(
                "max_memory_bytes must be between 64 KiB and 4 GiB, not {}",
                self.max_memory_bytes
            ));
        }
        if self.epoch_tick.is_zero() || self.epoch_tick > Duration::from_secs(1) {
            return bad(format!(
                "epoch_tick must be between 1 ns and 1 s, not {:?}",
                self.epoch_tick
            ));
        }
        Ok(())
    }
}

/// Limits of one binding, applied to every record its plugin processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, WebAssembly instructions) one record may use.
    pub fuel_per_record: u64,
    /// Largest linear memory the plugin may grow to.
    pub max_memory_bytes: u64,
    /// Wall-clock deadline of one record.
    pub timeout: Duration,
    /// Most outputs (points plus documents) one record may produce.
    pub max_outputs_per_record: u32,
    /// Most output bytes (lines, index names, bodies, ids) one record may produce.
    pub max_output_bytes_per_record: u64,
    /// Log lines (including guest stdout/stderr lines) kept per record; more are dropped and counted.
    pub max_log_lines_per_record: u32,
    /// Longest log line kept; longer lines are cut.
    pub max_log_line_bytes: u32,
    /// Log lines per second an instance may produce across records (burst: the same number); more are
    /// dropped and counted. 0 = no rate limit.
    pub max_log_lines_per_second: u32,
    /// A fresh instance replaces the current one after this many records.
    pub recycle_after_records: u64,
    /// A fresh instance replaces the current one once its memory reached this size.
    pub recycle_memory_bytes: u64,
    /// Real clocks for the guest. Without this grant the guest's wall clock reads the record's timestamp and
    /// its monotonic clock a counter, so a replayed record produces the same outputs.
    pub grant_clock: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel_per_record: 50_000_000,
            max_memory_bytes: 32 << 20,
            timeout: Duration::from_millis(100),
            max_outputs_per_record: 1_000,
            max_output_bytes_per_record: 4 << 20,
            max_log_lines_per_record: 16,
            max_log_line_bytes: 1024,
            max_log_lines_per_second: 100,
            recycle_after_records: 1_000_000,
            recycle_memory_bytes: 16 << 20,
            grant_clock: false,
        }
    }
}

impl Limits {
    /// Checks the limits against the engine's ceilings.
    pub fn validate(&self, engine: &EngineConfig) -> Result<(), PluginError> {
        let bad = |detail: String| Err(PluginError::Config { detail });
        if self.fuel_per_record == 0 {
            return bad("fuel_per_record must be positive".into());
        }
        if self.max_memory_bytes < 64 * 1024 || self.max_memory_bytes > engine.max_memory_bytes {
            return bad(format!(
                "max_memory_bytes {} must be between 64 KiB and the engine's ceiling of {} bytes",
                self.max_memory_bytes, engine.max_memory_bytes
            ));
        }
        if self.timeout < engine.epoch_tick {
            return bad(format!(
                "timeout {:?} is shorter than the engine's deadline granularity {:?}",
                self.timeout, engine.epoch_tick
            ));
        }
        if self.max_outputs_per_record == 0 || self.max_output_bytes_per_record == 0 {
            return bad("max_outputs_per_record and max_output_bytes_per_record must be positive".into());
        }
        if self.recycle_after_records == 0 {
            return bad("recycle_after_records must be positive".into());
        }
        Ok(())
    }
}
