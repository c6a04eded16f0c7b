//! The routing mesh: a port a service publishes in ingress mode answers on every node. A node
//! running tasks of the service sends the port's connections to those tasks (through their
//! gateway-bridge addresses); a node without one forwards them, masqueraded so the replies come
//! back through it, to a node that has. Written as iptables NAT rules in the node's namespace, in
//! two chains of our own replaced atomically (`iptables-restore --noflush`) whenever the endpoint
//! table changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::gossip::EndpointRecord;

const CHAIN: &str = "MESH-INGRESS";
const SNAT_CHAIN: &str = "MESH-INGRESS-SNAT";

/// Where one published port's connections go from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Targets {
    /// To these local tasks' addresses, on the target port.
    Local(Vec<Ipv4Addr>, u16),
    /// To these other nodes, on the same published port.
    Remote(Vec<Ipv4Addr>),
}

/// The routing mesh's plan for this node: by (udp, published port).
pub(super) type Plan = BTreeMap<(bool, u16), Targets>;

/// What this node does for each published port, from every visible endpoint record: local
/// tasks (those whose `vtep` is ours, found in `local` by task id) first, else the nodes that
/// run one.
pub(super) fn plan(
    records: &[EndpointRecord],
    vtep: Ipv4Addr,
    local: &BTreeMap<String, Ipv4Addr>,
) -> Plan {
    let mut locals: BTreeMap<(bool, u16), (BTreeSet<Ipv4Addr>, u16)> = BTreeMap::new();
    let mut remotes: BTreeMap<(bool, u16), BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for record in records {
        for port in &record.ingress_ports {
            let key = (port.udp, port.published);
            if record.vtep == vtep {
                if let Some(addr) = local.get(&record.task_id) {
                    let entry = locals
                        .entry(key)
                        .or_insert_with(|| (BTreeSet::new(), port.target));
                    entry.0.insert(*addr);
                }
            } else {
                remotes.entry(key).or_default().insert(record.vtep);
            }
        }
    }
    let mut plan = Plan::new();
    for (key, nodes) in remotes {
        plan.insert(key, Targets::Remote(nodes.into_iter().collect()));
    }
    for (key, (addrs, target)) in locals {
        plan.insert(key, Targets::Local(addrs.into_iter().collect(), target));
    }
    plan
}

/// The `iptables-restore --noflush` input that makes the two chains hold `plan`: a DNAT per
/// target, spread evenly with `statistic` rules as kube-proxy writes them.
pub(super) fn render(plan: &Plan) -> String {
    let mut out = format!("*nat\n:{CHAIN} - [0:0]\n:{SNAT_CHAIN} - [0:0]\n");
    for ((udp, published), targets) in plan {
        let proto = if *udp { "udp" } else { "tcp" };
        let destinations: Vec<String> = match targets {
            Targets::Local(addrs, target) => {
                addrs.iter().map(|a| format!("{a}:{target}")).collect()
            }
            Targets::Remote(nodes) => nodes.iter().map(|n| format!("{n}:{published}")).collect(),
        };
        let n = destinations.len();
        for (i, to) in destinations.iter().enumerate() {
            let remaining = n - i;
            let pick = if remaining > 1 {
                format!(
                    " -m statistic --mode random --probability {:.5}",
                    1.0 / remaining as f64
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "-A {CHAIN} -p {proto} --dport {published}{pick} -j DNAT --to-destination {to}"
            );
        }
        if let Targets::Remote(nodes) = targets {
            for node in nodes {
                let _ = writeln!(
                    out,
                    "-A {SNAT_CHAIN} -d {node} -p {proto} --dport {published} -m conntrack --ctstate DNAT -j MASQUERADE"
                );
            }
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// The jumps into our chains, and forwarding of what they translated past dockerd's DROP policy.
const JUMPS: &[(&str, &str, &[&str])] = &[
    (
        "nat",
        "PREROUTING",
        &["-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN],
    ),
    (
        "nat",
        "OUTPUT",
        &["-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN],
    ),
    ("nat", "POSTROUTING", &["-j", SNAT_CHAIN]),
    (
        "filter",
        "FORWARD",
        &["-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"],
    ),
];

/// Replaces the chains' rules with `plan`, and makes sure the jumps into them exist. A node
/// forwards what it does not serve itself, so it turns IPv4 forwarding on.
pub(super) async fn apply(plan: &Plan) -> Result<(), String> {
    if !plan.is_empty() {
        super::nat::enable_forwarding()?;
    }
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run iptables-restore: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(render(plan).as_bytes())
            .await
            .map_err(|e| format!("writing to iptables-restore: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "iptables-restore: {}",
            stderr.lines().next().unwrap_or("failed")
        ));
    }
    for (table, chain, rule) in JUMPS {
        super::nat::ensure_first(table, chain, rule).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::IngressPort;

    fn record(task: &str, vtep: u8, udp: bool) -> EndpointRecord {
        EndpointRecord {
            network_id: "ingress".into(),
            task_id: task.into(),
            service_id: "s".into(),
            addr: Ipv4Addr::new(10, 0, 0, vtep),
            mac: [2, 0, 0, 0, 0, vtep],
            node_id: format!("n{vtep}"),
            vtep: Ipv4Addr::new(192, 168, 0, vtep),
            service_name: "web".into(),
            vip: None,
            ingress_ports: vec![IngressPort {
                udp,
                published: 8080,
                target: 80,
            }],
        }
    }

    #[test]
    fn local_tasks_win_over_forwarding() {
        let records = [record("a", 1, false), record("b", 2, false)];
        let local = BTreeMap::from([("a".to_owned(), Ipv4Addr::new(172, 18, 0, 2))]);
        let here = plan(&records, Ipv4Addr::new(192, 168, 0, 1), &local);
        assert_eq!(
            here[&(false, 8080)],
            Targets::Local(vec![Ipv4Addr::new(172, 18, 0, 2)], 80)
        );
        let elsewhere = plan(&records, Ipv4Addr::new(192, 168, 0, 3), &BTreeMap::new());
        assert_eq!(
            elsewhere[&(false, 8080)],
            Targets::Remote(vec![
                Ipv4Addr::new(192, 168, 0, 1),
                Ipv4Addr::new(192, 168, 0, 2)
            ])
        );
    }

    #[test]
    fn rules_spread_evenly_and_masquerade_what_is_forwarded() {
        let records = [record("a", 1, true), record("b", 2, true)];
        let text = render(&plan(
            &records,
            Ipv4Addr::new(192, 168, 0, 3),
            &BTreeMap::new(),
        ));
        assert!(text.starts_with("*nat\n:MESH-INGRESS - [0:0]\n"), "{text}");
        assert!(text.contains("-A MESH-INGRESS -p udp --dport 8080 -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 192.168.0.1:8080\n"), "{text}");
        assert!(
            text.contains(
                "-A MESH-INGRESS -p udp --dport 8080 -j DNAT --to-destination 192.168.0.2:8080\n"
            ),
            "{text}"
        );
        assert!(text.contains("-A MESH-INGRESS-SNAT -d 192.168.0.2 -p udp --dport 8080 -m conntrack --ctstate DNAT -j MASQUERADE\n"), "{text}");
        assert!(text.ends_with("COMMIT\n"));
        // Nothing published: the chains are emptied.
        assert_eq!(
            render(&Plan::new()),
            "*nat\n:MESH-INGRESS - [0:0]\n:MESH-INGRESS-SNAT - [0:0]\nCOMMIT\n"
        );
    }
}
