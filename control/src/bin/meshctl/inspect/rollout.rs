//! The update and rollback parts of `service inspect`: `Spec.UpdateConfig`, `Spec.RollbackConfig`
//! and `UpdateStatus`, in Docker's shape.

use crate::output::rfc3339;
use mesh_control::orchestrator::update::{self, Config};
use mesh_proto::{UpdateConfig, UpdateFailureAction, UpdateOrder, UpdateState, UpdateStatus};
use serde::Serialize;

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateConfigJson {
    pub parallelism: u64,
    #[serde(skip_serializing_if = "super::is_zero")]
    pub delay: i64,
    pub failure_action: &'static str,
    pub monitor: i64,
    pub max_failure_ratio: f32,
    pub order: &'static str,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatusJson {
    pub state: &'static str,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    pub message: String,
}

/// Docker's name of a failure action.
pub fn failure_action_name(action: UpdateFailureAction) -> &'static str {
    match action {
        UpdateFailureAction::Pause => "pause",
        UpdateFailureAction::Continue => "continue",
        UpdateFailureAction::Rollback => "rollback",
    }
}

/// Docker's name of an update order.
pub fn order_name(order: UpdateOrder) -> &'static str {
    match order {
        UpdateOrder::StopFirst => "stop-first",
        UpdateOrder::StartFirst => "start-first",
    }
}

/// Docker's name of an update state ("" before any update).
pub fn update_state_name(state: i32) -> &'static str {
    UpdateState::try_from(state).map_or("", update::state_name)
}

/// A config as docker prints it, defaults filled in; absent when the spec has none.
pub fn config_json(config: Option<&UpdateConfig>) -> Option<UpdateConfigJson> {
    let c = Config::from_spec(Some(config?));
    Some(UpdateConfigJson {
        parallelism: c.parallelism,
        delay: c.delay_ns,
        failure_action: failure_action_name(c.failure_action),
        monitor: c.monitor_ns,
        max_failure_ratio: c.max_failure_ratio,
        order: order_name(c.order),
    })
}

pub fn status_json(status: Option<&UpdateStatus>) -> Option<UpdateStatusJson> {
    let status = status?;
    Some(UpdateStatusJson {
        state: update_state_name(status.state),
        started_at: rfc3339(status.started_at),
        completed_at: (status.completed_at > 0).then(|| rfc3339(status.completed_at)),
        message: status.message.clone(),
    })
}
