//! `cargo xtask demo`: a lab named `demo` (see `cargo xtask lab`) of three local nodes — each its
//! own namespace, dockerd and meshd, one manager and two workers — running a demo web service
//! published on port 8080 through the routing mesh, left running until `cargo xtask demo down`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_tests::lab::{self, LabSpec};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, wait_for, wait_until};

use mesh_tests::process::{cargo, run_shown};

use crate::{deps, step};

/// The demo is the lab of this name: bridge `ml-demo`, files under `/run/mesh-lab/demo`.
const NAME: &str = "demo";
const NET: [u8; 3] = [10, 232, 0];
const SERVICE: &str = "demo";
const WORKERS: usize = 2;
const PUBLISHED: u16 = 8080;
/// Every task serves its container's hostname, so answers show which task took a request.
const WEB: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";
const CONVERGE: Duration = Duration::from_secs(90);

/// What to do when starting the demo fails part-way.
const FIX: &str = "each node's logs are in /run/mesh-lab/demo/nodeN/ (meshd.log, dockerd.log); \
                   `cargo xtask demo down` removes a half-started demo";

pub async fn up() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    deps::install()?;
    step::run(
        "building meshd and meshctl (cargo build --workspace --bins; the first build takes minutes)",
        "read cargo's error above; if a system tool is missing, `cargo xtask deps` installs it",
        || run_shown(&cargo(), &["build", "--workspace", "--bins"], &[]),
    )?;
    if !lab::left_behind(NAME).is_empty() {
        eprintln!("a demo is already up: taking it down first");
        down()?;
    }
    let nodes = 1 + WORKERS;
    let mut spec = LabSpec::new(NAME, 1, WORKERS);
    spec.subnet = Some(NET);
    spec.progress = true;
    let demo = step::run_async(
        &format!("starting {nodes} nodes (a manager and {WORKERS} workers) and forming the swarm"),
        FIX,
        lab::up(&spec),
    )
    .await?;
    let answers = step::run_async(
        &format!("running the demo service: 3 web tasks published on port {PUBLISHED}"),
        FIX,
        serve(demo.cluster()),
    )
    .await?;
    report(demo.cluster(), answers).await?;
    demo.keep();
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
    cluster: &Cluster,
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
    let dir = cluster.dir().display();
    let bridge = lab::state::bridge_name(NAME);

    println!("$ meshctl node ls\n{ls}\n$ meshctl service ps {SERVICE}\n{ps}");
    for (addr, seen) in &answers {
        let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
        println!("http://{addr}/ answered from tasks {}", seen.join(", "));
    }
    println!(
        "mesh is running: {nodes} nodes (network namespaces {bridge}-1 to {bridge}-{nodes}, node1 the \
         manager), files under {dir}; it is the lab `{NAME}`."
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
    println!(
        "  cargo xtask lab status --name {NAME}      # or exec, fault, partition: see cargo xtask lab"
    );
    println!("Logs: {dir}/nodeN/meshd.log, {dir}/nodeN/dockerd.log");
    println!("Stop it: cargo xtask demo down");
    Ok(())
}

/// Stops meshd and dockerd (removing their containers), deletes the namespaces, bridge and files:
/// `lab down` of the demo's lab.
pub fn down() -> anyhow::Result<()> {
    if lab::left_behind(NAME).is_empty() {
        println!("no demo is up");
        return Ok(());
    }
    lab::down(NAME)?;
    println!(
        "demo stopped; {}, namespaces {1}-N and bridge {1} removed",
        lab::state::lab_dir(NAME).display(),
        lab::state::bridge_name(NAME)
    );
    Ok(())
}
