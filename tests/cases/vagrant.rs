//! The Vagrant lab's provisioning (`vagrant/provision.sh`) run for real in the nodes of a netns
//! lab: its swarm and demo steps, as each VM runs them, form the cluster from nodes whose meshd
//! runs but belongs to no swarm yet, and publish the demo service on every node. (Its docker,
//! package and config steps need a VM of their own: systemd, apt, `/etc/mesh`.) A second run
//! changes nothing.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use mesh_tests::meshctl::binary;
use mesh_tests::node::Node;
use mesh_tests::{Cluster, process, require_privileged, wait_for};

/// What the script publishes the demo service on.
const PUBLISHED: u16 = 8080;
/// Bounds each wait of the test, not a speed assertion.
const CONVERGE: Duration = Duration::from_secs(90);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vagrant/provision.sh")
}

/// Runs the script in `node`'s network namespace as the VM would run it, with `meshctl` (this
/// build's) on the PATH pointed at the node, and tokens fetched from `first` directly instead of
/// over SSH.
async fn provision(node: &Node, role: &str, first: &Node) -> anyhow::Result<process::Output> {
    let meshctl = binary("meshctl")?;
    let bin_dir = meshctl.parent().context("meshctl has a directory")?;
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let token_cmd = format!(
        "meshctl -H unix://{} swarm join-token -q",
        first.socket().display()
    );
    let host = format!("unix://{}", node.socket().display());
    let netns = format!("--net={}", node.netns().path());
    let script = script().display().to_string();
    let addr = node.addr().to_string();
    let first_addr = first.addr().to_string();
    let env = [
        ("PATH", path.as_str()),
        ("MESH_HOST", host.as_str()),
        ("DOCKER_HOST", &node.docker_host()),
        ("MESH_STEPS", "swarm demo"),
        ("MESH_TOKEN_CMD", token_cmd.as_str()),
        ("MESH_JOIN_TIMEOUT", "60"),
        ("MESH_DEMO_REPLICAS", "3"),
    ];
    let args = [
        netns.as_str(),
        "--",
        "sh",
        script.as_str(),
        role,
        addr.as_str(),
        first_addr.as_str(),
    ];
    process::run_env("nsenter", &args, &env, Duration::from_secs(120)).await
}

fn roles(cluster: &Cluster) -> Vec<&'static str> {
    (0..cluster.nodes().len())
        .map(|k| match k {
            0 => "init",
            1 => "manager",
            _ => "worker",
        })
        .collect()
}

#[tokio::test]
async fn the_provisioning_forms_the_swarm_and_serves_the_demo_and_is_idempotent()
-> anyhow::Result<()> {
    require_privileged!();
    let cluster = Cluster::builder()
        .managers(2)
        .workers(1)
        .unformed()
        .start()
        .await?;
    let first = cluster.manager();
    for (node, role) in cluster.nodes().iter().zip(roles(&cluster)) {
        let out = provision(node, role, first).await?;
        assert!(
            out.success(),
            "provision.sh {role} on {}: {}{}",
            node.hostname(),
            out.stdout,
            out.stderr
        );
    }

    // node1 made the swarm; node2 joined as a manager, node3 as a worker.
    let nodes = first.meshctl_json(&["node", "ls"]).await?;
    let managers = nodes
        .iter()
        .filter(|n| !n["ManagerStatus"].as_str().unwrap_or("").is_empty())
        .count();
    assert_eq!(nodes.len(), 3, "node ls: {nodes:?}");
    assert_eq!(managers, 2, "node ls: {nodes:?}");

    // Three tasks run; the demo answers on every node's address (the routing mesh), each task
    // with its hostname.
    let before = wait_for(CONVERGE, "3 demo containers running", async || {
        let all = containers(&cluster).await?;
        Ok((all.len() == 3).then_some(all))
    })
    .await?;
    let mut hostnames = BTreeSet::new();
    for node in cluster.nodes() {
        for id in node.containers("demo", false).await? {
            let inspect = node.inspect_container(&id).await?;
            hostnames.extend(inspect["Config"]["Hostname"].as_str().map(str::to_owned));
        }
    }
    for node in cluster.nodes() {
        let addr = SocketAddr::from((node.addr(), PUBLISHED));
        let answer = wait_for(CONVERGE, &format!("{addr} to answer"), async || {
            Ok(tokio::task::spawn_blocking(move || mesh_tests::observe::http_get(addr)).await?)
        })
        .await?;
        assert!(
            hostnames.contains(&answer),
            "{addr} answered {answer:?}, not one of the demo's tasks {hostnames:?}"
        );
    }

    // Again: already in the swarm, the service exists: nothing is created, joined or restarted.
    for (node, role) in cluster.nodes().iter().zip(roles(&cluster)) {
        let out = provision(node, role, first).await?;
        assert!(
            out.success(),
            "second run on {}: {}",
            node.hostname(),
            out.stderr
        );
        assert!(
            out.stdout.contains("already in the swarm"),
            "second run on {}: {}",
            node.hostname(),
            out.stdout
        );
        assert!(
            !out.stdout.contains("creating") && !out.stdout.contains("importing"),
            "second run on {} made something again: {}",
            node.hostname(),
            out.stdout
        );
    }
    let services = first.meshctl_json(&["service", "ls"]).await?;
    assert_eq!(services.len(), 1, "service ls: {services:?}");
    assert_eq!(
        containers(&cluster).await?,
        before,
        "a second run restarted a task"
    );
    Ok(())
}

/// The demo's containers on every node.
async fn containers(cluster: &Cluster) -> anyhow::Result<BTreeSet<String>> {
    let mut all = BTreeSet::new();
    for node in cluster.nodes() {
        all.extend(node.containers("demo", false).await?);
    }
    Ok(all)
}

#[tokio::test]
async fn the_provisioning_refuses_a_bad_role_in_one_line() -> anyhow::Result<()> {
    let out = process::run_env(
        "sh",
        &[
            &script().display().to_string(),
            "leader",
            "10.0.0.1",
            "10.0.0.1",
        ],
        &[],
        Duration::from_secs(10),
    )
    .await?;
    assert!(!out.success());
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr.trim(),
        "usage: provision.sh init|manager|worker ADDR FIRST_ADDR"
    );
    Ok(())
}
