//! A `meshd` process inside a node's namespace: started, killed and restarted with the same flags.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process;

/// The port every node's meshd serves Prometheus metrics on, at its own address.
pub const METRICS_PORT: u16 = 9323;

/// `http://ADDR:9323/metrics`: where a node's metrics are scraped.
pub fn metrics_url(addr: std::net::Ipv4Addr) -> String {
    format!("http://{addr}:{METRICS_PORT}/metrics")
}

/// Where a node's meshd keeps its files and listens.
#[derive(Debug, Clone)]
pub struct MeshdConfig {
    /// The namespace's path (`/run/netns/NAME`), entered with `nsenter --net`.
    pub netns_path: String,
    pub state_dir: PathBuf,
    /// `--secrets-dir`: a tmpfs the node's dockerd sees too ([`crate::secrets`]).
    pub secrets_dir: PathBuf,
    pub socket: PathBuf,
    pub docker_host: String,
    pub hostname: String,
    pub listen_addr: String,
    pub advertise_addr: String,
    /// `--metrics-addr`: `ADDR:PORT` for meshd's Prometheus endpoint, when metrics are served.
    pub metrics_addr: Option<String>,
    /// meshd's stderr is appended here across restarts.
    pub log: PathBuf,
    /// Each start in a fresh private mount namespace of its own.
    pub private_mounts: bool,
    /// Only these capabilities (`CAP_NET_ADMIN`, …) in meshd's bounding set; all when `None`.
    pub capabilities: Option<Vec<String>>,
    /// `--group`: the group given the API socket.
    pub socket_group: Option<String>,
}

/// A running (or stopped) meshd; dropping it stops it.
#[derive(Debug)]
pub struct Meshd {
    config: MeshdConfig,
    child: Option<Child>,
    keep: bool,
}

impl Meshd {
    /// Starts meshd and waits until its socket exists.
    pub async fn start(config: MeshdConfig) -> anyhow::Result<Self> {
        let mut meshd = Self {
            config,
            child: None,
            keep: false,
        };
        meshd.spawn().await?;
        Ok(meshd)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = crate::meshctl::binary("meshd")?;
        let c = &self.config;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&c.log)
            .context("cannot open meshd log")?;
        // The socket of a killed meshd may linger; only a fresh one shows that this meshd is up.
        let _ = std::fs::remove_file(&c.socket);
        let net = format!("--net={}", c.netns_path);
        // nsenter keeps the host's mount namespace (and its cgroup2 mount) and execs: the pid is
        // meshd's. With private mounts, unshare makes a copy of it first and execs nsenter.
        let mut command = if c.private_mounts {
            let mut unshare = Command::new("unshare");
            unshare.args(["--mount", "--propagation", "private", "nsenter"]);
            unshare
        } else {
            Command::new("nsenter")
        };
        command.arg(net);
        if let Some(capabilities) = &c.capabilities {
            // setpriv execs meshd, so the pid stays meshd's.
            let kept: Vec<String> = capabilities
                .iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
                .collect();
            command
                .arg("setpriv")
                .arg("--inh-caps=-all")
                .arg(format!("--bounding-set=-all,{}", kept.join(",")));
        }
        let child = command
            .arg(bin)
            .args(["--state-dir", &c.state_dir.display().to_string()])
            .args(["--secrets-dir", &c.secrets_dir.display().to_string()])
            .args(["--socket", &c.socket.display().to_string()])
            .args(["--docker-host", &c.docker_host])
            .args(["--hostname", &c.hostname])
            .args(["--listen-addr", &c.listen_addr])
            .args(["--advertise-addr", &c.advertise_addr])
            .args(
                c.metrics_addr
                    .iter()
                    .flat_map(|a| ["--metrics-addr", a.as_str()]),
            )
            .args(c.socket_group.iter().flat_map(|g| ["--group", g.as_str()]))
            // The log goes to a file: no colour codes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cannot clone log handle")?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start meshd through nsenter (and unshare)")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.config.socket.exists() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                bail!("meshd exited ({status}) at start:\n{}", self.log_tail(30));
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "meshd did not create {} within 30 s:\n{}",
                    self.config.socket.display(),
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// `http://ADDR:PORT/metrics`, when this meshd serves metrics.
    pub fn metrics_url(&self) -> Option<String> {
        self.config
            .metrics_addr
            .as_ref()
            .map(|addr| format!("http://{addr}/metrics"))
    }

    /// SIGKILLs meshd (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops meshd with SIGTERM (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate(child.id(), Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts meshd again with the same flags (after `kill` or `stop`).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn().await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn socket(&self) -> &Path {
        &self.config.socket
    }

    pub fn log_tail(&self, lines: usize) -> String {
        crate::log_tail(&self.config.log, lines)
    }

    /// Leaves meshd running when dropped (for `cargo xtask demo`).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Meshd {
    fn drop(&mut self) {
        if !self.keep {
            self.stop();
        }
    }
}
