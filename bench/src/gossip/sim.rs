//! The simulated part of `cargo xtask bench gossip`: `n` real [`Gossip`] members in this process
//! on 127.0.0.1, every datagram sealed under one key ring. Once they have all seen each other it
//! times a record and its withdrawal, counts idle traffic, then has one new member join and one
//! member crash (its task stopped, its socket closed, no leave), timing per member until each sees
//! that, and counting the bytes sent meanwhile.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use mesh_agent::gossip::{EndpointRecord, Gossip, GossipConfig, KeyRing};

/// How many earlier members each simulated member joins through.
pub const JOIN_PEERS: usize = 3;
/// How long membership may take to converge: a base, and more per member.
const MEMBERSHIP_BASE: Duration = Duration::from_secs(180);
const MEMBERSHIP_PER_MEMBER: Duration = Duration::from_millis(60);
/// How long a record, its withdrawal, a join or a death may take to be seen everywhere.
const SPREAD_LIMIT: Duration = Duration::from_secs(180);
/// The window over which idle traffic is counted.
const IDLE: Duration = Duration::from_secs(10);
/// How often members are looked at while a join or a death spreads: the times' resolution.
pub const EVENT_POLL: Duration = Duration::from_millis(10);

/// Memory the simulation holds per member pair (every member holds the whole membership) and
/// per member (its socket, receive buffer and tasks), fitted to the runs of 300 and 500 members.
const BYTES_PER_PAIR: u64 = 520;
const BYTES_PER_MEMBER: u64 = 100 << 10;

/// About how much memory `n` simulated members take once converged.
pub fn memory_needed(n: u64) -> u64 {
    n.saturating_mul(n)
        .saturating_mul(BYTES_PER_PAIR)
        .saturating_add(n.saturating_mul(BYTES_PER_MEMBER))
}

/// Refuses a size whose members would not fit in `available` bytes of memory.
pub fn check_memory(n: u64, available: u64) -> anyhow::Result<()> {
    let need = memory_needed(n);
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    anyhow::ensure!(
        need <= available,
        "{n} simulated members need about {:.1} GiB (each holds the whole membership: about \
         {BYTES_PER_PAIR} bytes per member pair) but {:.1} GiB of memory are available",
        gib(need),
        gib(available)
    );
    Ok(())
}

/// MemAvailable from /proc/meminfo, in bytes.
pub fn available_memory() -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemAvailable in /proc/meminfo")?;
    Ok(kib.saturating_mul(1024))
}

/// One simulation's figures; a time is `Err` with why it could not be measured.
pub struct Sim {
    pub members: usize,
    pub converge: anyhow::Result<Duration>,
    pub publish: anyhow::Result<Duration>,
    pub withdraw: anyhow::Result<Duration>,
    /// Per member, from the newcomer's join until it sees the newcomer.
    pub join: anyhow::Result<Spread>,
    /// Per surviving member, from the crash until it no longer holds the dead member.
    pub death: anyhow::Result<Spread>,
    /// Traffic per member from the first join until all saw all.
    pub converge_traffic: Traffic,
    /// Per member per second: while nothing changes, during the join, during the death.
    pub idle: Rate,
    pub join_rate: Option<Rate>,
    pub death_rate: Option<Rate>,
    /// Members seen per member at the end (min, median, max); false suspicions show here.
    pub seen_at_end: (usize, usize, usize),
    pub dropped: u64,
    /// This process once all members had converged: resident memory (MiB) and open files.
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub open_files: usize,
}

/// When each member first saw an event, from the event.
pub struct Spread {
    /// Sorted.
    pub times: Vec<Duration>,
}

impl Spread {
    /// The time at quantile `q` (0.5 median, 0.99 p99, 1.0 the last member).
    pub fn quantile(&self, q: f64) -> Duration {
        let Some(last) = self.times.len().checked_sub(1) else {
            return Duration::ZERO;
        };
        let at = ((last as f64) * q).ceil() as usize;
        self.times[at.min(last)]
    }
}

/// Totals over all members: datagrams and bytes, sent and received, and dropped datagrams.
#[derive(Clone, Copy, Default)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub dropped: u64,
}

impl Traffic {
    fn since(self, before: Traffic) -> Traffic {
        Traffic {
            sent: self.sent - before.sent,
            received: self.received - before.received,
            sent_bytes: self.sent_bytes - before.sent_bytes,
            received_bytes: self.received_bytes - before.received_bytes,
            dropped: self.dropped - before.dropped,
        }
    }

    /// Per member per second over `window`.
    fn rate(self, members: usize, window: Duration) -> Rate {
        let per = |v: u64| v as f64 / members as f64 / window.as_secs_f64().max(1e-3);
        Rate {
            sent: per(self.sent),
            received: per(self.received),
            sent_bytes: per(self.sent_bytes),
            received_bytes: per(self.received_bytes),
        }
    }
}

/// Datagrams and bytes per member per second.
#[derive(Clone, Copy)]
pub struct Rate {
    pub sent: f64,
    pub received: f64,
    pub sent_bytes: f64,
    pub received_bytes: f64,
}

/// Starts `n` members, joins them, and measures (see the module's doc).
pub async fn simulate(n: usize, keys: &KeyRing) -> anyhow::Result<Sim> {
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        members.push(start(format!("sim-{i}"), keys).await?);
    }
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let start_at = Instant::now();
    for i in 1..n {
        members[i].join(peers(&members[..i], &mut seed)).await?;
    }
    // Each poll reads every pending member's count: poll large clusters less often.
    let poll = Duration::from_millis(u64::try_from(n / 2)?)
        .clamp(Duration::from_millis(10), Duration::from_millis(500));
    let limit = MEMBERSHIP_BASE + MEMBERSHIP_PER_MEMBER * u32::try_from(n)?;
    let converge = every(start_at, &members, poll, limit, |g| g.member_count() >= n)
        .await
        .map(|s| s.quantile(1.0))
        .with_context(|| {
            let (min, median, max) = seen(&members);
            format!(
                "every member seeing all {n} (members seen: min {min}, median {median}, max {max})"
            )
        });
    match &converge {
        Ok(t) => eprintln!("  all {n} see all after {:.2} s", t.as_secs_f64()),
        Err(err) => eprintln!("  not converged: {err:#}"),
    }
    let converge_traffic = traffic(&members);
    let (rss_mib, peak_rss_mib) = memory()?;
    let open_files = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    // Records spread over whatever membership there is, converged or not.
    let (publish, withdraw) = records(&members).await?;
    let before = traffic(&members);
    tokio::time::sleep(IDLE).await;
    let idle = traffic(&members).since(before).rate(n, IDLE);

    let (join, join_rate, death, death_rate) = if converge.is_ok() {
        eprintln!("  one member joins, then one crashes");
        let newcomer = start(format!("sim-{n}"), keys).await?;
        let (join, join_rate) = join_event(&members, &newcomer, &mut seed).await?;
        members.push(newcomer);
        // The member that crashes: not the newcomer, nor the record's origin.
        let victim = members.remove(n / 3);
        let (death, death_rate) = death_event(&members, victim).await;
        (join, join_rate, death, death_rate)
    } else {
        let why = || anyhow::anyhow!("membership never converged");
        (Err(why()), None, Err(why()), None)
    };
    let end = traffic(&members);
    Ok(Sim {
        members: n,
        converge,
        publish,
        withdraw,
        join,
        death,
        converge_traffic,
        idle,
        join_rate,
        death_rate,
        seen_at_end: seen(&members),
        dropped: end.dropped,
        rss_mib,
        peak_rss_mib,
        open_files,
    })
}

async fn start(name: String, keys: &KeyRing) -> anyhow::Result<Gossip> {
    let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let config = GossipConfig::new(name.clone(), bind, keys.clone());
    let (gossip, _changes) = Gossip::start(config)
        .await
        .with_context(|| format!("starting gossip member {name}"))?;
    Ok(gossip)
}

/// Up to [`JOIN_PEERS`] distinct random addresses among `among`.
fn peers(among: &[Gossip], seed: &mut u64) -> Vec<SocketAddr> {
    let mut peers = Vec::new();
    while peers.len() < JOIN_PEERS.min(among.len()) {
        let addr = among[random_below(seed, among.len())].identity().addr;
        if !peers.contains(&addr) {
            peers.push(addr);
        }
    }
    peers
}

/// `newcomer` joins through random members of `members`: per member, the time until it sees
/// the newcomer, and the traffic of `members` per member meanwhile.
async fn join_event(
    members: &[Gossip],
    newcomer: &Gossip,
    seed: &mut u64,
) -> anyhow::Result<(anyhow::Result<Spread>, Option<Rate>)> {
    let addr = newcomer.identity().addr;
    let before = traffic(members);
    let start = Instant::now();
    newcomer.join(peers(members, seed)).await?;
    let spread = every(start, members, EVENT_POLL, SPREAD_LIMIT, |g| {
        g.has_member(addr)
    })
    .await
    .context("every member seeing the new member");
    let rate = traffic(members)
        .since(before)
        .rate(members.len(), start.elapsed());
    Ok((spread, Some(rate)))
}

/// `victim` crashes: dropping it aborts its task and closes its socket, without leaving. Per
/// survivor, the time until it no longer holds the victim, and their traffic per member meanwhile.
fn death_event(
    survivors: &[Gossip],
    victim: Gossip,
) -> impl Future<Output = (anyhow::Result<Spread>, Option<Rate>)> {
    let addr = victim.identity().addr;
    let before = traffic(survivors);
    let start = Instant::now();
    drop(victim);
    async move {
        let spread = every(start, survivors, EVENT_POLL, SPREAD_LIMIT, |g| {
            !g.has_member(addr)
        })
        .await
        .context("every member seeing the dead member down");
        let rate = traffic(survivors)
            .since(before)
            .rate(survivors.len(), start.elapsed());
        (spread, Some(rate))
    }
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
    let has = |g: &Gossip| g.records().iter().any(|r| r.key() == key);
    let poll = Duration::from_millis(5);
    let start = Instant::now();
    origin.publish(record.clone()).await?;
    let published = every(start, members, poll, SPREAD_LIMIT, has)
        .await
        .map(|s| s.quantile(1.0))
        .context("the record reaching every member");
    let start = Instant::now();
    origin.withdraw(key.clone()).await?;
    let withdrawn = every(start, members, poll, SPREAD_LIMIT, |g| !has(g))
        .await
        .map(|s| s.quantile(1.0))
        .context("the withdrawal reaching every member");
    Ok((published, withdrawn))
}

/// Per member, the time from `start` to the first poll at which `holds` held for it; an error
/// if some member never did within `limit`.
async fn every(
    start: Instant,
    members: &[Gossip],
    poll: Duration,
    limit: Duration,
    mut holds: impl FnMut(&Gossip) -> bool,
) -> anyhow::Result<Spread> {
    let mut pending: Vec<&Gossip> = members.iter().collect();
    let mut times = Vec::with_capacity(members.len());
    loop {
        let now = start.elapsed();
        pending.retain(|g| {
            let done = holds(g);
            if done {
                times.push(now);
            }
            !done
        });
        if pending.is_empty() {
            times.sort_unstable();
            return Ok(Spread { times });
        }
        if now >= limit {
            bail!(
                "{} of {} members not there after {limit:?}",
                pending.len(),
                members.len()
            );
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

/// Totals over `members`; dropped: any reason but injected loss.
fn traffic(members: &[Gossip]) -> Traffic {
    members
        .iter()
        .map(Gossip::stats)
        .fold(Traffic::default(), |t, s| Traffic {
            sent: t.sent + s.sent,
            received: t.received + s.received,
            sent_bytes: t.sent_bytes + s.sent_bytes,
            received_bytes: t.received_bytes + s.received_bytes,
            dropped: t.dropped + s.dropped_bad_seal + s.dropped_unknown_key + s.dropped_malformed,
        })
}

/// This process's resident memory now and at its peak, in MiB.
fn memory() -> anyhow::Result<(f64, f64)> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = |key: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key} in /proc/self/status"))?;
        let value = line.trim().trim_end_matches("kB").trim();
        let kib: f64 = value
            .parse()
            .with_context(|| format!("bad {key} {value:?} in /proc/self/status"))?;
        Ok(kib / 1024.0)
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_that_do_not_fit_in_memory_are_refused() {
        const GIB: u64 = 1 << 30;
        // (members, available, fits)
        let cases = [
            (1_000, GIB, true),
            (1_000, 400 << 20, false),
            (5_000, 24 * GIB, true),
            (10_000, 24 * GIB, false),
            (10_000, 64 * GIB, true),
            (u64::MAX, u64::MAX, true),
        ];
        for (n, available, fits) in cases {
            let checked = check_memory(n, available);
            assert_eq!(checked.is_ok(), fits, "{n} in {available}: {checked:?}");
        }
        let err = check_memory(10_000, 24 * GIB)
            .expect_err("too big")
            .to_string();
        assert!(
            err.starts_with("10000 simulated members need about 49."),
            "{err}"
        );
        assert!(
            err.ends_with("but 24.0 GiB of memory are available"),
            "{err}"
        );
    }

    #[test]
    fn quantiles_pick_the_member_at_or_above() {
        let ms = |v: &[u64]| Spread {
            times: v.iter().map(|&m| Duration::from_millis(m)).collect(),
        };
        let cases: [(&[u64], f64, u64); 6] = [
            (&[], 0.5, 0),
            (&[7], 0.99, 7),
            (&[1, 2, 3], 0.5, 2),
            (&[1, 2, 3, 4], 0.5, 3),
            (&[1, 2, 3, 4], 1.0, 4),
            (&(1..=1000).collect::<Vec<_>>(), 0.99, 991),
        ];
        for (times, q, want) in cases {
            assert_eq!(
                ms(times).quantile(q),
                Duration::from_millis(want),
                "{times:?} {q}"
            );
        }
    }
}
