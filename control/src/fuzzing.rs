//! Entry points for the fuzz targets under `fuzz/` (see its README): every decoder of bytes that
//! reach a manager from the network or from a user, each driven as the manager (or `meshctl`)
//! drives it, and the seeds that start their corpora. Compiled only with the `fuzzing` feature,
//! which no release build enables.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::SystemTime;

use clap::Parser;
use mesh_proto::service_spec::Mode;
use mesh_proto::{
    Annotations, Cluster, ContainerSpec, CreateNetworkRequest, CreateServiceRequest, Endpoint,
    EndpointSpec, ManagerStatus, Network, NetworkSpec, Node, NodeRole, NodeSpec, NodeState,
    NodeStatus, PortConfig, Proposal, RemoveNetworkRequest, RemoveNodeRequest,
    RemoveServiceRequest, ReplicatedService, Service, ServiceSpec, TaskSpec, UpdateNodeRequest,
    UpdateServiceRequest,
};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta,
    StoredMembership, Vote,
};
use prost::Message;

use crate::api::fuzzing::{METHODS, call};
use crate::ca::{NodeIdentity, Role};
use crate::cli::service::ServiceCommand;
use crate::cli::{Cli, Command, flags, network::NetworkCommand, node::NodeCommand};
use crate::raft::{TypeConfig, check_raft_sender, decode_payload};
use crate::store::{MemoryStore, Store, Tables, direct_store};

/// The Raft group of the seeded cluster, and the member whose certificate the caller holds.
const MEMBERS: [u64; 3] = [1, 2, 3];
const CALLER_RAFT_ID: u64 = 2;

fn name(name: &str) -> Option<Annotations> {
    Some(Annotations {
        name: name.into(),
        labels: HashMap::from([("zone".to_string(), "a".to_string())]),
    })
}

fn web_spec() -> ServiceSpec {
    ServiceSpec {
        annotations: name("web"),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "mesh/busybox:latest".into(),
                args: vec!["httpd".into(), "-f".into()],
                env: vec!["MODE=demo".into()],
                ..ContainerSpec::default()
            }),
            networks: vec![mesh_proto::NetworkAttachmentConfig {
                target: "front".into(),
                aliases: Vec::new(),
            }],
            ..TaskSpec::default()
        }),
        mode: Some(Mode::Replicated(ReplicatedService { replicas: 3 })),
        endpoint: Some(EndpointSpec {
            mode: mesh_proto::EndpointMode::Vip as i32,
            ports: vec![PortConfig {
                target_port: 80,
                published_port: 8080,
                ..PortConfig::default()
            }],
        }),
        update_config: None,
        rollback_config: None,
    }
}

/// What the seeded cluster holds: its cluster object, a manager and a worker, the ingress
/// network and another, and a service publishing a port on it.
fn objects() -> (Cluster, Vec<Node>, Vec<Network>, Service) {
    let cluster = Cluster {
        id: "cluster-1".into(),
        ..Cluster::default()
    };
    let node = |id: &str, role: NodeRole, state: NodeState| Node {
        id: id.into(),
        spec: Some(NodeSpec {
            annotations: name(id),
            desired_role: role as i32,
            availability: mesh_proto::NodeAvailability::Active as i32,
        }),
        status: Some(NodeStatus {
            state: state as i32,
            ..NodeStatus::default()
        }),
        manager_status: (role == NodeRole::Manager).then(|| ManagerStatus {
            raft_id: 1,
            ..ManagerStatus::default()
        }),
        role: role as i32,
        ..Node::default()
    };
    let nodes = vec![
        node("node-manager", NodeRole::Manager, NodeState::Ready),
        node("node-worker", NodeRole::Worker, NodeState::Down),
    ];
    let network = |id: &str, ingress: bool| Network {
        id: format!("{id}-id"),
        spec: Some(NetworkSpec {
            annotations: name(id),
            driver: "overlay".into(),
            ingress,
            ..NetworkSpec::default()
        }),
        ..Network::default()
    };
    let networks = vec![network("ingress", true), network("front", false)];
    let service = Service {
        id: "service-web".into(),
        spec: Some(web_spec()),
        spec_version: 1,
        endpoint: Some(Endpoint {
            spec: web_spec().endpoint,
            ports: web_spec().endpoint.map(|e| e.ports).unwrap_or_default(),
            virtual_ips: Vec::new(),
        }),
        ..Service::default()
    };
    (cluster, nodes, networks, service)
}

/// A store holding [`objects`], whose writes apply at once.
fn seeded_store() -> Store {
    let store = direct_store();
    let (cluster, nodes, networks, service) = objects();
    let written = futures::executor::block_on(store.update(|tx| {
        tx.create(cluster.clone())?;
        for node in &nodes {
            tx.create(node.clone())?;
        }
        for network in &networks {
            tx.create(network.clone())?;
        }
        tx.create(service.clone())
    }));
    debug_assert!(written.is_ok(), "seeding the store: {written:?}");
    store
}

/// A control API request as a client sends it: the first byte picks the method (see
/// [`METHODS`]), the rest is the protobuf request, handled by the manager's own handler against
/// a small seeded cluster. Panics if a refused request changed the store.
pub fn api_request(data: &[u8]) {
    let Some((&method, body)) = data.split_first() else {
        return;
    };
    let store = seeded_store();
    let before = store.memory().snapshot();
    let result = futures::executor::block_on(call(&store, method, body));
    if let Err(status) = result {
        assert!(
            store.memory().snapshot() == before,
            "{} was refused ({}) but changed the store",
            METHODS[usize::from(method) % METHODS.len()],
            status.message()
        );
    }
}

fn caller() -> NodeIdentity {
    NodeIdentity {
        node_id: "node-manager-2".into(),
        role: Role::Manager,
        cluster_id: "cluster-1".into(),
        not_before: SystemTime::UNIX_EPOCH,
        not_after: SystemTime::UNIX_EPOCH,
        serial: vec![1],
        raft_id: Some(CALLER_RAFT_ID),
    }
}

/// A Raft message as a peer sends it on 2377 (the JSON of `RaftPayload.data`), taken as each
/// of the three requests the Raft service decodes, and as each response the Raft client
/// decodes. A decoded request is checked against the caller's certificate as the service does;
/// the proposals its entries carry are applied to a seeded store as a follower's state machine
/// applies them once committed, and a snapshot is restored as the state machine installs it.
pub fn raft_payload(data: &[u8]) {
    let members = MEMBERS.to_vec();
    let sender = |vote: &Vote<u64>| vote.leader_id().voted_for();
    if let Ok(rpc) = decode_payload::<AppendEntriesRequest<TypeConfig>>(data) {
        let _ = check_raft_sender(&caller(), sender(&rpc.vote), &members);
        let store = seeded_store();
        for entry in &rpc.entries {
            if let EntryPayload::Normal(proposal) = &entry.payload {
                let _ = store.memory().apply(entry.log_id.index, proposal.clone());
            }
        }
    }
    if let Ok(rpc) = decode_payload::<VoteRequest<u64>>(data) {
        let _ = check_raft_sender(&caller(), sender(&rpc.vote), &members);
    }
    if let Ok(rpc) = decode_payload::<InstallSnapshotRequest<TypeConfig>>(data) {
        let _ = check_raft_sender(&caller(), sender(&rpc.vote), &members);
        if let Ok(tables) = Tables::decode(&rpc.data) {
            MemoryStore::new().restore(tables);
        }
    }
    let _ = serde_json::from_slice::<Result<AppendEntriesResponse<u64>, RaftError<u64>>>(data);
    let _ = serde_json::from_slice::<Result<VoteResponse<u64>, RaftError<u64>>>(data);
    let _ = serde_json::from_slice::<
        Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>,
    >(data);
}

/// A `meshctl` command line: the words are the input split at NUL bytes (any bytes, as a shell
/// may pass them). What parses goes through every check meshctl makes before it sends, and a
/// service spec also through the manager's own validation.
pub fn meshctl_args(data: &[u8]) {
    let words = std::iter::once(OsString::from("meshctl")).chain(
        data.split(|b| *b == 0)
            .map(|word| OsString::from_vec(word.to_vec())),
    );
    let Ok(cli) = Cli::try_parse_from(words) else {
        return;
    };
    match cli.command {
        Some(Command::Service(ServiceCommand::Create(flags))) => {
            if let Ok(spec) = flags.to_spec() {
                let _ = crate::api::validate_service_spec(&spec);
            }
        }
        Some(Command::Service(ServiceCommand::Update(flags))) if flags.validate().is_ok() => {
            let mut spec = web_spec();
            if flags.apply(&mut spec).is_ok() {
                let _ = crate::api::validate_service_spec(&spec);
            }
        }
        Some(Command::Network(NetworkCommand::Create(args))) => {
            let _ = args.to_spec();
        }
        Some(Command::Node(NodeCommand::Update(args))) => {
            let mut spec = NodeSpec::default();
            let labels = &mut spec
                .annotations
                .get_or_insert_with(Annotations::default)
                .labels;
            labels.extend(args.label_add);
            labels.retain(|k, _| !args.label_rm.contains(k));
            let _ = crate::limits::node(&spec);
        }
        _ => {}
    }
}

/// One flag value, as `meshctl` reads it for every flag that takes one.
pub fn meshctl_flag(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let _ = flags::parse_duration_ns(value);
    let _ = flags::parse_bytes(value);
    let _ = flags::parse_nano_cpus(value);
    let _ = flags::parse_replicas(value);
    let _ = flags::parse_count("--restart-max-attempts", value);
    let _ = flags::parse_restart_condition(value);
    let _ = flags::parse_availability(value);
    let _ = flags::parse_pull(value);
    let _ = flags::parse_mode_global(value);
    let _ = flags::parse_ps_filter(value);
    let _ = flags::parse_label(value);
    let _ = flags::parse_placement_pref(value);
    let _ = flags::parse_name(value);
    let _ = flags::parse_scale(value);
    let _ = flags::parse_addr(value);
    let _ = flags::parse_shell_words(value);
    let _ = flags::parse_mount(value);
    let _ = flags::parse_endpoint_mode(value);
    let _ = flags::parse_publish(value);
    let _ = crate::cli::parse_format(value);
    let _ = crate::cli::spec::validate_image(value);
    let _ = crate::scheduler::constraint::Constraint::parse(value);
    let _ = crate::api::validate_service_name(value);
}

/// One compose file, as `meshctl stack deploy -c` reads it: loaded (YAML, version, keys,
/// interpolation from a fixed environment), then converted into a stack's plan, with the files it
/// names read as empty or missing. Any input gives a plan or a one-line error, never a panic.
pub fn compose_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: std::collections::HashMap<String, String> =
        [("TAG", "v1"), ("PORT", "8080"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let files = [crate::compose::ComposeFile {
        name: "docker-compose.yml".into(),
        text: text.to_string(),
    }];
    let Ok(loaded) = crate::compose::load(&files, &env) else {
        return;
    };
    let read = |path: &std::path::Path| -> Result<String, String> {
        match path.file_name().and_then(|n| n.to_str()) {
            Some(name) if name.ends_with(".env") => Ok("A=1\nB\n".into()),
            _ => Err(format!(
                "open {}: no such file or directory",
                path.display()
            )),
        }
    };
    let context = crate::compose::Context {
        stack: "fuzz",
        working_dir: std::path::Path::new("/srv/stack"),
        env: &env,
        read: &read,
    };
    let _ = crate::compose::convert(&loaded.config, &context);
}

/// `meshctl` command lines that reach every noun, as a user types them.
const COMMAND_LINES: &[&[&str]] = &[
    &[
        "service",
        "create",
        "--name",
        "api",
        "--secret",
        "source=db_password,target=db,uid=1000,gid=1000,mode=0400",
        "--config",
        "source=app.conf,target=/etc/app.conf",
        "busybox",
    ],
    &[
        "service",
        "update",
        "--secret-rm",
        "db_password",
        "--secret-add",
        "source=db_password.v2,target=db",
        "web",
    ],
    &[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "-p",
        "8080:80",
        "--publish",
        "published=9000,target=90,protocol=udp,mode=host",
        "--network",
        "front",
        "--env",
        "MODE=demo",
        "--mount",
        "type=bind,source=/srv,target=/data,readonly",
        "--constraint",
        "node.labels.zone==a",
        "--placement-pref",
        "spread=node.labels.zone",
        "--limit-cpu",
        "0.5",
        "--limit-memory",
        "512M",
        "--restart-condition",
        "on-failure",
        "--restart-delay",
        "1m30s",
        "mesh/busybox:latest",
        "httpd",
        "-f",
    ],
    &[
        "service",
        "create",
        "-d",
        "--mode",
        "global",
        "--endpoint-mode",
        "dnsrr",
        "--mount",
        "type=tmpfs,target=/tmp,tmpfs-size=64m",
        "mesh/busybox",
        "sleep",
        "1d",
    ],
    &[
        "service",
        "update",
        "--replicas",
        "5",
        "--env-add",
        "A=1",
        "--env-rm",
        "MODE",
        "--publish-add",
        "published=9001,target=91",
        "--publish-rm",
        "8080",
        "--args",
        "sh -c 'echo \"hi\" && sleep 1'",
        "--network-add",
        "back",
        "web",
    ],
    &["service", "scale", "web=5", "api=0"],
    &[
        "service",
        "ps",
        "-f",
        "desired-state=running",
        "--format",
        "json",
        "web",
    ],
    &["service", "logs", "-f", "--tail", "20", "web"],
    &["service", "inspect", "--pretty", "web"],
    &["service", "rm", "web"],
    &[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.20.0.0/24",
        "--gateway",
        "10.20.0.1",
        "--ip-range",
        "10.20.0.128/25",
        "--label",
        "team=net",
        "-o",
        "mtu=1350",
        "backend",
    ],
    &["network", "ls", "-q"],
    &[
        "node",
        "update",
        "--availability",
        "drain",
        "--label-add",
        "zone=b",
        "--label-rm",
        "old",
        "node1",
    ],
    &["node", "ps", "--no-trunc", "node1"],
    &["node", "rm", "--force", "node3"],
    &[
        "swarm",
        "init",
        "--advertise-addr",
        "10.232.0.1",
        "--dispatcher-heartbeat",
        "5s",
        "--default-addr-pool",
        "10.10.0.0/16",
        "--default-addr-pool-mask-length",
        "24",
    ],
    &[
        "swarm",
        "join",
        "--token",
        "SWMTKN-1-abc-def",
        "--availability",
        "pause",
        "10.0.0.1:2377",
    ],
    &["swarm", "join-token", "--rotate", "manager"],
    &["-H", "unix:///tmp/mesh.sock", "info", "--format", "json"],
    &[
        "events",
        "--filter",
        "type=service",
        "--since",
        "2026-12-03T09:30:00.5Z",
        "--until",
        "10m",
        "--format",
        "json",
    ],
];

/// Single flag values, valid and not.
const FLAG_VALUES: &[&str] = &[
    "1m30s",
    "512M",
    "1.5g",
    "0.25",
    "3",
    "on-failure",
    "drain",
    "desired-state=running",
    "zone=a",
    "spread=node.labels.zone",
    "web_1",
    "web=3",
    "10.0.0.1:2377",
    "[::1]:2377",
    "sh -c 'a \"b\\\" c\"' d\\ e",
    "type=volume,source=data,target=/data,volume-label=a=b,volume-nocopy=true",
    "published=8080,target=80,protocol=udp,mode=host",
    "8080:80/udp",
    "node.labels.zone!=b",
    "registry.local:5000/team/app:1.2@sha256:abc",
    "{{json .}}",
];

fn commit_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(3, 1), index)
}

/// Raft messages and responses as peers send them: a heartbeat and entries (a blank, a
/// proposal creating a service, a membership change), a vote, a snapshot of the seeded store.
fn raft_seeds() -> Vec<(String, Vec<u8>)> {
    let store = seeded_store();
    let mut service = Service {
        id: "service-api".into(),
        spec: Some(web_spec()),
        ..Service::default()
    };
    if let Some(spec) = service.spec.as_mut() {
        spec.annotations = name("api");
        spec.endpoint = None;
    }
    let transaction = store
        .memory()
        .write_tx(|tx| tx.create(service.clone()))
        .map(|(tx, ())| tx)
        .unwrap_or_default();
    let proposal = Proposal {
        transactions: vec![transaction],
    };
    let nodes: BTreeMap<u64, BasicNode> = MEMBERS
        .iter()
        .map(|id| (*id, BasicNode::new(format!("10.0.0.{id}:2377"))))
        .collect();
    let membership = Membership::new(vec![MEMBERS.into_iter().collect::<BTreeSet<u64>>()], nodes);
    let vote = Vote::new_committed(3, 1);
    let entries = vec![
        Entry::<TypeConfig> {
            log_id: commit_id(7),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: commit_id(8),
            payload: EntryPayload::Normal(proposal),
        },
        Entry {
            log_id: commit_id(9),
            payload: EntryPayload::Membership(membership.clone()),
        },
    ];
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(commit_id(6)),
        entries,
        leader_commit: Some(commit_id(6)),
    };
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(commit_id(9)),
        entries: Vec::new(),
        leader_commit: Some(commit_id(9)),
    };
    let request_vote = VoteRequest {
        vote: Vote::new(4, CALLER_RAFT_ID),
        last_log_id: Some(commit_id(9)),
    };
    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: SnapshotMeta {
            last_log_id: Some(commit_id(9)),
            last_membership: StoredMembership::new(Some(commit_id(9)), membership),
            snapshot_id: "3-9-1700000000".into(),
        },
        offset: 0,
        data: store.memory().snapshot().encode_to_vec(),
        done: true,
    };
    let appended: Result<AppendEntriesResponse<u64>, RaftError<u64>> =
        Ok(AppendEntriesResponse::Success);
    let voted: Result<VoteResponse<u64>, RaftError<u64>> = Ok(VoteResponse {
        vote,
        vote_granted: true,
        last_log_id: Some(commit_id(9)),
    });
    let installed: Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> =
        Ok(InstallSnapshotResponse { vote });
    let json = [
        ("append-entries", serde_json::to_vec(&append)),
        ("heartbeat", serde_json::to_vec(&heartbeat)),
        ("vote", serde_json::to_vec(&request_vote)),
        ("install-snapshot", serde_json::to_vec(&snapshot)),
        ("append-entries-response", serde_json::to_vec(&appended)),
        ("vote-response", serde_json::to_vec(&voted)),
        ("install-snapshot-response", serde_json::to_vec(&installed)),
    ];
    json.into_iter()
        .filter_map(|(name, bytes)| Some((name.to_string(), bytes.ok()?)))
        .collect()
}

/// Control API requests as meshctl sends them: specs made from [`COMMAND_LINES`] by meshctl's
/// own parser, the other write methods, and a filtered `ListTasks`.
fn api_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut push = |name: &str, method: &str, body: Vec<u8>| {
        if let Some(index) = METHODS.iter().position(|m| *m == method) {
            let mut bytes = vec![u8::try_from(index).unwrap_or_default()];
            bytes.extend(body);
            seeds.push((name.to_string(), bytes));
        }
    };
    for (i, line) in COMMAND_LINES.iter().enumerate() {
        let Ok(cli) = Cli::try_parse_from(std::iter::once("meshctl").chain(line.iter().copied()))
        else {
            continue;
        };
        match cli.command {
            Some(Command::Service(ServiceCommand::Create(flags))) => {
                if let Ok(spec) = flags.to_spec() {
                    let request = CreateServiceRequest { spec: Some(spec) };
                    push(
                        &format!("create-service-{i}"),
                        "CreateService",
                        request.encode_to_vec(),
                    );
                }
            }
            Some(Command::Service(ServiceCommand::Update(flags))) => {
                let mut spec = web_spec();
                if flags.apply(&mut spec).is_ok() {
                    let request = UpdateServiceRequest {
                        service_id: "web".into(),
                        version: None,
                        spec: (!flags.rollback).then_some(spec),
                        rollback: flags.rollback,
                    };
                    push(
                        &format!("update-service-{i}"),
                        "UpdateService",
                        request.encode_to_vec(),
                    );
                }
            }
            Some(Command::Network(NetworkCommand::Create(args))) => {
                if let Ok(spec) = args.to_spec() {
                    let request = CreateNetworkRequest { spec: Some(spec) };
                    push(
                        &format!("create-network-{i}"),
                        "CreateNetwork",
                        request.encode_to_vec(),
                    );
                }
            }
            _ => {}
        }
    }
    let remove_service = RemoveServiceRequest {
        service_id: "web".into(),
    };
    push(
        "remove-service",
        "RemoveService",
        remove_service.encode_to_vec(),
    );
    let remove_network = RemoveNetworkRequest {
        network_id: "front".into(),
    };
    push(
        "remove-network",
        "RemoveNetwork",
        remove_network.encode_to_vec(),
    );
    let (_, nodes, _, _) = objects();
    let update_node = UpdateNodeRequest {
        node_id: "node-worker".into(),
        version: None,
        spec: nodes.get(1).and_then(|n| n.spec.clone()),
    };
    push("update-node", "UpdateNode", update_node.encode_to_vec());
    let remove_node = RemoveNodeRequest {
        node_id: "node-worker".into(),
        force: true,
    };
    push("remove-node", "RemoveNode", remove_node.encode_to_vec());
    let secret = mesh_proto::CreateSecretRequest {
        spec: Some(mesh_proto::SecretSpec {
            annotations: Some(mesh_proto::Annotations {
                name: "db_password".into(),
                ..Default::default()
            }),
            data: b"hunter2".to_vec(),
        }),
    };
    push("create-secret", "CreateSecret", secret.encode_to_vec());
    let config = mesh_proto::CreateConfigRequest {
        spec: Some(mesh_proto::ConfigSpec {
            annotations: Some(mesh_proto::Annotations {
                name: "app.conf".into(),
                ..Default::default()
            }),
            data: b"port=80\n".to_vec(),
        }),
    };
    push("create-config", "CreateConfig", config.encode_to_vec());
    let list_tasks = mesh_proto::ListTasksRequest {
        service_ids: vec!["service-web".into()],
        node_ids: vec!["node-worker".into()],
        desired_states: vec![mesh_proto::TaskState::Running as i32],
    };
    push("list-tasks", "ListTasks", list_tasks.encode_to_vec());
    seeds
}

/// Seed inputs, per target: `(target, name, bytes)`, made from real encodings.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, bytes) in raft_seeds() {
        seeds.push(("raft_payload", name, bytes));
    }
    for (name, bytes) in api_seeds() {
        seeds.push(("api_request", name, bytes));
    }
    for (i, line) in COMMAND_LINES.iter().enumerate() {
        seeds.push((
            "meshctl_args",
            format!("line-{i}"),
            line.join("\0").into_bytes(),
        ));
    }
    for (i, value) in FLAG_VALUES.iter().enumerate() {
        seeds.push((
            "meshctl_flag",
            format!("value-{i}"),
            value.as_bytes().to_vec(),
        ));
    }
    for (name, text) in COMPOSE_FILES {
        seeds.push((
            "compose_file",
            format!("file-{name}"),
            text.as_bytes().to_vec(),
        ));
    }
    seeds
}

/// Real compose files (Docker's samples, docs and tutorial, as the compose tests read them).
const COMPOSE_FILES: &[(&str, &str)] = &[
    (
        "voting-app-3.9",
        include_str!("compose/testdata/voting-app-3.9.yml"),
    ),
    (
        "voting-app-3",
        include_str!("compose/testdata/voting-app-3.yml"),
    ),
    (
        "docs-deploy-3.9",
        include_str!("compose/testdata/docs-deploy-3.9.yml"),
    ),
    (
        "stackdemo-3",
        include_str!("compose/testdata/stackdemo-3.yml"),
    ),
];
