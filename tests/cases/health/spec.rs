//! The spec side: bad health flags are refused in one line and change nothing; `service
//! inspect` shows the check as Docker does; the image's own HEALTHCHECK applies unless the spec
//! says otherwise.

use super::*;

#[tokio::test]
async fn bad_health_flags_are_refused_in_one_line_and_change_nothing() -> anyhow::Result<()> {
    require_privileged!();
    let cluster = Cluster::builder().managers(1).start().await?;
    let manager = cluster.manager();
    let refused = [
        (
            vec!["--no-healthcheck", "--health-cmd", "true"],
            "--no-healthcheck conflicts with --health-* options",
        ),
        (vec!["--health-interval", "-1s"], "invalid duration"),
        (vec!["--health-timeout", "10us"], "at least 1ms"),
        (
            vec!["--health-retries", "-2"],
            "must be a non-negative integer",
        ),
    ];
    for (flags, want) in &refused {
        let mut args = vec!["service", "create", "-d", "--name", "bad"];
        args.extend(flags.iter().copied());
        args.extend([BUSYBOX_IMAGE, "sleep", "1000"]);
        let out = manager.meshctl(&args).await?;
        ensure!(out.code != 0, "{flags:?} was accepted");
        let first = out.stderr.lines().next().unwrap_or_default();
        ensure!(first.contains(want), "{flags:?}: {}", out.stderr);
    }
    let ls = manager.meshctl_ok(&["service", "ls", "-q"]).await?;
    ensure!(
        ls.trim().is_empty(),
        "a refused create made a service: {ls}"
    );

    manager
        .meshctl_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "good",
            "--health-cmd",
            "true",
            "--health-retries",
            "2",
            BUSYBOX_IMAGE,
            "sleep",
            "1000",
        ])
        .await?;
    let before = manager.meshctl_ok(&["service", "inspect", "good"]).await?;
    for (flags, want) in &refused {
        let mut args = vec!["service", "update", "-d"];
        args.extend(flags.iter().copied());
        args.push("good");
        let out = manager.meshctl(&args).await?;
        ensure!(out.code != 0, "update {flags:?} was accepted");
        let first = out.stderr.lines().next().unwrap_or_default();
        ensure!(first.contains(want), "update {flags:?}: {}", out.stderr);
    }
    let after = manager.meshctl_ok(&["service", "inspect", "good"]).await?;
    ensure!(before == after, "a refused update changed the service");
    let spec: Value = serde_json::from_str(&after)?;
    let first = spec.as_array().and_then(|a| a.first()).unwrap_or(&spec);
    let health = &first["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"];
    ensure!(
        health["Test"] == serde_json::json!(["CMD-SHELL", "true"]) && health["Retries"] == 2,
        "inspect shows the health check as Docker does: {health}"
    );

    // --no-healthcheck alone replaces the check with NONE.
    manager
        .meshctl_ok(&["service", "update", "-d", "--no-healthcheck", "good"])
        .await?;
    let spec: Value =
        serde_json::from_str(&manager.meshctl_ok(&["service", "inspect", "good"]).await?)?;
    let first = spec.as_array().and_then(|a| a.first()).unwrap_or(&spec);
    ensure!(
        first["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"]
            == serde_json::json!({"Test": ["NONE"]}),
        "--no-healthcheck: {first}"
    );
    cluster.close()
}

/// The current state of `service`'s task whose desired state is running.
async fn state_of(manager: &Node, service: &str) -> anyhow::Result<String> {
    let rows = manager.tasks(service).await?;
    Ok(rows
        .iter()
        .find(|r| r["DesiredState"] == "Running")
        .map(|r| current(r).to_owned())
        .unwrap_or_default())
}

#[tokio::test]
async fn the_images_own_health_check_applies_unless_the_spec_says_otherwise() -> anyhow::Result<()>
{
    require_privileged!();
    let cluster = Cluster::builder().managers(1).start().await?;
    let manager = cluster.manager();
    // An image whose HEALTHCHECK passes only once /tmp/healthy exists.
    const CHECKED: &str = "mesh/busybox-checked:latest";
    let base = manager
        .docker(&["create", BUSYBOX_IMAGE, "true"])
        .await?
        .ok("docker create")?;
    manager
        .docker(&[
            "commit",
            "--change",
            "HEALTHCHECK --interval=1s --retries=1 --start-period=10m CMD test -f /tmp/healthy",
            base.stdout.trim(),
            CHECKED,
        ])
        .await?
        .ok("docker commit")?;
    for (name, flags) in [
        ("inherits", &[][..]),
        ("disabled", &["--no-healthcheck"][..]),
        (
            "replaced",
            &["--health-cmd", "true", "--health-interval", "1s"][..],
        ),
    ] {
        let mut args = vec!["service", "create", "-d", "--name", name];
        args.extend(flags);
        args.extend([CHECKED, "sleep", "1000000"]);
        manager.meshctl_ok(&args).await?;
    }
    for name in ["disabled", "replaced"] {
        let what = format!("{name} to run");
        wait_until(CONVERGE, &what, async || {
            Ok(state_of(manager, name).await?.starts_with("Running"))
        })
        .await?;
    }
    let task = wait_for(CONVERGE, "the inherits container", async || {
        Ok(manager.sandboxes("inherits").await?.pop())
    })
    .await?;
    tokio::time::sleep(INTERVAL * 3).await;
    let state = state_of(manager, "inherits").await?;
    ensure!(
        state.starts_with("Starting"),
        "the image's health check has not passed, so the task should be Starting: {state}"
    );
    set_healthy(&cluster, &task, true).await?;
    wait_until(CONVERGE, "inherits to run once healthy", async || {
        Ok(state_of(manager, "inherits").await?.starts_with("Running"))
    })
    .await?;
    cluster.close()
}
