//! The functions a plugin may import besides WASI: ABI v1 (`millrace.*`) and the seed contract
//! (`env.host_*`). Each bounds-checks the guest buffers it names, pays for them in fuel before reading them
//! (`host_work.rs`), then hands the bytes to the per-instance state in `host.rs`, which validates and keeps
//! them within the binding's limits.

use wasmtime::{Caller, Linker};

use crate::host::{HostState, guest_bytes, memory, with_memory};
use crate::host_work::charge_buffers;
use crate::output::{LogLevel, LogSource};

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
                    charge_buffers(&mut c, &[(ptr, len as u32, "emit_point")])?;
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
                    charge_buffers(
                        &mut c,
                        &[
                            (ip, il as u32, "emit_document index"),
                            (bp, bl as u32, "emit_document body"),
                            (dp, dl as u32, "emit_document id"),
                        ],
                    )?;
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
                    charge_buffers(&mut c, &[(ptr, len as u32, "log")])?;
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
                    charge_buffers(&mut c, &[(ptr, len as u32, "reject")])?;
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

/// AssemblyScript's `env.abort(message, file, line, column)`, which its compiler imports by default (an
/// assertion, a bounds check, a `throw`): granted to modules of either contract, so that a plugin built the
/// default way loads. Calling it ends the record with a `trap` that names the message and the place.
pub(crate) const ABORT_SIGNATURE: Signature = "(i32, i32, i32, i32) -> ()";

/// Bytes of each AssemblyScript string `abort` reads (UTF-16: half as many characters).
const ABORT_TEXT_BYTES: usize = 1024;

/// Defines `env.abort` (see [`ABORT_SIGNATURE`]).
pub(crate) fn define_abort(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "abort",
        |mut c: Caller<'_, HostState>, msg: i32, file: i32, line: i32, column: i32| -> wasmtime::Result<()> {
            let mem = memory(&mut c)?;
            let (data, state) = mem.data_and_store_mut(&mut c);
            let message = format!(
                "abort: {} at {}:{}:{}",
                assemblyscript_string(data, msg).unwrap_or_else(|| "(no message)".into()),
                assemblyscript_string(data, file).unwrap_or_else(|| "?".into()),
                line as u32,
                column as u32
            );
            Err(state.trap(crate::PluginError::Trap { message }))
        },
    )?;
    Ok(())
}

/// An AssemblyScript string: UTF-16LE at `ptr`, its length in bytes in the four bytes before it (the
/// object header's `rtSize`), read up to [`ABORT_TEXT_BYTES`]. `None` for a null pointer or one that names
/// no string inside memory: the guest is failing anyway, its message is only help.
fn assemblyscript_string(mem: &[u8], ptr: i32) -> Option<String> {
    let p = ptr as u32 as usize;
    let header = mem.get(p.checked_sub(4)?..p)?;
    let len = u32::from_le_bytes(header.try_into().ok()?) as usize;
    let bytes = mem.get(p..p.checked_add(len.min(ABORT_TEXT_BYTES))?)?;
    let units = bytes.chunks_exact(2).map(|u| u16::from_le_bytes([u[0], u[1]]));
    Some(
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
    )
}

/// Defines one seed-contract import in the linker.
pub(crate) fn define_seed(linker: &mut Linker<HostState>, name: &str) -> wasmtime::Result<()> {
    match name {
        "host_log" => {
            linker.func_wrap("env", name, |mut c: Caller<'_, HostState>, ptr: i32, len: i32| {
                charge_buffers(&mut c, &[(ptr, len as u32, "host_log")])?;
                with_memory(&mut c, |data, state| {
                    let msg = guest_bytes(data, ptr, len, "host_log")?;
                    state.log(LogLevel::Info, LogSource::Log, msg);
                    Ok(())
                })
            })?;
        }
        "host_send_to_influx" => {
            linker.func_wrap("env", name, |mut c: Caller<'_, HostState>, ptr: i32, len: i32| {
                charge_buffers(&mut c, &[(ptr, len as u32, "host_send_to_influx")])?;
                let mem = memory(&mut c)?;
                let (data, state) = mem.data_and_store_mut(&mut c);
                match guest_bytes(data, ptr, len, "host_send_to_influx") {
                    // The seed contract allows several lines of line protocol in one call.
                    Ok(lines) => state.emit_points(lines),
                    Err(e) => Err(state.trap(e)),
                }
            })?;
        }
        "host_send_to_es" => {
            linker.func_wrap(
                "env",
                name,
                |mut c: Caller<'_, HostState>, ip: i32, il: i32, dp: i32, dl: i32| {
                    charge_buffers(
                        &mut c,
                        &[
                            (ip, il as u32, "host_send_to_es index"),
                            (dp, dl as u32, "host_send_to_es document"),
                        ],
                    )?;
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
