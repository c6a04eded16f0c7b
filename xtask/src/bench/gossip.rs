//! `cargo xtask bench gossip`: how fast mesh's gossip spreads membership and endpoint records.
//!
//! Simulated: 10, 100 and 1,000 [`Gossip`] members in this process on 127.0.0.1 under one key,
//! each joining up to three members started before it. It times until every member has seen all
//! the others, until a record published at one member is visible at every member, and until its
//! withdrawal is; and counts datagrams. Real: three meshd nodes run an overlay service scaled
//! 1→2→3→2→1 a few times; it times from a new task's eth0 existing to its MAC in the VXLAN FDB of
//! every other node on the network, and from a removed task's eth0 going to its MAC leaving them.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use mesh_agent::gossip::{EndpointRecord, Gossip, GossipConfig, KeyRing, SealKey};
use mesh_tests::meshctl::BIN_DIR_ENV;
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, process, wait_for};

use super::overlay::{NETWORK, container_pid, in_netns, overlay_netns, teardown};
use super::{LIMIT, SERVICE};

/// The simulated cluster sizes measured unless `--members` says otherwise.
const SIZES: [usize; 3] = [10, 100, 1000];
/// How many earlier members each simulated member joins through.
const JOIN_PEERS: usize = 3;
/// How long membership may take to converge, and then a record or its withdrawal to spread.
const MEMBERSHIP_LIMIT: Duration = Duration::from_secs(180);
const RECORD_LIMIT: Duration = Duration::from_secs(60);
/// The window over which idle traffic is counted.
const IDLE: Duration = Duration::from_secs(5);
/// Rounds of scaling 1→2→3→2→1 on the real nodes.
const ROUNDS: usize = 3;
const STOP_GRACE: &str = "1s";
/// A container's first process before it execs the task's command, as /proc/PID/cmdline holds it.
const RUNC_INIT: &[u8] = b"runc\x00init\x00";
/// The task's command.
const TASK_CMDLINE: &[u8] = b"sleep\x001000000\x00";
const VXLAN_ID_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// One simulation's figures; a time is `Err` with why it could not be measured.
struct Sim {
    members: usize,
    converge: anyhow::Result<Duration>,
    publish: anyhow::Result<Duration>,
    withdraw: anyhow::Result<Duration>,
    /// Datagrams (sent, received) per member from the first join until all saw all.
    join_traffic: (f64, f64),
    /// Datagrams (sent, received) per member per second once nothing changes.
    idle_rate: (f64, f64),
    /// Members seen per member at the end (min, median, max); false suspicions show here.
    seen_at_end: (usize, usize, usize),
    dropped: u64,
}

/// Samples from the real nodes.
#[derive(Default)]
struct Propagation {
    vni: u32,
    scale_to_eth0: Vec<Duration>,
    eth0_to_fdb: Vec<Duration>,
    scale_to_gone: Vec<Duration>,
    gone_to_fdb: Vec<Duration>,
}

#[derive(clap::Args)]
pub struct GossipArgs {
    /// Benchmark release builds of meshd and of the simulation (builds them first).
    #[arg(long)]
    release: bool,
    /// Simulated cluster sizes (repeatable; default 10, 100 and 1,000).
    #[arg(long = "members", value_name = "N", value_parser = clap::value_parser!(u16).range(2..))]
    members: Vec<u16>,
    /// Only the simulation: skip the 3 real nodes.
    #[arg(long)]
    simulated_only: bool,
}

pub async fn gossip(args: GossipArgs) -> anyhow::Result<()> {
    if args.release {
        // The simulation runs in this process: build xtask itself in release too, and run that.
        let bins = [
            "-p",
            "mesh-agent",
            "-p",
            "mesh-control",
            "--bins",
            "-p",
            "xtask",
        ];
        crate::run(
            &crate::cargo(),
            &[&["build", "--release"][..], &bins].concat(),
        )?;
        let env = [(BIN_DIR_ENV, "target/release")];
        let mut again = vec!["bench".to_owned(), "gossip".to_owned()];
        for n in &args.members {
            again.extend(["--members".to_owned(), n.to_string()]);
        }
        if args.simulated_only {
            again.push("--simulated-only".to_owned());
        }
        let again: Vec<&str> = again.iter().map(String::as_str).collect();
        return crate::run_with_env("target/release/xtask", &again, &env);
    }
    let sizes: Vec<usize> = if args.members.is_empty() {
        SIZES.to_vec()
    } else {
        args.members.iter().map(|&n| usize::from(n)).collect()
    };
    // The simulation needs no meshd: build it only for the real nodes.
    let profile = if args.simulated_only {
        "unused"
    } else {
        match super::build(false, &["gossip"])? {
            Some(profile) => profile,
            None => return Ok(()),
        }
    };
    let most = sizes.iter().copied().max().unwrap_or(0);
    ensure_open_files(u64::try_from(most)? + 256)?;
    let keys = KeyRing::new(SealKey::generate(1).context("generating a gossip key")?);
    let mut sims = Vec::new();
    for &members in &sizes {
        eprintln!("simulating {members} gossip members");
        sims.push(simulate(members, &keys).await?);
    }
    let real = if args.simulated_only {
        None
    } else {
        eprintln!("3 real nodes: endpoint propagation");
        Some(real_nodes().await)
    };

    let xtask = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "gossip, simulated: members in one process on 127.0.0.1, one key, each joining up to \
         {JOIN_PEERS} earlier ones; xtask {xtask} build"
    );
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>22} {:>22}",
        "members", "all see all", "record", "withdrawal", "datagrams to converge", "idle datagrams"
    );
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>22} {:>22}",
        "", "", "everywhere", "everywhere", "per member sent/recv", "per member/s sent/recv"
    );
    for s in &sims {
        // Records timed over a membership that had not converged are marked.
        let mark = if s.converge.is_err() { "*" } else { "" };
        println!(
            "{:>8} {:>12} {:>12} {:>12} {:>22} {:>22}",
            s.members,
            seconds(&s.converge),
            format!("{}{mark}", seconds(&s.publish)),
            format!("{}{mark}", seconds(&s.withdraw)),
            format!("{:.0} / {:.0}", s.join_traffic.0, s.join_traffic.1),
            format!("{:.1} / {:.1}", s.idle_rate.0, s.idle_rate.1),
        );
    }
    let mut missing = Vec::new();
    for s in &sims {
        for (what, r) in [
            ("membership", &s.converge),
            ("record", &s.publish),
            ("withdrawal", &s.withdraw),
        ] {
            if let Err(err) = r {
                println!("  {} members: {what}: {err:#}", s.members);
                missing.push(format!("{} members: {what}", s.members));
            }
        }
        if s.converge.is_err() {
            println!(
                "  {} members: * timed while members saw only part of the membership",
                s.members
            );
        }
        let (min, median, max) = s.seen_at_end;
        if min < s.members {
            println!(
                "  {} members: members seen per member at the end: min {min}, median {median}, \
                 max {max}",
                s.members
            );
        }
        if s.dropped > 0 {
            println!(
                "  {} members: datagrams dropped (bad seal, unknown key or malformed): {}",
                s.members, s.dropped
            );
        }
    }
    println!();
    match &real {
        None => {}
        Some(Ok(p)) => print_propagation(p, profile),
        Some(Err(err)) => {
            println!("3 real nodes: not measured: {err:#}");
            missing.push("3 real nodes".into());
        }
    }
    ensure!(missing.is_empty(), "not measured: {}", missing.join(", "));
    Ok(())
}

fn print_propagation(p: &Propagation, profile: &str) {
    println!(
        "endpoint propagation, 3 real nodes (namespaces, own dockerd and meshd each), overlay \
         {NETWORK} (VXLAN id {}), {ROUNDS} rounds of scale 1->2->3->2->1, stop grace period \
         {STOP_GRACE}; meshd {profile} build",
        p.vni
    );
    println!(
        "{:<62} {:>8} {:>8} {:>8}  samples (ms)",
        "", "min", "median", "max"
    );
    let rows = [
        ("scale up -> the new task's eth0 exists", &p.scale_to_eth0),
        (
            "new task's eth0 exists -> its MAC in the FDB of every other node",
            &p.eth0_to_fdb,
        ),
        ("scale down -> a task's eth0 is gone", &p.scale_to_gone),
        (
            "task's eth0 gone -> its MAC out of the FDB of every other node",
            &p.gone_to_fdb,
        ),
    ];
    for (what, samples) in rows {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        let listed: Vec<String> = ms.iter().map(|m| format!("{m:.0}")).collect();
        ms.sort_by(f64::total_cmp);
        let (Some(min), Some(max)) = (ms.first(), ms.last()) else {
            continue;
        };
        println!(
            "{what:<62} {min:>5.0} ms {:>5.0} ms {max:>5.0} ms  {}",
            ms[ms.len() / 2],
            listed.join(" ")
        );
    }
}

fn seconds(time: &anyhow::Result<Duration>) -> String {
    match time {
        Ok(t) => format!("{:.2} s", t.as_secs_f64()),
        Err(_) => "n/a".into(),
    }
}

/// Starts `n` members, joins them, and times membership, a record and its withdrawal.
async fn simulate(n: usize, keys: &KeyRing) -> anyhow::Result<Sim> {
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let config = GossipConfig::new(format!("sim-{i}"), bind, keys.clone());
        let (gossip, _changes) = Gossip::start(config)
            .await
            .with_context(|| format!("starting gossip member {i} of {n}"))?;
        members.push(gossip);
    }
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let start = Instant::now();
    for i in 1..n {
        let mut peers = Vec::new();
        while peers.len() < JOIN_PEERS.min(i) {
            let addr = members[random_below(&mut seed, i)].identity().addr;
            if !peers.contains(&addr) {
                peers.push(addr);
            }
        }
        members[i].join(peers).await?;
    }
    // Each poll copies every pending member's member list: poll large clusters less often.
    let poll = Duration::from_millis(u64::try_from(n / 2)?)
        .clamp(Duration::from_millis(10), Duration::from_millis(500));
    let converge = every(start, n, poll, MEMBERSHIP_LIMIT, |i| {
        members[i].member_count() >= n
    })
    .await
    .with_context(|| {
        let (min, median, max) = seen(&members);
        format!("every member seeing all {n} (members seen: min {min}, median {median}, max {max})")
    });
    let joined = traffic(&members);
    let join_traffic = (per(joined.0, n), per(joined.1, n));
    // Records spread over whatever membership there is, converged or not.
    let (publish, withdraw) = records(&members).await?;
    let before = traffic(&members);
    tokio::time::sleep(IDLE).await;
    let after = traffic(&members);
    let window = IDLE.as_secs_f64();
    let idle_rate = (
        per(after.0 - before.0, n) / window,
        per(after.1 - before.1, n) / window,
    );
    let seen_at_end = seen(&members);
    Ok(Sim {
        members: n,
        converge,
        publish,
        withdraw,
        join_traffic,
        idle_rate,
        seen_at_end,
        dropped: after.2,
    })
}

/// Publishes one record at a member, times until every member sees it, then withdraws it and
/// times until no member does.
async fn records(
    members: &[Gossip],
) -> anyhow::Result<(anyhow::Result<Duration>, anyhow::Result<Duration>)> {
    let n = members.len();
    let origin = &members[n / 2];
    let record = EndpointRecord {
        network_id: "bench-net".into(),
        task_id: "bench-task".into(),
        service_id: "bench-service".into(),
        addr: Ipv4Addr::new(10, 0, 0, 2),
        mac: [0x02, 0x42, 10, 0, 0, 2],
        node_id: origin.identity().node_id.clone(),
        vtep: Ipv4Addr::LOCALHOST,
        service_name: String::new(),
        vip: None,
        ingress_ports: Vec::new(),
    };
    let key = record.key();
    let has = |i: usize| members[i].records().iter().any(|r| r.key() == key);
    let poll = Duration::from_millis(5);
    let start = Instant::now();
    origin.publish(record.clone()).await?;
    let published = every(start, n, poll, RECORD_LIMIT, has)
        .await
        .context("the record reaching every member");
    let start = Instant::now();
    origin.withdraw(key.clone()).await?;
    let withdrawn = every(start, n, poll, RECORD_LIMIT, |i| !has(i))
        .await
        .context("the withdrawal reaching every member");
    Ok((published, withdrawn))
}

/// Time from `start` until `holds(i)` has held, at some poll, for every member `i` in `0..n`.
async fn every(
    start: Instant,
    n: usize,
    poll: Duration,
    limit: Duration,
    mut holds: impl FnMut(usize) -> bool,
) -> anyhow::Result<Duration> {
    let mut pending: Vec<usize> = (0..n).collect();
    loop {
        pending.retain(|&i| !holds(i));
        if pending.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= limit {
            bail!("{} of {n} members not there after {limit:?}", pending.len());
        }
        tokio::time::sleep(poll).await;
    }
}

/// How many members each member sees: (min, median, max).
fn seen(members: &[Gossip]) -> (usize, usize, usize) {
    let mut counts: Vec<usize> = members.iter().map(Gossip::member_count).collect();
    counts.sort_unstable();
    let at = |i: usize| counts.get(i).copied().unwrap_or(0);
    (
        at(0),
        at(counts.len() / 2),
        at(counts.len().saturating_sub(1)),
    )
}

/// Datagrams sent, received and dropped (any reason but injected loss) by all members.
fn traffic(members: &[Gossip]) -> (u64, u64, u64) {
    members.iter().map(Gossip::stats).fold((0, 0, 0), |t, s| {
        let dropped = s.dropped_bad_seal + s.dropped_unknown_key + s.dropped_malformed;
        (t.0 + s.sent, t.1 + s.received, t.2 + dropped)
    })
}

fn per(total: u64, members: usize) -> f64 {
    total as f64 / members as f64
}

/// splitmix64: good enough to pick join peers, and needs no dependency.
fn random_below(state: &mut u64, bound: usize) -> usize {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % bound as u64) as usize
}

/// Makes sure this process may open `need` files (a socket per member), raising its soft limit
/// with prlimit(1) when the hard limit allows (no unsafe code here).
fn ensure_open_files(need: u64) -> anyhow::Result<()> {
    let (soft, hard) = open_files_limit()?;
    if soft >= need {
        return Ok(());
    }
    let pid = std::process::id().to_string();
    let limit = format!("--nofile={need}:{}", hard.max(need));
    let raised = process::run_sync("prlimit", &["--pid", &pid, &limit])
        .map(|o| o.stderr.trim().to_owned())
        .unwrap_or_else(|err| format!("{err:#}"));
    let (soft, _) = open_files_limit()?;
    ensure!(
        soft >= need,
        "the gossip members need about {need} open files but this process may open {soft} \
         ({raised}); run `ulimit -n {need}` and try again"
    );
    Ok(())
}

/// (soft, hard) from /proc/self/limits; `unlimited` reads as `u64::MAX`.
fn open_files_limit() -> anyhow::Result<(u64, u64)> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .context("no open files limit in /proc/self/limits")?;
    let mut values = line.split_whitespace().map(|v| {
        if v == "unlimited" {
            Ok(u64::MAX)
        } else {
            v.parse::<u64>()
                .with_context(|| format!("bad open files limit {v:?}"))
        }
    });
    let mut next = || values.next().context("open files limit missing")?;
    Ok((next()?, next()?))
}

/// A running task of the service, attached to the overlay.
#[derive(Clone)]
struct Task {
    node: usize,
    pid: u32,
    mac: String,
}

async fn real_nodes() -> anyhow::Result<Propagation> {
    let cluster = Cluster::builder()
        .managers(1)
        .workers(2)
        .quiet()
        .start()
        .await?;
    let measured = propagation(&cluster).await;
    teardown(cluster).await?;
    measured
}

async fn propagation(cluster: &Cluster) -> anyhow::Result<Propagation> {
    let manager = cluster.manager();
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", NETWORK])
        .await?;
    // The allocator gives the network its VXLAN id shortly after it is created.
    let vni: u32 = wait_for(LIMIT, "the network's VXLAN id", async || {
        let inspect = manager.meshctl_ok(&["network", "inspect", NETWORK]).await?;
        let inspect: serde_json::Value =
            serde_json::from_str(&inspect).context("network inspect")?;
        Ok(inspect[0]["Options"][VXLAN_ID_OPTION]
            .as_str()
            .and_then(|v| v.parse().ok()))
    })
    .await?;
    let create = [
        "service",
        "create",
        "-d",
        "--name",
        SERVICE,
        "--replicas",
        "1",
        "--replicas-max-per-node",
        "1",
        "--stop-grace-period",
        STOP_GRACE,
        "--network",
        NETWORK,
        BUSYBOX_IMAGE,
        "sleep",
        "1000000",
    ];
    manager.meshctl_ok(&create).await?;
    let mut p = Propagation {
        vni,
        ..Propagation::default()
    };
    for _ in 0..ROUNDS {
        for replicas in [2, 3] {
            let (eth0, fdb) = added(cluster, vni, replicas).await?;
            p.scale_to_eth0.push(eth0);
            p.eth0_to_fdb.push(fdb);
        }
        for replicas in [2, 1] {
            let (gone, fdb) = removed(cluster, vni, replicas).await?;
            p.scale_to_gone.push(gone);
            p.gone_to_fdb.push(fdb);
        }
    }
    Ok(p)
}

/// Scales up to `replicas`; returns (scale → the new task's eth0, eth0 → MAC in every FDB).
async fn added(
    cluster: &Cluster,
    vni: u32,
    replicas: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let before = settled(cluster, replicas - 1).await?;
    let holders = holders(cluster, &before, vni);
    let seen: HashSet<u32> = pids().collect();
    let cluster_dir = cluster.dir().display().to_string();
    let scale = format!("{SERVICE}={replicas}");
    let scale = ["service", "scale", "-d", &scale];
    let start = Instant::now();
    let (scaled, watched) = tokio::join!(
        cluster.manager().meshctl_ok(&scale),
        new_endpoint(&cluster_dir, seen, &holders, vni)
    );
    scaled?;
    let (eth0, fdb) = watched.with_context(|| format!("scaling to {replicas}"))?;
    Ok((eth0 - start, fdb - eth0))
}

/// Scales down to `replicas`; returns (scale → a task's eth0 gone, gone → MAC out of every FDB).
async fn removed(
    cluster: &Cluster,
    vni: u32,
    replicas: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let before = settled(cluster, replicas + 1).await?;
    let scale = format!("{SERVICE}={replicas}");
    let scale = ["service", "scale", "-d", &scale];
    let start = Instant::now();
    let (scaled, watched) = tokio::join!(
        cluster.manager().meshctl_ok(&scale),
        gone_endpoint(cluster, &before, vni)
    );
    scaled?;
    let (gone, fdb) = watched.with_context(|| format!("scaling to {replicas}"))?;
    Ok((gone - start, fdb - gone))
}

/// Waits until exactly `count` tasks run attached to the overlay, and returns them.
async fn settled(cluster: &Cluster, count: usize) -> anyhow::Result<Vec<Task>> {
    let what = format!("{count} tasks attached to the overlay");
    wait_for(LIMIT, &what, async || {
        let tasks = attached(cluster).await?;
        Ok((tasks.len() == count).then_some(tasks))
    })
    .await
}

async fn attached(cluster: &Cluster) -> anyhow::Result<Vec<Task>> {
    let mut tasks = Vec::new();
    for (node, n) in cluster.nodes().iter().enumerate() {
        for id in n.containers(SERVICE, false).await? {
            let Some(pid) = container_pid(n, &id).await? else {
                continue;
            };
            if let Some(mac) = mac_of(pid).await? {
                tasks.push(Task { node, pid, mac });
            }
        }
    }
    Ok(tasks)
}

/// The overlay namespaces of the nodes running `tasks`.
fn holders(cluster: &Cluster, tasks: &[Task], vni: u32) -> Vec<String> {
    let nodes: &[Node] = cluster.nodes();
    tasks
        .iter()
        .map(|t| overlay_netns(&nodes[t.node], vni))
        .collect()
}

/// A process that started after the watch began: a task, once its eth0 shows.
struct Candidate {
    pid: u32,
    eth0: Option<(Instant, String)>,
    /// When each holder's FDB was first seen holding its MAC.
    fdb: Vec<Option<Instant>>,
}

/// Watches for a new task process of this cluster; returns when its eth0 first existed and when
/// its MAC was in the FDB of every namespace in `holders`.
async fn new_endpoint(
    cluster_dir: &str,
    mut seen: HashSet<u32>,
    holders: &[String],
    vni: u32,
) -> anyhow::Result<(Instant, Instant)> {
    let deadline = Instant::now() + LIMIT;
    let mut candidates: Vec<Candidate> = Vec::new();
    // `runc init` processes that may yet enter a sandbox of their own.
    let mut pending: Vec<u32> = Vec::new();
    while Instant::now() < deadline {
        pending.extend(pids().filter(|p| seen.insert(*p)));
        let mut still = Vec::new();
        for pid in pending {
            match sandbox(pid, cluster_dir) {
                Sandbox::Yes => {
                    if has_eth0(pid) {
                        eprintln!("task process {pid} already had eth0 when first seen");
                    }
                    let fdb = vec![None; holders.len()];
                    candidates.push(Candidate {
                        pid,
                        eth0: None,
                        fdb,
                    });
                }
                Sandbox::NotYet => still.push(pid),
                Sandbox::No => {}
            }
        }
        pending = still;
        for c in candidates.iter_mut().filter(|c| c.eth0.is_none()) {
            if has_eth0(c.pid) {
                let at = Instant::now();
                if let Some(mac) = mac_of(c.pid).await? {
                    c.eth0 = Some((at, mac));
                }
            }
        }
        if candidates.iter().any(|c| c.eth0.is_some()) {
            for (h, ns) in holders.iter().enumerate() {
                let fdb = fdb_show(ns, vni).await;
                let at = Instant::now();
                for c in &mut candidates {
                    if let Some((_, mac)) = &c.eth0
                        && c.fdb[h].is_none()
                        && fdb.contains(mac.as_str())
                    {
                        c.fdb[h] = Some(at);
                    }
                }
            }
            for c in &candidates {
                if let Some((eth0, _)) = &c.eth0
                    && let Some(last) = c.fdb.iter().copied().collect::<Option<Vec<_>>>()
                {
                    return Ok((*eth0, last.into_iter().max().unwrap_or(*eth0)));
                }
            }
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let found: Vec<String> = candidates
        .iter()
        .map(|c| format!("pid {} eth0 {:?}", c.pid, c.eth0.as_ref().map(|e| &e.1)))
        .collect();
    bail!("no new task's MAC reached {holders:?} within {LIMIT:?} (saw {found:?})")
}

/// Watches `tasks` until one's eth0 is gone; returns when, and when its MAC had left the FDB of
/// the nodes of every other task.
async fn gone_endpoint(
    cluster: &Cluster,
    tasks: &[Task],
    vni: u32,
) -> anyhow::Result<(Instant, Instant)> {
    let deadline = Instant::now() + LIMIT;
    let (gone, index) = loop {
        if let Some(index) = tasks.iter().position(|t| !has_eth0(t.pid)) {
            break (Instant::now(), index);
        }
        if Instant::now() >= deadline {
            bail!("no task's eth0 went within {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let mac = &tasks[index].mac;
    let others: Vec<Task> = tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, t)| t.clone())
        .collect();
    let mut pending = holders(cluster, &others, vni);
    let mut last = gone;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for ns in pending {
            let fdb = fdb_show(&ns, vni).await;
            if fdb.contains(mac.as_str()) {
                still.push(ns);
            } else {
                last = Instant::now();
            }
        }
        pending = still;
        if !pending.is_empty() && Instant::now() >= deadline {
            bail!("MAC {mac} still in the FDB of {pending:?} after {LIMIT:?}");
        }
    }
    Ok((gone, last))
}

/// Every pid on the machine.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
}

/// Whether a new process is a container's first process in its own sandbox.
enum Sandbox {
    Yes,
    No,
    /// A `runc init` still in its parent's network namespace: look again.
    NotYet,
}

/// Classifies `pid`: a container process of the cluster in `cluster_dir` (its mounts name the
/// cluster's dockerd data roots) running `runc init` or the task's command, in a network namespace
/// other than its parent's. runc's helper processes stay in the node's namespace, whose eth0 is
/// the node's.
fn sandbox(pid: u32, cluster_dir: &str) -> Sandbox {
    let own = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if own != RUNC_INIT && own != TASK_CMDLINE {
        return Sandbox::No;
    }
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    if !mounts.contains(&format!("{cluster_dir}/")) {
        return Sandbox::No;
    }
    let netns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let parent: Option<u32> = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
    match (netns(pid), parent.and_then(netns)) {
        (Some(own), Some(parent)) if own != parent => Sandbox::Yes,
        _ if own == RUNC_INIT => Sandbox::NotYet,
        _ => Sandbox::No,
    }
}

/// Whether the network namespace of `pid` has an eth0 (false once the process is gone).
fn has_eth0(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .is_ok_and(|dev| dev.lines().any(|l| l.trim_start().starts_with("eth0:")))
}

/// The MAC of eth0 in the network namespace of `pid`, lower case; `None` without an eth0.
async fn mac_of(pid: u32) -> anyhow::Result<Option<String>> {
    let netns = format!("/proc/{pid}/ns/net");
    let out = in_netns(&netns, "ip", &["-o", "link", "show", "dev", "eth0"]).await?;
    if !out.success() {
        return Ok(None);
    }
    Ok(out
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_lowercase))
}

/// `bridge fdb show` of the VXLAN device in namespace `ns`; empty when the namespace is gone.
async fn fdb_show(ns: &str, vni: u32) -> String {
    let dev = format!("vx{vni}");
    let args = ["-n", ns, "fdb", "show", "dev", dev.as_str()];
    match process::run("bridge", &args, Duration::from_secs(5)).await {
        Ok(out) if out.success() => out.stdout,
        _ => String::new(),
    }
}
