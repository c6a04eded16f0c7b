//! Every pool the allocator hands resources out of, kept in memory and rebuilt from the store's
//! networks and tasks. Pure: the reconciler decides when to write.

use ipnet::Ipv4Net;
use mesh_proto::{IpamConfig, Network, NetworkAllocation, Service, Task};
use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::ipam::{AddressPool, IpamError, PoolConfig, SubnetPool, VniPool, parse_address};

#[derive(Debug, Default)]
pub struct Pools {
    subnets: SubnetPool,
    vnis: VniPool,
    /// Address pools of allocated networks, by network id.
    networks: HashMap<String, AddressPool>,
    /// What each task (or service, see [`vip_owner`]) holds: (network id, address).
    tasks: HashMap<String, Vec<(String, Ipv4Addr)>>,
}

fn parse_net(what: &'static str, value: &str) -> Result<Ipv4Net, IpamError> {
    value.parse().map_err(|_| IpamError::Invalid {
        what,
        value: value.to_string(),
    })
}

fn parse_optional<T: std::str::FromStr>(
    what: &'static str,
    value: &str,
) -> Result<Option<T>, IpamError> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| IpamError::Invalid {
        what,
        value: value.to_string(),
    })
}

/// The owner a service's virtual IPs are held under (task ids never contain `/`).
pub fn vip_owner(service_id: &str) -> String {
    format!("vip/{service_id}")
}

impl Pools {
    pub fn new(config: PoolConfig) -> Self {
        Self {
            subnets: SubnetPool::new(config),
            ..Self::default()
        }
    }

    /// New pools for auto-allocated subnets; what is held stays held.
    pub fn set_config(&mut self, config: PoolConfig) {
        self.subnets.set_config(config);
    }

    /// Pools holding what the given networks and tasks already hold. What cannot be marked (a
    /// corrupt or conflicting allocation) is returned so the caller can report it.
    pub fn rebuild<'a>(
        config: PoolConfig,
        networks: impl IntoIterator<Item = &'a Network>,
        tasks: impl IntoIterator<Item = &'a Task>,
        services: impl IntoIterator<Item = &'a Service>,
    ) -> (Self, Vec<String>) {
        let mut pools = Self::new(config);
        let mut errors = Vec::new();
        for network in networks.into_iter().filter(|n| n.allocation.is_some()) {
            if let Err(err) = pools.mark_network(network) {
                errors.push(format!("network {}: {err}", network.id));
            }
        }
        for task in tasks {
            for err in pools.mark_task(task) {
                errors.push(format!("task {}: {err}", task.id));
            }
        }
        for service in services {
            for err in pools.mark_vips(service) {
                errors.push(format!("service {}: {err}", service.id));
            }
        }
        (pools, errors)
    }

    pub fn is_allocated(&self, network_id: &str) -> bool {
        self.networks.contains_key(network_id)
    }

    /// Marks an allocated network's VXLAN id, subnet and gateway as held.
    pub fn mark_network(&mut self, network: &Network) -> Result<(), IpamError> {
        let Some(allocation) = &network.allocation else {
            return Ok(());
        };
        let ipam = allocation.ipam.first().ok_or_else(|| IpamError::Invalid {
            what: "allocation without a subnet of network",
            value: network.id.clone(),
        })?;
        let pool = AddressPool::new(
            parse_net("subnet", &ipam.subnet)?,
            parse_optional("gateway", &ipam.gateway)?,
            parse_optional("ip range", &ipam.ip_range)?,
        )?;
        self.vnis.reserve(&network.id, allocation.vni)?;
        self.subnets.reserve(&network.id, pool.subnet());
        self.networks.insert(network.id.clone(), pool);
        Ok(())
    }

    /// A VXLAN id and a subnet (the user's, or a free one from the default pools) with its
    /// gateway. Nothing stays held when it fails.
    pub fn allocate_network(&mut self, network: &Network) -> Result<NetworkAllocation, IpamError> {
        let wanted = network.spec.as_ref().and_then(|s| s.ipam.first());
        let id = &network.id;
        let result = self.try_allocate_network(id, wanted);
        if result.is_err() {
            self.release_network(id);
        }
        result
    }

    fn try_allocate_network(
        &mut self,
        id: &str,
        wanted: Option<&IpamConfig>,
    ) -> Result<NetworkAllocation, IpamError> {
        let (subnet, gateway, range) = match wanted {
            Some(w) => {
                let subnet = parse_net("subnet", &w.subnet)?;
                self.subnets.reserve(id, subnet);
                (
                    subnet,
                    parse_optional("gateway", &w.gateway)?,
                    parse_optional::<Ipv4Net>("ip range", &w.ip_range)?,
                )
            }
            None => (self.subnets.allocate(id)?, None, None),
        };
        let pool = AddressPool::new(subnet, gateway, range)?;
        let vni = self.vnis.allocate(id)?;
        let allocation = NetworkAllocation {
            vni,
            ipam: vec![IpamConfig {
                subnet: pool.subnet().to_string(),
                gateway: pool.gateway().to_string(),
                ip_range: range.map(|r| r.trunc().to_string()).unwrap_or_default(),
            }],
        };
        self.networks.insert(id.to_string(), pool);
        Ok(allocation)
    }

    /// Returns a deleted network's VXLAN id and subnet to the pools, with its addresses.
    pub fn release_network(&mut self, id: &str) {
        self.vnis.release(id);
        self.subnets.release(id);
        self.networks.remove(id);
        for held in self.tasks.values_mut() {
            held.retain(|(network, _)| network != id);
        }
    }

    /// Marks the addresses a task's attachments hold.
    pub fn mark_task(&mut self, task: &Task) -> Vec<IpamError> {
        let held = task.networks.iter().flat_map(|attachment| {
            attachment
                .addresses
                .iter()
                .map(|address| (attachment.network_id.as_str(), address.as_str()))
        });
        self.mark(&task.id, held)
    }

    /// Marks the virtual IPs a service's endpoint holds.
    pub fn mark_vips(&mut self, service: &Service) -> Vec<IpamError> {
        let vips = service.endpoint.iter().flat_map(|e| {
            e.virtual_ips
                .iter()
                .map(|v| (v.network_id.as_str(), v.addr.as_str()))
        });
        self.mark(&vip_owner(&service.id), vips)
    }

    fn mark<'a>(
        &mut self,
        owner: &str,
        held: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Vec<IpamError> {
        let mut errors = Vec::new();
        for (network_id, address) in held {
            let Some(pool) = self.networks.get_mut(network_id) else {
                continue;
            };
            let marked = parse_address(address).and_then(|a| {
                pool.reserve(owner, a)?;
                Ok(a)
            });
            match marked {
                Ok(a) => self
                    .tasks
                    .entry(owner.to_string())
                    .or_default()
                    .push((network_id.to_string(), a)),
                Err(err) => errors.push(err),
            }
        }
        errors
    }

    /// One address on `network_id` for `task_id`, as `A.B.C.D/prefix`.
    pub fn allocate_address(
        &mut self,
        task_id: &str,
        network_id: &str,
    ) -> Result<String, IpamError> {
        let pool = self
            .networks
            .get_mut(network_id)
            .ok_or_else(|| IpamError::UnknownNetwork(network_id.to_string()))?;
        let address = pool.allocate(task_id)?;
        self.tasks
            .entry(task_id.to_string())
            .or_default()
            .push((network_id.to_string(), address));
        Ok(pool.cidr(address))
    }

    /// Returns every address a task holds.
    pub fn release_task(&mut self, task_id: &str) {
        for (network, address) in self.tasks.remove(task_id).unwrap_or_default() {
            if let Some(pool) = self.networks.get_mut(&network) {
                pool.release(task_id, address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::NetworkAttachment;

    fn network(id: &str, vni: u32, subnet: &str) -> Network {
        Network {
            id: id.into(),
            allocation: Some(NetworkAllocation {
                vni,
                ipam: vec![IpamConfig {
                    subnet: subnet.into(),
                    gateway: String::new(),
                    ip_range: String::new(),
                }],
            }),
            ..Default::default()
        }
    }

    fn task(id: &str, network_id: &str, address: &str) -> Task {
        Task {
            id: id.into(),
            networks: vec![NetworkAttachment {
                network_id: network_id.into(),
                addresses: vec![address.into()],
                aliases: vec![],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn rebuild_marks_what_the_store_holds() {
        let networks = [
            network("n1", 4096, "10.0.0.0/24"),
            network("n2", 4096, "10.0.1.0/24"),
            network("n3", 4098, "bad"),
            Network {
                id: "pending".into(),
                ..Default::default()
            },
        ];
        let tasks = [
            task("t1", "n1", "10.0.0.2/24"),
            task("t2", "n1", "10.0.0.2/24"),
            task("t3", "gone", "10.9.0.2/24"),
        ];
        let (mut pools, errors) = Pools::rebuild(PoolConfig::default(), &networks, &tasks, []);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("network n2: VXLAN id 4096 is already held by n1"));
        assert!(pools.is_allocated("n1") && !pools.is_allocated("pending"));
        assert_eq!(pools.allocate_address("t4", "n1"), Ok("10.0.0.3/24".into()));
        let fresh = pools.allocate_network(&Network {
            id: "n4".into(),
            ..Default::default()
        });
        let fresh = fresh.expect("allocates");
        assert_eq!(fresh.vni, 4097);
        assert_eq!(fresh.ipam[0].subnet, "10.0.1.0/24");
        assert_eq!(fresh.ipam[0].gateway, "10.0.1.1");
        pools.release_task("t1");
        assert_eq!(pools.allocate_address("t5", "n1"), Ok("10.0.0.2/24".into()));
        pools.release_network("n1");
        assert_eq!(
            pools.allocate_address("t6", "n1"),
            Err(IpamError::UnknownNetwork("n1".into()))
        );
    }
}
