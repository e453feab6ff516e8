//! The host side of the sandbox boundary: the per-instance state every host function works on (what the
//! current record produced, stdout/stderr lines, the log rate limit, clocks, randomness) and the checked
//! views of guest memory they read through. Every pointer and length from the guest is bounds-checked and
//! copied; a bad one is an ABI violation (a trap of that record), never a host crash. The imports
//! themselves live in `imports.rs` (ABI v1 and seed contract) and `wasi.rs`; the fuel, caps and deadline
//! of host work in `host_work.rs`.

use std::time::Instant;

use wasmtime::{Caller, Memory, ResourceLimiter};

use crate::host_work::CHUNK_BYTES;
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
    /// When the current record's deadline passes, for the host's own loops (`host_work.rs`); `None`
    /// when the timeout is too large to represent.
    pub deadline: Option<Instant>,
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
    /// stdout/stderr bytes scanned so far, and whether the cap stopped the scanning (`host_work.rs`).
    pub stdio_scanned: u64,
    pub stdio_capped: bool,
}

impl HostState {
    pub fn new(limits: Limits) -> Self {
        let max = limits.max_memory_bytes;
        let max_log_rate = limits.max_log_lines_per_second;
        let mut state = Self {
            limits,
            memory: None,
            limiter: MemoryLimiter { max, hit: false },
            rec: RecordState::default(),
            stdio: [Vec::new(), Vec::new()],
            clock_record_ns: 0,
            clock_monotonic_ns: 0,
            started: Instant::now(),
            deadline: None,
            rng: 0x9E37_79B9_7F4A_7C15,
            log_tokens: f64::from(max_log_rate),
            log_refilled: Instant::now(),
        };
        // Start functions run under the deadline too.
        state.arm_deadline();
        state
    }

    /// Resets the per-record state before a record runs.
    /// Starts a record whose call begins at `now` (the caller's clock reading, one less per record).
    pub fn begin_record(&mut self, timestamp_ms: Option<i64>, now: Instant) {
        self.rec = RecordState::default();
        self.limiter.hit = false;
        self.deadline = now.checked_add(self.limits.timeout);
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

    /// Counts one more output against the record's limit; exceeding it traps (an output flood stops at
    /// once).
    fn charge_output_count(&mut self) -> Result<(), wasmtime::Error> {
        if self.rec.outputs.len() as u64 >= u64::from(self.limits.max_outputs_per_record) {
            let detail = format!(
                "more than {} outputs for one record",
                self.limits.max_outputs_per_record
            );
            return Err(self.trap(PluginError::OutputLimit { detail }));
        }
        Ok(())
    }

    /// Counts output bytes against the record's limit, before anything parses them.
    fn charge_output_bytes(&mut self, bytes: usize) -> Result<(), wasmtime::Error> {
        let total = self.rec.output_bytes.saturating_add(bytes as u64);
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
        self.charge_output_count()?;
        self.charge_output_bytes(line.len())?;
        Ok(self.push_point(line))
    }

    /// The seed contract's `host_send_to_influx`: one or more lines of line protocol. The whole buffer
    /// counts against the output bytes (blank lines too) before it is split, and the deadline is checked
    /// every `CHUNK_BYTES` of lines.
    pub fn emit_points(&mut self, lines: &[u8]) -> Result<i32, wasmtime::Error> {
        self.charge_output_bytes(lines.len())?;
        let mut status = STATUS_OK;
        let mut unchecked = 0;
        for line in lines.split(|&b| b == b'\n') {
            unchecked += line.len() + 1;
            if unchecked >= CHUNK_BYTES {
                unchecked = 0;
                if let Err(e) = self.check_deadline() {
                    return Err(self.trap(e));
                }
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.charge_output_count()?;
            if self.push_point(line) != STATUS_OK {
                status = STATUS_REFUSED;
            }
        }
        Ok(status)
    }

    fn push_point(&mut self, line: &[u8]) -> i32 {
        let Ok(line) = std::str::from_utf8(line) else {
            return self.refuse("point is not UTF-8".into());
        };
        match Point::parse(line) {
            Ok(p) => {
                self.rec.outputs.push(Output::Point(p));
                STATUS_OK
            }
            Err(e) => self.refuse(e),
        }
    }

    pub fn emit_document(
        &mut self,
        index: &[u8],
        body: &[u8],
        id: Option<&[u8]>,
    ) -> Result<i32, wasmtime::Error> {
        self.charge_output_count()?;
        self.charge_output_bytes(index.len() + body.len() + id.map_or(0, <[u8]>::len))?;
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

    /// Guest bytes written to stdout (fd 1) or stderr (fd 2), split into log lines. Scans at most the
    /// record's stdio allowance (`host_work.rs`); lines are cut to the log line limit.
    pub fn stdio_write(&mut self, fd: i32, bytes: &[u8]) {
        let idx = usize::from(fd == 2);
        let max = self.limits.max_log_line_bytes as usize;
        let take = self.stdio_allowance(bytes.len());
        let mut rest = &bytes[..take];
        loop {
            let end = rest.iter().position(|&b| b == b'\n');
            let part = &rest[..end.unwrap_or(rest.len())];
            let room = max.saturating_sub(self.stdio[idx].len());
            self.stdio[idx].extend_from_slice(&part[..part.len().min(room)]);
            let Some(end) = end else { break };
            let line = std::mem::take(&mut self.stdio[idx]);
            self.stdio_line(idx, &line);
            rest = &rest[end + 1..];
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
