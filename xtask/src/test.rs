//! `cargo xtask test`: what CI runs. The packages first, one build, then `systemd-analyze verify`
//! of the systemd unit, fmt, clippy, unit tests, the privileged tests and a bounded run of every
//! fuzz target, then a check that the tests left nothing behind and did not change the host's
//! forwarding settings. Every step says how long it
//! took; the summary counts skipped tests.

use std::path::Path;

use anyhow::{bail, ensure};
use mesh_tests::process::{cargo, run_shown, run_sync};
use mesh_tests::skip::{self, REQUIRE_ENV, SKIP_LOG_ENV};

use crate::{deps, digest, dist, fuzz, leftovers, step};

/// One check of the run: what it is, cargo's arguments and environment, and what to do if it fails.
struct Check<'a> {
    what: &'static str,
    args: &'a [&'a str],
    env: &'a [(&'a str, &'a str)],
    fix: &'static str,
}

/// Where the privileged tests record their skips for this run's summary.
const SKIP_LOG: &str = "target/mesh-test-skips.log";

/// The host settings dockerd is known to change: `ip_forward` and the FORWARD chain's policy.
fn host_forwarding() -> (String, String) {
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    let policy = run_sync("iptables", &["-S", "FORWARD"])
        .map(|o| o.stdout)
        .unwrap_or_default();
    (
        forward.trim().to_owned(),
        policy.lines().next().unwrap_or_default().to_owned(),
    )
}

pub fn all() -> anyhow::Result<()> {
    deps::install()?;
    let stale = leftovers::find();
    if !stale.is_empty() {
        eprintln!("removing what earlier, interrupted test runs left behind:");
        stale.report();
        leftovers::clean(&stale);
    }
    let host_before = host_forwarding();
    let cargo = cargo();

    // The only build: every target of every crate, which the steps below reuse.
    step::run(
        "building every crate and test (cargo build --workspace --all-targets)",
        "read cargo's error above; if a system tool is missing, `cargo xtask deps` installs it",
        || run_shown(&cargo, &["build", "--workspace", "--all-targets"], &[]),
    )?;

    // CI must not pass with skipped privileged tests.
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let require = if ci || skip::skips_are_failures() {
        "1"
    } else {
        "0"
    };
    let _ = std::fs::remove_file(SKIP_LOG);
    let privileged_env = [(REQUIRE_ENV, require), (SKIP_LOG_ENV, SKIP_LOG)];
    let tests_fix = "the failing test and its output are above; `cargo xtask clean` removes what \
                     an interrupted run left behind";
    let checks = [
        Check {
            what: "formatting (cargo fmt --check)",
            args: &["fmt", "--all", "--check"],
            env: &[],
            fix: "run `cargo fmt --all`",
        },
        Check {
            what: "lints (cargo clippy -D warnings)",
            args: &[
                "clippy",
                "--workspace",
                "--all-targets",
                // The fuzz targets' entry points too, which only the fuzz build compiles.
                "--features",
                "mesh-agent/fuzzing,mesh-control/fuzzing",
                "--",
                "-D",
                "warnings",
            ],
            env: &[],
            fix: "mend what clippy names above",
        },
        Check {
            what: "unit tests",
            args: &["test", "--workspace", "--exclude", "mesh-tests"],
            env: &[],
            fix: tests_fix,
        },
        Check {
            what: "privileged multi-node tests (tests/, two at a time)",
            args: &["test", "-p", "mesh-tests", "--", "--test-threads=2"],
            env: &privileged_env,
            fix: tests_fix,
        },
    ];
    let mut failed = Vec::new();
    if let Err(err) = step::run(
        "the systemd unit (systemd-analyze verify packaging/meshd.service)",
        "mend what systemd-analyze names above in packaging/meshd.service",
        || dist::verify_unit(Path::new("target/debug/meshd")),
    ) {
        eprintln!("error: {}", step::one_line(&err));
        failed.push("systemd unit check");
    }
    if let Err(err) = step::run(
        "the Vagrant lab (vagrant validate vagrant/Vagrantfile)",
        "mend what vagrant names above in vagrant/Vagrantfile",
        crate::vagrant::validate,
    ) {
        eprintln!("error: {}", step::one_line(&err));
        failed.push("Vagrantfile check");
    }
    // Failing tests' errors, said again at the end where a cut log still shows them.
    let mut failing_tests = Vec::new();
    for check in checks {
        let result = step::run(check.what, check.fix, || {
            if check.args.first() != Some(&"test") {
                return run_shown(&cargo, check.args, check.env);
            }
            let (passed, output) = digest::run_teed(&cargo, check.args, check.env)?;
            failing_tests.extend(digest::failures(&output));
            ensure!(passed, "`cargo {}` failed", check.args.join(" "));
            Ok(())
        });
        if let Err(err) = result {
            eprintln!("error: {}", step::one_line(&err));
            failed.push(check.what);
        }
    }
    // A bounded run of every fuzz target, from the committed seeds (its own instrumented build).
    let fuzzing = format!(
        "fuzzing ({} targets, {} s each)",
        fuzz::TARGETS.len(),
        fuzz::CI_SECONDS
    );
    if let Err(err) = step::run(
        &fuzzing,
        "the failing target and the input that broke it are above",
        || fuzz::fuzz(fuzz::TARGETS, fuzz::CI_SECONDS),
    ) {
        eprintln!("error: {}", step::one_line(&err));
        failed.push("fuzzing");
    }
    let skipped = skip::recorded(Path::new(SKIP_LOG));

    let left = leftovers::find();
    if !left.is_empty() {
        left.report();
        leftovers::clean(&left);
        failed.push("leftover check");
    }
    let host_after = host_forwarding();
    if host_after != host_before {
        eprintln!("host forwarding settings changed: {host_before:?} -> {host_after:?}");
        failed.push("host settings check");
    }
    for line in &skipped {
        eprintln!("{line}");
    }
    if !failing_tests.is_empty() {
        eprintln!("failing tests (their output is above):");
        for line in &failing_tests {
            eprintln!("  {line}");
        }
    }
    let skips = match skipped.len() {
        0 => "no test skipped".to_owned(),
        1 => "1 privileged test skipped (listed above)".to_owned(),
        n => format!("{n} privileged tests skipped (listed above)"),
    };
    if !failed.is_empty() {
        bail!("failed: {}; {skips}", failed.join(", "));
    }
    eprintln!("all checks passed; {skips}");
    Ok(())
}
