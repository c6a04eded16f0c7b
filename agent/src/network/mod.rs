//! The overlay data plane of one node: per-network namespaces with a bridge and a VXLAN device,
//! a veth into each task's sandbox, and static FDB and neighbour entries for remote endpoints.

mod attach;
mod balancer;
mod continuity;
mod dataplane;
mod gateway;
mod ingress;
mod nat;
mod remote;
mod settle;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::Ipv4Net;
use tokio::sync::Mutex;

use crate::gossip::EndpointRecord;
use crate::netlink::{LinkKind, Netlink, NetlinkError, Netns};

pub use dataplane::{Dataplane, TaskNetwork};
pub use gateway::{DEFAULT_GWBRIDGE_SUBNET, GWBRIDGE};

/// Why a task could not be attached to its networks.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("network {network}: bad attachment: {reason}")]
    Attachment { network: String, reason: String },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// A network namespace this node holds for one overlay network.
struct NetState {
    ns: Netns,
    network_id: String,
}

/// A local task's attachment: the network, its bridge-side veth and the container's interface.
#[derive(Clone)]
struct TaskLink {
    vni: u32,
    veth: String,
    container_ns: Netns,
    ifname: String,
}

#[derive(Default)]
struct State {
    networks: HashMap<u32, NetState>,
    tasks: HashMap<String, Vec<TaskLink>>,
    /// Every remote endpoint learned, by (network id, task id), applied where the network exists.
    remote: HashMap<(String, String), EndpointRecord>,
    /// The underlay's MTU, read once.
    underlay_mtu: Option<u32>,
    leases: gateway::Leases,
    /// Ports each local task publishes in host mode.
    host_ports: HashMap<String, Vec<nat::HostPort>>,
}

/// The node's overlay manager.
pub struct Overlay {
    netlink: Arc<dyn Netlink>,
    prefix: String,
    node_id: String,
    vtep: Ipv4Addr,
    gw_subnet: Ipv4Net,
    /// Whether the gateway bridge gets its iptables rules (off only in unit tests).
    nat: bool,
    state_dir: PathBuf,
    state: Mutex<State>,
}

impl Overlay {
    /// An overlay manager whose namespaces are named after a hash of `state_dir`, so that several
    /// meshd on one machine never collide; tasks' way out is a bridge on `gw_subnet`. Takes over
    /// the gateway leases an earlier run left in `state_dir`; kernel state is left as it is until
    /// tasks re-attach and [`Overlay::sweep`] runs.
    pub fn new(
        netlink: Arc<dyn Netlink>,
        state_dir: &Path,
        node_id: String,
        vtep: Ipv4Addr,
        gw_subnet: Ipv4Net,
    ) -> Self {
        let state = State {
            leases: gateway::Leases::load(state_dir),
            ..State::default()
        };
        Self {
            netlink,
            prefix: prefix_for(state_dir),
            node_id,
            vtep,
            gw_subnet,
            nat: true,
            state_dir: state_dir.to_owned(),
            state: Mutex::new(state),
        }
    }

    /// Leaves iptables alone, for tests against a fake netlink that must not touch the host.
    #[cfg(test)]
    fn without_nat(mut self) -> Self {
        self.nat = false;
        self
    }

    /// The prefix of this node's namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn vtep(&self) -> Ipv4Addr {
        self.vtep
    }

    /// Where this node keeps its state (and what the data plane saves for its next start).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn netns_name(&self, vni: u32) -> String {
        format!("{}-{vni}", self.prefix)
    }

    /// Removes what no task here uses any more, after a restart or a crash: our namespaces that
    /// hold no network of an attached task and no task's veth (those of running containers not yet
    /// re-attached stay), and the gateway leases and bridge of containers that are gone.
    pub async fn sweep(&self) -> Result<(), OverlayError> {
        let mut state = self.state.lock().await;
        let prefix = format!("{}-", self.prefix);
        for name in self.netlink.list_netns(&prefix).await? {
            let vni = name
                .strip_prefix(&prefix)
                .and_then(|v| v.parse::<u32>().ok());
            if vni.is_some_and(|vni| state.networks.contains_key(&vni)) {
                continue;
            }
            let ns = Netns::named(&name);
            let links = match self.netlink.list_links(&ns).await {
                Ok(links) => links,
                // Its mount went with an earlier run's mount namespace, and the namespace with
                // it: only the file is left.
                Err(err) if err.is_stale() => Vec::new(),
                Err(err) if err.is_not_found() => continue,
                Err(err) => return Err(err.into()),
            };
            if links.iter().any(|l| l.kind == LinkKind::Veth) {
                continue;
            }
            match gone(self.netlink.delete_netns(&name).await) {
                Ok(()) => tracing::info!(netns = %name, "unused overlay namespace removed"),
                Err(err) => tracing::warn!(netns = %name, error = %err, "cannot remove namespace"),
            }
        }
        self.sweep_gateway(&mut state).await?;
        Ok(())
    }

    /// Tears down every namespace this node holds and the gateway bridge (when leaving the swarm).
    pub async fn clear(&self) {
        let mut state = self.state.lock().await;
        let tasks: Vec<String> = state.tasks.keys().cloned().collect();
        for task in tasks {
            self.detach_gateway(&mut state, &task).await;
        }
        state.tasks.clear();
        state.remote.clear();
        let prefix = format!("{}-", self.prefix);
        let names = self.netlink.list_netns(&prefix).await.unwrap_or_default();
        state.networks.clear();
        for name in names {
            if let Err(err) = gone(self.netlink.delete_netns(&name).await) {
                tracing::warn!(netns = %name, error = %err, "cannot remove overlay namespace");
            }
        }
        state.leases = gateway::Leases::default();
        let _ = std::fs::remove_file(self.state_dir.join("gwbridge.json"));
        self.remove_gwbridge(&mut state).await;
    }
}

/// The prefix of the namespace names of the meshd whose state dir is `state_dir`: `m` and eight
/// hex digits of an FNV-1a hash of it.
pub fn prefix_for(state_dir: &Path) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in state_dir.as_os_str().as_encoded_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("m{hash:08x}")
}

/// The first 12 characters of a task id, for interface names (15 bytes at most).
fn short(task_id: &str) -> &str {
    task_id.get(..12).unwrap_or(task_id)
}

/// Ignores "already exists".
fn created(result: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
    match result {
        Err(err) if err.is_already_exists() => Ok(()),
        other => other,
    }
}

/// Ignores "not found".
fn gone(result: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
    match result {
        Err(err) if err.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod prefix_tests {
    use super::*;

    #[test]
    fn prefixes_differ_by_state_dir() {
        let a = prefix_for(Path::new("/tmp/a"));
        let b = prefix_for(Path::new("/tmp/b"));
        assert_ne!(a, b);
        assert_eq!(a, prefix_for(Path::new("/tmp/a")));
        assert_eq!(a.len(), 9);
    }
}
