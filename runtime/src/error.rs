//! The runtime's one error type. Every way a plugin can fail, at load time or on a record, is a variant with
//! structured fields, so the worker can count it (`kind()`), dead-letter the record with a precise reason,
//! and decide whether trying again could help (`is_retriable()`).

use std::time::Duration;

/// Everything that can go wrong loading a plugin or running a record through it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a WebAssembly binary module at all.
    #[error("not a WebAssembly module: {detail}")]
    NotWasm { detail: String },

    /// The bytes claim to be WebAssembly but do not validate or compile.
    #[error("invalid WebAssembly module: {message}")]
    InvalidModule { message: String },

    /// A valid module that speaks neither ABI v1 nor the seed contract.
    #[error("not a millrace plugin: {detail}")]
    NotAPlugin { detail: String },

    /// The module speaks an ABI version this host does not implement.
    #[error("plugin ABI version {found} is not supported by this host (supported: {supported})")]
    UnsupportedAbi { found: i32, supported: i32 },

    /// A required export is missing or has the wrong type.
    #[error("export `{name}` has the wrong type: expected {expected}, found {found}")]
    BadExport {
        name: String,
        expected: String,
        found: String,
    },

    /// The module imports something the host does not grant (or with the wrong signature).
    #[error("unsupported import `{module}::{name}`: {reason}")]
    UnsupportedImport {
        module: String,
        name: String,
        reason: String,
    },

    /// Creating an instance failed (initialisation trapped, ...).
    #[error("instantiating the plugin failed: {message}")]
    Instantiate { message: String },

    /// The host ran short of instance slots or memories: not the record's fault. Free an idle instance or
    /// wait, and try the same record again.
    #[error("no capacity for another plugin instance: {message}")]
    NoCapacity { message: String },

    /// The record used more fuel than the binding allows (a loop, or simply too much work).
    #[error("out of fuel: the record needed more than {limit} units")]
    OutOfFuel { limit: u64 },

    /// The record ran longer than the binding's wall-clock deadline.
    #[error("timeout: the record ran longer than {limit:?}")]
    Timeout { limit: Duration },

    /// The plugin tried to grow its linear memory beyond the binding's limit.
    #[error("memory limit: the plugin tried to grow its memory beyond {limit} bytes")]
    MemoryLimit { limit: u64 },

    /// The guest trapped (panic, abort, unreachable, out-of-bounds access, stack overflow, ...).
    #[error("plugin trapped: {message}")]
    Trap { message: String },

    /// The guest broke the ABI: a pointer/length outside its memory, a malformed call.
    #[error("ABI violation: {detail}")]
    AbiViolation { detail: String },

    /// The record produced more outputs, bytes or log lines than the binding allows.
    #[error("output limit: {detail}")]
    OutputLimit { detail: String },

    /// An output was malformed (bad line protocol, invalid index name, body not a JSON object).
    #[error("invalid output: {detail}")]
    InvalidOutput { detail: String },

    /// The guest called `proc_exit` while processing a record.
    #[error("plugin exited with code {code}")]
    Exit { code: i32 },

    /// The runtime or a binding's limits are misconfigured.
    #[error("runtime configuration: {detail}")]
    Config { detail: String },
}

impl PluginError {
    /// Every value `kind()` can return, in one place: metrics initialise their series from it.
    pub const KINDS: &'static [&'static str] = &[
        "not_wasm",
        "invalid_module",
        "not_a_plugin",
        "unsupported_abi",
        "bad_export",
        "unsupported_import",
        "instantiate",
        "no_capacity",
        "out_of_fuel",
        "timeout",
        "memory_limit",
        "trap",
        "abi_violation",
        "output_limit",
        "invalid_output",
        "exit",
        "config",
    ];

    /// The kinds a record's processing can fail with, by the record's fault (the rest are about loading a
    /// module, the runtime, or the host's own shortage: `no_capacity`).
    pub const RECORD_KINDS: &'static [&'static str] = &[
        "instantiate",
        "out_of_fuel",
        "timeout",
        "memory_limit",
        "trap",
        "abi_violation",
        "output_limit",
        "invalid_output",
        "exit",
    ];

    /// A short, stable name of the error's kind: a metric label value and a dead-letter header value.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotWasm { .. } => "not_wasm",
            Self::InvalidModule { .. } => "invalid_module",
            Self::NotAPlugin { .. } => "not_a_plugin",
            Self::UnsupportedAbi { .. } => "unsupported_abi",
            Self::BadExport { .. } => "bad_export",
            Self::UnsupportedImport { .. } => "unsupported_import",
            Self::Instantiate { .. } => "instantiate",
            Self::NoCapacity { .. } => "no_capacity",
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::Timeout { .. } => "timeout",
            Self::MemoryLimit { .. } => "memory_limit",
            Self::Trap { .. } => "trap",
            Self::AbiViolation { .. } => "abi_violation",
            Self::OutputLimit { .. } => "output_limit",
            Self::InvalidOutput { .. } => "invalid_output",
            Self::Exit { .. } => "exit",
            Self::Config { .. } => "config",
        }
    }

    /// Whether the same call could succeed if tried again. Plugins are deterministic (no clock, no
    /// randomness, no I/O beyond what the host grants), so a record that failed fails again: only the host
    /// running out of instance slots is transient.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::NoCapacity { .. })
    }

    /// Whether the error is about the module itself (refuse to load it) rather than about one record.
    pub fn is_module_error(&self) -> bool {
        matches!(
            self,
            Self::NotWasm { .. }
                | Self::InvalidModule { .. }
                | Self::NotAPlugin { .. }
                | Self::UnsupportedAbi { .. }
                | Self::BadExport { .. }
                | Self::UnsupportedImport { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One value of every variant (a new variant fails to compile here until it is listed).
    fn one_of_each() -> Vec<PluginError> {
        let s = String::new;
        let all = vec![
            PluginError::NotWasm { detail: s() },
            PluginError::InvalidModule { message: s() },
            PluginError::NotAPlugin { detail: s() },
            PluginError::UnsupportedAbi {
                found: 0,
                supported: 1,
            },
            PluginError::BadExport {
                name: s(),
                expected: s(),
                found: s(),
            },
            PluginError::UnsupportedImport {
                module: s(),
                name: s(),
                reason: s(),
            },
            PluginError::Instantiate { message: s() },
            PluginError::NoCapacity { message: s() },
            PluginError::OutOfFuel { limit: 0 },
            PluginError::Timeout {
                limit: Duration::ZERO,
            },
            PluginError::MemoryLimit { limit: 0 },
            PluginError::Trap { message: s() },
            PluginError::AbiViolation { detail: s() },
            PluginError::OutputLimit { detail: s() },
            PluginError::InvalidOutput { detail: s() },
            PluginError::Exit { code: 0 },
            PluginError::Config { detail: s() },
        ];
        for e in &all {
            match e {
                PluginError::NotWasm { .. }
                | PluginError::InvalidModule { .. }
                | PluginError::NotAPlugin { .. }
                | PluginError::UnsupportedAbi { .. }
                | PluginError::BadExport { .. }
                | PluginError::UnsupportedImport { .. }
                | PluginError::Instantiate { .. }
                | PluginError::NoCapacity { .. }
                | PluginError::OutOfFuel { .. }
                | PluginError::Timeout { .. }
                | PluginError::MemoryLimit { .. }
                | PluginError::Trap { .. }
                | PluginError::AbiViolation { .. }
                | PluginError::OutputLimit { .. }
                | PluginError::InvalidOutput { .. }
                | PluginError::Exit { .. }
                | PluginError::Config { .. } => {}
            }
        }
        all
    }

    #[test]
    fn the_kind_lists_cannot_drift_from_the_variants() {
        let kinds: Vec<&str> = one_of_each().iter().map(PluginError::kind).collect();
        assert_eq!(
            kinds,
            PluginError::KINDS,
            "KINDS lists every variant's kind, in order"
        );
        for k in PluginError::RECORD_KINDS {
            assert!(PluginError::KINDS.contains(k), "{k}");
        }
        for e in one_of_each() {
            let record_kind = PluginError::RECORD_KINDS.contains(&e.kind());
            assert_eq!(
                record_kind,
                !e.is_module_error()
                    && !matches!(e, PluginError::Config { .. } | PluginError::NoCapacity { .. }),
                "{}",
                e.kind()
            );
        }
    }
}
