//! The Raft transport's server side: the `mesh.v1.Raft` gRPC service handing peers' RPCs to the
//! local openraft instance, and its `Result` back as JSON.
//!
//! The gate has already required a manager, in its certificate and in the store. Here each
//! message must also come from the member it says it comes from: the Raft id of its vote (the
//! candidate's, or the leader's) must be the one the caller's certificate names, and a member of
//! this node's Raft group once it has one. A refused message never reaches openraft, so it can
//! change no term, vote, log or snapshot.

use mesh_proto::RaftPayload;
use mesh_proto::raft_server::{Raft as RaftRpc, RaftServer};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{Raft, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use super::TypeConfig;
use crate::ca::{NodeIdentity, require_manager};

/// A Raft node id, as `TypeConfig` declares it.
type NodeId = u64;

/// Largest request the service accepts. Senders keep requests under the default 4 MiB by
/// splitting them; this bound only admits a single entry that is larger on its own.
pub(crate) const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

pub struct RaftService {
    raft: Raft<TypeConfig>,
}

impl RaftService {
    pub fn new(raft: Raft<TypeConfig>) -> Self {
        Self { raft }
    }

    /// The tonic service to add to the manager's gRPC server.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

fn decode<T: DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    decode_payload(&request.into_inner().data)
}

/// A peer's Raft message from the JSON it sent.
pub(crate) fn decode_payload<T: DeserializeOwned>(data: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(data)
        .map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))
}

/// Why a message whose vote names `sender` may not come from `caller`, given this node's
/// members (empty while it has not joined a group yet: it has nothing to protect then).
pub fn check_sender(
    caller: &NodeIdentity,
    sender: Option<NodeId>,
    members: &[NodeId],
) -> Result<(), Status> {
    let Some(own) = caller.raft_id else {
        return Err(Status::permission_denied(
            "this manager certificate names no raft id: renew it",
        ));
    };
    if sender != Some(own) {
        return Err(Status::permission_denied(
            "the message's raft sender is not the one this certificate names",
        ));
    }
    if !members.is_empty() && !members.contains(&own) {
        return Err(Status::permission_denied(
            "the sender is not a member of this raft group",
        ));
    }
    Ok(())
}

impl RaftService {
    /// Checks the caller and the sender its message names, then decodes it.
    fn admit<T: DeserializeOwned>(
        &self,
        request: Request<RaftPayload>,
        vote: impl FnOnce(&T) -> Vote<NodeId>,
    ) -> Result<T, Status> {
        let caller = require_manager(&request)?;
        let rpc: T = decode(request)?;
        let sender = vote(&rpc).leader_id().voted_for();
        let members: Vec<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        if let Err(status) = check_sender(&caller, sender, &members) {
            tracing::debug!(node.id = %caller.node_id, raft.sender = ?sender, "raft message refused");
            return Err(status);
        }
        Ok(rpc)
    }
}

fn encode<T: Serialize>(response: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(response)
        .map(|data| Response::new(RaftPayload { data }))
        .map_err(|e| Status::internal(format!("encoding raft response: {e}")))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = self.admit(request, |r: &AppendEntriesRequest<TypeConfig>| r.vote)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = self.admit(request, |r: &VoteRequest<NodeId>| r.vote)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = self.admit(request, |r: &InstallSnapshotRequest<TypeConfig>| r.vote)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::ca::Role;

    fn manager(raft_id: Option<u64>) -> NodeIdentity {
        NodeIdentity {
            node_id: "m1".into(),
            role: Role::Manager,
            cluster_id: "c1".into(),
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
            serial: vec![1],
            raft_id,
        }
    }

    #[test]
    fn a_message_must_come_from_the_member_its_certificate_names() {
        let group = vec![1, 2, 3];
        let none = Vec::new();
        // (certificate's raft id, vote's sender, members, accepted)
        let cases = [
            (Some(2), Some(2), &group, true),
            (Some(2), Some(3), &group, false),
            (Some(9), Some(9), &group, false),
            (None, Some(2), &group, false),
            (Some(2), None, &group, false),
            // A node that has not joined a group yet takes any certified sender.
            (Some(9), Some(9), &none, true),
            (Some(9), Some(2), &none, false),
        ];
        for (i, (own, sender, members, accepted)) in cases.into_iter().enumerate() {
            let verdict = check_sender(&manager(own), sender, members);
            assert_eq!(verdict.is_ok(), accepted, "case {i}: {verdict:?}");
            if let Err(status) = verdict {
                assert_eq!(status.code(), tonic::Code::PermissionDenied, "case {i}");
            }
        }
    }
}
