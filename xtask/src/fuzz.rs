//! `cargo xtask fuzz`: the fuzz targets under `fuzz/`, built and run with cargo-fuzz (libFuzzer)
//! for a bounded time each, starting from the committed seed corpora. cargo-fuzz is installed by
//! this module at a pinned version under `target/fuzz-tools/` (so a rerun reuses it); its
//! nightly-only flags are accepted by the stable compiler through `RUSTC_BOOTSTRAP=1`, which is
//! set for the fuzz build alone.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use mesh_tests::process::{cargo, run_shown};

use crate::{deps, step};

/// The cargo-fuzz release this repository is fuzzed with.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every target in `fuzz/Cargo.toml`, in the order they run.
pub const TARGETS: &[&str] = &[
    "gossip_datagram",
    "gossip_frame",
    "dns_query",
    "raft_payload",
    "api_request",
    "meshctl_args",
    "meshctl_flag",
    "compose_file",
];

/// How long `cargo xtask test` runs each target: about a minute in all.
pub const CI_SECONDS: u64 = 8;

/// Where cargo-fuzz is installed, and where the fuzz build and its scratch corpora go.
const TOOLS: &str = "target/fuzz-tools";
const TARGET_DIR: &str = "target/fuzz";

/// What `cargo xtask fuzz` was asked.
#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// One target (default: every target in turn)
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    target: Option<String>,
    /// How long to run each target
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Rewrite the seed corpora (fuzz/corpus/<target>/seed-*) from mesh's own encodings instead
    #[arg(long, conflicts_with_all = ["target", "seconds"])]
    write_seeds: bool,
}

/// `cargo xtask fuzz …`.
pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    if args.write_seeds {
        return write_seeds();
    }
    let targets: Vec<&str> = match &args.target {
        Some(target) => vec![target.as_str()],
        None => TARGETS.to_vec(),
    };
    crate::deps::install()?;
    fuzz(&targets, args.seconds)
}

/// Installs cargo-fuzz if needed, builds `targets`, then runs each for `seconds`; fails on the
/// first crash, hang or runaway allocation, naming the input that caused it.
pub fn fuzz(targets: &[&str], seconds: u64) -> anyhow::Result<()> {
    let cargo_fuzz = install_cargo_fuzz()?;
    let root = std::env::current_dir().context("cannot read the current directory")?;
    let target_dir = root.join(TARGET_DIR);
    let target_dir = target_dir.to_string_lossy();
    let mut build = vec!["fuzz", "build", "--target-dir", &target_dir];
    if let [one] = targets {
        build.push(one);
    }
    step::run(
        "building the fuzz targets (cargo fuzz build)",
        "read cargo's error above",
        || run_shown(&cargo_fuzz.to_string_lossy(), &build, &fuzz_env()),
    )?;
    let mut results = Vec::new();
    for target in targets {
        let what = format!("fuzzing {target} for {seconds} s");
        let fix = "the input is saved as the artifact named above: rerun it with `cargo xtask fuzz \
                   TARGET`, fix the code (an error, not a panic), add a unit test and copy the \
                   input into fuzz/corpus/TARGET/";
        results.push(step::run(&what, fix, || {
            run_target(&cargo_fuzz, &root, target, seconds)
        })?);
    }
    for result in &results {
        eprintln!("{result}");
    }
    Ok(())
}

/// The environment of every cargo-fuzz command: stable rustc taking nightly flags.
fn fuzz_env() -> [(&'static str, &'static str); 1] {
    [("RUSTC_BOOTSTRAP", "1")]
}

/// The installed cargo-fuzz, installed first if it is missing or of another version.
fn install_cargo_fuzz() -> anyhow::Result<PathBuf> {
    deps::cargo_tool("cargo-fuzz", CARGO_FUZZ_VERSION, TOOLS, "cargo xtask fuzz")
}

/// One target's bounded run, as libFuzzer reported it.
#[derive(Debug, Default, PartialEq, Eq)]
struct RunStats {
    runs: u64,
    per_second: u64,
    corpus: u64,
}

/// What one target did, for the closing summary.
struct TargetResult {
    target: String,
    seconds: f64,
    stats: RunStats,
}

impl std::fmt::Display for TargetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {:<16} {:>5.1} s {:>10} runs {:>8}/s  corpus {:>5}  no crash",
            self.target, self.seconds, self.stats.runs, self.stats.per_second, self.stats.corpus
        )
    }
}

fn run_target(
    cargo_fuzz: &Path,
    root: &Path,
    target: &str,
    seconds: u64,
) -> anyhow::Result<TargetResult> {
    // New inputs go to a scratch corpus under target/; the committed seeds are only read.
    let scratch = root.join(TARGET_DIR).join("corpus").join(target);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let seeds = root.join("fuzz").join("corpus").join(target);
    let args = [
        "fuzz".to_string(),
        "run".into(),
        "--target-dir".into(),
        root.join(TARGET_DIR).to_string_lossy().into_owned(),
        target.into(),
        scratch.to_string_lossy().into_owned(),
        seeds.to_string_lossy().into_owned(),
        "--".into(),
        format!("-max_total_time={seconds}"),
        // An input that takes this long is a hang; one that needs this much memory, a leak.
        "-timeout=10".into(),
        "-rss_limit_mb=2048".into(),
        "-malloc_limit_mb=512".into(),
        "-print_final_stats=1".into(),
    ];
    eprintln!("+ RUSTC_BOOTSTRAP=1 cargo fuzz {}", args[1..].join(" "));
    let started = Instant::now();
    let mut child = Command::new(cargo_fuzz)
        .args(&args)
        .envs(fuzz_env())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", cargo_fuzz.display()))?;
    let mut log = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // libFuzzer's progress lines are many; the rest (cargo, errors, stats) are shown.
            if !is_progress(&line) {
                eprintln!("{line}");
            }
            log.push(line);
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    if !status.success() {
        let artifact = log
            .iter()
            .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
            .unwrap_or("(no input saved)");
        bail!("{target} failed ({status}); the input: {artifact}");
    }
    Ok(TargetResult {
        target: target.into(),
        seconds: started.elapsed().as_secs_f64(),
        stats: parse_stats(&log),
    })
}

/// A libFuzzer status line (`#1024 pulse …`, `#77 NEW …`) or the newly covered functions it
/// lists under one (`\tNEW_FUNC[1/3]: …`).
fn is_progress(line: &str) -> bool {
    (line.starts_with('#') && line.split_whitespace().nth(1).is_some_and(|w| w != "DONE"))
        || line.trim_start().starts_with("NEW_FUNC[")
}

/// The executions, their rate and the corpus size from libFuzzer's final lines.
fn parse_stats(log: &[String]) -> RunStats {
    let stat = |name: &str| {
        log.iter()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let corpus = log
        .iter()
        .rev()
        .find_map(|l| {
            let after = l.split_once(" corp: ")?.1;
            after.split('/').next()?.parse().ok()
        })
        .unwrap_or(0);
    RunStats {
        runs: stat("stat::number_of_executed_units:"),
        per_second: stat("stat::average_exec_per_sec:"),
        corpus,
    }
}

/// Rewrites the seed corpora with the fuzz package's `seeds` example: a plain build, in the
/// workspace's target directory so that it reuses what the workspace's build compiled.
fn write_seeds() -> anyhow::Result<()> {
    crate::deps::install()?;
    let target_dir = "target";
    step::run(
        "writing the seed corpora (fuzz/examples/seeds.rs)",
        "read cargo's error above",
        || {
            run_shown(
                &cargo(),
                &[
                    "run",
                    "--manifest-path",
                    "fuzz/Cargo.toml",
                    "--target-dir",
                    target_dir,
                    "--example",
                    "seeds",
                ],
                &[],
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `[[bin]]` of fuzz/Cargo.toml is run, and nothing else is named.
    #[test]
    fn the_target_list_is_the_fuzz_package_s() {
        let manifest = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml"),
        )
        .expect("fuzz/Cargo.toml");
        let mut bins: Vec<&str> = manifest
            .split("[[bin]]")
            .skip(1)
            .filter_map(|section| {
                let line = section.lines().find(|l| l.starts_with("name = "))?;
                Some(line.trim_start_matches("name = ").trim_matches('"'))
            })
            .collect();
        let mut listed = TARGETS.to_vec();
        bins.sort_unstable();
        listed.sort_unstable();
        assert_eq!(bins, listed);
    }

    /// Every target has committed seeds.
    #[test]
    fn every_target_has_a_seed_corpus() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for target in TARGETS {
            let seeds = std::fs::read_dir(corpus.join(target))
                .map(|d| d.count())
                .unwrap_or(0);
            assert!(seeds > 0, "fuzz/corpus/{target} has no seeds");
        }
    }

    #[test]
    fn libfuzzer_s_final_lines_give_the_stats() {
        let log: Vec<String> = [
            "#2\tINITED cov: 14 ft: 14 corp: 1/1b exec/s: 0 rss: 33Mb",
            "#2097152\tpulse  cov: 14 ft: 14 corp: 1/1b lim: 4096 exec/s: 699050 rss: 197Mb",
            "#3253832\tDONE   cov: 14 ft: 14 corp: 12/311b lim: 4096 exec/s: 542305 rss: 284Mb",
            "Done 3253832 runs in 6 second(s)",
            "stat::number_of_executed_units: 3253832",
            "stat::average_exec_per_sec:     542305",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            parse_stats(&log),
            RunStats {
                runs: 3_253_832,
                per_second: 542_305,
                corpus: 12
            }
        );
        assert!(is_progress(&log[1]));
        assert!(is_progress(
            "\tNEW_FUNC[1/2]: 0x55e0d5c85570 in <serde_json::de::Deserializer>::peek_error"
        ));
        assert!(!is_progress(&log[2]), "DONE is shown");
        assert!(!is_progress(&log[3]));
    }
}
