//! What the embedded DNS answers from: per network, each service's name, virtual IP and running
//! tasks' addresses, kept from the endpoint records gossip spreads. Pure, no I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::gossip::{Change, EndpointRecord};

/// One service as seen on one network.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ServiceEntry {
    vip: Option<Ipv4Addr>,
    /// Running tasks' addresses by task id.
    tasks: BTreeMap<String, Ipv4Addr>,
}

/// What a name resolves to for a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A service (or its tasks) on a network the asker shares: these addresses, possibly none.
    Addresses(Vec<Ipv4Addr>),
    /// Not a service name here: ask the node's resolvers.
    Forward,
}

/// Services by network id, then by lower-cased name.
#[derive(Debug, Default)]
pub struct Directory {
    networks: HashMap<String, HashMap<String, ServiceEntry>>,
}

impl Directory {
    /// Applies one change of the endpoint table.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Upsert(record) => self.upsert(record),
            Change::Remove(record) => self.remove(record),
        }
    }

    /// The names a record answers to: its service's name and its attachment's aliases (a
    /// service's aliases resolve like its name, to its virtual IP in vip mode, as in Swarm).
    fn names(record: &EndpointRecord) -> Vec<String> {
        let mut names: Vec<String> = std::iter::once(&record.service_name)
            .chain(&record.aliases)
            .filter(|n| !n.is_empty())
            .map(|n| n.to_ascii_lowercase())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    fn upsert(&mut self, record: &EndpointRecord) {
        if record.service_name.is_empty() {
            return;
        }
        let services = self.networks.entry(record.network_id.clone()).or_default();
        for name in Self::names(record) {
            let entry = services.entry(name).or_default();
            entry.vip = record.vip;
            entry.tasks.insert(record.task_id.clone(), record.addr);
        }
    }

    fn remove(&mut self, record: &EndpointRecord) {
        let Some(services) = self.networks.get_mut(&record.network_id) else {
            return;
        };
        for name in Self::names(record) {
            if let Some(entry) = services.get_mut(&name) {
                entry.tasks.remove(&record.task_id);
                if entry.tasks.is_empty() {
                    services.remove(&name);
                }
            }
        }
        if services.is_empty() {
            self.networks.remove(&record.network_id);
        }
    }

    /// The virtual IPs of the services on `networks`, each with its running tasks' addresses:
    /// what the load balancer programs for a sandbox on those networks.
    pub fn vips(&self, networks: &[String]) -> Vec<(Ipv4Addr, Vec<Ipv4Addr>)> {
        let mut vips: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> = BTreeMap::new();
        for entry in networks
            .iter()
            .filter_map(|n| self.networks.get(n))
            .flat_map(HashMap::values)
        {
            if let Some(vip) = entry.vip {
                let backends = vips.entry(vip).or_default();
                backends.extend(entry.tasks.values().copied());
                backends.sort_unstable();
                backends.dedup();
            }
        }
        vips.into_iter().collect()
    }

    /// Resolves `name` (case-insensitive, with or without the trailing dot) for a sandbox on
    /// `networks`: `SERVICE` gives its virtual IPs (its tasks' addresses in dnsrr mode), and
    /// `tasks.SERVICE` its running tasks' addresses; only services on a shared network count.
    pub fn resolve(&self, networks: &[String], name: &str) -> Resolution {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let (service, tasks) = match name.strip_prefix("tasks.") {
            Some(service) => (service, true),
            None => (name.as_str(), false),
        };
        let mut found = false;
        let mut addresses = Vec::new();
        for network in networks {
            let Some(entry) = self.networks.get(network).and_then(|s| s.get(service)) else {
                continue;
            };
            found = true;
            match entry.vip {
                Some(vip) if !tasks => addresses.push(vip),
                _ => addresses.extend(entry.tasks.values().copied()),
            }
        }
        if !found {
            return Resolution::Forward;
        }
        addresses.sort_unstable();
        addresses.dedup();
        Resolution::Addresses(addresses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        network: &str,
        service: &str,
        task: &str,
        last: u8,
        vip: Option<u8>,
    ) -> EndpointRecord {
        EndpointRecord {
            network_id: network.into(),
            task_id: task.into(),
            service_id: format!("{service}-id"),
            addr: Ipv4Addr::new(10, 0, 0, last),
            mac: [2, 0, 0, 0, 0, last],
            node_id: "n1".into(),
            vtep: Ipv4Addr::new(192, 168, 0, 1),
            service_name: service.into(),
            vip: vip.map(|v| Ipv4Addr::new(10, 0, 0, v)),
            ingress_ports: Vec::new(),
            aliases: Vec::new(),
        }
    }

    fn nets(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn names_give_the_vip_and_tasks_give_the_tasks() {
        let mut d = Directory::default();
        d.apply(&Change::Upsert(record("n1", "web", "t1", 5, Some(2))));
        d.apply(&Change::Upsert(record("n1", "web", "t2", 6, Some(2))));
        let here = nets(&["n1"]);
        assert_eq!(
            d.resolve(&here, "web"),
            Resolution::Addresses(vec![Ipv4Addr::new(10, 0, 0, 2)])
        );
        assert_eq!(
            d.resolve(&here, "Tasks.WEB."),
            Resolution::Addresses(vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)])
        );
        assert_eq!(d.resolve(&here, "example.com"), Resolution::Forward);
    }

    #[test]
    fn vips_list_their_running_tasks_per_shared_network() {
        let mut d = Directory::default();
        d.apply(&Change::Upsert(record("n1", "web", "t1", 5, Some(2))));
        d.apply(&Change::Upsert(record("n1", "web", "t2", 6, Some(2))));
        d.apply(&Change::Upsert(record("n1", "rr", "t3", 7, None)));
        d.apply(&Change::Upsert(record("n2", "db", "t4", 8, Some(3))));
        let ip = |last| Ipv4Addr::new(10, 0, 0, last);
        assert_eq!(d.vips(&nets(&["n1"])), [(ip(2), vec![ip(5), ip(6)])]);
        assert_eq!(d.vips(&nets(&["n1", "n2"])).len(), 2);
        assert!(d.vips(&nets(&["n3"])).is_empty());
    }

    #[test]
    fn dnsrr_names_give_the_tasks() {
        let mut d = Directory::default();
        d.apply(&Change::Upsert(record("n1", "rr", "t1", 5, None)));
        d.apply(&Change::Upsert(record("n1", "rr", "t2", 7, None)));
        assert_eq!(
            d.resolve(&nets(&["n1"]), "rr"),
            Resolution::Addresses(vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 7)])
        );
    }

    #[test]
    fn names_are_scoped_to_shared_networks() {
        let mut d = Directory::default();
        d.apply(&Change::Upsert(record("n2", "db", "t1", 5, Some(2))));
        assert_eq!(d.resolve(&nets(&["n1"]), "db"), Resolution::Forward);
        assert_eq!(d.resolve(&nets(&["n1"]), "tasks.db"), Resolution::Forward);
        assert!(
            matches!(d.resolve(&nets(&["n1", "n2"]), "db"), Resolution::Addresses(a) if a.len() == 1)
        );
    }

    #[test]
    fn removed_tasks_leave_and_the_last_one_takes_the_name() {
        let mut d = Directory::default();
        let t1 = record("n1", "web", "t1", 5, Some(2));
        let t2 = record("n1", "web", "t2", 6, Some(2));
        d.apply(&Change::Upsert(t1.clone()));
        d.apply(&Change::Upsert(t2.clone()));
        d.apply(&Change::Remove(t1));
        assert_eq!(
            d.resolve(&nets(&["n1"]), "tasks.web"),
            Resolution::Addresses(vec![Ipv4Addr::new(10, 0, 0, 6)])
        );
        d.apply(&Change::Remove(t2));
        assert_eq!(d.resolve(&nets(&["n1"]), "web"), Resolution::Forward);
        assert!(d.networks.is_empty());
    }

    #[test]
    fn aliases_answer_like_the_service_name_and_leave_with_it() {
        let mut d = Directory::default();
        let mut t1 = record("n1", "shop_db", "t1", 5, Some(2));
        t1.aliases = vec!["db".into()];
        d.apply(&Change::Upsert(t1.clone()));
        let vip = Resolution::Addresses(vec![Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(d.resolve(&nets(&["n1"]), "db"), vip);
        assert_eq!(d.resolve(&nets(&["n1"]), "shop_db"), vip);
        assert_eq!(
            d.resolve(&nets(&["n1"]), "tasks.db"),
            Resolution::Addresses(vec![Ipv4Addr::new(10, 0, 0, 5)])
        );
        assert_eq!(d.resolve(&nets(&["n2"]), "db"), Resolution::Forward);
        assert_eq!(d.vips(&nets(&["n1"])).len(), 1, "one VIP under two names");
        d.apply(&Change::Remove(t1));
        assert_eq!(d.resolve(&nets(&["n1"]), "db"), Resolution::Forward);
        assert!(d.networks.is_empty());
    }
}
