//! The real part of `cargo xtask bench gossip`: three meshd nodes run an overlay service scaled
//! 1→2→3→2→1 a few times; it times from a new task's eth0 existing to its MAC in the VXLAN FDB of
//! every other node on the network, and from a removed task's eth0 going to its MAC leaving them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, process, wait_for};

use crate::overlay::{NETWORK, container_pid, in_netns, on_cluster, overlay_netns};
use crate::run::{LIMIT, SERVICE};

/// Rounds of scaling 1→2→3→2→1 on the real nodes.
const ROUNDS: usize = 3;
const STOP_GRACE: &str = "1s";
/// A container's first process before it execs the task's command, as /proc/PID/cmdline holds it.
const RUNC_INIT: &[u8] = b"runc\x00init\x00";
/// The task's command.
const TASK_CMDLINE: &[u8] = b"sleep\x001000000\x00";
const VXLAN_ID_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// Samples from the real nodes.
#[derive(Default)]
pub(crate) struct Propagation {
    vni: u32,
    scale_to_eth0: Vec<Duration>,
    eth0_to_fdb: Vec<Duration>,
    scale_to_gone: Vec<Duration>,
    gone_to_fdb: Vec<Duration>,
}

pub(crate) fn print_propagation(p: &Propagation, profile: &str) {
    println!(
        "endpoint propagation, 3 real nodes (namespaces, own dockerd and meshd each), overlay \
         {NETWORK} (VXLAN id {}), {ROUNDS} rounds of scale 1->2->3->2->1, stop grace period \
         {STOP_GRACE}; meshd {profile} build",
        p.vni
    );
    println!(
        "{:<62} {:>8} {:>8} {:>8}  samples (ms)",
        "", "min", "median", "max"
    );
    let rows = [
        ("scale up -> the new task's eth0 exists", &p.scale_to_eth0),
        (
            "new task's eth0 exists -> its MAC in the FDB of every other node",
            &p.eth0_to_fdb,
        ),
        ("scale down -> a task's eth0 is gone", &p.scale_to_gone),
        (
            "task's eth0 gone -> its MAC out of the FDB of every other node",
            &p.gone_to_fdb,
        ),
    ];
    for (what, samples) in rows {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        let listed: Vec<String> = ms.iter().map(|m| format!("{m:.0}")).collect();
        ms.sort_by(f64::total_cmp);
        let (Some(min), Some(max)) = (ms.first(), ms.last()) else {
            continue;
        };
        println!(
            "{what:<62} {min:>5.0} ms {:>5.0} ms {max:>5.0} ms  {}",
            ms[ms.len() / 2],
            listed.join(" ")
        );
    }
}

/// A running task of the service, attached to the overlay.
#[derive(Clone)]
struct Task {
    node: usize,
    pid: u32,
    mac: String,
}

pub(crate) async fn real_nodes() -> anyhow::Result<Propagation> {
    on_cluster(2, propagation).await
}

async fn propagation(cluster: &Cluster) -> anyhow::Result<Propagation> {
    let manager = cluster.manager();
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", NETWORK])
        .await?;
    // The allocator gives the network its VXLAN id shortly after it is created.
    let vni: u32 = wait_for(LIMIT, "the network's VXLAN id", async || {
        let inspect = manager.meshctl_ok(&["network", "inspect", NETWORK]).await?;
        let inspect: serde_json::Value =
            serde_json::from_str(&inspect).context("network inspect")?;
        Ok(inspect[0]["Options"][VXLAN_ID_OPTION]
            .as_str()
            .and_then(|v| v.parse().ok()))
    })
    .await?;
    let create = [
        "service",
        "create",
        "-d",
        "--name",
        SERVICE,
        "--replicas",
        "1",
        "--replicas-max-per-node",
        "1",
        "--stop-grace-period",
        STOP_GRACE,
        "--network",
        NETWORK,
        BUSYBOX_IMAGE,
        "sleep",
        "1000000",
    ];
    manager.meshctl_ok(&create).await?;
    let mut p = Propagation {
        vni,
        ..Propagation::default()
    };
    for _ in 0..ROUNDS {
        for replicas in [2, 3] {
            let (eth0, fdb) = added(cluster, vni, replicas).await?;
            p.scale_to_eth0.push(eth0);
            p.eth0_to_fdb.push(fdb);
        }
        for replicas in [2, 1] {
            let (gone, fdb) = removed(cluster, vni, replicas).await?;
            p.scale_to_gone.push(gone);
            p.gone_to_fdb.push(fdb);
        }
    }
    Ok(p)
}

/// Scales up to `replicas`; returns (scale → the new task's eth0, eth0 → MAC in every FDB).
async fn added(
    cluster: &Cluster,
    vni: u32,
    replicas: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let before = settled(cluster, replicas - 1).await?;
    let holders = holders(cluster, &before, vni);
    let seen: HashSet<u32> = pids().collect();
    let cluster_dir = cluster.dir().display().to_string();
    let scale = format!("{SERVICE}={replicas}");
    let scale = ["service", "scale", "-d", &scale];
    let start = Instant::now();
    let (scaled, watched) = tokio::join!(
        cluster.manager().meshctl_ok(&scale),
        new_endpoint(&cluster_dir, seen, &holders, vni)
    );
    scaled?;
    let (eth0, fdb) = watched.with_context(|| format!("scaling to {replicas}"))?;
    Ok((eth0 - start, fdb - eth0))
}

/// Scales down to `replicas`; returns (scale → a task's eth0 gone, gone → MAC out of every FDB).
async fn removed(
    cluster: &Cluster,
    vni: u32,
    replicas: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let before = settled(cluster, replicas + 1).await?;
    let scale = format!("{SERVICE}={replicas}");
    let scale = ["service", "scale", "-d", &scale];
    let start = Instant::now();
    let (scaled, watched) = tokio::join!(
        cluster.manager().meshctl_ok(&scale),
        gone_endpoint(cluster, &before, vni)
    );
    scaled?;
    let (gone, fdb) = watched.with_context(|| format!("scaling to {replicas}"))?;
    Ok((gone - start, fdb - gone))
}

/// Waits until exactly `count` tasks run attached to the overlay, and returns them.
async fn settled(cluster: &Cluster, count: usize) -> anyhow::Result<Vec<Task>> {
    let what = format!("{count} tasks attached to the overlay");
    wait_for(LIMIT, &what, async || {
        let tasks = attached(cluster).await?;
        Ok((tasks.len() == count).then_some(tasks))
    })
    .await
}

async fn attached(cluster: &Cluster) -> anyhow::Result<Vec<Task>> {
    let mut tasks = Vec::new();
    for (node, n) in cluster.nodes().iter().enumerate() {
        for id in n.containers(SERVICE, false).await? {
            let Some(pid) = container_pid(n, &id).await? else {
                continue;
            };
            if let Some(mac) = mac_of(pid).await? {
                tasks.push(Task { node, pid, mac });
            }
        }
    }
    Ok(tasks)
}

/// The overlay namespaces of the nodes running `tasks`.
fn holders(cluster: &Cluster, tasks: &[Task], vni: u32) -> Vec<String> {
    let nodes: &[Node] = cluster.nodes();
    tasks
        .iter()
        .map(|t| overlay_netns(&nodes[t.node], vni))
        .collect()
}

/// A process that started after the watch began: a task, once its eth0 shows.
struct Candidate {
    pid: u32,
    eth0: Option<(Instant, String)>,
    /// When each holder's FDB was first seen holding its MAC.
    fdb: Vec<Option<Instant>>,
}

/// Watches for a new task process of this cluster; returns when its eth0 first existed and when
/// its MAC was in the FDB of every namespace in `holders`.
async fn new_endpoint(
    cluster_dir: &str,
    mut seen: HashSet<u32>,
    holders: &[String],
    vni: u32,
) -> anyhow::Result<(Instant, Instant)> {
    let deadline = Instant::now() + LIMIT;
    let mut candidates: Vec<Candidate> = Vec::new();
    // `runc init` processes that may yet enter a sandbox of their own.
    let mut pending: Vec<u32> = Vec::new();
    while Instant::now() < deadline {
        pending.extend(pids().filter(|p| seen.insert(*p)));
        let mut still = Vec::new();
        for pid in pending {
            match sandbox(pid, cluster_dir) {
                Sandbox::Yes => {
                    if has_eth0(pid) {
                        eprintln!("task process {pid} already had eth0 when first seen");
                    }
                    let fdb = vec![None; holders.len()];
                    candidates.push(Candidate {
                        pid,
                        eth0: None,
                        fdb,
                    });
                }
                Sandbox::NotYet => still.push(pid),
                Sandbox::No => {}
            }
        }
        pending = still;
        for c in candidates.iter_mut().filter(|c| c.eth0.is_none()) {
            if has_eth0(c.pid) {
                let at = Instant::now();
                if let Some(mac) = mac_of(c.pid).await? {
                    c.eth0 = Some((at, mac));
                }
            }
        }
        if candidates.iter().any(|c| c.eth0.is_some()) {
            for (h, ns) in holders.iter().enumerate() {
                let fdb = fdb_show(ns, vni).await;
                let at = Instant::now();
                for c in &mut candidates {
                    if let Some((_, mac)) = &c.eth0
                        && c.fdb[h].is_none()
                        && fdb.contains(mac.as_str())
                    {
                        c.fdb[h] = Some(at);
                    }
                }
            }
            for c in &candidates {
                if let Some((eth0, _)) = &c.eth0
                    && let Some(last) = c.fdb.iter().copied().collect::<Option<Vec<_>>>()
                {
                    return Ok((*eth0, last.into_iter().max().unwrap_or(*eth0)));
                }
            }
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let found: Vec<String> = candidates
        .iter()
        .map(|c| format!("pid {} eth0 {:?}", c.pid, c.eth0.as_ref().map(|e| &e.1)))
        .collect();
    bail!("no new task's MAC reached {holders:?} within {LIMIT:?} (saw {found:?})")
}

/// Watches `tasks` until one's eth0 is gone; returns when, and when its MAC had left the FDB of
/// the nodes of every other task.
async fn gone_endpoint(
    cluster: &Cluster,
    tasks: &[Task],
    vni: u32,
) -> anyhow::Result<(Instant, Instant)> {
    let deadline = Instant::now() + LIMIT;
    let (gone, index) = loop {
        if let Some(index) = tasks.iter().position(|t| !has_eth0(t.pid)) {
            break (Instant::now(), index);
        }
        if Instant::now() >= deadline {
            bail!("no task's eth0 went within {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let mac = &tasks[index].mac;
    let others: Vec<Task> = tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, t)| t.clone())
        .collect();
    let mut pending = holders(cluster, &others, vni);
    let mut last = gone;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for ns in pending {
            let fdb = fdb_show(&ns, vni).await;
            if fdb.contains(mac.as_str()) {
                still.push(ns);
            } else {
                last = Instant::now();
            }
        }
        pending = still;
        if !pending.is_empty() && Instant::now() >= deadline {
            bail!("MAC {mac} still in the FDB of {pending:?} after {LIMIT:?}");
        }
    }
    Ok((gone, last))
}

/// Every pid on the machine.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
}

/// Whether a new process is a container's first process in its own sandbox.
enum Sandbox {
    Yes,
    No,
    /// A `runc init` still in its parent's network namespace: look again.
    NotYet,
}

/// Classifies `pid`: a container process of the cluster in `cluster_dir` (its mounts name the
/// cluster's dockerd data roots) running `runc init` or the task's command, in a network namespace
/// other than its parent's. runc's helper processes stay in the node's namespace, whose eth0 is
/// the node's.
fn sandbox(pid: u32, cluster_dir: &str) -> Sandbox {
    let own = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if own != RUNC_INIT && own != TASK_CMDLINE {
        return Sandbox::No;
    }
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    if !mounts.contains(&format!("{cluster_dir}/")) {
        return Sandbox::No;
    }
    let netns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let parent: Option<u32> = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
    match (netns(pid), parent.and_then(netns)) {
        (Some(own), Some(parent)) if own != parent => Sandbox::Yes,
        _ if own == RUNC_INIT => Sandbox::NotYet,
        _ => Sandbox::No,
    }
}

/// Whether the network namespace of `pid` has an eth0 (false once the process is gone).
fn has_eth0(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .is_ok_and(|dev| dev.lines().any(|l| l.trim_start().starts_with("eth0:")))
}

/// The MAC of eth0 in the network namespace of `pid`, lower case; `None` without an eth0.
async fn mac_of(pid: u32) -> anyhow::Result<Option<String>> {
    let netns = format!("/proc/{pid}/ns/net");
    let out = in_netns(&netns, "ip", &["-o", "link", "show", "dev", "eth0"]).await?;
    if !out.success() {
        return Ok(None);
    }
    Ok(out
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_lowercase))
}

/// `bridge fdb show` of the VXLAN device in namespace `ns`; empty when the namespace is gone.
async fn fdb_show(ns: &str, vni: u32) -> String {
    let dev = format!("vx{vni}");
    let args = ["-n", ns, "fdb", "show", "dev", dev.as_str()];
    match process::run("bridge", &args, Duration::from_secs(5)).await {
        Ok(out) if out.success() => out.stdout,
        _ => String::new(),
    }
}
