//! Service VIPs across three nodes, through the eBPF socket load balancer: a service's name and
//! VIP reach its tasks on every node; a task being stopped gets no new connection after a second
//! and no request fails meanwhile; a service scaled to 0 refuses at once; nothing stays behind.
//! The same over UDP, through the VIP and the routing mesh, is in `udp`.

// A test target's root resolves modules beside itself, as a `mod.rs` does.
#[path = "balancing/udp.rs"]
mod udp;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mesh_tests::overlay::{OverlayCluster, Sandbox};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, require_privileged, wait_for, wait_until};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);
/// Behaviour bounds, not benchmarks: how soon a stopping task must be out of the backends, and
/// how soon a connection to a service without tasks must fail.
const DRAIN: Duration = Duration::from_secs(1);
const REFUSE: Duration = Duration::from_secs(3);

/// Every web task serves its container's hostname over HTTP on port 80.
const WEB: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

async fn sandboxes(cluster: &Cluster, service: &str) -> anyhow::Result<Vec<Sandbox>> {
    let mut all = Vec::new();
    for node in cluster.nodes() {
        all.extend(node.sandboxes(service).await?);
    }
    Ok(all)
}

/// Starts a `client` service (one task idling) on `network`, and returns its sandbox.
async fn client_on(cluster: &Cluster, network: &str) -> anyhow::Result<Sandbox> {
    cluster
        .manager()
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "client",
            "--network",
            network,
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ])
        .await?;
    wait_for(CONVERGE, "the client", async || {
        Ok(sandboxes(cluster, "client").await?.pop())
    })
    .await
}

/// Waits for `service`'s 3 tasks, one on each node; returns them and their hostnames.
async fn one_task_per_node(
    cluster: &Cluster,
    service: &str,
) -> anyhow::Result<(Vec<Sandbox>, BTreeSet<String>)> {
    let what = format!("3 {service} tasks");
    let tasks = wait_for(CONVERGE, &what, async || {
        let found = sandboxes(cluster, service).await?;
        Ok((found.len() == 3).then_some(found))
    })
    .await?;
    let nodes: BTreeSet<&str> = tasks.iter().map(|t| t.node.as_str()).collect();
    ensure!(
        nodes.len() == 3,
        "{service} is not on every node: {tasks:?}"
    );
    let hostnames = tasks.iter().map(|t| t.hostname.clone()).collect();
    Ok((tasks, hostnames))
}

/// One HTTP request from `client` to `target` (a name or address); the answering hostname, or
/// `None` when the request failed.
async fn request(
    cluster: &Cluster,
    client: &Sandbox,
    target: &str,
) -> anyhow::Result<Option<String>> {
    let node = cluster
        .nodes()
        .iter()
        .find(|n| n.hostname() == client.node)
        .context("the client's node")?;
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {target} 80");
    let out = node
        .docker(&["exec", &client.container, "sh", "-c", &script])
        .await?;
    if out.code != 0 || !out.stdout.starts_with("HTTP/1.") {
        return Ok(None);
    }
    Ok(out.stdout.lines().last().map(|l| l.trim().to_owned()))
}

async fn info(cluster: &Cluster, index: usize) -> anyhow::Result<Value> {
    let out = cluster.nodes()[index]
        .meshctl_ok(&["info", "--format", "json"])
        .await?;
    Ok(serde_json::from_str(&out)?)
}

#[tokio::test]
async fn vips_spread_over_every_node_drain_stopping_tasks_and_refuse_when_empty()
-> anyhow::Result<()> {
    require_privileged!();
    let cluster = OverlayCluster::new(Cluster::builder().managers(1).workers(2).start().await?);
    let manager = cluster.manager();
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", "front"])
        .await?;
    let web = [
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "3",
        "--replicas-max-per-node",
        "1",
        "--stop-grace-period",
        "3s",
        "--network",
        "front",
        BUSYBOX_IMAGE,
        "sh",
        "-c",
        WEB,
    ];
    manager.meshctl_ok(&web).await?;
    let client = client_on(&cluster, "front").await?;
    let (_, hostnames) = one_task_per_node(&cluster, "web").await?;

    // By name and by VIP, every task answers in turn, wherever it runs.
    let spread = wait_for(
        CONVERGE,
        "requests by name to reach all 3 tasks",
        async || {
            let mut seen = BTreeSet::new();
            for _ in 0..30 {
                match request(&cluster, &client, "web").await? {
                    Some(host) => {
                        seen.insert(host);
                    }
                    None => return Ok(None),
                }
            }
            Ok((seen == hostnames).then_some(seen))
        },
    )
    .await;
    if spread.is_err() {
        eprintln!("{}", mesh_tests::overlay::diagnostics(&cluster).await);
    }
    spread?;
    let inspect: Value =
        serde_json::from_str(&manager.meshctl_ok(&["service", "inspect", "web"]).await?)?;
    let first = inspect
        .as_array()
        .and_then(|a| a.first())
        .unwrap_or(&inspect);
    let vip = first["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .context("web's VIP")?
        .to_owned();
    let mut by_vip = BTreeSet::new();
    for _ in 0..30 {
        let host = request(&cluster, &client, &vip)
            .await?
            .context("a request to the VIP failed")?;
        by_vip.insert(host);
    }
    assert_eq!(by_vip, hostnames, "the VIP reaches every task");

    // Scaled down: after a second, the task being stopped (still in its grace period) gets no
    // new connection, and no request fails.
    manager
        .meshctl_ok(&["service", "scale", "-d", "web=2"])
        .await?;
    tokio::time::sleep(DRAIN).await;
    let mut answered = BTreeSet::new();
    for _ in 0..20 {
        let host = request(&cluster, &client, "web")
            .await?
            .context("a request failed while a task was stopping")?;
        answered.insert(host);
    }
    let left = wait_for(CONVERGE, "web at 2 tasks", async || {
        let found = sandboxes(&cluster, "web").await?;
        Ok((found.len() == 2).then_some(found))
    })
    .await?;
    let gone: BTreeSet<String> = hostnames
        .difference(&left.iter().map(|t| t.hostname.clone()).collect())
        .cloned()
        .collect();
    ensure!(gone.len() == 1, "one task should have gone: {gone:?}");
    ensure!(
        answered.is_disjoint(&gone),
        "the stopping task {gone:?} still got connections after {DRAIN:?}: {answered:?}"
    );

    // Scaled to 0: a connection to the VIP fails at once instead of hanging.
    manager
        .meshctl_ok(&["service", "scale", "-d", "web=0"])
        .await?;
    wait_until(CONVERGE, "web without tasks", async || {
        Ok(sandboxes(&cluster, "web").await?.is_empty())
    })
    .await?;
    let started = Instant::now();
    let answer = request(&cluster, &client, &vip).await?;
    let took = started.elapsed();
    ensure!(
        answer.is_none(),
        "a service without tasks answered: {answer:?}"
    );
    ensure!(
        took < REFUSE,
        "the connection hung for {took:?} instead of failing at once"
    );

    // Removed: no load balancer entry is left on any node.
    manager
        .meshctl_ok(&["service", "rm", "web", "client"])
        .await?;
    wait_until(
        CONVERGE,
        "no load balancer entries on any node",
        async || {
            for index in 0..3 {
                let info = info(&cluster, index).await?;
                if info["LoadBalancer"]["Backend"] != "ebpf" {
                    anyhow::bail!("node {index} runs no eBPF load balancer: {info}");
                }
                if info["LoadBalancer"]["Entries"] != 0 {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    cluster.close()
}

#[tokio::test]
async fn the_routing_mesh_answers_on_every_node_including_those_without_a_task()
-> anyhow::Result<()> {
    require_privileged!();
    let cluster = OverlayCluster::new(Cluster::builder().managers(1).workers(2).start().await?);
    let manager = cluster.manager();
    manager
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--stop-grace-period",
            "1s",
            "-p",
            "8080:80",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            WEB,
        ])
        .await?;
    let task = wait_for(CONVERGE, "the web task", async || {
        Ok(sandboxes(&cluster, "web").await?.pop())
    })
    .await?;
    // Every node's address answers, with the one task wherever it runs.
    for node in cluster.nodes() {
        let addr = std::net::SocketAddr::from((node.addr(), 8080));
        let what = format!("{}:8080 to answer", node.hostname());
        let answer = wait_for(CONVERGE, &what, async || {
            Ok(tokio::task::spawn_blocking(move || mesh_tests::observe::http_get(addr)).await?)
        })
        .await;
        if answer.is_err() {
            eprintln!("{}", mesh_tests::overlay::diagnostics(&cluster).await);
        }
        ensure!(
            answer? == task.hostname,
            "{} answered for another task",
            node.hostname()
        );
    }
    // And on each node's own loopback, as `curl localhost:8080` on a Swarm node: the node with the
    // task sends it there over its gateway bridge, the others to that node.
    for node in cluster.nodes() {
        let what = format!("127.0.0.1:8080 on {} to answer", node.hostname());
        let answer = wait_for(CONVERGE, &what, async || localhost_get(node, 8080).await).await?;
        ensure!(
            answer == task.hostname,
            "127.0.0.1:8080 on {} answered for another task",
            node.hostname()
        );
    }
    // Three tasks: every node's address spreads connections over all of them, its own task
    // or not (a node with a task of its own does not keep them all).
    manager
        .meshctl_ok(&["service", "scale", "-d", "web=3"])
        .await?;
    let tasks = wait_for(CONVERGE, "3 web tasks", async || {
        let found = sandboxes(&cluster, "web").await?;
        Ok((found.len() == 3).then_some(found))
    })
    .await?;
    let mut all: Vec<String> = tasks.iter().map(|t| t.hostname.clone()).collect();
    all.sort();
    for node in cluster.nodes() {
        let addr = std::net::SocketAddr::from((node.addr(), 8080));
        let what = format!("{}:8080 to reach all 3 tasks", node.hostname());
        let seen = wait_for(CONVERGE, &what, async || {
            let mut seen = BTreeSet::new();
            for _ in 0..60 {
                let answer =
                    tokio::task::spawn_blocking(move || mesh_tests::observe::http_get(addr))
                        .await?;
                seen.extend(answer);
            }
            Ok((seen.len() == 3).then_some(seen))
        })
        .await;
        if seen.is_err() {
            eprintln!("{}", mesh_tests::overlay::diagnostics(&cluster).await);
        }
        ensure!(
            seen?.into_iter().collect::<Vec<_>>() == all,
            "{} answered for tasks other than the service's",
            node.hostname()
        );
    }
    // Removed: the port answers nowhere.
    manager.meshctl_ok(&["service", "rm", "web"]).await?;
    for node in cluster.nodes() {
        let addr = std::net::SocketAddr::from((node.addr(), 8080));
        wait_until(CONVERGE, "the port to close", async || {
            Ok(
                tokio::task::spawn_blocking(move || mesh_tests::observe::http_get(addr))
                    .await?
                    .is_none(),
            )
        })
        .await?;
    }
    cluster.close()
}

/// `GET /` of `127.0.0.1:PORT` from inside `node`'s network namespace: the body's last line, or
/// `None` when nothing answered.
async fn localhost_get(node: &mesh_tests::node::Node, port: u16) -> anyhow::Result<Option<String>> {
    let busybox = mesh_tests::image::busybox_binary()
        .context("busybox-static is needed")?
        .display()
        .to_string();
    let net = format!("--net={}", node.netns().path());
    let url = format!("http://127.0.0.1:{port}/");
    // No `-T`: Debian 12's busybox-static wget crashes on it; the run's timeout bounds it.
    let Ok(out) = mesh_tests::process::run(
        "nsenter",
        &[&net, "--", &busybox, "wget", "-q", "-O", "-", &url],
        Duration::from_secs(5),
    )
    .await
    else {
        return Ok(None);
    };
    Ok(out.success().then(|| {
        out.stdout
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }))
}
