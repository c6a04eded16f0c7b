//! Top-level networks, secrets and configs: their names in the cluster and their specs.

use super::{Context, FilePlan, FileSource, NetworkPlan, labels, scoped};
use crate::compose::ComposeError;
use crate::compose::model::{Config, FileObject};
use crate::compose::syntax::External;
use mesh_proto::{Annotations, IpamConfig, NetworkSpec};
use std::collections::BTreeMap;

pub(super) enum Net {
    Stack(NetworkPlan),
    External(String),
}

/// The name in the cluster of an object declared as `key`: external objects keep their name
/// (or `external.name`), others are scoped to the stack unless `name:` is set.
pub(super) fn cluster_name(
    stack: &str,
    key: &str,
    name: Option<&String>,
    external: Option<&External>,
) -> String {
    match external.filter(|e| e.external) {
        Some(e) => e
            .name
            .clone()
            .or_else(|| name.cloned())
            .unwrap_or_else(|| key.to_string()),
        None => name.cloned().unwrap_or_else(|| scoped(stack, key)),
    }
}

/// The network a service's `networks:` entry `key` refers to.
pub(super) fn network(key: &str, config: &Config, stack: &str) -> Result<Net, ComposeError> {
    let Some(network) = config.networks.get(key) else {
        // `default` need not be declared: it is the stack's own overlay network.
        return Ok(Net::Stack(NetworkPlan {
            name: scoped(stack, key),
            spec: NetworkSpec {
                annotations: Some(Annotations {
                    name: scoped(stack, key),
                    labels: labels(stack, None),
                }),
                driver: "overlay".to_string(),
                ..NetworkSpec::default()
            },
        }));
    };
    let path = format!("networks.{key}");
    let name = cluster_name(stack, key, network.name.as_ref(), network.external.as_ref());
    if network.external.as_ref().is_some_and(|e| e.external) {
        let extra = network.driver.is_some()
            || !network.driver_opts.is_empty()
            || network.ipam.is_some()
            || network.internal.is_some()
            || network.attachable.is_some()
            || network.labels.is_some();
        if extra {
            return Err(ComposeError::invalid(
                path,
                "an external network takes no other settings than its name",
            ));
        }
        return Ok(Net::External(name));
    }
    let driver = network
        .driver
        .clone()
        .unwrap_or_else(|| "overlay".to_string());
    if driver != "overlay" {
        return Err(ComposeError::invalid(
            format!("{path}.driver"),
            format!(
                "unsupported network driver {driver:?}: a stack's networks are overlay networks"
            ),
        ));
    }
    let mut ipam = Vec::new();
    if let Some(i) = &network.ipam {
        if i.driver.as_deref().is_some_and(|d| d != "default") {
            return Err(ComposeError::invalid(
                format!("{path}.ipam.driver"),
                "only the default IPAM driver is supported",
            ));
        }
        for (n, pool) in i.config.iter().enumerate() {
            let subnet: ipnet::Ipv4Net = pool.subnet.parse().map_err(|_| {
                ComposeError::invalid(
                    format!("{path}.ipam.config[{n}].subnet"),
                    format!(
                        "invalid subnet {:?}: expected an IPv4 CIDR such as 10.9.0.0/24",
                        pool.subnet
                    ),
                )
            })?;
            ipam.push(IpamConfig {
                subnet: subnet.to_string(),
                ..IpamConfig::default()
            });
        }
    }
    let spec = NetworkSpec {
        annotations: Some(Annotations {
            name: name.clone(),
            labels: labels(stack, network.labels.as_ref()),
        }),
        driver,
        ipam,
        attachable: network.attachable.unwrap_or(false),
        driver_opts: network
            .driver_opts
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect(),
        ingress: false,
        internal: network.internal.unwrap_or(false),
    };
    crate::limits::network(&spec).map_err(|e| ComposeError::invalid(&path, e.to_string()))?;
    Ok(Net::Stack(NetworkPlan { name, spec }))
}

/// The stack's secrets (or configs): `section` is `secrets` or `configs`.
pub(super) fn files(
    section: &str,
    objects: &BTreeMap<String, FileObject>,
    context: &Context<'_>,
) -> Result<Vec<FilePlan>, ComposeError> {
    let mut out = Vec::new();
    for (key, object) in objects {
        let path = format!("{section}.{key}");
        if object.driver.is_some() || !object.driver_opts.is_empty() {
            return Err(ComposeError::invalid(
                format!("{path}.driver"),
                "secret drivers are not supported by mesh",
            ));
        }
        if object.template_driver.is_some() {
            return Err(ComposeError::invalid(
                format!("{path}.template_driver"),
                "template drivers are not supported by mesh",
            ));
        }
        let external = object.external.as_ref().is_some_and(|e| e.external);
        let name = cluster_name(
            context.stack,
            key,
            object.name.as_ref(),
            object.external.as_ref(),
        );
        let source = match (&object.file, external) {
            (Some(_), true) => {
                return Err(ComposeError::invalid(
                    path,
                    "an external object takes no file",
                ));
            }
            (Some(file), false) => FileSource::File(super::volumes::resolve_path(file, context)),
            (None, true) => FileSource::External,
            (None, false) => {
                return Err(ComposeError::invalid(
                    path,
                    "needs a file or external: true",
                ));
            }
        };
        let labels = if external {
            Default::default()
        } else {
            labels(context.stack, object.labels.as_ref())
        };
        out.push(FilePlan {
            name,
            labels,
            source,
        });
    }
    Ok(out)
}
