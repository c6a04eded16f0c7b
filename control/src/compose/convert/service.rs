//! One compose service as a `ServiceSpec`, the way docker/cli's `convert.Service` builds it.

use super::deploy::{mode, placement, resources, restart_policy, update_config};
use super::{Context, ServicePlan, labels, ports, scoped, volumes};
use crate::compose::model::{Config, FileReference, Healthcheck, Service};
use crate::compose::syntax::{ShortOrLong, StringOrList};
use crate::compose::{ComposeError, IMAGE_LABEL};
use crate::files::{DEFAULT_MODE, FileKind, with_defaults};
use mesh_proto::{
    Annotations, ConfigReference, ContainerSpec, EndpointMode, EndpointSpec, FileTarget,
    HealthConfig, NetworkAttachmentConfig, SecretReference, ServiceSpec, TaskSpec,
};
use std::collections::BTreeMap;

/// The networks a service is on (`default` when it lists none).
pub(super) fn network_names(service: &Service) -> Vec<String> {
    match &service.networks {
        Some(n) if !n.0.is_empty() => n.0.keys().cloned().collect(),
        _ => vec!["default".to_string()],
    }
}

pub(super) fn convert(
    name: &str,
    service: &Service,
    config: &Config,
    context: &Context<'_>,
) -> Result<ServicePlan, ComposeError> {
    let path = format!("services.{name}");
    let at = |key: &str| format!("{path}.{key}");
    let full_name = scoped(context.stack, name);
    crate::cli::flags::parse_name(&full_name)
        .map_err(|e| ComposeError::invalid(&path, e.to_string()))?;
    let image = service.image.clone().ok_or_else(|| {
        ComposeError::invalid(
            &path,
            format!("invalid image reference for service {name}: no image specified"),
        )
    })?;
    crate::cli::spec::validate_image(&image)
        .map_err(|e| ComposeError::invalid(at("image"), e.to_string()))?;
    let deploy = service.deploy.clone().unwrap_or_default();

    let mut container_labels = labels(context.stack, service.labels.as_ref());
    container_labels.retain(|k, _| !k.is_empty());
    let mut container = ContainerSpec {
        image: image.clone(),
        command: words(&at("entrypoint"), service.entrypoint.as_ref())?,
        args: words(&at("command"), service.command.as_ref())?,
        env: environment(&path, service, context)?,
        dir: service.working_dir.clone().unwrap_or_default(),
        user: service.user.clone().unwrap_or_default(),
        hostname: service.hostname.clone().unwrap_or_default(),
        labels: container_labels,
        stop_grace_period_ns: service.stop_grace_period.map(|d| d.0),
        healthcheck: service
            .healthcheck
            .as_ref()
            .map(|h| healthcheck(&at("healthcheck"), h))
            .transpose()?,
        ..ContainerSpec::default()
    };
    for (i, volume) in service.volumes.iter().enumerate() {
        container.mounts.push(volumes::convert(
            &format!("{path}.volumes[{i}]"),
            volume,
            config,
            context,
        )?);
    }
    container.secrets = file_targets(&path, "secrets", &service.secrets, config, context)?
        .into_iter()
        .map(|(name, file)| SecretReference {
            secret_id: String::new(),
            secret_name: name,
            file: Some(file),
        })
        .collect();
    container.configs = file_targets(&path, "configs", &service.configs, config, context)?
        .into_iter()
        .map(|(name, file)| ConfigReference {
            config_id: String::new(),
            config_name: name,
            file: Some(file),
        })
        .collect();
    crate::files::files(&container).map_err(|e| ComposeError::invalid(&path, e))?;

    let mut networks = Vec::new();
    for network in network_names(service) {
        if network != "default" && !config.networks.contains_key(&network) {
            return Err(ComposeError::invalid(
                at("networks"),
                format!("undefined network {network:?}: declare it under the top-level networks"),
            ));
        }
        let settings = service
            .networks
            .as_ref()
            .and_then(|n| n.0.get(&network))
            .cloned()
            .unwrap_or_default();
        if settings.ipv4_address.is_some() || settings.ipv6_address.is_some() {
            return Err(ComposeError::invalid(
                format!("{path}.networks.{network}"),
                "static addresses (ipv4_address, ipv6_address) are not supported by Swarm",
            ));
        }
        let target = super::objects::cluster_name(
            context.stack,
            &network,
            config.networks.get(&network).and_then(|n| n.name.as_ref()),
            config
                .networks
                .get(&network)
                .and_then(|n| n.external.as_ref()),
        );
        let mut aliases = settings.aliases.clone();
        aliases.push(name.to_string());
        networks.push(NetworkAttachmentConfig { target, aliases });
    }
    networks.sort_by(|a, b| a.target.cmp(&b.target));

    let mut ports = Vec::new();
    for (i, port) in service.ports.iter().enumerate() {
        ports.extend(ports::convert(&format!("{path}.ports[{i}]"), port)?);
    }
    ports.sort_by_key(|p| (p.published_port, p.target_port, p.protocol));

    let task = TaskSpec {
        container: Some(container),
        resources: resources(&at("deploy.resources"), &deploy)?,
        restart: restart_policy(&path, service, &deploy)?,
        placement: placement(&at("deploy.placement"), &deploy)?,
        force_update: 0,
        networks,
    };
    let mut service_labels = labels(context.stack, deploy.labels.as_ref());
    service_labels.insert(IMAGE_LABEL.to_string(), image);
    let endpoint_mode = match deploy.endpoint_mode.as_deref() {
        None | Some("vip") => EndpointMode::Vip,
        Some("dnsrr") => EndpointMode::Dnsrr,
        Some(other) => {
            return Err(ComposeError::invalid(
                at("deploy.endpoint_mode"),
                format!("invalid endpoint mode {other:?}: expected vip or dnsrr"),
            ));
        }
    };
    let spec = ServiceSpec {
        annotations: Some(Annotations {
            name: full_name.clone(),
            labels: service_labels,
        }),
        task: Some(task),
        mode: Some(mode(&at("deploy"), &deploy)?),
        endpoint: (endpoint_mode != EndpointMode::Vip || !ports.is_empty()).then_some(
            EndpointSpec {
                mode: endpoint_mode as i32,
                ports,
            },
        ),
        update_config: deploy
            .update_config
            .as_ref()
            .map(|u| update_config(&at("deploy.update_config"), u, true))
            .transpose()?,
        rollback_config: deploy
            .rollback_config
            .as_ref()
            .map(|u| update_config(&at("deploy.rollback_config"), u, false))
            .transpose()?,
    };
    crate::limits::service_spec(&spec).map_err(|e| ComposeError::invalid(&path, e.to_string()))?;
    crate::api::validate::service_spec(&spec).map_err(|e| ComposeError::invalid(&path, e))?;
    Ok(ServicePlan {
        name: full_name,
        spec,
    })
}

/// `command`/`entrypoint`: a string is split as a shell would, a list is taken as it is.
fn words(path: &str, value: Option<&StringOrList>) -> Result<Vec<String>, ComposeError> {
    match value {
        None => Ok(Vec::new()),
        Some(StringOrList::List(list)) => Ok(list.clone()),
        Some(StringOrList::String(s)) => crate::cli::flags::parse_shell_words(s)
            .map(|w| w.0)
            .map_err(|e| ComposeError::invalid(path, e.to_string())),
    }
}

/// `env_file` lines, then `environment` over them; an entry without a value takes the client's
/// (as docker does), or stays bare. Sorted, as docker sends them.
fn environment(
    path: &str,
    service: &Service,
    context: &Context<'_>,
) -> Result<Vec<String>, ComposeError> {
    let mut env: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (i, file) in service
        .env_file
        .clone()
        .map(StringOrList::into_list)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let file_path = volumes::resolve_path(file, context);
        let at = format!("{path}.env_file[{i}]");
        let text = (context.read)(&file_path).map_err(|e| ComposeError::invalid(&at, e))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (line.trim_end().to_string(), None),
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(ComposeError::invalid(
                    at,
                    format!(
                        "{}:{}: invalid variable name {key:?}",
                        file_path.display(),
                        n + 1
                    ),
                ));
            }
            env.insert(key, value);
        }
    }
    if let Some(environment) = &service.environment {
        env.extend(environment.0.clone());
    }
    Ok(env
        .into_iter()
        .map(
            |(key, value)| match value.or_else(|| context.env.get(&key).cloned()) {
                Some(v) => format!("{key}={v}"),
                None => key,
            },
        )
        .collect())
}

fn healthcheck(path: &str, h: &Healthcheck) -> Result<HealthConfig, ComposeError> {
    let mut config = HealthConfig {
        test: match &h.test {
            None => Vec::new(),
            Some(StringOrList::String(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
            Some(StringOrList::List(l)) => l.clone(),
        },
        interval_ns: h.interval.map_or(0, |d| d.0),
        timeout_ns: h.timeout.map_or(0, |d| d.0),
        start_period_ns: h.start_period.map_or(0, |d| d.0),
        retries: i32::try_from(h.retries.unwrap_or(0))
            .map_err(|_| ComposeError::invalid(format!("{path}.retries"), "too many retries"))?,
    };
    if h.disable == Some(true) {
        if !config.test.is_empty() {
            return Err(ComposeError::invalid(
                path,
                "test and disable can't be set at the same time",
            ));
        }
        config.test = vec!["NONE".to_string()];
    }
    crate::api::health::validate(&config).map_err(|e| ComposeError::invalid(path, e))?;
    Ok(config)
}

/// A service's `secrets:` or `configs:` (`section`), each declared at the top level, as file
/// targets with docker's defaults: the references name the objects by their names in the
/// cluster, which the API resolves to ids.
fn file_targets(
    path: &str,
    section: &str,
    uses: &[ShortOrLong<FileReference>],
    config: &Config,
    context: &Context<'_>,
) -> Result<Vec<(String, FileTarget)>, ComposeError> {
    let (declared, kind) = if section == "secrets" {
        (&config.secrets, FileKind::Secret)
    } else {
        (&config.configs, FileKind::Config)
    };
    let mut out = Vec::new();
    for (i, item) in uses.iter().enumerate() {
        let at = format!("{path}.{section}[{i}]");
        let reference = match item {
            ShortOrLong::Short(source) => FileReference {
                source: source.clone(),
                ..FileReference::default()
            },
            ShortOrLong::Long(long) => long.clone(),
        };
        let object = declared.get(&reference.source).ok_or_else(|| {
            ComposeError::invalid(
                &at,
                format!(
                    "undefined {} {:?}: declare it under the top-level {section}",
                    kind.as_str(),
                    reference.source
                ),
            )
        })?;
        let file = FileTarget {
            name: reference.target.unwrap_or_default(),
            uid: reference.uid.unwrap_or_default(),
            gid: reference.gid.unwrap_or_default(),
            mode: reference.mode.map_or(DEFAULT_MODE, |m| m.0),
        };
        let name = super::objects::cluster_name(
            context.stack,
            &reference.source,
            object.name.as_ref(),
            object.external.as_ref(),
        );
        // The default target is the compose file's name for it, not the cluster's.
        out.push((name, with_defaults(kind, &reference.source, Some(file))));
    }
    Ok(out)
}
