//! Per-network endpoint records and their merge rules: a last-writer-wins table keyed by
//! (network, task) with hybrid-logical-clock versions, tombstones and anti-entropy digests.
//!
//! Pure logic, no I/O: time comes in as milliseconds since the Unix epoch.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

mod digest;
#[cfg(test)]
mod tests;

pub use digest::{Diff, Digest, DigestEntry};

/// Identifies one endpoint: a task's attachment to one network.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordKey {
    pub network_id: String,
    pub task_id: String,
}

/// Where a task's interface on an overlay network lives: what the data plane needs to program
/// FDB and neighbour entries towards it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network_id: String,
    pub task_id: String,
    pub service_id: String,
    pub addr: Ipv4Addr,
    pub mac: [u8; 6],
    pub node_id: String,
    /// The underlay address of the node that hosts the endpoint.
    pub vtep: Ipv4Addr,
    /// The owning service's name, for the embedded DNS.
    #[serde(default)]
    pub service_name: String,
    /// The service's virtual IP on this network; `None` in dnsrr mode.
    #[serde(default)]
    pub vip: Option<Ipv4Addr>,
    /// The service's ports published through the routing mesh, for every node to answer on.
    #[serde(default)]
    pub ingress_ports: Vec<IngressPort>,
    /// The task's other names on this network (its attachment's aliases, e.g. a stack service's
    /// short name), answered by the embedded DNS like the service's name.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A port the routing mesh publishes on every node: `published` there, `target` on the tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IngressPort {
    pub udp: bool,
    pub published: u16,
    pub target: u16,
}

impl EndpointRecord {
    pub fn key(&self) -> RecordKey {
        RecordKey {
            network_id: self.network_id.clone(),
            task_id: self.task_id.clone(),
        }
    }
}

/// Version of a record: a hybrid logical clock (milliseconds, bumped past anything seen) and
/// the node that wrote it, compared in that order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    pub lamport: u64,
    pub origin: String,
}

/// A record as gossiped: live, or a tombstone carrying the last content it had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedRecord {
    pub record: EndpointRecord,
    pub version: Version,
    pub tombstone: bool,
}

impl VersionedRecord {
    /// Whether `self` replaces `other`: a higher version wins, and a tombstone wins at equal version.
    pub fn supersedes(&self, other: &Self) -> bool {
        (&self.version, self.tombstone) > (&other.version, other.tombstone)
    }
}

/// Applies `remote` over `local` when it wins; returns whether `local` changed.
pub fn merge(local: &mut VersionedRecord, remote: VersionedRecord) -> bool {
    if local.record.key() == remote.record.key() && remote.supersedes(local) {
        *local = remote;
        true
    } else {
        false
    }
}

/// What became visible or disappeared, for the data plane to apply. A record whose content
/// changed is reported as a `Remove` of the old content followed by an `Upsert` of the new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Upsert(EndpointRecord),
    Remove(EndpointRecord),
}

/// The replicated endpoint table of one node.
#[derive(Clone, Debug)]
pub struct RecordTable {
    node_id: String,
    clock: u64,
    tombstone_ttl_ms: u64,
    entries: BTreeMap<RecordKey, VersionedRecord>,
}

impl RecordTable {
    pub fn new(node_id: impl Into<String>, tombstone_ttl_ms: u64) -> Self {
        Self {
            node_id: node_id.into(),
            clock: 0,
            tombstone_ttl_ms,
            entries: BTreeMap::new(),
        }
    }

    fn tick(&mut self, now_ms: u64) -> Version {
        self.clock = self.clock.saturating_add(1).max(now_ms);
        Version {
            lamport: self.clock,
            origin: self.node_id.clone(),
        }
    }

    fn expired(&self, rec: &VersionedRecord, now_ms: u64) -> bool {
        rec.tombstone && rec.version.lamport.saturating_add(self.tombstone_ttl_ms) <= now_ms
    }

    /// Publishes a record written here; returns what to disseminate.
    pub fn upsert_local(&mut self, record: EndpointRecord, now_ms: u64) -> VersionedRecord {
        let versioned = VersionedRecord {
            version: self.tick(now_ms),
            record,
            tombstone: false,
        };
        self.entries
            .insert(versioned.record.key(), versioned.clone());
        versioned
    }

    /// Tombstones a live record with a bumped version; returns what to disseminate, or `None`
    /// when there is no live record under `key`.
    pub fn remove_local(&mut self, key: &RecordKey, now_ms: u64) -> Option<VersionedRecord> {
        let record = self
            .entries
            .get(key)
            .filter(|e| !e.tombstone)?
            .record
            .clone();
        let tombstone = VersionedRecord {
            version: self.tick(now_ms),
            record,
            tombstone: true,
        };
        self.entries.insert(key.clone(), tombstone.clone());
        Some(tombstone)
    }

    /// Tombstones, with a version of this node's, the live records of `node_id` (a node that
    /// went away without withdrawing them): the tombstones spread like any other, and the node
    /// refutes them should it come back. Returns what disappeared.
    pub fn expire_node(&mut self, node_id: &str, now_ms: u64) -> Vec<Change> {
        if node_id == self.node_id {
            return Vec::new();
        }
        let keys: Vec<RecordKey> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.tombstone && e.record.node_id == node_id)
            .map(|(k, _)| k.clone())
            .collect();
        let mut changes = Vec::with_capacity(keys.len());
        for key in keys {
            let version = self.tick(now_ms);
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.version = version;
                entry.tombstone = true;
                changes.push(Change::Remove(entry.record.clone()));
            }
        }
        changes
    }

    /// Merges records from a peer, in any order and any number of times.
    ///
    /// A tombstone another node wrote for a record this node owns and still holds live can only
    /// be a death certificate (only owners withdraw their records): it is refuted by re-writing
    /// the record with a newer version instead of being applied.
    pub fn merge_remote(
        &mut self,
        remote: impl IntoIterator<Item = VersionedRecord>,
        now_ms: u64,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for incoming in remote {
            self.clock = self.clock.max(incoming.version.lamport);
            if self.expired(&incoming, now_ms) {
                continue;
            }
            let key = incoming.record.key();
            if self.is_death_certificate_for_ours(&key, &incoming) {
                let version = self.tick(now_ms);
                if let Some(local) = self.entries.get_mut(&key) {
                    local.version = version;
                }
                continue;
            }
            let before = match self.entries.get_mut(&key) {
                Some(local) => {
                    let before = (!local.tombstone).then(|| local.record.clone());
                    if !merge(local, incoming) {
                        continue;
                    }
                    before
                }
                None => {
                    self.entries.insert(key.clone(), incoming);
                    None
                }
            };
            let after = self
                .entries
                .get(&key)
                .filter(|e| !e.tombstone)
                .map(|e| e.record.clone());
            match (before, after) {
                (None, Some(new)) => changes.push(Change::Upsert(new)),
                (Some(old), None) => changes.push(Change::Remove(old)),
                (Some(old), Some(new)) if old != new => {
                    changes.push(Change::Remove(old));
                    changes.push(Change::Upsert(new));
                }
                _ => {}
            }
        }
        changes
    }

    fn is_death_certificate_for_ours(&self, key: &RecordKey, incoming: &VersionedRecord) -> bool {
        incoming.tombstone
            && incoming.version.origin != self.node_id
            && self.entries.get(key).is_some_and(|local| {
                !local.tombstone
                    && local.record.node_id == self.node_id
                    && incoming.supersedes(local)
            })
    }

    /// Drops tombstones older than the TTL; returns how many were collected.
    pub fn gc(&mut self, now_ms: u64) -> usize {
        let before = self.entries.len();
        let ttl = self.tombstone_ttl_ms;
        self.entries
            .retain(|_, e| !(e.tombstone && e.version.lamport.saturating_add(ttl) <= now_ms));
        before - self.entries.len()
    }

    pub fn get(&self, key: &RecordKey) -> Option<&VersionedRecord> {
        self.entries.get(key)
    }

    /// Live records, in key order.
    pub fn visible(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.entries
            .values()
            .filter(|e| !e.tombstone)
            .map(|e| &e.record)
    }

    /// Every entry, tombstones included, in key order.
    pub fn entries(&self) -> impl Iterator<Item = &VersionedRecord> {
        self.entries.values()
    }

    /// The entries stored under `keys`, skipping unknown ones.
    pub fn select<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a RecordKey>,
    ) -> Vec<VersionedRecord> {
        keys.into_iter()
            .filter_map(|k| self.entries.get(k).cloned())
            .collect()
    }
}
