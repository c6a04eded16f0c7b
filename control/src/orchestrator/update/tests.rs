//! The updater's decisions, table by table: parallelism, delay, order, monitor and failure ratio.

use super::*;
use mesh_proto::{Meta, ServiceSpec, TaskStatus};

const S: i64 = 1_000_000_000;
/// When the update under test started.
const T0: i64 = 1_000 * S;

fn config(parallelism: u64, action: UpdateFailureAction, ratio: f32) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        delay_ns: 0,
        failure_action: action as i32,
        monitor_ns: Some(5 * S),
        max_failure_ratio: ratio,
        order: UpdateOrder::StopFirst as i32,
    }
}

fn service(update: UpdateConfig, state: UpdateState) -> Service {
    Service {
        id: "svc".into(),
        spec: Some(ServiceSpec {
            update_config: Some(update),
            ..Default::default()
        }),
        previous_spec: Some(ServiceSpec::default()),
        spec_version: 2,
        previous_spec_version: 1,
        update_status: Some(UpdateStatus {
            state: state as i32,
            started_at: T0,
            completed_at: 0,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// A task of `version` created at `created`, in `state` since `at`, first running at `started`.
fn task(id: &str, version: u64, state: TaskState, created: i64, started: i64, at: i64) -> Task {
    Task {
        id: id.into(),
        spec_version: version,
        meta: Some(Meta {
            created_at: created,
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: at,
            started_at: started,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An old task, running since before the update.
fn old() -> Task {
    task("old", 1, TaskState::Running, 0, 1, 1)
}

/// A replacement made at T0 + 1 s, in `state`, running since `started` (0: never).
fn new(id: &str, state: TaskState, started: i64, at: i64) -> Task {
    task(id, 2, state, T0 + S, started, at)
}

/// The slot layout of a test: each slot's tasks, oldest first (the last one is live).
fn decide_over(
    service: &Service,
    slots: &[Vec<Task>],
    now: i64,
) -> (Vec<usize>, Decision<'static>) {
    let keys: Vec<SlotKey> = (1..=slots.len() as u64).map(SlotKey::Replica).collect();
    let histories: Vec<Vec<&Task>> = slots.iter().map(|s| s.iter().collect()).collect();
    let views: Vec<SlotView<'_>> = histories
        .iter()
        .zip(&keys)
        .map(|(history, key)| SlotView {
            key,
            live: history.last().expect("a slot has tasks"),
            history,
        })
        .collect();
    let decision = decide(service, &views, now);
    let replaced = decision
        .replace
        .iter()
        .map(|k| keys.iter().position(|key| key == *k).expect("a known slot"))
        .collect();
    let owned = Decision {
        replace: Vec::new(),
        status: decision.status,
        rollback: decision.rollback,
        wake_at: decision.wake_at,
    };
    (replaced, owned)
}

fn state_of(decision: &Decision<'_>) -> Option<UpdateState> {
    decision
        .status
        .as_ref()
        .map(|s| UpdateState::try_from(s.state).expect("a known state"))
}

#[test]
fn parallelism_bounds_the_slots_in_flight() {
    use TaskState::{Pending, Running, Shutdown};
    let now = T0 + 10 * S;
    let done = || {
        vec![
            task("o", 1, Shutdown, 0, 1, 1),
            new("n", Running, T0 + 2 * S, T0 + 2 * S),
        ]
    };
    let pending = || {
        vec![
            task("o", 1, Shutdown, 0, 1, 1),
            new("p", Pending, 0, T0 + S),
        ]
    };
    // (parallelism, slots, slots replaced now)
    let cases: Vec<(u64, Vec<Vec<Task>>, Vec<usize>)> = vec![
        (1, vec![vec![old()], vec![old()], vec![old()]], vec![0]),
        (2, vec![vec![old()], vec![old()], vec![old()]], vec![0, 1]),
        (
            0,
            vec![vec![old()], vec![old()], vec![old()]],
            vec![0, 1, 2],
        ),
        // One replacement not running yet holds the only worker.
        (1, vec![pending(), vec![old()], vec![old()]], vec![]),
        // ... and one of two.
        (2, vec![pending(), vec![old()], vec![old()]], vec![1]),
        // A replacement running frees its worker (no delay).
        (1, vec![done(), vec![old()], vec![old()]], vec![1]),
        // Nothing outdated: nothing to replace.
        (1, vec![done(), done()], vec![]),
    ];
    for (i, (parallelism, slots, want)) in cases.into_iter().enumerate() {
        let service = service(
            config(parallelism, UpdateFailureAction::Pause, 0.0),
            UpdateState::Updating,
        );
        let (replaced, _) = decide_over(&service, &slots, now);
        assert_eq!(replaced, want, "case {i} (parallelism {parallelism})");
    }
}

#[test]
fn delay_holds_the_worker_after_its_task_runs() {
    let mut update = config(1, UpdateFailureAction::Pause, 0.0);
    update.delay_ns = 10 * S;
    let service = service(update, UpdateState::Updating);
    let ran = T0 + 2 * S;
    let slots = vec![
        vec![
            task("o", 1, TaskState::Shutdown, 0, 1, 1),
            new("n", TaskState::Running, ran, ran),
        ],
        vec![old()],
    ];
    // Within the delay: nothing, and a wake-up when it ends.
    let (replaced, decision) = decide_over(&service, &slots, ran + 3 * S);
    assert_eq!(replaced, Vec::<usize>::new());
    assert_eq!(decision.wake_at, Some(ran + 10 * S));
    // Once it ended: the next slot.
    let (replaced, _) = decide_over(&service, &slots, ran + 10 * S);
    assert_eq!(replaced, vec![1]);
}

#[test]
fn order_decides_when_the_old_task_stops() {
    let service = service(
        config(1, UpdateFailureAction::Pause, 0.0),
        UpdateState::Updating,
    );
    let live = old();
    let (stopped, replacement) = replace(&service, &live, UpdateOrder::StopFirst);
    assert_eq!(
        stopped.map(|t| t.desired_state),
        Some(TaskState::Shutdown as i32)
    );
    assert_eq!(replacement.spec_version, 2);
    assert_eq!(
        (replacement.desired_state, replacement.replaces.as_str()),
        (TaskState::Ready as i32, "old"),
        "stop-first: the replacement waits for the old task"
    );
    let (stopped, replacement) = replace(&service, &live, UpdateOrder::StartFirst);
    assert!(stopped.is_none(), "start-first leaves the old task running");
    assert_eq!(replacement.desired_state, TaskState::Running as i32);

    // (the slot's newest live task, whether the older one stays up)
    let cases = [
        (new("n", TaskState::Pending, 0, T0), true),
        (new("n", TaskState::Starting, 0, T0), true),
        // Failed and being restarted: capacity is kept.
        (new("n", TaskState::Failed, 0, T0), true),
        (new("n", TaskState::Running, T0, T0), false),
        // Not a replacement of the current spec (a restart of the old version).
        (task("r", 1, TaskState::Pending, T0, 0, T0), false),
    ];
    for (newest, keep) in cases {
        assert_eq!(
            keep_until_replaced(2, &newest, &live),
            keep,
            "{:?}",
            task::state(&newest)
        );
    }
    // Two tasks of the current spec in one slot: the older goes.
    assert!(!keep_until_replaced(
        2,
        &new("a", TaskState::Pending, 0, T0),
        &new("b", TaskState::Running, T0, T0)
    ));
}

#[test]
fn failure_ratio_triggers_the_failure_action() {
    use UpdateFailureAction::{Continue, Pause, Rollback};
    use UpdateState::{Paused, RollbackPaused, RollbackStarted, Updating};
    let now = T0 + 10 * S;
    let failed = |id: &str| {
        vec![
            task("o", 1, TaskState::Shutdown, 0, 1, 1),
            new(id, TaskState::Failed, 0, T0 + 2 * S),
        ]
    };
    let four = |failures: usize| -> Vec<Vec<Task>> {
        (0..4)
            .map(|i| {
                if i < failures {
                    failed(&format!("f{i}"))
                } else {
                    vec![old()]
                }
            })
            .collect()
    };
    // (action, ratio, state, failed slots of 4, new state, rollback, slots replaced)
    type Case = (
        UpdateFailureAction,
        f32,
        UpdateState,
        usize,
        Option<UpdateState>,
        bool,
        Vec<usize>,
    );
    let cases: Vec<Case> = vec![
        (Pause, 0.0, Updating, 1, Some(Paused), false, vec![]),
        // 1/4 is not above 0.25; 2/4 is.
        (Pause, 0.25, Updating, 1, None, false, vec![1]),
        (Pause, 0.25, Updating, 2, Some(Paused), false, vec![]),
        (Continue, 0.0, Updating, 2, None, false, vec![2]),
        (
            Rollback,
            0.0,
            Updating,
            1,
            Some(RollbackStarted),
            true,
            vec![],
        ),
        // A rollback is never rolled back: it pauses.
        (
            Rollback,
            0.0,
            RollbackStarted,
            1,
            Some(RollbackPaused),
            false,
            vec![],
        ),
        (
            Pause,
            0.0,
            RollbackStarted,
            1,
            Some(RollbackPaused),
            false,
            vec![],
        ),
        // Paused: nothing moves.
        (Pause, 0.0, Paused, 1, None, false, vec![]),
    ];
    for (i, (action, ratio, state, failures, want_state, want_rollback, want_replaced)) in
        cases.into_iter().enumerate()
    {
        let mut service = service(config(1, action, ratio), state);
        service.spec.as_mut().expect("spec").rollback_config = Some(config(1, action, ratio));
        if action == Rollback && state == RollbackStarted {
            // The rollback's own config cannot say rollback; the update's did.
            service.spec.as_mut().expect("spec").rollback_config = Some(config(1, Pause, ratio));
        }
        let (replaced, decision) = decide_over(&service, &four(failures), now);
        assert_eq!(state_of(&decision), want_state, "case {i}: state");
        assert_eq!(decision.rollback, want_rollback, "case {i}: rollback");
        assert_eq!(replaced, want_replaced, "case {i}: replaced");
        if let Some(status) = &decision.status {
            assert!(
                status
                    .message
                    .contains("due to failure or early termination of task f"),
                "case {i}: {}",
                status.message
            );
        }
    }

    // Rollback asked for with nothing to roll back to: pause instead.
    let mut service = service(config(1, Rollback, 0.0), Updating);
    service.previous_spec = None;
    let (_, decision) = decide_over(&service, &four(1), now);
    assert_eq!(
        (state_of(&decision), decision.rollback),
        (Some(Paused), false)
    );
}

#[test]
fn only_failures_within_the_monitor_count() {
    let service = service(
        config(1, UpdateFailureAction::Pause, 0.0),
        UpdateState::Updating,
    );
    let ran = T0 + 2 * S;
    // (replacement, counts as a failure)
    let cases = [
        ("never ran", new("n", TaskState::Failed, 0, ran), true),
        ("rejected", new("n", TaskState::Rejected, 0, ran), true),
        (
            "exited 0 at once",
            new("n", TaskState::Complete, ran, ran + S),
            true,
        ),
        (
            "failed within 5 s",
            new("n", TaskState::Failed, ran, ran + 5 * S),
            true,
        ),
        (
            "failed after 6 s",
            new("n", TaskState::Failed, ran, ran + 6 * S),
            false,
        ),
        (
            "shut down by the orchestrator",
            new("n", TaskState::Shutdown, ran, ran + S),
            false,
        ),
        // A task of the same version from before this update began is not this update's.
        (
            "older",
            task("n", 2, TaskState::Failed, T0 - S, 0, ran),
            false,
        ),
    ];
    for (case, replacement, failure) in cases {
        let slots = vec![
            vec![task("o", 1, TaskState::Shutdown, 0, 1, 1), replacement],
            vec![old()],
        ];
        let (_, decision) = decide_over(&service, &slots, ran + 20 * S);
        assert_eq!(
            state_of(&decision) == Some(UpdateState::Paused),
            failure,
            "{case}"
        );
    }
}

#[test]
fn completes_once_the_last_tasks_outlive_the_monitor() {
    let ran = T0 + 2 * S;
    let slots = vec![
        vec![
            task("o", 1, TaskState::Shutdown, 0, 1, 1),
            new("n", TaskState::Running, ran, ran),
        ],
        // A slot the update did not touch (added by a scale-up).
        vec![task("s", 2, TaskState::Running, T0 - S, 1, 1)],
    ];
    for (state, done) in [
        (UpdateState::Updating, UpdateState::Completed),
        (UpdateState::RollbackStarted, UpdateState::RollbackCompleted),
    ] {
        let service = service(config(1, UpdateFailureAction::Pause, 0.0), state);
        let (_, decision) = decide_over(&service, &slots, ran + S);
        assert_eq!(state_of(&decision), None, "{state:?}: still monitored");
        assert_eq!(decision.wake_at, Some(ran + 5 * S));
        let (_, decision) = decide_over(&service, &slots, ran + 5 * S);
        assert_eq!(state_of(&decision), Some(done));
        let status = decision.status.expect("a status");
        assert_eq!((status.started_at, status.completed_at), (T0, ran + 5 * S));
    }
    // A replacement still starting holds completion back.
    let pending = vec![vec![new("n", TaskState::Starting, 0, T0 + S)]];
    let service = service(
        config(1, UpdateFailureAction::Pause, 0.0),
        UpdateState::Updating,
    );
    let (_, decision) = decide_over(&service, &pending, T0 + 60 * S);
    assert_eq!(state_of(&decision), None);
    // A completed update stays completed.
    let service_done = self::service(
        config(1, UpdateFailureAction::Pause, 0.0),
        UpdateState::Completed,
    );
    let (_, decision) = decide_over(&service_done, &slots, ran + 60 * S);
    assert_eq!(decision, Decision::default());
}

#[test]
fn outdated_tasks_without_an_update_start_one() {
    let mut service = service(
        config(1, UpdateFailureAction::Pause, 0.0),
        UpdateState::Updating,
    );
    service.update_status = None;
    let now = T0 + 5 * S;
    let (replaced, decision) = decide_over(&service, &[vec![old()], vec![old()]], now);
    assert_eq!(replaced, vec![0]);
    let status = decision.status.expect("an update starts");
    assert_eq!(status.state, UpdateState::Updating as i32);
    assert_eq!(status.started_at, now);
}

#[test]
fn rollback_uses_the_rollback_config() {
    let mut service = service(
        config(1, UpdateFailureAction::Pause, 0.0),
        UpdateState::RollbackStarted,
    );
    service.spec.as_mut().expect("spec").rollback_config =
        Some(config(0, UpdateFailureAction::Continue, 0.0));
    assert_eq!(Config::of(&service).parallelism, 0);
    let (replaced, _) = decide_over(&service, &[vec![old()], vec![old()], vec![old()]], T0 + S);
    assert_eq!(replaced, vec![0, 1, 2]);
    service.spec.as_mut().expect("spec").rollback_config = None;
    assert_eq!(Config::of(&service), Config::DEFAULT);
}

#[test]
fn a_stop_first_replacement_starts_once_the_old_task_stopped() {
    let service = service(
        config(1, UpdateFailureAction::Pause, 0.0),
        UpdateState::Updating,
    );
    let up = |_: &Task| false;
    let down = |_: &Task| true;
    // (state of the replaced task, its node down, may start)
    let cases = [
        (TaskState::Running, false, false),
        (TaskState::Shutdown, false, true),
        (TaskState::Failed, false, true),
        (TaskState::Running, true, true),
    ];
    for (state, node_down, want) in cases {
        let old = task("old", 1, state, 0, 1, 1);
        let (_, replacement) = replace(&service, &old, UpdateOrder::StopFirst);
        let slot = [&old, &replacement];
        let lost: &dyn Fn(&Task) -> bool = if node_down { &down } else { &up };
        assert_eq!(
            may_start(&replacement, &slot, lost),
            want,
            "{state:?} {node_down}"
        );
    }
    // The replaced task gone from the store (reaped): start.
    let old = old();
    let (_, replacement) = replace(&service, &old, UpdateOrder::StopFirst);
    assert!(may_start(&replacement, &[&replacement], &up));
    // Neither a start-first replacement nor a running task waits for anything.
    let (_, start_first) = replace(&service, &old, UpdateOrder::StartFirst);
    assert!(!may_start(&start_first, &[&old, &start_first], &up));
}

#[test]
fn starts_matter_to_updates_and_to_services_with_another_spec() {
    let with = |state: Option<UpdateState>, spec: u64, previous: u64, last: u64| Service {
        spec_version: spec,
        previous_spec_version: previous,
        last_spec_version: last,
        update_status: state.map(|s| UpdateStatus {
            state: s as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    // (case, service, whether a task starting to run calls for a plan)
    let cases = [
        ("first spec only", with(None, 1, 0, 0), false),
        ("first spec, relabelled", with(None, 1, 1, 0), false),
        ("updating", with(Some(UpdateState::Updating), 2, 1, 0), true),
        (
            "rolling back",
            with(Some(UpdateState::RollbackStarted), 1, 2, 2),
            true,
        ),
        (
            "update completed",
            with(Some(UpdateState::Completed), 2, 1, 0),
            true,
        ),
        ("status cleared after an update", with(None, 2, 2, 0), true),
        ("rolled back to the first spec", with(None, 1, 2, 2), true),
        (
            "paused at the first spec",
            with(Some(UpdateState::Paused), 1, 0, 0),
            false,
        ),
    ];
    for (case, service, want) in cases {
        assert_eq!(starts_matter(&service), want, "{case}");
    }
}
