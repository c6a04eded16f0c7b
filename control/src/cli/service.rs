//! `meshctl service create|ls|ps|inspect|scale|update|rollback|rm|logs`: the arguments.

use super::flags::parse_scale;
use super::logs::LogsArgs;
use super::node::PsFlags;
use super::parse_format;
use super::spec::{CreateFlags, UpdateFlags};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Create a new service
    Create(Box<CreateFlags>),
    /// List services
    #[command(visible_alias = "list")]
    Ls {
        /// Only display IDs
        #[arg(short, long)]
        quiet: bool,
        /// Format output ("json")
        #[arg(long, value_parser = parse_format)]
        format: Option<bool>,
    },
    /// List the tasks of one or more services
    Ps {
        #[command(flatten)]
        flags: PsFlags,
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Display detailed information on one or more services
    Inspect {
        /// Print the information in a human friendly format
        #[arg(long)]
        pretty: bool,
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Scale one or multiple replicated services
    Scale {
        /// Exit immediately instead of waiting for the services to converge
        #[arg(short, long)]
        detach: bool,
        /// SERVICE=REPLICAS
        #[arg(required = true, value_parser = parse_scale, value_name = "SERVICE=REPLICAS")]
        scales: Vec<(String, u64)>,
    },
    /// Update a service
    Update(Box<UpdateFlags>),
    /// Revert changes to a service's configuration
    Rollback {
        /// Exit immediately instead of waiting for the service to converge
        #[arg(short, long)]
        detach: bool,
        /// Suppress progress output
        #[arg(short, long)]
        quiet: bool,
        /// The service to roll back
        service: String,
    },
    /// Remove one or more services
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Fetch the logs of a service or task
    Logs(LogsArgs),
}
