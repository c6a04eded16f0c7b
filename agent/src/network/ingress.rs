//! The routing mesh: a port a service publishes in ingress mode answers on every node, and its
//! connections are spread over all the service's tasks, wherever they run (as Swarm's does). A
//! node sends a connection to one of its own tasks (through its gateway-bridge address), or
//! forwards it, masqueraded so the replies come back through it, to a node that runs tasks, each
//! node weighted by how many. A connection forwarded by another node is served by the tasks here,
//! so it crosses at most one more node. Written as iptables NAT rules in the node's namespace, in
//! two chains of our own replaced atomically (`iptables-restore --noflush`) whenever the endpoint
//! table changes.
//!
//! A published port also answers on the node's loopback (`curl localhost:8080` on a node, as with
//! Swarm). A connection from 127.0.0.1 DNATed to a task or another node leaves by a real
//! interface, which the kernel allows only with `route_localnet`; it is masqueraded on its way
//! out, and a guard drops what arrives from elsewhere for a loopback address (what
//! `route_localnet` would let in otherwise: kube-proxy's CVE-2020-8558 rule).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::gossip::EndpointRecord;

const CHAIN: &str = "MESH-INGRESS";
const SNAT_CHAIN: &str = "MESH-INGRESS-SNAT";

/// Where one published port's connections go from this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Targets {
    /// This node's tasks' addresses, reached on `target`.
    pub(super) local: BTreeSet<Ipv4Addr>,
    pub(super) target: u16,
    /// Other nodes running tasks, with how many, reached on the published port.
    pub(super) remote: BTreeMap<Ipv4Addr, usize>,
}

/// The routing mesh's plan for this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// By (udp, published port).
    pub(super) ports: BTreeMap<(bool, u16), Targets>,
    /// The other nodes that hold endpoints: connections from them were forwarded.
    pub(super) peers: BTreeSet<Ipv4Addr>,
}

impl Plan {
    pub(super) fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

/// What this node does for each published port, from every visible endpoint record: this
/// node's tasks are those whose `vtep` is ours, found in `local` by task id.
pub(super) fn plan(
    records: &[EndpointRecord],
    vtep: Ipv4Addr,
    local: &BTreeMap<String, Ipv4Addr>,
) -> Plan {
    let mut plan = Plan::default();
    for record in records {
        if record.vtep != vtep {
            plan.peers.insert(record.vtep);
        }
        for port in &record.ingress_ports {
            let targets = plan.ports.entry((port.udp, port.published)).or_default();
            if record.vtep != vtep {
                *targets.remote.entry(record.vtep).or_default() += 1;
            } else if let Some(addr) = local.get(&record.task_id) {
                targets.local.insert(*addr);
                targets.target = port.target;
            }
        }
    }
    plan.ports
        .retain(|_, t| !t.local.is_empty() || !t.remote.is_empty());
    plan
}

/// The `iptables-restore --noflush` input that makes the two chains hold `plan`: per port,
/// connections forwarded by a peer go to a task here (or are left alone when there is none, so
/// that they never bounce on), and the others to any task, each destination picked with
/// `statistic` rules as kube-proxy writes them.
pub(super) fn render(plan: &Plan) -> String {
    let mut out = format!("*nat\n:{CHAIN} - [0:0]\n:{SNAT_CHAIN} - [0:0]\n");
    let peers = plan
        .peers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for ((udp, published), targets) in &plan.ports {
        let proto = if *udp { "udp" } else { "tcp" };
        let port = format!("-p {proto} --dport {published}");
        let local: Vec<(String, usize)> = targets
            .local
            .iter()
            .map(|a| (format!("{a}:{}", targets.target), 1))
            .collect();
        if !peers.is_empty() {
            let from_peers = format!("-s {peers} {port}");
            if local.is_empty() {
                let _ = writeln!(out, "-A {CHAIN} {from_peers} -j RETURN");
            } else {
                spread(&mut out, &from_peers, &local);
            }
        }
        let mut all = local;
        all.extend(
            targets
                .remote
                .iter()
                .map(|(node, tasks)| (format!("{node}:{published}"), *tasks)),
        );
        spread(&mut out, &port, &all);
        for node in targets.remote.keys() {
            let _ = writeln!(
                out,
                "-A {SNAT_CHAIN} -d {node} {port} -m conntrack --ctstate DNAT -j MASQUERADE"
            );
        }
    }
    // Connections from the node's own loopback leave with the address of the way out.
    if !plan.is_empty() {
        let _ = writeln!(
            out,
            "-A {SNAT_CHAIN} -s {LOOPBACK} -m conntrack --ctstate DNAT -j MASQUERADE"
        );
    }
    out.push_str("COMMIT\n");
    out
}

/// The loopback network, which connections to a published port on `localhost` come from.
const LOOPBACK: &str = "127.0.0.0/8";

/// DNAT rules matching `selector` that pick one of `destinations` in proportion to its weight.
fn spread(out: &mut String, selector: &str, destinations: &[(String, usize)]) {
    let mut remaining: usize = destinations.iter().map(|(_, w)| w).sum();
    for (to, weight) in destinations {
        let pick = if *weight < remaining {
            format!(
                " -m statistic --mode random --probability {:.5}",
                *weight as f64 / remaining as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "-A {CHAIN} {selector}{pick} -j DNAT --to-destination {to}"
        );
        remaining -= weight;
    }
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
        "INPUT",
        &[
            "-d",
            LOOPBACK,
            "!",
            "-s",
            LOOPBACK,
            "-m",
            "conntrack",
            "!",
            "--ctstate",
            "RELATED,ESTABLISHED,DNAT",
            "-j",
            "DROP",
        ],
    ),
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
        super::nat::enable_route_localnet()?;
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
            aliases: Vec::new(),
        }
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 0, last)
    }

    #[test]
    fn every_task_counts_wherever_it_runs() {
        let records = [
            record("a", 1, false),
            record("b", 2, false),
            record("c", 2, false),
        ];
        let local = BTreeMap::from([("a".to_owned(), Ipv4Addr::new(172, 18, 0, 2))]);
        let here = plan(&records, ip(1), &local);
        assert_eq!(
            here.ports[&(false, 8080)],
            Targets {
                local: BTreeSet::from([Ipv4Addr::new(172, 18, 0, 2)]),
                target: 80,
                remote: BTreeMap::from([(ip(2), 2)]),
            }
        );
        assert_eq!(here.peers, BTreeSet::from([ip(2)]));
        let elsewhere = plan(&records, ip(3), &BTreeMap::new());
        assert_eq!(
            elsewhere.ports[&(false, 8080)].remote,
            BTreeMap::from([(ip(1), 1), (ip(2), 2)])
        );
        assert!(elsewhere.ports[&(false, 8080)].local.is_empty());
        // A task of ours not attached yet is not a destination.
        let unattached = plan(&records[..1], ip(1), &BTreeMap::new());
        assert!(unattached.is_empty(), "{unattached:?}");
    }

    #[test]
    fn rules_weigh_nodes_by_tasks_and_serve_forwarded_connections_here() {
        let records = [
            record("a", 1, false),
            record("b", 2, false),
            record("c", 2, false),
        ];
        let local = BTreeMap::from([("a".to_owned(), Ipv4Addr::new(172, 18, 0, 2))]);
        let text = render(&plan(&records, ip(1), &local));
        let expected = "*nat\n:MESH-INGRESS - [0:0]\n:MESH-INGRESS-SNAT - [0:0]\n\
            -A MESH-INGRESS -s 192.168.0.2 -p tcp --dport 8080 -j DNAT --to-destination 172.18.0.2:80\n\
            -A MESH-INGRESS -p tcp --dport 8080 -m statistic --mode random --probability 0.33333 -j DNAT --to-destination 172.18.0.2:80\n\
            -A MESH-INGRESS -p tcp --dport 8080 -j DNAT --to-destination 192.168.0.2:8080\n\
            -A MESH-INGRESS-SNAT -d 192.168.0.2 -p tcp --dport 8080 -m conntrack --ctstate DNAT -j MASQUERADE\n\
            -A MESH-INGRESS-SNAT -s 127.0.0.0/8 -m conntrack --ctstate DNAT -j MASQUERADE\n\
            COMMIT\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_node_without_tasks_forwards_and_never_bounces() {
        let records = [record("a", 1, true), record("b", 2, true)];
        let text = render(&plan(&records, ip(3), &BTreeMap::new()));
        assert!(
            text.contains(
                "-A MESH-INGRESS -s 192.168.0.1,192.168.0.2 -p udp --dport 8080 -j RETURN\n"
            ),
            "{text}"
        );
        assert!(text.contains("-A MESH-INGRESS -p udp --dport 8080 -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 192.168.0.1:8080\n"), "{text}");
        assert!(
            text.contains(
                "-A MESH-INGRESS -p udp --dport 8080 -j DNAT --to-destination 192.168.0.2:8080\n"
            ),
            "{text}"
        );
        assert!(text.contains("-A MESH-INGRESS-SNAT -d 192.168.0.2 -p udp --dport 8080 -m conntrack --ctstate DNAT -j MASQUERADE\n"), "{text}");
        // Nothing published: the chains are emptied.
        assert_eq!(
            render(&Plan::default()),
            "*nat\n:MESH-INGRESS - [0:0]\n:MESH-INGRESS-SNAT - [0:0]\nCOMMIT\n"
        );
    }
}
