//! A node as the scheduler sees it: the node, the tasks holding resources on it, what is left.

use mesh_proto::{Node, PublishMode, Resources, Task, TaskState};
use std::collections::HashMap;

/// A port published on a node in host mode: the protocol (`PortProtocol` as stored) and number.
pub type HostPort = (i32, u32);

/// One node's snapshot: what its tasks hold and its resources still free for reservations. It
/// keeps counts, not the tasks: building it reads them in place, and a task's change is
/// accounted for by removing its old state and adding its new one.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    node: Node,
    /// Tasks holding resources here, including those placed by the current batch.
    held: usize,
    available: Resources,
    /// Tasks on the node meant to keep running (desired state at most RUNNING), by service.
    active_by_service: HashMap<String, usize>,
    active: usize,
    /// Host-mode ports the node's tasks publish, stopping ones included until they have stopped,
    /// with how many tasks publish each.
    host_ports: HashMap<HostPort, usize>,
}

/// So that a pass may work on snapshots it borrows and copy only the nodes it places tasks on.
impl AsRef<NodeInfo> for NodeInfo {
    fn as_ref(&self) -> &NodeInfo {
        self
    }
}

impl NodeInfo {
    /// Builds the snapshot from the node and any tasks; only tasks that hold resources on this node
    /// are kept (see [`holds_resources`]), so callers may pass every task they have.
    pub fn new<'a>(node: Node, tasks: impl IntoIterator<Item = &'a Task>) -> Self {
        let available = node
            .description
            .as_ref()
            .and_then(|d| d.resources)
            .unwrap_or_default();
        let mut info = NodeInfo {
            node,
            held: 0,
            available,
            active_by_service: HashMap::new(),
            active: 0,
            host_ports: HashMap::new(),
        };
        for task in tasks {
            if task.node_id == info.node.id && holds_resources(task) {
                info.add_task(task);
            }
        }
        info
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn id(&self) -> &str {
        &self.node.id
    }

    /// How many tasks hold resources on this node, including those placed by the current batch.
    pub fn held_tasks(&self) -> usize {
        self.held
    }

    /// The node's resources minus the reservations of its tasks (negative if overcommitted).
    pub fn available(&self) -> Resources {
        self.available
    }

    /// How many of `service_id`'s tasks are meant to keep running here.
    pub fn service_tasks(&self, service_id: &str) -> usize {
        self.active_by_service.get(service_id).copied().unwrap_or(0)
    }

    /// How many tasks of any service are meant to keep running here.
    pub fn active_tasks(&self) -> usize {
        self.active
    }

    /// Whether a task here publishes `port` in host mode.
    pub fn uses_host_port(&self, port: HostPort) -> bool {
        self.host_ports.contains_key(&port)
    }

    /// Accounts for `task` placed here: its reservations and host-mode ports and, if it should
    /// run, the spread counts.
    pub(crate) fn add_task(&mut self, task: &Task) {
        let reserved = reservations(task);
        self.available.nano_cpus -= reserved.nano_cpus;
        self.available.memory_bytes -= reserved.memory_bytes;
        for port in host_ports(task) {
            *self.host_ports.entry(port).or_default() += 1;
        }
        if task.desired_state <= TaskState::Running as i32 {
            *self
                .active_by_service
                .entry(task.service_id.clone())
                .or_default() += 1;
            self.active += 1;
        }
        self.held += 1;
    }

    /// Undoes [`NodeInfo::add_task`] of `task` as it was added (the task no longer holds
    /// resources here, or it changed and is added again as it is now).
    pub(crate) fn remove_task(&mut self, task: &Task) {
        let reserved = reservations(task);
        self.available.nano_cpus += reserved.nano_cpus;
        self.available.memory_bytes += reserved.memory_bytes;
        for port in host_ports(task) {
            if let Some(count) = self.host_ports.get_mut(&port) {
                *count -= 1;
                if *count == 0 {
                    self.host_ports.remove(&port);
                }
            }
        }
        if task.desired_state <= TaskState::Running as i32 {
            if let Some(count) = self.active_by_service.get_mut(&task.service_id) {
                *count -= 1;
                if *count == 0 {
                    self.active_by_service.remove(&task.service_id);
                }
            }
            self.active = self.active.saturating_sub(1);
        }
        self.held = self.held.saturating_sub(1);
    }
}

/// Whether `task` holds its reservations on its node: assigned there and not yet stopped. A task
/// still running after being asked to stop keeps holding them (as in SwarmKit); a pending task,
/// even one pre-assigned to a node, does not yet.
pub fn holds_resources(task: &Task) -> bool {
    let state = task.status.as_ref().map_or(0, |s| s.state);
    !task.node_id.is_empty()
        && state > TaskState::Pending as i32
        && state <= TaskState::Running as i32
}

/// The ports `task` publishes on its node in host mode. A port still numbered 0 is left out: it
/// names no port yet, so it cannot collide (the allocator numbers ports left at 0 in the spec
/// before a task is scheduled, and that number collides like any other).
pub fn host_ports(task: &Task) -> impl Iterator<Item = HostPort> + '_ {
    task.ports
        .iter()
        .filter(|p| p.publish_mode() == PublishMode::Host && p.published_port != 0)
        .map(|p| (p.protocol, p.published_port))
}

/// What `task` reserves on its node (zero when it reserves nothing).
pub fn reservations(task: &Task) -> Resources {
    task.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.reservations)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::fixtures::{
        CPU, GIB, host_port, node, publishing, reserving, running_on, task,
    };
    use mesh_proto::{PortProtocol, PublishMode};

    #[test]
    fn subtracts_reservations_of_tasks_holding_resources() {
        let mut stopping = running_on(reserving(task("t3", "s1"), CPU, GIB), "n1");
        stopping.desired_state = TaskState::Shutdown as i32;
        let mut done = running_on(reserving(task("t4", "s1"), CPU, GIB), "n1");
        done.status.get_or_insert_with(Default::default).state = TaskState::Complete as i32;
        let mut preassigned = reserving(task("t5", "s1"), CPU, GIB);
        preassigned.node_id = "n1".to_string();
        let tasks = vec![
            running_on(reserving(task("t1", "s1"), CPU, GIB), "n1"),
            running_on(reserving(task("t2", "s2"), 2 * CPU, 0), "n1"),
            running_on(reserving(task("t6", "s1"), CPU, GIB), "n2"),
            stopping,
            done,
            preassigned,
        ];
        let info = NodeInfo::new(node("n1"), &tasks);
        assert_eq!(info.held_tasks(), 3);
        assert_eq!(
            info.available(),
            Resources {
                nano_cpus: 0,
                memory_bytes: 6 * GIB
            }
        );
        assert_eq!(
            info.service_tasks("s1"),
            1,
            "a stopping task does not count"
        );
        assert_eq!(info.service_tasks("s2"), 1);
        assert_eq!(info.active_tasks(), 2);
    }

    #[test]
    fn host_ports_are_held_until_their_task_has_stopped() {
        let tcp = PortProtocol::Tcp as i32;
        let mut stopping = running_on(host_port(task("t2", "s1"), 9090), "n1");
        stopping.desired_state = TaskState::Shutdown as i32;
        let mut done = running_on(host_port(task("t3", "s1"), 7070), "n1");
        done.status.get_or_insert_with(Default::default).state = TaskState::Complete as i32;
        let mut preassigned = host_port(task("t4", "s1"), 6060);
        preassigned.node_id = "n1".to_string();
        let ingress = publishing(
            task("t5", "s2"),
            5050,
            PortProtocol::Tcp,
            PublishMode::Ingress,
        );
        let tasks = vec![
            running_on(host_port(task("t1", "s1"), 8080), "n1"),
            running_on(host_port(task("t6", "s1"), 0), "n1"),
            running_on(ingress, "n1"),
            stopping,
            done,
            preassigned,
        ];
        let info = NodeInfo::new(node("n1"), &tasks);
        assert!(info.uses_host_port((tcp, 8080)));
        assert!(info.uses_host_port((tcp, 9090)), "still stopping");
        assert!(!info.uses_host_port((PortProtocol::Udp as i32, 8080)));
        assert!(!info.uses_host_port((tcp, 7070)), "completed");
        assert!(!info.uses_host_port((tcp, 6060)), "not started");
        assert!(!info.uses_host_port((tcp, 5050)), "ingress mode");
        assert!(!info.uses_host_port((tcp, 0)), "not numbered");
    }

    #[test]
    fn removing_a_task_undoes_adding_it() {
        let tcp = PortProtocol::Tcp as i32;
        let a = running_on(host_port(reserving(task("t1", "s1"), CPU, GIB), 8080), "n1");
        let b = running_on(host_port(reserving(task("t2", "s2"), CPU, 0), 8080), "n1");
        let mut stopping = running_on(reserving(task("t3", "s1"), CPU, GIB), "n1");
        stopping.desired_state = TaskState::Shutdown as i32;
        let empty = NodeInfo::new(node("n1"), &[]);
        let mut info = NodeInfo::new(node("n1"), [&a, &b, &stopping]);
        assert_eq!((info.held_tasks(), info.active_tasks()), (3, 2));
        info.remove_task(&a);
        assert!(info.uses_host_port((tcp, 8080)), "t2 still publishes it");
        assert_eq!(info.service_tasks("s1"), 0);
        info.remove_task(&b);
        info.remove_task(&stopping);
        assert!(!info.uses_host_port((tcp, 8080)));
        assert_eq!(info.available(), empty.available());
        assert_eq!((info.held_tasks(), info.active_tasks()), (0, 0));
        assert_eq!(info.service_tasks("s2"), 0);
    }
}
