//! The in-memory tables every manager holds, changed only by applying committed entries.

use mesh_proto::{
    Cluster, Config, Network, Node, Proposal, Secret, Service, StoreAction, StoreSnapshot, Task,
    Transaction, Version, store_action,
};
use parking_lot::{RwLock, RwLockReadGuard};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::broadcast;

use super::StoreError;
use super::object::{Kind, Object};
use super::tx::{ReadTx, WriteTx};
use super::watch::Event;

/// How many events a watcher may fall behind before it is told to resynchronise.
const WATCH_CAPACITY: usize = 1 << 16;

#[derive(Debug, Default, Clone)]
pub struct Tables {
    pub(crate) nodes: BTreeMap<String, Node>,
    pub(crate) services: BTreeMap<String, Service>,
    pub(crate) tasks: BTreeMap<String, Task>,
    pub(crate) clusters: BTreeMap<String, Cluster>,
    pub(crate) networks: BTreeMap<String, Network>,
    pub(crate) secrets: BTreeMap<String, Secret>,
    pub(crate) configs: BTreeMap<String, Config>,
    /// Task ids by service and by node: what reads one service's or one node's tasks without
    /// scanning every task (a reconciler of one service, a node's assignments).
    pub(crate) tasks_by_service: HashMap<String, BTreeSet<String>>,
    pub(crate) tasks_by_node: HashMap<String, BTreeSet<String>>,
    /// The log index of the last entry applied (0 after a snapshot is restored, until the next).
    pub(crate) applied: u64,
}

/// Moves a task's ids in the indexes from where `old` had them to where `new` has them.
fn reindex(
    by_service: &mut HashMap<String, BTreeSet<String>>,
    by_node: &mut HashMap<String, BTreeSet<String>>,
    old: Option<&Task>,
    new: Option<&Task>,
) {
    fn keys(t: &Task) -> (&str, &str) {
        (&t.service_id, &t.node_id)
    }
    if old.map(keys) == new.map(keys) {
        return;
    }
    for (index, key) in [
        (&mut *by_service, old.map(|t| &t.service_id)),
        (&mut *by_node, old.map(|t| &t.node_id)),
    ] {
        let (Some(key), Some(task)) = (key, old) else {
            continue;
        };
        if let Some(ids) = index.get_mut(key.as_str()) {
            ids.remove(&task.id);
            if ids.is_empty() {
                index.remove(key.as_str());
            }
        }
    }
    let Some(task) = new else {
        return;
    };
    for (index, key) in [(by_service, &task.service_id), (by_node, &task.node_id)] {
        if !key.is_empty() {
            index
                .entry(key.clone())
                .or_default()
                .insert(task.id.clone());
        }
    }
}

/// Why a transaction was refused when applied. Deterministic: every manager refuses it alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ApplyError {
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: Kind, name: String },
    #[error("{kind} {id} was changed concurrently")]
    Conflict { kind: Kind, id: String },
}

pub struct MemoryStore {
    tables: RwLock<Tables>,
    events: broadcast::Sender<Event>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            tables: RwLock::new(Tables::default()),
            events: broadcast::channel(WATCH_CAPACITY).0,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables.read()
    }

    /// Reads under the lock, queued fairly with writers.
    pub fn view<T>(&self, f: impl FnOnce(&ReadTx<'_>) -> T) -> T {
        let tables = self.read();
        f(&ReadTx::new(&tables))
    }

    /// Reads without queueing behind a writer that waits for other reads to end: while a
    /// reconciler plans over a hundred thousand tasks under a read lock and an apply waits for
    /// it, a short read (the API's) still gets in at once rather than after both. Only for reads
    /// that are short: a steady stream of them could hold writers off.
    pub fn view_promptly<T>(&self, f: impl FnOnce(&ReadTx<'_>) -> T) -> T {
        let tables = self.tables.read_recursive();
        f(&ReadTx::new(&tables))
    }

    /// Reads under the lock, with the log index of the last entry the view holds.
    pub fn view_at<T>(&self, f: impl FnOnce(&ReadTx<'_>) -> T) -> (u64, T) {
        let tables = self.read();
        (tables.applied, f(&ReadTx::new(&tables)))
    }

    /// Reads and subscribes under one lock: no event after the view is missed.
    pub fn view_and_watch<T>(
        &self,
        f: impl FnOnce(&ReadTx<'_>) -> T,
    ) -> (T, broadcast::Receiver<Event>) {
        let tables = self.read();
        let rx = self.events.subscribe();
        (f(&ReadTx::new(&tables)), rx)
    }

    pub fn watch(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) fn write_tx<T>(
        &self,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, StoreError>,
    ) -> Result<(Transaction, T), StoreError> {
        let tables = self.read();
        let mut tx = WriteTx::new(&tables);
        let out = f(&mut tx)?;
        Ok((tx.into_transaction(), out))
    }

    /// Applies one committed entry at log `index`; one result per transaction, in order.
    pub fn apply(&self, index: u64, proposal: &Proposal) -> Vec<Result<(), ApplyError>> {
        let mut tables = self.tables.write();
        let mut events = Vec::new();
        let results = proposal
            .transactions
            .iter()
            .map(|tx| apply_transaction(&mut tables, index, tx, &mut events))
            .collect();
        tables.applied = index;
        // Sent under the write lock so that view_and_watch never sees a state without its events.
        for event in events {
            let _ = self.events.send(event);
        }
        let _ = self.events.send(Event::Commit { index });
        results
    }

    pub fn snapshot(&self) -> StoreSnapshot {
        let tables = self.read();
        StoreSnapshot {
            nodes: tables.nodes.values().cloned().collect(),
            services: tables.services.values().cloned().collect(),
            tasks: tables.tasks.values().cloned().collect(),
            clusters: tables.clusters.values().cloned().collect(),
            networks: tables.networks.values().cloned().collect(),
            secrets: tables.secrets.values().cloned().collect(),
            configs: tables.configs.values().cloned().collect(),
        }
    }

    pub fn restore(&self, snapshot: StoreSnapshot) {
        let mut tables = self.tables.write();
        *tables = Tables {
            tasks_by_service: HashMap::new(),
            tasks_by_node: HashMap::new(),
            applied: 0,
            nodes: snapshot
                .nodes
                .into_iter()
                .map(|o| (o.id.clone(), o))
                .collect(),
            services: snapshot
                .services
                .into_iter()
                .map(|o| (o.id.clone(), o))
                .collect(),
            tasks: snapshot
                .tasks
                .into_iter()
                .map(|o| (o.id.clone(), o))
                .collect(),
            clusters: snapshot
                .clusters
                .into_iter()
                .map(|o| (o.id.clone(), o))
                .collect(),
            networks: snapshot
                .networks
                .into_iter()
                .map(|o| (o.id.clone(), o))
                .collect(),
            secrets: snapshot
                .secrets
                .into_iter()
                .map(|o| (o.id.clone(), o))
                .collect(),
            configs: snapshot
                .configs
                .into_iter()
                .map(|o| (o.id.clone(), o))
                .collect(),
        };
        let Tables {
            tasks,
            tasks_by_service,
            tasks_by_node,
            ..
        } = &mut *tables;
        for task in tasks.values() {
            reindex(tasks_by_service, tasks_by_node, None, Some(task));
        }
        let _ = self.events.send(Event::Reset);
    }
}

fn apply_transaction(
    tables: &mut Tables,
    index: u64,
    tx: &Transaction,
    events: &mut Vec<Event>,
) -> Result<(), ApplyError> {
    // Validate every action first so that a refused transaction changes nothing.
    for action in &tx.actions {
        validate(tables, action)?;
    }
    for action in &tx.actions {
        let Some(target) = action.target.clone() else {
            continue;
        };
        let mut object = Object::from_target(target);
        let kind = store_action::Kind::try_from(action.kind).unwrap_or(store_action::Kind::Create);
        if kind == store_action::Kind::Delete {
            if let Some(old) = remove(tables, object.kind(), object.id()) {
                events.push(Event::Deleted(Arc::new(old)));
            }
            continue;
        }
        let meta = object.meta_mut().get_or_insert_with(Default::default);
        meta.version = Some(Version { index });
        match insert(tables, object.clone()) {
            Some(old) => events.push(Event::Updated {
                old: Arc::new(old),
                new: Arc::new(object),
            }),
            None => events.push(Event::Created(Arc::new(object))),
        }
    }
    Ok(())
}

fn validate(tables: &Tables, action: &StoreAction) -> Result<(), ApplyError> {
    let Some(target) = &action.target else {
        return Ok(());
    };
    let object = Object::from_target(target.clone());
    let (kind, id) = (object.kind(), object.id().to_string());
    let current = get(tables, kind, &id);
    match store_action::Kind::try_from(action.kind).unwrap_or(store_action::Kind::Create) {
        // The transaction saw no such object when it was built (WriteTx::create checks), so one
        // appearing since is a concurrent write it lost to, as a version mismatch is.
        store_action::Kind::Create => {
            if current.is_some() {
                return Err(ApplyError::Conflict { kind, id });
            }
        }
        store_action::Kind::Update => {
            let Some(current) = current else {
                return Err(ApplyError::NotFound { kind, id });
            };
            if version_of(&current) != version_of(&object) {
                return Err(ApplyError::Conflict { kind, id });
            }
        }
        store_action::Kind::Delete => {
            if current.is_none() {
                return Err(ApplyError::NotFound { kind, id });
            }
        }
    }
    if let Object::Service(service) = &object {
        let name = service
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map(|a| a.name.as_str())
            .unwrap_or_default();
        let taken = tables.services.values().any(|other| {
            other.id != service.id
                && other
                    .spec
                    .as_ref()
                    .and_then(|s| s.annotations.as_ref())
                    .is_some_and(|a| a.name == name)
        });
        if taken && store_action::Kind::try_from(action.kind) != Ok(store_action::Kind::Delete) {
            return Err(ApplyError::AlreadyExists {
                kind,
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

fn version_of(object: &Object) -> u64 {
    let meta = match object {
        Object::Node(o) => &o.meta,
        Object::Service(o) => &o.meta,
        Object::Task(o) => &o.meta,
        Object::Cluster(o) => &o.meta,
        Object::Network(o) => &o.meta,
        Object::Secret(o) => &o.meta,
        Object::Config(o) => &o.meta,
    };
    meta.as_ref()
        .and_then(|m| m.version.as_ref())
        .map_or(0, |v| v.index)
}

fn get(tables: &Tables, kind: Kind, id: &str) -> Option<Object> {
    match kind {
        Kind::Node => tables.nodes.get(id).cloned().map(Object::Node),
        Kind::Service => tables.services.get(id).cloned().map(Object::Service),
        Kind::Task => tables.tasks.get(id).cloned().map(Object::Task),
        Kind::Cluster => tables.clusters.get(id).cloned().map(Object::Cluster),
        Kind::Network => tables.networks.get(id).cloned().map(Object::Network),
        Kind::Secret => tables.secrets.get(id).cloned().map(Object::Secret),
        Kind::Config => tables.configs.get(id).cloned().map(Object::Config),
    }
}

fn insert(tables: &mut Tables, object: Object) -> Option<Object> {
    match object {
        Object::Node(o) => tables.nodes.insert(o.id.clone(), o).map(Object::Node),
        Object::Service(o) => tables.services.insert(o.id.clone(), o).map(Object::Service),
        Object::Task(o) => {
            let id = o.id.clone();
            let old = tables.tasks.insert(o.id.clone(), o);
            let Tables {
                tasks,
                tasks_by_service,
                tasks_by_node,
                ..
            } = tables;
            reindex(
                tasks_by_service,
                tasks_by_node,
                old.as_ref(),
                tasks.get(&id),
            );
            old.map(Object::Task)
        }
        Object::Cluster(o) => tables.clusters.insert(o.id.clone(), o).map(Object::Cluster),
        Object::Network(o) => tables.networks.insert(o.id.clone(), o).map(Object::Network),
        Object::Secret(o) => tables.secrets.insert(o.id.clone(), o).map(Object::Secret),
        Object::Config(o) => tables.configs.insert(o.id.clone(), o).map(Object::Config),
    }
}

fn remove(tables: &mut Tables, kind: Kind, id: &str) -> Option<Object> {
    match kind {
        Kind::Node => tables.nodes.remove(id).map(Object::Node),
        Kind::Service => tables.services.remove(id).map(Object::Service),
        Kind::Task => {
            let old = tables.tasks.remove(id);
            reindex(
                &mut tables.tasks_by_service,
                &mut tables.tasks_by_node,
                old.as_ref(),
                None,
            );
            old.map(Object::Task)
        }
        Kind::Cluster => tables.clusters.remove(id).map(Object::Cluster),
        Kind::Network => tables.networks.remove(id).map(Object::Network),
        Kind::Secret => tables.secrets.remove(id).map(Object::Secret),
        Kind::Config => tables.configs.remove(id).map(Object::Config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::Node;

    fn create(store: &MemoryStore, id: &str) -> Transaction {
        let node = Node {
            id: id.into(),
            ..Default::default()
        };
        store.write_tx(|tx| tx.create(node)).expect("create").0
    }

    #[test]
    fn a_create_that_lost_a_race_to_another_is_a_conflict() {
        let store = MemoryStore::new();
        // Both built against the same state, in which the node does not exist yet.
        let first = create(&store, "n1");
        let second = create(&store, "n1");
        let results = store.apply(
            1,
            &Proposal {
                transactions: vec![first, second],
            },
        );
        assert!(results[0].is_ok());
        assert!(
            matches!(results[1], Err(ApplyError::Conflict { .. })),
            "{results:?}"
        );
        // Creating what the transaction already sees is still the caller's error.
        let err = store
            .write_tx(|tx| {
                tx.create(Node {
                    id: "n1".into(),
                    ..Default::default()
                })
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    }
}
