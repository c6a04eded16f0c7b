//! Global services, node changes, service removal, the reaper and shutdown.

use super::*;

#[tokio::test]
async fn global_follows_nodes() {
    let (store, _stop) = start();
    for (id, zone) in [("n1", "east"), ("n2", "east"), ("n3", "west")] {
        create(&store, node(id, zone)).await;
    }
    let mut svc = service("agent", service_spec::Mode::Global(GlobalService {}), None);
    if let Some(task) = svc.spec.as_mut().and_then(|s| s.task.as_mut()) {
        task.placement = Some(Placement {
            constraints: vec!["node.labels.zone==east".into()],
            ..Default::default()
        });
    }
    let id = svc.id.clone();
    create(&store, svc).await;
    let on = |nodes: &'static [&'static str]| {
        let id = id.clone();
        move |tx: &ReadTx<'_>| {
            let live = live(tx, &id);
            live.iter().map(|t| t.node_id.as_str()).collect::<Vec<_>>() == nodes
                && live.iter().all(|t| t.slot == 0)
        }
    };
    wait_for(&store, "tasks on n1 and n2", on(&["n1", "n2"])).await;

    let set_zone = |zone: &'static str| {
        move |n: &mut Node| {
            if let Some(a) = n.spec.as_mut().and_then(|s| s.annotations.as_mut()) {
                a.labels.insert("zone".into(), zone.into());
            }
        }
    };
    modify::<Node>(&store, "n3", set_zone("east")).await;
    wait_for(&store, "a task on n3", on(&["n1", "n2", "n3"])).await;
    modify::<Node>(&store, "n1", |n| {
        n.spec.get_or_insert_with(Default::default).availability = NodeAvailability::Drain as i32;
    })
    .await;
    wait_for(&store, "n1 drained", on(&["n2", "n3"])).await;
    modify::<Node>(&store, "n2", set_zone("west")).await;
    wait_for(&store, "n2 relabelled", on(&["n3"])).await;
    create(&store, node("n4", "east")).await;
    wait_for(&store, "a task on the new node", on(&["n3", "n4"])).await;
    modify::<Node>(&store, "n4", |n| {
        n.status.get_or_insert_with(Default::default).state = NodeState::Down as i32;
    })
    .await;
    wait_for(&store, "n4 down", on(&["n3"])).await;
}

#[tokio::test]
async fn deleted_service_tasks_are_removed_then_reaped() {
    let (store, _stop) = start();
    create(&store, node("n1", "east")).await;
    let svc = replicated("web", 2, None);
    let id = svc.id.clone();
    create(&store, svc).await;
    wait_for(&store, "2 tasks", |tx| live(tx, &id).len() == 2).await;
    let tasks = store.view(|tx| live(tx, &id));
    report(&store, &tasks[0].id, TaskState::Running, 0, Some("n1")).await;
    store
        .update(|tx| tx.delete::<Service>(&id))
        .await
        .expect("delete service");
    // The unassigned task goes at once; the running one once its agent reports it stopped.
    wait_for(&store, "the running task marked REMOVE", |tx| {
        let left = tx.find::<Task>(|t| t.service_id == id);
        left.len() == 1 && task::desired(&left[0]) == TaskState::Remove
    })
    .await;
    report(&store, &tasks[0].id, TaskState::Shutdown, 0, None).await;
    wait_for(&store, "no task left", |tx| {
        tx.find::<Task>(|t| t.service_id == id).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_removed_task_is_reaped_once_its_node_is_down() {
    let (store, _stop) = start();
    create(&store, node("n1", "east")).await;
    let svc = replicated("web", 1, None);
    let id = svc.id.clone();
    create(&store, svc).await;
    wait_for(&store, "a task", |tx| live(tx, &id).len() == 1).await;
    let task = store.view(|tx| live(tx, &id)).remove(0);
    report(&store, &task.id, TaskState::Running, 0, Some("n1")).await;
    store
        .update(|tx| tx.delete::<Service>(&id))
        .await
        .expect("delete service");
    wait_for(&store, "the running task marked REMOVE", |tx| {
        tx.peek::<Task>(&task.id)
            .is_some_and(|t| task::desired(t) == TaskState::Remove)
    })
    .await;
    // Nothing will report it stopped: its node is lost.
    modify::<Node>(&store, "n1", |n| {
        n.status.get_or_insert_with(Default::default).state = NodeState::Down as i32;
    })
    .await;
    wait_for(&store, "the task reaped", |tx| {
        tx.peek::<Task>(&task.id).is_none()
    })
    .await;
}

#[tokio::test]
async fn history_is_limited_per_slot() {
    let (store, _stop) = start();
    create(
        &store,
        Cluster {
            id: "default".into(),
            spec: Some(ClusterSpec::default()),
            ..Default::default()
        },
    )
    .await;
    let svc = replicated("crashy", 1, Some(policy(RestartCondition::Any, 0, 0)));
    let id = svc.id.clone();
    create(&store, svc).await;
    let mut seen = Vec::new();
    for _ in 0..7 {
        wait_for(&store, "a fresh task", |tx| {
            live(tx, &id).iter().any(|t| !seen.contains(&t.id))
        })
        .await;
        let current = store.view(|tx| live(tx, &id)).remove(0);
        seen.push(current.id.clone());
        report(&store, &current.id, TaskState::Failed, 1, Some("n1")).await;
    }
    wait_for(&store, "5 tasks kept after the last restart", |tx| {
        tx.find::<Task>(|t| t.service_id == id).len() == 5
            && live(tx, &id).iter().any(|t| !seen.contains(&t.id))
    })
    .await;
    let kept = store.view(|tx| tx.find::<Task>(|t| t.service_id == id));
    assert!(
        kept.iter()
            .all(|t| t.id != seen[0] && t.id != seen[1] && t.id != seen[2])
    );
}

#[tokio::test]
async fn reconcilers_stop_on_shutdown_or_dropped_sender() {
    let store = new_store();
    let (stop, rx) = watch::channel(false);
    let by_flag = tokio::spawn(ReplicatedOrchestrator::new(store.clone()).run(rx.clone()));
    let (dropped, rx2) = watch::channel(false);
    let by_drop = tokio::spawn(TaskReaper::new(store.clone()).run(rx2));
    stop.send(true).expect("receiver alive");
    drop(dropped);
    let bound = Duration::from_secs(5);
    tokio::time::timeout(bound, by_flag)
        .await
        .expect("stops on true")
        .expect("no panic");
    tokio::time::timeout(bound, by_drop)
        .await
        .expect("stops on drop")
        .expect("no panic");
}
