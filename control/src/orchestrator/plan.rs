//! The writes one reconcile pass of a service decided, and how the service orchestrators apply
//! them: one transaction per service, proposed concurrently so that Raft batches them while a
//! conflict on one service does not hold back the others.
//!
//! A plan is a list of steps, each applied whole (a restart's shutdown and its replacement go
//! together). A transaction takes steps until it holds a batch ([`WriteTx::is_full`]); a service
//! with steps left is reconciled again after the commit, from the store as it then is.

use futures::StreamExt;
use mesh_proto::{Service, Task, TaskState};
use std::borrow::Cow;
use std::collections::BTreeSet;
use tokio::time::Instant;

use super::driver::RETRY_DELAY;
use super::restart::{self, RestartHistory};
use super::task::{self, SlotKey};
use super::update::{self, SlotView};
use crate::limits::BATCH_WRITES;
use crate::store::{Store, StoreError, WriteTx, now_nanos};
use mesh_proto::UpdateStatus;

/// Writes that belong together.
#[derive(Debug)]
struct Step {
    /// Existing tasks with a new desired state, each as read (so its version is checked).
    update: Option<Task>,
    create: Option<Task>,
    /// A restart: the slot and the spec version of the task it replaced.
    restart: Option<(SlotKey, u64)>,
}

/// Task writes for one service: at most a batch of steps ([`BATCH_WRITES`]); what did not fit is
/// planned again on the next pass.
#[derive(Debug, Default)]
pub struct Plan {
    steps: Vec<Step>,
    /// Steps were left out because the plan was full.
    truncated: bool,
    /// The service's update status changes (and with `rollback`, its spec goes back).
    status: Option<(Service, UpdateStatus)>,
    rollback: bool,
    /// When the service's update wants another look without any event (Unix ns).
    wake_at: Option<i64>,
}

/// What applying a plan did.
pub(crate) struct Applied {
    /// Restarts made: slot and the spec version of the task that was replaced.
    restarts: Vec<(SlotKey, u64)>,
    /// Steps were left for the next transaction.
    more: bool,
    wake_at: Option<i64>,
    /// Each task written (updated or created), by id, as planning reads it.
    written: Vec<(String, task::Written)>,
}

impl Plan {
    fn is_full(&self) -> bool {
        self.steps.len() >= BATCH_WRITES
    }

    fn push(&mut self, step: Step) {
        if self.is_full() {
            self.truncated = true;
        } else {
            self.steps.push(step);
        }
    }

    pub fn set_desired(&mut self, task: &Task, desired: TaskState) {
        if task::desired(task) != desired {
            if self.is_full() {
                self.truncated = true;
                return;
            }
            self.push(Step {
                update: Some(task::with_desired(task, desired)),
                create: None,
                restart: None,
            });
        }
    }

    pub fn create(&mut self, task: Task) {
        self.push(Step {
            update: None,
            create: Some(task),
            restart: None,
        });
    }

    /// Marks writes the service needs as left out of this plan (beyond its batch): it is planned
    /// again once this plan's writes are committed.
    pub fn leave_more(&mut self) {
        self.truncated = true;
    }

    /// Every task of a deleted service selected by `mine`, set to desired REMOVE for the reaper.
    pub fn remove_all(tasks: &[&Task], mine: impl Fn(&Task) -> bool) -> Self {
        let mut plan = Self::default();
        for task in tasks.iter().filter(|t| mine(t)) {
            if task::desired(task) < TaskState::Remove {
                plan.set_desired(task, TaskState::Remove);
            }
        }
        plan
    }

    /// Restarts `task` (whose slot's tasks are `group`) if it needs it and its policy allows;
    /// returns the slot's live task afterwards: the replacement, or `task` itself (borrowed: a
    /// pass over a hundred thousand slots copies none of them).
    pub fn restart_if_needed<'t>(
        &mut self,
        service: &Service,
        task: &'t Task,
        group: &[&Task],
        node_down: bool,
        history: &RestartHistory,
        now: i64,
    ) -> Cow<'t, Task> {
        if !restart::needs_restart(task, node_down) {
            return Cow::Borrowed(task);
        }
        if self.is_full() {
            self.truncated = true;
            return Cow::Borrowed(task);
        }
        if let Some((old, new)) =
            restart::plan_restart(service, task, group, node_down, history, now)
        {
            self.push(Step {
                update: Some(old),
                create: Some(new.clone()),
                restart: Some((task::slot_key(task), task.spec_version)),
            });
            return Cow::Owned(new);
        }
        Cow::Borrowed(task)
    }

    /// Moves a rolling update on as [`update::decide`] says at `now`. `slots` holds each slot's
    /// key, live task and history.
    pub fn advance_update(
        &mut self,
        service: &Service,
        slots: &[(SlotKey, Cow<'_, Task>, &[&Task])],
        now: i64,
    ) {
        let views: Vec<SlotView<'_>> = slots
            .iter()
            .map(|(key, live, history)| SlotView {
                key,
                live: live.as_ref(),
                history,
            })
            .collect();
        let decision = update::decide(service, &views, now);
        let order = update::Config::of(service).order;
        for key in decision.replace {
            let Some(view) = views.iter().find(|v| v.key == key) else {
                continue;
            };
            let (old, new) = update::replace(service, view.live, order);
            self.push(Step {
                update: old,
                create: Some(new),
                restart: None,
            });
        }
        if let Some(status) = decision.status {
            self.status = Some((service.clone(), status));
            self.rollback = decision.rollback;
        }
        self.wake_at = decision.wake_at;
    }

    /// The plan's writes in words, new tasks by slot (their ids are random), for tests to
    /// compare two plans.
    #[cfg(test)]
    pub(crate) fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .steps
            .iter()
            .map(|step| {
                let update = step.update.as_ref().map(|t| {
                    let desired = task::desired(t).as_str_name();
                    format!("{} to {desired}", t.id)
                });
                let create = step.create.as_ref().map(|t| {
                    let desired = task::desired(t).as_str_name();
                    format!("new in slot {} v{} {desired}", t.slot, t.spec_version)
                });
                format!("{update:?} {create:?} restart {:?}", step.restart)
            })
            .collect();
        lines.push(format!(
            "truncated {} status {:?} rollback {} wake {:?}",
            self.truncated,
            self.status.as_ref().map(|(_, status)| status),
            self.rollback,
            self.wake_at
        ));
        lines
    }

    /// Applies steps in order until `tx` holds a batch.
    fn apply(self, tx: &mut WriteTx<'_>) -> Result<Applied, StoreError> {
        if let Some((mut service, status)) = self.status {
            service.update_status = Some(status);
            if self.rollback {
                crate::api::roll_back(tx, &mut service, false)?;
            }
            tx.update(service)?;
        }
        let mut restarts = Vec::new();
        let mut written = Vec::new();
        let mut more = self.truncated;
        for step in self.steps {
            if tx.is_full() {
                more = true;
                break;
            }
            if let Some(task) = step.update {
                written.push((task.id.clone(), task::Written::of(&task)));
                tx.update(task)?;
            }
            if let Some(task) = step.create {
                written.push((task.id.clone(), task::Written::of(&task)));
                tx.create(task)?;
            }
            restarts.extend(step.restart);
        }
        Ok(Applied {
            restarts,
            more,
            wake_at: self.wake_at,
            written,
        })
    }
}

/// The services a reconcile left work for.
#[derive(Debug, Default)]
pub(crate) struct Reconciled {
    /// Whose write failed: retried after a delay.
    pub failed: BTreeSet<String>,
    /// With steps left after a full batch: reconciled again at once.
    pub more: BTreeSet<String>,
    /// Whose update wants another look at a given time (Unix ns).
    pub timers: Vec<(String, i64)>,
    /// The tasks the committed writes wrote, by id, as planning reads them.
    pub written: Vec<(String, task::Written)>,
}

impl Reconciled {
    /// Marks the services left in `dirty` again, keeps the update timers in `timers`, and says
    /// when to run next: at once when a batch was full or services were left out of the share,
    /// after [`RETRY_DELAY`] when only writes failed, or when the first timer is due.
    pub(crate) fn requeue(
        self,
        dirty: &mut BTreeSet<String>,
        timers: &mut Timers,
    ) -> Option<Instant> {
        // Services still in `dirty` were left out of this flush's share: at once too.
        let wake = if !self.more.is_empty() || !dirty.is_empty() {
            Some(Instant::now())
        } else if !self.failed.is_empty() {
            Some(Instant::now() + RETRY_DELAY)
        } else {
            None
        };
        dirty.extend(self.failed);
        dirty.extend(self.more);
        for (id, at) in self.timers {
            timers.set(id, at);
        }
        super::driver::earliest(wake, timers.next_wake())
    }
}

/// Per service, when its update wants another look (Unix ns): after a delay or a monitor period.
#[derive(Debug, Default)]
pub(crate) struct Timers(std::collections::BTreeMap<String, i64>);

impl Timers {
    fn set(&mut self, id: String, at: i64) {
        let slot = self.0.entry(id).or_insert(at);
        *slot = (*slot).min(at);
    }

    /// Moves the services whose time has come into `dirty`.
    pub(crate) fn take_due(&mut self, dirty: &mut BTreeSet<String>) {
        let now = now_nanos();
        self.0.retain(|id, at| {
            let due = *at <= now;
            if due {
                dirty.insert(id.clone());
            }
            !due
        });
    }

    /// When the first timer is due.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let at = self.0.values().min()?;
        let wait = u64::try_from(at.saturating_sub(now_nanos())).unwrap_or(0);
        Some(Instant::now() + std::time::Duration::from_nanos(wait))
    }
}

/// How many services' writes are built and proposed at once. Enough to keep the proposer's
/// entries full while others commit; few enough that a reconciler of a thousand services does
/// not hold a thousand batches of new tasks in memory at once, each waiting for its turn.
const CONCURRENT_WRITES: usize = 32;

/// Services one flush of a service orchestrator reconciles; the rest go in the next flush, at once.
/// A flush takes in no store events, and one over a thousand services, waiting for thirty rounds
/// of commits, let 65,536 events pass by: the orchestrator lagged and started over from a full
/// reconcile, again and again, while a tenth of the nodes' tasks waited for their replacements.
pub(crate) const SERVICES_PER_FLUSH: usize = 4 * CONCURRENT_WRITES;

/// Takes the share of `dirty` the next flush reconciles (see [`SERVICES_PER_FLUSH`]), going round
/// from `cursor`; [`Reconciled::requeue`] has the flush run again at once for the rest.
pub(crate) fn next_share(dirty: &mut BTreeSet<String>, cursor: &mut Option<String>) -> Vec<String> {
    super::driver::take_round(dirty, cursor, SERVICES_PER_FLUSH)
}

/// Reconciles each of `services`, planning with `planner` against the store as it is at write
/// time, [`CONCURRENT_WRITES`] at a time. Restarts made are recorded in `history`.
pub(crate) async fn reconcile_services<P>(
    store: &Store,
    reconciler: &'static str,
    services: &[String],
    history: &mut RestartHistory,
    planner: P,
) -> Reconciled
where
    P: Fn(&WriteTx<'_>, &str, &RestartHistory, i64) -> Plan + Sync,
{
    let now = now_nanos();
    let shared: &RestartHistory = history;
    let planner = &planner;
    // Collected first: a stream over the lazy map would not be provably `Send`.
    let writes: Vec<_> = services
        .iter()
        .map(|id| async move {
            let result = store
                .update(|tx| planner(tx, id, shared, now).apply(tx))
                .await;
            (id, result)
        })
        .collect();
    let results: Vec<_> = futures::stream::iter(writes)
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    let mut reconciled = Reconciled::default();
    let mut made = Vec::new();
    for (id, result) in results {
        match result {
            Ok(applied) => {
                made.extend(applied.restarts.into_iter().map(|r| (id.clone(), r)));
                if let Some(at) = applied.wake_at {
                    reconciled.timers.push((id.clone(), at));
                }
                if applied.more {
                    reconciled.more.insert(id.clone());
                }
                reconciled.written.extend(applied.written);
            }
            Err(err) => {
                super::driver::log_write_error(reconciler, &err);
                reconciled.failed.insert(id.clone());
            }
        }
    }
    for (id, (key, version)) in made {
        history.record(&id, key, version, now);
    }
    reconciled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Read as _;

    #[tokio::test]
    async fn services_are_written_a_bounded_number_at_a_time() {
        let (store, in_flight) = crate::store::slow_store();
        let services: BTreeSet<String> = (0..CONCURRENT_WRITES * 3)
            .map(|i| format!("s{i}"))
            .collect();
        let reconciled = reconcile_services(
            &store,
            "test",
            &services.iter().cloned().collect::<Vec<_>>(),
            &mut RestartHistory::default(),
            |_, id, _, _| {
                let mut plan = Plan::default();
                plan.create(Task {
                    id: format!("{id}-task"),
                    service_id: id.to_string(),
                    ..Default::default()
                });
                plan
            },
        )
        .await;

        assert!(reconciled.failed.is_empty(), "{:?}", reconciled.failed);
        assert_eq!(store.view(|tx| tx.iter::<Task>().count()), services.len());
        assert_eq!(in_flight.most(), CONCURRENT_WRITES);
    }
}
