//! Host work is bounded. Fuel and epoch deadlines only see instructions the guest runs; a host function
//! works on the guest's behalf where neither reaches, so one call naming a lot of guest memory (a WASI
//! `fd_write` with 1,024 iovecs over all of memory used to hold a lane for seconds) could make the host
//! work without limit. Every host function that reads or writes guest memory therefore:
//!
//! - **pays fuel before it walks anything**, from its arguments alone (so a replay costs the same):
//!   [`CALL_FUEL`] per call, plus one unit per [`BYTES_PER_FUEL`] bytes the call names (read or written,
//!   kept or discarded; rounded up per call), plus [`IOVEC_FUEL`] per `fd_write` iovec. Buffers are
//!   bounds-checked first, so an out-of-bounds pointer stays an `abi_violation`. When the record's fuel
//!   does not cover the charge, the record ends with `out_of_fuel` before the host touches the data.
//! - **stops walking at a cap**: `fd_write` takes at most [`MAX_IOVECS`] iovecs (more is `EINVAL`) and
//!   scans at most `max_log_lines_per_record * (max_log_line_bytes + 1) + `[`STDIO_SLACK_BYTES`] bytes of
//!   stdout/stderr per record (16 KiB + 64 KiB with the default limits); the rest is accepted unread
//!   (reported as written, so the guest does not retry) and counted as one dropped log line. Outputs are
//!   capped by the binding's output limits, counted before they are parsed (a seed-contract
//!   `host_send_to_influx` buffer counts whole, blank lines included); log lines and reject reasons are
//!   cut to `max_log_line_bytes` before they are read.
//! - **honours the deadline inside its loops**: between iovecs, between lines of a multi-line output
//!   call, and every [`CHUNK_BYTES`] of `random_get`, the host compares the clock with the record's
//!   deadline and ends the record with `timeout` once it has passed.
//!
//! With fuel metering off (`EngineConfig::meter_fuel`, a benchmark setting) the caps and the deadline
//! still apply. Costs are deliberately small next to a real record (seed-router uses ~2,700-7,800 units
//! per record; one output call of 300 bytes adds 88): they exist to make a flood pay, not to price work.

use std::time::Instant;

use wasmtime::Caller;

use crate::PluginError;
use crate::host::{HostState, guest_bytes, memory};

/// Fuel of every host call that reads or writes guest memory, whatever else it costs.
pub(crate) const CALL_FUEL: u64 = 50;
/// A host call pays one unit of fuel per this many bytes it names (rounded up per call).
pub(crate) const BYTES_PER_FUEL: u64 = 8;
/// Fuel per iovec an `fd_write` call names.
pub(crate) const IOVEC_FUEL: u64 = 10;
/// Most iovecs one `fd_write` call may name (POSIX `IOV_MAX`); more is `EINVAL`.
pub(crate) const MAX_IOVECS: i32 = 1024;
/// stdout/stderr bytes scanned per record beyond what the log limits can keep (blank lines, the cut
/// tails of long lines).
pub(crate) const STDIO_SLACK_BYTES: u64 = 64 * 1024;
/// Bytes a host loop may handle between two looks at the clock.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;

/// Fuel of one host call that names `items` items of `item_fuel` each and `bytes` bytes of guest memory.
pub(crate) fn cost(items: u64, item_fuel: u64, bytes: u64) -> u64 {
    CALL_FUEL
        .saturating_add(items.saturating_mul(item_fuel))
        .saturating_add(bytes.div_ceil(BYTES_PER_FUEL))
}

/// Takes `fuel` units from the record's fuel; the record ends with `out_of_fuel` when it has less left.
/// Without fuel metering this is a no-op.
pub(crate) fn charge(caller: &mut Caller<'_, HostState>, fuel: u64) -> Result<(), wasmtime::Error> {
    let Ok(left) = caller.get_fuel() else {
        return Ok(());
    };
    if let Some(rest) = left.checked_sub(fuel) {
        return caller.set_fuel(rest);
    }
    // Report the whole budget as used, as when the guest itself runs out.
    let _ = caller.set_fuel(0);
    let limit = caller.data().limits.fuel_per_record;
    Err(caller.data_mut().trap(PluginError::OutOfFuel { limit }))
}

/// Bounds-checks the guest buffers (`ptr`, `len`, what) a call names, then charges the call: [`CALL_FUEL`]
/// plus their bytes. An out-of-bounds buffer is an ABI violation whatever fuel is left.
pub(crate) fn charge_buffers(
    caller: &mut Caller<'_, HostState>,
    buffers: &[(i32, u32, &str)],
) -> Result<(), wasmtime::Error> {
    let mem = memory(caller)?;
    let named = {
        let data = mem.data(&*caller);
        buffers.iter().try_fold(0u64, |sum, &(ptr, len, what)| {
            guest_bytes(data, ptr, len as i32, what).map(|_| sum + u64::from(len))
        })
    };
    match named {
        Ok(bytes) => charge(caller, cost(0, 0, bytes)),
        Err(e) => Err(caller.data_mut().trap(e)),
    }
}

impl HostState {
    /// Starts the deadline of the host's own loops; called wherever the epoch deadline is set.
    pub(crate) fn arm_deadline(&mut self) {
        self.deadline = Instant::now().checked_add(self.limits.timeout);
    }

    /// `timeout` once the record's deadline has passed: a long host loop looks here between chunks.
    pub(crate) fn check_deadline(&self) -> Result<(), PluginError> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(PluginError::Timeout {
                limit: self.limits.timeout,
            }),
            _ => Ok(()),
        }
    }

    /// How many of `len` more stdout/stderr bytes this record may still scan.
    pub(crate) fn stdio_allowance(&mut self, len: usize) -> usize {
        let cap = u64::from(self.limits.max_log_lines_per_record)
            .saturating_mul(u64::from(self.limits.max_log_line_bytes) + 1)
            .saturating_add(STDIO_SLACK_BYTES);
        let room = cap.saturating_sub(self.rec.stdio_scanned);
        let take = (len as u64).min(room) as usize;
        self.rec.stdio_scanned += take as u64;
        if take < len && !self.rec.stdio_capped {
            // What lies beyond the cap is not read, so its lines cannot be counted: one stands for all.
            self.rec.stdio_capped = true;
            self.rec.logs_dropped += 1;
        }
        take
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_a_base_plus_items_plus_bytes_rounded_up() {
        assert_eq!(cost(0, 0, 0), CALL_FUEL);
        assert_eq!(cost(0, 0, 1), CALL_FUEL + 1);
        assert_eq!(cost(0, 0, 8), CALL_FUEL + 1);
        assert_eq!(cost(0, 0, 9), CALL_FUEL + 2);
        assert_eq!(cost(2, IOVEC_FUEL, 16), CALL_FUEL + 2 * IOVEC_FUEL + 2);
        assert_eq!(cost(u64::MAX, u64::MAX, u64::MAX), u64::MAX, "saturates");
        // The flood of issue 12: 1,024 iovecs over 8 MiB each is far beyond any record's fuel.
        assert!(cost(1024, IOVEC_FUEL, 1024 * (8 << 20)) > 1_000_000_000);
    }

    #[test]
    fn stdio_scanning_stops_at_the_cap_and_counts_one_dropped_line() {
        let limits = crate::Limits {
            max_log_lines_per_record: 2,
            max_log_line_bytes: 10,
            ..crate::Limits::default()
        };
        let cap = 2 * 11 + STDIO_SLACK_BYTES as usize;
        let mut state = HostState::new(limits);
        assert_eq!(state.stdio_allowance(cap - 5), cap - 5);
        assert_eq!(state.rec.logs_dropped, 0);
        assert_eq!(state.stdio_allowance(100), 5);
        assert_eq!(state.stdio_allowance(100), 0);
        assert_eq!(state.rec.logs_dropped, 1);
        state.begin_record(None, std::time::Instant::now());
        assert_eq!(state.stdio_allowance(100), 100, "the cap is per record");
    }
}
