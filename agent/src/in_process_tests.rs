//! In-process control-plane tests: a real daemon (Raft on disk, gRPC on loopback, every manager
//! component) driving the fake executor. No root and no Docker needed.

use mesh_control::api::Api;
use mesh_proto::control_server::Control;
use mesh_proto::{
    Annotations, ContainerSpec, CreateServiceRequest, GetServiceRequest, InitRequest,
    ListServicesRequest, ListTasksRequest, RemoveServiceRequest, ReplicatedService, RestartPolicy,
    ServiceSpec, Task, TaskSpec, TaskState, UpdateServiceRequest, service_spec::Mode,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::Request;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::exec::fake::FakeExecutor;

pub(crate) fn config(dir: &Path, port: u16) -> Config {
    Config {
        state_dir: dir.join("state"),
        secrets_dir: dir.join("secrets"),
        socket: dir.join("meshd.sock"),
        group: None,
        docker_host: "unix:///nonexistent".into(),
        hostname: Some("node1".into()),
        listen_addr: format!("127.0.0.1:{port}"),
        advertise_addr: None,
        gossip_port: 0,
        gwbridge_subnet: crate::network::DEFAULT_GWBRIDGE_SUBNET.parse().unwrap(),
        lb_backend: crate::lb::LbBackend::Auto,
        metrics_addr: None,
        config: None,
        log: None,
        log_format: crate::logging::LogFormat::Text,
    }
}

/// A request as it arrives over the root-only local socket, which the control API trusts.
pub(crate) fn local<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .extensions_mut()
        .insert(tonic::transport::server::UdsConnectInfo {
            peer_addr: None,
            peer_cred: None,
        });
    request
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A one-node cluster: a daemon over `fake`, listening on `port`, that has run `swarm init`.
pub(crate) async fn initialized(dir: &Path, port: u16, fake: Arc<FakeExecutor>) -> Arc<Daemon> {
    let daemon = Daemon::new(config(dir, port), fake, None);
    init(&daemon).await;
    daemon
}

/// Runs `swarm init` on `daemon`, advertising loopback.
async fn init(daemon: &Daemon) {
    daemon
        .init(InitRequest {
            advertise_addr: "127.0.0.1".into(),
            ..Default::default()
        })
        .await
        .expect("swarm init");
}

pub(crate) fn spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: name.into(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox".into(),
                args: vec!["sleep".into(), "1000".into()],
                ..Default::default()
            }),
            restart: Some(RestartPolicy {
                delay_ns: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(Mode::Replicated(ReplicatedService { replicas })),
        endpoint: None,
        ..Default::default()
    }
}

/// Polls `check` every 20 ms for up to 15 s: a bound against hanging, not a timing assertion.
pub(crate) async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    for _ in 0..750 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn tasks(api: &Api) -> Vec<Task> {
    let listed = api.list_tasks(local(ListTasksRequest::default())).await;
    let chunks = listed.expect("list tasks").into_inner();
    mesh_proto::gather(chunks).await.expect("tasks").tasks
}

pub(crate) async fn running(api: &Api, service: &str) -> usize {
    let listed = api.list_services(local(ListServicesRequest {})).await;
    let chunks = listed.expect("list services").into_inner();
    let listed = mesh_proto::gather(chunks).await.expect("services");
    let id = listed
        .services
        .iter()
        .find(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .is_some_and(|a| a.name == service)
        })
        .map(|s| s.id.clone())
        .unwrap_or_default();
    listed.running_tasks.get(&id).copied().unwrap_or_default() as usize
}

fn running_containers(fake: &FakeExecutor) -> usize {
    fake.containers()
        .iter()
        .filter(|c| c.running && !c.sandbox)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_lifecycle_survives_a_daemon_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeExecutor::new());
    let port = free_port();
    let daemon = initialized(dir.path(), port, fake.clone()).await;
    let api = daemon.api().clone();

    api.create_service(local(CreateServiceRequest {
        spec: Some(spec("web", 3)),
    }))
    .await
    .expect("create");
    eventually("3 replicas run", || async {
        running(&api, "web").await == 3
    })
    .await;
    assert_eq!(running_containers(&fake), 3);

    // A container that exits is replaced in its slot, and the failure stays in the history.
    let victim = tasks(&api)
        .await
        .into_iter()
        .find(|t| t.slot == 2)
        .expect("slot 2");
    assert!(fake.exit(&victim.id, 1));
    eventually("the failed task is replaced", || async {
        let all = tasks(&api).await;
        let failed = all.iter().any(|t| {
            t.id == victim.id
                && t.status
                    .as_ref()
                    .is_some_and(|s| s.state == TaskState::Failed as i32)
        });
        let replaced = all.iter().any(|t| {
            t.slot == 2
                && t.id != victim.id
                && t.status
                    .as_ref()
                    .is_some_and(|s| s.state == TaskState::Running as i32)
        });
        failed && replaced
    })
    .await;

    // Scale 3 -> 5 -> 1.
    for replicas in [5u64, 1] {
        let service = api
            .get_service(local(GetServiceRequest {
                reference: "web".into(),
            }))
            .await
            .expect("get")
            .into_inner();
        api.update_service(local(UpdateServiceRequest {
            service_id: service.id.clone(),
            version: service.meta.and_then(|m| m.version),
            spec: Some(spec("web", replicas)),
            rollback: false,
        }))
        .await
        .expect("scale");
        eventually("the containers follow the scale", || async {
            running(&api, "web").await == replicas as usize
                && running_containers(&fake) == replicas as usize
        })
        .await;
    }

    // A restarted daemon keeps the state and adopts the running container instead of replacing it.
    let before: Vec<String> = fake
        .containers()
        .iter()
        .filter(|c| c.running)
        .map(|c| c.id.clone())
        .collect();
    let prepared = fake.calls("prepare");
    daemon.shutdown().await;
    drop(daemon);
    let daemon = Daemon::new(config(dir.path(), port), fake.clone(), None);
    daemon.resume().await.expect("resume");
    let api = daemon.api().clone();
    eventually("the service is back with its replica", || async {
        running(&api, "web").await == 1
    })
    .await;
    let after: Vec<String> = fake
        .containers()
        .iter()
        .filter(|c| c.running)
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(before, after, "the running container was re-adopted");
    assert_eq!(
        fake.calls("prepare"),
        prepared,
        "no container was created again"
    );

    // Removing the service removes its containers.
    api.remove_service(local(RemoveServiceRequest {
        service_id: "web".into(),
    }))
    .await
    .expect("remove");
    eventually("no container is left", || async {
        fake.containers().is_empty()
    })
    .await;
    for _ in 0..750 {
        if tasks(&api).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<_> = tasks(&api)
        .await
        .into_iter()
        .map(|t| {
            (
                t.id,
                t.desired_state,
                t.status.map(|s| (s.state, s.message)),
            )
        })
        .collect();
    assert!(left.is_empty(), "tasks not reaped: {left:?}");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeExecutor::new());
    let daemon = Daemon::new(config(dir.path(), free_port()), fake.clone(), None);
    // Before init every control call says this is not a manager.
    let Err(err) = daemon
        .api()
        .list_services(local(ListServicesRequest {}))
        .await
    else {
        panic!("listing services before init: not a manager yet, yet it answered");
    };
    assert!(err.message().contains("not a manager"), "{}", err.message());
    init(&daemon).await;
    assert!(
        daemon.init(InitRequest::default()).await.is_err(),
        "a second init is refused"
    );
    let api = daemon.api().clone();

    let mut bad_constraint = spec("bad", 1);
    if let Some(task) = bad_constraint.task.as_mut() {
        task.placement = Some(mesh_proto::Placement {
            constraints: vec!["node.nope==1".into()],
            ..Default::default()
        });
    }
    let mut no_image = spec("noimage", 1);
    if let Some(c) = no_image.task.as_mut().and_then(|t| t.container.as_mut()) {
        c.image.clear();
    }
    for bad in [bad_constraint, no_image, spec("-bad name", 1)] {
        let err = api
            .create_service(local(CreateServiceRequest { spec: Some(bad) }))
            .await
            .expect_err("refused");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{}",
            err.message()
        );
        assert!(!err.message().contains('\n'), "one line: {}", err.message());
    }
    api.create_service(local(CreateServiceRequest {
        spec: Some(spec("dup", 0)),
    }))
    .await
    .expect("create");
    let err = api
        .create_service(local(CreateServiceRequest {
            spec: Some(spec("dup", 0)),
        }))
        .await
        .expect_err("duplicate name");
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let err = api
        .remove_service(local(RemoveServiceRequest {
            service_id: "nosuch".into(),
        }))
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let listed = api.list_services(local(ListServicesRequest {})).await;
    let chunks = listed.expect("list").into_inner();
    let listed = mesh_proto::gather(chunks).await.expect("services");
    assert_eq!(listed.services.len(), 1, "only the valid service exists");
    daemon.shutdown().await;
}

/// Everything the control API shows of the store, to compare before and after a refused request.
async fn everything(api: &Api) -> String {
    let listed = api.list_services(local(ListServicesRequest {})).await;
    let chunks = listed.expect("list services").into_inner();
    let services = mesh_proto::gather(chunks).await.expect("services");
    let listed = api
        .list_networks(local(mesh_proto::ListNetworksRequest {}))
        .await;
    let chunks = listed.expect("list networks").into_inner();
    let networks = mesh_proto::gather(chunks).await.expect("networks");
    let listed = api.list_nodes(local(mesh_proto::ListNodesRequest {})).await;
    let chunks = listed.expect("list nodes").into_inner();
    let nodes = mesh_proto::gather(chunks).await.expect("nodes");
    let specs: Vec<_> = nodes.nodes.iter().map(|n| (&n.id, &n.spec)).collect();
    // Maps in key order, so that equal contents print alike.
    let running: std::collections::BTreeMap<_, _> = services.running_tasks.iter().collect();
    let desired: std::collections::BTreeMap<_, _> = services.desired_tasks.iter().collect();
    format!(
        "{:?}\n{running:?}\n{desired:?}\n{:?}\n{networks:?}\n{specs:?}",
        services.services,
        tasks(api).await
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_million_replicas_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeExecutor::new());
    let daemon = initialized(dir.path(), free_port(), fake.clone()).await;
    let api = daemon.api().clone();
    api.create_service(local(CreateServiceRequest {
        spec: Some(spec("web", 1)),
    }))
    .await
    .expect("create");
    eventually("the replica runs", || async {
        running(&api, "web").await == 1
    })
    .await;
    let before = everything(&api).await;

    let message = "replicas 100000000 is above the limit of 100000 per service";
    let started = std::time::Instant::now();
    let err = api
        .create_service(local(CreateServiceRequest {
            spec: Some(spec("huge", 100_000_000)),
        }))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), message);
    let web = api
        .get_service(local(GetServiceRequest {
            reference: "web".into(),
        }))
        .await
        .expect("get")
        .into_inner();
    let err = api
        .update_service(local(UpdateServiceRequest {
            service_id: web.id.clone(),
            version: web.meta.and_then(|m| m.version),
            spec: Some(spec("web", 100_000_000)),
            rollback: false,
        }))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), message);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after trying: {:?}",
        started.elapsed()
    );

    // Nothing changed, and the manager still answers and still works.
    assert_eq!(everything(&api).await, before);
    api.create_service(local(CreateServiceRequest {
        spec: Some(spec("after", 2)),
    }))
    .await
    .expect("a legal create still works");
    eventually("its replicas run", || async {
        running(&api, "after").await == 2
    })
    .await;
    daemon.shutdown().await;
}

/// The heartbeats do not wait for the worker. Here the executor takes 9 s to list its containers
/// when the worker takes its first assignments; the node's heartbeats go on meanwhile, every 5 s,
/// and the manager never ends its session (its grace is 7.5 s). Before, the session's own loop
/// sent them, and a worker slow to take an assignment held them past the grace: at 5,000
/// simulated nodes, healthy nodes were marked down and their tasks replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_go_on_while_the_worker_is_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeExecutor::new());
    let hold = Duration::from_secs(9);
    fake.slow_list(hold);
    let daemon = initialized(dir.path(), free_port(), fake.clone()).await;
    eventually("the worker lists its containers", || async {
        fake.calls("list") >= 1
    })
    .await;
    // Through the listing, and past the grace after it.
    tokio::time::sleep(hold + Duration::from_secs(1)).await;
    let values =
        crate::metrics::tests::parse(&daemon.metrics().render(daemon.metrics_sample().await));
    assert_eq!(
        values.get("mesh_dispatcher_heartbeat_misses_total"),
        Some(&0.0),
        "{values:?}"
    );
    assert_eq!(
        values.get("mesh_dispatcher_sessions"),
        Some(&1.0),
        "{values:?}"
    );
    daemon.shutdown().await;
}
