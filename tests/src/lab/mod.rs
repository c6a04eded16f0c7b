//! Labs: named clusters on this machine (`cargo xtask lab …`, `cargo xtask demo`), built on the
//! same [`Cluster`] as the tests, that outlive the command that made them. Each lab keeps its
//! record and its nodes' files under `/run/mesh-lab/<name>/` (see [`state`]), so any later command
//! can find it, fault it ([`fault`]) or take it down, also after a command died half-way.

pub mod delay;
pub mod fault;
pub mod state;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cluster::Cluster;
use crate::netns;
use crate::process;
pub use state::{LabNode, LabState};

/// The lab a command means when it is given no `--name`.
pub const DEFAULT_NAME: &str = "lab";

/// What `lab up` brings up.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub name: String,
    pub managers: usize,
    pub workers: usize,
    /// A fixed `/24` (the demo's 10.232.0); labs otherwise get a free one of 10.233.X.
    pub subnet: Option<[u8; 3]>,
    /// Print each step's time (a person watches).
    pub progress: bool,
    /// The calling process keeps owning the lab after it is up (a test): if it dies, the lab is
    /// a leftover. Otherwise the lab is on its own once up.
    pub owned: bool,
}

impl LabSpec {
    /// Checks the name and the node counts (before anything is installed, built or created).
    pub fn validate(&self) -> anyhow::Result<()> {
        state::validate_name(&self.name)?;
        let total = self.managers + self.workers;
        if self.managers == 0 {
            bail!("a lab needs at least one manager");
        }
        if total > state::MAX_NODES {
            bail!(
                "a lab holds at most {} nodes, not {total}",
                state::MAX_NODES
            );
        }
        Ok(())
    }

    pub fn new(name: &str, managers: usize, workers: usize) -> Self {
        Self {
            name: name.to_owned(),
            managers,
            workers,
            subnet: None,
            progress: false,
            owned: false,
        }
    }
}

/// A lab this process brought up. Dropping it takes the lab down unless [`Lab::keep`] was called.
#[derive(Debug)]
pub struct Lab {
    cluster: Option<Cluster>,
    state: LabState,
}

impl Lab {
    pub fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("the cluster lives until drop")
    }

    pub fn state(&self) -> &LabState {
        &self.state
    }

    /// Leaves the lab running after this process exits.
    pub fn keep(mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.keep();
        }
    }

    /// Takes the lab down and fails if anything of it is left.
    pub fn close(mut self) -> anyhow::Result<()> {
        drop(self.cluster.take());
        down(&self.state.name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            drop(cluster);
            teardown(&self.state.name);
        }
    }
}

/// Brings up a lab: records it, then starts its nodes side by side and forms the swarm. On failure
/// nothing of it is left.
pub async fn up(spec: &LabSpec) -> anyhow::Result<Lab> {
    spec.validate()?;
    let owner = state::Owner::me()?;
    let dir = state::lab_dir(&spec.name);
    let state = {
        let _lock = state::lock()?;
        if dir.exists() || !lab_links(&spec.name).is_empty() {
            bail!(
                "a lab named {0} exists already (`cargo xtask lab down --name {0}` removes it)",
                spec.name
            );
        }
        let subnet = match spec.subnet {
            Some(net) => net,
            None => state::free_subnet()?,
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let state = LabState {
            name: spec.name.clone(),
            subnet,
            managers: spec.managers,
            workers: spec.workers,
            owner: Some(owner),
            ready: false,
            faults: Default::default(),
            partition: None,
        };
        if let Err(err) = state.save() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(err);
        }
        state
    };
    match start(spec, state).await {
        Ok(lab) => Ok(lab),
        Err(err) => {
            teardown(&spec.name);
            Err(err)
        }
    }
}

async fn start(spec: &LabSpec, mut state: LabState) -> anyhow::Result<Lab> {
    let bin = state.dir().join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    let meshctl = crate::meshctl::binary("meshctl")?;
    std::os::unix::fs::symlink(&meshctl, bin.join("meshctl"))
        .with_context(|| format!("cannot link {}", meshctl.display()))?;
    let mut builder = Cluster::builder()
        .managers(spec.managers)
        .workers(spec.workers)
        .fixed(&state.bridge(), state.subnet, &state.dir());
    if spec.progress {
        builder = builder.progress();
    }
    if !spec.owned {
        // A lab left running prints no logs on the way out; they are in its directory.
        builder = builder.quiet();
    }
    let cluster = builder.start().await?;
    state.ready = true;
    if !spec.owned {
        state.owner = None;
    }
    state.save()?;
    Ok(Lab {
        cluster: Some(cluster),
        state,
    })
}

/// The bridge and veths of lab `name` in the host namespace.
fn lab_links(name: &str) -> Vec<String> {
    let bridge = state::bridge_name(name);
    let veths = format!("{bridge}-");
    netns::links_with_prefix(&bridge)
        .into_iter()
        .filter(|l| *l == bridge || l.starts_with(&veths))
        .collect()
}

/// The node namespaces of lab `name`.
fn lab_namespaces(name: &str) -> Vec<String> {
    netns::namespaces_with_prefix(&format!("{}-", state::bridge_name(name)))
}

/// The `/run/mesh-lab/<name>/` needle that every process of the lab has on its command line.
fn dir_needle(name: &str) -> String {
    format!("{}/", state::lab_dir(name).display())
}

/// Takes lab `name` down and checks that nothing of it is left; fails if there was no such lab.
pub fn down(name: &str) -> anyhow::Result<()> {
    state::validate_name(name)?;
    if left_behind(name).is_empty() {
        bail!("no lab named {name} (`cargo xtask lab ls` lists the labs)");
    }
    teardown(name);
    let left = left_behind(name);
    if !left.is_empty() {
        bail!(
            "left behind after taking lab {name} down: {}",
            left.join(", ")
        );
    }
    Ok(())
}

/// What of lab `name` exists: namespaces, links, processes, its directory.
pub fn left_behind(name: &str) -> Vec<String> {
    let mut left: Vec<String> = lab_namespaces(name)
        .into_iter()
        .map(|n| format!("namespace {n}"))
        .collect();
    left.extend(lab_links(name).into_iter().map(|l| format!("link {l}")));
    left.extend(
        process::pids_with_cmdline(&dir_needle(name))
            .into_iter()
            .map(|pid| format!("process {pid}")),
    );
    let dir = state::lab_dir(name);
    if dir.exists() {
        left.push(dir.display().to_string());
    }
    left
}

/// Removes everything of lab `name`, whatever state it is in: daemons first (meshd, then dockerd
/// with its containers), the overlay namespaces and eBPF pins meshd keeps, delayers, namespaces,
/// links, the directory. Teardown goes on past every failure.
pub fn teardown(name: &str) {
    let dir = state::lab_dir(name);
    if let Ok(state) = LabState::load(name) {
        for pid in state.faults.values().filter_map(|f| f.delayer) {
            delay::stop(pid);
        }
    }
    // The nodes side by side: each waits mostly for its own daemons to stop.
    std::thread::scope(|scope| {
        for node in node_dirs(&dir) {
            scope.spawn(move || stop_node(&node));
        }
    });
    for pid in process::pids_with_cmdline(&dir_needle(name)) {
        process::signal(pid, "KILL");
        process::wait_gone(pid, Duration::from_secs(5));
    }
    for ns in lab_namespaces(name) {
        netns::delete_namespace(&ns);
    }
    for link in lab_links(name) {
        netns::delete_link(&link);
    }
    if dir.exists()
        && let Err(err) = std::fs::remove_dir_all(&dir)
    {
        eprintln!("cannot remove {}: {err}", dir.display());
    }
}

/// Stops one node's meshd, then its dockerd and containers, and removes the overlay namespaces
/// and eBPF pins its meshd keeps.
fn stop_node(node: &Path) {
    for pid in process::pids_with_cmdline(&node.join("meshd.sock").display().to_string()) {
        process::terminate(pid, Duration::from_secs(10));
    }
    crate::dockerd::stop(node);
    let prefix = crate::overlay::netns_prefix(&node.join("state"));
    for ns in netns::namespaces_with_prefix(&format!("{prefix}-")) {
        netns::delete_namespace(&ns);
    }
    crate::overlay::remove_pins(&prefix);
}

/// The node directories (`node1`, …) under a lab's directory.
fn node_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("node"))
        })
        .collect()
}

/// How a lab stands, for `lab ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Up; `owner` is the test that holds it, if any.
    Up { owner: Option<u32> },
    /// `lab up` (pid) is still bringing it up.
    Starting(u32),
    /// The process that owned it died (a crashed `lab up`, a killed test): `lab down` removes it.
    Orphaned,
}

/// Every lab with a directory, with its record (if readable) and health.
pub fn list() -> Vec<(String, Option<LabState>, Health)> {
    state::list_names()
        .into_iter()
        .map(|name| {
            let record = LabState::load(&name).ok();
            let health = match &record {
                None => Health::Orphaned,
                Some(s) => match s.owner {
                    Some(owner) if !owner.alive() => Health::Orphaned,
                    Some(owner) if !s.ready => Health::Starting(owner.pid),
                    owner => Health::Up {
                        owner: owner.map(|o| o.pid),
                    },
                },
            };
            (name, record, health)
        })
        .collect()
}

/// Labs nobody will take down: those whose owner died, and bridges or namespaces named like a
/// lab's whose lab has no directory. For the leftover check.
pub fn orphaned() -> Vec<String> {
    // A lab being created has its directory a moment before its record: wait for that.
    let _lock = Path::new(state::RUN_DIR)
        .exists()
        .then(state::lock)
        .and_then(Result::ok);
    let mut names: Vec<String> = list()
        .into_iter()
        .filter(|(_, _, health)| *health == Health::Orphaned)
        .map(|(name, _, _)| name)
        .collect();
    let known = state::list_names();
    let stray = netns::links_with_prefix(state::LINK_PREFIX)
        .into_iter()
        .chain(netns::namespaces_with_prefix(state::LINK_PREFIX))
        .filter_map(|l| {
            let rest = l.strip_prefix(state::LINK_PREFIX)?;
            Some(rest.split('-').next()?.to_owned())
        })
        .filter(|n| state::validate_name(n).is_ok() && !known.contains(n));
    for name in stray {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Whether a node's meshd runs.
pub fn meshd_running(node: &LabNode) -> bool {
    !process::pids_with_cmdline(&node.socket().display().to_string()).is_empty()
}

/// `CMD` run inside `node`'s network namespace with `meshctl` on its `PATH` and `MESH_HOST` and
/// `DOCKER_HOST` pointing at that node's meshd and dockerd.
pub fn exec_command(state: &LabState, node: &LabNode, cmd: &[String]) -> anyhow::Result<Command> {
    let Some((program, args)) = cmd.split_first() else {
        bail!("no command given: `lab exec NODE -- COMMAND…`");
    };
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", node.netns_path()))
        .arg("--")
        .arg(program)
        .args(args)
        .env(
            "PATH",
            format!("{}:{path}", state.dir().join("bin").display()),
        )
        .env("MESH_HOST", format!("unix://{}", node.socket().display()))
        .env("DOCKER_HOST", node.docker_host());
    Ok(command)
}
