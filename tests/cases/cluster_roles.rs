//! Role changes, removals and root CA rotation across nodes: a worker promoted to manager and demoted
//! back, `swarm leave` and `node rm` refused where Swarm refuses them, a removed node kept out when it
//! comes back, and `swarm ca --rotate` reissuing every node's certificate while its tasks keep running.
//!
//! Each test builds its own cluster with a 1 s dispatcher heartbeat; the waits bound the tests, they
//! do not assert on speed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use mesh_control::ca::{Role as CertRole, TlsIdentity};
use mesh_tests::{
    BUSYBOX_IMAGE, Cluster, Node, Output, Role, require_privileged, wait_for, wait_until,
};

/// Bound on a role change, a certificate renewal, convergence and failure detection.
const CONVERGE: Duration = Duration::from_secs(60);
/// Bound on a refused node saying so in its log (it retries its session every 2 s at most).
const REFUSAL: Duration = Duration::from_secs(20);

async fn cluster(managers: usize, workers: usize) -> anyhow::Result<Cluster> {
    Cluster::builder()
        .managers(managers)
        .workers(workers)
        .dispatcher_heartbeat("1s")
        .start()
        .await
}

/// `meshctl service create -d --name NAME MODE… busybox sleep 1000000` on `node`.
async fn create(node: &Node, name: &str, mode: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["service", "create", "-d", "--name", name];
    args.extend_from_slice(mode);
    args.extend([BUSYBOX_IMAGE, "sleep", "1000000"]);
    node.meshctl_ok(&args).await.map(drop)
}

/// A refusal: non-zero exit, one line on stderr, no panic. Returns that line.
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

/// Waits until `node ls` shows `hostname` with this `ManagerStatus` ("" on a worker).
async fn wait_manager_status(
    cluster: &Cluster,
    hostname: &str,
    status: &str,
) -> anyhow::Result<()> {
    let what = format!("{hostname} to show ManagerStatus {status:?}");
    wait_until(CONVERGE, &what, async || {
        let row = cluster.node_row(hostname).await?;
        Ok(row.manager_status.eq_ignore_ascii_case(status))
    })
    .await
}

/// The role the node's certificate on disk grants.
fn cert_role(node: &Node) -> anyhow::Result<CertRole> {
    let identity = TlsIdentity::from_pem(
        node.certificate_file("node.crt")?,
        node.certificate_file("node.key")?,
        node.certificate_file("ca.crt")?,
    )?;
    Ok(identity.node_identity()?.role)
}

fn total(running: &BTreeMap<String, Vec<String>>) -> usize {
    running.values().map(Vec::len).sum()
}

#[tokio::test]
async fn a_promoted_worker_manages_until_demoted_and_the_last_manager_stays() -> anyhow::Result<()>
{
    require_privileged!();
    let cluster = cluster(1, 1).await?;
    let (node1, node2) = (cluster.manager(), cluster.node("node2")?);
    ensure!(
        cert_role(node2)? == CertRole::Worker,
        "node2 starts as a worker"
    );

    // Promote: node2 is a Reachable manager, its certificate says so, and its own socket manages.
    let out = node1.meshctl_ok(&["node", "promote", "node2"]).await?;
    ensure!(out.contains("Node node2 promoted to a manager."), "{out}");
    wait_manager_status(&cluster, "node2", "Reachable").await?;
    wait_manager_status(&cluster, "node1", "Leader").await?;
    wait_until(
        CONVERGE,
        "node2's certificate to grant the manager role",
        async || Ok(cert_role(node2)? == CertRole::Manager),
    )
    .await?;
    wait_until(CONVERGE, "service ls to answer on node2", async || {
        Ok(node2.meshctl(&["service", "ls"]).await?.success())
    })
    .await?;
    // A write through the new manager reaches the leader, and its tasks run on both nodes.
    create(node2, "web", &["--replicas", "2"]).await?;
    wait_until(CONVERGE, "2 replicas, one per node", async || {
        let running = cluster.running_by_node("web").await?;
        Ok(running.values().all(|ids| ids.len() == 1))
    })
    .await?;

    // Two managers: either leaving loses the quorum, so it is refused and node2 keeps working.
    let out = node2.meshctl(&["swarm", "leave"]).await?;
    let message = refused(&out, "swarm leave of one of two managers")?;
    ensure!(message.contains("quorum"), "{message}");
    let services = node2.meshctl_json(&["service", "ls"]).await?;
    ensure!(services.iter().any(|s| s["Name"] == "web"), "{services:?}");
    ensure!(
        cluster.node_row("node2").await?.manager_status == "Reachable",
        "node2 after a refused leave: {:?}",
        cluster.node_row("node2").await?
    );

    // Demote: no manager status, a worker certificate, and its socket no longer manages.
    let out = node1.meshctl_ok(&["node", "demote", "node2"]).await?;
    ensure!(out.contains("Node node2 demoted in the swarm."), "{out}");
    wait_manager_status(&cluster, "node2", "").await?;
    let message = wait_for(CONVERGE, "service ls on node2 to be refused", async || {
        let out = node2.meshctl(&["service", "ls"]).await?;
        Ok((!out.success()).then(|| out.stderr.trim().to_owned()))
    })
    .await?;
    ensure!(message.contains("not a manager"), "{message}");
    refused(
        &node2.meshctl(&["service", "ls"]).await?,
        "service ls on node2",
    )?;
    wait_until(
        CONVERGE,
        "node2's certificate to grant the worker role",
        async || Ok(cert_role(node2)? == CertRole::Worker),
    )
    .await?;
    cluster.wait_node_status("node2", "Ready", CONVERGE).await?;

    // node1 is the last manager: it can neither be demoted nor leave, and still works after.
    let out = node1.meshctl(&["node", "demote", "node1"]).await?;
    let message = refused(&out, "demoting the last manager")?;
    ensure!(message.contains("last manager"), "{message}");
    let out = node1.meshctl(&["swarm", "leave"]).await?;
    let message = refused(&out, "swarm leave of the last manager")?;
    ensure!(message.contains("last manager"), "{message}");
    let row = cluster.node_row("node1").await?;
    ensure!(
        row.is_leader() && row.is_ready(),
        "node1 afterwards: {row:?}"
    );
    node1
        .meshctl_ok(&["service", "scale", "-d", "web=3"])
        .await?;
    wait_until(CONVERGE, "3 replicas after the refusals", async || {
        Ok(total(&cluster.running_by_node("web").await?) == 3)
    })
    .await?;
    cluster.close()
}

#[tokio::test]
async fn a_removed_worker_is_not_accepted_back() -> anyhow::Result<()> {
    require_privileged!();
    let mut cluster = cluster(1, 1).await?;
    let node1 = cluster.manager();
    create(node1, "web", &["--replicas", "2"]).await?;
    wait_until(CONVERGE, "2 replicas, one per node", async || {
        let running = cluster.running_by_node("web").await?;
        Ok(running.values().all(|ids| ids.len() == 1))
    })
    .await?;

    // A Ready worker is not removed without --force.
    let out = node1.meshctl(&["node", "rm", "node2"]).await?;
    let message = refused(&out, "node rm of a Ready worker")?;
    ensure!(message.contains("--force"), "{message}");
    ensure!(cluster.node_row("node2").await?.is_ready());

    // Its meshd dies: once Down it is removed, and its replica runs on node1.
    let index = cluster.position("node2")?;
    cluster.nodes_mut()[index].kill_meshd();
    cluster.wait_node_status("node2", "Down", CONVERGE).await?;
    cluster
        .manager()
        .meshctl_ok(&["node", "rm", "node2"])
        .await?;
    let hostnames = |rows: &[mesh_tests::NodeRow]| -> Vec<String> {
        rows.iter().map(|r| r.hostname.clone()).collect()
    };
    let rows = cluster.node_rows().await?;
    ensure!(hostnames(&rows) == ["node1"], "node ls after rm: {rows:?}");
    wait_until(CONVERGE, "both replicas on node1", async || {
        Ok(cluster.node("node1")?.containers("web", false).await?.len() == 2)
    })
    .await?;

    // It comes back with its old certificate: refused, and it says why.
    let log = cluster.node("node2")?.dir().join("meshd.log");
    let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    restart_worker_meshd(&mut cluster.nodes_mut()[index]).await?;
    let refusal = wait_for(REFUSAL, "node2's log to say it was removed", async || {
        ensure!(
            !hostnames(&cluster.node_rows().await?).contains(&"node2".to_owned()),
            "the removed node2 is back in node ls"
        );
        removal_line(&log, offset)
    })
    .await?;
    eprintln!("node2 after restart: {refusal}");
    // A few more heartbeats: still absent, and no task of web went back to it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows = cluster.node_rows().await?;
    ensure!(
        hostnames(&rows) == ["node1"],
        "node ls after restart: {rows:?}"
    );
    ensure!(
        cluster.node("node1")?.containers("web", false).await?.len() == 2,
        "web's replicas moved after node2 came back"
    );
    cluster.close()
}

/// Restarts a worker's meshd (the harness waits for its `info`); `meshctl version` then shows
/// the daemon answers.
async fn restart_worker_meshd(node: &mut Node) -> anyhow::Result<()> {
    node.restart_meshd().await?;
    ensure!(
        node.meshd_running(),
        "{}'s meshd did not restart",
        node.hostname()
    );
    let node = &*node;
    wait_until(CONVERGE, "the restarted meshd to answer", async || {
        let out = node.meshctl(&["version"]).await?;
        Ok(out.success() && out.stdout.contains("Server:"))
    })
    .await
}

/// The first line logged after `offset` that says the node was removed (not a container's removal).
fn removal_line(log: &Path, offset: u64) -> anyhow::Result<Option<String>> {
    let text = std::fs::read(log).with_context(|| format!("cannot read {}", log.display()))?;
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    let text = String::from_utf8_lossy(&text[start..]);
    Ok(text
        .lines()
        .find(|l| l.contains("removed") && !l.contains("container"))
        .map(str::to_owned))
}

#[tokio::test]
async fn a_root_ca_rotation_reissues_every_certificate_without_downtime() -> anyhow::Result<()> {
    require_privileged!();
    let mut cluster = cluster(3, 1).await?;
    let node1 = cluster.manager();
    create(node1, "web", &["--mode", "global"]).await?;
    let before = wait_for(CONVERGE, "one web task on each node", async || {
        let running = cluster.running_by_node("web").await?;
        Ok(running
            .values()
            .all(|ids| ids.len() == 1)
            .then_some(running))
    })
    .await?;
    let old_root = node1.meshctl_ok(&["swarm", "ca"]).await?;
    let old_token = node1
        .meshctl_ok(&["swarm", "join-token", "-q", "worker"])
        .await?
        .trim()
        .to_owned();
    let mut old_certs = BTreeMap::new();
    for node in cluster.nodes() {
        ensure!(
            node.certificate_file("ca.crt")?.contains(old_root.trim()),
            "{}",
            node.hostname()
        );
        old_certs.insert(
            node.hostname().to_owned(),
            node.certificate_file("node.crt")?,
        );
    }

    let out = node1.meshctl_ok(&["swarm", "ca", "--rotate"]).await?;
    ensure!(out.contains("Root CA rotated"), "{out}");
    let new_root = node1.meshctl_ok(&["swarm", "ca"]).await?;
    ensure!(
        new_root.contains("BEGIN CERTIFICATE") && new_root != old_root,
        "swarm ca after rotation printed {new_root:?}"
    );
    let root_file = cluster.dir().join("new-root.pem");
    std::fs::write(&root_file, &new_root).context("cannot write the new root")?;

    // Every node trusts the new root and holds a certificate issued under it, while the tasks that
    // ran before keep running unchanged (checked at every poll).
    let interrupted = wait_for(
        CONVERGE,
        "every node renewed under the new root",
        async || {
            let running = cluster.running_by_node("web").await?;
            if running != before {
                return Ok(Some(Some(running)));
            }
            for node in cluster.nodes() {
                let renewed = node.certificate_file("ca.crt")?.contains(new_root.trim())
                    && node.certificate_file("node.crt")? != old_certs[node.hostname()]
                    && issued_by(&root_file, node)?;
                if !renewed {
                    return Ok(None);
                }
            }
            Ok(Some(None))
        },
    )
    .await?;
    ensure!(
        interrupted.is_none(),
        "web's tasks changed during rotation: {before:?} -> {interrupted:?}"
    );

    // Every node stays Ready, any manager answers, and a write through a follower goes through.
    let rows = cluster.node_rows().await?;
    ensure!(
        rows.len() == 4 && rows.iter().all(|r| r.is_ready()),
        "{rows:?}"
    );
    let leader = cluster.wait_leader(&[], CONVERGE).await?;
    let follower = cluster
        .nodes()
        .iter()
        .find(|n| n.role() == Role::Manager && n.hostname() != leader)
        .context("no follower")?;
    create(follower, "after", &["--replicas", "4"]).await?;
    wait_until(
        CONVERGE,
        "4 replicas of a service created after rotation",
        async || Ok(total(&cluster.running_by_node("after").await?) == 4),
    )
    .await?;
    ensure!(
        cluster.running_by_node("web").await? == before,
        "web's tasks changed"
    );

    // The join tokens were replaced: the old one is refused, the new one admits a node.
    let new_token = node1
        .meshctl_ok(&["swarm", "join-token", "-q", "worker"])
        .await?
        .trim()
        .to_owned();
    ensure!(new_token != old_token, "the worker token was not replaced");
    let spare = cluster.add_node(Role::Worker).await?;
    let (node1, spare) = (cluster.manager(), &cluster.nodes()[spare]);
    let join = async |token: &str| {
        let args = mesh_tests::cluster::join_args(token, spare, node1);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spare.meshctl(&args).await
    };
    refused(
        &join(&old_token).await?,
        "a join with the pre-rotation token",
    )?;
    join(&new_token).await?.ok("a join with the new token")?;
    cluster
        .wait_node_status(spare.hostname(), "Ready", CONVERGE)
        .await?;
    ensure!(
        issued_by(&root_file, spare)?,
        "the new node's certificate is not under the new root"
    );
    cluster.close()
}

/// Whether the node's certificate on disk verifies against the root in `root_file` alone.
fn issued_by(root_file: &Path, node: &Node) -> anyhow::Result<bool> {
    let cert = node.state_dir().join("certificates").join("node.crt");
    let root = root_file.display().to_string();
    let out = mesh_tests::process::run_sync(
        "openssl",
        &["verify", "-CAfile", &root, &cert.display().to_string()],
    )?;
    Ok(out.success())
}
