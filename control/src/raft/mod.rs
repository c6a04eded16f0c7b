//! Raft replication of the store: an openraft 0.9 group whose log lives in redb, whose state
//! machine is the [`MemoryStore`](crate::store::MemoryStore), and whose messages travel over gRPC.
//!
//! - [`seal`]: the key in `dir/seal.key` that seals every record the other modules write to disk.
//! - [`log_store`]: the durable log, vote and commit index in `dir/raft.redb`.
//! - [`state_machine`]: applies committed entries to the memory store and builds snapshots, which
//!   [`snapshot`] writes atomically to `dir/snapshot.bin`.
//! - [`network`] / [`server`]: the `mesh.v1.Raft` client and service; payloads are openraft's own
//!   request and response types as JSON.
//! - [`proposer`]: batches concurrent store transactions into one entry.
//! - [`node`]: [`RaftNode`], the handle the manager starts, initializes and shuts down.

mod log_store;
mod network;
mod node;
mod proposer;
mod seal;
mod server;
mod snapshot;
mod state_machine;
#[cfg(test)]
mod tests;

use std::io::Cursor;

use crate::store::ApplyError;

pub use log_store::LogStore;
pub use network::{Network, connect};
pub use node::{Leadership, RaftConfig, RaftNode};
pub use seal::{SealError, SealKey};
pub use server::RaftService;
#[cfg(feature = "fuzzing")]
pub(crate) use server::{check_sender as check_raft_sender, decode_payload};
pub use state_machine::{SnapshotBuilder, StateMachine};

openraft::declare_raft_types!(
    /// mesh's Raft types: an entry carries a [`mesh_proto::Proposal`] (a batch of transactions),
    /// nodes are `u64` ids with the address of their gRPC listener.
    pub TypeConfig:
        D = mesh_proto::Proposal,
        R = ProposalResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The outcome of applying one entry: one result per transaction of its proposal, in order.
/// Blank and membership entries have no transactions and so no results.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProposalResponse {
    pub results: Vec<Result<(), ApplyError>>,
}

/// Errors starting, initializing or reconfiguring the Raft member. openraft's errors are large,
/// so they are boxed.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("creating the raft directory {path}: {source}")]
    CreateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the raft log {path}: {source}")]
    OpenLog {
        path: std::path::PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("raft storage: {0}")]
    Storage(#[source] Box<openraft::StorageError<u64>>),
    #[error("invalid raft configuration: {0}")]
    Config(#[source] Box<openraft::ConfigError>),
    #[error("raft has stopped: {0}")]
    Fatal(#[source] Box<openraft::error::Fatal<u64>>),
    #[error("initializing the raft group: {0}")]
    Initialize(#[source] Box<openraft::error::RaftError<u64, InitializeError>>),
    #[error("this node already belongs to a raft group whose voters are {voters:?}")]
    OtherGroup { voters: Vec<u64> },
    #[error("changing the raft membership: {0}")]
    Membership(#[source] Box<openraft::error::RaftError<u64, ClientWriteError>>),
    #[error("no leader was elected within {0:?}")]
    NoLeader(std::time::Duration),
    #[error("stopping raft: {0}")]
    Join(#[from] tokio::task::JoinError),
}

type InitializeError = openraft::error::InitializeError<u64, openraft::BasicNode>;
type ClientWriteError = openraft::error::ClientWriteError<u64, openraft::BasicNode>;

impl From<openraft::ConfigError> for RaftError {
    fn from(e: openraft::ConfigError) -> Self {
        Self::Config(Box::new(e))
    }
}

impl From<openraft::StorageError<u64>> for RaftError {
    fn from(e: openraft::StorageError<u64>) -> Self {
        Self::Storage(Box::new(e))
    }
}

impl From<openraft::error::Fatal<u64>> for RaftError {
    fn from(e: openraft::error::Fatal<u64>) -> Self {
        Self::Fatal(Box::new(e))
    }
}

impl From<openraft::error::RaftError<u64, InitializeError>> for RaftError {
    fn from(e: openraft::error::RaftError<u64, InitializeError>) -> Self {
        Self::Initialize(Box::new(e))
    }
}

impl From<openraft::error::RaftError<u64, ClientWriteError>> for RaftError {
    fn from(e: openraft::error::RaftError<u64, ClientWriteError>) -> Self {
        Self::Membership(Box::new(e))
    }
}
