//! meshd can crash without the data plane noticing: on a three-node cluster with an overlay, the
//! meshd of a worker running a client task is SIGKILLed and started again a second later. Through
//! it all, a loop of new TCP connections from that task through a service VIP, and one through
//! the routing mesh on that node's address, see no failure, during the outage and for the 28 s
//! that follow (past the data plane's settling); the task's DNS answers after the restart (while
//! meshd is down nothing can: those lookups are counted and timed); the manager never marks the
//! node down; no container is replaced and no task changes. The same again with every start of
//! meshd in a fresh mount namespace of its own, which dies with it.
//!
//! And when the host loses the mounts of the overlay namespaces while meshd is down (the
//! namespaces and their devices die with them), the restart rebuilds them in place: the tasks keep
//! running with the same containers and addresses, and once the VIP reaches every task again,
//! nothing fails any more.

// A test target's root resolves modules beside itself, as a `mod.rs` does.
#[path = "crash/probe.rs"]
mod probe;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use mesh_tests::overlay::{OverlayCluster, Sandbox, diagnostics, overlay_namespaces, vip_on};
use mesh_tests::process::run_sync_ok;
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, require_privileged, wait_for, wait_until};
use probe::{Outcome, Stop, Window, mesh_loop, outcomes, probe_loop, uptime};

const CONVERGE: Duration = Duration::from_secs(60);
/// A short heartbeat period, so that a restart must fit in the dispatcher's grace.
const HEARTBEAT: &str = "1s";
/// How long meshd stays down: about what a systemd restart takes.
const DOWN: Duration = Duration::from_secs(1);
/// How long the loops go on after the restart: past the data plane's 20 s settling, when what
/// gossip never confirmed is withdrawn.
const AFTER: Duration = Duration::from_secs(28);

/// Where the client's probe loops log, one line per attempt. The test image has nothing but
/// `/bin`: no `/tmp`.
const VIP_LOG: &str = "/vip.log";
const DNS_LOG: &str = "/dns.log";

/// Every web task serves its container's hostname over HTTP on port 80.
const WEB: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

#[tokio::test]
async fn a_sigkilled_meshd_restarting_loses_no_vip_mesh_or_task() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = cluster(Mounts::Host).await?;
    crash_and_restart(cluster, "crash", Mounts::Host, Lost::Nothing).await
}

#[tokio::test]
async fn a_meshd_in_a_fresh_mount_namespace_each_start_finds_its_data_plane_again()
-> anyhow::Result<()> {
    require_privileged!();
    let cluster = cluster(Mounts::FreshEachStart).await?;
    crash_and_restart(cluster, "mounts", Mounts::FreshEachStart, Lost::Nothing).await
}

#[tokio::test]
async fn overlay_namespaces_lost_while_meshd_is_down_are_rebuilt_under_the_same_tasks()
-> anyhow::Result<()> {
    require_privileged!();
    let cluster = cluster(Mounts::Host).await?;
    crash_and_restart(cluster, "lost", Mounts::Host, Lost::OverlayMounts).await
}

/// Which mount namespace meshd runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mounts {
    /// The host's (the test's own).
    Host,
    /// A new one at every start, which dies with it.
    FreshEachStart,
}

/// What the host loses while meshd is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lost {
    Nothing,
    /// The bind mounts of the node's overlay namespaces under `/run/netns` (as when the host's
    /// mounts were rebuilt): the namespaces die, and every device in them.
    OverlayMounts,
}

async fn cluster(mounts: Mounts) -> anyhow::Result<OverlayCluster> {
    let mut builder = Cluster::builder()
        .managers(1)
        .workers(2)
        .dispatcher_heartbeat(HEARTBEAT);
    if mounts == Mounts::FreshEachStart {
        builder = builder.private_mounts();
    }
    Ok(OverlayCluster::new(builder.start().await?))
}

async fn crash_and_restart(
    mut cluster: OverlayCluster,
    tag: &str,
    mounts: Mounts,
    lost: Lost,
) -> anyhow::Result<()> {
    let result = scenario(&mut cluster, tag, mounts, lost).await;
    if let Err(err) = &result {
        eprintln!("FAILED: {err:#}\n{}", diagnostics(&cluster).await);
        return result;
    }
    cluster.close()
}

/// The running containers of `service` on every node.
async fn sandboxes(cluster: &Cluster, service: &str) -> anyhow::Result<Vec<Sandbox>> {
    let mut all = Vec::new();
    for node in cluster.nodes() {
        all.extend(node.sandboxes(service).await?);
    }
    Ok(all)
}

/// Task id and container id of every running task of the services, on every node.
async fn running(
    cluster: &Cluster,
    services: &[&str],
) -> anyhow::Result<BTreeSet<(String, String)>> {
    let mut all = BTreeSet::new();
    for service in services {
        for sandbox in sandboxes(cluster, service).await? {
            all.insert((sandbox.task_id, sandbox.container));
        }
    }
    Ok(all)
}

/// How many times the manager's log says it marked a node down (heartbeats missed).
fn marked_down(manager: &Node) -> usize {
    manager
        .meshd_log_tail(usize::MAX)
        .matches("node marked down")
        .count()
}

/// How many times meshd's log says it re-adopted its containers.
fn readoptions(node: &Node) -> usize {
    node.meshd_log_tail(usize::MAX)
        .matches("containers re-adopted")
        .count()
}

/// What the probes need: the client task, its node, the web service's VIP on the client's
/// network and the hostnames of the web tasks.
struct Services {
    crashed: String,
    client: Sandbox,
    vip: String,
    request: String,
    hostnames: BTreeSet<String>,
    published: SocketAddr,
}

/// A network, a web service (one task per node, published on 8080) and a client task on the
/// last worker, until the VIP reaches every web task, the name resolves and the routing mesh
/// answers.
async fn services(cluster: &Cluster, tag: &str) -> anyhow::Result<Services> {
    let manager = cluster.manager();
    let network = format!("net-{tag}");
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", &network])
        .await?;
    // The crashing node: a worker, so that the managers keep running meanwhile.
    let crashed = cluster.nodes()[2].hostname().to_owned();
    let constraint = format!("node.hostname=={crashed}");
    manager
        .meshctl_ok(&[
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
            "1s",
            "--network",
            &network,
            "-p",
            "8080:80",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            WEB,
        ])
        .await?;
    manager
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "client",
            "--constraint",
            &constraint,
            "--network",
            &network,
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ])
        .await?;
    let web = wait_for(CONVERGE, "3 web tasks", async || {
        let found = sandboxes(cluster, "web").await?;
        Ok((found.len() == 3).then_some(found))
    })
    .await?;
    let hostnames: BTreeSet<String> = web.iter().map(|s| s.hostname.clone()).collect();
    let client = wait_for(CONVERGE, "the client task", async || {
        Ok(sandboxes(cluster, "client").await?.pop())
    })
    .await?;
    ensure!(client.node == crashed, "the client runs on {}", client.node);
    let vip = vip_on(manager, "web", &network).await?;
    let node = cluster.node(&crashed)?;

    let request = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {vip} 80");
    let found = Services {
        crashed,
        client,
        vip,
        request,
        hostnames,
        published: SocketAddr::from((node.addr(), 8080)),
    };
    wait_until(CONVERGE, "the VIP to reach all 3 web tasks", async || {
        reaches_every_task(node, &found, 30).await
    })
    .await?;
    wait_until(CONVERGE, "web to resolve to its VIP", async || {
        let out = node
            .docker(&[
                "exec",
                &found.client.container,
                "nslookup",
                "-type=a",
                "web",
                "127.0.0.11",
            ])
            .await?;
        Ok(out.success() && out.stdout.contains(&found.vip))
    })
    .await?;
    let published = found.published;
    wait_until(CONVERGE, "the routing mesh to answer", async || {
        Ok(
            tokio::task::spawn_blocking(move || mesh_tests::observe::http_get(published))
                .await?
                .is_some(),
        )
    })
    .await?;
    Ok(found)
}

/// Whether `count` requests through the VIP from the client reached every web task.
async fn reaches_every_task(node: &Node, s: &Services, count: usize) -> anyhow::Result<bool> {
    let mut seen = BTreeSet::new();
    for _ in 0..count {
        let out = node
            .docker(&["exec", &s.client.container, "sh", "-c", &s.request])
            .await?;
        if let Some(last) = out.stdout.lines().last().filter(|_| out.success()) {
            seen.insert(last.trim().to_owned());
        }
    }
    Ok(seen == s.hostnames)
}

async fn scenario(
    cluster: &mut Cluster,
    tag: &str,
    expected: Mounts,
    lost: Lost,
) -> anyhow::Result<()> {
    let s = services(cluster, tag).await?;
    let crashed = s.crashed.clone();
    let node = cluster.node(&crashed)?;
    let before = running(cluster, &["web", "client"]).await?;

    // The loops: new connections through the VIP every 100 ms and lookups every 200 ms from the
    // client's container, connections through the routing mesh from the host.
    let vip_attempt = format!("{} | grep -q '^HTTP/1'", s.request);
    let dns_attempt = format!("nslookup -type=a web 127.0.0.11 | grep -qwF {}", s.vip);
    for (attempt, log, pause) in [
        (vip_attempt.as_str(), VIP_LOG, "0.1"),
        (dns_attempt.as_str(), DNS_LOG, "0.2"),
    ] {
        node.docker(&[
            "exec",
            "-d",
            &s.client.container,
            "sh",
            "-c",
            &probe_loop(attempt, log, pause),
        ])
        .await?
        .ok("starting a probe loop")?;
    }
    let stop = Stop(Arc::new(AtomicBool::new(false)));
    let mesh_log = Arc::new(Mutex::new(Vec::new()));
    let mesh = mesh_loop(s.published, stop.0.clone(), mesh_log.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The crash, what the host loses meanwhile, and the restart a second later.
    let index = cluster.position(&crashed)?;
    let adoptions = readoptions(&cluster.nodes()[index]);
    let downs = marked_down(cluster.manager());
    let first_mounts = cluster.nodes()[index].meshd_mount_namespace()?;
    let killed = uptime()?;
    cluster.nodes_mut()[index].kill_meshd();
    if lost == Lost::OverlayMounts {
        for name in overlay_namespaces(&cluster.nodes()[index])? {
            run_sync_ok("umount", &[&format!("/run/netns/{name}")])?;
        }
    }
    tokio::time::sleep(DOWN).await;
    cluster.nodes_mut()[index].restart_meshd().await?;
    let back = uptime()?;
    let node = cluster.node(&crashed)?;
    check_mounts(first_mounts, node.meshd_mount_namespace()?, expected)?;
    wait_until(AFTER, "meshd to re-adopt its containers", async || {
        Ok(readoptions(node) > adoptions)
    })
    .await?;
    let readopted = uptime()?;
    // With its overlay lost, the client is cut off until meshd has rebuilt it and attached the
    // tasks again: from when the VIP reaches every task again, nothing may fail.
    let recovered = match lost {
        Lost::Nothing => back,
        Lost::OverlayMounts => {
            wait_until(AFTER, "the VIP to reach every task again", async || {
                reaches_every_task(node, &s, 15).await
            })
            .await?;
            uptime()?
        }
    };
    let rest = AFTER.saturating_sub(Duration::from_secs_f64(uptime()? - back));
    tokio::time::sleep(rest).await;

    drop(stop);
    mesh.await??;
    let end = uptime()?;
    let vip_log = outcomes(node, &s.client, VIP_LOG).await?;
    let dns_log = outcomes(node, &s.client, DNS_LOG).await?;
    let mesh_log = mesh_log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let after = running(cluster, &["web", "client"]).await?;
    cluster
        .wait_node_status(&crashed, "Ready", CONVERGE)
        .await?;

    let window = |log: &[Outcome], from: f64, to: f64| Window::of(log, from, to, killed);
    let vip_before = window(&vip_log, 0.0, killed);
    let (vip_down, vip_after) = (
        window(&vip_log, killed, recovered),
        window(&vip_log, recovered, end),
    );
    let (dns_down, dns_after) = (window(&dns_log, killed, back), window(&dns_log, back, end));
    let (mesh_down, mesh_after) = (
        window(&mesh_log, killed, recovered),
        window(&mesh_log, recovered, end),
    );
    eprintln!(
        "{crashed}'s meshd ({expected:?} mounts, lost {lost:?}): SIGKILLed, started again after \
         {DOWN:?}; answering {:.2}s, containers re-adopted {:.2}s, VIP whole again {:.2}s after \
         the kill",
        back - killed,
        readopted - killed,
        recovered - killed,
    );
    eprintln!("VIP: before {vip_before}; down {vip_down}; after {vip_after}");
    eprintln!("DNS: down {dns_down}; after {dns_after}");
    eprintln!("routing mesh: down {mesh_down}; after {mesh_after}");

    ensure!(
        vip_before.failed.is_empty() && vip_after.failed.is_empty() && vip_after.attempts >= 50,
        "connections through the VIP: before {vip_before}; after {vip_after}"
    );
    ensure!(
        dns_after.failed.is_empty() && dns_after.attempts >= 20,
        "lookups after the restart: {dns_after}"
    );
    ensure!(
        mesh_after.failed.is_empty() && mesh_after.attempts >= 50,
        "connections through the routing mesh after the restart: {mesh_after}"
    );
    if lost == Lost::Nothing {
        ensure!(
            vip_down.failed.is_empty() && vip_down.attempts >= 5,
            "connections through the VIP while meshd was down: {vip_down}"
        );
        ensure!(
            mesh_down.failed.is_empty() && mesh_down.attempts >= 5,
            "connections through the routing mesh while meshd was down: {mesh_down}"
        );
    }
    ensure!(
        marked_down(cluster.manager()) == downs,
        "the manager marked a node down across the restart"
    );
    ensure!(
        before == after,
        "tasks or containers changed across the restart: {before:?} -> {after:?}"
    );
    Ok(())
}

/// Checks that meshd ran in the mount namespaces `expected` says, before and after the restart.
fn check_mounts(
    first: std::path::PathBuf,
    then: std::path::PathBuf,
    expected: Mounts,
) -> anyhow::Result<()> {
    // Each start with private mounts unshares a new namespace; the old one died with the killed
    // meshd, so the kernel may hand its inode number to the new one: only "not the host's" can
    // be told apart.
    let host = std::fs::read_link("/proc/self/ns/mnt")?;
    let seen = match (first == host, then == host) {
        (true, true) => Mounts::Host,
        (false, false) => Mounts::FreshEachStart,
        _ => anyhow::bail!("meshd ran in {first:?}, then in {then:?}; the host's is {host:?}"),
    };
    ensure!(
        seen == expected,
        "meshd's mount namespaces: {seen:?}, not {expected:?}"
    );
    Ok(())
}
