//! Remote endpoints learned by gossip: static FDB entries towards their VTEP on the network's
//! VXLAN device, and permanent neighbour entries in the local sandboxes on that network.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::gossip::{Change, EndpointRecord};
use crate::netlink::{FdbEntry, MacAddr, Neighbour};

use super::{Overlay, State, TaskLink, created, gone};

impl Overlay {
    /// Applies one change of the endpoint table; records of this node's own VTEP are ignored.
    pub async fn apply(&self, change: Change) {
        let mut state = self.state.lock().await;
        match change {
            Change::Upsert(record) => {
                if record.vtep == self.vtep {
                    return;
                }
                let key = (record.network_id.clone(), record.task_id.clone());
                state.remote.insert(key, record.clone());
                self.program(&state, &record, true).await;
            }
            Change::Remove(record) => {
                let key = (record.network_id.clone(), record.task_id.clone());
                if state.remote.get(&key) == Some(&record) {
                    state.remote.remove(&key);
                    self.program(&state, &record, false).await;
                }
            }
        }
    }

    /// Adds or removes the entries of one remote record, where its network exists here.
    async fn program(&self, state: &State, record: &EndpointRecord, add: bool) {
        let Some((vni, net)) = state
            .networks
            .iter()
            .find(|(_, n)| n.network_id == record.network_id)
        else {
            return;
        };
        let fdb = FdbEntry {
            link: format!("vx{vni}"),
            mac: MacAddr(record.mac),
            dst: record.vtep,
        };
        let result = if add {
            created(self.netlink.add_fdb(&net.ns, &fdb).await)
        } else {
            gone(self.netlink.delete_fdb(&net.ns, &fdb).await)
        };
        if let Err(err) = result {
            tracing::warn!(task.id = %record.task_id, vni, error = %err, "cannot program fdb entry");
        }
        let links: Vec<&TaskLink> = state
            .tasks
            .values()
            .flatten()
            .filter(|l| l.vni == *vni)
            .collect();
        for link in links {
            self.neighbour(link, record, add).await;
        }
        tracing::debug!(task.id = %record.task_id, addr = %record.addr, vtep = %record.vtep, add, "remote endpoint programmed");
    }

    async fn neighbour(&self, link: &TaskLink, record: &EndpointRecord, add: bool) {
        let entry = Neighbour {
            link: link.ifname.clone(),
            ip: record.addr,
            mac: MacAddr(record.mac),
        };
        let result = if add {
            // An entry ARP left (incomplete, or stale) is replaced by the permanent one.
            match self.netlink.add_neighbour(&link.container_ns, &entry).await {
                Err(err) if err.is_already_exists() => {
                    let _ = self
                        .netlink
                        .delete_neighbour(&link.container_ns, &entry)
                        .await;
                    self.netlink.add_neighbour(&link.container_ns, &entry).await
                }
                other => other,
            }
        } else {
            gone(
                self.netlink
                    .delete_neighbour(&link.container_ns, &entry)
                    .await,
            )
        };
        if let Err(err) = result {
            tracing::debug!(ip = %record.addr, error = %err, "cannot program neighbour");
        }
    }

    /// Programs the FDB entries of every known remote record of a just-created network.
    pub(super) async fn add_remote_fdb(&self, state: &State, vni: u32) {
        let Some(net) = state.networks.get(&vni) else {
            return;
        };
        for record in state
            .remote
            .values()
            .filter(|r| r.network_id == net.network_id)
        {
            let fdb = FdbEntry {
                link: format!("vx{vni}"),
                mac: MacAddr(record.mac),
                dst: record.vtep,
            };
            if let Err(err) = created(self.netlink.add_fdb(&net.ns, &fdb).await) {
                tracing::warn!(task.id = %record.task_id, vni, error = %err, "cannot program fdb entry");
            }
        }
    }

    /// Programs the neighbours of every known remote record of a network in a new sandbox link.
    pub(super) async fn add_remote_neighbours(
        &self,
        state: &State,
        network_id: &str,
        link: &TaskLink,
    ) {
        for record in state.remote.values().filter(|r| r.network_id == network_id) {
            self.neighbour(link, record, true).await;
        }
    }
}

impl Overlay {
    /// Removes FDB and neighbour entries towards endpoints that gossip no longer knows: those
    /// withdrawn while this agent was not running. Called once gossip has had time to converge.
    pub async fn sweep_entries(&self) {
        let state = self.state.lock().await;
        for (vni, net) in &state.networks {
            let known: HashSet<(MacAddr, Ipv4Addr)> = state
                .remote
                .values()
                .filter(|r| r.network_id == net.network_id)
                .map(|r| (MacAddr(r.mac), r.vtep))
                .collect();
            let link = format!("vx{vni}");
            let entries = match self.netlink.list_fdb(&net.ns).await {
                Ok(entries) => entries,
                Err(err) => {
                    tracing::debug!(vni, error = %err, "cannot list fdb entries");
                    continue;
                }
            };
            for entry in entries.iter().filter(|e| e.link == link) {
                if known.contains(&(entry.mac, entry.dst)) {
                    continue;
                }
                match gone(self.netlink.delete_fdb(&net.ns, entry).await) {
                    Ok(()) => {
                        tracing::info!(vni, mac = %entry.mac, vtep = %entry.dst, "stale fdb entry removed")
                    }
                    Err(err) => tracing::warn!(vni, error = %err, "cannot remove fdb entry"),
                }
            }
        }
        for link in state.tasks.values().flatten() {
            let Some(net) = state.networks.get(&link.vni) else {
                continue;
            };
            let known: HashSet<(Ipv4Addr, MacAddr)> = state
                .remote
                .values()
                .filter(|r| r.network_id == net.network_id)
                .map(|r| (r.addr, MacAddr(r.mac)))
                .collect();
            let Ok(neighbours) = self.netlink.list_neighbours(&link.container_ns).await else {
                continue;
            };
            for entry in neighbours.iter().filter(|n| n.link == link.ifname) {
                if !known.contains(&(entry.ip, entry.mac)) {
                    let _ = gone(
                        self.netlink
                            .delete_neighbour(&link.container_ns, entry)
                            .await,
                    );
                    tracing::info!(ip = %entry.ip, "stale neighbour removed");
                }
            }
        }
    }
}
