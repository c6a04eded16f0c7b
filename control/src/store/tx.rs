//! Read and write transactions over the in-memory tables.

use mesh_proto::{Meta, StoreAction, Task, Transaction, store_action};
use std::collections::{BTreeMap, BTreeSet};

use super::memory::{Tables, TaskIndex};
use super::object::{Kind, Object, StoreObject};
use super::{Key, StoreError, now_nanos};
use crate::limits::{BATCH_BYTES, BATCH_WRITES};

/// Read access shared by [`ReadTx`] and [`WriteTx`]; table-specific queries are built on it.
///
/// [`Read::iter`] borrows the objects; `list`, `find` and `get` copy them. With a hundred
/// thousand tasks in the store, a scan that copies only what it keeps is what keeps a view short
/// (writers wait for it, and readers for waiting writers).
pub trait Read {
    /// The object with `id`, borrowed.
    fn peek<T: StoreObject>(&self, id: &str) -> Option<&T>;

    /// Every object of the table, in id order, borrowed.
    fn iter<T: StoreObject>(&self) -> impl Iterator<Item = &T>;

    fn get<T: StoreObject>(&self, id: &str) -> Option<T> {
        self.peek(id).cloned()
    }

    fn list<T: StoreObject>(&self) -> Vec<T> {
        self.iter::<T>().cloned().collect()
    }

    fn find<T: StoreObject>(&self, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
        self.iter::<T>().filter(|o| pred(o)).cloned().collect()
    }

    /// The tasks of service `service_id`, in id order, borrowed: read through the store's
    /// index, not by scanning every task.
    fn tasks_of_service(&self, service_id: &str) -> Vec<&Task>;

    /// The tasks on node `node_id`, in id order, borrowed (through the index too).
    fn tasks_on_node(&self, node_id: &str) -> Vec<&Task>;

    /// A stamp of the nodes as this transaction reads them: two reads with the same stamp read
    /// the same nodes, so what was worked out from one node table holds for the other. `None`
    /// when the transaction changes nodes itself.
    fn nodes_stamp(&self) -> Option<u64>;
}

/// The tasks `index` holds under `key`, in id order.
fn indexed<'a>(index: &'a TaskIndex, key: &str) -> Vec<&'a Task> {
    index
        .get(key)
        .into_iter()
        .flat_map(|tasks| tasks.values())
        .map(|t| &**t)
        .collect()
}

pub struct ReadTx<'a> {
    tables: &'a Tables,
}

impl<'a> ReadTx<'a> {
    pub(crate) fn new(tables: &'a Tables) -> Self {
        Self { tables }
    }

    /// The tasks counted by state and by service, as kept up to date by every apply.
    pub fn task_counts(&self) -> &'a super::TaskCounts {
        &self.tables.task_counts
    }

    /// The service id of every task, each once (services deleted since included), from the
    /// store's index.
    pub fn task_service_ids(&self) -> impl Iterator<Item = &'a str> {
        self.tables.tasks_by_service.keys().map(String::as_str)
    }
}

impl Read for ReadTx<'_> {
    fn peek<T: StoreObject>(&self, id: &str) -> Option<&T> {
        T::table(self.tables).get(id).map(|o| &**o)
    }

    fn iter<T: StoreObject>(&self) -> impl Iterator<Item = &T> {
        T::table(self.tables).values().map(|o| &**o)
    }

    fn tasks_of_service(&self, service_id: &str) -> Vec<&Task> {
        indexed(&self.tables.tasks_by_service, service_id)
    }

    fn tasks_on_node(&self, node_id: &str) -> Vec<&Task> {
        indexed(&self.tables.tasks_by_node, node_id)
    }

    fn nodes_stamp(&self) -> Option<u64> {
        Some(self.tables.nodes_stamp)
    }
}

struct Change {
    /// The object's state before this transaction, if it existed.
    base: Option<Object>,
    /// Its state after: `None` for a delete.
    next: Option<Object>,
}

/// Reads the store plus its own pending changes, and records writes to propose.
pub struct WriteTx<'a> {
    tables: &'a Tables,
    /// By kind, then by id: a read looks its id up without building a key (a status report
    /// looks up each of its tasks, and after a leader's restart they come a million at once).
    changes: BTreeMap<Kind, BTreeMap<String, Change>>,
    /// Encoded bytes written so far (an object written twice counts twice).
    bytes: usize,
}

impl<'a> WriteTx<'a> {
    pub(crate) fn new(tables: &'a Tables) -> Self {
        Self {
            tables,
            changes: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// Whether this transaction holds a reconciler's batch ([`BATCH_WRITES`] objects or
    /// [`BATCH_BYTES`]): a reconciler stops writing here, commits, and goes on in the next one.
    pub fn is_full(&self) -> bool {
        let written: usize = self.changes.values().map(BTreeMap::len).sum();
        written >= BATCH_WRITES || self.bytes >= BATCH_BYTES
    }

    /// This transaction's changes to objects of kind `kind`, by id.
    fn changes_of(&self, kind: Kind) -> Option<&BTreeMap<String, Change>> {
        self.changes.get(&kind)
    }

    /// Records `change` for the object `id` of kind `kind`, in place of any earlier one.
    fn record(&mut self, kind: Kind, id: String, change: Change) {
        self.changes.entry(kind).or_default().insert(id, change);
    }

    /// The stored object, shared with the tables.
    fn base<T: StoreObject>(&self, id: &str) -> Option<Object> {
        T::table(self.tables).get(id).cloned().map(T::shared)
    }

    pub fn create<T: StoreObject>(&mut self, object: T) -> Result<(), StoreError> {
        let id = object.id().to_string();
        if id.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "{} has no id",
                T::KIND
            )));
        }
        if self.peek::<T>(&id).is_some() {
            return Err(StoreError::AlreadyExists {
                kind: T::KIND,
                name: id,
            });
        }
        let mut object = object.into_object();
        self.bytes += object.encoded_len();
        let now = now_nanos();
        *object.meta_mut() = Some(Meta {
            version: None,
            created_at: now,
            updated_at: now,
        });
        let base = self.base::<T>(&id);
        self.record(
            T::KIND,
            id,
            Change {
                base,
                next: Some(object),
            },
        );
        Ok(())
    }

    /// Records `object` as the new state; it must carry the version it was read at.
    pub fn update<T: StoreObject>(&mut self, object: T) -> Result<(), StoreError> {
        let id = object.id().to_string();
        if self.peek::<T>(&id).is_none() {
            return Err(StoreError::NotFound { kind: T::KIND, id });
        }
        let mut object = object.into_object();
        self.bytes += object.encoded_len();
        object
            .meta_mut()
            .get_or_insert_with(Default::default)
            .updated_at = now_nanos();
        match self
            .changes
            .get_mut(&T::KIND)
            .and_then(|changes| changes.get_mut(&id))
        {
            Some(change) => change.next = Some(object),
            None => {
                let base = self.base::<T>(&id);
                self.record(
                    T::KIND,
                    id,
                    Change {
                        base,
                        next: Some(object),
                    },
                );
            }
        }
        Ok(())
    }

    pub fn delete<T: StoreObject>(&mut self, id: &str) -> Result<(), StoreError> {
        if self.peek::<T>(id).is_none() {
            return Err(StoreError::NotFound {
                kind: T::KIND,
                id: id.to_string(),
            });
        }
        let base = self.base::<T>(id);
        self.bytes += base.as_ref().map_or(0, Object::encoded_len);
        if base.is_none() {
            // Created in this transaction: forget it.
            if let Some(changes) = self.changes.get_mut(&T::KIND) {
                changes.remove(id);
            }
        } else {
            self.record(T::KIND, id.to_string(), Change { base, next: None });
        }
        Ok(())
    }

    pub(crate) fn into_transaction(self) -> Transaction {
        let actions = self
            .changes
            .into_values()
            .flat_map(BTreeMap::into_values)
            .filter_map(|change| {
                let (kind, object) = match (change.base, change.next) {
                    (None, Some(next)) => (store_action::Kind::Create, next),
                    (Some(_), Some(next)) => (store_action::Kind::Update, next),
                    (Some(base), None) => (store_action::Kind::Delete, base),
                    (None, None) => return None,
                };
                Some(StoreAction {
                    kind: kind as i32,
                    target: Some(object.into_target()),
                })
            })
            .collect();
        Transaction { actions }
    }
}

impl WriteTx<'_> {
    /// The stored tasks the index holds under `key`, merged with this transaction's changed tasks,
    /// those of them for which `keep` holds, in id order.
    fn indexed_with_changes<'s>(
        &'s self,
        index: &'s TaskIndex,
        key: &str,
        keep: impl Fn(&Task) -> bool,
    ) -> Vec<&'s Task> {
        let mut changed = self
            .changes_of(Kind::Task)
            .into_iter()
            .flat_map(BTreeMap::keys)
            .map(String::as_str)
            .peekable();
        if changed.peek().is_none() {
            // No task written yet (a reconciler planning from a fresh transaction): the index.
            return indexed(index, key);
        }
        let ids: BTreeSet<&str> = index
            .get(key)
            .into_iter()
            .flat_map(|tasks| tasks.keys())
            .map(Key::as_str)
            .chain(changed)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.peek::<Task>(id))
            .filter(|t| keep(t))
            .collect()
    }
}

impl Read for WriteTx<'_> {
    fn tasks_of_service(&self, service_id: &str) -> Vec<&Task> {
        self.indexed_with_changes(&self.tables.tasks_by_service, service_id, |t| {
            t.service_id == service_id
        })
    }

    fn tasks_on_node(&self, node_id: &str) -> Vec<&Task> {
        self.indexed_with_changes(&self.tables.tasks_by_node, node_id, |t| {
            t.node_id == node_id
        })
    }

    fn peek<T: StoreObject>(&self, id: &str) -> Option<&T> {
        match self.changes_of(T::KIND).and_then(|changes| changes.get(id)) {
            Some(change) => change.next.as_ref().and_then(T::from_object),
            None => T::table(self.tables).get(id).map(|o| &**o),
        }
    }

    fn nodes_stamp(&self) -> Option<u64> {
        self.changes_of(Kind::Node)
            .is_none_or(BTreeMap::is_empty)
            .then_some(self.tables.nodes_stamp)
    }

    /// The stored table merged with this transaction's changes, still in id order.
    fn iter<T: StoreObject>(&self) -> impl Iterator<Item = &T> {
        let mut base = T::table(self.tables).iter().peekable();
        let mut changed = self.changes_of(T::KIND).into_iter().flatten().peekable();
        std::iter::from_fn(move || {
            loop {
                let next_base = base.peek().map(|&(id, _)| id.as_str());
                let next_change = changed.peek().map(|&(id, _)| id.as_str());
                match (next_base, next_change) {
                    (None, None) => return None,
                    (Some(b), Some(c)) if c <= b => {
                        if c == b {
                            base.next();
                        }
                    }
                    (Some(_), _) => return base.next().map(|(_, o)| &**o),
                    (None, Some(_)) => {}
                }
                // The change comes first: its object, or nothing for a delete.
                let (_, change) = changed.next()?;
                if let Some(object) = change.next.as_ref().and_then(T::from_object) {
                    return Some(object);
                }
            }
        })
    }
}
