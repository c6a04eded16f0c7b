//! Progress a newcomer can follow: each step of a task says what it does as it starts and how long
//! it took as it ends; a failed step says in one line what failed and what to do about it.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::anyhow;

/// Runs one step: announces `what`, runs `work`, reports its duration; on failure the error names
/// the step, its cause and `fix`.
pub fn run<T>(
    what: &str,
    fix: &str,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let started = begin(what);
    end(what, fix, started, work())
}

/// [`run`] for a step that awaits.
pub async fn run_async<T>(
    what: &str,
    fix: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let started = begin(what);
    end(what, fix, started, work.await)
}

fn begin(what: &str) -> Instant {
    eprintln!("==> {what}");
    Instant::now()
}

fn end<T>(what: &str, fix: &str, started: Instant, result: anyhow::Result<T>) -> anyhow::Result<T> {
    let took = took(started.elapsed());
    match result {
        Ok(value) => {
            eprintln!("==> {what}: done in {took}");
            Ok(value)
        }
        Err(err) => Err(anyhow!(
            "{what} failed after {took}: {err:#}. To fix: {fix}"
        )),
    }
}

/// A duration as a person reads it: `0.4 s`, `12.3 s`, `3 min 07 s`.
pub fn took(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = elapsed.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// An error as one line: its chain joined with `: `, any line breaks in it folded.
pub fn one_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    parts.join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        let cases = [
            (Duration::from_millis(400), "0.4 s"),
            (Duration::from_millis(12_340), "12.3 s"),
            (Duration::from_secs(60), "1 min 00 s"),
            (Duration::from_secs(187), "3 min 07 s"),
        ];
        for (elapsed, want) in cases {
            assert_eq!(took(elapsed), want, "{elapsed:?}");
        }
    }

    #[test]
    fn a_failed_step_names_itself_its_cause_and_the_fix() {
        let err = run("installing packages", "run `cargo xtask deps`", || {
            Err::<(), _>(anyhow!("`apt-get update` failed\nE: no network").context("apt"))
        })
        .unwrap_err();
        let line = one_line(&err);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with(
                "installing packages failed after 0.0 s: apt: `apt-get update` failed"
            ),
            "{line}"
        );
        assert!(line.contains("E: no network"), "{line}");
        assert!(line.ends_with("To fix: run `cargo xtask deps`"), "{line}");
    }

    #[test]
    fn a_step_that_works_passes_its_value_on() {
        assert_eq!(run("adding", "none", || Ok(2 + 2)).unwrap(), 4);
    }
}
