//! A WASI preview 1 that grants nothing. Guests built by Rust, TinyGo or wasi-libc import WASI for their
//! runtime (printing, environment, clocks, randomness, exit); they get: empty arguments and environment,
//! stdout/stderr into the plugin's log, no pre-opened directories, no sockets, a deterministic clock and
//! random stream unless the binding grants real clocks. Every other call answers with an error code, so a
//! guest trying the file system or the network learns it has none. Imports outside preview 1 are refused
//! when the module loads. Calls that touch guest memory pay fuel for it and stop at caps and at the
//! record's deadline (`host_work.rs`): `fd_write` takes at most 1,024 iovecs and scans a bounded number of
//! stdio bytes per record, `random_get` looks at the clock every 64 KiB.

use wasmtime::{Caller, FuncType, Linker, Val};

use crate::PluginError;
use crate::host::{HostState, guest_bytes, guest_bytes_mut, with_memory};
use crate::host_work::{CHUNK_BYTES, IOVEC_FUEL, MAX_IOVECS, charge, charge_buffers, cost};

pub(crate) const MODULE: &str = "wasi_snapshot_preview1";

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSYS: i32 = 52;
const ERRNO_NOTCAPABLE: i32 = 76;

/// Every function of WASI preview 1.
const PREVIEW1: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Functions with a real (if capability-free) implementation, and their signatures.
const IMPLEMENTED: &[(&str, &str)] = &[
    ("args_get", "(i32, i32) -> i32"),
    ("args_sizes_get", "(i32, i32) -> i32"),
    ("environ_get", "(i32, i32) -> i32"),
    ("environ_sizes_get", "(i32, i32) -> i32"),
    ("clock_res_get", "(i32, i32) -> i32"),
    ("clock_time_get", "(i32, i64, i32) -> i32"),
    ("fd_write", "(i32, i32, i32, i32) -> i32"),
    ("fd_close", "(i32) -> i32"),
    ("fd_fdstat_get", "(i32, i32) -> i32"),
    ("proc_exit", "(i32) -> ()"),
    ("random_get", "(i32, i32) -> i32"),
    ("sched_yield", "() -> i32"),
    ("poll_oneoff", "(i32, i32, i32, i32) -> i32"),
];

/// Most subscriptions one `poll_oneoff` may name.
const MAX_SUBSCRIPTIONS: i32 = 64;

/// Whether `name` is a WASI preview 1 function.
pub(crate) fn is_preview1(name: &str) -> bool {
    PREVIEW1.contains(&name)
}

/// The signature an implemented function must have, `None` for the ones answered with an error code.
pub(crate) fn implemented_signature(name: &str) -> Option<&'static str> {
    IMPLEMENTED.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Defines `name` (a preview 1 function the module imports with type `ty`) in the linker.
pub(crate) fn define(linker: &mut Linker<HostState>, name: &str, ty: &FuncType) -> wasmtime::Result<()> {
    let m = MODULE;
    match name {
        "args_sizes_get" | "environ_sizes_get" => {
            linker.func_wrap(m, name, |mut c: Caller<'_, HostState>, count: i32, size: i32| {
                charge_buffers(
                    &mut c,
                    &[(count, 4, "sizes_get count"), (size, 4, "sizes_get size")],
                )?;
                with_memory(&mut c, |data, _| {
                    guest_bytes_mut(data, count, 4, "sizes_get count")?.copy_from_slice(&0u32.to_le_bytes());
                    guest_bytes_mut(data, size, 4, "sizes_get size")?.copy_from_slice(&0u32.to_le_bytes());
                    Ok(ERRNO_SUCCESS)
                })
            })?;
        }
        "args_get" | "environ_get" => {
            linker.func_wrap(m, name, |_: Caller<'_, HostState>, _: i32, _: i32| ERRNO_SUCCESS)?;
        }
        "clock_res_get" => {
            linker.func_wrap(m, name, |mut c: Caller<'_, HostState>, id: i32, out: i32| {
                if !(0..=3).contains(&id) {
                    return Ok(ERRNO_INVAL);
                }
                charge_buffers(&mut c, &[(out, 8, "clock_res_get")])?;
                with_memory(&mut c, |data, _| {
                    guest_bytes_mut(data, out, 8, "clock_res_get")?.copy_from_slice(&1_000u64.to_le_bytes());
                    Ok(ERRNO_SUCCESS)
                })
            })?;
        }
        "clock_time_get" => {
            linker.func_wrap(
                m,
                name,
                |mut c: Caller<'_, HostState>, id: i32, _precision: i64, out: i32| {
                    if !(0..=3).contains(&id) {
                        return Ok(ERRNO_INVAL);
                    }
                    charge_buffers(&mut c, &[(out, 8, "clock_time_get")])?;
                    with_memory(&mut c, |data, state| {
                        let now = if state.limits.grant_clock {
                            if id == 0 {
                                std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .map_or(0, |d| d.as_nanos() as u64)
                            } else {
                                state.started.elapsed().as_nanos() as u64
                            }
                        } else if id == 0 {
                            state.clock_record_ns
                        } else {
                            state.clock_monotonic_ns += 1_000;
                            state.clock_monotonic_ns
                        };
                        guest_bytes_mut(data, out, 8, "clock_time_get")?.copy_from_slice(&now.to_le_bytes());
                        Ok(ERRNO_SUCCESS)
                    })
                },
            )?;
        }
        "fd_write" => {
            linker.func_wrap(
                m,
                name,
                |mut c: Caller<'_, HostState>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| {
                    if fd != 1 && fd != 2 {
                        return Ok(ERRNO_BADF);
                    }
                    if !(0..=MAX_IOVECS).contains(&iovs_len) {
                        return Ok(ERRNO_INVAL);
                    }
                    // First pass: bounds-check every iovec and add up what they name, to pay for it all
                    // before reading any of it.
                    let named = with_memory(&mut c, |data, _| {
                        guest_bytes(data, nwritten, 4, "fd_write nwritten")?;
                        (0..iovs_len).try_fold(0u64, |sum, i| {
                            let (ptr, len) = iovec(data, iovs, i)?;
                            guest_bytes(data, ptr, len, "fd_write buffer")?;
                            Ok(sum + u64::from(len as u32))
                        })
                    })?;
                    charge(&mut c, cost(iovs_len as u64, IOVEC_FUEL, named + 4))?;
                    with_memory(&mut c, |data, state| {
                        for i in 0..iovs_len {
                            state.check_deadline()?;
                            let (ptr, len) = iovec(data, iovs, i)?;
                            state.stdio_write(fd, guest_bytes(data, ptr, len, "fd_write buffer")?);
                        }
                        // Everything counts as written, kept or not: a guest told less would write again.
                        let total = u32::try_from(named).unwrap_or(u32::MAX);
                        guest_bytes_mut(data, nwritten, 4, "fd_write nwritten")?
                            .copy_from_slice(&total.to_le_bytes());
                        Ok(ERRNO_SUCCESS)
                    })
                },
            )?;
        }
        "fd_close" => {
            linker.func_wrap(m, name, |_: Caller<'_, HostState>, fd: i32| {
                if (0..=2).contains(&fd) {
                    ERRNO_SUCCESS
                } else {
                    ERRNO_BADF
                }
            })?;
        }
        "fd_fdstat_get" => {
            linker.func_wrap(m, name, |mut c: Caller<'_, HostState>, fd: i32, out: i32| {
                if !(0..=2).contains(&fd) {
                    return Ok(ERRNO_BADF);
                }
                charge_buffers(&mut c, &[(out, 24, "fd_fdstat_get")])?;
                with_memory(&mut c, |data, _| {
                    // fdstat: filetype u8 (2 = character device), flags u16, rights base, rights inheriting.
                    let rights: u64 = if fd == 0 { 1 << 1 } else { 1 << 6 };
                    let stat = guest_bytes_mut(data, out, 24, "fd_fdstat_get")?;
                    stat.fill(0);
                    stat[0] = 2;
                    stat[8..16].copy_from_slice(&rights.to_le_bytes());
                    Ok(ERRNO_SUCCESS)
                })
            })?;
        }
        "proc_exit" => {
            linker.func_wrap(
                m,
                name,
                |mut c: Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> {
                    Err(c.data_mut().trap(PluginError::Exit { code }))
                },
            )?;
        }
        "random_get" => {
            linker.func_wrap(m, name, |mut c: Caller<'_, HostState>, buf: i32, len: i32| {
                charge_buffers(&mut c, &[(buf, len as u32, "random_get")])?;
                with_memory(&mut c, |data, state| {
                    let out = guest_bytes_mut(data, buf, len as u32 as usize, "random_get")?;
                    // Chunks are multiples of 8 bytes: the stream is the same as in one go.
                    for chunk in out.chunks_mut(CHUNK_BYTES) {
                        state.check_deadline()?;
                        state.fill_random(chunk);
                    }
                    Ok(ERRNO_SUCCESS)
                })
            })?;
        }
        "sched_yield" => {
            linker.func_wrap(m, name, |_: Caller<'_, HostState>| ERRNO_SUCCESS)?;
        }
        "poll_oneoff" => {
            // Never waits: a clock subscription (a sleep) fires at once, deterministically (there is no real
            // time to wait for); a file descriptor subscription answers EBADF. Language runtimes sleep here (Go
            // before printing a panic, `time.Sleep`); waiting would only hold the lane.
            linker.func_wrap(
                m,
                name,
                |mut c: Caller<'_, HostState>, subs: i32, events: i32, n: i32, nevents: i32| {
                    if !(1..=MAX_SUBSCRIPTIONS).contains(&n) {
                        return Ok(ERRNO_INVAL);
                    }
                    let count = n as u32;
                    charge_buffers(
                        &mut c,
                        &[
                            (subs, 48 * count, "poll_oneoff subscriptions"),
                            (events, 32 * count, "poll_oneoff events"),
                            (nevents, 4, "poll_oneoff nevents"),
                        ],
                    )?;
                    with_memory(&mut c, |data, _| {
                        for i in 0..count as usize {
                            // subscription: userdata u64, tag u8 at 8 (0 clock, 1 fd_read, 2 fd_write).
                            let sub =
                                guest_bytes(data, subs, 48 * count as i32, "poll_oneoff subscriptions")?;
                            let sub = &sub[48 * i..48 * (i + 1)];
                            let (userdata, tag) =
                                (<[u8; 8]>::try_from(&sub[..8]).unwrap_or_default(), sub[8]);
                            // event: userdata u64, error u16 at 8, type u8 at 10, fd_readwrite at 16.
                            let out =
                                guest_bytes_mut(data, events, 32 * count as usize, "poll_oneoff events")?;
                            let event = &mut out[32 * i..32 * (i + 1)];
                            event.fill(0);
                            event[..8].copy_from_slice(&userdata);
                            let error: u16 = if tag == 0 { 0 } else { ERRNO_BADF as u16 };
                            event[8..10].copy_from_slice(&error.to_le_bytes());
                            event[10] = tag;
                        }
                        guest_bytes_mut(data, nevents, 4, "poll_oneoff nevents")?
                            .copy_from_slice(&count.to_le_bytes());
                        Ok(ERRNO_SUCCESS)
                    })
                },
            )?;
        }
        _ => define_denied(linker, name, ty)?,
    }
    Ok(())
}

/// The `i`-th iovec (buffer pointer, length) of the array at `iovs`.
fn iovec(data: &[u8], iovs: i32, i: i32) -> Result<(i32, i32), PluginError> {
    let at = (iovs as u32)
        .checked_add(i as u32 * 8)
        .ok_or_else(|| PluginError::AbiViolation {
            detail: "fd_write: iovec array overflows".into(),
        })?;
    let iov = guest_bytes(data, at as i32, 8, "fd_write iovec")?;
    let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
    let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
    Ok((ptr as i32, len as i32))
}

/// Everything without a capability answers with an error code: no file descriptors beyond stdio, no
/// paths, no sockets, no polling. `proc_raise` ends the record like an abort.
fn define_denied(linker: &mut Linker<HostState>, name: &str, ty: &FuncType) -> wasmtime::Result<()> {
    let errno = if name.starts_with("path_") || name.starts_with("sock_") {
        ERRNO_NOTCAPABLE
    } else if name.starts_with("fd_") {
        ERRNO_BADF
    } else {
        ERRNO_NOSYS
    };
    let raise = name == "proc_raise";
    let fname = name.to_string();
    linker.func_new(
        MODULE,
        name,
        ty.clone(),
        move |mut c: Caller<'_, HostState>, _params, results| {
            if raise {
                let message = format!("the plugin raised a signal (WASI {fname})");
                return Err(c.data_mut().trap(PluginError::Trap { message }));
            }
            if let Some(r) = results.first_mut() {
                *r = Val::I32(errno);
            }
            Ok(())
        },
    )?;
    Ok(())
}
