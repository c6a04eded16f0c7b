//! A service's `deploy:` keys (and `restart:`, which docker reads when `deploy.restart_policy` is
//! absent): mode, resources, restart policy, placement, update and rollback configs.

use crate::compose::ComposeError;
use crate::compose::model::{Deploy, Service, UpdateConfig};
use mesh_proto::service_spec::Mode;
use mesh_proto::{
    GlobalService, Placement, PlacementPreference, ReplicatedService, ResourceRequirements,
    Resources, RestartCondition, RestartPolicy, UpdateFailureAction, UpdateOrder,
};

pub(super) fn mode(path: &str, deploy: &Deploy) -> Result<Mode, ComposeError> {
    match deploy.mode.as_deref() {
        None | Some("replicated") => Ok(Mode::Replicated(ReplicatedService {
            replicas: deploy.replicas.unwrap_or(1),
        })),
        Some("global") => {
            if deploy.replicas.is_some() {
                return Err(ComposeError::invalid(
                    format!("{path}.replicas"),
                    "replicas can only be used with replicated mode",
                ));
            }
            if deploy
                .placement
                .as_ref()
                .is_some_and(|p| p.max_replicas_per_node.is_some())
            {
                return Err(ComposeError::invalid(
                    format!("{path}.placement.max_replicas_per_node"),
                    "max_replicas_per_node can only be used with replicated mode",
                ));
            }
            Ok(Mode::Global(GlobalService {}))
        }
        Some(other) => Err(ComposeError::invalid(
            format!("{path}.mode"),
            format!("invalid mode {other:?}: expected replicated or global"),
        )),
    }
}

pub(super) fn resources(
    path: &str,
    deploy: &Deploy,
) -> Result<Option<ResourceRequirements>, ComposeError> {
    let Some(r) = &deploy.resources else {
        return Ok(None);
    };
    let values = |v: &Option<crate::compose::model::ResourceValues>, key: &str| {
        let Some(v) = v else {
            return Ok(None);
        };
        if v.pids.is_some() {
            return Err(ComposeError::invalid(
                format!("{path}.{key}.pids"),
                "a pids limit is not supported by mesh",
            ));
        }
        if v.generic_resources.is_some() {
            return Err(ComposeError::invalid(
                format!("{path}.{key}.generic_resources"),
                "generic resources are not supported by mesh",
            ));
        }
        Ok(Some(Resources {
            nano_cpus: v.cpus.map_or(0, |c| c.0),
            memory_bytes: v.memory.map_or(0, |m| m.0),
        }))
    };
    Ok(Some(ResourceRequirements {
        limits: values(&r.limits, "limits")?,
        reservations: values(&r.reservations, "reservations")?,
    }))
}

pub(super) fn restart_policy(
    path: &str,
    service: &Service,
    deploy: &Deploy,
) -> Result<Option<RestartPolicy>, ComposeError> {
    if let Some(p) = &deploy.restart_policy {
        let condition = match p.condition.as_deref() {
            None | Some("any") => RestartCondition::Any,
            Some("none") => RestartCondition::None,
            Some("on-failure") => RestartCondition::OnFailure,
            Some(other) => {
                return Err(ComposeError::invalid(
                    format!("{path}.deploy.restart_policy.condition"),
                    format!(
                        "invalid restart condition {other:?}: expected none, on-failure or any"
                    ),
                ));
            }
        };
        return Ok(Some(RestartPolicy {
            condition: condition as i32,
            delay_ns: p.delay.map(|d| d.0),
            max_attempts: p.max_attempts.unwrap_or(0),
            window_ns: p.window.map_or(0, |d| d.0),
        }));
    }
    // As docker: without a restart policy, the `restart` key decides.
    let Some(restart) = service.restart.as_deref() else {
        return Ok(None);
    };
    let (condition, max_attempts) = match restart.split_once(':') {
        None if restart == "no" => (RestartCondition::None, 0),
        None if restart == "always" || restart == "unless-stopped" => (RestartCondition::Any, 0),
        None if restart == "on-failure" => (RestartCondition::OnFailure, 0),
        Some(("on-failure", n)) => (
            RestartCondition::OnFailure,
            n.parse().map_err(|_| {
                ComposeError::invalid(
                    format!("{path}.restart"),
                    format!("invalid restart policy {restart:?}"),
                )
            })?,
        ),
        _ => {
            return Err(ComposeError::invalid(
                format!("{path}.restart"),
                format!(
                    "invalid restart policy {restart:?}: expected no, always, unless-stopped or on-failure[:N]"
                ),
            ));
        }
    };
    Ok(Some(RestartPolicy {
        condition: condition as i32,
        max_attempts,
        ..RestartPolicy::default()
    }))
}

pub(super) fn placement(path: &str, deploy: &Deploy) -> Result<Option<Placement>, ComposeError> {
    let Some(p) = &deploy.placement else {
        return Ok(None);
    };
    for (i, c) in p.constraints.iter().enumerate() {
        crate::scheduler::constraint::Constraint::parse(c).map_err(|e| {
            ComposeError::invalid(format!("{path}.constraints[{i}]"), e.to_string())
        })?;
    }
    Ok(Some(Placement {
        constraints: p.constraints.clone(),
        preferences: p
            .preferences
            .iter()
            .map(|s| PlacementPreference {
                spread_descriptor: s.spread.clone(),
            })
            .collect(),
        max_replicas: p.max_replicas_per_node.unwrap_or(0),
        ..Placement::default()
    }))
}

pub(super) fn update_config(
    path: &str,
    u: &UpdateConfig,
    update: bool,
) -> Result<mesh_proto::UpdateConfig, ComposeError> {
    let failure_action = match u.failure_action.as_deref() {
        None | Some("pause") => UpdateFailureAction::Pause,
        Some("continue") => UpdateFailureAction::Continue,
        Some("rollback") if update => UpdateFailureAction::Rollback,
        Some(other) => {
            let expected = if update {
                "pause, continue or rollback"
            } else {
                "pause or continue"
            };
            return Err(ComposeError::invalid(
                format!("{path}.failure_action"),
                format!("invalid failure action {other:?}: expected {expected}"),
            ));
        }
    };
    let order = match u.order.as_deref() {
        None | Some("stop-first") => UpdateOrder::StopFirst,
        Some("start-first") => UpdateOrder::StartFirst,
        Some(other) => {
            return Err(ComposeError::invalid(
                format!("{path}.order"),
                format!("invalid order {other:?}: expected stop-first or start-first"),
            ));
        }
    };
    let config = mesh_proto::UpdateConfig {
        parallelism: u.parallelism.unwrap_or(1),
        delay_ns: u.delay.map_or(0, |d| d.0),
        failure_action: failure_action as i32,
        monitor_ns: u.monitor.map(|d| d.0),
        max_failure_ratio: u.max_failure_ratio.unwrap_or(0.0),
        order: order as i32,
    };
    crate::api::validate::update_config(path, &config)
        .map_err(|e| ComposeError::invalid(path, e))?;
    Ok(config)
}
