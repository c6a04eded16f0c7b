//! meshd can crash without the data plane noticing: on a three-node cluster with an overlay, the
//! meshd of a worker running a client task is SIGKILLed and started again a second later. Through
//! it all, a loop of new TCP connections from that task through a service VIP, and one through
//! the routing mesh on that node's address, see no failure, during the restart and for the
//! settling that follows; the task's DNS answers again at once after the restart (its failures
//! while meshd is down are counted: nothing can answer then); no container is replaced and no task
//! changes. The same again with every start of meshd in a fresh mount namespace of its own, which
//! dies with it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mesh_tests::overlay::{OverlayCluster, Sandbox, diagnostics};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, require_privileged, wait_for, wait_until};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);
/// How long meshd stays down: about what a systemd restart takes.
const DOWN: Duration = Duration::from_secs(1);
/// How long the loops go on after the restart: past the data plane's 20 s settling, when what
/// gossip never confirmed is withdrawn.
const AFTER: Duration = Duration::from_secs(28);
/// Lookups that overlap the moment meshd answered again count as "during".
const OVERLAP: usize = 2;

/// Every web task serves its container's hostname over HTTP on port 80.
const WEB: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

#[tokio::test]
async fn a_sigkilled_meshd_restarting_loses_no_vip_mesh_or_task() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = Cluster::builder().managers(1).workers(2).start().await?;
    crash_and_restart(OverlayCluster::new(cluster), "crash").await
}

#[tokio::test]
async fn a_meshd_in_a_fresh_mount_namespace_each_start_finds_its_data_plane_again()
-> anyhow::Result<()> {
    require_privileged!();
    let cluster = Cluster::builder()
        .managers(1)
        .workers(2)
        .private_mounts()
        .start()
        .await?;
    crash_and_restart(OverlayCluster::new(cluster), "mounts").await
}

async fn crash_and_restart(mut cluster: OverlayCluster, tag: &str) -> anyhow::Result<()> {
    let result = scenario(&mut cluster, tag).await;
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

async fn vip_of(node: &Node, service: &str) -> anyhow::Result<String> {
    let out = node.meshctl_ok(&["service", "inspect", service]).await?;
    let parsed: Value = serde_json::from_str(&out)?;
    let first = parsed.as_array().and_then(|a| a.first()).unwrap_or(&parsed);
    first["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .map(str::to_owned)
        .with_context(|| format!("{service} has no virtual IP: {first}"))
}

/// A loop run inside the client's container, one attempt every `pause`, each appending `ok` or
/// `fail` to `log` in the container.
fn probe_loop(attempt: &str, log: &str, pause: &str) -> String {
    format!(
        "while true; do if {attempt}; then echo ok >> {log}; else echo fail >> {log}; fi; sleep {pause}; done"
    )
}

/// The outcomes a loop logged so far, in order (`true`: it worked).
async fn outcomes(node: &Node, client: &Sandbox, log: &str) -> anyhow::Result<Vec<bool>> {
    let out = node
        .docker(&["exec", &client.container, "cat", log])
        .await?
        .ok(&format!("reading {log}"))?;
    Ok(out.stdout.lines().map(|l| l.trim() == "ok").collect())
}

fn failures(outcomes: &[bool]) -> usize {
    outcomes.iter().filter(|ok| !**ok).count()
}

/// Connections from the host to `addr` (the routing mesh on a node), one every 100 ms, until
/// `stop`; counts attempts and failures.
fn mesh_loop(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        while !stop.load(Ordering::Relaxed) {
            attempts.fetch_add(1, Ordering::Relaxed);
            if mesh_tests::observe::http_get(addr).is_none() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

async fn scenario(cluster: &mut Cluster, tag: &str) -> anyhow::Result<()> {
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
    let vip = vip_of(manager, "web").await?;
    let node = cluster.node(&crashed)?;

    // Ready: every web task answers through the VIP, the name gives the VIP, the routing mesh
    // answers on the crashing node's address.
    let request = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {vip} 80");
    wait_until(CONVERGE, "the VIP to reach all 3 web tasks", async || {
        let mut seen = BTreeSet::new();
        for _ in 0..30 {
            let out = node
                .docker(&["exec", &client.container, "sh", "-c", &request])
                .await?;
            if let Some(last) = out.stdout.lines().last().filter(|_| out.success()) {
                seen.insert(last.trim().to_owned());
            }
        }
        Ok(seen == hostnames)
    })
    .await?;
    wait_until(CONVERGE, "web to resolve to its VIP", async || {
        let out = node
            .docker(&[
                "exec",
                &client.container,
                "nslookup",
                "-type=a",
                "web",
                "127.0.0.11",
            ])
            .await?;
        Ok(out.success() && out.stdout.contains(&vip))
    })
    .await?;
    let published = SocketAddr::from((node.addr(), 8080));
    wait_until(CONVERGE, "the routing mesh to answer", async || {
        Ok(
            tokio::task::spawn_blocking(move || mesh_tests::observe::http_get(published))
                .await?
                .is_some(),
        )
    })
    .await?;
    let before = running(cluster, &["web", "client"]).await?;

    // The loops: new connections through the VIP every 100 ms and lookups every 200 ms from the
    // client's container, connections through the routing mesh from the host.
    let vip_attempt = format!("{request} | grep -q '^HTTP/1'");
    let dns_attempt = format!("nslookup -type=a web 127.0.0.11 | grep -qwF {vip}");
    for (attempt, log, pause) in [
        (vip_attempt.as_str(), "/tmp/vip.log", "0.1"),
        (dns_attempt.as_str(), "/tmp/dns.log", "0.2"),
    ] {
        node.docker(&[
            "exec",
            "-d",
            &client.container,
            "sh",
            "-c",
            &probe_loop(attempt, log, pause),
        ])
        .await?
        .ok("starting a probe loop")?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (mesh_attempts, mesh_failed) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mesh = mesh_loop(
        published,
        stop.clone(),
        mesh_attempts.clone(),
        mesh_failed.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let index = cluster.position(&crashed)?;
    let vip_before = outcomes(cluster.node(&crashed)?, &client, "/tmp/vip.log")
        .await?
        .len();
    let dns_before = outcomes(cluster.node(&crashed)?, &client, "/tmp/dns.log")
        .await?
        .len();
    let mesh_before = mesh_failed.load(Ordering::Relaxed);
    cluster.nodes_mut()[index].kill_meshd();
    let killed = Instant::now();
    tokio::time::sleep(DOWN).await;
    cluster.nodes_mut()[index].restart_meshd().await?;
    let back = killed.elapsed();
    let node = cluster.node(&crashed)?;
    let dns_back = outcomes(node, &client, "/tmp/dns.log").await?.len();
    let vip_back = outcomes(node, &client, "/tmp/vip.log").await?.len();
    eprintln!(
        "{crashed}'s meshd: SIGKILLed, started again after {DOWN:?}, answered {back:?} after the kill"
    );
    tokio::time::sleep(AFTER).await;

    stop.store(true, Ordering::Relaxed);
    mesh.await?;
    let node = cluster.node(&crashed)?;
    let vip_log = outcomes(node, &client, "/tmp/vip.log").await?;
    let dns_log = outcomes(node, &client, "/tmp/dns.log").await?;
    let after = running(cluster, &["web", "client"]).await?;
    cluster
        .wait_node_status(&crashed, "Ready", CONVERGE)
        .await?;

    let vip_during = failures(&vip_log[vip_before..vip_back.min(vip_log.len())]);
    let vip_after = failures(&vip_log[vip_back.min(vip_log.len())..]);
    let settled_from = (dns_back + OVERLAP).min(dns_log.len());
    let dns_during = failures(&dns_log[dns_before..settled_from]);
    let dns_after = failures(&dns_log[settled_from..]);
    let mesh_total = mesh_attempts.load(Ordering::Relaxed);
    let mesh_fails = mesh_failed.load(Ordering::Relaxed) - mesh_before;
    eprintln!(
        "VIP: {} connections during the restart, {vip_during} failed; {} after, {vip_after} failed",
        vip_back - vip_before,
        vip_log.len() - vip_back
    );
    eprintln!(
        "DNS: {} lookups during the restart, {dns_during} failed; {} after, {dns_after} failed",
        settled_from - dns_before,
        dns_log.len() - settled_from
    );
    eprintln!("routing mesh: {mesh_total} connections, {mesh_fails} failed across the restart");
    ensure!(
        vip_during == 0 && vip_after == 0,
        "connections through the VIP failed: {vip_during} during the restart, {vip_after} after"
    );
    ensure!(
        dns_after == 0,
        "{dns_after} lookups failed after the restart"
    );
    ensure!(
        mesh_fails == 0,
        "{mesh_fails} connections through the routing mesh failed"
    );
    ensure!(
        vip_log.len() - vip_back >= 50,
        "only {} connections after the restart",
        vip_log.len() - vip_back
    );
    ensure!(
        before == after,
        "tasks or containers changed across the restart: {before:?} -> {after:?}"
    );
    Ok(())
}
