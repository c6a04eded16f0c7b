//! Virtual IPs: a service in `vip` mode gets one address on each network it is attached to, and
//! on the ingress network while it publishes ports in ingress mode; `dnsrr` services get none.
//! VIPs of networks the service left go back to the pools.

use mesh_proto::{EndpointMode, Network, PublishMode, Service, VirtualIp};
use std::collections::{BTreeMap, BTreeSet};

use super::networks::resolve;
use super::pools::{Pools, vip_owner};
use crate::store::{Read, Store, StoreError};

/// The ingress network: the one `swarm init` creates for the routing mesh.
pub(super) fn ingress(networks: &[Network]) -> Option<&Network> {
    networks
        .iter()
        .find(|n| n.spec.as_ref().is_some_and(|s| s.ingress))
}

/// Whether a service publishes any port through the routing mesh.
pub(super) fn publishes_ingress(service: &Service) -> bool {
    service
        .endpoint
        .iter()
        .flat_map(|e| &e.ports)
        .any(|p| p.publish_mode() == PublishMode::Ingress)
}

/// Whether the allocator has something to do for a new task of `service`: attach it to its
/// spec's networks, or give it the service's published ports (and the ingress network), which
/// the allocator copies from the service's endpoint once that is allocated.
pub fn needs_allocation(service: &Service) -> bool {
    let spec = service.spec.as_ref();
    let networks = spec
        .and_then(|s| s.task.as_ref())
        .is_some_and(|t| !t.networks.is_empty());
    let ports_wanted = spec
        .and_then(|s| s.endpoint.as_ref())
        .is_some_and(|e| !e.ports.is_empty());
    let ports_held = service
        .endpoint
        .as_ref()
        .is_some_and(|e| !e.ports.is_empty());
    networks || ports_wanted || ports_held
}

/// The networks a service should have a VIP on, by id; `None` while one is not allocated yet.
fn wanted(service: &Service, networks: &[Network]) -> Option<BTreeSet<String>> {
    let spec = service.spec.as_ref()?;
    let mode = spec
        .endpoint
        .as_ref()
        .map_or(EndpointMode::Vip, |e| e.mode());
    if mode != EndpointMode::Vip {
        return Some(BTreeSet::new());
    }
    let mut ids = BTreeSet::new();
    let targets = spec.task.iter().flat_map(|t| &t.networks);
    for target in targets {
        // A network that does not exist is the task allocator's to report.
        if let Some(network) = resolve(networks, &target.target) {
            network.allocation.as_ref()?;
            ids.insert(network.id.clone());
        }
    }
    if publishes_ingress(service) {
        let network = ingress(networks)?;
        network.allocation.as_ref()?;
        ids.insert(network.id.clone());
    }
    Some(ids)
}

/// Gives queued services the VIPs their spec asks for. Services waiting for a network stay queued.
pub(super) async fn allocate_services(
    store: &Store,
    pools: &mut Pools,
    queue: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    let ids: Vec<String> = queue.iter().cloned().collect();
    let done = store
        .update(|tx| {
            let networks = tx.list::<Network>();
            let mut done = Vec::new();
            for id in &ids {
                let Some(mut service) = tx.get::<Service>(id) else {
                    done.push(id.clone());
                    continue;
                };
                let Some(wanted) = wanted(&service, &networks) else {
                    continue;
                };
                done.push(id.clone());
                let current = service.endpoint.clone().unwrap_or_default();
                let held: BTreeMap<String, String> = current
                    .virtual_ips
                    .iter()
                    .map(|v| (v.network_id.clone(), v.addr.clone()))
                    .collect();
                if held.keys().cloned().collect::<BTreeSet<_>>() == wanted {
                    continue;
                }
                let owner = vip_owner(&service.id);
                pools.release_task(&owner);
                let kept: Vec<VirtualIp> = current
                    .virtual_ips
                    .iter()
                    .filter(|v| wanted.contains(&v.network_id))
                    .cloned()
                    .collect();
                let mut marked = service.clone();
                marked.endpoint.get_or_insert_with(Default::default).virtual_ips = kept.clone();
                for err in pools.mark_vips(&marked) {
                    tracing::warn!(service.id = %id, error = %err, "virtual IP not marked");
                }
                let mut vips = kept;
                for network_id in &wanted {
                    if held.contains_key(network_id) {
                        continue;
                    }
                    match pools.allocate_address(&owner, network_id) {
                        Ok(addr) => vips.push(VirtualIp {
                            network_id: network_id.clone(),
                            addr,
                        }),
                        Err(err) => {
                            tracing::warn!(service.id = %id, network.id = %network_id, error = %err, "no virtual IP");
                        }
                    }
                }
                vips.sort_by(|a, b| a.network_id.cmp(&b.network_id));
                tracing::info!(service.id = %id, vips = vips.len(), "virtual IPs allocated");
                service
                    .endpoint
                    .get_or_insert_with(Default::default)
                    .virtual_ips = vips;
                tx.update(service)?;
            }
            Ok(done)
        })
        .await?;
    for id in done {
        queue.remove(&id);
    }
    Ok(())
}
