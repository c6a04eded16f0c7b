//! The flags of `service create` and `service update`, and how they become or change a
//! `ServiceSpec`. Every value is parsed by clap through `flags`; what needs two flags (or the current
//! spec) to judge is checked here, before the write request.

use super::InputError;
use crate::cli::flags::{
    parse_bytes, parse_count, parse_duration_ns, parse_endpoint_mode, parse_env, parse_label,
    parse_mode_global, parse_mount, parse_name, parse_nano_cpus, parse_placement_pref,
    parse_publish, parse_pull, parse_replicas, parse_restart_condition,
};
use crate::limits;
use crate::scheduler::constraint::{Constraint, ConstraintError};
use clap::Args;
use mesh_proto::service_spec::Mode;
use mesh_proto::{
    Annotations, ContainerSpec, EndpointMode, EndpointSpec, GlobalService, Mount,
    NetworkAttachmentConfig, Placement, PlacementPreference, PortConfig, PullPolicy,
    ReplicatedService, ResourceRequirements, Resources, RestartCondition, RestartPolicy,
    ServiceSpec, TaskSpec,
};

fn parse_constraint(value: &str) -> Result<String, ConstraintError> {
    Constraint::parse(value).map(|_| value.to_string())
}

fn parse_max_per_node(value: &str) -> Result<u64, crate::cli::flags::FlagError> {
    parse_count("--replicas-max-per-node", value)
}

fn parse_max_attempts(value: &str) -> Result<u64, crate::cli::flags::FlagError> {
    parse_count("--restart-max-attempts", value)
}

/// A network name or id, as `network create` accepts them.
fn parse_network(value: &str) -> Result<String, String> {
    let valid = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_string())
    } else {
        Err(format!(
            "invalid network {value:?}: give a network name or id (letters, digits, '-', '_', '.')"
        ))
    }
}

fn attachment(target: &str) -> NetworkAttachmentConfig {
    NetworkAttachmentConfig {
        target: target.to_string(),
        aliases: Vec::new(),
    }
}

/// `--limit-cpu`, `--limit-memory`, `--reserve-cpu`, `--reserve-memory`.
#[derive(Args, Debug, Default)]
pub struct ResourceFlags {
    /// Limit CPUs (e.g. 0.5)
    #[arg(long, value_name = "CPUS", value_parser = parse_nano_cpus)]
    pub limit_cpu: Option<i64>,
    /// Limit memory (e.g. 512M)
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub limit_memory: Option<i64>,
    /// Reserve CPUs
    #[arg(long, value_name = "CPUS", value_parser = parse_nano_cpus)]
    pub reserve_cpu: Option<i64>,
    /// Reserve memory
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub reserve_memory: Option<i64>,
}

impl ResourceFlags {
    fn apply(&self, target: &mut Option<ResourceRequirements>) {
        let set = [
            self.limit_cpu,
            self.limit_memory,
            self.reserve_cpu,
            self.reserve_memory,
        ];
        if set.iter().all(Option::is_none) {
            return;
        }
        let resources = target.get_or_insert_with(ResourceRequirements::default);
        let limits = resources.limits.get_or_insert_with(Resources::default);
        limits.nano_cpus = self.limit_cpu.unwrap_or(limits.nano_cpus);
        limits.memory_bytes = self.limit_memory.unwrap_or(limits.memory_bytes);
        let reservations = resources
            .reservations
            .get_or_insert_with(Resources::default);
        reservations.nano_cpus = self.reserve_cpu.unwrap_or(reservations.nano_cpus);
        reservations.memory_bytes = self.reserve_memory.unwrap_or(reservations.memory_bytes);
    }
}

/// `--restart-condition`, `--restart-delay`, `--restart-max-attempts`, `--restart-window`.
#[derive(Args, Debug, Default)]
pub struct RestartFlags {
    /// Restart when condition is met ("none", "on-failure", "any")
    #[arg(long, value_name = "CONDITION", value_parser = parse_restart_condition)]
    pub restart_condition: Option<RestartCondition>,
    /// Delay between restart attempts (ns|us|ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub restart_delay: Option<i64>,
    /// Maximum number of restarts before giving up
    #[arg(long, value_name = "N", value_parser = parse_max_attempts, allow_negative_numbers = true)]
    pub restart_max_attempts: Option<u64>,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub restart_window: Option<i64>,
}

impl RestartFlags {
    fn apply(&self, target: &mut Option<RestartPolicy>) {
        let unset = self.restart_condition.is_none()
            && self.restart_delay.is_none()
            && self.restart_max_attempts.is_none()
            && self.restart_window.is_none();
        if unset {
            return;
        }
        let policy = target.get_or_insert_with(RestartPolicy::default);
        if let Some(condition) = self.restart_condition {
            policy.condition = condition as i32;
        }
        if let Some(delay) = self.restart_delay {
            policy.delay_ns = Some(delay);
        }
        policy.max_attempts = self.restart_max_attempts.unwrap_or(policy.max_attempts);
        policy.window_ns = self.restart_window.unwrap_or(policy.window_ns);
    }
}

/// Container settings that `create` and `update` both take under the same names.
#[derive(Args, Debug, Default)]
pub struct ContainerFlags {
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Container hostname
    #[arg(long)]
    pub hostname: Option<String>,
    /// Time to wait before force killing a container (ns|us|ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub stop_grace_period: Option<i64>,
    /// Image pull policy ("missing", "always", "never")
    #[arg(long, value_parser = parse_pull)]
    pub pull: Option<PullPolicy>,
    /// Maximum number of tasks per node (default 0 = unlimited)
    #[arg(long, value_name = "N", value_parser = parse_max_per_node, allow_negative_numbers = true)]
    pub replicas_max_per_node: Option<u64>,
}

impl ContainerFlags {
    fn apply(&self, task: &mut TaskSpec, global: bool) -> Result<(), InputError> {
        let container = task.container.get_or_insert_with(ContainerSpec::default);
        if let Some(dir) = &self.workdir {
            container.dir.clone_from(dir);
        }
        if let Some(user) = &self.user {
            container.user.clone_from(user);
        }
        if let Some(hostname) = &self.hostname {
            container.hostname.clone_from(hostname);
        }
        if let Some(grace) = self.stop_grace_period {
            container.stop_grace_period_ns = Some(grace);
        }
        if let Some(pull) = self.pull {
            container.pull = pull as i32;
        }
        if let Some(max) = self.replicas_max_per_node {
            if global {
                return Err(InputError::Invalid(
                    "--replicas-max-per-node can only be used with replicated mode".to_string(),
                ));
            }
            task.placement
                .get_or_insert_with(Placement::default)
                .max_replicas = max;
        }
        Ok(())
    }
}

/// The flags and arguments of `service create`.
#[derive(Args, Debug)]
pub struct CreateFlags {
    /// Service name
    #[arg(long, value_parser = parse_name)]
    pub name: Option<String>,
    /// Number of tasks
    #[arg(long, value_name = "N", value_parser = parse_replicas, allow_negative_numbers = true)]
    pub replicas: Option<u64>,
    /// Service mode ("replicated", "global")
    #[arg(long, value_name = "MODE", value_parser = parse_mode_global)]
    pub mode: Option<bool>,
    /// Set environment variables
    #[arg(short = 'e', long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<String>,
    /// Service labels
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Container labels
    #[arg(long = "container-label", value_name = "K=V", value_parser = parse_label)]
    pub container_labels: Vec<(String, String)>,
    /// Attach a filesystem mount to the service
    #[arg(long = "mount", value_name = "MOUNT", value_parser = parse_mount)]
    pub mounts: Vec<Mount>,
    /// Placement constraints
    #[arg(long = "constraint", value_name = "EXPR", value_parser = parse_constraint)]
    pub constraints: Vec<String>,
    /// Network attachments
    #[arg(long = "network", value_name = "NETWORK", value_parser = parse_network)]
    pub networks: Vec<String>,
    /// Publish a port: published=P,target=T[,protocol=tcp|udp][,mode=ingress|host] or P:T[/udp]
    #[arg(short = 'p', long = "publish", value_name = "PORT", value_parser = parse_publish)]
    pub publish: Vec<PortConfig>,
    /// Endpoint mode: vip (one virtual IP per network) or dnsrr (DNS round robin)
    #[arg(long, value_name = "MODE", value_parser = parse_endpoint_mode)]
    pub endpoint_mode: Option<EndpointMode>,
    /// Add a placement preference (spread=node.labels.KEY)
    #[arg(long = "placement-pref", value_name = "PREF", value_parser = parse_placement_pref)]
    pub placement_prefs: Vec<String>,
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
    pub files: files::FileFlags,
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Image to run
    pub image: String,
    /// Command and arguments (become the container's args, as with docker)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub args: Vec<String>,
}

impl CreateFlags {
    /// The spec these flags describe, or the first reason they don't describe one.
    pub fn to_spec(&self) -> Result<ServiceSpec, InputError> {
        let global = self.mode.unwrap_or(false);
        if global && self.replicas.is_some() {
            return Err(InputError::Invalid(
                "--replicas can only be used with replicated mode".to_string(),
            ));
        }
        validate_image(&self.image)?;
        let mut task = TaskSpec {
            container: Some(ContainerSpec {
                image: self.image.clone(),
                args: self.args.clone(),
                env: self.env.clone(),
                labels: self.container_labels.iter().cloned().collect(),
                mounts: self.mounts.clone(),
                ..ContainerSpec::default()
            }),
            networks: self.networks.iter().map(|n| attachment(n)).collect(),
            ..TaskSpec::default()
        };
        self.container.apply(&mut task, global)?;
        if let Some(container) = task.container.as_mut() {
            container.healthcheck = self.health.to_config()?;
            self.files.apply(container);
        }
        self.resources.apply(&mut task.resources);
        self.restart.apply(&mut task.restart);
        if !self.constraints.is_empty() || !self.placement_prefs.is_empty() {
            let placement = task.placement.get_or_insert_with(Placement::default);
            placement.constraints.clone_from(&self.constraints);
            placement.preferences = self
                .placement_prefs
                .iter()
                .map(|d| PlacementPreference {
                    spread_descriptor: d.clone(),
                })
                .collect();
        }
        let mode = if global {
            Mode::Global(GlobalService {})
        } else {
            Mode::Replicated(ReplicatedService {
                replicas: self.replicas.unwrap_or(1),
            })
        };
        let mut spec = ServiceSpec {
            annotations: Some(Annotations {
                name: self.name.clone().unwrap_or_default(),
                labels: self.labels.iter().cloned().collect(),
            }),
            task: Some(task),
            mode: Some(mode),
            endpoint: endpoint(
                self.endpoint_mode.unwrap_or(EndpointMode::Vip),
                &self.publish,
            ),
            update_config: None,
            rollback_config: None,
        };
        self.rollout.create(&mut spec);
        limits::service_spec(&spec)?;
        Ok(spec)
    }
}

/// The endpoint spec, absent when it says nothing beyond the defaults.
fn endpoint(mode: EndpointMode, ports: &[PortConfig]) -> Option<EndpointSpec> {
    (mode != EndpointMode::Vip || !ports.is_empty()).then(|| EndpointSpec {
        mode: mode as i32,
        ports: ports.to_vec(),
    })
}

/// Refuses what cannot be an image reference, before the daemon is asked.
pub fn validate_image(image: &str) -> Result<(), InputError> {
    if image.is_empty() || image.contains(char::is_whitespace) {
        return Err(InputError::Invalid(format!(
            "invalid image reference {image:?}: must be non-empty and contain no spaces"
        )));
    }
    let repository = image.split(['@']).next().unwrap_or(image);
    let name = repository
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(repository, |(name, _)| name);
    let path = name.split_once('/').map_or(name, |(registry, path)| {
        if registry.contains(['.', ':']) || registry == "localhost" {
            path
        } else {
            name
        }
    });
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(InputError::Invalid(format!(
            "invalid reference format {image:?}: repository name must be lowercase"
        )));
    }
    Ok(())
}

pub mod files;
mod health;
mod rollout;
mod update;
pub use health::HealthFlags;
pub use rollout::RolloutFlags;
pub use update::UpdateFlags;

#[cfg(test)]
mod tests;
