//! Service discovery across three nodes: the embedded DNS in every task's sandbox answers a
//! service's name with its VIP, `tasks.NAME` and dnsrr names with the running tasks' addresses,
//! only on networks the asker shares, and follows the tasks as they come and go.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use mesh_tests::overlay::{OverlayCluster, Sandbox};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, require_privileged, wait_for, wait_until};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);
/// How soon the DNS must follow a task that went: a behaviour bound, not a benchmark.
const FOLLOW: Duration = Duration::from_secs(10);

async fn create(cluster: &Cluster, name: &str, flags: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["service", "create", "-d", "--name", name];
    args.extend_from_slice(flags);
    args.extend([BUSYBOX_IMAGE, "sleep", "1000000"]);
    cluster.manager().meshctl_ok(&args).await.map(drop)
}

/// The running sandboxes of `service` on every node.
async fn sandboxes(cluster: &Cluster, service: &str) -> anyhow::Result<Vec<Sandbox>> {
    let mut all = Vec::new();
    for node in cluster.nodes() {
        all.extend(node.sandboxes(service).await?);
    }
    Ok(all)
}

/// The IPv4 address of `ifname` in a sandbox.
async fn address(sandbox: &Sandbox, ifname: &str) -> anyhow::Result<String> {
    let interface = sandbox.interface(ifname).await?;
    interface
        .ipv4
        .first()
        .map(ToString::to_string)
        .with_context(|| format!("{ifname} has no address"))
}

/// The addresses busybox `nslookup NAME 127.0.0.11` prints from inside `client`'s container, or
/// `None` when the lookup fails.
async fn lookup(
    cluster: &Cluster,
    client: &Sandbox,
    name: &str,
) -> anyhow::Result<Option<BTreeSet<String>>> {
    let node = cluster
        .nodes()
        .iter()
        .find(|n| n.hostname() == client.node)
        .context("the client's node")?;
    let out = node
        .docker(&[
            "exec",
            &client.container,
            "nslookup",
            "-type=a",
            name,
            "127.0.0.11",
        ])
        .await?;
    if out.code != 0 {
        return Ok(None);
    }
    // The server's own address comes first ("Address: 127.0.0.11:53"), answers after "Name:".
    let answers = out
        .stdout
        .split_once("Name:")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let found: BTreeSet<String> = answers
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .map(|a| a.trim().to_owned())
        .collect();
    Ok((!found.is_empty()).then_some(found))
}

async fn vip(cluster: &Cluster, service: &str) -> anyhow::Result<String> {
    let out = cluster
        .manager()
        .meshctl_ok(&["service", "inspect", service])
        .await?;
    let parsed: Value = serde_json::from_str(&out)?;
    let first = parsed.as_array().and_then(|a| a.first()).unwrap_or(&parsed);
    first["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .map(str::to_owned)
        .with_context(|| format!("{service} has no virtual IP: {first}"))
}

#[tokio::test]
async fn names_resolve_to_vips_and_tasks_on_shared_networks_only() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = OverlayCluster::new(Cluster::builder().managers(1).workers(2).start().await?);
    let manager = cluster.manager();
    for net in ["front", "back"] {
        manager
            .meshctl_ok(&["network", "create", "-d", "overlay", net])
            .await?;
    }
    let spread = ["--replicas-max-per-node", "1", "--network", "front"];
    create(
        &cluster,
        "web",
        &[&["--replicas", "3"][..], &spread].concat(),
    )
    .await?;
    create(
        &cluster,
        "rr",
        &[
            &["--replicas", "2", "--endpoint-mode", "dnsrr"][..],
            &spread,
        ]
        .concat(),
    )
    .await?;
    create(&cluster, "hidden", &["--network", "back"]).await?;
    create(&cluster, "client", &["--network", "front"]).await?;

    let web = wait_for(CONVERGE, "3 web tasks", async || {
        let found = sandboxes(&cluster, "web").await?;
        Ok((found.len() == 3).then_some(found))
    })
    .await?;
    let rr = wait_for(CONVERGE, "2 rr tasks", async || {
        let found = sandboxes(&cluster, "rr").await?;
        Ok((found.len() == 2).then_some(found))
    })
    .await?;
    wait_for(CONVERGE, "the hidden task", async || {
        Ok(sandboxes(&cluster, "hidden").await?.pop())
    })
    .await?;
    let client = wait_for(CONVERGE, "the client task", async || {
        Ok(sandboxes(&cluster, "client").await?.pop())
    })
    .await?;
    let mut web_addrs = BTreeSet::new();
    for sandbox in &web {
        web_addrs.insert(address(sandbox, "eth0").await?);
    }
    let mut rr_addrs = BTreeSet::new();
    for sandbox in &rr {
        rr_addrs.insert(address(sandbox, "eth0").await?);
    }
    let web_vip = vip(&cluster, "web").await?;

    // The VIP, and every task on every node, once gossip has spread the endpoints of both
    // services (each task's record is published when its sandbox is plugged, so the last of
    // them may still be on its way when the first service is complete).
    let resolved = wait_for(
        CONVERGE,
        "tasks.web to list all 3 tasks and tasks.rr both",
        async || {
            let web = lookup(&cluster, &client, "tasks.web").await?;
            let rr = lookup(&cluster, &client, "tasks.rr").await?;
            Ok((web.as_ref() == Some(&web_addrs) && rr.as_ref() == Some(&rr_addrs)).then_some(()))
        },
    )
    .await;
    if resolved.is_err() {
        eprintln!("{}", mesh_tests::overlay::diagnostics(&cluster).await);
    }
    resolved?;
    assert_eq!(
        lookup(&cluster, &client, "web").await?,
        Some(BTreeSet::from([web_vip.clone()])),
        "web resolves to its VIP"
    );
    assert_eq!(
        lookup(&cluster, &client, "WEB.").await?,
        Some(BTreeSet::from([web_vip])),
        "names are case-insensitive"
    );
    assert_eq!(
        lookup(&cluster, &client, "rr").await?,
        Some(rr_addrs.clone())
    );
    assert_eq!(lookup(&cluster, &client, "tasks.rr").await?, Some(rr_addrs));

    // A service on a network the client does not share has no name here.
    let hidden = lookup(&cluster, &client, "hidden").await?;
    assert_eq!(hidden, None, "hidden must not resolve from front");

    // Scaled down, the tasks that went leave the answers.
    manager
        .meshctl_ok(&["service", "scale", "-d", "web=1"])
        .await?;
    wait_until(CONVERGE, "web at one container", async || {
        Ok(sandboxes(&cluster, "web").await?.len() == 1)
    })
    .await?;
    let left = sandboxes(&cluster, "web").await?;
    let left_addr = address(&left[0], "eth0").await?;
    wait_until(FOLLOW, "tasks.web to follow the scale-down", async || {
        Ok(lookup(&cluster, &client, "tasks.web").await?
            == Some(BTreeSet::from([left_addr.clone()])))
    })
    .await?;
    cluster.close()
}
