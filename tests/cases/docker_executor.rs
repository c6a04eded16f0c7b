//! The agent's Docker executor against a real engine: each test starts its own dockerd in a
//! namespace, imports the busybox image and drives the daemon through `mesh_agent::exec`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use mesh_agent::exec::{
    DockerExecutor, ExecError, Executor, LABEL_NODE_ID, LABEL_SERVICE_ID, LABEL_SERVICE_NAME,
    LABEL_TASK_ID, LABEL_TASK_NAME, LogChunk, LogOptions,
};
use mesh_proto::{Annotations, ContainerSpec, PullPolicy, Task, TaskSpec};
use mesh_tests::dockerd::{Dockerd, Networking};
use mesh_tests::netns::{Bridge, Netns};
use mesh_tests::{BUSYBOX_IMAGE, image, require_privileged, wait_for};

/// Bounds waiting for a container's output: bounds the test, not a speed assertion.
const LOGS_TIMEOUT: Duration = Duration::from_secs(10);

/// One engine for one test. Fields drop in order: the client, then dockerd (with its containers),
/// the namespace, the bridge and last the directory everything lived in.
struct Engine {
    docker: DockerExecutor,
    dockerd: Dockerd,
    _ns: Netns,
    _bridge: Bridge,
    _temp: tempfile::TempDir,
}

impl Engine {
    /// A bridge, one namespace on it (with no route out), a dockerd inside with the busybox image,
    /// and an executor connected to that dockerd.
    async fn start(test: &str) -> anyhow::Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix(&format!("mt-{:x}-{test}-", std::process::id()))
            .tempdir_in("/tmp")?;
        let bridge = Bridge::for_test()?;
        let ns = Netns::attach(&bridge, 1)?;
        // No registry is reachable from here; without a route a pull fails at once instead of
        // waiting out DNS timeouts (forwarded queries go unanswered, there is no NAT).
        ns.ip(&["route", "del", "default"])?;
        let dir = temp.path().join("dockerd");
        std::fs::create_dir_all(&dir)?;
        let dockerd = Dockerd::start(&ns, &dir, Networking::None).await?;
        image::import(&dockerd, temp.path()).await?;
        let docker = DockerExecutor::connect(&dockerd.host(), None)
            .await
            .context("the executor connects to the test dockerd")?
            .with_sandboxes_from(temp.path())?;
        Ok(Self {
            docker,
            dockerd,
            _ns: ns,
            _bridge: bridge,
            _temp: temp,
        })
    }

    /// The container's labels as the engine reports them.
    async fn labels(&self, id: &str) -> anyhow::Result<HashMap<String, String>> {
        let out = self
            .dockerd
            .docker(&["inspect", "--format", "{{json .Config.Labels}}", id])
            .await?
            .ok("docker inspect")?;
        serde_json::from_str(out.stdout.trim()).context("labels are a JSON object of strings")
    }
}

fn task(id: &str, image: &str, pull: PullPolicy, args: &[&str]) -> Task {
    Task {
        id: id.to_owned(),
        service_id: "livesvc".to_owned(),
        slot: 1,
        node_id: "livenode".to_owned(),
        service_annotations: Some(Annotations {
            name: "live".to_owned(),
            ..Default::default()
        }),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: image.to_owned(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                stop_grace_period_ns: Some(1_000_000_000),
                pull: pull as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_container_runs_logs_stops_and_goes() -> anyhow::Result<()> {
    require_privileged!();
    let engine = Engine::start("runs").await?;
    let docker = &engine.docker;

    let description = docker.describe().await?;
    assert!(
        description
            .resources
            .is_some_and(|r| r.nano_cpus > 0 && r.memory_bytes > 0),
        "resources: {:?}",
        description.resources
    );
    assert_eq!(description.platform.map(|p| p.os), Some("linux".to_owned()));

    let script = "echo out; echo err >&2; exec sleep 60";
    let t = task(
        "livetask1",
        BUSYBOX_IMAGE,
        PullPolicy::Missing,
        &["sh", "-c", script],
    );
    // The sandbox runs first, holding the network namespace the task's container joins.
    let sandbox = docker
        .prepare_sandbox(&t)
        .await
        .context("prepare sandbox")?;
    assert_eq!(
        docker
            .prepare_sandbox(&t)
            .await
            .context("prepare sandbox again")?,
        sandbox,
        "a second prepare reuses the sandbox"
    );
    let held = docker.inspect(&sandbox).await.context("inspect sandbox")?;
    assert!(held.running && held.pid > 0, "{held:?}");
    let id = docker.prepare(&t, &sandbox, &[]).await.context("prepare")?;
    assert_eq!(
        docker
            .prepare(&t, &sandbox, &[])
            .await
            .context("prepare again")?,
        id,
        "a second prepare reuses the container"
    );
    let labels = engine.labels(&id).await?;
    for (key, want) in [
        (LABEL_TASK_ID, "livetask1"),
        (LABEL_TASK_NAME, "live.1.livetask1"),
        (LABEL_SERVICE_ID, "livesvc"),
        (LABEL_SERVICE_NAME, "live"),
        (LABEL_NODE_ID, "livenode"),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(want), "{key}");
    }

    docker.start(&id).await.context("start")?;
    let info = docker.inspect(&id).await.context("inspect")?;
    assert!(info.running && info.pid > 0, "{info:?}");
    let netns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net"));
    assert_eq!(
        netns(info.pid)?,
        netns(held.pid)?,
        "the task runs in its sandbox's network namespace"
    );
    let listed = docker.list().await.context("list")?;
    assert!(
        listed
            .iter()
            .any(|c| c.id == id && c.task_id == "livetask1" && c.running && !c.sandbox),
        "{listed:?}"
    );
    assert!(
        listed
            .iter()
            .any(|c| c.id == sandbox && c.task_id == "livetask1" && c.sandbox),
        "{listed:?}"
    );

    let chunks = wait_for(LOGS_TIMEOUT, "stdout and stderr in the logs", async || {
        let chunks: Vec<LogChunk> = docker
            .logs(&id, LogOptions::default())
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let out = chunks.iter().any(|c| !c.stderr && c.data == b"out\n");
        let err = chunks.iter().any(|c| c.stderr && c.data == b"err\n");
        Ok((out && err).then_some(chunks))
    })
    .await?;
    assert_eq!(chunks.len(), 2, "{chunks:?}");

    let started = Instant::now();
    docker
        .stop(&id, Duration::from_secs(1))
        .await
        .context("stop")?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    assert_eq!(docker.wait(&id).await.context("wait")?, 137);
    docker.remove(&id).await.context("remove")?;
    docker
        .remove(&id)
        .await
        .context("a second remove is fine")?;
    let gone = docker.inspect(&id).await;
    assert!(
        matches!(gone, Err(ExecError::ContainerNotFound { .. })),
        "{gone:?}"
    );
    docker.remove(&sandbox).await.context("remove sandbox")?;
    Ok(())
}

#[tokio::test]
async fn an_exit_code_comes_back_from_wait() -> anyhow::Result<()> {
    require_privileged!();
    let engine = Engine::start("exit").await?;
    let docker = &engine.docker;
    let t = task(
        "livetask2",
        BUSYBOX_IMAGE,
        PullPolicy::Never,
        &["sh", "-c", "exit 3"],
    );
    let sandbox = docker
        .prepare_sandbox(&t)
        .await
        .context("prepare sandbox")?;
    let id = docker.prepare(&t, &sandbox, &[]).await.context("prepare")?;
    docker.start(&id).await.context("start")?;
    assert_eq!(docker.wait(&id).await.context("wait")?, 3);
    let info = docker.inspect(&id).await.context("inspect")?;
    assert!(
        !info.running && info.started && info.exit_code == 3,
        "{info:?}"
    );
    docker.remove(&id).await.context("remove")?;
    docker.remove(&sandbox).await.context("remove sandbox")?;
    Ok(())
}

#[tokio::test]
async fn a_missing_image_fails_fast() -> anyhow::Result<()> {
    require_privileged!();
    let engine = Engine::start("missing").await?;
    for pull in [PullPolicy::Never, PullPolicy::Missing] {
        let started = Instant::now();
        let t = task("livetask3", "mesh-no-such-image", pull, &[]);
        let result = engine.docker.prepare_sandbox(&t).await;
        let Err(err) = result else {
            panic!("{pull:?}: prepare succeeded without the image: {result:?}");
        };
        assert!(
            matches!(err, ExecError::ImageNotFound { .. }),
            "{pull:?}: {err:?}"
        );
        assert_eq!(err.to_string(), "No such image: mesh-no-such-image:latest");
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "{pull:?} took {:?}",
            started.elapsed()
        );
    }
    let listed = engine.docker.list().await.context("list")?;
    assert!(listed.is_empty(), "containers were created: {listed:?}");
    Ok(())
}
