//! `cargo xtask demo`: three local nodes — each its own namespace, dockerd and meshd, one manager
//! and two workers — running a demo web service published on port 8080 through the routing mesh,
//! left running until `cargo xtask demo down`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mesh_tests::{BUSYBOX_IMAGE, Cluster, dockerd, netns, process, wait_for, wait_until};

use mesh_tests::process::{cargo, run_shown};

use crate::{deps, step};

/// Everything the demo creates lives here, under fixed names the tests never use.
const DIR: &str = "/tmp/mesh-demo";
const BRIDGE: &str = "md-demo";
const NET: [u8; 3] = [10, 232, 0];
const SERVICE: &str = "demo";
const WORKERS: usize = 2;
const PUBLISHED: u16 = 8080;
/// Every task serves its container's hostname, so answers show which task took a request.
const WEB: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";
const CONVERGE: Duration = Duration::from_secs(90);

/// What to do when starting the demo fails part-way.
const FIX: &str = "each node's logs are in /tmp/mesh-demo/nodeN/ (meshd.log, dockerd.log); \
                   `cargo xtask demo down` removes a half-started demo";

pub async fn up() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    deps::install()?;
    step::run(
        "building meshd and meshctl (cargo build --workspace --bins; the first build takes minutes)",
        "read cargo's error above; if a system tool is missing, `cargo xtask deps` installs it",
        || run_shown(&cargo(), &["build", "--workspace", "--bins"], &[]),
    )?;
    if Path::new(DIR).exists() || !netns::links_with_prefix(BRIDGE).is_empty() {
        eprintln!("a demo is already up: taking it down first");
        down()?;
    }
    let nodes = 1 + WORKERS;
    let cluster = step::run_async(
        &format!("starting {nodes} nodes (a manager and {WORKERS} workers) and forming the swarm"),
        FIX,
        Cluster::builder()
            .managers(1)
            .workers(WORKERS)
            .fixed(BRIDGE, NET, Path::new(DIR))
            .progress()
            .start(),
    )
    .await?;
    let answers = step::run_async(
        &format!("running the demo service: 3 web tasks published on port {PUBLISHED}"),
        FIX,
        serve(&cluster),
    )
    .await?;
    report(cluster, answers).await?;
    eprintln!(
        "==> the demo is up, {} after `cargo xtask demo` started",
        step::took(started.elapsed())
    );
    Ok(())
}

/// Creates the demo service and waits until every node's address answers on its published port
/// from one of its tasks; returns what each address answered.
async fn serve(cluster: &Cluster) -> anyhow::Result<Vec<(SocketAddr, BTreeSet<String>)>> {
    let node = cluster.manager();
    let publish = format!("{PUBLISHED}:80");
    let create = [
        "service",
        "create",
        "-d",
        "--name",
        SERVICE,
        "--replicas",
        "3",
        "-p",
        &publish,
        BUSYBOX_IMAGE,
        "sh",
        "-c",
        WEB,
    ];
    node.meshctl_ok(&create).await?;
    eprintln!("    service created; waiting for its 3 tasks to run");
    wait_until(CONVERGE, "3 running demo containers", async || {
        let mut running = 0;
        for n in cluster.nodes() {
            running += n.containers(SERVICE, false).await?.len();
        }
        Ok(running == 3)
    })
    .await?;
    // The published port answers on every node's address, from any of the tasks.
    let mut answers = Vec::new();
    for n in cluster.nodes() {
        let addr = SocketAddr::from((n.addr(), PUBLISHED));
        let what = format!("{addr} to answer");
        let seen = wait_for(CONVERGE, &what, async || {
            let mut seen = BTreeSet::new();
            for _ in 0..12 {
                seen.extend(
                    tokio::task::spawn_blocking(move || mesh_tests::observe::http_get(addr))
                        .await?,
                );
            }
            Ok((!seen.is_empty()).then_some(seen))
        })
        .await?;
        eprintln!("    {addr} answers");
        answers.push((addr, seen));
    }
    Ok(answers)
}

/// Prints the cluster and how to use it, and leaves it running.
async fn report(
    cluster: Cluster,
    answers: Vec<(SocketAddr, BTreeSet<String>)>,
) -> anyhow::Result<()> {
    let node = cluster.manager();
    let ls = node.meshctl_ok(&["node", "ls"]).await?;
    let ps = node.meshctl_ok(&["service", "ps", SERVICE]).await?;
    let socket = node.socket().display().to_string();
    let docker_host = node.docker_host();
    let meshctl = mesh_tests::meshctl::binary("meshctl")?
        .display()
        .to_string();
    let nodes = cluster.nodes().len();
    cluster.keep();

    println!("$ meshctl node ls\n{ls}\n$ meshctl service ps {SERVICE}\n{ps}");
    for (addr, seen) in &answers {
        let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
        println!("http://{addr}/ answered from tasks {}", seen.join(", "));
    }
    println!(
        "mesh is running: {nodes} nodes (network namespaces {BRIDGE}-1 to {BRIDGE}-{nodes}, node1 the \
         manager), files under {DIR}."
    );
    println!("Use it:");
    println!("  export MESH_HOST=unix://{socket}");
    println!("  {meshctl} node ls");
    println!(
        "  curl http://{}/      # any node's address; each request may land on another task",
        answers[0].0
    );
    println!("  {meshctl} service scale {SERVICE}=5");
    println!("  {meshctl} service create --name sleeper {BUSYBOX_IMAGE} sleep 1000000");
    println!("  docker -H {docker_host} ps      # node1's containers, on its own dockerd");
    println!("Logs: {DIR}/nodeN/meshd.log, {DIR}/nodeN/dockerd.log");
    println!("Stop it: cargo xtask demo down");
    Ok(())
}

/// Stops meshd and dockerd (removing their containers), deletes the namespace and bridge and the files.
pub fn down() -> anyhow::Result<()> {
    for node in node_dirs() {
        for pid in process::pids_with_cmdline(&node.join("meshd.sock").display().to_string()) {
            process::terminate(pid, Duration::from_secs(10));
        }
        dockerd::stop(&node);
        // meshd keeps its overlay namespaces and eBPF pins across restarts, so they outlive it.
        let prefix = mesh_tests::overlay::netns_prefix(&node.join("state"));
        for ns in netns::namespaces_with_prefix(&format!("{prefix}-")) {
            netns::delete_namespace(&ns);
        }
        mesh_tests::overlay::remove_pins(&prefix);
    }
    for ns in netns::namespaces_with_prefix(BRIDGE) {
        netns::delete_namespace(&ns);
    }
    for link in netns::links_with_prefix(BRIDGE) {
        netns::delete_link(&link);
    }
    for pid in process::pids_with_cmdline(DIR) {
        process::signal(pid, "KILL");
    }
    if Path::new(DIR).exists() {
        std::fs::remove_dir_all(DIR)?;
    }
    println!("demo stopped; {DIR}, namespaces {BRIDGE}-N and bridge {BRIDGE} removed");
    Ok(())
}

/// The demo's node directories (`node1`, `node2`, …) that exist.
fn node_dirs() -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("node"))
        })
        .collect()
}
