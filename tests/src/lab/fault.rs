//! `lab fault NODE …` and `lab partition …`: parsing (pure, checked before anything changes) and
//! applying them to a node's namespace.
//!
//! This kernel has no netem qdisc, so: a link is cut by taking the host end of the node's veth
//! down; loss is an iptables `statistic --mode random` DROP; delay is an iptables NFQUEUE whose
//! packets a delayer process (`mesh-lab-delay`, see [`super::delay`]) holds for the delay before
//! accepting them; a partition is iptables DROPs by destination address. The rules live in the
//! node's own namespace, in two chains of the mangle table's POSTROUTING (so they see what the
//! node sends and what it forwards for its containers): they go away with the namespace.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};

use super::state::{LabNode, LabState, NodeFaults};
use crate::process::{run_sync, run_sync_ok};

/// Partition rules; jumped to first.
const PARTITION_CHAIN: &str = "MESHLAB-PARTITION";
/// Loss and delay rules; jumped to after the partition's.
const FAULT_CHAIN: &str = "MESHLAB-FAULT";
/// The NFQUEUE number of the delayer (queues are per network namespace).
pub const DELAY_QUEUE: u16 = 0;
/// How long a link taken up again may take to carry packets.
const LINK_UP: Duration = Duration::from_secs(5);
/// The longest delay a lab adds.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// One `lab fault` argument list, parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    LinkDown,
    LinkUp,
    /// Outgoing packets held this long.
    Delay(Duration),
    /// Percentage of outgoing packets dropped (0 < p ≤ 100).
    Loss(f64),
    /// Link up, no loss, no delay.
    Heal,
}

impl Fault {
    /// Parses `link-down`, `link-up`, `delay 50ms`, `loss 5%` or `heal`.
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let usage = "expected link-down, link-up, delay DURATION (e.g. 50ms), loss PERCENT (e.g. 5%) \
                     or heal";
        match words.as_slice() {
            ["link-down"] => Ok(Self::LinkDown),
            ["link-up"] => Ok(Self::LinkUp),
            ["heal"] => Ok(Self::Heal),
            ["delay", value] => parse_delay(value).map(Self::Delay),
            ["loss", value] => parse_loss(value).map(Self::Loss),
            ["delay"] | ["loss"] => bail!("`{}` needs a value: {usage}", words[0]),
            [] => bail!("no fault given: {usage}"),
            _ => bail!("bad fault {:?}: {usage}", words.join(" ")),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LinkDown => f.write_str("link-down"),
            Self::LinkUp => f.write_str("link-up"),
            Self::Delay(d) => write!(f, "delay {}ms", d.as_millis()),
            Self::Loss(p) => write!(f, "loss {p}%"),
            Self::Heal => f.write_str("heal"),
        }
    }
}

fn parse_delay(value: &str) -> anyhow::Result<Duration> {
    let delay = humantime::parse_duration(value)
        .ok()
        .filter(|d| *d >= Duration::from_millis(1) && *d <= MAX_DELAY)
        .filter(|d| d.subsec_nanos() % 1_000_000 == 0);
    delay.with_context(|| {
        format!(
            "bad delay {value:?}: give whole milliseconds from 1ms to {}s, e.g. 50ms",
            MAX_DELAY.as_secs()
        )
    })
}

fn parse_loss(value: &str) -> anyhow::Result<f64> {
    let percent = value
        .strip_suffix('%')
        .and_then(|p| p.parse::<f64>().ok())
        .filter(|p| p.is_finite() && *p > 0.0 && *p <= 100.0);
    percent.with_context(|| {
        format!("bad loss {value:?}: give a percentage above 0 and at most 100, e.g. 5%")
    })
}

/// A partition: groups of node numbers; every pair of nodes from different groups is cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub groups: Vec<Vec<usize>>,
}

impl Partition {
    /// Parses `1,2/3,4` (`node1` works too) against a lab of `nodes` nodes.
    pub fn parse(spec: &str, nodes: usize) -> anyhow::Result<Self> {
        let usage = "expected groups of node numbers separated by `/`, e.g. 1,2/3,4";
        let mut groups = Vec::new();
        let mut seen = Vec::new();
        for group in spec.split('/') {
            let mut members = Vec::new();
            for member in group.split(',') {
                let member = member.trim();
                let number = member.strip_prefix("node").unwrap_or(member);
                let Ok(index) = number.parse::<usize>() else {
                    bail!("bad partition {spec:?}: {member:?} is not a node number; {usage}");
                };
                if !(1..=nodes).contains(&index) {
                    bail!(
                        "bad partition {spec:?}: there is no node{index} (the lab has node1 to node{nodes})"
                    );
                }
                if seen.contains(&index) {
                    bail!("bad partition {spec:?}: node{index} is in it twice");
                }
                seen.push(index);
                members.push(index);
            }
            groups.push(members);
        }
        if groups.len() < 2 {
            bail!("bad partition {spec:?}: it needs at least two groups; {usage}");
        }
        Ok(Self { groups })
    }

    /// The nodes that `index` must not reach: those of the other groups (none if it is in none).
    pub fn cut_from(&self, index: usize) -> Vec<usize> {
        let Some(own) = self.groups.iter().position(|g| g.contains(&index)) else {
            return Vec::new();
        };
        self.groups
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != own)
            .flat_map(|(_, g)| g.iter().copied())
            .collect()
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|g| g.iter().map(usize::to_string).collect::<Vec<_>>().join(","))
            .collect();
        f.write_str(&groups.join("/"))
    }
}

/// Applies `fault` to `node` and records it in the lab's record.
pub fn apply(state: &mut LabState, node: &LabNode, fault: Fault) -> anyhow::Result<()> {
    let mut faults = state.faults.get(&node.name).cloned().unwrap_or_default();
    let was_down = faults.link_down;
    match fault {
        Fault::LinkDown => faults.link_down = true,
        Fault::LinkUp => faults.link_down = false,
        Fault::Delay(d) => faults.delay_ms = Some(d.as_millis() as u64),
        Fault::Loss(p) => faults.loss_percent = Some(p),
        Fault::Heal => {
            faults.link_down = false;
            faults.delay_ms = None;
            faults.loss_percent = None;
        }
    }
    let mut outcome = program(node, &mut faults);
    if outcome.is_ok() && was_down && !faults.link_down {
        forget_neighbours(state, node);
        if faults.loss_percent.is_none() {
            let delay = Duration::from_millis(faults.delay_ms.unwrap_or(0));
            outcome = wait_carrying(node, delay);
        }
    }
    if faults.is_empty() {
        state.faults.remove(&node.name);
    } else {
        state.faults.insert(node.name.clone(), faults);
    }
    state.save()?;
    outcome
}

/// Drops the neighbour entries that failed while a node's link was down, on the node and on the
/// others for its address: the kernel would otherwise hold a failed entry for up to a second more
/// before it asks again, and the restored link would seem dead meanwhile.
fn forget_neighbours(state: &LabState, node: &LabNode) {
    let _ = run_sync("ip", &["-n", &node.netns, "neigh", "flush", "dev", "eth0"]);
    let addr = node.addr.to_string();
    for other in state.nodes().iter().filter(|o| o.index != node.index) {
        let _ = run_sync(
            "ip",
            &[
                "-n",
                &other.netns,
                "neigh",
                "flush",
                "to",
                &addr,
                "dev",
                "eth0",
            ],
        );
    }
}

/// Waits until a link taken up again carries packets: the kernel activates it up to a second
/// after `ip link set up` returns. The host, on the lab's bridge, pings the node (whose answers
/// may be held for `delay`).
fn wait_carrying(node: &LabNode, delay: Duration) -> anyhow::Result<()> {
    let addr = node.addr.to_string();
    let answer = format!("{:.3}", (Duration::from_millis(200) + delay).as_secs_f64());
    let deadline = std::time::Instant::now() + LINK_UP + 2 * delay;
    while std::time::Instant::now() < deadline {
        let ping = run_sync("ping", &["-c", "1", "-W", &answer, "-q", &addr]);
        if ping.is_ok_and(|o| o.success()) {
            return Ok(());
        }
    }
    bail!(
        "{}'s link is up but {addr} did not answer within {} s",
        node.name,
        LINK_UP.as_secs()
    )
}

/// Makes the node's link, fault chain and delayer match `faults`.
fn program(node: &LabNode, faults: &mut NodeFaults) -> anyhow::Result<()> {
    let state = if faults.link_down { "down" } else { "up" };
    run_sync_ok("ip", &["link", "set", "dev", &node.netns, state])?;
    ensure_chains(node)?;
    iptables(node, &["-F", FAULT_CHAIN])?;
    if let Some(percent) = faults.loss_percent {
        let probability = format!("{:.6}", percent / 100.0);
        iptables(
            node,
            &[
                "-A",
                FAULT_CHAIN,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ],
        )?;
    }
    if let Some(pid) = faults.delayer.take() {
        super::delay::stop(pid);
    }
    if let Some(ms) = faults.delay_ms {
        faults.delayer = Some(super::delay::start(node, Duration::from_millis(ms))?);
        let queue = DELAY_QUEUE.to_string();
        iptables(
            node,
            &[
                "-A",
                FAULT_CHAIN,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue,
                "--queue-bypass",
            ],
        )?;
    }
    Ok(())
}

/// Cuts every pair of nodes from different groups (replacing any partition before), or, with
/// `None`, heals the partition.
pub fn partition(state: &mut LabState, partition: Option<&Partition>) -> anyhow::Result<()> {
    let nodes = state.nodes();
    let mut outcome = Ok(());
    for node in &nodes {
        let step = ensure_chains(node).and_then(|()| {
            iptables(node, &["-F", PARTITION_CHAIN])?;
            for other in partition
                .map(|p| p.cut_from(node.index))
                .unwrap_or_default()
            {
                let addr = nodes[other - 1].addr.to_string();
                iptables(node, &["-A", PARTITION_CHAIN, "-d", &addr, "-j", "DROP"])?;
            }
            Ok(())
        });
        if outcome.is_ok() {
            outcome = step;
        }
    }
    state.partition = partition.map(ToString::to_string);
    state.save()?;
    outcome
}

/// Creates the two chains in the node's mangle table and jumps to them from POSTROUTING for what
/// leaves through `eth0`: the partition's first, so that a packet the delayer accepts later has
/// passed it already.
fn ensure_chains(node: &LabNode) -> anyhow::Result<()> {
    for chain in [PARTITION_CHAIN, FAULT_CHAIN] {
        if !iptables_ok(node, &["-n", "-L", chain]) {
            iptables(node, &["-N", chain])?;
        }
    }
    let jump = |chain| ["-o", "eth0", "-j", chain];
    if !iptables_ok(
        node,
        &[&["-C", "POSTROUTING"][..], &jump(PARTITION_CHAIN)].concat(),
    ) {
        iptables(
            node,
            &[&["-I", "POSTROUTING", "1"][..], &jump(PARTITION_CHAIN)].concat(),
        )?;
    }
    if !iptables_ok(
        node,
        &[&["-C", "POSTROUTING"][..], &jump(FAULT_CHAIN)].concat(),
    ) {
        iptables(
            node,
            &[&["-A", "POSTROUTING"][..], &jump(FAULT_CHAIN)].concat(),
        )?;
    }
    Ok(())
}

fn iptables_args<'a>(node: &'a LabNode, args: &[&'a str]) -> Vec<&'a str> {
    let mut full = vec![
        "netns",
        "exec",
        node.netns.as_str(),
        "iptables",
        "-w",
        "-t",
        "mangle",
    ];
    full.extend_from_slice(args);
    full
}

fn iptables(node: &LabNode, args: &[&str]) -> anyhow::Result<()> {
    run_sync_ok("ip", &iptables_args(node, args)).map(drop)
}

fn iptables_ok(node: &LabNode, args: &[&str]) -> bool {
    run_sync("ip", &iptables_args(node, args)).is_ok_and(|o| o.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn faults_parse() {
        let table = [
            ("link-down", Fault::LinkDown),
            ("link-up", Fault::LinkUp),
            ("heal", Fault::Heal),
            ("delay 50ms", Fault::Delay(Duration::from_millis(50))),
            ("delay 1s", Fault::Delay(Duration::from_secs(1))),
            ("loss 5%", Fault::Loss(5.0)),
            ("loss 0.5%", Fault::Loss(0.5)),
            ("loss 100%", Fault::Loss(100.0)),
        ];
        for (text, fault) in table {
            assert_eq!(Fault::parse(&words(text)).unwrap(), fault, "{text}");
        }
    }

    #[test]
    fn bad_faults_are_refused_with_one_line() {
        for text in [
            "",
            "delay",
            "loss",
            "delay 50",
            "delay -5ms",
            "delay 0ms",
            "delay 11s",
            "delay 1.5ms",
            "delay fast",
            "loss 5",
            "loss 0%",
            "loss 101%",
            "loss -1%",
            "loss NaN%",
            "loss x%",
            "link-down now",
            "unplug",
            "heal delay",
        ] {
            let err = Fault::parse(&words(text)).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{text}: {err}");
        }
    }

    #[test]
    fn partitions_parse_and_cut_exactly_across_groups() {
        let p = Partition::parse("1,2/3,4", 5).unwrap();
        assert_eq!(p.groups, vec![vec![1, 2], vec![3, 4]]);
        assert_eq!(p.cut_from(1), vec![3, 4]);
        assert_eq!(p.cut_from(4), vec![1, 2]);
        assert_eq!(p.cut_from(5), Vec::<usize>::new());
        assert_eq!(p.to_string(), "1,2/3,4");
        let p = Partition::parse("node1/node2/3", 3).unwrap();
        assert_eq!(p.cut_from(2), vec![1, 3]);
    }

    #[test]
    fn bad_partitions_are_refused() {
        for spec in [
            "", "1,2", "1/", "/2", "1,,2/3", "1/1", "1,2/2,3", "1/6", "0/1", "a/b", "1;2/3",
        ] {
            let err = Partition::parse(spec, 5).unwrap_err().to_string();
            assert!(err.starts_with("bad partition"), "{spec}: {err}");
        }
    }
}
