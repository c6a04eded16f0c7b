//! Which keys each version of the 3.x format allows: a key newer than the file's `version` is
//! refused, as docker's per-version schemas refuse it ("Additional property … is not allowed").
//! The table comes from docker/cli's `config_schema_v3.*.json`.

use super::interpolate::key_text;
use serde_yaml::Value;

/// Key patterns (`*` a service, network, volume, secret or config name; `[]{}` a list item in
/// long syntax) and the minor version that introduced them.
const INTRODUCED: &[(&str, u8)] = &[
    ("secrets", 1),
    ("services.*.secrets", 1),
    ("networks.*.attachable", 2),
    ("services.*.deploy.endpoint_mode", 2),
    ("services.*.ports[]{}", 2),
    ("services.*.volumes[]{}", 2),
    ("configs", 3),
    ("services.*.configs", 3),
    ("services.*.credential_spec", 3),
    ("services.*.deploy.placement.preferences", 3),
    ("services.*.deploy.update_config.order", 4),
    ("services.*.healthcheck.start_period", 4),
    ("volumes.*.name", 4),
    ("x-*", 4),
    ("configs.*.name", 5),
    ("networks.*.name", 5),
    ("secrets.*.name", 5),
    (
        "services.*.deploy.resources.reservations.generic_resources",
        5,
    ),
    ("services.*.isolation", 5),
    ("services.*.volumes[].tmpfs", 6),
    ("configs.*.x-*", 7),
    ("networks.*.x-*", 7),
    ("secrets.*.x-*", 7),
    ("services.*.x-*", 7),
    ("volumes.*.x-*", 7),
    ("services.*.deploy.rollback_config", 7),
    ("services.*.init", 7),
    ("configs.*.template_driver", 8),
    ("secrets.*.driver", 8),
    ("secrets.*.driver_opts", 8),
    ("secrets.*.template_driver", 8),
    ("services.*.deploy.placement.max_replicas_per_node", 8),
    ("services.*.cgroupns_mode", 9),
    ("services.*.deploy.resources.limits.pids", 9),
];

/// The minor version of a `version` the loader accepted (`3` is 3.0).
pub fn minor(version: &str) -> u8 {
    version
        .strip_prefix("3.")
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// The first key of `root` newer than minor version `minor`: its path and a one-line reason.
pub fn check(root: &Value, minor: u8) -> Option<(String, String)> {
    let mut found = None;
    walk(root, &mut Vec::new(), &mut Vec::new(), minor, &mut found);
    found
}

fn walk(
    value: &Value,
    path: &mut Vec<String>,
    pattern: &mut Vec<String>,
    minor: u8,
    found: &mut Option<(String, String)>,
) {
    if found.is_some() {
        return;
    }
    match value {
        Value::Mapping(map) => {
            for (key, item) in map {
                let key = key_text(key);
                let depth = pattern.len();
                let named = depth == 1
                    && ["services", "networks", "volumes", "secrets", "configs"]
                        .contains(&pattern[0].as_str());
                let segment = if key.starts_with("x-") {
                    "x-*".to_string()
                } else if named {
                    "*".to_string()
                } else {
                    key.clone()
                };
                path.push(key);
                pattern.push(segment);
                let here = pattern.join(".");
                if let Some((_, since)) = INTRODUCED.iter().find(|(p, _)| *p == here)
                    && *since > minor
                    && found.is_none()
                {
                    *found = Some((
                        path.join("."),
                        format!(
                            "needs compose file version 3.{since} or later (this file is 3.{minor})"
                        ),
                    ));
                }
                // Extensions and free-form maps are not looked into.
                if !here.ends_with("x-*") {
                    walk(item, path, pattern, minor, found);
                }
                path.pop();
                pattern.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let (Some(last), Some(last_pattern)) = (path.pop(), pattern.pop()) else {
                    return;
                };
                path.push(format!("{last}[{i}]"));
                let long = matches!(item, Value::Mapping(_));
                pattern.push(format!("{last_pattern}[]{}", if long { "{}" } else { "" }));
                let here = pattern.join(".");
                if let Some((_, since)) = INTRODUCED.iter().find(|(p, _)| *p == here)
                    && *since > minor
                    && found.is_none()
                {
                    *found = Some((
                        path.join("."),
                        format!(
                            "the long syntax needs compose file version 3.{since} or later (this file is 3.{minor})"
                        ),
                    ));
                }
                // Inside an item, keys follow `x[]`.
                pattern.pop();
                pattern.push(format!("{last_pattern}[]"));
                walk(item, path, pattern, minor, found);
                path.pop();
                pattern.pop();
                path.push(last);
                pattern.push(last_pattern);
            }
        }
        _ => {}
    }
}
