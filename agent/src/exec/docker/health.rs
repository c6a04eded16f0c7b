//! Health checks: the spec's check in Docker's terms, and watching a container's health through
//! the engine's `health_status` events (with an inspect at the start, so no change falls
//! between the two, and inspects at [`POLL`] while the event stream is down).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{HealthConfig, HealthStatusEnum};
use bollard::query_parameters::EventsOptions;
use futures::StreamExt;
use tracing::debug;

use super::container;
use crate::exec::{ExecError, Health};

/// How often health is read by inspecting while the engine's event stream is not there.
const POLL: Duration = Duration::from_millis(500);

/// The spec's health check as the create body carries it; `None` leaves the image's in force.
pub(super) fn config(spec: Option<&mesh_proto::HealthConfig>) -> Option<HealthConfig> {
    spec.map(|h| HealthConfig {
        test: (!h.test.is_empty()).then(|| h.test.clone()),
        interval: Some(h.interval_ns),
        timeout: Some(h.timeout_ns),
        retries: Some(i64::from(h.retries)),
        start_period: Some(h.start_period_ns),
        start_interval: None,
    })
}

/// No health check at all: what a task's sandbox runs with, whatever its image says.
pub(super) fn disabled() -> HealthConfig {
    HealthConfig {
        test: Some(vec!["NONE".to_owned()]),
        ..Default::default()
    }
}

/// A container's health as inspect reports it; `None` when it has no health check.
pub(super) fn from_status(status: Option<HealthStatusEnum>) -> Option<Health> {
    match status? {
        HealthStatusEnum::STARTING => Some(Health::Starting),
        HealthStatusEnum::HEALTHY => Some(Health::Healthy),
        HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    }
}

/// The health an event's action (`health_status: healthy`) names.
fn from_action(action: &str) -> Option<Health> {
    match action.strip_prefix("health_status:")?.trim() {
        "starting" => Some(Health::Starting),
        "healthy" => Some(Health::Healthy),
        "unhealthy" => Some(Health::Unhealthy),
        _ => None,
    }
}

/// Resolves with the container's health once it is not `last`.
pub(super) async fn changed(
    docker: &Docker,
    id: &str,
    last: Option<Health>,
) -> Result<Option<Health>, ExecError> {
    let filters = HashMap::from([
        ("container".to_owned(), vec![id.to_owned()]),
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["health_status".to_owned()]),
    ]);
    let options = EventsOptions {
        filters: Some(filters),
        ..Default::default()
    };
    // The engine's request timeout bounds only its answer, not the stream that follows.
    let mut events = docker.events(Some(options));
    let now = container::inspect(docker, id).await?.health;
    if now != last {
        return Ok(now);
    }
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let health = event.action.as_deref().and_then(from_action);
                if health.is_some() && health != last {
                    return Ok(health);
                }
            }
            Err(error) => {
                debug!(container.id = %id, %error, "health events ended, polling");
                break;
            }
        }
    }
    loop {
        tokio::time::sleep(POLL).await;
        let now = container::inspect(docker, id).await?.health;
        if now != last {
            return Ok(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_actions_name_the_health() {
        assert_eq!(from_action("health_status: healthy"), Some(Health::Healthy));
        assert_eq!(
            from_action("health_status: unhealthy"),
            Some(Health::Unhealthy)
        );
        assert_eq!(
            from_action("health_status: starting"),
            Some(Health::Starting)
        );
        assert_eq!(from_action("exec_start: sh -c true"), None);
        assert_eq!(from_action("health_status: sideways"), None);
    }

    #[test]
    fn inspect_status_none_means_no_check() {
        assert_eq!(from_status(None), None);
        assert_eq!(from_status(Some(HealthStatusEnum::NONE)), None);
        assert_eq!(from_status(Some(HealthStatusEnum::EMPTY)), None);
        assert_eq!(
            from_status(Some(HealthStatusEnum::STARTING)),
            Some(Health::Starting)
        );
    }

    #[test]
    fn an_absent_check_leaves_the_images_in_force() {
        assert_eq!(config(None), None);
        let spec = mesh_proto::HealthConfig {
            test: vec!["CMD-SHELL".to_owned(), "test -f /tmp/ok".to_owned()],
            interval_ns: 1_000_000_000,
            timeout_ns: 0,
            retries: 2,
            start_period_ns: 0,
        };
        let got = config(Some(&spec)).unwrap_or_default();
        assert_eq!(got.test, Some(spec.test.clone()));
        assert_eq!(got.interval, Some(1_000_000_000));
        assert_eq!(got.retries, Some(2));
        // Tuning alone keeps the image's command: an empty test inherits it.
        let tuned = mesh_proto::HealthConfig {
            interval_ns: 2_000_000_000,
            ..Default::default()
        };
        assert_eq!(config(Some(&tuned)).and_then(|c| c.test), None);
    }
}
