//! Task counts the store keeps as it applies: what `service ls` and the metrics report, read
//! without a pass over every task (at 500,000 tasks a pass took a quarter of a second, and the
//! benchmark's polls a third of a core).

use mesh_proto::{Task, TaskState};
use std::collections::{BTreeMap, HashMap};

/// One service's tasks that are wanted running, and of those, the ones reported running.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServiceTasks {
    pub wanted: u64,
    pub running: u64,
}

/// Every task by reported state, and by service what [`ServiceTasks`] counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TaskCounts {
    /// By state number (a task without a status counts as NEW); no zero entries.
    pub by_state: BTreeMap<i32, u64>,
    /// By service id; services with no task wanted running are left out.
    pub by_service: HashMap<String, ServiceTasks>,
}

fn state(task: &Task) -> i32 {
    task.status
        .as_ref()
        .map_or(TaskState::New as i32, |s| s.state)
}

/// What `task` adds to its service's count.
fn service_tasks(task: &Task) -> ServiceTasks {
    let wanted = task.desired_state == TaskState::Running as i32;
    ServiceTasks {
        wanted: u64::from(wanted),
        running: u64::from(wanted && state(task) == TaskState::Running as i32),
    }
}

impl TaskCounts {
    /// The counts of `tasks`, from scratch.
    pub fn of<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> Self {
        let mut counts = Self::default();
        for task in tasks {
            counts.add(task);
        }
        counts
    }

    /// Moves the counts from `old` (the task as it was, if it was) to `new` (as it is now, if
    /// it still is).
    pub(crate) fn change(&mut self, old: Option<&Task>, new: Option<&Task>) {
        if let Some(old) = old {
            self.remove(old);
        }
        if let Some(new) = new {
            self.add(new);
        }
    }

    fn add(&mut self, task: &Task) {
        *self.by_state.entry(state(task)).or_default() += 1;
        let counted = service_tasks(task);
        if counted.wanted > 0 {
            let service = self.by_service.entry(task.service_id.clone()).or_default();
            service.wanted += counted.wanted;
            service.running += counted.running;
        }
    }

    fn remove(&mut self, task: &Task) {
        let state = state(task);
        if let Some(count) = self.by_state.get_mut(&state) {
            *count -= 1;
            if *count == 0 {
                self.by_state.remove(&state);
            }
        }
        let counted = service_tasks(task);
        if counted.wanted == 0 {
            return;
        }
        if let Some(service) = self.by_service.get_mut(task.service_id.as_str()) {
            service.wanted -= counted.wanted;
            service.running -= counted.running;
            if service.wanted == 0 {
                self.by_service.remove(task.service_id.as_str());
            }
        }
    }
}
