//! `inspect --pretty`: a human summary of a service or a node, laid out as docker's.

use crate::inspect::rollout::{config_json, update_state_name};
use crate::inspect::{mount_type_name, restart_condition_name, role_name};
use crate::output::{
    availability_name, capitalize, elapsed, human_duration, node_state_name, now_nanos, rfc3339,
};
use mesh_proto::service_spec::Mode;
use mesh_proto::{Node, Service};
use std::fmt::Write;
use std::time::Duration;

/// Key/value lines aligned at docker's column.
struct Lines {
    text: String,
    column: usize,
}

impl Lines {
    fn new(column: usize) -> Lines {
        Lines {
            text: String::new(),
            column,
        }
    }

    fn kv(&mut self, key: &str, value: impl std::fmt::Display) {
        let label = format!("{key}:");
        // A label longer than the column still gets a space, as docker's.
        let width = self.column.max(label.len() + 1);
        let _ = writeln!(self.text, "{label:<width$}{value}");
    }

    fn heading(&mut self, key: &str) {
        let _ = writeln!(self.text, "{key}:");
    }
}

fn cpus(nano: i64) -> String {
    format!("{}", nano as f64 / 1e9)
}

fn memory(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let rounded = format!("{value:.4}");
    let trimmed = rounded.trim_end_matches('0').trim_end_matches('.');
    format!("{trimmed}{}", UNITS[unit])
}

fn duration(nanos: i64) -> String {
    humantime::format_duration(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))).to_string()
}

/// `docker service inspect --pretty`.
pub fn service(service: &Service) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.unwrap_or_default();
    let task = spec.task.unwrap_or_default();
    let container = task.container.unwrap_or_default();
    let mut out = Lines::new(16);
    let _ = writeln!(out.text);
    out.kv("ID", &service.id);
    out.kv("Name", &annotations.name);
    if !annotations.labels.is_empty() {
        out.heading("Labels");
        let mut labels: Vec<_> = annotations.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            let _ = writeln!(out.text, " {k}={v}");
        }
    }
    match spec.mode {
        Some(Mode::Global(_)) => out.kv("Service Mode", "Global"),
        Some(Mode::Replicated(r)) => {
            out.kv("Service Mode", "Replicated");
            out.kv(" Replicas", r.replicas);
        }
        None => out.kv("Service Mode", "Replicated"),
    }
    if let Some(status) = &service.update_status {
        let ago = |at: i64| format!("{} ago", human_duration(elapsed(now_nanos(), at)));
        out.heading("UpdateStatus");
        out.kv(" State", update_state_name(status.state));
        out.kv(" Started", ago(status.started_at));
        if status.completed_at > 0 {
            out.kv(" Completed", ago(status.completed_at));
        }
        out.kv(" Message", &status.message);
    }
    let placement = task.placement.unwrap_or_default();
    out.heading("Placement");
    if !placement.constraints.is_empty() {
        out.kv(
            " Constraints",
            format!("[{}]", placement.constraints.join(" ")),
        );
    }
    for preference in &placement.preferences {
        out.kv(
            " Preferences",
            format!("spread={}", preference.spread_descriptor),
        );
    }
    if placement.max_replicas > 0 {
        out.kv(" Max Replicas Per Node", placement.max_replicas);
    }
    let restart = task.restart.unwrap_or_default();
    out.heading("RestartPolicy");
    out.kv(" Condition", restart_condition_name(restart.condition));
    out.kv(
        " Delay",
        duration(restart.delay_ns.unwrap_or(5_000_000_000)),
    );
    out.kv(" Max Attempts", restart.max_attempts);
    for (heading, config, order) in [
        ("UpdateConfig", &spec.update_config, " Update order"),
        ("RollbackConfig", &spec.rollback_config, " Rollback order"),
    ] {
        let Some(c) = config_json(config.as_ref()) else {
            continue;
        };
        out.heading(heading);
        out.kv(" Parallelism", c.parallelism);
        if c.delay > 0 {
            out.kv(" Delay", duration(c.delay));
        }
        out.kv(" On failure", c.failure_action);
        out.kv(" Monitoring Period", duration(c.monitor));
        out.kv(" Max failure ratio", c.max_failure_ratio);
        out.kv(order, c.order);
    }
    out.heading("ContainerSpec");
    out.kv(" Image", &container.image);
    if !container.args.is_empty() {
        out.kv(" Args", container.args.join(" "));
    }
    if !container.env.is_empty() {
        out.kv(" Env", container.env.join(" "));
    }
    if !container.dir.is_empty() {
        out.kv(" Dir", &container.dir);
    }
    if !container.user.is_empty() {
        out.kv(" User", &container.user);
    }
    if !container.mounts.is_empty() {
        out.heading("Mounts");
        for mount in &container.mounts {
            out.kv(" Target", &mount.target);
            out.kv("  Source", &mount.source);
            out.kv("  ReadOnly", mount.read_only);
            out.kv("  Type", mount_type_name(mount.r#type));
        }
    }
    let resources = task.resources.unwrap_or_default();
    let sections: Vec<_> = [
        ("Reservations", resources.reservations),
        ("Limits", resources.limits),
    ]
    .into_iter()
    .map(|(heading, r)| (heading, r.unwrap_or_default()))
    .filter(|(_, r)| r.nano_cpus != 0 || r.memory_bytes != 0)
    .collect();
    if !sections.is_empty() {
        out.heading("Resources");
    }
    for (heading, r) in sections {
        out.heading(&format!(" {heading}"));
        if r.nano_cpus > 0 {
            out.kv("  CPU", cpus(r.nano_cpus));
        }
        if r.memory_bytes > 0 {
            out.kv("  Memory", memory(r.memory_bytes));
        }
    }
    out.kv("Endpoint Mode", "vip");
    out.text
}

/// `docker node inspect --pretty`.
pub fn node(node: &Node) -> String {
    let spec = node.spec.clone().unwrap_or_default();
    let description = node.description.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    let mut out = Lines::new(24);
    out.kv("ID", &node.id);
    let labels = spec.annotations.unwrap_or_default().labels;
    if !labels.is_empty() {
        out.heading("Labels");
        let mut labels: Vec<_> = labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            let _ = writeln!(out.text, " - {k}={v}");
        }
    }
    out.kv("Hostname", &description.hostname);
    out.kv(
        "Joined at",
        rfc3339(node.meta.as_ref().map_or(0, |m| m.created_at)),
    );
    out.heading("Status");
    out.kv(" State", capitalize(node_state_name(status.state)));
    out.kv(
        " Availability",
        capitalize(availability_name(spec.availability)),
    );
    out.kv(" Address", &status.addr);
    if let Some(manager) = &node.manager_status {
        out.heading("Manager Status");
        out.kv(" Address", &manager.addr);
        let reachability = crate::inspect::node_json(node)
            .manager_status
            .map_or("unknown", |m| m.reachability);
        out.kv(" Raft Status", capitalize(reachability));
        out.kv(" Leader", if manager.leader { "Yes" } else { "No" });
    }
    out.kv(" Role", role_name(node.role));
    let platform = description.platform.unwrap_or_default();
    out.heading("Platform");
    out.kv(" Operating System", &platform.os);
    out.kv(" Architecture", &platform.architecture);
    let resources = description.resources.unwrap_or_default();
    out.heading("Resources");
    out.kv(" CPUs", cpus(resources.nano_cpus));
    out.kv(" Memory", memory(resources.memory_bytes));
    let engine = description.engine.unwrap_or_default();
    out.kv("Engine Version", &engine.engine_version);
    out.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(memory(512 << 20), "512MiB");
        assert_eq!(memory(3 << 29), "1.5GiB");
        assert_eq!(memory(100), "100B");
        assert_eq!(cpus(500_000_000), "0.5");
        assert_eq!(cpus(2_000_000_000), "2");
        assert_eq!(duration(5_000_000_000), "5s");
    }

    #[test]
    fn pretty_service_names_its_parts() {
        let mut flags_service = Service {
            id: "svc1".into(),
            ..Service::default()
        };
        flags_service.spec = Some(mesh_proto::ServiceSpec {
            annotations: Some(mesh_proto::Annotations {
                name: "web".into(),
                ..Default::default()
            }),
            mode: Some(Mode::Replicated(mesh_proto::ReplicatedService {
                replicas: 3,
            })),
            ..Default::default()
        });
        flags_service.update_status = Some(mesh_proto::UpdateStatus {
            state: mesh_proto::UpdateState::Paused as i32,
            started_at: now_nanos() - 120_000_000_000,
            completed_at: 0,
            message: "update paused due to failure or early termination of task t1".into(),
        });
        if let Some(spec) = flags_service.spec.as_mut() {
            spec.update_config = Some(mesh_proto::UpdateConfig {
                parallelism: 2,
                delay_ns: 10_000_000_000,
                order: mesh_proto::UpdateOrder::StartFirst as i32,
                ..Default::default()
            });
        }
        let text = service(&flags_service);
        for line in [
            "UpdateStatus:\n State:         paused\n Started:       2 minutes ago\n",
            " Message:       update paused due to failure or early termination of task t1\n",
            "UpdateConfig:\n Parallelism:   2\n Delay:         10s\n On failure:    pause\n",
            " Monitoring Period: 5s\n Max failure ratio: 0\n Update order:  start-first\n",
        ] {
            assert!(text.contains(line), "{line:?} not in {text}");
        }
        assert!(!text.contains("RollbackConfig"), "{text}");
        assert!(text.contains("ID:             svc1\n"), "{text}");
        assert!(text.contains("Name:           web\n"), "{text}");
        assert!(text.contains(" Replicas:      3\n"), "{text}");
    }
}
