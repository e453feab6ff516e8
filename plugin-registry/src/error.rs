//! The registry crate's error type: every way getting a plugin from a reference to a loaded module can fail,
//! with structured fields, a stable `kind()` for metrics and a `is_retriable()` verdict.

use millrace_runtime::PluginError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse (`host/repository[:tag][@sha256:<hex>]`).
    #[error("invalid plugin reference `{reference}`: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// The registry could not be reached (connection refused, DNS, timeout, TLS).
    #[error("registry {registry} unreachable: {message}")]
    Unreachable { registry: String, message: String },

    /// The registry refused the credentials (or demanded some).
    #[error("registry {registry} refused access to {reference}: {message}")]
    Unauthorized {
        registry: String,
        reference: String,
        message: String,
    },

    /// No such repository, tag or manifest.
    #[error("{reference} not found: {message}")]
    NotFound { reference: String, message: String },

    /// The artifact is not a WebAssembly plugin artifact this host understands.
    #[error("{reference} is not a wasm plugin artifact: {detail}")]
    UnsupportedArtifact { reference: String, detail: String },

    /// Content does not match its digest: tampered, corrupted, or a registry bug. Nothing was stored.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// A manifest or module is larger than allowed.
    #[error("{what} is {size} bytes, more than the limit of {limit}")]
    TooLarge { what: String, size: u64, limit: u64 },

    /// Offline and not in the cache.
    #[error("{reference} is not in the plugin cache and the registry is unreachable ({cause})")]
    NotCached { reference: String, cause: String },

    /// Reading or writing the cache failed.
    #[error("plugin cache at {path}: {message}")]
    Cache { path: String, message: String },

    /// The CA certificates to trust (`ca_file`) could not be read or hold no PEM certificate.
    #[error("registry CA certificates from {path}: {message}")]
    InvalidCa { path: String, message: String },

    /// Credentials could not be read.
    #[error("registry credentials from {source_name}: {message}")]
    Credentials { source_name: String, message: String },

    /// The module was fetched and verified but does not load as a plugin.
    #[error("plugin {digest} does not load: {error}")]
    Plugin { digest: String, error: PluginError },

    /// The trust policy requires a signature and there is none (no `sha256-<hex>.sig` artifact, or one
    /// without a simple-signing layer). Retriable: the signature is often pushed just after the plugin.
    #[error("{reference} is not signed, and the trust policy requires a signature: {detail}")]
    Unsigned { reference: String, detail: String },

    /// A signature is there but verifies with none of the trusted keys, or names another digest or
    /// repository. Retriable: it can be replaced by a good one without the plugin changing.
    #[error("signature of {reference} rejected: {reason}")]
    BadSignature { reference: String, reason: String },

    /// Any other answer of the registry that breaks the protocol.
    #[error("registry {registry}: {message}")]
    Protocol { registry: String, message: String },
}

impl RegistryError {
    /// A short, stable name of the error's kind (metric label).
    /// Every value [`RegistryError::kind`] returns (metric label values created at zero up front).
    pub const KINDS: &'static [&'static str] = &[
        "invalid_reference",
        "unreachable",
        "unauthorized",
        "not_found",
        "unsupported_artifact",
        "digest_mismatch",
        "too_large",
        "not_cached",
        "cache",
        "invalid_ca",
        "credentials",
        "plugin",
        "unsigned",
        "bad_signature",
        "protocol",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidReference { .. } => "invalid_reference",
            Self::Unreachable { .. } => "unreachable",
            Self::Unauthorized { .. } => "unauthorized",
            Self::NotFound { .. } => "not_found",
            Self::UnsupportedArtifact { .. } => "unsupported_artifact",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::TooLarge { .. } => "too_large",
            Self::NotCached { .. } => "not_cached",
            Self::Cache { .. } => "cache",
            Self::InvalidCa { .. } => "invalid_ca",
            Self::Credentials { .. } => "credentials",
            Self::Plugin { .. } => "plugin",
            Self::Unsigned { .. } => "unsigned",
            Self::BadSignature { .. } => "bad_signature",
            Self::Protocol { .. } => "protocol",
        }
    }

    /// Whether trying again later could succeed without anyone changing anything.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Unreachable { .. }
            | Self::NotCached { .. }
            | Self::Protocol { .. }
            | Self::Unsigned { .. }
            | Self::BadSignature { .. }
            | Self::Cache { .. } => true,
            Self::Plugin { error, .. } => error.is_retriable(),
            _ => false,
        }
    }

    pub(crate) fn cache(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Self::Cache {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed() {
        let s = || String::from("x");
        let all = [
            RegistryError::InvalidReference {
                reference: s(),
                reason: s(),
            },
            RegistryError::Unreachable {
                registry: s(),
                message: s(),
            },
            RegistryError::Unauthorized {
                registry: s(),
                reference: s(),
                message: s(),
            },
            RegistryError::NotFound {
                reference: s(),
                message: s(),
            },
            RegistryError::UnsupportedArtifact {
                reference: s(),
                detail: s(),
            },
            RegistryError::DigestMismatch {
                what: s(),
                expected: s(),
                actual: s(),
            },
            RegistryError::TooLarge {
                what: s(),
                size: 2,
                limit: 1,
            },
            RegistryError::NotCached {
                reference: s(),
                cause: s(),
            },
            RegistryError::Cache {
                path: s(),
                message: s(),
            },
            RegistryError::InvalidCa {
                path: s(),
                message: s(),
            },
            RegistryError::Credentials {
                source_name: s(),
                message: s(),
            },
            RegistryError::Plugin {
                digest: s(),
                error: PluginError::NotWasm { detail: s() },
            },
            RegistryError::Unsigned {
                reference: s(),
                detail: s(),
            },
            RegistryError::BadSignature {
                reference: s(),
                reason: s(),
            },
            RegistryError::Protocol {
                registry: s(),
                message: s(),
            },
        ];
        let kinds: Vec<&str> = all.iter().map(RegistryError::kind).collect();
        assert_eq!(kinds, RegistryError::KINDS);
    }
}
