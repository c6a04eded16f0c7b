//! Network requests: create (validated; the allocator then gives it a VXLAN id and, unless the user
//! chose one, a subnet), inspect, list, and remove (refused while a service or task uses it).

use ipnet::Ipv4Net;
use mesh_proto::chunks::{LIST_CHUNK_BYTES, field_len, split};
use mesh_proto::{
    CreateNetworkRequest, GetNetworkRequest, ListNetworksResponse, Network, NetworkSpec,
    RemoveNetworkRequest, Service, Task, TaskState,
};
use std::net::Ipv4Addr;
use tonic::Status;

use super::{resolve, status};
use crate::store::{Kind, Read, Store, StoreError, new_id};

/// The only driver: VXLAN overlays.
pub const OVERLAY: &str = "overlay";

fn validate(spec: &NetworkSpec) -> Result<(), String> {
    crate::limits::network(spec).map_err(|e| e.to_string())?;
    let name = spec.annotations.as_ref().map_or("", |a| a.name.as_str());
    let valid_name = !name.is_empty()
        && name.len() <= crate::limits::MAX_NETWORK_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_name {
        return Err(format!(
            "invalid network name {name:?}: use letters, digits, '-', '_' or '.', starting with a letter or digit"
        ));
    }
    if !spec.driver.is_empty() && spec.driver != OVERLAY {
        return Err(format!(
            "network driver {:?} is not supported: use -d overlay",
            spec.driver
        ));
    }
    if spec.driver_opts.contains_key("encrypted") {
        return Err("--opt encrypted needs IPsec ESP in the kernel (CONFIG_INET_ESP), which these nodes lack: refusing to create a network that would carry its traffic in plaintext".into());
    }
    for ipam in &spec.ipam {
        let subnet: Ipv4Net = ipam
            .subnet
            .parse()
            .map_err(|_| format!("invalid subnet {:?}: expected an IPv4 CIDR", ipam.subnet))?;
        if subnet.prefix_len() > 30 {
            return Err(format!("subnet {subnet} is too small: use a /30 or larger"));
        }
        if !ipam.gateway.is_empty() {
            let gateway: Ipv4Addr = ipam.gateway.parse().map_err(|_| {
                format!(
                    "invalid gateway {:?}: expected an IPv4 address",
                    ipam.gateway
                )
            })?;
            if !subnet.contains(&gateway) {
                return Err(format!("gateway {gateway} is not in subnet {subnet}"));
            }
        }
        if !ipam.ip_range.is_empty() {
            let range: Ipv4Net = ipam.ip_range.parse().map_err(|_| {
                format!(
                    "invalid ip range {:?}: expected an IPv4 CIDR",
                    ipam.ip_range
                )
            })?;
            if !subnet.contains(&range) {
                return Err(format!("ip range {range} is not in subnet {subnet}"));
            }
        }
    }
    if spec.ipam.len() > 1 {
        return Err("one subnet per network is supported".into());
    }
    Ok(())
}

pub(super) async fn create(store: &Store, req: CreateNetworkRequest) -> Result<Network, Status> {
    let mut spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("network spec is missing"))?;
    if spec.driver.is_empty() {
        spec.driver = OVERLAY.into();
    }
    validate(&spec).map_err(Status::invalid_argument)?;
    let name = spec
        .annotations
        .as_ref()
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let network = Network {
        id: new_id(),
        spec: Some(spec),
        ..Default::default()
    };
    let id = network.id.clone();
    store
        .update(|tx| {
            if !tx
                .find::<Network>(|n| resolve::network_name(n) == name)
                .is_empty()
            {
                return Err(StoreError::AlreadyExists {
                    kind: Kind::Network,
                    name: name.clone(),
                });
            }
            tx.create(network)
        })
        .await
        .map_err(status)?;
    tracing::info!(network.id = %id, network.name = %name, "network created");
    get(store, GetNetworkRequest { reference: id })
}

pub(super) fn get(store: &Store, req: GetNetworkRequest) -> Result<Network, Status> {
    store
        .view_promptly(|tx| resolve::network(tx, &req.reference))
        .map_err(status)
}

/// Every network, from one read, in chunks of at most [`LIST_CHUNK_BYTES`].
pub(super) fn list(store: &Store) -> Vec<ListNetworksResponse> {
    split(
        store.view_promptly(|tx| tx.list::<Network>()),
        LIST_CHUNK_BYTES,
        |n| field_len(1, n),
        |networks| ListNetworksResponse { networks },
    )
}

pub(super) async fn remove(store: &Store, req: RemoveNetworkRequest) -> Result<(), Status> {
    store
        .update(|tx| {
            let network = resolve::network(tx, &req.network_id)?;
            let name = resolve::network_name(&network).to_string();
            let uses = |target: &str| target == network.id || target == name;
            let ingress = network.spec.as_ref().is_some_and(|s| s.ingress);
            let services = tx.find::<Service>(|s| {
                let publishes = s
                    .endpoint
                    .iter()
                    .flat_map(|e| &e.ports)
                    .any(|p| p.publish_mode() == mesh_proto::PublishMode::Ingress);
                (ingress && publishes)
                    || s.spec
                        .as_ref()
                        .and_then(|s| s.task.as_ref())
                        .is_some_and(|t| t.networks.iter().any(|n| uses(&n.target)))
            });
            if let Some(service) = services.first() {
                return Err(StoreError::InvalidArgument(format!(
                    "network {name} is in use by service {}: remove the service or detach it first",
                    resolve::service_name(service)
                )));
            }
            let attached = tx.find::<Task>(|t| {
                t.status
                    .as_ref()
                    .is_none_or(|s| s.state <= TaskState::Running as i32)
                    && t.networks.iter().any(|a| a.network_id == network.id)
            });
            if !attached.is_empty() {
                return Err(StoreError::InvalidArgument(format!(
                    "network {name} is in use by {} task(s)",
                    attached.len()
                )));
            }
            tx.delete::<Network>(&network.id)
        })
        .await
        .map_err(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{Annotations, IpamConfig};

    fn spec(name: &str, subnet: &str, gateway: &str, range: &str) -> NetworkSpec {
        NetworkSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            driver: OVERLAY.into(),
            ipam: if subnet.is_empty() {
                vec![]
            } else {
                vec![IpamConfig {
                    subnet: subnet.into(),
                    gateway: gateway.into(),
                    ip_range: range.into(),
                }]
            },
            ..Default::default()
        }
    }

    #[test]
    fn validation() {
        let ok = [
            spec("front", "", "", ""),
            spec("back.end", "10.9.0.0/24", "10.9.0.1", ""),
            spec("b", "10.9.0.0/16", "", "10.9.4.0/24"),
        ];
        for s in &ok {
            assert_eq!(validate(s), Ok(()), "{s:?}");
        }
        let mut encrypted = spec("enc", "", "", "");
        encrypted
            .driver_opts
            .insert("encrypted".into(), String::new());
        let mut bridge = spec("br", "", "", "");
        bridge.driver = "bridge".into();
        let bad = [
            (spec("", "", "", ""), "invalid network name"),
            (spec("-x", "", "", ""), "invalid network name"),
            (spec("n", "10.9.0.0", "", ""), "invalid subnet"),
            (spec("n", "10.9.0.0/31", "", ""), "too small"),
            (spec("n", "10.9.0.0/24", "10.8.0.1", ""), "not in subnet"),
            (spec("n", "10.9.0.0/24", "", "10.8.0.0/25"), "not in subnet"),
            (encrypted, "plaintext"),
            (bridge, "not supported"),
        ];
        for (s, want) in bad {
            let err = validate(&s).expect_err(want);
            assert!(err.contains(want), "{err}");
            assert!(!err.contains('\n'));
        }
    }
}
