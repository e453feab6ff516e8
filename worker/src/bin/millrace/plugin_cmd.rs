//! `millrace plugin ...`: try a plugin on sample records, inspect a module, measure a plugin's throughput.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use millrace_runtime::{
    EngineConfig, Header, Limits, LogLine, Output, Plugin, Processed, Record, Runtime, Verdict,
};
use serde_json::{Value, json};

use millrace_plugin_registry::{
    Credentials, CredentialsError, PluginRef, PluginStore, PullPolicy, RegistryConfig, RegistryMetrics,
};

use millrace_worker::units::{parse_duration, parse_size};

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Run a plugin over records from an NDJSON file and print each record's outputs, logs, fuel and time.
    /// Exits 1 when a record fails (trap, limit, invalid output), 0 otherwise.
    Test(TestArgs),
    /// Show a plugin's contract, ABI version, imports, exports and size: a .wasm file, or a reference
    /// (pulled into the cache first).
    Inspect(InspectArgs),
    /// Push a module to an OCI registry as a wasm artifact (as `oras push` would); prints the digest.
    Push(PushArgs),
    /// Pull a plugin into the local cache (verified and compiled); prints its digest.
    Pull(PullArgs),
    /// Measure a plugin: records/s over a corpus, fuel per record, instantiation time, memory per instance.
    Bench(BenchArgs),
}

/// Sandbox limits, as a binding would set them.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Fuel per record.
    #[arg(long, default_value_t = Limits::default().fuel_per_record)]
    fuel: u64,
    /// Maximum linear memory (e.g. 16MiB).
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    memory: u64,
    /// Wall-clock deadline per record (e.g. 50ms).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    timeout: Duration,
    /// Maximum outputs per record.
    #[arg(long, default_value_t = Limits::default().max_outputs_per_record)]
    max_outputs: u32,
    /// Give the plugin real clocks (otherwise its clock reads the record's timestamp).
    #[arg(long)]
    grant_clock: bool,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            fuel_per_record: self.fuel,
            max_memory_bytes: self.memory,
            timeout: self.timeout,
            max_outputs_per_record: self.max_outputs,
            grant_clock: self.grant_clock,
            ..Limits::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// The plugin module (.wasm).
    plugin: PathBuf,
    /// Records, one per line: each line is a record's value, or with --envelope a JSON object
    /// {"value":..,"key":..,"headers":{..},"topic":..,"partition":..,"offset":..,"timestamp":..}. `-` reads stdin.
    #[arg(long, short)]
    input: PathBuf,
    /// Lines are envelopes with key, headers and metadata rather than bare values.
    #[arg(long)]
    envelope: bool,
    /// Topic the records claim to come from.
    #[arg(long, default_value = "test")]
    topic: String,
    /// Record timestamp in ms since the epoch (default: now).
    #[arg(long)]
    timestamp: Option<i64>,
    /// Also exit 1 when a record is rejected.
    #[arg(long)]
    fail_on_reject: bool,
    /// One JSON object per record instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A plugin module (.wasm file) or a reference (registry/repository:tag or @sha256:...).
    plugin: String,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// How to reach registries and where to cache plugins.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Plugin cache directory.
    #[arg(long, env = "MILLRACE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Speak plain HTTP to the reference's registry (loopback and test registries only).
    #[arg(long)]
    insecure: bool,
    /// PEM CA certificates to trust besides the system's (a registry signed by a private CA).
    #[arg(long, env = "MILLRACE_REGISTRY_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Registry user name (basic auth, or the token flow the registry asks for).
    #[arg(long, env = "MILLRACE_REGISTRY_USERNAME")]
    username: Option<String>,
    /// Registry password.
    #[arg(long, env = "MILLRACE_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// A Docker config.json with credentials per registry (as Kubernetes mounts imagePullSecrets).
    #[arg(long, env = "DOCKER_CONFIG_JSON")]
    docker_config: Option<PathBuf>,
    /// When to resolve a tag again: if-not-present, always, or a duration such as 5m.
    #[arg(long, default_value = "always")]
    pull_policy: String,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The module to push (.wasm); it must load as a plugin.
    file: PathBuf,
    /// Where: registry/repository:tag.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// What: registry/repository:tag or registry/repository@sha256:...
    reference: String,
    /// Print a JSON object (digests, where it came from, time to ready) instead of the digest.
    #[arg(long)]
    json: bool,
    /// Load it this many more times in the same process and report those times too (benchmarks).
    #[arg(long, default_value_t = 0, hide = true)]
    repeat: u32,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The plugin module (.wasm).
    plugin: PathBuf,
    /// Corpus: one record value per line.
    #[arg(long, short)]
    input: PathBuf,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Instantiations to time.
    #[arg(long, default_value_t = 2000)]
    instantiations: u32,
    /// Live instances for the memory-per-instance figure.
    #[arg(long, default_value_t = 200)]
    live_instances: u32,
    /// Turn fuel metering off, to measure what it costs (never how a worker runs).
    #[arg(long)]
    no_fuel: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

pub fn run(cmd: PluginCommand) -> Result<ExitCode> {
    match cmd {
        PluginCommand::Test(a) => test(a),
        PluginCommand::Inspect(a) => inspect(a),
        PluginCommand::Push(a) => push(a),
        PluginCommand::Pull(a) => pull(a),
        PluginCommand::Bench(a) => bench(a),
    }
}

fn load(runtime: &Runtime, path: &Path) -> Result<Plugin> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    runtime
        .compile(&bytes)
        .with_context(|| format!("loading plugin {}", path.display()))
}

/// One input record, owned.
struct Input {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        other => Some(other.to_string().into_bytes()),
    }
}

fn read_inputs(args: &TestArgs) -> Result<Vec<Input>> {
    let reader: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f =
            std::fs::File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut inputs = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let offset = inputs.len() as i64;
        let mut input = Input {
            topic: args.topic.clone(),
            partition: 0,
            offset,
            timestamp_ms: Some(args.timestamp.unwrap_or(now)),
            key: None,
            value: Some(line.clone().into_bytes()),
            headers: Vec::new(),
        };
        if args.envelope {
            let env: Value = serde_json::from_str(&line)
                .with_context(|| format!("line {}: an envelope must be a JSON object", i + 1))?;
            let Value::Object(env) = env else {
                bail!("line {}: an envelope must be a JSON object", i + 1)
            };
            input.value = env.get("value").and_then(bytes_of);
            input.key = env.get("key").and_then(bytes_of);
            if let Some(t) = env.get("topic").and_then(Value::as_str) {
                input.topic = t.to_string();
            }
            if let Some(p) = env.get("partition").and_then(Value::as_i64) {
                input.partition = p as i32;
            }
            if let Some(o) = env.get("offset").and_then(Value::as_i64) {
                input.offset = o;
            }
            if let Some(ts) = env.get("timestamp") {
                input.timestamp_ms = ts.as_i64();
            }
            if let Some(Value::Object(h)) = env.get("headers") {
                input.headers = h.iter().map(|(k, v)| (k.clone(), bytes_of(v))).collect();
            }
        }
        inputs.push(input);
    }
    Ok(inputs)
}

fn process(inst: &mut millrace_runtime::PluginInstance, input: &Input) -> Processed {
    let headers = Header::borrow_all(&input.headers);
    inst.process(&Record {
        topic: &input.topic,
        partition: input.partition,
        offset: input.offset,
        timestamp_ms: input.timestamp_ms,
        key: input.key.as_deref(),
        value: input.value.as_deref(),
        headers: &headers,
    })
}

fn output_json(o: &Output) -> Value {
    match o {
        Output::Point(p) => json!({"point": p.line(), "measurement": p.measurement()}),
        Output::Document(d) => json!({
            "document": serde_json::from_str::<Value>(d.body()).unwrap_or(Value::Null),
            "index": d.index(),
            "id": d.id(),
        }),
    }
}

fn log_json(l: &LogLine) -> Value {
    json!({"level": l.level.to_string(), "source": format!("{:?}", l.source).to_lowercase(), "message": l.message})
}

fn test(args: TestArgs) -> Result<ExitCode> {
    let runtime = Runtime::new(EngineConfig {
        max_instances: 4,
        ..EngineConfig::default()
    })?;
    let plugin = load(&runtime, &args.plugin)?;
    // An author trying a plugin wants to see its logs: no rate limit, a generous per-record cap.
    let limits = Limits {
        max_log_lines_per_second: 0,
        max_log_lines_per_record: 256,
        ..args.limits.limits()
    };
    let mut inst = plugin.instance(limits)?;
    let inputs = read_inputs(&args)?;
    let color = std::io::stdout().is_terminal() && !args.json;
    let (red, green, yellow, dim, reset) = if color {
        ("\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "", "", "")
    };
    let mut out = std::io::stdout().lock();
    let (mut accepted, mut rejected, mut failed, mut outputs) = (0u64, 0u64, 0u64, 0u64);
    let (mut fuel, mut time) = (0u64, Duration::ZERO);
    for input in &inputs {
        let p = process(&mut inst, input);
        fuel += p.fuel_used;
        time += p.elapsed;
        if args.json {
            let mut v = json!({
                "offset": input.offset,
                "fuel": p.fuel_used,
                "micros": p.elapsed.as_secs_f64() * 1e6,
                "logs": p.logs.iter().map(log_json).collect::<Vec<_>>(),
                "logs_dropped": p.logs_dropped,
            });
            match &p.result {
                Ok(Verdict::Accepted(o)) => {
                    v["verdict"] = json!("accepted");
                    v["outputs"] = o.iter().map(output_json).collect();
                }
                Ok(Verdict::Rejected { reason }) => {
                    v["verdict"] = json!("rejected");
                    v["reason"] = json!(reason);
                }
                Err(e) => {
                    v["verdict"] = json!("failed");
                    v["error_kind"] = json!(e.kind());
                    v["error"] = json!(e.to_string());
                }
            }
            writeln!(out, "{v}")?;
        } else {
            let head = format!(
                "record {} {dim}(fuel {}, {:.1} µs){reset}",
                input.offset,
                p.fuel_used,
                p.elapsed.as_secs_f64() * 1e6
            );
            match &p.result {
                Ok(Verdict::Accepted(o)) => {
                    writeln!(out, "{head}: {green}accepted{reset}, {} output(s)", o.len())?
                }
                Ok(Verdict::Rejected { reason }) => {
                    writeln!(out, "{head}: {yellow}rejected{reset}: {reason}")?
                }
                Err(e) => writeln!(out, "{head}: {red}FAILED [{}]{reset} {e}", e.kind())?,
            }
            if let Ok(Verdict::Accepted(o)) = &p.result {
                for o in o {
                    match o {
                        Output::Point(pt) => writeln!(out, "  point     {}", pt.line())?,
                        Output::Document(d) => writeln!(
                            out,
                            "  document  {}{}  {}",
                            d.index(),
                            d.id().map(|id| format!(" id={id}")).unwrap_or_default(),
                            d.body()
                        )?,
                    }
                }
            }
            for l in &p.logs {
                writeln!(
                    out,
                    "  {dim}log {:<5} {:?}{reset} {}",
                    l.level, l.source, l.message
                )?;
            }
            if p.logs_dropped > 0 {
                writeln!(out, "  {dim}({} log lines dropped){reset}", p.logs_dropped)?;
            }
        }
        match &p.result {
            Ok(Verdict::Accepted(o)) => {
                accepted += 1;
                outputs += o.len() as u64;
            }
            Ok(Verdict::Rejected { .. }) => rejected += 1,
            Err(_) => failed += 1,
        }
    }
    let n = inputs.len().max(1) as f64;
    let summary = format!(
        "{} record(s): {accepted} accepted ({outputs} outputs), {rejected} rejected, {failed} failed; \
         mean fuel {:.0}, mean time {:.1} µs; plugin {} ({})",
        inputs.len(),
        fuel as f64 / n,
        time.as_secs_f64() * 1e6 / n,
        plugin.digest(),
        plugin.contract()
    );
    if args.json {
        eprintln!("{summary}");
    } else {
        writeln!(out, "{summary}")?;
    }
    let bad = failed > 0 || (args.fail_on_reject && rejected > 0);
    Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn inspect(args: InspectArgs) -> Result<ExitCode> {
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

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("millrace/plugins")
}

fn store(args: &RegistryArgs, reference: &PluginRef, runtime: Runtime) -> Result<PluginStore> {
    let mut config = RegistryConfig::new(args.cache_dir.clone().unwrap_or_else(default_cache_dir));
    config.pull_policy = args
        .pull_policy
        .parse::<PullPolicy>()
        .map_err(|e| anyhow::anyhow!("--pull-policy: {e}"))?;
    if args.insecure {
        config.insecure_registries.push(reference.registry().to_string());
    }
    config.ca_file = args.ca_file.clone();
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

fn push(args: PushArgs) -> Result<ExitCode> {
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

fn pull(args: PullArgs) -> Result<ExitCode> {
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

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn bench(args: BenchArgs) -> Result<ExitCode> {
    let runtime = Runtime::new(EngineConfig {
        max_instances: args.live_instances.max(8) + 8,
        meter_fuel: !args.no_fuel,
        ..EngineConfig::default()
    })?;
    let plugin = load(&runtime, &args.plugin)?;
    let limits = args.limits.limits();
    let corpus =
        std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let values: Vec<&[u8]> = corpus
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::as_bytes)
        .collect();
    if values.is_empty() {
        bail!("{} holds no records", args.input.display());
    }
    let avg_bytes = values.iter().map(|v| v.len()).sum::<usize>() as f64 / values.len() as f64;
    let records: Vec<Record<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            topic: "bench",
            partition: 0,
            offset: i as i64,
            timestamp_ms: Some(1_700_000_000_000),
            key: None,
            value: Some(v),
            headers: &[],
        })
        .collect();

    // Throughput: whole passes over the corpus on one instance, after a warm-up pass.
    let mut inst = plugin.instance(limits.clone())?;
    let (mut failures, mut outputs, mut rejects) = (0u64, 0u64, 0u64);
    for r in &records {
        let _ = inst.process(r);
    }
    let budget = Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let (mut n, mut fuel) = (0u64, 0u64);
    while start.elapsed() < budget {
        for r in &records {
            let p = inst.process(r);
            fuel += p.fuel_used;
            match p.result {
                Ok(Verdict::Accepted(o)) => outputs += o.len() as u64,
                Ok(Verdict::Rejected { .. }) => rejects += 1,
                Err(_) => failures += 1,
            }
        }
        n += records.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(inst);

    // Instantiation: a fresh instance from the pre-instantiated module, each timed.
    let mut times = Vec::with_capacity(args.instantiations as usize);
    for _ in 0..args.instantiations {
        let mut fresh = plugin.instance(limits.clone())?;
        let t = Instant::now();
        fresh.prepare()?;
        times.push(t.elapsed());
    }
    times.sort();
    let median_us = times.get(times.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e6);
    let mean_us = times.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e6 / times.len().max(1) as f64;

    // Memory: resident set growth per live instance that processed a record.
    let before = resident_bytes();
    let mut live = Vec::with_capacity(args.live_instances as usize);
    for i in 0..args.live_instances as usize {
        let mut inst = plugin.instance(limits.clone())?;
        let _ = inst.process(&records[i % records.len()]);
        live.push(inst);
    }
    let after = resident_bytes();
    let rss_per_instance = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) / u64::from(args.live_instances.max(1))),
        _ => None,
    };
    let memory_per_instance =
        live.iter().map(|i| i.memory_bytes() as u64).sum::<u64>() / live.len().max(1) as u64;
    drop(live);

    let v = json!({
        "plugin": args.plugin.file_name().map(|f| f.to_string_lossy().into_owned()),
        "digest": plugin.digest(),
        "contract": plugin.contract().to_string(),
        "corpus_records": records.len(),
        "avg_record_bytes": avg_bytes.round(),
        "records": n,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "records_per_s": (n as f64 / secs).round(),
        "ns_per_record": (secs * 1e9 / n as f64 * 10.0).round() / 10.0,
        "fuel_per_record": (fuel as f64 / n as f64).round(),
        "outputs": outputs,
        "rejected": rejects,
        "failed": failures,
        "instantiate_median_us": (median_us * 100.0).round() / 100.0,
        "instantiate_mean_us": (mean_us * 100.0).round() / 100.0,
        "rss_bytes_per_live_instance": rss_per_instance,
        "linear_memory_bytes_per_instance": memory_per_instance,
    });
    println!("{v}");
    Ok(ExitCode::SUCCESS)
}
