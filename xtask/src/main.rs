//! mesh's build tasks: installing the machine's dependencies, the CI test run, a local demo node and
//! benchmarks against Docker Swarm. Run as `cargo xtask <command>`.

#![forbid(unsafe_code)]

mod bench;
mod demo;
mod deps;
mod leftovers;
mod test;
mod vm;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "mesh's build tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the Debian packages the build and the tests need (docker.io, busybox-static, clang-19, …).
    Deps,
    /// Run everything CI runs: build, fmt, clippy, unit tests, privileged tests, leftover check.
    Test,
    /// Bring up a local node (its own namespace, dockerd and meshd) running a demo service.
    Demo {
        #[command(subcommand)]
        action: Option<DemoAction>,
    },
    /// Benchmarks, mesh and Docker Swarm side by side.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
    /// Remove namespaces, links, processes and directories left by test runs that died.
    Clean,
    /// Run mesh's code against a kernel in a QEMU VM (not part of `test`: slow, downloads).
    Vm {
        #[command(subcommand)]
        which: vm::Vm,
    },
}

#[derive(Subcommand)]
enum DemoAction {
    /// Start the demo (the default).
    Up,
    /// Stop the demo and remove everything it created.
    Down,
}

#[derive(Subcommand)]
enum Bench {
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
    /// Task-to-task throughput and latency over the VXLAN overlay, against the direct underlay.
    Overlay {
        /// Benchmark a release build of meshd (builds it first).
        #[arg(long)]
        release: bool,
    },
    /// Gossip convergence of 10, 100 and 1,000 simulated members, and endpoint propagation to the
    /// FDBs of 3 real nodes.
    Gossip(bench::GossipArgs),
    /// Requests per second and latency to a service VIP through the eBPF balancer, through
    /// kube-proxy-style iptables DNAT and to one backend directly; time to program 1 to 10,000
    /// services in each.
    Lb(bench::LbArgs),
    /// The request/response server that `bench lb` runs in each backend namespace.
    #[command(hide = true)]
    LbServer(bench::LbServerArgs),
    /// The load generator that `bench lb` runs in the client namespace.
    #[command(hide = true)]
    LbClient(bench::LbClientArgs),
    /// A TCP request/response loop that `bench overlay` runs inside namespaces.
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
    match cli.command {
        Task::Deps => deps::install(),
        Task::Test => test::all(),
        Task::Demo {
            action: None | Some(DemoAction::Up),
        } => demo::up().await,
        Task::Demo {
            action: Some(DemoAction::Down),
        } => demo::down(),
        Task::Bench {
            which: Bench::Converge { release },
        } => bench::converge(release).await,
        Task::Bench {
            which: Bench::Failover { release },
        } => bench::failover(release).await,
        Task::Bench {
            which: Bench::Overlay { release },
        } => bench::overlay(release).await,
        Task::Bench {
            which: Bench::Gossip(args),
        } => bench::gossip(args).await,
        Task::Bench {
            which:
                Bench::Rr {
                    serve,
                    connect,
                    count,
                },
        } => bench::rr(serve, connect, count),
        Task::Bench {
            which: Bench::Lb(args),
        } => bench::lb(args).await,
        Task::Bench {
            which: Bench::LbServer(args),
        } => bench::lb_server(args),
        Task::Bench {
            which: Bench::LbClient(args),
        } => bench::lb_client(args),
        Task::Vm { which } => vm::run_vm(which),
        Task::Clean => {
            let found = leftovers::find();
            found.report();
            leftovers::clean(&found);
            Ok(())
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Runs a command with inherited output, failing unless it exits 0.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    run_with_env(program, args, &[])
}

/// [`run`] with extra environment variables for the child.
fn run_with_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("+ {}{program} {}", shown.concat(), args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The cargo that runs this xtask.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}
