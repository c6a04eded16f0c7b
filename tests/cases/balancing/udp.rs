//! UDP on three nodes: a service's name and VIP reach every one of its tasks, one per node, from
//! a client task, with answers that come back from the VIP; its port published in ingress mode
//! answers from the host on every node's address, a node without a task included, and on no node
//! once the service is gone. Every task runs the image's `udp-hostname serve`, which answers
//! with the container's hostname.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use mesh_tests::image::udp;
use mesh_tests::overlay::{OverlayCluster, Sandbox, diagnostics, vip_on};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, require_privileged, wait_for, wait_until};

use super::{CONVERGE, client_on, one_task_per_node, sandboxes};

/// The port the tasks serve on, and the port the service publishes it as.
const TARGET: u16 = 7000;
const PUBLISHED: u16 = 9000;
/// How many datagrams must reach every task: with 3 tasks picked evenly, one is missed by all
/// 30 with a probability of about 3 × (2/3)^30 ≈ 1.6e-5.
const TRIES: usize = 30;
/// How long one question waits for its answer: a few round trips on one machine.
const WAIT: Duration = Duration::from_secs(2);

/// The hostname of the task that answered `target` (`HOST:PORT`), asked from inside `client`
/// with `docker exec … udp-hostname ask`; an error says why nothing answered.
async fn ask_from(cluster: &Cluster, client: &Sandbox, target: &str) -> anyhow::Result<String> {
    let node = cluster.node(&client.node)?;
    let wait = WAIT.as_secs().to_string();
    let out = node
        .docker(&[
            "exec",
            &client.container,
            "udp-hostname",
            "ask",
            target,
            &wait,
        ])
        .await?;
    let out = out.ok(&format!("udp-hostname ask {target} in the client"))?;
    Ok(out.stdout.trim().to_owned())
}

/// The hostname of the task that answered the node's published port, asked from the host.
async fn ask_node(node: &Node) -> anyhow::Result<String> {
    let target = SocketAddr::from((node.addr(), PUBLISHED)).to_string();
    let answer = tokio::task::spawn_blocking(move || udp::ask(&target, WAIT)).await?;
    answer.with_context(|| format!("{}:{PUBLISHED}/udp", node.hostname()))
}

#[tokio::test]
async fn udp_reaches_every_task_through_the_vip_and_the_routing_mesh() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = OverlayCluster::new(Cluster::builder().managers(1).workers(2).start().await?);
    let result = through_vip_and_mesh(&cluster).await;
    if let Err(err) = &result {
        eprintln!("FAILED: {err:#}\n{}", diagnostics(&cluster).await);
        return result;
    }
    cluster.close()
}

async fn through_vip_and_mesh(cluster: &Cluster) -> anyhow::Result<()> {
    let manager = cluster.manager();
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", "front"])
        .await?;
    let publish = format!("published={PUBLISHED},target={TARGET},protocol=udp");
    let target = TARGET.to_string();
    manager
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "echo",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            // udp-hostname as pid 1 ignores SIGTERM: do not wait 10 s for each task to stop.
            "--stop-grace-period",
            "1s",
            "--network",
            "front",
            "--publish",
            &publish,
            BUSYBOX_IMAGE,
            "udp-hostname",
            "serve",
            &target,
        ])
        .await?;
    let client = client_on(cluster, "front").await?;
    let (_, hostnames) = one_task_per_node(cluster, "echo").await?;

    // By name, once DNS and the balancer know the tasks: every task answers within TRIES.
    let by_name = format!("echo:{TARGET}");
    wait_until(CONVERGE, "UDP by name to reach all 3 tasks", async || {
        let mut seen = BTreeSet::new();
        for _ in 0..TRIES {
            seen.insert(ask_from(cluster, &client, &by_name).await?);
        }
        Ok(seen == hostnames)
    })
    .await?;
    // By VIP: every datagram is answered, from the VIP (the client ignores any other source),
    // and by every task.
    let by_vip = format!("{}:{TARGET}", vip_on(manager, "echo", "front").await?);
    let mut seen = BTreeSet::new();
    for _ in 0..TRIES {
        seen.insert(ask_from(cluster, &client, &by_vip).await?);
    }
    ensure!(
        seen == hostnames,
        "{TRIES} datagrams to {by_vip} reached {seen:?}, not every task of {hostnames:?}"
    );

    // The routing mesh, asked from the host: each node's published port spreads datagrams over
    // every task, its own or not.
    for node in cluster.nodes() {
        mesh_reaches(node, &hostnames).await?;
    }

    // Scaled to 2: every node, the one left without a task too, reaches both.
    manager
        .meshctl_ok(&["service", "scale", "-d", "echo=2"])
        .await?;
    let left = wait_for(CONVERGE, "echo at 2 tasks", async || {
        let found = sandboxes(cluster, "echo").await?;
        Ok((found.len() == 2).then_some(found))
    })
    .await?;
    let remaining: BTreeSet<String> = left.iter().map(|t| t.hostname.clone()).collect();
    ensure!(
        cluster
            .nodes()
            .iter()
            .any(|n| left.iter().all(|t| t.node != n.hostname())),
        "no node is left without an echo task: {left:?}"
    );
    for node in cluster.nodes() {
        mesh_reaches(node, &remaining).await?;
    }

    // Removed: the published port answers on no node.
    manager.meshctl_ok(&["service", "rm", "echo"]).await?;
    for node in cluster.nodes() {
        let what = format!("{}:{PUBLISHED}/udp to stop answering", node.hostname());
        wait_until(CONVERGE, &what, async || Ok(ask_node(node).await.is_err())).await?;
    }
    manager.meshctl_ok(&["service", "rm", "client"]).await?;
    Ok(())
}

/// Asks `node`'s published port from the host until every one of `tasks` has answered, and no
/// other. A question may go unanswered while the rules change, or when its source port meets a
/// conntrack entry from before the change: answers are what is asserted, not every try.
async fn mesh_reaches(node: &Node, tasks: &BTreeSet<String>) -> anyhow::Result<()> {
    let what = format!("{}:{PUBLISHED}/udp to reach {tasks:?}", node.hostname());
    let mut seen = BTreeSet::new();
    wait_until(CONVERGE, &what, async || {
        for _ in 0..TRIES {
            if let Ok(answer) = ask_node(node).await {
                seen.insert(answer);
            }
        }
        Ok(seen == *tasks || !seen.is_subset(tasks))
    })
    .await?;
    ensure!(
        seen == *tasks,
        "{} was answered by {seen:?}, not by the running tasks {tasks:?}",
        node.hostname()
    );
    Ok(())
}
