//! `meshctl`'s command line: every command, flag and flag value it takes, and the specs its
//! flags describe. Pure parsing, no I/O: the binary (`src/bin/meshctl`) parses with [`Cli`] and
//! then talks to the daemon; the fuzz targets drive the same parser. Every bad value is refused
//! here, in one line, before any request is made.

pub mod events;
pub mod flags;
pub mod logs;
pub mod network;
pub mod node;
pub mod secret;
pub mod service;
pub mod spec;
pub mod stack;
pub mod swarm;

use clap::{Parser, Subcommand};

use crate::limits::LimitError;
use flags::FlagError;

/// The default daemon address, as `-H` takes it.
pub const DEFAULT_HOST: &str = "unix:///run/mesh/meshd.sock";

/// Input whose values each parsed but that does not make sense as a whole (or beyond a limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// Beyond one of the managers' limits: the same line the daemon would answer.
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Parser, Debug)]
#[command(
    name = "meshctl",
    about = "Drive a mesh cluster",
    disable_version_flag = true
)]
pub struct Cli {
    /// Daemon socket to connect to (unix:///path or /path)
    #[arg(short = 'H', long, global = true, env = "MESH_HOST", default_value = DEFAULT_HOST)]
    pub host: String,
    /// Print version information and quit
    #[arg(short = 'v', long)]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

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
    /// Manage Swarm stacks
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Manage Swarm secrets
    #[command(subcommand)]
    Secret(secret::PayloadCommand),
    /// Manage Swarm configs
    #[command(subcommand)]
    Config(secret::PayloadCommand),
    /// Get real time events from the cluster
    Events(events::EventsArgs),
    /// Display system-wide information: the swarm and the overlay's gossip
    Info {
        /// Format the output: `json` for one JSON object
        #[arg(short, long, value_parser = parse_format)]
        format: Option<bool>,
    },
    /// Show the meshctl and meshd version information
    Version,
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
