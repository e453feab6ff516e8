//! One binding's instance of a plugin: runs records one at a time with fuel, memory and wall-clock limits
//! and maps whatever happens to a typed result. The wasm instance behind it is created on demand and
//! replaced after a trap (its state can no longer be trusted), after a number of records, or once its
//! memory grew past a high-water mark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Memory, Store, Trap, TypedFunc};

use crate::host::HostState;
use crate::output::{LogLine, Output};
use crate::plugin::{Contract, PluginInner};
use crate::{Limits, PluginError, Record};

/// How many times a record's fuel and time an instance's start-up (`_initialize`, `_start`) gets: it runs
/// once per instance, and a Go runtime's start-up costs more than an ordinary record.
pub const INIT_BUDGET: u64 = 10;

/// What to raise when start-up hit a limit, named as the binding's option.
fn raise_hint(error: &PluginError, limits: &Limits) -> String {
    match error {
        PluginError::OutOfFuel { .. } => format!(
            " (start-up gets {INIT_BUDGET} x limits.fuel = {} units: raise the binding's limits.fuel)",
            limits.fuel_per_record.saturating_mul(INIT_BUDGET)
        ),
        PluginError::Timeout { .. } => format!(
            " (start-up gets {INIT_BUDGET} x limits.timeout = {:?}: raise the binding's limits.timeout)",
            limits.timeout.saturating_mul(INIT_BUDGET as u32)
        ),
        PluginError::MemoryLimit { limit } => format!(
            " (start-up needs more than limits.memory = {limit} bytes: raise the binding's limits.memory; a \
             Go runtime reserves its heap at start-up)"
        ),
        _ => String::new(),
    }
}

/// What the plugin decided about a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Processed; zero or more outputs (zero: the plugin filtered the record out).
    Accepted(Vec<Output>),
    /// The plugin refused the record; it belongs in the dead-letter topic with this reason.
    Rejected { reason: String },
}

/// The result of running one record, with what it cost and what the plugin logged.
#[derive(Debug, Clone)]
pub struct Processed {
    pub result: Result<Verdict, PluginError>,
    pub logs: Vec<LogLine>,
    /// Log lines beyond the per-record limit, dropped.
    pub logs_dropped: u32,
    pub fuel_used: u64,
    pub elapsed: Duration,
}

/// Counters of an instance slot's life, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceStats {
    pub instantiations: u64,
    pub records: u64,
    pub recycled_after_trap: u64,
    pub recycled_after_records: u64,
    pub recycled_after_memory: u64,
}

/// A binding's plugin instance. Not shared between threads: one per worker thread and binding.
pub struct PluginInstance {
    plugin: Arc<PluginInner>,
    limits: Limits,
    deadline_ticks: u64,
    live: Option<Live>,
    stats: InstanceStats,
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance")
            .field("digest", &self.plugin.info.digest)
            .field("limits", &self.limits)
            .field("live", &self.live.is_some())
            .field("stats", &self.stats)
            .finish()
    }
}

struct Live {
    store: Store<HostState>,
    memory: Memory,
    entry: Entry,
    records: u64,
}

enum Entry {
    V1 {
        abi_version: TypedFunc<(), i32>,
        input: TypedFunc<i32, i32>,
        process: TypedFunc<(i32, i32), i32>,
        /// The guest's input buffer: pointer and capacity from the last `millrace_input` call.
        buffer: Option<(u32, u32)>,
    },
    Seed {
        allocate: TypedFunc<i32, i32>,
        deallocate: TypedFunc<(i32, i32), ()>,
        process: SeedProcess,
    },
}

enum SeedProcess {
    Unit(TypedFunc<(i32, i32), ()>),
    Status(TypedFunc<(i32, i32), i32>),
}

impl PluginInstance {
    pub(crate) fn new(plugin: Arc<PluginInner>, limits: Limits) -> Self {
        let tick = plugin.runtime.config().epoch_tick;
        let deadline_ticks = (limits.timeout.as_nanos() / tick.as_nanos().max(1)) as u64 + 1;
        Self {
            plugin,
            limits,
            deadline_ticks,
            live: None,
            stats: InstanceStats::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn stats(&self) -> InstanceStats {
        self.stats
    }

    /// `sha256:<hex>` of the plugin this instance runs.
    pub fn digest(&self) -> &str {
        &self.plugin.info.digest
    }

    /// Linear memory of the live instance in bytes (0 when none is live).
    pub fn memory_bytes(&self) -> usize {
        self.live.as_ref().map_or(0, |l| l.memory.data_size(&l.store))
    }

    /// Whether a wasm instance is live (holding one of the engine's instance slots).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Drops the live wasm instance, returning its slot and memory to the engine; the next record
    /// instantiates afresh (microseconds from the pool). For hosts that keep more bindings than slots.
    pub fn release(&mut self) {
        self.live = None;
    }

    /// Creates the wasm instance now rather than on the next record (to pay instantiation up front, or to
    /// measure it). A no-op when an instance is live.
    pub fn prepare(&mut self) -> Result<(), PluginError> {
        if self.live.is_none() {
            self.live = Some(self.instantiate()?);
        }
        Ok(())
    }

    /// Runs one record through the plugin.
    pub fn process(&mut self, record: &Record<'_>) -> Processed {
        let start = Instant::now();
        // The record's deadline starts when its call does: after an instantiation (which has its own
        // budget), never before it, so a slow instantiation on a busy host is not charged to the record.
        let (mut live, call_start) = match self.live.take() {
            Some(live) => (live, start),
            None => match self.instantiate() {
                Ok(live) => (live, Instant::now()),
                Err(error) => {
                    return Processed {
                        result: Err(error),
                        logs: Vec::new(),
                        logs_dropped: 0,
                        fuel_used: 0,
                        elapsed: start.elapsed(),
                    };
                }
            },
        };
        let limits = &self.limits;
        live.store
            .data_mut()
            .begin_record(record.timestamp_ms, call_start);
        let _ = live.store.set_fuel(limits.fuel_per_record);
        live.store.set_epoch_deadline(self.deadline_ticks);

        let call = run(&mut live, record);

        let fuel_used = live
            .store
            .get_fuel()
            .map_or(0, |left| limits.fuel_per_record - left);
        let state = live.store.data_mut();
        state.end_record();
        let trapped = call.is_err();
        let result = match call {
            Ok(status) => finish(state, live_contract(&live.entry), status),
            Err(e) => Err(map_error(state, e, limits)),
        };
        let rec = std::mem::take(&mut state.rec);
        live.records += 1;
        self.stats.records += 1;

        // Recycle: after a trap the instance's state is suspect; after N records or a memory high-water
        // mark a fresh instance returns its memory.
        if trapped {
            self.stats.recycled_after_trap += 1;
        } else if live.records >= limits.recycle_after_records {
            self.stats.recycled_after_records += 1;
        } else if live.memory.data_size(&live.store) as u64 >= limits.recycle_memory_bytes {
            self.stats.recycled_after_memory += 1;
        } else {
            self.live = Some(live);
        }
        Processed {
            result,
            logs: rec.logs,
            logs_dropped: rec.logs_dropped,
            fuel_used,
            elapsed: start.elapsed(),
        }
    }

    /// Instantiates and returns the ABI version the module reports (v1), for the load-time probe.
    pub(crate) fn probe(&mut self) -> Result<Option<i32>, PluginError> {
        let mut live = self.instantiate()?;
        match &live.entry {
            Entry::V1 { abi_version, .. } => {
                let f = abi_version.clone();
                let _ = live.store.set_fuel(self.limits.fuel_per_record);
                live.store.set_epoch_deadline(self.deadline_ticks);
                live.store.data_mut().arm_deadline();
                let v = f
                    .call(&mut live.store, ())
                    .map_err(|e| map_error(live.store.data_mut(), e, &self.limits))?;
                Ok(Some(v))
            }
            Entry::Seed { .. } => Ok(None),
        }
    }

    fn instantiate(&mut self) -> Result<Live, PluginError> {
        let limits = &self.limits;
        let engine = self.plugin.runtime.engine();
        let mut store = Store::new(engine, HostState::new(limits.clone()));
        store.limiter(|s| &mut s.limiter);
        let _ = store.set_fuel(limits.fuel_per_record);
        store.set_epoch_deadline(self.deadline_ticks);
        let instance = match self.plugin.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => {
                let state = store.data_mut();
                if state.limiter.hit {
                    // The module's initial memory alone is over the limit: no record can ever run.
                    return Err(PluginError::Instantiate {
                        message: format!(
                            "the module's initial memory does not fit limits.memory ({} bytes); raise the \
                             binding's limits.memory",
                            limits.max_memory_bytes
                        ),
                    });
                }
                if e.downcast_ref::<Trap>().is_some() || state.rec.trap.is_some() {
                    return Err(map_error(state, e, limits));
                }
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
                    return Err(PluginError::NoCapacity {
                        message: format!("{e:#}"),
                    });
                }
                return Err(PluginError::Instantiate {
                    message: format!("{e:#}"),
                });
            }
        };
        self.stats.instantiations += 1;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| PluginError::AbiViolation {
                detail: "the plugin exports no memory named `memory`".into(),
            })?;
        store.data_mut().memory = Some(memory);

        // WASI reactors initialise in `_initialize`; commands (TinyGo's default) in `_start`, which may end
        // with `proc_exit(0)`. Start-up (a Go runtime's heap, scheduler and package initialisers) runs once
        // per instance, not per record: it gets INIT_BUDGET times a record's fuel and time.
        let contract = self.plugin.info.contract;
        let _ = store.set_fuel(limits.fuel_per_record.saturating_mul(INIT_BUDGET));
        store.set_epoch_deadline(self.deadline_ticks.saturating_mul(INIT_BUDGET));
        store.data_mut().deadline =
            Instant::now().checked_add(limits.timeout.saturating_mul(INIT_BUDGET as u32));
        for init in ["_initialize", "_start"] {
            if init == "_start" && contract == Contract::V1 {
                continue;
            }
            if let Ok(f) = instance.get_typed_func::<(), ()>(&mut store, init) {
                if let Err(e) = f.call(&mut store, ()) {
                    let state = store.data_mut();
                    match map_error(state, e, limits) {
                        PluginError::Exit { code: 0 } => {}
                        error => {
                            return Err(PluginError::Instantiate {
                                message: format!("`{init}` failed: {error}{}", raise_hint(&error, limits)),
                            });
                        }
                    }
                }
                break;
            }
        }
        let _ = store.set_fuel(limits.fuel_per_record);
        store.set_epoch_deadline(self.deadline_ticks);
        store.data_mut().rec = Default::default();

        let typed = |store: &mut Store<HostState>, name: &str| -> Result<wasmtime::Func, PluginError> {
            instance
                .get_func(&mut *store, name)
                .ok_or_else(|| PluginError::BadExport {
                    name: name.into(),
                    expected: "a function".into(),
                    found: "nothing".into(),
                })
        };
        let bad = |name: &str, e: wasmtime::Error| PluginError::BadExport {
            name: name.into(),
            expected: "the documented signature".into(),
            found: format!("{e:#}"),
        };
        let entry = match contract {
            Contract::V1 => Entry::V1 {
                abi_version: typed(&mut store, "millrace_abi_version")?
                    .typed(&store)
                    .map_err(|e| bad("millrace_abi_version", e))?,
                input: typed(&mut store, "millrace_input")?
                    .typed(&store)
                    .map_err(|e| bad("millrace_input", e))?,
                process: typed(&mut store, "millrace_process")?
                    .typed(&store)
                    .map_err(|e| bad("millrace_process", e))?,
                buffer: None,
            },
            Contract::Seed => {
                let process = typed(&mut store, "process_data")?;
                let process = if process.ty(&store).results().len() == 1 {
                    SeedProcess::Status(process.typed(&store).map_err(|e| bad("process_data", e))?)
                } else {
                    SeedProcess::Unit(process.typed(&store).map_err(|e| bad("process_data", e))?)
                };
                Entry::Seed {
                    allocate: typed(&mut store, "allocate")?
                        .typed(&store)
                        .map_err(|e| bad("allocate", e))?,
                    deallocate: typed(&mut store, "deallocate")?
                        .typed(&store)
                        .map_err(|e| bad("deallocate", e))?,
                    process,
                }
            }
        };
        Ok(Live {
            store,
            memory,
            entry,
            records: 0,
        })
    }
}

fn live_contract(entry: &Entry) -> Contract {
    match entry {
        Entry::V1 { .. } => Contract::V1,
        Entry::Seed { .. } => Contract::Seed,
    }
}

/// Calls the guest for one record; `Ok` carries the guest's status code.
fn run(live: &mut Live, record: &Record<'_>) -> Result<i32, wasmtime::Error> {
    let Live {
        store, memory, entry, ..
    } = live;
    match entry {
        Entry::V1 {
            input,
            process,
            buffer,
            ..
        } => {
            let Some(len) = record.encoded_len() else {
                return Err(store.data_mut().trap(PluginError::AbiViolation {
                    detail: "record larger than the ABI's 4 GiB limit".into(),
                }));
            };
            let (ptr, cap) = match *buffer {
                Some((ptr, cap)) if cap as usize >= len => (ptr, cap),
                _ => {
                    // Ask for headroom so that most later records fit without another call.
                    let want = len.next_power_of_two().clamp(1024, i32::MAX as usize) as i32;
                    let want = if (want as usize) < len { len as i32 } else { want };
                    let ptr = input.call(&mut *store, want)? as u32;
                    (ptr, want as u32)
                }
            };
            let data = memory.data_mut(&mut *store);
            let Some(dst) = (ptr as usize)
                .checked_add(len)
                .filter(|end| ptr as usize + (cap as usize) <= data.len() && *end <= data.len())
                .map(|end| &mut data[ptr as usize..end])
            else {
                let size = data.len();
                *buffer = None;
                return Err(store.data_mut().trap(PluginError::AbiViolation {
                    detail: format!(
                        "millrace_input returned buffer {ptr}..{} outside the plugin's {size} bytes of memory",
                        ptr as u64 + cap as u64
                    ),
                }));
            };
            record.encode(dst);
            *buffer = Some((ptr, cap));
            process.call(&mut *store, (ptr as i32, len as i32))
        }
        Entry::Seed {
            allocate,
            deallocate,
            process,
        } => {
            let value = record.value.unwrap_or_default();
            let Ok(len) = i32::try_from(value.len()) else {
                return Err(store.data_mut().trap(PluginError::AbiViolation {
                    detail: "record value larger than 2 GiB".into(),
                }));
            };
            let ptr = allocate.call(&mut *store, len)?;
            let data = memory.data_mut(&mut *store);
            match crate::host::guest_bytes_mut(data, ptr, value.len(), "allocate result") {
                Ok(dst) => dst.copy_from_slice(value),
                Err(e) => return Err(store.data_mut().trap(e)),
            }
            let status = match process {
                SeedProcess::Unit(f) => f.call(&mut *store, (ptr, len)).map(|()| 0)?,
                SeedProcess::Status(f) => f.call(&mut *store, (ptr, len))?,
            };
            deallocate.call(&mut *store, (ptr, len))?;
            Ok(status)
        }
    }
}

/// The verdict of a record whose call returned normally.
fn finish(state: &mut HostState, contract: Contract, status: i32) -> Result<Verdict, PluginError> {
    if let Some(refused) = state.rec.refused.take() {
        return Err(refused);
    }
    if let Some(reason) = state.rec.reject.take() {
        return Ok(Verdict::Rejected { reason });
    }
    if status != 0 {
        let func = match contract {
            Contract::V1 => "millrace_process",
            Contract::Seed => "process_data",
        };
        let last_log = state
            .rec
            .logs
            .last()
            .map(|l| format!(": {}", l.message))
            .unwrap_or_default();
        return Ok(Verdict::Rejected {
            reason: format!("{func} returned status {status}{last_log}"),
        });
    }
    Ok(Verdict::Accepted(std::mem::take(&mut state.rec.outputs)))
}

/// Maps a failed call to the error the record fails with.
fn map_error(state: &mut HostState, err: wasmtime::Error, limits: &Limits) -> PluginError {
    if let Some(e) = state.rec.trap.take() {
        return e;
    }
    if let Some(e) = err.downcast_ref::<PluginError>() {
        return e.clone();
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::OutOfFuel {
            limit: limits.fuel_per_record,
        },
        Some(Trap::Interrupt) => PluginError::Timeout {
            limit: limits.timeout,
        },
        _ if state.limiter.hit => PluginError::MemoryLimit {
            limit: limits.max_memory_bytes,
        },
        Some(Trap::StackOverflow) => PluginError::Trap {
            message: format!(
                "call stack exhausted (runaway recursion?){}",
                state.stderr_context()
            ),
        },
        Some(Trap::UnreachableCodeReached) => PluginError::Trap {
            message: format!(
                "wasm `unreachable` executed (the guest panicked or aborted){}",
                state.stderr_context()
            ),
        },
        Some(trap) => PluginError::Trap {
            message: format!("{trap}{}", state.stderr_context()),
        },
        None => PluginError::Trap {
            message: format!("{err:#}{}", state.stderr_context()),
        },
    }
}
