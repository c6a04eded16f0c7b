//! Rolling updates and rollbacks on a three-node cluster, driven through meshctl as a user would:
//! start-first keeps every replica running throughout (sampled from `service ps` while the update
//! runs), stop-first never drops below N − parallelism and starts each replacement only once the
//! task it replaces has stopped, a failing update pauses (or rolls itself
//! back with `--update-failure-action rollback`), and `service rollback` restores the previous
//! image and environment. Bad input is refused in one line with nothing changed. An update whose
//! leader dies half-way is carried on by the next leader.
//!
//! The failing update runs `false`: its tasks exit at once, no health check is involved. The second
//! image is the test image tagged again on every node (no registry is reachable).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Node, Output, Role, require_privileged, wait_until};
use serde_json::Value;

/// Bound on convergence: bounds the tests, not a speed assertion.
const CONVERGE: Duration = Duration::from_secs(90);
const IMAGE_V2: &str = "mesh/busybox:v2";

async fn cluster() -> anyhow::Result<Cluster> {
    let cluster = Cluster::builder()
        .managers(1)
        .workers(2)
        .dispatcher_heartbeat("1s")
        .start()
        .await?;
    for node in cluster.nodes() {
        node.docker(&["tag", BUSYBOX_IMAGE, IMAGE_V2])
            .await?
            .ok("docker tag")?;
    }
    Ok(cluster)
}

/// `service create` (waiting for convergence) with `extra` flags, running `sleep 1000000` with a
/// 1 s stop grace period.
async fn create(node: &Node, name: &str, replicas: u32, extra: &[&str]) -> anyhow::Result<()> {
    let replicas = replicas.to_string();
    let mut args = vec![
        "service",
        "create",
        "-q",
        "--name",
        name,
        "--replicas",
        &replicas,
        // `sleep` ignores SIGTERM: a short grace period keeps stop-first updates quick.
        "--stop-grace-period",
        "1s",
    ];
    args.extend_from_slice(extra);
    args.extend([BUSYBOX_IMAGE, "sleep", "1000000"]);
    node.meshctl_ok(&args).await.map(drop)
}

/// `service inspect NAME` as JSON.
async fn inspect(node: &Node, name: &str) -> anyhow::Result<Value> {
    let out = node.meshctl_ok(&["service", "inspect", name]).await?;
    let mut list: Vec<Value> = serde_json::from_str(&out).context("service inspect output")?;
    list.pop().context("service inspect printed nothing")
}

fn update_state(service: &Value) -> &str {
    service["UpdateStatus"]["State"].as_str().unwrap_or("")
}

/// Tasks wanted running and observed running, by image, from `service ps`.
async fn running(node: &Node, name: &str) -> anyhow::Result<Vec<String>> {
    let tasks = node.tasks(name).await?;
    Ok(tasks
        .iter()
        .filter(|t| t["DesiredState"] == "Running")
        .filter(|t| {
            t["CurrentState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Running"))
        })
        .map(|t| t["Image"].as_str().unwrap_or_default().to_owned())
        .collect())
}

/// Runs `meshctl ARGS` while sampling, every 50 ms, the service's running tasks (from `service
/// ps`) and its running containers (from every node's dockerd); returns its output and both
/// series.
async fn sampled(
    cluster: &Cluster,
    name: &str,
    args: &[&str],
) -> anyhow::Result<(Output, Vec<usize>, Vec<usize>)> {
    let node = cluster.manager();
    let done = AtomicBool::new(false);
    let sampler = async {
        let (mut tasks, mut containers) = (Vec::new(), Vec::new());
        while !done.load(Ordering::SeqCst) {
            tasks.push(running(node, name).await?.len());
            let by_node = cluster.running_by_node(name).await?;
            containers.push(by_node.values().map(Vec::len).sum());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok((tasks, containers))
    };
    let command = async {
        let out = node.meshctl(args).await;
        done.store(true, Ordering::SeqCst);
        out
    };
    let (samples, out) = tokio::join!(sampler, command);
    let (tasks, containers) = samples?;
    Ok((out?, tasks, containers))
}

/// Waits until every running container of the service, on every node, runs `image` with `env` in
/// its environment (old containers take their stop grace period to go: `sleep` ignores SIGTERM).
async fn wait_containers(
    cluster: &Cluster,
    name: &str,
    image: &str,
    env: &str,
) -> anyhow::Result<()> {
    let what = format!("every container of {name} to run {image} with {env}");
    wait_until(CONVERGE, &what, async || {
        let mut seen = 0;
        for node in cluster.nodes() {
            for id in node.containers(name, false).await? {
                let container = node.inspect_container(&id).await?;
                let config = &container["Config"];
                let has_env = config["Env"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|v| v == env));
                if config["Image"] != image || !has_env {
                    return Ok(false);
                }
                seen += 1;
            }
        }
        Ok(seen > 0)
    })
    .await
}

/// A refusal: non-zero exit, one line on stderr containing `want`.
fn refused(out: &Output, want: &str) -> anyhow::Result<()> {
    let stderr = out.stderr.trim();
    ensure!(!out.success(), "accepted: {}", out.stdout.trim());
    ensure!(
        stderr.lines().count() == 1 && !stderr.contains("panicked"),
        "not one line: {stderr:?}"
    );
    ensure!(stderr.contains(want), "{stderr:?} does not say {want:?}");
    Ok(())
}

#[tokio::test]
async fn start_first_keeps_every_replica_and_stop_first_at_most_parallelism_fewer()
-> anyhow::Result<()> {
    require_privileged!();
    let cluster = cluster().await?;
    let manager = cluster.manager();
    let replicas = 4;
    create(
        manager,
        "web",
        replicas,
        &["--update-order", "start-first", "--update-monitor", "1s"],
    )
    .await?;

    // Start-first, one at a time: N running at every sample.
    let (out, counts, _) = sampled(
        &cluster,
        "web",
        &["service", "update", "--image", IMAGE_V2, "web"],
    )
    .await?;
    ensure!(out.success(), "start-first update failed: {}", out.stderr);
    ensure!(
        out.stdout.contains("verify: Service web converged"),
        "{}",
        out.stdout
    );
    ensure!(counts.len() >= 10, "too few samples: {counts:?}");
    let least = counts.iter().min().copied().unwrap_or(0);
    eprintln!(
        "    start-first: {} samples, least running {least}",
        counts.len()
    );
    ensure!(
        least >= replicas as usize,
        "start-first dropped below {replicas} running tasks: {counts:?}"
    );
    let images = running(manager, "web").await?;
    ensure!(
        images.len() == replicas as usize && images.iter().all(|i| i == IMAGE_V2),
        "after the update: {images:?}"
    );
    let service = inspect(manager, "web").await?;
    ensure!(
        update_state(&service) == "completed",
        "{}",
        service["UpdateStatus"]
    );
    ensure!(service["UpdateStatus"]["Message"] == "update completed");
    ensure!(service["Spec"]["UpdateConfig"]["Order"] == "start-first");

    // Stop-first, two at a time: never fewer than N − 2.
    let (out, counts, containers) = sampled(
        &cluster,
        "web",
        &[
            "service",
            "update",
            "--update-order",
            "stop-first",
            "--update-parallelism",
            "2",
            "--env-add",
            "PHASE=2",
            "web",
        ],
    )
    .await?;
    ensure!(out.success(), "stop-first update failed: {}", out.stderr);
    let least = counts.iter().min().copied().unwrap_or(0);
    eprintln!(
        "    stop-first, parallelism 2: {} samples, least running {least}",
        counts.len()
    );
    ensure!(
        least >= replicas as usize - 2,
        "stop-first dropped below N - parallelism: {counts:?}"
    );
    // Each replacement starts only once its old container has stopped: never more than N.
    let most = containers.iter().max().copied().unwrap_or(0);
    eprintln!("    stop-first: most containers running at once {most}");
    ensure!(
        most <= replicas as usize,
        "a replacement started before the task it replaces stopped: {containers:?}"
    );
    wait_containers(&cluster, "web", IMAGE_V2, "PHASE=2").await?;
    Ok(())
}

#[tokio::test]
async fn a_failing_update_pauses_or_rolls_back() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = cluster().await?;
    let manager = cluster.manager();

    // Pause (the default): the command fails with the status message, old tasks keep running.
    // `false` may be seen running for an instant before it fails; with no delay the update would
    // then go on to the next slot (as Swarm's does), so a delay holds it on the first.
    create(
        manager,
        "paused",
        3,
        &["--update-monitor", "2s", "--update-delay", "3s"],
    )
    .await?;
    let out = manager
        .meshctl(&["service", "update", "--args", "false", "paused"])
        .await?;
    ensure!(!out.success(), "a failing update succeeded: {}", out.stdout);
    ensure!(
        out.stderr
            .contains("update paused due to failure or early termination of task"),
        "{}",
        out.stderr
    );
    let service = inspect(manager, "paused").await?;
    ensure!(
        update_state(&service) == "paused",
        "{}",
        service["UpdateStatus"]
    );
    let left = running(manager, "paused").await?;
    ensure!(left.len() >= 2, "the pause stopped the old tasks: {left:?}");

    // A new spec resumes it.
    manager
        .meshctl_ok(&["service", "update", "--args", "sleep 2000000", "paused"])
        .await?;
    let service = inspect(manager, "paused").await?;
    ensure!(
        update_state(&service) == "completed",
        "{}",
        service["UpdateStatus"]
    );
    ensure!(running(manager, "paused").await?.len() == 3);

    // Rollback: the update undoes itself and the command says so.
    create(
        manager,
        "undone",
        3,
        &[
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "2s",
        ],
    )
    .await?;
    let out = manager
        .meshctl(&["service", "update", "--args", "false", "undone"])
        .await?;
    ensure!(!out.success(), "a failing update succeeded: {}", out.stdout);
    ensure!(
        out.stderr.contains("rolled back")
            && out
                .stderr
                .contains("update rolled back due to failure or early termination of task"),
        "{}",
        out.stderr
    );
    wait_until(CONVERGE, "the rollback to complete", async || {
        Ok(update_state(&inspect(manager, "undone").await?) == "rollback_completed")
    })
    .await?;
    let service = inspect(manager, "undone").await?;
    ensure!(
        service["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"]
            == serde_json::json!(["sleep", "1000000"]),
        "{}",
        service["Spec"]
    );
    ensure!(running(manager, "undone").await?.len() == 3);
    Ok(())
}

#[tokio::test]
async fn service_rollback_restores_the_previous_image_and_env() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = cluster().await?;
    let manager = cluster.manager();
    create(
        manager,
        "back",
        2,
        &["--env", "COLOR=blue", "--update-monitor", "1s"],
    )
    .await?;

    // Nothing to roll back to yet: refused, nothing changed.
    let before = inspect(manager, "back").await?;
    let out = manager.meshctl(&["service", "rollback", "back"]).await?;
    refused(&out, "service back does not have a previous spec")?;
    for (args, want) in [
        (
            &["--update-max-failure-ratio", "2"][..],
            "must be a number between 0 and 1",
        ),
        (&["--update-delay", "soon"], "invalid duration \"soon\""),
        (
            &["--update-failure-action", "retry"],
            "expected pause, continue or rollback",
        ),
        (
            &["--rollback-order", "last"],
            "expected stop-first or start-first",
        ),
    ] {
        let mut all = vec!["service", "update"];
        all.extend_from_slice(args);
        all.push("back");
        refused(&manager.meshctl(&all).await?, want)?;
    }
    let after = inspect(manager, "back").await?;
    ensure!(
        before["Version"] == after["Version"],
        "bad input changed the service"
    );

    manager
        .meshctl_ok(&[
            "service",
            "update",
            "--image",
            IMAGE_V2,
            "--env-add",
            "COLOR=green",
            "back",
        ])
        .await?;
    wait_containers(&cluster, "back", IMAGE_V2, "COLOR=green").await?;

    let out = manager.meshctl_ok(&["service", "rollback", "back"]).await?;
    ensure!(out.contains("verify: Service back converged"), "{out}");
    let service = inspect(manager, "back").await?;
    ensure!(
        update_state(&service) == "rollback_completed",
        "{}",
        service["UpdateStatus"]
    );
    let container = &service["Spec"]["TaskTemplate"]["ContainerSpec"];
    ensure!(container["Image"] == BUSYBOX_IMAGE, "{container}");
    ensure!(
        container["Env"] == serde_json::json!(["COLOR=blue"]),
        "{container}"
    );
    wait_until(
        CONVERGE,
        "only the previous spec's containers",
        async || {
            let images = running(manager, "back").await?;
            Ok(images.len() == 2 && images.iter().all(|i| i == BUSYBOX_IMAGE))
        },
    )
    .await?;
    wait_containers(&cluster, "back", BUSYBOX_IMAGE, "COLOR=blue").await?;

    // One step back only, as Swarm: rolling back again returns to the spec rolled back from.
    manager
        .meshctl_ok(&["service", "update", "--rollback", "back"])
        .await?;
    let service = inspect(manager, "back").await?;
    let container = &service["Spec"]["TaskTemplate"]["ContainerSpec"];
    ensure!(container["Image"] == IMAGE_V2, "{container}");
    ensure!(
        container["Env"] == serde_json::json!(["COLOR=green"]),
        "{container}"
    );
    Ok(())
}

/// The update's state lives in the store: when the leader dies half-way through, the next leader
/// carries the same update on (same start time, same pace) to completion.
#[tokio::test]
async fn an_update_carries_on_under_a_new_leader() -> anyhow::Result<()> {
    require_privileged!();
    let mut cluster = Cluster::builder()
        .managers(3)
        .workers(2)
        .dispatcher_heartbeat("1s")
        .start()
        .await?;
    for node in cluster.nodes() {
        node.docker(&["tag", BUSYBOX_IMAGE, IMAGE_V2])
            .await?
            .ok("docker tag")?;
    }
    let leader = cluster.wait_leader(&[], CONVERGE).await?;
    let follower = cluster
        .nodes()
        .iter()
        .find(|n| n.role() == Role::Manager && n.hostname() != leader)
        .context("no follower")?;
    create(
        follower,
        "slow",
        6,
        &[
            "--constraint",
            "node.role==worker",
            "--update-delay",
            "3s",
            "--update-monitor",
            "1s",
        ],
    )
    .await?;
    follower
        .meshctl_ok(&["service", "update", "-d", "--image", IMAGE_V2, "slow"])
        .await?;
    wait_until(CONVERGE, "two replicas updated", async || {
        let images = running(follower, "slow").await?;
        Ok(images.iter().filter(|i| *i == IMAGE_V2).count() >= 2)
    })
    .await?;
    let before = inspect(follower, "slow").await?;
    let updated = running(follower, "slow").await?;
    ensure!(
        update_state(&before) == "updating" && updated.iter().any(|i| i == BUSYBOX_IMAGE),
        "the update was over before the leader died: {updated:?} {}",
        before["UpdateStatus"]
    );

    let position = cluster.position(&leader)?;
    cluster.nodes_mut()[position].kill_meshd();
    cluster.wait_leader(&[&leader], CONVERGE).await?;
    let survivor = cluster.live_manager()?;
    wait_until(CONVERGE, "the update to complete", async || {
        Ok(update_state(&inspect(survivor, "slow").await?) == "completed")
    })
    .await?;
    let after = inspect(survivor, "slow").await?;
    ensure!(
        after["UpdateStatus"]["StartedAt"] == before["UpdateStatus"]["StartedAt"],
        "a new update started instead: {} then {}",
        before["UpdateStatus"],
        after["UpdateStatus"]
    );
    let images = running(survivor, "slow").await?;
    ensure!(
        images.len() == 6 && images.iter().all(|i| i == IMAGE_V2),
        "after the update: {images:?}"
    );
    Ok(())
}
