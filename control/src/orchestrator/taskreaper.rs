//! The task reaper: deletes old finished tasks beyond the cluster's per-slot history limit, and
//! tasks marked REMOVE once they have stopped (or could never run, or their node is down).

use mesh_proto::{Cluster, Node, Task, TaskState};
use std::collections::{BTreeSet, HashMap};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::driver::{self, RETRY_DELAY, Reconcile};
use super::task::{self, SlotKey};
use crate::store::{Event, Read, ReadTx, Store};

/// Services whose every slot one pass looks at (one read of the store).
const SERVICES_PER_PASS: usize = 50;

/// Swarm's default task history per slot.
pub const DEFAULT_RETENTION: usize = 5;

/// Tasks kept per slot: the cluster's limit, 5 when unset (0), none when negative.
pub fn retention(cluster: Option<&Cluster>) -> usize {
    match cluster
        .and_then(|c| c.spec.as_ref())
        .map(|s| s.task_history_retention_limit)
    {
        None | Some(0) => DEFAULT_RETENTION,
        Some(n) => usize::try_from(n).unwrap_or(0),
    }
}

/// The tasks of one slot to delete so that at most `limit` remain: the oldest that have finished
/// and that no orchestrator wants running any more.
pub fn prune<'a>(slot_tasks: &[&'a Task], limit: usize) -> Vec<&'a Task> {
    let excess = slot_tasks.len().saturating_sub(limit);
    let mut done: Vec<&Task> = slot_tasks
        .iter()
        .copied()
        .filter(|t| !task::is_live(t) && task::is_terminal(task::state(t)))
        .collect();
    done.sort_by_key(|t| task::created_at(t));
    done.truncate(excess);
    done
}

/// Whether a task marked REMOVE may be deleted: it stopped, was never assigned, or its node (read
/// with `node`, only for such a task) is down or gone (nothing will report it stopping).
pub fn removable<'n>(task: &Task, node: impl FnOnce() -> Option<&'n Node>) -> bool {
    task::desired(task) >= TaskState::Remove
        && (task::is_terminal(task::state(task))
            || task.node_id.is_empty()
            || node().is_none_or(task::is_down))
}

/// Deletes tasks nobody needs any more (see the module doc).
pub struct TaskReaper {
    store: Store,
    /// Every slot must be looked at (start, reset, changed limit).
    all: bool,
    /// Services every slot of which is still to be looked at, a share per pass: one pass over
    /// every slot held the store's lock for 2.5-3.5 s at 500,000 tasks.
    whole: BTreeSet<String>,
    /// Slots to look at, by service.
    dirty: HashMap<String, BTreeSet<SlotKey>>,
    /// Nodes gone or down since the last pass: the slots of their tasks are looked at. (A pass
    /// over every slot for each of them took 2.4 s at 500,000 tasks, once per batch of nodes
    /// marked down.)
    dirty_nodes: BTreeSet<String>,
}

impl TaskReaper {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            all: true,
            whole: BTreeSet::new(),
            dirty: HashMap::new(),
            dirty_nodes: BTreeSet::new(),
        }
    }

    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        driver::drive(store, shutdown, self).await;
    }

    /// The ids of the tasks to delete among the dirty slots and every slot of the services in
    /// `whole`, as the store is now.
    fn plan(&self, tx: &impl Read, whole: &BTreeSet<String>) -> Vec<String> {
        let limit = retention(tx.list::<Cluster>().first());
        // Read in place through the store's index: only what is deleted is copied (its id).
        let mut slots: HashMap<(&str, SlotKey), Vec<&Task>> = HashMap::new();
        let services = whole
            .iter()
            .chain(self.dirty.keys().filter(|s| !whole.contains(*s)));
        for service in services {
            let all = whole.contains(service);
            let dirty = self.dirty.get(service);
            for task in tx.tasks_of_service(service) {
                let key = task::slot_key(task);
                if all || dirty.is_some_and(|slots| slots.contains(&key)) {
                    slots
                        .entry((task.service_id.as_str(), key))
                        .or_default()
                        .push(task);
                }
            }
        }
        let mut delete = BTreeSet::new();
        for tasks in slots.values() {
            delete.extend(prune(tasks, limit).into_iter().map(|t| t.id.clone()));
            delete.extend(
                tasks
                    .iter()
                    .filter(|t| removable(t, || tx.peek::<Node>(&t.node_id)))
                    .map(|t| t.id.clone()),
            );
        }
        delete.into_iter().collect()
    }
}

impl Reconcile for TaskReaper {
    const NAME: &'static str = "taskreaper";

    fn mark_all(&mut self, _tx: &ReadTx<'_>) {
        self.all = true;
        self.dirty.clear();
        self.dirty_nodes.clear();
    }

    fn observe(&mut self, event: &Event) {
        if let Some(task) = event.as_a::<Task>() {
            // A live task on its way to running can make nothing prunable or removable; a new
            // task can (one more in its slot), as can any change of a task no longer wanted.
            let relevant = match event.old_as::<Task>() {
                None => true,
                Some(old) => {
                    !task::is_live(task)
                        || task::is_terminal(task::state(task))
                        || task::desired(old) != task::desired(task)
                }
            };
            if !event.is_delete() && relevant {
                self.dirty
                    .entry(task.service_id.clone())
                    .or_default()
                    .insert(task::slot_key(task));
            }
        } else if event.as_a::<Cluster>().is_some() {
            self.all = true;
        } else if let Some(node) = event.as_a::<Node>() {
            let was_down = event.old_as::<Node>().is_some_and(task::is_down);
            if event.is_delete() || (task::is_down(node) && !was_down) {
                self.dirty_nodes.insert(node.id.clone());
            }
        }
    }

    async fn flush(&mut self, store: &Store) -> Option<Instant> {
        if std::mem::take(&mut self.all) {
            self.whole = store.view(|tx| tx.task_service_ids().map(String::from).collect());
        }
        let nodes = std::mem::take(&mut self.dirty_nodes);
        if !nodes.is_empty() {
            let slots: Vec<(String, SlotKey)> = store.view(|tx| {
                nodes
                    .iter()
                    .flat_map(|node| tx.tasks_on_node(node))
                    .map(|t| (t.service_id.clone(), task::slot_key(t)))
                    .collect()
            });
            for (service, slot) in slots {
                self.dirty.entry(service).or_default().insert(slot);
            }
        }
        if self.whole.is_empty() && self.dirty.is_empty() {
            return None;
        }
        let share = driver::take_share(&mut self.whole, SERVICES_PER_PASS);
        let delete = store.view(|tx| self.plan(tx, &share));
        if !delete.is_empty() {
            // A batch per transaction; with more left the same slots are planned again at once.
            let result = store
                .update(|tx| {
                    let mut count = 0;
                    for id in &delete {
                        if tx.is_full() {
                            break;
                        }
                        if tx.get::<Task>(id).is_some() {
                            tx.delete::<Task>(id)?;
                        }
                        count += 1;
                    }
                    Ok(count)
                })
                .await;
            match result {
                Ok(count) => {
                    debug!(count, "tasks reaped");
                    if count < delete.len() {
                        self.whole.extend(share);
                        return Some(Instant::now());
                    }
                }
                Err(err) => {
                    driver::log_write_error(Self::NAME, &err);
                    self.whole.extend(share);
                    return Some(Instant::now() + RETRY_DELAY);
                }
            }
        }
        self.dirty.clear();
        (!self.whole.is_empty()).then(Instant::now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{ClusterSpec, Meta, NodeState, NodeStatus, TaskStatus};

    fn task(id: &str, created: i64, state: TaskState, desired: TaskState) -> Task {
        Task {
            id: id.into(),
            meta: Some(Meta {
                created_at: created,
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            desired_state: desired as i32,
            ..Default::default()
        }
    }

    #[test]
    fn retention_limits() {
        let cluster = |limit| Cluster {
            spec: Some(ClusterSpec {
                task_history_retention_limit: limit,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(retention(None), 5);
        assert_eq!(retention(Some(&cluster(0))), 5);
        assert_eq!(retention(Some(&cluster(2))), 2);
        assert_eq!(retention(Some(&cluster(-1))), 0);
    }

    #[test]
    fn prunes_oldest_finished_first() {
        use TaskState::{Failed, Running, Shutdown};
        let slot = [
            task("live", 60, Running, Running),
            task("t5", 50, Failed, Shutdown),
            task("t1", 10, Failed, Shutdown),
            task("t3", 30, Shutdown, Shutdown),
            task("stopping", 5, Running, Shutdown),
            task("t2", 20, Failed, Shutdown),
            task("t4", 40, Failed, Shutdown),
        ];
        let cases = [
            (7, vec![]),
            (6, vec!["t1"]),
            (5, vec!["t1", "t2"]),
            (1, vec!["t1", "t2", "t3", "t4", "t5"]),
            (0, vec!["t1", "t2", "t3", "t4", "t5"]),
        ];
        let slot: Vec<&Task> = slot.iter().collect();
        for (limit, want) in cases {
            let got: Vec<&str> = prune(&slot, limit).iter().map(|t| t.id.as_str()).collect();
            assert_eq!(got, want, "limit {limit}");
        }
    }

    #[test]
    fn removable_tasks() {
        use TaskState::{Remove, Running, Shutdown};
        let node = |state: NodeState| Node {
            id: "n1".into(),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let (ready, down) = (node(NodeState::Ready), node(NodeState::Down));
        let on_node = |state, desired| Task {
            node_id: "n1".into(),
            ..task("t", 1, state, desired)
        };
        let cases = [
            (on_node(Running, Remove), Some(&ready), false),
            (on_node(Shutdown, Remove), Some(&ready), true),
            (on_node(Running, Remove), Some(&down), true),
            (on_node(Running, Remove), None, true),
            (task("t", 1, TaskState::Pending, Remove), None, true),
            (on_node(Shutdown, Shutdown), Some(&ready), false),
        ];
        for (i, (task, node, want)) in cases.iter().enumerate() {
            assert_eq!(removable(task, || *node), *want, "case {i}");
        }
    }

    /// Only a task marked REMOVE has its node read: the reaper's passes over a service's slots
    /// look up no node for the rest (building a map of every node per pass was 6% of a leader
    /// creating a million tasks on 10,000 nodes).
    #[test]
    fn a_wanted_task_has_no_node_read() {
        use TaskState::{Remove, Running, Shutdown};
        let read = std::cell::Cell::new(0);
        let node = || {
            read.set(read.get() + 1);
            None
        };
        let mut on_node = task("t", 1, Running, Running);
        on_node.node_id = "n1".into();
        assert!(!removable(&on_node, node));
        on_node.desired_state = Shutdown as i32;
        assert!(!removable(&on_node, node));
        assert_eq!(read.get(), 0, "no node read for a task not marked REMOVE");
        on_node.desired_state = Remove as i32;
        assert!(removable(&on_node, node), "its node is gone");
        assert_eq!(read.get(), 1);
    }

    /// A start looks at every slot, a share of the services per pass, each pass asking to run
    /// again at once: the history of a service in the last share is pruned too.
    #[tokio::test]
    async fn a_start_prunes_every_service_a_share_per_pass() {
        let store = crate::store::direct_store();
        let services = SERVICES_PER_PASS * 2 + 1;
        store
            .update(|tx| {
                for s in 0..services {
                    for i in 0..7 {
                        let mut task = task(
                            &format!("s{s:03}-{i}"),
                            i,
                            TaskState::Failed,
                            TaskState::Shutdown,
                        );
                        task.service_id = format!("s{s:03}");
                        task.slot = 1;
                        tx.create(task)?;
                    }
                }
                Ok(())
            })
            .await
            .unwrap();
        let mut reaper = TaskReaper::new(store.clone());
        let mut passes = 0;
        while reaper.flush(&store).await.is_some() {
            passes += 1;
            assert!(passes < 10, "the passes do not end");
        }
        assert_eq!(
            passes + 1,
            3,
            "three shares of at most {SERVICES_PER_PASS} services"
        );
        let left = store.view(|tx| {
            (0..services)
                .map(|s| tx.tasks_of_service(&format!("s{s:03}")).len())
                .collect::<Vec<_>>()
        });
        assert_eq!(left, vec![DEFAULT_RETENTION; services]);
    }
}
