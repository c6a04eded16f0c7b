//! Handing the gossip keys the managers send over the session to the overlay data plane: gossip
//! starts with the first keys and is re-keyed on every rotation. Also builds the data plane.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::watch;

use super::Daemon;
use super::addr::host_ip;
use crate::gossip::SealKey;
use crate::netlink::RtNetlink;
use crate::network::{Dataplane, Overlay};
use crate::session::ClusterView;
use crate::state::NodeState;

/// Runs for as long as the membership: applies every new key list (and manager list) it sees.
pub(super) async fn follow(
    dataplane: Arc<Dataplane>,
    mut view: watch::Receiver<ClusterView>,
    mut stop: watch::Receiver<bool>,
) {
    let mut applied: Vec<(u32, Vec<u8>)> = Vec::new();
    loop {
        let current = view.borrow_and_update().clone();
        if !current.gossip_keys.is_empty() && current.gossip_keys != applied {
            let keys: Vec<SealKey> = current
                .gossip_keys
                .iter()
                .filter_map(|(id, key)| {
                    let secret = <[u8; 32]>::try_from(key.as_slice()).ok()?;
                    Some(SealKey { id: *id, secret })
                })
                .collect();
            let managers: Vec<IpAddr> =
                current.managers.iter().filter_map(|a| host_ip(a)).collect();
            match dataplane.set_keys(keys, &managers).await {
                Ok(()) => applied = current.gossip_keys.clone(),
                Err(err) => tracing::warn!(error = %err, "cannot start or re-key gossip"),
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

impl Daemon {
    /// The overlay data plane, unless disabled (gossip port 0) or the advertise address is not
    /// IPv4. What an earlier run left in the kernel stays until the worker re-attaches its tasks
    /// and the data plane's sweep removes the rest; its tasks' DNS resolvers and VIPs are brought
    /// back at once.
    pub(super) async fn dataplane(&self, state: &NodeState) -> Option<Arc<Dataplane>> {
        if self.config.gossip_port == 0 {
            return None;
        }
        let vtep = match host_ip(&state.advertise_addr) {
            Some(std::net::IpAddr::V4(ip)) => ip,
            _ => {
                tracing::warn!(addr = %state.advertise_addr, "no IPv4 advertise address: overlay disabled");
                return None;
            }
        };
        // Started in a mount namespace of its own, meshd may hold copies of its namespaces'
        // mounts that would outlive their deletion; its mounts live in pid 1's.
        crate::netlink::host::release_private_copies(&format!(
            "{}-",
            crate::network::prefix_for(&self.config.state_dir)
        ));
        let overlay = Overlay::new(
            Arc::new(crate::metrics::TimedNetlink::new(
                RtNetlink::new(),
                self.metrics.kernel.clone(),
            )),
            &self.config.state_dir,
            state.node_id.clone(),
            vtep,
            self.config.gwbridge_subnet,
        );
        let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let dataplane = Arc::new(
            Dataplane::new(
                Arc::new(overlay),
                self.config.gossip_port,
                crate::dns::upstreams(&resolv_conf),
                self.config.lb_backend,
            )
            .time_into(self.metrics.kernel.clone()),
        );
        // Before the session: the running tasks' DNS and VIPs come back first.
        dataplane.restore().await;
        Some(dataplane)
    }
}
