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
/// Most service creates in flight at once.
pub const MAX_CREATES: u16 = 64;

/// Swarm3k's size (October 2016): 4,700 nodes, about 47,000 containers of one service.
pub const SWARM3K_NODES: u32 = 4_700;
pub const SWARM3K_TASKS: u64 = 47_000;

/// A named workload, in place of `--nodes`, `--tasks` and `--services`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Swarm3k replayed: 4,700 nodes, 47,000 tasks of one service, scaled up in batches of
    /// 4,700 (one more task per node each), each batch once the last one runs.
    Swarm3k,
}

#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ScaleArgs {
    /// Benchmark release builds of meshd and of the simulated agents (builds them first).
    #[arg(long)]
    pub release: bool,
    /// Simulated nodes (agents in this process, each with its own certificate and session).
    #[arg(long, value_name = "N", required_unless_present = "scenario",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_NODES)))]
    pub nodes: Option<u32>,
    /// Tasks to create and see running.
    #[arg(long, value_name = "T", required_unless_present = "scenario",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TASKS))]
    pub tasks: Option<u64>,
    /// Managers (real meshd processes: Raft on disk, mTLS, gRPC); drained, so that every task
    /// goes to a simulated node.
    #[arg(long, value_name = "M", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_MANAGERS)))]
    pub managers: u16,
    /// Services the tasks are spread over (default: one per 1,000 tasks, at least one).
    #[arg(long, value_name = "S",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub services: Option<u64>,
    /// Create the tasks in batches of B: every service is created with its share of the first
    /// batch and scaled up by the next once all tasks so far run (default: all at once).
    #[arg(long, value_name = "B",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,
    /// A named workload instead of --nodes, --tasks and --services.
    #[arg(long, value_enum, conflicts_with_all = ["nodes", "tasks", "services"])]
    pub scenario: Option<Scenario>,
    /// Service creates (and scale-ups) in flight at once: 1, one after another as a script of
    /// `meshctl service create` makes them; more, as several clients at once.
    #[arg(long, value_name = "C", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_CREATES)))]
    pub creates: u16,
}

/// What a run creates, once the flags are checked against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub nodes: u32,
    pub tasks: u64,
    pub managers: u16,
    pub services: u64,
    /// Tasks created per batch (all of them: one batch).
    pub batch: u64,
    pub scenario: Option<Scenario>,
    /// Service creates in flight at once.
    pub creates: u16,
}

impl Plan {
    pub fn new(args: &ScaleArgs) -> anyhow::Result<Self> {
        let (nodes, tasks, services, batch) = match args.scenario {
            Some(Scenario::Swarm3k) => (SWARM3K_NODES, SWARM3K_TASKS, 1, SWARM3K_NODES.into()),
            None => {
                let (Some(nodes), Some(tasks)) = (args.nodes, args.tasks) else {
                    bail!("--nodes and --tasks are needed without --scenario");
                };
                let services = args.services.unwrap_or((tasks / 1000).max(1));
                (nodes, tasks, services, tasks)
            }
        };
        let batch = args.batch.unwrap_or(batch);
        if services > tasks {
            bail!("--services {services} is more than --tasks {tasks}: every service needs a task");
        }
        if batch < services {
            bail!(
                "--batch {batch} is less than the {services} services: every batch needs a task \
                 for each"
            );
        }
        let plan = Plan {
            nodes,
            tasks,
            managers: args.managers,
            services,
            batch: batch.min(tasks),
            scenario: args.scenario,
            creates: args.creates,
        };
        let largest = plan.replicas(0);
        if largest > MAX_REPLICAS {
            bail!(
                "{tasks} tasks over {services} services is {largest} replicas per service, above \
                 the limit of {MAX_REPLICAS}: pass --services {} or more",
                tasks.div_ceil(MAX_REPLICAS)
            );
        }
        Ok(plan)
    }

    /// The replicas of service `index`: the tasks split as evenly as they go, the first
    /// services taking one more.
    pub fn replicas(&self, index: u64) -> u64 {
        split(self.tasks, self.services, index)
    }

    /// The tasks in place once batch `b` (from 0) is created: a batch more each time, the last
    /// one what is left.
    pub fn after_batch(&self, b: u64) -> u64 {
        (self.batch * (b + 1)).min(self.tasks)
    }

    pub fn batches(&self) -> u64 {
        self.tasks.div_ceil(self.batch)
    }

    /// Service `index`'s replicas once `total` tasks are in place, split as [`Self::replicas`].
    pub fn replicas_at(&self, total: u64, index: u64) -> u64 {
        split(total, self.services, index)
    }
}

/// Share `index` of `total` split over `parts` as evenly as it goes, the first parts taking one
/// more.
fn split(total: u64, parts: u64, index: u64) -> u64 {
    total / parts + u64::from(index < total % parts)
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
                batch: tasks,
                scenario: None,
                creates: 1,
            };
            assert_eq!(plan, want, "{line}");
        }
    }

    #[test]
    fn batches_and_the_swarm3k_scenario() {
        let plan = parse("--scenario swarm3k").expect("swarm3k");
        let want = Plan {
            nodes: 4_700,
            tasks: 47_000,
            managers: 1,
            services: 1,
            batch: 4_700,
            scenario: Some(Scenario::Swarm3k),
            creates: 1,
        };
        assert_eq!(plan, want);
        assert_eq!(plan.batches(), 10);
        let concurrent = parse("--scenario swarm3k --creates 16").expect("16 at once");
        assert_eq!(concurrent.creates, 16);
        let steps: Vec<u64> = (0..plan.batches()).map(|b| plan.after_batch(b)).collect();
        assert_eq!(steps.first(), Some(&4_700));
        assert_eq!(steps.last(), Some(&47_000));
        assert!(steps.windows(2).all(|w| w[1] - w[0] == 4_700), "{steps:?}");

        let plan = parse("--scenario swarm3k --batch 10000 --managers 3").expect("batch");
        assert_eq!((plan.batch, plan.managers, plan.batches()), (10_000, 3, 5));
        assert_eq!(plan.after_batch(4), 47_000);

        // Batches over several services: each service's share grows with every batch, and the
        // shares always add up to the tasks in place.
        let plan = parse("--nodes 10 --tasks 25 --services 3 --batch 10").expect("batched");
        assert_eq!(plan.batches(), 3);
        for b in 0..plan.batches() {
            let total = plan.after_batch(b);
            let shares: u64 = (0..3).map(|s| plan.replicas_at(total, s)).sum();
            assert_eq!(shares, total, "batch {b}");
        }
        assert_eq!(plan.after_batch(2), 25);
        // A batch larger than the tasks is one batch.
        let plan = parse("--nodes 1 --tasks 5 --batch 50").expect("one batch");
        assert_eq!((plan.batch, plan.batches()), (5, 1));
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
            ("--scenario swarm3k --nodes 10", "--nodes"),
            ("--scenario swarm3k --services 2", "--services"),
            ("--scenario swarm4k", "swarm4k"),
            ("--nodes 10 --tasks 10 --batch 0", "--batch"),
            (
                "--nodes 10 --tasks 10 --services 5 --batch 3",
                "--batch 3 is less than the 5 services",
            ),
            ("--nodes 10 --tasks 0", "--tasks"),
            ("--nodes 10 --tasks 10000001", "--tasks"),
            ("--nodes 10 --tasks 10 --managers 0", "--managers"),
            ("--nodes 10 --tasks 10 --managers 8", "--managers"),
            ("--nodes 10 --tasks 10 --creates 0", "--creates"),
            ("--nodes 10 --tasks 10 --creates 65", "--creates"),
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
            batch: 10,
            scenario: None,
            creates: 1,
        };
        let split: Vec<u64> = (0..3).map(|i| plan.replicas(i)).collect();
        assert_eq!(split, [4, 3, 3]);
    }
}
