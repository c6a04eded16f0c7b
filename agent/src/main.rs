//! `meshd`, the mesh node daemon.

#![forbid(unsafe_code)]

use clap::Parser;
use mesh_agent::config::Config;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut config = Config::parse();
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match config.lb_backend.select() {
        Ok(backend) => config.lb_backend = backend.into(),
        Err(err) => {
            eprintln!("meshd: {err}");
            return std::process::ExitCode::FAILURE;
        }
    }
    match mesh_agent::server::serve(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "meshd failed");
            eprintln!("meshd: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
