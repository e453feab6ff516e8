//! `hostile`: a test fixture, not an example. The record's value names a misbehaviour
//! (`{"do":"loop"}`, `"memory"`, `"flood"`, `"recurse"`, `"panic"`, `"abort"`, `"exit"`, `"bad-output"`,
//! `"log-flood"`, and the host-work floods `"stdio-flood"`, `"log-huge"`, `"point-huge"`) or a probe of the
//! sandbox (`"fs"`, `"env"`, `"clock"`, `"random"`); anything else (`"ok"`) emits one point, to show the
//! next record on the same binding is processed normally.

use std::hint::black_box;

use millrace_plugin_sdk::{Level, Output, Point, Record, Reject, plugin};

/// Bytes of ballast the host-work floods grow memory by first, so "all of memory" is several MiB.
const BALLAST: usize = 8 << 20;

/// WASI `fd_write` called directly: std never hands it more than a couple of iovecs.
#[cfg(target_arch = "wasm32")]
mod raw {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        pub fn fd_write(fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> i32;
    }

    /// Size of the linear memory in bytes.
    pub fn memory_bytes() -> u32 {
        (core::arch::wasm32::memory_size(0) as u64 * 65536).min(u64::from(u32::MAX)) as u32
    }
}

/// Writes 1,024 iovecs to stdout, each spanning the whole linear memory, again and again: one call names
/// gigabytes, all of it "valid" guest memory. Only host-side bounds stop it.
#[cfg(target_arch = "wasm32")]
fn stdio_flood() -> ! {
    let ballast = black_box(vec![b'.'; BALLAST]);
    let iovs = vec![[0u32, raw::memory_bytes()]; 1024];
    let mut written = 0u32;
    loop {
        // SAFETY: the host reads the iovec array and the memory it names, and writes 4 bytes to `written`;
        // all of it is this module's own memory.
        let errno = unsafe {
            raw::fd_write(
                1,
                iovs.as_ptr() as i32,
                iovs.len() as i32,
                &raw mut written as i32,
            )
        };
        black_box((errno, written, &ballast));
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn stdio_flood() -> ! {
    panic!("the stdio flood only makes sense inside the sandbox")
}

fn recurse(n: u64, pad: [u64; 16]) -> u64 {
    if n == 0 {
        pad[0]
    } else {
        black_box(recurse(n - 1, black_box(pad)) + pad[(n % 16) as usize])
    }
}

pub fn misbehave(record: &Record<'_>, out: &mut Output) -> Result<(), Reject> {
    let v: serde_json::Value = record.json()?;
    match v["do"].as_str().unwrap_or("ok") {
        "loop" => {
            let mut i = 0u64;
            loop {
                i = black_box(i.wrapping_add(1));
            }
        }
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                black_box(&hoard);
            }
        }
        "flood" => {
            for i in 0..10_000_000u64 {
                out.point(&Point::new("flood").field("i", i));
            }
        }
        "recurse" => {
            out.point(&Point::new("deep").field("v", recurse(u64::MAX / 2, [1; 16])));
        }
        "panic" => panic!("hostile plugin panics on purpose"),
        "abort" => std::process::abort(),
        "exit" => std::process::exit(3),
        "bad-output" => out.point_line("this is not line protocol"),
        "bad-index" => out.document_json("UPPER/case", b"{}", None),
        "log-flood" => {
            for i in 0..1000 {
                out.log(Level::Info, &format!("line {i}"));
            }
            println!("and stdout too");
            out.point(&Point::new("logged").field("n", 1000));
        }
        "stdio-flood" => stdio_flood(),
        "log-huge" => {
            // A log call per iteration, each naming megabytes the host keeps only 1 KiB of.
            let huge = String::from_utf8(vec![b'x'; BALLAST]).unwrap_or_default();
            loop {
                out.log(Level::Info, black_box(&huge));
            }
        }
        "point-huge" => {
            // Built in place (one copy of the ballast, filled by `memory.fill`), cheap in fuel.
            let mut line = Vec::with_capacity(BALLAST + 16);
            line.extend_from_slice(b"huge v=\"");
            line.resize(BALLAST + 8, b'y');
            line.push(b'"');
            let huge = String::from_utf8(line).unwrap_or_default();
            loop {
                out.point_line(black_box(&huge));
            }
        }
        "fs" => {
            let read = std::fs::read_to_string("/etc/passwd").map(|s| s.len());
            let write = std::fs::write("/tmp/millrace-hostile", b"x");
            let dir = std::fs::read_dir("/").map(|d| d.count());
            out.log(Level::Warn, &format!("read {read:?} write {write:?} dir {dir:?}"));
            let denied = read.is_err() && write.is_err() && dir.is_err();
            out.point(&Point::new("sandbox").field("fs_denied", denied));
        }
        "env" => {
            let vars = std::env::vars().count() as i64;
            let args = std::env::args().count() as i64;
            out.point(&Point::new("sandbox").field("env_vars", vars).field("args", args));
        }
        "clock" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(-1, |d| d.as_millis() as i64);
            out.point(&Point::new("sandbox").field("clock_ms", now));
        }
        "random" => {
            let mut m = std::collections::HashMap::new();
            m.insert(1, 2);
            out.point(&Point::new("sandbox").field("hashmap", m.len() as i64));
        }
        _ => out.point(&Point::new("ok").field("offset", record.offset())),
    }
    Ok(())
}

plugin!(misbehave);
