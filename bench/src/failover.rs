//! `cargo xtask bench failover`: how fast mesh and Docker Swarm notice failures, on the same topology
//! (every node a namespace on one bridge with its own dockerd), both at their default 5 s heartbeat.
//!
//! A manager and a worker run a 4-replica service with tasks on the worker; the worker's link is cut
//! and the benchmark times the manager marking the node down and all 4 replicas running on the
//! manager's node. Then, with 3 managers, the leader's daemon is SIGKILLed and it times until a
//! surviving manager names a new leader.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mesh_tests::observe::leader_seen_by;
use mesh_tests::swarm::Swarm;
use mesh_tests::{BUSYBOX_IMAGE, Cluster};

use crate::run::{LIMIT, SERVICE};

/// How often conditions are polled while timing (each poll runs a CLI, tens of milliseconds).
const POLL: Duration = Duration::from_millis(100);
const REPLICAS: usize = 4;

/// Times of one run, each `Err` with why it could not be measured.
struct Times {
    down: anyhow::Result<Duration>,
    moved: anyhow::Result<Duration>,
    election: anyhow::Result<Duration>,
}

pub async fn failover(release: bool) -> anyhow::Result<()> {
    let Some(profile) = crate::run::build(release, &["failover"])? else {
        return Ok(());
    };
    let (mesh, swarm) = measure().await?;
    println!(
        "failover: a manager and a worker, each a namespace with its own dockerd; {REPLICAS} \
         replicas, some on the worker; heartbeat 5 s (both defaults); meshd {profile} build"
    );
    println!("{:<44} {:>10} {:>14}", "", "mesh", "docker swarm");
    let rows = [
        (
            "worker link cut -> node marked down",
            &mesh.down,
            &swarm.down,
        ),
        (
            "worker link cut -> its tasks run elsewhere",
            &mesh.moved,
            &swarm.moved,
        ),
        (
            "leader killed (3 managers) -> new leader",
            &mesh.election,
            &swarm.election,
        ),
    ];
    for (what, mesh, swarm) in rows {
        println!("{what:<44} {:>10} {:>14}", shown(mesh), shown(swarm));
    }
    for (what, result) in [("mesh", &mesh), ("docker swarm", &swarm)] {
        for err in [&result.down, &result.moved, &result.election]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
        {
            eprintln!("{what}: not measured: {err:#}");
        }
    }
    ensure!(
        mesh.down.is_ok() && mesh.moved.is_ok() && mesh.election.is_ok(),
        "mesh's failover could not be measured"
    );
    Ok(())
}

fn shown(time: &anyhow::Result<Duration>) -> String {
    match time {
        Ok(t) => format!("{:.2} s", t.as_secs_f64()),
        Err(_) => "n/a".into(),
    }
}

/// Runs every measurement, one at a time, each on its own nodes.
async fn measure() -> anyhow::Result<(Times, Times)> {
    let cluster = Cluster::builder()
        .managers(1)
        .workers(1)
        .quiet()
        .start()
        .await?;
    let mesh_cut = mesh_link_cut(&cluster).await;
    // The Swarm copies the image the mesh cluster saved, so the mesh cluster can go first.
    let swarm = Swarm::start(1, 1, cluster.dir()).await;
    cluster.close()?;
    let swarm_cut = match swarm {
        Ok(swarm) => {
            let times = swarm_link_cut(&swarm).await;
            swarm.leave(&[SERVICE]).await;
            times
        }
        Err(err) => (Err(anyhow::anyhow!("{err:#}")), Err(err)),
    };
    let mut managers = Cluster::builder().managers(3).quiet().start().await?;
    let mesh_election = mesh_election(&mut managers).await;
    let swarm = Swarm::start(3, 0, managers.dir()).await;
    managers.close()?;
    let swarm_election = match swarm {
        Ok(mut swarm) => {
            let time = swarm_election(&mut swarm).await;
            swarm.leave(&[]).await;
            time
        }
        Err(err) => Err(err),
    };
    let mesh = Times {
        down: mesh_cut.0,
        moved: mesh_cut.1,
        election: mesh_election,
    };
    let swarm = Times {
        down: swarm_cut.0,
        moved: swarm_cut.1,
        election: swarm_election,
    };
    Ok((mesh, swarm))
}

type CutTimes = (anyhow::Result<Duration>, anyhow::Result<Duration>);

async fn mesh_link_cut(cluster: &Cluster) -> CutTimes {
    let setup = async {
        let (manager, worker) = (&cluster.nodes()[0], &cluster.nodes()[1]);
        let replicas = REPLICAS.to_string();
        let create = [
            "service",
            "create",
            "-d",
            "--name",
            SERVICE,
            "--replicas",
            &replicas,
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ];
        manager.meshctl_ok(&create).await?;
        spread(async || {
            let manager = manager.containers(SERVICE, false).await?.len();
            Ok((manager, worker.containers(SERVICE, false).await?.len()))
        })
        .await?;
        worker.set_link(false)?;
        anyhow::Ok((manager, worker))
    };
    let (manager, worker) = match setup.await {
        Ok(nodes) => nodes,
        Err(err) => return (Err(anyhow::anyhow!("{err:#}")), Err(err)),
    };
    let start = Instant::now();
    let hostname = worker.hostname();
    let times = both(
        start,
        async || cluster.node_row(hostname).await.is_ok_and(|r| r.is_down()),
        async || {
            manager
                .containers(SERVICE, false)
                .await
                .is_ok_and(|c| c.len() == REPLICAS)
        },
    )
    .await;
    // Teardown need not wait on a cut-off node.
    let _ = worker.set_link(true);
    times
}

async fn swarm_link_cut(swarm: &Swarm) -> CutTimes {
    let (manager, worker) = (&swarm.nodes()[0], &swarm.nodes()[1]);
    let setup = async {
        let replicas = REPLICAS.to_string();
        let create = [
            "service",
            "create",
            "-d",
            "--no-resolve-image",
            "--name",
            SERVICE,
            "--replicas",
            &replicas,
            BUSYBOX_IMAGE,
            "sleep",
            "1000000",
        ];
        manager.docker_ok(&create).await?;
        spread(async || {
            Ok((
                manager.running(SERVICE).await?,
                worker.running(SERVICE).await?,
            ))
        })
        .await?;
        worker.set_link(false)
    };
    if let Err(err) = setup.await {
        return (Err(anyhow::anyhow!("{err:#}")), Err(err));
    }
    let start = Instant::now();
    let times = both(
        start,
        async || {
            manager
                .node_state(worker.id())
                .await
                .is_ok_and(|s| s == "down")
        },
        async || manager.running(SERVICE).await.is_ok_and(|n| n == REPLICAS),
    )
    .await;
    let _ = worker.set_link(true);
    times
}

/// Waits until all replicas run, some on the worker; `count` gives (on the manager, on the worker).
async fn spread<F>(mut count: F) -> anyhow::Result<()>
where
    F: AsyncFnMut() -> anyhow::Result<(usize, usize)>,
{
    let what = format!("{REPLICAS} replicas running, some on the worker");
    mesh_tests::wait_until(LIMIT, &what, async || {
        let (manager, worker) = count().await?;
        Ok(manager + worker == REPLICAS && worker > 0)
    })
    .await
}

async fn mesh_election(cluster: &mut Cluster) -> anyhow::Result<Duration> {
    let leader = cluster.wait_leader(&[], LIMIT).await?;
    let index = cluster.position(&leader)?;
    cluster.nodes_mut()[index].kill_meshd();
    let start = Instant::now();
    let survivor = cluster.live_manager()?;
    until(start, async || {
        leader_seen_by(survivor)
            .await
            .is_ok_and(|new| new.is_some_and(|new| new != leader))
    })
    .await
}

async fn swarm_election(swarm: &mut Swarm) -> anyhow::Result<Duration> {
    let leader = swarm
        .live_manager()?
        .leader()
        .await?
        .context("the swarm names no leader")?;
    let index = swarm
        .nodes()
        .iter()
        .position(|n| n.id() == leader)
        .context("the swarm's leader is none of its nodes")?;
    swarm.nodes_mut()[index].kill();
    let start = Instant::now();
    let survivor = swarm.live_manager()?;
    until(start, async || {
        survivor
            .leader()
            .await
            .is_ok_and(|new| new.is_some_and(|new| new != leader))
    })
    .await
}

/// Time from `start` until `check` holds, polled every [`POLL`] for at most [`LIMIT`].
async fn until<F>(start: Instant, mut check: F) -> anyhow::Result<Duration>
where
    F: AsyncFnMut() -> bool,
{
    loop {
        if check().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= LIMIT {
            anyhow::bail!("not within {LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Times from `start` until each of two conditions first holds, polling both together.
async fn both<A, B>(start: Instant, mut a: A, mut b: B) -> CutTimes
where
    A: AsyncFnMut() -> bool,
    B: AsyncFnMut() -> bool,
{
    let (mut first, mut second) = (None, None);
    while (first.is_none() || second.is_none()) && start.elapsed() < LIMIT {
        if first.is_none() && a().await {
            first = Some(start.elapsed());
        }
        if second.is_none() && b().await {
            second = Some(start.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    let within = |t: Option<Duration>| t.with_context(|| format!("not within {LIMIT:?}"));
    (within(first), within(second))
}
