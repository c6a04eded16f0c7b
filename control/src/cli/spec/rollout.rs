//! `--update-*` and `--rollback-*` of `service create` and `service update`: how tasks are replaced
//! when the task template changes, and when a rollback returns to the previous one.

use crate::cli::flags::{FlagError, choice, parse_count, parse_duration_ns};
use clap::Args;
use mesh_proto::{ServiceSpec, UpdateConfig, UpdateFailureAction, UpdateOrder};

use crate::orchestrator::update::Config;

fn parse_action(value: &str) -> Result<UpdateFailureAction, FlagError> {
    let table = [
        ("pause", UpdateFailureAction::Pause),
        ("continue", UpdateFailureAction::Continue),
        ("rollback", UpdateFailureAction::Rollback),
    ];
    choice(
        "--update-failure-action",
        "pause, continue or rollback",
        &table,
        value,
    )
}

fn parse_rollback_action(value: &str) -> Result<UpdateFailureAction, FlagError> {
    let table = [
        ("pause", UpdateFailureAction::Pause),
        ("continue", UpdateFailureAction::Continue),
    ];
    choice(
        "--rollback-failure-action",
        "pause or continue",
        &table,
        value,
    )
}

fn parse_order(value: &str) -> Result<UpdateOrder, FlagError> {
    let table = [
        ("stop-first", UpdateOrder::StopFirst),
        ("start-first", UpdateOrder::StartFirst),
    ];
    choice("order", "stop-first or start-first", &table, value)
}

fn ratio(what: &'static str, value: &str) -> Result<f32, FlagError> {
    let err = || FlagError::Ratio {
        what,
        value: value.to_string(),
    };
    let ratio: f32 = value.trim().parse().map_err(|_| err())?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(err())
    }
}

fn parse_update_ratio(value: &str) -> Result<f32, FlagError> {
    ratio("--update-max-failure-ratio", value)
}

fn parse_rollback_ratio(value: &str) -> Result<f32, FlagError> {
    ratio("--rollback-max-failure-ratio", value)
}

fn parse_update_parallelism(value: &str) -> Result<u64, FlagError> {
    parse_count("--update-parallelism", value)
}

fn parse_rollback_parallelism(value: &str) -> Result<u64, FlagError> {
    parse_count("--rollback-parallelism", value)
}

/// The six settings of one config, each given or not.
struct Given {
    parallelism: Option<u64>,
    delay_ns: Option<i64>,
    failure_action: Option<UpdateFailureAction>,
    monitor_ns: Option<i64>,
    max_failure_ratio: Option<f32>,
    order: Option<UpdateOrder>,
}

impl Given {
    fn any(&self) -> bool {
        self.parallelism.is_some()
            || self.delay_ns.is_some()
            || self.failure_action.is_some()
            || self.monitor_ns.is_some()
            || self.max_failure_ratio.is_some()
            || self.order.is_some()
    }

    /// `target` with what was given changed, starting from Swarm's defaults when there is none.
    fn apply(&self, target: &mut Option<UpdateConfig>) {
        let config = target.get_or_insert_with(|| {
            let d = Config::DEFAULT;
            UpdateConfig {
                parallelism: d.parallelism,
                delay_ns: d.delay_ns,
                failure_action: d.failure_action as i32,
                monitor_ns: Some(d.monitor_ns),
                max_failure_ratio: d.max_failure_ratio,
                order: d.order as i32,
            }
        });
        config.parallelism = self.parallelism.unwrap_or(config.parallelism);
        config.delay_ns = self.delay_ns.unwrap_or(config.delay_ns);
        if let Some(action) = self.failure_action {
            config.failure_action = action as i32;
        }
        if let Some(monitor) = self.monitor_ns {
            config.monitor_ns = Some(monitor);
        }
        config.max_failure_ratio = self.max_failure_ratio.unwrap_or(config.max_failure_ratio);
        if let Some(order) = self.order {
            config.order = order as i32;
        }
    }
}

/// The update and rollback flags, the same on `create` and `update`.
#[derive(Args, Debug, Default)]
pub struct RolloutFlags {
    /// Maximum number of tasks updated simultaneously (0 to update all at once)
    #[arg(long, value_name = "N", value_parser = parse_update_parallelism, allow_negative_numbers = true)]
    pub update_parallelism: Option<u64>,
    /// Delay between updates (ns|us|ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub update_delay: Option<i64>,
    /// Action on update failure ("pause", "continue", "rollback")
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub update_failure_action: Option<UpdateFailureAction>,
    /// Duration after each task update to monitor for failure (ns|us|ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub update_monitor: Option<i64>,
    /// Failure rate to tolerate during an update (0 to 1)
    #[arg(long, value_name = "RATIO", value_parser = parse_update_ratio, allow_negative_numbers = true)]
    pub update_max_failure_ratio: Option<f32>,
    /// Update order ("start-first", "stop-first")
    #[arg(long, value_name = "ORDER", value_parser = parse_order)]
    pub update_order: Option<UpdateOrder>,
    /// Maximum number of tasks rolled back simultaneously (0 to roll back all at once)
    #[arg(long, value_name = "N", value_parser = parse_rollback_parallelism, allow_negative_numbers = true)]
    pub rollback_parallelism: Option<u64>,
    /// Delay between task rollbacks (ns|us|ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub rollback_delay: Option<i64>,
    /// Action on rollback failure ("pause", "continue")
    #[arg(long, value_name = "ACTION", value_parser = parse_rollback_action)]
    pub rollback_failure_action: Option<UpdateFailureAction>,
    /// Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns)]
    pub rollback_monitor: Option<i64>,
    /// Failure rate to tolerate during a rollback (0 to 1)
    #[arg(long, value_name = "RATIO", value_parser = parse_rollback_ratio, allow_negative_numbers = true)]
    pub rollback_max_failure_ratio: Option<f32>,
    /// Rollback order ("start-first", "stop-first")
    #[arg(long, value_name = "ORDER", value_parser = parse_order)]
    pub rollback_order: Option<UpdateOrder>,
}

impl RolloutFlags {
    fn update(&self) -> Given {
        Given {
            parallelism: self.update_parallelism,
            delay_ns: self.update_delay,
            failure_action: self.update_failure_action,
            monitor_ns: self.update_monitor,
            max_failure_ratio: self.update_max_failure_ratio,
            order: self.update_order,
        }
    }

    fn rollback(&self) -> Given {
        Given {
            parallelism: self.rollback_parallelism,
            delay_ns: self.rollback_delay,
            failure_action: self.rollback_failure_action,
            monitor_ns: self.rollback_monitor,
            max_failure_ratio: self.rollback_max_failure_ratio,
            order: self.rollback_order,
        }
    }

    /// Whether any of the flags was given.
    pub fn any(&self) -> bool {
        self.update().any() || self.rollback().any()
    }

    /// A new service's configs: Swarm's defaults with the flags given (docker sends both always).
    pub fn create(&self, spec: &mut ServiceSpec) {
        self.update().apply(&mut spec.update_config);
        self.rollback().apply(&mut spec.rollback_config);
    }

    /// Changes what was given in `spec`'s configs, leaving the rest as it is.
    pub fn change(&self, spec: &mut ServiceSpec) {
        for (given, target) in [
            (self.update(), &mut spec.update_config),
            (self.rollback(), &mut spec.rollback_config),
        ] {
            if given.any() {
                given.apply(target);
            }
        }
    }
}
