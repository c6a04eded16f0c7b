//! `cargo xtask bench scale` flags, and the checks clap cannot make alone (one flag against
//! another), each failing with one line that says what is wrong.

use anyhow::bail;
use mesh_control::limits::MAX_REPLICAS;

/// Most simulated nodes one run may have: each holds a connection (a file descriptor) in this
/// process and in the leader, whose open-file limit is 20,000 on these machines.
pub const MAX_NODES: u32 = 15_000;
/// Most tasks one run may create.
pub const MAX_TASKS: u64 = 10_000_000;
/// Most managers: a Raft group larger than 7 only slows its commits.
pub const MAX_MANAGERS: u16 = 7;

#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ScaleArgs {
    /// Benchmark release builds of meshd and of the simulated agents (builds them first).
    #[arg(long)]
    pub release: bool,
    /// Simulated nodes (agents in this process, each with its own certificate and session).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_NODES)))]
    pub nodes: u32,
    /// Tasks to create and see running.
    #[arg(long, value_name = "T",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TASKS))]
    pub tasks: u64,
    /// Managers (real meshd processes: Raft on disk, mTLS, gRPC); drained, so that every task
    /// goes to a simulated node.
    #[arg(long, value_name = "M", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_MANAGERS)))]
    pub managers: u16,
    /// Services the tasks are spread over (default: one per 1,000 tasks, at least one).
    #[arg(long, value_name = "S",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub services: Option<u64>,
}

/// What a run creates, once the flags are checked against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub nodes: u32,
    pub tasks: u64,
    pub managers: u16,
    pub services: u64,
}

impl Plan {
    pub fn new(args: &ScaleArgs) -> anyhow::Result<Self> {
        let services = args.services.unwrap_or((args.tasks / 1000).max(1));
        if services > args.tasks {
            bail!(
                "--services {services} is more than --tasks {}: every service needs a task",
                args.tasks
            );
        }
        let plan = Plan {
            nodes: args.nodes,
            tasks: args.tasks,
            managers: args.managers,
            services,
        };
        let largest = plan.replicas(0);
        if largest > MAX_REPLICAS {
            bail!(
                "{} tasks over {services} services is {largest} replicas per service, above the \
                 limit of {MAX_REPLICAS}: pass --services {} or more",
                args.tasks,
                args.tasks.div_ceil(MAX_REPLICAS)
            );
        }
        Ok(plan)
    }

    /// The replicas of service `index`: the tasks split as evenly as they go, the first
    /// services taking one more.
    pub fn replicas(&self, index: u64) -> u64 {
        let (each, extra) = (self.tasks / self.services, self.tasks % self.services);
        each + u64::from(index < extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: ScaleArgs,
    }

    fn parse(line: &str) -> Result<Plan, String> {
        let words = std::iter::once("scale").chain(line.split_whitespace());
        let cli = Cli::try_parse_from(words).map_err(|e| e.to_string())?;
        Plan::new(&cli.args).map_err(|e| e.to_string())
    }

    #[test]
    fn good_flags_give_the_plan() {
        let cases = [
            ("--nodes 100 --tasks 10000", (100, 10_000, 1, 10)),
            ("--nodes 1 --tasks 1", (1, 1, 1, 1)),
            ("--nodes 1000 --tasks 999 --managers 3", (1000, 999, 3, 1)),
            ("--nodes 5 --tasks 10 --services 10", (5, 10, 1, 10)),
            (
                "--nodes 15000 --tasks 1000000",
                (15_000, 1_000_000, 1, 1000),
            ),
        ];
        for (line, (nodes, tasks, managers, services)) in cases {
            let plan = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let want = Plan {
                nodes,
                tasks,
                managers,
                services,
            };
            assert_eq!(plan, want, "{line}");
        }
    }

    #[test]
    fn bad_flags_fail_with_one_line() {
        let cases = [
            ("--nodes 0 --tasks 10", "--nodes"),
            ("--nodes 15001 --tasks 10", "--nodes"),
            ("--nodes ten --tasks 10", "--nodes"),
            ("--nodes=-3 --tasks 10", "--nodes"),
            ("--tasks 10", "--nodes"),
            ("--nodes 10", "--tasks"),
            ("--nodes 10 --tasks 0", "--tasks"),
            ("--nodes 10 --tasks 10000001", "--tasks"),
            ("--nodes 10 --tasks 10 --managers 0", "--managers"),
            ("--nodes 10 --tasks 10 --managers 8", "--managers"),
            ("--nodes 10 --tasks 10 --services 0", "--services"),
            (
                "--nodes 10 --tasks 10 --services 11",
                "--services 11 is more than --tasks 10",
            ),
            (
                "--nodes 10 --tasks 200001 --services 2",
                "pass --services 3 or more",
            ),
        ];
        for (line, expected) in cases {
            let err = parse(line).expect_err(line);
            // clap's errors are its own (the error, then usage); ours are one line.
            assert!(err.contains(expected), "{line}: {err}");
            if !err.starts_with("error:") {
                assert_eq!(err.lines().count(), 1, "{line}: {err}");
            }
        }
    }

    #[test]
    fn tasks_are_split_evenly() {
        let plan = Plan {
            nodes: 1,
            tasks: 10,
            managers: 1,
            services: 3,
        };
        let split: Vec<u64> = (0..3).map(|i| plan.replicas(i)).collect();
        assert_eq!(split, [4, 3, 3]);
    }
}
