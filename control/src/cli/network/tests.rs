//! `network` flags, and the `--network` flags of `service create` and `service update`.

use super::*;
use clap::Parser;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: NetworkCommand,
}

fn parse(args: &[&str]) -> Result<NetworkCommand, String> {
    Cli::try_parse_from(std::iter::once("network").chain(args.iter().copied()))
        .map(|c| c.command)
        .map_err(|e| e.to_string())
}

fn create_spec(args: &[&str]) -> Result<NetworkSpec, String> {
    match parse(args)? {
        NetworkCommand::Create(create) => create.to_spec().map_err(|e| e.to_string()),
        other => Err(format!("not a create: {other:?}")),
    }
}

#[test]
fn create_flags() {
    let spec = create_spec(&[
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.9.0.0/24",
        "--gateway",
        "10.9.0.254",
        "--ip-range",
        "10.9.0.128/25",
        "--attachable",
        "--label",
        "team=net",
        "--opt",
        "mtu=1350",
        "-o",
        "flag",
        "front",
    ])
    .expect("valid flags");
    assert_eq!(
        spec.annotations.as_ref().map(|a| a.name.as_str()),
        Some("front")
    );
    assert_eq!(
        spec.annotations.as_ref().map(|a| a.labels["team"].as_str()),
        Some("net")
    );
    assert_eq!(spec.driver, "overlay");
    assert!(spec.attachable);
    assert_eq!(spec.driver_opts["mtu"], "1350");
    assert_eq!(spec.driver_opts["flag"], "");
    assert_eq!(
        spec.ipam,
        [IpamConfig {
            subnet: "10.9.0.0/24".into(),
            gateway: "10.9.0.254".into(),
            ip_range: "10.9.0.128/25".into(),
        }]
    );

    let plain = create_spec(&["create", "back"]).expect("defaults");
    assert_eq!(plain.driver, "overlay");
    assert!(plain.ipam.is_empty() && !plain.attachable);

    let bad = [
        (&["create", "--subnet", "10.9.0.0", "n"][..], "invalid CIDR"),
        (
            &[
                "create",
                "--gateway",
                "10.9.0.300",
                "--subnet",
                "10.9.0.0/24",
                "n",
            ],
            "invalid IP",
        ),
        (&["create", "--gateway", "10.9.0.1", "n"], "need a --subnet"),
        (&["create", "--label", "=v", "n"], "key must not be empty"),
        (&["create"], "required"),
    ];
    for (args, want) in bad {
        let err = create_spec(args).expect_err(want);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn other_verbs_parse() {
    assert!(matches!(
        parse(&["ls", "-q", "--format", "json"]),
        Ok(NetworkCommand::Ls {
            quiet: true,
            format: Some(true)
        })
    ));
    assert!(parse(&["ls", "--format", "yaml"]).is_err());
    assert!(
        matches!(parse(&["inspect", "a", "b"]), Ok(NetworkCommand::Inspect { networks }) if networks == ["a", "b"])
    );
    assert!(parse(&["inspect"]).is_err());
    assert!(
        matches!(parse(&["rm", "a"]), Ok(NetworkCommand::Rm { networks }) if networks == ["a"])
    );
}

#[derive(Parser, Debug)]
struct ServiceCreate {
    #[command(flatten)]
    flags: crate::cli::spec::CreateFlags,
}

#[derive(Parser, Debug)]
struct ServiceUpdate {
    #[command(flatten)]
    flags: crate::cli::spec::UpdateFlags,
}

fn targets(spec: &mesh_proto::ServiceSpec) -> Vec<String> {
    let task = spec.task.as_ref().expect("task spec");
    task.networks.iter().map(|n| n.target.clone()).collect()
}

#[test]
fn service_network_flags() {
    let args = [
        "create",
        "--network",
        "front",
        "--network",
        "back.end",
        "busybox",
    ];
    let created = ServiceCreate::try_parse_from(args).expect("parses");
    let mut spec = created.flags.to_spec().expect("spec");
    assert_eq!(targets(&spec), ["front", "back.end"]);
    assert!(ServiceCreate::try_parse_from(["create", "--network", "-x", "busybox"]).is_err());
    assert!(ServiceCreate::try_parse_from(["create", "--network", "a b", "busybox"]).is_err());

    let args = [
        "update",
        "--network-add",
        "extra",
        "--network-add",
        "front",
        "--network-rm",
        "back.end",
        "web",
    ];
    let update = ServiceUpdate::try_parse_from(args).expect("parses");
    update.flags.apply(&mut spec).expect("applies");
    assert_eq!(targets(&spec), ["front", "extra"]);
}
