//! What failed, said again at the end of a run: a failing privileged test prints its nodes' logs
//! (hundreds of lines) before its error, and the steps after it print more, so a log cut to its
//! head and tail loses the one line that matters. [`run_teed`] shows a test run's output as it
//! comes and keeps it; [`failures`] picks out each failing test's name and error.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The most lines kept of one test's error (an anyhow chain, a panic message and its location).
const ERROR_LINES: usize = 12;

/// Runs `program ARGS` as [`mesh_tests::process::run_shown`] does, but also keeps what it prints
/// on stdout (where libtest writes its results) and returns it with the outcome.
pub fn run_teed(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(bool, String)> {
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("+ {}{program} {}", shown.concat(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let Some(stdout) = child.stdout.take() else {
        bail!("{program}'s output was not captured");
    };
    let mut kept = String::new();
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        // A line that is not UTF-8 is shown lossily rather than ending the run.
        let line = line.unwrap_or_else(|e| format!("(unreadable line: {e})"));
        let _ = writeln!(out, "{line}");
        kept.push_str(&line);
        kept.push('\n');
    }
    drop(out);
    let status = child.wait().context("waiting for the tests")?;
    Ok((status.success(), kept))
}

/// Each failing test in libtest's output, as `name: error` lines: the test's `---- NAME stdout
/// ----` section is searched for the error a `Result` test returned (`Error: …`) or a panic
/// (`thread '…' panicked at …` and its message).
pub fn failures(output: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut test: Option<&str> = None;
    let mut lines = output.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            test = Some(name);
            continue;
        }
        let Some(name) = test else { continue };
        let starts = line.starts_with("Error: ")
            || (line.starts_with("thread '") && line.contains("panicked at"));
        if !starts {
            continue;
        }
        let mut error = vec![line.trim().to_owned()];
        while let Some(next) = lines.peek() {
            if next.starts_with("---- ")
                || next.starts_with("failures:")
                || next.starts_with("note: run with `RUST_BACKTRACE")
                || error.len() == ERROR_LINES
            {
                break;
            }
            let next = lines.next().unwrap_or_default().trim();
            if !next.is_empty() {
                error.push(next.to_owned());
            }
        }
        found.push(format!("{name}: {}", error.join(" / ")));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failing_test_is_named_with_its_error() {
        let output = "\
running 2 tests
test a ... FAILED
test b ... FAILED

failures:

---- a stdout ----
---- meshd log of node1 ----
2026 INFO Error: not this one, it is inside a log line
Error: the rollback to complete: not within 60 s

Caused by:
    service ps: exit 1
---- b stdout ----
thread 'b' panicked at tests/cases/x.rs:10:5:
assertion `left == right` failed
  left: 1
 right: 2
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

failures:
    a
    b
";
        assert_eq!(
            failures(output),
            [
                "a: Error: the rollback to complete: not within 60 s / Caused by: / service ps: exit 1",
                "b: thread 'b' panicked at tests/cases/x.rs:10:5: / assertion `left == right` failed / left: 1 / right: 2",
            ]
        );
    }

    #[test]
    fn a_passing_run_has_no_failures() {
        let output = "running 1 test\ntest a ... ok\n\ntest result: ok. 1 passed\n";
        assert!(failures(output).is_empty());
    }
}
