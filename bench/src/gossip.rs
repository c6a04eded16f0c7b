//! `cargo xtask bench gossip`: how fast mesh's gossip spreads membership and endpoint records.
//!
//! Simulated (module `sim`): 10, 100 and 1,000 (or `--members`) [`Gossip`] members in this
//! process on 127.0.0.1, every datagram sealed under one key ring, each joining up to three
//! members started before it. It times until every member has seen all the others, a record and
//! its withdrawal, then one new member's join and one member's crash as seen by each member, and
//! the bytes per member per second idle and during each; one `gossip: …` line per size ends the
//! run. Real: three meshd nodes run an overlay service scaled 1→2→3→2→1 a few times; it times
//! from a new task's eth0 existing to its MAC in the VXLAN FDB of every other node on the
//! network, and from a removed task's eth0 going to its MAC leaving them.

mod real;
mod sim;
pub mod summary;

use std::time::Duration;

use anyhow::{Context, ensure};
use mesh_agent::gossip::{KeyRing, SealKey};
use mesh_tests::meshctl::BIN_DIR_ENV;

use real::{print_propagation, real_nodes};
use sim::{EVENT_POLL, JOIN_PEERS, Rate, Sim, Spread};
use summary::Summary;

/// The simulated cluster sizes measured unless `--members` says otherwise.
const SIZES: [usize; 3] = [10, 100, 1000];
/// Open files besides one socket per member: the runtime, the real nodes' pipes.
const OTHER_FILES: u64 = 256;

#[derive(clap::Args)]
pub struct GossipArgs {
    /// Benchmark release builds of meshd and of the simulation (builds them first).
    #[arg(long)]
    release: bool,
    /// Simulated cluster sizes, e.g. `1000,10000` (repeatable; default 10, 100 and 1,000). Each
    /// member holds a socket: the process needs as many open files, and more.
    #[arg(
        long = "members",
        value_name = "N",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u16).range(2..)
    )]
    members: Vec<u16>,
    /// Only the simulation: skip the 3 real nodes.
    #[arg(long)]
    simulated_only: bool,
}

pub async fn gossip(args: GossipArgs) -> anyhow::Result<()> {
    if args.release {
        // The simulation runs in this process: build this program in release too, and run that.
        // meshd only for the real nodes.
        let bins: &[&str] = if args.simulated_only {
            &[]
        } else {
            &["-p", "mesh-agent", "-p", "mesh-control", "--bins"]
        };
        let env = [(BIN_DIR_ENV, "target/release")];
        let mut again = vec!["gossip".to_owned()];
        for n in &args.members {
            again.extend(["--members".to_owned(), n.to_string()]);
        }
        if args.simulated_only {
            again.push("--simulated-only".to_owned());
        }
        let again: Vec<&str> = again.iter().map(String::as_str).collect();
        return crate::run::again_in_release(bins, &again, &env);
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
    // Refused before anything starts, rather than running the machine out of memory.
    sim::check_memory(u64::try_from(most)?, sim::available_memory()?)?;
    // One socket per member, and one more for the member that joins late.
    crate::run::ensure_open_files(u64::try_from(most)? + 1 + OTHER_FILES, "the gossip members")?;
    let keys = KeyRing::new(SealKey::generate(1).context("generating a gossip key")?);
    let mut sims = Vec::new();
    for &members in &sizes {
        eprintln!("simulating {members} gossip members");
        let sim = sim::simulate(members, &keys).await?;
        // Printed as soon as measured: a larger size may take long or not finish.
        eprintln!("{}", summary(&sim));
        sims.push(sim);
    }
    let real = if args.simulated_only {
        None
    } else {
        eprintln!("3 real nodes: endpoint propagation");
        Some(real_nodes().await)
    };

    let mut missing = print_simulated(&sims);
    println!();
    match &real {
        None => {}
        Some(Ok(p)) => print_propagation(p, profile),
        Some(Err(err)) => {
            println!("3 real nodes: not measured: {err:#}");
            missing.push("3 real nodes".into());
        }
    }
    println!();
    for s in &sims {
        println!("{}", summary(s));
    }
    ensure!(missing.is_empty(), "not measured: {}", missing.join(", "));
    Ok(())
}

fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The table of the simulated sizes, and what could not be measured; returns the latter.
fn print_simulated(sims: &[Sim]) -> Vec<String> {
    println!(
        "gossip, simulated: members in one process on 127.0.0.1, every datagram sealed under one \
         key, each joining up to {JOIN_PEERS} earlier ones; mesh-bench {} build; join and death \
         times per member, polled every {} ms",
        build_profile(),
        EVENT_POLL.as_millis()
    );
    println!(
        "{:>7} {:>9} {:>8} {:>8} {:>20} {:>20} {:>15} {:>15} {:>15} {:>9}",
        "members",
        "all see",
        "record",
        "withdraw",
        "join seen",
        "death seen",
        "idle B/s",
        "join B/s",
        "death B/s",
        "RSS"
    );
    println!(
        "{:>7} {:>9} {:>8} {:>8} {:>20} {:>20} {:>15} {:>15} {:>15} {:>9}",
        "",
        "all",
        "all",
        "all",
        "p50/p99/last (s)",
        "p50/p99/last (s)",
        "member sent/rcv",
        "member sent/rcv",
        "member sent/rcv",
        "MiB"
    );
    for s in sims {
        // Records timed over a membership that had not converged are marked.
        let mark = if s.converge.is_err() { "*" } else { "" };
        println!(
            "{:>7} {:>9} {:>8} {:>8} {:>20} {:>20} {:>15} {:>15} {:>15} {:>9.0}",
            s.members,
            seconds(&s.converge),
            format!("{}{mark}", seconds(&s.publish)),
            format!("{}{mark}", seconds(&s.withdraw)),
            spread(&s.join),
            spread(&s.death),
            bytes(Some(s.idle)),
            bytes(s.join_rate),
            bytes(s.death_rate),
            s.rss_mib,
        );
    }
    let mut missing = Vec::new();
    for s in sims {
        let n = s.members;
        for (what, err) in [
            ("membership", s.converge.as_ref().err()),
            ("record", s.publish.as_ref().err()),
            ("withdrawal", s.withdraw.as_ref().err()),
            ("join", s.join.as_ref().err()),
            ("death", s.death.as_ref().err()),
        ] {
            if let Some(err) = err {
                println!("  {n} members: {what}: {err:#}");
                missing.push(format!("{n} members: {what}"));
            }
        }
        if s.converge.is_err() {
            println!("  {n} members: * timed while members saw only part of the membership");
        }
        let (min, median, max) = s.seen_at_end;
        if min < n || max > n {
            println!(
                "  {n} members: members seen per member at the end (one joined, one died): \
                 min {min}, median {median}, max {max}"
            );
        }
        if s.dropped > 0 {
            println!(
                "  {n} members: datagrams dropped (bad seal, unknown key or malformed): {}",
                s.dropped
            );
        }
        let t = &s.converge_traffic;
        println!(
            "  {n} members: to converge, per member: {:.0} datagrams / {:.0} KiB sent; this \
             process then: {:.0} MiB resident (peak {:.0} MiB), {} open files",
            t.sent as f64 / n as f64,
            t.sent_bytes as f64 / n as f64 / 1024.0,
            s.rss_mib,
            s.peak_rss_mib,
            s.open_files
        );
    }
    missing
}

/// The `gossip: …` line of one simulated size.
fn summary(s: &Sim) -> Summary {
    let secs = |d: Duration| d.as_secs_f64();
    let at = |r: &anyhow::Result<Spread>, q: f64| r.as_ref().ok().map(|s| secs(s.quantile(q)));
    let time = |r: &anyhow::Result<Duration>| r.as_ref().ok().map(|d| secs(*d));
    let mut extra: Vec<(String, String)> = vec![
        ("join-p50-s".into(), summary::maybe(at(&s.join, 0.5), 2)),
        ("join-p99-s".into(), summary::maybe(at(&s.join, 0.99), 2)),
        ("death-p50-s".into(), summary::maybe(at(&s.death, 0.5), 2)),
        ("death-p99-s".into(), summary::maybe(at(&s.death, 0.99), 2)),
        ("record-s".into(), summary::maybe(time(&s.publish), 2)),
        ("withdraw-s".into(), summary::maybe(time(&s.withdraw), 2)),
        (
            "idle-recv-bytes-per-member-s".into(),
            format!("{:.0}", s.idle.received_bytes),
        ),
        (
            "idle-datagrams-per-member-s".into(),
            format!("{:.1}", s.idle.sent),
        ),
        (
            "idle-recv-datagrams-per-member-s".into(),
            format!("{:.1}", s.idle.received),
        ),
    ];
    for (name, rate) in [("join", s.join_rate), ("death", s.death_rate)] {
        let (sent, received) = rate.map_or((None, None), |r| {
            (Some(r.sent_bytes), Some(r.received_bytes))
        });
        extra.push((
            format!("{name}-bytes-per-member-s"),
            summary::maybe(sent, 0),
        ));
        extra.push((
            format!("{name}-recv-bytes-per-member-s"),
            summary::maybe(received, 0),
        ));
    }
    let n = s.members as f64;
    extra.extend([
        (
            "converge-kib-per-member".into(),
            format!("{:.0}", s.converge_traffic.sent_bytes as f64 / n / 1024.0),
        ),
        ("rss-mib".into(), format!("{:.0}", s.rss_mib)),
        ("peak-rss-mib".into(), format!("{:.0}", s.peak_rss_mib)),
        ("open-files".into(), s.open_files.to_string()),
        ("poll-ms".into(), EVENT_POLL.as_millis().to_string()),
        ("build".into(), build_profile().into()),
    ]);
    Summary {
        members: s.members as u64,
        converge_s: time(&s.converge),
        join_seen_all_s: at(&s.join, 1.0),
        death_seen_all_s: at(&s.death, 1.0),
        bytes_per_member_s: s.idle.sent_bytes,
        extra,
    }
}

fn seconds(time: &anyhow::Result<Duration>) -> String {
    match time {
        Ok(t) => format!("{:.2} s", t.as_secs_f64()),
        Err(_) => "n/a".into(),
    }
}

fn spread(spread: &anyhow::Result<Spread>) -> String {
    match spread {
        Ok(s) => format!(
            "{:.2}/{:.2}/{:.2}",
            s.quantile(0.5).as_secs_f64(),
            s.quantile(0.99).as_secs_f64(),
            s.quantile(1.0).as_secs_f64()
        ),
        Err(_) => "n/a".into(),
    }
}

fn bytes(rate: Option<Rate>) -> String {
    rate.map_or_else(
        || "n/a".into(),
        |r| format!("{:.0}/{:.0}", r.sent_bytes, r.received_bytes),
    )
}
