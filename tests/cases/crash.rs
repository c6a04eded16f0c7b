//! meshd can crash without the data plane noticing: on a three-node cluster with an overlay, the
//! meshd of a worker running a client task is SIGKILLed and started again a second later. Through
//! it all, a loop of new TCP connections from that task through a service VIP, and one through
//! the routing mesh on that node's address, see no failure, during the restart and for the
//! settling that follows; the task's DNS answers again at once after the restart (its failures
//! while meshd is down are counted: nothing can answer then); no container is replaced and no task
//! changes. The same again with every start of meshd in a fresh mount namespace of its own, which
//! dies with it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use mesh_tests::overlay::{OverlayCluster, Sandbox, diagnostics, vip_on};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, require_privileged, wait_for, wait_until};

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
    let cluster = Cluster::builder()
        .managers(1)
        .workers(2)
        .dispatcher_heartbeat(HEARTBEAT)
        .start()
        .await?;
    crash_and_restart(OverlayCluster::new(cluster), "crash", Mounts::Host).await
}

#[tokio::test]
async fn a_meshd_in_a_fresh_mount_namespace_each_start_finds_its_data_plane_again()
-> anyhow::Result<()> {
    require_privileged!();
    let cluster = Cluster::builder()
        .managers(1)
        .workers(2)
        .dispatcher_heartbeat(HEARTBEAT)
        .private_mounts()
        .start()
        .await?;
    crash_and_restart(
        OverlayCluster::new(cluster),
        "mounts",
        Mounts::FreshEachStart,
    )
    .await
}

/// Which mount namespace meshd runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mounts {
    /// The host's (the test's own).
    Host,
    /// A new one at every start, which dies with it.
    FreshEachStart,
}

async fn crash_and_restart(
    mut cluster: OverlayCluster,
    tag: &str,
    mounts: Mounts,
) -> anyhow::Result<()> {
    let result = scenario(&mut cluster, tag, mounts).await;
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

/// Seconds since boot, as `/proc/uptime` says: the one clock the host and the containers (no
/// time namespace) share.
fn uptime() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/uptime")?;
    let first = text.split_whitespace().next().unwrap_or_default();
    first
        .parse()
        .with_context(|| format!("/proc/uptime: {text:?}"))
}

/// A loop run inside the client's container, one attempt every `pause`, each appending when it
/// started and ended (uptime) and `ok` or `fail` to `log` in the container.
fn probe_loop(attempt: &str, log: &str, pause: &str) -> String {
    format!(
        "while true; do read t _ < /proc/uptime; \
         if {attempt}; then r=ok; else r=fail; fi; \
         read u _ < /proc/uptime; echo \"$t $u $r\" >> {log}; sleep {pause}; done"
    )
}

/// One attempt of a probe loop.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    /// When it started and ended (uptime).
    start: f64,
    end: f64,
    ok: bool,
}

/// The outcomes a loop logged so far, in order.
async fn outcomes(node: &Node, client: &Sandbox, log: &str) -> anyhow::Result<Vec<Outcome>> {
    let out = node
        .docker(&["exec", &client.container, "cat", log])
        .await?
        .ok(&format!("reading {log}"))?;
    out.stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [start, end, result] = fields[..] else {
                anyhow::bail!("{log}: {line:?}");
            };
            Ok(Outcome {
                start: start.parse()?,
                end: end.parse()?,
                ok: result == "ok",
            })
        })
        .collect()
}

/// Connections from the host to `addr` (the routing mesh on a node), one every 100 ms, until
/// `stop`; each outcome is pushed to `seen`.
fn mesh_loop(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Outcome>>>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::task::spawn_blocking(move || {
        while !stop.load(Ordering::Relaxed) {
            let start = uptime()?;
            let ok = mesh_tests::observe::http_get(addr).is_some();
            let end = uptime()?;
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Outcome { start, end, ok });
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
}

/// Stops the routing-mesh loop when dropped, also when the test fails half-way (the runtime
/// waits for blocking tasks at its end).
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The attempts of a log that started in `[from, to)`: how many, the slowest, and when the
/// failed ones started relative to `zero`.
struct Window {
    attempts: usize,
    slowest: f64,
    failed: Vec<f64>,
}

impl Window {
    fn of(log: &[Outcome], from: f64, to: f64, zero: f64) -> Self {
        let inside: Vec<&Outcome> = log
            .iter()
            .filter(|o| o.start >= from && o.start < to)
            .collect();
        Self {
            attempts: inside.len(),
            slowest: inside.iter().map(|o| o.end - o.start).fold(0.0, f64::max),
            failed: inside
                .iter()
                .filter(|o| !o.ok)
                .map(|o| o.start - zero)
                .collect(),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} attempts (slowest {:.2}s), {} failed",
            self.attempts,
            self.slowest,
            self.failed.len()
        )?;
        if !self.failed.is_empty() {
            let at: Vec<String> = self.failed.iter().map(|t| format!("{t:+.2}s")).collect();
            write!(f, " (at {} from the kill)", at.join(" "))?;
        }
        Ok(())
    }
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

async fn scenario(cluster: &mut Cluster, tag: &str, expected: Mounts) -> anyhow::Result<()> {
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
        (vip_attempt.as_str(), VIP_LOG, "0.1"),
        (dns_attempt.as_str(), DNS_LOG, "0.2"),
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
    let stop = Stop(Arc::new(AtomicBool::new(false)));
    let mesh_log = Arc::new(Mutex::new(Vec::new()));
    let mesh = mesh_loop(published, stop.0.clone(), mesh_log.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The crash, and the restart a second later.
    let index = cluster.position(&crashed)?;
    let adoptions = readoptions(&cluster.nodes()[index]);
    let downs = marked_down(cluster.manager());
    let first_mounts = cluster.nodes()[index].meshd_mount_namespace()?;
    let killed = uptime()?;
    cluster.nodes_mut()[index].kill_meshd();
    tokio::time::sleep(DOWN).await;
    cluster.nodes_mut()[index].restart_meshd().await?;
    let back = uptime()?;
    let node = cluster.node(&crashed)?;
    let mounts = node.meshd_mount_namespace()?;
    // Each start with private mounts unshares a new namespace; the old one died with the
    // killed meshd, so the kernel may hand its inode number to the new one: only "not the
    // host's" can be told apart.
    let host = std::fs::read_link("/proc/self/ns/mnt")?;
    let seen = match (first_mounts == host, mounts == host) {
        (true, true) => Mounts::Host,
        (false, false) => Mounts::FreshEachStart,
        _ => anyhow::bail!(
            "meshd ran in {first_mounts:?}, then in {mounts:?}; the host's is {host:?}"
        ),
    };
    ensure!(
        seen == expected,
        "meshd's mount namespaces: {seen:?}, not {expected:?}"
    );
    wait_until(AFTER, "meshd to re-adopt its containers", async || {
        Ok(readoptions(node) > adoptions)
    })
    .await?;
    let readopted = uptime()?;
    let rest = AFTER.saturating_sub(Duration::from_secs_f64(readopted - back));
    tokio::time::sleep(rest).await;

    drop(stop);
    mesh.await??;
    let end = uptime()?;
    let vip_log = outcomes(node, &client, VIP_LOG).await?;
    let dns_log = outcomes(node, &client, DNS_LOG).await?;
    let mesh_log = mesh_log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let after = running(cluster, &["web", "client"]).await?;
    cluster
        .wait_node_status(&crashed, "Ready", CONVERGE)
        .await?;

    let window = |log: &[Outcome], from: f64, to: f64| Window::of(log, from, to, killed);
    let (vip_down, vip_after) = (window(&vip_log, killed, back), window(&vip_log, back, end));
    let vip_before = window(&vip_log, 0.0, killed);
    let (dns_down, dns_after) = (window(&dns_log, killed, back), window(&dns_log, back, end));
    let (mesh_down, mesh_after) = (
        window(&mesh_log, killed, back),
        window(&mesh_log, back, end),
    );
    eprintln!(
        "{crashed}'s meshd ({expected:?} mounts): SIGKILLed, started again after {DOWN:?}; \
         answering {:.2}s and containers re-adopted {:.2}s after the kill",
        back - killed,
        readopted - killed,
    );
    eprintln!("VIP: before {vip_before}; down {vip_down}; after {vip_after}");
    eprintln!("DNS: down {dns_down}; after {dns_after}");
    eprintln!("routing mesh: down {mesh_down}; after {mesh_after}");

    ensure!(
        vip_before.failed.is_empty() && vip_down.failed.is_empty() && vip_after.failed.is_empty(),
        "connections through the VIP failed: before {vip_before}; down {vip_down}; after {vip_after}"
    );
    ensure!(
        vip_down.attempts >= 5 && vip_after.attempts >= 50,
        "too few connections to tell: down {vip_down}; after {vip_after}"
    );
    ensure!(
        dns_after.failed.is_empty() && dns_after.attempts >= 20,
        "lookups after the restart: {dns_after}"
    );
    ensure!(
        mesh_down.failed.is_empty() && mesh_after.failed.is_empty() && mesh_down.attempts > 0,
        "connections through the routing mesh: down {mesh_down}; after {mesh_after}"
    );
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
