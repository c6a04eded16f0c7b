//! Every List answer comes in messages of at most [`LIST_CHUNK_BYTES`] that reassemble to the
//! whole list, read at once: tens of thousands of tasks, thousands of services, nodes and
//! networks, and configs whose data fills a message on its own.

use mesh_proto::chunks::{LIST_CHUNK_BYTES, ListChunk};
use mesh_proto::service_spec::Mode;
use mesh_proto::{
    Annotations, Config, ConfigSpec, ContainerSpec, ListTasksRequest, Network, NetworkSpec, Node,
    NodeSpec, ReplicatedService, Secret, SecretSpec, Service, ServiceSpec, Task, TaskSpec,
    TaskState, TaskStatus,
};
use prost::Message;
use std::collections::HashMap;

use super::{networks, nodes, secrets, services};
use crate::store::{Read, Store, StoreObject, direct_store};

const TASKS: usize = 50_000;
const SERVICES: usize = 2_000;

fn annotations(name: String, label_bytes: usize) -> Option<Annotations> {
    Some(Annotations {
        name,
        labels: HashMap::from([("bulk".to_string(), "x".repeat(label_bytes))]),
    })
}

fn service(i: usize) -> Service {
    Service {
        id: format!("service-{i:05}"),
        spec: Some(ServiceSpec {
            annotations: annotations(format!("web{i}"), 1000),
            mode: Some(Mode::Replicated(ReplicatedService { replicas: 25 })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task(i: usize) -> Task {
    Task {
        id: format!("task-{i:06}"),
        service_id: format!("service-{:05}", i % SERVICES),
        node_id: format!("node-{:04}", i % 1000),
        slot: i as u64,
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "registry.example.com/team/web:1.2.3".into(),
                env: vec![format!("REPLICA={i}"), "MODE=production".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: if i.is_multiple_of(3) {
                TaskState::Running
            } else {
                TaskState::Pending
            } as i32,
            message: "started".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Writes `objects` in transactions of a reconciler's batch size.
async fn write_all<T: StoreObject>(store: &Store, objects: Vec<T>) {
    for batch in objects.chunks(500) {
        store
            .update(|tx| batch.iter().try_for_each(|o| tx.create(o.clone())))
            .await
            .expect("written");
    }
}

/// Each chunk within the bound (or alone, holding one object larger than it), several of them,
/// and, put back together, what `whole` says the list is.
fn check<C: ListChunk + Message + PartialEq>(
    what: &str,
    chunks: Vec<C>,
    len: impl Fn(&C) -> usize,
    whole: usize,
) -> C {
    assert!(chunks.len() > 1, "{what}: {} chunk(s)", chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        let bytes = chunk.encoded_len();
        assert!(
            bytes <= LIST_CHUNK_BYTES || len(chunk) == 1,
            "{what}: chunk {i} of {} objects is {bytes} bytes",
            len(chunk)
        );
        assert!(len(chunk) > 0, "{what}: chunk {i} is empty");
    }
    let mut gathered = C::default();
    for chunk in chunks {
        gathered.append(chunk);
    }
    assert_eq!(len(&gathered), whole, "{what}: reassembled");
    gathered
}

#[tokio::test]
async fn every_list_comes_in_bounded_chunks_that_reassemble() {
    let store = direct_store();
    write_all(&store, (0..SERVICES).map(service).collect()).await;
    write_all(&store, (0..TASKS).map(task).collect()).await;
    let nodes: Vec<Node> = (0..1500)
        .map(|i| Node {
            id: format!("node-{i:04}"),
            spec: Some(NodeSpec {
                annotations: annotations(format!("host{i}"), 1000),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    write_all(&store, nodes).await;
    let networks: Vec<Network> = (0..1500)
        .map(|i| Network {
            id: format!("network-{i:04}"),
            spec: Some(NetworkSpec {
                annotations: annotations(format!("net{i}"), 1000),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    write_all(&store, networks).await;
    let secret = |i: usize| Secret {
        id: format!("secret-{i:04}"),
        spec: Some(SecretSpec {
            annotations: annotations(format!("secret{i}"), 1000),
            data: vec![7; 1000],
        }),
        ..Default::default()
    };
    write_all(&store, (0..1500).map(secret).collect()).await;
    // Configs show their data: ten of 300 KB, and one just under a message on its own.
    let config = |i: usize, bytes: usize| Config {
        id: format!("config-{i:02}"),
        spec: Some(ConfigSpec {
            annotations: annotations(format!("config{i}"), 10),
            data: vec![b'c'; bytes],
        }),
        ..Default::default()
    };
    let mut configs: Vec<Config> = (0..10).map(|i| config(i, 300_000)).collect();
    configs.push(config(10, 1000 * 1024 - 1));
    store
        .update(|tx| configs.into_iter().try_for_each(|c| tx.create(c)))
        .await
        .expect("configs written");

    let all = ListTasksRequest::default();
    let tasks = check(
        "tasks",
        services::list_tasks(&store, all),
        |c| c.tasks.len(),
        TASKS,
    );
    let stored: Vec<Task> = store.view(|tx| tx.list::<Task>());
    assert_eq!(tasks.tasks, stored, "the tasks of one read, in order");

    let listed = check(
        "services",
        services::list(&store),
        |c| c.services.len(),
        SERVICES,
    );
    for (i, service) in listed.services.iter().enumerate() {
        let running = (0..TASKS)
            .filter(|t| t % SERVICES == i && t.is_multiple_of(3))
            .count() as u64;
        assert_eq!(listed.running_tasks[&service.id], running, "{}", service.id);
        assert_eq!(listed.desired_tasks[&service.id], 25, "{}", service.id);
    }

    check(
        "nodes",
        nodes::list_in(&store, None),
        |c| c.nodes.len(),
        1500,
    );
    check(
        "networks",
        networks::list(&store),
        |c| c.networks.len(),
        1500,
    );
    let secrets = check(
        "secrets",
        secrets::list::<Secret, _>(&store, |secrets| mesh_proto::ListSecretsResponse {
            secrets,
        }),
        |c| c.secrets.len(),
        1500,
    );
    assert!(
        secrets
            .secrets
            .iter()
            .all(|s| s.spec.as_ref().is_some_and(|s| s.data.is_empty())),
        "no secret's data leaves the store"
    );
    check(
        "configs",
        secrets::list::<Config, _>(&store, |configs| mesh_proto::ListConfigsResponse {
            configs,
        }),
        |c| c.configs.len(),
        11,
    );
}

#[tokio::test]
async fn task_filters_hold_across_chunks() {
    let store = direct_store();
    write_all(&store, (0..TASKS).map(task).collect()).await;
    let wanted = |i: usize| format!("service-{i:05}");
    let request = ListTasksRequest {
        service_ids: vec![wanted(3), wanted(4)],
        node_ids: Vec::new(),
        desired_states: vec![TaskState::Running as i32],
    };
    let chunks = services::list_tasks(&store, request);
    let tasks: Vec<Task> = chunks.into_iter().flat_map(|c| c.tasks).collect();
    assert_eq!(tasks.len(), 2 * TASKS / SERVICES);
    assert!(
        tasks
            .iter()
            .all(|t| t.service_id == wanted(3) || t.service_id == wanted(4))
    );

    let nobody = ListTasksRequest {
        node_ids: vec!["node-none".into()],
        ..Default::default()
    };
    let chunks = services::list_tasks(&store, nobody);
    assert_eq!(chunks.len(), 1, "an empty list is one empty message");
    assert!(chunks[0].tasks.is_empty());
}

/// Read through the indexes or by a scan, every combination of filters gives what a plain
/// filter of every task gives, in id order, each task once even when a name is repeated.
#[tokio::test]
async fn task_filters_agree_with_a_scan() {
    let store = direct_store();
    let mut all: Vec<Task> = (0..5_000).map(task).collect();
    all[7].desired_state = TaskState::Shutdown as i32;
    all[1007].desired_state = TaskState::Shutdown as i32;
    write_all(&store, all.clone()).await;
    let node = |i: usize| format!("node-{i:04}");
    let service = |i: usize| format!("service-{i:05}");
    let running = TaskState::Running as i32;
    let shutdown = TaskState::Shutdown as i32;
    let cases: Vec<(Vec<String>, Vec<String>, Vec<i32>)> = vec![
        (vec![], vec![node(7)], vec![]),
        (vec![], vec![node(7), node(7), node(8)], vec![running]),
        (vec![], vec![node(7)], vec![shutdown]),
        (vec![service(7)], vec![], vec![]),
        (
            vec![service(7), service(1007)],
            vec![node(7)],
            vec![shutdown],
        ),
        (vec![service(8)], vec![node(7)], vec![]),
        (vec![], (0..1000).map(node).collect(), vec![running]),
        (vec![], vec![], vec![shutdown]),
    ];
    for (services_wanted, nodes_wanted, desired) in cases {
        let want: Vec<&Task> = all
            .iter()
            .filter(|t| services_wanted.is_empty() || services_wanted.contains(&t.service_id))
            .filter(|t| nodes_wanted.is_empty() || nodes_wanted.contains(&t.node_id))
            .filter(|t| desired.is_empty() || desired.contains(&t.desired_state))
            .collect();
        let request = ListTasksRequest {
            service_ids: services_wanted.clone(),
            node_ids: nodes_wanted.clone(),
            desired_states: desired.clone(),
        };
        let got: Vec<Task> = services::list_tasks(&store, request)
            .into_iter()
            .flat_map(|c| c.tasks)
            .collect();
        let ids = |tasks: &[&Task]| tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
        let mut sorted = ids(&want);
        sorted.sort();
        assert_eq!(
            ids(&got.iter().collect::<Vec<_>>()),
            sorted,
            "services {services_wanted:?} nodes {} desired {desired:?}",
            nodes_wanted.len()
        );
    }
}
