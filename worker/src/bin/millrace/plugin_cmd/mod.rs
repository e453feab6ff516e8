//! `millrace plugin ...`: try a plugin on sample records (`test.rs`), inspect a module or a reference, push and
//! pull through an OCI registry (`registry.rs`), measure a plugin's throughput (`bench.rs`), scaffold a plugin
//! project (`new.rs`). This file holds the command line's arguments and the dispatch.

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
    /// Sign a plugin in its registry the way cosign does (ECDSA P-256 key; signature at tag
    /// sha256-<hex>.sig of the same repository); prints the signed digest. Workers whose trust policy
    /// lists the public key accept it; `cosign verify --key` does too.
    Sign(SignArgs),
    /// Verify a plugin's cosign signature with public keys (ours or cosign's); prints the digest and the
    /// key that verified it. Exits 1 when unsigned or wrongly signed.
    Verify(VerifyArgs),
    /// Write a new ECDSA P-256 key pair for `plugin sign`: NAME.key (private, mode 0600) and NAME.pub.
    Keygen(KeygenArgs),
    /// Measure a plugin: records/s over a corpus, fuel per record, instantiation time, memory per instance.
    Bench(BenchArgs),
    /// Scaffold a plugin project (Rust, Go or C): source, a native unit test, build and test scripts and
    /// sample records, ready for `millrace plugin test`.
    New(new::NewArgs),
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
    /// A token service on another host than the registry that may receive the credentials (repeat for
    /// several; Docker Hub: auth.docker.io). The registry's own host always may.
    #[arg(long = "token-realm")]
    token_realms: Vec<String>,
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
pub struct SignArgs {
    /// What to sign: registry/repository:tag or @sha256:... (a tag is resolved and its digest signed).
    reference: String,
    /// The private key (PKCS#8 PEM, unencrypted; `millrace plugin keygen` writes one).
    #[arg(long)]
    key: PathBuf,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// What to verify: registry/repository:tag or @sha256:...
    reference: String,
    /// A trusted public key (PEM); repeat for several. Any one verifying is enough.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Path prefix of the files to write (NAME.key, NAME.pub); existing files are not overwritten.
    name: PathBuf,
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

mod bench;
mod new;
mod registry;
mod test;

pub fn run(cmd: PluginCommand) -> Result<ExitCode> {
    match cmd {
        PluginCommand::Test(a) => test::run(a),
        PluginCommand::Inspect(a) => registry::inspect(a),
        PluginCommand::Push(a) => registry::push(a),
        PluginCommand::Pull(a) => registry::pull(a),
        PluginCommand::Sign(a) => registry::sign(a),
        PluginCommand::Verify(a) => registry::verify(a),
        PluginCommand::Keygen(a) => registry::keygen(a),
        PluginCommand::Bench(a) => bench::run(a),
        PluginCommand::New(a) => new::run(a),
    }
}

fn load(runtime: &Runtime, path: &Path) -> Result<Plugin> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    runtime
        .compile(&bytes)
        .with_context(|| format!("loading plugin {}", path.display()))
}
