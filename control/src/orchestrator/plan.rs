//! The writes one reconcile pass of a service decided, and how the service orchestrators apply
//! them: one transaction per service, proposed concurrently so that Raft batches them while a
//! conflict on one service does not hold back the others.
//!
//! A plan is a list of steps, each applied whole (a restart's shutdown and its replacement go
//! together). A transaction takes steps until it holds a batch ([`WriteTx::is_full`]); a service
//! with steps left is reconciled again after the commit, from the store as it then is.

use futures::future::join_all;
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
}

/// What applying a plan did.
pub(crate) struct Applied {
    /// Restarts made: slot and the spec version of the task that was replaced.
    restarts: Vec<(SlotKey, u64)>,
    /// Steps were left for the next transaction.
    more: bool,
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

    /// Moves a rolling update on by one slot, if it may progress. `slots` holds each slot's key,
    /// live task and history.
    pub fn advance_update(
        &mut self,
        service: &Service,
        slots: &[(SlotKey, Cow<'_, Task>, &[&Task])],
    ) {
        let views: Vec<SlotView<'_>> = slots
            .iter()
            .map(|(key, live, history)| SlotView {
                key,
                live: live.as_ref(),
                history,
            })
            .collect();
        if let Some(view) = update::next_slot(service.spec_version, &views)
            .and_then(|key| views.iter().find(|v| v.key == key))
        {
            let (old, new) = update::replace(service, view.live);
            self.push(Step {
                update: Some(old),
                create: Some(new),
                restart: None,
            });
        }
    }

    /// Applies steps in order until `tx` holds a batch.
    fn apply(self, tx: &mut WriteTx<'_>) -> Result<Applied, StoreError> {
        let mut restarts = Vec::new();
        for step in self.steps {
            if tx.is_full() {
                return Ok(Applied {
                    restarts,
                    more: true,
                });
            }
            if let Some(task) = step.update {
                tx.update(task)?;
            }
            if let Some(task) = step.create {
                tx.create(task)?;
            }
            restarts.extend(step.restart);
        }
        Ok(Applied {
            restarts,
            more: self.truncated,
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
}

impl Reconciled {
    /// Marks the services left in `dirty` again and says when to run next: at once when a batch
    /// was full, after [`RETRY_DELAY`] when only writes failed.
    pub(crate) fn requeue(self, dirty: &mut BTreeSet<String>) -> Option<Instant> {
        let wake = if !self.more.is_empty() {
            Some(Instant::now())
        } else if !self.failed.is_empty() {
            Some(Instant::now() + RETRY_DELAY)
        } else {
            None
        };
        dirty.extend(self.failed);
        dirty.extend(self.more);
        wake
    }
}

/// Reconciles each of `services`, planning with `planner` against the store as it is at write
/// time. Restarts made are recorded in `history`.
pub(crate) async fn reconcile_services<P>(
    store: &Store,
    reconciler: &'static str,
    services: BTreeSet<String>,
    history: &mut RestartHistory,
    planner: P,
) -> Reconciled
where
    P: Fn(&WriteTx<'_>, &str, &RestartHistory, i64) -> Plan + Sync,
{
    let now = now_nanos();
    let shared: &RestartHistory = history;
    let writes = services.iter().map(|id| {
        let planner = &planner;
        async move {
            let result = store
                .update(|tx| planner(tx, id, shared, now).apply(tx))
                .await;
            (id, result)
        }
    });
    let results = join_all(writes).await;
    let mut reconciled = Reconciled::default();
    let mut made = Vec::new();
    for (id, result) in results {
        match result {
            Ok(applied) => {
                made.extend(applied.restarts.into_iter().map(|r| (id.clone(), r)));
                if applied.more {
                    reconciled.more.insert(id.clone());
                }
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
