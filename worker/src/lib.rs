//! The millrace worker library: configuration, the pipeline from Kafka through plugins to the stores,
//! the sinks and the observability endpoints. The `millrace` binary is a thin command line over it.

pub mod bindings;
pub mod budget;
pub mod config;
mod error;
pub mod hashing;
pub mod health;
pub mod http;
pub mod kinds;
pub mod metrics;
pub mod pipeline;
pub mod redact;
pub mod resident;
pub mod sinks;
pub mod units;

pub use config::WorkerConfig;
pub use error::WorkerError;
