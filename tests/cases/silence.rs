//! Managers that go silent: their packets are dropped (iptables DROP on the node's underlay), not
//! refused. A silent follower does not hold up the leader's writes; a silent leader is noticed by
//! the agents within three heartbeat periods, they carry on with the manager elected in its
//! place, their running tasks are left alone, and no healthy node is marked down meanwhile.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, ensure};
use mesh_tests::observe::{leader_seen_by, node_rows};
use mesh_tests::process::run_sync_ok;
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, Role, require_privileged, wait_for, wait_until};

const CONVERGE: Duration = Duration::from_secs(60);
/// The heartbeat period the cluster runs with.
const PERIOD: Duration = Duration::from_secs(1);
/// Behaviour bound, not a benchmark: a write with one of three managers silent.
const WRITE: Duration = Duration::from_secs(5);
/// How long after the leader goes silent the worker's standing is watched.
const WATCH: Duration = Duration::from_secs(20);

/// Drops (`-I`) or stops dropping (`-D`) everything `node` sends or receives on its underlay.
fn silence(node: &Node, action: &str) -> anyhow::Result<()> {
    let ns = node.netns().name();
    for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
        run_sync_ok(
            "ip",
            &[
                "netns", "exec", ns, "iptables", action, chain, dir, "eth0", "-j", "DROP",
            ],
        )?;
    }
    Ok(())
}

/// Container ids of `service` running on `node`, sorted.
async fn running(node: &Node, service: &str) -> anyhow::Result<Vec<String>> {
    let mut ids = node.containers(service, false).await?;
    ids.sort();
    Ok(ids)
}

/// When the worker's meshd first logged a failed session at or after `since`, if it has.
fn session_failure_after(node: &Node, since: SystemTime) -> Option<SystemTime> {
    let log = std::fs::read_to_string(node.dir().join("meshd.log")).ok()?;
    log.lines()
        .filter(|l| l.contains("session failed"))
        .filter_map(|l| l.split_whitespace().next().and_then(parse_rfc3339))
        .find(|at| *at >= since)
}

/// `2026-12-03T06:07:37.269682Z` as a time, without a date crate.
fn parse_rfc3339(stamp: &str) -> Option<SystemTime> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + min * 60 + s).ok()?;
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

#[test]
fn log_timestamps_parse() {
    let at = parse_rfc3339("2026-12-03T06:07:37.269682Z").expect("parses");
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970");
    assert_eq!(since_epoch.as_secs(), 1_796_278_057);
    assert_eq!(since_epoch.subsec_micros(), 269_682);
    assert_eq!(parse_rfc3339("garbage"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_managers_are_noticed_and_worked_around() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = Cluster::builder()
        .managers(3)
        .workers(1)
        .dispatcher_heartbeat("1s")
        .start()
        .await?;
    let worker = cluster.node("node4")?;
    cluster
        .manager()
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--constraint",
            "node.role==worker",
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ])
        .await?;
    let tasks = wait_for(CONVERGE, "2 web tasks on the worker", async || {
        let ids = running(worker, "web").await?;
        Ok((ids.len() == 2).then_some(ids))
    })
    .await?;
    let leader = leader_seen_by(cluster.manager())
        .await?
        .context("no leader")?;
    let managers: Vec<&Node> = cluster
        .nodes()
        .iter()
        .filter(|n| n.role() == Role::Manager)
        .collect();

    // A silent follower: the leader's writes go on with the other one.
    let follower = managers
        .iter()
        .find(|n| n.hostname() != leader)
        .context("a follower")?;
    let leading = cluster.node(&leader)?;
    eprintln!(
        "{leader} leads; silencing follower {} at {:?}",
        follower.hostname(),
        SystemTime::now()
    );
    silence(follower, "-I")?;
    let started = Instant::now();
    let written = leading
        .meshctl(&[
            "service",
            "create",
            "-d",
            "--name",
            "during",
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ])
        .await;
    let took = started.elapsed();
    silence(follower, "-D")?;
    written?.ok("service create with a follower silent")?;
    ensure!(
        took < WRITE,
        "a write took {took:?} with one follower silent"
    );
    wait_until(CONVERGE, "the follower to catch up", async || {
        let services = follower.meshctl_json(&["service", "ls"]).await?;
        Ok(services.iter().any(|s| s["Name"] == "during"))
    })
    .await?;

    // A silent leader.
    let silenced_at = SystemTime::now();
    eprintln!("silencing leader {leader} at {silenced_at:?}");
    silence(leading, "-I")?;
    let watching = Instant::now();
    let survivors: Vec<&Node> = managers
        .iter()
        .copied()
        .filter(|n| n.hostname() != leader)
        .collect();
    let mut new_leader = None;
    let mut worker_down = Vec::new();
    while watching.elapsed() < WATCH {
        for survivor in &survivors {
            if let Ok(rows) = node_rows(survivor).await {
                for row in rows.iter().filter(|r| r.hostname == "node4" && r.is_down()) {
                    worker_down.push((survivor.hostname().to_owned(), row.status.clone()));
                }
                if let Some(row) = rows.iter().find(|r| r.is_leader() && r.hostname != leader) {
                    new_leader.get_or_insert(row.hostname.clone());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let noticed = session_failure_after(worker, silenced_at)
        .context("the worker never noticed its silent manager")?;
    let noticed = noticed.duration_since(silenced_at).unwrap_or_default();
    eprintln!("the worker noticed the silent leader after {noticed:?}");
    ensure!(
        noticed <= PERIOD * 3,
        "the worker took {noticed:?} to notice a silent manager"
    );
    let new_leader = new_leader.context("no new leader was elected")?;
    ensure!(
        worker_down.is_empty(),
        "the healthy worker was marked down: {worker_down:?}"
    );
    // The worker works with the new leader: its tasks were left alone, and new work reaches it.
    let new_leading = cluster.node(&new_leader)?;
    ensure!(
        running(worker, "web").await? == tasks,
        "the worker's tasks were touched"
    );
    new_leading
        .meshctl_ok(&["service", "scale", "-d", "web=3"])
        .await?;
    wait_until(CONVERGE, "a third web task on the worker", async || {
        Ok(running(worker, "web").await?.len() == 3)
    })
    .await?;
    let row = node_rows(new_leading)
        .await?
        .into_iter()
        .find(|r| r.hostname == "node4")
        .context("node4 in node ls")?;
    ensure!(row.is_ready(), "node4 after the leader's silence: {row:?}");
    silence(leading, "-D")?;
    cluster.close()
}
