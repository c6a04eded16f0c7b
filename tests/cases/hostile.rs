//! Hostile clients on the manager port (2377) of a 3-manager cluster: no certificate, a
//! self-signed one, one from another cluster's CA that names a real manager, a worker's, a
//! demoted manager's old one and a removed node's. Each calls every method on every manager
//! (Raft with a term 100,000 ahead, membership changes, CA rotation, writes of every kind); every
//! call it has no right to is refused with Unauthenticated or PermissionDenied, and afterwards
//! every manager's Raft term, leader and membership, the CA and join tokens and every stored
//! object are as they were, and each manager counted the refusals.

use std::time::Duration;

use anyhow::{Context, ensure};
use mesh_control::ca::gate::{METHODS, Need};
use mesh_control::ca::{NodeKey, NodeSubject, Role as CertRole, RootCa, TlsIdentity, connect};
use mesh_proto::control_client::ControlClient;
use mesh_proto::dispatcher_client::DispatcherClient;
use mesh_proto::node_ca_client::NodeCaClient;
use mesh_proto::raft_client::RaftClient;
use mesh_proto::raft_membership_client::RaftMembershipClient;
use mesh_proto::*;
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, require_privileged, wait_until};
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic::{Code, Status};

const CONVERGE: Duration = Duration::from_secs(60);

/// The node's certificate, key and roots as they are on its disk now.
fn identity_of(node: &Node) -> anyhow::Result<TlsIdentity> {
    Ok(TlsIdentity::from_pem(
        node.certificate_file("node.crt")?,
        node.certificate_file("node.key")?,
        node.certificate_file("ca.crt")?,
    )?)
}

fn cert_role(node: &Node) -> anyhow::Result<CertRole> {
    Ok(identity_of(node)?.node_identity()?.role)
}

/// What must not change: per manager, its Raft view, the CA and tokens, and the stored objects.
async fn state(cluster: &Cluster) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    for node in cluster
        .nodes()
        .iter()
        .filter(|n| n.role() == mesh_tests::Role::Manager)
    {
        let info: Value =
            serde_json::from_str(&node.meshctl_ok(&["info", "--format", "json"]).await?)?;
        let raft = &info["Swarm"]["Raft"];
        let ls = async |what: &str| -> anyhow::Result<Value> {
            let mut rows = node.meshctl_json(&[what, "ls"]).await?;
            rows.sort_by_key(|r| r["ID"].as_str().unwrap_or_default().to_owned());
            Ok(Value::Array(rows))
        };
        all.push(json!({
            "node": node.hostname(),
            "term": raft["Term"],
            "leader": raft["Leader"],
            "voters": raft["Voters"],
            "learners": raft["Learners"],
            "cluster": info["Swarm"]["ClusterID"],
            "worker_token": node.meshctl_ok(&["swarm", "join-token", "-q", "worker"]).await?,
            "manager_token": node.meshctl_ok(&["swarm", "join-token", "-q", "manager"]).await?,
            "nodes": ls("node").await?,
            "services": ls("service").await?,
            "networks": ls("network").await?,
            "service": node.meshctl_ok(&["service", "inspect", "web"]).await?,
        }));
    }
    Ok(all)
}

async fn info(node: &Node) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(
        &node.meshctl_ok(&["info", "--format", "json"]).await?,
    )?)
}

/// Raft messages as a peer sends them, from candidate or leader `sender` at `term`.
fn raft_payload(method: &str, term: u64, sender: u64) -> Vec<u8> {
    let vote = json!({"leader_id": {"term": term, "node_id": sender}, "committed": true});
    let body = match method {
        "Vote" => json!({"vote": vote, "last_log_id": null}),
        "AppendEntries" => json!({
            "vote": vote, "prev_log_id": null, "entries": [], "leader_commit": null,
        }),
        _ => json!({
            "vote": vote,
            "meta": {
                "last_log_id": null,
                "last_membership": {"log_id": null, "membership": {"configs": [[sender]], "nodes": {sender.to_string(): {"addr": "10.1.1.1:2377"}}}},
                "snapshot_id": "hostile",
            },
            "offset": 0, "data": [], "done": true,
        }),
    };
    serde_json::to_vec(&body).expect("json")
}

/// What the calls aim at: real ids and names, so that a call let through would do harm.
struct Targets {
    node_id: String,
    leader_raft_id: u64,
    term: u64,
}

/// Calls `method` (a path of [`METHODS`]) on `channel` with a request that would change or read
/// something if allowed; the status it was refused with, or `None` when it was let through.
async fn call(channel: Channel, method: &str, t: &Targets) -> Option<Status> {
    let (service, name) = method
        .trim_start_matches("/mesh.v1.")
        .split_once('/')
        .expect("a method path");
    let mut control = ControlClient::new(channel.clone());
    let mut dispatcher = DispatcherClient::new(channel.clone());
    let node_id = t.node_id.clone();
    let spec = ServiceSpec {
        annotations: Some(Annotations {
            name: "intruder".into(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: BUSYBOX_IMAGE.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let result: Result<(), Status> = match (service, name) {
        ("NodeCA", "GetRootCACertificate") => NodeCaClient::new(channel)
            .get_root_ca_certificate(GetRootCaCertificateRequest {})
            .await
            .map(drop),
        ("NodeCA", "IssueNodeCertificate") => NodeCaClient::new(channel)
            .issue_node_certificate(IssueNodeCertificateRequest {
                csr: NodeKey::generate().and_then(|k| k.csr_der()).expect("csr"),
                raft_id: 77,
                ..Default::default()
            })
            .await
            .map(drop),
        ("Dispatcher", "Session") => dispatcher
            .session(SessionRequest {
                node_id,
                ..Default::default()
            })
            .await
            .map(drop),
        ("Dispatcher", "Heartbeat") => dispatcher
            .heartbeat(HeartbeatRequest {
                session_id: "stolen".into(),
            })
            .await
            .map(drop),
        ("Dispatcher", "Assignments") => dispatcher
            .assignments(AssignmentsRequest {
                session_id: "stolen".into(),
            })
            .await
            .map(drop),
        ("Dispatcher", "UpdateTaskStatus") => dispatcher
            .update_task_status(UpdateTaskStatusRequest {
                session_id: "stolen".into(),
                updates: Vec::new(),
            })
            .await
            .map(drop),
        ("Dispatcher", "LogSubscriptions") => dispatcher
            .log_subscriptions(LogSubscriptionsRequest {
                session_id: "stolen".into(),
            })
            .await
            .map(drop),
        ("Dispatcher", "PublishLogs") => dispatcher
            .publish_logs(futures::stream::iter(vec![PublishLogsMessage {
                session_id: "stolen".into(),
                ..Default::default()
            }]))
            .await
            .map(drop),
        ("Control", "GetNode") => control
            .get_node(GetNodeRequest { reference: node_id })
            .await
            .map(drop),
        ("Control", "ListNodes") => control
            .list_nodes(ListNodesRequest::default())
            .await
            .map(drop),
        ("Control", "UpdateNode") => control
            .update_node(UpdateNodeRequest {
                node_id,
                spec: Some(NodeSpec {
                    availability: NodeAvailability::Drain as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(drop),
        ("Control", "RemoveNode") => control
            .remove_node(RemoveNodeRequest {
                node_id,
                force: true,
            })
            .await
            .map(drop),
        ("Control", "CreateService") => control
            .create_service(CreateServiceRequest { spec: Some(spec) })
            .await
            .map(drop),
        ("Control", "GetService") => control
            .get_service(GetServiceRequest {
                reference: "web".into(),
            })
            .await
            .map(drop),
        ("Control", "UpdateService") => control
            .update_service(UpdateServiceRequest {
                service_id: "web".into(),
                spec: Some(spec),
                ..Default::default()
            })
            .await
            .map(drop),
        ("Control", "RemoveService") => control
            .remove_service(RemoveServiceRequest {
                service_id: "web".into(),
            })
            .await
            .map(drop),
        ("Control", "ListServices") => control
            .list_services(ListServicesRequest::default())
            .await
            .map(drop),
        ("Control", "ListTasks") => control
            .list_tasks(ListTasksRequest::default())
            .await
            .map(drop),
        ("Control", "GetCluster") => control
            .get_cluster(GetClusterRequest::default())
            .await
            .map(drop),
        ("Control", "CreateNetwork") => control
            .create_network(CreateNetworkRequest {
                spec: Some(NetworkSpec {
                    annotations: Some(Annotations {
                        name: "intruders".into(),
                        ..Default::default()
                    }),
                    driver: "overlay".into(),
                    ..Default::default()
                }),
            })
            .await
            .map(drop),
        ("Control", "GetNetwork") => control
            .get_network(GetNetworkRequest {
                reference: "back".into(),
            })
            .await
            .map(drop),
        ("Control", "ListNetworks") => control
            .list_networks(ListNetworksRequest::default())
            .await
            .map(drop),
        ("Control", "RemoveNetwork") => control
            .remove_network(RemoveNetworkRequest {
                network_id: "back".into(),
            })
            .await
            .map(drop),
        ("Control", "GetJoinTokens") => control
            .get_join_tokens(GetJoinTokensRequest::default())
            .await
            .map(drop),
        ("Control", "RotateRootCA") => control
            .rotate_root_ca(RotateRootCaRequest::default())
            .await
            .map(drop),
        ("Control", "ServiceLogs") => control
            .service_logs(ServiceLogsRequest {
                reference: "web".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        ("Control", "Events") => control
            .events(EventsRequest {
                since_ns: Some(0),
                ..Default::default()
            })
            .await
            .map(drop),
        ("Control", "CreateSecret") => control
            .create_secret(CreateSecretRequest {
                spec: Some(SecretSpec {
                    annotations: Some(Annotations {
                        name: "intruders".into(),
                        ..Default::default()
                    }),
                    data: b"planted".to_vec(),
                }),
            })
            .await
            .map(drop),
        ("Control", "GetSecret") => control
            .get_secret(GetSecretRequest {
                reference: "intruders".into(),
            })
            .await
            .map(drop),
        ("Control", "ListSecrets") => control
            .list_secrets(ListSecretsRequest::default())
            .await
            .map(drop),
        ("Control", "UpdateSecret") => control
            .update_secret(UpdateSecretRequest {
                secret_id: "intruders".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        ("Control", "RemoveSecret") => control
            .remove_secret(RemoveSecretRequest {
                secret_id: "intruders".into(),
            })
            .await
            .map(drop),
        ("Control", "CreateConfig") => control
            .create_config(CreateConfigRequest {
                spec: Some(ConfigSpec {
                    annotations: Some(Annotations {
                        name: "intruders".into(),
                        ..Default::default()
                    }),
                    data: b"planted".to_vec(),
                }),
            })
            .await
            .map(drop),
        ("Control", "GetConfig") => control
            .get_config(GetConfigRequest {
                reference: "intruders".into(),
            })
            .await
            .map(drop),
        ("Control", "ListConfigs") => control
            .list_configs(ListConfigsRequest::default())
            .await
            .map(drop),
        ("Control", "UpdateConfig") => control
            .update_config(UpdateConfigRequest {
                config_id: "intruders".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        ("Control", "RemoveConfig") => control
            .remove_config(RemoveConfigRequest {
                config_id: "intruders".into(),
            })
            .await
            .map(drop),
        ("Raft", rpc) => {
            let mut raft = RaftClient::new(channel);
            let payload = RaftPayload {
                data: raft_payload(rpc, t.term + 100_000, t.leader_raft_id),
            };
            match rpc {
                "Vote" => raft.vote(payload).await.map(drop),
                "AppendEntries" => raft.append_entries(payload).await.map(drop),
                _ => raft.install_snapshot(payload).await.map(drop),
            }
        }
        ("RaftMembership", "Join") => RaftMembershipClient::new(channel)
            .join(RaftJoinRequest {
                raft_id: 77,
                addr: "10.1.1.1:2377".into(),
                node_id: String::new(),
            })
            .await
            .map(drop),
        ("RaftMembership", "Leave") => RaftMembershipClient::new(channel)
            .leave(RaftLeaveRequest {
                raft_id: t.leader_raft_id,
                node_id: node_id.clone(),
            })
            .await
            .map(drop),
        other => panic!("no hostile call written for {other:?}: add one"),
    };
    result.err()
}

/// A manager certificate from `ca` for `node_id` in cluster `cluster_id`, trusting `roots`.
fn forged(
    ca: &RootCa,
    node_id: &str,
    cluster_id: &str,
    raft_id: u64,
    roots: &TlsIdentity,
) -> TlsIdentity {
    let key = NodeKey::generate().expect("key");
    let subject = NodeSubject {
        node_id,
        role: CertRole::Manager,
        cluster_id,
        raft_id: Some(raft_id),
    };
    let cert = ca
        .sign_node(
            &key.csr_der().expect("csr"),
            &subject,
            Duration::from_secs(3600),
        )
        .expect("sign");
    let mut identity = TlsIdentity::from_pem(cert, key.to_pem(), ca.cert_pem()).expect("identity");
    identity.roots = roots.roots.clone();
    identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_clients_are_refused_everywhere_and_change_nothing() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = Cluster::builder()
        .managers(3)
        .workers(3)
        .dispatcher_heartbeat("1s")
        .start()
        .await?;
    let node1 = cluster.manager();
    node1
        .meshctl_ok(&["network", "create", "-d", "overlay", "back"])
        .await?;
    node1
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--network",
            "back",
            // On a manager that stays one: removing and demoting other nodes moves none of them.
            "--constraint",
            "node.hostname==node2",
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ])
        .await?;

    wait_until(CONVERGE, "web's 2 tasks running", async || {
        let services = node1.meshctl_json(&["service", "ls"]).await?;
        Ok(services
            .iter()
            .any(|s| s["Name"] == "web" && s["Replicas"] == "2/2"))
    })
    .await?;

    // A worker's certificate, and a removed worker's.
    let worker = identity_of(cluster.node("node5")?)?;
    let removed = identity_of(cluster.node("node4")?)?;
    node1
        .meshctl_ok(&["node", "rm", "--force", "node4"])
        .await?;

    // A demoted manager's old certificate: node6 promoted, then demoted and renewed.
    let node6 = cluster.node("node6")?;
    node1.meshctl_ok(&["node", "promote", "node6"]).await?;
    wait_until(CONVERGE, "node6's manager certificate", async || {
        Ok(cert_role(node6)? == CertRole::Manager
            && info(node6).await?["Swarm"]["Raft"]["ID"]
                .as_u64()
                .unwrap_or(0)
                != 0)
    })
    .await?;
    let demoted = identity_of(node6)?;
    node1.meshctl_ok(&["node", "demote", "node6"]).await?;
    wait_until(CONVERGE, "node6's worker certificate", async || {
        Ok(cert_role(node6)? == CertRole::Worker)
    })
    .await?;

    // Strangers: none, self-signed, and another CA's certificate naming node1 and its raft id.
    let node1_info = info(node1).await?;
    let node1_id = node1_info["Swarm"]["NodeID"]
        .as_str()
        .context("node id")?
        .to_owned();
    let cluster_id = node1_info["Swarm"]["ClusterID"]
        .as_str()
        .context("cluster id")?
        .to_owned();
    let leader_raft_id = node1_info["Swarm"]["Raft"]["Leader"]
        .as_u64()
        .context("leader")?;
    let own = identity_of(node1)?;
    let other = RootCa::generate(&cluster_id)?;
    let foreign = forged(&other, &node1_id, &cluster_id, leader_raft_id, &own);
    let mut self_signed =
        TlsIdentity::from_pem(other.cert_pem(), other.key_pem(), other.cert_pem())?;
    self_signed.roots = own.roots.clone();

    let before = state(&cluster).await?;
    let term = before[0]["term"].as_u64().context("term")?;
    let targets = Targets {
        node_id: node1_id,
        leader_raft_id,
        term,
    };
    // (who, identity, which methods are its right and not called)
    let hostile: [(&str, Option<&TlsIdentity>, &[Need]); 6] = [
        ("no certificate", None, &[Need::Anyone]),
        (
            "a self-signed certificate",
            Some(&self_signed),
            &[Need::Anyone],
        ),
        ("another cluster's CA", Some(&foreign), &[Need::Anyone]),
        (
            "a worker's certificate",
            Some(&worker),
            &[Need::Anyone, Need::JoinOrRenew, Need::Node],
        ),
        (
            "a demoted manager's old certificate",
            Some(&demoted),
            &[Need::Anyone],
        ),
        (
            "a removed node's certificate",
            Some(&removed),
            &[Need::Anyone],
        ),
    ];
    let mut calls = 0;
    for manager in cluster
        .nodes()
        .iter()
        .filter(|n| n.role() == mesh_tests::Role::Manager)
    {
        let addr = format!("{}:2377", manager.addr());
        for (who, identity, rights) in &hostile {
            let channel = match identity {
                Some(identity) => connect(&addr, identity).await?,
                None => {
                    mesh_control::ca::connect_with_roots(
                        &addr,
                        node1.certificate_file("ca.crt")?.as_bytes(),
                        None,
                    )
                    .await?
                }
            };
            for (method, need) in METHODS {
                if rights.contains(need) {
                    continue;
                }
                let refused = call(channel.clone(), method, &targets)
                    .await
                    .with_context(|| {
                        format!("{who} called {method} on {addr} and was let through")
                    })?;
                ensure!(
                    matches!(
                        refused.code(),
                        Code::Unauthenticated | Code::PermissionDenied
                    ),
                    "{who} calling {method} on {addr}: {refused:?}"
                );
                calls += 1;
            }
            // A worker may open its own session, never another node's.
            if *who == "a worker's certificate" {
                let refused = call(channel.clone(), "/mesh.v1.Dispatcher/Session", &targets)
                    .await
                    .context("a worker opened a session for node1")?;
                ensure!(refused.code() == Code::PermissionDenied, "{refused:?}");
            }
        }
    }
    // Anything a refused call set off would show within a few heartbeats.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = state(&cluster).await?;
    ensure!(
        before == after,
        "the cluster changed:\nbefore {}\nafter  {}",
        serde_json::to_string_pretty(&before)?,
        serde_json::to_string_pretty(&after)?
    );
    let mut counted = 0;
    for manager in cluster
        .nodes()
        .iter()
        .filter(|n| n.role() == mesh_tests::Role::Manager)
    {
        let refused = info(manager).await?["Swarm"]["RefusedCalls"]
            .as_u64()
            .unwrap_or(0);
        ensure!(refused > 0, "{} counted no refusal", manager.hostname());
        counted += refused;
    }
    ensure!(counted >= calls, "{calls} calls refused, {counted} counted");
    cluster.close()
}
