//! The one line that ends every run, so that runs can be compared by script:
//! `scale: nodes=N tasks=T managers=M all-running-s=S tasks/s=R leader-rss-mib=X
//! raft-entries/s=E largest-msg-kib=K`, then more `key=value` fields.

use std::fmt;

use anyhow::Context;

/// The fields the issue fixes, in their order; [`Summary::extra`] follow them.
pub const REQUIRED: [&str; 8] = [
    "nodes",
    "tasks",
    "managers",
    "all-running-s",
    "tasks/s",
    "leader-rss-mib",
    "raft-entries/s",
    "largest-msg-kib",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub nodes: u64,
    pub tasks: u64,
    pub managers: u64,
    pub all_running_s: f64,
    pub tasks_per_s: f64,
    pub leader_rss_mib: f64,
    pub raft_entries_per_s: f64,
    pub largest_msg_kib: f64,
    /// More figures, `key=value`, in order (keys without spaces or `=`).
    pub extra: Vec<(String, String)>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scale: nodes={} tasks={} managers={} all-running-s={:.2} tasks/s={:.0} \
             leader-rss-mib={:.1} raft-entries/s={:.1} largest-msg-kib={:.1}",
            self.nodes,
            self.tasks,
            self.managers,
            self.all_running_s,
            self.tasks_per_s,
            self.leader_rss_mib,
            self.raft_entries_per_s,
            self.largest_msg_kib,
        )?;
        for (key, value) in &self.extra {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Summary {
    type Err = anyhow::Error;

    /// Reads a summary line back: the prefix, the required fields in their order, then any more.
    fn from_str(line: &str) -> anyhow::Result<Self> {
        let (fields, extra) =
            crate::summary_line::fields(line, "scale: ", "summary line", &REQUIRED)?;
        let int = |i: usize| -> anyhow::Result<u64> {
            let (key, value) = &fields[i];
            value
                .parse()
                .with_context(|| format!("{key}={value} is not a whole number"))
        };
        let real = |i: usize| -> anyhow::Result<f64> {
            let (key, value) = &fields[i];
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .with_context(|| format!("{key}={value} is not a number"))
        };
        Ok(Summary {
            nodes: int(0)?,
            tasks: int(1)?,
            managers: int(2)?,
            all_running_s: real(3)?,
            tasks_per_s: real(4)?,
            leader_rss_mib: real(5)?,
            raft_entries_per_s: real(6)?,
            largest_msg_kib: real(7)?,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        Summary {
            nodes: 100,
            tasks: 10_000,
            managers: 3,
            all_running_s: 12.25,
            tasks_per_s: 810.0,
            leader_rss_mib: 210.3,
            raft_entries_per_s: 55.5,
            largest_msg_kib: 48.2,
            extra: vec![
                ("join-s".into(), "3.21".into()),
                ("services".into(), "10".into()),
            ],
        }
    }

    #[test]
    fn the_line_has_the_issues_form_and_parses_back() {
        let line = sample().to_string();
        assert_eq!(
            line,
            "scale: nodes=100 tasks=10000 managers=3 all-running-s=12.25 tasks/s=810 \
             leader-rss-mib=210.3 raft-entries/s=55.5 largest-msg-kib=48.2 join-s=3.21 services=10"
        );
        let back: Summary = line.parse().expect("parses");
        assert_eq!(back.nodes, 100);
        assert_eq!(back.tasks, 10_000);
        assert_eq!(back.managers, 3);
        assert_eq!(back.all_running_s, 12.25);
        assert_eq!(back.tasks_per_s, 810.0);
        assert_eq!(back.leader_rss_mib, 210.3);
        assert_eq!(back.raft_entries_per_s, 55.5);
        assert_eq!(back.largest_msg_kib, 48.2);
        assert_eq!(back.extra, sample().extra);
        // Printed again, the parsed line is the same line.
        assert_eq!(back.to_string(), line);
    }

    #[test]
    fn malformed_lines_are_refused() {
        let good = sample().to_string();
        let cases = [
            ("", "starts with"),
            ("nodes=1", "starts with"),
            ("scale: nodes=1 tasks=2", "at least 8"),
            (&good.replace("tasks=", "jobs="), "\"jobs\" where \"tasks\""),
            (
                &good.replace("nodes=100", "nodes=many"),
                "not a whole number",
            ),
            (&good.replace("tasks/s=810", "tasks/s=NaN"), "not a number"),
            (&good.replace("tasks/s=810", "tasks/s=-1"), "not a number"),
            (&good.replace(" join-s=3.21", " join-s"), "not key=value"),
            (&good.replace("join-s=3.21", "join-s="), "empty"),
            (&good.replace(' ', "  "), "not key=value"),
        ];
        for (line, expected) in cases {
            let err = line.parse::<Summary>().expect_err(line).to_string();
            assert!(err.contains(expected), "{line:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
