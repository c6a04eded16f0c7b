//! The cluster's desired and observed state: nodes, services, tasks and the cluster object.
//!
//! # Transaction model
//!
//! Every manager holds the whole state in memory ([`MemoryStore`]) and changes it only by applying
//! committed Raft entries, so all managers apply the same writes in the same order.
//!
//! - **Reads** go through [`Store::view`]: a closure gets a [`ReadTx`], a consistent view under a
//!   read lock. Nothing is awaited while it is held.
//! - **Writes** go through [`Store::update`]: a closure gets a [`WriteTx`] that reads the store plus
//!   its own pending changes and records creates, updates and deletes. When the closure returns, the
//!   changes become one [`Transaction`] that is proposed through Raft (concurrent transactions are
//!   batched into one entry by the proposer) and the call returns once it has been applied.
//! - **Versions** make writes optimistic: an update carries the version it read, and the apply step
//!   refuses the whole transaction if the object changed in between ([`StoreError::Conflict`]). A
//!   transaction is all-or-nothing. An object's version is the log index of the entry that wrote it.
//! - **Watchers** ([`MemoryStore::watch`]) receive typed [`Event`]s for every applied change, then a
//!   [`Event::Commit`] per entry. [`MemoryStore::view_and_watch`] reads and subscribes atomically, so a
//!   reconciler that starts from a view misses no change made after it.

mod counts;
#[cfg(any(test, feature = "fuzzing"))]
mod direct;
mod key;
mod memory;
mod object;
mod tx;
mod watch;

pub use counts::{ServiceTasks, TaskCounts};
#[cfg(any(test, feature = "fuzzing"))]
pub use direct::direct_store;
#[cfg(test)]
pub use direct::{slow_store, writes_per_entry};
pub use key::Key;
pub use memory::{ApplyError, MemoryStore, Tables, TablesSnapshot};
pub use object::{Kind, Object, StoreObject};
pub use tx::{Read, ReadTx, WriteTx};
pub use watch::{Event, try_next};

use futures::future::BoxFuture;
use mesh_proto::Transaction;
use prost::Message;
use std::sync::Arc;

use crate::limits::{LimitError, MAX_TX_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: Kind, name: String },
    #[error("{kind} {id} was changed concurrently; retry")]
    Conflict { kind: Kind, id: String },
    #[error("{0}")]
    InvalidArgument(String),
    /// The object is not in a state that allows the request (e.g. nothing to roll back to).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Limit(#[from] crate::limits::LimitError),
    #[error("this node is not the leader{}", leader.as_ref().map(|l| format!(" (the leader is {l})")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    #[error("the cluster has no quorum: a majority of managers must be reachable to make changes")]
    NoQuorum,
    #[error("the store is shutting down")]
    Shutdown,
    #[error("raft: {0}")]
    Raft(String),
}

impl From<ApplyError> for StoreError {
    fn from(err: ApplyError) -> Self {
        match err {
            ApplyError::NotFound { kind, id } => StoreError::NotFound { kind, id },
            ApplyError::AlreadyExists { kind, name } => StoreError::AlreadyExists { kind, name },
            ApplyError::Conflict { kind, id } => StoreError::Conflict { kind, id },
        }
    }
}

/// Turns transactions into committed, applied Raft entries.
pub trait Proposer: Send + Sync + 'static {
    /// Resolves once the transaction has been applied to the local [`MemoryStore`].
    fn propose(&self, tx: Transaction) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The handle reconcilers and the API use: reads from memory, writes through the proposer.
#[derive(Clone)]
pub struct Store {
    memory: Arc<MemoryStore>,
    proposer: Arc<dyn Proposer>,
}

impl Store {
    pub fn new(memory: Arc<MemoryStore>, proposer: Arc<dyn Proposer>) -> Self {
        Self { memory, proposer }
    }

    pub fn memory(&self) -> &Arc<MemoryStore> {
        &self.memory
    }

    pub fn view<T>(&self, f: impl FnOnce(&ReadTx<'_>) -> T) -> T {
        self.memory.view(f)
    }

    /// A short read that does not queue behind waiting writers ([`MemoryStore::view_promptly`]).
    pub fn view_promptly<T>(&self, f: impl FnOnce(&ReadTx<'_>) -> T) -> T {
        self.memory.view_promptly(f)
    }

    /// Runs `f` against the current state and proposes what it wrote as one transaction. A
    /// transaction that encodes to more than [`MAX_TX_BYTES`] is refused unproposed: no write,
    /// whatever made it, becomes a giant Raft entry.
    pub async fn update<T>(
        &self,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (tx, out) = self.memory.write_tx(f)?;
        if !tx.actions.is_empty() {
            let bytes = tx.encoded_len();
            if bytes > MAX_TX_BYTES {
                return Err(LimitError::Transaction { bytes }.into());
            }
            self.proposer.propose(tx).await?;
        }
        Ok(out)
    }
}

impl Store {
    /// Like [`Store::update`], but re-runs `f` against the new state when the transaction lost a
    /// race to a concurrent write — an update of a changed object, or a create of one that
    /// appeared meanwhile (for read-modify-write changes that carry no user-given version).
    pub async fn update_retrying<T>(
        &self,
        mut f: impl FnMut(&mut WriteTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            match self.update(&mut f).await {
                Err(StoreError::Conflict { .. }) if attempt < 10 => attempt += 1,
                result => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Current time in Unix nanoseconds, as stored in [`mesh_proto::Meta`] and task statuses.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// A new object id: 25 lowercase base-36 characters, as Docker's.
pub fn new_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..25)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
