use std::time::Duration;

use mesh_proto::{ManagerStatus, TaskState, TaskStatus};

use super::*;
use crate::store::direct_store;

const WAIT: Duration = Duration::from_secs(5);

/// A fanout with its router running over `store`; the router stops when the sender drops.
pub(in crate::dispatcher) async fn started(store: &Store) -> (Arc<Fanout>, watch::Sender<bool>) {
    let fanout = Arc::new(Fanout::default());
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(route(store.clone(), fanout.clone(), shutdown));
    let mut routing = fanout.routing.subscribe();
    tokio::time::timeout(WAIT, routing.wait_for(|r| *r))
        .await
        .expect("the router starts")
        .expect("routing");
    (fanout, stop)
}

fn task(id: &str, node: &str) -> Task {
    Task {
        id: id.into(),
        node_id: node.into(),
        status: Some(TaskStatus {
            state: TaskState::Assigned as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn next(rx: &mut mpsc::Receiver<NodeChanges>) -> NodeChanges {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("changes in time")
        .expect("the channel is open")
}

fn ids(changes: &NodeChanges) -> Vec<String> {
    changes
        .events
        .iter()
        .filter_map(|e| e.as_a::<Task>().map(|t| t.id.clone()))
        .collect()
}

#[tokio::test]
async fn a_nodes_stream_gets_its_tasks_changes_only() {
    let store = direct_store();
    let (fanout, _stop) = started(&store).await;
    let mut n1 = fanout.subscribe("n1").expect("routing");
    let mut n2 = fanout.subscribe("n2").expect("routing");
    store
        .update(|tx| {
            tx.create(task("t1", "n1"))?;
            tx.create(task("t2", "n1"))?;
            tx.create(task("t3", ""))
        })
        .await
        .expect("stored");
    let changes = next(&mut n1).await;
    assert_eq!(ids(&changes), ["t1", "t2"], "one batch for the entry");
    assert!(changes.index > 0);

    // Moved from n1 to n2: both hear of it, n1 to remove it.
    store
        .update(|tx| {
            let mut moved = tx.get::<Task>("t2").expect("t2");
            moved.node_id = "n2".into();
            tx.update(moved)
        })
        .await
        .expect("stored");
    let (to_n1, to_n2) = (next(&mut n1).await, next(&mut n2).await);
    assert_eq!(
        (ids(&to_n1), ids(&to_n2)),
        (vec!["t2".into()], vec!["t2".into()])
    );
    assert_eq!(to_n1.index, to_n2.index);
    assert!(n2.try_recv().is_err(), "n2 heard nothing of t1 and t3");
}

#[tokio::test]
async fn a_stream_that_falls_behind_is_dropped_and_none_is_served_without_a_router() {
    let store = direct_store();
    let (fanout, stop) = started(&store).await;
    let mut slow = fanout.subscribe("n1").expect("routing");
    for i in 0..=STREAM_BACKLOG {
        store
            .update(|tx| tx.create(task(&format!("t{i}"), "n1")))
            .await
            .expect("stored");
    }
    // Not read meanwhile: the router fills the backlog, then drops the stream.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !slow.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not dropped in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut received = 0;
    while tokio::time::timeout(WAIT, slow.recv())
        .await
        .expect("in time")
        .is_some()
    {
        received += 1;
    }
    assert_eq!(
        received, STREAM_BACKLOG,
        "the backlog, then the channel closed"
    );

    stop.send_replace(true);
    let mut routing = fanout.routing.subscribe();
    tokio::time::timeout(WAIT, routing.wait_for(|r| !*r))
        .await
        .expect("the router stops")
        .expect("routing");
    assert!(fanout.subscribe("n1").is_none());
}

#[tokio::test]
async fn session_inputs_change_with_managers_and_the_cluster_only() {
    let store = direct_store();
    let (fanout, _stop) = started(&store).await;
    let mut inputs = fanout.inputs();
    inputs.borrow_and_update();
    let node = |id: &str, role: NodeRole| Node {
        id: id.into(),
        role: role as i32,
        manager_status: (role == NodeRole::Manager).then(|| ManagerStatus {
            addr: format!("{id}:4242"),
            ..Default::default()
        }),
        ..Default::default()
    };
    store
        .update(|tx| tx.create(node("w1", NodeRole::Worker)))
        .await
        .expect("stored");
    store
        .update(|tx| tx.create(node("m1", NodeRole::Manager)))
        .await
        .expect("stored");
    tokio::time::timeout(WAIT, inputs.changed())
        .await
        .expect("in time")
        .expect("open");
    let now = inputs.borrow_and_update().clone();
    assert_eq!(now.role("m1"), NodeRole::Manager);
    assert_eq!(now.role("w1"), NodeRole::Worker);
    assert_eq!(now.managers.len(), 1);
    assert_eq!(now.managers[0].addr, "m1:4242");

    // A worker's change publishes nothing; a promotion does.
    store
        .update(|tx| tx.create(node("w2", NodeRole::Worker)))
        .await
        .expect("stored");
    store
        .update(|tx| {
            let mut promoted = tx.get::<Node>("w1").expect("w1");
            promoted.role = NodeRole::Manager as i32;
            tx.update(promoted)
        })
        .await
        .expect("stored");
    tokio::time::timeout(WAIT, inputs.changed())
        .await
        .expect("in time")
        .expect("open");
    let now = inputs.borrow_and_update().clone();
    assert_eq!(now.role("w1"), NodeRole::Manager);
    assert_eq!(now.managers.len(), 1, "w1 has no manager address yet");
    assert!(!inputs.has_changed().expect("open"));
}
