//! Convergence of a service after create/update/scale, shown as docker shows it: an overall line,
//! one bar per slot (or node), then a one-second verification. The evaluation of a task list is
//! pure; `watch` polls the daemon and draws.

use crate::output::{short_id, task_state_name};
use mesh_proto::service_spec::Mode;
use mesh_proto::{Service, Task, TaskState};
use std::collections::BTreeMap;

mod display;
pub use display::watch;

/// A slot whose tasks failed this many times since the command started fails the command.
const MAX_FAILURES: usize = 3;
/// Width of docker's progress bar.
const BAR_WIDTH: usize = 50;
/// Length of the longest state name shown ("preparing"), to align the bars.
const STATE_WIDTH: usize = 9;

/// One line under the overall line: `1/3: running   [=====>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub id: String,
    pub text: String,
}

/// What one look at a service's tasks says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub lines: Vec<Line>,
    pub running: u64,
    pub desired: u64,
    pub converged: bool,
    /// Set when the service cannot converge: a task was rejected or a slot failed too often.
    pub failure: Option<String>,
}

/// Docker's bar position of a state (1 = new … 9 = running); 0 for states past running.
pub fn state_rank(state: i32) -> usize {
    match TaskState::try_from(state) {
        Ok(TaskState::New) => 1,
        Ok(TaskState::Pending) => 3,
        Ok(TaskState::Assigned) => 4,
        Ok(TaskState::Accepted) => 5,
        Ok(TaskState::Preparing) => 6,
        Ok(TaskState::Ready) => 7,
        Ok(TaskState::Starting) => 8,
        Ok(TaskState::Running) => 9,
        _ => 0,
    }
}

/// `running   [==================================================>]`.
pub fn bar_text(state: i32) -> String {
    let filled = (state_rank(state) * 100 / 9 / 2).min(BAR_WIDTH);
    format!(
        "{:<width$} [{}>{}]",
        task_state_name(state),
        "=".repeat(filled),
        " ".repeat(BAR_WIDTH - filled),
        width = STATE_WIDTH
    )
}

fn created(task: &Task) -> i64 {
    task.meta.as_ref().map_or(0, |m| m.created_at)
}

/// Whether `task` runs the service's current spec (a scale keeps the task spec, so its tasks
/// count). A rollback makes an older spec version current again, so versions are not ordered.
fn up_to_date(task: &Task, service: &Service) -> bool {
    let current = service.spec.as_ref().and_then(|s| s.task.as_ref());
    task.spec_version == service.spec_version || task.spec.as_ref() == current
}

fn task_error(task: &Task) -> &str {
    task.status.as_ref().map_or("", |s| {
        if s.err.is_empty() {
            s.scheduling_reason.as_str()
        } else {
            s.err.as_str()
        }
    })
}

/// Evaluates the tasks of `service` against `desired` tasks; only tasks created at or after
/// `since` (Unix nanoseconds) count as failures.
pub fn evaluate(service: &Service, tasks: &[Task], desired: u64, since: i64) -> Snapshot {
    let global = matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(Mode::Global(_))
    );
    let mut groups: BTreeMap<(u64, &str), Vec<&Task>> = BTreeMap::new();
    for task in tasks
        .iter()
        .filter(|t| t.service_id == service.id && up_to_date(t, service))
    {
        let key = if global {
            (0, task.node_id.as_str())
        } else {
            (task.slot, "")
        };
        groups.entry(key).or_default().push(task);
    }
    let mut lines = Vec::new();
    let mut running = 0;
    let mut active = 0;
    let mut failure = None;
    for ((_, node), group) in &groups {
        let status = |t: &Task| t.status.as_ref().map_or(0, |s| s.state);
        // As docker: the highest desired state, then the furthest observed state, then the newest.
        let candidate = group
            .iter()
            .filter(|t| state_rank(t.desired_state) > 0 && state_rank(status(t)) > 0)
            .max_by_key(|t| {
                (
                    state_rank(t.desired_state),
                    state_rank(status(t)),
                    created(t),
                )
            });
        let recent: Vec<&&Task> = group.iter().filter(|t| created(t) >= since).collect();
        let newest = recent.iter().max_by_key(|t| created(t)).copied();
        let failed: Vec<&&&Task> = recent
            .iter()
            .filter(|t| {
                matches!(
                    TaskState::try_from(status(t)),
                    Ok(TaskState::Failed | TaskState::Rejected)
                )
            })
            .collect();
        let position = lines.len() + 1;
        let id = if global {
            short_id(node).to_string()
        } else {
            format!("{position}/{desired}")
        };
        if failure.is_none() {
            if let Some(task) = newest.filter(|t| status(t) == TaskState::Rejected as i32) {
                failure = Some(format!(
                    "{id}: task {} rejected: {}",
                    short_id(&task.id),
                    task_error(task)
                ));
            } else if failed.len() >= MAX_FAILURES {
                let last = failed
                    .iter()
                    .max_by_key(|t| created(t))
                    .map_or("", |t| task_error(t));
                failure = Some(format!("{id}: task failed {} times: {last}", failed.len()));
            }
        }
        let shown = match (candidate, newest) {
            (Some(task), _) => {
                active += 1;
                if status(task) == TaskState::Running as i32 {
                    running += 1;
                }
                Some(*task)
            }
            (None, Some(task)) => Some(*task),
            (None, None) => None,
        };
        let Some(task) = shown else { continue };
        if !global && position as u64 > desired {
            continue;
        }
        let error = task_error(task);
        let text = if error.is_empty() {
            bar_text(status(task))
        } else {
            error.to_string()
        };
        lines.push(Line { id, text });
    }
    Snapshot {
        lines,
        running,
        desired,
        converged: running == desired && active == desired,
        failure,
    }
}

#[cfg(test)]
mod tests;
