//! Pure task helpers shared by the reconcilers: task creation, the state ordering rules and slots.

use mesh_proto::{Node, NodeAvailability, NodeState, Service, Task, TaskState, TaskStatus};
use mesh_proto::{RestartPolicy, service_spec};

use crate::allocator::needs_allocation;
use crate::scheduler::PENDING_MESSAGE;
use crate::store::{new_id, now_nanos};
use std::ops::Range;

/// Identifies the slot a task fills: a replica number, or the node of a global task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotKey {
    Replica(u64),
    Node(String),
}

/// A fresh task for `service` in `slot`. A task with something to allocate (a network to
/// attach, a port to publish) starts NEW, for the allocator to attach and move to PENDING;
/// any other starts PENDING, as the allocator would leave it, for the scheduler: the allocator's
/// write would change nothing else, and it was a fifth of the writes of replacing the tasks of
/// a thousand lost nodes.
pub fn new_task(service: &Service, slot: u64, node_id: Option<&str>) -> Task {
    let spec = service.spec.as_ref();
    let now = now_nanos();
    let (state, message) = if needs_allocation(service) {
        (TaskState::New, "created")
    } else {
        (TaskState::Pending, PENDING_MESSAGE)
    };
    Task {
        id: new_id(),
        meta: None,
        service_id: service.id.clone(),
        slot,
        node_id: node_id.unwrap_or_default().to_string(),
        spec: spec.and_then(|s| s.task.clone()),
        spec_version: service.spec_version,
        service_annotations: spec.and_then(|s| s.annotations.clone()),
        status: Some(TaskStatus {
            timestamp: now,
            state: state as i32,
            message: message.to_string(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        networks: Vec::new(),
        ports: Vec::new(),
        replaces: String::new(),
    }
}

/// The task's observed state (NEW when it has no status or an unknown value).
pub fn state(task: &Task) -> TaskState {
    task.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::New)
}

/// The state the orchestrators want the task in (an unknown value counts as REMOVE).
pub fn desired(task: &Task) -> TaskState {
    TaskState::try_from(task.desired_state).unwrap_or(TaskState::Remove)
}

/// Whether the task has stopped for good: every state after RUNNING.
pub fn is_terminal(state: TaskState) -> bool {
    state > TaskState::Running
}

/// Whether the task still fills its slot: the orchestrators want it to run (or to get ready).
pub fn is_live(task: &Task) -> bool {
    desired(task) <= TaskState::Running
}

/// Whether a task's change (from `old`; `None` for a new or deleted task) can change what a
/// service orchestrator plans. A progress report on the way to RUNNING (NEW, PENDING, ASSIGNED,
/// ... STARTING) or a new status message cannot: planning looks at a task's slot, node, spec
/// version and desired state, and at whether it runs or has stopped. With a hundred thousand
/// tasks being allocated and scheduled, this spares a pass over them per batch.
pub fn plan_changed(old: Option<&Task>, new: &Task) -> bool {
    let Some(old) = old else {
        return true;
    };
    old.desired_state != new.desired_state
        || old.slot != new.slot
        || old.node_id != new.node_id
        || old.spec_version != new.spec_version
        || phase(old) != phase(new)
}

/// What a service orchestrator's planning reads of one task it wrote (see [`plan_changed`]): kept
/// so that the change its own write makes, once committed, is told from anyone else's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    desired_state: i32,
    slot: u64,
    node_id: String,
    spec_version: u64,
    phase: (bool, bool),
}

impl Written {
    pub fn of(task: &Task) -> Self {
        Self {
            desired_state: task.desired_state,
            slot: task.slot,
            node_id: task.node_id.clone(),
            spec_version: task.spec_version,
            phase: phase(task),
        }
    }

    /// Whether `task` is, for planning, as it was written.
    pub fn matches(&self, task: &Task) -> bool {
        self.desired_state == task.desired_state
            && self.slot == task.slot
            && self.node_id == task.node_id
            && self.spec_version == task.spec_version
            && self.phase == phase(task)
    }
}

/// What planning sees of a task's status: whether it runs, and whether it has stopped.
fn phase(task: &Task) -> (bool, bool) {
    let s = state(task);
    (s == TaskState::Running, is_terminal(s))
}

/// Whether all that changed for planning is that the scheduler placed the task: it had no node
/// and has one now, with the same slot, spec version, desired state and phase. That matters to
/// planning only if the node is lost by the time the orchestrator looks (placed on a node going
/// down), or to a rolling update.
pub fn only_placed(old: Option<&Task>, new: &Task) -> bool {
    let Some(old) = old else {
        return false;
    };
    old.node_id.is_empty()
        && !new.node_id.is_empty()
        && old.desired_state == new.desired_state
        && old.slot == new.slot
        && old.spec_version == new.spec_version
        && phase(old) == phase(new)
}

/// Whether all that changed for planning is that the task started running: the same slot, node,
/// spec version and desired state, and its status moved from a live state below RUNNING to
/// RUNNING. Only a rolling update or an older task kept until its replacement runs looks at that.
pub fn only_started(old: Option<&Task>, new: &Task) -> bool {
    let Some(old) = old else {
        return false;
    };
    let before = state(old);
    old.desired_state == new.desired_state
        && old.slot == new.slot
        && old.node_id == new.node_id
        && old.spec_version == new.spec_version
        && before != TaskState::Running
        && !is_terminal(before)
        && state(new) == TaskState::Running
}

/// The slot of `task`: its replica number, or for a global task (slot 0) its node.
pub fn slot_key(task: &Task) -> SlotKey {
    if task.slot == 0 {
        SlotKey::Node(task.node_id.clone())
    } else {
        SlotKey::Replica(task.slot)
    }
}

/// A service's tasks grouped by slot ([`group_by_slot`]).
pub struct Slots<'a> {
    /// In slot order, each slot's tasks oldest first.
    tasks: Vec<&'a Task>,
    groups: Vec<(SlotKey, Range<usize>)>,
}

impl<'a> Slots<'a> {
    /// Each slot with its tasks, oldest first, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&SlotKey, &[&'a Task])> {
        self.groups
            .iter()
            .map(|(key, range)| (key, &self.tasks[range.clone()]))
    }

    /// How many slots.
    pub fn count(&self) -> usize {
        self.groups.len()
    }
}

/// The tasks grouped by slot, each group oldest first (tasks created at the same instant in the
/// order given). Sorted in one list: a map of a list per slot made a thousand small allocations
/// for each service planned, an eighth of the replicated orchestrator's time as it replaced the
/// tasks of a tenth of 10,000 nodes.
pub fn group_by_slot<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> Slots<'a> {
    let mut tasks: Vec<&Task> = tasks.into_iter().collect();
    // A replica slot before a node's, as `SlotKey` orders them.
    tasks.sort_by_cached_key(|t| (t.slot == 0, slot_of(t), created_at(t)));
    let mut groups: Vec<(SlotKey, Range<usize>)> = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        match groups.last_mut() {
            Some((_, range)) if slot_of(tasks[range.start]) == slot_of(task) => range.end = i + 1,
            _ => groups.push((slot_key(task), i..i + 1)),
        }
    }
    Slots { tasks, groups }
}

/// The slot `task` fills as [`slot_key`] tells it, borrowed: its replica number, or 0 and its node.
fn slot_of(task: &Task) -> (u64, &str) {
    let node = if task.slot == 0 {
        task.node_id.as_str()
    } else {
        ""
    };
    (task.slot, node)
}

/// When the task was created, in Unix nanoseconds (falling back to its status time).
pub fn created_at(task: &Task) -> i64 {
    task.meta
        .as_ref()
        .map(|m| m.created_at)
        .filter(|t| *t > 0)
        .or_else(|| task.status.as_ref().map(|s| s.timestamp))
        .unwrap_or_default()
}

/// The task's exit code, when its container reported one.
pub fn exit_code(task: &Task) -> i32 {
    task.status
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .map_or(0, |c| c.exit_code)
}

/// Sets the desired state, keeping the rest of the task as read (so its version still applies).
pub fn with_desired(task: &Task, desired: TaskState) -> Task {
    let mut task = task.clone();
    task.desired_state = desired as i32;
    task
}

/// The replica count of a replicated service, `None` for any other mode.
pub fn replicas(service: &Service) -> Option<u64> {
    match service.spec.as_ref()?.mode.as_ref()? {
        service_spec::Mode::Replicated(r) => Some(r.replicas),
        service_spec::Mode::Global(_) => None,
    }
}

pub fn is_global(service: &Service) -> bool {
    matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(service_spec::Mode::Global(_))
    )
}

/// The restart policy of the service's current task spec.
pub fn restart_policy(service: &Service) -> Option<&RestartPolicy> {
    service.spec.as_ref()?.task.as_ref()?.restart.as_ref()
}

/// The placement constraint expressions of the service's current task spec.
pub fn constraints(service: &Service) -> &[String] {
    service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.placement.as_ref())
        .map_or(&[], |p| p.constraints.as_slice())
}

pub fn node_state(node: &Node) -> NodeState {
    node.status
        .as_ref()
        .and_then(|s| NodeState::try_from(s.state).ok())
        .unwrap_or(NodeState::Unknown)
}

pub fn availability(node: &Node) -> NodeAvailability {
    node.spec
        .as_ref()
        .and_then(|s| NodeAvailability::try_from(s.availability).ok())
        .unwrap_or(NodeAvailability::Active)
}

pub fn is_down(node: &Node) -> bool {
    node_state(node) == NodeState::Down
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{
        Endpoint, EndpointSpec, GlobalService, Meta, NetworkAttachmentConfig, PortConfig,
        ReplicatedService, ServiceSpec, TaskSpec,
    };

    /// Slots in `SlotKey` order (replicas by number, then nodes by id), each slot's tasks oldest
    /// first, and tasks created at the same instant in the order given.
    #[test]
    fn tasks_group_by_slot_oldest_first() {
        let task = |id: &str, slot: u64, node: &str, created_at: i64| Task {
            id: id.into(),
            slot,
            node_id: node.into(),
            meta: Some(Meta {
                created_at,
                ..Default::default()
            }),
            ..Default::default()
        };
        let tasks = [
            task("a", 2, "n1", 30),
            task("b", 0, "n2", 10),
            task("c", 10, "n1", 5),
            task("d", 2, "n2", 10),
            task("e", 0, "n1", 40),
            task("f", 2, "n3", 10),
            task("g", 0, "n2", 5),
            task("h", 1, "", 50),
        ];
        let slots = group_by_slot(&tasks);
        let grouped: Vec<(SlotKey, Vec<&str>)> = slots
            .iter()
            .map(|(key, group)| (key.clone(), group.iter().map(|t| t.id.as_str()).collect()))
            .collect();
        assert_eq!(
            grouped,
            [
                (SlotKey::Replica(1), vec!["h"]),
                (SlotKey::Replica(2), vec!["d", "f", "a"]),
                (SlotKey::Replica(10), vec!["c"]),
                (SlotKey::Node("n1".into()), vec!["e"]),
                (SlotKey::Node("n2".into()), vec!["g", "b"]),
            ]
        );
        assert_eq!(slots.count(), 5);
    }

    #[test]
    fn terminal_states() {
        let cases = [
            (TaskState::New, false),
            (TaskState::Pending, false),
            (TaskState::Assigned, false),
            (TaskState::Ready, false),
            (TaskState::Running, false),
            (TaskState::Complete, true),
            (TaskState::Shutdown, true),
            (TaskState::Failed, true),
            (TaskState::Rejected, true),
            (TaskState::Remove, true),
            (TaskState::Orphaned, true),
        ];
        for (state, terminal) in cases {
            assert_eq!(is_terminal(state), terminal, "{state:?}");
        }
    }

    #[test]
    fn changes_that_matter_to_planning() {
        let at = |state: TaskState| Task {
            slot: 1,
            spec_version: 1,
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: state as i32,
                message: "before".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let base = at(TaskState::New);
        let with = |f: &dyn Fn(&mut Task)| {
            let mut t = base.clone();
            f(&mut t);
            t
        };
        // (case, new state of `base`, whether planning must look again)
        let cases: Vec<(&str, Task, bool)> = vec![
            ("allocated", at(TaskState::Pending), false),
            ("assigned", at(TaskState::Assigned), false),
            ("starting", at(TaskState::Starting), false),
            (
                "a new message",
                with(&|t| t.status.as_mut().expect("status").message = "after".into()),
                false,
            ),
            ("running", at(TaskState::Running), true),
            ("failed", at(TaskState::Failed), true),
            ("placed", with(&|t| t.node_id = "n1".into()), true),
            (
                "asked to stop",
                with(&|t| t.desired_state = TaskState::Shutdown as i32),
                true,
            ),
            ("another spec", with(&|t| t.spec_version = 2), true),
            ("another slot", with(&|t| t.slot = 2), true),
        ];
        for (case, new, want) in cases {
            assert_eq!(plan_changed(Some(&base), &new), want, "{case}");
        }
        assert!(plan_changed(None, &base), "created or deleted");

        // Of the changes planning sees, which are a task that only started running.
        let starting = at(TaskState::Starting);
        let then = |f: &dyn Fn(&mut Task)| {
            let mut t = at(TaskState::Running);
            f(&mut t);
            t
        };
        // (case, old, new, only started)
        let cases: Vec<(&str, Option<Task>, Task, bool)> = vec![
            (
                "started",
                Some(starting.clone()),
                at(TaskState::Running),
                true,
            ),
            ("from new", Some(base.clone()), at(TaskState::Running), true),
            ("created running", None, at(TaskState::Running), false),
            (
                "restarted",
                Some(at(TaskState::Failed)),
                at(TaskState::Running),
                false,
            ),
            (
                "failed",
                Some(starting.clone()),
                at(TaskState::Failed),
                false,
            ),
            (
                "placed too",
                Some(starting.clone()),
                then(&|t| t.node_id = "n1".into()),
                false,
            ),
            (
                "asked to stop too",
                Some(starting.clone()),
                then(&|t| t.desired_state = TaskState::Shutdown as i32),
                false,
            ),
            (
                "another spec too",
                Some(starting.clone()),
                then(&|t| t.spec_version = 2),
                false,
            ),
            (
                "another slot too",
                Some(starting),
                then(&|t| t.slot = 2),
                false,
            ),
        ];
        for (case, old, new, want) in cases {
            assert_eq!(only_started(old.as_ref(), &new), want, "{case}");
        }

        // Of the changes planning sees, which are a task that was only placed on a node.
        let pending = at(TaskState::Pending);
        let assigned = |f: &dyn Fn(&mut Task)| {
            let mut t = at(TaskState::Assigned);
            t.node_id = "n1".into();
            f(&mut t);
            t
        };
        // (case, old, new, only placed)
        let cases: Vec<(&str, Option<Task>, Task, bool)> = vec![
            ("placed", Some(pending.clone()), assigned(&|_| {}), true),
            ("created placed", None, assigned(&|_| {}), false),
            (
                "moved",
                Some(assigned(&|_| {})),
                assigned(&|t| t.node_id = "n2".into()),
                false,
            ),
            (
                "unplaced",
                Some(assigned(&|_| {})),
                with(&|t| t.status.as_mut().expect("status").state = TaskState::Pending as i32),
                false,
            ),
            (
                "placed running",
                Some(pending.clone()),
                assigned(&|t| t.status.as_mut().expect("status").state = TaskState::Running as i32),
                false,
            ),
            (
                "asked to stop too",
                Some(pending.clone()),
                assigned(&|t| t.desired_state = TaskState::Shutdown as i32),
                false,
            ),
            (
                "another spec too",
                Some(pending.clone()),
                assigned(&|t| t.spec_version = 2),
                false,
            ),
            (
                "another slot too",
                Some(pending),
                assigned(&|t| t.slot = 2),
                false,
            ),
        ];
        for (case, old, new, want) in cases {
            assert_eq!(only_placed(old.as_ref(), &new), want, "{case}");
        }
    }

    #[test]
    fn slot_keys() {
        let cases = [
            (3, "", SlotKey::Replica(3)),
            (1, "n1", SlotKey::Replica(1)),
            (0, "n1", SlotKey::Node("n1".into())),
        ];
        for (slot, node, want) in cases {
            let task = Task {
                slot,
                node_id: node.into(),
                ..Default::default()
            };
            assert_eq!(slot_key(&task), want);
        }
    }

    #[test]
    fn new_task_copies_the_service() {
        let service = Service {
            id: "svc".into(),
            spec_version: 7,
            spec: Some(ServiceSpec {
                mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                    replicas: 2,
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let task = new_task(&service, 2, None);
        assert_eq!(task.id.len(), 25);
        assert_eq!((task.slot, task.spec_version), (2, 7));
        assert_eq!(task.service_id, "svc");
        assert!(task.node_id.is_empty());
        assert_eq!(desired(&task), TaskState::Running);
        assert_eq!(replicas(&service), Some(2));
        assert!(!is_global(&service));

        let global = Service {
            spec: Some(ServiceSpec {
                mode: Some(service_spec::Mode::Global(GlobalService {})),
                ..Default::default()
            }),
            ..Default::default()
        };
        let task = new_task(&global, 0, Some("n1"));
        assert_eq!(slot_key(&task), SlotKey::Node("n1".into()));
        assert!(is_global(&global) && replicas(&global).is_none());
    }

    /// Only a task the allocator has something to do for starts NEW; any other is created as
    /// the allocator would leave it, PENDING.
    #[test]
    fn new_task_starts_new_only_with_something_to_allocate() {
        let plain = Service {
            spec: Some(ServiceSpec {
                task: Some(TaskSpec::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut attached = plain.clone();
        if let Some(task) = attached.spec.as_mut().and_then(|s| s.task.as_mut()) {
            task.networks.push(NetworkAttachmentConfig {
                target: "backend".into(),
                aliases: Vec::new(),
            });
        }
        let port = PortConfig {
            target_port: 80,
            published_port: 8080,
            ..Default::default()
        };
        let mut publishing = plain.clone();
        if let Some(spec) = publishing.spec.as_mut() {
            spec.endpoint = Some(EndpointSpec {
                ports: vec![port.clone()],
                ..Default::default()
            });
        }
        // Its spec no longer publishes, but the endpoint still holds the port until the
        // allocator has been through the service.
        let mut unpublishing = plain.clone();
        unpublishing.endpoint = Some(Endpoint {
            ports: vec![port],
            ..Default::default()
        });
        let cases = [
            (
                "nothing to allocate",
                &plain,
                TaskState::Pending,
                PENDING_MESSAGE,
            ),
            ("a network", &attached, TaskState::New, "created"),
            ("a published port", &publishing, TaskState::New, "created"),
            ("a port held", &unpublishing, TaskState::New, "created"),
        ];
        for (case, service, want, message) in cases {
            let task = new_task(service, 1, None);
            assert_eq!(state(&task), want, "{case}");
            let status = task.status.expect("a status");
            assert_eq!(status.message, message, "{case}");
        }
    }
}
