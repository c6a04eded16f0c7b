//! Which Maglev table each service of each sandbox uses. Sandboxes that see a service with the same
//! backends share one table, so the kernel holds one table per distinct backend set, not one per
//! sandbox. Pure bookkeeping: it says what to write and what to delete; `SockLb` does it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddrV4;

use super::maps::{Service, ServiceKey, SlotKey};
use crate::lb::maglev::{self, TableSize};

/// A Maglev table in the slots map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TableRef {
    pub id: u32,
    pub size: TableSize,
}

struct Table {
    table: TableRef,
    users: usize,
}

/// What setting a service takes, worked out before anything is written.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub key: ServiceKey,
    /// Sorted, without duplicates.
    pub backends: Vec<SocketAddrV4>,
    /// A table to fill before the service points at it; slot `i` goes to `slots[i]`.
    pub new_table: Option<(TableRef, Vec<SocketAddrV4>)>,
    /// The service entry's value.
    pub service: Service,
}

/// A registry read back from the maps an earlier run left (pinned), and what in them is of no
/// use: entries to delete.
#[derive(Default)]
pub(super) struct Rebuilt {
    pub registry: Registry,
    /// Services whose table is not whole (a run stopped while writing or deleting it), or whose
    /// backends another table already holds: deleted, to be set again from scratch.
    pub broken: Vec<ServiceKey>,
    /// Slots of tables no service uses: `(table id, slot)`.
    pub unused_slots: Vec<(u32, u32)>,
}

#[derive(Default)]
pub(super) struct Registry {
    services: BTreeMap<ServiceKey, Vec<SocketAddrV4>>,
    tables: HashMap<Vec<SocketAddrV4>, Table>,
    next_id: u32,
}

impl Registry {
    /// The registry that the maps' contents stand for: every service, and the table it points
    /// at with the backends its slots hold. A table counts only when whole: slots `0..size` for
    /// a prime `size` that the service names too. Nothing is assumed beyond what the maps say.
    pub fn rebuild(
        services: impl IntoIterator<Item = (ServiceKey, Service)>,
        slots: impl IntoIterator<Item = (SlotKey, SocketAddrV4)>,
    ) -> Rebuilt {
        let mut tables: BTreeMap<u32, BTreeMap<u32, SocketAddrV4>> = BTreeMap::new();
        for (key, backend) in slots {
            tables
                .entry(key.table_id)
                .or_default()
                .insert(key.slot, backend);
        }
        let mut rebuilt = Rebuilt::default();
        let registry = &mut rebuilt.registry;
        let mut services: Vec<(ServiceKey, Service)> = services.into_iter().collect();
        services.sort_by_key(|(key, _)| *key);
        for (key, service) in services {
            if service.table_size == 0 {
                registry.services.insert(key, Vec::new());
                continue;
            }
            let whole = tables.get(&service.table_id).and_then(|slots| {
                let size = TableSize::new(service.table_size)?;
                let contiguous = u32::try_from(slots.len()).ok() == Some(size.get())
                    && slots.keys().copied().eq(0..size.get());
                contiguous.then_some((size, slots))
            });
            let Some((size, slots)) = whole else {
                rebuilt.broken.push(key);
                continue;
            };
            let mut backends: Vec<SocketAddrV4> = slots.values().copied().collect();
            backends.sort_unstable();
            backends.dedup();
            let table = registry.tables.entry(backends.clone()).or_insert(Table {
                table: TableRef {
                    id: service.table_id,
                    size,
                },
                users: 0,
            });
            if table.table.id != service.table_id {
                rebuilt.broken.push(key);
                continue;
            }
            table.users += 1;
            registry.services.insert(key, backends);
        }
        let used: HashSet<u32> = registry.tables.values().map(|t| t.table.id).collect();
        for (id, slots) in &tables {
            if !used.contains(id) {
                rebuilt
                    .unused_slots
                    .extend(slots.keys().map(|slot| (*id, *slot)));
            }
        }
        registry.next_id = tables
            .keys()
            .max()
            .map_or(1, |max| max.wrapping_add(1).max(1));
        rebuilt
    }

    /// What it takes to point `key` at `backends`, or `None` when it already does.
    pub fn plan_set(&self, key: ServiceKey, backends: &[SocketAddrV4]) -> Option<Plan> {
        let mut backends = backends.to_vec();
        backends.sort_unstable();
        backends.dedup();
        if self.services.get(&key) == Some(&backends) {
            return None;
        }
        let (new_table, service) = if backends.is_empty() {
            let refuse = Service {
                table_id: 0,
                table_size: 0,
            };
            (None, refuse)
        } else if let Some(shared) = self.tables.get(&backends) {
            (None, service_of(shared.table))
        } else {
            let table = TableRef {
                id: self.free_id(),
                size: TableSize::for_backends(backends.len()),
            };
            let ids: Vec<[u8; 6]> = backends.iter().map(identity).collect();
            let slots = maglev::populate(&ids, table.size)
                .into_iter()
                .map(|i| backends[i as usize])
                .collect();
            (Some((table, slots)), service_of(table))
        };
        Some(Plan {
            key,
            backends,
            new_table,
            service,
        })
    }

    /// Records a plan the kernel now holds; returns the table nobody uses any more, whose slots
    /// are to be deleted.
    pub fn commit_set(&mut self, plan: Plan) -> Option<TableRef> {
        if let Some((table, _)) = plan.new_table {
            self.next_id = table.id.wrapping_add(1);
            let unused = Table { table, users: 0 };
            self.tables.insert(plan.backends.clone(), unused);
        }
        if let Some(table) = self.tables.get_mut(&plan.backends) {
            table.users += 1;
        }
        let old = self.services.insert(plan.key, plan.backends)?;
        self.release(&old)
    }

    /// Whether `key` is registered.
    pub fn contains(&self, key: &ServiceKey) -> bool {
        self.services.contains_key(key)
    }

    /// Forgets `key`; returns the table nobody uses any more, if any.
    pub fn remove(&mut self, key: &ServiceKey) -> Option<TableRef> {
        let old = self.services.remove(key)?;
        self.release(&old)
    }

    /// The backends `key` points at, if it is registered.
    pub fn backends(&self, key: &ServiceKey) -> Option<&[SocketAddrV4]> {
        self.services.get(key).map(Vec::as_slice)
    }

    /// The netns cookies of every sandbox with a service registered.
    pub fn sandboxes(&self) -> BTreeSet<u64> {
        self.services.keys().map(|k| k.netns_cookie).collect()
    }

    /// The services registered for one sandbox.
    pub fn services_of(&self, netns_cookie: u64) -> Vec<ServiceKey> {
        self.services
            .keys()
            .filter(|k| k.netns_cookie == netns_cookie)
            .copied()
            .collect()
    }

    fn release(&mut self, backends: &[SocketAddrV4]) -> Option<TableRef> {
        let table = self.tables.get_mut(backends)?;
        table.users -= 1;
        if table.users > 0 {
            return None;
        }
        self.tables.remove(backends).map(|t| t.table)
    }

    /// The first id from `next_id` on that no table uses (0 is never used).
    fn free_id(&self) -> u32 {
        let used: HashSet<u32> = self.tables.values().map(|t| t.table.id).collect();
        let mut id = self.next_id.max(1);
        while used.contains(&id) {
            id = id.wrapping_add(1).max(1);
        }
        id
    }
}

fn service_of(table: TableRef) -> Service {
    Service {
        table_id: table.id,
        table_size: table.size.get(),
    }
}

/// What Maglev hashes a backend by: its address and port.
fn identity(backend: &SocketAddrV4) -> [u8; 6] {
    let [a, b, c, d] = backend.ip().octets();
    let [p, q] = backend.port().to_be_bytes();
    [a, b, c, d, p, q]
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::lb::ebpf::maps::IPPROTO_TCP;

    fn key(sandbox: u64) -> ServiceKey {
        ServiceKey::new(sandbox, Ipv4Addr::new(10, 99, 0, 10), 80, IPPROTO_TCP)
    }

    fn backends(hosts: &[u8]) -> Vec<SocketAddrV4> {
        hosts
            .iter()
            .map(|&h| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, h), 80))
            .collect()
    }

    fn set(reg: &mut Registry, k: ServiceKey, hosts: &[u8]) -> (Plan, Option<TableRef>) {
        let plan = reg.plan_set(k, &backends(hosts)).expect("a change");
        (plan.clone(), reg.commit_set(plan))
    }

    #[test]
    fn a_new_table_holds_every_backend_in_maglev_order() {
        let mut reg = Registry::default();
        let (plan, released) = set(&mut reg, key(1), &[4, 2, 3, 2]);
        assert_eq!(released, None);
        assert_eq!(plan.backends, backends(&[2, 3, 4]), "sorted, deduplicated");
        let (table, slots) = plan.new_table.expect("a new table");
        assert_ne!(table.id, 0);
        assert_eq!(table.size, TableSize::for_backends(3));
        assert_eq!(slots.len(), table.size.get() as usize);
        for b in backends(&[2, 3, 4]) {
            let owned = slots.iter().filter(|s| **s == b).count();
            assert!(owned >= slots.len() / 3, "{b} owns {owned}");
        }
        assert_eq!(plan.service.table_id, table.id);
        assert_eq!(plan.service.table_size, table.size.get());
    }

    #[test]
    fn sandboxes_with_the_same_backends_share_a_table() {
        let mut reg = Registry::default();
        let (first, _) = set(&mut reg, key(1), &[2, 3]);
        let (second, _) = set(&mut reg, key(2), &[3, 2]);
        assert!(second.new_table.is_none(), "reuses the first table");
        assert_eq!(second.service, first.service);

        // Sandbox 1 moves on; the table stays for sandbox 2, then goes with it.
        let (moved, released) = set(&mut reg, key(1), &[2]);
        assert!(moved.new_table.is_some());
        assert_eq!(released, None);
        let shared = first.new_table.expect("first made a table").0;
        assert_eq!(reg.remove(&key(2)), Some(shared));
        assert_ne!(moved.service.table_id, shared.id);
    }

    #[test]
    fn setting_the_same_backends_again_changes_nothing() {
        let mut reg = Registry::default();
        set(&mut reg, key(1), &[2, 3]);
        assert!(reg.plan_set(key(1), &backends(&[3, 2, 3])).is_none());
    }

    #[test]
    fn no_backends_refuses_without_a_table() {
        let mut reg = Registry::default();
        let (with, _) = set(&mut reg, key(1), &[2]);
        let (without, released) = set(&mut reg, key(1), &[]);
        assert!(without.new_table.is_none());
        assert_eq!(without.service.table_size, 0);
        assert_eq!(released, with.new_table.map(|(t, _)| t));
        assert!(reg.contains(&key(1)));
        assert_eq!(reg.remove(&key(1)), None, "no table to release");
        assert!(!reg.contains(&key(1)));
        assert_eq!(reg.remove(&key(1)), None);
    }

    #[test]
    fn table_ids_are_not_reused_while_in_use() {
        let mut reg = Registry::default();
        let mut ids = HashSet::new();
        for sandbox in 1..=20u8 {
            let (plan, _) = set(&mut reg, key(u64::from(sandbox)), &[sandbox]);
            let (table, _) = plan.new_table.expect("distinct backends, distinct tables");
            assert!(ids.insert(table.id), "id {} given twice", table.id);
        }
        reg.next_id = u32::MAX;
        let (plan, _) = set(&mut reg, key(99), &[99]);
        let id = plan.new_table.expect("new").0.id;
        assert_eq!(id, u32::MAX);
        let (plan, _) = set(&mut reg, key(100), &[100]);
        let id = plan.new_table.expect("new").0.id;
        assert!(!ids.contains(&id) && id != 0, "wrapped onto {id}");
    }

    #[test]
    fn services_of_lists_one_sandbox() {
        let mut reg = Registry::default();
        set(&mut reg, key(1), &[2]);
        set(&mut reg, key(2), &[2]);
        let other_port = ServiceKey::new(1, Ipv4Addr::new(10, 99, 0, 10), 0, IPPROTO_TCP);
        reg.commit_set(reg.plan_set(other_port, &backends(&[5])).expect("new"));
        let mut mine = reg.services_of(1);
        mine.sort();
        let mut want = vec![key(1), other_port];
        want.sort();
        assert_eq!(mine, want);
    }
}

/// A registry rebuilt from what the maps hold, as after a restart with pinned maps.
#[cfg(test)]
mod rebuild_tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use super::*;
    use crate::lb::ebpf::maps::IPPROTO_TCP;

    fn key(sandbox: u64) -> ServiceKey {
        ServiceKey::new(sandbox, Ipv4Addr::new(10, 99, 0, 10), 0, IPPROTO_TCP)
    }

    fn backends(hosts: &[u8]) -> Vec<SocketAddrV4> {
        hosts
            .iter()
            .map(|&h| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, h), 0))
            .collect()
    }

    /// The two maps, written as `SockLb` writes them.
    #[derive(Default)]
    struct Maps {
        services: BTreeMap<ServiceKey, Service>,
        slots: BTreeMap<(u32, u32), SocketAddrV4>,
    }

    impl Maps {
        fn set(&mut self, reg: &mut Registry, k: ServiceKey, hosts: &[u8]) {
            let Some(plan) = reg.plan_set(k, &backends(hosts)) else {
                return;
            };
            if let Some((table, slots)) = &plan.new_table {
                for (slot, backend) in (0u32..).zip(slots) {
                    self.slots.insert((table.id, slot), *backend);
                }
            }
            self.services.insert(k, plan.service);
            if let Some(old) = reg.commit_set(plan) {
                self.delete_table(old.id);
            }
        }

        fn delete_table(&mut self, id: u32) {
            self.slots.retain(|(table, _), _| *table != id);
        }

        fn rebuild(&self) -> Rebuilt {
            Registry::rebuild(
                self.services.iter().map(|(k, v)| (*k, *v)),
                self.slots.iter().map(|((table_id, slot), b)| {
                    (
                        SlotKey {
                            table_id: *table_id,
                            slot: *slot,
                        },
                        *b,
                    )
                }),
            )
        }
    }

    #[test]
    fn what_the_maps_hold_is_known_again_and_not_rewritten() {
        let (mut maps, mut reg) = (Maps::default(), Registry::default());
        maps.set(&mut reg, key(1), &[2, 3]);
        maps.set(&mut reg, key(2), &[3, 2]);
        maps.set(&mut reg, key(3), &[4]);
        maps.set(&mut reg, key(4), &[]);

        let rebuilt = maps.rebuild();
        assert!(rebuilt.broken.is_empty() && rebuilt.unused_slots.is_empty());
        let again = rebuilt.registry;
        for (k, hosts) in [(1, &[2u8, 3][..]), (2, &[2, 3]), (3, &[4]), (4, &[])] {
            assert_eq!(again.backends(&key(k)), Some(&backends(hosts)[..]));
            assert!(
                again.plan_set(key(k), &backends(hosts)).is_none(),
                "sandbox {k} would be rewritten"
            );
        }
        assert_eq!(again.sandboxes(), BTreeSet::from([1, 2, 3, 4]));
        assert_eq!(again.services_of(1), [key(1)]);
    }

    #[test]
    fn a_rebuilt_registry_shares_releases_and_numbers_tables_as_before() {
        let (mut maps, mut reg) = (Maps::default(), Registry::default());
        maps.set(&mut reg, key(1), &[2, 3]);
        maps.set(&mut reg, key(2), &[2, 3]);
        maps.set(&mut reg, key(3), &[4]);
        let mut again = maps.rebuild().registry;

        // A third sandbox with the same backends shares the existing table.
        let plan = again.plan_set(key(5), &backends(&[3, 2])).expect("new");
        assert!(plan.new_table.is_none());
        again.commit_set(plan);
        // The shared table goes only with its last user.
        let shared = maps.services[&key(1)].table_id;
        assert_eq!(again.remove(&key(1)), None);
        assert_eq!(again.remove(&key(2)), None);
        assert_eq!(again.remove(&key(5)).map(|t| t.id), Some(shared));
        // New tables never take an id in use.
        let used: HashSet<u32> = maps.slots.keys().map(|(id, _)| *id).collect();
        let plan = again.plan_set(key(6), &backends(&[9])).expect("new");
        let id = plan.new_table.expect("a new table").0.id;
        assert!(!used.contains(&id) && id != 0, "id {id} reused");
    }

    #[test]
    fn half_written_and_unused_tables_are_left_to_delete() {
        let (mut maps, mut reg) = (Maps::default(), Registry::default());
        maps.set(&mut reg, key(1), &[2, 3]);
        maps.set(&mut reg, key(2), &[4]);
        // A run stopped while writing sandbox 2's next table: its service points at a table
        // whose last slot is missing.
        let torn = maps.services[&key(2)].table_id;
        let last = maps.services[&key(2)].table_size - 1;
        maps.slots.remove(&(torn, last));
        // And while deleting a table nobody used any more.
        maps.slots.insert((77, 0), backends(&[8])[0]);
        maps.slots.insert((77, 1), backends(&[8])[0]);

        let rebuilt = maps.rebuild();
        assert_eq!(rebuilt.broken, [key(2)]);
        let mut unused = rebuilt.unused_slots.clone();
        unused.sort_unstable();
        let mut want: Vec<(u32, u32)> = (0..last).map(|slot| (torn, slot)).collect();
        want.extend([(77, 0), (77, 1)]);
        want.sort_unstable();
        assert_eq!(unused, want);
        // The broken service is unknown, so the next setting writes it from scratch.
        let again = rebuilt.registry;
        assert!(!again.contains(&key(2)));
        assert!(again.plan_set(key(2), &backends(&[4])).is_some());
        assert!(again.plan_set(key(1), &backends(&[2, 3])).is_none());
    }

    #[test]
    fn a_table_whose_backends_another_table_holds_is_broken() {
        let mut maps = Maps::default();
        let service = |table_id| Service {
            table_id,
            table_size: 251,
        };
        for id in [5, 6] {
            for slot in 0..251 {
                maps.slots.insert((id, slot), backends(&[1])[0]);
            }
        }
        maps.services.insert(key(1), service(5));
        maps.services.insert(key(2), service(6));
        let rebuilt = maps.rebuild();
        assert_eq!(rebuilt.broken, [key(2)]);
        assert_eq!(rebuilt.unused_slots.len(), 251, "table 6's slots");
        assert!(rebuilt.registry.contains(&key(1)));
    }
}
