//! Several nodes, several managers: a cluster forms from join tokens, survives its leader's loss,
//! refuses writes without quorum, reschedules a cut-off worker's tasks, drains and pauses nodes, and
//! refuses bad tokens and worker certificates on manager APIs.
//!
//! Each test builds its own cluster with a 1 s dispatcher heartbeat, so that failures are noticed
//! quickly; the waits below bound the tests, they do not assert on speed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use mesh_tests::observe::NodeRow;
use mesh_tests::{
    BUSYBOX_IMAGE, Cluster, Node, Output, Role, require_privileged, wait_for, wait_until,
};

/// Bound on convergence and on failure detection (a node is down after a few 1 s heartbeats).
const CONVERGE: Duration = Duration::from_secs(60);
/// Bound on electing a new leader and on a write finding it.
const ELECTION: Duration = Duration::from_secs(30);

async fn cluster(managers: usize, workers: usize) -> anyhow::Result<Cluster> {
    Cluster::builder()
        .managers(managers)
        .workers(workers)
        .dispatcher_heartbeat("1s")
        .start()
        .await
}

/// `meshctl service create -d --name NAME --replicas N busybox sleep 1000000` on `node`.
async fn create(node: &Node, name: &str, replicas: usize) -> anyhow::Result<()> {
    let replicas = replicas.to_string();
    let args = [
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--replicas",
        &replicas,
        BUSYBOX_IMAGE,
        "sleep",
        "1000000",
    ];
    node.meshctl_ok(&args).await.map(drop)
}

async fn scale(node: &Node, service: &str, replicas: usize) -> anyhow::Result<Output> {
    node.meshctl(&["service", "scale", "-d", &format!("{service}={replicas}")])
        .await
}

async fn set_availability(node: &Node, hostname: &str, availability: &str) -> anyhow::Result<()> {
    let args = ["node", "update", "--availability", availability, hostname];
    node.meshctl_ok(&args).await.map(drop)
}

fn total(running: &BTreeMap<String, Vec<String>>) -> usize {
    running.values().map(Vec::len).sum()
}

/// Waits until `check` holds for the service's running containers on every node, and returns them.
async fn wait_running<F>(
    cluster: &Cluster,
    service: &str,
    what: &str,
    check: F,
) -> anyhow::Result<BTreeMap<String, Vec<String>>>
where
    F: Fn(&BTreeMap<String, Vec<String>>) -> bool,
{
    wait_for(CONVERGE, what, async || {
        let running = cluster.running_by_node(service).await?;
        Ok(check(&running).then_some(running))
    })
    .await
}

/// A refusal: non-zero exit, one line on stderr, no panic.
fn refused(out: &Output, what: &str) -> anyhow::Result<String> {
    let stderr = out.stderr.trim();
    ensure!(!out.success(), "{what} was accepted: {}", out.stdout.trim());
    ensure!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    ensure!(
        stderr.lines().count() == 1,
        "{what}: expected a one-line error, got {stderr:?}"
    );
    Ok(stderr.to_owned())
}

fn with_status<'a>(rows: &'a [NodeRow], status: &str) -> Vec<&'a NodeRow> {
    let status = |r: &&NodeRow| r.manager_status.eq_ignore_ascii_case(status);
    rows.iter().filter(status).collect()
}

#[tokio::test]
async fn managers_elect_a_new_leader_and_refuse_writes_without_quorum() -> anyhow::Result<()> {
    require_privileged!();
    let mut cluster = cluster(3, 2).await?;

    // Formation: five Ready nodes, one Leader, two Reachable managers, two workers.
    let rows = cluster.node_rows().await?;
    ensure!(rows.len() == 5, "node ls: {rows:?}");
    ensure!(
        rows.iter().all(NodeRow::is_ready),
        "not all Ready: {rows:?}"
    );
    ensure!(with_status(&rows, "leader").len() == 1, "leaders: {rows:?}");
    ensure!(
        with_status(&rows, "reachable").len() == 2,
        "reachable: {rows:?}"
    );
    ensure!(with_status(&rows, "").len() == 2, "workers: {rows:?}");
    let leader = cluster.wait_leader(&[], ELECTION).await?;

    // A write on a follower is forwarded to the leader; the replicas spread over the nodes.
    let follower = cluster
        .nodes()
        .iter()
        .find(|n| n.role() == Role::Manager && n.hostname() != leader)
        .context("no follower")?;
    create(follower, "web", 5).await?;
    wait_running(&cluster, "web", "5 replicas on at least 3 nodes", |r| {
        total(r) == 5 && r.values().filter(|ids| !ids.is_empty()).count() >= 3
    })
    .await?;

    // The leader's meshd dies: another manager leads, and a write made right after goes through.
    let old = cluster.position(&leader)?;
    cluster.nodes_mut()[old].kill_meshd();
    let new_leader = cluster.wait_leader(&[&leader], ELECTION).await?;
    let writer = cluster.live_manager()?;
    wait_until(ELECTION, "scale web=6 to be accepted", async || {
        Ok(scale(writer, "web", 6).await?.success())
    })
    .await?;
    // The workers' agents find the new leader on their own; the dead node is marked Down.
    wait_until(CONVERGE, "every other node Ready", async || {
        let rows = cluster.node_rows().await?;
        Ok(rows.iter().filter(|r| r.is_ready()).count() == 4)
    })
    .await?;
    cluster.wait_node_status(&leader, "Down", CONVERGE).await?;
    let row = cluster.node_row(&leader).await?;
    ensure!(
        ["unreachable", "unavailable"].contains(&row.manager_status.to_ascii_lowercase().as_str()),
        "the killed leader is shown as {:?}",
        row.manager_status
    );
    // Its tasks are rescheduled: six replicas run on the nodes whose meshd is alive.
    wait_until(CONVERGE, "6 replicas on live nodes", async || {
        Ok(cluster.running_on_live_nodes("web").await? == 6)
    })
    .await?;

    // A second manager dies: no quorum. Writes fail and say so; reads still answer.
    let second = cluster.position(&new_leader)?;
    cluster.nodes_mut()[second].kill_meshd();
    let survivor = cluster.live_manager()?;
    let refusal = wait_for(ELECTION, "a write refused for lack of quorum", async || {
        // A write that hangs instead of failing is a failure too.
        let out = tokio::time::timeout(ELECTION, scale(survivor, "web", 7))
            .await
            .context("a write without quorum hung instead of failing")??;
        let message = refused(&out, "scale without quorum")?;
        Ok(message
            .to_ascii_lowercase()
            .contains("quorum")
            .then_some(message))
    })
    .await?;
    eprintln!("write without quorum: {refusal}");
    let services = survivor.meshctl_json(&["service", "ls"]).await?;
    ensure!(
        services.iter().any(|s| s["Name"] == "web"),
        "service ls on the survivor: {services:?}"
    );
    let nodes = survivor.meshctl_json(&["node", "ls"]).await?;
    ensure!(nodes.len() == 5, "node ls on the survivor: {nodes:?}");
    let inspect = survivor.meshctl_ok(&["service", "inspect", "web"]).await?;
    let inspect: serde_json::Value = serde_json::from_str(&inspect).context("service inspect")?;
    let replicas = &inspect[0]["Spec"]["Mode"]["Replicated"]["Replicas"];
    ensure!(
        replicas == 6,
        "a refused write changed the service: {inspect}"
    );
    cluster.close()
}

#[tokio::test]
async fn pause_drain_and_a_cut_link_move_tasks_as_swarm_does() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = cluster(1, 2).await?;
    let manager = cluster.manager();
    create(manager, "web", 6).await?;
    wait_running(&cluster, "web", "6 replicas on all 3 nodes", |r| {
        total(r) == 6 && r.values().all(|ids| !ids.is_empty())
    })
    .await?;

    // Pause: what runs on node2 stays, new tasks go elsewhere.
    set_availability(manager, "node2", "pause").await?;
    let paused = cluster.node("node2")?.containers("web", false).await?;
    scale(manager, "web", 9).await?.ok("scale web=9")?;
    let running = wait_running(&cluster, "web", "9 replicas", |r| total(r) == 9).await?;
    ensure!(
        running["node2"] == paused,
        "paused node2 changed: {paused:?} -> {:?}",
        running["node2"]
    );

    // Drain: node2's tasks move to the other nodes.
    set_availability(manager, "node2", "drain").await?;
    wait_running(&cluster, "web", "node2 drained", |r| {
        total(r) == 9 && r["node2"].is_empty()
    })
    .await?;
    let row = cluster.node_row("node2").await?;
    ensure!(row.availability.eq_ignore_ascii_case("drain"), "{row:?}");
    set_availability(manager, "node2", "active").await?;

    // Cut node3 off: it is marked Down and its tasks run elsewhere.
    let node3 = cluster.node("node3")?;
    let stale = node3.containers("web", false).await?;
    ensure!(!stale.is_empty(), "node3 runs nothing to reschedule");
    node3.set_link(false)?;
    cluster.wait_node_status("node3", "Down", CONVERGE).await?;
    wait_until(CONVERGE, "9 replicas on node1 and node2", async || {
        let r = cluster.running_by_node("web").await?;
        Ok(r["node1"].len() + r["node2"].len() == 9)
    })
    .await?;

    // Restore it: Ready again, and the containers it ran while cut off are stopped.
    node3.set_link(true)?;
    cluster.wait_node_status("node3", "Ready", CONVERGE).await?;
    wait_running(&cluster, "web", "node3's stale containers stopped", |r| {
        total(r) == 9 && !r["node3"].iter().any(|id| stale.contains(id))
    })
    .await?;
    cluster.close()
}

#[tokio::test]
async fn bad_tokens_and_worker_certificates_are_refused() -> anyhow::Result<()> {
    require_privileged!();
    let mut cluster = cluster(1, 1).await?;
    let manager = cluster.manager();
    let token = manager
        .meshctl_ok(&["swarm", "join-token", "-q", "worker"])
        .await?
        .trim()
        .to_owned();
    let command = manager
        .meshctl_ok(&["swarm", "join-token", "worker"])
        .await?;
    let expected = format!("meshctl swarm join --token {token} {}:2377", manager.addr());
    ensure!(
        command.contains(&expected),
        "join-token worker printed {command:?}"
    );

    let spare = cluster.add_node(Role::Worker).await?;
    let (manager, spare) = (cluster.manager(), &cluster.nodes()[spare]);
    let join = async |token: &str| {
        let args = mesh_tests::cluster::join_args(token, spare, manager);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spare.meshctl(&args).await
    };

    let malformed = refused(&join("SWMTKN-1-nonsense").await?, "a malformed token")?;
    ensure!(
        malformed.to_ascii_lowercase().contains("token"),
        "{malformed}"
    );
    // Right format and CA digest, another secret.
    let (head, secret) = token.rsplit_once('-').context("token has no secret")?;
    let other: String = secret.chars().rev().collect();
    let other = if other == secret {
        "0".repeat(secret.len())
    } else {
        other
    };
    refused(&join(&format!("{head}-{other}")).await?, "a wrong secret")?;

    let rotated = manager
        .meshctl_ok(&["swarm", "join-token", "--rotate", "-q", "worker"])
        .await?
        .trim()
        .to_owned();
    ensure!(
        rotated != token && rotated.starts_with(head),
        "rotated to {rotated}"
    );
    refused(&join(&token).await?, "a rotated-out token")?;

    // The new token works, and the node is a worker.
    let joined = join(&rotated).await?.ok("join with the rotated token")?;
    ensure!(
        joined
            .stdout
            .contains("This node joined a swarm as a worker."),
        "{}",
        joined.stdout
    );
    cluster
        .wait_node_status(spare.hostname(), "Ready", CONVERGE)
        .await?;

    // A worker's daemon refuses management commands.
    let worker = cluster.node("node2")?;
    let out = worker.meshctl(&["service", "ls"]).await?;
    let message = refused(&out, "service ls on a worker")?;
    ensure!(message.contains("not a manager"), "{message}");

    // A worker's certificate on the manager's API: refused; the manager's own: accepted.
    let manager_addr = format!("{}:2377", manager.addr());
    let denied = list_services_as(worker, &manager_addr).await?;
    ensure!(
        denied == Some(tonic::Code::PermissionDenied),
        "a worker certificate listing services got {denied:?}"
    );
    let allowed = list_services_as(manager, &manager_addr).await?;
    ensure!(
        allowed.is_none(),
        "the manager's certificate got {allowed:?}"
    );

    // A Ready node is not removed without --force.
    let out = manager.meshctl(&["node", "rm", "node2"]).await?;
    refused(&out, "node rm of a Ready node")?;
    cluster.close()
}

/// Calls `ListServices` on `addr` over mutual TLS with `node`'s certificate from its state dir;
/// returns the refusal's code, or `None` when the call succeeded.
async fn list_services_as(node: &Node, addr: &str) -> anyhow::Result<Option<tonic::Code>> {
    let identity = mesh_control::ca::TlsIdentity::from_pem(
        node.certificate_file("node.crt")?,
        node.certificate_file("node.key")?,
        node.certificate_file("ca.crt")?,
    )?;
    // The test process is in the host namespace, which reaches every node through the bridge.
    let channel = mesh_control::ca::connect(addr, &identity).await?;
    let mut client = mesh_proto::control_client::ControlClient::new(channel);
    match client
        .list_services(mesh_proto::ListServicesRequest {})
        .await
    {
        Ok(_) => Ok(None),
        Err(status) => Ok(Some(status.code())),
    }
}
