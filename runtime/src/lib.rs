//! The plugin runtime: runs client transformations compiled to WebAssembly inside a sandbox with fuel,
//! memory and wall-clock limits. It knows nothing of Kafka or stores: a [`Record`] goes in, typed
//! [`Output`]s, a reject, or a typed [`PluginError`] come out.
//!
//! ```no_run
//! use millrace_runtime::{EngineConfig, Limits, Record, Runtime, Verdict};
//!
//! let runtime = Runtime::new(EngineConfig::default())?;
//! let plugin = runtime.compile(&std::fs::read("seed_router.wasm").unwrap())?;
//! let mut instance = plugin.instance(Limits::default())?;
//! let record = Record { topic: "acme", value: Some(br#"{"type":"metric","source":"s1","unit":"C","value":21.5}"#), ..Default::default() };
//! match instance.process(&record).result {
//!     Ok(Verdict::Accepted(outputs)) => println!("{outputs:?}"),
//!     Ok(Verdict::Rejected { reason }) => println!("rejected: {reason}"),
//!     Err(e) => println!("failed ({}): {e}", e.kind()),
//! }
//! # Ok::<(), millrace_runtime::PluginError>(())
//! ```

mod engine;
mod error;
mod host;
mod host_work;
mod imports;
mod instance;
mod json_check;
mod limits;
mod output;
mod plugin;
mod record;
mod wasi;

pub use engine::{Runtime, sha256_digest};
pub use error::PluginError;
pub use instance::{INIT_BUDGET, InstanceStats, PluginInstance, Processed, Verdict};
pub use limits::{EngineConfig, Limits};
pub use output::{Document, LogLevel, LogLine, LogSource, Output, Point};
pub use plugin::{ABI_VERSION, Contract, Item, Plugin, PluginInfo, WeakPlugin};
pub use record::{Header, Record};
