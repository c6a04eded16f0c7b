//! What the benchmark reads of the managers: their Prometheus metrics (Raft commit index, tasks
//! by state, who leads), their memory, and how long the operator's listings take.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mesh_tests::Node;

/// One scrape of a manager's metrics: the figures this benchmark uses.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scrape {
    pub leader: bool,
    pub commit_index: f64,
    pub running: f64,
    /// Agent sessions the manager serves.
    pub sessions: f64,
}

/// The text of a manager's metrics.
pub async fn body(node: &Node) -> anyhow::Result<String> {
    let (code, body) = node.metrics_get("/metrics").await?;
    if code != 200 {
        bail!("{}'s metrics answered {code}", node.hostname());
    }
    Ok(body)
}

pub async fn scrape(node: &Node) -> anyhow::Result<Scrape> {
    let body = body(node).await?;
    let get = |name: &str| metric(&body, name).unwrap_or(0.0);
    Ok(Scrape {
        leader: get("mesh_raft_leader") == 1.0,
        commit_index: get("mesh_raft_commit_index"),
        running: get("mesh_tasks{state=\"running\"}"),
        sessions: get("mesh_dispatcher_sessions"),
    })
}

/// The index in `managers` of the one whose metrics say it leads.
pub async fn leader(managers: &[Node]) -> anyhow::Result<usize> {
    for (i, node) in managers.iter().enumerate() {
        if scrape(node).await.is_ok_and(|s| s.leader) {
            return Ok(i);
        }
    }
    bail!("no manager says it leads")
}

/// The value of the sample `name` (with its labels, as printed) in a text exposition.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// How long `meshctl ARGS` takes on `node`, the slowest of `tries` runs (a process start included,
/// as for an operator).
pub async fn time_cli(node: &Node, args: &[&str], tries: usize) -> anyhow::Result<Duration> {
    let mut slowest = Duration::ZERO;
    for _ in 0..tries {
        let started = Instant::now();
        node.meshctl_ok(args)
            .await
            .with_context(|| format!("meshctl {}", args.join(" ")))?;
        slowest = slowest.max(started.elapsed());
    }
    Ok(slowest)
}

/// This process's resident memory in MiB.
pub fn own_rss_mib() -> f64 {
    crate::api_load::memory_kib(std::process::id(), "VmRSS").map_or(0.0, |k| k as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_name_and_labels() {
        let body = "# HELP mesh_raft_commit_index x\n# TYPE mesh_raft_commit_index gauge\n\
                    mesh_raft_commit_index 42\nmesh_raft_commit_index_other 7\n\
                    mesh_tasks{state=\"pending\"} 3\nmesh_tasks{state=\"running\"} 1000\n\
                    mesh_raft_leader 1\n# EOF\n";
        let cases = [
            ("mesh_raft_commit_index", Some(42.0)),
            ("mesh_tasks{state=\"running\"}", Some(1000.0)),
            ("mesh_tasks{state=\"pending\"}", Some(3.0)),
            ("mesh_raft_leader", Some(1.0)),
            ("mesh_raft", None),
            ("mesh_tasks", None),
            ("mesh_absent", None),
        ];
        for (name, want) in cases {
            assert_eq!(metric(body, name), want, "{name}");
        }
    }
}
