//! Reconciler tests on a real store whose proposer applies writes at once, with the allocator,
//! scheduler and agents played by the test writing objects as they would.

use mesh_proto::{
    Annotations, Cluster, ClusterSpec, ContainerSpec, ContainerStatus, GlobalService, Node,
    NodeAvailability, NodeSpec, NodeState, NodeStatus, Placement, ReplicatedService,
    RestartCondition, RestartPolicy, Service, ServiceSpec, Task, TaskSpec, TaskState, service_spec,
};
use std::time::Duration;
use tokio::sync::watch;

use super::task;
use super::{ConstraintEnforcer, GlobalOrchestrator, ReplicatedOrchestrator};
use super::{RestartSupervisor, TaskReaper};
use crate::store::{Read, ReadTx, Store, new_id};

mod lifecycle;
mod replicated;
mod update;

fn new_store() -> Store {
    crate::store::direct_store()
}

/// A store with every orchestrator running on it; they stop when the sender drops.
fn start() -> (Store, watch::Sender<bool>) {
    let store = new_store();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(ReplicatedOrchestrator::new(store.clone()).run(rx.clone()));
    tokio::spawn(GlobalOrchestrator::new(store.clone()).run(rx.clone()));
    tokio::spawn(RestartSupervisor::new(store.clone()).run(rx.clone()));
    tokio::spawn(TaskReaper::new(store.clone()).run(rx.clone()));
    tokio::spawn(ConstraintEnforcer::new(store.clone()).run(rx));
    (store, stop)
}

/// Polls every 10 ms, for up to 5 s, until `done` holds.
async fn wait_for(store: &Store, what: &str, done: impl Fn(&ReadTx<'_>) -> bool) {
    for _ in 0..500 {
        if store.view(|tx| done(tx)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tasks = store.view(|tx| tx.list::<Task>());
    panic!("timed out waiting for {what}; tasks: {tasks:#?}");
}

fn service(name: &str, mode: service_spec::Mode, restart: Option<RestartPolicy>) -> Service {
    Service {
        id: new_id(),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                restart,
                ..Default::default()
            }),
            mode: Some(mode),
            endpoint: None,
            ..Default::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

fn replicated(name: &str, replicas: u64, restart: Option<RestartPolicy>) -> Service {
    let mode = service_spec::Mode::Replicated(ReplicatedService { replicas });
    service(name, mode, restart)
}

fn policy(condition: RestartCondition, delay_ns: i64, max_attempts: u64) -> RestartPolicy {
    RestartPolicy {
        condition: condition as i32,
        delay_ns: Some(delay_ns),
        max_attempts,
        window_ns: 0,
    }
}

async fn create<T: crate::store::StoreObject>(store: &Store, object: T) {
    store
        .update(|tx| tx.create(object))
        .await
        .expect("create object");
}

/// Reads the object, changes it with `f` and writes it back.
async fn modify<T: crate::store::StoreObject>(store: &Store, id: &str, f: impl FnOnce(&mut T)) {
    store
        .update(|tx| {
            let mut object = tx.get::<T>(id).expect("object exists");
            f(&mut object);
            tx.update(object)
        })
        .await
        .expect("update object");
}

/// Reports a task's state as its agent would (and places it on `node` if given).
async fn report(store: &Store, id: &str, state: TaskState, exit_code: i32, node: Option<&str>) {
    modify::<Task>(store, id, |t| {
        if let Some(node) = node {
            t.node_id = node.into();
        }
        let status = t.status.get_or_insert_with(Default::default);
        status.state = state as i32;
        status.container = Some(ContainerStatus {
            exit_code,
            ..Default::default()
        });
    })
    .await;
}

fn live(tx: &ReadTx<'_>, service_id: &str) -> Vec<Task> {
    let mut tasks = tx.find::<Task>(|t| t.service_id == service_id && task::is_live(t));
    tasks.sort_by_key(|t| (t.slot, t.node_id.clone()));
    tasks
}

fn slots(tasks: &[Task]) -> Vec<u64> {
    tasks.iter().map(|t| t.slot).collect()
}

fn node(id: &str, zone: &str) -> Node {
    Node {
        id: id.into(),
        spec: Some(NodeSpec {
            annotations: Some(Annotations {
                name: id.into(),
                labels: [("zone".to_string(), zone.to_string())].into(),
            }),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Once `sentinel` has its tasks, every event written before it has been handled.
async fn settle(store: &Store, name: &str) {
    let sentinel = replicated(name, 1, None);
    let id = sentinel.id.clone();
    create(store, sentinel).await;
    wait_for(store, "the sentinel's task", |tx| live(tx, &id).len() == 1).await;
}
