//! The constraint enforcer: when a node is drained, or its labels or role change so that the
//! placement constraints of a task on it no longer hold, that task is shut down (the service
//! orchestrators then place its slot elsewhere, or drop it for a global service).

use mesh_proto::{Node, NodeAvailability, Task, TaskState};
use std::collections::BTreeSet;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::driver::{self, RETRY_DELAY, Reconcile};
use super::task;
use crate::limits::BATCH_WRITES;
use crate::scheduler::constraint::{Constraint, matches_all};
use crate::store::{Event, Read, ReadTx, Store};

/// Nodes looked at in one pass (one read of the store).
const NODES_PER_PASS: usize = 500;

/// The status message of a task the enforcer shut down.
pub const REJECTED_MESSAGE: &str = "task rejected by constraint enforcer";

/// Whether `task` may no longer run on `node`: the node is drained or the task's own placement
/// constraints do not match it. Constraints that do not parse are left to the API to refuse.
pub fn violates(task: &Task, node: &Node) -> bool {
    if task::availability(node) == NodeAvailability::Drain {
        return true;
    }
    let exprs = task
        .spec
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .map_or(&[][..], |p| p.constraints.as_slice());
    match Constraint::parse_all(exprs) {
        Ok(constraints) => !matches_all(&constraints, node),
        Err(err) => {
            warn!(task.id = %task.id, error = %err, "task constraints do not parse");
            false
        }
    }
}

/// Shuts down tasks whose node no longer suits them (see the module doc).
pub struct ConstraintEnforcer {
    store: Store,
    dirty: BTreeSet<String>,
}

impl ConstraintEnforcer {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            dirty: BTreeSet::new(),
        }
    }

    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        driver::drive(store, shutdown, self).await;
    }
}

impl Reconcile for ConstraintEnforcer {
    const NAME: &'static str = "constraint-enforcer";

    fn mark_all(&mut self, tx: &ReadTx<'_>) {
        self.dirty = tx.list::<Node>().into_iter().map(|n| n.id).collect();
    }

    fn observe(&mut self, event: &Event) {
        let Some(node) = event.as_a::<Node>() else {
            return;
        };
        if event.is_delete() {
            self.dirty.remove(&node.id);
            return;
        }
        let changed = event.old_as::<Node>().is_none_or(|old| {
            old.spec != node.spec || old.role != node.role || old.description != node.description
        });
        if changed {
            self.dirty.insert(node.id.clone());
        }
    }

    async fn flush(&mut self, store: &Store) -> Option<Instant> {
        if self.dirty.is_empty() {
            return None;
        }
        // A bounded share of the nodes per pass, the rest at once after: a leader that starts
        // marks every node, and one pass over 5,000 nodes' 500,000 tasks held the store's lock
        // for 2.8 s, with every write (agents registering again) queued behind it.
        let nodes = driver::take_share(&mut self.dirty, NODES_PER_PASS);
        // A batch per transaction: a node left half done is looked at again at once.
        let result = store
            .update(|tx| {
                let found: Vec<Node> = nodes.iter().filter_map(|id| tx.get::<Node>(id)).collect();
                for node in found {
                    // Through the store's index of tasks by node: a leader that starts marks
                    // every node, and a scan of every task per node was nodes x tasks.
                    let violating: Vec<Task> = tx
                        .tasks_on_node(&node.id)
                        .into_iter()
                        .filter(|t| task::is_live(t) && violates(t, &node))
                        .take(BATCH_WRITES)
                        .cloned()
                        .collect();
                    for task in violating {
                        if tx.is_full() {
                            return Ok(true);
                        }
                        let mut task = task::with_desired(&task, TaskState::Shutdown);
                        task.status.get_or_insert_with(Default::default).message =
                            REJECTED_MESSAGE.to_string();
                        debug!(task.id = %task.id, node.id = %node.id, "task rejected by constraints");
                        tx.update(task)?;
                    }
                    if tx.is_full() {
                        return Ok(true);
                    }
                }
                Ok(false)
            })
            .await;
        match result {
            Ok(false) if self.dirty.is_empty() => None,
            Ok(false) => Some(Instant::now()),
            Ok(true) => {
                self.dirty.extend(nodes);
                Some(Instant::now())
            }
            Err(err) => {
                driver::log_write_error(Self::NAME, &err);
                self.dirty.extend(nodes);
                Some(Instant::now() + RETRY_DELAY)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{Annotations, NodeSpec, Placement, TaskSpec};

    fn node(availability: NodeAvailability, zone: &str) -> Node {
        Node {
            id: "n1".into(),
            spec: Some(NodeSpec {
                availability: availability as i32,
                annotations: Some(Annotations {
                    labels: [("zone".to_string(), zone.to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(constraints: &[&str]) -> Task {
        Task {
            spec: Some(TaskSpec {
                placement: Some(Placement {
                    constraints: constraints.iter().map(|c| c.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn violations() {
        use NodeAvailability::{Active, Drain, Pause};
        let cases = [
            (task(&[]), node(Active, "east"), false),
            (task(&[]), node(Pause, "east"), false),
            (task(&[]), node(Drain, "east"), true),
            (
                task(&["node.labels.zone==east"]),
                node(Active, "east"),
                false,
            ),
            (
                task(&["node.labels.zone==east"]),
                node(Active, "west"),
                true,
            ),
            (
                task(&["node.labels.zone!=east"]),
                node(Active, "west"),
                false,
            ),
            (task(&["not a constraint"]), node(Active, "west"), false),
        ];
        for (i, (task, node, want)) in cases.iter().enumerate() {
            assert_eq!(violates(task, node), *want, "case {i}");
        }
    }

    /// A start marks every node; they are looked at a share per pass, each pass asking to run
    /// again at once until none is left, and a drained node among the last is still enforced.
    #[tokio::test]
    async fn a_start_over_many_nodes_is_taken_in_shares() {
        let store = crate::store::direct_store();
        let count = NODES_PER_PASS * 2 + 1;
        store
            .update(|tx| {
                for i in 0..count {
                    let mut node = node(NodeAvailability::Active, "east");
                    node.id = format!("n{i:04}");
                    if i == count - 1 {
                        node.spec.as_mut().unwrap().availability = NodeAvailability::Drain as i32;
                    }
                    tx.create(node)?;
                }
                let mut task = task(&[]);
                task.id = "t".into();
                task.node_id = format!("n{:04}", count - 1);
                task.desired_state = TaskState::Running as i32;
                tx.create(task)
            })
            .await
            .unwrap();
        let mut enforcer = ConstraintEnforcer::new(store.clone());
        store.view(|tx| enforcer.mark_all(tx));
        let mut passes = 0;
        while enforcer.flush(&store).await.is_some() {
            passes += 1;
            assert!(passes < 10, "the passes do not end");
        }
        assert_eq!(
            passes + 1,
            3,
            "three shares of at most {NODES_PER_PASS} nodes"
        );
        let desired = store.view(|tx| tx.peek::<Task>("t").map(|t| t.desired_state));
        assert_eq!(desired, Some(TaskState::Shutdown as i32));
    }
}
