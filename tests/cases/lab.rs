//! Labs (`cargo xtask lab`), for real: a lab comes up initialised and joined, `exec` reaches a
//! node's meshd, every fault does what it says to pings between nodes and `heal` undoes it, a
//! partition cuts exactly the pairs across its groups, bad arguments change nothing, two labs run
//! side by side, and `down` leaves nothing behind, also after the `lab up` that made a lab was
//! killed half-way.
//!
//! Lab names here start with `lt`; labs take their subnets from 10.233.X (the tests' clusters use
//! 10.231.X), so none of this meets another test.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mesh_tests::lab::fault::{self, Fault, Partition};
use mesh_tests::lab::{self, Health, LabSpec, LabState};
use mesh_tests::{process, require_privileged, wait_until};

/// A lab this test owns: a leftover if the test dies.
fn spec(name: &str, managers: usize, workers: usize) -> LabSpec {
    let mut spec = LabSpec::new(name, managers, workers);
    spec.owned = true;
    spec
}

/// What `ping -c COUNT` from one node to another saw: packets received and the average RTT.
struct Pings {
    received: usize,
    avg_ms: Option<f64>,
}

fn ping(
    state: &LabState,
    from: &str,
    to: &str,
    count: usize,
    interval: &str,
) -> anyhow::Result<Pings> {
    let from = state.node(from)?;
    let to = state.node(to)?.addr.to_string();
    let cmd: Vec<String> = [
        "ping",
        "-q",
        "-n",
        "-W",
        "1",
        "-i",
        interval,
        "-c",
        &count.to_string(),
        &to,
    ]
    .map(String::from)
    .to_vec();
    let out = lab::exec_command(state, &from, &cmd)?.output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let received = text
        .split(", ")
        .find_map(|part| part.strip_suffix(" received")?.parse().ok())
        .with_context(|| format!("no packet count in ping's output: {text}"))?;
    let avg_ms = text
        .split(" = ")
        .nth(1)
        .and_then(|values| values.split('/').nth(1)?.parse().ok());
    Ok(Pings { received, avg_ms })
}

/// `lab fault NODE …`, through the code the command runs.
fn inject(state: &mut LabState, node: &str, fault: Fault) -> anyhow::Result<()> {
    let node = state.node(node)?;
    fault::apply(state, &node, fault)
}

fn reaches(state: &LabState, from: &str, to: &str) -> anyhow::Result<bool> {
    Ok(ping(state, from, to, 2, "0.2")?.received > 0)
}

/// Everything a lab command could change: the record, each node's iptables rules and link state,
/// the running delayers.
fn snapshot(state: &LabState) -> anyhow::Result<String> {
    let mut all = std::fs::read_to_string(state.dir().join("lab.json"))?;
    for node in state.nodes() {
        all += &process::run_sync_ok(
            "ip",
            &[
                "netns",
                "exec",
                &node.netns,
                "iptables-save",
                "-t",
                "mangle",
            ],
        )?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
        all += &process::run_sync_ok("ip", &["-br", "link", "show", "dev", &node.netns])?;
    }
    all += &format!("{:?}", process::pids_with_cmdline(lab::delay::BINARY));
    Ok(all)
}

/// Runs the built `xtask` binary (`target/debug/xtask`) with `args`.
fn xtask(args: &[&str]) -> anyhow::Result<process::Output> {
    let bin = mesh_tests::meshctl::binary("xtask")?;
    process::run_sync(&bin.display().to_string(), args)
}

#[tokio::test]
async fn a_lab_takes_faults_and_partitions_and_refuses_bad_arguments() -> anyhow::Result<()> {
    require_privileged!();
    let lab = lab::up(&spec("ltfault", 1, 2)).await?;
    let mut state = lab.state().clone();

    // `exec` runs meshctl pointed at the node: node1 lists every node, Ready.
    let ls = ["meshctl", "node", "ls"].map(String::from);
    let out = lab::exec_command(&state, &state.node("node1")?, &ls)?.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "meshctl node ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["node1", "node2", "node3"] {
        ensure!(text.contains(name), "{name} missing from node ls:\n{text}");
    }
    ensure!(
        text.matches("Ready").count() == 3,
        "not every node is Ready:\n{text}"
    );

    let base = ping(&state, "node1", "node2", 10, "0.05")?;
    ensure!(
        base.received == 10,
        "{} of 10 pings before any fault",
        base.received
    );
    let base_rtt = base.avg_ms.context("no RTT")?;

    // Loss: about half of 100 pings (whose replies leave node2) get through.
    inject(&mut state, "node2", Fault::Loss(50.0))?;
    let lossy = ping(&state, "node1", "node2", 100, "0.02")?;
    ensure!(
        (25..=75).contains(&lossy.received),
        "{} of 100 pings through 50% loss",
        lossy.received
    );
    inject(&mut state, "node2", Fault::Heal)?;
    let healed = ping(&state, "node1", "node2", 20, "0.02")?;
    ensure!(
        healed.received == 20,
        "{} of 20 pings after heal",
        healed.received
    );

    // Delay: node3's replies wait 50 ms in its delayer.
    inject(&mut state, "node3", Fault::Delay(Duration::from_millis(50)))?;
    let delayer = state.faults["node3"]
        .delayer
        .context("no delayer recorded")?;
    let slow = ping(&state, "node1", "node3", 5, "0.1")?;
    let slow_rtt = slow.avg_ms.context("no RTT through the delay")?;
    ensure!(
        slow.received == 5,
        "{} of 5 pings through the delay",
        slow.received
    );
    ensure!(
        slow_rtt >= base_rtt + 50.0,
        "RTT {slow_rtt} ms with a 50 ms delay, {base_rtt} ms without"
    );
    inject(&mut state, "node3", Fault::Heal)?;
    ensure!(
        !process::alive(delayer) || process::wait_gone(delayer, Duration::from_secs(2)),
        "delayer {delayer} still runs after heal"
    );
    let fast = ping(&state, "node1", "node3", 5, "0.1")?;
    ensure!(
        fast.avg_ms.is_some_and(|ms| ms < 10.0),
        "RTT after heal: {:?}",
        fast.avg_ms
    );
    ensure!(
        state.faults.is_empty(),
        "faults left after heal: {:?}",
        state.faults
    );

    // Link down: node2 reaches nobody and nobody reaches it, until the link is up again.
    inject(&mut state, "node2", Fault::LinkDown)?;
    ensure!(
        !reaches(&state, "node1", "node2")?,
        "node2 answers with its link down"
    );
    ensure!(
        !reaches(&state, "node2", "node3")?,
        "node2 reaches node3 with its link down"
    );
    inject(&mut state, "node2", Fault::LinkUp)?;
    ensure!(
        reaches(&state, "node1", "node2")?,
        "node2 unreachable after link-up"
    );

    // A partition cuts exactly the pairs across its groups, both ways; a node in no group keeps
    // every path, and a new partition replaces the last one.
    for (spec, pairs) in [
        ("1/2,3", [(1, 2, false), (1, 3, false), (2, 3, true)]),
        ("1/2", [(1, 2, false), (1, 3, true), (2, 3, true)]),
    ] {
        fault::partition(&mut state, Some(&Partition::parse(spec, 3)?))?;
        for (a, b, open) in pairs {
            let (a, b) = (format!("node{a}"), format!("node{b}"));
            let want = if open { "open" } else { "cut" };
            ensure!(
                reaches(&state, &a, &b)? == open,
                "{spec}: {a} -> {b} should be {want}"
            );
            ensure!(
                reaches(&state, &b, &a)? == open,
                "{spec}: {b} -> {a} should be {want}"
            );
        }
    }
    fault::partition(&mut state, None)?;
    ensure!(
        reaches(&state, "node1", "node3")?,
        "still cut after the partition healed"
    );

    // Bad arguments: each says what is wrong in one line and changes nothing.
    let before = snapshot(&state)?;
    let bad: &[&[&str]] = &[
        &["fault", "node9", "loss", "5%"],
        &["fault", "node2", "loss", "150%"],
        &["fault", "node2", "delay", "50"],
        &["fault", "node2", "delay", "-5ms"],
        &["fault", "node2", "unplug"],
        &["partition", "1,2"],
        &["partition", "1/7"],
        &["partition", "1/1,2"],
        &["exec", "node4", "--", "true"],
    ];
    for args in bad {
        let mut full = vec!["lab", "--name", "ltfault"];
        full.extend_from_slice(args);
        let out = xtask(&full)?;
        let err = out.stderr.trim();
        ensure!(!out.success(), "xtask {} succeeded", full.join(" "));
        ensure!(
            err.starts_with("error: ") && err.lines().count() == 1,
            "xtask {}: not a one-line error: {err:?}",
            full.join(" ")
        );
    }
    ensure!(state.node("node9").is_err() && Partition::parse("a/b", 3).is_err());
    ensure!(
        snapshot(&state)? == before,
        "a refused command changed the lab"
    );

    lab.close()
}

#[tokio::test]
async fn two_labs_run_side_by_side_and_go_down_one_at_a_time() -> anyhow::Result<()> {
    require_privileged!();
    let (spec_a, spec_b) = (spec("ltsidea", 1, 1), spec("ltsideb", 1, 1));
    let (a, b) = tokio::join!(lab::up(&spec_a), lab::up(&spec_b));
    let (a, b) = (a?, b?);
    let (sa, sb) = (a.state().clone(), b.state().clone());
    ensure!(sa.subnet != sb.subnet, "both labs got {:?}", sa.subnet);
    let names: Vec<String> = lab::list().into_iter().map(|(n, _, _)| n).collect();
    ensure!(
        names.contains(&sa.name) && names.contains(&sb.name),
        "lab ls: {names:?}"
    );
    for lab in [&a, &b] {
        // Each lab is a swarm of its own two nodes.
        let nodes = lab
            .cluster()
            .manager()
            .meshctl_json(&["node", "ls"])
            .await?;
        ensure!(
            nodes.len() == 2,
            "{} lists {} nodes",
            lab.state().name,
            nodes.len()
        );
    }
    let socket_a = sa.node("node1")?.socket();
    a.close()?;
    ensure!(lab::left_behind(&sa.name).is_empty());
    ensure!(!socket_a.exists());
    let still = b.cluster().manager().meshctl_json(&["node", "ls"]).await?;
    ensure!(still.len() == 2, "the other lab lost nodes: {still:?}");
    b.close()
}

#[tokio::test]
async fn down_removes_a_lab_whose_lab_up_was_killed_half_way() -> anyhow::Result<()> {
    require_privileged!();
    let name = "ltkill";
    let bin = mesh_tests::meshctl::binary("xtask")?;
    let mut up = Command::new(bin)
        .args([
            "lab",
            "up",
            "--no-build",
            "--name",
            name,
            "--managers",
            "1",
            "--workers",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Kill it once a dockerd runs: namespaces, bridge and daemons exist, the swarm does not yet.
    let started = Instant::now();
    let pidfile = lab::state::lab_dir(name).join("node1/docker.pid");
    wait_until(
        Duration::from_secs(30),
        "node1's dockerd to start",
        async || Ok(pidfile.exists()),
    )
    .await?;
    up.kill()?;
    up.wait()?;
    eprintln!("lab up killed after {:?}", started.elapsed());

    let listed = lab::list().into_iter().find(|(n, _, _)| n == name);
    ensure!(
        listed
            .as_ref()
            .is_some_and(|(_, _, h)| *h == Health::Orphaned),
        "lab ls does not show the killed lab as orphaned: {listed:?}"
    );
    ensure!(
        lab::orphaned().contains(&name.to_owned()),
        "the leftover check misses {name}"
    );
    ensure!(!lab::left_behind(name).is_empty());

    let down = xtask(&["lab", "down", "--name", name])?;
    ensure!(down.success(), "lab down: {}", down.stderr);
    let left = lab::left_behind(name);
    ensure!(left.is_empty(), "left behind: {left:?}");
    ensure!(!lab::orphaned().contains(&name.to_owned()));
    Ok(())
}
