//! `inspect` output: services and nodes in the Docker Engine API's JSON shape.

use crate::output::{availability_name, node_state_name, rfc3339};
use mesh_proto::service_spec::Mode as ProtoMode;
use mesh_proto::{MountType, Node, NodeRole, Reachability, RestartCondition, Service};
use serde::Serialize;
use std::collections::BTreeMap;

/// Swarm's defaults, shown resolved as docker shows them.
const DEFAULT_STOP_GRACE_NS: i64 = 10_000_000_000;
const DEFAULT_RESTART_DELAY_NS: i64 = 5_000_000_000;

type Labels = BTreeMap<String, String>;

fn labels(map: &std::collections::HashMap<String, String>) -> Labels {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VersionJson {
    pub index: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceJson {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: VersionJson,
    pub created_at: String,
    pub updated_at: String,
    pub spec: ServiceSpecJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<ServiceSpecJson>,
    pub endpoint: EndpointJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_status: Option<rollout::UpdateStatusJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpecJson {
    pub name: String,
    pub labels: Labels,
    pub task_template: TaskTemplateJson,
    pub mode: ModeJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_config: Option<rollout::UpdateConfigJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<rollout::UpdateConfigJson>,
}

#[derive(Serialize)]
pub enum ModeJson {
    Replicated {
        #[serde(rename = "Replicas")]
        replicas: u64,
    },
    Global {},
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointJson {
    pub spec: EndpointSpecJson,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortJson>,
    #[serde(rename = "VirtualIPs", skip_serializing_if = "Vec::is_empty")]
    pub virtual_ips: Vec<VirtualIpJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSpecJson {
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortJson {
    pub protocol: &'static str,
    pub target_port: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub published_port: u32,
    pub publish_mode: &'static str,
}

#[derive(Serialize)]
pub struct VirtualIpJson {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Addr")]
    pub addr: String,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn port_json(port: &mesh_proto::PortConfig) -> PortJson {
    PortJson {
        protocol: match port.protocol() {
            mesh_proto::PortProtocol::Tcp => "tcp",
            mesh_proto::PortProtocol::Udp => "udp",
        },
        target_port: port.target_port,
        published_port: port.published_port,
        publish_mode: match port.publish_mode() {
            mesh_proto::PublishMode::Ingress => "ingress",
            mesh_proto::PublishMode::Host => "host",
        },
    }
}

fn endpoint_json(service: &Service) -> EndpointJson {
    let endpoint = service.endpoint.clone().unwrap_or_default();
    let spec = service
        .spec
        .as_ref()
        .and_then(|s| s.endpoint.clone())
        .unwrap_or_default();
    EndpointJson {
        spec: EndpointSpecJson {
            mode: match spec.mode() {
                mesh_proto::EndpointMode::Vip => "vip",
                mesh_proto::EndpointMode::Dnsrr => "dnsrr",
            },
            ports: spec.ports.iter().map(port_json).collect(),
        },
        ports: endpoint.ports.iter().map(port_json).collect(),
        virtual_ips: endpoint
            .virtual_ips
            .iter()
            .map(|v| VirtualIpJson {
                network_id: v.network_id.clone(),
                addr: v.addr.clone(),
            })
            .collect(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskTemplateJson {
    pub container_spec: ContainerSpecJson,
    pub resources: ResourcesJson,
    pub restart_policy: RestartPolicyJson,
    pub placement: PlacementJson,
    pub force_update: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachmentJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachmentJson {
    pub target: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSpecJson {
    pub image: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dir: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountJson>,
    pub stop_grace_period: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthcheckJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<files::SecretJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<files::ConfigJson>,
}

/// Docker's `HealthConfig`: durations in nanoseconds, zero values left out.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthcheckJson {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub retries: i32,
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountJson {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub target: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ResourcesJson {
    pub limits: LimitJson,
    pub reservations: LimitJson,
}

#[derive(Serialize, Default)]
pub struct LimitJson {
    #[serde(rename = "NanoCPUs", skip_serializing_if = "is_zero")]
    pub nano_cpus: i64,
    #[serde(rename = "MemoryBytes", skip_serializing_if = "is_zero")]
    pub memory_bytes: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicyJson {
    pub condition: &'static str,
    pub delay: i64,
    pub max_attempts: u64,
    pub window: i64,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct PlacementJson {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PreferenceJson>,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub max_replicas: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PreferenceJson {
    pub spread: SpreadJson,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SpreadJson {
    pub spread_descriptor: String,
}

/// Docker's name of a mount type.
pub fn mount_type_name(kind: i32) -> &'static str {
    match MountType::try_from(kind) {
        Ok(MountType::Bind) => "bind",
        Ok(MountType::Tmpfs) => "tmpfs",
        Ok(MountType::Volume) | Err(_) => "volume",
    }
}

/// Docker's name of a restart condition.
pub fn restart_condition_name(condition: i32) -> &'static str {
    match RestartCondition::try_from(condition) {
        Ok(RestartCondition::None) => "none",
        Ok(RestartCondition::OnFailure) => "on-failure",
        Ok(RestartCondition::Any) | Err(_) => "any",
    }
}

/// A service as `docker service inspect` prints it.
pub fn service_json(service: &Service) -> ServiceJson {
    let meta = service.meta.unwrap_or_default();
    let spec = service.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.unwrap_or_default();
    let task = spec.task.unwrap_or_default();
    let container = task.container.unwrap_or_default();
    let resources = task.resources.unwrap_or_default();
    let limit = |r: Option<mesh_proto::Resources>| {
        let r = r.unwrap_or_default();
        LimitJson {
            nano_cpus: r.nano_cpus,
            memory_bytes: r.memory_bytes,
        }
    };
    let restart = task.restart.unwrap_or_default();
    let placement = task.placement.unwrap_or_default();
    ServiceJson {
        id: service.id.clone(),
        version: VersionJson {
            index: meta.version.map_or(0, |v| v.index),
        },
        created_at: rfc3339(meta.created_at),
        updated_at: rfc3339(meta.updated_at),
        spec: ServiceSpecJson {
            name: annotations.name,
            labels: labels(&annotations.labels),
            task_template: TaskTemplateJson {
                container_spec: ContainerSpecJson {
                    image: container.image,
                    labels: labels(&container.labels),
                    command: container.command,
                    args: container.args,
                    hostname: container.hostname,
                    env: container.env,
                    dir: container.dir,
                    user: container.user,
                    mounts: container
                        .mounts
                        .into_iter()
                        .map(|m| MountJson {
                            kind: mount_type_name(m.r#type),
                            source: m.source,
                            target: m.target,
                            read_only: m.read_only,
                        })
                        .collect(),
                    secrets: files::secrets(container.secrets),
                    configs: files::configs(container.configs),
                    stop_grace_period: container
                        .stop_grace_period_ns
                        .unwrap_or(DEFAULT_STOP_GRACE_NS),
                    healthcheck: container.healthcheck.map(|h| HealthcheckJson {
                        test: h.test,
                        interval: h.interval_ns,
                        timeout: h.timeout_ns,
                        start_period: h.start_period_ns,
                        retries: h.retries,
                    }),
                },
                resources: ResourcesJson {
                    limits: limit(resources.limits),
                    reservations: limit(resources.reservations),
                },
                restart_policy: RestartPolicyJson {
                    condition: restart_condition_name(restart.condition),
                    delay: restart.delay_ns.unwrap_or(DEFAULT_RESTART_DELAY_NS),
                    max_attempts: restart.max_attempts,
                    window: restart.window_ns,
                },
                placement: PlacementJson {
                    constraints: placement.constraints,
                    preferences: placement
                        .preferences
                        .into_iter()
                        .map(|p| PreferenceJson {
                            spread: SpreadJson {
                                spread_descriptor: p.spread_descriptor,
                            },
                        })
                        .collect(),
                    max_replicas: placement.max_replicas,
                },
                force_update: task.force_update,
                networks: task
                    .networks
                    .into_iter()
                    .map(|n| NetworkAttachmentJson {
                        target: n.target,
                        aliases: n.aliases,
                    })
                    .collect(),
            },
            mode: match spec.mode {
                Some(ProtoMode::Global(_)) => ModeJson::Global {},
                Some(ProtoMode::Replicated(r)) => ModeJson::Replicated {
                    replicas: r.replicas,
                },
                None => ModeJson::Replicated { replicas: 0 },
            },
            update_config: rollout::config_json(spec.update_config.as_ref()),
            rollback_config: rollout::config_json(spec.rollback_config.as_ref()),
        },
        previous_spec: service.previous_spec.as_ref().map(|previous| {
            service_json(&Service {
                spec: Some(previous.clone()),
                ..Service::default()
            })
            .spec
        }),
        endpoint: endpoint_json(service),
        update_status: rollout::status_json(service.update_status.as_ref()),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeJson {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: VersionJson,
    pub created_at: String,
    pub updated_at: String,
    pub spec: NodeSpecJson,
    pub description: DescriptionJson,
    pub status: NodeStatusJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager_status: Option<ManagerStatusJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeSpecJson {
    pub labels: Labels,
    pub role: &'static str,
    pub availability: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescriptionJson {
    pub hostname: String,
    pub platform: PlatformJson,
    pub resources: LimitJson,
    pub engine: EngineJson,
}

#[derive(Serialize)]
pub struct PlatformJson {
    #[serde(rename = "Architecture")]
    pub architecture: String,
    #[serde(rename = "OS")]
    pub os: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EngineJson {
    pub engine_version: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStatusJson {
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub addr: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManagerStatusJson {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub leader: bool,
    pub reachability: &'static str,
    pub addr: String,
}

/// Docker's lower-case role name.
pub fn role_name(role: i32) -> &'static str {
    match NodeRole::try_from(role) {
        Ok(NodeRole::Manager) => "manager",
        Ok(NodeRole::Worker) | Err(_) => "worker",
    }
}

/// A node as `docker node inspect` prints it.
pub fn node_json(node: &Node) -> NodeJson {
    let meta = node.meta.unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    let description = node.description.clone().unwrap_or_default();
    let platform = description.platform.unwrap_or_default();
    let resources = description.resources.unwrap_or_default();
    let engine = description.engine.unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    NodeJson {
        id: node.id.clone(),
        version: VersionJson {
            index: meta.version.map_or(0, |v| v.index),
        },
        created_at: rfc3339(meta.created_at),
        updated_at: rfc3339(meta.updated_at),
        spec: NodeSpecJson {
            labels: labels(&spec.annotations.unwrap_or_default().labels),
            role: role_name(spec.desired_role),
            availability: availability_name(spec.availability),
        },
        description: DescriptionJson {
            hostname: description.hostname,
            platform: PlatformJson {
                architecture: platform.architecture,
                os: platform.os,
            },
            resources: LimitJson {
                nano_cpus: resources.nano_cpus,
                memory_bytes: resources.memory_bytes,
            },
            engine: EngineJson {
                engine_version: engine.engine_version,
                labels: labels(&engine.labels),
            },
        },
        status: NodeStatusJson {
            state: node_state_name(status.state),
            message: status.message,
            addr: status.addr,
        },
        manager_status: node.manager_status.as_ref().map(|m| ManagerStatusJson {
            leader: m.leader,
            reachability: match Reachability::try_from(m.reachability) {
                Ok(Reachability::Reachable) => "reachable",
                Ok(Reachability::Unreachable) => "unreachable",
                _ => "unknown",
            },
            addr: m.addr.clone(),
        }),
    }
}

mod files;
pub mod rollout;

#[cfg(test)]
mod tests;
