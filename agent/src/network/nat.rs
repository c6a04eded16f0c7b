//! Masquerading and forwarding rules for the gateway bridge, written with `iptables` in the node's
//! namespace as Docker writes them for `docker_gwbridge`: traffic from the bridge's subnet leaving
//! by another interface is masqueraded, the bridge's outbound and established return traffic is
//! forwarded past dockerd's `FORWARD` DROP policy, and sandboxes cannot talk to each other through
//! the bridge (Docker's `enable_icc=false`).

use ipnet::Ipv4Net;
use tokio::process::Command;

const COMMENT: &str = "mesh gwbridge";

/// The rules, as (table, chain, match-and-target).
fn rules(subnet: Ipv4Net, bridge: &str) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let owned = |args: &[&str]| -> Vec<String> {
        ["-m", "comment", "--comment", COMMENT]
            .iter()
            .chain(args)
            .map(|a| (*a).to_owned())
            .collect()
    };
    let subnet = subnet.to_string();
    vec![
        (
            "nat",
            "POSTROUTING",
            owned(&["-s", &subnet, "!", "-o", bridge, "-j", "MASQUERADE"]),
        ),
        (
            "filter",
            "FORWARD",
            owned(&["-i", bridge, "-o", bridge, "-j", "DROP"]),
        ),
        (
            "filter",
            "FORWARD",
            owned(&["-i", bridge, "!", "-o", bridge, "-j", "ACCEPT"]),
        ),
        (
            "filter",
            "FORWARD",
            owned(&[
                "-o",
                bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ]),
        ),
    ]
}

/// Runs `iptables -w ARGS`: whether it succeeded, and its first line of complaint.
async fn iptables(args: &[&str]) -> Result<(bool, String), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaint = stderr.lines().next().unwrap_or("failed").to_owned();
    Ok((out.status.success(), complaint))
}

/// Inserts `rule` at the top of `table`'s `chain` unless it is there already.
pub(super) async fn ensure_first(table: &str, chain: &str, rule: &[&str]) -> Result<(), String> {
    if iptables(&[&["-t", table, "-C", chain][..], rule].concat())
        .await?
        .0
    {
        return Ok(());
    }
    let insert = [&["-t", table, "-I", chain, "1"][..], rule].concat();
    let (inserted, complaint) = iptables(&insert).await?;
    if !inserted {
        return Err(format!("iptables {}: {complaint}", insert.join(" ")));
    }
    Ok(())
}

/// Deletes every copy of `rule` from `table`'s `chain`; fails only when iptables cannot run.
async fn delete_all(table: &str, chain: &str, rule: &[&str]) -> Result<(), String> {
    let delete = [&["-t", table, "-D", chain][..], rule].concat();
    while iptables(&delete).await?.0 {}
    Ok(())
}

/// A port a task publishes in host mode: `published` on the node's addresses to `target` on
/// the task's gateway-bridge address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HostPort {
    pub udp: bool,
    pub published: u16,
    pub target: u16,
    pub addr: std::net::Ipv4Addr,
}

/// The DNAT and forwarding rules of one host-mode port, as (table, chain, match-and-target).
fn host_rules(port: &HostPort, bridge: &str) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let proto = if port.udp { "udp" } else { "tcp" };
    let comment = format!("mesh publish {}:{}", port.addr, port.target);
    let to = format!("{}:{}", port.addr, port.target);
    let (published, target) = (port.published.to_string(), port.target.to_string());
    let addr = port.addr.to_string();
    let rule = |args: &[&str]| -> Vec<String> {
        ["-m", "comment", "--comment", comment.as_str()]
            .iter()
            .chain(args)
            .map(|a| (*a).to_owned())
            .collect()
    };
    vec![
        (
            "nat",
            "PREROUTING",
            rule(&[
                "-p",
                proto,
                "--dport",
                &published,
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ]),
        ),
        (
            "nat",
            "OUTPUT",
            rule(&[
                "-p",
                proto,
                "--dport",
                &published,
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ]),
        ),
        (
            "filter",
            "FORWARD",
            rule(&[
                "-o", bridge, "-d", &addr, "-p", proto, "--dport", &target, "-j", "ACCEPT",
            ]),
        ),
    ]
}

/// Publishes a task's host-mode ports on the node (idempotent: rules already there stay).
pub(super) async fn publish(ports: &[HostPort], bridge: &str) -> Result<(), String> {
    for port in ports {
        for (table, chain, rule) in host_rules(port, bridge) {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            ensure_first(table, chain, &rule).await?;
        }
    }
    Ok(())
}

/// Withdraws host-mode ports; failures are logged.
pub(super) async fn unpublish(ports: &[HostPort], bridge: &str) {
    for port in ports {
        for (table, chain, rule) in host_rules(port, bridge) {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            if let Err(err) = delete_all(table, chain, &rule).await {
                tracing::warn!(error = %err, "cannot withdraw published port");
                return;
            }
        }
    }
}

/// Turns on IPv4 forwarding in this process's network namespace.
pub(super) fn enable_forwarding() -> Result<(), String> {
    let forward = "/proc/sys/net/ipv4/ip_forward";
    if !std::fs::read_to_string(forward).is_ok_and(|v| v.trim() == "1") {
        std::fs::write(forward, "1").map_err(|e| format!("cannot enable {forward}: {e}"))?;
    }
    Ok(())
}

/// Lets connections from the loopback that were DNATed elsewhere leave by a real interface
/// (for published ports on `localhost`; see `ingress`, which also installs the guard this needs).
pub(super) fn enable_route_localnet() -> Result<(), String> {
    let setting = "/proc/sys/net/ipv4/conf/all/route_localnet";
    if !std::fs::read_to_string(setting).is_ok_and(|v| v.trim() == "1") {
        std::fs::write(setting, "1").map_err(|e| format!("cannot enable {setting}: {e}"))?;
    }
    Ok(())
}

/// Turns on IPv4 forwarding and installs the rules that are missing.
pub(super) async fn enable(subnet: Ipv4Net, bridge: &str) -> Result<(), String> {
    enable_forwarding()?;
    // Inserted at the top in reverse, so that they end up in the order written.
    for (table, chain, rule) in rules(subnet, bridge).into_iter().rev() {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        ensure_first(table, chain, &rule).await?;
    }
    Ok(())
}

/// Removes every copy of the rules; failures are logged, not returned.
pub(super) async fn disable(subnet: Ipv4Net, bridge: &str) {
    for (table, chain, rule) in rules(subnet, bridge) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        if let Err(err) = delete_all(table, chain, &rule).await {
            tracing::warn!(error = %err, "cannot remove gateway NAT rules");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerades_only_what_leaves_by_another_interface() {
        let subnet: Ipv4Net = "172.18.0.0/16".parse().unwrap();
        let rules = rules(subnet, "gw0");
        let (table, chain, rule) = &rules[0];
        assert_eq!((*table, *chain), ("nat", "POSTROUTING"));
        assert_eq!(
            rule.join(" "),
            "-m comment --comment mesh gwbridge -s 172.18.0.0/16 ! -o gw0 -j MASQUERADE"
        );
        // Sandbox-to-sandbox over the bridge is dropped before the general accept.
        let drop = rules.iter().position(|r| r.2.contains(&"DROP".to_owned()));
        let accept = rules
            .iter()
            .position(|r| r.2.join(" ").contains("! -o gw0 -j ACCEPT"));
        assert!(drop < accept);
    }
}
