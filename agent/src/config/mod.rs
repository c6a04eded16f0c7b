//! meshd's command line: every port and path is a flag with a `MESH_*` environment twin, so that
//! several nodes can run on one machine, each in its own network namespace. Every flag may also
//! be set in a TOML file (see [`file`]); the command line and the environment win over the file.

mod example;
pub mod file;

pub use example::example;

use clap::Parser;
use std::path::PathBuf;

use crate::lb::LbBackend;
use crate::logging::LogFormat;

pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MESH_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Clone, Parser)]
#[command(name = "meshd", version = VERSION, about = "The mesh node daemon: runs tasks, and on managers the control plane")]
pub struct Config {
    /// A TOML file of flags, each key a flag's long name (`state-dir = "/srv/mesh"`); the command
    /// line and MESH_* variables win over it. Default: /etc/mesh/meshd.toml when it exists.
    #[arg(long, env = "MESH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Where the node keeps its identity and, on managers, the Raft log and snapshots.
    #[arg(long, env = "MESH_STATE_DIR", default_value = "/var/lib/mesh")]
    pub state_dir: PathBuf,

    /// The local API socket meshctl talks to (root's and --group's only).
    #[arg(long, env = "MESH_SOCKET", default_value = "/run/mesh/meshd.sock")]
    pub socket: PathBuf,

    /// The group whose members may use the local API socket besides root, as dockerd's
    /// `--group`. Default: `mesh` when that group exists (the package creates it); "" keeps the
    /// socket root's alone. A group given here that does not exist stops meshd.
    #[arg(long, env = "MESH_GROUP", value_name = "GROUP")]
    pub group: Option<String>,

    /// The Docker daemon that runs this node's containers.
    #[arg(
        long,
        env = "MESH_DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker_host: String,

    /// Where the secrets and configs of the tasks running here are written, one directory per
    /// task: a tmpfs (mounted there, mode 0700, when the directory is on any other file system),
    /// so that they are held in memory only. dockerd must see the same path.
    #[arg(long, env = "MESH_SECRETS_DIR", default_value = crate::taskfiles::DEFAULT_DIR)]
    pub secrets_dir: PathBuf,

    /// The node's hostname in the cluster (default: the machine's).
    #[arg(long, env = "MESH_HOSTNAME")]
    pub hostname: Option<String>,

    /// Where the manager API, dispatcher and Raft transport listen.
    #[arg(long, env = "MESH_LISTEN_ADDR", default_value = "0.0.0.0:2377")]
    pub listen_addr: String,

    /// The address other nodes reach this one at (default: from --listen-addr, or the host's).
    #[arg(long, env = "MESH_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// The UDP port of the overlay's encrypted gossip (0 disables overlay networking).
    #[arg(long, env = "MESH_GOSSIP_PORT", default_value_t = 7946)]
    pub gossip_port: u16,

    /// The subnet of the bridge that gives tasks their way out of the cluster, with NAT (as
    /// Docker's `docker_gwbridge`); it must not overlap the node's other networks.
    #[arg(long, env = "MESH_GWBRIDGE_SUBNET", default_value = crate::network::DEFAULT_GWBRIDGE_SUBNET)]
    pub gwbridge_subnet: ipnet::Ipv4Net,

    /// The service load balancer: `ipvs` (IPVS in each task's sandbox) or `ebpf` (eBPF socket
    /// hooks); `auto` takes IPVS when the kernel has it (/proc/net/ip_vs exists), eBPF otherwise.
    /// A backend asked for by name that cannot run here stops meshd at start.
    #[arg(long, env = "MESH_LB_BACKEND", value_enum, default_value_t = LbBackend::Auto)]
    pub lb_backend: LbBackend,

    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off by default). Plaintext and
    /// unauthenticated, like Docker's metrics-addr: bind it to a management address.
    #[arg(long, env = "MESH_METRICS_ADDR", value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// What to log: a level, or levels per module (`info,mesh_agent::gossip=debug`), as RUST_LOG
    /// takes them. Default: RUST_LOG when it is set, `info` otherwise.
    #[arg(long, env = "MESH_LOG", value_name = "FILTER", value_parser = crate::logging::parse_filter)]
    pub log: Option<String>,

    /// How log lines are written to stderr: `text` for people, `json` (one object a line) for
    /// log collectors.
    #[arg(long, env = "MESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}
