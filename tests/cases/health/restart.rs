//! A restarted meshd judges the containers it re-adopts by their health: a task still starting
//! waits on as no backend; one that turned unhealthy while meshd was down is withdrawn, fails
//! and is replaced.

use super::*;

/// The `service ps web` row of the task `task_id` (its first 12 characters are the ID column).
async fn row_of(manager: &Node, task_id: &str) -> anyhow::Result<Option<Value>> {
    let short = task_id.get(..12).unwrap_or(task_id);
    Ok(ps(manager).await?.into_iter().find(|r| r["ID"] == short))
}

#[tokio::test]
async fn a_restarted_meshd_judges_its_tasks_by_their_health() -> anyhow::Result<()> {
    require_privileged!();
    let mut cluster = OverlayCluster::new(
        Cluster::builder()
            .managers(1)
            .workers(1)
            .dispatcher_heartbeat("1s")
            .start()
            .await?,
    );
    let manager = cluster.manager();
    manager
        .meshctl_ok(&["network", "create", "-d", "overlay", "back"])
        .await?;
    manager
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "client",
            "--network",
            "back",
            "--constraint",
            "node.role==manager",
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ])
        .await?;
    manager
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            "--network",
            "back",
            "--stop-grace-period",
            "5s",
            "--health-cmd",
            "test -f /tmp/healthy",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--health-start-period",
            "10m",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            WEB,
        ])
        .await?;
    let client = wait_for(CONVERGE, "the client", async || {
        Ok(sandboxes(&cluster, "client").await?.pop())
    })
    .await?;
    let web = wait_for(CONVERGE, "2 web containers", async || {
        let found = sandboxes(&cluster, "web").await?;
        Ok((found.len() == 2).then_some(found))
    })
    .await?;
    let worker_name = cluster.nodes()[1].hostname().to_owned();
    let here = web
        .iter()
        .find(|t| t.node != worker_name)
        .context("a web task on the manager")?
        .clone();
    let there = web
        .iter()
        .find(|t| t.node == worker_name)
        .context("a web task on the worker")?
        .clone();
    let vip = vip_on(cluster.manager(), "web", "back").await?;
    set_healthy(&cluster, &here, true).await?;
    wait_until(CONVERGE, "the VIP to reach the healthy task", async || {
        Ok(via_vip(&client, &vip).await? == Some(here.hostname.clone()))
    })
    .await?;

    // The worker's meshd restarts while its task is still starting: the task waits on, is no
    // backend, and runs (and is reached) once healthy, in the same container.
    cluster.nodes_mut()[1].kill_meshd();
    cluster.nodes_mut()[1].restart_meshd().await?;
    tokio::time::sleep(INTERVAL * 2).await;
    let row = row_of(cluster.manager(), &there.task_id)
        .await?
        .context("the worker's task")?;
    ensure!(
        current(&row).starts_with("Starting"),
        "a re-adopted task still starting should stay Starting: {row}"
    );
    for _ in 0..5 {
        let answer = via_vip(&client, &vip).await?;
        ensure!(
            answer.as_ref() == Some(&here.hostname),
            "answered {answer:?}: only the healthy task may"
        );
    }
    set_healthy(&cluster, &there, true).await?;
    let both: BTreeSet<String> = [here.hostname.clone(), there.hostname.clone()].into();
    wait_until(CONVERGE, "the VIP to reach both tasks", async || {
        let mut seen = BTreeSet::new();
        for _ in 0..12 {
            seen.extend(via_vip(&client, &vip).await?);
        }
        Ok(seen == both)
    })
    .await?;
    let row = row_of(cluster.manager(), &there.task_id)
        .await?
        .context("the worker's task")?;
    ensure!(
        current(&row).starts_with("Running"),
        "the re-adopted task should run once healthy: {row}"
    );

    // The task turns unhealthy while the worker's meshd is down: the restarted meshd withdraws
    // it from the VIP, fails it as unhealthy and a new task replaces it.
    cluster.nodes_mut()[1].kill_meshd();
    set_healthy(&cluster, &there, false).await?;
    wait_until(CONVERGE, "Docker to judge the task unhealthy", async || {
        Ok(docker_health(&cluster, &there).await? == "unhealthy")
    })
    .await?;
    cluster.nodes_mut()[1].restart_meshd().await?;
    let restarted = Instant::now();
    wait_until(
        CONVERGE,
        "the VIP to stop reaching the unhealthy task",
        async || {
            for _ in 0..6 {
                if via_vip(&client, &vip).await? != Some(here.hostname.clone()) {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    let withdrawn = restarted.elapsed();
    for _ in 0..10 {
        let answer = via_vip(&client, &vip).await?;
        ensure!(
            answer.as_ref() == Some(&here.hostname),
            "answered {answer:?} after the unhealthy task was withdrawn"
        );
    }
    let row = wait_for(CONVERGE, "the unhealthy task to fail", async || {
        let row = row_of(cluster.manager(), &there.task_id).await?;
        Ok(row.filter(|r| current(r).starts_with("Failed")))
    })
    .await?;
    ensure!(
        row["Error"] == "\"task: container is unhealthy\"",
        "the failed task should say why: {row}"
    );
    eprintln!(
        "health: after the restart, the unhealthy task left the VIP within {} ms",
        withdrawn.as_millis()
    );
    wait_until(CONVERGE, "a replacement task, starting", async || {
        let rows = ps(cluster.manager()).await?;
        Ok(rows.iter().any(|r| {
            r["DesiredState"] == "Running"
                && current(r).starts_with("Starting")
                && r["Name"] == row["Name"]
        }))
    })
    .await?;
    cluster.close()
}
