//! `meshctl stack deploy|ls|ps|services|rm`: the arguments.

use super::flags::{FlagError, choice, parse_name};
use super::node::PsFlags;
use super::parse_format;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing stack
    #[command(visible_alias = "up")]
    Deploy(DeployArgs),
    /// List stacks
    #[command(visible_alias = "list")]
    Ls {
        /// Format output ("json")
        #[arg(long, value_parser = parse_format)]
        format: Option<bool>,
    },
    /// List the tasks in the stack
    Ps {
        #[command(flatten)]
        flags: PsFlags,
        #[arg(value_parser = parse_name)]
        stack: String,
    },
    /// List the services in the stack
    Services {
        /// Only display IDs
        #[arg(short, long)]
        quiet: bool,
        /// Format output ("json")
        #[arg(long, value_parser = parse_format)]
        format: Option<bool>,
        #[arg(value_parser = parse_name)]
        stack: String,
    },
    /// Remove one or more stacks
    #[command(visible_aliases = ["remove", "down"])]
    Rm {
        #[arg(required = true, value_parser = parse_name)]
        stacks: Vec<String>,
    },
}

/// `--resolve-image`: when docker would ask a registry for the image's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveImage {
    Always,
    Changed,
    Never,
}

pub fn parse_resolve_image(value: &str) -> Result<ResolveImage, FlagError> {
    let table = [
        ("always", ResolveImage::Always),
        ("changed", ResolveImage::Changed),
        ("never", ResolveImage::Never),
    ];
    choice(
        "resolve-image value",
        "always, changed or never",
        &table,
        value,
    )
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Path to a Compose file, or "-" to read from stdin (repeatable: later files override)
    #[arg(
        short = 'c',
        long = "compose-file",
        value_name = "FILE",
        required = true
    )]
    pub compose_files: Vec<String>,
    /// Prune services that are no longer referenced
    #[arg(long)]
    pub prune: bool,
    /// Query the registry to resolve image digest and supported platforms ("always", "changed",
    /// "never"); mesh passes image references as written, so all three behave as "never"
    #[arg(long, value_name = "WHEN", default_value = "always", value_parser = parse_resolve_image)]
    pub resolve_image: ResolveImage,
    /// Stack name
    #[arg(value_parser = parse_name)]
    pub stack: String,
}
