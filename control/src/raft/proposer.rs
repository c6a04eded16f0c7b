//! Batches concurrent store transactions into Raft entries.
//!
//! One task owns the write path: it takes the first waiting transaction, adds whatever else is
//! already queued (up to [`MAX_BATCH_TXS`] transactions or [`MAX_BATCH_BYTES`]), and proposes them
//! as one [`Proposal`]. Up to [`MAX_IN_FLIGHT`] entries are being committed at once, so that the
//! write path is not one log write (an fsync) per round trip: Raft appends and replicates the
//! entries in flight together. Each caller gets back its own transaction's result. Entries in
//! flight together hold independent writers' transactions (a writer waits for its result before
//! it writes again), and each is checked against the versions it read when it is applied.

use std::time::Duration;

use futures::future::BoxFuture;
use mesh_proto::{Proposal, Transaction};
use openraft::Raft;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use prometheus_client::metrics::histogram::Histogram;
use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use super::TypeConfig;
use crate::store::{Proposer, StoreError};

/// Most transactions in one entry.
pub const MAX_BATCH_TXS: usize = 256;
/// Stop adding transactions to an entry once they encode to this many bytes.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Entries proposed and not yet committed, at most.
pub const MAX_IN_FLIGHT: usize = 8;
/// How long a proposal may wait to be committed before the caller is told there is no quorum.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
const QUEUE_DEPTH: usize = 4096;

struct Pending {
    tx: Transaction,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The [`Proposer`] the store writes through.
pub struct BatchingProposer {
    queue: mpsc::Sender<Pending>,
}

impl BatchingProposer {
    /// Starts the batching task; it stops when `shutdown` changes or is dropped.
    /// Each entry's time from proposal to applied goes into `commit_latency`.
    pub fn spawn(
        raft: Raft<TypeConfig>,
        shutdown: watch::Receiver<bool>,
        commit_latency: Histogram,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(raft, rx, shutdown, commit_latency));
        Self { queue }
    }
}

impl Proposer for BatchingProposer {
    fn propose(&self, tx: Transaction) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (done, result) = oneshot::channel();
            self.queue
                .send(Pending { tx, done })
                .await
                .map_err(|_| StoreError::Shutdown)?;
            result.await.unwrap_or(Err(StoreError::Shutdown))
        })
    }
}

async fn run(
    raft: Raft<TypeConfig>,
    mut queue: mpsc::Receiver<Pending>,
    mut shutdown: watch::Receiver<bool>,
    commit_latency: Histogram,
) {
    let in_flight = std::sync::Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let first = tokio::select! {
            pending = queue.recv() => match pending {
                Some(pending) => pending,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        // Wait for room before gathering: what queues meanwhile joins this entry.
        let permit = tokio::select! {
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => {
                let _ = first.done.send(Err(StoreError::Shutdown));
                break;
            }
        };
        let mut bytes = first.tx.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_TXS && bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(pending) => {
                    bytes += pending.tx.encoded_len();
                    batch.push(pending);
                }
                Err(_) => break,
            }
        }
        let (raft, commit_latency) = (raft.clone(), commit_latency.clone());
        tokio::spawn(async move {
            commit(&raft, batch, &commit_latency).await;
            drop(permit);
        });
    }
    queue.close();
    while let Ok(pending) = queue.try_recv() {
        let _ = pending.done.send(Err(StoreError::Shutdown));
    }
}

/// Proposes `batch` as one entry and tells each caller its transaction's result.
async fn commit(raft: &Raft<TypeConfig>, batch: Vec<Pending>, commit_latency: &Histogram) {
    let (transactions, waiters): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.tx, p.done)).unzip();
    let count = transactions.len();
    let proposal = Proposal { transactions };
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(COMMIT_TIMEOUT, raft.client_write(proposal)).await;
    if matches!(outcome, Ok(Ok(_))) {
        commit_latency.observe(started.elapsed().as_secs_f64());
    }
    let results: Vec<Result<(), StoreError>> = match outcome {
        Ok(Ok(response)) => {
            tracing::debug!(
                log.index = response.log_id.index,
                txs = count,
                "proposal applied"
            );
            let results = response.data.results;
            if results.len() == count {
                results
                    .into_iter()
                    .map(|r| r.map_err(StoreError::from))
                    .collect()
            } else {
                let message = format!("{} results for {count} transactions", results.len());
                (0..count)
                    .map(|_| Err(StoreError::Raft(message.clone())))
                    .collect()
            }
        }
        Ok(Err(error)) => {
            let error = store_error(error);
            tracing::debug!(txs = count, %error, "proposal refused");
            (0..count).map(|_| Err(clone_error(&error))).collect()
        }
        Err(_) => {
            tracing::warn!(txs = count, timeout = ?COMMIT_TIMEOUT, "proposal not committed in time");
            (0..count).map(|_| Err(StoreError::NoQuorum)).collect()
        }
    };
    for (done, result) in waiters.into_iter().zip(results) {
        let _ = done.send(result);
    }
}

fn store_error(error: RaftError<u64, ClientWriteError<u64, openraft::BasicNode>>) -> StoreError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => StoreError::NotLeader {
            leader: forward.leader_node.map(|node| node.addr),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            StoreError::Raft(e.to_string())
        }
        RaftError::Fatal(Fatal::Stopped) => StoreError::Shutdown,
        RaftError::Fatal(fatal) => StoreError::Raft(fatal.to_string()),
    }
}

/// The same error for every transaction of a refused batch (only the variants `store_error` makes).
fn clone_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::NotLeader { leader } => StoreError::NotLeader {
            leader: leader.clone(),
        },
        StoreError::Shutdown => StoreError::Shutdown,
        StoreError::NoQuorum => StoreError::NoQuorum,
        StoreError::Raft(message) => StoreError::Raft(message.clone()),
        other => StoreError::Raft(other.to_string()),
    }
}
