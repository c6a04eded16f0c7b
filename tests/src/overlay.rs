//! Observing meshd's overlay data plane from outside: the namespaces it names after its state dir,
//! their VXLAN FDB, and the tasks' sandboxes, entered through the container's pid with the host's
//! `ip`, `bridge` and `ping` (iproute2's JSON output, so nothing depends on busybox's applets).
//!
//! [`OverlayCluster`] wraps a [`Cluster`] and removes whatever overlay namespace its meshds left
//! in `/run/netns` once the cluster is gone, so that a failing test leaves nothing behind either.

use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::node::Node;
use crate::process::{self, Output};

/// How long one observing command may take.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Container label holding the task id (set by the agent).
pub const TASK_LABEL: &str = "com.mesh.task.id";

/// The prefix of meshd's overlay namespaces: `m` and an FNV-1a hash of its state dir (the
/// namespace of VNI `v` is `<prefix>-<v>`).
pub fn netns_prefix(state_dir: &Path) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in state_dir.as_os_str().as_encoded_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("m{hash:08x}")
}

/// The overlay namespace `node`'s meshd uses for VNI `vni`.
pub fn overlay_netns(node: &Node, vni: u32) -> String {
    format!("{}-{vni}", netns_prefix(&node.state_dir()))
}

/// Names in `/run/netns` that belong to `node`'s meshd.
pub fn overlay_namespaces(node: &Node) -> anyhow::Result<Vec<String>> {
    namespaces_of(&netns_prefix(&node.state_dir()))
}

fn namespaces_of(prefix: &str) -> anyhow::Result<Vec<String>> {
    let prefix = format!("{prefix}-");
    let mut names = Vec::new();
    let dir = match std::fs::read_dir("/run/netns") {
        Ok(dir) => dir,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(err) => return Err(err).context("listing /run/netns"),
    };
    for entry in dir {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Deletes a node's overlay namespaces when dropped: a meshd keeps its data plane across restarts,
/// so it leaves them behind on SIGTERM. [`Node`] holds one after its meshd, so it runs once meshd
/// is gone.
#[derive(Debug)]
pub struct OverlayNamespaces {
    prefix: String,
    keep: bool,
}

impl OverlayNamespaces {
    pub fn for_state_dir(state_dir: &Path) -> Self {
        Self {
            prefix: netns_prefix(state_dir),
            keep: false,
        }
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for OverlayNamespaces {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for name in namespaces_of(&self.prefix).unwrap_or_default() {
            crate::netns::delete_namespace(&name);
        }
        remove_pins(&self.prefix);
    }
}

/// Where every meshd pins its eBPF load balancer's links and maps, so that they outlive it: a
/// directory per prefix on the host's BPF file system (the tests run in the host's mount
/// namespace).
pub const PINS: &str = "/sys/fs/bpf/mesh";

/// One meshd's pin directory.
pub fn pin_dir(prefix: &str) -> PathBuf {
    Path::new(PINS).join(prefix)
}

/// Removes a meshd's eBPF pins (links first, so that its programs detach before their maps go),
/// which it leaves on purpose when it stops without leaving the swarm.
pub fn remove_pins(prefix: &str) {
    let dir = pin_dir(prefix);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort_by_key(|p| !p.to_string_lossy().contains("link_"));
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_dir(&dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

/// A cluster whose nodes' overlay namespaces are deleted after the cluster itself, whatever the
/// meshds left (a meshd that keeps its data plane across restarts leaves it on SIGTERM too).
#[derive(Debug)]
pub struct OverlayCluster {
    cluster: Option<Cluster>,
    prefixes: Vec<String>,
}

impl OverlayCluster {
    pub fn new(cluster: Cluster) -> Self {
        let prefixes = cluster
            .nodes()
            .iter()
            .map(|n| netns_prefix(&n.state_dir()))
            .collect();
        Self {
            cluster: Some(cluster),
            prefixes,
        }
    }

    /// Closes the cluster (failing on harness leftovers), then sweeps the overlay namespaces.
    pub fn close(mut self) -> anyhow::Result<()> {
        let closed = self.cluster.take().map_or(Ok(()), Cluster::close);
        self.sweep();
        closed
    }

    fn sweep(&self) {
        for prefix in &self.prefixes {
            for name in namespaces_of(prefix).unwrap_or_default() {
                crate::netns::delete_namespace(&name);
            }
            remove_pins(prefix);
        }
    }
}

impl Deref for OverlayCluster {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        self.cluster
            .as_ref()
            .expect("the cluster is only taken by close")
    }
}

impl DerefMut for OverlayCluster {
    fn deref_mut(&mut self) -> &mut Cluster {
        self.cluster
            .as_mut()
            .expect("the cluster is only taken by close")
    }
}

impl Drop for OverlayCluster {
    fn drop(&mut self) {
        // Nodes first: a running meshd could still be creating namespaces.
        drop(self.cluster.take());
        self.sweep();
    }
}

/// A running task's container as seen from its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The hostname of the node it runs on.
    pub node: String,
    pub container: String,
    pub task_id: String,
    /// The container's init process: its network namespace is the sandbox.
    pub pid: u32,
    /// The container's own hostname (what `hostname` prints inside it).
    pub hostname: String,
}

impl Sandbox {
    /// Runs `program args…` (a host binary) inside the sandbox's network namespace.
    pub async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let pid = self.pid.to_string();
        let mut full = vec!["-t", pid.as_str(), "-n", program];
        full.extend_from_slice(args);
        process::run("nsenter", &full, OBSERVE_TIMEOUT).await
    }

    /// The sandbox's interfaces.
    pub async fn interfaces(&self) -> anyhow::Result<Vec<Interface>> {
        let out = self.run("ip", &["-j", "addr", "show"]).await?;
        Interface::parse(&out.ok("ip -j addr show in a sandbox")?.stdout)
    }

    /// The interface called `name`.
    pub async fn interface(&self, name: &str) -> anyhow::Result<Interface> {
        self.interfaces()
            .await?
            .into_iter()
            .find(|i| i.name == name)
            .with_context(|| format!("container {} has no {name}", short(&self.container)))
    }

    /// The sandbox's neighbour entries on every interface.
    pub async fn neighbours(&self) -> anyhow::Result<Vec<Neighbour>> {
        let out = self.run("ip", &["-j", "-4", "neigh", "show"]).await?;
        Neighbour::parse(&out.ok("ip -j neigh show in a sandbox")?.stdout)
    }

    /// Sends one ICMP echo of `size` data bytes with the host's iputils ping; `dont_fragment`
    /// sets DF (`-M do`), which busybox's ping cannot. Returns whether a reply came back.
    pub async fn ping(&self, addr: &str, size: u32, dont_fragment: bool) -> anyhow::Result<bool> {
        let size = size.to_string();
        let mut args = vec!["-n", "-c1", "-W2", "-s", size.as_str()];
        if dont_fragment {
            args.extend(["-M", "do"]);
        }
        args.push(addr);
        let out = self.run("ping", &args).await?;
        // 1: no reply; 2: an error such as "message too long" — both mean the packet did not pass.
        match out.code {
            0 => Ok(true),
            1 | 2 => Ok(false),
            code => bail!("ping exited {code}: {}{}", out.stdout, out.stderr),
        }
    }
}

/// `service`'s VIP on `network`, without its prefix length. A service that publishes a port has
/// one on `ingress` too, which a task not on `ingress` cannot reach.
pub async fn vip_on(manager: &Node, service: &str, network: &str) -> anyhow::Result<String> {
    let first = |out: &str| -> anyhow::Result<Value> {
        let json: Value = serde_json::from_str(out)?;
        Ok(json
            .as_array()
            .and_then(|a| a.first())
            .unwrap_or(&json)
            .clone())
    };
    let net = first(&manager.meshctl_ok(&["network", "inspect", network]).await?)?;
    let net_id = net["Id"].as_str().context("network inspect shows no Id")?;
    let svc = first(&manager.meshctl_ok(&["service", "inspect", service]).await?)?;
    let vip = svc["Endpoint"]["VirtualIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["NetworkID"] == net_id)
        .and_then(|v| v["Addr"].as_str()?.split('/').next())
        .with_context(|| format!("{service} has no VIP on {network}: {svc}"))?;
    Ok(vip.to_owned())
}

/// The first 12 characters of an id, for messages and interface names.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl Node {
    /// The running containers of `service` on this node, with their task ids and pids.
    pub async fn sandboxes(&self, service: &str) -> anyhow::Result<Vec<Sandbox>> {
        let mut found = Vec::new();
        for id in self.containers(service, false).await? {
            let inspect = self.inspect_container(&id).await?;
            let pid = inspect["State"]["Pid"].as_u64().unwrap_or(0);
            if pid == 0 {
                continue; // stopped between `docker ps` and `docker inspect`
            }
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            found.push(Sandbox {
                node: self.hostname().to_owned(),
                task_id: text(&inspect["Config"]["Labels"][TASK_LABEL]),
                hostname: text(&inspect["Config"]["Hostname"]),
                pid: u32::try_from(pid).context("pid out of range")?,
                container: id,
            });
        }
        Ok(found)
    }

    /// The MTU of the node's link to the cluster bridge: the underlay of its overlays.
    pub fn underlay_mtu(&self) -> anyhow::Result<u32> {
        let out = self.netns().ip(&["-j", "link", "show", "eth0"])?;
        let links: Vec<Value> = serde_json::from_str(&out).context("ip -j link show eth0")?;
        links
            .first()
            .and_then(|l| l["mtu"].as_u64())
            .and_then(|m| u32::try_from(m).ok())
            .context("eth0 has no MTU")
    }

    /// Links in the node's own namespace.
    pub fn links(&self) -> anyhow::Result<Vec<Link>> {
        let out = self.netns().ip(&["-d", "-j", "link", "show"])?;
        Link::parse(&out)
    }
}

/// One interface of `ip -j addr show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mtu: u32,
    pub mac: String,
    pub ipv4: Vec<Ipv4Addr>,
}

impl Interface {
    fn parse(json: &str) -> anyhow::Result<Vec<Self>> {
        let list: Vec<Value> = serde_json::from_str(json).context("ip -j addr show output")?;
        Ok(list
            .iter()
            .map(|i| Self {
                name: i["ifname"].as_str().unwrap_or_default().to_owned(),
                mtu: i["mtu"]
                    .as_u64()
                    .and_then(|m| u32::try_from(m).ok())
                    .unwrap_or(0),
                mac: i["address"].as_str().unwrap_or_default().to_owned(),
                ipv4: i["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["family"] == "inet")
                    .filter_map(|a| a["local"].as_str()?.parse().ok())
                    .collect(),
            })
            .collect())
    }
}

/// One link of `ip -d -j link show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    /// `veth`, `vxlan`, `bridge`, … (empty for a plain device such as `lo`).
    pub kind: String,
    pub master: Option<String>,
}

impl Link {
    fn parse(json: &str) -> anyhow::Result<Vec<Self>> {
        let list: Vec<Value> = serde_json::from_str(json).context("ip -j link show output")?;
        Ok(list
            .iter()
            .map(|l| Self {
                name: l["ifname"].as_str().unwrap_or_default().to_owned(),
                kind: l["linkinfo"]["info_kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                master: l["master"].as_str().map(str::to_owned),
            })
            .collect())
    }
}

/// One entry of `ip -j neigh show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: String,
    pub dev: String,
    /// Empty for an incomplete or failed entry.
    pub mac: String,
    /// `PERMANENT`, `REACHABLE`, `STALE`, …
    pub state: Vec<String>,
}

impl Neighbour {
    fn parse(json: &str) -> anyhow::Result<Vec<Self>> {
        let list: Vec<Value> = serde_json::from_str(json).context("ip -j neigh show output")?;
        Ok(list
            .iter()
            .map(|n| Self {
                ip: n["dst"].as_str().unwrap_or_default().to_owned(),
                dev: n["dev"].as_str().unwrap_or_default().to_owned(),
                mac: n["lladdr"].as_str().unwrap_or_default().to_owned(),
                state: n["state"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect(),
            })
            .collect())
    }

    pub fn is_permanent(&self) -> bool {
        self.state.iter().any(|s| s == "PERMANENT")
    }
}

/// A forwarding entry of a VXLAN device towards a remote VTEP (`bridge fdb show dev vxN` lines
/// with a `dst`); the bridge's own entries for the port have no `dst` and are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: String,
    pub dst: String,
}

/// The remote entries of `dev` in namespace `netns`.
pub fn vxlan_fdb(netns: &str, dev: &str) -> anyhow::Result<Vec<FdbEntry>> {
    let out = process::run_sync("bridge", &["-j", "-n", netns, "fdb", "show", "dev", dev])?;
    let out = out.ok(&format!("bridge -n {netns} fdb show dev {dev}"))?;
    let list: Vec<Value> = serde_json::from_str(&out.stdout).context("bridge -j fdb output")?;
    Ok(list
        .iter()
        .filter_map(|e| {
            Some(FdbEntry {
                mac: e["mac"].as_str()?.to_owned(),
                dst: e["dst"].as_str()?.to_owned(),
            })
        })
        .collect())
}

/// The overlay's kernel state on every node, for a failing test's report: each overlay
/// namespace's links, addresses and FDB, the node's own links and routes, and every task
/// sandbox's addresses, routes and neighbours.
pub async fn diagnostics(cluster: &Cluster) -> String {
    let mut out = String::new();
    for node in cluster.nodes() {
        out.push_str(&format!("==== overlay state of {} ====\n", node.hostname()));
        let own = node.netns().name().to_owned();
        for args in [&["-br", "link"][..], &["-br", "addr"], &["route"]] {
            out.push_str(&show("ip", &own, args));
        }
        for ns in overlay_namespaces(node).unwrap_or_default() {
            for args in [&["-d", "link", "show"][..], &["-br", "addr"]] {
                out.push_str(&show("ip", &ns, args));
            }
            out.push_str(&show("bridge", &ns, &["fdb", "show"]));
        }
        let all = node
            .docker(&[
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                "label=com.mesh.task.id",
            ])
            .await
            .map(|o| o.stdout)
            .unwrap_or_default();
        for id in all.split_whitespace() {
            let Ok(inspect) = node.inspect_container(id).await else {
                continue;
            };
            let sandbox = Sandbox {
                node: node.hostname().to_owned(),
                container: id.to_owned(),
                task_id: inspect["Config"]["Labels"][TASK_LABEL]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                pid: inspect["State"]["Pid"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(0),
                hostname: String::new(),
            };
            out.push_str(&format!(
                "-- container {} (task {}, pid {}) --\n",
                short(id),
                sandbox.task_id,
                sandbox.pid
            ));
            for args in [&["-br", "addr"][..], &["route"], &["neigh"]] {
                if let Ok(o) = sandbox.run("ip", args).await {
                    out.push_str(&format!("ip {}:\n{}{}", args.join(" "), o.stdout, o.stderr));
                }
            }
        }
    }
    out
}

fn show(tool: &str, netns: &str, args: &[&str]) -> String {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    match process::run_sync(tool, &full) {
        Ok(o) => format!(
            "{netns}: {tool} {}:\n{}{}",
            args.join(" "),
            o.stdout,
            o.stderr
        ),
        Err(err) => format!("{netns}: {tool} {}: {err:#}\n", args.join(" ")),
    }
}
