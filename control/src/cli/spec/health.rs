//! `--health-cmd`, `--health-interval`, `--health-timeout`, `--health-retries`,
//! `--health-start-period` and `--no-healthcheck`, on `service create` and `service update`, with
//! docker's meaning: without any of them the image's own HEALTHCHECK applies.

use crate::api::health;
use crate::cli::InputError;
use crate::cli::flags::{FlagError, parse_count, parse_duration_ns};
use clap::Args;
use mesh_proto::HealthConfig;

fn parse_retries(value: &str) -> Result<i32, FlagError> {
    let retries = parse_count("--health-retries", value)?;
    i32::try_from(retries).map_err(|_| FlagError::Count {
        what: "--health-retries",
        value: value.to_string(),
    })
}

const CONFLICT: &str = "--no-healthcheck conflicts with --health-* options";

/// The health check flags, the same on `service create` and `service update`.
#[derive(Args, Debug, Default)]
pub struct HealthFlags {
    /// Command to run to check health (run by the container's shell)
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true)]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns, allow_hyphen_values = true)]
    pub health_interval: Option<i64>,
    /// Maximum time to allow one check to run (ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns, allow_hyphen_values = true)]
    pub health_timeout: Option<i64>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long, value_name = "N", value_parser = parse_retries, allow_negative_numbers = true)]
    pub health_retries: Option<i32>,
    /// Start period for the container to initialize before counting retries towards unstable
    /// (ms|s|m|h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ns, allow_hyphen_values = true)]
    pub health_start_period: Option<i64>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long)]
    pub no_healthcheck: bool,
}

impl HealthFlags {
    fn any_setting(&self) -> bool {
        self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
    }

    /// The health check `service create` sets: none (the image's applies) without any flag.
    pub fn to_config(&self) -> Result<Option<HealthConfig>, InputError> {
        let mut config = None;
        self.apply(&mut config)?;
        Ok(config)
    }

    /// Changes `target` as `docker service update` does: `--no-healthcheck` replaces it with a
    /// test of NONE; a setting replaces that setting (an empty `--health-cmd` goes back to the
    /// image's command), and any setting lifts a NONE.
    pub fn apply(&self, target: &mut Option<HealthConfig>) -> Result<(), InputError> {
        if self.no_healthcheck {
            if self.any_setting() {
                return Err(InputError::Invalid(CONFLICT.to_string()));
            }
            *target = Some(HealthConfig {
                test: vec!["NONE".to_string()],
                ..HealthConfig::default()
            });
            return Ok(());
        }
        if !self.any_setting() {
            return Ok(());
        }
        let mut config = target.clone().unwrap_or_default();
        if config.test.first().is_some_and(|t| t == "NONE") {
            config.test.clear();
        }
        if let Some(cmd) = &self.health_cmd {
            config.test = if cmd.is_empty() {
                Vec::new()
            } else {
                vec!["CMD-SHELL".to_string(), cmd.clone()]
            };
        }
        config.interval_ns = self.health_interval.unwrap_or(config.interval_ns);
        config.timeout_ns = self.health_timeout.unwrap_or(config.timeout_ns);
        config.retries = self.health_retries.unwrap_or(config.retries);
        config.start_period_ns = self.health_start_period.unwrap_or(config.start_period_ns);
        health::validate(&config).map_err(InputError::Invalid)?;
        *target = Some(config);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cmd {
        #[command(flatten)]
        health: HealthFlags,
    }

    fn flags(args: &[&str]) -> Result<HealthFlags, String> {
        Cmd::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .map(|c| c.health)
            .map_err(|e| e.to_string())
    }

    fn create(args: &[&str]) -> Result<Option<HealthConfig>, String> {
        flags(args)?.to_config().map_err(|e| e.to_string())
    }

    fn update(
        current: Option<HealthConfig>,
        args: &[&str],
    ) -> Result<Option<HealthConfig>, String> {
        let mut target = current;
        flags(args)?.apply(&mut target).map_err(|e| e.to_string())?;
        Ok(target)
    }

    fn shell(cmd: &str) -> Vec<String> {
        vec!["CMD-SHELL".to_string(), cmd.to_string()]
    }

    #[test]
    fn create_sets_nothing_without_flags_so_the_image_check_applies() {
        assert_eq!(create(&[]), Ok(None));
    }

    #[test]
    fn create_carries_every_setting() {
        let got = create(&[
            "--health-cmd",
            "test -f /tmp/healthy",
            "--health-interval",
            "1s",
            "--health-timeout",
            "500ms",
            "--health-retries",
            "2",
            "--health-start-period",
            "1m",
        ]);
        let want = HealthConfig {
            test: shell("test -f /tmp/healthy"),
            interval_ns: 1_000_000_000,
            timeout_ns: 500_000_000,
            retries: 2,
            start_period_ns: 60_000_000_000,
        };
        assert_eq!(got, Ok(Some(want)));
    }

    #[test]
    fn no_healthcheck_is_a_test_of_none() {
        let none = HealthConfig {
            test: vec!["NONE".to_string()],
            ..HealthConfig::default()
        };
        assert_eq!(create(&["--no-healthcheck"]), Ok(Some(none.clone())));
        let current = Some(HealthConfig {
            test: shell("true"),
            retries: 4,
            ..HealthConfig::default()
        });
        assert_eq!(update(current, &["--no-healthcheck"]), Ok(Some(none)));
    }

    #[test]
    fn bad_input_is_one_line_and_changes_nothing() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--no-healthcheck", "--health-cmd", "true"],
                "--no-healthcheck conflicts with --health-* options",
            ),
            (
                &["--no-healthcheck", "--health-retries", "1"],
                "--no-healthcheck conflicts with --health-* options",
            ),
            (&["--health-interval", "-5s"], "invalid duration \"-5s\""),
            (&["--health-timeout", "soon"], "invalid duration \"soon\""),
            (
                &["--health-retries", "-1"],
                "invalid value \"-1\" for --health-retries: must be a non-negative integer",
            ),
            (
                &["--health-retries", "99999999999"],
                "invalid value \"99999999999\" for --health-retries",
            ),
            (
                &["--health-interval", "10us"],
                "health check interval must be at least 1ms",
            ),
        ];
        let current = Some(HealthConfig {
            test: shell("true"),
            ..HealthConfig::default()
        });
        for (args, want) in cases {
            let err = create(args).expect_err("refused");
            // clap adds a usage hint on lines of its own; the reason is one line.
            let first = err.lines().next().unwrap_or_default();
            assert!(first.contains(want), "{args:?}: {err}");
            let mut target = current.clone();
            if let Ok(parsed) = flags(args) {
                assert!(parsed.apply(&mut target).is_err(), "{args:?}");
            }
            assert_eq!(target, current, "{args:?} changed the spec");
        }
    }

    #[test]
    fn update_changes_only_what_it_names() {
        let current = Some(HealthConfig {
            test: shell("true"),
            interval_ns: 5_000_000_000,
            retries: 3,
            ..HealthConfig::default()
        });
        let got = update(current.clone(), &["--health-retries", "1"]).expect("valid");
        assert_eq!(
            got,
            Some(HealthConfig {
                retries: 1,
                ..current.clone().unwrap_or_default()
            })
        );
        assert_eq!(update(current.clone(), &[]), Ok(current.clone()));
        // An empty command goes back to the image's.
        let got = update(current, &["--health-cmd", ""]).expect("valid");
        assert_eq!(got.map(|c| c.test), Some(Vec::new()));
        // A setting on a NONE check lifts the NONE.
        let none = Some(HealthConfig {
            test: vec!["NONE".to_string()],
            ..HealthConfig::default()
        });
        let got = update(none, &["--health-interval", "2s"]).expect("valid");
        assert_eq!(
            got,
            Some(HealthConfig {
                interval_ns: 2_000_000_000,
                ..HealthConfig::default()
            })
        );
    }
}
