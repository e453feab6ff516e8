//! The `millrace` command line: the worker, and tools for plugin authors and operators.

mod plugin_cmd;


use clap::{Parser, Subcommand};

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
    /// Work with plugins: try one on sample records, inspect a module, measure its throughput.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Plugin(cmd) => plugin_cmd::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("millrace: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Logs go to stderr: human-readable on a terminal, JSON lines otherwise. `RUST_LOG` filters.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}
