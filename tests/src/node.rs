//! One node of a test cluster: its namespace, dockerd and meshd, and the commands tests run against it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::dockerd::Dockerd;
use crate::meshd::Meshd;
use crate::netns::Netns;
use crate::overlay::OverlayNamespaces;
use crate::process::Output;

/// Container label holding the service name (set by the agent).
pub const SERVICE_LABEL: &str = "com.mesh.service.name";

/// Whether a node was started as a manager or a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Manager,
    Worker,
}

/// A node; dropping it stops meshd, deletes the overlay namespaces meshd left, stops dockerd, then
/// deletes the node's namespace (field order).
#[derive(Debug)]
pub struct Node {
    pub(crate) meshd: Meshd,
    pub(crate) overlay: OverlayNamespaces,
    pub(crate) dockerd: Dockerd,
    pub(crate) netns: Netns,
    pub(crate) hostname: String,
    pub(crate) role: Role,
    pub(crate) dir: PathBuf,
    pub(crate) keep: bool,
    pub(crate) quiet: bool,
}

impl Node {
    /// Runs `meshctl -H <this node's socket> ARGS`.
    pub async fn meshctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        crate::meshctl::meshctl(self.meshd.socket(), args).await
    }

    /// Runs meshctl and returns its stdout, failing with its stderr on a non-zero exit.
    pub async fn meshctl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let what = format!("meshctl {}", args.join(" "));
        Ok(self.meshctl(args).await?.ok(&what)?.stdout)
    }

    /// Runs meshctl with `--format json` appended and parses one object per line.
    pub async fn meshctl_json(&self, args: &[&str]) -> anyhow::Result<Vec<Value>> {
        let mut full = args.to_vec();
        full.extend(["--format", "json"]);
        let what = format!("meshctl {}", full.join(" "));
        self.meshctl(&full).await?.ok(&what)?.json_lines()
    }

    /// `http://ADDR:9323/metrics`, where this node's meshd serves its metrics.
    pub fn metrics_url(&self) -> Option<String> {
        self.meshd.metrics_url()
    }

    /// `GET path` of this node's metrics server: the status code and the body.
    pub async fn metrics_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let url = self.metrics_url().context("this node serves no metrics")?;
        http_get(&url, path).await
    }

    /// Runs `docker -H <this node's dockerd> ARGS`.
    pub async fn docker(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.dockerd.docker(args).await
    }

    /// Full ids of the service's containers on this node: running ones, or all with `all`.
    pub async fn containers(&self, service: &str, all: bool) -> anyhow::Result<Vec<String>> {
        let label = format!("label={SERVICE_LABEL}={service}");
        let mut args = vec!["ps", "-q", "--no-trunc", "--filter", label.as_str()];
        if all {
            args.push("-a");
        } else {
            args.extend(["--filter", "status=running"]);
        }
        let out = self.docker(&args).await?.ok("docker ps")?;
        let mut ids: Vec<String> = out.stdout.split_whitespace().map(str::to_owned).collect();
        ids.sort();
        Ok(ids)
    }

    /// `docker inspect` of one container, as JSON.
    pub async fn inspect_container(&self, id: &str) -> anyhow::Result<Value> {
        let out = self.docker(&["inspect", id]).await?.ok("docker inspect")?;
        let mut list: Vec<Value> =
            serde_json::from_str(&out.stdout).context("docker inspect output")?;
        list.pop().context("docker inspect printed no object")
    }

    /// The service's tasks from `meshctl service ps --format json`.
    pub async fn tasks(&self, service: &str) -> anyhow::Result<Vec<Value>> {
        self.meshctl_json(&["service", "ps", service]).await
    }

    /// SIGKILLs this node's meshd (its containers keep running).
    pub fn kill_meshd(&mut self) {
        self.meshd.kill();
    }

    /// Starts meshd again with the same flags and waits until it answers: `node ls` on a
    /// manager (once its control plane is back), `info` on a worker (which has no `node ls`).
    pub async fn restart_meshd(&mut self) -> anyhow::Result<()> {
        self.meshd.restart().await?;
        let what = format!("{}'s meshd to answer after restart", self.hostname);
        let probe: &[&str] = match self.role {
            Role::Manager => &["node", "ls"],
            Role::Worker => &["info"],
        };
        crate::wait_until(Duration::from_secs(60), &what, async || {
            Ok(self.meshctl(probe).await?.success())
        })
        .await
    }

    /// Cuts (`up == false`) or restores this node's link to the cluster bridge.
    pub fn set_link(&self, up: bool) -> anyhow::Result<()> {
        self.netns.set_link(up)
    }

    /// The mount namespace meshd runs in (`/proc/PID/ns/mnt`'s link, e.g. `mnt:[4026532301]`).
    pub fn meshd_mount_namespace(&self) -> anyhow::Result<PathBuf> {
        let pid = self.meshd.pid().context("meshd is not running")?;
        let link = format!("/proc/{pid}/ns/mnt");
        std::fs::read_link(&link).with_context(|| format!("cannot read {link}"))
    }

    /// Whether this node's meshd has been started and not killed or stopped since.
    pub fn meshd_running(&self) -> bool {
        self.meshd.pid().is_some()
    }

    /// The last `lines` lines of this node's meshd log (across restarts).
    pub fn meshd_log_tail(&self, lines: usize) -> String {
        self.meshd.log_tail(lines)
    }

    /// meshd's `--state-dir` (its certificates are under `certificates/`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// One of meshd's files under `<state-dir>/certificates/` (`node.crt`, `node.key`, `ca.crt`),
    /// as it is on disk now.
    pub fn certificate_file(&self, name: &str) -> anyhow::Result<String> {
        let path = self.state_dir().join("certificates").join(name);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The node's address on the cluster bridge.
    pub fn addr(&self) -> std::net::Ipv4Addr {
        self.netns.addr()
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn socket(&self) -> &Path {
        self.meshd.socket()
    }

    /// `unix://…` of this node's dockerd.
    pub fn docker_host(&self) -> String {
        self.dockerd.host()
    }

    pub fn meshd_pid(&self) -> Option<u32> {
        self.meshd.pid()
    }

    /// The node's directory (state, sockets, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Leaves everything of this node running when dropped.
    pub fn keep(&mut self) {
        self.keep = true;
        self.meshd.keep();
        self.overlay.keep();
        self.dockerd.keep();
        self.netns.keep();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.keep || self.quiet {
            return;
        }
        // cargo test shows this only for failing tests (it captures passing tests' output).
        eprintln!(
            "---- meshd log of {} ----\n{}",
            self.hostname,
            self.meshd.log_tail(200)
        );
        eprintln!(
            "---- dockerd log of {} (tail) ----\n{}",
            self.hostname,
            self.dockerd.log_tail(20)
        );
    }
}

/// `GET path` of the metrics server at `url` (`http://ADDR:PORT/metrics`): the status code and the
/// body. Needs no [`Node`], so that a meshd being restarted can be watched meanwhile.
pub async fn http_get(url: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .context("the metrics server did not answer within 10 s")??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP head in the answer")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((code, body.to_owned()))
}
