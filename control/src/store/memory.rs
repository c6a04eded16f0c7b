//! The in-memory tables every manager holds, changed only by applying committed entries.

use mesh_proto::{
    Cluster, Config, Network, Node, Proposal, Secret, Service, StoreAction, Task, Transaction,
    Version, store_action,
};
use parking_lot::{RwLock, RwLockReadGuard};
use std::any::type_name_of_val;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

use super::StoreError;
use super::counts::TaskCounts;
use super::key::Key;
use super::object::{Kind, Object, StoreObject};
use super::tx::{ReadTx, WriteTx};
use super::watch::Event;
use crate::offload::off_worker;

/// How many events a watcher may fall behind before it is told to resynchronise.
const WATCH_CAPACITY: usize = 1 << 16;

#[derive(Debug, Default, Clone)]
pub struct Tables {
    // Each object is shared: a snapshot takes the tables in the time it takes to count
    // references, not to copy every task, and encodes them after the lock is released.
    pub(crate) nodes: BTreeMap<Key, Arc<Node>>,
    pub(crate) services: BTreeMap<Key, Arc<Service>>,
    pub(crate) tasks: BTreeMap<Key, Arc<Task>>,
    pub(crate) clusters: BTreeMap<Key, Arc<Cluster>>,
    pub(crate) networks: BTreeMap<Key, Arc<Network>>,
    pub(crate) secrets: BTreeMap<Key, Arc<Secret>>,
    pub(crate) configs: BTreeMap<Key, Arc<Config>>,
    /// Tasks by service and by node, by id: what reads one service's or one node's tasks without
    /// scanning every task (a reconciler of one service, a node's assignments). Each holds the
    /// same shared task as `tasks`, so such a read looks nothing up in the table of every task.
    pub(crate) tasks_by_service: TaskIndex,
    pub(crate) tasks_by_node: TaskIndex,
    pub(crate) task_counts: TaskCounts,
    /// Changes whenever a node is created, changed or removed, and differs between any two
    /// tables of this process with different nodes (see [`Read::nodes_stamp`](super::Read)).
    pub(crate) nodes_stamp: u64,
    /// The log index of the last entry applied (0 after a snapshot is restored, until the next).
    pub(crate) applied: u64,
}

/// A stamp no tables of this process had before: 0 is left to tables that never held a node.
fn new_stamp() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Tasks grouped under a key (a service id, a node id), by task id.
pub(crate) type TaskIndex = HashMap<String, BTreeMap<Key, Arc<Task>>>;

/// Moves a task in the indexes from where `old` had it to where `new` has it, and points them at
/// `new` (the task as now stored) even where it stays.
fn reindex(
    by_service: &mut TaskIndex,
    by_node: &mut TaskIndex,
    old: Option<&Task>,
    new: Option<&Arc<Task>>,
) {
    for (index, old_key, new_key) in [
        (
            &mut *by_service,
            old.map(|t| &t.service_id),
            new.map(|t| &t.service_id),
        ),
        (
            &mut *by_node,
            old.map(|t| &t.node_id),
            new.map(|t| &t.node_id),
        ),
    ] {
        if let (Some(key), Some(task)) = (old_key, old)
            && old_key != new_key
            && let Some(tasks) = index.get_mut(key.as_str())
        {
            tasks.remove(task.id.as_str());
            if tasks.is_empty() {
                index.remove(key.as_str());
            }
        }
        let (Some(key), Some(task)) = (new_key, new) else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        match index.get_mut(key.as_str()) {
            Some(tasks) => match tasks.get_mut(task.id.as_str()) {
                Some(held) => *held = Arc::clone(task),
                None => {
                    tasks.insert(Key::from(task.id.as_str()), Arc::clone(task));
                }
            },
            None => {
                index.insert(
                    key.clone(),
                    BTreeMap::from([(Key::from(task.id.as_str()), Arc::clone(task))]),
                );
            }
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

    /// The fair read lock. While a writer waits behind a long read, the wait happens off the
    /// runtime's worker ([`off_worker`]): a worker blocked here would serve nothing else.
    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables
            .try_read()
            .unwrap_or_else(|| off_worker(|| self.tables.read()))
    }

    /// Runs `f` under the fair read lock and logs a long wait or a long hold by `by`.
    fn timed_read<T>(&self, by: &str, f: impl FnOnce(&Tables) -> T) -> T {
        let start = Instant::now();
        let tables = self.read();
        let locked = Instant::now();
        let out = f(&tables);
        drop(tables);
        note_slow_lock(by, start, locked);
        out
    }

    /// Reads under the lock, queued fairly with writers.
    pub fn view<T>(&self, f: impl FnOnce(&ReadTx<'_>) -> T) -> T {
        self.timed_read(type_name_of_val(&f), |tables| f(&ReadTx::new(tables)))
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
        self.timed_read(type_name_of_val(&f), |tables| {
            (tables.applied, f(&ReadTx::new(tables)))
        })
    }

    /// Reads and subscribes under one lock: no event after the view is missed.
    pub fn view_and_watch<T>(
        &self,
        f: impl FnOnce(&ReadTx<'_>) -> T,
    ) -> (T, broadcast::Receiver<Event>) {
        self.timed_read(type_name_of_val(&f), |tables| {
            let rx = self.events.subscribe();
            (f(&ReadTx::new(tables)), rx)
        })
    }

    pub fn watch(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) fn write_tx<T>(
        &self,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, StoreError>,
    ) -> Result<(Transaction, T), StoreError> {
        self.timed_read(type_name_of_val(&f), |tables| {
            let mut tx = WriteTx::new(tables);
            let out = f(&mut tx)?;
            Ok((tx.into_transaction(), out))
        })
    }

    /// Applies one committed entry at log `index`; one result per transaction, in order. The
    /// entry's objects are moved into the tables, not copied.
    pub fn apply(&self, index: u64, proposal: Proposal) -> Vec<Result<(), ApplyError>> {
        let start = Instant::now();
        let mut tables = self
            .tables
            .try_write()
            .unwrap_or_else(|| off_worker(|| self.tables.write()));
        let locked = Instant::now();
        let mut events = Vec::new();
        let results = proposal
            .transactions
            .into_iter()
            .map(|tx| apply_transaction(&mut tables, index, tx, &mut events))
            .collect();
        tables.applied = index;
        // Sent under the write lock so that view_and_watch never sees a state without its events.
        for event in events {
            let _ = self.events.send(event);
        }
        let _ = self.events.send(Event::Commit { index });
        drop(tables);
        note_slow_lock("apply", start, locked);
        results
    }

    /// The tables as they are now, to encode as a [`StoreSnapshot`](mesh_proto::StoreSnapshot)
    /// once the lock is released.
    pub fn snapshot(&self) -> TablesSnapshot {
        let tables = self.read();
        TablesSnapshot {
            nodes: tables.nodes.values().cloned().collect(),
            services: tables.services.values().cloned().collect(),
            tasks: tables.tasks.values().cloned().collect(),
            clusters: tables.clusters.values().cloned().collect(),
            networks: tables.networks.values().cloned().collect(),
            secrets: tables.secrets.values().cloned().collect(),
            configs: tables.configs.values().cloned().collect(),
        }
    }

    /// Replaces every table with `tables` (decoded from a snapshot by [`Tables::decode`]);
    /// watchers are told to re-read everything.
    pub fn restore(&self, tables: Tables) {
        *self.tables.write() = tables;
        let _ = self.events.send(Event::Reset);
    }
}

impl Tables {
    /// The tables holding the objects of an encoded
    /// [`StoreSnapshot`](mesh_proto::StoreSnapshot), indexed. Each object is decoded straight
    /// into the table that keeps it: a snapshot of a million tasks is never held twice, as a
    /// decoded message and as the tables. Fields it does not know are skipped, as prost skips
    /// them; a later object with the same id replaces an earlier one.
    pub fn decode(mut data: &[u8]) -> Result<Self, prost::DecodeError> {
        use prost::encoding::{DecodeContext, WireType, decode_key, message, skip_field};

        fn put<T: StoreObject + prost::Message + Default>(
            table: &mut BTreeMap<Key, Arc<T>>,
            wire_type: WireType,
            data: &mut &[u8],
        ) -> Result<(), prost::DecodeError> {
            let mut object = T::default();
            message::merge(wire_type, &mut object, data, DecodeContext::default())?;
            table.insert(Key::from(object.id()), Arc::new(object));
            Ok(())
        }

        let mut tables = Tables::default();
        while !data.is_empty() {
            let (tag, wire_type) = decode_key(&mut data)?;
            // The field numbers of StoreSnapshot, as TablesSnapshot::encode_to_vec writes them.
            match tag {
                1 => put(&mut tables.nodes, wire_type, &mut data)?,
                2 => put(&mut tables.services, wire_type, &mut data)?,
                3 => put(&mut tables.tasks, wire_type, &mut data)?,
                4 => put(&mut tables.clusters, wire_type, &mut data)?,
                5 => put(&mut tables.networks, wire_type, &mut data)?,
                6 => put(&mut tables.secrets, wire_type, &mut data)?,
                7 => put(&mut tables.configs, wire_type, &mut data)?,
                _ => skip_field(wire_type, tag, &mut data, DecodeContext::default())?,
            }
        }
        let Tables {
            tasks,
            tasks_by_service,
            tasks_by_node,
            task_counts,
            ..
        } = &mut tables;
        for task in tasks.values() {
            reindex(tasks_by_service, tasks_by_node, None, Some(task));
        }
        *task_counts = TaskCounts::of(tasks.values().map(|t| &**t));
        tables.nodes_stamp = new_stamp();
        Ok(tables)
    }
}

/// A lock waited for or held longer than this is logged: on a leader, every other reader and
/// writer (an apply, a heartbeat's read) may be queued behind it meanwhile.
const SLOW_LOCK: Duration = Duration::from_millis(250);

/// Logs a lock on the tables asked for at `start`, taken at `locked` and released now.
fn note_slow_lock(by: &str, start: Instant, locked: Instant) {
    let waited = locked - start;
    let held = locked.elapsed();
    if waited >= SLOW_LOCK || held >= SLOW_LOCK {
        tracing::info!(
            by = by.trim_end_matches("::{{closure}}"),
            waited_ms = waited.as_millis() as u64,
            held_ms = held.as_millis() as u64,
            "store lock slow"
        );
    }
}

/// The stored objects at one moment, shared with the tables that held them then: taking one
/// costs a reference per object, under the lock; encoding it costs the copy, after.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TablesSnapshot {
    nodes: Vec<Arc<Node>>,
    services: Vec<Arc<Service>>,
    tasks: Vec<Arc<Task>>,
    clusters: Vec<Arc<Cluster>>,
    networks: Vec<Arc<Network>>,
    secrets: Vec<Arc<Secret>>,
    configs: Vec<Arc<Config>>,
}

impl TablesSnapshot {
    /// The length of [`encode_to_vec`](Self::encode_to_vec)'s bytes.
    #[cfg(test)]
    pub fn encoded_len(&self) -> usize {
        fn len<T: prost::Message>(tag: u32, objects: &[Arc<T>]) -> usize {
            objects
                .iter()
                .map(|o| prost::encoding::message::encoded_len(tag, &**o))
                .sum()
        }
        len(1, &self.nodes)
            + len(2, &self.services)
            + len(3, &self.tasks)
            + len(4, &self.clusters)
            + len(5, &self.networks)
            + len(6, &self.secrets)
            + len(7, &self.configs)
    }

    /// The bytes of the [`StoreSnapshot`](mesh_proto::StoreSnapshot) holding these objects (its
    /// field numbers, in its field order), as prost encodes it.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        fn put<T: prost::Message>(tag: u32, objects: &[Arc<T>], buf: &mut Vec<u8>) {
            for object in objects {
                prost::encoding::message::encode(tag, &**object, buf);
            }
        }
        // Grown as it is written, not sized first: counting the length of a million tasks first
        // took a fifth of the encoding (2% of a leader in the loss of a tenth of its nodes), and
        // a buffer this large grows by remapping its pages, not by copying them.
        let mut buf = Vec::new();
        put(1, &self.nodes, &mut buf);
        put(2, &self.services, &mut buf);
        put(3, &self.tasks, &mut buf);
        put(4, &self.clusters, &mut buf);
        put(5, &self.networks, &mut buf);
        put(6, &self.secrets, &mut buf);
        put(7, &self.configs, &mut buf);
        buf.shrink_to_fit();
        buf
    }
}

fn apply_transaction(
    tables: &mut Tables,
    index: u64,
    tx: Transaction,
    events: &mut Vec<Event>,
) -> Result<(), ApplyError> {
    // Validate every action first so that a refused transaction changes nothing.
    for action in &tx.actions {
        validate(tables, action)?;
    }
    for action in tx.actions {
        let Some(target) = action.target else {
            continue;
        };
        let mut object = Object::from_target(target);
        let kind = store_action::Kind::try_from(action.kind).unwrap_or(store_action::Kind::Create);
        if kind == store_action::Kind::Delete {
            if let Some(old) = remove(tables, object.kind(), object.id()) {
                events.push(Event::Deleted(old));
            }
            continue;
        }
        let meta = object.meta_mut().get_or_insert_with(Default::default);
        meta.version = Some(Version { index });
        match insert(tables, object.clone()) {
            Some(old) => events.push(Event::Updated { old, new: object }),
            None => events.push(Event::Created(object)),
        }
    }
    Ok(())
}

fn validate(tables: &Tables, action: &StoreAction) -> Result<(), ApplyError> {
    let Some(target) = &action.target else {
        return Ok(());
    };
    let (kind, id, version) = target_key(target);
    let current = stored_version(tables, kind, id);
    let id = || id.to_string();
    match store_action::Kind::try_from(action.kind).unwrap_or(store_action::Kind::Create) {
        // The transaction saw no such object when it was built (WriteTx::create checks), so one
        // appearing since is a concurrent write it lost to, as a version mismatch is.
        store_action::Kind::Create => {
            if current.is_some() {
                return Err(ApplyError::Conflict { kind, id: id() });
            }
        }
        store_action::Kind::Update => {
            let Some(current) = current else {
                return Err(ApplyError::NotFound { kind, id: id() });
            };
            if current != version {
                return Err(ApplyError::Conflict { kind, id: id() });
            }
        }
        store_action::Kind::Delete => {
            if current.is_none() {
                return Err(ApplyError::NotFound { kind, id: id() });
            }
        }
    }
    if let store_action::Target::Service(service) = target {
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

/// The kind, id and version of the object an action carries, read in place: checking a
/// transaction copies none of its objects.
fn target_key(target: &store_action::Target) -> (Kind, &str, u64) {
    use store_action::Target;
    match target {
        Target::Node(o) => (Kind::Node, &o.id, o.version()),
        Target::Service(o) => (Kind::Service, &o.id, o.version()),
        Target::Task(o) => (Kind::Task, &o.id, o.version()),
        Target::Cluster(o) => (Kind::Cluster, &o.id, o.version()),
        Target::Network(o) => (Kind::Network, &o.id, o.version()),
        Target::Secret(o) => (Kind::Secret, &o.id, o.version()),
        Target::Config(o) => (Kind::Config, &o.id, o.version()),
    }
}

/// The version of the stored object `kind` `id`, if there is one.
fn stored_version(tables: &Tables, kind: Kind, id: &str) -> Option<u64> {
    fn of<T: StoreObject>(table: &BTreeMap<Key, Arc<T>>, id: &str) -> Option<u64> {
        table.get(id).map(|o| o.version())
    }
    match kind {
        Kind::Node => of(&tables.nodes, id),
        Kind::Service => of(&tables.services, id),
        Kind::Task => of(&tables.tasks, id),
        Kind::Cluster => of(&tables.clusters, id),
        Kind::Network => of(&tables.networks, id),
        Kind::Secret => of(&tables.secrets, id),
        Kind::Config => of(&tables.configs, id),
    }
}

/// Stores `object`; returns the one it replaced.
fn insert(tables: &mut Tables, object: Object) -> Option<Object> {
    fn put<T: StoreObject>(table: &mut BTreeMap<Key, Arc<T>>, object: Arc<T>) -> Option<Object> {
        table.insert(Key::from(object.id()), object).map(T::shared)
    }
    match object {
        Object::Node(o) => {
            tables.nodes_stamp = new_stamp();
            put(&mut tables.nodes, o)
        }
        Object::Service(o) => put(&mut tables.services, o),
        Object::Task(new) => {
            let old = tables
                .tasks
                .insert(Key::from(new.id.as_str()), Arc::clone(&new));
            reindex(
                &mut tables.tasks_by_service,
                &mut tables.tasks_by_node,
                old.as_deref(),
                Some(&new),
            );
            tables.task_counts.change(old.as_deref(), Some(&new));
            old.map(Object::Task)
        }
        Object::Cluster(o) => put(&mut tables.clusters, o),
        Object::Network(o) => put(&mut tables.networks, o),
        Object::Secret(o) => put(&mut tables.secrets, o),
        Object::Config(o) => put(&mut tables.configs, o),
    }
}

/// Removes the stored object `kind` `id`; returns it.
fn remove(tables: &mut Tables, kind: Kind, id: &str) -> Option<Object> {
    fn take<T: StoreObject>(table: &mut BTreeMap<Key, Arc<T>>, id: &str) -> Option<Object> {
        table.remove(id).map(T::shared)
    }
    match kind {
        Kind::Node => {
            tables.nodes_stamp = new_stamp();
            take(&mut tables.nodes, id)
        }
        Kind::Service => take(&mut tables.services, id),
        Kind::Task => {
            let old = tables.tasks.remove(id);
            reindex(
                &mut tables.tasks_by_service,
                &mut tables.tasks_by_node,
                old.as_deref(),
                None,
            );
            tables.task_counts.change(old.as_deref(), None);
            old.map(Object::Task)
        }
        Kind::Cluster => take(&mut tables.clusters, id),
        Kind::Network => take(&mut tables.networks, id),
        Kind::Secret => take(&mut tables.secrets, id),
        Kind::Config => take(&mut tables.configs, id),
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
            Proposal {
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
