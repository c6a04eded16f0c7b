//! Rolling updates through the running orchestrators: start-first order, and the failure action
//! pausing or rolling back, with the update's state read back from the store.

use super::*;
use crate::store::now_nanos;
use mesh_proto::{UpdateConfig, UpdateFailureAction, UpdateOrder, UpdateState, UpdateStatus};
use std::collections::BTreeSet;

fn config(action: UpdateFailureAction, order: UpdateOrder, monitor_ns: i64) -> UpdateConfig {
    UpdateConfig {
        parallelism: 1,
        delay_ns: 0,
        failure_action: action as i32,
        monitor_ns: Some(monitor_ns),
        max_failure_ratio: 0.0,
        order: order as i32,
    }
}

/// Writes a new image as the API does: the old spec kept as previous, a new version, an update.
async fn update_image(store: &Store, id: &str, image: &str, update: UpdateConfig) {
    modify::<Service>(store, id, |s| {
        s.previous_spec = s.spec.clone();
        s.previous_spec_version = s.spec_version;
        s.spec_version += 1;
        let spec = s.spec.as_mut().expect("spec");
        spec.update_config = Some(update);
        spec.rollback_config = Some(config(
            UpdateFailureAction::Pause,
            UpdateOrder::StopFirst,
            0,
        ));
        let container = spec
            .task
            .as_mut()
            .and_then(|t| t.container.as_mut())
            .expect("container");
        container.image = image.into();
        s.update_status = Some(UpdateStatus {
            state: UpdateState::Updating as i32,
            started_at: now_nanos(),
            ..Default::default()
        });
    })
    .await;
}

fn update_state(tx: &ReadTx<'_>, id: &str) -> UpdateState {
    tx.get::<Service>(id)
        .and_then(|s| s.update_status)
        .and_then(|s| UpdateState::try_from(s.state).ok())
        .unwrap_or(UpdateState::Unknown)
}

/// A running replicated service of `replicas` tasks on node n1, all reported running.
async fn running_service(store: &Store, name: &str, replicas: u64) -> String {
    create(store, node("n1", "east")).await;
    let svc = replicated(name, replicas, None);
    let id = svc.id.clone();
    create(store, svc).await;
    wait_for(store, "the tasks", |tx| {
        live(tx, &id).len() == replicas as usize
    })
    .await;
    for t in store.view(|tx| live(tx, &id)) {
        report(store, &t.id, TaskState::Running, 0, Some("n1")).await;
    }
    id
}

fn running(tx: &ReadTx<'_>, id: &str) -> usize {
    tx.find::<Task>(|t| {
        t.service_id == id
            && task::desired(t) == TaskState::Running
            && task::state(t) == TaskState::Running
    })
    .len()
}

#[tokio::test]
async fn start_first_keeps_the_old_task_until_its_replacement_runs() {
    let (store, _stop) = start();
    let id = running_service(&store, "web", 3).await;
    let start_first = config(UpdateFailureAction::Pause, UpdateOrder::StartFirst, 0);
    update_image(&store, &id, "busybox:2", start_first).await;
    for updated in 1..=3usize {
        wait_for(&store, "the next replacement", |tx| {
            tx.find::<Task>(|t| t.service_id == id && t.spec_version == 2)
                .len()
                == updated
        })
        .await;
        let fresh = store.view(|tx| {
            tx.find::<Task>(|t| {
                t.service_id == id && t.spec_version == 2 && task::state(t) != TaskState::Running
            })
        });
        assert_eq!(fresh.len(), 1, "one replacement in flight at a time");
        // Until it runs, every old task still runs: capacity never drops.
        assert_eq!(store.view(|tx| running(tx, &id)), 3, "slot {updated}");
        report(&store, &fresh[0].id, TaskState::Running, 0, Some("n1")).await;
        wait_for(&store, "the old task of the slot stopped", |tx| {
            let old_live =
                tx.find::<Task>(|t| t.service_id == id && t.spec_version == 1 && task::is_live(t));
            old_live.len() == 3 - updated
        })
        .await;
    }
    wait_for(&store, "the update completed", |tx| {
        update_state(tx, &id) == UpdateState::Completed
    })
    .await;
    let status = store
        .view(|tx| tx.get::<Service>(&id))
        .and_then(|s| s.update_status)
        .expect("status");
    assert_eq!(status.message, "update completed");
    assert!(status.completed_at >= status.started_at);
}

/// The old tasks of a start-first update stop once their replacements run, also when the update's
/// status was cleared meanwhile (as a change of anything but the task template does): a task
/// starting to run still calls for a plan in a service that has had more than one spec.
#[tokio::test]
async fn start_first_old_tasks_stop_when_replacements_run_after_the_status_is_cleared() {
    let (store, _stop) = start();
    let id = running_service(&store, "web", 3).await;
    let all_at_once = UpdateConfig {
        parallelism: 0,
        ..config(UpdateFailureAction::Pause, UpdateOrder::StartFirst, 0)
    };
    update_image(&store, &id, "busybox:2", all_at_once).await;
    wait_for(&store, "the replacements", |tx| {
        tx.find::<Task>(|t| t.service_id == id && t.spec_version == 2)
            .len()
            == 3
    })
    .await;
    modify::<Service>(&store, &id, |s| s.update_status = None).await;
    assert_eq!(
        store.view(|tx| running(tx, &id)),
        3,
        "the old tasks still run"
    );
    let fresh = store.view(|tx| tx.find::<Task>(|t| t.service_id == id && t.spec_version == 2));
    // Placed and starting first, so that running is the only change the last report makes.
    for t in &fresh {
        report(&store, &t.id, TaskState::Starting, 0, Some("n1")).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        store.view(|tx| running(tx, &id)),
        3,
        "the old tasks still run"
    );
    for t in &fresh {
        report(&store, &t.id, TaskState::Running, 0, None).await;
    }
    wait_for(&store, "every old task stopped", |tx| {
        tx.find::<Task>(|t| t.service_id == id && t.spec_version == 1 && task::is_live(t))
            .is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_failed_replacement_pauses_the_update() {
    let (store, _stop) = start();
    let id = running_service(&store, "web", 3).await;
    let pause = config(
        UpdateFailureAction::Pause,
        UpdateOrder::StopFirst,
        5_000_000_000,
    );
    update_image(&store, &id, "broken", pause).await;
    wait_for(&store, "a replacement", |tx| {
        tx.find::<Task>(|t| t.service_id == id && t.spec_version == 2)
            .len()
            == 1
    })
    .await;
    let fresh = store.view(|tx| tx.find::<Task>(|t| t.service_id == id && t.spec_version == 2));
    report(&store, &fresh[0].id, TaskState::Failed, 1, Some("n1")).await;
    wait_for(&store, "the update paused", |tx| {
        update_state(tx, &id) == UpdateState::Paused
    })
    .await;
    let status = store
        .view(|tx| tx.get::<Service>(&id))
        .and_then(|s| s.update_status)
        .expect("status");
    assert_eq!(
        status.message,
        format!(
            "update paused due to failure or early termination of task {}",
            fresh[0].id
        )
    );
    settle(&store, "sentinel").await;
    // No other slot was touched, and the two old tasks there still run.
    let touched: BTreeSet<u64> = store
        .view(|tx| tx.find::<Task>(|t| t.service_id == id && t.spec_version == 2))
        .iter()
        .map(|t| t.slot)
        .collect();
    assert_eq!(touched, BTreeSet::from([fresh[0].slot]));
    assert_eq!(store.view(|tx| running(tx, &id)), 2);
}

#[tokio::test]
async fn failure_action_rollback_returns_to_the_previous_spec() {
    let (store, _stop) = start();
    let id = running_service(&store, "web", 2).await;
    let rollback = config(
        UpdateFailureAction::Rollback,
        UpdateOrder::StopFirst,
        5_000_000_000,
    );
    update_image(&store, &id, "broken", rollback).await;
    wait_for(&store, "a replacement", |tx| {
        !tx.find::<Task>(|t| t.service_id == id && t.spec_version == 2)
            .is_empty()
    })
    .await;
    let fresh = store.view(|tx| tx.find::<Task>(|t| t.service_id == id && t.spec_version == 2));
    report(&store, &fresh[0].id, TaskState::Failed, 1, Some("n1")).await;
    wait_for(&store, "the rollback started", |tx| {
        tx.get::<Service>(&id).is_some_and(|s| s.spec_version == 1)
    })
    .await;
    let service = store.view(|tx| tx.get::<Service>(&id)).expect("service");
    let image = |s: &Service| {
        s.spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.container.as_ref())
            .map(|c| c.image.clone())
    };
    assert_eq!(image(&service).as_deref(), Some("busybox"));
    assert!(
        service.previous_spec.is_none(),
        "as Swarm: no previous spec after"
    );
    let status = service.update_status.expect("status");
    assert!(
        status
            .message
            .starts_with("update rolled back due to failure or early termination of task"),
        "{}",
        status.message
    );
    // The slot gets a task of the previous spec again; once it runs the rollback completes.
    wait_for(&store, "the slot rolled back", |tx| {
        live(tx, &id).iter().all(|t| t.spec_version == 1) && live(tx, &id).len() == 2
    })
    .await;
    for t in store.view(|tx| live(tx, &id)) {
        if task::state(&t) != TaskState::Running {
            report(&store, &t.id, TaskState::Running, 0, Some("n1")).await;
        }
    }
    wait_for(&store, "the rollback completed", |tx| {
        update_state(tx, &id) == UpdateState::RollbackCompleted
    })
    .await;
}

#[tokio::test]
async fn stop_first_starts_the_replacement_once_the_old_task_stopped() {
    let (store, _stop) = start();
    let id = running_service(&store, "web", 2).await;
    let stop_first = config(UpdateFailureAction::Pause, UpdateOrder::StopFirst, 0);
    update_image(&store, &id, "busybox:2", stop_first).await;
    wait_for(&store, "a replacement", |tx| {
        !tx.find::<Task>(|t| t.service_id == id && t.spec_version == 2)
            .is_empty()
    })
    .await;
    let fresh = store.view(|tx| tx.find::<Task>(|t| t.service_id == id && t.spec_version == 2));
    assert_eq!(
        task::desired(&fresh[0]),
        TaskState::Ready,
        "waits for the old task"
    );
    let old = store
        .view(|tx| tx.get::<Task>(&fresh[0].replaces))
        .expect("the replaced task");
    assert_eq!(task::desired(&old), TaskState::Shutdown);
    settle(&store, "sentinel").await;
    let still = store
        .view(|tx| tx.get::<Task>(&fresh[0].id))
        .expect("replacement");
    assert_eq!(
        task::desired(&still),
        TaskState::Ready,
        "the old task still runs"
    );
    report(&store, &old.id, TaskState::Shutdown, 0, None).await;
    wait_for(&store, "the replacement started", |tx| {
        tx.get::<Task>(&fresh[0].id)
            .is_some_and(|t| task::desired(&t) == TaskState::Running)
    })
    .await;
}
