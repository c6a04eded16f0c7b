//! Node requests: list, inspect, update (availability, labels) and removal.

use mesh_proto::chunks::{LIST_CHUNK_BYTES, field_len, split};
use mesh_proto::{
    Cluster, GetNodeRequest, ListNodesResponse, Node, NodeAvailability, NodeRole, NodeState,
    Reachability, RemoveNodeRequest, Task, TaskState, UpdateNodeRequest,
};
use tonic::Status;

use super::{ManagerContext, limit, resolve, status};
use crate::limits::BATCH_WRITES;
use crate::store::{Kind, Read, Store, StoreError, now_nanos};

/// The Raft id of the leader, as this manager sees it now.
fn leader_id(context: &ManagerContext) -> Option<u64> {
    context.raft.leadership().borrow().leader_id
}

/// Fills in a manager's live standing: whether it leads now (`leader`, from Raft) and whether it
/// is reachable (its node is not down).
fn with_manager_status(leader: Option<u64>, mut node: Node) -> Node {
    let down = node
        .status
        .as_ref()
        .is_some_and(|s| s.state == NodeState::Down as i32);
    if let Some(status) = node.manager_status.as_mut() {
        status.leader = leader.is_some_and(|id| id == status.raft_id);
        status.reachability = if down && !status.leader {
            Reachability::Unreachable as i32
        } else {
            Reachability::Reachable as i32
        };
    }
    node
}

pub(super) fn get(context: &ManagerContext, req: GetNodeRequest) -> Result<Node, Status> {
    context
        .store
        .view_promptly(|tx| resolve::node(tx, &req.reference))
        .map(|node| with_manager_status(leader_id(context), node))
        .map_err(status)
}

/// Every node, from one read, in chunks of at most [`LIST_CHUNK_BYTES`].
pub(super) fn list(context: &ManagerContext) -> Vec<ListNodesResponse> {
    list_in(&context.store, leader_id(context))
}

/// [`list`] with `leader` as the Raft id of the leading manager.
pub(super) fn list_in(store: &Store, leader: Option<u64>) -> Vec<ListNodesResponse> {
    let nodes = store.view_promptly(|tx| tx.list::<Node>());
    let nodes = nodes
        .into_iter()
        .map(|node| with_manager_status(leader, node))
        .collect();
    split(
        nodes,
        LIST_CHUNK_BYTES,
        |n| field_len(1, n),
        |nodes| ListNodesResponse { nodes },
    )
}

pub(super) async fn update(
    context: &ManagerContext,
    req: UpdateNodeRequest,
) -> Result<Node, Status> {
    let id = update_spec(&context.store, req).await?;
    get(context, GetNodeRequest { reference: id })
}

/// Checks and writes the node's new spec; returns the node's id.
pub(super) async fn update_spec(store: &Store, req: UpdateNodeRequest) -> Result<String, Status> {
    let spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("node spec is missing"))?;
    if NodeAvailability::try_from(spec.availability).is_err() {
        return Err(Status::invalid_argument(format!(
            "invalid availability {}: expected active, pause or drain",
            spec.availability
        )));
    }
    if NodeRole::try_from(spec.desired_role).is_err() {
        return Err(Status::invalid_argument(
            "invalid role: expected manager or worker",
        ));
    }
    let labels = spec.annotations.as_ref().map(|a| &a.labels);
    if labels.is_some_and(|l| l.keys().any(|k| k.trim().is_empty())) {
        return Err(Status::invalid_argument(
            "node label keys must not be empty",
        ));
    }
    crate::limits::node(&spec).map_err(limit)?;
    store
        .update(|tx| {
            let mut node = resolve::node(tx, &req.node_id)?;
            if let Some(version) = &req.version
                && node.meta.as_ref().and_then(|m| m.version.as_ref()) != Some(version)
            {
                return Err(StoreError::Conflict {
                    kind: Kind::Node,
                    id: node.id,
                });
            }
            let demoting = spec.desired_role == NodeRole::Worker as i32
                && node.role == NodeRole::Manager as i32;
            if demoting {
                let managers = tx
                    .find::<Node>(|n| {
                        n.spec.as_ref().map_or(n.role, |s| s.desired_role)
                            == NodeRole::Manager as i32
                    })
                    .len();
                if managers <= 1 {
                    return Err(StoreError::InvalidArgument(format!(
                        "node {} is the last manager of the swarm and cannot be demoted",
                        node.id
                    )));
                }
            }
            // The role manager carries out a role change, with its Raft membership change.
            node.spec = Some(spec.clone());
            let id = node.id.clone();
            tx.update(node)?;
            Ok(id)
        })
        .await
        .map_err(status)
}

/// Removes a node. Its tasks are orphaned a batch per transaction, so that a node holding many
/// tasks never makes one giant write; the last transaction orphans the rest and removes the node.
pub(super) async fn remove(store: &Store, req: RemoveNodeRequest) -> Result<(), Status> {
    while !remove_batch(store, &req).await? {}
    Ok(())
}

/// One transaction of [`remove`]; true once the node is gone.
async fn remove_batch(store: &Store, req: &RemoveNodeRequest) -> Result<bool, Status> {
    store
        .update_retrying(|tx| {
            let node = resolve::node(tx, &req.node_id)?;
            if node.role == NodeRole::Manager as i32 {
                return Err(StoreError::InvalidArgument(format!(
                    "node {} is a manager: demote it to a worker before removing it",
                    node.id
                )));
            }
            let ready = node
                .status
                .as_ref()
                .is_some_and(|s| s.state == NodeState::Ready as i32);
            if ready && !req.force {
                return Err(StoreError::InvalidArgument(format!(
                    "node {} is not down and can't be removed: use --force to remove it anyway",
                    node.id
                )));
            }
            // Its tasks are orphaned: the orchestrators replace them elsewhere.
            let tasks: Vec<Task> = tx
                .tasks_on_node(&node.id)
                .into_iter()
                .filter(|t| t.desired_state <= TaskState::Running as i32)
                .take(BATCH_WRITES)
                .cloned()
                .collect();
            for mut task in tasks {
                if tx.is_full() {
                    return Ok(false);
                }
                let state = task.status.get_or_insert_with(Default::default);
                if state.state <= TaskState::Running as i32 {
                    state.state = TaskState::Orphaned as i32;
                    state.message = "node removed from the cluster".into();
                    state.timestamp = now_nanos();
                }
                task.desired_state = TaskState::Shutdown as i32;
                tx.update(task)?;
            }
            if tx.is_full() {
                return Ok(false);
            }
            // Its certificate is refused from now on.
            if let Some(mut cluster) = tx.list::<Cluster>().into_iter().next() {
                cluster.removed_nodes.push(node.id.clone());
                tx.update(cluster)?;
            }
            tx.delete::<Node>(&node.id)?;
            Ok(true)
        })
        .await
        .map_err(status)
}
