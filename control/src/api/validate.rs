//! Checks of user-supplied specs, each failure one line that says what is wrong.

use mesh_proto::{ServiceSpec, UpdateConfig, UpdateFailureAction, UpdateOrder, service_spec::Mode};

use crate::scheduler::constraint::Constraint;

pub type Invalid = String;

/// A service name is a DNS label, as Docker requires: it becomes a hostname.
pub fn service_name(name: &str) -> Result<(), Invalid> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid service name {name:?}: use 1 to 63 letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

pub fn service_spec(spec: &ServiceSpec) -> Result<(), Invalid> {
    let name = spec
        .annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .unwrap_or_default();
    service_name(name)?;
    crate::limits::service_spec(spec).map_err(|e| e.to_string())?;
    if spec.mode.is_none() {
        return Err("service mode is missing: replicated or global".into());
    }
    let task = spec.task.as_ref().ok_or("service has no task template")?;
    let container = task
        .container
        .as_ref()
        .ok_or("service has no container spec")?;
    if container.image.trim().is_empty() {
        return Err("image must not be empty".into());
    }
    if container.image.chars().any(char::is_whitespace) {
        return Err(format!("invalid image reference {:?}", container.image));
    }
    for env in &container.env {
        if env.is_empty() || env.starts_with('=') {
            return Err(format!(
                "invalid environment variable {env:?}: expected KEY=VALUE"
            ));
        }
    }
    for mount in &container.mounts {
        if !mount.target.starts_with('/') {
            return Err(format!(
                "invalid mount target {:?}: must be an absolute path",
                mount.target
            ));
        }
        if mount.r#type == mesh_proto::MountType::Bind as i32 && !mount.source.starts_with('/') {
            return Err(format!(
                "invalid bind mount source {:?}: must be an absolute path",
                mount.source
            ));
        }
        if mount.tmpfs_mode > 0o7777 {
            return Err(format!(
                "invalid tmpfs mode {:o}: at most 7777 (octal)",
                mount.tmpfs_mode
            ));
        }
        let volume_name_ok = mount.source.is_empty()
            || mount
                .source
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && mount
                    .source
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if mount.r#type == mesh_proto::MountType::Volume as i32 && !volume_name_ok {
            return Err(format!(
                "invalid volume name {:?}: letters, digits, '_', '.' and '-', starting with a \
                 letter or digit",
                mount.source
            ));
        }
    }
    if container.stop_grace_period_ns.is_some_and(|g| g < 0) {
        return Err("stop grace period must not be negative".into());
    }
    if let Some(health) = &container.healthcheck {
        super::health::validate(health)?;
    }
    if let Some(resources) = &task.resources {
        for r in [&resources.limits, &resources.reservations]
            .into_iter()
            .flatten()
        {
            if r.nano_cpus < 0 || r.memory_bytes < 0 {
                return Err("resources must not be negative".into());
            }
        }
    }
    if let Some(restart) = &task.restart
        && (restart.delay_ns.is_some_and(|d| d < 0) || restart.window_ns < 0)
    {
        return Err("restart delay and window must not be negative".into());
    }
    if let Some(placement) = &task.placement {
        Constraint::parse_all(&placement.constraints).map_err(|e| e.to_string())?;
        for pref in &placement.preferences {
            let d = &pref.spread_descriptor;
            let valid = ["node.labels.", "engine.labels."]
                .iter()
                .any(|p| d.strip_prefix(p).is_some_and(|k| !k.is_empty()));
            if !valid {
                return Err(format!(
                    "invalid placement preference spread={d}: expected spread=node.labels.KEY"
                ));
            }
        }
        if placement.max_replicas > 0 && matches!(spec.mode, Some(Mode::Global(_))) {
            return Err("max replicas per node applies only to replicated services".into());
        }
    }
    if let Some(endpoint) = &spec.endpoint {
        super::ports::validate(endpoint)?;
    }
    for (flag, config) in [
        ("update", &spec.update_config),
        ("rollback", &spec.rollback_config),
    ] {
        if let Some(config) = config {
            update_config(flag, config)?;
        }
    }
    Ok(())
}

/// An update or rollback config (`flag` is "update" or "rollback", for the flag names).
pub fn update_config(flag: &str, config: &UpdateConfig) -> Result<(), Invalid> {
    if config.delay_ns < 0 {
        return Err(format!("--{flag}-delay must not be negative"));
    }
    if config.monitor_ns.is_some_and(|m| m < 0) {
        return Err(format!("--{flag}-monitor must not be negative"));
    }
    let ratio = config.max_failure_ratio;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!(
            "invalid --{flag}-max-failure-ratio {ratio}: must be between 0 and 1"
        ));
    }
    if UpdateFailureAction::try_from(config.failure_action).is_err() {
        return Err(format!(
            "unknown --{flag}-failure-action {}: use pause, continue or rollback",
            config.failure_action
        ));
    }
    if flag == "rollback" && config.failure_action == UpdateFailureAction::Rollback as i32 {
        return Err("--rollback-failure-action must be pause or continue".into());
    }
    if UpdateOrder::try_from(config.order).is_err() {
        return Err(format!(
            "unknown --{flag}-order {}: use stop-first or start-first",
            config.order
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web", "web-1", "a", "my_svc", "X9"] {
            assert!(service_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-web", "web-", "we b", "web.1", &"a".repeat(64)] {
            assert!(service_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn update_configs() {
        let ok = UpdateConfig {
            parallelism: 0,
            delay_ns: 0,
            failure_action: UpdateFailureAction::Rollback as i32,
            monitor_ns: Some(0),
            max_failure_ratio: 1.0,
            order: UpdateOrder::StartFirst as i32,
        };
        assert_eq!(update_config("update", &ok), Ok(()));
        let with = |f: &dyn Fn(&mut UpdateConfig)| {
            let mut c = ok;
            f(&mut c);
            c
        };
        // (flag, config, the error)
        let cases: Vec<(&str, UpdateConfig, &str)> = vec![
            (
                "update",
                with(&|c| c.delay_ns = -1),
                "--update-delay must not be negative",
            ),
            (
                "rollback",
                with(&|c| c.monitor_ns = Some(-5)),
                "--rollback-monitor must not be negative",
            ),
            (
                "update",
                with(&|c| c.max_failure_ratio = 1.5),
                "invalid --update-max-failure-ratio 1.5: must be between 0 and 1",
            ),
            (
                "update",
                with(&|c| c.max_failure_ratio = -0.1),
                "invalid --update-max-failure-ratio -0.1: must be between 0 and 1",
            ),
            (
                "update",
                with(&|c| c.max_failure_ratio = f32::NAN),
                "invalid --update-max-failure-ratio NaN: must be between 0 and 1",
            ),
            (
                "update",
                with(&|c| c.failure_action = 7),
                "unknown --update-failure-action 7: use pause, continue or rollback",
            ),
            (
                "rollback",
                ok,
                "--rollback-failure-action must be pause or continue",
            ),
            (
                "update",
                with(&|c| c.order = 2),
                "unknown --update-order 2: use stop-first or start-first",
            ),
        ];
        for (flag, config, want) in cases {
            assert_eq!(
                update_config(flag, &config),
                Err(want.to_string()),
                "{want}"
            );
        }
        let spec = ServiceSpec {
            rollback_config: Some(with(&|c| c.max_failure_ratio = 2.0)),
            ..Default::default()
        };
        let err = service_spec(&ServiceSpec {
            annotations: Some(mesh_proto::Annotations {
                name: "web".into(),
                ..Default::default()
            }),
            mode: Some(Mode::Replicated(Default::default())),
            task: Some(mesh_proto::TaskSpec {
                container: Some(mesh_proto::ContainerSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..spec
        });
        assert_eq!(
            err,
            Err("invalid --rollback-max-failure-ratio 2: must be between 0 and 1".into())
        );
    }

    #[test]
    fn a_bad_health_check_is_refused_whoever_sent_it() {
        let spec = |health: mesh_proto::HealthConfig| ServiceSpec {
            annotations: Some(mesh_proto::Annotations {
                name: "web".into(),
                ..Default::default()
            }),
            task: Some(mesh_proto::TaskSpec {
                container: Some(mesh_proto::ContainerSpec {
                    image: "busybox".into(),
                    healthcheck: Some(health),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(Mode::Replicated(mesh_proto::ReplicatedService {
                replicas: 1,
            })),
            ..Default::default()
        };
        let good = mesh_proto::HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval_ns: 1_000_000_000,
            ..Default::default()
        };
        assert_eq!(service_spec(&spec(good.clone())), Ok(()));
        let bad = [
            mesh_proto::HealthConfig {
                retries: -1,
                ..good.clone()
            },
            mesh_proto::HealthConfig {
                interval_ns: -1,
                ..good.clone()
            },
            mesh_proto::HealthConfig {
                test: vec!["NONE".into()],
                ..good.clone()
            },
            mesh_proto::HealthConfig {
                test: vec!["CMD-SHELL".into()],
                ..good
            },
        ];
        for health in bad {
            let err = service_spec(&spec(health.clone())).expect_err("refused");
            assert!(err.contains("health check"), "{health:?}: {err}");
            assert_eq!(err.lines().count(), 1);
        }
    }
}
