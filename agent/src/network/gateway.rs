//! The way out, Swarm's `docker_gwbridge`: every task's sandbox also gets a veth on a bridge in
//! the node's own namespace, holding the default route, with masquerading towards the world.
//!
//! Addresses are handed out by this node alone and kept in `gwbridge.json` in the state dir, so
//! that containers re-adopted after a restart keep theirs and new tasks never get one in use.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use mesh_proto::{PortProtocol, PublishMode, Task};

use super::nat::{self, HostPort};
use super::{Overlay, OverlayError, State, created, gone, short};
use crate::netlink::{NetlinkError, Netns, VethSpec};

/// The bridge in the node's namespace.
pub const GWBRIDGE: &str = "mesh_gwbridge";
/// Its subnet unless `--gwbridge-subnet` says otherwise (as Docker's usual `docker_gwbridge`).
pub const DEFAULT_GWBRIDGE_SUBNET: &str = "172.18.0.0/16";

/// The addresses handed out on the gateway bridge, by task id.
#[derive(Default)]
pub(super) struct Leases {
    by_task: BTreeMap<String, Ipv4Addr>,
    /// Whether the bridge and its NAT rules are in place.
    up: bool,
}

impl Leases {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("gwbridge.json")
    }

    /// The leases an earlier run left; none when the file is absent or unreadable.
    pub(super) fn load(state_dir: &Path) -> Self {
        let by_task = std::fs::read(Self::path(state_dir))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self { by_task, up: false }
    }

    fn save(&self, state_dir: &Path) {
        let path = Self::path(state_dir);
        let write = || -> std::io::Result<()> {
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&self.by_task)?)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(err) = write() {
            tracing::warn!(path = %path.display(), error = %err, "cannot save gateway leases");
        }
    }

    /// The lowest free host address of `subnet` after its gateway.
    fn next_free(&self, subnet: Ipv4Net) -> Option<Ipv4Addr> {
        let used: BTreeSet<Ipv4Addr> = self.by_task.values().copied().collect();
        let gateway = gateway_of(subnet);
        subnet
            .hosts()
            .find(|addr| *addr != gateway && !used.contains(addr))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_task.is_empty()
    }

    pub(super) fn tasks(&self) -> impl Iterator<Item = &String> {
        self.by_task.keys()
    }
}

/// The bridge's own address: the subnet's first host.
fn gateway_of(subnet: Ipv4Net) -> Ipv4Addr {
    subnet.hosts().next().unwrap_or(subnet.network())
}

/// The name of a task's veth on the gateway bridge.
pub(super) fn veth_name(task_id: &str) -> String {
    format!("g{}", short(task_id))
}

impl Overlay {
    /// The gateway-bridge address of every local task that has one, by task id; with
    /// `unattached`, also of those leased by an earlier run and not attached again yet.
    pub(super) async fn gateway_addrs(
        &self,
        unattached: bool,
    ) -> std::collections::BTreeMap<String, Ipv4Addr> {
        let state = self.state.lock().await;
        state
            .leases
            .by_task
            .iter()
            .filter(|(task, _)| unattached || state.tasks.contains_key(*task))
            .map(|(task, addr)| (task.clone(), *addr))
            .collect()
    }

    /// Connects the sandbox's `ifname` to the gateway bridge, with the default route through it.
    pub(super) async fn attach_gateway(
        &self,
        state: &mut State,
        task: &Task,
        container_ns: &Netns,
        ifname: &str,
        underlay_mtu: u32,
    ) -> Result<(), OverlayError> {
        let task_id = task.id.as_str();
        self.ensure_gwbridge(state, underlay_mtu).await?;
        let here = Netns::current();
        let prefix = self.gw_subnet.prefix_len();
        let held = self
            .netlink
            .list_addresses(container_ns)
            .await?
            .into_iter()
            .find(|a| a.link == ifname)
            .map(|a| a.addr.addr());
        let addr =
            match held.or_else(|| state.leases.by_task.get(task_id).copied()) {
                Some(addr) => addr,
                None => state.leases.next_free(self.gw_subnet).ok_or_else(|| {
                    OverlayError::Attachment {
                        network: GWBRIDGE.into(),
                        reason: format!("no free address left in {}", self.gw_subnet),
                    }
                })?,
            };
        if state.leases.by_task.get(task_id) != Some(&addr) {
            state.leases.by_task.insert(task_id.to_owned(), addr);
            state.leases.save(&self.state_dir);
        }
        let present = self
            .netlink
            .list_links(container_ns)
            .await?
            .iter()
            .any(|l| l.name == ifname);
        if !present {
            let veth = veth_name(task_id);
            gone(self.netlink.delete_link(&here, &veth).await)?;
            let spec = VethSpec {
                name: veth.clone(),
                peer: format!("q{}", short(task_id)),
                peer_ns: container_ns.clone(),
                peer_rename: ifname.to_owned(),
                mtu: underlay_mtu,
            };
            self.netlink.create_veth(&here, &spec).await?;
            self.netlink.set_master(&here, &veth, GWBRIDGE).await?;
            self.netlink.set_up(&here, &veth).await?;
        }
        if held.is_none() {
            let net = Ipv4Net::new(addr, prefix).map_err(|e| OverlayError::Attachment {
                network: GWBRIDGE.into(),
                reason: e.to_string(),
            })?;
            created(self.netlink.add_address(container_ns, ifname, net).await)?;
        }
        self.netlink.set_up(container_ns, ifname).await?;
        let gateway = gateway_of(self.gw_subnet);
        created(self.netlink.add_default_route(container_ns, gateway).await)?;
        tracing::debug!(task.id = %task_id, %addr, "task attached to the gateway bridge");
        let host_ports: Vec<HostPort> = task
            .ports
            .iter()
            .filter(|p| p.publish_mode() == PublishMode::Host)
            .filter_map(|p| {
                Some(HostPort {
                    udp: p.protocol() == PortProtocol::Udp,
                    published: u16::try_from(p.published_port).ok()?,
                    target: u16::try_from(p.target_port).ok()?,
                    addr,
                })
            })
            .collect();
        if self.nat && !host_ports.is_empty() {
            nat::publish(&host_ports, GWBRIDGE)
                .await
                .map_err(|reason| OverlayError::Attachment {
                    network: GWBRIDGE.into(),
                    reason,
                })?;
            tracing::info!(task.id = %task_id, ports = host_ports.len(), "ports published on the node");
        }
        state.host_ports.insert(task_id.to_owned(), host_ports);
        Ok(())
    }

    /// Removes the task's gateway veth and lease; the bridge goes with the last lease.
    pub(super) async fn detach_gateway(&self, state: &mut State, task_id: &str) {
        if let Some(ports) = state.host_ports.remove(task_id)
            && self.nat
            && !ports.is_empty()
        {
            nat::unpublish(&ports, GWBRIDGE).await;
        }
        let here = Netns::current();
        if let Err(err) = gone(self.netlink.delete_link(&here, &veth_name(task_id)).await) {
            tracing::warn!(task.id = %task_id, error = %err, "cannot delete gateway veth");
        }
        if state.leases.by_task.remove(task_id).is_some() {
            state.leases.save(&self.state_dir);
        }
        if state.leases.is_empty() {
            self.remove_gwbridge(state).await;
        }
    }

    /// Forgets the leases of tasks whose veth is gone (their container ended while no agent
    /// watched), and removes the bridge when nothing uses it any more.
    pub(super) async fn sweep_gateway(&self, state: &mut State) -> Result<(), NetlinkError> {
        let links = self.netlink.list_links(&Netns::current()).await?;
        let ports: BTreeSet<&str> = links
            .iter()
            .filter(|l| l.master.as_deref() == Some(GWBRIDGE))
            .map(|l| l.name.as_str())
            .collect();
        let stale: Vec<String> = state
            .leases
            .tasks()
            .filter(|task| !state.tasks.contains_key(*task))
            .filter(|task| !ports.contains(veth_name(task).as_str()))
            .cloned()
            .collect();
        for task in &stale {
            state.leases.by_task.remove(task);
        }
        if !stale.is_empty() {
            state.leases.save(&self.state_dir);
            tracing::info!(leases = stale.len(), "stale gateway leases released");
        }
        let bridge = links.iter().any(|l| l.name == GWBRIDGE);
        if bridge && state.leases.is_empty() && ports.is_empty() {
            self.remove_gwbridge(state).await;
        }
        Ok(())
    }

    async fn ensure_gwbridge(&self, state: &mut State, mtu: u32) -> Result<(), OverlayError> {
        if state.leases.up {
            return Ok(());
        }
        let here = Netns::current();
        created(self.netlink.create_bridge(&here, GWBRIDGE, mtu).await)?;
        let gateway = Ipv4Net::new(gateway_of(self.gw_subnet), self.gw_subnet.prefix_len())
            .map_err(|e| OverlayError::Attachment {
                network: GWBRIDGE.into(),
                reason: e.to_string(),
            })?;
        created(self.netlink.add_address(&here, GWBRIDGE, gateway).await)?;
        self.netlink.set_up(&here, GWBRIDGE).await?;
        if self.nat {
            nat::enable(self.gw_subnet, GWBRIDGE)
                .await
                .map_err(|reason| OverlayError::Attachment {
                    network: GWBRIDGE.into(),
                    reason,
                })?;
        }
        state.leases.up = true;
        tracing::info!(bridge = GWBRIDGE, subnet = %self.gw_subnet, "gateway bridge up");
        Ok(())
    }

    pub(super) async fn remove_gwbridge(&self, state: &mut State) {
        if self.nat {
            nat::disable(self.gw_subnet, GWBRIDGE).await;
        }
        match gone(self.netlink.delete_link(&Netns::current(), GWBRIDGE).await) {
            Ok(()) => tracing::info!(bridge = GWBRIDGE, "gateway bridge removed"),
            Err(err) => tracing::warn!(error = %err, "cannot remove the gateway bridge"),
        }
        state.leases.up = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_skip_the_gateway_and_used_addresses() {
        let subnet: Ipv4Net = "172.18.0.0/16".parse().unwrap();
        let mut leases = Leases::default();
        assert_eq!(leases.next_free(subnet), Some(Ipv4Addr::new(172, 18, 0, 2)));
        leases
            .by_task
            .insert("a".into(), Ipv4Addr::new(172, 18, 0, 2));
        leases
            .by_task
            .insert("b".into(), Ipv4Addr::new(172, 18, 0, 4));
        assert_eq!(leases.next_free(subnet), Some(Ipv4Addr::new(172, 18, 0, 3)));
        leases
            .by_task
            .insert("c".into(), Ipv4Addr::new(172, 18, 0, 3));
        assert_eq!(leases.next_free(subnet), Some(Ipv4Addr::new(172, 18, 0, 5)));
    }

    #[test]
    fn a_full_subnet_has_no_free_address() {
        let subnet: Ipv4Net = "10.9.9.0/30".parse().unwrap();
        let mut leases = Leases::default();
        leases
            .by_task
            .insert("a".into(), Ipv4Addr::new(10, 9, 9, 2));
        assert_eq!(leases.next_free(subnet), None);
    }

    #[test]
    fn leases_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut leases = Leases::default();
        leases
            .by_task
            .insert("t1".into(), Ipv4Addr::new(172, 18, 0, 7));
        leases.save(dir.path());
        let loaded = Leases::load(dir.path());
        assert_eq!(
            loaded.by_task.get("t1"),
            Some(&Ipv4Addr::new(172, 18, 0, 7))
        );
        assert!(!loaded.up);
    }
}
