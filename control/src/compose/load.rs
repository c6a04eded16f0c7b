//! Reading one compose file: YAML, its version, variable substitution, the keys Swarm ignores
//! (taken out, with docker's warnings) or refuses, and then the typed model, whose errors name
//! the key path. Pure: the caller reads the file.

use super::ComposeError;
use super::interpolate::{interpolate, key_text};
use super::model::Config;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeSet, HashMap};

/// The versions read: 3.0 to 3.9 (`3` is 3.0).
const VERSIONS: &[&str] = &[
    "3", "3.0", "3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "3.7", "3.8", "3.9",
];

/// Service keys Swarm does not support: ignored, named in one warning (docker's
/// `UnsupportedProperties`, and `depends_on`, which a stack ignores).
const UNSUPPORTED: &[&str] = &[
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "depends_on",
    "devices",
    "domainname",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "restart",
    "security_opt",
    "shm_size",
    "userns_mode",
];

/// Service keys removed from the v3 format whose use does not change the application.
const DEPRECATED: &[(&str, &str)] = &[
    (
        "container_name",
        "Setting the container name is not supported.",
    ),
    (
        "expose",
        "Exposing ports is unnecessary - services on the same network can access each other's containers on any port.",
    ),
];

/// Service keys Swarm refuses, with its advice.
const FORBIDDEN: &[(&str, &str)] = &[
    ("extends", "Support for `extends` is not implemented yet."),
    (
        "volume_driver",
        "Instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there.",
    ),
    (
        "volumes_from",
        "To share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it using the service-level `volumes` option.",
    ),
    ("cpu_quota", "Set resource limits using deploy.resources"),
    ("cpu_shares", "Set resource limits using deploy.resources"),
    ("cpuset", "Set resource limits using deploy.resources"),
    ("mem_limit", "Set resource limits using deploy.resources"),
    (
        "memswap_limit",
        "Set resource limits using deploy.resources",
    ),
];

/// Service keys Swarm supports but mesh's container spec has no field for yet: ignored, named
/// in one warning of their own, so nothing is dropped silently.
const NOT_CARRIED: &[&str] = &[
    "cap_add",
    "cap_drop",
    "credential_spec",
    "dns",
    "dns_search",
    "extra_hosts",
    "init",
    "isolation",
    "logging",
    "read_only",
    "stdin_open",
    "stop_signal",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
];

/// What reading one file gives: the model and the warnings to print.
#[derive(Debug, Default)]
pub struct Loaded {
    pub config: Config,
    pub unsupported: BTreeSet<String>,
    pub deprecated: BTreeSet<(String, String)>,
    pub not_carried: BTreeSet<String>,
}

/// Reads the compose file `file` (its name, for errors) from `text`.
pub fn load(file: &str, text: &str, env: &HashMap<String, String>) -> Result<Loaded, ComposeError> {
    let mut value: Value = serde_yaml::from_str(text).map_err(|e| syntax(file, &e))?;
    let key = |path: &str, message: String| ComposeError::Key {
        file: file.to_string(),
        path: path.to_string(),
        message,
    };
    let root = match &mut value {
        Value::Mapping(root) => root,
        Value::Null => return Err(key("(root)", "the file is empty".into())),
        _ => return Err(key("(root)", "the top level must be a mapping".into())),
    };
    let version = check_version(root.shift_remove("version")).map_err(|m| key("version", m))?;
    if let Some(minor) = version.as_deref().map(super::versions::minor)
        && let Some((path, message)) = super::versions::check(&value, minor)
    {
        return Err(key(&path, message));
    }
    let Value::Mapping(root) = &mut value else {
        return Err(key("(root)", "the top level must be a mapping".into()));
    };
    strip_extensions(root);
    let mut path = Vec::new();
    interpolate(&mut value, env, &mut path).map_err(|e| ComposeError::Interpolation {
        file: file.to_string(),
        path: e.path,
        message: e.message,
    })?;
    let mut loaded = Loaded::default();
    if let Value::Mapping(root) = &mut value {
        for section in ["networks", "volumes"] {
            if let Some(Value::Mapping(entries)) = root.get_mut(section) {
                for (_, entry) in entries.iter_mut() {
                    if entry.is_null() {
                        *entry = Value::Mapping(Mapping::new());
                    }
                }
            }
        }
        if let Some(Value::Mapping(services)) = root.get_mut("services") {
            for (name, service) in services.iter_mut() {
                let Value::Mapping(service) = service else {
                    continue;
                };
                let name = key_text(name);
                sort_out(&name, service, &mut loaded).map_err(|(k, m)| key(&k, m))?;
            }
        }
    }
    loaded.config = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        key(&path, describe(e.into_inner().to_string()))
    })?;
    Ok(loaded)
}

fn syntax(file: &str, e: &serde_yaml::Error) -> ComposeError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let message = e.to_string();
    // serde_yaml appends " at line L column C"; the location leads instead.
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_string();
    ComposeError::Syntax {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

/// The file's version, if it says one; without, the newest (3.9) rules apply.
fn check_version(version: Option<Value>) -> Result<Option<String>, String> {
    let text = match version {
        None => return Ok(None),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("expected a string, found {}", kind(&other))),
    };
    if VERSIONS.contains(&text.as_str()) {
        Ok(Some(text))
    } else {
        Err(format!(
            "unsupported compose file version {text:?}: mesh reads versions 3.0 to 3.9"
        ))
    }
}

/// Drops `x-` extension keys at the levels the format allows them (3.4).
fn strip_extensions(root: &mut Mapping) {
    let is_extension = |k: &Value| k.as_str().is_some_and(|k| k.starts_with("x-"));
    root.retain(|k, _| !is_extension(k));
    for section in ["services", "networks", "volumes", "secrets", "configs"] {
        if let Some(Value::Mapping(entries)) = root.get_mut(section) {
            for (_, entry) in entries.iter_mut() {
                if let Value::Mapping(entry) = entry {
                    entry.retain(|k, _| !is_extension(k));
                }
            }
        }
    }
}

/// Takes the keys Swarm ignores out of one service, noting them; refuses the forbidden ones.
fn sort_out(
    name: &str,
    service: &mut Mapping,
    loaded: &mut Loaded,
) -> Result<(), (String, String)> {
    for (key, advice) in FORBIDDEN {
        if service.contains_key(*key) {
            return Err((
                format!("services.{name}.{key}"),
                format!("not supported by docker stack deploy: {advice}"),
            ));
        }
    }
    for key in UNSUPPORTED {
        // `restart` stays: it is read when `deploy.restart_policy` is absent.
        let present = if *key == "restart" {
            service.contains_key(*key)
        } else {
            service.shift_remove(*key).is_some()
        };
        if present {
            loaded.unsupported.insert((*key).to_string());
        }
    }
    for (key, message) in DEPRECATED {
        if service.shift_remove(*key).is_some() {
            loaded
                .deprecated
                .insert(((*key).to_string(), (*message).to_string()));
        }
    }
    for key in NOT_CARRIED {
        if service.shift_remove(*key).is_some() {
            loaded.not_carried.insert((*key).to_string());
        }
    }
    Ok(())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// serde's message in the compose file's words: `expected an integer, found string "x"`,
/// `unknown key`.
pub fn describe(message: String) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((found, expected)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once(", expected "))
        {
            return format!("expected {}, found {found}", expected_words(expected));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return format!("unknown key {field:?}");
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return format!("missing required key {field:?}");
    }
    message
}

fn expected_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" | "usize" => {
            "an integer".to_string()
        }
        "f32" | "f64" => "a number".to_string(),
        "a sequence" => "a list".to_string(),
        e if e.starts_with("struct ") || e == "a map" => "a mapping".to_string(),
        e => e.to_string(),
    }
}
