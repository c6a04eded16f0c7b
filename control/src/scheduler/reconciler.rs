//! The leader's scheduling loop: watches the store, batches what changed, commits the decisions.
//!
//! A pass decides at most [`WRITES_IN_FLIGHT`] batches of [`SCHEDULE_BATCH`] tasks and commits
//! them in a transaction per batch, proposed together (they share the Raft round trips); with
//! more waiting, the loop yields and goes on with the next batches, so that a hundred thousand
//! pending tasks never make one giant write nor keep the store's lock for long. Reads are in place: a
//! pass copies only the tasks it decides. The nodes' snapshots ([`NodeInfo`]) are kept between
//! passes and brought up to date from the store's events, so a pass costs its batch times the
//! nodes, not every task in the store: a node's is rebuilt (from the store's index of the tasks
//! on it) only when the node itself changed, and all of them only at start, after a reset or
//! after missed events. Rebuilding them all reads every task (a million at scale, seconds of
//! work): it is done [`REBUILD_TASKS`] tasks' worth of nodes per hold of the store's lock, and
//! nothing is decided until every node's snapshot is whole again.

use mesh_proto::{Node, Task, TaskState};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use super::node_info::{NodeInfo, holds_resources};
use super::pipeline::{Decision, schedule};
use super::queue::Queue;
use crate::limits::WRITES_IN_FLIGHT;
use crate::store::{Event, Read, ReadTx, Store, StoreError, StoreObject, WriteTx, now_nanos};

/// How long the store must stay quiet before a batch is decided.
const QUIET: Duration = Duration::from_millis(20);
/// The longest a batch waits for the store to go quiet.
const MAX_BATCH_WAIT: Duration = Duration::from_millis(50);
/// Delay before retrying after a commit that conflicted with another write.
const CONFLICT_RETRY: Duration = Duration::from_millis(20);
/// Delay before retrying after a commit that failed otherwise (no quorum, lost leadership, ...).
const ERROR_RETRY: Duration = Duration::from_secs(1);

/// About how many tasks' worth of node snapshots one hold of the store's lock rebuilds (at least
/// one node's): at a million tasks, rebuilding every node at once held the lock for 1.6–5.2 s,
/// and every write waited (nodes registering after a leader's restart among them).
const REBUILD_TASKS: usize = 20_000;

/// Most tasks decided in one pass (and committed in one transaction).
pub const SCHEDULE_BATCH: usize = crate::limits::BATCH_WRITES;

pub const ASSIGNED_MESSAGE: &str = "scheduler assigned task to node";
pub const PENDING_MESSAGE: &str = "pending task scheduling";

/// Assigns pending tasks to nodes; run by the leader only.
pub struct Scheduler {
    store: Store,
    /// [`REBUILD_TASKS`], but in tests.
    rebuild_budget: usize,
}

/// What the next pass must look at.
#[derive(Debug, Default)]
struct Work {
    /// Tasks to decide for: new or changed pending tasks.
    queued: Queue,
    /// Pending tasks no node could take, retried when nodes or free capacity change.
    unschedulable: BTreeSet<String>,
    retry_unschedulable: bool,
    /// Consider every pending task (at start, after a reset or after missed events).
    rescan: bool,
    /// No pass before this instant (set after a failed commit).
    not_before: Option<Instant>,
    /// Every node's snapshot as of the events observed so far.
    nodes: BTreeMap<String, NodeInfo>,
    /// Nodes whose snapshot is rebuilt before the next decisions (they changed, appeared or
    /// went, or every node's is being rebuilt).
    rebuild: BTreeSet<String>,
    /// Rebuild every node's snapshot at the next pass.
    rebuild_all: bool,
}

impl Scheduler {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            rebuild_budget: REBUILD_TASKS,
        }
    }

    /// Schedules until `shutdown` turns true or its sender is dropped.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        self.run_loop(shutdown)
            .instrument(info_span!("scheduler"))
            .await;
    }

    async fn run_loop(self, mut shutdown: watch::Receiver<bool>) {
        let (queued, mut events) = self.store.memory().view_and_watch(pending);
        let mut work = Work {
            queued,
            rebuild_all: true,
            ..Default::default()
        };
        debug!(tasks = work.queued.len(), "scheduler started");
        'run: loop {
            if *shutdown.borrow() {
                break;
            }
            let due = work.not_before.is_none_or(|at| Instant::now() >= at);
            if due && work.has_work() {
                work.not_before = None;
                if !self.pass(&mut work, &mut events).await {
                    break 'run;
                }
                if work.has_work() && work.not_before.is_none() {
                    // More than a batch waits: let the rest of the manager run, and go on.
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            let retry = async {
                match work.not_before {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
                received = events.recv() => {
                    if !work.receive(received) {
                        break;
                    }
                }
                () = retry => continue,
            }
            // Let the store go quiet so that one pass decides the whole burst.
            let deadline = Instant::now() + MAX_BATCH_WAIT;
            loop {
                let wait = QUIET.min(deadline.saturating_duration_since(Instant::now()));
                if wait.is_zero() {
                    break;
                }
                match tokio::time::timeout(wait, events.recv()).await {
                    Ok(received) => {
                        if !work.receive(received) {
                            break 'run;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        debug!("scheduler stopped");
    }

    /// Decides for a batch of the queued tasks against a fresh view and commits it in one
    /// transaction; the rest stay queued. False when the store is gone.
    async fn pass(&self, work: &mut Work, events: &mut broadcast::Receiver<Event>) -> bool {
        let mut open = true;
        let batch = self.store.view(|tx| {
            // Every event of the state in view is in the channel (they are sent under the write
            // lock): taking them in now brings the nodes' snapshots to exactly this view.
            loop {
                match events.try_recv() {
                    Ok(event) => work.observe(&event),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(missed)) => {
                        warn!(missed, "scheduler fell behind the store; rescanning");
                        work.rescan = true;
                        work.rebuild_all = true;
                    }
                    Err(TryRecvError::Closed) => {
                        open = false;
                        break;
                    }
                }
            }
            if std::mem::take(&mut work.retry_unschedulable) {
                let queued = &mut work.queued;
                work.unschedulable.retain(|id| match tx.peek::<Task>(id) {
                    Some(task) => {
                        queued.insert(&task.service_id, id);
                        true
                    }
                    None => false,
                });
            }
            if !work.refresh_nodes(tx, self.rebuild_budget) {
                // Some nodes' snapshots are still to be built: nothing is decided on the others
                // alone. The lock is let go; the next pass builds more.
                return Vec::new();
            }
            let rescan = std::mem::take(&mut work.rescan);
            if rescan {
                // Every pending task is queued again; whatever is no longer pending is forgotten.
                work.queued = pending(tx);
                let queued = &work.queued;
                work.unschedulable.retain(|id| queued.contains(id));
            }
            let mut batch = Vec::new();
            for id in work.queued.take(SCHEDULE_BATCH * WRITES_IN_FLIGHT) {
                match tx.peek::<Task>(&id) {
                    Some(task) if is_schedulable(task) => batch.push(task.clone()),
                    _ => {
                        work.unschedulable.remove(&id);
                    }
                }
            }
            batch.sort_by(|a, b| {
                (&a.service_id, a.slot, &a.id).cmp(&(&b.service_id, b.slot, &b.id))
            });
            batch
        });
        if !open {
            return false;
        }
        if batch.is_empty() {
            return true;
        }

        let decisions = schedule(work.nodes.values_mut(), &batch);
        let read_at: HashMap<&str, u64> =
            batch.iter().map(|t| (t.id.as_str(), t.version())).collect();
        let read_at = &read_at;
        // A transaction per batch of decisions, proposed together: they share the Raft round
        // trips. Collected first: a stream over the lazy map would not be provably `Send`.
        let writes: Vec<_> = decisions
            .chunks(SCHEDULE_BATCH)
            .map(|decisions| async move {
                let committed = self
                    .store
                    .update(|tx| write_decisions(tx, decisions, read_at))
                    .await;
                (decisions, committed)
            })
            .collect();
        let results = futures::future::join_all(writes).await;

        let service_of: HashMap<&str, &str> = batch
            .iter()
            .map(|t| (t.id.as_str(), t.service_id.as_str()))
            .collect();
        for (decisions, committed) in results {
            match committed {
                Ok(outcome) => {
                    for decision in outcome.decided {
                        match decision {
                            Decision::Assign { task_id, node_id } => {
                                debug!(task.id = %task_id, node.id = %node_id, "task assigned");
                                work.unschedulable.remove(task_id);
                            }
                            Decision::NoSuitableNode { task_id, reason } => {
                                debug!(task.id = %task_id, %reason, "no suitable node");
                                work.unschedulable.insert(task_id.clone());
                            }
                        }
                    }
                    for id in &outcome.changed {
                        if let Some(service_id) = service_of.get(id.as_str()) {
                            work.queued.insert(service_id, id);
                        }
                    }
                }
                Err(err) => {
                    let delay = if matches!(err, StoreError::Conflict { .. }) {
                        debug!(error = %err, "scheduling decisions conflicted; retrying");
                        CONFLICT_RETRY
                    } else {
                        warn!(error = %err, "scheduling decisions not committed; retrying");
                        ERROR_RETRY
                    };
                    for decision in decisions {
                        let id = decision.task_id();
                        if let Some(service_id) = service_of.get(id) {
                            work.queued.insert(service_id, id);
                        }
                    }
                    let at = Instant::now() + delay;
                    work.not_before = Some(work.not_before.map_or(at, |t| t.max(at)));
                }
            }
        }
        true
    }
}

/// Writes `decisions` (made against the tasks as they were at `read_at`, by id) until `tx`
/// holds a batch; what is left, or changed since, is decided again on the next pass.
fn write_decisions<'d>(
    tx: &mut WriteTx<'_>,
    decisions: &'d [Decision],
    read_at: &HashMap<&str, u64>,
) -> Result<Outcome<'d>, StoreError> {
    let mut outcome = Outcome::default();
    for decision in decisions {
        let id = decision.task_id();
        if tx.is_full() {
            // Decided, but not written in this batch: decide again in the next.
            outcome.changed.push(id.to_string());
            continue;
        }
        let Some(current) = tx.get::<Task>(id) else {
            continue;
        };
        if read_at.get(id) != Some(&current.version()) || !is_schedulable(&current) {
            // Changed since the view: decide again on the next pass.
            if is_schedulable(&current) {
                outcome.changed.push(id.to_string());
            }
            continue;
        }
        if let Some(task) = apply_decision(current, decision) {
            tx.update(task)?;
        }
        outcome.decided.push(decision);
    }
    Ok(outcome)
}

/// What one commit did, reported once it is applied.
#[derive(Default)]
struct Outcome<'a> {
    decided: Vec<&'a Decision>,
    changed: Vec<String>,
}

/// The task as the decision leaves it, or `None` when it needs no write.
fn apply_decision(mut task: Task, decision: &Decision) -> Option<Task> {
    let status = task.status.get_or_insert_with(Default::default);
    match decision {
        Decision::Assign { node_id, .. } => {
            status.state = TaskState::Assigned as i32;
            status.message = ASSIGNED_MESSAGE.to_string();
            status.err.clear();
            status.scheduling_reason.clear();
            status.timestamp = now_nanos();
            task.node_id = node_id.clone();
            Some(task)
        }
        Decision::NoSuitableNode { reason, .. } => {
            if status.err == *reason
                && status.scheduling_reason == *reason
                && status.message == PENDING_MESSAGE
            {
                return None;
            }
            status.message = PENDING_MESSAGE.to_string();
            status.err = reason.clone();
            status.scheduling_reason = reason.clone();
            Some(task)
        }
    }
}

/// A node's snapshot counting the tasks that hold resources on it, read in place, and how many
/// tasks the store has on the node.
fn node_info(tx: &ReadTx<'_>, node: &Node) -> (NodeInfo, usize) {
    let tasks = tx.tasks_on_node(&node.id);
    let count = tasks.len();
    (NodeInfo::new(node.clone(), tasks), count)
}

/// Every pending task, queued.
fn pending(tx: &ReadTx<'_>) -> Queue {
    let mut queue = Queue::default();
    for task in tx.iter::<Task>().filter(|t| is_schedulable(t)) {
        queue.insert(&task.service_id, &task.id);
    }
    queue
}

/// A task waiting for a node: pending, and still meant to run.
fn is_schedulable(task: &Task) -> bool {
    task.status.as_ref().map_or(0, |s| s.state) == TaskState::Pending as i32
        && task.desired_state <= TaskState::Running as i32
}

/// A task that counts on its node for spread and replicas per node.
fn is_active_on_node(task: &Task) -> bool {
    holds_resources(task) && task.desired_state <= TaskState::Running as i32
}

impl Work {
    /// Rebuilds from `tx` the snapshots of the nodes that changed (every node's when needed), at
    /// least one and no more than about `budget` tasks' worth; true when none is left to build.
    /// A node not yet rebuilt has no snapshot: the events until then change nothing of it, and it
    /// is built from a later view that holds them.
    fn refresh_nodes(&mut self, tx: &ReadTx<'_>, budget: usize) -> bool {
        if std::mem::take(&mut self.rebuild_all) {
            self.nodes.clear();
            self.rebuild = tx.iter::<Node>().map(|node| node.id.clone()).collect();
        }
        let mut read = 0;
        while read < budget
            && let Some(id) = self.rebuild.pop_first()
        {
            match tx.peek::<Node>(&id) {
                Some(node) => {
                    let (info, tasks) = node_info(tx, node);
                    self.nodes.insert(id, info);
                    read += tasks.max(1);
                }
                None => {
                    self.nodes.remove(&id);
                }
            }
        }
        self.rebuild.is_empty()
    }

    /// Accounts for a task's change in its nodes' snapshots: what it held as it was, what it
    /// holds as it is.
    fn account(&mut self, old: Option<&Task>, new: Option<&Task>) {
        if let Some(old) = old.filter(|t| holds_resources(t))
            && let Some(info) = self.nodes.get_mut(&old.node_id)
        {
            info.remove_task(old);
        }
        if let Some(new) = new.filter(|t| holds_resources(t))
            && let Some(info) = self.nodes.get_mut(&new.node_id)
        {
            info.add_task(new);
        }
    }

    fn has_work(&self) -> bool {
        self.rescan
            || !self.queued.is_empty()
            || (self.retry_unschedulable && !self.unschedulable.is_empty())
    }

    /// Takes in one receive from the watch; false when the store is gone.
    fn receive(&mut self, received: Result<Event, RecvError>) -> bool {
        match received {
            Ok(event) => self.observe(&event),
            Err(RecvError::Lagged(missed)) => {
                warn!(missed, "scheduler fell behind the store; rescanning");
                self.rescan = true;
                self.rebuild_all = true;
            }
            Err(RecvError::Closed) => return false,
        }
        true
    }

    fn observe(&mut self, event: &Event) {
        if matches!(event, Event::Reset) {
            self.rescan = true;
            self.rebuild_all = true;
        } else if let Some(task) = event.as_a::<Task>() {
            if event.is_delete() {
                self.account(Some(task), None);
            } else {
                self.account(event.old_as::<Task>(), Some(task));
            }
            self.observe_task(event, task);
        } else if let Some(node) = event.as_a::<Node>() {
            self.rebuild.insert(node.id.clone());
            let changed = match event.old_as::<Node>() {
                Some(old) => placement_changed(old, node),
                None => !event.is_delete(),
            };
            self.retry_unschedulable |= changed;
        }
    }

    fn observe_task(&mut self, event: &Event, task: &Task) {
        if event.is_delete() {
            self.queued.remove(&task.id);
            self.unschedulable.remove(&task.id);
            self.retry_unschedulable |= holds_resources(task);
            return;
        }
        let old = event.old_as::<Task>();
        if is_schedulable(task) {
            let relevant = old.is_none_or(|old| {
                !is_schedulable(old)
                    || old.spec != task.spec
                    || old.node_id != task.node_id
                    || old.desired_state != task.desired_state
            });
            if relevant {
                self.queued.insert(&task.service_id, &task.id);
            }
        } else {
            self.unschedulable.remove(&task.id);
        }
        if let Some(old) = old {
            let freed = (holds_resources(old) && !holds_resources(task))
                || (is_active_on_node(old) && !is_active_on_node(task));
            self.retry_unschedulable |= freed;
        }
    }
}

/// Whether a node change can make a pending task placeable (heartbeat-only fields excluded).
fn placement_changed(old: &Node, new: &Node) -> bool {
    let state = |n: &Node| n.status.as_ref().map(|s| s.state);
    old.spec != new.spec
        || old.description != new.description
        || old.role != new.role
        || state(old) != state(new)
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
