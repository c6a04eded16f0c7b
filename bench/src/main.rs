//! mesh's benchmarks, each printing mesh's figures beside a baseline measured in the same run on
//! the same topology: Docker Swarm, iptables, or a direct connection. Run as `cargo xtask bench
//! <name>`, which installs the packages they need first.

#![forbid(unsafe_code)]

mod api_load;
mod converge;
mod failover;
mod gossip;
mod lb;
mod metrics;
mod overlay;
mod plot;
mod run;
mod scale;
mod summary_line;
mod update;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask bench",
    about = "mesh's benchmarks, side by side with a baseline"
)]
struct Cli {
    #[command(subcommand)]
    which: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// The control API's p99 latency while the manager schedules 100,000 replicas, beside idle,
    /// and the manager's memory per task.
    ApiLoad {
        /// Benchmark a release build of meshd (builds it first).
        #[arg(long)]
        release: bool,
    },
    /// Time `service create --replicas 10` to all running, then scale 10→30.
    Converge {
        /// Benchmark a release build of meshd (builds it first).
        #[arg(long)]
        release: bool,
    },
    /// Time from a worker's link cut to its node marked down and its tasks running elsewhere, and
    /// from the leader's death to a new leader.
    Failover {
        /// Benchmark a release build of meshd (builds it first).
        #[arg(long)]
        release: bool,
    },
    /// Rolling updates of 30 replicas on 3 nodes, stop-first and start-first, parallelism 1, 5
    /// and 0: time to converged and to completed, and failed requests during each.
    Update {
        /// Benchmark a release build of meshd (builds it first).
        #[arg(long)]
        release: bool,
    },
    /// The cost of one scrape of meshd's metrics (count the tasks, render the text) at 0, 1,000
    /// and 10,000 tasks, beside an empty registry.
    Metrics,
    /// Task-to-task throughput and latency over the VXLAN overlay, against the direct underlay.
    Overlay {
        /// Benchmark a release build of meshd (builds it first).
        #[arg(long)]
        release: bool,
    },
    /// N simulated nodes (own certificate, session, heartbeats and task reports each) and T tasks
    /// on real managers: time to join, time to all running, tasks/s, Raft entries/s, leader RSS,
    /// largest assignments message; ends with one `scale: …` summary line.
    Scale(scale::args::ScaleArgs),
    /// 10, 100 and 1,000 (or --members) simulated gossip members: convergence, then a join and a
    /// crash as seen by every member, bytes per member; endpoint propagation to 3 real nodes' FDBs.
    /// Ends with one `gossip: …` summary line per size.
    Gossip(gossip::GossipArgs),
    /// SVG growth curves (docs/benchmarks/) from the summary lines in bench/results/: scale's
    /// all-running time, tasks/s and leader RSS against tasks; gossip's join and death seen by
    /// all and bytes per member per second against members.
    Plot(plot::PlotArgs),
    /// Requests per second and latency to a service VIP through the eBPF balancer, through
    /// kube-proxy-style iptables DNAT and to one backend directly; time to program 1 to 10,000
    /// services in each.
    Lb(lb::LbArgs),
    /// The request/response server that `lb` runs in each backend namespace.
    #[command(hide = true)]
    LbServer(lb::LbServerArgs),
    /// The load generator that `lb` runs in the client namespace.
    #[command(hide = true)]
    LbClient(lb::LbClientArgs),
    /// A TCP request/response loop that `overlay` runs inside namespaces.
    #[command(hide = true)]
    Rr {
        /// Echo one client's bytes at this address.
        #[arg(long, conflicts_with = "connect", required_unless_present = "connect")]
        serve: Option<std::net::SocketAddr>,
        /// Time round trips to a server at this address.
        #[arg(long)]
        connect: Option<std::net::SocketAddr>,
        /// How many round trips to time.
        #[arg(long, default_value_t = 5000)]
        count: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::env::set_current_dir(workspace_root()).context("cannot enter the workspace root")?;
    match cli.which {
        Bench::ApiLoad { release } => api_load::api_load(release).await,
        Bench::Converge { release } => converge::converge(release).await,
        Bench::Failover { release } => failover::failover(release).await,
        Bench::Metrics => metrics::metrics(),
        Bench::Update { release } => update::update(release).await,
        Bench::Overlay { release } => overlay::overlay(release).await,
        Bench::Scale(args) => scale::scale(args).await,
        Bench::Gossip(args) => gossip::gossip(args).await,
        Bench::Plot(args) => plot::plot(args),
        Bench::Lb(args) => lb::lb(args).await,
        Bench::LbServer(args) => lb::lb_server(args),
        Bench::LbClient(args) => lb::lb_client(args),
        Bench::Rr {
            serve,
            connect,
            count,
        } => overlay::rr(serve, connect, count),
    }
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
