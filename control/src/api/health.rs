//! Checks of a container's health check, as the Docker daemon makes them: the API refuses a spec
//! that fails them and `meshctl` makes the same checks before it sends one.

use mesh_proto::HealthConfig;

/// Docker's smallest health check interval, timeout or start period other than 0 (the default).
pub const MIN_DURATION_NS: i64 = 1_000_000;

/// What the test of a health check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// No test given: the image's HEALTHCHECK command, if it has one.
    Inherit,
    /// `["NONE"]`: no health check, not even the image's.
    None,
    /// `["CMD", …]` or `["CMD-SHELL", command]`.
    Command,
}

/// Classifies a health check's test, or says in one line why it is not one.
pub fn test(config: &HealthConfig) -> Result<Test, String> {
    let bad = || {
        format!(
            "invalid health check test {:?}: expected [\"NONE\"], [\"CMD\", ARGS...] or \
             [\"CMD-SHELL\", COMMAND]",
            config.test
        )
    };
    match config.test.split_first() {
        None => Ok(Test::Inherit),
        Some((kind, rest)) => match kind.as_str() {
            "NONE" if rest.is_empty() => Ok(Test::None),
            "CMD" if !rest.is_empty() && !rest[0].is_empty() => Ok(Test::Command),
            "CMD-SHELL" if rest.len() == 1 && !rest[0].trim().is_empty() => Ok(Test::Command),
            _ => Err(bad()),
        },
    }
}

/// Every check of one health check: its test, durations of 0 (the default) or at least 1 ms,
/// retries not negative, and no settings beside a test of NONE.
pub fn validate(config: &HealthConfig) -> Result<(), String> {
    let kind = test(config)?;
    let durations = [
        ("interval", config.interval_ns),
        ("timeout", config.timeout_ns),
        ("start period", config.start_period_ns),
    ];
    for (what, ns) in durations {
        if ns < 0 {
            return Err(format!("health check {what} must not be negative"));
        }
        if ns != 0 && ns < MIN_DURATION_NS {
            return Err(format!(
                "health check {what} must be at least 1ms (or 0 for the default)"
            ));
        }
    }
    if config.retries < 0 {
        return Err("health check retries must not be negative".to_string());
    }
    let tuned = durations.iter().any(|(_, ns)| *ns != 0) || config.retries != 0;
    if kind == Test::None && tuned {
        return Err(
            "a health check of NONE (--no-healthcheck) takes no interval, timeout, retries or \
             start period"
                .to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: test.iter().map(|s| (*s).to_string()).collect(),
            ..HealthConfig::default()
        }
    }

    #[test]
    fn tests_are_classified_as_docker_reads_them() {
        let table: &[(&[&str], Option<Test>)] = &[
            (&[], Some(Test::Inherit)),
            (&["NONE"], Some(Test::None)),
            (&["CMD", "true"], Some(Test::Command)),
            (&["CMD", "test", "-f", "/tmp/x"], Some(Test::Command)),
            (&["CMD-SHELL", "test -f /tmp/x"], Some(Test::Command)),
            (&["NONE", "x"], None),
            (&["CMD"], None),
            (&["CMD", ""], None),
            (&["CMD-SHELL"], None),
            (&["CMD-SHELL", "  "], None),
            (&["CMD-SHELL", "a", "b"], None),
            (&["SHELL", "true"], None),
            (&["cmd", "true"], None),
        ];
        for (words, want) in table {
            assert_eq!(test(&config(words)).ok(), *want, "{words:?}");
        }
    }

    #[test]
    fn durations_retries_and_none_are_checked() {
        let ok = HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval_ns: 1_000_000_000,
            timeout_ns: MIN_DURATION_NS,
            retries: 3,
            start_period_ns: 0,
        };
        assert_eq!(validate(&ok), Ok(()));
        let cases: &[(HealthConfig, &str)] = &[
            (
                HealthConfig {
                    interval_ns: -1,
                    ..ok.clone()
                },
                "health check interval must not be negative",
            ),
            (
                HealthConfig {
                    timeout_ns: 999_999,
                    ..ok.clone()
                },
                "health check timeout must be at least 1ms (or 0 for the default)",
            ),
            (
                HealthConfig {
                    start_period_ns: -5,
                    ..ok.clone()
                },
                "health check start period must not be negative",
            ),
            (
                HealthConfig {
                    retries: -1,
                    ..ok.clone()
                },
                "health check retries must not be negative",
            ),
            (
                HealthConfig {
                    test: vec!["NONE".into()],
                    ..ok.clone()
                },
                "a health check of NONE (--no-healthcheck) takes no interval, timeout, retries \
                 or start period",
            ),
        ];
        for (config, want) in cases {
            assert_eq!(validate(config), Err((*want).to_string()), "{config:?}");
        }
        assert_eq!(validate(&config(&["NONE"])), Ok(()));
        // Tuning alone keeps the image's command, as `docker service create --health-interval` does.
        let tuned = HealthConfig {
            interval_ns: 2_000_000_000,
            ..HealthConfig::default()
        };
        assert_eq!(validate(&tuned), Ok(()));
    }
}
