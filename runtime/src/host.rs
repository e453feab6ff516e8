//! The host side of the sandbox boundary: the per-instance state every host function works on, and the
//! functions a plugin may import, ABI v1 (`millrace.*`) and the seed contract (`env.host_*`). Every pointer
//! and length from the guest is bounds-checked and copied; a bad one is an ABI violation (a trap of that
//! record), never a host crash. WASI lives in `wasi.rs`.

use std::time::Instant;

use wasmtime::{Caller, Linker, Memory, ResourceLimiter};

use crate::output::{Document, LogLevel, LogLine, LogSource, Output, Point};
use crate::{Limits, PluginError};

/// Result code of an output call: accepted.
pub(crate) const STATUS_OK: i32 = 0;
/// Result code of an output call: refused; the record fails with the reason (seed contract: "-1 failure").
pub(crate) const STATUS_REFUSED: i32 = -1;

/// State of one plugin instance, owned by its wasmtime `Store`.
pub(crate) struct HostState {
    pub limits: Limits,
    pub memory: Option<Memory>,
    pub limiter: MemoryLimiter,
    pub rec: RecordState,
    /// Partial stdout (0) and stderr (1) lines.
    stdio: [Vec<u8>; 2],
    /// The current record's timestamp in ns: the guest's wall clock unless real clocks are granted.
    pub clock_record_ns: u64,
    pub clock_monotonic_ns: u64,
    pub started: Instant,
    pub rng: u64,
    /// Token bucket of the log rate limit.
    log_tokens: f64,
    log_refilled: Instant,
}

/// What the current record has produced so far.
#[derive(Default)]
pub(crate) struct RecordState {
    pub outputs: Vec<Output>,
    pub output_bytes: u64,
    pub logs: Vec<LogLine>,
    pub logs_dropped: u32,
    pub reject: Option<String>,
    /// First refused output: the record fails with it even if the guest carries on.
    pub refused: Option<PluginError>,
    /// Error behind a trap a host function raised (output limit, ABI violation, exit).
    pub trap: Option<PluginError>,
    /// Last lines the guest wrote to stderr, to explain a trap (a Rust panic prints its message there).
    pub stderr_tail: Vec<String>,
}

impl HostState {
    pub fn new(limits: Limits) -> Self {
        let max = limits.max_memory_bytes;
        let max_log_rate = limits.max_log_lines_per_second;
        Self {
            limits,
            memory: None,
            limiter: MemoryLimiter { max, hit: false },
            rec: RecordState::default(),
            stdio: [Vec::new(), Vec::new()],
            clock_record_ns: 0,
            clock_monotonic_ns: 0,
            started: Instant::now(),
            rng: 0x9E37_79B9_7F4A_7C15,
            log_tokens: f64::from(max_log_rate),
            log_refilled: Instant::now(),
        }
    }

    /// Resets the per-record state before a record runs.
    pub fn begin_record(&mut self, timestamp_ms: Option<i64>) {
        self.rec = RecordState::default();
        self.limiter.hit = false;
        self.clock_record_ns = timestamp_ms.map_or(0, |ms| (ms.max(0) as u64).saturating_mul(1_000_000));
    }

    /// Flushes partial stdout/stderr lines at the end of a record.
    pub fn end_record(&mut self) {
        for fd in 0..2 {
            if !self.stdio[fd].is_empty() {
                let line = std::mem::take(&mut self.stdio[fd]);
                self.stdio_line(fd, &line);
            }
        }
    }

    /// Raises a trap caused by the host; the record fails with `error`.
    pub fn trap(&mut self, error: PluginError) -> wasmtime::Error {
        let e = wasmtime::Error::new(error.clone());
        self.rec.trap.get_or_insert(error);
        e
    }

    fn refuse(&mut self, detail: String) -> i32 {
        self.rec
            .refused
            .get_or_insert(PluginError::InvalidOutput { detail });
        STATUS_REFUSED
    }

    /// Counts an output against the record's limits; exceeding them traps (an output flood stops at once).
    fn charge_output(&mut self, bytes: usize) -> Result<(), wasmtime::Error> {
        let n = self.rec.outputs.len() as u64 + 1;
        let total = self.rec.output_bytes + bytes as u64;
        if n > u64::from(self.limits.max_outputs_per_record) {
            let detail = format!(
                "more than {} outputs for one record",
                self.limits.max_outputs_per_record
            );
            return Err(self.trap(PluginError::OutputLimit { detail }));
        }
        if total > self.limits.max_output_bytes_per_record {
            let detail = format!(
                "more than {} output bytes for one record",
                self.limits.max_output_bytes_per_record
            );
            return Err(self.trap(PluginError::OutputLimit { detail }));
        }
        self.rec.output_bytes = total;
        Ok(())
    }

    pub fn emit_point(&mut self, line: &[u8]) -> Result<i32, wasmtime::Error> {
        self.charge_output(line.len())?;
        let Ok(line) = std::str::from_utf8(line) else {
            return Ok(self.refuse("point is not UTF-8".into()));
        };
        match Point::parse(line) {
            Ok(p) => {
                self.rec.outputs.push(Output::Point(p));
                Ok(STATUS_OK)
            }
            Err(e) => Ok(self.refuse(e)),
        }
    }

    pub fn emit_document(
        &mut self,
        index: &[u8],
        body: &[u8],
        id: Option<&[u8]>,
    ) -> Result<i32, wasmtime::Error> {
        self.charge_output(index.len() + body.len() + id.map_or(0, <[u8]>::len))?;
        let Ok(index) = std::str::from_utf8(index) else {
            return Ok(self.refuse("index name is not UTF-8".into()));
        };
        let id = match id.map(std::str::from_utf8) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(_)) => return Ok(self.refuse("document id is not UTF-8".into())),
        };
        match Document::new(index, body, id) {
            Ok(d) => {
                self.rec.outputs.push(Output::Document(d));
                Ok(STATUS_OK)
            }
            Err(e) => Ok(self.refuse(e)),
        }
    }

    pub fn log(&mut self, level: LogLevel, source: LogSource, message: &[u8]) {
        if self.rec.logs.len() >= self.limits.max_log_lines_per_record as usize || !self.log_token() {
            self.rec.logs_dropped += 1;
            return;
        }
        let max = self.limits.max_log_line_bytes as usize;
        let message = &message[..message.len().min(max)];
        let message = String::from_utf8_lossy(message).trim_end().to_string();
        self.rec.logs.push(LogLine {
            level,
            source,
            message,
        });
    }

    /// Takes a token from the log rate limit's bucket, refilled continuously.
    fn log_token(&mut self) -> bool {
        let rate = f64::from(self.limits.max_log_lines_per_second);
        if rate == 0.0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.log_refilled).as_secs_f64() * rate;
        self.log_refilled = now;
        self.log_tokens = (self.log_tokens + refill).min(rate);
        if self.log_tokens >= 1.0 {
            self.log_tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn reject(&mut self, reason: &[u8]) {
        let max = self.limits.max_log_line_bytes as usize;
        let reason = String::from_utf8_lossy(&reason[..reason.len().min(max)]).into_owned();
        self.rec.reject.get_or_insert(if reason.is_empty() {
            "rejected by the plugin (no reason given)".into()
        } else {
            reason
        });
    }

    /// Guest bytes written to stdout (fd 1) or stderr (fd 2), split into log lines.
    pub fn stdio_write(&mut self, fd: i32, bytes: &[u8]) {
        let idx = usize::from(fd == 2);
        let max = self.limits.max_log_line_bytes as usize;
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.stdio[idx]);
                self.stdio_line(idx, &line);
            } else if self.stdio[idx].len() < max {
                self.stdio[idx].push(b);
            }
        }
    }

    fn stdio_line(&mut self, idx: usize, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if idx == 1 {
            let text = String::from_utf8_lossy(line).trim_end().to_string();
            if self.rec.stderr_tail.len() == 4 {
                self.rec.stderr_tail.remove(0);
            }
            self.rec.stderr_tail.push(text);
            self.log(LogLevel::Warn, LogSource::Stderr, line);
        } else {
            self.log(LogLevel::Info, LogSource::Stdout, line);
        }
    }

    /// The guest's stderr tail, for a trap message ("plugin trapped: unreachable (guest stderr: ...)").
    pub fn stderr_context(&self) -> String {
        let lines: Vec<&str> = self
            .rec
            .stderr_tail
            .iter()
            .map(String::as_str)
            .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
            .collect();
        if lines.is_empty() {
            String::new()
        } else {
            format!(" (guest stderr: {})", lines.join(" | "))
        }
    }

    /// Deterministic pseudo-random bytes (xorshift64*) for WASI `random_get`: plugins need randomness for
    /// hash seeds, never for secrets, and determinism keeps replays identical.
    pub fn fill_random(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let v = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Enforces a binding's memory limit, and remembers that it was hit so a resulting trap is reported as
/// a memory limit rather than as whatever the guest did after its allocation failed.
pub(crate) struct MemoryLimiter {
    pub max: u64,
    pub hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Bounds-checked view of `len` guest bytes at `ptr`.
pub(crate) fn guest_bytes<'m>(
    mem: &'m [u8],
    ptr: i32,
    len: i32,
    what: &str,
) -> Result<&'m [u8], PluginError> {
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    p.checked_add(l)
        .and_then(|end| mem.get(p..end))
        .ok_or_else(|| PluginError::AbiViolation {
            detail: format!(
                "{what}: bytes {p}..{} are outside the plugin's {} bytes of memory",
                p as u64 + l as u64,
                mem.len()
            ),
        })
}

/// Bounds-checked mutable view of `len` guest bytes at `ptr`.
pub(crate) fn guest_bytes_mut<'m>(
    mem: &'m mut [u8],
    ptr: i32,
    len: usize,
    what: &str,
) -> Result<&'m mut [u8], PluginError> {
    let size = mem.len();
    let p = ptr as u32 as usize;
    p.checked_add(len)
        .and_then(|end| mem.get_mut(p..end))
        .ok_or_else(|| PluginError::AbiViolation {
            detail: format!(
                "{what}: bytes {p}..{} are outside the plugin's {size} bytes of memory",
                p + len
            ),
        })
}

/// The instance's exported memory (cached after instantiation; looked up while a start function runs).
pub(crate) fn memory(caller: &mut Caller<'_, HostState>) -> Result<Memory, wasmtime::Error> {
    if let Some(m) = caller.data().memory {
        return Ok(m);
    }
    match caller.get_export("memory").and_then(|e| e.into_memory()) {
        Some(m) => {
            caller.data_mut().memory = Some(m);
            Ok(m)
        }
        None => {
            let detail = "the plugin exports no memory named `memory`".to_string();
            Err(caller.data_mut().trap(PluginError::AbiViolation { detail }))
        }
    }
}

/// Runs `f` over guest memory and host state together; an ABI violation becomes a trap of the record.
pub(crate) fn with_memory<R>(
    caller: &mut Caller<'_, HostState>,
    f: impl FnOnce(&mut [u8], &mut HostState) -> Result<R, PluginError>,
) -> Result<R, wasmtime::Error> {
    let mem = memory(caller)?;
    let (data, state) = mem.data_and_store_mut(&mut *caller);
    match f(data, state) {
        Ok(r) => Ok(r),
        Err(e) => Err(state.trap(e)),
    }
}

/// The signature of a host function, as `(i32, i32) -> i32`, for checking imports and for messages.
pub(crate) type Signature = &'static str;

/// ABI v1 imports: module `millrace`.
pub(crate) const V1_IMPORTS: &[(&str, Signature)] = &[
    ("emit_point", "(i32, i32) -> i32"),
    ("emit_document", "(i32, i32, i32, i32, i32, i32) -> i32"),
    ("log", "(i32, i32, i32) -> ()"),
    ("reject", "(i32, i32) -> ()"),
];

/// Seed contract imports: module `env`.
pub(crate) const SEED_IMPORTS: &[(&str, Signature)] = &[
    ("host_log", "(i32, i32) -> ()"),
    ("host_send_to_influx", "(i32, i32) -> i32"),
    ("host_send_to_es", "(i32, i32, i32, i32) -> i32"),
];

/// Defines one ABI v1 import in the linker.
pub(crate) fn define_v1(linker: &mut Linker<HostState>, name: &str) -> wasmtime::Result<()> {
    match name {
        "emit_point" => {
            linker.func_wrap(
                "millrace",
                name,
                |mut c: Caller<'_, HostState>, ptr: i32, len: i32| {
                    let mem = memory(&mut c)?;
                    let (data, state) = mem.data_and_store_mut(&mut c);
                    match guest_bytes(data, ptr, len, "emit_point") {
                        Ok(line) => state.emit_point(line),
                        Err(e) => Err(state.trap(e)),
                    }
                },
            )?;
        }
        "emit_document" => {
            linker.func_wrap(
                "millrace",
                name,
                |mut c: Caller<'_, HostState>, ip: i32, il: i32, bp: i32, bl: i32, dp: i32, dl: i32| {
                    let mem = memory(&mut c)?;
                    let (data, state) = mem.data_and_store_mut(&mut c);
                    let parts = (|| {
                        let index = guest_bytes(data, ip, il, "emit_document index")?;
                        let body = guest_bytes(data, bp, bl, "emit_document body")?;
                        let id = if dp == 0 && dl == 0 {
                            None
                        } else {
                            Some(guest_bytes(data, dp, dl, "emit_document id")?)
                        };
                        Ok((index, body, id))
                    })();
                    match parts {
                        Ok((index, body, id)) => state.emit_document(index, body, id),
                        Err(e) => Err(state.trap(e)),
                    }
                },
            )?;
        }
        "log" => {
            linker.func_wrap(
                "millrace",
                name,
                |mut c: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
                    with_memory(&mut c, |data, state| {
                        let msg = guest_bytes(data, ptr, len, "log")?;
                        state.log(LogLevel::from_abi(level), LogSource::Log, msg);
                        Ok(())
                    })
                },
            )?;
        }
        "reject" => {
            linker.func_wrap(
                "millrace",
                name,
                |mut c: Caller<'_, HostState>, ptr: i32, len: i32| {
                    with_memory(&mut c, |data, state| {
                        let reason = guest_bytes(data, ptr, len, "reject")?;
                        state.reject(reason);
                        Ok(())
                    })
                },
            )?;
        }
        _ => {}
    }
    Ok(())
}

/// Defines one seed-contract import in the linker.
pub(crate) fn define_seed(linker: &mut Linker<HostState>, name: &str) -> wasmtime::Result<()> {
    match name {
        "host_log" => {
            linker.func_wrap("env", name, |mut c: Caller<'_, HostState>, ptr: i32, len: i32| {
                with_memory(&mut c, |data, state| {
                    let msg = guest_bytes(data, ptr, len, "host_log")?;
                    state.log(LogLevel::Info, LogSource::Log, msg);
                    Ok(())
                })
            })?;
        }
        "host_send_to_influx" => {
            linker.func_wrap("env", name, |mut c: Caller<'_, HostState>, ptr: i32, len: i32| {
                let mem = memory(&mut c)?;
                let (data, state) = mem.data_and_store_mut(&mut c);
                let lines = match guest_bytes(data, ptr, len, "host_send_to_influx") {
                    Ok(b) => b,
                    Err(e) => return Err(state.trap(e)),
                };
                // The seed contract allows several lines of line protocol in one call.
                let mut status = STATUS_OK;
                for line in lines
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                {
                    if state.emit_point(line)? != STATUS_OK {
                        status = STATUS_REFUSED;
                    }
                }
                Ok(status)
            })?;
        }
        "host_send_to_es" => {
            linker.func_wrap(
                "env",
                name,
                |mut c: Caller<'_, HostState>, ip: i32, il: i32, dp: i32, dl: i32| {
                    let mem = memory(&mut c)?;
                    let (data, state) = mem.data_and_store_mut(&mut c);
                    let parts = guest_bytes(data, ip, il, "host_send_to_es index")
                        .and_then(|i| Ok((i, guest_bytes(data, dp, dl, "host_send_to_es document")?)));
                    match parts {
                        Ok((index, body)) => state.emit_document(index, body, None),
                        Err(e) => Err(state.trap(e)),
                    }
                },
            )?;
        }
        _ => {}
    }
    Ok(())
}
