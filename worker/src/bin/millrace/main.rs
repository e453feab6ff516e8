//! The `millrace` command line: the worker, and tools for plugin authors and operators.

mod allocator;
mod plugin_cmd;

use clap::{Parser, Subcommand};

/// mimalloc: the pipeline allocates in one thread and frees in another (records, outputs, batches), where
/// glibc's allocator spends a quarter of the worker's time (measured with perf, see BENCHMARKS.md). Its purge
/// delay is set in `allocator.rs`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "millrace",
    version,
    about = "Kafka -> WebAssembly plugins -> InfluxDB + Elasticsearch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a worker: consume the bound topics, run each record through its plugin, write to the stores.
    Worker {
        /// Configuration file (TOML or YAML); MILLRACE__SECTION__KEY variables override it.
        #[arg(long, short, env = "MILLRACE_CONFIG")]
        config: std::path::PathBuf,
    },
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work with bindings files.
    #[command(subcommand)]
    Bindings(BindingsCommand),
    /// Work with plugins: try one on sample records, inspect a module, measure its throughput.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
}

#[derive(Subcommand, Debug)]
enum BindingsCommand {
    /// Validate a bindings file offline: parse it, pull, verify and compile every plugin, run the smoke
    /// samples. Exits 1 when any binding would be refused (for the CI of plugin and binding repositories).
    Check {
        file: std::path::PathBuf,
        /// A worker configuration to take the registry settings (cache, credentials, insecure registries) from.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Registries (host:port) spoken to over plain HTTP (when no --config).
        #[arg(long = "insecure-registry")]
        insecure: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a configuration (with environment overrides) and print it resolved, secrets redacted.
    Check { file: std::path::PathBuf },
    /// Print the configuration reference (markdown) generated from the worker's source:
    /// `millrace config docs > docs/configuration.md`.
    Docs,
}

fn main() -> std::process::ExitCode {
    allocator::tune();
    let cli = Cli::parse();
    init_logging(if matches!(cli.command, Command::Worker { .. }) {
        "info,rdkafka=warn"
    } else {
        "warn"
    });
    let result = match cli.command {
        Command::Plugin(cmd) => plugin_cmd::run(cmd),
        Command::Worker { config } => worker(&config),
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
        Command::Config(ConfigCommand::Docs) => {
            print!("{}", millrace_worker::config::reference_markdown());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Bindings(BindingsCommand::Check {
            file,
            config,
            insecure,
        }) => bindings_check(&file, config.as_deref(), insecure),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("millrace: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn config_check(file: &std::path::Path) -> anyhow::Result<std::process::ExitCode> {
    let config = millrace_worker::WorkerConfig::load(file)?;
    println!("{}", config.redacted());
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    eprintln!("{}: valid", file.display());
    Ok(std::process::ExitCode::SUCCESS)
}

fn bindings_check(
    file: &std::path::Path,
    config: Option<&std::path::Path>,
    insecure: Vec<String>,
) -> anyhow::Result<std::process::ExitCode> {
    use millrace_plugin_registry::{PluginRef, PluginStore, RegistryConfig, RegistryMetrics};
    let bindings = millrace_worker::config::load_bindings_file(file)?;
    let registry = match config {
        Some(c) => millrace_worker::WorkerConfig::load(c)?.registry,
        None => {
            let mut r = RegistryConfig::new(std::env::temp_dir().join("millrace-bindings-check"));
            r.insecure_registries = insecure;
            r
        }
    };
    let runtime = millrace_runtime::Runtime::new(millrace_runtime::EngineConfig {
        max_instances: 8,
        ..Default::default()
    })?;
    let store = PluginStore::new(registry, runtime, RegistryMetrics::unregistered())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut failed = 0;
    for b in &bindings {
        let result = rt.block_on(async {
            let reference = PluginRef::parse(&b.plugin)?;
            let loaded = store.load(&reference).await?;
            millrace_worker::bindings::smoke_check(b, &loaded.plugin)
                .map_err(|m| anyhow::anyhow!("smoke check: {m}"))?;
            anyhow::Ok(loaded)
        });
        match result {
            Ok(l) => println!(
                "ok      {:<24} {} -> {} ({}, {} smoke sample(s))",
                b.name,
                b.plugin,
                l.manifest_digest,
                l.plugin.contract(),
                b.smoke.len()
            ),
            Err(e) => {
                failed += 1;
                println!("REFUSED {:<24} {}: {e:#}", b.name, b.plugin);
            }
        }
    }
    println!("{} binding(s), {failed} refused", bindings.len());
    Ok(if failed > 0 {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn worker(file: &std::path::Path) -> anyhow::Result<std::process::ExitCode> {
    let config = millrace_worker::WorkerConfig::load(file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("millrace-io")
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM"),
                        _ = int.recv() => tracing::info!("SIGINT"),
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        millrace_worker::pipeline::run(config, shutdown).await
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Logs go to stderr: human-readable on a terminal, JSON lines otherwise. `RUST_LOG` filters.
fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}
