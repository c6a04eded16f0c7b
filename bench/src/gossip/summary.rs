//! The line that ends each simulated size, so that runs can be compared by script:
//! `gossip: members=N converge-s=S join-seen-all-s=J death-seen-all-s=D bytes-per-member-s=B`,
//! then more `key=value` fields. A time that could not be measured reads `n/a`.

use std::fmt;

use anyhow::Context;

/// The fields every line has, in their order; [`Summary::extra`] follow them.
pub const REQUIRED: [&str; 5] = [
    "members",
    "converge-s",
    "join-seen-all-s",
    "death-seen-all-s",
    "bytes-per-member-s",
];

/// What a value that could not be measured reads.
pub const NOT_MEASURED: &str = "n/a";

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub members: u64,
    /// From the first join until every member saw every other.
    pub converge_s: Option<f64>,
    /// From a new member's join (after convergence) until the last member saw it.
    pub join_seen_all_s: Option<f64>,
    /// From a member's crash until the last survivor had it down.
    pub death_seen_all_s: Option<f64>,
    /// Bytes sent per member per second while nothing changes (sealed datagrams as on the wire).
    pub bytes_per_member_s: f64,
    /// More figures, `key=value`, in order (keys without spaces or `=`).
    pub extra: Vec<(String, String)>,
}

impl Summary {
    /// The value of extra field `key`, if it is there and a number.
    pub fn extra_number(&self, key: &str) -> Option<f64> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
    }
}

/// `value` with `decimals`, or [`NOT_MEASURED`].
pub fn maybe(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| NOT_MEASURED.to_owned(), |v| format!("{v:.decimals$}"))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gossip: members={} converge-s={} join-seen-all-s={} death-seen-all-s={} \
             bytes-per-member-s={:.0}",
            self.members,
            maybe(self.converge_s, 2),
            maybe(self.join_seen_all_s, 2),
            maybe(self.death_seen_all_s, 2),
            self.bytes_per_member_s,
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
            crate::summary_line::fields(line, "gossip: ", "gossip summary line", &REQUIRED)?;
        let real = |i: usize| -> anyhow::Result<f64> {
            let (key, value) = &fields[i];
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .with_context(|| format!("{key}={value} is not a number"))
        };
        let time = |i: usize| -> anyhow::Result<Option<f64>> {
            if fields[i].1 == NOT_MEASURED {
                return Ok(None);
            }
            real(i).map(Some)
        };
        let (key, value) = &fields[0];
        Ok(Summary {
            members: value
                .parse()
                .with_context(|| format!("{key}={value} is not a whole number"))?,
            converge_s: time(1)?,
            join_seen_all_s: time(2)?,
            death_seen_all_s: time(3)?,
            bytes_per_member_s: real(4)?,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        Summary {
            members: 1000,
            converge_s: Some(10.62),
            join_seen_all_s: Some(1.25),
            death_seen_all_s: None,
            bytes_per_member_s: 812.0,
            extra: vec![
                ("join-p50-s".into(), "0.61".into()),
                ("build".into(), "release".into()),
            ],
        }
    }

    #[test]
    fn the_line_has_its_fixed_form_and_parses_back() {
        let line = sample().to_string();
        assert_eq!(
            line,
            "gossip: members=1000 converge-s=10.62 join-seen-all-s=1.25 death-seen-all-s=n/a \
             bytes-per-member-s=812 join-p50-s=0.61 build=release"
        );
        let back: Summary = line.parse().expect("parses");
        assert_eq!(back, sample());
        assert_eq!(back.extra_number("join-p50-s"), Some(0.61));
        assert_eq!(back.extra_number("build"), None);
        assert_eq!(back.extra_number("absent"), None);
        assert_eq!(back.to_string(), line);
    }

    #[test]
    fn malformed_lines_are_refused() {
        let good = sample().to_string();
        let cases = [
            ("", "starts with"),
            ("scale: nodes=1", "starts with"),
            ("gossip: members=1 converge-s=2", "at least 5"),
            (
                &good.replace("converge-s=", "settle-s="),
                "\"settle-s\" where \"converge-s\"",
            ),
            (&good.replace("members=1000", "members=n/a"), "whole number"),
            (
                &good.replace("bytes-per-member-s=812", "bytes-per-member-s=n/a"),
                "not a number",
            ),
            (
                &good.replace("converge-s=10.62", "converge-s=-1"),
                "not a number",
            ),
            (
                &good.replace("converge-s=10.62", "converge-s=inf"),
                "not a number",
            ),
            (&good.replace(" build=release", " build"), "not key=value"),
            (&good.replace("build=release", "build="), "empty"),
            (&good.replace(' ', "  "), "not key=value"),
        ];
        for (line, expected) in cases {
            let err = line.parse::<Summary>().expect_err(line).to_string();
            assert!(err.contains(expected), "{line:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
