//! `millrace plugin inspect|push|pull|sign|verify|keygen`: a module's exports and imports, and the OCI
//! registry side of plugins (a store with the same pull policy and credentials parsing as the worker), with
//! cosign-format signatures for users without cosign.

use super::*;
use millrace_plugin_registry::RegistryError;
use millrace_plugin_registry::signature::{self, SigningKey, TrustedKey};

pub(super) fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let runtime = Runtime::new(EngineConfig {
        max_instances: 2,
        ..EngineConfig::default()
    })?;
    let path = Path::new(&args.plugin);
    let (plugin, manifest) = if path.exists() || args.plugin.ends_with(".wasm") {
        (load(&runtime, path)?, None)
    } else {
        let reference = PluginRef::parse(&args.plugin)?;
        let store = store(&args.registry, &reference, runtime.clone())?;
        let loaded = tokio_runtime()?.block_on(store.load(&reference))?;
        (loaded.plugin, Some(loaded.manifest_digest))
    };
    let info = plugin.info();
    if args.json {
        let items = |v: &[millrace_runtime::Item]| -> Vec<Value> {
            v.iter()
                .map(|i| json!({"module": i.module, "name": i.name, "type": i.ty}))
                .collect()
        };
        let v = json!({
            "plugin": args.plugin,
            "manifest_digest": manifest,
            "size": info.size,
            "compiled_bytes": plugin.compiled_bytes(),
            "digest": info.digest,
            "contract": match info.contract { millrace_runtime::Contract::V1 => "v1", millrace_runtime::Contract::Seed => "seed" },
            "abi_version": info.abi_version,
            "initial_memory_bytes": info.initial_memory_bytes,
            "imports": items(&info.imports),
            "exports": items(&info.exports),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("plugin    {} ({} bytes)", args.plugin, info.size);
    if let Some(m) = &manifest {
        println!("manifest  {m}");
    }
    println!("module    {}", info.digest);
    println!(
        "compiled  {} KiB in memory while loaded",
        plugin.compiled_bytes() / 1024
    );
    match info.abi_version {
        Some(v) => println!("contract  {} (version {v})", info.contract),
        None => println!("contract  {}", info.contract),
    }
    println!("memory    {} KiB initial", info.initial_memory_bytes / 1024);
    println!("imports");
    for i in &info.imports {
        println!("  {:<40} {}", format!("{}.{}", i.module, i.name), i.ty);
    }
    println!("exports");
    for e in &info.exports {
        println!("  {:<40} {}", e.name, e.ty);
    }
    Ok(ExitCode::SUCCESS)
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The user's own cache directory; never a shared path under the system's temp directory, where another
/// user could plant the directory first.
fn default_cache_dir() -> Result<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .map(|d| d.join("millrace/plugins"))
        .ok_or_else(|| anyhow::anyhow!("no HOME or XDG_CACHE_HOME for the plugin cache: give --cache-dir"))
}

fn store(args: &RegistryArgs, reference: &PluginRef, runtime: Runtime) -> Result<PluginStore> {
    let cache_dir = match &args.cache_dir {
        Some(d) => d.clone(),
        None => default_cache_dir()?,
    };
    let mut config = RegistryConfig::new(cache_dir);
    config.pull_policy = args
        .pull_policy
        .parse::<PullPolicy>()
        .map_err(|e| anyhow::anyhow!("--pull-policy: {e}"))?;
    if args.insecure {
        config.insecure_registries.push(reference.registry().to_string());
    }
    config.ca_file = args.ca_file.clone();
    config.token_realms = args.token_realms.clone();
    // Flags may come from the environment (MILLRACE_REGISTRY_PASSWORD, DOCKER_CONFIG_JSON): a user name given
    // wins over a Docker config, and a password without a user name is left unused.
    let basic = args.username.is_some();
    config.credentials = Credentials::from_parts(
        args.username.clone(),
        args.password.clone().filter(|_| basic),
        args.docker_config.clone().filter(|_| !basic),
    )
    .map_err(|e| match e {
        CredentialsError::UsernameWithoutPassword => {
            anyhow::anyhow!("--username needs --password (or MILLRACE_REGISTRY_PASSWORD)")
        }
        other => anyhow::anyhow!("registry credentials: {other}"),
    })?;
    Ok(PluginStore::new(
        config,
        runtime,
        RegistryMetrics::unregistered(),
    )?)
}

/// Progress and timings for a person at a terminal; nothing when stderr is piped.
fn progress(msg: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("{msg}");
    }
}

pub(super) fn push(args: PushArgs) -> Result<ExitCode> {
    let reference = PluginRef::parse(&args.reference)?;
    let wasm = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let name = args
        .file
        .file_name()
        .map_or_else(|| "plugin.wasm".to_string(), |n| n.to_string_lossy().into_owned());
    let runtime = Runtime::new(EngineConfig {
        max_instances: 2,
        ..EngineConfig::default()
    })?;
    let store = store(&args.registry, &reference, runtime)?;
    let start = Instant::now();
    let digest = tokio_runtime()?.block_on(store.push(&wasm, &name, &reference))?;
    progress(&format!(
        "pushed {} ({} KiB) to {reference} in {} ms",
        args.file.display(),
        wasm.len().div_ceil(1024),
        start.elapsed().as_millis()
    ));
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}

fn small_runtime() -> Result<Runtime> {
    Ok(Runtime::new(EngineConfig {
        max_instances: 2,
        ..EngineConfig::default()
    })?)
}

pub(super) fn sign(args: SignArgs) -> Result<ExitCode> {
    let reference = PluginRef::parse(&args.reference)?;
    let key = SigningKey::from_file(&args.key)?;
    let store = store(&args.registry, &reference, small_runtime()?)?;
    let digest = tokio_runtime()?.block_on(store.sign(&reference, &key))?;
    progress(&format!(
        "signed {}@{digest} with {} ({})",
        reference.repository(),
        key.name(),
        key.key_type()
    ));
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let reference = PluginRef::parse(&args.reference)?;
    let keys = args
        .keys
        .iter()
        .map(TrustedKey::from_file)
        .collect::<Result<Vec<_>, _>>()?;
    let store = store(&args.registry, &reference, small_runtime()?)?;
    match tokio_runtime()?.block_on(store.verify(&reference, &keys)) {
        Ok((digest, by)) => {
            println!("{digest} signed; verified with {}", by.key);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (RegistryError::Unsigned { .. } | RegistryError::BadSignature { .. })) => {
            eprintln!("{}: {e}", e.kind());
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn keygen(args: KeygenArgs) -> Result<ExitCode> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (private, public) = signature::generate_p256()?;
    let with = |ext: &str| {
        let mut p = args.name.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    for (path, bytes, mode) in [(with(".key"), &private, 0o600), (with(".pub"), &public, 0o644)] {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(bytes)?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn pull(args: PullArgs) -> Result<ExitCode> {
    let reference = PluginRef::parse(&args.reference)?;
    let runtime = Runtime::new(EngineConfig {
        max_instances: 2,
        ..EngineConfig::default()
    })?;
    let store = store(&args.registry, &reference, runtime)?;
    let rt = tokio_runtime()?;
    let loaded = rt.block_on(store.load(&reference))?;
    let mut repeats = Vec::new();
    for _ in 0..args.repeat {
        repeats.push(rt.block_on(store.load(&reference))?.elapsed.as_secs_f64() * 1e3);
    }
    progress(&format!(
        "{reference}: module {} ({} KiB, {}) from {:?} ready in {} ms; cache {}",
        loaded.module_digest,
        loaded.plugin.info().size.div_ceil(1024),
        loaded.plugin.contract(),
        loaded.source,
        loaded.elapsed.as_millis(),
        store.config().cache_dir.display()
    ));
    if args.json {
        println!(
            "{}",
            json!({
                "reference": reference.to_string(),
                "manifest_digest": loaded.manifest_digest,
                "module_digest": loaded.module_digest,
                "source": format!("{:?}", loaded.source).to_lowercase(),
                "ready_ms": loaded.elapsed.as_secs_f64() * 1e3,
                "module_bytes": loaded.plugin.info().size,
                "repeat_ms": repeats,
            })
        );
    } else {
        println!("{}", loaded.manifest_digest);
    }
    Ok(ExitCode::SUCCESS)
}
