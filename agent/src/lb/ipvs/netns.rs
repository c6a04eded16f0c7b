//! Real sandboxes' tables: a generic-netlink socket opened inside the sandbox's network
//! namespace, and `iptables` run there for the marking rules, which live in a chain of their own
//! ([`MARK_CHAIN`]) in the mangle table, jumped to from `OUTPUT`: the sandbox's own traffic is
//! what they mark.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;

use super::backend::{SandboxTable, SandboxTables};
use super::{IpvsError, IpvsSocket, Reply, Request};
use crate::lb::Sandbox;
use crate::netlink::{NetlinkError, Netns, run_in_netns};

/// The mangle chain that holds a sandbox's marking rules.
pub const MARK_CHAIN: &str = "MESH-VIPS";

/// Opens tables inside sandboxes' network namespaces.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetnsTables;

/// A sandbox's IPVS socket and the namespace it lives in, held open: a task that is gone can still
/// be cleaned up, and the namespace is let go when this drops.
pub struct NetnsTable {
    socket: IpvsSocket,
    /// The held namespace, by its descriptor (`/proc/self/fd/N`).
    netns: Netns,
    _held: File,
}

impl SandboxTables for NetnsTables {
    type Table = NetnsTable;

    fn open(&mut self, sandbox: &Sandbox) -> Result<NetnsTable, IpvsError> {
        let held = File::open(sandbox.netns.path())
            .map_err(|e| NetlinkError::io("open netns", &sandbox.netns, e))?;
        let netns = Netns::from_path(format!("/proc/self/fd/{}", held.as_raw_fd()));
        let socket = run_in_netns(&netns, "open the IPVS socket", IpvsSocket::open)??;
        let table = NetnsTable {
            socket,
            netns,
            _held: held,
        };
        table.iptables(|| {
            // The chain may exist (from an earlier run): then it is emptied.
            iptables(&["-N", MARK_CHAIN])?;
            must(&["-F", MARK_CHAIN])?;
            let jump = ["-j", MARK_CHAIN];
            if !iptables(&[&["-C", "OUTPUT"][..], &jump].concat())? {
                must(&[&["-I", "OUTPUT", "1"][..], &jump].concat())?;
            }
            Ok(())
        })?;
        Ok(table)
    }
}

impl NetnsTable {
    /// Runs `steps` (iptables commands) inside the sandbox's namespace.
    fn iptables<F>(&self, steps: F) -> Result<(), IpvsError>
    where
        F: FnOnce() -> Result<(), IpvsError> + Send,
    {
        run_in_netns(&self.netns, "run iptables", steps)?
    }
}

/// The rule that marks what goes to `vip`.
fn mark_rule(vip: Ipv4Addr, mark: u32) -> Vec<String> {
    let args = ["-d", &format!("{vip}/32"), "-j", "MARK", "--set-mark"];
    let mut rule: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    rule.push(format!("{mark:#x}"));
    rule
}

fn chained<'a>(op: &'a str, rule: &'a [String]) -> Vec<&'a str> {
    [op, MARK_CHAIN]
        .into_iter()
        .chain(rule.iter().map(String::as_str))
        .collect()
}

impl SandboxTable for NetnsTable {
    fn execute(&mut self, request: &Request) -> Result<Vec<Reply>, IpvsError> {
        self.socket.execute(request)
    }

    fn mark(&mut self, vip: Ipv4Addr, mark: u32) -> Result<(), IpvsError> {
        let rule = mark_rule(vip, mark);
        self.iptables(|| {
            if !iptables(&chained("-C", &rule))? {
                must(&chained("-A", &rule))?;
            }
            Ok(())
        })
    }

    fn unmark(&mut self, vip: Ipv4Addr, mark: u32) -> Result<(), IpvsError> {
        let rule = mark_rule(vip, mark);
        self.iptables(|| {
            while iptables(&chained("-D", &rule))? {}
            Ok(())
        })
    }

    fn clear_marks(&mut self) -> Result<(), IpvsError> {
        self.iptables(|| {
            while iptables(&["-D", "OUTPUT", "-j", MARK_CHAIN])? {}
            must(&["-F", MARK_CHAIN])?;
            must(&["-X", MARK_CHAIN])
        })
    }
}

/// Runs `iptables -w -t mangle ARGS` in the calling thread's namespace: whether it succeeded.
fn iptables(args: &[&str]) -> Result<bool, IpvsError> {
    Ok(run(args)?.is_ok())
}

/// Runs `iptables -w -t mangle ARGS`, which must succeed.
fn must(args: &[&str]) -> Result<(), IpvsError> {
    run(args)?.map_err(|complaint| IpvsError::Iptables {
        command: args.join(" "),
        complaint,
    })
}

/// `Ok(Err(first line of complaint))` when iptables ran and failed.
fn run(args: &[&str]) -> Result<Result<(), String>, IpvsError> {
    let out = Command::new("iptables")
        .args(["-w", "-t", "mangle"])
        .args(args)
        .output()
        .map_err(|e| IpvsError::Iptables {
            command: args.join(" "),
            complaint: format!("cannot run iptables: {e}"),
        })?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Ok(Err(stderr.lines().next().unwrap_or("failed").to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_rule_matches_the_vip_alone() {
        let rule = mark_rule(Ipv4Addr::new(10, 0, 1, 2), 0x101);
        assert_eq!(
            chained("-A", &rule).join(" "),
            "-A MESH-VIPS -d 10.0.1.2/32 -j MARK --set-mark 0x101"
        );
    }
}
