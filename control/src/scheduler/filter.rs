//! The filters a node must pass to take a task, each able to explain why it rejected nodes.

use mesh_proto::{NodeAvailability, NodeState, Platform, Resources, Task};

use super::constraint::{self, Constraint, ConstraintError};
use super::node_info::{HostPort, NodeInfo, host_ports, reservations};

/// A task prepared for filtering: its placement requirements parsed once for all nodes.
#[derive(Debug)]
pub struct TaskRequest<'a> {
    pub task: &'a Task,
    constraints: Vec<Constraint>,
    reservations: Resources,
    platforms: &'a [Platform],
    host_ports: Vec<HostPort>,
    max_replicas: u64,
}

impl<'a> TaskRequest<'a> {
    pub fn new(task: &'a Task) -> Result<Self, ConstraintError> {
        let placement = task.spec.as_ref().and_then(|s| s.placement.as_ref());
        let constraints = match placement {
            Some(p) => Constraint::parse_all(&p.constraints)?,
            None => Vec::new(),
        };
        Ok(TaskRequest {
            task,
            constraints,
            reservations: reservations(task),
            platforms: placement.map_or(&[], |p| p.platforms.as_slice()),
            host_ports: host_ports(task).collect(),
            max_replicas: placement.map_or(0, |p| p.max_replicas),
        })
    }
}

/// Why a filter turned nodes down; the order is the order filters run and explanations appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejection {
    /// Not ready, paused or drained: SwarmKit words all three alike.
    NotAvailable,
    InsufficientResources,
    Constraints,
    Platform,
    HostPort,
    MaxReplicas,
}

impl Rejection {
    /// The explanation for `nodes` rejected nodes, in SwarmKit's words.
    pub fn explain(self, nodes: usize) -> String {
        let count = if nodes == 1 {
            "1 node".to_string()
        } else {
            format!("{nodes} nodes")
        };
        match self {
            Rejection::NotAvailable => format!("{count} not available for new tasks"),
            Rejection::InsufficientResources => format!("insufficient resources on {count}"),
            Rejection::Constraints => format!("scheduling constraints not satisfied on {count}"),
            Rejection::Platform => format!("unsupported platform on {count}"),
            Rejection::HostPort => format!("host-mode port already in use on {count}"),
            Rejection::MaxReplicas => "max replicas per node limit exceed".to_string(),
        }
    }
}

/// One step of the pipeline.
pub trait Filter: Sync {
    /// What a failed check means, for the explanation.
    fn rejection(&self) -> Rejection;

    /// Whether `node` can take `task`.
    fn check(&self, task: &TaskRequest<'_>, node: &NodeInfo) -> bool;

    fn explain(&self, nodes: usize) -> String {
        self.rejection().explain(nodes)
    }
}

/// The pipeline, in the order nodes go through it; a node counts against the first it fails.
pub const FILTERS: &[&dyn Filter] = &[
    &ReadyFilter,
    &AvailabilityFilter,
    &ResourceFilter,
    &ConstraintFilter,
    &PlatformFilter,
    &HostPortFilter,
    &MaxReplicasFilter,
];

/// The node's agent is connected and healthy.
pub struct ReadyFilter;

impl Filter for ReadyFilter {
    fn rejection(&self) -> Rejection {
        Rejection::NotAvailable
    }

    fn check(&self, _task: &TaskRequest<'_>, node: &NodeInfo) -> bool {
        is_ready(node)
    }
}

fn is_ready(node: &NodeInfo) -> bool {
    node.node()
        .status
        .as_ref()
        .is_some_and(|s| s.state == NodeState::Ready as i32)
}

/// Only active nodes take new tasks; paused and drained ones do not.
pub struct AvailabilityFilter;

impl Filter for AvailabilityFilter {
    fn rejection(&self) -> Rejection {
        Rejection::NotAvailable
    }

    fn check(&self, _task: &TaskRequest<'_>, node: &NodeInfo) -> bool {
        is_active(node)
    }
}

fn is_active(node: &NodeInfo) -> bool {
    let availability = node.node().spec.as_ref().map_or(0, |s| s.availability);
    availability == NodeAvailability::Active as i32
}

/// Whether the node takes new tasks at all, whatever the task: the two filters above, which ask
/// nothing of the task.
pub fn open_to_new_tasks(node: &NodeInfo) -> bool {
    is_ready(node) && is_active(node)
}

/// The task's CPU and memory reservations fit in what the node has left.
pub struct ResourceFilter;

impl Filter for ResourceFilter {
    fn rejection(&self) -> Rejection {
        Rejection::InsufficientResources
    }

    fn check(&self, task: &TaskRequest<'_>, node: &NodeInfo) -> bool {
        let wanted = task.reservations;
        let available = node.available();
        (wanted.nano_cpus <= 0 || wanted.nano_cpus <= available.nano_cpus)
            && (wanted.memory_bytes <= 0 || wanted.memory_bytes <= available.memory_bytes)
    }
}

/// The node meets every placement constraint.
pub struct ConstraintFilter;

impl Filter for ConstraintFilter {
    fn rejection(&self) -> Rejection {
        Rejection::Constraints
    }

    fn check(&self, task: &TaskRequest<'_>, node: &NodeInfo) -> bool {
        constraint::matches_all(&task.constraints, node.node())
    }
}

/// The node's platform is one the task supports (any, when the task names none).
pub struct PlatformFilter;

impl Filter for PlatformFilter {
    fn rejection(&self) -> Rejection {
        Rejection::Platform
    }

    fn check(&self, task: &TaskRequest<'_>, node: &NodeInfo) -> bool {
        if task.platforms.is_empty() {
            return true;
        }
        let node_platform = node
            .node()
            .description
            .as_ref()
            .and_then(|d| d.platform.clone())
            .unwrap_or_default();
        task.platforms
            .iter()
            .any(|wanted| platform_supports(wanted, &node_platform))
    }
}

/// Whether a node on `node` can run something built for `wanted` (empty fields match anything).
fn platform_supports(wanted: &Platform, node: &Platform) -> bool {
    let arch_ok = wanted.architecture.is_empty()
        || normalize_arch(&wanted.architecture) == normalize_arch(&node.architecture);
    let os_ok = wanted.os.is_empty() || wanted.os.eq_ignore_ascii_case(&node.os);
    arch_ok && os_ok
}

/// Folds the kernel's and Go's names for one architecture together, as SwarmKit does.
fn normalize_arch(arch: &str) -> String {
    match arch.to_ascii_lowercase().as_str() {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_string(),
    }
}

/// No task on the node (of any service, stopping ones included) publishes one of the task's
/// host-mode ports already: the node has only one of each.
pub struct HostPortFilter;

impl Filter for HostPortFilter {
    fn rejection(&self) -> Rejection {
        Rejection::HostPort
    }

    fn check(&self, task: &TaskRequest<'_>, node: &NodeInfo) -> bool {
        !task
            .host_ports
            .iter()
            .any(|port| node.uses_host_port(*port))
    }
}

/// The node runs fewer of the service's tasks than `--replicas-max-per-node` allows.
pub struct MaxReplicasFilter;

impl Filter for MaxReplicasFilter {
    fn rejection(&self) -> Rejection {
        Rejection::MaxReplicas
    }

    fn check(&self, task: &TaskRequest<'_>, node: &NodeInfo) -> bool {
        task.max_replicas == 0
            || (node.service_tasks(&task.task.service_id) as u64) < task.max_replicas
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
