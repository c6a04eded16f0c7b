//! Convergence evaluation: bars, overall counts, failure detection, up-to-date tasks only.

use super::*;
use mesh_proto::{
    Annotations, ContainerSpec, GlobalService, Meta, ReplicatedService, ServiceSpec, TaskSpec,
    TaskStatus,
};

const SINCE: i64 = 1_000;

fn spec(image: &str) -> TaskSpec {
    TaskSpec {
        container: Some(ContainerSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(mode: Mode) -> Service {
    Service {
        id: "svc".into(),
        spec_version: 2,
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: "web".into(),
                ..Default::default()
            }),
            task: Some(spec("busybox")),
            mode: Some(mode),
            endpoint: None,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn replicated(n: u64) -> Service {
    service(Mode::Replicated(ReplicatedService { replicas: n }))
}

fn task(slot: u64, created: i64, state: TaskState, err: &str) -> Task {
    Task {
        id: format!("task{slot}x{created}"),
        service_id: "svc".into(),
        slot,
        node_id: format!("node{slot}"),
        meta: Some(Meta {
            created_at: created,
            ..Default::default()
        }),
        spec: Some(spec("busybox")),
        spec_version: 2,
        status: Some(TaskStatus {
            state: state as i32,
            err: err.into(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

#[test]
fn bars_follow_docker_positions() {
    let running = bar_text(TaskState::Running as i32);
    assert_eq!(running, format!("running   [{}>]", "=".repeat(50)));
    let pending = bar_text(TaskState::Pending as i32);
    assert_eq!(
        pending,
        format!("pending   [{}>{}]", "=".repeat(16), " ".repeat(34))
    );
    let preparing = bar_text(TaskState::Preparing as i32);
    assert!(
        preparing.starts_with("preparing [=================================>"),
        "{preparing}"
    );
    assert_eq!(state_rank(TaskState::Failed as i32), 0);
}

#[test]
fn replicated_progress_and_convergence() {
    let svc = replicated(3);
    let tasks = [
        task(1, SINCE, TaskState::Running, ""),
        task(2, SINCE, TaskState::Starting, ""),
        task(
            3,
            SINCE,
            TaskState::Pending,
            "no suitable node (insufficient resources on 1 node)",
        ),
    ];
    let snap = evaluate(&svc, &tasks, 3, SINCE);
    assert_eq!((snap.running, snap.desired, snap.converged), (1, 3, false));
    assert_eq!(snap.failure, None);
    let ids: Vec<_> = snap.lines.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["1/3", "2/3", "3/3"]);
    assert!(snap.lines[1].text.starts_with("starting  ["));
    assert_eq!(
        snap.lines[2].text,
        "no suitable node (insufficient resources on 1 node)"
    );

    let all = [
        task(1, SINCE, TaskState::Running, ""),
        task(2, SINCE, TaskState::Running, ""),
        task(3, SINCE, TaskState::Running, ""),
    ];
    let snap = evaluate(&svc, &all, 3, SINCE);
    assert_eq!((snap.running, snap.converged), (3, true));
}

#[test]
fn stale_and_shut_down_tasks_do_not_count() {
    let svc = replicated(1);
    let mut old = task(1, 0, TaskState::Running, "");
    old.spec = Some(spec("busybox:old"));
    old.spec_version = 1;
    let snap = evaluate(&svc, &[old.clone()], 1, SINCE);
    assert_eq!((snap.running, snap.converged), (0, false));
    // A scale keeps the task spec: a task from an older spec version with the same spec counts.
    old.spec = Some(spec("busybox"));
    assert!(evaluate(&svc, &[old.clone()], 1, SINCE).converged);
    // Tasks being shut down (scale down) are not active.
    let mut leaving = task(2, SINCE, TaskState::Running, "");
    leaving.desired_state = TaskState::Shutdown as i32;
    let snap = evaluate(&svc, &[old, leaving], 1, SINCE);
    assert!(snap.converged);
    assert_eq!(snap.lines.len(), 1);
    // Scaled to zero: converged once nothing is active.
    assert!(evaluate(&replicated(0), &[], 0, SINCE).converged);
}

#[test]
fn failures_stop_convergence() {
    let svc = replicated(1);
    let rejected = [task(1, SINCE, TaskState::Rejected, "image not found")];
    let snap = evaluate(&svc, &rejected, 1, SINCE);
    assert_eq!(
        snap.failure.as_deref(),
        Some("1/1: task task1x1000 rejected: image not found")
    );

    let twice = [
        task(1, SINCE, TaskState::Failed, "exit 1"),
        task(1, SINCE + 1, TaskState::Failed, "exit 1"),
        task(1, SINCE + 2, TaskState::Starting, ""),
    ];
    assert_eq!(evaluate(&svc, &twice, 1, SINCE).failure, None);
    let thrice = [
        task(1, SINCE, TaskState::Failed, "exit 1"),
        task(1, SINCE + 1, TaskState::Failed, "exit 1"),
        task(1, SINCE + 2, TaskState::Failed, "exit 2"),
        task(1, SINCE + 3, TaskState::New, ""),
    ];
    let snap = evaluate(&svc, &thrice, 1, SINCE);
    assert_eq!(
        snap.failure.as_deref(),
        Some("1/1: task failed 3 times: exit 2")
    );
    // Failures from before the command started are history, not this command's doing.
    let history = [
        task(1, 1, TaskState::Failed, "exit 1"),
        task(1, 2, TaskState::Rejected, "old"),
        task(1, 3, TaskState::Failed, "exit 1"),
        task(1, SINCE, TaskState::Running, ""),
    ];
    let snap = evaluate(&svc, &history, 1, SINCE);
    assert_eq!(snap.failure, None);
    assert!(snap.converged);
}

#[test]
fn global_lines_are_per_node() {
    let svc = service(Mode::Global(GlobalService {}));
    let mut a = task(0, SINCE, TaskState::Running, "");
    a.node_id = "nodeaaaaaaaaaaaaaaaa".into();
    let mut b = task(0, SINCE, TaskState::Assigned, "");
    b.node_id = "nodebbbbbbbbbbbbbbbb".into();
    let snap = evaluate(&svc, &[a.clone(), b], 2, SINCE);
    let ids: Vec<_> = snap.lines.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["nodeaaaaaaaa", "nodebbbbbbbb"]);
    assert_eq!((snap.running, snap.converged), (1, false));
    assert!(evaluate(&svc, &[a], 1, SINCE).converged);
}
