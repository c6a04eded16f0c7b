//! `cargo xtask bench overlay`: what mesh's VXLAN overlay costs. Two nodes (namespaces on one
//! bridge, each with its own dockerd and meshd) run one task each on an overlay network; the
//! benchmark measures task to task across the nodes over the overlay, and node to node directly
//! over their underlay — the physical limit of this machine — in the same run: TCP throughput
//! with iperf3, ICMP round trips with ping, and TCP request/response round trips with a loop of
//! our own ([`rr`], run as `mesh-bench rr` inside each namespace through nsenter).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mesh_tests::process::{self, Output};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, wait_for, wait_until};
use serde_json::Value;
use tokio::process::Child;

use crate::run::{LIMIT, SERVICE, spawn_in, this_program};

/// The overlay network the benchmarks attach their service to.
pub(crate) const NETWORK: &str = "benchnet";
/// Rounds over both paths in turn, so that other load on the machine hits both alike.
const ROUNDS: usize = 3;
const IPERF_SECONDS: &str = "4";
const IPERF_PORT: &str = "5201";
/// Pings and TCP round trips per path and round.
const PINGS: usize = 300;
const ROUND_TRIPS: usize = 3000;
const RR_PORT: u16 = 5301;
/// The core both ends of a latency measurement run on (with the kernel's work for them), so that
/// no round trip waits for an idle core to wake: on this VM that alone costs tens of µs at random.
const LATENCY_CPU: &str = "0";
/// How long an `rr` server waits for its client and then for each byte, should the benchmark die.
const RR_LIFETIME: Duration = Duration::from_secs(60);
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// One end of a measured path: a network namespace as nsenter takes it, and the address there.
struct End {
    netns: String,
    addr: Ipv4Addr,
}

/// Round-trip times in microseconds.
#[derive(Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
    avg: f64,
}

impl Latency {
    fn of(mut samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            p50: at(0.5),
            p99: at(0.99),
            avg: samples.iter().sum::<f64>() / samples.len() as f64,
        })
    }
}

/// What one path measured over every round.
#[derive(Default)]
struct Samples {
    gbits: Vec<f64>,
    ping_us: Vec<f64>,
    rr_us: Vec<f64>,
}

/// What one path measured: throughput (median, min, max over the rounds) and latencies.
struct Figures {
    gbits: (f64, f64, f64),
    ping: Latency,
    rr: Latency,
}

impl Figures {
    fn of(samples: Samples) -> anyhow::Result<Self> {
        let mut gbits = samples.gbits;
        gbits.sort_by(f64::total_cmp);
        let (Some(min), Some(max)) = (gbits.first(), gbits.last()) else {
            bail!("no throughput measured");
        };
        Ok(Self {
            gbits: (gbits[gbits.len() / 2], *min, *max),
            ping: Latency::of(samples.ping_us).context("no ping replies")?,
            rr: Latency::of(samples.rr_us).context("no TCP round trips")?,
        })
    }
}

pub async fn overlay(release: bool) -> anyhow::Result<()> {
    let Some(profile) = crate::run::build(release, &["overlay"])? else {
        return Ok(());
    };
    let (overlay, direct, mtu) = on_cluster(1, measure).await?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    println!(
        "overlay data path: 2 nodes (namespaces on one bridge, each with its own dockerd and \
         meshd), one task on each; meshd {profile} build; load average {load} at the start"
    );
    println!(
        "overlay MTU {} (underlay eth0 {}); {ROUNDS} rounds alternating the paths, each: iperf3 \
         TCP {IPERF_SECONDS} s (client and server on separate cores), then on core \
         {LATENCY_CPU} only: ping -i 0.01 x {PINGS}, 1-byte TCP request/response x {ROUND_TRIPS}",
        mtu.0, mtu.1
    );
    println!(
        "{:<32} {:>22} {:>26} {:>26}",
        "", "TCP throughput Gb/s", "ping RTT µs", "TCP round trip µs"
    );
    println!(
        "{:<32} {:>7} {:>14} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "path", "median", "(min-max)", "p50", "p99", "avg", "p50", "p99", "avg"
    );
    for (path, f) in [
        ("task -> task, overlay (VXLAN)", &overlay),
        ("node -> node, underlay direct", &direct),
    ] {
        let range = format!("({:.2}-{:.2})", f.gbits.1, f.gbits.2);
        println!(
            "{path:<32} {:>7.2} {range:>14} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            f.gbits.0, f.ping.p50, f.ping.p99, f.ping.avg, f.rr.p50, f.rr.p99, f.rr.avg
        );
    }
    println!(
        "overlay vs direct: throughput {:.0} %, ping p50 {:+.1} µs, TCP round trip p50 {:+.1} µs",
        100.0 * overlay.gbits.0 / direct.gbits.0,
        overlay.ping.p50 - direct.ping.p50,
        overlay.rr.p50 - direct.rr.p50
    );
    Ok(())
}

/// Measures both paths; returns them and the (overlay, underlay) MTUs.
async fn measure(cluster: &Cluster) -> anyhow::Result<(Figures, Figures, (u32, u32))> {
    let manager = cluster.manager();
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", NETWORK])
        .await?;
    let create = [
        "service",
        "create",
        "-d",
        "--name",
        SERVICE,
        "--replicas",
        "2",
        "--replicas-max-per-node",
        "1",
        "--network",
        NETWORK,
        BUSYBOX_IMAGE,
        "sleep",
        "1000000",
    ];
    manager.meshctl_ok(&create).await?;
    let (first, second) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    let server = wait_for(LIMIT, "the task on node 1 on the overlay", async || {
        task_end(first).await
    })
    .await?;
    let client = wait_for(LIMIT, "the task on node 2 on the overlay", async || {
        task_end(second).await
    })
    .await?;
    let node_end = |node: &Node| End {
        netns: node.netns().path(),
        addr: node.addr(),
    };
    let (node_server, node_client) = (node_end(first), node_end(second));
    let mtu = (mtu(&server.netns).await?, mtu(&node_server.netns).await?);
    // Static neighbours make the overlay answer at once; ARP warms the direct path.
    for (from, to) in [(&client, &server), (&node_client, &node_server)] {
        wait_until(LIMIT, "a first ping", async || {
            let target = to.addr.to_string();
            let args = ["-n", "-c", "1", "-W", "1", target.as_str()];
            Ok(in_netns(&from.netns, "ping", &args).await?.success())
        })
        .await?;
    }
    let (mut overlay, mut direct) = (Samples::default(), Samples::default());
    for _ in 0..ROUNDS {
        sample(&mut overlay, &client, &server)
            .await
            .context("overlay path")?;
        sample(&mut direct, &node_client, &node_server)
            .await
            .context("direct path")?;
    }
    Ok((Figures::of(overlay)?, Figures::of(direct)?, mtu))
}

async fn sample(samples: &mut Samples, client: &End, server: &End) -> anyhow::Result<()> {
    samples.gbits.push(iperf(client, server).await?);
    samples.ping_us.extend(ping(client, server).await?);
    samples.rr_us.extend(round_trips(client, server).await?);
    Ok(())
}

/// The service's running task on `node`: its container's namespace and its address on eth0.
async fn task_end(node: &Node) -> anyhow::Result<Option<End>> {
    let Some(id) = node.containers(SERVICE, false).await?.into_iter().next() else {
        return Ok(None);
    };
    let Some(pid) = container_pid(node, &id).await? else {
        return Ok(None);
    };
    let netns = format!("/proc/{pid}/ns/net");
    let out = in_netns(&netns, "ip", &["-4", "-o", "addr", "show", "dev", "eth0"]).await?;
    let addr = out
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next()?.parse().ok());
    Ok(addr.map(|addr| End { netns, addr }))
}

/// The pid of a running container's first process, from `docker inspect`.
pub(crate) async fn container_pid(node: &Node, id: &str) -> anyhow::Result<Option<u32>> {
    let info = node.inspect_container(id).await?;
    Ok(info["State"]["Pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0))
}

async fn mtu(netns: &str) -> anyhow::Result<u32> {
    let out = in_netns(netns, "ip", &["-o", "link", "show", "dev", "eth0"])
        .await?
        .ok("ip link show eth0")?;
    out.stdout
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("no MTU in {:?}", out.stdout))
}

/// Runs `program args…` inside the namespace at `netns` (host mount namespace kept).
pub(crate) async fn in_netns(netns: &str, program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let net = format!("--net={netns}");
    let mut full = vec![net.as_str(), "--", program];
    full.extend_from_slice(args);
    process::run("nsenter", &full, COMMAND_LIMIT).await
}

/// Waits briefly for a background server to exit on its own; it is killed when dropped otherwise.
async fn finish(mut server: Child) {
    let _ = tokio::time::timeout(Duration::from_secs(5), server.wait()).await;
}

/// TCP throughput from `client` to `server` in Gbit/s, as iperf3's receiver counted it.
async fn iperf(client: &End, server: &End) -> anyhow::Result<f64> {
    let bind = server.addr.to_string();
    // One client, then exit; and exit anyway if no client comes (should this benchmark die).
    let listen = [
        "-s",
        "-1",
        "--idle-timeout",
        "30",
        "-B",
        &bind,
        "-p",
        IPERF_PORT,
    ];
    let iperf_server = spawn_in(
        &server.netns,
        "iperf3",
        &listen,
        Stdio::null(),
        Stdio::piped(),
    )?;
    // Client on one core, server on the other.
    let run = [
        "-c",
        &bind,
        "-p",
        IPERF_PORT,
        "-t",
        IPERF_SECONDS,
        "-A",
        "0,1",
        "-J",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let report: Value = loop {
        let out = in_netns(&client.netns, "iperf3", &run).await?;
        let report: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("iperf3 printed no JSON: {}", out.stderr.trim()))?;
        match report["error"].as_str() {
            None => break report,
            // The server may not listen yet.
            Some(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(err) => bail!("iperf3 to {bind}: {err}"),
        }
    };
    finish(iperf_server).await;
    let bits = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3's report has no end.sum_received.bits_per_second")?;
    Ok(bits / 1e9)
}

/// ICMP round trips from `client` to `server` in µs, from ping's per-reply times.
async fn ping(client: &End, server: &End) -> anyhow::Result<Vec<f64>> {
    let (count, target) = (PINGS.to_string(), server.addr.to_string());
    let args = [
        "-c",
        LATENCY_CPU,
        "ping",
        "-n",
        "-i",
        "0.01",
        "-c",
        &count,
        "-W",
        "1",
        &target,
    ];
    let out = in_netns(&client.netns, "taskset", &args).await?;
    let times: Vec<f64> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once("time=")?.1.split_whitespace().next())
        .filter_map(|t| t.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect();
    if times.len() < PINGS {
        eprintln!("ping {target}: {} of {PINGS} replies", times.len());
    }
    ensure!(
        !times.is_empty(),
        "no ping reply from {target}: {}",
        out.stderr.trim()
    );
    Ok(times)
}

/// TCP request/response round trips from `client` to `server` in µs, by `mesh-bench rr` on
/// both ends.
async fn round_trips(client: &End, server: &End) -> anyhow::Result<Vec<f64>> {
    let exe = this_program()?;
    let exe = exe.as_str();
    let addr = SocketAddr::from((server.addr, RR_PORT)).to_string();
    let serve = ["-c", LATENCY_CPU, exe, "rr", "--serve", &addr];
    let rr_server = spawn_in(
        &server.netns,
        "taskset",
        &serve,
        Stdio::null(),
        Stdio::piped(),
    )?;
    let count = ROUND_TRIPS.to_string();
    let connect = [
        "-c",
        LATENCY_CPU,
        exe,
        "rr",
        "--connect",
        &addr,
        "--count",
        &count,
    ];
    let out = in_netns(&client.netns, "taskset", &connect)
        .await?
        .ok("mesh-bench rr --connect")?;
    finish(rr_server).await;
    serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("mesh-bench rr printed {:?}", out.stdout))
}

/// The hidden `mesh-bench rr`: with `serve`, echoes one client's bytes until it hangs up; with
/// `connect`, times `count` one-byte round trips and prints them in µs as one JSON array.
pub fn rr(
    serve: Option<SocketAddr>,
    connect: Option<SocketAddr>,
    count: usize,
) -> anyhow::Result<()> {
    match (serve, connect) {
        (Some(addr), None) => rr_serve(addr),
        (None, Some(addr)) => rr_connect(addr, count),
        _ => bail!("give exactly one of --serve and --connect"),
    }
}

fn rr_serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    // Never outlive a benchmark that died before connecting.
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + RR_LIFETIME;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(err) if err.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => return Err(err).context("no client came"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(RR_LIFETIME))?;
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        stream.write_all(&byte)?;
    }
}

fn rr_connect(addr: SocketAddr, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    // The server may not listen yet.
    let mut stream = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err).with_context(|| format!("cannot connect to {addr}")),
        }
    };
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut byte = [7u8; 1];
    let mut trip = |stream: &mut TcpStream| -> anyhow::Result<Duration> {
        let start = Instant::now();
        stream.write_all(&byte)?;
        stream.read_exact(&mut byte)?;
        Ok(start.elapsed())
    };
    for _ in 0..count / 10 {
        trip(&mut stream)?;
    }
    let mut micros = Vec::with_capacity(count);
    for _ in 0..count {
        micros.push(trip(&mut stream)?.as_secs_f64() * 1e6);
    }
    println!("{}", serde_json::to_string(&micros)?);
    Ok(())
}

/// The prefix a node's meshd names its overlay namespaces with: `m` and an FNV-1a hash of its
/// state dir (as agent/src/network does).
fn netns_prefix(state_dir: &Path) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in state_dir.as_os_str().as_encoded_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("m{hash:08x}-")
}

/// The name of `node`'s namespace for the overlay with this VXLAN id.
pub(crate) fn overlay_netns(node: &Node, vni: u32) -> String {
    format!("{}{vni}", netns_prefix(&node.state_dir()))
}

/// The overlay namespaces `node`'s meshd holds.
fn overlay_namespaces(node: &Node) -> Vec<String> {
    mesh_tests::netns::namespaces_with_prefix(&netns_prefix(&node.state_dir()))
}

/// Removes the service and the network, waits for the nodes' overlay namespaces to go, and tears
/// the cluster down; overlay namespaces meshd left behind are then removed and reported.
/// Runs `measure` on a quiet cluster of one manager and `workers` workers, then removes the
/// benchmark's service and network and the cluster, whether `measure` succeeded or not.
pub(crate) async fn on_cluster<T>(
    workers: usize,
    measure: impl AsyncFnOnce(&Cluster) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let cluster = Cluster::builder()
        .managers(1)
        .workers(workers)
        .quiet()
        .start()
        .await?;
    let measured = measure(&cluster).await;
    teardown(cluster).await?;
    measured
}

async fn teardown(cluster: Cluster) -> anyhow::Result<()> {
    let manager = cluster.manager();
    let removed = async {
        // Fails when the service was never created; the network goes in any case.
        let _ = manager.meshctl(&["service", "rm", SERVICE]).await?;
        wait_until(LIMIT, "the service's containers to go", async || {
            for node in cluster.nodes() {
                if !node.containers(SERVICE, true).await?.is_empty() {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?;
        wait_until(LIMIT, "the network to be removed", async || {
            let out = manager.meshctl(&["network", "rm", NETWORK]).await?;
            Ok(out.success() || out.stderr.contains("not found"))
        })
        .await?;
        wait_until(
            Duration::from_secs(15),
            "the overlay namespaces to go",
            async || {
                Ok(cluster
                    .nodes()
                    .iter()
                    .all(|n| overlay_namespaces(n).is_empty()))
            },
        )
        .await
    };
    if let Err(err) = removed.await {
        eprintln!("teardown: {err:#}");
    }
    let prefixes: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| netns_prefix(&n.state_dir()))
        .collect();
    let closed = cluster.close();
    for prefix in prefixes {
        for name in mesh_tests::netns::namespaces_with_prefix(&prefix) {
            eprintln!("teardown: meshd left overlay namespace {name}; removing it");
            mesh_tests::netns::delete_namespace(&name);
        }
    }
    closed
}
