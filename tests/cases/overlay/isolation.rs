//! Three networks, two of them on the same subnet: each network's tasks reach each other and only
//! each other, and no network's tables hold another's endpoints.

use std::net::Ipv4Addr;

use anyhow::{Context, bail, ensure};
use mesh_tests::overlay::{overlay_netns, vxlan_fdb};
use mesh_tests::{Cluster, Node, require_privileged};
use serde_json::Value;

use super::{
    PORT, Task, check_all_pairs, create_service, finish, one_per_node, ping, tasks_of, tcp_read,
    three_nodes, vni_of, wait_programmed,
};

#[tokio::test]
async fn networks_are_isolated_even_when_they_share_a_subnet() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = three_nodes().await?;
    let result = isolation(&cluster).await;
    finish(cluster, result).await
}

/// The subnets of this test, held unreachable in every node's namespace: traffic to them that
/// leaks out of an overlay (through a gateway bridge's default route) ends there, never on the
/// host's own routes.
const ISOLATION_NET: &str = "10.77.0.0/16";

async fn isolation(cluster: &Cluster) -> anyhow::Result<()> {
    for node in cluster.nodes() {
        node.netns()
            .ip(&["route", "add", "unreachable", ISOLATION_NET])?;
    }
    let manager = cluster.manager();
    for (name, subnet) in [
        ("a", "10.77.0.0/24"),
        ("b", "10.77.0.0/24"),
        ("c", "10.77.1.0/24"),
    ] {
        let args = [
            "network", "create", "-d", "overlay", "--subnet", subnet, name,
        ];
        manager.meshctl_ok(&args).await?;
    }
    // b has a task more than a, so that at least one of b's addresses is free on a.
    create_service(manager, "sa", "a", 2).await?;
    create_service(manager, "sb", "b", 3).await?;
    create_service(manager, "sc", "c", 2).await?;
    let on_a = tasks_of(cluster, "sa", 2).await?;
    let on_b = tasks_of(cluster, "sb", 3).await?;
    let on_c = tasks_of(cluster, "sc", 2).await?;
    for tasks in [&on_a, &on_b, &on_c] {
        one_per_node(tasks)?;
    }
    let vnis = [
        vni_of(manager, "a").await?,
        vni_of(manager, "b").await?,
        vni_of(manager, "c").await?,
    ];
    ensure!(
        vnis[0] != vnis[1] && vnis[1] != vnis[2] && vnis[0] != vnis[2],
        "networks share a VNI: {vnis:?}"
    );
    for (vni, tasks) in vnis.iter().zip([&on_a, &on_b, &on_c]) {
        wait_programmed(cluster, *vni, tasks).await?;
    }
    let shared: Vec<Ipv4Addr> = on_a
        .iter()
        .map(|t| t.addr)
        .filter(|a| on_b.iter().any(|t| t.addr == *a))
        .collect();
    eprintln!("addresses held on both a and b: {shared:?}");

    // Each network's tables hold its own endpoints only.
    let all = [&on_a, &on_b, &on_c];
    for (i, (vni, tasks)) in vnis.iter().zip(all).enumerate() {
        let foreign: Vec<&Task> = all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, t)| t.iter())
            .collect();
        let dev = format!("vx{vni}");
        for node in cluster.nodes() {
            if !tasks.iter().any(|t| t.sandbox.node == node.hostname()) {
                continue;
            }
            let fdb = vxlan_fdb(&overlay_netns(node, *vni), &dev)?;
            if let Some(t) = foreign.iter().find(|t| fdb.iter().any(|e| e.mac == t.mac)) {
                bail!(
                    "{}: FDB of VNI {vni} holds the MAC of foreign task {}",
                    node.hostname(),
                    t.label()
                );
            }
        }
        for task in tasks.iter() {
            let neighbours = task.sandbox.neighbours().await?;
            if let Some(t) = foreign
                .iter()
                .find(|t| neighbours.iter().any(|n| n.mac == t.mac))
            {
                bail!(
                    "task {} has a neighbour entry for foreign task {}",
                    task.label(),
                    t.label()
                );
            }
        }
    }

    // Within a network every task reaches every other, and the one that answers is on that network
    // even where the other network has a task at the same address.
    check_all_pairs(cluster, &on_a).await?;
    check_all_pairs(cluster, &on_b).await?;

    // From a, b's addresses that a does not use (for a task, its gateway or a virtual IP) lead
    // nowhere, nor do c's.
    let mut used_on_a: Vec<Ipv4Addr> = on_a.iter().map(|t| t.addr).collect();
    used_on_a.push(Ipv4Addr::new(10, 77, 0, 1));
    used_on_a.extend(virtual_ips(manager, "sa").await?);
    let b_only: Vec<Ipv4Addr> = on_b
        .iter()
        .map(|t| t.addr)
        .filter(|a| !used_on_a.contains(a))
        .collect();
    ensure!(
        !b_only.is_empty(),
        "every address of b is also used on a: {:?}",
        on_b.iter().map(|t| t.addr).collect::<Vec<_>>()
    );
    for from in &on_a {
        for addr in b_only.iter().chain(on_c.iter().map(|t| &t.addr)) {
            check_unreachable(cluster, from, *addr).await?;
        }
    }
    // c's tasks still reach each other: what failed above was the crossing, not c.
    check_all_pairs(cluster, &on_c).await
}

/// The service's virtual IPs on all its networks (`Endpoint.VirtualIPs` of `service inspect`).
async fn virtual_ips(node: &Node, service: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    let out = node.meshctl_ok(&["service", "inspect", service]).await?;
    let list: Vec<Value> = serde_json::from_str(&out).context("service inspect output")?;
    Ok(list
        .iter()
        .flat_map(|s| s["Endpoint"]["VirtualIPs"].as_array().into_iter().flatten())
        .filter_map(|vip| vip["Addr"].as_str()?.split('/').next()?.parse().ok())
        .collect())
}

/// `from` gets neither a ping reply nor a TCP connection from `addr`.
async fn check_unreachable(cluster: &Cluster, from: &Task, addr: Ipv4Addr) -> anyhow::Result<()> {
    let node = cluster.node(&from.sandbox.node)?;
    ensure!(
        !ping(node, from, addr).await?,
        "{} got a ping reply from {addr}",
        from.label()
    );
    let read = tcp_read(node, from, addr).await?;
    ensure!(
        read.is_none(),
        "{} connected to {addr}:{PORT} and read {read:?}",
        from.label()
    );
    Ok(())
}
