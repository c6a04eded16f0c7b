//! Worker tests against the fake executor: the state walk, exits, desired states, removal,
//! re-adoption and failures.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use mesh_proto::assignments_message::Type as AssignmentsType;
use mesh_proto::{
    Annotations, AssignmentsMessage, ContainerSpec, LogSubscription, Task, TaskSpec, TaskState,
    TaskStatus, TaskStatusUpdate,
};
use tokio::sync::mpsc::UnboundedReceiver;

use super::Worker;
use crate::exec::fake::{FakeExecutor, STOPPED_EXIT_CODE};
use crate::network::{OverlayError, TaskNetwork};

mod health;

const WAIT: Duration = Duration::from_secs(5);

fn task(id: &str, desired: TaskState, state: TaskState) -> Task {
    Task {
        id: id.to_owned(),
        service_id: "svc1".to_owned(),
        slot: 1,
        node_id: "node1".to_owned(),
        service_annotations: Some(Annotations {
            name: "web".to_owned(),
            ..Default::default()
        }),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: state as i32,
            ..Default::default()
        }),
        desired_state: desired as i32,
        ..Default::default()
    }
}

fn complete(tasks: Vec<Task>) -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: AssignmentsType::Complete as i32,
        update_tasks: tasks,
        remove_tasks: Vec::new(),
        partial: false,
        ..Default::default()
    }
}

fn incremental(tasks: Vec<Task>, remove: &[&str]) -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: AssignmentsType::Incremental as i32,
        update_tasks: tasks,
        remove_tasks: remove.iter().map(|id| (*id).to_owned()).collect(),
        partial: false,
        ..Default::default()
    }
}

fn start() -> (Arc<FakeExecutor>, Worker, Updates) {
    let fake = Arc::new(FakeExecutor::new());
    let (worker, receiver) = Worker::new(fake.clone(), "node1".to_owned(), None, None);
    let updates = Updates {
        receiver,
        kept: VecDeque::new(),
    };
    (fake, worker, updates)
}

fn state_of(update: &TaskStatusUpdate) -> TaskState {
    update.status.as_ref().map_or(TaskState::New, |s| s.state())
}

/// Status updates as a test reads them, task by task: updates of other tasks are kept for later.
struct Updates {
    receiver: UnboundedReceiver<TaskStatusUpdate>,
    kept: VecDeque<TaskStatusUpdate>,
}

impl Updates {
    async fn next(&mut self, task_id: &str) -> Option<TaskStatusUpdate> {
        if let Some(at) = self.kept.iter().position(|u| u.task_id == task_id) {
            return self.kept.remove(at);
        }
        loop {
            let update = tokio::time::timeout(WAIT, self.receiver.recv())
                .await
                .ok()??;
            if update.task_id == task_id {
                return Some(update);
            }
            self.kept.push_back(update);
        }
    }

    /// Reads updates of `task_id` until one reaches `until`; returns them all.
    async fn until(&mut self, task_id: &str, until: TaskState) -> Vec<TaskStatusUpdate> {
        let mut seen = Vec::new();
        loop {
            let Some(update) = self.next(task_id).await else {
                panic!("no update reaching {until:?} for {task_id}; saw {seen:?}");
            };
            let state = state_of(&update);
            seen.push(update);
            if state == until {
                return seen;
            }
        }
    }

    /// Waits a moment and asserts nothing more was reported.
    async fn assert_quiet(&mut self) {
        assert!(self.kept.is_empty(), "unexpected updates {:?}", self.kept);
        let next = tokio::time::timeout(Duration::from_millis(100), self.receiver.recv()).await;
        assert!(next.is_err(), "unexpected update {next:?}");
    }
}

/// The status of the last update seen.
fn last_status(seen: &[TaskStatusUpdate]) -> TaskStatus {
    seen.last()
        .and_then(|u| u.status.clone())
        .unwrap_or_default()
}

/// Assigns one task, to be running, as the only one.
async fn assign_one(worker: &Worker, id: &str) {
    worker
        .assign(complete(vec![task(
            id,
            TaskState::Running,
            TaskState::Assigned,
        )]))
        .await;
}

fn states(updates: &[TaskStatusUpdate]) -> Vec<TaskState> {
    updates.iter().map(state_of).collect()
}

#[tokio::test]
async fn a_task_walks_to_running() {
    let (fake, worker, mut updates) = start();
    assign_one(&worker, "t1").await;
    let seen = updates.until("t1", TaskState::Running).await;
    assert_eq!(
        states(&seen),
        [
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Ready,
            TaskState::Starting,
            TaskState::Running
        ]
    );
    let running = last_status(&seen);
    assert_eq!(running.message, "started");
    let container = running.container.unwrap_or_default();
    let fake_container = fake.container_of("t1").expect("container created");
    assert_eq!(container.container_id, fake_container.id);
    assert_eq!(container.pid, 4242);
    assert_eq!(fake_container.name, "web.1.t1");
    assert!(fake_container.running);
}

#[tokio::test]
async fn exits_end_complete_or_failed_with_the_code() {
    let (fake, worker, mut updates) = start();
    let tasks = vec![
        task("ok", TaskState::Running, TaskState::Assigned),
        task("bad", TaskState::Running, TaskState::Assigned),
    ];
    worker.assign(complete(tasks)).await;
    updates.until("ok", TaskState::Running).await;
    assert!(fake.exit("ok", 0));
    let done = updates.until("ok", TaskState::Complete).await;
    let status = done
        .last()
        .and_then(|u| u.status.clone())
        .unwrap_or_default();
    assert_eq!(status.message, "finished");
    assert_eq!(status.err, "");

    updates.until("bad", TaskState::Running).await;
    assert!(fake.exit("bad", 1));
    let failed = updates.until("bad", TaskState::Failed).await;
    let status = failed
        .last()
        .and_then(|u| u.status.clone())
        .unwrap_or_default();
    assert_eq!(status.err, "task: non-zero exit (1)");
    assert_eq!(status.container.map(|c| c.exit_code), Some(1));

    // Never restarted, and the exited containers stay until the tasks are removed.
    let again = vec![
        task("ok", TaskState::Running, TaskState::Complete),
        task("bad", TaskState::Running, TaskState::Failed),
    ];
    worker.assign(complete(again)).await;
    updates.assert_quiet().await;
    assert_eq!(fake.calls("start"), 2);
    assert_eq!(fake.containers().len(), 2);
}

#[tokio::test]
async fn desired_shutdown_stops_the_container_and_keeps_it() {
    let (fake, worker, mut updates) = start();
    assign_one(&worker, "t1").await;
    updates.until("t1", TaskState::Running).await;
    worker
        .assign(incremental(
            vec![task("t1", TaskState::Shutdown, TaskState::Running)],
            &[],
        ))
        .await;
    let seen = updates.until("t1", TaskState::Shutdown).await;
    let status = last_status(&seen);
    assert_eq!(
        status.container.map(|c| c.exit_code),
        Some(STOPPED_EXIT_CODE)
    );
    assert_eq!(fake.calls("stop"), 1);
    let container = fake.container_of("t1").expect("container kept");
    assert!(!container.running);
    // Only its sandbox goes: the stopped task has no network left to hold.
    assert!(fake.sandbox_of("t1").is_none(), "sandbox removed");
    assert_eq!(fake.calls("remove"), 1);
}

#[tokio::test]
async fn desired_ready_prepares_without_starting() {
    let (fake, worker, mut updates) = start();
    worker
        .assign(complete(vec![task(
            "t1",
            TaskState::Ready,
            TaskState::Assigned,
        )]))
        .await;
    updates.until("t1", TaskState::Ready).await;
    updates.assert_quiet().await;
    assert_eq!(fake.calls("start"), 0);

    worker
        .assign(incremental(
            vec![task("t1", TaskState::Running, TaskState::Ready)],
            &[],
        ))
        .await;
    let seen = updates.until("t1", TaskState::Running).await;
    assert_eq!(states(&seen), [TaskState::Starting, TaskState::Running]);
    assert_eq!(fake.calls("prepare"), 1);
}

#[tokio::test]
async fn a_complete_set_removes_the_tasks_it_lacks() {
    let (fake, worker, mut updates) = start();
    let both = vec![
        task("a", TaskState::Running, TaskState::Assigned),
        task("b", TaskState::Running, TaskState::Assigned),
    ];
    worker.assign(complete(both)).await;
    updates.until("a", TaskState::Running).await;
    updates.until("b", TaskState::Running).await;

    worker
        .assign(complete(vec![task(
            "b",
            TaskState::Running,
            TaskState::Running,
        )]))
        .await;
    updates.until("a", TaskState::Shutdown).await;
    tokio::time::timeout(WAIT, async {
        while fake.container_of("a").is_some() || worker.statuses().len() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a's container removed and a forgotten");
    assert!(fake.container_of("b").is_some_and(|c| c.running));
    assert_eq!(worker.statuses()[0].task_id, "b");
}

#[tokio::test]
async fn desired_remove_stops_removes_and_forgets() {
    let (fake, worker, mut updates) = start();
    let tasks = vec![
        task("up", TaskState::Running, TaskState::Assigned),
        task("done", TaskState::Running, TaskState::Assigned),
    ];
    worker.assign(complete(tasks)).await;
    updates.until("up", TaskState::Running).await;
    updates.until("done", TaskState::Running).await;
    fake.exit("done", 0);
    updates.until("done", TaskState::Complete).await;

    let removed = vec![
        task("up", TaskState::Remove, TaskState::Running),
        task("done", TaskState::Remove, TaskState::Complete),
    ];
    worker.assign(incremental(removed, &[])).await;
    updates.until("up", TaskState::Shutdown).await;
    tokio::time::timeout(WAIT, async {
        while !fake.containers().is_empty() || !worker.statuses().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both containers removed and the tasks forgotten");
    assert_eq!(
        fake.calls("stop"),
        1,
        "only the running container is stopped"
    );
    updates.assert_quiet().await;
}

#[tokio::test]
async fn an_incremental_removal_removes_an_exited_container() {
    let (fake, worker, mut updates) = start();
    assign_one(&worker, "t1").await;
    updates.until("t1", TaskState::Running).await;
    fake.exit("t1", 0);
    updates.until("t1", TaskState::Complete).await;
    worker.assign(incremental(Vec::new(), &["t1"])).await;
    tokio::time::timeout(WAIT, async {
        while fake.container_of("t1").is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("container removed");
    assert_eq!(fake.calls("stop"), 0, "an exited container needs no stop");
    updates.assert_quiet().await;
}

#[tokio::test]
async fn a_restarted_worker_adopts_running_containers() {
    let fake = Arc::new(FakeExecutor::new());
    let kept = fake.add_container("t1", true, 0);
    let exited = fake.add_container("t2", false, 3);
    fake.add_container("stale", true, 0);
    let (worker, receiver) = Worker::new(fake.clone(), "node1".to_owned(), None, None);
    let mut updates = Updates {
        receiver,
        kept: VecDeque::new(),
    };
    let tasks = vec![
        task("t1", TaskState::Running, TaskState::Running),
        task("t2", TaskState::Running, TaskState::Running),
    ];
    worker.assign(complete(tasks)).await;

    let failed = updates.until("t2", TaskState::Failed).await;
    let status = failed
        .last()
        .and_then(|u| u.status.clone())
        .unwrap_or_default();
    assert_eq!(
        status.container.map(|c| (c.container_id, c.exit_code)),
        Some((exited, 3))
    );

    let adopted = updates.until("t1", TaskState::Running).await;
    let container = adopted[0].status.as_ref().and_then(|s| s.container.clone());
    assert_eq!(
        container.map(|c| (c.container_id, c.pid)),
        Some((kept.clone(), 4242))
    );
    assert!(fake.exit("t1", 0));
    let done = updates.until("t1", TaskState::Complete).await;
    let status = done
        .last()
        .and_then(|u| u.status.clone())
        .unwrap_or_default();
    assert_eq!(status.container.map(|c| c.container_id), Some(kept));
    assert_eq!(fake.calls("prepare"), 0);
    assert_eq!(fake.calls("start"), 0);
    tokio::time::timeout(WAIT, async {
        while fake.container_of("stale").is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the stale container removed");
}

/// A network that records which tasks are attached, with which pid.
#[derive(Default)]
struct Attachments(std::sync::Mutex<Vec<(String, u32)>>);

impl TaskNetwork for Attachments {
    fn attach<'a>(&'a self, task: &'a Task, pid: u32) -> BoxFuture<'a, Result<(), OverlayError>> {
        self.0.lock().unwrap().push((task.id.clone(), pid));
        Box::pin(async { Ok(()) })
    }
    fn detach<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, ()> {
        self.0.lock().unwrap().retain(|(id, _)| id != task_id);
        Box::pin(async {})
    }
    fn announce<'a>(&'a self, _task_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    fn drain<'a>(&'a self, _task_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

#[tokio::test]
async fn a_readopted_running_container_is_attached_at_once() {
    let fake = Arc::new(FakeExecutor::new());
    fake.add_container("t1", true, 0);
    let network = Arc::new(Attachments::default());
    let (worker, receiver) = Worker::new(
        fake.clone(),
        "node1".to_owned(),
        Some(network.clone() as Arc<dyn TaskNetwork>),
        None,
    );
    let mut updates = Updates {
        receiver,
        kept: VecDeque::new(),
    };
    worker
        .assign(complete(vec![task(
            "t1",
            TaskState::Running,
            TaskState::Running,
        )]))
        .await;
    updates.until("t1", TaskState::Running).await;
    // No further command comes, and the container keeps running: the attachment must not wait
    // for either.
    tokio::time::timeout(WAIT, async {
        while network.0.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the re-adopted container attached to its networks");
    assert_eq!(*network.0.lock().unwrap(), [("t1".to_owned(), 4242)]);
    assert_eq!(fake.calls("start"), 0);
}

#[tokio::test]
async fn a_running_task_whose_container_vanished_fails() {
    let (_fake, worker, mut updates) = start();
    worker
        .assign(complete(vec![task(
            "t1",
            TaskState::Running,
            TaskState::Running,
        )]))
        .await;
    let failed = updates.until("t1", TaskState::Failed).await;
    let status = failed
        .last()
        .and_then(|u| u.status.clone())
        .unwrap_or_default();
    assert_eq!(status.err, "No such container for task t1");
}

#[tokio::test]
async fn a_prepare_failure_rejects_the_task() {
    let (fake, worker, mut updates) = start();
    fake.fail_prepare("t1", "No such image: nope:latest");
    assign_one(&worker, "t1").await;
    let seen = updates.until("t1", TaskState::Rejected).await;
    assert_eq!(
        states(&seen),
        [
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Rejected
        ]
    );
    let status = last_status(&seen);
    assert_eq!(status.err, "create container: No such image: nope:latest");
    updates.assert_quiet().await;
    assert_eq!(fake.calls("start"), 0);
}

#[tokio::test]
async fn shutdown_leaves_containers_running() {
    let (fake, worker, mut updates) = start();
    assign_one(&worker, "t1").await;
    updates.until("t1", TaskState::Running).await;
    worker.shutdown().await;
    worker.assign(complete(Vec::new())).await;
    assert!(fake.container_of("t1").is_some_and(|c| c.running));
    assert_eq!(fake.calls("stop"), 0);
    assert_eq!(fake.calls("remove"), 0);
}

#[tokio::test]
async fn statuses_and_logs_follow_the_tasks() {
    let (fake, worker, mut updates) = start();
    assign_one(&worker, "t1").await;
    updates.until("t1", TaskState::Running).await;
    let statuses = worker.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(state_of(&statuses[0]), TaskState::Running);

    fake.push_log("t1", false, b"one\n");
    fake.push_log("t1", true, b"two\n");
    fake.push_log("t1", false, b"three\n");
    let sub = LogSubscription {
        subscription_id: "s".to_owned(),
        task_ids: vec!["t1".to_owned(), "elsewhere".to_owned()],
        tail: 2,
        ..Default::default()
    };
    let lines: Vec<_> = worker.logs(&sub).collect().await;
    let got: Vec<_> = lines
        .iter()
        .map(|m| (m.stderr, m.data.as_slice()))
        .collect();
    assert_eq!(got, [(true, &b"two\n"[..]), (false, &b"three\n"[..])]);
    assert!(
        lines
            .iter()
            .all(|m| m.service_name == "web" && m.slot == 1 && m.node_id == "node1")
    );
}

/// A task network that records what it was asked, against the executor's state at that moment,
/// and fails the attaches of the tasks it is told to.
#[derive(Default)]
struct RecordingNetwork {
    executor: std::sync::Mutex<Option<Arc<FakeExecutor>>>,
    /// (task id, pid, whether the task's own container existed then)
    attached: std::sync::Mutex<Vec<(String, u32, bool)>>,
    detached: std::sync::Mutex<Vec<String>>,
    failing: std::sync::Mutex<Vec<String>>,
    /// Tasks announced as backends, and drained out of the backend sets, in order.
    announced: std::sync::Mutex<Vec<String>>,
    drained: std::sync::Mutex<Vec<String>>,
}

impl crate::network::TaskNetwork for RecordingNetwork {
    fn attach<'a>(
        &'a self,
        task: &'a Task,
        pid: u32,
    ) -> futures::future::BoxFuture<'a, Result<(), crate::network::OverlayError>> {
        let executor = self.executor.lock().unwrap().clone().expect("executor");
        let created = executor.container_of(&task.id).is_some();
        self.attached
            .lock()
            .unwrap()
            .push((task.id.clone(), pid, created));
        let fails = self.failing.lock().unwrap().contains(&task.id);
        Box::pin(async move {
            if fails {
                Err(crate::network::OverlayError::Attachment {
                    network: "front".to_owned(),
                    reason: "no address left".to_owned(),
                })
            } else {
                Ok(())
            }
        })
    }

    fn detach<'a>(&'a self, task_id: &'a str) -> futures::future::BoxFuture<'a, ()> {
        self.detached.lock().unwrap().push(task_id.to_owned());
        Box::pin(async {})
    }

    fn announce<'a>(&'a self, task_id: &'a str) -> futures::future::BoxFuture<'a, ()> {
        self.announced.lock().unwrap().push(task_id.to_owned());
        Box::pin(async {})
    }

    fn drain<'a>(&'a self, task_id: &'a str) -> futures::future::BoxFuture<'a, ()> {
        self.drained.lock().unwrap().push(task_id.to_owned());
        Box::pin(async {})
    }
}

fn start_with_network() -> (Arc<FakeExecutor>, Arc<RecordingNetwork>, Worker, Updates) {
    let fake = Arc::new(FakeExecutor::new());
    let network = Arc::new(RecordingNetwork::default());
    *network.executor.lock().unwrap() = Some(fake.clone());
    let (worker, receiver) = Worker::new(
        fake.clone(),
        "node1".to_owned(),
        Some(network.clone()),
        None,
    );
    let updates = Updates {
        receiver,
        kept: VecDeque::new(),
    };
    (fake, network, worker, updates)
}

#[tokio::test]
async fn networks_are_plugged_into_the_sandbox_before_the_task_container_exists() {
    let (fake, network, worker, mut updates) = start_with_network();
    assign_one(&worker, "t1").await;
    updates.until("t1", TaskState::Running).await;
    let sandbox = fake.sandbox_of("t1").expect("a sandbox");
    assert!(sandbox.running);
    let container = fake.container_of("t1").expect("the task's container");
    assert_eq!(container.joined.as_deref(), Some(sandbox.id.as_str()));
    let attached = network.attached.lock().unwrap().clone();
    assert_eq!(
        attached,
        [("t1".to_owned(), 4242, false)],
        "attached once, before create"
    );
}

#[tokio::test]
async fn a_failed_attach_rejects_the_task_before_its_process_runs() {
    let (fake, network, worker, mut updates) = start_with_network();
    network.failing.lock().unwrap().push("t1".to_owned());
    assign_one(&worker, "t1").await;
    let seen = updates.until("t1", TaskState::Rejected).await;
    let status = last_status(&seen);
    assert_eq!(status.message, "attaching networks");
    assert!(status.err.contains("no address left"), "{}", status.err);
    assert!(
        fake.container_of("t1").is_none(),
        "no task container was made"
    );
    assert_eq!(fake.calls("start"), 0);
    assert!(fake.sandbox_of("t1").is_none(), "the sandbox was removed");
    assert_eq!(network.detached.lock().unwrap().clone(), ["t1".to_owned()]);
}
