//! `cargo xtask lab …`: named one-machine clusters (every node a network namespace with its own
//! dockerd and meshd) that stay up between commands, with faults to inject. The lab itself is
//! `mesh_tests::lab`, the code the privileged tests use.

use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use mesh_tests::lab::fault::{self, Fault, Partition};
use mesh_tests::lab::{self, Health, LabSpec, LabState};
use mesh_tests::process::{cargo, run_shown};

use crate::{deps, step};

#[derive(Args)]
pub struct LabArgs {
    #[command(subcommand)]
    action: LabAction,
    /// The lab's name: 1 to 8 lowercase letters and digits.
    #[arg(long, global = true, default_value = lab::DEFAULT_NAME)]
    name: String,
}

#[derive(Subcommand)]
enum LabAction {
    /// Bring up MANAGERS + WORKERS nodes, initialised and joined; they stay up until `lab down`.
    Up {
        #[arg(long, default_value_t = 3)]
        managers: usize,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Skip installing packages and building meshd and meshctl (already done).
        #[arg(long)]
        no_build: bool,
    },
    /// List the labs on this machine.
    Ls,
    /// Each node's name, address, role, API socket, metrics URL and faults.
    Status,
    /// Run a command in a node's namespace, with `meshctl` pointed at that node.
    Exec {
        /// node1 … nodeN
        node: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Inject a fault into one node: link-down | link-up | delay 50ms | loss 5% | heal.
    Fault {
        /// node1 … nodeN
        node: String,
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "FAULT"
        )]
        fault: Vec<String>,
    },
    /// Cut every pair of nodes from different groups (`1,2/3,4`), or `heal` the partition.
    Partition {
        #[arg(allow_hyphen_values = true)]
        spec: String,
    },
    /// Stop every node and remove everything of the lab.
    Down,
}

pub async fn run(args: LabArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    mesh_tests::lab::state::validate_name(name)?;
    if !mesh_tests::skip::is_root() {
        anyhow::bail!("lab commands need root (namespaces, links, iptables, dockerd)");
    }
    match args.action {
        LabAction::Up {
            managers,
            workers,
            no_build,
        } => up(name, managers, workers, no_build).await,
        LabAction::Ls => {
            ls();
            Ok(())
        }
        LabAction::Status => status(&LabState::load(name)?),
        LabAction::Exec { node, command } => {
            let state = LabState::load(name)?;
            let node = state.node(&node)?;
            let status = lab::exec_command(&state, &node, &command)?
                .status()
                .context("cannot run nsenter")?;
            // The command's own exit code is this command's.
            std::process::exit(status.code().unwrap_or(1));
        }
        LabAction::Fault { node, fault } => {
            let mut state = LabState::load(name)?;
            let node = state.node(&node)?;
            let fault = Fault::parse(&fault)?;
            fault::apply(&mut state, &node, fault)?;
            println!("{}: {fault}", node.name);
            Ok(())
        }
        LabAction::Partition { spec } => {
            let mut state = LabState::load(name)?;
            if spec == "heal" {
                fault::partition(&mut state, None)?;
                println!("partition healed");
            } else {
                let partition = Partition::parse(&spec, state.node_count())?;
                fault::partition(&mut state, Some(&partition))?;
                println!("partitioned: {partition}");
            }
            Ok(())
        }
        LabAction::Down => {
            lab::down(name)?;
            println!("lab {name} is down; nothing of it is left");
            Ok(())
        }
    }
}

async fn up(name: &str, managers: usize, workers: usize, no_build: bool) -> anyhow::Result<()> {
    let mut spec = LabSpec::new(name, managers, workers);
    spec.progress = true;
    spec.validate()?;
    if !no_build {
        deps::install()?;
        step::run(
            "building meshd and meshctl (cargo build --workspace --bins)",
            "read cargo's error above; if a system tool is missing, `cargo xtask deps` installs it",
            || run_shown(&cargo(), &["build", "--workspace", "--bins"], &[]),
        )?;
    }
    let started = Instant::now();
    let lab = step::run_async(
        &format!("bringing up lab {name}: {managers} manager(s) and {workers} worker(s)"),
        "the nodes' logs were in /run/mesh-lab/<name>/nodeN/ (removed again after a failed start)",
        lab::up(&spec),
    )
    .await?;
    let state = lab.state().clone();
    lab.keep();
    println!(
        "lab {name} is up: {} nodes initialised and joined in {:.1} s",
        state.node_count(),
        started.elapsed().as_secs_f64()
    );
    status(&state)?;
    println!(
        "Use it: cargo xtask lab exec --name {name} node1 -- meshctl node ls\n\
         Faults: cargo xtask lab fault --name {name} node2 delay 50ms   (link-down, link-up, loss 5%, heal)\n\
         Stop it: cargo xtask lab down --name {name}"
    );
    Ok(())
}

fn ls() {
    let labs = lab::list();
    if labs.is_empty() {
        println!("no labs");
        return;
    }
    println!("{:<10} {:<6} {:<16} STATE", "NAME", "NODES", "SUBNET");
    for (name, record, health) in labs {
        let (nodes, subnet) = match &record {
            Some(s) => (
                format!("{}+{}", s.managers, s.workers),
                format!("{}.{}.{}.0/24", s.subnet[0], s.subnet[1], s.subnet[2]),
            ),
            None => ("?".into(), "?".into()),
        };
        let state = match health {
            Health::Up { owner: None } => "up".to_owned(),
            Health::Up { owner: Some(pid) } => format!("up (held by test process {pid})"),
            Health::Starting(pid) => format!("starting (lab up, pid {pid})"),
            Health::Orphaned => "orphaned: its owner died; `lab down` removes it".to_owned(),
        };
        println!("{name:<10} {nodes:<6} {subnet:<16} {state}");
    }
}

fn status(state: &LabState) -> anyhow::Result<()> {
    println!(
        "{:<7} {:<14} {:<8} {:<6} {:<38} {:<34} FAULTS",
        "NODE", "ADDRESS", "ROLE", "MESHD", "API SOCKET", "METRICS"
    );
    for node in state.nodes() {
        let faults = state.faults.get(&node.name);
        let mut shown = Vec::new();
        if let Some(f) = faults {
            if f.link_down {
                shown.push("link-down".to_owned());
            }
            if let Some(ms) = f.delay_ms {
                shown.push(format!("delay {ms}ms"));
            }
            if let Some(p) = f.loss_percent {
                shown.push(format!("loss {p}%"));
            }
        }
        println!(
            "{:<7} {:<14} {:<8} {:<6} {:<38} {:<34} {}",
            node.name,
            node.addr,
            format!("{:?}", node.role).to_lowercase(),
            if lab::meshd_running(&node) {
                "up"
            } else {
                "down"
            },
            node.socket().display(),
            node.metrics_url(),
            if shown.is_empty() {
                "-".to_owned()
            } else {
                shown.join(", ")
            },
        );
    }
    if let Some(partition) = &state.partition {
        println!("partition: {partition}");
    }
    Ok(())
}
