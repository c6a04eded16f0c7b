//! `meshctl`, the mesh CLI: drives the local `meshd` over its unix socket, as `docker swarm|node|
//! service` drives dockerd. Parses arguments, sets up tracing and hands over to `commands`.

#![forbid(unsafe_code)]

mod client;
mod commands;
mod error;
mod inspect;
mod listing;
mod output;
mod pretty;
mod progress;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use error::CliError;
use mesh_control::cli::Cli;
use std::io::Write;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Exit code for a command that failed or a value that does not parse (clap keeps 2 for usage).
const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|error| {
        match error.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            ErrorKind::ValueValidation => {
                // Our value parsers' messages are complete sentences: one line, no usage dump.
                if let Some(source) = std::error::Error::source(&error) {
                    eprintln!("Error: {source}");
                    return ExitCode::from(EXIT_FAILURE);
                }
            }
            _ => {}
        }
        eprintln!("Error: {}", one_line(&error.to_string()));
        ExitCode::from(EXIT_USAGE)
    })
}

/// Folds clap's multi-line usage error into one line, pointing at `--help` for the rest.
fn one_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty())
        .collect();
    let text = parts.join(" ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    format!("{text} (see --help)")
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("MESH_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if cli.version {
        let (version, commit) = (commands::VERSION, commands::commit());
        // A closed stdout is not worth a panic.
        let _ = writeln!(
            std::io::stdout(),
            "meshctl version {version}, build {commit}"
        );
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        let _ = Cli::command().print_help();
        return ExitCode::from(EXIT_USAGE);
    };
    init_tracing();
    tracing::debug!(host = %cli.host, "meshctl starting");
    match commands::run(command, &cli.host).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error @ CliError::Connect { .. }) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
