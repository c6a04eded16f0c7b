//! Health checks against the fake executor: a task runs (and is announced as a backend) only
//! once healthy; an unhealthy one leaves the backend sets, fails and is stopped; a restarted
//! agent judges the containers it re-adopts by their health.

use super::*;
use crate::exec::Health;
use crate::worker::controller::UNHEALTHY;

/// Waits until `check` holds, or fails the test after [`WAIT`].
async fn eventually(what: &str, check: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

#[tokio::test]
async fn a_task_with_a_health_check_runs_only_once_healthy() {
    let (fake, network, worker, mut updates) = start_with_network();
    fake.health_check("t1");
    assign_one(&worker, "t1").await;
    updates.until("t1", TaskState::Starting).await;
    eventually("the container started", || {
        fake.container_of("t1").is_some_and(|c| c.running)
    })
    .await;
    updates.assert_quiet().await;
    assert!(
        network.announced.lock().unwrap().is_empty(),
        "a task not healthy yet is no backend"
    );

    assert!(fake.set_health("t1", Some(Health::Healthy)));
    let seen = updates.until("t1", TaskState::Running).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    eventually("announced once running", || {
        network.announced.lock().unwrap().as_slice() == ["t1"]
    })
    .await;
}

#[tokio::test]
async fn a_task_without_a_health_check_is_announced_once_running() {
    let (_fake, network, worker, mut updates) = start_with_network();
    assign_one(&worker, "t1").await;
    updates.until("t1", TaskState::Running).await;
    eventually("announced", || {
        network.announced.lock().unwrap().as_slice() == ["t1"]
    })
    .await;
}

#[tokio::test]
async fn an_unhealthy_task_leaves_the_backends_first_then_fails_and_stops() {
    let (fake, network, worker, mut updates) = start_with_network();
    fake.health_check("t1");
    assign_one(&worker, "t1").await;
    updates.until("t1", TaskState::Starting).await;
    eventually("the container started", || {
        fake.container_of("t1").is_some_and(|c| c.running)
    })
    .await;
    fake.set_health("t1", Some(Health::Healthy));
    updates.until("t1", TaskState::Running).await;

    fake.set_health("t1", Some(Health::Unhealthy));
    let seen = updates.until("t1", TaskState::Failed).await;
    let status = last_status(&seen);
    assert_eq!(status.err, UNHEALTHY);
    assert_eq!(status.message, "unhealthy");
    assert_eq!(
        network.drained.lock().unwrap().as_slice(),
        ["t1"],
        "withdrawn before the failure is reported"
    );
    eventually("the container stopped", || {
        fake.container_of("t1").is_some_and(|c| !c.running)
    })
    .await;
    eventually("detached", || {
        network.detached.lock().unwrap().as_slice() == ["t1"]
    })
    .await;
    assert_eq!(network.announced.lock().unwrap().as_slice(), ["t1"]);
}

#[tokio::test]
async fn a_task_unhealthy_from_the_start_is_never_announced() {
    let (fake, network, worker, mut updates) = start_with_network();
    fake.health_check("t1");
    assign_one(&worker, "t1").await;
    updates.until("t1", TaskState::Starting).await;
    eventually("the container started", || {
        fake.container_of("t1").is_some_and(|c| c.running)
    })
    .await;
    fake.set_health("t1", Some(Health::Unhealthy));
    let seen = updates.until("t1", TaskState::Failed).await;
    assert_eq!(last_status(&seen).err, UNHEALTHY);
    assert!(network.announced.lock().unwrap().is_empty());
    eventually("the container stopped", || {
        fake.container_of("t1").is_some_and(|c| !c.running)
    })
    .await;
}

#[tokio::test]
async fn a_container_that_exits_while_starting_fails_as_an_exit() {
    let (fake, _network, worker, mut updates) = start_with_network();
    fake.health_check("t1");
    assign_one(&worker, "t1").await;
    updates.until("t1", TaskState::Starting).await;
    eventually("the container started", || {
        fake.container_of("t1").is_some_and(|c| c.running)
    })
    .await;
    assert!(fake.exit("t1", 3));
    let seen = updates.until("t1", TaskState::Failed).await;
    assert_eq!(last_status(&seen).err, "task: non-zero exit (3)");
}

/// A restarted agent finds the task's container still running under a health check.
async fn readopt(
    state: TaskState,
    health: Health,
) -> (Arc<FakeExecutor>, Arc<RecordingNetwork>, Worker, Updates) {
    let (fake, network, worker, updates) = start_with_network();
    fake.add_container("t1", true, 0);
    fake.set_health("t1", Some(health));
    worker
        .assign(complete(vec![task("t1", TaskState::Running, state)]))
        .await;
    (fake, network, worker, updates)
}

#[tokio::test]
async fn a_readopted_starting_container_waits_for_its_verdict() {
    let (fake, network, _worker, mut updates) =
        readopt(TaskState::Starting, Health::Starting).await;
    // The container it found is reported, in the state the manager had.
    let seen = updates.until("t1", TaskState::Starting).await;
    assert_eq!(last_status(&seen).container.map(|c| c.pid), Some(4242));
    eventually("re-attached", || {
        !network.attached.lock().unwrap().is_empty()
    })
    .await;
    updates.assert_quiet().await;
    assert!(network.announced.lock().unwrap().is_empty());
    assert_eq!(fake.calls("start"), 0);
    fake.set_health("t1", Some(Health::Healthy));
    updates.until("t1", TaskState::Running).await;
    eventually("announced", || {
        network.announced.lock().unwrap().as_slice() == ["t1"]
    })
    .await;
}

#[tokio::test]
async fn a_readopted_unhealthy_container_is_withdrawn_and_fails() {
    let (fake, network, _worker, mut updates) =
        readopt(TaskState::Running, Health::Unhealthy).await;
    let seen = updates.until("t1", TaskState::Failed).await;
    assert_eq!(last_status(&seen).err, UNHEALTHY);
    assert_eq!(
        network.attached.lock().unwrap().len(),
        1,
        "re-attached, so that what the earlier run published is withdrawn"
    );
    assert_eq!(network.drained.lock().unwrap().as_slice(), ["t1"]);
    assert!(
        network.announced.lock().unwrap().is_empty(),
        "never announced again"
    );
    eventually("the container stopped", || {
        fake.container_of("t1").is_some_and(|c| !c.running)
    })
    .await;
}

#[tokio::test]
async fn a_readopted_healthy_container_runs_and_is_announced() {
    let (fake, network, _worker, mut updates) = readopt(TaskState::Starting, Health::Healthy).await;
    updates.until("t1", TaskState::Running).await;
    eventually("announced", || {
        network.announced.lock().unwrap().as_slice() == ["t1"]
    })
    .await;
    assert_eq!(fake.calls("start"), 0);
}
