//! Tasks of one service on three nodes reach each other by ping and TCP with an MTU of the
//! underlay's less 50; a killed task's endpoint leaves every table within seconds; removing the
//! service and the network leaves nothing of the overlay anywhere.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mesh_tests::netns::links_with_prefix;
use mesh_tests::overlay::{overlay_namespaces, overlay_netns, short, vxlan_fdb};
use mesh_tests::{Cluster, require_privileged, wait_for, wait_until};

use super::{
    CONVERGE, ICMP_HEADERS, Task, VXLAN_OVERHEAD, check_all_pairs, check_reaches, create_service,
    finish, one_per_node, tasks_of, three_nodes, vni_of, wait_programmed,
};

#[tokio::test]
async fn tasks_on_three_nodes_reach_each_other_with_the_underlay_mtu_less_50() -> anyhow::Result<()>
{
    require_privileged!();
    let cluster = three_nodes().await?;
    let result = reach_each_other(&cluster).await;
    finish(cluster, result).await
}

async fn reach_each_other(cluster: &Cluster) -> anyhow::Result<()> {
    let manager = cluster.manager();
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", "net1"])
        .await?;
    create_service(manager, "web", "net1", 3).await?;
    let tasks = tasks_of(cluster, "web", 3).await?;
    one_per_node(&tasks)?;
    let vni = vni_of(manager, "net1").await?;
    wait_programmed(cluster, vni, &tasks).await?;

    check_all_pairs(cluster, &tasks).await?;

    // The MTU comes from the underlay (the node's link to the cluster bridge), less VXLAN's 50.
    for task in &tasks {
        let underlay = cluster.node(&task.sandbox.node)?.underlay_mtu()?;
        let want = underlay - VXLAN_OVERHEAD;
        let eth0 = task.sandbox.interface("eth0").await?;
        ensure!(
            eth0.mtu == want,
            "task {}: eth0 MTU {} but the underlay's is {underlay}, so {want} was expected",
            task.label(),
            eth0.mtu
        );
    }
    // A packet filling that MTU crosses the VXLAN with DF set; one byte more does not leave.
    let underlay = manager.underlay_mtu()?;
    let full = underlay - VXLAN_OVERHEAD - ICMP_HEADERS;
    let from = &tasks[0];
    for to in &tasks[1..] {
        let addr = to.addr.to_string();
        let what = format!(
            "a {full}-byte DF ping from {} to {}",
            from.label(),
            to.label()
        );
        wait_until(Duration::from_secs(10), &what, async || {
            from.sandbox.ping(&addr, full, true).await
        })
        .await?;
        ensure!(
            !from.sandbox.ping(&addr, full + 1, true).await?,
            "a {}-byte DF ping from {} to {} passed: the overlay MTU exceeds {underlay} - 50",
            full + 1,
            from.label(),
            to.label()
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_task_that_goes_leaves_every_fdb_and_removal_leaves_nothing() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = three_nodes().await?;
    let result = endpoint_removal(&cluster).await;
    finish(cluster, result).await
}

async fn endpoint_removal(cluster: &Cluster) -> anyhow::Result<()> {
    let manager = cluster.manager();
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", "net1"])
        .await?;
    create_service(manager, "web", "net1", 3).await?;
    let tasks = tasks_of(cluster, "web", 3).await?;
    one_per_node(&tasks)?;
    let vni = vni_of(manager, "net1").await?;
    wait_programmed(cluster, vni, &tasks).await?;
    let mut seen: BTreeSet<String> = tasks.iter().map(|t| t.sandbox.task_id.clone()).collect();

    // Kill the container of the task on the last node: the orchestrator replaces it (on that node,
    // the only one with room under one replica per node) with a new task, a new veth and a new MAC.
    let victim_node = cluster.nodes().last().context("no nodes")?;
    let victim = tasks
        .iter()
        .find(|t| t.sandbox.node == victim_node.hostname())
        .context("no task on the last node")?
        .clone();
    let others: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.sandbox.task_id != victim.sandbox.task_id)
        .collect();
    victim_node
        .docker(&["kill", &victim.sandbox.container])
        .await?
        .ok("docker kill")?;
    let gone = Instant::now();
    let dev = format!("vx{vni}");
    let what = format!(
        "the MAC {} of killed task {} to leave the FDB of the other nodes and the neighbours of \
         the other tasks",
        victim.mac,
        victim.label()
    );
    // A behaviour bound (endpoint removal spreads within seconds), not a benchmark.
    wait_until(Duration::from_secs(5), &what, async || {
        for task in &others {
            let node = cluster.node(&task.sandbox.node)?;
            let fdb = vxlan_fdb(&overlay_netns(node, vni), &dev)?;
            if fdb.iter().any(|e| e.mac == victim.mac) {
                return Ok(false);
            }
            let neighbours = task.sandbox.neighbours().await?;
            if neighbours.iter().any(|n| n.mac == victim.mac) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    eprintln!(
        "killed task's endpoint gone everywhere {:?} after docker kill",
        gone.elapsed()
    );

    // The replacement's endpoint reaches the others' tables, and it reaches them.
    let tasks = wait_for(CONVERGE, "the replacement task", async || {
        let tasks = tasks_of(cluster, "web", 3).await?;
        let replaced = tasks
            .iter()
            .all(|t| t.sandbox.task_id != victim.sandbox.task_id);
        Ok(replaced.then_some(tasks))
    })
    .await?;
    seen.extend(tasks.iter().map(|t| t.sandbox.task_id.clone()));
    wait_programmed(cluster, vni, &tasks).await?;
    let replacement = tasks
        .iter()
        .find(|t| {
            !others
                .iter()
                .any(|o| o.sandbox.task_id == t.sandbox.task_id)
        })
        .context("no replacement among the tasks")?;
    check_reaches(cluster, others[0], replacement).await?;

    // Removing the service and then the network leaves nothing of the overlay on any node.
    manager.meshctl_ok(&["service", "rm", "web"]).await?;
    wait_until(CONVERGE, "every container of web to go", async || {
        for node in cluster.nodes() {
            if !node.containers("web", true).await?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    wait_until(CONVERGE, "the network to be removable", async || {
        Ok(manager.meshctl(&["network", "rm", "net1"]).await?.success())
    })
    .await?;
    wait_until(
        Duration::from_secs(15),
        "nothing of the overlay left on any node",
        async || check_nothing_left(cluster, &seen).map(|()| true),
    )
    .await
}

/// No overlay namespace of any node in /run/netns, and no VXLAN device, overlay bridge or task
/// veth in the nodes' namespaces or the host's.
fn check_nothing_left(cluster: &Cluster, task_ids: &BTreeSet<String>) -> anyhow::Result<()> {
    let mut left = Vec::new();
    for node in cluster.nodes() {
        for ns in overlay_namespaces(node)? {
            left.push(format!("namespace {ns} of {}", node.hostname()));
        }
        for link in node.links()? {
            let ours = link.kind == "vxlan"
                || link.name.starts_with("vx")
                || link.name == "br0"
                || (link.kind == "veth" && link.name != "eth0");
            if ours {
                left.push(format!(
                    "{} link {} ({})",
                    node.hostname(),
                    link.name,
                    link.kind
                ));
            }
        }
    }
    // The host ends of task veths, should one have been created in the wrong namespace.
    for id in task_ids {
        for kind in ["v", "g", "p", "q"] {
            for name in links_with_prefix(&format!("{kind}{}", short(id))) {
                left.push(format!("host link {name}"));
            }
        }
    }
    ensure!(left.is_empty(), "left behind: {}", left.join(", "));
    Ok(())
}
