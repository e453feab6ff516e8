//! Write millrace plugins in plain, safe Rust.
//!
//! A plugin is a function from one [`Record`] to outputs: InfluxDB points ([`Point`]), Elasticsearch
//! documents, log lines, or a [`Reject`] that sends the record to the dead-letter topic with a reason.
//! [`plugin!`] registers the function as the module's entry point (millrace ABI v1, see `plugins/ABI.md`);
//! authors never touch pointers or `unsafe`.
//!
//! ```
//! use millrace_plugin_sdk::{Output, Point, Record, Reject, plugin};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Reading<'a> {
//!     sensor: &'a str,
//!     celsius: f64,
//! }
//!
//! fn transform(record: &Record<'_>, out: &mut Output) -> Result<(), Reject> {
//!     let r: Reading = record.json()?;
//!     if r.celsius < -273.15 {
//!         return Err(Reject::new("below absolute zero"));
//!     }
//!     out.point(&Point::new("temperature").tag("sensor", r.sensor).field("celsius", r.celsius));
//!     Ok(())
//! }
//!
//! plugin!(transform);
//!
//! // The same function runs natively in unit tests, against the SDK's host stubs:
//! use millrace_plugin_sdk::testing::{TestRecord, run};
//! let outcome = run(transform, &TestRecord::json(r#"{"sensor":"s1","celsius":21.5}"#));
//! assert_eq!(outcome.points, ["temperature,sensor=s1 celsius=21.5"]);
//! let outcome = run(transform, &TestRecord::json(r#"{"sensor":"s1","celsius":-300}"#));
//! assert_eq!(outcome.rejected.as_deref(), Some("below absolute zero"));
//! ```
//!
//! On `wasm32` the outputs go to the host through the ABI's imports; everywhere else they go to the stubs
//! of [`testing`], so `cargo test` exercises the plugin's logic natively.

#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "atomics"))))]
mod alloc;
mod output;
mod point;
mod record;
mod reject;
mod sys;
pub mod testing;

pub use output::{Level, Output};
pub use point::{FieldValue, Point};
pub use record::{Headers, Record};
pub use reject::Reject;

#[cfg(all(
    target_arch = "wasm32",
    not(target_feature = "atomics"),
    feature = "allocator"
))]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new();

/// The ABI version this SDK implements.
pub const ABI_VERSION: i32 = 1;

/// The signature of a plugin's transform function.
pub type Transform = fn(&Record<'_>, &mut Output) -> Result<(), Reject>;

/// Registers `transform` (a [`Transform`]) as the plugin's entry point: exports `millrace_abi_version`,
/// `millrace_input` and `millrace_process` on `wasm32`; expands to nothing elsewhere.
#[macro_export]
macro_rules! plugin {
    ($transform:path) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(export_name = "millrace_abi_version")]
        pub extern "C" fn __millrace_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(export_name = "millrace_input")]
        pub extern "C" fn __millrace_input(len: i32) -> i32 {
            $crate::__private::input(len)
        }

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(export_name = "millrace_process")]
        pub extern "C" fn __millrace_process(ptr: i32, len: i32) -> i32 {
            $crate::__private::process(ptr, len, $transform)
        }

        // Keeps the transform's signature checked on every target.
        const _: $crate::Transform = $transform;
    };
}

#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;

    use crate::{Output, Record, Transform};

    /// `millrace_process` status: the input was not the buffer `millrace_input` handed out.
    const STATUS_BAD_INPUT: i32 = 2;

    thread_local! {
        static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// `millrace_input(len)`: a buffer of at least `len` bytes the host writes the next record into.
    pub fn input(len: i32) -> i32 {
        INPUT.with(|buf| {
            let mut buf = buf.borrow_mut();
            let len = len.max(0) as usize;
            if buf.len() < len {
                buf.resize(len, 0);
            }
            buf.as_mut_ptr() as usize as i32
        })
    }

    /// `millrace_process(ptr, len)`: decodes the record the host wrote and runs the transform over it.
    pub fn process(ptr: i32, len: i32, transform: Transform) -> i32 {
        INPUT.with(|buf| {
            let buf = buf.borrow();
            let len = len.max(0) as usize;
            if ptr != buf.as_ptr() as usize as i32 || len > buf.len() {
                return STATUS_BAD_INPUT;
            }
            // SAFETY: `buf` is the input buffer handed to the host by `millrace_input`, which the host
            // filled with this call's record; only the host writes to it (the pointer never reaches safe
            // plugin code as a slice).
            #[allow(unsafe_code)]
            let record = unsafe { Record::decode_from_host(&buf[..len]) };
            transform_and_report(record, transform);
            0
        })
    }

    /// Decodes and transforms one encoded record from anywhere (tests, benchmarks); a reject goes to the
    /// host.
    pub fn run(encoded: &[u8], transform: Transform) {
        transform_and_report(Record::decode(encoded), transform);
    }

    fn transform_and_report(record: Result<Record<'_>, crate::Reject>, transform: Transform) {
        let mut out = Output::new();
        let result = record.and_then(|record| transform(&record, &mut out));
        if let Err(reject) = result {
            crate::sys::reject(reject.reason());
        }
    }
}
