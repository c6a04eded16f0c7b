//! Table-driven tests of the flag value parsers, valid and invalid inputs alike.

use super::*;

#[test]
fn durations() {
    let ok = [
        ("0", 0),
        ("10s", 10_000_000_000),
        ("1m30s", 90_000_000_000),
        ("500ms", 500_000_000),
        ("2h", 7_200_000_000_000),
    ];
    for (input, want) in ok {
        assert_eq!(parse_duration_ns(input), Ok(want), "{input}");
    }
    for input in ["", "ten", "10x", "-5s"] {
        let err = parse_duration_ns(input).expect_err(input);
        assert_eq!(
            err.to_string(),
            format!("invalid duration {input:?}: expected a duration such as 10s, 1m30s or 500ms")
        );
    }
}

#[test]
fn sizes() {
    let ok = [
        ("1024", 1024),
        ("512M", 512 << 20),
        ("512m", 512 << 20),
        ("1G", 1 << 30),
        ("1.5g", 3 << 29),
        ("100kb", 100 << 10),
        ("2MiB", 2 << 20),
        ("64b", 64),
    ];
    for (input, want) in ok {
        assert_eq!(parse_bytes(input), Ok(want), "{input}");
    }
    for input in ["", "M", "1x", "-1G", "1.g", ".5g", "1..5g", "1 GG"] {
        assert_eq!(
            parse_bytes(input),
            Err(FlagError::Size(input.to_string())),
            "{input}"
        );
    }
    assert_eq!(
        FlagError::Size("1x".into()).to_string(),
        "invalid size \"1x\": expected a number with an optional unit (b, k, m, g, t), e.g. 512M"
    );
}

#[test]
fn cpus() {
    let ok = [
        ("0.5", 500_000_000),
        ("2", 2_000_000_000),
        ("1.25", 1_250_000_000),
        (".5", 500_000_000),
        ("0.000000001", 1),
        ("1.500000000000", 1_500_000_000),
    ];
    for (input, want) in ok {
        assert_eq!(parse_nano_cpus(input), Ok(want), "{input}");
    }
    for input in ["", ".", "-1", "abc", "1.2.3", "1e3"] {
        assert_eq!(
            parse_nano_cpus(input),
            Err(FlagError::Cpus(input.to_string())),
            "{input}"
        );
    }
    assert_eq!(
        parse_nano_cpus("0.0000000001"),
        Err(FlagError::CpusPrecision("0.0000000001".into()))
    );
}

#[test]
fn replicas_and_counts() {
    assert_eq!(parse_replicas("3"), Ok(3));
    assert_eq!(parse_replicas("0"), Ok(0));
    for input in ["-1", "x", "", "1.5"] {
        assert_eq!(
            parse_replicas(input),
            Err(FlagError::Replicas(input.into())),
            "{input}"
        );
    }
    assert_eq!(
        parse_replicas("-1").map_err(|e| e.to_string()),
        Err("invalid replicas value \"-1\": must be a non-negative integer".to_string())
    );
    assert_eq!(
        parse_count("--restart-max-attempts", "-2")
            .map_err(|e| e.to_string())
            .unwrap_err(),
        "invalid value \"-2\" for --restart-max-attempts: must be a non-negative integer"
    );
}

#[test]
fn choices() {
    assert_eq!(
        parse_restart_condition("on-failure"),
        Ok(RestartCondition::OnFailure)
    );
    assert_eq!(parse_restart_condition("NONE"), Ok(RestartCondition::None));
    assert_eq!(parse_availability("drain"), Ok(NodeAvailability::Drain));
    assert_eq!(parse_pull("never"), Ok(PullPolicy::Never));
    assert_eq!(parse_mode_global("global"), Ok(true));
    assert_eq!(parse_mode_global("replicated"), Ok(false));
    assert_eq!(
        parse_restart_condition("sometimes")
            .unwrap_err()
            .to_string(),
        "invalid restart condition \"sometimes\": expected none, on-failure or any"
    );
    assert_eq!(
        parse_availability("off").unwrap_err().to_string(),
        "invalid availability \"off\": expected active, pause or drain"
    );
    assert!(parse_pull("maybe").is_err());
    assert!(parse_mode_global("both").is_err());
}

#[test]
fn ps_filters() {
    assert_eq!(
        parse_ps_filter("desired-state=running"),
        Ok(TaskState::Running)
    );
    assert_eq!(
        parse_ps_filter("desired-state=shutdown"),
        Ok(TaskState::Shutdown)
    );
    assert_eq!(
        parse_ps_filter("desired-state=accepted"),
        Ok(TaskState::Accepted)
    );
    for input in ["desired-state", "node=x", "desired-state=weird"] {
        assert!(parse_ps_filter(input).is_err(), "{input}");
    }
    assert_eq!(
        parse_ps_filter("node=x").unwrap_err().to_string(),
        "invalid filter \"node=x\": expected desired-state=running|shutdown|accepted"
    );
}

#[test]
fn labels_and_env() {
    assert_eq!(parse_label("a=b"), Ok(("a".into(), "b".into())));
    assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
    assert_eq!(parse_label("flag"), Ok(("flag".into(), String::new())));
    assert_eq!(
        parse_label("=v").unwrap_err().to_string(),
        "invalid label \"=v\": the key must not be empty"
    );
    assert_eq!(parse_env("A=1"), Ok("A=1".into()));
    assert_eq!(parse_env("A="), Ok("A=".into()));
    assert_eq!(
        parse_env("MESHCTL_TEST_SURELY_UNSET"),
        Ok("MESHCTL_TEST_SURELY_UNSET".into())
    );
    assert_eq!(
        parse_env("=1").unwrap_err().to_string(),
        "invalid environment variable \"=1\": the key must not be empty"
    );
}

#[test]
fn placement_preferences() {
    assert_eq!(
        parse_placement_pref("spread=node.labels.zone"),
        Ok("node.labels.zone".into())
    );
    for input in ["spread=", "binpack=node.labels.zone", "node.labels.zone"] {
        assert_eq!(
            parse_placement_pref(input),
            Err(FlagError::Preference(input.into())),
            "{input}"
        );
    }
}

#[test]
fn names() {
    for input in ["web", "web-1", "a_b", "A1", &"a".repeat(63)] {
        assert_eq!(parse_name(input), Ok(input.to_string()), "{input}");
    }
    for input in ["", "-web", "web-", "we b", "web.1", "wéb", &"a".repeat(64)] {
        assert_eq!(
            parse_name(input),
            Err(FlagError::Name(input.to_string())),
            "{input}"
        );
    }
}

#[test]
fn scale_specs() {
    assert_eq!(parse_scale("web=5"), Ok(("web".into(), 5)));
    assert_eq!(parse_scale("web"), Err(FlagError::Scale("web".into())));
    assert_eq!(parse_scale("=5"), Err(FlagError::Scale("=5".into())));
    assert_eq!(parse_scale("web=-1"), Err(FlagError::Replicas("-1".into())));
}

#[test]
fn addresses() {
    for input in [
        "10.0.0.1",
        "10.0.0.1:2377",
        "eth0",
        "node-1:2377",
        "[::1]:2377",
    ] {
        assert_eq!(parse_addr(input), Ok(input.to_string()), "{input}");
    }
    for input in ["", "10.0.0.1:x", "tcp://1.2.3.4", "a b", ":2377"] {
        assert_eq!(
            parse_addr(input),
            Err(FlagError::Addr(input.to_string())),
            "{input}"
        );
    }
}

#[test]
fn mounts() {
    let bind = parse_mount("type=bind,source=/a,target=/b,readonly").expect("bind");
    assert_eq!(bind.r#type, MountType::Bind as i32);
    assert_eq!((bind.source.as_str(), bind.target.as_str()), ("/a", "/b"));
    assert!(bind.read_only);

    let volume = parse_mount("src=data,dst=/data,volume-label=a=b,ro=false").expect("volume");
    assert_eq!(volume.r#type, MountType::Volume as i32);
    assert!(!volume.read_only);
    assert_eq!(volume.volume_labels.get("a").map(String::as_str), Some("b"));

    let tmpfs = parse_mount("type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=1770").expect("tmpfs");
    assert_eq!(tmpfs.tmpfs_size_bytes, 64 << 20);
    assert_eq!(tmpfs.tmpfs_mode, 0o1770);

    let driven = parse_mount(
        "source=shared,target=/s,volume-driver=local,volume-opt=type=tmpfs,volume-opt=device=tmpfs",
    )
    .expect("volume with driver options");
    assert_eq!(driven.volume_driver, "local");
    assert_eq!(
        driven.volume_driver_opts.get("type").map(String::as_str),
        Some("tmpfs")
    );
    assert_eq!(
        driven.volume_driver_opts.get("device").map(String::as_str),
        Some("tmpfs")
    );

    let bad = [
        ("type=bind,source=/a", "target is required"),
        ("type=bind,target=/b", "source is required for a bind mount"),
        (
            "type=nfs,target=/b",
            "invalid mount type \"nfs\": expected bind, volume or tmpfs",
        ),
        ("target=/b,colour=red", "unknown field \"colour\""),
        (
            "target=/b,readonly=maybe",
            "invalid value \"maybe\" for readonly: expected true or false",
        ),
        (
            "type=tmpfs,source=x,target=/t",
            "a tmpfs mount takes no source",
        ),
        (
            "type=bind,source=/a,target=/b,volume-driver=local",
            "volume options are only valid with type=volume",
        ),
        (
            "type=tmpfs,target=/b,volume-opt=o=size=1m",
            "volume options are only valid with type=volume",
        ),
        (
            "target=/b,volume-driver=",
            "volume-driver must not be empty",
        ),
        (
            "target=/b,volume-opt=nokey",
            "invalid volume-opt \"nokey\": expected volume-opt=KEY=VALUE",
        ),
        (
            "target=/b,volume-opt==v",
            "invalid volume-opt \"=v\": the key must not be empty",
        ),
        (
            "type=tmpfs,target=/b,tmpfs-mode=999",
            "invalid file mode \"999\": expected an octal mode such as 0755 or 1777",
        ),
        (
            "type=tmpfs,target=/b,tmpfs-mode=17777",
            "invalid file mode \"17777\": expected an octal mode such as 0755 or 1777",
        ),
        (
            "target=/b,tmpfs-mode=700",
            "tmpfs-mode is only valid with type=tmpfs",
        ),
        (
            "type=bind,source=/a,target=/b,volume-nocopy",
            "volume options are only valid with type=volume",
        ),
        (
            "target=/b,tmpfs-size=1m",
            "tmpfs-size is only valid with type=tmpfs",
        ),
    ];
    for (input, reason) in bad {
        assert_eq!(
            parse_mount(input).unwrap_err().to_string(),
            format!("invalid mount {input:?}: {reason}"),
        );
    }
}

#[test]
fn shell_words() {
    let ok: [(&str, &[&str]); 6] = [
        ("", &[]),
        ("sleep 1000", &["sleep", "1000"]),
        ("  a   b  ", &["a", "b"]),
        (
            "sh -c 'echo hi; sleep 5'",
            &["sh", "-c", "echo hi; sleep 5"],
        ),
        (r#"echo "a \"b\" c" ''"#, &["echo", r#"a "b" c"#, ""]),
        (r"a\ b", &["a b"]),
    ];
    for (input, want) in ok {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(parse_shell_words(input), Ok(Words(want)), "{input}");
    }
    for input in ["'open", "\"open", "trailing\\"] {
        assert_eq!(
            parse_shell_words(input),
            Err(FlagError::Words(input.to_string())),
            "{input}"
        );
    }
}

#[test]
fn publish_reads_both_syntaxes() {
    let long = parse_publish("published=8080,target=80,protocol=udp,mode=host").unwrap();
    assert_eq!(
        (
            long.published_port,
            long.target_port,
            long.protocol(),
            long.publish_mode()
        ),
        (8080, 80, PortProtocol::Udp, PublishMode::Host)
    );
    let short = parse_publish("8080:80").unwrap();
    assert_eq!(
        (
            short.published_port,
            short.target_port,
            short.protocol(),
            short.publish_mode()
        ),
        (8080, 80, PortProtocol::Tcp, PublishMode::Ingress)
    );
    let udp = parse_publish("53:5353/udp").unwrap();
    assert_eq!(
        (udp.published_port, udp.target_port, udp.protocol()),
        (53, 5353, PortProtocol::Udp)
    );
    let target_only = parse_publish("target=80").unwrap();
    assert_eq!(
        (target_only.published_port, target_only.target_port),
        (0, 80)
    );
    assert_eq!(parse_publish("80").unwrap().published_port, 0);
}

#[test]
fn publish_refuses_what_is_not_a_port() {
    for (value, reason) in [
        ("published=8080", "target is required"),
        ("published=0,target=80", "expected 1-65535"),
        ("8080:70000", "expected 1-65535"),
        ("8080:80/sctp", "tcp or udp"),
        ("target=80,mode=routed", "ingress or host"),
        ("target=80,colour=red", "unknown field"),
        ("x:80", "invalid port"),
        ("", "invalid port"),
    ] {
        let err = parse_publish(value).unwrap_err().to_string();
        assert!(err.contains(reason), "{value:?}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn endpoint_mode_is_vip_or_dnsrr() {
    assert_eq!(parse_endpoint_mode("vip").unwrap(), EndpointMode::Vip);
    assert_eq!(parse_endpoint_mode("DNSRR").unwrap(), EndpointMode::Dnsrr);
    assert!(parse_endpoint_mode("rr").is_err());
}
