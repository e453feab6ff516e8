//! `seed-compat`: the seed router written against the seed design's raw contract, as existing seed plugins
//! are: exports `allocate`, `deallocate`, `process_data(ptr, len)`; imports `env.host_log`,
//! `env.host_send_to_influx` and `env.host_send_to_es` (0 success, -1 failure). It uses WASI stdout too,
//! as such guests do. millrace runs it unmodified.
//!
//! The seed contract has no way to reject a record: unknown records are logged and produce no output.
#![cfg(target_arch = "wasm32")]

use std::alloc::{Layout, alloc, dealloc};

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn host_log(ptr: *const u8, size: usize);
    fn host_send_to_influx(ptr: *const u8, size: usize) -> i32;
    fn host_send_to_es(index_ptr: *const u8, index_size: usize, doc_ptr: *const u8, doc_size: usize) -> i32;
}

fn log(msg: &str) {
    // SAFETY: the host reads `msg.len()` bytes of a live string.
    unsafe { host_log(msg.as_ptr(), msg.len()) }
}

/// # Safety
/// Called by the host only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn allocate(size: usize) -> *mut u8 {
    let Ok(layout) = Layout::from_size_align(size.max(1), 1) else {
        return std::ptr::null_mut();
    };
    // SAFETY: layout has a non-zero size.
    unsafe { alloc(layout) }
}

/// # Safety
/// `ptr` and `size` must come from `allocate`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deallocate(ptr: *mut u8, size: usize) {
    if let Ok(layout) = Layout::from_size_align(size.max(1), 1) {
        // SAFETY: allocated by `allocate` with this layout.
        unsafe { dealloc(ptr, layout) }
    }
}

/// # Safety
/// `ptr` and `len` describe a buffer from `allocate` holding the record's value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn process_data(ptr: *const u8, len: usize) {
    // SAFETY: the host wrote `len` bytes at `ptr`, a buffer it got from `allocate`.
    let data = unsafe { std::slice::from_raw_parts(ptr, len) };
    let v: serde_json::Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(e) => {
            log(&format!("invalid JSON: {e}"));
            return;
        }
    };
    match v.get("type").and_then(|t| t.as_str()) {
        Some("metric") => {
            let (Some(source), Some(value)) = (v["source"].as_str(), v["value"].as_f64()) else {
                log("metric without source or value");
                return;
            };
            let unit = v["unit"].as_str().unwrap_or("none");
            let esc = |s: &str| s.replace(',', "\\,").replace(' ', "\\ ").replace('=', "\\=");
            let mut line = format!(
                "env_metrics,source={},unit={} value={value}",
                esc(source),
                esc(unit)
            );
            if let Some(ts) = v["timestamp"].as_i64() {
                line.push_str(&format!(" {}", ts * 1_000_000));
            }
            // SAFETY: the host reads `line.len()` bytes of a live string.
            if unsafe { host_send_to_influx(line.as_ptr(), line.len()) } != 0 {
                log("InfluxDB output refused");
            }
        }
        Some("log") => {
            let Some(service) = v["service"].as_str() else {
                log("log without service");
                return;
            };
            let index = format!("{}-logs-daily", service.to_ascii_lowercase());
            println!("routing a log of {service} to {index}");
            // SAFETY: the host reads the two live buffers.
            if unsafe { host_send_to_es(index.as_ptr(), index.len(), data.as_ptr(), data.len()) } != 0 {
                log("Elasticsearch output refused");
            }
        }
        other => log(&format!("unknown record type {other:?}")),
    }
}
