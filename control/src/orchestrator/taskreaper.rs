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

/// Whether a task's change (from `old`; `None` for a new task) can make a task of its slot
/// prunable or removable: one more task in the slot, a task that stopped and is no longer wanted,
/// or one marked REMOVE. A task told to shut down that has not stopped yet makes nothing so: after
/// a tenth of 10,000 nodes were lost, each of their 100,000 tasks told so had its service's every
/// slot looked at again, under the store's lock.
pub fn reapable_change(old: Option<&Task>, new: &Task) -> bool {
    old.is_none()
        || task::desired(new) >= TaskState::Remove
        || (!task::is_live(new) && task::is_terminal(task::state(new)))
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
    /// Nodes gone or down since the last pass: their tasks marked REMOVE may go now. Only
    /// those are looked at, not their slots: a node lost makes nothing else reapable. (Every
    /// slot of their services was looked at before, 250-330 ms under the store's lock for each
    /// batch of nodes marked down at 10,000 nodes and a million tasks.)
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

    /// The ids of the tasks to delete among the dirty slots, every slot of the services in
    /// `whole` and the tasks on `nodes`, as the store is now.
    fn plan(
        &self,
        tx: &impl Read,
        whole: &BTreeSet<String>,
        nodes: &BTreeSet<String>,
    ) -> Vec<String> {
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
        let removed = |tasks: &[&'_ Task]| -> Vec<String> {
            tasks
                .iter()
                .filter(|t| removable(t, || tx.peek::<Node>(&t.node_id)))
                .map(|t| t.id.clone())
                .collect()
        };
        let mut delete = BTreeSet::new();
        for tasks in slots.values() {
            delete.extend(prune(tasks, limit).into_iter().map(|t| t.id.clone()));
            delete.extend(removed(tasks));
        }
        for node in nodes {
            delete.extend(removed(&tx.tasks_on_node(node)));
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
            if !event.is_delete() && reapable_change(event.old_as::<Task>(), task) {
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
        if self.whole.is_empty() && self.dirty.is_empty() && nodes.is_empty() {
            return None;
        }
        let share = driver::take_share(&mut self.whole, SERVICES_PER_PASS);
        let delete = store.view(|tx| self.plan(tx, &share, &nodes));
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
                        self.dirty_nodes.extend(nodes);
                        return Some(Instant::now());
                    }
                }
                Err(err) => {
                    driver::log_write_error(Self::NAME, &err);
                    self.whole.extend(share);
                    self.dirty_nodes.extend(nodes);
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
    use crate::store::StoreObject;
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

    /// Only changes that can make something of the slot reapable mark it: a new task, a stopped
    /// task no longer wanted, a task marked REMOVE; not a task told to shut down that still runs
    /// (each of a lost node's tasks), nor a live task's progress or failure.
    #[test]
    fn only_changes_that_can_make_a_task_reapable_mark_its_slot() {
        use TaskState::{Assigned, Failed, Remove, Running, Shutdown};
        let running = task("t", 1, Running, Running);
        let cases = [
            ("new", None, task("t", 1, Assigned, Running), true),
            (
                "running",
                Some(task("t", 1, Assigned, Running)),
                running.clone(),
                false,
            ),
            (
                "told to shut down",
                Some(running.clone()),
                task("t", 1, Running, Shutdown),
                false,
            ),
            (
                "failed, still wanted",
                Some(running.clone()),
                task("t", 1, Failed, Running),
                false,
            ),
            (
                "stopped, not wanted",
                Some(task("t", 1, Running, Shutdown)),
                task("t", 1, Shutdown, Shutdown),
                true,
            ),
            (
                "not wanted once failed",
                Some(task("t", 1, Failed, Running)),
                task("t", 1, Failed, Shutdown),
                true,
            ),
            (
                "marked REMOVE",
                Some(running.clone()),
                task("t", 1, Running, Remove),
                true,
            ),
        ];
        for (name, old, new, want) in cases {
            assert_eq!(reapable_change(old.as_ref(), &new), want, "{name}");
        }
    }

    /// A node lost makes its tasks marked REMOVE go, and only those: no slot is marked for it.
    #[tokio::test]
    async fn a_lost_node_takes_its_removed_tasks_with_it() {
        use TaskState::{Remove, Running};
        let store = crate::store::direct_store();
        let on = |id: &str, node: &str, desired| Task {
            node_id: node.into(),
            service_id: "s".into(),
            slot: 1,
            ..task(id, 1, Running, desired)
        };
        let node = |id: &str, state: NodeState| Node {
            id: id.into(),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        store
            .update(|tx| {
                tx.create(node("n1", NodeState::Ready))?;
                tx.create(node("n2", NodeState::Ready))?;
                tx.create(on("gone", "n1", Remove))?;
                tx.create(on("kept", "n1", Running))?;
                tx.create(on("elsewhere", "n2", Remove))
            })
            .await
            .unwrap();
        let mut reaper = TaskReaper::new(store.clone());
        while reaper.flush(&store).await.is_some() {}
        let (old, new) = store
            .update(|tx| {
                let old = tx.get::<Node>("n1").expect("n1");
                let mut new = old.clone();
                new.status.as_mut().unwrap().state = NodeState::Down as i32;
                tx.update(new.clone())?;
                Ok((old, new))
            })
            .await
            .unwrap();
        reaper.observe(&Event::Updated {
            old: old.into_object(),
            new: new.into_object(),
        });
        assert!(
            reaper.dirty.is_empty(),
            "no slot marked: {:?}",
            reaper.dirty
        );
        assert_eq!(reaper.flush(&store).await, None);
        let left: Vec<String> =
            store.view(|tx| tx.list::<Task>().into_iter().map(|t| t.id).collect());
        assert_eq!(left, ["elsewhere", "kept"]);
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
