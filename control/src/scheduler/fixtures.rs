//! Test builders for nodes and tasks, shared by the scheduler's unit tests.

use mesh_proto::{
    Annotations, EngineDescription, Node, NodeAvailability, NodeDescription, NodeRole, NodeSpec,
    NodeState, NodeStatus, Placement, Platform, PortConfig, PortProtocol, PublishMode,
    ResourceRequirements, Resources, Task, TaskSpec, TaskState, TaskStatus,
};

use super::NodeInfo;

pub const GIB: i64 = 1 << 30;
pub const CPU: i64 = 1_000_000_000;

/// A ready, active linux/amd64 worker with 4 CPUs and 8 GiB, its hostname `<id>-host`.
pub fn node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        spec: Some(NodeSpec {
            annotations: Some(Annotations::default()),
            desired_role: NodeRole::Worker as i32,
            availability: NodeAvailability::Active as i32,
        }),
        description: Some(NodeDescription {
            hostname: format!("{id}-host"),
            platform: Some(Platform {
                os: "linux".to_string(),
                architecture: "amd64".to_string(),
            }),
            resources: Some(Resources {
                nano_cpus: 4 * CPU,
                memory_bytes: 8 * GIB,
            }),
            engine: Some(EngineDescription::default()),
        }),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        role: NodeRole::Worker as i32,
        ..Default::default()
    }
}

pub fn with_label(mut node: Node, key: &str, value: &str) -> Node {
    let spec = node.spec.get_or_insert_with(Default::default);
    spec.annotations
        .get_or_insert_with(Default::default)
        .labels
        .insert(key.to_string(), value.to_string());
    node
}

pub fn with_state(mut node: Node, state: NodeState) -> Node {
    node.status.get_or_insert_with(Default::default).state = state as i32;
    node
}

pub fn with_availability(mut node: Node, availability: NodeAvailability) -> Node {
    node.spec.get_or_insert_with(Default::default).availability = availability as i32;
    node
}

/// A pending task of `service` that wants to run, with no placement requirements.
pub fn task(id: &str, service: &str) -> Task {
    Task {
        id: id.to_string(),
        service_id: service.to_string(),
        spec: Some(TaskSpec::default()),
        status: Some(TaskStatus {
            state: TaskState::Pending as i32,
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

pub fn placement(task: &mut Task) -> &mut Placement {
    task.spec
        .get_or_insert_with(Default::default)
        .placement
        .get_or_insert_with(Default::default)
}

pub fn reserving(mut task: Task, nano_cpus: i64, memory_bytes: i64) -> Task {
    task.spec.get_or_insert_with(Default::default).resources = Some(ResourceRequirements {
        limits: None,
        reservations: Some(Resources {
            nano_cpus,
            memory_bytes,
        }),
    });
    task
}

pub fn constrained(mut task: Task, constraints: &[&str]) -> Task {
    placement(&mut task).constraints = constraints.iter().map(|c| c.to_string()).collect();
    task
}

/// `task` publishing port 80 as `published`/`protocol` in `mode` (`published` 0: not numbered).
pub fn publishing(
    mut task: Task,
    published: u32,
    protocol: PortProtocol,
    mode: PublishMode,
) -> Task {
    task.ports.push(PortConfig {
        protocol: protocol as i32,
        target_port: 80,
        published_port: published,
        publish_mode: mode as i32,
        ..Default::default()
    });
    task
}

/// `task` publishing port 80 as `published`/tcp in host mode.
pub fn host_port(task: Task, published: u32) -> Task {
    publishing(task, published, PortProtocol::Tcp, PublishMode::Host)
}

/// `task` as it is once running on `node`.
pub fn running_on(mut task: Task, node: &str) -> Task {
    task.node_id = node.to_string();
    task.status.get_or_insert_with(Default::default).state = TaskState::Running as i32;
    task
}

/// Snapshots of `nodes` with `tasks` spread over them by their `node_id`.
pub fn infos(nodes: Vec<Node>, tasks: &[Task]) -> Vec<NodeInfo> {
    nodes
        .into_iter()
        .map(|n| {
            let on_node: Vec<&Task> = tasks.iter().filter(|t| t.node_id == n.id).collect();
            NodeInfo::new(n, on_node)
        })
        .collect()
}
