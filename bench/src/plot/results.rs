//! Results files (`bench/results/*.txt`): one benchmark summary line per run, as the benchmark
//! printed it, with `#` comments between. `# machine: …` says where the runs were made; a comment
//! starting `# debug build` or `# release build` says how the lines after it were built, and a
//! `[condition]` right after it (`# release build [idle cores] …`) sets them apart as a series of
//! their own, made under other conditions.

use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, bail};

/// The runs of one results file.
#[derive(Debug)]
pub struct Results<T> {
    /// The `# machine:` comments' text.
    pub machine: Vec<String>,
    /// Each run, with the build its section says (`debug`, `release`, `release, idle cores`, or
    /// empty when unsaid).
    pub runs: Vec<(String, T)>,
}

/// Reads and parses `path`; an error names the file and line.
pub fn read<T>(path: &Path) -> anyhow::Result<Results<T>>
where
    T: FromStr<Err = anyhow::Error>,
{
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| path.display().to_string())
}

pub fn parse<T>(text: &str) -> anyhow::Result<Results<T>>
where
    T: FromStr<Err = anyhow::Error>,
{
    let mut results = Results {
        machine: Vec::new(),
        runs: Vec::new(),
    };
    let mut build = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if let Some(machine) = comment.strip_prefix("machine:") {
                results.machine.push(machine.trim().to_owned());
            }
            for kind in ["debug", "release"] {
                if let Some(rest) = comment.strip_prefix(&format!("{kind} build")) {
                    build = match rest.trim_start().strip_prefix('[') {
                        Some(condition) => {
                            let (condition, _) = condition
                                .split_once(']')
                                .with_context(|| format!("line {}: no `]`", i + 1))?;
                            format!("{kind}, {}", condition.trim())
                        }
                        None => kind.to_owned(),
                    };
                }
            }
            continue;
        }
        let run = line
            .parse()
            .with_context(|| format!("line {}: {line:?}", i + 1))?;
        results.runs.push((build.clone(), run));
    }
    if results.runs.is_empty() {
        bail!("no summary line");
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::summary::Summary;

    #[test]
    fn comments_set_the_machine_and_the_build() {
        let text = "# machine: 2 cores\n\
                    gossip: members=10 converge-s=0.4 join-seen-all-s=0.1 death-seen-all-s=14 bytes-per-member-s=500\n\
                    \n\
                    # debug build, shared cores\n\
                    gossip: members=100 converge-s=1 join-seen-all-s=0.2 death-seen-all-s=15 bytes-per-member-s=600\n\
                    # release build\n\
                    gossip: members=1000 converge-s=9 join-seen-all-s=n/a death-seen-all-s=16 bytes-per-member-s=700\n\
                    # release build [idle cores], later\n\
                    gossip: members=2000 converge-s=9 join-seen-all-s=1 death-seen-all-s=16 bytes-per-member-s=700\n";
        let r: Results<Summary> = parse(text).expect("parses");
        assert_eq!(r.machine, ["2 cores"]);
        let got: Vec<(&str, u64)> = r
            .runs
            .iter()
            .map(|(b, s)| (b.as_str(), s.members))
            .collect();
        assert_eq!(
            got,
            [
                ("", 10),
                ("debug", 100),
                ("release", 1000),
                ("release, idle cores", 2000)
            ]
        );
        assert_eq!(r.runs[2].1.join_seen_all_s, None);
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let cases = [
            ("", "no summary line"),
            ("# only a comment\n", "no summary line"),
            ("# machine: x\ngossip: members=1\n", "line 2"),
            ("scale: nodes=1\n", "line 1"),
            ("# release build [idle\nscale: nodes=1\n", "line 1: no `]`"),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", parse::<Summary>(text).expect_err(text));
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
