//! The fresh root's own network: a namespace of its own with one veth to this machine, which
//! forwards and masquerades its traffic, so that the root reaches Debian's mirror and crates.io
//! as a fresh machine would, while the namespaces, bridges and rules its tests make stay in its
//! namespace and never meet this machine's (or another run's). Everything is undone on drop.

use anyhow::{Context, bail};
use mesh_tests::process::run_sync;

/// The point-to-point subnet between this machine and the root: `.1` here, `.2` there.
const SUBNET: [u8; 3] = [10, 233, 255];

/// The root's uplink: its namespace (`/run/netns/<name>`), the veth and the rules that carry it.
pub struct Uplink {
    name: String,
    host_veth: String,
    forward_before: String,
    rules: Vec<Vec<String>>,
}

impl Uplink {
    /// Makes the namespace and wires it to this machine.
    pub fn up() -> anyhow::Result<Self> {
        let name = format!("mfc-{:x}", std::process::id());
        let host_veth = format!("{name}-h");
        let forward_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .context("cannot read ip_forward")?
            .trim()
            .to_owned();
        let mut uplink = Self {
            name,
            host_veth,
            forward_before,
            rules: Vec::new(),
        };
        uplink
            .wire()
            .context("cannot give the fresh root its network")?;
        Ok(uplink)
    }

    /// The namespace's path, for `nsenter --net=`.
    pub fn netns(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    fn wire(&mut self) -> anyhow::Result<()> {
        let [a, b, c] = SUBNET;
        let (here, there) = (format!("{a}.{b}.{c}.1/30"), format!("{a}.{b}.{c}.2/30"));
        let subnet = format!("{a}.{b}.{c}.0/30");
        let mtu = underlay_mtu().to_string();
        let (ns, veth) = (self.name.clone(), self.host_veth.clone());
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &veth, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu", &mtu,
            "netns", &ns,
        ])?;
        ip(&["addr", "add", &here, "dev", &veth])?;
        ip(&["link", "set", &veth, "up"])?;
        ip(&["-n", &ns, "addr", "add", &there, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &format!("{a}.{b}.{c}.1"),
        ])?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("cannot enable forwarding")?;
        for rule in [
            vec![
                "-t",
                "nat",
                "-I",
                "POSTROUTING",
                "-s",
                &subnet,
                "-j",
                "MASQUERADE",
            ],
            vec!["-I", "FORWARD", "-s", &subnet, "-j", "ACCEPT"],
            vec!["-I", "FORWARD", "-d", &subnet, "-j", "ACCEPT"],
        ] {
            iptables(&rule)?;
            self.rules
                .push(rule.iter().map(|s| (*s).to_owned()).collect());
        }
        Ok(())
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        for rule in &self.rules {
            let deleted: Vec<&str> = rule
                .iter()
                .map(|s| if s == "-I" { "-D" } else { s.as_str() })
                .collect();
            if let Err(err) = iptables(&deleted) {
                eprintln!("    removing the uplink's rule: {err:#}");
            }
        }
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.forward_before);
        // Deleting the namespace takes the veth pair with it.
        if let Err(err) = ip(&["netns", "delete", &self.name]) {
            eprintln!("    removing the fresh root's namespace: {err:#}");
        }
        let _ = ip(&["link", "delete", &self.host_veth]);
    }
}

/// The MTU of the device of this machine's default route (the root's packets go out there).
fn underlay_mtu() -> u32 {
    let route = run_sync("ip", &["-o", "route", "show", "default"])
        .map(|o| o.stdout)
        .unwrap_or_default();
    let device = route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap_or("eth0")
        .to_owned();
    std::fs::read_to_string(format!("/sys/class/net/{device}/mtu"))
        .ok()
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(1500)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    checked("ip", args)
}

fn iptables(args: &[&str]) -> anyhow::Result<()> {
    checked("iptables", args)
}

fn checked(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = run_sync(program, args)?;
    if !out.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            out.stderr.trim()
        );
    }
    Ok(())
}
