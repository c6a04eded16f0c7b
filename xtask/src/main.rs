//! mesh's build tasks: installing the machine's dependencies, the CI test run, a local demo
//! cluster, benchmarks, and the check that both of the README's commands work on a fresh machine.
//! Run as `cargo xtask <command>`. This crate builds with Rust alone (no crate here has a build
//! script that needs a system tool), so that it can install the packages the rest of the
//! workspace needs before anything that needs them is compiled.

#![forbid(unsafe_code)]

mod demo;
mod deps;
mod digest;
mod dist;
mod fresh;
mod fuzz;
mod lab;
mod leftovers;
mod step;
mod test;
mod vagrant;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh_tests::process::{cargo, run_shown};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "mesh's build tasks")]
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
    /// Bring up three local nodes (namespaces with their own dockerd and meshd) running a demo service.
    Demo {
        #[command(subcommand)]
        action: Option<DemoAction>,
    },
    /// One-machine lab clusters: `lab up --managers 3 --workers 2`, ls, status, exec, fault,
    /// partition, down; several side by side under different `--name`s.
    Lab(lab::LabArgs),
    /// Benchmarks, side by side with a baseline (`cargo xtask bench --help` lists them).
    Bench {
        /// The benchmark and its options, passed to the benchmark program.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "BENCHMARK"
        )]
        args: Vec<String>,
    },
    /// Build the Debian package (target/dist/mesh_*.deb): meshd, meshctl, the systemd unit, man
    /// pages, completions; `--check` installs, removes and purges it in a Debian 12 root.
    Dist(dist::DistArgs),
    /// Run the fuzz targets under fuzz/ (cargo-fuzz, installed on first use) for a bounded time.
    Fuzz(fuzz::FuzzArgs),
    /// Remove namespaces, links, processes and directories left by test runs that died.
    Clean,
    /// Prove the README's two commands on a fresh Debian 12: a throwaway root built with
    /// debootstrap, a clean clone of HEAD, a cold build, then `cargo xtask demo` and `.ci/run`.
    FreshCheck(fresh::FreshArgs),
    /// Run mesh's code against a kernel in a QEMU VM (not part of `test`: slow, downloads).
    Vm {
        #[command(subcommand)]
        which: vm::Vm,
    },
    /// Build the Vagrant box `vagrant/Vagrantfile` boots (Debian 12 from debootstrap, Debian's
    /// kernel, Docker) and add it to Vagrant as `mesh/debian12`.
    VagrantBox(vagrant::BoxArgs),
}

#[derive(Subcommand)]
enum DemoAction {
    /// Start the demo (the default).
    Up,
    /// Stop the demo and remove everything it created.
    Down,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", step::one_line(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(task: Task) -> anyhow::Result<()> {
    std::env::set_current_dir(workspace_root()).context("cannot enter the workspace root")?;
    match task {
        Task::Deps => deps::install(),
        Task::Test => test::all(),
        Task::Demo {
            action: None | Some(DemoAction::Up),
        } => demo::up().await,
        Task::Demo {
            action: Some(DemoAction::Down),
        } => demo::down(),
        Task::Lab(args) => lab::run(args).await,
        Task::Bench { args } => bench(&args),
        Task::FreshCheck(args) => fresh::check(&args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Dist(args) => dist::run(&args),
        Task::Vm { which } => vm::run_vm(which),
        Task::VagrantBox(args) => vagrant::build(&args),
        Task::Clean => {
            let found = leftovers::find();
            found.report();
            leftovers::clean(&found);
            Ok(())
        }
    }
}

/// `cargo xtask bench …`: the packages first, then the benchmark program (crate `mesh-bench`),
/// which needs the eBPF toolchain to build.
fn bench(args: &[String]) -> anyhow::Result<()> {
    deps::install()?;
    let mut run_args = vec!["run", "--package", "mesh-bench", "--"];
    run_args.extend(args.iter().map(String::as_str));
    run_shown(&cargo(), &run_args, &[])
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
