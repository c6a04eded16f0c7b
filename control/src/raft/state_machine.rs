//! The Raft state machine: committed entries applied to the [`MemoryStore`], and its snapshots.
//!
//! The applied state (last applied log id and last membership) lives in memory and in each
//! snapshot; after a restart it comes back from the snapshot file, and openraft re-applies the
//! committed entries that follow it from the log.
#![allow(
    clippy::result_large_err,
    reason = "openraft's storage traits return its large StorageError; boxing it here buys nothing"
)]

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};

use super::seal::SealKey;
use super::snapshot::SnapshotFile;
use super::{ProposalResponse, TypeConfig};
use crate::offload::in_background;
use crate::store::{MemoryStore, Tables, TablesSnapshot};

type Result<T> = std::result::Result<T, StorageError<u64>>;

pub struct StateMachine {
    memory: Arc<MemoryStore>,
    snapshots: SnapshotFile,
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, BasicNode>,
    apply_latency: prometheus_client::metrics::histogram::Histogram,
    /// The size of the last snapshot built and the time building one takes.
    snapshot_bytes: Gauge,
    snapshot_latency: Histogram,
}

impl StateMachine {
    /// Loads the snapshot in `dir`, sealed with `key`, if any, into `memory`. Blocking: call it
    /// off the runtime.
    pub fn open(dir: &Path, memory: Arc<MemoryStore>, key: SealKey) -> Result<Self> {
        let (snapshots, loaded) = SnapshotFile::open(dir, key)?;
        let mut machine = Self {
            memory,
            snapshots,
            last_applied: None,
            last_membership: StoredMembership::default(),
            apply_latency: prometheus_client::metrics::histogram::Histogram::new(
                crate::metrics::latency_buckets(),
            ),
            snapshot_bytes: Gauge::default(),
            snapshot_latency: Histogram::new(crate::metrics::latency_buckets()),
        };
        if let Some((meta, data)) = loaded {
            machine.restore(&meta, &data)?;
            tracing::info!(
                snapshot.id = %meta.snapshot_id,
                last_applied = ?meta.last_log_id.map(|l| l.index),
                "store restored from snapshot"
            );
        }
        Ok(machine)
    }

    /// Records the time each committed entry takes to apply into `histogram`.
    pub fn timed(mut self, histogram: prometheus_client::metrics::histogram::Histogram) -> Self {
        self.apply_latency = histogram;
        self
    }

    /// Records each snapshot's size into `bytes` and the time building it takes into `latency`.
    pub fn measured(mut self, bytes: Gauge, latency: Histogram) -> Self {
        self.snapshot_bytes = bytes;
        self.snapshot_latency = latency;
        self
    }

    fn restore(&mut self, meta: &SnapshotMeta<u64, BasicNode>, data: &[u8]) -> Result<()> {
        let tables = Tables::decode(data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.install(meta, tables);
        Ok(())
    }

    fn install(&mut self, meta: &SnapshotMeta<u64, BasicNode>, tables: Tables) {
        self.memory.restore(tables);
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResponse>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let results = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(proposal) => {
                    let started = std::time::Instant::now();
                    let results = self.memory.apply(entry.log_id.index, proposal);
                    self.apply_latency.observe(started.elapsed().as_secs_f64());
                    results
                }
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            responses.push(ProposalResponse { results });
        }
        Ok(responses)
    }

    /// Captures the state now, between two applies; encoding and writing happen in the builder.
    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            snapshot_bytes: self.snapshot_bytes.clone(),
            snapshot_latency: self.snapshot_latency.clone(),
            started: std::time::Instant::now(),
            snapshots: self.snapshots.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            data: self.memory.snapshot(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        // Decode before anything is written, so that a bad snapshot changes nothing.
        let decoded = Tables::decode(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.snapshots.save(meta.clone(), Arc::new(data)).await?;
        self.install(meta, decoded);
        tracing::info!(
            snapshot.id = %meta.snapshot_id,
            last_applied = ?meta.last_log_id.map(|l| l.index),
            "snapshot installed"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        self.snapshots.current().await
    }
}

/// The store's state at one applied log id, waiting to be encoded and written.
pub struct SnapshotBuilder {
    snapshot_bytes: Gauge,
    snapshot_latency: Histogram,
    /// When the state was captured: building counts from there.
    started: std::time::Instant,
    snapshots: SnapshotFile,
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, BasicNode>,
    data: TablesSnapshot,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let snapshot_id = match self.last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term,
                id.index,
                crate::store::now_nanos()
            ),
            None => format!("0-0-{}", crate::store::now_nanos()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        // A hundred megabytes at scale: encoded off the runtime's threads, which serve the
        // dispatcher's sessions meanwhile, and behind them when the cores are busy.
        let tables = std::mem::take(&mut self.data);
        let data = in_background("mesh-snapshot", move || tables.encode_to_vec())
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let data = Arc::new(data);
        self.snapshots.save(meta.clone(), data.clone()).await?;
        let data = Arc::unwrap_or_clone(data);
        self.snapshot_bytes
            .set(i64::try_from(data.len()).unwrap_or(i64::MAX));
        self.snapshot_latency
            .observe(self.started.elapsed().as_secs_f64());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
