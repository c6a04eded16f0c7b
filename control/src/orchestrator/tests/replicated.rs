//! Replicated services: creation, scaling, restarts and rolling updates.

use super::*;

#[tokio::test]
async fn creates_and_scales_replicas() {
    let (store, _stop) = start();
    create(&store, node("n1", "east")).await;
    create(&store, node("n2", "east")).await;
    let svc = replicated("web", 3, None);
    let id = svc.id.clone();
    create(&store, svc).await;
    wait_for(&store, "3 tasks", |tx| slots(&live(tx, &id)) == [1, 2, 3]).await;
    let first = store.view(|tx| live(tx, &id));
    assert!(
        first
            .iter()
            .all(|t| t.spec_version == 1 && t.node_id.is_empty())
    );

    let set_replicas = |n| {
        move |s: &mut Service| {
            if let Some(spec) = s.spec.as_mut() {
                spec.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
                    replicas: n,
                }));
            }
        }
    };
    modify::<Service>(&store, &id, set_replicas(5)).await;
    wait_for(&store, "5 tasks", |tx| {
        slots(&live(tx, &id)) == [1, 2, 3, 4, 5]
    })
    .await;
    let kept: Vec<String> = store
        .view(|tx| live(tx, &id))
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert!(
        first.iter().all(|t| kept.contains(&t.id)),
        "scaling up keeps the tasks"
    );

    // Slot 2 runs on a node with another task of the service; the others are unassigned.
    report(&store, &kept[0], TaskState::Running, 0, Some("n1")).await;
    report(&store, &kept[1], TaskState::Running, 0, Some("n2")).await;
    report(&store, &kept[2], TaskState::Running, 0, Some("n2")).await;
    modify::<Service>(&store, &id, set_replicas(1)).await;
    wait_for(&store, "1 task", |tx| live(tx, &id).len() == 1).await;
    let left = store.view(|tx| live(tx, &id));
    assert_eq!(
        left[0].id, kept[0],
        "a running task on the least busy node stays"
    );
    let stopped = store.view(|tx| tx.find::<Task>(|t| t.service_id == id && !task::is_live(t)));
    assert_eq!(stopped.len(), 4);
    assert!(
        stopped
            .iter()
            .all(|t| task::desired(t) == TaskState::Shutdown)
    );
}

#[tokio::test]
async fn failed_task_restarts_after_its_delay() {
    let (store, _stop) = start();
    let delay = Duration::from_millis(50);
    let svc = replicated("web", 1, Some(policy(RestartCondition::Any, 50_000_000, 0)));
    let id = svc.id.clone();
    create(&store, svc).await;
    wait_for(&store, "a task", |tx| live(tx, &id).len() == 1).await;
    let old = store.view(|tx| live(tx, &id)).remove(0);
    report(&store, &old.id, TaskState::Failed, 1, Some("n1")).await;

    wait_for(&store, "a started replacement", |tx| {
        live(tx, &id)
            .iter()
            .any(|t| t.id != old.id && task::desired(t) == TaskState::Running)
    })
    .await;
    let new = store.view(|tx| live(tx, &id)).remove(0);
    assert_eq!(new.slot, old.slot);
    let meta = new.meta.expect("stored task has meta");
    assert!(meta.updated_at - meta.created_at >= delay.as_nanos() as i64);
    let old = store
        .view(|tx| tx.get::<Task>(&old.id))
        .expect("old task kept");
    assert_eq!(task::desired(&old), TaskState::Shutdown);
}

#[tokio::test]
async fn restart_condition_none_keeps_the_slot() {
    let (store, _stop) = start();
    let svc = replicated("once", 2, Some(policy(RestartCondition::None, 0, 0)));
    let id = svc.id.clone();
    create(&store, svc).await;
    wait_for(&store, "2 tasks", |tx| live(tx, &id).len() == 2).await;
    let done = store.view(|tx| live(tx, &id)).remove(0);
    report(&store, &done.id, TaskState::Complete, 0, Some("n1")).await;
    settle(&store, "sentinel").await;
    let tasks = store.view(|tx| tx.find::<Task>(|t| t.service_id == id));
    assert_eq!(tasks.len(), 2, "no replacement: {tasks:#?}");
    assert!(tasks.iter().all(|t| task::desired(t) == TaskState::Running));
}

#[tokio::test]
async fn restarts_stop_after_max_attempts() {
    let (store, _stop) = start();
    let svc = replicated("flaky", 1, Some(policy(RestartCondition::OnFailure, 0, 2)));
    let id = svc.id.clone();
    create(&store, svc).await;
    for attempt in 0..3 {
        wait_for(&store, "a runnable task", |tx| {
            let live = live(tx, &id);
            live.len() == 1 && task::state(&live[0]) < TaskState::Assigned
        })
        .await;
        let current = store.view(|tx| live(tx, &id)).remove(0);
        report(&store, &current.id, TaskState::Failed, 2, Some("n1")).await;
        if attempt == 2 {
            break;
        }
        wait_for(&store, "the replacement", |tx| {
            live(tx, &id).iter().all(|t| t.id != current.id)
        })
        .await;
    }
    settle(&store, "sentinel").await;
    let tasks = store.view(|tx| tx.find::<Task>(|t| t.service_id == id));
    assert_eq!(tasks.len(), 3, "the first run and two restarts");
    let last = store.view(|tx| live(tx, &id));
    assert_eq!(last.len(), 1);
    assert_eq!(
        task::state(&last[0]),
        TaskState::Failed,
        "stays failed, holding its slot"
    );
}

#[tokio::test]
async fn lost_node_tasks_restart_elsewhere() {
    let (store, _stop) = start();
    create(&store, node("n1", "east")).await;
    create(&store, node("n2", "east")).await;
    let svc = replicated("web", 2, Some(policy(RestartCondition::Any, 0, 0)));
    let id = svc.id.clone();
    create(&store, svc).await;
    wait_for(&store, "2 tasks", |tx| live(tx, &id).len() == 2).await;
    let tasks = store.view(|tx| live(tx, &id));
    report(&store, &tasks[0].id, TaskState::Running, 0, Some("n1")).await;
    report(&store, &tasks[1].id, TaskState::Running, 0, Some("n2")).await;
    modify::<Node>(&store, "n1", |n| {
        n.status.get_or_insert_with(Default::default).state = NodeState::Down as i32;
    })
    .await;
    wait_for(&store, "a replacement for n1's task, to run", |tx| {
        let live = live(tx, &id);
        live.len() == 2
            && live
                .iter()
                .all(|t| t.node_id != "n1" && task::desired(t) == TaskState::Running)
    })
    .await;
    let lost = store
        .view(|tx| tx.get::<Task>(&tasks[0].id))
        .expect("lost task kept");
    assert_eq!(task::desired(&lost), TaskState::Shutdown);
}

/// A placement alone does not plan the service again, but one on a node already down (the
/// scheduler's view was behind) is a lost task: it is replaced.
#[tokio::test]
async fn a_task_placed_on_a_node_already_down_is_replaced() {
    let (store, _stop) = start();
    create(&store, node("n1", "east")).await;
    let mut down = node("n2", "east");
    down.status.get_or_insert_with(Default::default).state = NodeState::Down as i32;
    create(&store, down).await;
    let svc = replicated("web", 2, Some(policy(RestartCondition::Any, 0, 0)));
    let id = svc.id.clone();
    create(&store, svc).await;
    wait_for(&store, "2 tasks", |tx| live(tx, &id).len() == 2).await;
    let tasks = store.view(|tx| live(tx, &id));
    let place = |node: &'static str| {
        move |t: &mut Task| {
            t.node_id = node.into();
            t.status.get_or_insert_with(Default::default).state = TaskState::Assigned as i32;
        }
    };
    modify::<Task>(&store, &tasks[0].id, place("n1")).await;
    modify::<Task>(&store, &tasks[1].id, place("n2")).await;
    wait_for(&store, "a replacement for the task placed on n2", |tx| {
        let live = live(tx, &id);
        live.len() == 2 && live.iter().all(|t| t.node_id != "n2")
    })
    .await;
    let kept = store.view(|tx| live(tx, &id));
    assert!(
        kept.iter().any(|t| t.id == tasks[0].id),
        "the task placed on a ready node is kept: {kept:#?}"
    );
    let lost = store
        .view(|tx| tx.get::<Task>(&tasks[1].id))
        .expect("lost task kept");
    assert_eq!(task::desired(&lost), TaskState::Shutdown);
}

#[tokio::test]
async fn rolling_update_replaces_one_slot_at_a_time() {
    let (store, _stop) = start();
    create(&store, node("n1", "east")).await;
    let svc = replicated("web", 3, None);
    let id = svc.id.clone();
    create(&store, svc).await;
    wait_for(&store, "3 tasks", |tx| live(tx, &id).len() == 3).await;
    for t in store.view(|tx| live(tx, &id)) {
        report(&store, &t.id, TaskState::Running, 0, Some("n1")).await;
    }
    modify::<Service>(&store, &id, |s| s.spec_version = 2).await;
    for updated in 1..=3usize {
        wait_for(&store, "the next slot updated", |tx| {
            live(tx, &id).iter().filter(|t| t.spec_version == 2).count() == updated
        })
        .await;
        let now = store.view(|tx| live(tx, &id));
        assert_eq!(now.len(), 3, "stop-first keeps one task per slot");
        let fresh: Vec<&Task> = now
            .iter()
            .filter(|t| t.spec_version == 2 && task::state(t) != TaskState::Running)
            .collect();
        assert_eq!(fresh.len(), 1, "one slot in flight at a time");
        report(&store, &fresh[0].id, TaskState::Running, 0, Some("n1")).await;
    }
    settle(&store, "sentinel").await;
    let old = store.view(|tx| tx.find::<Task>(|t| t.service_id == id && t.spec_version == 1));
    assert!(old.iter().all(|t| task::desired(t) == TaskState::Shutdown));
}

#[tokio::test]
async fn a_large_scale_is_written_a_batch_per_transaction() {
    use crate::limits::BATCH_WRITES;
    let (store, _stop) = start();
    create(&store, node("n1", "east")).await;
    let writes = crate::store::writes_per_entry(&store);
    let replicas = 2 * BATCH_WRITES as u64 + 200;
    let svc = replicated("big", replicas, None);
    let id = svc.id.clone();
    create(&store, svc).await;
    wait_for(&store, "every replica", |tx| {
        slots(&live(tx, &id)) == (1..=replicas).collect::<Vec<_>>()
    })
    .await;
    modify::<Service>(&store, &id, |s| {
        if let Some(spec) = s.spec.as_mut() {
            spec.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
                replicas: 0,
            }));
        }
    })
    .await;
    wait_for(&store, "no replica", |tx| live(tx, &id).is_empty()).await;

    // The recorder reads the watch on its own: let it catch up with the last commit.
    let written = 2 * replicas as usize + 2;
    let recorded = || writes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for _ in 0..100 {
        if recorded().iter().sum::<usize>() >= written {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let entries = recorded();
    assert!(
        entries.iter().all(|n| *n <= BATCH_WRITES),
        "an entry wrote more than a batch: {entries:?}"
    );
    let full = entries.iter().filter(|n| **n == BATCH_WRITES).count();
    assert!(full >= 4, "two full batches up and two down: {entries:?}");
    assert_eq!(
        entries.iter().sum::<usize>(),
        written,
        "each task created once and stopped once (and the service written twice)"
    );
}

/// A flush reconciles a share of the dirty services and asks to run again at once for the rest:
/// between flushes the driver takes in the store's events, where one flush over a thousand
/// services (a tenth of the nodes lost) waited so long for its commits that the orchestrator's
/// watch lagged and it started over from a full reconcile.
#[tokio::test]
async fn a_flush_reconciles_a_share_of_the_services() {
    use super::super::driver::Reconcile;
    use super::super::plan::SERVICES_PER_FLUSH;
    let store = new_store();
    let count = SERVICES_PER_FLUSH * 2 + 1;
    store
        .update(|tx| {
            for i in 0..count {
                tx.create(replicated(&format!("s{i:03}"), 1, None))?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let mut orchestrator = ReplicatedOrchestrator::new(store.clone());
    store
        .memory()
        .view_and_watch(|tx| orchestrator.mark_all(tx));
    let with_tasks = || {
        store.view(|tx| {
            tx.list::<Service>()
                .iter()
                .filter(|s| !tx.tasks_of_service(&s.id).is_empty())
                .count()
        })
    };
    let mut after_each = Vec::new();
    loop {
        let wake = orchestrator.flush(&store).await;
        after_each.push(with_tasks());
        if wake.is_none() {
            break;
        }
        assert!(after_each.len() < 10, "the flushes do not end");
    }
    assert_eq!(
        after_each,
        vec![SERVICES_PER_FLUSH, 2 * SERVICES_PER_FLUSH, count],
        "services given their task after each flush"
    );
}
