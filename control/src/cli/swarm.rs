//! `meshctl swarm init|join|join-token|ca|leave`: the arguments.

use super::flags::{FlagError, parse_addr, parse_availability, parse_count, parse_duration_ns};
use clap::{Args, Subcommand};
use mesh_proto::{NodeAvailability, NodeRole};

#[derive(Subcommand, Debug)]
pub enum SwarmCommand {
    /// Initialize a swarm
    Init(InitArgs),
    /// Join a swarm as a node and/or manager
    Join(JoinArgs),
    /// Manage join tokens
    JoinToken(JoinTokenArgs),
    /// Display and rotate the root CA
    Ca {
        /// Rotate the swarm's root CA, reissuing every node's certificate
        #[arg(long)]
        rotate: bool,
    },
    /// Leave the swarm
    Leave {
        /// Force this node to leave the swarm, ignoring warnings
        #[arg(short, long)]
        force: bool,
    },
}

fn parse_history_limit(value: &str) -> Result<u64, FlagError> {
    parse_count("--task-history-limit", value)
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Advertised address (format: <ip|interface>[:port])
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub advertise_addr: Option<String>,
    /// Listen address (format: <ip|interface>[:port])
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub listen_addr: Option<String>,
    /// Dispatcher heartbeat period (ns|us|ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub dispatcher_heartbeat: Option<i64>,
    /// Task history retention limit
    #[arg(long, value_name = "N", value_parser = parse_history_limit, allow_negative_numbers = true)]
    pub task_history_limit: Option<u64>,
    /// Validity period for node certificates (ns|us|ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub cert_expiry: Option<i64>,
    /// Default address pool in CIDR format (repeatable)
    #[arg(long, value_name = "CIDR", value_parser = parse_pool)]
    pub default_addr_pool: Vec<String>,
    /// Default address pool subnet mask length
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(8..=29))]
    pub default_addr_pool_mask_length: Option<u32>,
}

fn parse_pool(value: &str) -> Result<String, String> {
    value
        .parse::<ipnet::Ipv4Net>()
        .map(|net| net.trunc().to_string())
        .map_err(|_| {
            format!("invalid address pool {value:?}: expected an IPv4 CIDR like 10.20.0.0/16")
        })
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// Token for entry into the swarm
    #[arg(long)]
    pub token: String,
    /// Advertised address (format: <ip>[:port])
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub advertise_addr: Option<String>,
    /// Listen address (format: <ip>[:port])
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub listen_addr: Option<String>,
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, value_parser = parse_availability)]
    pub availability: Option<NodeAvailability>,
    /// A manager's address (HOST:PORT)
    #[arg(value_parser = parse_addr)]
    pub remote: String,
}

#[derive(Args, Debug)]
pub struct JoinTokenArgs {
    /// Only display the token
    #[arg(short, long)]
    pub quiet: bool,
    /// Rotate the join token
    #[arg(long)]
    pub rotate: bool,
    /// "worker" or "manager"
    #[arg(value_parser = parse_token_role)]
    pub role: NodeRole,
}

fn parse_token_role(value: &str) -> Result<NodeRole, String> {
    match value {
        "worker" => Ok(NodeRole::Worker),
        "manager" => Ok(NodeRole::Manager),
        other => Err(format!("unknown role {other:?}: use worker or manager")),
    }
}
