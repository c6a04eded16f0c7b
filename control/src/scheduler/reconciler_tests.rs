//! The scheduler against a real in-memory store whose proposals apply directly.

use mesh_proto::NodeAvailability;
use tokio::task::JoinHandle;

use super::*;
use crate::scheduler::fixtures::{
    constrained, host_port, node, placement, running_on, task, with_availability, with_label,
};

struct Harness {
    store: Store,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Harness {
    fn start() -> Harness {
        Self::on(crate::store::direct_store())
    }

    /// A store and no scheduler running: the test makes the passes itself.
    fn without_scheduler() -> Harness {
        Harness {
            store: crate::store::direct_store(),
            stop: watch::channel(false).0,
            handle: tokio::spawn(async {}),
        }
    }

    fn on(store: Store) -> Harness {
        let (stop, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(Scheduler::new(store.clone()).run(stop_rx));
        Harness {
            store,
            stop,
            handle,
        }
    }

    async fn create(&self, nodes: Vec<Node>, tasks: Vec<Task>) {
        self.store
            .update(|tx| {
                nodes.into_iter().try_for_each(|n| tx.create(n))?;
                tasks.into_iter().try_for_each(|t| tx.create(t))
            })
            .await
            .expect("create");
    }

    async fn change<T: StoreObject>(&self, id: &str, f: impl FnOnce(&mut T)) {
        self.store
            .update(|tx| {
                let mut object = tx.get::<T>(id).expect("object exists");
                f(&mut object);
                tx.update(object)
            })
            .await
            .expect("update");
    }

    /// Waits until `check` holds for the task, failing after five seconds.
    async fn wait_task(&self, id: &str, what: &str, check: impl Fn(&Task) -> bool) -> Task {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let current = self.store.view(|tx| tx.get::<Task>(id));
            match current {
                Some(task) if check(&task) => return task,
                _ if Instant::now() >= deadline => panic!("task {id}: {what}; it is {current:?}"),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    async fn wait_assigned(&self, id: &str) -> Task {
        self.wait_task(id, "assigned", |t| {
            t.status.as_ref().map(|s| s.state) == Some(TaskState::Assigned as i32)
        })
        .await
    }

    async fn wait_reason(&self, id: &str, reason: &str) -> Task {
        self.wait_task(id, reason, |t| {
            t.status.as_ref().is_some_and(|s| s.err == reason)
        })
        .await
    }

    /// Polls every 20 ms, for up to 10 s, until `count` tasks are ASSIGNED.
    async fn wait_all_assigned(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let assigned = self.store.view(|tx| {
                tx.iter::<Task>()
                    .filter(|t| {
                        t.status.as_ref().map(|s| s.state) == Some(TaskState::Assigned as i32)
                    })
                    .count()
            });
            if assigned == count {
                return;
            }
            assert!(Instant::now() < deadline, "{assigned} of {count} assigned");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), self.handle)
            .await
            .expect("scheduler stops on shutdown")
            .expect("scheduler task");
    }
}

#[tokio::test]
async fn assigns_pending_tasks_spread_over_active_nodes() {
    let h = Harness::start();
    let mut nodes = vec![node("a"), node("b")];
    nodes.push(with_availability(node("c"), NodeAvailability::Drain));
    let tasks: Vec<Task> = (1..=4).map(|i| task(&format!("t{i}"), "s")).collect();
    h.create(nodes, tasks).await;

    let mut per_node: HashMap<String, usize> = HashMap::new();
    for i in 1..=4 {
        let t = h.wait_assigned(&format!("t{i}")).await;
        let status = t.status.unwrap_or_default();
        assert_eq!(status.message, ASSIGNED_MESSAGE);
        assert!(status.err.is_empty() && status.timestamp > 0);
        *per_node.entry(t.node_id).or_default() += 1;
    }
    assert_eq!(per_node.get("a"), Some(&2));
    assert_eq!(per_node.get("b"), Some(&2));
    h.stop().await;
}

#[tokio::test]
async fn unplaceable_task_waits_with_its_reason_until_a_node_fits() {
    let h = Harness::start();
    let nodes = vec![
        node("a"),
        node("b"),
        with_availability(node("c"), NodeAvailability::Pause),
    ];
    h.create(
        nodes,
        vec![constrained(task("t", "s"), &["node.labels.zone==east"])],
    )
    .await;
    let reason = "no suitable node (1 node not available for new tasks; scheduling constraints not satisfied on 2 nodes)";
    let waiting = h.wait_reason("t", reason).await;
    let status = waiting.status.clone().unwrap_or_default();
    assert_eq!(status.state, TaskState::Pending as i32);
    assert_eq!(status.message, PENDING_MESSAGE);
    assert!(waiting.node_id.is_empty());

    // A retry that reaches the same verdict writes nothing.
    h.change::<Node>("a", |n| *n = with_label(n.clone(), "rack", "r1"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = h.store.view(|tx| tx.get::<Task>("t")).expect("task");
    assert_eq!(again.version(), waiting.version(), "no churn");

    // Labelling a node retries the task.
    h.change::<Node>("b", |n| *n = with_label(n.clone(), "zone", "east"))
        .await;
    let placed = h.wait_assigned("t").await;
    assert_eq!(placed.node_id, "b");
    h.stop().await;
}

#[tokio::test]
async fn a_task_leaving_its_node_makes_room() {
    let h = Harness::start();
    let limited = |id: &str| {
        let mut t = task(id, "s");
        placement(&mut t).max_replicas = 1;
        t
    };
    h.create(vec![node("a")], vec![limited("first")]).await;
    h.wait_assigned("first").await;
    h.create(vec![], vec![limited("second")]).await;
    h.wait_reason(
        "second",
        "no suitable node (max replicas per node limit exceed)",
    )
    .await;

    h.change::<Task>("first", |t| {
        if let Some(status) = t.status.as_mut() {
            status.state = TaskState::Failed as i32;
        }
    })
    .await;
    let placed = h.wait_assigned("second").await;
    assert_eq!(placed.node_id, "a");
    h.stop().await;
}

#[tokio::test]
async fn a_host_port_is_free_once_its_task_has_stopped() {
    let h = Harness::start();
    h.create(vec![node("a")], vec![host_port(task("old", "s1"), 8080)])
        .await;
    h.wait_assigned("old").await;
    h.create(vec![], vec![host_port(task("new", "s2"), 8080)])
        .await;
    let reason = "no suitable node (host-mode port already in use on 1 node)";
    let waiting = h.wait_reason("new", reason).await;

    // Asked to stop, it still holds the port until it has stopped.
    h.change::<Task>("old", |t| t.desired_state = TaskState::Shutdown as i32)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let still = h.store.view(|tx| tx.get::<Task>("new")).expect("task");
    assert_eq!(still.version(), waiting.version(), "still waiting");

    h.change::<Task>("old", |t| {
        if let Some(status) = t.status.as_mut() {
            status.state = TaskState::Shutdown as i32;
        }
    })
    .await;
    assert_eq!(h.wait_assigned("new").await.node_id, "a");
    h.stop().await;
}

#[tokio::test]
async fn pre_assigned_task_waits_for_its_node() {
    let h = Harness::start();
    let mut global = task("g", "s");
    global.node_id = "b".into();
    let nodes = vec![
        node("a"),
        with_availability(node("b"), NodeAvailability::Pause),
    ];
    h.create(nodes, vec![global]).await;
    h.wait_reason("g", "no suitable node (1 node not available for new tasks)")
        .await;

    h.change::<Node>("b", |n| {
        *n = with_availability(n.clone(), NodeAvailability::Active);
    })
    .await;
    assert_eq!(h.wait_assigned("g").await.node_id, "b");
    h.stop().await;
}

#[tokio::test]
async fn stops_when_the_shutdown_sender_drops() {
    let h = Harness::start();
    drop(h.stop);
    tokio::time::timeout(Duration::from_secs(5), h.handle)
        .await
        .expect("scheduler stops")
        .expect("scheduler task");
}

#[tokio::test]
async fn many_pending_tasks_are_decided_a_batch_per_transaction() {
    let h = Harness::start();
    let count = 2 * SCHEDULE_BATCH + 100;
    let tasks: Vec<Task> = (0..count).map(|i| task(&format!("t{i:05}"), "s")).collect();
    let writes = crate::store::writes_per_entry(&h.store);
    h.create(vec![node("a"), node("b"), node("c")], tasks).await;
    h.wait_all_assigned(count).await;
    let per_node = h.store.view(|tx| {
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for t in tx.iter::<Task>() {
            *per_node.entry(t.node_id.clone()).or_default() += 1;
        }
        per_node
    });
    assert!(
        per_node.values().all(|n| n.abs_diff(count / 3) <= 1),
        "{per_node:?}"
    );

    // The recorder reads the watch on its own: let it catch up with the last commit.
    let recorded = || writes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for _ in 0..100 {
        if recorded().iter().skip(1).sum::<usize>() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let entries = recorded();
    // The first entry is the test's own create.
    let decided = &entries[1..];
    assert!(
        decided.iter().all(|n| *n <= SCHEDULE_BATCH),
        "an entry decided more than a batch: {entries:?}"
    );
    assert!(decided.len() >= 3, "{entries:?}");
    assert_eq!(decided.iter().sum::<usize>(), count);
    h.stop().await;
}

/// A pass decides several batches and writes them in transactions proposed together.
#[tokio::test]
async fn batches_of_decisions_are_proposed_together() {
    let (store, in_flight) = crate::store::slow_store();
    let h = Harness::on(store);
    let count = SCHEDULE_BATCH * WRITES_IN_FLIGHT;
    let tasks: Vec<Task> = (0..count).map(|i| task(&format!("t{i:05}"), "s")).collect();
    h.create(vec![node("a"), node("b")], tasks).await;
    h.wait_all_assigned(count).await;
    assert_eq!(in_flight.most(), WRITES_IN_FLIGHT);
    h.stop().await;
}

/// Every node's snapshot rebuilt at once from `store` as it is now.
fn rebuilt_at_once(store: &Store) -> BTreeMap<String, NodeInfo> {
    let mut work = Work {
        rebuild_all: true,
        ..Default::default()
    };
    assert!(store.view(|tx| work.refresh_nodes(tx, usize::MAX)));
    work.nodes
}

/// Rebuilding every node's snapshot reads about a budget's worth of tasks per view of the
/// store (the lock is let go between), and with the store written between the views, the
/// snapshots come out as if rebuilt at once from the last one.
#[tokio::test]
async fn a_full_rebuild_goes_a_budget_at_a_time_and_comes_out_whole() {
    let h = Harness::without_scheduler();
    let store = h.store.clone();
    let nodes: Vec<Node> = (0..6).map(|n| node(&format!("n{n}"))).collect();
    let tasks: Vec<Task> = (0..24)
        .map(|t| running_on(task(&format!("t{t:02}"), "s"), &format!("n{}", t % 6)))
        .collect();
    h.create(nodes, tasks).await;
    let mut events = store.memory().watch();
    let mut work = Work {
        rebuild_all: true,
        ..Default::default()
    };
    let mut views = 0;
    loop {
        views += 1;
        let done = store.view(|tx| {
            while let Ok(event) = events.try_recv() {
                work.observe(&event);
            }
            work.refresh_nodes(tx, 8)
        });
        // Four tasks a node: two nodes a view.
        assert_eq!(work.nodes.len(), (views * 2).min(6), "after view {views}");
        if done {
            break;
        }
        // Between the views: a task moves from a node built to one not yet built, another
        // stops on a node built, and a third starts on one not yet built.
        if views == 1 {
            h.change::<Task>("t00", |t| t.node_id = "n5".into()).await;
            h.change::<Task>("t01", |t| {
                t.status.get_or_insert_with(Default::default).state = TaskState::Complete as i32;
            })
            .await;
            h.create(vec![], vec![running_on(task("t99", "s2"), "n4")])
                .await;
        }
    }
    assert_eq!(views, 3);
    assert_eq!(work.nodes, rebuilt_at_once(&store));
    assert_eq!(work.nodes["n5"].held_tasks(), 5);
    assert_eq!(work.nodes["n4"].service_tasks("s2"), 1);
}

/// While some nodes' snapshots are still to be built, a pass decides nothing; the passes after
/// build the rest, and the queued task is placed against every node.
#[tokio::test]
async fn nothing_is_decided_on_part_of_the_nodes() {
    let h = Harness::without_scheduler();
    let store = h.store.clone();
    // n0 already runs a task of the service and n1 none: decided on n0's snapshot alone, the
    // pending task would go beside it.
    h.create(
        vec![node("n0"), node("n1")],
        vec![running_on(task("t0", "s"), "n0"), task("t1", "s")],
    )
    .await;
    // A budget of one task: one node's snapshot per pass.
    let scheduler = Scheduler {
        store: store.clone(),
        rebuild_budget: 1,
    };
    let mut events = store.memory().watch();
    let mut work = Work {
        rebuild_all: true,
        rescan: true,
        ..Default::default()
    };
    let pending = |store: &Store| {
        let t1 = store.view(|tx| tx.get::<Task>("t1")).expect("t1");
        t1.status.map(|s| s.state) == Some(TaskState::Pending as i32)
    };
    assert!(scheduler.pass(&mut work, &mut events).await);
    assert_eq!(work.nodes.len(), 1);
    assert!(pending(&store), "decided with one node's snapshot of two");
    assert!(work.has_work());
    assert!(scheduler.pass(&mut work, &mut events).await);
    let t1 = store.view(|tx| tx.get::<Task>("t1")).expect("t1");
    assert_eq!(t1.node_id, "n1", "placed with every node's snapshot built");
}
