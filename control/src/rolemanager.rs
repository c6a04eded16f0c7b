//! The role manager: carries out promotions and demotions recorded in node specs. A promoted node
//! gets the manager role in the store; its agent then renews its certificate and joins the Raft
//! group. A demoted manager is first removed from the Raft group, then given the worker role.

use mesh_proto::{Node, NodeRole, NodeState};
use std::time::Duration;
use tokio::sync::{broadcast::error::RecvError, watch};

use crate::raft::RaftNode;
use crate::store::{Event, Read, Store};

pub struct RoleManager {
    store: Store,
    raft: RaftNode,
}

fn desired_role(node: &Node) -> i32 {
    node.spec.as_ref().map_or(node.role, |s| s.desired_role)
}

/// Whether a change can give the role manager work: a node whose role is not the one its spec
/// wants, or a manager's change (a demotion waits for enough managers to be up). Other nodes'
/// changes cannot, and each had every node looked at: at 10,000 nodes, each registration and each
/// node marked down (12% of the leader's CPU while a tenth of them were lost).
fn concerns_roles(event: &Event) -> bool {
    let manager = NodeRole::Manager as i32;
    let Some(node) = event.as_a::<Node>() else {
        return false;
    };
    desired_role(node) != node.role
        || node.role == manager
        || event
            .old_as::<Node>()
            .is_some_and(|old| old.role == manager)
}

impl RoleManager {
    pub fn new(store: Store, raft: RaftNode) -> Self {
        Self { store, raft }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut events = self.store.memory().watch();
        let mut retry = tokio::time::interval(Duration::from_secs(2));
        loop {
            self.reconcile().await;
            // Wait for a node change, or retry a step that could not be taken yet.
            loop {
                tokio::select! {
                    _ = shutdown.changed() => if *shutdown.borrow() { return },
                    _ = retry.tick() => break,
                    event = events.recv() => match event {
                        Ok(Event::Commit { .. }) => {}
                        Ok(e) if concerns_roles(&e) => break,
                        Ok(Event::Reset) | Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                        Ok(_) => {}
                    },
                }
            }
        }
    }

    async fn reconcile(&self) {
        let pending = self
            .store
            .view(|tx| tx.find::<Node>(|n| desired_role(n) != n.role));
        for node in pending {
            let result = if desired_role(&node) == NodeRole::Manager as i32 {
                self.promote(&node).await
            } else {
                self.demote(&node).await
            };
            if let Err(err) = result {
                tracing::warn!(node.id = %node.id, error = %err, "role change postponed");
            }
        }
    }

    async fn promote(&self, node: &Node) -> Result<(), String> {
        let id = node.id.clone();
        self.store
            .update(|tx| {
                let Some(mut node) = tx.get::<Node>(&id) else {
                    return Ok(());
                };
                node.role = NodeRole::Manager as i32;
                tx.update(node)
            })
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(node.id = %id, "node promoted to manager");
        Ok(())
    }

    async fn demote(&self, node: &Node) -> Result<(), String> {
        let managers = self
            .store
            .view(|tx| tx.find::<Node>(|n| n.role == NodeRole::Manager as i32));
        let reachable = managers
            .iter()
            .filter(|n| n.id != node.id)
            .filter(|n| {
                n.status
                    .as_ref()
                    .is_none_or(|s| s.state != NodeState::Down as i32)
            })
            .count();
        let remaining = managers.len().saturating_sub(1);
        if remaining == 0 || reachable < remaining / 2 + 1 {
            return Err("demoting it would leave the remaining managers without a quorum".into());
        }
        if let Some(raft_id) = node
            .manager_status
            .as_ref()
            .map(|m| m.raft_id)
            .filter(|id| *id != 0)
        {
            let voters = self.raft.voters();
            if voters.contains(&raft_id) {
                self.raft
                    .remove_voter(raft_id)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let id = node.id.clone();
        self.store
            .update(|tx| {
                let Some(mut node) = tx.get::<Node>(&id) else {
                    return Ok(());
                };
                node.role = NodeRole::Worker as i32;
                node.manager_status = None;
                tx.update(node)
            })
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(node.id = %id, "node demoted to worker");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreObject;
    use mesh_proto::{NodeSpec, NodeStatus, Task};

    fn node(role: NodeRole, desired: NodeRole, state: NodeState) -> Node {
        Node {
            id: "n1".into(),
            role: role as i32,
            spec: Some(NodeSpec {
                desired_role: desired as i32,
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A role to change, or a manager's change, wakes the role manager; a worker that stays one
    /// (registered, marked down, deleted) and anything but a node do not.
    #[test]
    fn only_role_changes_and_managers_changes_concern_roles() {
        use NodeRole::{Manager, Worker};
        use NodeState::{Down, Ready};
        let created = |n: Node| Event::Created(n.into_object());
        let updated = |old: Node, new: Node| Event::Updated {
            old: old.into_object(),
            new: new.into_object(),
        };
        let cases = [
            (
                "a worker registers",
                created(node(Worker, Worker, Ready)),
                false,
            ),
            (
                "a worker is marked down",
                updated(node(Worker, Worker, Ready), node(Worker, Worker, Down)),
                false,
            ),
            (
                "a worker is removed",
                Event::Deleted(node(Worker, Worker, Down).into_object()),
                false,
            ),
            (
                "a worker is promoted",
                updated(node(Worker, Worker, Ready), node(Worker, Manager, Ready)),
                true,
            ),
            (
                "a manager is demoted",
                updated(node(Manager, Manager, Ready), node(Manager, Worker, Ready)),
                true,
            ),
            (
                "a manager comes back",
                updated(node(Manager, Manager, Down), node(Manager, Manager, Ready)),
                true,
            ),
            (
                "a demotion done",
                updated(node(Manager, Worker, Ready), node(Worker, Worker, Ready)),
                true,
            ),
            (
                "a manager is removed",
                Event::Deleted(node(Manager, Manager, Down).into_object()),
                true,
            ),
            (
                "a task",
                Event::Created(Task::default().into_object()),
                false,
            ),
            ("a commit", Event::Commit { index: 3 }, false),
        ];
        for (what, event, concerns) in cases {
            assert_eq!(concerns_roles(&event), concerns, "{what}");
        }
    }
}
