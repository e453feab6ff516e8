//! The `millrace` command line: the worker, and tools for plugin authors and operators.

mod plugin_cmd;

use clap::{Parser, Subcommand};

/// mimalloc: the pipeline allocates in one thread and frees in another (records, outputs, batches), where
/// glibc's allocator spends a quarter of the worker's time (measured with perf, see BENCHMARKS.md).
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
    /// Work with plugins: try one on sample records, inspect a module, measure its throughput.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a configuration (with environment overrides) and print it resolved, secrets redacted.
    Check { file: std::path::PathBuf },
}

fn main() -> std::process::ExitCode {
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
    eprintln!("{}: valid", file.display());
    Ok(std::process::ExitCode::SUCCESS)
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
