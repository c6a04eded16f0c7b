//! `cargo xtask bench gossip`: how fast mesh's gossip spreads membership and endpoint records.
//!
//! Simulated: 10, 100 and 1,000 [`Gossip`] members in this process on 127.0.0.1 under one key,
//! each joining up to three members started before it. It times until every member has seen all
//! the others, until a record published at one member is visible at every member, and until its
//! withdrawal is; and counts datagrams. Real: three meshd nodes run an overlay service scaled
//! 1→2→3→2→1 a few times; it times from a new task's eth0 existing to its MAC in the VXLAN FDB of
//! every other node on the network, and from a removed task's eth0 going to its MAC leaving them.

mod real;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use mesh_agent::gossip::{EndpointRecord, Gossip, GossipConfig, KeyRing, SealKey};
use mesh_tests::meshctl::BIN_DIR_ENV;

use real::{print_propagation, real_nodes};

/// The simulated cluster sizes measured unless `--members` says otherwise.
const SIZES: [usize; 3] = [10, 100, 1000];
/// How many earlier members each simulated member joins through.
const JOIN_PEERS: usize = 3;
/// How long membership may take to converge, and then a record or its withdrawal to spread.
const MEMBERSHIP_LIMIT: Duration = Duration::from_secs(180);
const RECORD_LIMIT: Duration = Duration::from_secs(60);
/// The window over which idle traffic is counted.
const IDLE: Duration = Duration::from_secs(5);
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
        // The simulation runs in this process: build this program in release too, and run that.
        let bins = ["-p", "mesh-agent", "-p", "mesh-control", "--bins"];
        let env = [(BIN_DIR_ENV, "target/release")];
        let mut again = vec!["gossip".to_owned()];
        for n in &args.members {
            again.extend(["--members".to_owned(), n.to_string()]);
        }
        if args.simulated_only {
            again.push("--simulated-only".to_owned());
        }
        let again: Vec<&str> = again.iter().map(String::as_str).collect();
        return crate::run::again_in_release(&bins, &again, &env);
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
        match crate::run::build(false, &["gossip"])? {
            Some(profile) => profile,
            None => return Ok(()),
        }
    };
    let most = sizes.iter().copied().max().unwrap_or(0);
    crate::run::ensure_open_files(u64::try_from(most)? + 256, "the gossip members")?;
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

    let sim_profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "gossip, simulated: members in one process on 127.0.0.1, one key, each joining up to \
         {JOIN_PEERS} earlier ones; mesh-bench {sim_profile} build"
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
        aliases: Vec::new(),
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
