//! Times the steps of loading a precompiled plugin (a development aid for the cache's warm path).
//! `cargo run --release -p millrace-runtime --example load_time -- plugins/dist/seed_router.wasm`

use std::time::Instant;

use millrace_runtime::{EngineConfig, Runtime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: load_time <plugin.wasm>")?;
    let wasm = std::fs::read(path)?;
    let rt = Runtime::new(EngineConfig::default())?;
    let artifact = rt.precompile(&wasm)?;
    let digest = millrace_runtime::sha256_digest(&wasm);
    for _ in 0..3 {
        let t = Instant::now();
        let h = millrace_runtime::sha256_digest(&artifact);
        let hash = t.elapsed();
        let t = Instant::now();
        let p = rt.load_precompiled(&artifact, &digest, wasm.len())?;
        let load = t.elapsed();
        println!(
            "artifact {} KiB: sha256 {:?}, load_precompiled (deserialize + checks + probe) {:?} {}",
            artifact.len() / 1024,
            hash,
            load,
            &h[..12]
        );
        drop(p);
    }
    Ok(())
}
