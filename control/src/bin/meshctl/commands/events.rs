//! `meshctl events`: streams the cluster's changes as `docker events` prints them — a line per
//! event (`2026-12-03T09:30:00.123456789Z service create <id> (name=web)`), or with
//! `--format json` one object per line with Docker's keys.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use mesh_control::cli::events::EventsArgs;
use mesh_proto::{ClusterEvent, EventsRequest};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use crate::error::CliError;

pub async fn run(host: &str, args: EventsArgs) -> Result<(), CliError> {
    let mut client = super::connect(host).await?;
    let request = EventsRequest {
        types: args.filter,
        since_ns: args.since,
        until_ns: args.until,
    };
    let json = args.format.unwrap_or(false);
    let mut stream = client.control.events(request).await?.into_inner();
    let mut out = std::io::stdout();
    while let Some(event) = stream.next().await {
        let event = event?;
        let line = if json {
            to_json(&event).to_string()
        } else {
            text(&event)
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

/// Docker's fixed-width RFC 3339 time with nanoseconds, in UTC.
fn time(time_nano: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_nanos(u64::try_from(time_nano).unwrap_or(0));
    humantime::format_rfc3339_nanos(at).to_string()
}

fn sorted(event: &ClusterEvent) -> BTreeMap<&str, &str> {
    event
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

pub fn text(event: &ClusterEvent) -> String {
    let attributes: Vec<String> = sorted(event)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut line = format!(
        "{} {} {} {}",
        time(event.time_nano),
        event.r#type,
        event.action,
        event.actor_id
    );
    if !attributes.is_empty() {
        line.push_str(&format!(" ({})", attributes.join(", ")));
    }
    line
}

pub fn to_json(event: &ClusterEvent) -> Value {
    json!({
        "Type": event.r#type,
        "Action": event.action,
        "Actor": { "ID": event.actor_id, "Attributes": sorted(event) },
        "scope": "swarm",
        "time": event.time_nano.div_euclid(1_000_000_000),
        "timeNano": event.time_nano,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> ClusterEvent {
        ClusterEvent {
            r#type: "service".into(),
            action: "update".into(),
            actor_id: "abc123".into(),
            attributes: [
                ("replicas.new", "3"),
                ("name", "web"),
                ("replicas.old", "2"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            time_nano: 1_796_290_200_123_456_789,
        }
    }

    #[test]
    fn text_is_dockers_line() {
        assert_eq!(
            text(&event()),
            "2026-12-03T09:30:00.123456789Z service update abc123 (name=web, replicas.new=3, replicas.old=2)"
        );
        let bare = ClusterEvent {
            attributes: Default::default(),
            time_nano: 1_796_290_200_000_000_000,
            ..event()
        };
        assert_eq!(
            text(&bare),
            "2026-12-03T09:30:00.000000000Z service update abc123"
        );
    }

    #[test]
    fn json_has_dockers_keys() {
        assert_eq!(
            to_json(&event()),
            json!({
                "Type": "service",
                "Action": "update",
                "Actor": {"ID": "abc123", "Attributes": {"name": "web", "replicas.new": "3", "replicas.old": "2"}},
                "scope": "swarm",
                "time": 1_796_290_200_i64,
                "timeNano": 1_796_290_200_123_456_789_i64,
            })
        );
    }
}
