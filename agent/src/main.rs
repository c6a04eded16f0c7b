//! `meshd`, the mesh node daemon.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use mesh_agent::config::file::{self, LoadError};
use mesh_agent::logging;

#[tokio::main]
async fn main() -> ExitCode {
    let mut config = match file::load() {
        Ok(config) => config,
        Err(LoadError::Cli(err)) => err.exit(),
        Err(err) => return refuse_config(&err),
    };
    let filter = match logging::filter(config.log.as_deref()) {
        Ok(filter) => filter,
        Err(err) => return refuse_config(&err),
    };
    if let Err(err) = logging::init(filter, config.log_format) {
        return refuse(&err);
    }
    // A group named in the configuration that does not exist is a configuration error.
    if let Err(err) = mesh_agent::server::socket_group(config.group.as_deref()) {
        return refuse_config(&err);
    }
    match config.lb_backend.select() {
        Ok(backend) => config.lb_backend = backend.into(),
        Err(err) => return refuse(&err),
    }
    match mesh_agent::server::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "meshd failed");
            refuse(&err)
        }
    }
}

/// One line on stderr (the journal, under systemd) and a failed exit.
fn refuse(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("meshd: {err}");
    ExitCode::FAILURE
}

/// [`refuse`] for a bad configuration, with the exit status that says so (EX_CONFIG): the unit
/// does not restart meshd for it (`RestartPreventExitStatus=`), since only an edit mends it,
/// whereas a Docker that is not up yet may be at the next try.
fn refuse_config(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("meshd: {err}");
    ExitCode::from(file::EX_CONFIG)
}
