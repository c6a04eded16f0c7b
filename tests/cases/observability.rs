//! What an operator watching a small cluster sees: every node serves Prometheus metrics on
//! `<addr>:9323` that a real text parser reads and that say what the cluster is (2 replicas
//! running, a Raft term, 2 backends behind the service's VIP, both agents' sessions), and
//! `meshctl events` streams the changes of services and networks in order, replays them with
//! `--since`, and filters them by type.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, require_privileged, wait_until};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

const CONVERGE: Duration = Duration::from_secs(60);

/// Every sample of a scrape, `name{k="v",…}` (labels sorted) → value, read by prometheus-parse.
fn parse(text: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .context("the scrape does not parse")?;
    Ok(scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            labels.sort();
            let key = if labels.is_empty() {
                s.metric
            } else {
                format!("{}{{{}}}", s.metric, labels.join(","))
            };
            Some((key, value))
        })
        .collect())
}

async fn scrape(node: &Node) -> anyhow::Result<BTreeMap<String, f64>> {
    let (code, body) = node.metrics_get("/metrics").await?;
    ensure!(
        code == 200,
        "GET /metrics on {}: {code} {body}",
        node.hostname()
    );
    parse(&body)
}

/// `meshctl events --format json` on `node`, running in the background: its lines as they come.
fn follow_events(
    node: &Node,
) -> anyhow::Result<(tokio::process::Child, mpsc::UnboundedReceiver<Value>)> {
    let bin = mesh_tests::meshctl::binary("meshctl")?;
    let host = format!("unix://{}", node.socket().display());
    let mut child = tokio::process::Command::new(bin)
        .args(["-H", &host, "events", "--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start meshctl events")?;
    let stdout = child.stdout.take().context("meshctl's stdout")?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Value>(&line) {
                Ok(event) => {
                    let _ = tx.send(event);
                }
                Err(err) => {
                    eprintln!("meshctl events printed a line that is not JSON ({err}): {line}")
                }
            }
        }
    });
    Ok((child, rx))
}

/// `Type Action name` of an event, with the replicas change of a service update.
fn summary(event: &Value) -> String {
    let attributes = &event["Actor"]["Attributes"];
    let attribute = |k: &str| attributes[k].as_str().unwrap_or_default().to_owned();
    let (kind, action) = (
        event["Type"].as_str().unwrap_or_default(),
        event["Action"].as_str().unwrap_or_default(),
    );
    match (kind, action) {
        ("service", "update") if !attribute("replicas.new").is_empty() => format!(
            "{kind} {action} {} replicas {}->{}",
            attribute("name"),
            attribute("replicas.old"),
            attribute("replicas.new")
        ),
        ("task", _) => format!("{kind} {action} {}", attribute("service")),
        _ => format!("{kind} {action} {}", attribute("name")),
    }
}

/// What a user did, in the order they did it.
const EXPECTED: [&str; 5] = [
    "network create obsnet",
    "service create web",
    "service update web replicas 2->3",
    "service remove web",
    "network remove obsnet",
];

/// The events of `events` that are about what the user did (services and networks named so),
/// in the order they came.
fn users_changes(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| matches!(e["Type"].as_str(), Some("service" | "network")))
        .map(summary)
        .filter(|s| s.contains("obsnet") || s.starts_with("service ") && s.contains(" web"))
        .filter(|s| !s.starts_with("service update web") || s.contains("replicas"))
        .collect()
}

#[tokio::test]
async fn metrics_and_events_show_what_the_cluster_does() -> anyhow::Result<()> {
    require_privileged!();
    let mut cluster = Cluster::builder().managers(1).workers(1).start().await?;
    let manager = cluster.manager();
    let worker = &cluster.nodes()[1];
    let before = mesh_control::store::now_nanos();
    let (mut events_child, mut live) = follow_events(manager)?;
    // The subscription is open once meshctl is connected: give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", "obsnet"])
        .await?;
    manager
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            "--network",
            "obsnet",
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ])
        .await?;

    // The metrics say what the cluster is.
    wait_until(
        CONVERGE,
        "the scrape to show 2 running tasks and 2 backends",
        async || {
            let values = scrape(manager).await?;
            let running = values.get("mesh_tasks{state=\"running\"}").copied();
            let backends = |values: &BTreeMap<String, f64>| {
                values
                    .iter()
                    .filter(|(k, _)| k.starts_with("mesh_service_vip_backends{"))
                    .map(|(_, v)| *v)
                    .fold(0.0, f64::max)
            };
            let worker_values = scrape(worker).await?;
            Ok(running == Some(2.0) && backends(&values) == 2.0 && backends(&worker_values) == 2.0)
        },
    )
    .await?;
    let values = scrape(manager).await?;
    ensure!(values["mesh_raft_term"] >= 1.0, "{values:?}");
    ensure!(values["mesh_raft_commit_index"] >= 1.0, "{values:?}");
    ensure!(values.get("mesh_raft_leader") == Some(&1.0), "{values:?}");
    ensure!(
        values.get("mesh_dispatcher_sessions") == Some(&2.0),
        "{values:?}"
    );
    ensure!(
        values["mesh_raft_leader_changes_total"] >= 1.0,
        "{values:?}"
    );
    ensure!(
        values["mesh_process_resident_memory_bytes"] > 1e6,
        "{values:?}"
    );
    ensure!(
        values.get("mesh_gossip_members") == Some(&2.0),
        "{values:?}"
    );
    let (_, text) = manager.metrics_get("/metrics").await?;
    ensure!(
        text.contains("mesh_raft_commit_latency_seconds_bucket")
            && text
                .contains("mesh_kernel_netlink_call_duration_seconds_count{call=\"create_veth\"}")
            && text.contains(
                "mesh_kernel_lb_update_duration_seconds_count{backend=\"ebpf\",op=\"set_vip\"}"
            ),
        "histograms missing:\n{text}"
    );
    // A worker has no control plane to speak of; a bad path is refused.
    let worker_values = scrape(worker).await?;
    ensure!(
        !worker_values.contains_key("mesh_raft_term"),
        "{worker_values:?}"
    );
    let (code, _) = worker.metrics_get("/nope").await?;
    ensure!(code == 404, "GET /nope: {code}");

    manager
        .meshctl_ok(&["service", "scale", "-d", "web=3"])
        .await?;
    manager.meshctl_ok(&["service", "rm", "web"]).await?;
    wait_until(CONVERGE, "the service's tasks to be gone", async || {
        Ok(manager.meshctl_json(&["service", "ls"]).await?.is_empty())
    })
    .await?;
    wait_until(CONVERGE, "the network to be removable", async || {
        Ok(manager
            .meshctl(&["network", "rm", "obsnet"])
            .await?
            .success())
    })
    .await?;

    // The live stream saw it all, in order.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while users_changes(&seen).len() < EXPECTED.len() {
        let event = tokio::time::timeout_at(deadline, live.recv())
            .await
            .with_context(|| format!("events so far: {:?}", users_changes(&seen)))?
            .context("meshctl events ended")?;
        ensure!(
            event["scope"] == "swarm" && event["timeNano"].as_i64().unwrap_or(0) >= before,
            "{event}"
        );
        ensure!(
            event["time"].as_i64() == event["timeNano"].as_i64().map(|n| n / 1_000_000_000),
            "{event}"
        );
        seen.push(event);
    }
    ensure!(
        users_changes(&seen) == EXPECTED,
        "{:?}",
        users_changes(&seen)
    );
    ensure!(
        seen.iter().any(|e| summary(e) == "task create web"),
        "no task event: {seen:?}"
    );
    events_child.kill().await.ok();

    // --since replays (and --until ends the stream); a filter filters.
    let since = before.to_string();
    let since_seconds = format!("{}.{:09}", before / 1_000_000_000, before % 1_000_000_000);
    let replay = manager
        .meshctl_json(&["events", "--since", &since_seconds, "--until", "0s"])
        .await?;
    ensure!(
        users_changes(&replay) == EXPECTED,
        "{:?}",
        users_changes(&replay)
    );
    let networks = manager
        .meshctl_json(&[
            "events",
            "--since",
            &since_seconds,
            "--until",
            "0s",
            "--filter",
            "type=network",
        ])
        .await?;
    let kinds: Vec<String> = networks.iter().map(summary).collect();
    ensure!(
        kinds == ["network create obsnet", "network remove obsnet"],
        "{kinds:?}"
    );
    // Docker's text line.
    let text = manager
        .meshctl_ok(&[
            "events",
            "--since",
            &since_seconds,
            "--until",
            "0s",
            "--filter",
            "type=service",
        ])
        .await?;
    let create = text
        .lines()
        .find(|l| l.contains(" service create "))
        .with_context(|| format!("no service create line in:\n{text}"))?;
    let (time, rest) = create.split_once(' ').context("a time first")?;
    ensure!(
        time.len() == 30 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
        "{create}"
    );
    ensure!(
        rest.starts_with("service create ") && rest.ends_with(" (name=web)"),
        "{create}"
    );
    let _ = since;

    // Bad input: one line, and nothing streams.
    let bad = manager
        .meshctl(&["events", "--filter", "type=container"])
        .await?;
    ensure!(!bad.success(), "{bad:?}");
    ensure!(
        bad.stderr.trim().lines().count() == 1 && bad.stderr.contains("unknown event type"),
        "{bad:?}"
    );

    // A restarted manager applies its log again: that is not news.
    cluster.nodes_mut()[0].restart_meshd().await?;
    let manager = cluster.manager();
    wait_until(
        CONVERGE,
        "the manager to have applied its log again",
        async || {
            let nodes = manager.meshctl(&["node", "ls", "--format", "json"]).await?;
            Ok(nodes.success() && nodes.json_lines()?.len() == 2)
        },
    )
    .await?;
    let after_restart = manager
        .meshctl_json(&["events", "--since", &since_seconds, "--until", "0s"])
        .await?;
    ensure!(
        users_changes(&after_restart).is_empty(),
        "replayed as news: {:?}",
        users_changes(&after_restart)
    );
    cluster.close()
}
