//! The one place where control-plane errors become gRPC statuses.

use tonic::{Code, Status};

use crate::limits::LimitError;
use crate::store::StoreError;

/// Metadata key carrying the leader's address on a "not the leader" error.
pub const LEADER_METADATA: &str = "mesh-leader";

pub fn status(err: StoreError) -> Status {
    let message = err.to_string();
    match err {
        StoreError::NotFound { .. } => Status::not_found(message),
        StoreError::AlreadyExists { .. } => Status::already_exists(message),
        StoreError::Conflict { .. } => Status::aborted(message),
        StoreError::InvalidArgument(_) | StoreError::Limit(_) => Status::invalid_argument(message),
        StoreError::FailedPrecondition(_) => Status::failed_precondition(message),
        StoreError::NotLeader { leader } => {
            let mut status = Status::new(Code::Unavailable, message);
            if let Some(leader) = leader.and_then(|l| l.parse().ok()) {
                status.metadata_mut().insert(LEADER_METADATA, leader);
            }
            status
        }
        StoreError::NoQuorum | StoreError::Shutdown => Status::unavailable(message),
        StoreError::Raft(_) => Status::internal(message),
    }
}

/// A request beyond one of the [limits](crate::limits).
pub fn limit(err: LimitError) -> Status {
    Status::invalid_argument(err.to_string())
}

pub fn not_a_manager() -> Status {
    Status::failed_precondition(
        "this node is not a manager: use \"meshctl swarm init\" or \"meshctl swarm join\" to connect \
         this node to a swarm, or run this command on a manager node",
    )
}
