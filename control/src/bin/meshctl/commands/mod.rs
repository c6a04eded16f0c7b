//! One module per noun (`swarm`, `node`, `service`, `network`, `stack`), one function per verb.

mod events;
mod info;
mod logs;
mod network;
mod node;
mod secret;
mod service;
mod service_view;
mod stack;
mod swarm;
mod version;

use crate::client::{self, Client};
use crate::error::CliError;
use mesh_control::cli::Command;

pub use version::{VERSION, commit};

/// Runs `command` against the daemon at `host`. Input is validated before connecting.
pub async fn run(command: Command, host: &str) -> Result<(), CliError> {
    match command {
        Command::Swarm(command) => swarm::run(command, host).await,
        Command::Node(command) => node::run(command, host).await,
        Command::Service(command) => service::run(command, host).await,
        Command::Network(command) => network::run(command, host).await,
        Command::Stack(command) => stack::run(command, host).await,
        Command::Secret(command) => secret::run(secret::Noun::Secret, command, host).await,
        Command::Config(command) => secret::run(secret::Noun::Config, command, host).await,
        Command::Events(args) => events::run(host, args).await,
        Command::Info { format } => info::run(host, format.unwrap_or(false)).await,
        Command::Version => version::run(host).await,
    }
}

async fn connect(host: &str) -> Result<Client, CliError> {
    client::connect(host).await
}
