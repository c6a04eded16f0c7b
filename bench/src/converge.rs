//! `cargo xtask bench converge`: how long mesh and Docker Swarm take, on one node on this
//! machine, from `service create --replicas 10` to 10 running containers, and from scaling 10→30
//! to 30 running. Both run the same busybox image; counts come from each node's dockerd.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;
use mesh_tests::dockerd::{Dockerd, Networking};
use mesh_tests::netns::{Bridge, Netns};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Output, image};

use crate::run::{LIMIT, SERVICE, build};

pub async fn converge(release: bool) -> anyhow::Result<()> {
    let Some(profile) = build(release, &["converge"])? else {
        return Ok(());
    };
    let cluster = Cluster::builder().managers(1).quiet().start().await?;
    let node = cluster.manager();
    let bridge = Bridge::for_test()?;
    let ns = Netns::attach(&bridge, 1)?;
    let swarm_dir = cluster.dir().join("swarm");
    std::fs::create_dir_all(&swarm_dir)?;
    let swarm = Dockerd::start(&ns, &swarm_dir, Networking::Default).await?;
    let id = image::load(&swarm, cluster.dir()).await?;
    eprintln!("image {id} on both daemons");
    let addr = ns.addr().to_string();
    swarm
        .docker(&["swarm", "init", "--advertise-addr", &addr])
        .await?
        .ok("docker swarm init")?;

    let mesh_count = async || count(node.containers(SERVICE, false).await);
    let swarm_label = format!("label=com.docker.swarm.service.name={SERVICE}");
    let swarm_count = async || {
        let ps = [
            "ps",
            "-q",
            "--filter",
            &swarm_label,
            "--filter",
            "status=running",
        ];
        count(
            swarm
                .docker(&ps)
                .await
                .map(|o| o.stdout.split_whitespace().map(str::to_owned).collect()),
        )
    };

    let create = [
        "service",
        "create",
        "-d",
        "--name",
        SERVICE,
        "--replicas",
        "10",
        BUSYBOX_IMAGE,
        "sleep",
        "1000000",
    ];
    let mut swarm_create = create.to_vec();
    swarm_create.insert(3, "--no-resolve-image");
    let mesh_create = timed(node.meshctl(&create), mesh_count, 10)
        .await
        .context("mesh create")?;
    let swarm_create = timed(swarm.docker(&swarm_create), swarm_count, 10)
        .await
        .context("swarm create")?;
    let mesh_scale = timed(
        node.meshctl(&["service", "scale", "bench=30"]),
        mesh_count,
        30,
    )
    .await
    .context("mesh scale")?;
    let swarm_scale = timed(
        swarm.docker(&["service", "scale", "-d", "bench=30"]),
        swarm_count,
        30,
    )
    .await
    .context("swarm scale")?;

    // Swarm would replace the containers that dockerd's teardown removes.
    let _ = swarm.docker(&["service", "rm", SERVICE]).await;
    let _ = swarm.docker(&["swarm", "leave", "--force"]).await;

    println!("converge on one node, busybox `sleep`, meshd {profile} build");
    println!("{:<38} {:>10} {:>14}", "", "mesh", "docker swarm");
    println!(
        "{:<38} {:>8.2} s {:>12.2} s",
        "create --replicas 10 -> 10 running",
        mesh_create.as_secs_f64(),
        swarm_create.as_secs_f64()
    );
    println!(
        "{:<38} {:>8.2} s {:>12.2} s",
        "scale 10 -> 30 -> 30 running",
        mesh_scale.as_secs_f64(),
        swarm_scale.as_secs_f64()
    );
    Ok(())
}

fn count(ids: anyhow::Result<Vec<String>>) -> usize {
    ids.map(|v| v.len()).unwrap_or(0)
}

/// Runs `command` while polling `running` until it reaches `target`; returns the time to the target.
async fn timed<F>(
    command: impl Future<Output = anyhow::Result<Output>>,
    mut running: F,
    target: usize,
) -> anyhow::Result<Duration>
where
    F: AsyncFnMut() -> usize,
{
    let start = Instant::now();
    let poll = async {
        loop {
            if running().await >= target {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let both = async { tokio::join!(command, poll) };
    let (out, elapsed) = tokio::time::timeout(LIMIT, both)
        .await
        .with_context(|| format!("{target} running not reached within {LIMIT:?}"))?;
    out?.ok("the command under test")?;
    Ok(elapsed)
}
