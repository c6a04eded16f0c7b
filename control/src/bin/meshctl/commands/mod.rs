//! One module per noun (`swarm`, `node`, `service`), one function per verb.

mod info;
mod logs;
mod network;
mod node;
mod service;
mod service_view;
mod swarm;
mod version;

use crate::client::{self, Client};
use crate::error::CliError;
use clap::Subcommand;

pub use version::{VERSION, commit};

/// The top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage the swarm
    #[command(subcommand)]
    Swarm(swarm::SwarmCommand),
    /// Manage swarm nodes
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Manage swarm services
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Display system-wide information: the swarm and the overlay's gossip
    Info {
        /// Format the output: `json` for one JSON object
        #[arg(short, long, value_parser = parse_format)]
        format: Option<bool>,
    },
    /// Show the meshctl and meshd version information
    Version,
}

/// Runs `command` against the daemon at `host`. Input is validated before connecting.
pub async fn run(command: Command, host: &str) -> Result<(), CliError> {
    match command {
        Command::Swarm(command) => swarm::run(command, host).await,
        Command::Node(command) => node::run(command, host).await,
        Command::Service(command) => service::run(command, host).await,
        Command::Network(command) => network::run(command, host).await,
        Command::Info { format } => info::run(host, format.unwrap_or(false)).await,
        Command::Version => version::run(host).await,
    }
}

async fn connect(host: &str) -> Result<Client, CliError> {
    client::connect(host).await
}

/// `--format` of `ls`/`ps`: only `json` (one object per line) or the default table.
pub fn parse_format(value: &str) -> Result<bool, String> {
    match value {
        "json" | "{{json .}}" => Ok(true),
        "table" => Ok(false),
        other => Err(format!(
            "unsupported format {other:?}: use --format json or leave it out for a table"
        )),
    }
}
