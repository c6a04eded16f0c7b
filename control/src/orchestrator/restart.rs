//! Restart policy: whether a stopped task is replaced, and the supervisor that starts replacements
//! once their restart delay has passed.
//!
//! The replicated and global orchestrators decide restarts with [`plan_restart`] (each for its own
//! services, with its own [`RestartHistory`]); a replacement waiting out its delay has desired state
//! READY, and [`RestartSupervisor`] moves it to RUNNING when the delay has elapsed. The delay is
//! measured from the replacement's creation time in the store, so a new leader resumes it as is.

use mesh_proto::{RestartCondition, RestartPolicy, Service, Task, TaskState};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::driver::{self, RETRY_DELAY, Reconcile};
use super::task::{self, SlotKey};
use crate::store::{Event, Read, ReadTx, Store, now_nanos};

/// Swarm's default restart delay.
pub const DEFAULT_DELAY_NS: i64 = 5_000_000_000;
/// Restarts remembered per slot; older ones only matter for unbounded windows.
const HISTORY_PER_SLOT: usize = 256;

/// What the restart policy says about a task that stopped while it should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Replace it, starting the replacement after `delay_ns`.
    Restart { delay_ns: i64 },
    /// The restart condition excludes this outcome.
    NotByCondition,
    /// `max_attempts` restarts already happened within the window.
    AttemptsUsedUp,
}

/// Applies `policy` (absent: Swarm's defaults) to a task that ended in `state` with `exit_code`,
/// or whose node went down, after `attempts` restarts within the policy's window.
pub fn decide(
    policy: Option<&RestartPolicy>,
    state: TaskState,
    exit_code: i32,
    node_down: bool,
    attempts: u64,
) -> Decision {
    let policy = policy.copied().unwrap_or_default();
    let condition = RestartCondition::try_from(policy.condition).unwrap_or(RestartCondition::Any);
    let failed = node_down
        || exit_code != 0
        || matches!(
            state,
            TaskState::Failed | TaskState::Rejected | TaskState::Orphaned
        );
    let allowed = match condition {
        RestartCondition::Any => true,
        RestartCondition::OnFailure => failed,
        RestartCondition::None => false,
    };
    if !allowed {
        return Decision::NotByCondition;
    }
    if policy.max_attempts != 0 && attempts >= policy.max_attempts {
        return Decision::AttemptsUsedUp;
    }
    // The delay keeps a crashing container from looping hot. A task lost with its node did not
    // crash: it is replaced at once (Swarm waits the delay here too; this is where we do better).
    let lost_with_node = node_down && state <= TaskState::Running;
    let delay_ns = if lost_with_node {
        0
    } else {
        policy.delay_ns.unwrap_or(DEFAULT_DELAY_NS).max(0)
    };
    Decision::Restart { delay_ns }
}

/// How many of the restart times in `times` fall within the policy's window ending at `now`.
pub fn attempts_in_window(policy: Option<&RestartPolicy>, times: &[i64], now: i64) -> u64 {
    let window = policy.map_or(0, |p| p.window_ns);
    let counted = times
        .iter()
        .filter(|t| window <= 0 || **t >= now.saturating_sub(window));
    counted.count() as u64
}

/// Restart times read from the store: every task of the slot made from `spec_version` but the
/// first one is a restart, created when it happened (reaped history makes this a lower bound).
fn stored_restart_times(slot_tasks: &[&Task], spec_version: u64) -> Vec<i64> {
    let mut times: Vec<i64> = slot_tasks
        .iter()
        .filter(|t| t.spec_version == spec_version)
        .map(|t| task::created_at(t))
        .collect();
    times.sort_unstable();
    times.into_iter().skip(1).collect()
}

/// Restarts one orchestrator made while leader: (service, slot) -> (spec version, time).
#[derive(Debug, Default)]
pub struct RestartHistory {
    restarts: HashMap<(String, SlotKey), Vec<(u64, i64)>>,
}

impl RestartHistory {
    pub fn record(&mut self, service_id: &str, key: SlotKey, spec_version: u64, at: i64) {
        let entry = self
            .restarts
            .entry((service_id.to_string(), key))
            .or_default();
        entry.push((spec_version, at));
        if entry.len() > HISTORY_PER_SLOT {
            entry.remove(0);
        }
    }

    pub fn forget_service(&mut self, service_id: &str) {
        self.restarts
            .retain(|(service, _), _| service != service_id);
    }

    fn times(&self, service_id: &str, key: &SlotKey, spec_version: u64) -> Vec<i64> {
        self.restarts
            .get(&(service_id.to_string(), key.clone()))
            .map(|v| {
                v.iter()
                    .filter(|(version, _)| *version == spec_version)
                    .map(|(_, at)| *at)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether `task` is one the restart policy must look at: wanted running, but stopped or lost.
pub fn needs_restart(task: &Task, node_down: bool) -> bool {
    task::desired(task) == TaskState::Running && (task::is_terminal(task::state(task)) || node_down)
}

/// A restart of `task`, if its service's policy allows one: the task with desired SHUTDOWN and
/// its replacement in the same slot (on the same node for a global task).
pub fn plan_restart(
    service: &Service,
    task: &Task,
    slot_tasks: &[&Task],
    node_down: bool,
    history: &RestartHistory,
    now: i64,
) -> Option<(Task, Task)> {
    let policy = task::restart_policy(service);
    let key = task::slot_key(task);
    let remembered = history.times(&service.id, &key, task.spec_version);
    let stored = stored_restart_times(slot_tasks, task.spec_version);
    let attempts =
        attempts_in_window(policy, &remembered, now).max(attempts_in_window(policy, &stored, now));
    let state = task::state(task);
    match decide(policy, state, task::exit_code(task), node_down, attempts) {
        Decision::Restart { delay_ns } => {
            let node = (task.slot == 0).then_some(task.node_id.as_str());
            let mut replacement = task::new_task(service, task.slot, node);
            if delay_ns > 0 {
                replacement.desired_state = TaskState::Ready as i32;
            }
            debug!(task.id = %task.id, service.id = %service.id, attempts, "task restarted");
            Some((task::with_desired(task, TaskState::Shutdown), replacement))
        }
        decision => {
            debug!(task.id = %task.id, ?decision, "task not restarted");
            None
        }
    }
}

/// When a replacement waiting in desired READY may start, in Unix nanoseconds: a restart after its
/// delay; a stop-first update's replacement once the task it replaces has stopped (the service
/// orchestrators start it then), or after [`super::update::STOP_WAIT_NS`] at the latest.
fn start_at(task: &Task) -> i64 {
    if !task.replaces.is_empty() {
        return task::created_at(task).saturating_add(super::update::STOP_WAIT_NS);
    }
    let delay = task
        .spec
        .as_ref()
        .and_then(|s| s.restart.as_ref())
        .and_then(|r| r.delay_ns)
        .unwrap_or(DEFAULT_DELAY_NS)
        .max(0);
    task::created_at(task).saturating_add(delay)
}

/// Starts restarted tasks (desired READY -> RUNNING) once their restart delay has elapsed.
pub struct RestartSupervisor {
    store: Store,
    /// Task id -> when it may start.
    waiting: HashMap<String, i64>,
}

impl RestartSupervisor {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            waiting: HashMap::new(),
        }
    }

    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        driver::drive(store, shutdown, self).await;
    }

    fn track(&mut self, task: &Task) {
        if task::desired(task) == TaskState::Ready {
            self.waiting.insert(task.id.clone(), start_at(task));
        } else {
            self.waiting.remove(&task.id);
        }
    }
}

impl Reconcile for RestartSupervisor {
    const NAME: &'static str = "restart";

    fn mark_all(&mut self, tx: &ReadTx<'_>) {
        self.waiting.clear();
        for task in tx.find::<Task>(|t| task::desired(t) == TaskState::Ready) {
            self.track(&task);
        }
    }

    fn observe(&mut self, event: &Event) {
        if let Some(task) = event.as_a::<Task>() {
            if event.is_delete() {
                self.waiting.remove(&task.id);
            } else {
                self.track(task);
            }
        }
    }

    async fn flush(&mut self, store: &Store) -> Option<Instant> {
        let now = now_nanos();
        let due: HashSet<String> = self
            .waiting
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut retry = None;
        if !due.is_empty() {
            // A batch per transaction; what is left is still due and goes at once.
            let result = store
                .update(|tx| {
                    let mut started = HashSet::new();
                    for id in &due {
                        if tx.is_full() {
                            break;
                        }
                        started.insert(id.clone());
                        let Some(task) = tx.get::<Task>(id) else {
                            continue;
                        };
                        if task::desired(&task) == TaskState::Ready {
                            tx.update(task::with_desired(&task, TaskState::Running))?;
                        }
                    }
                    Ok(started)
                })
                .await;
            match result {
                Ok(started) => {
                    self.waiting.retain(|id, _| !started.contains(id));
                    if started.len() < due.len() {
                        retry = Some(Instant::now());
                    }
                }
                Err(err) => {
                    driver::log_write_error(Self::NAME, &err);
                    retry = Some(Instant::now() + RETRY_DELAY);
                }
            }
        }
        let next = self
            .waiting
            .iter()
            .filter(|(id, _)| !due.contains(*id))
            .map(|(_, at)| *at)
            .min()
            .map(|at| {
                let wait = at.saturating_sub(now_nanos()).max(0) as u64;
                Instant::now() + Duration::from_nanos(wait)
            });
        driver::earliest(retry, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::Meta;

    fn policy(condition: RestartCondition, max_attempts: u64, window_ns: i64) -> RestartPolicy {
        RestartPolicy {
            condition: condition as i32,
            delay_ns: Some(50),
            max_attempts,
            window_ns,
        }
    }

    #[test]
    fn decisions() {
        use Decision::{AttemptsUsedUp, NotByCondition, Restart};
        use RestartCondition::{Any, None, OnFailure};
        use TaskState::{Complete, Failed, Orphaned, Rejected, Running, Shutdown};
        let restart = Restart { delay_ns: 50 };
        // (condition, max attempts, state, exit code, node down, attempts so far, decision)
        let cases = [
            (Any, 0, Complete, 0, false, 0, restart),
            (Any, 0, Failed, 1, false, 100, restart),
            (Any, 3, Failed, 1, false, 2, restart),
            (Any, 3, Failed, 1, false, 3, AttemptsUsedUp),
            (OnFailure, 0, Complete, 0, false, 0, NotByCondition),
            (OnFailure, 0, Shutdown, 0, false, 0, NotByCondition),
            (OnFailure, 0, Complete, 137, false, 0, restart),
            (OnFailure, 0, Failed, 0, false, 0, restart),
            (OnFailure, 0, Rejected, 0, false, 0, restart),
            (OnFailure, 0, Orphaned, 0, false, 0, restart),
            // Lost with its node, not crashed: replaced at once.
            (OnFailure, 0, Running, 0, true, 0, Restart { delay_ns: 0 }),
            (Any, 0, Failed, 1, true, 0, restart),
            (OnFailure, 1, Failed, 1, false, 1, AttemptsUsedUp),
            (None, 0, Failed, 1, false, 0, NotByCondition),
            (None, 0, Running, 0, true, 0, NotByCondition),
        ];
        for (i, (condition, max, state, exit, down, attempts, want)) in cases.iter().enumerate() {
            let policy = policy(*condition, *max, 0);
            let got = decide(Some(&policy), *state, *exit, *down, *attempts);
            assert_eq!(got, *want, "case {i}");
        }
        let default = decide(Option::None, Failed, 1, false, 1000);
        assert_eq!(
            default,
            Restart {
                delay_ns: DEFAULT_DELAY_NS
            }
        );
    }

    #[test]
    fn attempts_count_within_the_window() {
        let times = [100, 200, 300, 400];
        let cases = [
            (0, 450, 4),
            (150, 450, 2),
            (1000, 450, 4),
            (10, 450, 0),
            (-5, 450, 4),
        ];
        for (window, now, want) in cases {
            let policy = policy(RestartCondition::Any, 0, window);
            assert_eq!(
                attempts_in_window(Some(&policy), &times, now),
                want,
                "window {window}"
            );
        }
        assert_eq!(attempts_in_window(None, &times, 450), 4);
    }

    #[test]
    fn attempts_from_history_and_store() {
        let task = |id: &str, created: i64, version: u64| Task {
            id: id.into(),
            slot: 1,
            spec_version: version,
            meta: Some(Meta {
                created_at: created,
                ..Default::default()
            }),
            ..Default::default()
        };
        // The first task of a spec version is no restart; other versions do not count.
        let slot = [
            task("a", 10, 1),
            task("b", 20, 1),
            task("c", 30, 1),
            task("d", 40, 2),
        ];
        let slot: Vec<&Task> = slot.iter().collect();
        assert_eq!(stored_restart_times(&slot, 1), vec![20, 30]);
        assert_eq!(stored_restart_times(&slot, 2), Vec::<i64>::new());

        let mut history = RestartHistory::default();
        history.record("s", SlotKey::Replica(1), 1, 20);
        history.record("s", SlotKey::Replica(1), 2, 25);
        history.record("s", SlotKey::Replica(2), 1, 30);
        assert_eq!(history.times("s", &SlotKey::Replica(1), 1), vec![20]);
        history.forget_service("s");
        assert!(history.times("s", &SlotKey::Replica(1), 1).is_empty());
    }
}
