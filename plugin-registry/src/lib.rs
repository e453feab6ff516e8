//! Everything between a plugin reference and a verified, compiled plugin. It knows nothing of Kafka, stores
//! or the worker: a reference (`registry/repository[:tag][@sha256:...]`) goes in; verified module bytes, or a
//! plugin compiled by [`millrace_runtime`], come out.
//!
//! - [`PluginStore::load`]: resolve (pull policy for tags; a digest is never re-resolved), fetch the manifest
//!   and the module layer, verify both against their digests with size caps, cache them by content address,
//!   compile once per engine build and cache the artifact. Concurrent loads of one plugin do the work once.
//!   With the registry unreachable, whatever is cached still loads.
//! - [`PluginStore::push`]: a module as a wasm OCI artifact, as `oras push` would.

mod auth;
mod cache;
mod distribution;
mod error;
mod media;
mod metrics;
mod oci;
mod reference;
pub mod signature;
mod store;

pub use auth::{Credentials, CredentialsError};
pub use cache::{CompiledKey, sha256};
pub use error::RegistryError;
pub use media::{CONFIG_TYPES, ORAS_DEFAULT_LAYER, WASM_LAYER_TYPES};
pub use metrics::RegistryMetrics;
pub use reference::PluginRef;
pub use store::{
    Fetched, Loaded, PluginStore, PullPolicy, PullPolicyParseError, RegistryConfig, Resolved, Source,
};

/// A mutex's guard, also after a panic elsewhere poisoned it (the guarded maps stay consistent: every update
/// is a single insert or remove).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
