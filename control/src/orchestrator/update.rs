//! Rolling updates and rollbacks, as SwarmKit's updater: slots whose live task comes from an older
//! spec version are replaced `parallelism` at a time (0: all at once), each worker waiting `delay`
//! after its task runs; stop-first shuts the old task down with the replacement's creation,
//! start-first keeps it until the replacement runs. A replaced task that ends within `monitor`
//! of starting (or before it ever runs) is a failure; past `max_failure_ratio` of the slots being
//! updated, the failure action pauses, carries on, or rolls back to the previous spec.
//!
//! The updater keeps no state of its own, so a new leader carries on where the old one stopped:
//! where an update stands is `Service.update_status` (its `started_at` says which tasks this update
//! made), and each task's status says when it started running. [`decide`] is a pure function of
//! those; the orchestrators write what it decides in the same transaction as their other steps.

use mesh_proto::{
    Service, Task, TaskState, UpdateConfig, UpdateFailureAction, UpdateOrder, UpdateState,
    UpdateStatus,
};

use super::task::{self, SlotKey};

/// Swarm's default monitor period, for updates and rollbacks alike.
pub const DEFAULT_MONITOR_NS: i64 = 5_000_000_000;

/// An update's pace and failure policy with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// 0 means all at once.
    pub parallelism: u64,
    pub delay_ns: i64,
    pub failure_action: UpdateFailureAction,
    pub monitor_ns: i64,
    pub max_failure_ratio: f32,
    pub order: UpdateOrder,
}

impl Config {
    /// Swarm's defaults: one at a time, no delay, pause on failure, 5 s monitor, stop-first
    /// (the same for updates and rollbacks).
    pub const DEFAULT: Self = Self {
        parallelism: 1,
        delay_ns: 0,
        failure_action: UpdateFailureAction::Pause,
        monitor_ns: DEFAULT_MONITOR_NS,
        max_failure_ratio: 0.0,
        order: UpdateOrder::StopFirst,
    };

    /// `config` with its defaults filled in; `None` is [`Config::DEFAULT`].
    pub fn from_spec(config: Option<&UpdateConfig>) -> Self {
        let Some(c) = config else {
            return Self::DEFAULT;
        };
        Self {
            parallelism: c.parallelism,
            delay_ns: c.delay_ns,
            failure_action: UpdateFailureAction::try_from(c.failure_action)
                .unwrap_or(UpdateFailureAction::Pause),
            monitor_ns: c.monitor_ns.unwrap_or(DEFAULT_MONITOR_NS),
            max_failure_ratio: c.max_failure_ratio,
            order: UpdateOrder::try_from(c.order).unwrap_or(UpdateOrder::StopFirst),
        }
    }

    /// The config that paces `service` now: its rollback config while a rollback runs, its
    /// update config otherwise.
    pub fn of(service: &Service) -> Self {
        let spec = service.spec.as_ref();
        if state(service) == UpdateState::RollbackStarted {
            Self::from_spec(spec.and_then(|s| s.rollback_config.as_ref()))
        } else {
            Self::from_spec(spec.and_then(|s| s.update_config.as_ref()))
        }
    }

    /// How long the last replaced tasks are watched before the update counts as completed:
    /// the monitor period, or longer than the delay when that is longer (as Swarm).
    fn settle_ns(&self) -> i64 {
        if self.delay_ns >= self.monitor_ns {
            self.delay_ns.saturating_add(1_000_000_000)
        } else {
            self.monitor_ns
        }
    }
}

/// Where the service's update stands (UNKNOWN when none ever ran).
pub fn state(service: &Service) -> UpdateState {
    service
        .update_status
        .as_ref()
        .and_then(|s| UpdateState::try_from(s.state).ok())
        .unwrap_or(UpdateState::Unknown)
}

/// Whether a task of `service` starting to run can change its plan: while an update or a rollback
/// is under way (it paces and completes them), and in a service that has had another spec (an
/// older task of a start-first update stops once its replacement runs, whatever the status
/// says). A service that only ever had its first spec has nothing to do when its tasks start.
pub fn starts_matter(service: &Service) -> bool {
    let in_progress = matches!(
        state(service),
        UpdateState::Updating | UpdateState::RollbackStarted
    );
    let versions = service
        .spec_version
        .max(service.previous_spec_version)
        .max(service.last_spec_version);
    in_progress || versions > 1
}

/// Docker's name of an update state (`updating`, `paused`, … `rollback_completed`; "" for none).
pub fn state_name(state: UpdateState) -> &'static str {
    match state {
        UpdateState::Unknown => "",
        UpdateState::Updating => "updating",
        UpdateState::Paused => "paused",
        UpdateState::Completed => "completed",
        UpdateState::RollbackStarted => "rollback_started",
        UpdateState::RollbackPaused => "rollback_paused",
        UpdateState::RollbackCompleted => "rollback_completed",
    }
}

/// A slot as the updater sees it: its live task and every task it holds (oldest first).
#[derive(Debug, Clone, Copy)]
pub struct SlotView<'a> {
    pub key: &'a SlotKey,
    pub live: &'a Task,
    pub history: &'a [&'a Task],
}

/// What the update of one service calls for now.
#[derive(Debug, Default, PartialEq)]
pub struct Decision<'a> {
    /// Slots to replace now, in slot order.
    pub replace: Vec<&'a SlotKey>,
    /// The service's new update status, when it changes.
    pub status: Option<UpdateStatus>,
    /// Roll the service back to its previous spec (with `status`).
    pub rollback: bool,
    /// When to look again without any event (a delay or a monitor period ending), Unix ns.
    pub wake_at: Option<i64>,
}

/// When the task was first reported running (Unix ns), 0 if it never was.
fn started_at(task: &Task) -> i64 {
    let Some(status) = task.status.as_ref() else {
        return 0;
    };
    if status.started_at > 0 {
        status.started_at
    } else if status.state == TaskState::Running as i32 {
        // Reported running by a manager that did not stamp it: the report's time.
        status.timestamp
    } else {
        0
    }
}

/// Whether the task stopped on its own: failed, rejected, or exited (an early termination).
fn ended_on_its_own(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Failed | TaskState::Rejected | TaskState::Complete | TaskState::Orphaned
    )
}

fn min_time(a: Option<i64>, b: i64) -> Option<i64> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn new_status(
    state: UpdateState,
    started_at: i64,
    completed_at: i64,
    message: &str,
) -> UpdateStatus {
    UpdateStatus {
        state: state as i32,
        started_at,
        completed_at,
        message: message.to_string(),
    }
}

/// Decides the next step of `service`'s update over its `slots` at `now` (Unix ns).
pub fn decide<'a>(service: &Service, slots: &[SlotView<'a>], now: i64) -> Decision<'a> {
    let state = state(service);
    if matches!(state, UpdateState::Paused | UpdateState::RollbackPaused) {
        return Decision::default();
    }
    let rolling_back = state == UpdateState::RollbackStarted;
    let in_progress = matches!(state, UpdateState::Updating | UpdateState::RollbackStarted);
    let config = Config::of(service);
    let version = service.spec_version;
    let since = match (in_progress, service.update_status.as_ref()) {
        (true, Some(status)) => status.started_at,
        _ => now,
    };
    let settle = config.settle_ns();

    let mut decision = Decision::default();
    let mut dirty = Vec::new();
    let mut updating = 0u64;
    let mut in_flight = 0u64;
    let mut failed: Vec<&Task> = Vec::new();
    let mut settled = true;
    for slot in slots {
        let is_dirty = slot.live.spec_version != version;
        if is_dirty {
            dirty.push(slot.key);
        }
        // The task this update made in the slot: the first of the current version since it began.
        let updated = in_progress
            .then(|| {
                slot.history
                    .iter()
                    .find(|t| t.spec_version == version && task::created_at(t) >= since)
            })
            .flatten();
        if !is_dirty && updated.is_none() {
            continue;
        }
        updating += 1;
        let Some(updated) = updated else { continue };
        let observed = task::state(updated);
        let started = started_at(updated);
        if ended_on_its_own(observed) {
            let ended = updated.status.as_ref().map_or(now, |s| s.timestamp);
            if started == 0 || ended.saturating_sub(started) <= config.monitor_ns {
                failed.push(updated);
            }
        } else if observed < TaskState::Running {
            in_flight += 1;
            settled = false;
        } else if observed == TaskState::Running {
            let delay_ends = started.saturating_add(config.delay_ns);
            if now < delay_ends {
                in_flight += 1;
                decision.wake_at = min_time(decision.wake_at, delay_ends);
            }
            let settles = started.saturating_add(settle);
            if now < settles {
                settled = false;
                decision.wake_at = min_time(decision.wake_at, settles);
            }
        }
    }

    if in_progress
        && config.failure_action != UpdateFailureAction::Continue
        && !failed.is_empty()
        && failed.len() as f64 / updating.max(1) as f64 > f64::from(config.max_failure_ratio)
    {
        let last = failed
            .iter()
            .max_by_key(|t| t.status.as_ref().map_or(0, |s| s.timestamp))
            .map_or("", |t| t.id.as_str());
        let started_at = service.update_status.as_ref().map_or(now, |s| s.started_at);
        let rollback = config.failure_action == UpdateFailureAction::Rollback
            && !rolling_back
            && service.previous_spec.is_some();
        let (state, message) = if rolling_back {
            (UpdateState::RollbackPaused, "rollback paused")
        } else if rollback {
            (UpdateState::RollbackStarted, "update rolled back")
        } else {
            (UpdateState::Paused, "update paused")
        };
        let message = format!("{message} due to failure or early termination of task {last}");
        // A rollback's tasks are told apart from the update's by when it started.
        let started_at = if rollback { now } else { started_at };
        return Decision {
            replace: Vec::new(),
            status: Some(new_status(state, started_at, 0, &message)),
            rollback,
            wake_at: None,
        };
    }

    if dirty.is_empty() {
        if in_progress && settled {
            let (state, message) = if rolling_back {
                (UpdateState::RollbackCompleted, "rollback completed")
            } else {
                (UpdateState::Completed, "update completed")
            };
            decision.status = Some(new_status(state, since, now, message));
            decision.wake_at = None;
        }
        return decision;
    }
    if !in_progress {
        // Outdated slots without an update under way (a spec written before update status
        // existed, or by hand): one starts now.
        decision.status = Some(new_status(
            UpdateState::Updating,
            now,
            0,
            "update in progress",
        ));
        in_flight = 0;
    }
    let free = match config.parallelism {
        0 => usize::MAX,
        n => usize::try_from(n.saturating_sub(in_flight)).unwrap_or(usize::MAX),
    };
    decision.replace = dirty.into_iter().take(free).collect();
    decision
}

/// The writes that replace `live` with a task of the current spec: its new desired state and the
/// replacement. Stop-first: shut down now, and the replacement waits in desired READY until it
/// has stopped ([`may_start`]); start-first: no change, it stops once the replacement runs
/// ([`keep_until_replaced`]).
pub fn replace(service: &Service, live: &Task, order: UpdateOrder) -> (Option<Task>, Task) {
    let node = (live.slot == 0).then_some(live.node_id.as_str());
    let mut replacement = task::new_task(service, live.slot, node);
    let old = match order {
        UpdateOrder::StopFirst => {
            replacement.desired_state = TaskState::Ready as i32;
            replacement.replaces = live.id.clone();
            Some(task::with_desired(live, TaskState::Shutdown))
        }
        UpdateOrder::StartFirst => None,
    };
    (old, replacement)
}

/// Whether `task`, a stop-first replacement waiting in desired READY, may start: the task it
/// replaces (among `slot`'s tasks) has stopped, is gone, or was lost with its node.
pub fn may_start(task: &Task, slot: &[&Task], node_down: &dyn Fn(&Task) -> bool) -> bool {
    if task.replaces.is_empty() || task::desired(task) != TaskState::Ready {
        return false;
    }
    slot.iter()
        .find(|t| t.id == task.replaces)
        .is_none_or(|old| task::is_terminal(task::state(old)) || node_down(old))
}

/// How long a stop-first replacement waits for the task it replaces at most (Swarm's bound too),
/// after which the restart supervisor starts it anyway.
pub const STOP_WAIT_NS: i64 = 60_000_000_000;

/// Whether `older`, a live task in the same slot as the newer live task `newest`, stays up: it
/// does while `newest` is a replacement of the current spec that is not running (a start-first
/// update keeps the slot's capacity until then, also while the replacement fails and restarts).
pub fn keep_until_replaced(spec_version: u64, newest: &Task, older: &Task) -> bool {
    newest.spec_version == spec_version
        && older.spec_version != spec_version
        && task::state(newest) != TaskState::Running
}

#[cfg(test)]
mod tests;
