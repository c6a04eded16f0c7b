//! Raft membership: the `mesh.v1.RaftMembership` service through which a joining manager asks the
//! leader to add it (and a leaving one to remove it), and the quorum check before a manager leaves.
//! A follower that receives a request forwards it to the leader.
//!
//! A manager may only add or remove itself: the manager that first receives a request checks
//! that its raft id is the one the caller's certificate names and fills in the caller's node id
//! before it forwards it; the leader takes a request naming another node only from a manager
//! (which forwarded it), and then checks that node's standing in the store itself.

use mesh_proto::raft_membership_client::RaftMembershipClient;
use mesh_proto::raft_membership_server::{RaftMembership, RaftMembershipServer};
use mesh_proto::{
    Cluster, ManagerStatus, Node, NodeRole, NodeState, RaftJoinRequest, RaftJoinResponse,
    RaftLeaveRequest, RaftLeaveResponse, Reachability,
};
use tonic::{Request, Response, Status};

use crate::ca::{NodeIdentity, require_manager};
use crate::raft::RaftNode;
use crate::store::{Read, Store};
use crate::transport::Transport;

pub struct MembershipService {
    raft: RaftNode,
    store: Store,
    transport: Transport,
}

impl MembershipService {
    pub fn server(
        raft: RaftNode,
        store: Store,
        transport: Transport,
    ) -> RaftMembershipServer<Self> {
        RaftMembershipServer::new(Self {
            raft,
            store,
            transport,
        })
        .max_decoding_message_size(64 * 1024)
    }

    /// Checks that a request to add (`joining`) or remove `raft_id` for `node_id` may come from
    /// `caller`, filling in the caller's own node id when the request names none. A manager may
    /// ask for itself, with the raft id its certificate names; a request for another node is one
    /// a manager forwarded, taken only if that node is no removed one nor a worker, and, to
    /// leave, only for the raft id the store gives it.
    fn check_member(
        &self,
        caller: &NodeIdentity,
        node_id: &mut String,
        raft_id: u64,
        joining: bool,
    ) -> Result<(), Status> {
        if node_id.is_empty() {
            node_id.clone_from(&caller.node_id);
        }
        if *node_id == caller.node_id {
            if caller.raft_id != Some(raft_id) {
                return Err(Status::permission_denied(
                    "a manager may only join or leave the raft group with the raft id its certificate names",
                ));
            }
            return Ok(());
        }
        let (removed, node) = self.store.view(|tx| {
            let removed = tx
                .list::<Cluster>()
                .iter()
                .any(|c| c.removed_nodes.contains(node_id));
            (removed, tx.get::<Node>(node_id))
        });
        if removed {
            return Err(Status::permission_denied(crate::ca::REMOVED_NODE));
        }
        if let Some(node) = node {
            if node.role != NodeRole::Manager as i32 {
                return Err(Status::permission_denied(
                    "the node the request names is not a manager",
                ));
            }
            let held = node.manager_status.map(|m| m.raft_id);
            if !joining && held != Some(raft_id) {
                return Err(Status::permission_denied(
                    "the raft id the request names is not that node's",
                ));
            }
        }
        Ok(())
    }

    /// A client of the leader's membership service, or `None` when this manager leads.
    async fn leader(
        &self,
    ) -> Result<Option<RaftMembershipClient<tonic::transport::Channel>>, Status> {
        let leadership = self.raft.leadership().borrow().clone();
        if leadership.is_leader {
            return Ok(None);
        }
        let addr = leadership
            .leader_addr
            .ok_or_else(|| Status::unavailable(crate::store::StoreError::NoQuorum.to_string()))?;
        let channel = self
            .transport
            .channel(&addr)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Some(RaftMembershipClient::new(channel)))
    }
}

#[tonic::async_trait]
impl RaftMembership for MembershipService {
    async fn join(
        &self,
        request: Request<RaftJoinRequest>,
    ) -> Result<Response<RaftJoinResponse>, Status> {
        let identity = require_manager(&request)?;
        let mut req = request.into_inner();
        if req.raft_id == 0 || req.addr.is_empty() {
            return Err(Status::invalid_argument("raft id and address are required"));
        }
        self.check_member(&identity, &mut req.node_id, req.raft_id, true)?;
        if let Some(mut leader) = self.leader().await? {
            return leader.join(req).await;
        }
        self.raft
            .add_voter(req.raft_id, req.addr.clone())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // Record the new manager; its node object is created here if its agent has not yet.
        let node_id = req.node_id.clone();
        self.store
            .update_retrying(|tx| {
                let status = ManagerStatus {
                    raft_id: req.raft_id,
                    addr: req.addr.clone(),
                    leader: false,
                    reachability: Reachability::Reachable as i32,
                };
                match tx.get::<Node>(&node_id) {
                    Some(mut node) => {
                        node.manager_status = Some(status);
                        node.role = NodeRole::Manager as i32;
                        tx.update(node)
                    }
                    None => tx.create(Node {
                        id: node_id.clone(),
                        spec: Some(mesh_proto::NodeSpec {
                            desired_role: NodeRole::Manager as i32,
                            ..Default::default()
                        }),
                        role: NodeRole::Manager as i32,
                        manager_status: Some(status),
                        ..Default::default()
                    }),
                }
            })
            .await
            .map_err(crate::api::status)?;
        tracing::info!(node.id = %node_id, raft.id = req.raft_id, "manager joined the raft group");
        let members = self
            .raft
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        Ok(Response::new(RaftJoinResponse { members }))
    }

    async fn leave(
        &self,
        request: Request<RaftLeaveRequest>,
    ) -> Result<Response<RaftLeaveResponse>, Status> {
        let identity = require_manager(&request)?;
        let mut req = request.into_inner();
        self.check_member(&identity, &mut req.node_id, req.raft_id, false)?;
        if let Some(mut leader) = self.leader().await? {
            return leader.leave(req).await;
        }
        self.raft
            .remove_voter(req.raft_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(RaftLeaveResponse {}))
    }
}

/// Why this manager may not leave without `--force`: it is the last one, or its leaving would
/// leave the remaining managers without a quorum.
pub fn leave_refusal(store: &Store) -> Option<String> {
    let managers = store.view(|tx| tx.find::<Node>(|n| n.role == NodeRole::Manager as i32));
    let total = managers.len();
    let reachable = managers
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .is_none_or(|s| s.state != NodeState::Down as i32)
        })
        .count();
    if total <= 1 {
        return Some(
            "this node is the last manager: leaving erases the swarm's state; use --force to leave anyway"
                .into(),
        );
    }
    let quorum = total / 2 + 1;
    if reachable.saturating_sub(1) < quorum {
        return Some(format!(
            "leaving would leave {} reachable manager(s) of {total}, below the quorum of {quorum}: the swarm would become unusable; use --force to leave anyway",
            reachable.saturating_sub(1)
        ));
    }
    None
}
