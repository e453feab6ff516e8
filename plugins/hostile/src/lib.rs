//! `hostile`: a test fixture, not an example. The record's value names a misbehaviour
//! (`{"do":"loop"}`, `"memory"`, `"flood"`, `"recurse"`, `"panic"`, `"abort"`, `"exit"`, `"bad-output"`,
//! `"log-flood"`) or a probe of the sandbox (`"fs"`, `"env"`, `"clock"`, `"random"`); anything else
//! (`"ok"`) emits one point, to show the next record on the same binding is processed normally.

use std::hint::black_box;

use millrace_plugin_sdk::{Level, Output, Point, Record, Reject, plugin};

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
