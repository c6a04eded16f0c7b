//! Health checks across three nodes: a task whose health check has not passed yet is in Starting
//! and no backend of its service; once it passes, the task runs and is reached through the VIP,
//! the routing mesh and DNS `tasks.NAME`; once it fails, no new connection reaches the task
//! through any of them after one health interval (sampled continuously), the task fails with
//! "task: container is unhealthy" and a new one replaces it. Bad health flags change nothing.
//!
//! Each web task's health check is `test -f /tmp/healthy`, flipped from outside with `docker exec`
//! on the task's node. Restarts of meshd are in `restart`, the spec's side in `spec`.

// A test target's root resolves modules beside itself, as a `mod.rs` does.
#[path = "health/restart.rs"]
mod restart;
#[path = "health/spec.rs"]
mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, ensure};
use mesh_tests::overlay::{OverlayCluster, Sandbox, vip_on};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, require_privileged, wait_for, wait_until};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);
/// The web service's health interval: the bound on how long an unhealthy task stays a backend.
const INTERVAL: Duration = Duration::from_secs(1);
/// The published port of the web service (unused by the other tests' clusters).
const PORT: u16 = 8091;
/// How long the probes run on after the task turned unhealthy.
const AFTER: Duration = Duration::from_secs(5);

/// Every web task serves its container's hostname over HTTP on port 80.
const WEB: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

fn node_of<'a>(cluster: &'a Cluster, sandbox: &Sandbox) -> anyhow::Result<&'a Node> {
    cluster
        .nodes()
        .iter()
        .find(|n| n.hostname() == sandbox.node)
        .context("the task's node")
}

/// The running containers of `service` on every node.
async fn sandboxes(cluster: &Cluster, service: &str) -> anyhow::Result<Vec<Sandbox>> {
    let mut all = Vec::new();
    for node in cluster.nodes() {
        all.extend(node.sandboxes(service).await?);
    }
    Ok(all)
}

/// Makes the health check of `task` pass (`healthy`) or fail from its next run on.
async fn set_healthy(cluster: &Cluster, task: &Sandbox, healthy: bool) -> anyhow::Result<()> {
    let script = if healthy {
        "mkdir -p /tmp && touch /tmp/healthy"
    } else {
        "rm -f /tmp/healthy"
    };
    node_of(cluster, task)?
        .docker(&["exec", &task.container, "sh", "-c", script])
        .await?
        .ok("docker exec")?;
    Ok(())
}

/// The health Docker reports for `task`'s container.
async fn docker_health(cluster: &Cluster, task: &Sandbox) -> anyhow::Result<String> {
    let out = node_of(cluster, task)?
        .docker(&["inspect", "-f", "{{.State.Health.Status}}", &task.container])
        .await?
        .ok("docker inspect")?;
    Ok(out.stdout.trim().to_owned())
}

/// When Docker judged `task` unhealthy, as an instant of this process's clock: the end of the
/// first failing run of its health check that started after `broken` (with one retry, that run's
/// verdict is the change; the log also holds runs from before the task was healthy).
async fn judged_unhealthy_at(
    cluster: &Cluster,
    task: &Sandbox,
    broken: SystemTime,
) -> anyhow::Result<Instant> {
    let out = node_of(cluster, task)?
        .docker(&[
            "inspect",
            "-f",
            "{{json .State.Health.Log}}",
            &task.container,
        ])
        .await?
        .ok("docker inspect")?;
    let log: Vec<Value> = serde_json::from_str(out.stdout.trim()).context("health log")?;
    let time = |run: &Value, key: &str| -> anyhow::Result<SystemTime> {
        let text = run[key]
            .as_str()
            .context("a health log entry without times")?;
        humantime::parse_rfc3339_weak(text).with_context(|| format!("health log time {text:?}"))
    };
    let mut wall = None;
    for run in &log {
        if run["ExitCode"] != 0 && time(run, "Start")? >= broken {
            wall = Some(time(run, "End")?);
            break;
        }
    }
    let wall = wall.with_context(|| format!("no failing run since the break: {log:?}"))?;
    let (now_wall, now) = (SystemTime::now(), Instant::now());
    let ago = now_wall
        .duration_since(wall)
        .context("a health check ended in the future")?;
    now.checked_sub(ago).context("clock out of range")
}

/// One HTTP request to `target:80` from inside `client`'s network namespace (the eBPF VIP acts on
/// every socket of that namespace); the answering hostname, or `None` when it failed.
async fn via_vip(client: &Sandbox, target: &str) -> anyhow::Result<Option<String>> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {target} 80");
    let out = client.run("busybox", &["sh", "-c", &script]).await?;
    if out.code != 0 || !out.stdout.starts_with("HTTP/1.") {
        return Ok(None);
    }
    Ok(out.stdout.lines().last().map(|l| l.trim().to_owned()))
}

/// One HTTP request to a node's published port, from the host: the routing mesh.
async fn via_mesh(node: &Node) -> anyhow::Result<Option<String>> {
    let addr = SocketAddr::from((node.addr(), PORT));
    Ok(tokio::task::spawn_blocking(move || mesh_tests::observe::http_get(addr)).await?)
}

/// The addresses DNS gives for `tasks.web` inside `client` (empty when it has none).
async fn tasks_in_dns(client: &Sandbox) -> anyhow::Result<BTreeSet<String>> {
    let out = client
        .run(
            "busybox",
            &["nslookup", "-type=a", "tasks.web", "127.0.0.11"],
        )
        .await?;
    // The server's own address comes first ("Address: 127.0.0.11:53"), answers after "Name:".
    let answers = out
        .stdout
        .split_once("Name:")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    Ok(answers
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .map(|a| a.trim().to_owned())
        .collect())
}

/// Every IPv4 address of a task's sandbox.
async fn addresses(task: &Sandbox) -> anyhow::Result<BTreeSet<String>> {
    Ok(task
        .interfaces()
        .await?
        .into_iter()
        .flat_map(|i| i.ipv4)
        .filter(|a| !a.is_loopback())
        .map(|a| a.to_string())
        .collect())
}

/// `service ps web`'s rows, as `--format json` prints them.
async fn ps(manager: &Node) -> anyhow::Result<Vec<Value>> {
    manager.tasks("web").await
}

fn current(row: &Value) -> &str {
    row["CurrentState"].as_str().unwrap_or_default()
}

/// Samples taken by one prober: when each probe started, and whether the victim was reached.
#[derive(Default)]
struct Samples {
    taken: Vec<(Instant, Option<bool>)>,
}

impl Samples {
    /// The start of the last probe that reached the victim.
    fn last_hit(&self) -> Option<Instant> {
        self.taken
            .iter()
            .filter(|(_, hit)| *hit == Some(true))
            .map(|(at, _)| *at)
            .max()
    }

    /// Probes started at or after `from` that failed outright.
    fn failures_from(&self, from: Instant) -> usize {
        self.taken
            .iter()
            .filter(|(at, hit)| *at >= from && hit.is_none())
            .count()
    }

    /// Whether a probe started before `until` reached the victim.
    fn hit_before(&self, until: Instant) -> bool {
        self.taken
            .iter()
            .any(|(at, hit)| *at < until && *hit == Some(true))
    }

    fn since(&self, from: Instant) -> usize {
        self.taken.iter().filter(|(at, _)| *at >= from).count()
    }
}

/// How `at` relates to `origin`, in signed milliseconds, for the report.
fn ms_after(at: Option<Instant>, origin: Instant) -> String {
    match at {
        None => "never".to_owned(),
        Some(at) if at >= origin => format!("+{} ms", (at - origin).as_millis()),
        Some(at) => format!("-{} ms", (origin - at).as_millis()),
    }
}

#[tokio::test]
async fn unhealthy_tasks_leave_the_vip_the_routing_mesh_and_dns_within_one_interval()
-> anyhow::Result<()> {
    require_privileged!();
    let cluster = OverlayCluster::new(Cluster::builder().managers(1).workers(2).start().await?);
    let manager = cluster.manager();
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", "front"])
        .await?;
    manager
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "client",
            "--network",
            "front",
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ])
        .await?;
    let publish = format!("{PORT}:80");
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
            "--network",
            "front",
            "-p",
            &publish,
            // Long enough that only the withdrawal on the verdict, not the container's end,
            // can keep the bound (httpd as PID 1 ignores SIGTERM).
            "--stop-grace-period",
            "5s",
            "--health-cmd",
            "test -f /tmp/healthy",
            "--health-interval",
            "1s",
            "--health-timeout",
            "1s",
            "--health-retries",
            "1",
            // Failing checks do not count before this: a task waits to be made healthy.
            "--health-start-period",
            "10m",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            WEB,
        ])
        .await?;
    let client = wait_for(CONVERGE, "the client", async || {
        Ok(sandboxes(&cluster, "client").await?.pop())
    })
    .await?;
    let web = wait_for(CONVERGE, "3 web containers", async || {
        let found = sandboxes(&cluster, "web").await?;
        Ok((found.len() == 3).then_some(found))
    })
    .await?;
    let nodes: BTreeSet<&str> = web.iter().map(|t| t.node.as_str()).collect();
    ensure!(nodes.len() == 3, "web is not on every node: {web:?}");
    let vip = vip_on(manager, "web", "front").await?;
    let hostnames: BTreeMap<String, &Sandbox> =
        web.iter().map(|t| (t.hostname.clone(), t)).collect();

    // Not healthy yet: every task is Starting and none is a backend anywhere.
    tokio::time::sleep(INTERVAL * 3).await;
    let rows = ps(manager).await?;
    ensure!(
        rows.len() == 3 && rows.iter().all(|r| current(r).starts_with("Starting")),
        "tasks whose health check has not passed should be Starting: {rows:?}"
    );
    for _ in 0..3 {
        let answer = via_vip(&client, &vip).await?;
        ensure!(
            answer.is_none(),
            "a task not healthy yet answered: {answer:?}"
        );
        for node in cluster.nodes() {
            let answer = via_mesh(node).await?;
            ensure!(
                answer.is_none(),
                "{} routed to a task not healthy yet: {answer:?}",
                node.hostname()
            );
        }
        let dns = tasks_in_dns(&client).await?;
        ensure!(
            dns.is_empty(),
            "tasks.web names tasks not healthy yet: {dns:?}"
        );
    }

    // Two made healthy: they run and they alone are reached, by every path.
    let (ready, waiting) = (&web[..2], &web[2]);
    for task in ready {
        set_healthy(&cluster, task, true).await?;
    }
    wait_until(CONVERGE, "2 running web tasks", async || {
        let rows = ps(manager).await?;
        let running = rows.iter().filter(|r| current(r).starts_with("Running"));
        Ok(running.count() == 2)
    })
    .await?;
    let ready_hosts: BTreeSet<String> = ready.iter().map(|t| t.hostname.clone()).collect();
    let reached = wait_for(
        CONVERGE,
        "the VIP to reach both healthy tasks",
        async || {
            let mut seen = BTreeSet::new();
            for _ in 0..20 {
                seen.extend(via_vip(&client, &vip).await?);
            }
            Ok(seen.is_superset(&ready_hosts).then_some(seen))
        },
    )
    .await?;
    ensure!(
        reached == ready_hosts,
        "the VIP reached {reached:?}, not only the healthy {ready_hosts:?}"
    );
    let waiting_addrs = addresses(waiting).await?;
    let dns = tasks_in_dns(&client).await?;
    ensure!(
        dns.len() == 2 && dns.is_disjoint(&waiting_addrs),
        "tasks.web should name the 2 healthy tasks only: {dns:?} (waiting: {waiting_addrs:?})"
    );
    for node in cluster.nodes() {
        let what = format!("{}:{PORT} to answer", node.hostname());
        wait_until(CONVERGE, &what, async || {
            Ok(via_mesh(node).await?.is_some())
        })
        .await?;
        let mut answers = Vec::new();
        for _ in 0..12 {
            answers.push(via_mesh(node).await?);
        }
        if !answers.iter().all(Option::is_some) {
            for n in cluster.nodes() {
                let out = mesh_tests::process::run_sync(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        n.netns().name(),
                        "iptables-save",
                        "-t",
                        "nat",
                    ],
                );
                eprintln!(
                    "==== {} nat ====\n{}",
                    n.hostname(),
                    out.map(|o| o.stdout).unwrap_or_default()
                );
            }
            eprintln!("{}", mesh_tests::overlay::diagnostics(&cluster).await);
        }
        ensure!(
            answers
                .iter()
                .all(|a| a.as_ref().is_some_and(|h| ready_hosts.contains(h))),
            "{} answered {answers:?}, not only from the healthy {ready_hosts:?} (waiting: {})",
            node.hostname(),
            waiting.hostname
        );
    }

    // All three healthy.
    set_healthy(&cluster, waiting, true).await?;
    let all_hosts: BTreeSet<String> = hostnames.keys().cloned().collect();
    wait_until(CONVERGE, "the VIP to reach all 3 tasks", async || {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            seen.extend(via_vip(&client, &vip).await?);
        }
        Ok(seen == all_hosts)
    })
    .await?;

    // The victim turns unhealthy while every path is probed without pause.
    let victim = &web[0];
    let victim_addrs = addresses(victim).await?;
    wait_until(CONVERGE, "tasks.web to name all 3 tasks", async || {
        Ok(tasks_in_dns(&client).await?.len() == 3)
    })
    .await?;
    let stop = AtomicBool::new(false);
    let probe_vip = async {
        let mut samples = Samples::default();
        while !stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            let answer = via_vip(&client, &vip).await?;
            samples
                .taken
                .push((at, answer.map(|h| h == victim.hostname)));
        }
        anyhow::Ok(samples)
    };
    let probe_mesh = async {
        let mut samples = Samples::default();
        let mut nodes = cluster.nodes().iter().cycle();
        while !stop.load(Ordering::Relaxed) {
            let node = nodes.next().context("no nodes")?;
            let at = Instant::now();
            let answer = via_mesh(node).await?;
            samples
                .taken
                .push((at, answer.map(|h| h == victim.hostname)));
        }
        anyhow::Ok(samples)
    };
    let probe_dns = async {
        let mut samples = Samples::default();
        while !stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            let names = tasks_in_dns(&client).await?;
            let hit = (!names.is_empty()).then(|| !names.is_disjoint(&victim_addrs));
            samples.taken.push((at, hit));
        }
        anyhow::Ok(samples)
    };
    let flip = async {
        let result = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (removed, broken) = (Instant::now(), SystemTime::now());
            set_healthy(&cluster, victim, false).await?;
            let deadline = removed + CONVERGE;
            let unhealthy = loop {
                let at = Instant::now();
                if docker_health(&cluster, victim).await? == "unhealthy" {
                    let judged = judged_unhealthy_at(&cluster, victim, broken).await?;
                    eprintln!(
                        "health: this test saw Docker's verdict {} after it",
                        ms_after(Some(at), judged)
                    );
                    break judged;
                }
                ensure!(at < deadline, "Docker never judged the victim unhealthy");
            };
            tokio::time::sleep(AFTER).await;
            anyhow::Ok((removed, unhealthy))
        }
        .await;
        stop.store(true, Ordering::Relaxed);
        result
    };
    let (vip_samples, mesh_samples, dns_samples, flipped) =
        tokio::join!(probe_vip, probe_mesh, probe_dns, flip);
    let (vip_samples, mesh_samples, dns_samples) = (vip_samples?, mesh_samples?, dns_samples?);
    let (removed, unhealthy) = flipped?;
    let deadline = unhealthy + INTERVAL;

    eprintln!(
        "health: file removed at {}, Docker reported unhealthy at +0 ms; last probe reaching the \
         victim started: VIP {}, routing mesh {}, DNS {} (probes: VIP {}, mesh {}, DNS {})",
        ms_after(Some(removed), unhealthy),
        ms_after(vip_samples.last_hit(), unhealthy),
        ms_after(mesh_samples.last_hit(), unhealthy),
        ms_after(dns_samples.last_hit(), unhealthy),
        vip_samples.taken.len(),
        mesh_samples.taken.len(),
        dns_samples.taken.len(),
    );
    for (path, samples) in [
        ("the VIP", &vip_samples),
        ("the routing mesh", &mesh_samples),
        ("DNS tasks.web", &dns_samples),
    ] {
        ensure!(
            samples.hit_before(removed),
            "{path} never reached the victim while it was healthy: the probe proves nothing"
        );
        ensure!(
            samples.last_hit().is_some_and(|at| at < deadline),
            "{path} still reached the victim {} after Docker judged it unhealthy (bound: one \
             interval, {INTERVAL:?})",
            ms_after(samples.last_hit(), unhealthy)
        );
        ensure!(
            samples.since(deadline) >= 5,
            "{path} was probed only {} times after the deadline",
            samples.since(deadline)
        );
    }
    for (path, samples) in [
        ("the VIP", &vip_samples),
        ("the routing mesh", &mesh_samples),
    ] {
        let failed = samples.failures_from(deadline);
        ensure!(
            failed == 0,
            "{failed} requests through {path} failed with 2 healthy tasks left"
        );
    }

    // The victim's task failed as unhealthy; a new task replaces it, and waits in Starting.
    let victim_row = wait_for(CONVERGE, "the victim's task to fail", async || {
        let rows = ps(manager).await?;
        Ok(rows.into_iter().find(|r| current(r).starts_with("Failed")))
    })
    .await?;
    ensure!(
        victim_row["Error"] == "\"task: container is unhealthy\"",
        "the failed task should say why: {victim_row}"
    );
    let replacement = wait_for(CONVERGE, "a replacement task", async || {
        let rows = ps(manager).await?;
        Ok(rows
            .into_iter()
            .find(|r| r["DesiredState"] == "Running" && current(r).starts_with("Starting")))
    })
    .await?;
    ensure!(
        replacement["Name"] == victim_row["Name"],
        "the replacement takes the victim's slot: {replacement} vs {victim_row}"
    );
    let left: BTreeSet<String> = web[1..].iter().map(|t| t.hostname.clone()).collect();
    for _ in 0..10 {
        let answer = via_vip(&client, &vip)
            .await?
            .context("a request through the VIP failed")?;
        ensure!(
            left.contains(&answer),
            "{answer} answered: only the 2 healthy tasks may"
        );
    }
    cluster.close()
}
