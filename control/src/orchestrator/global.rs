//! The global orchestrator: one task of each global service on every eligible node, restarted
//! in place by the restart policy, removed from nodes that stop being eligible.

use mesh_proto::{Node, NodeAvailability, Service, Task, TaskState};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use super::driver::{self, Reconcile};
use super::plan::{self, Plan};
use super::restart::RestartHistory;
use super::task::{self, SlotKey};
use super::update;
use crate::scheduler::constraint::{Constraint, matches_all};
use crate::store::{Event, Read, ReadTx, Store};

/// What a node means for a global service's task on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    /// Runs a task: ready (not down), active, constraints met.
    Run,
    /// Paused: keeps the task it has, gets no new one.
    Keep,
    /// Down, drained, gone or not matching the constraints: its task is shut down.
    Stop,
}

/// How `node` stands for a service with `constraints` (`None`: constraints that do not parse,
/// which no node meets).
pub fn eligibility(node: Option<&Node>, constraints: Option<&[Constraint]>) -> Eligibility {
    let Some(node) = node else {
        return Eligibility::Stop;
    };
    let matches = constraints.is_some_and(|c| matches_all(c, node));
    if task::is_down(node) || !matches {
        return Eligibility::Stop;
    }
    match task::availability(node) {
        NodeAvailability::Active => Eligibility::Run,
        NodeAvailability::Pause => Eligibility::Keep,
        NodeAvailability::Drain => Eligibility::Stop,
    }
}

/// Plans one global service against its tasks and the cluster's nodes.
pub fn plan_service(
    service: &Service,
    tasks: Vec<&Task>,
    nodes: &[Node],
    history: &RestartHistory,
    now: i64,
) -> Plan {
    let constraints = match Constraint::parse_all(task::constraints(service)) {
        Ok(c) => Some(c),
        Err(err) => {
            warn!(service.id = %service.id, error = %err, "service constraints do not parse");
            None
        }
    };
    let by_id: HashMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut plan = Plan::default();
    let slots = task::group_by_slot(tasks);
    let mut current: Vec<(SlotKey, Cow<'_, Task>, &[&Task])> = Vec::new();
    let mut served: BTreeSet<&str> = BTreeSet::new();
    for (key, group) in slots.iter() {
        let live: Vec<&Task> = group.iter().copied().filter(|t| task::is_live(t)).collect();
        let Some((newest, older)) = live.split_last() else {
            continue;
        };
        let SlotKey::Node(node_id) = key else {
            // A replica-slot task does not belong to a global service.
            live.iter()
                .for_each(|t| plan.set_desired(t, TaskState::Shutdown));
            continue;
        };
        older
            .iter()
            .filter(|t| !update::keep_until_replaced(service.spec_version, newest, t))
            .for_each(|t| plan.set_desired(t, TaskState::Shutdown));
        let node = by_id.get(node_id.as_str()).copied();
        match eligibility(node, constraints.as_deref()) {
            Eligibility::Stop => plan.set_desired(newest, TaskState::Shutdown),
            Eligibility::Keep => {
                served.insert(node_id);
            }
            Eligibility::Run => {
                served.insert(node_id);
                if update::may_start(newest, group, &|_| false) {
                    plan.set_desired(newest, TaskState::Running);
                }
                let live = plan.restart_if_needed(service, newest, group, false, history, now);
                current.push((key.clone(), live, group));
            }
        }
    }
    plan.advance_update(service, &current, now);

    for node in nodes {
        if !served.contains(node.id.as_str())
            && eligibility(Some(node), constraints.as_deref()) == Eligibility::Run
        {
            plan.create(task::new_task(service, 0, Some(&node.id)));
        }
    }
    plan
}

fn plan_from_store(tx: &impl Read, id: &str, history: &RestartHistory, now: i64) -> Plan {
    let tasks: Vec<&Task> = tx.tasks_of_service(id);
    let Some(service) = tx.get::<Service>(id) else {
        return Plan::remove_all(&tasks, |t| t.slot == 0);
    };
    if !task::is_global(&service) {
        return Plan::default();
    }
    plan_service(&service, tasks, &tx.list::<Node>(), history, now)
}

/// Reconciles global services (see the module doc).
pub struct GlobalOrchestrator {
    store: Store,
    history: RestartHistory,
    dirty: BTreeSet<String>,
    /// Services whose rolling update waits for a delay or a monitor period.
    timers: plan::Timers,
    /// A node changed: every global service must be looked at.
    nodes_changed: bool,
    /// The last service of the last flush's share ([`plan::next_share`]).
    cursor: Option<String>,
}

impl GlobalOrchestrator {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            history: RestartHistory::default(),
            dirty: BTreeSet::new(),
            timers: plan::Timers::default(),
            nodes_changed: false,
            cursor: None,
        }
    }

    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        driver::drive(store, shutdown, self).await;
    }
}

impl Reconcile for GlobalOrchestrator {
    const NAME: &'static str = "global";

    fn mark_all(&mut self, tx: &ReadTx<'_>) {
        self.nodes_changed = true;
        self.dirty.clear();
        for task in tx.iter::<Task>() {
            if task.slot == 0
                && task::desired(task) < TaskState::Remove
                && tx.peek::<Service>(&task.service_id).is_none()
            {
                self.dirty.insert(task.service_id.clone());
            }
        }
    }

    fn observe(&mut self, event: &Event) {
        if let Some(service) = event.as_a::<Service>() {
            if task::is_global(service) {
                self.dirty.insert(service.id.clone());
                if event.is_delete() {
                    self.history.forget_service(&service.id);
                }
            }
        } else if let Some(task) = event.as_a::<Task>() {
            if task.slot == 0 && task::plan_changed(event.old_as::<Task>(), task) {
                self.dirty.insert(task.service_id.clone());
            }
        } else if event.as_a::<Node>().is_some() {
            self.nodes_changed = true;
        }
    }

    async fn flush(&mut self, store: &Store) -> Option<Instant> {
        if std::mem::take(&mut self.nodes_changed) {
            let global = store.view(|tx| tx.find::<Service>(task::is_global));
            self.dirty.extend(global.into_iter().map(|s| s.id));
        }
        self.timers.take_due(&mut self.dirty);
        if self.dirty.is_empty() {
            return self.timers.next_wake();
        }
        let services = plan::next_share(&mut self.dirty, &mut self.cursor);
        plan::reconcile_services(
            store,
            Self::NAME,
            &services,
            &mut self.history,
            |tx, id, history, now| plan_from_store(tx, id, history, now),
        )
        .await
        .requeue(&mut self.dirty, &mut self.timers)
    }
}
