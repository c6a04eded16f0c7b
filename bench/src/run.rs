//! What every benchmark shares: building the binaries it measures, its limits, and starting
//! programs inside a node's network namespace.

use std::time::Duration;

use anyhow::Context;
use mesh_tests::meshctl::BIN_DIR_ENV;
use mesh_tests::process::{self, cargo, run_shown};

/// How long any one thing a benchmark waits for may take.
pub const LIMIT: Duration = Duration::from_secs(180);
/// The service every benchmark creates.
pub const SERVICE: &str = "bench";

/// Builds meshd and meshctl for a benchmark. With `release`, builds a release meshd and runs
/// this benchmark (`args`) again against it, returning `None`; otherwise returns the profile of
/// the binaries the harness will run (`debug`, or `release` when [`BIN_DIR_ENV`] points there).
pub fn build(release: bool, args: &[&str]) -> anyhow::Result<Option<&'static str>> {
    let bins = ["-p", "mesh-agent", "-p", "mesh-control", "--bins"];
    if release {
        run_shown(
            &cargo(),
            &[&["build", "--release"][..], &bins].concat(),
            &[],
        )?;
        // The harness finds meshd through MESH_BIN_DIR: run this benchmark again with it set.
        let exe = std::env::current_exe()?.display().to_string();
        run_shown(&exe, args, &[(BIN_DIR_ENV, "target/release")])?;
        return Ok(None);
    }
    run_shown(&cargo(), &[&["build"][..], &bins].concat(), &[])?;
    let bin_dir = std::env::var(BIN_DIR_ENV).unwrap_or_default();
    Ok(Some(if bin_dir.contains("release") {
        "release"
    } else {
        "debug"
    }))
}

/// Builds this benchmark program in release mode and runs `args` with it (and `env`), for the
/// benchmarks whose measuring side runs in this process.
pub fn again_in_release(extra: &[&str], args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let packages = [&["build", "--release", "-p", "mesh-bench"][..], extra].concat();
    run_shown(&cargo(), &packages, &[])?;
    run_shown("target/release/mesh-bench", args, env)
}

/// This program's path, to run it again inside a namespace.
pub fn this_program() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the benchmark's binary")?;
    exe.to_str()
        .map(str::to_owned)
        .context("the benchmark binary's path is not UTF-8")
}

/// Starts `program args…` in the network namespace at `netns` (nsenter) in the background, with
/// these stdout and stderr; it is killed when dropped.
pub fn spawn_in(
    netns: &str,
    program: &str,
    args: &[&str],
    stdout: std::process::Stdio,
    stderr: std::process::Stdio,
) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {program} under nsenter"))
}

/// Makes sure this process (and the meshd it starts, which inherit its limits) may open `need`
/// files (a socket per simulated member or node), raising its soft limit with prlimit(1) when
/// the hard limit allows (no unsafe code here). `what` names who needs them, for the error.
pub fn ensure_open_files(need: u64, what: &str) -> anyhow::Result<()> {
    let (soft, hard) = open_files_limit()?;
    if soft >= need {
        return Ok(());
    }
    let pid = std::process::id().to_string();
    let limit = format!("--nofile={need}:{}", hard.max(need));
    let raised = process::run_sync("prlimit", &["--pid", &pid, &limit])
        .map(|o| o.stderr.trim().to_owned())
        .unwrap_or_else(|err| format!("{err:#}"));
    let (soft, _) = open_files_limit()?;
    anyhow::ensure!(
        soft >= need,
        "{what} need about {need} open files but this process may open {soft} \
         ({raised}); run `ulimit -n {need}` and try again"
    );
    Ok(())
}

/// (soft, hard) from /proc/self/limits; `unlimited` reads as `u64::MAX`.
fn open_files_limit() -> anyhow::Result<(u64, u64)> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .context("no open files limit in /proc/self/limits")?;
    let mut values = line.split_whitespace().map(|v| {
        if v == "unlimited" {
            Ok(u64::MAX)
        } else {
            v.parse::<u64>()
                .with_context(|| format!("bad open files limit {v:?}"))
        }
    });
    let mut next = || values.next().context("open files limit missing")?;
    Ok((next()?, next()?))
}
