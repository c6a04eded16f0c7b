//! Overlay networking on three nodes, observed in the kernel: tasks reach each other by address
//! (ICMP and TCP) with the underlay's MTU less VXLAN's 50 bytes, and a task that goes leaves every
//! FDB and neighbour table within seconds (`reach`); networks are isolated from each other even
//! when they share a subnet (`isolation`); the data plane holds against a gossip member with a
//! wrong key and across a restart of the agent, with a way out of the cluster through the node's
//! gateway bridge (`resilience`). This file holds what they share: tasks, their tables, reaching.

// A test target's root resolves modules beside itself, as a `mod.rs` does.
#[path = "overlay/isolation.rs"]
mod isolation;
#[path = "overlay/reach.rs"]
mod reach;
#[path = "overlay/resilience.rs"]
mod resilience;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, ensure};
use mesh_tests::overlay::{OverlayCluster, Sandbox, diagnostics, overlay_netns, short, vxlan_fdb};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, wait_for, wait_until};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);
/// What VXLAN's encapsulation costs the overlay's MTU (outer Ethernet, IPv4, UDP, VXLAN).
const VXLAN_OVERHEAD: u32 = 50;
/// IPv4 and ICMP headers: a ping of `mtu - 28` data bytes fills the MTU exactly.
const ICMP_HEADERS: u32 = 28;
/// Every test task answers a TCP connection on this port with its hostname.
const PORT: &str = "8080";
/// Docker's option naming a network's VNI, as `network inspect` shows it.
const VNI_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// A running task: its sandbox and what it has on its first network (`eth0`).
#[derive(Debug, Clone)]
struct Task {
    sandbox: Sandbox,
    addr: Ipv4Addr,
    mac: String,
}

impl Task {
    fn label(&self) -> String {
        format!(
            "{} on {} ({})",
            short(&self.sandbox.task_id),
            self.sandbox.node,
            self.addr
        )
    }
}

async fn three_nodes() -> anyhow::Result<OverlayCluster> {
    let cluster = Cluster::builder().managers(1).workers(2).start().await?;
    Ok(OverlayCluster::new(cluster))
}

/// Prints the overlay's kernel state when the test failed, then tears everything down.
async fn finish(cluster: OverlayCluster, result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(err) = &result {
        eprintln!("FAILED: {err:#}\n{}", diagnostics(&cluster).await);
        return result;
    }
    cluster.close()
}

/// `service create` of `replicas` tasks on `network`, at most one per node, each answering TCP
/// connections on [`PORT`] with its hostname (busybox `nc` as the container's command).
async fn create_service(
    node: &Node,
    name: &str,
    network: &str,
    replicas: u32,
) -> anyhow::Result<()> {
    let replicas = replicas.to_string();
    let args = [
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--replicas",
        &replicas,
        "--replicas-max-per-node",
        "1",
        "--network",
        network,
        // nc as pid 1 ignores SIGTERM: do not wait 10 s for each task at removal.
        "--stop-grace-period",
        "1s",
        BUSYBOX_IMAGE,
        "nc",
        "-ll",
        "-p",
        PORT,
        "-e",
        "hostname",
    ];
    node.meshctl_ok(&args).await.map(drop)
}

/// Waits until `service` has `count` running tasks, each with an address on its `eth0`.
async fn tasks_of(cluster: &Cluster, service: &str, count: usize) -> anyhow::Result<Vec<Task>> {
    let what = format!("{count} running tasks of {service} with an overlay address");
    wait_for(CONVERGE, &what, async || {
        let mut tasks = Vec::new();
        for node in cluster.nodes() {
            for sandbox in node.sandboxes(service).await? {
                let eth0 = sandbox.interface("eth0").await?;
                let Some(addr) = eth0.ipv4.first().copied() else {
                    return Ok(None);
                };
                tasks.push(Task {
                    sandbox,
                    addr,
                    mac: eth0.mac,
                });
            }
        }
        Ok((tasks.len() == count).then_some(tasks))
    })
    .await
}

/// `network inspect NAME` as one JSON object.
async fn inspect_network(node: &Node, name: &str) -> anyhow::Result<Value> {
    let out = node.meshctl_ok(&["network", "inspect", name]).await?;
    let mut list: Vec<Value> = serde_json::from_str(&out).context("network inspect output")?;
    list.pop().context("network inspect printed nothing")
}

async fn vni_of(node: &Node, network: &str) -> anyhow::Result<u32> {
    let json = inspect_network(node, network).await?;
    json["Options"][VNI_OPTION]
        .as_str()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("network {network} shows no VNI: {json}"))
}

/// Fails (with what is missing) unless every node hosting a task has, in the network's namespace,
/// a static FDB entry for every task on another node pointing at that node's address, and every
/// task has a permanent neighbour entry for every task on another node.
async fn check_programmed(cluster: &Cluster, vni: u32, tasks: &[Task]) -> anyhow::Result<()> {
    let dev = format!("vx{vni}");
    for node in cluster.nodes() {
        let here: Vec<&Task> = tasks
            .iter()
            .filter(|t| t.sandbox.node == node.hostname())
            .collect();
        if here.is_empty() {
            continue;
        }
        let mut remote: Vec<(&Task, Ipv4Addr)> = Vec::new();
        for task in tasks.iter().filter(|t| t.sandbox.node != node.hostname()) {
            remote.push((task, cluster.node(&task.sandbox.node)?.addr()));
        }
        let fdb = vxlan_fdb(&overlay_netns(node, vni), &dev)?;
        for (task, vtep) in &remote {
            let vtep = vtep.to_string();
            ensure!(
                fdb.iter().any(|e| e.mac == task.mac && e.dst == vtep),
                "{}: no FDB entry {} dst {vtep} for task {} in {fdb:?}",
                node.hostname(),
                task.mac,
                task.label()
            );
        }
        for local in here {
            let neighbours = local.sandbox.neighbours().await?;
            for (task, _) in &remote {
                ensure!(
                    neighbours.iter().any(|n| n.ip == task.addr.to_string()
                        && n.mac == task.mac
                        && n.is_permanent()),
                    "task {}: no permanent neighbour {} -> {} in {neighbours:?}",
                    local.label(),
                    task.addr,
                    task.mac
                );
            }
        }
    }
    Ok(())
}

async fn wait_programmed(cluster: &Cluster, vni: u32, tasks: &[Task]) -> anyhow::Result<()> {
    let what = format!("FDB and neighbour entries of VNI {vni} on every node");
    wait_until(CONVERGE, &what, async || {
        check_programmed(cluster, vni, tasks).await.map(|()| true)
    })
    .await
}

/// Busybox ping from inside the task's container; whether a reply came back.
async fn ping(node: &Node, from: &Task, addr: Ipv4Addr) -> anyhow::Result<bool> {
    let addr = addr.to_string();
    let container = from.sandbox.container.as_str();
    let out = node
        .docker(&["exec", container, "ping", "-c1", "-W2", &addr])
        .await?;
    ensure!(
        !out.stderr.contains("Error response from daemon"),
        "docker exec in {}: {}",
        from.label(),
        out.stderr
    );
    Ok(out.success())
}

/// What a TCP connection from the task's container to `addr`:[`PORT`] reads (the answering
/// task's hostname), or `None` when it cannot connect.
async fn tcp_read(node: &Node, from: &Task, addr: Ipv4Addr) -> anyhow::Result<Option<String>> {
    let addr = addr.to_string();
    let container = from.sandbox.container.as_str();
    let out = node
        .docker(&["exec", container, "nc", "-w", "2", &addr, PORT])
        .await?;
    ensure!(
        !out.stderr.contains("Error response from daemon"),
        "docker exec in {}: {}",
        from.label(),
        out.stderr
    );
    let read = out.stdout.trim();
    Ok((out.success() && !read.is_empty()).then(|| read.to_owned()))
}

/// `from` reaches `to` by ping, and a TCP connection to `to`'s address is answered by `to` itself.
async fn check_reaches(cluster: &Cluster, from: &Task, to: &Task) -> anyhow::Result<()> {
    let node = cluster.node(&from.sandbox.node)?;
    let what = format!("{} to ping {}", from.label(), to.label());
    wait_until(Duration::from_secs(10), &what, async || {
        ping(node, from, to.addr).await
    })
    .await?;
    let what = format!("{} to connect to {}:{PORT}", from.label(), to.label());
    let answer = wait_for(Duration::from_secs(10), &what, async || {
        tcp_read(node, from, to.addr).await
    })
    .await?;
    ensure!(
        answer == to.sandbox.hostname,
        "{} connecting to {}:{PORT} was answered by {answer:?}, not by {:?}",
        from.label(),
        to.addr,
        to.sandbox.hostname
    );
    Ok(())
}

async fn check_all_pairs(cluster: &Cluster, tasks: &[Task]) -> anyhow::Result<()> {
    for from in tasks {
        for to in tasks
            .iter()
            .filter(|t| t.sandbox.task_id != from.sandbox.task_id)
        {
            check_reaches(cluster, from, to).await?;
        }
    }
    Ok(())
}

fn one_per_node(tasks: &[Task]) -> anyhow::Result<()> {
    let nodes: BTreeSet<&str> = tasks.iter().map(|t| t.sandbox.node.as_str()).collect();
    ensure!(
        nodes.len() == tasks.len(),
        "tasks share a node: {:?}",
        tasks.iter().map(Task::label).collect::<Vec<_>>()
    );
    Ok(())
}
