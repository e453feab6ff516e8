//! The one wasmtime `Engine` of a process, configured for untrusted code: fuel metering, epoch
//! interruption driven by a ticker thread (wall-clock deadlines), and the pooling allocator (instances in
//! microseconds from pre-reserved slots, memories copy-on-write from the module image).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module, OptLevel, PoolingAllocationConfig};

use crate::plugin::Plugin;
use crate::{EngineConfig, PluginError};

/// The plugin runtime: compiles modules into [`Plugin`]s that share one engine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

#[derive(Debug)]
struct RuntimeInner {
    engine: Engine,
    config: EngineConfig,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Runtime {
    /// Creates the engine and starts its epoch ticker.
    pub fn new(config: EngineConfig) -> Result<Self, PluginError> {
        config.validate()?;
        let n = config.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(n)
            .total_memories(n)
            .total_tables(n)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(config.max_memory_bytes as usize)
            // Keep the first pages of a recycled slot resident: most plugins touch little memory.
            .linear_memory_keep_resident(64 * 1024)
            .table_keep_resident(16 * 1024);

        let mut c = Config::new();
        c.consume_fuel(config.meter_fuel)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .cranelift_opt_level(OptLevel::Speed)
            .parallel_compilation(config.parallel_compilation)
            .max_wasm_stack(512 * 1024);
        #[cfg(feature = "profiling")]
        if std::env::var_os("MILLRACE_PERFMAP").is_some() {
            c.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&c).map_err(|e| PluginError::Config {
            detail: format!("creating the WebAssembly engine: {e}"),
        })?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop, tick) = (engine.clone(), stop.clone(), config.epoch_tick);
            std::thread::Builder::new()
                .name("millrace-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Config {
                    detail: format!("starting the epoch ticker thread: {e}"),
                })?
        };
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                config,
                stop,
                ticker: Some(ticker),
            }),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Validates and compiles a module, checks its contract and imports, and probes one instance.
    pub fn compile(&self, wasm: &[u8]) -> Result<Plugin, PluginError> {
        check_magic(wasm)?;
        let module = Module::from_binary(self.engine(), wasm).map_err(|e| PluginError::InvalidModule {
            message: format!("{e:#}"),
        })?;
        Plugin::new(self.clone(), module, sha256_digest(wasm), wasm.len())
    }

    /// Compiles a module to an artifact that [`Runtime::load_precompiled`] can load without compiling,
    /// for the plugin cache. Only artifacts produced here may ever be loaded.
    pub fn precompile(&self, wasm: &[u8]) -> Result<Vec<u8>, PluginError> {
        check_magic(wasm)?;
        self.engine()
            .precompile_module(wasm)
            .map_err(|e| PluginError::InvalidModule {
                message: format!("{e:#}"),
            })
    }

    /// Loads an artifact made by [`Runtime::precompile`] for the module with digest `digest`
    /// (`sha256:<hex>`) and size `size`.
    ///
    /// The caller must only pass bytes it produced with `precompile` of a runtime with the same
    /// [`Runtime::compatibility_key`] and stored where nothing else writes, checking their integrity on
    /// load (the plugin cache re-hashes them). Untrusted bytes here would be native code run unchecked.
    pub fn load_precompiled(
        &self,
        artifact: &[u8],
        digest: &str,
        size: usize,
    ) -> Result<Plugin, PluginError> {
        // SAFETY: the contract above: the artifact was produced by `Engine::precompile_module` of a
        // compatible engine (same compatibility key) and its integrity was verified by the caller.
        #[allow(unsafe_code)]
        let module = unsafe { Module::deserialize(self.engine(), artifact) }.map_err(|e| {
            PluginError::InvalidModule {
                message: format!("loading a precompiled artifact: {e:#}"),
            }
        })?;
        Plugin::new(self.clone(), module, digest.to_string(), size)
    }

    /// Identifies the engine's code generation (wasmtime version, target, settings): precompiled artifacts
    /// are keyed by it so that an upgrade never loads a stale artifact.
    pub fn compatibility_key(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine().precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }
}

/// `sha256:<hex>` of bytes, the OCI digest form.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex_lower(&Sha256::digest(bytes)))
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

fn check_magic(wasm: &[u8]) -> Result<(), PluginError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        let head: String = wasm.iter().take(16).map(|b| format!("{b:02x}")).collect();
        return Err(PluginError::NotWasm {
            detail: format!(
                "{} bytes without the `\\0asm` magic (first bytes: {})",
                wasm.len(),
                if head.is_empty() { "none".into() } else { head }
            ),
        });
    }
    if wasm[4..8] != [1, 0, 0, 0] {
        return Err(PluginError::NotWasm {
            detail: format!(
                "binary format version {:?} is not a core module (a component? those are not supported)",
                &wasm[4..8]
            ),
        });
    }
    Ok(())
}
