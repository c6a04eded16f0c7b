//! `cargo xtask bench plot`: the growth curves of the benchmarks as SVG, drawn from the summary
//! lines committed in `bench/results/` (`scale.txt`, `gossip.txt`; see [`results`]):
//! scale's all-running time, tasks/s and leader RSS against tasks (a series per node count and
//! build), gossip's join and death seen-by-all times and bytes per member per second against
//! members.

mod draw;
mod results;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::gossip::summary::Summary as GossipSummary;
use crate::scale::summary::Summary as ScaleSummary;
use draw::{Chart, Series};
use results::Results;

#[derive(clap::Args)]
pub struct PlotArgs {
    /// Where the results files are.
    #[arg(long, value_name = "DIR", default_value = "bench/results")]
    results: PathBuf,
    /// Where the SVG files go (created if missing; existing plots of the same name replaced).
    #[arg(long, value_name = "DIR", default_value = "docs/benchmarks")]
    out: PathBuf,
}

pub fn plot(args: PlotArgs) -> anyhow::Result<()> {
    let scale: Results<ScaleSummary> = results::read(&args.results.join("scale.txt"))?;
    let gossip: Results<GossipSummary> = results::read(&args.results.join("gossip.txt"))?;
    // Every plot is drawn before any is written: a bad input leaves the old plots as they were.
    let mut files = Vec::new();
    for (name, chart) in scale_charts(&scale)
        .into_iter()
        .chain(gossip_charts(&gossip))
    {
        files.push((name, draw::svg(&chart)?));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for (name, svg) in &files {
        let path = args.out.join(name);
        write(&path, svg)?;
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes `path` whole or not at all (a temporary file renamed over it).
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("svg.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}

/// The machine line(s) of a results file, for a chart's small print.
fn machine<T>(r: &Results<T>) -> String {
    if r.machine.is_empty() {
        String::new()
    } else {
        format!("machine: {}", r.machine.join("; "))
    }
}

/// `name, build` or `name` when the build is unsaid.
fn with_build(name: String, build: &str) -> String {
    if build.is_empty() {
        name
    } else {
        format!("{name}, {build}")
    }
}

fn scale_charts(r: &Results<ScaleSummary>) -> Vec<(&'static str, Chart)> {
    // A series per node count and build, its points in order of tasks.
    let series = |y: fn(&ScaleSummary) -> f64| -> Vec<Series> {
        let mut by: BTreeMap<(u64, &str), Vec<(f64, f64)>> = BTreeMap::new();
        for (build, s) in &r.runs {
            by.entry((s.nodes, build.as_str()))
                .or_default()
                .push((s.tasks as f64, y(s)));
        }
        by.into_iter()
            .map(|((nodes, build), mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    name: with_build(format!("{nodes} nodes"), build),
                    points,
                }
            })
            .collect()
    };
    let chart = |title: &str, y: &str, f: fn(&ScaleSummary) -> f64| Chart {
        title: title.into(),
        note: machine(r),
        x: "tasks".into(),
        y: y.into(),
        series: series(f),
    };
    vec![
        (
            "scale-all-running.svg",
            chart("scale: create to all running", "all running (s)", |s| {
                s.all_running_s
            }),
        ),
        (
            "scale-tasks-per-s.svg",
            chart("scale: tasks per second", "tasks/s", |s| s.tasks_per_s),
        ),
        (
            "scale-leader-rss.svg",
            chart("scale: leader RSS", "leader RSS (MiB)", |s| {
                s.leader_rss_mib
            }),
        ),
    ]
}

fn gossip_charts(r: &Results<GossipSummary>) -> Vec<(&'static str, Chart)> {
    // A series per figure and build, its points in order of members.
    let series = |name: &str, y: &dyn Fn(&GossipSummary) -> Option<f64>| -> Vec<Series> {
        let mut by: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        for (build, s) in &r.runs {
            let build = s
                .extra
                .iter()
                .find(|(k, _)| k == "build")
                .map_or(build.as_str(), |(_, v)| v.as_str());
            if let Some(y) = y(s) {
                by.entry(build).or_default().push((s.members as f64, y));
            }
        }
        by.into_iter()
            .map(|(build, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    name: with_build(name.to_owned(), build),
                    points,
                }
            })
            .collect()
    };
    let spread = [
        series("join seen by all", &|s| s.join_seen_all_s),
        series("death seen by all", &|s| s.death_seen_all_s),
        series("all see all (from bootstrap)", &|s| s.converge_s),
    ];
    let bytes = [
        series("idle", &|s| Some(s.bytes_per_member_s)),
        series("during a join", &|s| {
            s.extra_number("join-bytes-per-member-s")
        }),
        series("during a death", &|s| {
            s.extra_number("death-bytes-per-member-s")
        }),
    ];
    vec![
        (
            "gossip-seen-by-all.svg",
            Chart {
                title: "gossip: time until every member sees it".into(),
                note: machine(r),
                x: "members".into(),
                y: "seconds".into(),
                series: spread.into_iter().flatten().collect(),
            },
        ),
        (
            "gossip-bytes-per-member.svg",
            Chart {
                title: "gossip: bytes sent per member per second".into(),
                note: machine(r),
                x: "members".into(),
                y: "bytes/s (sealed datagrams)".into(),
                series: bytes.into_iter().flatten().collect(),
            },
        ),
    ]
}

#[cfg(test)]
mod tests;
