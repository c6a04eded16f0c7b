//! `cargo xtask bench scale --nodes N --tasks T [--managers M] [--services S]`: how the control
//! plane holds up under many nodes and tasks.
//!
//! Real managers — meshd processes in their own namespaces, as in every benchmark here, with
//! Raft on disk, mutual TLS and gRPC — and N simulated nodes in this process, one tokio runtime.
//! Each simulated node joins through the real path (the join token pins the root CA, the CA
//! issues a certificate for the node's own key), then keeps its own dispatcher session over its
//! own TLS connection: heartbeats at the cluster's period, the assignments stream, task status
//! reports from the real agent's worker (accepted → preparing → ready → starting → running) on
//! an executor whose containers are records ([`executor`]). The managers cannot tell these
//! nodes from real ones. The managers are drained, so every task goes to a simulated node.
//!
//! Timed: from the first join to all N + M nodes Ready (`node ls`), and from creating T tasks
//! over S services (at once, or in batches) to the leader counting all of them running (its
//! `mesh_tasks` metric). Measured: the leader's Raft entries per second over that time (its commit
//! index), its RSS, the largest assignments message a node received, `service ls` and `node ls`.
//! Then two failures ([`phases`]): a tenth of the nodes lost at once, and the leader killed and
//! started again. The run ends with one [`summary`] line.

mod agent;
pub mod args;
mod executor;
mod figures;
mod phases;
mod probe;
pub mod summary;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use mesh_proto::control_client::ControlClient;
use mesh_proto::service_spec::Mode;
use mesh_proto::{
    Annotations, ContainerSpec, CreateServiceRequest, ListNodesRequest, NodeState,
    ReplicatedService, Service, ServiceSpec, TaskSpec, UpdateServiceRequest,
};
use mesh_tests::cluster::MANAGER_PORT;
use mesh_tests::meshctl::BIN_DIR_ENV;
use mesh_tests::{BUSYBOX_IMAGE, Cluster};
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::transport::Channel;

use agent::Counters;
use args::{Plan, ScaleArgs};
use summary::Summary;

/// Joins in flight at once: a crowd of TLS handshakes beyond this only queues in the leader.
const JOINING: usize = 64;
/// Tries of one node's join before the run fails.
const JOIN_TRIES: usize = 5;
/// How often the nodes and the running tasks are counted.
const POLL: Duration = Duration::from_millis(250);

pub async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    if args.release {
        let bins = ["-p", "mesh-agent", "-p", "mesh-control", "--bins"];
        let mut again: Vec<String> = vec!["scale".into()];
        let mut flag = |name: &str, value: String| again.extend([format!("--{name}"), value]);
        match plan.scenario {
            Some(args::Scenario::Swarm3k) => flag("scenario", "swarm3k".into()),
            None => {
                flag("nodes", plan.nodes.to_string());
                flag("tasks", plan.tasks.to_string());
                flag("services", plan.services.to_string());
            }
        }
        flag("managers", plan.managers.to_string());
        flag("batch", plan.batch.to_string());
        flag("creates", plan.creates.to_string());
        let again: Vec<&str> = again.iter().map(String::as_str).collect();
        return crate::run::again_in_release(&bins, &again, &[(BIN_DIR_ENV, "target/release")]);
    }
    let profile = match std::env::var(BIN_DIR_ENV) {
        Ok(dir) if dir.contains("release") => "release",
        _ => match crate::run::build(false, &["scale"])? {
            Some(profile) => profile,
            None => return Ok(()),
        },
    };
    crate::run::ensure_open_files(u64::from(plan.nodes) + 1024, "the simulated nodes")?;
    eprintln!("starting {} manager(s)", plan.managers);
    let mut cluster = Cluster::builder()
        .managers(usize::from(plan.managers))
        .quiet()
        .start()
        .await?;
    let result = measure(&mut cluster, plan).await;
    let close = cluster.close();
    let summary = result?;
    close?;
    let sim = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    eprintln!("meshd {profile} build, simulated nodes: mesh-bench {sim} build");
    println!("{summary}");
    Ok(())
}

async fn measure(cluster: &mut Cluster, plan: Plan) -> anyhow::Result<Summary> {
    let first = cluster.manager();
    for node in cluster.nodes() {
        first
            .meshctl_ok(&["node", "update", "--availability", "drain", node.hostname()])
            .await?;
    }
    let token = first
        .meshctl_ok(&["swarm", "join-token", "-q", "worker"])
        .await?
        .trim()
        .to_owned();
    let managers: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("{}:{MANAGER_PORT}", n.addr()))
        .collect();
    let mut client = crate::api_load::connect(first.socket()).await?;
    let counters = Arc::new(Counters::default());
    let (stop, stopped) = watch::channel(false);
    let (failures, mut failed) = mpsc::unbounded_channel::<String>();

    eprintln!("joining {} simulated nodes", plan.nodes);
    let joining = Arc::new(Semaphore::new(JOINING));
    let host = cluster.bridge().addr(254);
    let started = Instant::now();
    let mut nodes = Vec::with_capacity(plan.nodes as usize);
    for i in 0..plan.nodes {
        let (joining, counters, stopped, failures) = (
            joining.clone(),
            counters.clone(),
            stopped.clone(),
            failures.clone(),
        );
        let (manager, managers, token) = (managers[0].clone(), managers.clone(), token.clone());
        let hostname = format!("sim{i:05}");
        // Each node advertises an address of its own (the host's, a port each).
        let addr = format!("{host}:{}", 10_000 + i);
        let name = hostname.clone();
        let node = tokio::spawn(async move {
            let mut last = String::new();
            for _ in 0..JOIN_TRIES {
                let joined = {
                    let _turn = joining.acquire().await;
                    agent::join(&manager, &token, hostname.clone(), addr.clone()).await
                };
                match joined {
                    Ok(node) => return agent::run(node, managers, counters, stopped).await,
                    Err(err) => last = format!("{err:#}"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let _ = failures.send(format!("{hostname} could not join: {last}"));
        });
        nodes.push((name, node));
    }
    let everyone = plan.nodes as usize + usize::from(plan.managers);
    let join_limit = crate::run::LIMIT + Duration::from_millis(20) * plan.nodes;
    loop {
        if let Ok(failure) = failed.try_recv() {
            bail!("{failure}");
        }
        let listed =
            mesh_proto::gather(client.list_nodes(ListNodesRequest {}).await?.into_inner()).await?;
        let ready = listed
            .nodes
            .iter()
            .filter(|n| n.status.as_ref().map(|s| s.state) == Some(NodeState::Ready as i32))
            .count();
        if ready == everyone {
            break;
        }
        if started.elapsed() > join_limit {
            bail!("{ready} of {everyone} nodes Ready after {join_limit:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    let join = started.elapsed();
    // Sessions re-opened while 5,000 agents connect at once are told apart from later ones.
    let reopened_joining = counters.reconnects.load(Ordering::Relaxed);
    eprintln!(
        "{} nodes Ready in {:.2} s; creating {} tasks over {} services",
        everyone,
        join.as_secs_f64(),
        plan.tasks,
        plan.services
    );

    let leader_index = probe::leader(cluster.nodes()).await?;
    let leader = &cluster.nodes()[leader_index];
    let before = probe::scrape(leader).await?;
    let pid = leader.meshd_pid().context("the leader's meshd is gone")?;
    let body_before = probe::body(leader).await?;
    let cpu_before = figures::process_cpu_seconds(pid)?;
    let own_cpu_before = figures::process_cpu_seconds(std::process::id())?;
    let started = Instant::now();
    // `--creates` calls in flight at once, each on the one channel (HTTP/2 streams side by side).
    let mut services: Vec<Service> = futures::stream::iter(0..plan.services)
        .map(|s| {
            let mut client = client.clone();
            let replicas = plan.replicas_at(plan.after_batch(0), s);
            async move {
                let created = client
                    .create_service(CreateServiceRequest {
                        spec: Some(spec(&format!("scale{s:04}"), replicas)),
                    })
                    .await
                    .with_context(|| format!("creating service {s}"))?;
                anyhow::Ok(created.into_inner())
            }
        })
        .buffered(usize::from(plan.creates))
        .try_collect()
        .await?;
    let created = started.elapsed();
    let run_limit = crate::run::LIMIT + Duration::from_millis(2) * u32::try_from(plan.tasks)?;
    let mut last_shown = Instant::now();
    let mut batch = 0;
    let after = loop {
        if let Ok(failure) = failed.try_recv() {
            bail!("{failure}");
        }
        let now = probe::scrape(leader).await?;
        let wanted = plan.after_batch(batch);
        if now.running as u64 >= wanted {
            if wanted == plan.tasks {
                break now;
            }
            batch += 1;
            eprintln!(
                "  {:.1} s: batch {batch} of {} running ({wanted} tasks); scaling to {}",
                started.elapsed().as_secs_f64(),
                plan.batches(),
                plan.after_batch(batch)
            );
            scale_to(&client, &mut services, &plan, plan.after_batch(batch)).await?;
            continue;
        }
        if started.elapsed() > run_limit {
            bail!(
                "{} of {} tasks running after {run_limit:?}",
                now.running,
                plan.tasks
            );
        }
        if last_shown.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "  {:.0} s: {} of {} tasks running",
                started.elapsed().as_secs_f64(),
                now.running,
                plan.tasks
            );
            last_shown = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    };
    let running = started.elapsed();
    let cpu = figures::process_cpu_seconds(pid)? - cpu_before;
    let own_cpu = figures::process_cpu_seconds(std::process::id())? - own_cpu_before;
    let body_after = probe::body(leader).await?;
    let raft = figures::RaftPhase::between(&body_before, &body_after);
    let monitor = figures::MonitorPhase::between(&body_before, &body_after);
    let rss = crate::api_load::memory_kib(pid, "VmRSS")? as f64 / 1024.0;
    let peak = crate::api_load::memory_kib(pid, "VmHWM")? as f64 / 1024.0;
    let service_ls = probe::time_cli(first, &["service", "ls"], 3).await?;
    let node_ls = probe::time_cli(first, &["node", "ls"], 3).await?;
    let bench_rss = probe::own_rss_mib();

    let secs = running.as_secs_f64();
    let entries = after.commit_index - before.commit_index;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let largest = load(&counters.largest_assignments) as f64 / 1024.0;
    println!(
        "scale: {} simulated nodes (this process) + {} drained manager(s) (meshd in namespaces)",
        plan.nodes, plan.managers
    );
    println!(
        "  join: all {everyone} nodes Ready {:.2} s after the first join",
        join.as_secs_f64()
    );
    println!(
        "  tasks: {} over {} services created in {:.2} s ({} at once); all running {secs:.2} s \
         after the first create ({:.0} tasks/s)",
        plan.tasks,
        plan.services,
        created.as_secs_f64(),
        plan.creates,
        plan.tasks as f64 / secs
    );
    println!(
        "  raft: {entries:.0} entries committed meanwhile ({:.1}/s)",
        entries / secs
    );
    let ms_or_none = |s: Option<f64>| figures::or_none(s.map(|s| s * 1000.0), 1);
    println!(
        "  raft: commit latency p50 {} ms, p99 {} ms; {} bytes per entry written; last \
         snapshot {} KiB, built in {} s (mean)",
        ms_or_none(raft.commit_p50_s),
        ms_or_none(raft.commit_p99_s),
        figures::or_none(raft.bytes_per_entry, 0),
        figures::or_none(raft.snapshot_bytes.map(|b| b / 1024.0), 1),
        figures::or_none(raft.snapshot_s, 2),
    );
    println!(
        "  leader meshd CPU: {cpu:.1} s from the first create to all running ({:.2} cores); \
         this process (the simulated nodes): {own_cpu:.1} s ({:.2} cores)",
        cpu / secs,
        own_cpu / secs
    );
    println!(
        "  leader meshd RSS: {rss:.1} MiB now, {peak:.1} MiB peak; this process: {bench_rss:.1} MiB"
    );
    println!(
        "  assignments: {} messages, {:.1} MiB in all, the largest {largest:.1} KiB; {} status \
         reports sent; {} sessions re-opened ({reopened_joining} of them while joining; failed at: \
         {})",
        load(&counters.assignments_messages),
        load(&counters.assignments_bytes) as f64 / (1024.0 * 1024.0),
        load(&counters.reports),
        load(&counters.reconnects),
        counters.take_failures(),
    );
    println!(
        "  heartbeats: sent up to {} ms after their tick ({} of them {} s late or more, this \
         process's own delay), answered within {} ms; the leader's monitor held up {:.0} times \
         ({:.1} s in all), {:.0} sessions ended for missed heartbeats",
        load(&counters.heartbeat_late_ms),
        load(&counters.heartbeats_late),
        agent::LATE.as_secs_f64(),
        load(&counters.heartbeat_call_ms),
        monitor.stalls,
        monitor.stalled_s,
        monitor.misses,
    );
    println!(
        "  at the end: `service ls` {:.0} ms, `node ls` {:.0} ms (slowest of 3, meshctl included)",
        ms(service_ls),
        ms(node_ls)
    );

    let lost = if plan.nodes >= phases::LOST_SHARE {
        let loss = phases::lose_nodes(&mut client, cluster.manager(), &nodes, plan.tasks).await?;
        println!(
            "  losing {} nodes at once: all marked down {:.2} s later, their tasks running on \
             the others {:.2} s after the loss",
            loss.lost,
            loss.down.as_secs_f64(),
            loss.rescheduled.as_secs_f64()
        );
        Some(loss)
    } else {
        println!(
            "  node loss: not tried (fewer than {} nodes)",
            phases::LOST_SHARE
        );
        None
    };
    let still = everyone - lost.as_ref().map_or(0, |l| l.lost);
    // The loss phase's failures (its lost nodes' sessions cut) are not printed: the restart's
    // count starts from nothing.
    counters.take_failures();
    let reopened = load(&counters.reconnects);
    let restart =
        phases::restart_leader(cluster, leader_index, still, plan.tasks, &counters).await?;
    println!(
        "  the leader killed and started again: leading {} s after its start, back (snapshot \
         loaded, log replayed, `node ls` answering) in {:.2} s{}; {} sessions re-opened (failed \
         at: {})",
        figures::or_none(restart.leading.map(|d| d.as_secs_f64()), 2),
        restart.back.as_secs_f64(),
        restart.ready.map_or(String::new(), |r| format!(
            "; all {still} nodes Ready again and every task running {:.2} s after its start",
            r.as_secs_f64()
        )),
        load(&counters.reconnects) - reopened,
        counters.take_failures(),
    );

    stop.send_replace(true);
    for (_, node) in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(10), node).await;
    }
    let secs_or_none = |d: Option<Duration>| figures::or_none(d.map(|d| d.as_secs_f64()), 2);
    Ok(Summary {
        nodes: u64::from(plan.nodes),
        tasks: plan.tasks,
        managers: u64::from(plan.managers),
        all_running_s: secs,
        tasks_per_s: plan.tasks as f64 / secs,
        leader_rss_mib: rss,
        raft_entries_per_s: entries / secs,
        largest_msg_kib: largest,
        extra: vec![
            ("join-s".into(), format!("{:.2}", join.as_secs_f64())),
            ("services".into(), plan.services.to_string()),
            ("leader-peak-rss-mib".into(), format!("{peak:.1}")),
            ("service-ls-ms".into(), format!("{:.0}", ms(service_ls))),
            ("node-ls-ms".into(), format!("{:.0}", ms(node_ls))),
            ("bench-rss-mib".into(), format!("{bench_rss:.1}")),
            ("leader-cpu-s".into(), format!("{cpu:.1}")),
            ("commit-p50-ms".into(), ms_or_none(raft.commit_p50_s)),
            ("commit-p99-ms".into(), ms_or_none(raft.commit_p99_s)),
            (
                "raft-bytes/entry".into(),
                figures::or_none(raft.bytes_per_entry, 0),
            ),
            (
                "snapshot-kib".into(),
                figures::or_none(raft.snapshot_bytes.map(|b| b / 1024.0), 1),
            ),
            ("snapshot-s".into(), figures::or_none(raft.snapshot_s, 2)),
            ("batches".into(), plan.batches().to_string()),
            ("creates".into(), plan.creates.to_string()),
            (
                "lost-nodes".into(),
                lost.as_ref().map_or(0, |l| l.lost).to_string(),
            ),
            (
                "lost-down-s".into(),
                secs_or_none(lost.as_ref().map(|l| l.down)),
            ),
            (
                "rescheduled-s".into(),
                secs_or_none(lost.as_ref().map(|l| l.rescheduled)),
            ),
            (
                "restart-s".into(),
                format!("{:.2}", restart.back.as_secs_f64()),
            ),
            ("restart-ready-s".into(), secs_or_none(restart.ready)),
            ("bench-cpu-s".into(), format!("{own_cpu:.1}")),
        ]
        .into_iter()
        .chain(
            plan.scenario
                .map(|_| ("scenario".to_string(), "swarm3k".to_string())),
        )
        .collect(),
    })
}

/// Scales every service to its share of `total`, `plan.creates` updates in flight at once.
async fn scale_to(
    client: &ControlClient<Channel>,
    services: &mut [Service],
    plan: &Plan,
    total: u64,
) -> anyhow::Result<()> {
    futures::stream::iter((0u64..).zip(services.iter_mut()))
        .map(|(index, service)| {
            let mut client = client.clone();
            async move {
                let mut spec = service.spec.clone().context("a service without its spec")?;
                let replicas = plan.replicas_at(total, index);
                if let Some(Mode::Replicated(r)) = spec.mode.as_mut() {
                    if r.replicas == replicas {
                        return Ok(());
                    }
                    r.replicas = replicas;
                }
                *service = client
                    .update_service(UpdateServiceRequest {
                        service_id: service.id.clone(),
                        version: service.meta.as_ref().and_then(|m| m.version),
                        spec: Some(spec),
                        rollback: false,
                    })
                    .await
                    .with_context(|| format!("scaling service {index} to {replicas}"))?
                    .into_inner();
                anyhow::Ok(())
            }
        })
        .buffer_unordered(usize::from(plan.creates))
        .try_collect::<()>()
        .await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A service of `replicas` tasks that any node may run (the simulated nodes run nothing).
fn spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: name.into(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: BUSYBOX_IMAGE.into(),
                args: vec!["sleep".into(), "1000000".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(Mode::Replicated(ReplicatedService { replicas })),
        ..Default::default()
    }
}
