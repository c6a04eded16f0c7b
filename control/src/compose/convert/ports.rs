//! `ports:` in short syntax (`[IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`, ranges included)
//! and long syntax (`target`, `published`, `protocol`, `mode`).

use crate::compose::ComposeError;
use crate::compose::model::LongPort;
use crate::compose::syntax::ShortOrLong;
use mesh_proto::{PortConfig, PortProtocol, PublishMode};

/// The port configs of one `ports:` item at `path`.
pub(super) fn convert(
    path: &str,
    port: &ShortOrLong<LongPort>,
) -> Result<Vec<PortConfig>, ComposeError> {
    let fail = |m: String| ComposeError::invalid(path, m);
    match port {
        ShortOrLong::Long(long) => {
            let mut config = PortConfig {
                target_port: check(long.target).map_err(fail)?,
                published_port: long
                    .published
                    .map(check)
                    .transpose()
                    .map_err(fail)?
                    .unwrap_or(0),
                ..PortConfig::default()
            };
            config.protocol =
                protocol(long.protocol.as_deref().unwrap_or("tcp")).map_err(fail)? as i32;
            config.publish_mode = match long.mode.as_deref().unwrap_or("ingress") {
                "ingress" => PublishMode::Ingress,
                "host" => PublishMode::Host,
                other => {
                    return Err(fail(format!(
                        "invalid mode {other:?}: expected ingress or host"
                    )));
                }
            } as i32;
            Ok(vec![config])
        }
        ShortOrLong::Short(short) => short_syntax(short).map_err(fail),
    }
}

fn check(port: u32) -> Result<u32, String> {
    if (1..=65535).contains(&port) {
        Ok(port)
    } else {
        Err(format!("invalid port {port}: expected 1-65535"))
    }
}

fn protocol(value: &str) -> Result<PortProtocol, String> {
    match value.to_ascii_lowercase().as_str() {
        "tcp" => Ok(PortProtocol::Tcp),
        "udp" => Ok(PortProtocol::Udp),
        other => Err(format!("invalid protocol {other:?}: expected tcp or udp")),
    }
}

/// `80`, `8080-8081`, `3000:80`, `9090-9091:8080-8081`, `127.0.0.1:8001:8001/udp`.
fn short_syntax(spec: &str) -> Result<Vec<PortConfig>, String> {
    let (ports, proto) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
    let proto = protocol(proto)?;
    let parts: Vec<&str> = ports.split(':').collect();
    // The host IP Swarm ignores (ports are published on every node or on the task's node).
    let (published, target) = match parts.as_slice() {
        [target] => ("", *target),
        [published, target] => (*published, *target),
        [_ip, published, target] => (*published, *target),
        _ => {
            return Err(format!(
                "invalid port {spec:?}: expected [PUBLISHED:]TARGET[/PROTOCOL]"
            ));
        }
    };
    let targets = range(target).map_err(|e| format!("invalid port {spec:?}: {e}"))?;
    let publisheds = if published.is_empty() {
        None
    } else {
        Some(range(published).map_err(|e| format!("invalid port {spec:?}: {e}"))?)
    };
    let count = targets.1 - targets.0 + 1;
    if let Some(p) = publisheds
        && p.1 - p.0 + 1 != count
    {
        return Err(format!(
            "invalid port {spec:?}: the published and target ranges differ in length"
        ));
    }
    Ok((0..count)
        .map(|i| PortConfig {
            protocol: proto as i32,
            target_port: targets.0 + i,
            published_port: publisheds.map_or(0, |p| p.0 + i),
            publish_mode: PublishMode::Ingress as i32,
            name: String::new(),
        })
        .collect())
}

fn range(value: &str) -> Result<(u32, u32), String> {
    let one = |v: &str| match v.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p),
        _ => Err(format!("{v:?} is not a port (1-65535)")),
    };
    match value.split_once('-') {
        Some((start, end)) => {
            let (start, end) = (one(start)?, one(end)?);
            if end < start {
                return Err(format!("range {value:?} ends before it starts"));
            }
            Ok((start, end))
        }
        None => one(value).map(|p| (p, p)),
    }
}
