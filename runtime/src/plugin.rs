//! A compiled plugin: one module, its detected contract (ABI v1 or the seed contract), its imports checked
//! against what the host grants, and an `InstancePre` from which instances are stamped out cheaply. A
//! module that would fail on its first record for structural reasons (unknown import, wrong export type,
//! unsupported ABI version) is refused here, when it loads.

use std::sync::Arc;

use wasmtime::{ExternType, FuncType, InstancePre, Linker, Module, ValType};

use crate::host::HostState;
use crate::imports::{self, SEED_IMPORTS, V1_IMPORTS};
use crate::instance::PluginInstance;
use crate::{Limits, PluginError, Runtime, wasi};

/// The ABI version this host implements.
pub const ABI_VERSION: i32 = 1;

/// Which contract a module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// millrace ABI v1 (`plugins/ABI.md`): the record with its metadata in, typed outputs via `millrace.*`.
    V1,
    /// The seed design's contract: `allocate`/`deallocate`/`process_data` exports, `env.host_*` imports;
    /// the record's value in, nothing else.
    Seed,
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V1 => "millrace ABI v1",
            Self::Seed => "seed contract",
        })
    }
}

/// What a module imports or exports, for `millrace plugin inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub module: String,
    pub name: String,
    /// `func (i32, i32) -> i32`, `memory (17 pages)`, ...
    pub ty: String,
}

/// Static facts about a compiled plugin.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// `sha256:<hex>` of the module bytes.
    pub digest: String,
    pub size: usize,
    pub contract: Contract,
    /// The ABI version the module reports (v1), or `None` for the seed contract.
    pub abi_version: Option<i32>,
    pub imports: Vec<Item>,
    pub exports: Vec<Item>,
    /// Initial linear memory in bytes.
    pub initial_memory_bytes: u64,
}

/// A compiled, validated plugin. Cheap to clone; instances for a binding come from [`Plugin::instance`].
#[derive(Clone, Debug)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

pub(crate) struct PluginInner {
    pub runtime: Runtime,
    pub pre: InstancePre<HostState>,
    pub info: PluginInfo,
}

impl std::fmt::Debug for PluginInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub(crate) fn new(
        runtime: Runtime,
        module: Module,
        digest: String,
        size: usize,
    ) -> Result<Self, PluginError> {
        let contract = detect_contract(&module)?;
        let linker = link(&runtime, &module, contract)?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| PluginError::Instantiate {
                message: format!("linking: {e:#}"),
            })?;
        let initial_memory_bytes = module
            .exports()
            .find_map(|e| match e.ty() {
                ExternType::Memory(m) => Some(m.minimum().saturating_mul(64 * 1024)),
                _ => None,
            })
            .unwrap_or(0);
        let info = PluginInfo {
            digest,
            size,
            contract,
            abi_version: None,
            imports: module
                .imports()
                .map(|i| Item {
                    module: i.module().to_string(),
                    name: i.name().to_string(),
                    ty: describe(&i.ty()),
                })
                .collect(),
            exports: module
                .exports()
                .map(|e| Item {
                    module: String::new(),
                    name: e.name().to_string(),
                    ty: describe(&e.ty()),
                })
                .collect(),
            initial_memory_bytes,
        };
        let mut plugin = Self {
            inner: Arc::new(PluginInner { runtime, pre, info }),
        };
        // Probe: one instance, initialised, asked for its ABI version.
        let probe_limits = Limits {
            max_memory_bytes: plugin.inner.runtime.config().max_memory_bytes,
            ..Limits::default()
        };
        let mut probe = plugin.instance(probe_limits)?;
        let version = probe.probe()?;
        drop(probe);
        if let Some(v) = version {
            if v != ABI_VERSION {
                return Err(PluginError::UnsupportedAbi {
                    found: v,
                    supported: ABI_VERSION,
                });
            }
            if let Some(inner) = Arc::get_mut(&mut plugin.inner) {
                inner.info.abi_version = Some(v);
            }
        }
        Ok(plugin)
    }

    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// `sha256:<hex>` of the module.
    pub fn digest(&self) -> &str {
        &self.inner.info.digest
    }

    pub fn contract(&self) -> Contract {
        self.inner.info.contract
    }

    /// Bytes of the compiled image this plugin keeps mapped (native code, data segments, metadata): what
    /// holding it in memory costs, besides its instances.
    pub fn compiled_bytes(&self) -> usize {
        let r = self.inner.pre.module().image_range();
        (r.end as usize).saturating_sub(r.start as usize)
    }

    /// A reference that does not keep the compiled plugin in memory.
    pub fn downgrade(&self) -> WeakPlugin {
        WeakPlugin(Arc::downgrade(&self.inner))
    }

    /// An instance slot for one binding with its limits. The wasm instance itself is created lazily on the
    /// first record and recycled per the limits.
    pub fn instance(&self, limits: Limits) -> Result<PluginInstance, PluginError> {
        limits.validate(self.inner.runtime.config())?;
        Ok(PluginInstance::new(self.inner.clone(), limits))
    }
}

/// A [`Plugin`] that may have left memory: [`WeakPlugin::upgrade`] gives it back while anything else holds it.
#[derive(Clone, Debug)]
pub struct WeakPlugin(std::sync::Weak<PluginInner>);

impl WeakPlugin {
    pub fn upgrade(&self) -> Option<Plugin> {
        self.0.upgrade().map(|inner| Plugin { inner })
    }
}

/// Renders a func type as `(i32, i32) -> i32`.
pub(crate) fn signature(ty: &FuncType) -> String {
    let list = |it: &mut dyn Iterator<Item = ValType>| {
        it.map(|t| match t {
            ValType::I32 => "i32".to_string(),
            ValType::I64 => "i64".to_string(),
            ValType::F32 => "f32".to_string(),
            ValType::F64 => "f64".to_string(),
            ValType::V128 => "v128".to_string(),
            ValType::Ref(r) => format!("{r}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
    };
    let params = list(&mut ty.params());
    let results = list(&mut ty.results());
    format!(
        "({params}) -> {}",
        if ty.results().len() == 1 {
            results
        } else {
            format!("({results})")
        }
    )
}

fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => format!("func {}", signature(f)),
        ExternType::Memory(m) => format!("memory ({} pages min)", m.minimum()),
        ExternType::Table(t) => format!("table ({} min)", t.minimum()),
        ExternType::Global(g) => format!("global {:?}", g.content()),
        _ => "other".into(),
    }
}

fn export_func(module: &Module, name: &str) -> Option<FuncType> {
    module
        .exports()
        .find(|e| e.name() == name)
        .and_then(|e| match e.ty() {
            ExternType::Func(f) => Some(f),
            _ => None,
        })
}

/// Checks that `name` is an exported function with one of the `expected` signatures.
fn require_export(module: &Module, name: &str, expected: &[&str]) -> Result<String, PluginError> {
    let found = match module.exports().find(|e| e.name() == name) {
        None => "nothing (missing)".to_string(),
        Some(e) => match e.ty() {
            ExternType::Func(f) => {
                let sig = signature(&f);
                if expected.contains(&sig.as_str()) {
                    return Ok(sig);
                }
                format!("func {sig}")
            }
            other => describe(&other),
        },
    };
    Err(PluginError::BadExport {
        name: name.to_string(),
        expected: expected
            .iter()
            .map(|s| format!("func {s}"))
            .collect::<Vec<_>>()
            .join(" or "),
        found,
    })
}

fn detect_contract(module: &Module) -> Result<Contract, PluginError> {
    let contract = if export_func(module, "millrace_abi_version").is_some()
        || export_func(module, "millrace_process").is_some()
    {
        require_export(module, "millrace_abi_version", &["() -> i32"])?;
        require_export(module, "millrace_input", &["(i32) -> i32"])?;
        require_export(module, "millrace_process", &["(i32, i32) -> i32"])?;
        Contract::V1
    } else if export_func(module, "process_data").is_some() {
        require_export(module, "allocate", &["(i32) -> i32"])?;
        require_export(module, "deallocate", &["(i32, i32) -> ()"])?;
        require_export(module, "process_data", &["(i32, i32) -> ()", "(i32, i32) -> i32"])?;
        Contract::Seed
    } else {
        return Err(PluginError::NotAPlugin {
            detail: "the module exports neither `millrace_abi_version` (ABI v1) nor `process_data` \
                     (seed contract)"
                .into(),
        });
    };
    match module.exports().find(|e| e.name() == "memory").map(|e| e.ty()) {
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        Some(other) => {
            return Err(PluginError::BadExport {
                name: "memory".into(),
                expected: "a 32-bit, unshared linear memory".into(),
                found: describe(&other),
            });
        }
        None => {
            return Err(PluginError::BadExport {
                name: "memory".into(),
                expected: "a 32-bit linear memory".into(),
                found: "nothing (missing)".into(),
            });
        }
    }
    for init in ["_initialize", "_start"] {
        if export_func(module, init).is_some() {
            require_export(module, init, &["() -> ()"])?;
        }
    }
    Ok(contract)
}

/// Builds a linker holding exactly the functions the module imports, refusing anything not granted.
fn link(runtime: &Runtime, module: &Module, contract: Contract) -> Result<Linker<HostState>, PluginError> {
    let mut linker = Linker::new(runtime.engine());
    let mut defined = std::collections::HashSet::new();
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        if !defined.insert((m.to_string(), name.to_string())) {
            continue; // the same function imported twice
        }
        let unsupported = |reason: String| PluginError::UnsupportedImport {
            module: m.to_string(),
            name: name.to_string(),
            reason,
        };
        let ExternType::Func(ty) = import.ty() else {
            return Err(unsupported(format!(
                "the host provides functions only, not a {}",
                describe(&import.ty())
            )));
        };
        let sig = signature(&ty);
        let check = |table: &[(&str, &str)], what: &str| -> Result<(), PluginError> {
            match table.iter().find(|(n, _)| *n == name) {
                Some((_, expected)) if *expected == sig => Ok(()),
                Some((_, expected)) => {
                    Err(unsupported(format!("expected signature {expected}, found {sig}")))
                }
                None => Err(unsupported(format!("{what} has no such function"))),
            }
        };
        let result = match (m, contract) {
            ("env", _) if name == "abort" => {
                if sig != imports::ABORT_SIGNATURE {
                    return Err(unsupported(format!(
                        "expected signature {} (AssemblyScript's abort), found {sig}",
                        imports::ABORT_SIGNATURE
                    )));
                }
                imports::define_abort(&mut linker)
            }
            ("millrace", Contract::V1) => {
                check(V1_IMPORTS, "ABI v1 (module `millrace`)")?;
                imports::define_v1(&mut linker, name)
            }
            ("env", Contract::Seed) => {
                check(SEED_IMPORTS, "the seed contract (module `env`)")?;
                imports::define_seed(&mut linker, name)
            }
            (wasi::MODULE, _) => {
                if !wasi::is_preview1(name) {
                    return Err(unsupported("WASI preview 1 has no such function".into()));
                }
                match wasi::implemented_signature(name) {
                    Some(expected) if expected != sig => {
                        return Err(unsupported(format!("expected signature {expected}, found {sig}")));
                    }
                    None if ty.results().len() > 1 || ty.results().any(|r| !matches!(r, ValType::I32)) => {
                        return Err(unsupported(format!("unexpected signature {sig}")));
                    }
                    _ => {}
                }
                wasi::define(&mut linker, name, &ty)
            }
            ("millrace", Contract::Seed) => {
                return Err(unsupported(
                    "a seed-contract module cannot import ABI v1 functions".into(),
                ));
            }
            ("env", Contract::V1) => {
                return Err(unsupported(
                    "an ABI v1 module imports from `millrace`, not `env` (seed contract)".into(),
                ));
            }
            _ => {
                return Err(unsupported(
                    "the host grants only `millrace` (ABI v1), `env` (seed contract) and a capability-free \
                     `wasi_snapshot_preview1`"
                        .into(),
                ));
            }
        };
        result.map_err(|e| unsupported(format!("linking failed: {e:#}")))?;
    }
    Ok(linker)
}
