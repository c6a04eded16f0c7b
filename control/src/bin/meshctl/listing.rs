//! The rows of `service ls`, `node ls` and `service ps`/`node ps`, as docker shapes them: the
//! table cells and the `--format json` objects come from the same row.

use crate::output::{
    Table, availability_name, capitalize, elapsed, human_duration, node_state_name, short_id,
    short_image, task_state_name,
};
use mesh_proto::service_spec::Mode;
use mesh_proto::{ListServicesResponse, Node, Reachability, Service, Task, TaskState, UpdateState};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Docker truncates task errors to this many characters unless `--no-trunc`.
const MAX_ERR_LEN: usize = 30;

/// One line of `service ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub id: String,
    pub name: String,
    pub mode: String,
    pub replicas: String,
    pub image: String,
    pub ports: String,
}

/// Published ports as `docker service ls` shows them: `*:8080->80/tcp`, comma-separated.
pub fn ports_text(service: &Service) -> String {
    service
        .endpoint
        .iter()
        .flat_map(|e| &e.ports)
        .map(|p| {
            let protocol = match p.protocol() {
                mesh_proto::PortProtocol::Tcp => "tcp",
                mesh_proto::PortProtocol::Udp => "udp",
            };
            format!("*:{}->{}/{protocol}", p.published_port, p.target_port)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of `service ls`, sorted by name.
pub fn service_rows(response: &ListServicesResponse) -> Vec<ServiceRow> {
    let mut rows: Vec<ServiceRow> = response
        .services
        .iter()
        .map(|service| service_row(service, response))
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    rows
}

fn service_row(service: &Service, response: &ListServicesResponse) -> ServiceRow {
    let spec = service.spec.as_ref();
    let running = response
        .running_tasks
        .get(&service.id)
        .copied()
        .unwrap_or(0);
    let (mode, spec_desired) = match spec.and_then(|s| s.mode.as_ref()) {
        Some(Mode::Global(_)) => ("global", 0),
        Some(Mode::Replicated(r)) => ("replicated", r.replicas),
        None => ("replicated", 0),
    };
    let desired = response
        .desired_tasks
        .get(&service.id)
        .copied()
        .unwrap_or(spec_desired);
    let task = spec.and_then(|s| s.task.as_ref());
    let max = task
        .and_then(|t| t.placement.as_ref())
        .map_or(0, |p| p.max_replicas);
    let mut replicas = format!("{running}/{desired}");
    if max > 0 && mode == "replicated" {
        replicas.push_str(&format!(" (max {max} per node)"));
    }
    if let Some(note) = update_note(service) {
        replicas.push_str(&format!(" ({note})"));
    }
    let image = task
        .and_then(|t| t.container.as_ref())
        .map_or("", |c| c.image.as_str());
    ServiceRow {
        id: short_id(&service.id).to_string(),
        name: spec
            .and_then(|s| s.annotations.as_ref())
            .map(|a| a.name.clone())
            .unwrap_or_default(),
        mode: mode.to_string(),
        replicas,
        image: short_image(image).to_string(),
        ports: ports_text(service),
    }
}

/// A rolling update under way or stopped half-way, as `service ls` notes it beside the replicas.
fn update_note(service: &Service) -> Option<&'static str> {
    let state = service.update_status.as_ref()?.state;
    match UpdateState::try_from(state).ok()? {
        UpdateState::Updating => Some("updating"),
        UpdateState::Paused => Some("update paused"),
        UpdateState::RollbackStarted => Some("rolling back"),
        UpdateState::RollbackPaused => Some("rollback paused"),
        UpdateState::Unknown | UpdateState::Completed | UpdateState::RollbackCompleted => None,
    }
}

/// One line of `node ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub is_self: bool,
    pub hostname: String,
    pub status: String,
    pub availability: String,
    pub manager_status: String,
    pub engine_version: String,
}

/// The rows of `node ls`, sorted by hostname; `self_id` gets the `*`.
pub fn node_rows(nodes: &[Node], self_id: &str) -> Vec<NodeRow> {
    let mut rows: Vec<NodeRow> = nodes
        .iter()
        .map(|node| NodeRow {
            id: node.id.clone(),
            is_self: !self_id.is_empty() && node.id == self_id,
            hostname: hostname(node).to_string(),
            status: capitalize(node_state_name(node.status.as_ref().map_or(0, |s| s.state))),
            availability: capitalize(availability_name(
                node.spec.as_ref().map_or(0, |s| s.availability),
            )),
            manager_status: manager_status(node),
            engine_version: node
                .description
                .as_ref()
                .and_then(|d| d.engine.as_ref())
                .map(|e| e.engine_version.clone())
                .unwrap_or_default(),
        })
        .collect();
    rows.sort_by(|a, b| a.hostname.cmp(&b.hostname).then_with(|| a.id.cmp(&b.id)));
    rows
}

pub fn hostname(node: &Node) -> &str {
    node.description
        .as_ref()
        .map_or("", |d| d.hostname.as_str())
}

fn manager_status(node: &Node) -> String {
    match &node.manager_status {
        None => String::new(),
        Some(status) if status.leader => "Leader".to_string(),
        Some(status) => match Reachability::try_from(status.reachability) {
            Ok(Reachability::Reachable) => "Reachable".to_string(),
            Ok(Reachability::Unreachable) => "Unreachable".to_string(),
            _ => "Unknown".to_string(),
        },
    }
}

/// One line of `service ps` / `node ps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    /// `svc.slot` (or `svc.nodeid` for a global task).
    pub name: String,
    /// Whether an earlier line has the same name: the table shows ` \_ svc.slot`.
    pub history: bool,
    pub image: String,
    pub node: String,
    pub desired_state: String,
    pub current_state: String,
    pub error: String,
}

/// What `task_rows` needs besides the tasks.
pub struct TaskContext<'a> {
    /// Node id → hostname.
    pub hostnames: &'a HashMap<String, String>,
    /// Service id → name, for tasks that do not carry their service's name.
    pub service_names: &'a HashMap<String, String>,
    pub now_nanos: i64,
    pub no_trunc: bool,
}

/// The rows of `ps`: grouped by service and slot (or node), newest task of each first.
pub fn task_rows(tasks: &[Task], ctx: &TaskContext<'_>) -> Vec<TaskRow> {
    let service_name = |task: &Task| -> String {
        task.service_annotations
            .as_ref()
            .map(|a| a.name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| ctx.service_names.get(&task.service_id).cloned())
            .unwrap_or_else(|| short_id(&task.service_id).to_string())
    };
    let created = |task: &Task| task.meta.as_ref().map_or(0, |m| m.created_at);
    let mut sorted: Vec<(String, &Task)> = tasks.iter().map(|t| (service_name(t), t)).collect();
    sorted.sort_by(|(name_a, a), (name_b, b)| {
        name_a
            .cmp(name_b)
            .then_with(|| a.service_id.cmp(&b.service_id))
            .then_with(|| a.slot.cmp(&b.slot))
            .then_with(|| {
                if a.slot == 0 {
                    a.node_id.cmp(&b.node_id)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| created(b).cmp(&created(a)))
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut previous = String::new();
    sorted
        .into_iter()
        .map(|(service, task)| {
            let name = if task.slot != 0 {
                format!("{service}.{}", task.slot)
            } else {
                format!("{service}.{}", task.node_id)
            };
            let history = name == previous;
            previous.clone_from(&name);
            task_row(task, name, history, ctx)
        })
        .collect()
}

fn task_row(task: &Task, name: String, history: bool, ctx: &TaskContext<'_>) -> TaskRow {
    let status = task.status.clone().unwrap_or_default();
    let image = task
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .map_or("", |c| c.image.as_str());
    let state = task_state_name(status.state);
    let ago = human_duration(elapsed(ctx.now_nanos, status.timestamp)).to_lowercase();
    let mut error = status.err.clone();
    if error.is_empty() && status.state == TaskState::Pending as i32 {
        error.clone_from(&status.scheduling_reason);
    }
    if !ctx.no_trunc && error.chars().count() > MAX_ERR_LEN {
        error = error.chars().take(MAX_ERR_LEN - 1).collect::<String>() + "…";
    }
    if !error.is_empty() {
        error = format!("\"{error}\"");
    }
    TaskRow {
        id: if ctx.no_trunc {
            task.id.clone()
        } else {
            short_id(&task.id).to_string()
        },
        name,
        history,
        image: if ctx.no_trunc {
            image.to_string()
        } else {
            short_image(image).to_string()
        },
        node: ctx
            .hostnames
            .get(&task.node_id)
            .cloned()
            .unwrap_or_else(|| task.node_id.clone()),
        desired_state: capitalize(task_state_name(task.desired_state)),
        current_state: format!("{} {ago} ago", capitalize(state)),
        error,
    }
}

/// A row that prints in a table, as one JSON object, or as its id alone.
pub trait Row {
    const HEADERS: &'static [&'static str];
    fn cells(&self) -> Vec<String>;
    fn json(&self) -> Value;
    fn id(&self) -> &str;
}

impl Row for ServiceRow {
    const HEADERS: &'static [&'static str] = &["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"];
    fn cells(&self) -> Vec<String> {
        let Self {
            id,
            name,
            mode,
            replicas,
            image,
            ports,
        } = self.clone();
        vec![id, name, mode, replicas, image, ports]
    }
    fn json(&self) -> Value {
        json!({"ID": self.id, "Name": self.name, "Mode": self.mode, "Replicas": self.replicas,
               "Image": self.image, "Ports": self.ports})
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl Row for NodeRow {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "HOSTNAME",
        "STATUS",
        "AVAILABILITY",
        "MANAGER STATUS",
        "ENGINE VERSION",
    ];
    fn cells(&self) -> Vec<String> {
        let marker = if self.is_self { " *" } else { "  " };
        vec![
            format!("{}{marker}", self.id),
            self.hostname.clone(),
            self.status.clone(),
            self.availability.clone(),
            self.manager_status.clone(),
            self.engine_version.clone(),
        ]
    }
    fn json(&self) -> Value {
        json!({"ID": self.id, "Hostname": self.hostname, "Status": self.status,
               "Availability": self.availability, "ManagerStatus": self.manager_status,
               "EngineVersion": self.engine_version, "Self": self.is_self, "TLSStatus": "Unknown"})
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl Row for TaskRow {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
        "PORTS",
    ];
    fn cells(&self) -> Vec<String> {
        let name = if self.history {
            format!(" \\_ {}", self.name)
        } else {
            self.name.clone()
        };
        vec![
            self.id.clone(),
            name,
            self.image.clone(),
            self.node.clone(),
            self.desired_state.clone(),
            self.current_state.clone(),
            self.error.clone(),
            String::new(),
        ]
    }
    fn json(&self) -> Value {
        json!({"ID": self.id, "Name": self.name, "Image": self.image, "Node": self.node,
               "DesiredState": self.desired_state, "CurrentState": self.current_state,
               "Error": self.error, "Ports": ""})
    }
    fn id(&self) -> &str {
        &self.id
    }
}

/// Renders rows as a table, or their ids with `-q`, or JSON lines with `--format json`.
pub fn render<R: Row>(
    out: &mut impl std::io::Write,
    rows: &[R],
    quiet: bool,
    json: bool,
) -> std::io::Result<()> {
    if quiet {
        for row in rows {
            writeln!(out, "{}", row.id())?;
        }
        return Ok(());
    }
    if json {
        let values: Vec<Value> = rows.iter().map(Row::json).collect();
        return crate::output::write_json_lines(out, &values);
    }
    let mut table = Table::new(R::HEADERS);
    for row in rows {
        table.push(row.cells());
    }
    table.write(out)
}

#[cfg(test)]
mod tests;
