//! `meshctl node ls|inspect|update|promote|demote|rm|ps`: the arguments.

use super::flags::{parse_availability, parse_label, parse_ps_filter};
use super::parse_format;
use clap::{Args, Subcommand};
use mesh_proto::{NodeAvailability, TaskState};

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List nodes in the swarm
    #[command(visible_alias = "list")]
    Ls {
        /// Only display IDs
        #[arg(short, long)]
        quiet: bool,
        /// Format output ("json")
        #[arg(long, value_parser = parse_format)]
        format: Option<bool>,
    },
    /// Display detailed information on one or more nodes
    Inspect {
        /// Print the information in a human friendly format
        #[arg(long)]
        pretty: bool,
        /// Nodes to inspect ("self" is the local node)
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Update a node
    Update(UpdateArgs),
    /// Promote one or more nodes to manager in the swarm
    Promote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Demote one or more nodes from manager in the swarm
    Demote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Remove one or more nodes from the swarm
    #[command(visible_alias = "remove")]
    Rm {
        /// Force remove a node from the swarm
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// List tasks running on one or more nodes, defaults to current node
    Ps(PsArgs),
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, value_parser = parse_availability)]
    pub availability: Option<NodeAvailability>,
    /// Add or update a node label (key=value)
    #[arg(long, value_name = "K=V", value_parser = parse_label)]
    pub label_add: Vec<(String, String)>,
    /// Remove a node label if exists
    #[arg(long, value_name = "K")]
    pub label_rm: Vec<String>,
    pub node: String,
}

/// Flags shared by `node ps` and `service ps`.
#[derive(Args, Debug)]
pub struct PsFlags {
    /// Only display task IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output ("json")
    #[arg(long, value_parser = parse_format)]
    pub format: Option<bool>,
    /// Filter output (desired-state=running|shutdown|accepted)
    #[arg(short, long, value_name = "FILTER", value_parser = parse_ps_filter)]
    pub filter: Vec<TaskState>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    pub flags: PsFlags,
    pub nodes: Vec<String>,
}
