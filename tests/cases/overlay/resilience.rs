//! The data plane holds: a gossip member with a wrong key is dropped and programs nothing, a
//! restart of the agent under traffic loses at most one ping and no TCP connection, and tasks have
//! a way out of the cluster through their node's gateway bridge.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mesh_agent::gossip::{
    DEFAULT_GOSSIP_PORT, EndpointRecord, Gossip, GossipConfig, KeyRing, SealKey,
};
use mesh_tests::overlay::{overlay_netns, vxlan_fdb};
use mesh_tests::{Cluster, Node, require_privileged, wait_for, wait_until};
use serde_json::Value;

use super::{
    CONVERGE, Task, check_all_pairs, create_service, finish, inspect_network, one_per_node, ping,
    tasks_of, tcp_read, three_nodes, vni_of, wait_programmed,
};

#[tokio::test]
async fn the_data_plane_holds_against_a_wrong_key_and_an_agent_restart() -> anyhow::Result<()> {
    require_privileged!();
    let mut cluster = three_nodes().await?;
    let result = resilience(&mut cluster).await;
    finish(cluster, result).await
}

/// Runs every check even when one fails, and reports all failures together.
async fn resilience(cluster: &mut Cluster) -> anyhow::Result<()> {
    let manager = cluster.manager();
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", "net1"])
        .await?;
    create_service(manager, "web", "net1", 3).await?;
    let tasks = tasks_of(cluster, "web", 3).await?;
    one_per_node(&tasks)?;
    let vni = vni_of(manager, "net1").await?;
    wait_programmed(cluster, vni, &tasks).await?;
    check_all_pairs(cluster, &tasks).await?;

    let mut failures = Vec::new();
    if let Err(err) = way_out(cluster, &tasks).await {
        failures.push(format!("way out: {err:#}"));
    }
    if let Err(err) = rogue_member(cluster, vni, &tasks).await {
        failures.push(format!("rogue gossip member: {err:#}"));
    }
    if let Err(err) = restart_mid_traffic(cluster, &tasks).await {
        failures.push(format!("agent restart: {err:#}"));
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// Every task reaches the host's address on the cluster bridge: outside the cluster, through
/// the node's gateway bridge.
async fn way_out(cluster: &Cluster, tasks: &[Task]) -> anyhow::Result<()> {
    let outside = cluster.bridge().addr(254);
    for task in tasks {
        let node = cluster.node(&task.sandbox.node)?;
        let what = format!("{} to ping {outside} outside the cluster", task.label());
        wait_until(Duration::from_secs(10), &what, async || {
            ping(node, task, outside).await
        })
        .await?;
    }
    Ok(())
}

/// `meshctl info --format json`'s `Gossip` object.
async fn gossip_info(node: &Node) -> anyhow::Result<Value> {
    let info = node.meshctl_json(&["info"]).await?;
    let gossip = info.first().map(|i| i["Gossip"].clone());
    gossip
        .filter(Value::is_object)
        .with_context(|| format!("{}: info has no Gossip object: {info:?}", node.hostname()))
}

fn counter(gossip: &Value, key: &str) -> anyhow::Result<u64> {
    gossip[key]
        .as_u64()
        .with_context(|| format!("Gossip.{key} missing in {gossip}"))
}

/// A gossip member with a key of its own joins node 1 and publishes an endpoint on net1: node 1
/// drops its datagrams as sealed under an unknown key, no node counts it as a member, and no node
/// programs its endpoint.
async fn rogue_member(cluster: &Cluster, vni: u32, tasks: &[Task]) -> anyhow::Result<()> {
    let target = cluster.manager();
    let before = counter(&gossip_info(target).await?, "DroppedUnknownKey")?;
    let network = inspect_network(target, "net1").await?;
    let network_id = network["Id"].as_str().context("net1 has no Id")?.to_owned();
    let subnet = network["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .context("net1 has no subnet")?;
    let base: Ipv4Addr = subnet
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("bad subnet {subnet}"))?;
    let [a, b, c, _] = base.octets();

    // Managers number their keys from 1: a random id with the top bit set is none of theirs.
    let probe = SealKey::generate(0)?;
    let id = 0x8000_0000
        | u32::from_be_bytes([
            probe.secret[0],
            probe.secret[1],
            probe.secret[2],
            probe.secret[3],
        ]);
    let rogue_addr = cluster.bridge().addr(254);
    let mut config = GossipConfig::new(
        "rogue",
        SocketAddr::from(([0, 0, 0, 0], 0)),
        KeyRing::new(SealKey::generate(id)?),
    );
    config.advertise = SocketAddr::new(IpAddr::V4(rogue_addr), 0);
    let (rogue, _changes) = Gossip::start(config).await?;
    let rogue_mac = "02:00:5e:77:66:55";
    let record = EndpointRecord {
        network_id,
        task_id: "rogue0task0000000000000000".into(),
        service_id: "rogue".into(),
        addr: Ipv4Addr::new(a, b, c, 250),
        mac: [0x02, 0x00, 0x5e, 0x77, 0x66, 0x55],
        node_id: "rogue".into(),
        vtep: rogue_addr,
        service_name: String::new(),
        vip: None,
        ingress_ports: Vec::new(),
        aliases: Vec::new(),
    };
    let result = async {
        rogue
            .join(vec![SocketAddr::new(
                IpAddr::V4(target.addr()),
                DEFAULT_GOSSIP_PORT,
            )])
            .await?;
        rogue.publish(record).await?;
        let what = format!("{} to drop the rogue's datagrams", target.hostname());
        let dropped = wait_for(Duration::from_secs(15), &what, async || {
            let now = counter(&gossip_info(target).await?, "DroppedUnknownKey")?;
            Ok((now > before).then_some(now))
        })
        .await?;
        eprintln!(
            "DroppedUnknownKey on {}: {before} -> {dropped}",
            target.hostname()
        );
        // Hold for longer than an anti-entropy round: nothing of the rogue ever shows.
        let rogue_vtep = rogue_addr.to_string();
        let dev = format!("vx{vni}");
        let until = Instant::now() + Duration::from_secs(7);
        while Instant::now() < until {
            for node in cluster.nodes() {
                let members = counter(&gossip_info(node).await?, "Members")?;
                ensure!(
                    members == 3,
                    "{} counts {members} gossip members",
                    node.hostname()
                );
                let fdb = vxlan_fdb(&overlay_netns(node, vni), &dev)?;
                ensure!(
                    !fdb.iter()
                        .any(|e| e.dst == rogue_vtep || e.mac == rogue_mac),
                    "{}: FDB points at the rogue: {fdb:?}",
                    node.hostname()
                );
            }
            for task in tasks {
                let neighbours = task.sandbox.neighbours().await?;
                ensure!(
                    !neighbours.iter().any(|n| n.mac == rogue_mac),
                    "task {} has the rogue's neighbour entry",
                    task.label()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        ensure!(
            rogue.members().len() == 1,
            "the rogue learned members: {:?}",
            rogue.members()
        );
        anyhow::Ok(())
    }
    .await;
    rogue.shutdown().await;
    result
}

/// With a TCP stream and pings every 0.2 s from node 2's task to node 1's, node 1's meshd restarts
/// (node 1: `restart_meshd` waits for `node ls`, which only a manager answers): its containers
/// stay, at most one ping is lost, the stream still carries data, a new connection works and the
/// way out still does.
async fn restart_mid_traffic(cluster: &mut Cluster, tasks: &[Task]) -> anyhow::Result<()> {
    let restarted = cluster.manager().hostname().to_owned();
    let server = tasks
        .iter()
        .find(|t| t.sandbox.node == restarted)
        .context("no task on node 1")?
        .clone();
    let client = tasks
        .iter()
        .find(|t| t.sandbox.node != restarted)
        .context("no task on another node")?
        .clone();
    let server_node = cluster.node(&server.sandbox.node)?;
    let client_node = cluster.node(&client.sandbox.node)?;

    // A stream: the client writes a line every 0.2 s over one connection, the server appends it to
    // /stream (nc's stdin is held open so that it never half-closes).
    let listen = "sleep 1000000 | nc -l -p 9000 > /stream";
    server_node
        .docker(&["exec", "-d", &server.sandbox.container, "sh", "-c", listen])
        .await?
        .ok("starting the stream's server")?;
    wait_until(
        Duration::from_secs(10),
        "the stream's server to listen",
        async || {
            let out = server
                .sandbox
                .run("ss", &["-Hltn", "sport", "=", ":9000"])
                .await?;
            Ok(!out.stdout.trim().is_empty())
        },
    )
    .await?;
    let talk = format!(
        "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done | nc {} 9000",
        server.addr
    );
    client_node
        .docker(&["exec", "-d", &client.sandbox.container, "sh", "-c", &talk])
        .await?
        .ok("starting the stream's client")?;
    wait_until(
        Duration::from_secs(10),
        "the stream to carry lines",
        async || Ok(stream_lines(server_node, &server).await? >= 3),
    )
    .await?;

    // Pings every 0.2 s from the client's sandbox, with the host's iputils ping.
    let pid = client.sandbox.pid.to_string();
    let target = server.addr.to_string();
    let pinger = tokio::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "ping", "-n", "-i", "0.2", &target])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting ping")?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let containers_before = server_node.containers("web", false).await?;
    let index = cluster.position(&restarted)?;
    let started = Instant::now();
    cluster.nodes_mut()[index].restart_meshd().await?;
    eprintln!(
        "{restarted}'s meshd answered again after {:?}",
        started.elapsed()
    );
    for node in cluster.nodes() {
        cluster
            .wait_node_status(node.hostname(), "Ready", CONVERGE)
            .await?;
    }
    // Let the restarted agent settle in with traffic still flowing.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let ping_pid = pinger.id().context("ping already reaped")?;
    mesh_tests::process::signal(ping_pid, "INT");
    let out = tokio::time::timeout(Duration::from_secs(10), pinger.wait_with_output())
        .await
        .context("ping did not stop on SIGINT")??;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let (sent, lost) = ping_losses(&report)?;
    eprintln!("pings across the restart: {sent} sent, {lost} lost");
    ensure!(sent >= 20, "only {sent} pings were sent:\n{report}");
    ensure!(
        lost <= 1,
        "{lost} of {sent} pings were lost across the restart of {restarted}'s meshd:\n{report}"
    );

    let server_node = cluster.node(&server.sandbox.node)?;
    let client_node = cluster.node(&client.sandbox.node)?;
    let containers_after = server_node.containers("web", false).await?;
    ensure!(
        containers_after == containers_before,
        "the restart replaced containers: {containers_before:?} -> {containers_after:?}"
    );
    let before = stream_lines(server_node, &server).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = stream_lines(server_node, &server).await?;
    ensure!(
        after > before,
        "the TCP stream carried nothing after the restart ({before} lines, then {after})"
    );
    eprintln!("the TCP stream went on: {before} -> {after} lines");
    let answer = wait_for(Duration::from_secs(10), "a new connection", async || {
        tcp_read(client_node, &client, server.addr).await
    })
    .await?;
    ensure!(
        answer == server.sandbox.hostname,
        "a new connection was answered by {answer:?}, not {:?}",
        server.sandbox.hostname
    );
    // The restarted node's task still has its way out.
    way_out(cluster, std::slice::from_ref(&server)).await
}

/// How many lines the stream's server has received.
async fn stream_lines(node: &Node, server: &Task) -> anyhow::Result<u64> {
    let out = node
        .docker(&["exec", &server.sandbox.container, "wc", "-l", "/stream"])
        .await?
        .ok("wc -l /stream")?;
    out.stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("wc printed no count")
}

/// From iputils ping's output: how many were sent, and how many of those before the last went
/// unanswered (the last may still have been in flight when ping was stopped).
fn ping_losses(report: &str) -> anyhow::Result<(u64, u64)> {
    let sent: u64 = report
        .lines()
        .find(|l| l.contains(" packets transmitted"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no summary in ping's output:\n{report}"))?;
    let answered: BTreeSet<u64> = report
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    let lost = (1..sent).filter(|seq| !answered.contains(seq)).count();
    Ok((sent, u64::try_from(lost)?))
}

#[test]
fn ping_losses_skip_the_last_echo_in_flight() {
    let report = "PING 10.0.0.3 (10.0.0.3) 56(84) bytes of data.\n\
        64 bytes from 10.0.0.3: icmp_seq=1 ttl=64 time=0.1 ms\n\
        64 bytes from 10.0.0.3: icmp_seq=3 ttl=64 time=0.1 ms\n\
        \n--- 10.0.0.3 ping statistics ---\n\
        4 packets transmitted, 2 received, 50% packet loss, time 600ms\n";
    assert_eq!(ping_losses(report).unwrap(), (4, 1));
    assert!(ping_losses("nothing").is_err());
}
