//! `--mount` carried to Docker: a named volume created by the dockerd of the node the task runs
//! on (and only there) with the driver and options asked for, a tmpfs with its size and mode, a
//! read-only bind mount.

use std::time::Duration;

use anyhow::{Context, ensure};
use mesh_tests::{BUSYBOX_IMAGE, Cluster, require_privileged, wait_for};

const CONVERGE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn mounts_reach_docker_on_the_task_s_node() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = Cluster::builder().managers(1).workers(1).start().await?;
    let worker = &cluster.nodes()[1];
    let bind = cluster.dir().join("bind-source");
    std::fs::create_dir_all(&bind)?;
    std::fs::write(bind.join("hello"), "from the host\n")?;
    let constraint = format!("node.hostname=={}", worker.hostname());
    let bind_mount = format!("type=bind,source={},target=/b,readonly", bind.display());
    cluster
        .manager()
        .meshctl_ok(&[
            "service", "create", "-d", "--name", "mounted", "--constraint", &constraint,
            "--mount", "type=volume,source=scratch,target=/v,volume-driver=local,volume-opt=type=tmpfs,volume-opt=device=tmpfs,volume-opt=o=size=2m,volume-label=team=a",
            "--mount", "type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770",
            "--mount", &bind_mount,
            BUSYBOX_IMAGE, "sleep", "1000000",
        ])
        .await?;
    let id = wait_for(CONVERGE, "the task's container", || async {
        Ok(worker
            .containers("mounted", false)
            .await?
            .into_iter()
            .next())
    })
    .await?;

    // The volume exists on the worker, with the driver's options and the label, not on the manager.
    let volume = worker
        .docker(&["volume", "inspect", "scratch"])
        .await?
        .ok("docker volume inspect")?;
    let volume: serde_json::Value = serde_json::from_str(&volume.stdout)?;
    let volume = volume.get(0).context("no volume")?;
    ensure!(volume["Driver"] == "local", "{volume}");
    ensure!(
        volume["Options"]["type"] == "tmpfs" && volume["Options"]["o"] == "size=2m",
        "{volume}"
    );
    ensure!(volume["Labels"]["team"] == "a", "{volume}");
    let on_manager = cluster
        .manager()
        .docker(&["volume", "ls", "-q"])
        .await?
        .ok("docker volume ls")?;
    ensure!(
        !on_manager.stdout.contains("scratch"),
        "the manager has the volume: {}",
        on_manager.stdout
    );

    // Inside the container: the volume is the tmpfs the options asked for, the tmpfs has its mode
    // and size, the bind mount is read-only.
    let exec = |script: &'static str| {
        let id = id.clone();
        async move {
            let out = worker.docker(&["exec", &id, "sh", "-c", script]).await?;
            anyhow::Ok(format!("{}{}", out.stdout, out.stderr))
        }
    };
    let mounts = exec("cat /proc/mounts").await?;
    let line = |target: &str| {
        mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(target))
            .map(str::to_owned)
    };
    let v = line("/v").context("no mount at /v")?;
    ensure!(
        v.starts_with("tmpfs ") && v.contains("size=2048k"),
        "/v: {v}"
    );
    let t = line("/t").context("no mount at /t")?;
    ensure!(
        t.contains("size=1024k") && t.contains("mode=1770"),
        "/t: {t}"
    );
    let b = line("/b").context("no mount at /b")?;
    ensure!(
        b.split_whitespace()
            .nth(3)
            .is_some_and(|o| o.split(',').any(|f| f == "ro")),
        "/b: {b}"
    );
    ensure!(
        exec("cat /b/hello").await?.trim() == "from the host",
        "bind content"
    );
    ensure!(
        exec("touch /b/x 2>&1 || echo refused")
            .await?
            .contains("refused"),
        "the bind mount is writable"
    );
    cluster.close()
}
