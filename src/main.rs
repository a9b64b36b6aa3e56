//! The `understudy` binary: parses the command line and runs one command.

use clap::Parser;
use tracing_subscriber::EnvFilter;
use understudy::cli::{Cli, Command};
use understudy::commands;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("understudy").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run(a) => commands::run::run(a).await,
            Command::Recordings(a) => commands::recordings::run(a).await,
            Command::Export(a) => commands::export::run(a).await,
            Command::Reindex(a) => commands::reindex::run(a).await,
            Command::Check(a) => commands::check::run(a).await,
            Command::Camsim(a) => commands::camsim(a).await,
            Command::Demo(a) => commands::demo::run(a).await,
            Command::Drill(a) => commands::drill::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
