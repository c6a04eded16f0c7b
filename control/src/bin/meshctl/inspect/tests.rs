//! The inspect JSON keeps the Docker Engine API's keys and shapes.

use super::*;
use mesh_proto::{
    Annotations, ContainerSpec, ManagerStatus, Meta, Mount, NetworkAttachmentConfig,
    NodeDescription, NodeSpec, NodeStatus, Placement, PlacementPreference, Platform,
    ReplicatedService, ResourceRequirements, Resources, ServiceSpec, TaskSpec, UpdateConfig,
    UpdateFailureAction, UpdateOrder, UpdateState, UpdateStatus, Version,
};
use serde_json::json;

#[test]
fn service_has_docker_keys() {
    let service = Service {
        id: "abc".into(),
        meta: Some(Meta {
            version: Some(Version { index: 7 }),
            created_at: 1_500_000_000_000_000_001,
            updated_at: 0,
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: "web".into(),
                labels: [("a".into(), "b".into())].into(),
            }),
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "busybox".into(),
                    args: vec!["sleep".into(), "1".into()],
                    env: vec!["A=1".into()],
                    mounts: vec![Mount {
                        r#type: MountType::Bind as i32,
                        source: "/a".into(),
                        target: "/b".into(),
                        read_only: true,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                resources: Some(ResourceRequirements {
                    limits: Some(Resources {
                        nano_cpus: 500_000_000,
                        memory_bytes: 0,
                    }),
                    reservations: None,
                }),
                placement: Some(Placement {
                    constraints: vec!["node.role==worker".into()],
                    preferences: vec![PlacementPreference {
                        spread_descriptor: "node.labels.zone".into(),
                    }],
                    max_replicas: 2,
                    ..Default::default()
                }),
                force_update: 3,
                networks: vec![NetworkAttachmentConfig {
                    target: "n1d".into(),
                    aliases: vec![],
                }],
                ..Default::default()
            }),
            mode: Some(ProtoMode::Replicated(ReplicatedService { replicas: 3 })),
            endpoint: None,
            update_config: None,
            rollback_config: None,
        }),
        ..Default::default()
    };
    let value = serde_json::to_value(service_json(&service)).expect("json");
    let want = json!({
        "ID": "abc",
        "Version": {"Index": 7},
        "CreatedAt": "2017-07-14T02:40:00.000000001Z",
        "UpdatedAt": "1970-01-01T00:00:00.000000000Z",
        "Spec": {
            "Name": "web",
            "Labels": {"a": "b"},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "busybox",
                    "Args": ["sleep", "1"],
                    "Env": ["A=1"],
                    "Mounts": [{"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": true}],
                    "StopGracePeriod": 10_000_000_000i64,
                },
                "Resources": {"Limits": {"NanoCPUs": 500_000_000}, "Reservations": {}},
                "RestartPolicy": {"Condition": "any", "Delay": 5_000_000_000i64, "MaxAttempts": 0, "Window": 0},
                "Placement": {
                    "Constraints": ["node.role==worker"],
                    "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
                    "MaxReplicas": 2,
                },
                "ForceUpdate": 3,
                "Networks": [{"Target": "n1d"}],
            },
            "Mode": {"Replicated": {"Replicas": 3}},
        },
        "Endpoint": {"Spec": {"Mode": "vip"}},
    });
    assert_eq!(value, want);
    // Keys come out in the Engine API's order, not sorted.
    let text = serde_json::to_string(&service_json(&service)).expect("json");
    assert!(
        text.starts_with(r#"{"ID":"abc","Version":{"Index":7},"CreatedAt":"#),
        "{text}"
    );
}

#[test]
fn global_mode_is_an_empty_object() {
    let service = Service {
        spec: Some(ServiceSpec {
            mode: Some(ProtoMode::Global(Default::default())),
            ..Default::default()
        }),
        ..Default::default()
    };
    let value = serde_json::to_value(service_json(&service)).expect("json");
    assert_eq!(value["Spec"]["Mode"], json!({"Global": {}}));
}

#[test]
fn node_has_docker_keys() {
    let mut node = Node {
        id: "n1".into(),
        role: NodeRole::Manager as i32,
        spec: Some(NodeSpec {
            desired_role: NodeRole::Manager as i32,
            availability: 1,
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: "alpha".into(),
            platform: Some(Platform {
                os: "linux".into(),
                architecture: "x86_64".into(),
            }),
            resources: Some(Resources {
                nano_cpus: 2_000_000_000,
                memory_bytes: 1024,
            }),
            engine: None,
        }),
        status: Some(NodeStatus {
            state: 2,
            message: String::new(),
            addr: "10.0.0.1".into(),
        }),
        manager_status: Some(ManagerStatus {
            leader: true,
            reachability: Reachability::Reachable as i32,
            addr: "10.0.0.1:2377".into(),
            raft_id: 1,
        }),
        ..Default::default()
    };
    let value = serde_json::to_value(node_json(&node)).expect("json");
    assert_eq!(
        value["Spec"],
        json!({"Labels": {}, "Role": "manager", "Availability": "pause"})
    );
    assert_eq!(
        value["Description"]["Platform"],
        json!({"Architecture": "x86_64", "OS": "linux"})
    );
    assert_eq!(
        value["Description"]["Resources"],
        json!({"NanoCPUs": 2_000_000_000i64, "MemoryBytes": 1024})
    );
    assert_eq!(
        value["Status"],
        json!({"State": "ready", "Addr": "10.0.0.1"})
    );
    assert_eq!(
        value["ManagerStatus"],
        json!({"Leader": true, "Reachability": "reachable", "Addr": "10.0.0.1:2377"})
    );
    node.manager_status = None;
    let worker = serde_json::to_value(node_json(&node)).expect("json");
    assert!(worker.get("ManagerStatus").is_none());
}

#[test]
fn endpoint_shows_ports_and_virtual_ips() {
    use mesh_proto::{
        Endpoint, EndpointMode, EndpointSpec, PortConfig, PortProtocol, PublishMode, VirtualIp,
    };
    let asked = PortConfig {
        protocol: PortProtocol::Udp as i32,
        target_port: 53,
        published_port: 0,
        publish_mode: PublishMode::Ingress as i32,
        ..Default::default()
    };
    let spec = EndpointSpec {
        mode: EndpointMode::Vip as i32,
        ports: vec![asked.clone()],
    };
    let service = Service {
        spec: Some(ServiceSpec {
            endpoint: Some(spec.clone()),
            ..Default::default()
        }),
        endpoint: Some(Endpoint {
            spec: Some(spec),
            ports: vec![PortConfig {
                published_port: 30000,
                ..asked
            }],
            virtual_ips: vec![VirtualIp {
                network_id: "ingressid".into(),
                addr: "10.0.0.2/24".into(),
            }],
        }),
        ..Default::default()
    };
    let value = serde_json::to_value(service_json(&service)).expect("json");
    assert_eq!(
        value["Endpoint"],
        json!({
            "Spec": {"Mode": "vip", "Ports": [{"Protocol": "udp", "TargetPort": 53, "PublishMode": "ingress"}]},
            "Ports": [{"Protocol": "udp", "TargetPort": 53, "PublishedPort": 30000, "PublishMode": "ingress"}],
            "VirtualIPs": [{"NetworkID": "ingressid", "Addr": "10.0.0.2/24"}],
        })
    );
}

#[test]
fn update_config_and_status_have_docker_keys() {
    let config = UpdateConfig {
        parallelism: 2,
        delay_ns: 10_000_000_000,
        failure_action: UpdateFailureAction::Rollback as i32,
        monitor_ns: None,
        max_failure_ratio: 0.5,
        order: UpdateOrder::StartFirst as i32,
    };
    let spec = ServiceSpec {
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox:2".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_config: Some(config),
        rollback_config: Some(UpdateConfig {
            parallelism: 0,
            delay_ns: 0,
            ..config
        }),
        ..Default::default()
    };
    let service = Service {
        spec: Some(spec.clone()),
        previous_spec: Some(ServiceSpec {
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "busybox:1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..spec
        }),
        update_status: Some(UpdateStatus {
            state: UpdateState::Paused as i32,
            started_at: 1_500_000_000_000_000_001,
            completed_at: 0,
            message: "update paused due to failure or early termination of task t1".into(),
        }),
        ..Default::default()
    };
    let value = serde_json::to_value(service_json(&service)).expect("json");
    assert_eq!(
        value["Spec"]["UpdateConfig"],
        json!({"Parallelism": 2, "Delay": 10_000_000_000i64, "FailureAction": "rollback",
               "Monitor": 5_000_000_000i64, "MaxFailureRatio": 0.5, "Order": "start-first"})
    );
    assert_eq!(
        value["Spec"]["RollbackConfig"],
        json!({"Parallelism": 0, "FailureAction": "rollback", "Monitor": 5_000_000_000i64,
               "MaxFailureRatio": 0.5, "Order": "start-first"})
    );
    assert_eq!(
        value["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        "busybox:1"
    );
    assert_eq!(
        value["UpdateStatus"],
        json!({"State": "paused", "StartedAt": "2017-07-14T02:40:00.000000001Z",
               "Message": "update paused due to failure or early termination of task t1"})
    );
}
