//! Why a record went to the dead-letter topic, as one enum. The same value is the `kind` label of
//! `millrace_dead_letters_total`, the `millrace.error.kind` header of the dead letter and a row of
//! `docs/metrics.md`; every list of kinds (metrics initialisation, docs) comes from [`DeadLetterKind::ALL`], and
//! a test keeps it in step with the plugin runtime's own error kinds.

use millrace_runtime::PluginError;

/// The reason a record was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// The plugin rejected the record (`reject` in ABI v1): the input is not what the client's plugin expects.
    InvalidInput,
    /// The record needed more fuel than its binding allows.
    OutOfFuel,
    /// The record ran past its binding's wall-clock deadline.
    Timeout,
    /// The plugin tried to grow its memory past its binding's limit.
    MemoryLimit,
    /// The plugin trapped (panic, unreachable, out-of-bounds access, ...).
    Trap,
    /// The plugin broke the ABI (pointers outside its memory, malformed calls).
    AbiViolation,
    /// The record produced more outputs, bytes or log lines than allowed.
    OutputLimit,
    /// An output was malformed (bad line protocol, bad index name, body not an object).
    InvalidOutput,
    /// The plugin called `proc_exit` while processing the record.
    Exit,
    /// No instance of the plugin could be created for the record.
    Instantiate,
    /// An output named an index or measurement outside the binding's allowlist, or a store not configured.
    OutputNotAllowed,
    /// A store refused an output for good (mapping conflict, field type conflict, ...).
    StoreRejected,
    /// A stage dropped the record's acknowledgement without acknowledging it (a bug in the worker): the
    /// record is dead-lettered rather than left to stall its partition.
    Unacknowledged,
}

impl DeadLetterKind {
    /// Every kind, in the order of the documentation.
    pub const ALL: &'static [DeadLetterKind] = &[
        Self::InvalidInput,
        Self::OutOfFuel,
        Self::Timeout,
        Self::MemoryLimit,
        Self::Trap,
        Self::AbiViolation,
        Self::OutputLimit,
        Self::InvalidOutput,
        Self::Exit,
        Self::Instantiate,
        Self::OutputNotAllowed,
        Self::StoreRejected,
        Self::Unacknowledged,
    ];

    /// The stable name: metric label value and header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::OutOfFuel => "out_of_fuel",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
            Self::Trap => "trap",
            Self::AbiViolation => "abi_violation",
            Self::OutputLimit => "output_limit",
            Self::InvalidOutput => "invalid_output",
            Self::Exit => "exit",
            Self::Instantiate => "instantiate",
            Self::OutputNotAllowed => "output_not_allowed",
            Self::StoreRejected => "store_rejected",
            Self::Unacknowledged => "unacknowledged",
        }
    }

    /// The kind of a plugin's failure on a record. Errors about a module (not a record) never reach a
    /// record: they are refused when the plugin loads; should one appear here it counts as a trap.
    pub fn of_plugin_error(e: &PluginError) -> Self {
        match e {
            PluginError::OutOfFuel { .. } => Self::OutOfFuel,
            PluginError::Timeout { .. } => Self::Timeout,
            PluginError::MemoryLimit { .. } => Self::MemoryLimit,
            PluginError::Trap { .. } => Self::Trap,
            PluginError::AbiViolation { .. } => Self::AbiViolation,
            PluginError::OutputLimit { .. } => Self::OutputLimit,
            PluginError::InvalidOutput { .. } => Self::InvalidOutput,
            PluginError::Exit { .. } => Self::Exit,
            // The lane waits for capacity instead of dead-lettering; counted as `instantiate` should it leak.
            PluginError::Instantiate { .. } | PluginError::NoCapacity { .. } => Self::Instantiate,
            PluginError::NotWasm { .. }
            | PluginError::InvalidModule { .. }
            | PluginError::NotAPlugin { .. }
            | PluginError::UnsupportedAbi { .. }
            | PluginError::BadExport { .. }
            | PluginError::UnsupportedImport { .. }
            | PluginError::Config { .. } => Self::Trap,
        }
    }
}

impl std::fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_error_kind_of_the_runtime_is_a_dead_letter_kind_of_the_same_name() {
        let names: Vec<&str> = DeadLetterKind::ALL.iter().map(|k| k.as_str()).collect();
        for kind in PluginError::RECORD_KINDS {
            assert!(
                names.contains(kind),
                "runtime kind `{kind}` has no dead-letter kind"
            );
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "names are unique");
    }

    #[test]
    fn plugin_errors_map_to_the_kind_of_the_same_name() {
        let errors = [
            PluginError::OutOfFuel { limit: 1 },
            PluginError::Timeout {
                limit: std::time::Duration::ZERO,
            },
            PluginError::MemoryLimit { limit: 1 },
            PluginError::Trap { message: "x".into() },
            PluginError::AbiViolation { detail: "x".into() },
            PluginError::OutputLimit { detail: "x".into() },
            PluginError::InvalidOutput { detail: "x".into() },
            PluginError::Exit { code: 3 },
            PluginError::Instantiate { message: "x".into() },
        ];
        for e in &errors {
            assert_eq!(DeadLetterKind::of_plugin_error(e).as_str(), e.kind());
        }
    }

    #[test]
    fn the_references_list_every_kind() {
        for (name, doc) in [
            ("docs/metrics.md", include_str!("../../docs/metrics.md")),
            (
                "docs/configuration.md",
                include_str!("../../docs/configuration.md"),
            ),
        ] {
            for k in DeadLetterKind::ALL {
                assert!(
                    doc.contains(&format!("`{}`", k.as_str())),
                    "{name} does not list dead-letter kind `{k}`"
                );
            }
        }
    }
}
