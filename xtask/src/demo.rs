//! `cargo xtask demo`: one local node — its own namespace, dockerd and meshd — running a demo service,
//! left running until `cargo xtask demo down`.

use std::path::Path;
use std::time::Duration;

use mesh_tests::{BUSYBOX_IMAGE, Cluster, dockerd, netns, process, wait_until};

use crate::{cargo, deps, run};

/// Everything the demo creates lives here, under fixed names the tests never use.
const DIR: &str = "/tmp/mesh-demo";
const BRIDGE: &str = "md-demo";
const NET: [u8; 3] = [10, 232, 0];
const SERVICE: &str = "demo";

pub async fn up() -> anyhow::Result<()> {
    deps::install()?;
    run(&cargo(), &["build", "--workspace", "--bins"])?;
    if Path::new(DIR).exists() || !netns::links_with_prefix(BRIDGE).is_empty() {
        eprintln!("a demo is already up: taking it down first");
        down()?;
    }
    let cluster = Cluster::builder()
        .managers(1)
        .fixed(BRIDGE, NET, Path::new(DIR))
        .start()
        .await?;
    let node = cluster.manager();
    let create = [
        "service",
        "create",
        "-d",
        "--name",
        SERVICE,
        "--replicas",
        "3",
        BUSYBOX_IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
    ];
    node.meshctl_ok(&create).await?;
    wait_until(
        Duration::from_secs(60),
        "3 running demo containers",
        async || Ok(node.containers(SERVICE, false).await?.len() == 3),
    )
    .await?;
    let ls = node.meshctl_ok(&["service", "ls"]).await?;
    let ps = node.meshctl_ok(&["service", "ps", SERVICE]).await?;
    let socket = node.socket().display().to_string();
    let docker_host = node.docker_host();
    let meshctl = mesh_tests::meshctl::binary("meshctl")?
        .display()
        .to_string();
    cluster.keep();

    println!("$ meshctl service ls\n{ls}\n$ meshctl service ps {SERVICE}\n{ps}");
    println!(
        "mesh is running: one manager node in network namespace {BRIDGE}-1, files under {DIR}."
    );
    println!("Use it:");
    println!("  export MESH_HOST=unix://{socket}");
    println!("  {meshctl} node ls");
    println!("  {meshctl} service scale {SERVICE}=5");
    println!("  {meshctl} service create --name sleeper {BUSYBOX_IMAGE} sleep 1000000");
    println!("  docker -H {docker_host} ps      # the containers, on the node's own dockerd");
    println!("Logs: {DIR}/node1/meshd.log, {DIR}/node1/dockerd.log");
    println!("Stop it: cargo xtask demo down");
    Ok(())
}

/// Stops meshd and dockerd (removing their containers), deletes the namespace and bridge and the files.
pub fn down() -> anyhow::Result<()> {
    let node = Path::new(DIR).join("node1");
    for pid in process::pids_with_cmdline(&node.join("meshd.sock").display().to_string()) {
        process::terminate(pid, Duration::from_secs(10));
    }
    dockerd::stop(&node);
    // meshd keeps its overlay namespaces across restarts, so they outlive it.
    let overlay = format!(
        "{}-",
        mesh_tests::overlay::netns_prefix(&node.join("state"))
    );
    for ns in netns::namespaces_with_prefix(&overlay) {
        netns::delete_namespace(&ns);
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
    println!("demo stopped; {DIR}, namespace {BRIDGE}-1 and bridge {BRIDGE} removed");
    Ok(())
}
