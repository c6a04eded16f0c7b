//! Flags → spec: `service create` builds, `service update` changes, bad combinations are refused.

use super::*;
use clap::Parser;
use mesh_proto::{MountType, UpdateConfig};

#[derive(Parser, Debug)]
struct Create {
    #[command(flatten)]
    flags: CreateFlags,
}

#[derive(Parser, Debug)]
struct Update {
    #[command(flatten)]
    flags: UpdateFlags,
}

fn create(args: &[&str]) -> Result<ServiceSpec, String> {
    let parsed = Create::try_parse_from(std::iter::once("create").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    parsed.flags.to_spec().map_err(|e| e.to_string())
}

fn update(spec: &ServiceSpec, args: &[&str]) -> Result<ServiceSpec, String> {
    let parsed = Update::try_parse_from(
        std::iter::once("update")
            .chain(args.iter().copied())
            .chain(["web"]),
    )
    .map_err(|e| e.to_string())?;
    parsed.flags.validate().map_err(|e| e.to_string())?;
    let mut spec = spec.clone();
    parsed.flags.apply(&mut spec).map_err(|e| e.to_string())?;
    Ok(spec)
}

fn container(spec: &ServiceSpec) -> &ContainerSpec {
    spec.task
        .as_ref()
        .and_then(|t| t.container.as_ref())
        .expect("container spec")
}

#[test]
fn create_builds_the_whole_spec() {
    let spec = create(&[
        "--name",
        "web",
        "--replicas",
        "3",
        "-e",
        "A=1",
        "--label",
        "tier=front",
        "--container-label",
        "c=d",
        "--mount",
        "type=bind,source=/a,target=/b,readonly",
        "--limit-cpu",
        "0.5",
        "--limit-memory",
        "512M",
        "--reserve-cpu",
        "0.25",
        "--reserve-memory",
        "1G",
        "--constraint",
        "node.role==worker",
        "--placement-pref",
        "spread=node.labels.zone",
        "--replicas-max-per-node",
        "2",
        "--restart-condition",
        "on-failure",
        "--restart-delay",
        "3s",
        "--restart-max-attempts",
        "4",
        "--restart-window",
        "1m",
        "--stop-grace-period",
        "20s",
        "-w",
        "/srv",
        "-u",
        "nobody",
        "--hostname",
        "h",
        "--pull",
        "never",
        "busybox",
        "sleep",
        "-x",
        "1000",
    ])
    .expect("valid flags");
    let annotations = spec.annotations.clone().expect("annotations");
    assert_eq!(annotations.name, "web");
    assert_eq!(
        annotations.labels.get("tier").map(String::as_str),
        Some("front")
    );
    assert_eq!(
        spec.mode,
        Some(Mode::Replicated(ReplicatedService { replicas: 3 }))
    );
    let c = container(&spec);
    assert_eq!(c.image, "busybox");
    assert!(c.command.is_empty());
    assert_eq!(c.args, ["sleep", "-x", "1000"]);
    assert_eq!(c.env, ["A=1"]);
    assert_eq!(
        (c.dir.as_str(), c.user.as_str(), c.hostname.as_str()),
        ("/srv", "nobody", "h")
    );
    assert_eq!(c.stop_grace_period_ns, Some(20_000_000_000));
    assert_eq!(c.pull, PullPolicy::Never as i32);
    assert_eq!(c.mounts.len(), 1);
    assert_eq!(c.mounts[0].r#type, MountType::Bind as i32);
    let task = spec.task.clone().expect("task");
    let resources = task.resources.expect("resources");
    assert_eq!(
        resources.limits,
        Some(Resources {
            nano_cpus: 500_000_000,
            memory_bytes: 512 << 20
        })
    );
    assert_eq!(
        resources.reservations,
        Some(Resources {
            nano_cpus: 250_000_000,
            memory_bytes: 1 << 30
        })
    );
    let restart = task.restart.expect("restart");
    assert_eq!(restart.condition, RestartCondition::OnFailure as i32);
    assert_eq!(restart.delay_ns, Some(3_000_000_000));
    assert_eq!(
        (restart.max_attempts, restart.window_ns),
        (4, 60_000_000_000)
    );
    let placement = task.placement.expect("placement");
    assert_eq!(placement.constraints, ["node.role==worker"]);
    assert_eq!(
        placement.preferences[0].spread_descriptor,
        "node.labels.zone"
    );
    assert_eq!(placement.max_replicas, 2);
}

#[test]
fn create_defaults() {
    let spec = create(&["busybox"]).expect("valid");
    assert_eq!(
        spec.mode,
        Some(Mode::Replicated(ReplicatedService { replicas: 1 }))
    );
    let task = spec.task.clone().expect("task");
    assert!(task.restart.is_none() && task.resources.is_none() && task.placement.is_none());
    let global = create(&["--mode", "global", "busybox"]).expect("valid");
    assert_eq!(global.mode, Some(Mode::Global(GlobalService {})));
}

#[test]
fn create_refuses_bad_input() {
    let cases = [
        (
            vec!["--replicas", "-1", "busybox"],
            "invalid replicas value \"-1\": must be a non-negative integer",
        ),
        (
            vec!["--mode", "global", "--replicas", "2", "busybox"],
            "--replicas can only be used with replicated mode",
        ),
        (
            vec![
                "--mode",
                "global",
                "--replicas-max-per-node",
                "1",
                "busybox",
            ],
            "--replicas-max-per-node can only be used with replicated mode",
        ),
        (
            vec!["--constraint", "node.colour==red", "busybox"],
            "invalid constraint \"node.colour==red\"",
        ),
        (
            vec!["--name", "bad name", "busybox"],
            "invalid name \"bad name\"",
        ),
        (
            vec!["--limit-memory", "lots", "busybox"],
            "invalid size \"lots\"",
        ),
        (vec!["--mode", "both", "busybox"], "invalid mode \"both\""),
        (vec!["Busybox"], "repository name must be lowercase"),
        (vec![""], "invalid image reference \"\""),
        (vec![], "required"),
    ];
    for (args, want) in cases {
        let err = create(&args).expect_err(&format!("{args:?}"));
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn images() {
    for ok in [
        "busybox",
        "busybox:1.36",
        "localhost:5000/team/app:v1",
        "REGISTRY.io/app",
        "a@sha256:AB",
    ] {
        assert!(validate_image(ok).is_ok(), "{ok}");
    }
    for bad in ["", "bad image", "Team/app"] {
        assert!(validate_image(bad).is_err(), "{bad}");
    }
}

#[test]
fn update_changes_only_what_is_asked() {
    let base = create(&[
        "--name",
        "web",
        "--replicas",
        "2",
        "-e",
        "A=1",
        "-e",
        "B=2",
        "--label",
        "x=1",
        "--constraint",
        "node.role==worker",
        "--mount",
        "type=volume,source=v,target=/data",
        "busybox",
        "sleep",
        "10",
    ])
    .expect("base");
    let spec = update(
        &base,
        &[
            "--image",
            "busybox:2",
            "--replicas",
            "5",
            "--env-add",
            "A=9",
            "--env-add",
            "C=3",
            "--env-rm",
            "B",
            "--label-add",
            "y=2",
            "--label-rm",
            "x",
            "--constraint-add",
            "node.labels.zone==a",
            "--constraint-rm",
            "node.role==worker",
            "--mount-add",
            "type=tmpfs,target=/tmp",
            "--mount-rm",
            "/data",
            "--args",
            "sh -c 'echo hi'",
            "--limit-cpu",
            "1",
            "--restart-condition",
            "none",
            "--force",
        ],
    )
    .expect("update");
    assert_eq!(
        spec.mode,
        Some(Mode::Replicated(ReplicatedService { replicas: 5 }))
    );
    let labels = &spec.annotations.as_ref().expect("annotations").labels;
    assert_eq!(
        (labels.get("x"), labels.get("y").map(String::as_str)),
        (None, Some("2"))
    );
    let c = container(&spec);
    assert_eq!(c.image, "busybox:2");
    assert_eq!(c.env, ["A=9", "C=3"]);
    assert_eq!(c.args, ["sh", "-c", "echo hi"]);
    assert_eq!(c.mounts.len(), 1);
    assert_eq!(c.mounts[0].target, "/tmp");
    let task = spec.task.as_ref().expect("task");
    assert_eq!(task.force_update, 1);
    let placement = task.placement.as_ref().expect("placement");
    assert_eq!(placement.constraints, ["node.labels.zone==a"]);
    assert_eq!(
        task.resources.as_ref().and_then(|r| r.limits),
        Some(Resources {
            nano_cpus: 1_000_000_000,
            memory_bytes: 0
        })
    );
    assert_eq!(
        task.restart.map(|r| r.condition),
        Some(RestartCondition::None as i32)
    );

    let unchanged = update(&base, &[]).expect("no-op update");
    assert_eq!(unchanged, base);
}

#[test]
fn update_refuses_bad_input() {
    let base = create(&["--mode", "global", "busybox"]).expect("base");
    let cases = [
        (
            vec!["--replicas", "3"],
            "--replicas can only be used with replicated mode",
        ),
        (
            vec!["--replicas-max-per-node", "1"],
            "--replicas-max-per-node can only be used with replicated mode",
        ),
        (vec!["--image", "Bad"], "repository name must be lowercase"),
        (vec!["--args", "'open"], "unterminated quote"),
        (
            vec!["--constraint-add", "nope"],
            "expected KEY==VALUE or KEY!=VALUE",
        ),
        (vec!["--env-add", "=x"], "the key must not be empty"),
    ];
    for (args, want) in cases {
        let err = update(&base, &args).expect_err(&format!("{args:?}"));
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn limits_are_refused_before_sending_with_the_daemons_words() {
    let replicas = "replicas 100000000 is above the limit of 100000 per service";
    // (flags, the one-line error)
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--replicas".into(), "100000000".into()],
            replicas.to_string(),
        ),
        (
            std::iter::repeat_n(["-e".to_string(), "A=1".to_string()], 1025)
                .flatten()
                .collect(),
            "the container's environment has 1025 entries, above the limit of 1024".into(),
        ),
    ];
    for (flags, want) in cases {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.push("busybox");
        assert_eq!(create(&args).expect_err("refused"), want);
    }
    let spec = create(&["--replicas", "100000", "busybox"]).expect("at the limit");
    let got = update(&spec, &["--replicas", "100000000"]).expect_err("refused");
    assert_eq!(got, replicas);
}

#[test]
fn update_and_rollback_configs() {
    use mesh_proto::{UpdateFailureAction, UpdateOrder};
    // Create always sends both configs, Swarm's defaults filled in, as docker does.
    let base = create(&["busybox"]).expect("base");
    let defaults = UpdateConfig {
        parallelism: 1,
        delay_ns: 0,
        failure_action: UpdateFailureAction::Pause as i32,
        monitor_ns: Some(5_000_000_000),
        max_failure_ratio: 0.0,
        order: UpdateOrder::StopFirst as i32,
    };
    assert_eq!(base.update_config, Some(defaults));
    assert_eq!(base.rollback_config, Some(defaults));

    let spec = create(&[
        "--update-parallelism",
        "0",
        "--update-delay",
        "2s",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "1m",
        "--update-max-failure-ratio",
        "0.25",
        "--update-order",
        "start-first",
        "--rollback-parallelism",
        "3",
        "--rollback-failure-action",
        "continue",
        "busybox",
    ])
    .expect("create");
    assert_eq!(
        spec.update_config,
        Some(UpdateConfig {
            parallelism: 0,
            delay_ns: 2_000_000_000,
            failure_action: UpdateFailureAction::Rollback as i32,
            monitor_ns: Some(60_000_000_000),
            max_failure_ratio: 0.25,
            order: UpdateOrder::StartFirst as i32,
        })
    );
    assert_eq!(
        spec.rollback_config,
        Some(UpdateConfig {
            parallelism: 3,
            failure_action: UpdateFailureAction::Continue as i32,
            ..defaults
        })
    );

    // Update changes only the settings given.
    let changed = update(
        &spec,
        &["--update-delay", "0s", "--rollback-order", "start-first"],
    )
    .expect("update");
    let want_update = UpdateConfig {
        delay_ns: 0,
        ..spec.update_config.expect("update config")
    };
    assert_eq!(changed.update_config, Some(want_update));
    assert_eq!(
        changed.rollback_config.map(|c| (c.parallelism, c.order)),
        Some((3, UpdateOrder::StartFirst as i32))
    );
    // On a spec without configs (made by another client), the defaults are the base.
    let bare = ServiceSpec {
        update_config: None,
        rollback_config: None,
        ..base.clone()
    };
    let changed = update(&bare, &["--update-order", "start-first"]).expect("update");
    assert_eq!(
        changed.update_config,
        Some(UpdateConfig {
            order: UpdateOrder::StartFirst as i32,
            ..defaults
        })
    );
    assert_eq!(changed.rollback_config, None);
}

#[test]
fn update_and_rollback_flags_refuse_bad_values() {
    let cases: [(&[&str], &str); 9] = [
        (&["--update-delay", "soon"], "invalid duration \"soon\""),
        (&["--rollback-monitor", "5"], "invalid duration \"5\""),
        (
            &["--update-max-failure-ratio", "1.5"],
            "invalid value \"1.5\" for --update-max-failure-ratio: must be a number between 0 and 1",
        ),
        (
            &["--rollback-max-failure-ratio", "-0.1"],
            "must be a number between 0 and 1",
        ),
        (
            &["--update-max-failure-ratio", "half"],
            "must be a number between 0 and 1",
        ),
        (
            &["--update-failure-action", "retry"],
            "invalid --update-failure-action \"retry\": expected pause, continue or rollback",
        ),
        (
            &["--rollback-failure-action", "rollback"],
            "invalid --rollback-failure-action \"rollback\": expected pause or continue",
        ),
        (
            &["--update-order", "random"],
            "invalid order \"random\": expected stop-first or start-first",
        ),
        (
            &["--update-parallelism", "-1"],
            "must be a non-negative integer",
        ),
    ];
    let base = create(&["busybox"]).expect("base");
    for (args, want) in cases {
        let mut create_args = args.to_vec();
        create_args.push("busybox");
        let err = create(&create_args).expect_err(&format!("create {args:?}"));
        assert!(err.contains(want), "create {args:?}: {err}");
        let err = update(&base, args).expect_err(&format!("update {args:?}"));
        assert!(err.contains(want), "update {args:?}: {err}");
    }
}

#[test]
fn rollback_takes_no_other_flag() {
    let base = create(&["busybox"]).expect("base");
    for args in [
        &["--image", "busybox:2"][..],
        &["--env-add", "A=1"],
        &["--force"],
        &["--update-parallelism", "2"],
        &["--limit-cpu", "1"],
        &["--restart-delay", "1s"],
        &["--health-cmd", "true"],
        &["--no-healthcheck"],
    ] {
        let mut all = vec!["--rollback"];
        all.extend_from_slice(args);
        let err = update(&base, &all).expect_err(&format!("{args:?}"));
        assert!(err.contains("cannot be used with"), "{args:?}: {err}");
    }
    for ok in [
        &["--rollback"][..],
        &["--rollback", "--detach"],
        &["--rollback", "-q"],
    ] {
        assert!(update(&base, ok).is_ok(), "{ok:?}");
    }
}
