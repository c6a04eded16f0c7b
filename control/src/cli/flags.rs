//! Parsers for single flag values (`512M`, `0.5`, `1m30s`, `type=bind,source=/a,target=/b`, `K=V`),
//! used by clap as value parsers so that every bad value is refused before any request is made.

use mesh_proto::{
    EndpointMode, Mount, MountType, NodeAvailability, PortConfig, PortProtocol, PublishMode,
    PullPolicy, RestartCondition, TaskState,
};
use std::collections::HashMap;

/// A flag value that does not parse. Each message is one line and names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("invalid duration {0:?}: expected a duration such as 10s, 1m30s or 500ms")]
    Duration(String),
    #[error(
        "invalid size {0:?}: expected a number with an optional unit (b, k, m, g, t), e.g. 512M"
    )]
    Size(String),
    #[error("invalid CPU value {0:?}: expected a non-negative decimal number such as 0.5 or 2")]
    Cpus(String),
    #[error("invalid CPU value {0:?}: at most 9 decimal places are allowed")]
    CpusPrecision(String),
    #[error("invalid replicas value {0:?}: must be a non-negative integer")]
    Replicas(String),
    #[error("invalid value {value:?} for {what}: must be a non-negative integer")]
    Count { what: &'static str, value: String },
    #[error("invalid {what} {value:?}: expected {expected}")]
    Choice {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("invalid {what} {value:?}: the key must not be empty")]
    EmptyKey { what: &'static str, value: String },
    #[error("invalid mount {value:?}: {reason}")]
    Mount { value: String, reason: String },
    #[error(
        "invalid placement preference {0:?}: expected spread=node.labels.KEY (only spread is supported)"
    )]
    Preference(String),
    #[error(
        "invalid name {0:?}: must be valid as a DNS name component (letters, digits, '-' and '_', \
         starting and ending with a letter or digit, at most 63 characters)"
    )]
    Name(String),
    #[error("invalid scale specifier {0:?}: expected SERVICE=REPLICAS")]
    Scale(String),
    #[error("invalid filter {0:?}: expected desired-state=running|shutdown|accepted")]
    Filter(String),
    #[error("invalid arguments {0:?}: unterminated quote or trailing backslash")]
    Words(String),
    #[error("invalid address {0:?}: expected IP, IP:PORT, HOST:PORT or an interface name")]
    Addr(String),
    #[error("invalid publish {value:?}: {reason}")]
    Publish { value: String, reason: String },
    #[error("invalid value {value:?} for {what}: must be a number between 0 and 1")]
    Ratio { what: &'static str, value: String },
}

/// A Go-style duration (`10s`, `1m30s`, `500ms`, `0`) in nanoseconds.
pub fn parse_duration_ns(value: &str) -> Result<i64, FlagError> {
    let err = || FlagError::Duration(value.to_string());
    let duration = humantime::parse_duration(value.trim()).map_err(|_| err())?;
    i64::try_from(duration.as_nanos()).map_err(|_| err())
}

/// A memory size as Docker's `RAMInBytes` reads it: binary units, an optional `i`/`b` suffix.
pub fn parse_bytes(value: &str) -> Result<i64, FlagError> {
    let err = || FlagError::Size(value.to_string());
    let lower = value.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(err()),
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(err());
    }
    let amount: f64 = number.parse().map_err(|_| err())?;
    let bytes = amount * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as i64)
}

/// A CPU count (`0.5`, `2`) in nano CPUs, exactly, as Docker's `NanoCPUs` does.
pub fn parse_nano_cpus(value: &str) -> Result<i64, FlagError> {
    let err = || FlagError::Cpus(value.to_string());
    let (whole, fraction) = value.trim().split_once('.').unwrap_or((value.trim(), ""));
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return Err(err());
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 9 {
        return Err(FlagError::CpusPrecision(value.to_string()));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| err())?
    };
    let frac_nanos: i64 = format!("{fraction:0<9}").parse().map_err(|_| err())?;
    whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_nanos))
        .ok_or_else(err)
}

/// The `--replicas` value.
pub fn parse_replicas(value: &str) -> Result<u64, FlagError> {
    value
        .trim()
        .parse()
        .map_err(|_| FlagError::Replicas(value.to_string()))
}

/// A count such as `--restart-max-attempts` or `--replicas-max-per-node`.
pub fn parse_count(what: &'static str, value: &str) -> Result<u64, FlagError> {
    value.trim().parse().map_err(|_| FlagError::Count {
        what,
        value: value.to_string(),
    })
}

pub(crate) fn choice<T: Copy>(
    what: &'static str,
    expected: &'static str,
    table: &[(&str, T)],
    value: &str,
) -> Result<T, FlagError> {
    table
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value.trim()))
        .map(|(_, v)| *v)
        .ok_or_else(|| FlagError::Choice {
            what,
            value: value.to_string(),
            expected,
        })
}

/// `--restart-condition none|on-failure|any`.
pub fn parse_restart_condition(value: &str) -> Result<RestartCondition, FlagError> {
    let table = [
        ("none", RestartCondition::None),
        ("on-failure", RestartCondition::OnFailure),
        ("any", RestartCondition::Any),
    ];
    choice(
        "restart condition",
        "none, on-failure or any",
        &table,
        value,
    )
}

/// `--availability active|pause|drain`.
pub fn parse_availability(value: &str) -> Result<NodeAvailability, FlagError> {
    let table = [
        ("active", NodeAvailability::Active),
        ("pause", NodeAvailability::Pause),
        ("drain", NodeAvailability::Drain),
    ];
    choice("availability", "active, pause or drain", &table, value)
}

/// `--pull missing|always|never`.
pub fn parse_pull(value: &str) -> Result<PullPolicy, FlagError> {
    let table = [
        ("missing", PullPolicy::Missing),
        ("always", PullPolicy::Always),
        ("never", PullPolicy::Never),
    ];
    choice("pull policy", "missing, always or never", &table, value)
}

/// Whether `--mode` asks for a global service (`replicated` or `global`).
pub fn parse_mode_global(value: &str) -> Result<bool, FlagError> {
    let table = [("replicated", false), ("global", true)];
    choice("mode", "replicated or global", &table, value)
}

/// `-f desired-state=running|shutdown|accepted` for `service ps` and `node ps`.
pub fn parse_ps_filter(value: &str) -> Result<TaskState, FlagError> {
    let (key, state) = value
        .split_once('=')
        .ok_or_else(|| FlagError::Filter(value.to_string()))?;
    if key.trim() != "desired-state" {
        return Err(FlagError::Filter(value.to_string()));
    }
    let table = [
        ("running", TaskState::Running),
        ("shutdown", TaskState::Shutdown),
        ("accepted", TaskState::Accepted),
    ];
    choice(
        "desired state",
        "running, shutdown or accepted",
        &table,
        state,
    )
}

/// A label `K=V` (or `K`, with an empty value).
pub fn parse_label(value: &str) -> Result<(String, String), FlagError> {
    let (key, val) = value.split_once('=').unwrap_or((value, ""));
    if key.trim().is_empty() {
        return Err(FlagError::EmptyKey {
            what: "label",
            value: value.to_string(),
        });
    }
    Ok((key.to_string(), val.to_string()))
}

/// An environment variable `K=V`; a bare `K` takes its value from this process's environment,
/// as `docker` does, and stays bare when unset.
pub fn parse_env(value: &str) -> Result<String, FlagError> {
    match value.split_once('=') {
        Some(("", _)) => Err(FlagError::EmptyKey {
            what: "environment variable",
            value: value.to_string(),
        }),
        Some(_) => Ok(value.to_string()),
        None if value.trim().is_empty() => Err(FlagError::EmptyKey {
            what: "environment variable",
            value: value.to_string(),
        }),
        None => Ok(std::env::var(value)
            .map(|v| format!("{value}={v}"))
            .unwrap_or_else(|_| value.to_string())),
    }
}

/// `--placement-pref spread=node.labels.KEY`, giving the spread descriptor.
pub fn parse_placement_pref(value: &str) -> Result<String, FlagError> {
    match value.split_once('=') {
        Some((strategy, descriptor))
            if strategy.trim().eq_ignore_ascii_case("spread") && !descriptor.trim().is_empty() =>
        {
            Ok(descriptor.trim().to_string())
        }
        _ => Err(FlagError::Preference(value.to_string())),
    }
}

/// A service name: a DNS label, as SwarmKit requires (`^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`).
pub fn parse_name(value: &str) -> Result<String, FlagError> {
    let bytes = value.as_bytes();
    let valid = !value.is_empty()
        && value.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if valid {
        Ok(value.to_string())
    } else {
        Err(FlagError::Name(value.to_string()))
    }
}

/// `SERVICE=REPLICAS` for `service scale`.
pub fn parse_scale(value: &str) -> Result<(String, u64), FlagError> {
    let (service, replicas) = value
        .split_once('=')
        .ok_or_else(|| FlagError::Scale(value.to_string()))?;
    if service.is_empty() {
        return Err(FlagError::Scale(value.to_string()));
    }
    Ok((service.to_string(), parse_replicas(replicas)?))
}

/// An address flag (`--advertise-addr`, `--listen-addr`): refuses only what cannot be one.
pub fn parse_addr(value: &str) -> Result<String, FlagError> {
    let ok = !value.is_empty()
        && !value.contains(char::is_whitespace)
        && !value.contains("://")
        && value
            .rsplit_once(':')
            .is_none_or(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok || value.starts_with('[') && value.parse::<std::net::SocketAddr>().is_ok() {
        Ok(value.to_string())
    } else {
        Err(FlagError::Addr(value.to_string()))
    }
}

/// Arguments split as a POSIX shell would (quotes and backslashes), for `--args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words(pub Vec<String>);

/// Splits `value` into words; an unterminated quote or trailing backslash is refused.
pub fn parse_shell_words(value: &str) -> Result<Words, FlagError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\\' => {
                let next = chars
                    .next()
                    .ok_or_else(|| FlagError::Words(value.to_string()))?;
                word.get_or_insert_with(String::new).push(next);
            }
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err(FlagError::Words(value.to_string())),
                    }
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => current.push(c),
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err(FlagError::Words(value.to_string())),
                        },
                        Some(c) => current.push(c),
                        None => return Err(FlagError::Words(value.to_string())),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(Words(words))
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "" | "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,volume-label=K=V][,volume-driver=D]
/// [,volume-opt=K=V][,tmpfs-size=S][,tmpfs-mode=M]` as Docker reads it.
pub fn parse_mount(value: &str) -> Result<Mount, FlagError> {
    let fail = |reason: String| FlagError::Mount {
        value: value.to_string(),
        reason,
    };
    let mut mount = Mount {
        r#type: MountType::Volume as i32,
        ..Mount::default()
    };
    let mut labels = HashMap::new();
    let mut driver_opts = HashMap::new();
    for field in value.split(',').filter(|f| !f.is_empty()) {
        let (key, val) = field.split_once('=').unwrap_or((field, ""));
        let bad_bool = || {
            fail(format!(
                "invalid value {val:?} for {key}: expected true or false"
            ))
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "type" => {
                let table = [
                    ("bind", MountType::Bind),
                    ("volume", MountType::Volume),
                    ("tmpfs", MountType::Tmpfs),
                ];
                let kind = choice("mount type", "bind, volume or tmpfs", &table, val)
                    .map_err(|e| fail(e.to_string()))?;
                mount.r#type = kind as i32;
            }
            "source" | "src" => mount.source = val.to_string(),
            "target" | "destination" | "dst" => mount.target = val.to_string(),
            "readonly" | "ro" => mount.read_only = parse_bool(val).ok_or_else(bad_bool)?,
            "volume-nocopy" => mount.volume_no_copy = parse_bool(val).ok_or_else(bad_bool)?,
            "volume-label" => {
                let (k, v) = parse_label(val).map_err(|e| fail(e.to_string()))?;
                labels.insert(k, v);
            }
            "volume-driver" => {
                if val.trim().is_empty() {
                    return Err(fail("volume-driver must not be empty".to_string()));
                }
                mount.volume_driver = val.to_string();
            }
            "volume-opt" => {
                let (k, v) = val.split_once('=').ok_or_else(|| {
                    fail(format!(
                        "invalid volume-opt {val:?}: expected volume-opt=KEY=VALUE"
                    ))
                })?;
                if k.trim().is_empty() {
                    return Err(fail(format!(
                        "invalid volume-opt {val:?}: the key must not be empty"
                    )));
                }
                driver_opts.insert(k.to_string(), v.to_string());
            }
            "tmpfs-size" => {
                mount.tmpfs_size_bytes = parse_bytes(val).map_err(|e| fail(e.to_string()))?;
            }
            "tmpfs-mode" => mount.tmpfs_mode = parse_file_mode(val).map_err(fail)?,
            other => return Err(fail(format!("unknown field {other:?}"))),
        }
    }
    mount.volume_labels = labels;
    mount.volume_driver_opts = driver_opts;
    let kind = MountType::try_from(mount.r#type).unwrap_or(MountType::Volume);
    if mount.target.is_empty() {
        return Err(fail("target is required".to_string()));
    }
    if kind == MountType::Bind && mount.source.is_empty() {
        return Err(fail("source is required for a bind mount".to_string()));
    }
    if kind == MountType::Tmpfs && !mount.source.is_empty() {
        return Err(fail("a tmpfs mount takes no source".to_string()));
    }
    let volume_options = !mount.volume_labels.is_empty()
        || mount.volume_no_copy
        || !mount.volume_driver.is_empty()
        || !mount.volume_driver_opts.is_empty();
    if kind != MountType::Volume && volume_options {
        return Err(fail(
            "volume options are only valid with type=volume".to_string(),
        ));
    }
    if kind != MountType::Tmpfs && mount.tmpfs_size_bytes != 0 {
        return Err(fail("tmpfs-size is only valid with type=tmpfs".to_string()));
    }
    if kind != MountType::Tmpfs && mount.tmpfs_mode != 0 {
        return Err(fail("tmpfs-mode is only valid with type=tmpfs".to_string()));
    }
    Ok(mount)
}

/// A file mode in octal (`1777`, `0700`, `0o755`), at most `0o7777`.
pub fn parse_file_mode(value: &str) -> Result<u32, String> {
    let digits = value.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "invalid file mode {value:?}: expected an octal mode such as 0755 or 1777"
        )),
    }
}

#[cfg(test)]
mod tests;

/// `--endpoint-mode vip|dnsrr`.
pub fn parse_endpoint_mode(value: &str) -> Result<EndpointMode, FlagError> {
    let table = [("vip", EndpointMode::Vip), ("dnsrr", EndpointMode::Dnsrr)];
    choice("endpoint mode", "vip or dnsrr", &table, value)
}

/// A port number 1–65535.
fn parse_port(value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(port) if (1..=65535).contains(&port) => Ok(port),
        _ => Err(format!("invalid port {value:?}: expected 1-65535")),
    }
}

/// `--publish` as Docker reads it: `published=P,target=T[,protocol=tcp|udp][,mode=ingress|host]`,
/// or `[P:]T[/tcp|/udp]`; without a published port one is picked from 30000–32767.
pub fn parse_publish(value: &str) -> Result<PortConfig, FlagError> {
    let fail = |reason: String| FlagError::Publish {
        value: value.to_string(),
        reason,
    };
    let mut port = PortConfig::default();
    if value.contains('=') {
        for field in value.split(',').filter(|f| !f.is_empty()) {
            let (key, val) = field.split_once('=').unwrap_or((field, ""));
            match key.trim().to_ascii_lowercase().as_str() {
                "published" => port.published_port = parse_port(val).map_err(fail)?,
                "target" => port.target_port = parse_port(val).map_err(fail)?,
                "protocol" => {
                    let table = [("tcp", PortProtocol::Tcp), ("udp", PortProtocol::Udp)];
                    let protocol = choice("protocol", "tcp or udp", &table, val)
                        .map_err(|e| fail(e.to_string()))?;
                    port.protocol = protocol as i32;
                }
                "mode" => {
                    let table = [
                        ("ingress", PublishMode::Ingress),
                        ("host", PublishMode::Host),
                    ];
                    let mode = choice("publish mode", "ingress or host", &table, val)
                        .map_err(|e| fail(e.to_string()))?;
                    port.publish_mode = mode as i32;
                }
                other => return Err(fail(format!("unknown field {other:?}"))),
            }
        }
    } else {
        let (ports, protocol) = value.split_once('/').unwrap_or((value, "tcp"));
        let table = [("tcp", PortProtocol::Tcp), ("udp", PortProtocol::Udp)];
        let protocol =
            choice("protocol", "tcp or udp", &table, protocol).map_err(|e| fail(e.to_string()))?;
        port.protocol = protocol as i32;
        match ports.split_once(':') {
            Some((published, target)) => {
                port.published_port = parse_port(published).map_err(fail)?;
                port.target_port = parse_port(target).map_err(fail)?;
            }
            None => port.target_port = parse_port(ports).map_err(fail)?,
        }
    }
    if port.target_port == 0 {
        return Err(fail("target is required".to_string()));
    }
    Ok(port)
}
