//! `Cluster::builder().managers(3).workers(2).start().await`: nodes on one bridge, the first manager
//! initialises the swarm and every other node joins it through that manager with its role's token.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::dockerd::{Dockerd, Networking};
use crate::meshd::{Meshd, MeshdConfig};
use crate::netns::{Bridge, Netns};
pub use crate::node::{Node, Role};

/// Port of the manager API on every node.
pub const MANAGER_PORT: u16 = 2377;
/// Port of every node's metrics (`meshd --metrics-addr <node addr>:9323`), Docker's usual one.
pub use crate::meshd::METRICS_PORT;

/// How the cluster's nodes are laid out; see [`Cluster::builder`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    managers: usize,
    workers: usize,
    heartbeat: Option<String>,
    fixed: Option<(String, [u8; 3], PathBuf)>,
    quiet: bool,
    progress: bool,
    private_mounts: bool,
    capabilities: Option<Vec<String>>,
    socket_group: Option<String>,
    unformed: bool,
}

/// A running cluster; dropping it tears down every node, the bridge and the temp dir.
#[derive(Debug)]
pub struct Cluster {
    // Field order is drop order: nodes before the bridge they hang on, the directory last.
    nodes: Vec<Node>,
    bridge: Bridge,
    dir: PathBuf,
    temp: Option<tempfile::TempDir>,
    /// The busybox image's id once the first node imported it; later nodes load the same image.
    image_id: Option<String>,
    quiet: bool,
    /// Every start of every meshd gets a mount namespace of its own (see
    /// [`ClusterBuilder::private_mounts`]).
    private_mounts: bool,
    /// Every meshd's capability bounding set (see [`ClusterBuilder::capabilities`]).
    capabilities: Option<Vec<String>>,
    /// Every meshd's `--group` (see [`ClusterBuilder::socket_group`]).
    socket_group: Option<String>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            managers: 1,
            workers: 0,
            heartbeat: None,
            fixed: None,
            quiet: false,
            progress: false,
            private_mounts: false,
            capabilities: None,
            socket_group: None,
            unformed: false,
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn nodes_mut(&mut self) -> &mut [Node] {
        &mut self.nodes
    }

    /// The first manager (the one that ran `swarm init`).
    pub fn manager(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn manager_mut(&mut self) -> &mut Node {
        &mut self.nodes[0]
    }

    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Leaves everything running and in place (for `cargo xtask demo`).
    pub fn keep(mut self) {
        self.nodes.iter_mut().for_each(Node::keep);
        self.bridge.keep();
        if let Some(temp) = self.temp.take() {
            let _ = temp.keep();
        }
    }
}

impl ClusterBuilder {
    pub fn managers(mut self, n: usize) -> Self {
        self.managers = n;
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Passes `--dispatcher-heartbeat` to `swarm init` (e.g. `"1s"`).
    pub fn dispatcher_heartbeat(mut self, period: &str) -> Self {
        self.heartbeat = Some(period.to_owned());
        self
    }

    /// Starts every meshd, each time, in a fresh private mount namespace
    /// (`unshare --mount --propagation private`), as systemd's `PrivateMounts=` and its kin do:
    /// the namespace, and every mount made in it, dies with that meshd.
    pub fn private_mounts(mut self) -> Self {
        self.private_mounts = true;
        self
    }

    /// Runs every meshd with only `capabilities` (`CAP_NET_ADMIN`, …) in its bounding set, as
    /// systemd's `CapabilityBoundingSet=` does (through setpriv).
    pub fn capabilities(mut self, capabilities: &[&str]) -> Self {
        self.capabilities = Some(capabilities.iter().map(|c| c.to_string()).collect());
        self
    }

    /// Gives every meshd's API socket to `group` (`meshd --group`).
    pub fn socket_group(mut self, group: &str) -> Self {
        self.socket_group = Some(group.to_owned());
        self
    }

    /// Starts every node (namespace, dockerd, image, meshd) but forms no swarm: what to test
    /// `swarm init` and `swarm join` from outside the harness with.
    pub fn unformed(mut self) -> Self {
        self.unformed = true;
        self
    }

    /// Does not print the nodes' logs when the cluster is dropped (by default they are printed, and
    /// cargo test shows them only for failing tests).
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Prints a line as each node comes up and once the swarm has formed, with how long each took
    /// (for `cargo xtask demo`, where a person watches).
    pub fn progress(mut self) -> Self {
        self.progress = true;
        self
    }

    /// Uses a fixed bridge name, subnet and directory instead of unique test ones (`cargo xtask demo`).
    pub fn fixed(mut self, bridge: &str, net: [u8; 3], dir: &Path) -> Self {
        self.fixed = Some((bridge.to_owned(), net, dir.to_owned()));
        self
    }

    /// Starts every node and forms the cluster; on failure everything started so far is torn down.
    pub async fn start(self) -> anyhow::Result<Cluster> {
        if self.managers == 0 {
            bail!("a cluster needs at least one manager");
        }
        let total = self.managers + self.workers;
        if total > 200 {
            bail!("{total} nodes do not fit one test bridge");
        }
        let mut cluster = match &self.fixed {
            Some((name, net, dir)) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                Cluster {
                    nodes: Vec::new(),
                    bridge: Bridge::create(name, *net)?,
                    dir: dir.clone(),
                    temp: None,
                    image_id: None,
                    quiet: self.quiet,
                    private_mounts: self.private_mounts,
                    capabilities: self.capabilities.clone(),
                    socket_group: self.socket_group.clone(),
                }
            }
            None => {
                let bridge = Bridge::for_test()?;
                let temp = tempfile::Builder::new()
                    .prefix(&format!("{}-", bridge.name()))
                    .tempdir_in("/tmp")
                    .context("cannot create the test directory")?;
                Cluster {
                    nodes: Vec::new(),
                    dir: temp.path().to_owned(),
                    bridge,
                    temp: Some(temp),
                    image_id: None,
                    quiet: self.quiet,
                    private_mounts: self.private_mounts,
                    capabilities: self.capabilities.clone(),
                    socket_group: self.socket_group.clone(),
                }
            }
        };
        let roles: Vec<Role> = (0..total)
            .map(|i| {
                if i < self.managers {
                    Role::Manager
                } else {
                    Role::Worker
                }
            })
            .collect();
        let started = Instant::now();
        cluster.add_nodes(&roles).await?;
        if self.progress {
            for node in &cluster.nodes {
                eprintln!(
                    "    {} ({:?}, {}): namespace, dockerd, image and meshd up",
                    node.hostname(),
                    node.role(),
                    node.addr(),
                );
            }
            eprintln!(
                "    {total} nodes started side by side in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        if self.unformed {
            return Ok(cluster);
        }
        let started = Instant::now();
        self.form(&cluster).await?;
        if self.progress {
            eprintln!(
                "    swarm formed: {} manager(s) and {} worker(s) ready in {:.1} s",
                self.managers,
                self.workers,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(cluster)
    }

    async fn form(&self, cluster: &Cluster) -> anyhow::Result<()> {
        let first = cluster.manager();
        let addr = first.addr().to_string();
        let mut init = vec!["swarm", "init", "--advertise-addr", addr.as_str()];
        if let Some(period) = &self.heartbeat {
            init.extend(["--dispatcher-heartbeat", period.as_str()]);
        }
        first.meshctl_ok(&init).await?;
        // Managers join one at a time (each is a Raft membership change); workers together.
        for node in cluster.nodes[1..]
            .iter()
            .filter(|n| n.role() == Role::Manager)
        {
            cluster.join(node).await?;
        }
        let workers = cluster.nodes.iter().filter(|n| n.role() == Role::Worker);
        futures::future::try_join_all(workers.map(|node| cluster.join(node))).await?;
        let total = cluster.nodes.len();
        crate::wait_until(
            Duration::from_secs(60),
            "every node to be Ready",
            async || {
                let nodes = first.meshctl_json(&["node", "ls"]).await?;
                let ready = nodes.iter().filter(|n| {
                    n["Status"]
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case("ready"))
                });
                Ok(ready.count() == total)
            },
        )
        .await
    }
}

impl Cluster {
    /// Starts one more node (namespace, dockerd, image, meshd) that has not joined the swarm yet, and
    /// returns its index in [`Cluster::nodes`]. [`Cluster::join`] joins it.
    pub async fn add_node(&mut self, role: Role) -> anyhow::Result<usize> {
        self.add_nodes(&[role]).await?;
        Ok(self.nodes.len() - 1)
    }

    /// Starts one node per role, none joined yet, side by side: their namespaces, then every
    /// dockerd at once, the image (imported once, loaded with the same id everywhere else), then
    /// every meshd at once. On failure whatever these nodes started is torn down.
    pub async fn add_nodes(&mut self, roles: &[Role]) -> anyhow::Result<()> {
        let first = self.nodes.len() + 1;
        let mut parts = Vec::new();
        for (offset, role) in roles.iter().enumerate() {
            let Ok(index) = u8::try_from(first + offset) else {
                bail!("node {} does not fit one test bridge", first + offset);
            };
            let hostname = format!("node{index}");
            let dir = self.dir.join(&hostname);
            std::fs::create_dir_all(dir.join("state"))
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let netns = Netns::attach(&self.bridge, index)?;
            parts.push((hostname, *role, dir, netns));
        }
        // Before dockerd starts: its private mount namespace shares only what exists by then.
        for (_, _, dir, _) in &parts {
            crate::secrets::mount(dir)?;
        }
        let dockerds = futures::future::join_all(
            parts
                .iter()
                .map(|(_, _, dir, netns)| Dockerd::start(netns, dir, Networking::None)),
        )
        .await;
        let dockerds: Vec<Dockerd> = match dockerds.into_iter().collect::<anyhow::Result<_>>() {
            Ok(dockerds) => dockerds,
            Err(err) => {
                // The dockerds that started are stopped (and their tmpfs unmounted) as dropped.
                for (_, _, dir, _) in &parts {
                    crate::secrets::unmount(dir);
                }
                return Err(err);
            }
        };
        let mut loaders = dockerds.iter();
        if self.image_id.is_none()
            && let Some(first) = loaders.next()
        {
            self.image_id = Some(crate::image::import(first, &self.dir).await?);
        }
        let dir = &self.dir;
        let loaded =
            futures::future::try_join_all(loaders.map(|d| crate::image::load(d, dir))).await?;
        if let Some(id) = loaded
            .iter()
            .find(|id| Some(id.as_str()) != self.image_id.as_deref())
        {
            bail!(
                "image id differs after docker load: {id} != {:?}",
                self.image_id
            );
        }
        let configs: Vec<MeshdConfig> = parts
            .iter()
            .zip(&dockerds)
            .map(|((hostname, _, dir, netns), dockerd)| {
                self.meshd_config(hostname, dir, netns, dockerd)
            })
            .collect();
        let meshds = futures::future::join_all(configs.into_iter().map(Meshd::start)).await;
        let meshds: Vec<Meshd> = meshds.into_iter().collect::<anyhow::Result<_>>()?;
        for (((hostname, role, dir, netns), dockerd), meshd) in
            parts.into_iter().zip(dockerds).zip(meshds)
        {
            self.nodes.push(Node {
                overlay: crate::overlay::OverlayNamespaces::for_state_dir(&dir.join("state")),
                meshd,
                dockerd,
                netns,
                hostname,
                role,
                dir,
                keep: false,
                quiet: self.quiet,
            });
        }
        Ok(())
    }

    fn meshd_config(
        &self,
        hostname: &str,
        dir: &Path,
        netns: &Netns,
        dockerd: &Dockerd,
    ) -> MeshdConfig {
        let addr = netns.addr().to_string();
        MeshdConfig {
            netns_path: netns.path(),
            state_dir: dir.join("state"),
            secrets_dir: crate::secrets::dir(dir),
            socket: dir.join("meshd.sock"),
            docker_host: dockerd.host(),
            hostname: hostname.to_owned(),
            listen_addr: format!("{addr}:{MANAGER_PORT}"),
            metrics_addr: Some(format!("{addr}:{}", crate::meshd::METRICS_PORT)),
            advertise_addr: addr,
            log: dir.join("meshd.log"),
            private_mounts: self.private_mounts,
            capabilities: self.capabilities.clone(),
            socket_group: self.socket_group.clone(),
        }
    }

    /// Joins `node` with its role's token, asked of a manager whose meshd runs, through that manager.
    pub async fn join(&self, node: &Node) -> anyhow::Result<()> {
        let manager = self.live_manager()?;
        let kind = match node.role() {
            Role::Manager => "manager",
            Role::Worker => "worker",
        };
        let token = manager
            .meshctl_ok(&["swarm", "join-token", "-q", kind])
            .await?;
        let args = join_args(token.trim(), node, manager);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = node.meshctl(&args).await?;
        let what = format!("{} joining as {kind}", node.hostname());
        out.ok(&what).map(drop)
    }

    /// The first node started as a manager whose meshd runs (not killed or stopped).
    pub fn live_manager(&self) -> anyhow::Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.role() == Role::Manager && n.meshd_running())
            .context("no manager of this cluster has a running meshd")
    }

    /// The node with this hostname.
    pub fn node(&self, hostname: &str) -> anyhow::Result<&Node> {
        self.position(hostname).map(|i| &self.nodes[i])
    }

    /// The index in [`Cluster::nodes`] of the node with this hostname.
    pub fn position(&self, hostname: &str) -> anyhow::Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.hostname() == hostname)
            .with_context(|| format!("no node named {hostname} in this cluster"))
    }

    /// Tears everything down, then fails if a namespace, link, process or the directory is left.
    pub fn close(self) -> anyhow::Result<()> {
        let prefix = format!("{}-", self.bridge.name());
        let bridge = self.bridge.name().to_owned();
        let dir = self.dir.clone();
        let temporary = self.temp.is_some();
        drop(self);
        let mut left = crate::netns::namespaces_with_prefix(&prefix);
        left.extend(crate::netns::links_with_prefix(&bridge));
        left.extend(
            crate::process::pids_with_cmdline(&dir.display().to_string())
                .into_iter()
                .map(|pid| format!("process {pid}")),
        );
        if temporary && dir.exists() {
            left.push(dir.display().to_string());
        }
        if !left.is_empty() {
            bail!("left behind after teardown: {}", left.join(", "));
        }
        Ok(())
    }
}

/// `swarm join --token T --advertise-addr <node> <manager>:2377`.
pub fn join_args(token: &str, node: &Node, manager: &Node) -> Vec<String> {
    let own = node.addr().to_string();
    let target = format!("{}:{MANAGER_PORT}", manager.addr());
    [
        "swarm",
        "join",
        "--token",
        token,
        "--advertise-addr",
        &own,
        &target,
    ]
    .map(String::from)
    .to_vec()
}
