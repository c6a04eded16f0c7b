//! `service update` flags and the read-modify-write step they make on the current spec.

use super::{
    ContainerFlags, HealthFlags, ResourceFlags, RestartFlags, RolloutFlags, attachment,
    files::FileUpdateFlags, parse_constraint, parse_network, validate_image,
};
use crate::cli::InputError;
use crate::cli::flags::{
    Words, parse_endpoint_mode, parse_env, parse_label, parse_mount, parse_publish, parse_replicas,
    parse_shell_words,
};
use clap::Args;
use mesh_proto::service_spec::Mode;
use mesh_proto::{
    Annotations, ContainerSpec, EndpointMode, EndpointSpec, Mount, Placement, PortConfig,
    ServiceSpec, TaskSpec,
};
use std::collections::HashMap;

/// What `--rollback` cannot be combined with: every flag that changes the spec (the groups are
/// the flattened flag structs).
const ROLLBACK_CONFLICTS: [&str; 25] = [
    "image",
    "replicas",
    "env_add",
    "env_rm",
    "label_add",
    "label_rm",
    "container_label_add",
    "container_label_rm",
    "constraint_add",
    "constraint_rm",
    "mount_add",
    "mount_rm",
    "network_add",
    "network_rm",
    "publish_add",
    "publish_rm",
    "endpoint_mode",
    "args",
    "force",
    "ResourceFlags",
    "RestartFlags",
    "ContainerFlags",
    "RolloutFlags",
    "HealthFlags",
    "FileUpdateFlags",
];

/// The flags and argument of `service update`.
#[derive(Args, Debug)]
pub struct UpdateFlags {
    /// Service image tag
    #[arg(long)]
    pub image: Option<String>,
    /// Number of tasks
    #[arg(long, value_name = "N", value_parser = parse_replicas, allow_negative_numbers = true)]
    pub replicas: Option<u64>,
    /// Add or update an environment variable
    #[arg(long, value_name = "K=V", value_parser = parse_env)]
    pub env_add: Vec<String>,
    /// Remove an environment variable
    #[arg(long, value_name = "K")]
    pub env_rm: Vec<String>,
    /// Add or update a service label
    #[arg(long, value_name = "K=V", value_parser = parse_label)]
    pub label_add: Vec<(String, String)>,
    /// Remove a label by its key
    #[arg(long, value_name = "K")]
    pub label_rm: Vec<String>,
    /// Add or update a container label
    #[arg(long, value_name = "K=V", value_parser = parse_label)]
    pub container_label_add: Vec<(String, String)>,
    /// Remove a container label by its key
    #[arg(long, value_name = "K")]
    pub container_label_rm: Vec<String>,
    /// Add or update a placement constraint
    #[arg(long, value_name = "EXPR", value_parser = parse_constraint)]
    pub constraint_add: Vec<String>,
    /// Remove a constraint
    #[arg(long, value_name = "EXPR")]
    pub constraint_rm: Vec<String>,
    /// Add or update a mount on a service
    #[arg(long, value_name = "MOUNT", value_parser = parse_mount)]
    pub mount_add: Vec<Mount>,
    /// Remove a mount by its target path
    #[arg(long, value_name = "TARGET")]
    pub mount_rm: Vec<String>,
    /// Add a network
    #[arg(long, value_name = "NETWORK", value_parser = parse_network)]
    pub network_add: Vec<String>,
    /// Remove a network
    #[arg(long, value_name = "NETWORK")]
    pub network_rm: Vec<String>,
    /// Add or replace a published port (as --publish of service create)
    #[arg(long, value_name = "PORT", value_parser = parse_publish)]
    pub publish_add: Vec<PortConfig>,
    /// Remove a published port by its target port: PORT[/tcp|/udp]
    #[arg(long, value_name = "PORT", value_parser = parse_publish)]
    pub publish_rm: Vec<PortConfig>,
    /// Endpoint mode: vip or dnsrr
    #[arg(long, value_name = "MODE", value_parser = parse_endpoint_mode)]
    pub endpoint_mode: Option<EndpointMode>,
    /// Service command args
    #[arg(long, value_name = "ARGS", value_parser = parse_shell_words, allow_hyphen_values = true)]
    pub args: Option<Words>,
    #[command(flatten)]
    pub resources: ResourceFlags,
    #[command(flatten)]
    pub restart: RestartFlags,
    #[command(flatten)]
    pub container: ContainerFlags,
    #[command(flatten)]
    pub health: HealthFlags,
    #[command(flatten)]
    pub rollout: RolloutFlags,
    #[command(flatten)]
    pub files: FileUpdateFlags,
    /// Force update even if no changes require it
    #[arg(long)]
    pub force: bool,
    /// Roll back to the previous specification (no other flag but --detach and --quiet)
    #[arg(long, conflicts_with_all = ROLLBACK_CONFLICTS)]
    pub rollback: bool,
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// The service to update
    pub service: String,
}

/// Whether two ports name the same target port and protocol (what --publish-rm matches on).
fn same_target(a: &PortConfig, b: &PortConfig) -> bool {
    a.target_port == b.target_port && a.protocol == b.protocol
}

impl UpdateFlags {
    /// Checks what can be judged without the current spec.
    pub fn validate(&self) -> Result<(), InputError> {
        match &self.image {
            Some(image) => validate_image(image),
            None => Ok(()),
        }
    }

    /// Applies the flags to `spec`, as `docker service update` does: additions first, then removals.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<(), InputError> {
        let global = matches!(spec.mode, Some(Mode::Global(_)));
        if let Some(replicas) = self.replicas {
            match &mut spec.mode {
                Some(Mode::Replicated(replicated)) => replicated.replicas = replicas,
                _ => {
                    return Err(InputError::Invalid(
                        "--replicas can only be used with replicated mode".to_string(),
                    ));
                }
            }
        }
        let annotations = spec.annotations.get_or_insert_with(Annotations::default);
        update_labels(&mut annotations.labels, &self.label_add, &self.label_rm);

        self.rollout.change(spec);

        let task = spec.task.get_or_insert_with(TaskSpec::default);
        self.container.apply(task, global)?;
        self.resources.apply(&mut task.resources);
        self.restart.apply(&mut task.restart);
        if self.force {
            task.force_update = task.force_update.wrapping_add(1);
        }
        if !self.constraint_add.is_empty() || !self.constraint_rm.is_empty() {
            let placement = task.placement.get_or_insert_with(Placement::default);
            for constraint in &self.constraint_add {
                if !placement.constraints.contains(constraint) {
                    placement.constraints.push(constraint.clone());
                }
            }
            placement
                .constraints
                .retain(|c| !self.constraint_rm.contains(c));
        }
        for network in &self.network_add {
            if !task.networks.iter().any(|n| &n.target == network) {
                task.networks.push(attachment(network));
            }
        }
        task.networks
            .retain(|n| !self.network_rm.contains(&n.target));

        if !self.publish_add.is_empty()
            || !self.publish_rm.is_empty()
            || self.endpoint_mode.is_some()
        {
            let endpoint = spec.endpoint.get_or_insert_with(EndpointSpec::default);
            if let Some(mode) = self.endpoint_mode {
                endpoint.mode = mode as i32;
            }
            for port in &self.publish_add {
                endpoint.ports.retain(|p| !same_target(p, port));
                endpoint.ports.push(port.clone());
            }
            endpoint
                .ports
                .retain(|p| !self.publish_rm.iter().any(|rm| same_target(p, rm)));
        }

        let container = task.container.get_or_insert_with(ContainerSpec::default);
        if let Some(image) = &self.image {
            container.image.clone_from(image);
        }
        self.health.apply(&mut container.healthcheck)?;
        if let Some(Words(args)) = &self.args {
            container.args.clone_from(args);
        }
        update_labels(
            &mut container.labels,
            &self.container_label_add,
            &self.container_label_rm,
        );
        update_env(&mut container.env, &self.env_add, &self.env_rm);
        for mount in &self.mount_add {
            match container
                .mounts
                .iter_mut()
                .find(|m| m.target == mount.target)
            {
                Some(existing) => *existing = mount.clone(),
                None => container.mounts.push(mount.clone()),
            }
        }
        container
            .mounts
            .retain(|m| !self.mount_rm.contains(&m.target));
        self.files.apply(container);
        crate::limits::service_spec(spec)?;
        Ok(())
    }
}

fn update_labels(labels: &mut HashMap<String, String>, add: &[(String, String)], rm: &[String]) {
    labels.extend(add.iter().cloned());
    labels.retain(|k, _| !rm.contains(k));
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// `--env-add` replaces a variable of the same name in place, or appends; `--env-rm` takes
/// `K` or `K=V` and removes by name.
fn update_env(env: &mut Vec<String>, add: &[String], rm: &[String]) {
    for entry in add {
        match env.iter_mut().find(|e| env_key(e) == env_key(entry)) {
            Some(existing) => existing.clone_from(entry),
            None => env.push(entry.clone()),
        }
    }
    env.retain(|e| !rm.iter().any(|r| env_key(r) == env_key(e)));
}
