//! What the control plane measures for `meshd --metrics-addr`: the instruments its code
//! records into as things happen ([`ControlMetrics`]: commit and apply latency, leader
//! changes, heartbeat misses), and what a scrape reads of a running manager at that moment
//! ([`ManagerSample`]: tasks by state, Raft term and indexes, agent sessions). The agent's
//! metrics module registers both and serves them.
//!
//! Labels carry states only: never an id, a session, a token or anything secret.

use std::collections::BTreeMap;

use mesh_proto::TaskState;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::events::task_state_name;
use crate::manager::Manager;
use crate::store::MemoryStore;

/// Latency buckets from 100 µs to about 13 s, doubling.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 18)
}

/// The control plane's instruments. Clones share them: one set per daemon, kept across the
/// manager's restarts (a promotion, a demotion), registered once.
#[derive(Debug, Clone)]
pub struct ControlMetrics {
    /// From a batch of transactions proposed to its entry committed and applied here.
    pub commit_latency: Histogram,
    /// Applying one committed entry to the in-memory store.
    pub apply_latency: Histogram,
    /// Times this manager saw a new leader (or none) take over.
    pub leader_changes: Counter,
    /// Agent sessions ended for missed heartbeats (their node is then marked down).
    pub heartbeat_misses: Counter,
    /// Times the heartbeat monitor looked for silent agents a second or more late (the leader
    /// held up), by how long it had not looked.
    pub monitor_stalls: Histogram,
    /// Entries appended to this manager's Raft log, and their bytes as written (sealed).
    pub log_entries: Counter,
    pub log_bytes: Counter,
    /// The size of the last snapshot this manager built (its encoded store), 0 before one.
    pub snapshot_bytes: Gauge,
    /// Building a snapshot: encoding the store and writing the file.
    pub snapshot_latency: Histogram,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        Self {
            commit_latency: Histogram::new(latency_buckets()),
            apply_latency: Histogram::new(latency_buckets()),
            leader_changes: Counter::default(),
            heartbeat_misses: Counter::default(),
            monitor_stalls: Histogram::new(latency_buckets()),
            log_entries: Counter::default(),
            log_bytes: Counter::default(),
            snapshot_bytes: Gauge::default(),
            snapshot_latency: Histogram::new(latency_buckets()),
        }
    }
}

impl ControlMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "raft_commit_latency",
            "Time from proposing a batch of store writes to its Raft entry applied on this manager",
            Unit::Seconds,
            self.commit_latency.clone(),
        );
        registry.register_with_unit(
            "raft_apply_latency",
            "Time to apply one committed Raft entry to this manager's store",
            Unit::Seconds,
            self.apply_latency.clone(),
        );
        registry.register(
            "raft_leader_changes",
            "Leader changes this manager has seen",
            self.leader_changes.clone(),
        );
        registry.register(
            "dispatcher_heartbeat_misses",
            "Agent sessions this manager ended because their heartbeats stopped",
            self.heartbeat_misses.clone(),
        );
        registry.register_with_unit(
            "dispatcher_monitor_stalls",
            "Times the leader's heartbeat monitor looked for silent agents over a second late (the leader held up), by how long it had not looked",
            Unit::Seconds,
            self.monitor_stalls.clone(),
        );
        registry.register(
            "raft_log_entries",
            "Entries appended to this manager's Raft log",
            self.log_entries.clone(),
        );
        registry.register_with_unit(
            "raft_log",
            "Bytes of the entries appended to this manager's Raft log, as written (sealed)",
            Unit::Bytes,
            self.log_bytes.clone(),
        );
        registry.register_with_unit(
            "raft_snapshot",
            "Size of the last snapshot this manager built (the encoded store)",
            Unit::Bytes,
            self.snapshot_bytes.clone(),
        );
        registry.register_with_unit(
            "raft_snapshot_latency",
            "Time to build one snapshot: encode the store and write the file",
            Unit::Seconds,
            self.snapshot_latency.clone(),
        );
    }
}

/// A manager's state at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagerSample {
    /// Every task state (`running`, `failed`, …) with how many tasks are in it; states without
    /// tasks are there with 0, so that a series does not vanish.
    pub tasks_by_state: BTreeMap<String, u64>,
    pub raft_term: u64,
    /// The highest index this manager knows committed: it applies entries as they commit.
    pub raft_commit_index: u64,
    pub raft_last_log_index: u64,
    pub is_leader: bool,
    /// Agent sessions this manager serves (only the leader serves any).
    pub agent_sessions: u64,
}

/// Counts tasks by their observed state.
/// Task counts by state number, by state name, with every state there (at 0 if none).
fn named_states(by_number: &BTreeMap<i32, u64>) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Remove,
        TaskState::Orphaned,
    ]
    .into_iter()
    .map(|s| (task_state_name(s as i32), 0))
    .collect();
    for (state, count) in by_number {
        *counts.entry(task_state_name(*state)).or_default() += count;
    }
    counts
}

/// The store's tasks by state, from the counts it keeps: no task is read.
pub fn count_tasks(memory: &MemoryStore) -> BTreeMap<String, u64> {
    memory.view_promptly(|tx| named_states(&tx.task_counts().by_state))
}

impl ManagerSample {
    /// Reads `manager` now. The store is read briefly, without copying a task.
    pub fn of(manager: &Manager) -> Self {
        let tasks_by_state = count_tasks(manager.store().memory());
        let raft = manager.raft().raft().metrics().borrow().clone();
        Self {
            tasks_by_state,
            raft_term: raft.current_term,
            raft_commit_index: raft.last_applied.map_or(0, |l| l.index),
            raft_last_log_index: raft.last_log_index.unwrap_or(0),
            is_leader: raft.current_leader == Some(raft.id),
            agent_sessions: manager.dispatcher().session_count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::{Task, TaskStatus};

    use super::*;

    #[test]
    fn tasks_are_counted_by_state_and_every_state_is_there() {
        let task = |state: TaskState| Task {
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let tasks = [
            task(TaskState::Running),
            task(TaskState::Running),
            task(TaskState::Failed),
            Task::default(),
        ];
        let counts = named_states(&crate::store::TaskCounts::of(&tasks).by_state);
        assert_eq!(counts.len(), 14, "{counts:?}");
        assert_eq!(counts["running"], 2);
        assert_eq!(counts["failed"], 1);
        assert_eq!(counts["new"], 1, "a task without a status is new");
        assert_eq!(counts["orphaned"], 0);
    }
}
