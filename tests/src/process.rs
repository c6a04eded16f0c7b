//! Running helper commands (ip, docker, meshctl) with a time limit, and sweeping stray processes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// What a finished command printed and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code, or -1 when the command was killed by a signal or timed out.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Parses stdout as one JSON object per line (`--format json`).
    pub fn json_lines(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON line: {l:?}")))
            .collect()
    }

    /// Fails with the command's stderr unless it exited 0.
    pub fn ok(self, what: &str) -> anyhow::Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            bail!(
                "{what} exited {}: {}{}",
                self.code,
                self.stderr.trim(),
                self.stdout.trim()
            )
        }
    }
}

/// Runs `program args…` to completion, killing it after `timeout`.
pub async fn run(program: &str, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
    run_env(program, args, &[], timeout).await
}

/// [`run`] with `env` added to the environment.
pub async fn run_env(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<Output> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.with_context(|| format!("waiting for {program}"))?,
        Err(_) => bail!(
            "{program} {} did not finish within {timeout:?}",
            args.join(" ")
        ),
    };
    Ok(Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs a command synchronously (for Drop and set-up code outside a runtime) and returns its output.
pub fn run_sync(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {program}"))?;
    Ok(Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs a command synchronously and fails unless it exits 0.
pub fn run_sync_ok(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = run_sync(program, args)?;
    let what = format!("{program} {}", args.join(" "));
    Ok(out.ok(&what)?.stdout)
}

/// Runs `program args…` with extra environment variables and the caller's stdout and stderr, so
/// that its output shows as it happens; prints the command line first and fails unless it exits 0.
pub fn run_shown(program: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
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

/// The cargo that runs this program (`cargo xtask`, `cargo run`), else the one on `PATH`.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// When a live process started (in clock ticks since boot, `/proc/PID/stat`'s 22nd field), or
/// `None` if there is no such process or it is a zombie. With the pid, it names one process even
/// after the pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command name: state is the 3rd, starttime the 22nd.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Sends a signal (`TERM`, `KILL`) to a pid through kill(1); the crate forbids unsafe code.
pub fn signal(pid: u32, sig: &str) {
    let _ = run_sync("kill", &[&format!("-{sig}"), &pid.to_string()]);
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILLs. Returns once the pid is gone (or after 5 s more).
pub fn terminate(pid: u32, grace: Duration) {
    signal(pid, "TERM");
    if !wait_gone(pid, grace) {
        signal(pid, "KILL");
        wait_gone(pid, Duration::from_secs(5));
    }
}

/// Waits for a pid to disappear; a zombie counts as gone.
pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state letter follows the parenthesised command name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if matches!(state, None | Some("Z")) {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// All pids whose command line contains `needle` (excluding this process).
pub fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&raw)
                .replace('\0', " ")
                .contains(needle)
        })
        .collect()
}

/// All pids whose cgroup path contains `needle` (a container id).
pub fn pids_in_cgroup(needle: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(needle))
        })
        .collect()
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}
