//! `cargo xtask bench update`: rolling updates of 30 replicas across 3 nodes, mesh beside Docker
//! Swarm on the same topology (every node a namespace on one bridge with its own dockerd), with
//! parallelism 1, 5 and 0 (all at once), delay 0, stop-first and start-first.
//!
//! For each it times, from `service update -d --image …`, until the 30 running containers all run
//! the new image (converged), and until the service's `UpdateStatus.State` is `completed` (which
//! both systems say only after their 5 s monitor period). On mesh a client on the host loops
//! HTTP requests through the routing mesh's published port during the update and counts those
//! that fail. Swarm's routing mesh needs IPVS, which this kernel lacks, and a host-mode port takes
//! one task per node, so 30 replicas cannot publish one: its failed requests are not measured.
//!
//! Both images are the test image under two tags; both services stop with a 1 s grace period
//! (busybox httpd, as PID 1, ignores SIGTERM).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mesh_tests::observe::http_get;
use mesh_tests::swarm::Swarm;
use mesh_tests::{BUSYBOX_IMAGE, Cluster, Output};
use serde_json::Value;

use crate::run::{LIMIT, SERVICE};

const REPLICAS: usize = 30;
const IMAGE_V2: &str = "mesh/busybox:v2";
const PORT: u16 = 8080;
const POLL: Duration = Duration::from_millis(100);
/// Order and parallelism of each update, in the order run.
const RUNS: [(&str, u64); 6] = [
    ("stop-first", 1),
    ("stop-first", 5),
    ("stop-first", 0),
    ("start-first", 1),
    ("start-first", 5),
    ("start-first", 0),
];

/// What one update took; `Err` says why it could not be measured.
struct Timed {
    converged: anyhow::Result<Duration>,
    completed: anyhow::Result<Duration>,
    /// Requests tried and failed during the update (mesh only).
    requests: Option<(usize, usize)>,
}

/// One of the two systems measured, driven through its own CLI on its first manager.
enum Target<'a> {
    Mesh(&'a Cluster),
    Swarm(&'a Swarm),
}

impl Target<'_> {
    async fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        match self {
            Target::Mesh(cluster) => cluster.manager().meshctl(args).await,
            Target::Swarm(swarm) => swarm.live_manager()?.docker(args).await,
        }
    }

    async fn cli_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let what = args.join(" ");
        Ok(self.cli(args).await?.ok(&what)?.stdout)
    }

    /// The images of the service's running containers on every node.
    async fn images(&self) -> anyhow::Result<Vec<String>> {
        let ps = |label: &str| {
            vec![
                "ps".to_owned(),
                "--filter".to_owned(),
                format!("label={label}={SERVICE}"),
                "--filter".to_owned(),
                "status=running".to_owned(),
                "--format".to_owned(),
                "{{.Image}}".to_owned(),
            ]
        };
        let mut images = Vec::new();
        match self {
            Target::Mesh(cluster) => {
                let args = ps(mesh_tests::node::SERVICE_LABEL);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                for node in cluster.nodes() {
                    images.extend(lines(node.docker(&args).await?.ok("docker ps")?));
                }
            }
            Target::Swarm(swarm) => {
                let args = ps(mesh_tests::swarm::SERVICE_LABEL);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                for node in swarm.nodes() {
                    images.extend(lines(node.docker(&args).await?.ok("docker ps")?));
                }
            }
        }
        Ok(images)
    }

    async fn update_state(&self) -> anyhow::Result<String> {
        match self {
            Target::Mesh(_) => {
                let out = self.cli_ok(&["service", "inspect", SERVICE]).await?;
                let list: Vec<Value> = serde_json::from_str(&out).context("service inspect")?;
                Ok(list
                    .first()
                    .and_then(|s| s["UpdateStatus"]["State"].as_str())
                    .unwrap_or_default()
                    .to_owned())
            }
            Target::Swarm(_) => {
                let format = "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}";
                let out = self
                    .cli_ok(&["service", "inspect", "--format", format, SERVICE])
                    .await?;
                Ok(out.trim().to_owned())
            }
        }
    }

    fn is_swarm(&self) -> bool {
        matches!(self, Target::Swarm(_))
    }
}

fn lines(out: Output) -> Vec<String> {
    out.stdout.lines().map(str::to_owned).collect()
}

pub async fn update(release: bool) -> anyhow::Result<()> {
    let Some(profile) = crate::run::build(release, &["update"])? else {
        return Ok(());
    };
    let cluster = Cluster::builder()
        .managers(1)
        .workers(2)
        .quiet()
        .start()
        .await?;
    for node in cluster.nodes() {
        node.docker(&["tag", BUSYBOX_IMAGE, IMAGE_V2])
            .await?
            .ok("docker tag")?;
    }
    let ingress = SocketAddr::new(cluster.manager().addr().into(), PORT);
    let mesh = run_all(&Target::Mesh(&cluster), Some(ingress)).await;
    // The Swarm copies the image the mesh cluster saved, so the mesh cluster can go first.
    let swarm = Swarm::start(1, 2, cluster.dir()).await;
    cluster.close()?;
    let swarm = match swarm {
        Ok(swarm) => {
            let mut tagged = Ok(());
            for node in swarm.nodes() {
                if let Err(err) = node.docker_ok(&["tag", BUSYBOX_IMAGE, IMAGE_V2]).await {
                    tagged = Err(err);
                }
            }
            let times = match tagged {
                Ok(()) => run_all(&Target::Swarm(&swarm), None).await,
                Err(err) => Err(err),
            };
            swarm.leave(&[SERVICE]).await;
            times
        }
        Err(err) => Err(err),
    };
    print(profile, &mesh, &swarm);
    let mesh = mesh?;
    ensure!(
        mesh.iter()
            .all(|t| t.converged.is_ok() && t.completed.is_ok()),
        "some of mesh's updates could not be measured"
    );
    Ok(())
}

fn print(profile: &str, mesh: &anyhow::Result<Vec<Timed>>, swarm: &anyhow::Result<Vec<Timed>>) {
    println!(
        "update: {REPLICAS} replicas on 3 nodes (1 manager, 2 workers), each a namespace with its \
         own dockerd; delay 0, monitor 5 s (both defaults); meshd {profile} build"
    );
    println!(
        "{:<26} {:>11} {:>11} {:>16}   {:>11} {:>11}",
        "", "mesh", "", "", "docker swarm", ""
    );
    println!(
        "{:<26} {:>11} {:>11} {:>16}   {:>11} {:>11}",
        "order, parallelism", "converged", "completed", "failed requests", "converged", "completed"
    );
    for (i, (order, parallelism)) in RUNS.iter().enumerate() {
        let pick = |all: &anyhow::Result<Vec<Timed>>| -> Option<(String, String, String)> {
            let t = all.as_ref().ok()?.get(i)?;
            let requests = t.requests.map_or("n/a".to_owned(), |(tried, failed)| {
                format!("{failed} of {tried}")
            });
            Some((shown(&t.converged), shown(&t.completed), requests))
        };
        let na = || ("n/a".to_owned(), "n/a".to_owned(), "n/a".to_owned());
        let (mc, mo, mr) = pick(mesh).unwrap_or_else(na);
        let (sc, so, _) = pick(swarm).unwrap_or_else(na);
        let label = format!("{order}, {parallelism}");
        println!("{label:<26} {mc:>11} {mo:>11} {mr:>16}   {sc:>11} {so:>11}");
    }
    for (what, all) in [("mesh", mesh), ("docker swarm", swarm)] {
        match all {
            Err(err) => eprintln!("{what}: not measured: {err:#}"),
            Ok(all) => {
                for t in all {
                    for err in [&t.converged, &t.completed]
                        .into_iter()
                        .filter_map(|r| r.as_ref().err())
                    {
                        eprintln!("{what}: not measured: {err:#}");
                    }
                }
            }
        }
    }
}

fn shown(time: &anyhow::Result<Duration>) -> String {
    match time {
        Ok(t) => format!("{:.2} s", t.as_secs_f64()),
        Err(_) => "n/a".into(),
    }
}

/// Creates the service, then runs every update of [`RUNS`] one after the other, alternating the
/// image; `ingress` is where a client loops requests during each update.
async fn run_all(target: &Target<'_>, ingress: Option<SocketAddr>) -> anyhow::Result<Vec<Timed>> {
    let replicas = REPLICAS.to_string();
    let mut create = vec![
        "service",
        "create",
        "-d",
        "--name",
        SERVICE,
        "--replicas",
        &replicas,
        "--stop-grace-period",
        "1s",
    ];
    let publish = format!("{PORT}:80");
    if target.is_swarm() {
        create.push("--no-resolve-image");
    } else {
        create.extend(["-p", &publish]);
    }
    create.extend([BUSYBOX_IMAGE, "httpd", "-f", "-p", "80"]);
    target.cli_ok(&create).await?;
    mesh_tests::wait_until(LIMIT, "the replicas running", async || {
        Ok(target.images().await?.len() == REPLICAS)
    })
    .await?;
    if let Some(addr) = ingress {
        mesh_tests::wait_until(LIMIT, "the published port answering", async || {
            Ok(tokio::task::spawn_blocking(move || http_get(addr))
                .await?
                .is_some())
        })
        .await?;
    }
    let mut times = Vec::new();
    for (i, (order, parallelism)) in RUNS.iter().enumerate() {
        let image = if i % 2 == 0 { IMAGE_V2 } else { BUSYBOX_IMAGE };
        times.push(one_update(target, ingress, order, *parallelism, image).await);
    }
    Ok(times)
}

async fn one_update(
    target: &Target<'_>,
    ingress: Option<SocketAddr>,
    order: &str,
    parallelism: u64,
    image: &str,
) -> Timed {
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let client = ingress.map(|addr| {
        let (stop, counts) = (stop.clone(), counts.clone());
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::SeqCst) {
                counts.0.fetch_add(1, Ordering::SeqCst);
                if http_get(addr).is_none() {
                    counts.1.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    });
    let parallelism = parallelism.to_string();
    let mut args = vec![
        "service",
        "update",
        "-d",
        "--update-parallelism",
        &parallelism,
        "--update-order",
        order,
        "--update-delay",
        "0s",
        "--image",
        image,
    ];
    if target.is_swarm() {
        args.push("--no-resolve-image");
    }
    args.push(SERVICE);
    let start = Instant::now();
    let timed = async {
        target.cli_ok(&args).await?;
        let converged = until(start, async || {
            let images = target.images().await?;
            Ok(images.len() == REPLICAS && images.iter().all(|i| i == image))
        })
        .await;
        let completed = until(start, async || {
            Ok(target.update_state().await? == "completed")
        })
        .await;
        anyhow::Ok((converged, completed))
    };
    let (converged, completed) = match timed.await {
        Ok(times) => times,
        Err(err) => (Err(anyhow::anyhow!("{err:#}")), Err(err)),
    };
    stop.store(true, Ordering::SeqCst);
    let requests = match client {
        Some(client) => {
            let _ = client.await;
            Some((
                counts.0.load(Ordering::SeqCst),
                counts.1.load(Ordering::SeqCst),
            ))
        }
        None => None,
    };
    Timed {
        converged,
        completed,
        requests,
    }
}

/// The time from `start` until `check` holds, polled every [`POLL`], bounded by [`LIMIT`].
async fn until<F>(start: Instant, mut check: F) -> anyhow::Result<Duration>
where
    F: AsyncFnMut() -> anyhow::Result<bool>,
{
    while start.elapsed() < LIMIT {
        if check().await.unwrap_or(false) {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    anyhow::bail!("not within {LIMIT:?}")
}
