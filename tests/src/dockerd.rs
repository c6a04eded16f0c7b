//! A dockerd running inside a test namespace, with its own data root, exec root and socket.
//!
//! Inside a network namespace `/sys` must be a sysfs of that namespace, and mounting one hides the
//! host's `/sys/fs/cgroup` (dockerd then dies with "Devices cgroup isn't mounted"). So dockerd starts in a
//! private mount namespace: the host's cgroup tree is bind-mounted aside, the network namespace
//! entered, a fresh sysfs mounted on `/sys` and the cgroup tree bind-mounted back onto it.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::netns::Netns;
use crate::process::{self, Output};

/// Runs in the private mount namespace: `$1` is a scratch dir, `$2` the netns path, the rest dockerd's
/// command line.
const START_SCRIPT: &str = r#"set -e
cg="$1"; ns="$2"; shift 2
mount --rbind /sys/fs/cgroup "$cg"
exec nsenter --net="$ns" sh -c 'set -e; mount -t sysfs sysfs /sys; mount --rbind "$0" /sys/fs/cgroup; umount -l "$0"; exec "$@"' "$cg" "$@"
"#;

/// How a dockerd is configured beyond its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Networking {
    /// No default bridge, no iptables, no ip_forward changes: mesh nodes (containers use `--network none`).
    None,
    /// Docker's default bridge and iptables rules, all inside the namespace (for Docker Swarm).
    Default,
}

/// A running dockerd; dropping it removes its containers and stops it.
#[derive(Debug)]
pub struct Dockerd {
    dir: PathBuf,
    child: Option<Child>,
    keep: bool,
}

impl Dockerd {
    /// Starts dockerd inside `ns` with everything under `dir`, and waits until it answers.
    pub async fn start(ns: &Netns, dir: &Path, networking: Networking) -> anyhow::Result<Self> {
        let scratch = dir.join("cgroup");
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("cannot create {}", scratch.display()))?;
        let log = File::create(dir.join("dockerd.log")).context("cannot create dockerd.log")?;
        let p = |name: &str| dir.join(name).display().to_string();
        let mut args = vec![
            "-m".to_owned(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            START_SCRIPT.into(),
            "sh".into(),
            scratch.display().to_string(),
            ns.path(),
            "dockerd".into(),
            "--data-root".into(),
            p("data"),
            "--exec-root".into(),
            p("exec"),
            "-H".into(),
            format!("unix://{}", p("docker.sock")),
            "--pidfile".into(),
            p("docker.pid"),
        ];
        if networking == Networking::None {
            args.extend(
                [
                    "--bridge=none",
                    "--iptables=false",
                    "--ip-forward=false",
                    "--ip-masq=false",
                ]
                .map(String::from),
            );
        }
        let child = Command::new("unshare")
            .args(&args)
            // Swarm's executor otherwise tries a registry before using a local image.
            .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cannot clone log handle")?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start dockerd through unshare")?;
        let mut dockerd = Self {
            dir: dir.to_owned(),
            child: Some(child),
            keep: false,
        };
        dockerd.wait_ready().await?;
        Ok(dockerd)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "dockerd exited ({status}) before answering:\n{}",
                    self.log_tail(20)
                );
            }
            if self
                .docker(&["info", "--format", "{{.ID}}"])
                .await
                .is_ok_and(|o| o.success())
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("dockerd did not answer within 30 s:\n{}", self.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `unix://…/docker.sock`, as `docker -H` and `meshd --docker-host` take it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// Runs `docker -H <this daemon> ARGS`.
    pub async fn docker(&self, args: &[&str]) -> anyhow::Result<Output> {
        let host = self.host();
        let mut full = vec!["-H", host.as_str()];
        full.extend_from_slice(args);
        process::run("docker", &full, Duration::from_secs(120)).await
    }

    /// The last `lines` lines of dockerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::log_tail(&self.dir.join("dockerd.log"), lines)
    }

    /// Whether this dockerd was started and not killed since.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILLs dockerd (its containers keep running until the drop's teardown removes them).
    pub fn kill(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("docker.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            process::signal(pid, "KILL");
            process::wait_gone(pid, Duration::from_secs(5));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Leaves dockerd running when dropped (for `cargo xtask demo`).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        stop(&self.dir);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stops the dockerd whose files are under `dir`: removes its containers, stops it, then kills anything
/// still running from that directory or in one of its containers' cgroups. Never fails: teardown goes on.
pub fn stop(dir: &Path) {
    let sock = format!("unix://{}", dir.join("docker.sock").display());
    let pid = std::fs::read_to_string(dir.join("docker.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if pid.is_some_and(process::alive) {
        let ids = process::run_sync("timeout", &["20", "docker", "-H", &sock, "ps", "-aq"])
            .map(|o| o.stdout);
        let ids: Vec<String> = ids
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["30", "docker", "-H", &sock, "rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = process::run_sync("timeout", &args);
        }
    }
    if let Some(pid) = pid {
        process::terminate(pid, Duration::from_secs(15));
    }
    // Containers whose daemon died: find them by the ids in the data root.
    let containers = std::fs::read_dir(dir.join("data/containers"))
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_owned()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for id in containers {
        for pid in process::pids_in_cgroup(&id) {
            process::signal(pid, "KILL");
        }
    }
    for pid in process::pids_with_cmdline(&dir.display().to_string()) {
        process::signal(pid, "KILL");
        process::wait_gone(pid, Duration::from_secs(5));
    }
    // The node's secrets tmpfs, once nothing uses it.
    crate::secrets::unmount(dir);
}
