//! Every limit refused just above it and accepted at it, each with its one-line message.

use super::*;
use mesh_proto::{
    ContainerSpec, EndpointSpec, GlobalService, Mount, NetworkAttachmentConfig, NetworkSpec,
    NodeSpec, Placement, PlacementPreference, PortConfig, ReplicatedService, TaskSpec,
    service_spec::Mode,
};

fn spec() -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: "web".into(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(Mode::Replicated(ReplicatedService { replicas: 1 })),
        endpoint: None,
        ..Default::default()
    }
}

fn with(change: impl FnOnce(&mut ServiceSpec)) -> ServiceSpec {
    let mut spec = spec();
    change(&mut spec);
    spec
}

fn container(spec: &mut ServiceSpec) -> &mut ContainerSpec {
    spec.task
        .as_mut()
        .and_then(|t| t.container.as_mut())
        .expect("container")
}

fn task(spec: &mut ServiceSpec) -> &mut TaskSpec {
    spec.task.as_mut().expect("task")
}

fn labels_of(n: usize, key_len: usize, value_len: usize) -> HashMap<String, String> {
    (0..n)
        .map(|i| {
            let key = format!("{i:0>width$}", width = key_len.max(1));
            (key, "v".repeat(value_len))
        })
        .collect()
}

fn replicated(replicas: u64) -> ServiceSpec {
    with(|s| s.mode = Some(Mode::Replicated(ReplicatedService { replicas })))
}

#[test]
fn service_specs() {
    // (case, spec, the error's message or None when accepted)
    let cases: Vec<(&str, ServiceSpec, Option<&str>)> = vec![
        ("plain", spec(), None),
        ("replicas at the limit", replicated(MAX_REPLICAS), None),
        (
            "100,000,000 replicas",
            replicated(100_000_000),
            Some("replicas 100000000 is above the limit of 100000 per service"),
        ),
        (
            "u64::MAX replicas",
            replicated(u64::MAX),
            Some("replicas 18446744073709551615 is above the limit of 100000 per service"),
        ),
        (
            "global",
            with(|s| s.mode = Some(Mode::Global(GlobalService {}))),
            None,
        ),
        (
            "long name",
            with(|s| s.annotations.as_mut().expect("a").name = "a".repeat(64)),
            Some(
                "service name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\" is 64 bytes long, above the limit of 63",
            ),
        ),
        (
            "labels at the limit",
            with(|s| {
                s.annotations.as_mut().expect("a").labels = labels_of(MAX_LABELS, MAX_LABEL_KEY, 16)
            }),
            None,
        ),
        (
            "too many labels",
            with(|s| s.annotations.as_mut().expect("a").labels = labels_of(MAX_LABELS + 1, 3, 1)),
            Some("service labels has 65 entries, above the limit of 64"),
        ),
        (
            "long label key",
            with(|s| {
                s.annotations.as_mut().expect("a").labels = labels_of(1, MAX_LABEL_KEY + 1, 1)
            }),
            Some(
                "label key \"00000000000000000000000000000000...\" is 129 bytes long, above the limit of 128",
            ),
        ),
        (
            "long label value",
            with(|s| {
                container(s).labels = labels_of(1, 1, MAX_LABEL_VALUE + 1);
            }),
            Some(
                "label value \"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv...\" is 4097 bytes long, above the limit of 4096",
            ),
        ),
        (
            "too many env entries",
            with(|s| container(s).env = vec!["A=1".into(); MAX_ENV + 1]),
            Some("the container's environment has 1025 entries, above the limit of 1024"),
        ),
        (
            "long env entry",
            with(|s| container(s).env = vec![format!("A={}", "x".repeat(MAX_ENV_ENTRY))]),
            Some(
                "environment entry \"A=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...\" is 32770 bytes long, above the limit of 32768",
            ),
        ),
        (
            "too many arguments",
            with(|s| {
                container(s).command = vec!["sh".into()];
                container(s).args = vec!["x".into(); MAX_ARGS];
            }),
            Some("the container's command and arguments has 1025 entries, above the limit of 1024"),
        ),
        (
            "too many mounts",
            with(|s| container(s).mounts = vec![Mount::default(); MAX_MOUNTS + 1]),
            Some("the container's mounts has 65 entries, above the limit of 64"),
        ),
        (
            "too many constraints",
            with(|s| {
                task(s).placement = Some(Placement {
                    constraints: vec!["node.role==worker".into(); MAX_CONSTRAINTS + 1],
                    ..Default::default()
                })
            }),
            Some("placement constraints has 65 entries, above the limit of 64"),
        ),
        (
            "too many preferences",
            with(|s| {
                task(s).placement = Some(Placement {
                    preferences: vec![PlacementPreference::default(); MAX_CONSTRAINTS + 1],
                    ..Default::default()
                })
            }),
            Some("placement preferences has 65 entries, above the limit of 64"),
        ),
        (
            "too many networks",
            with(|s| {
                task(s).networks =
                    vec![NetworkAttachmentConfig::default(); MAX_SERVICE_NETWORKS + 1]
            }),
            Some("the service's networks has 33 entries, above the limit of 32"),
        ),
        (
            "too many ports",
            with(|s| {
                s.endpoint = Some(EndpointSpec {
                    ports: vec![PortConfig::default(); MAX_PORTS + 1],
                    ..Default::default()
                })
            }),
            Some("published ports has 129 entries, above the limit of 128"),
        ),
    ];
    for (case, spec, want) in cases {
        let got = service_spec(&spec).err().map(|e| e.to_string());
        assert_eq!(got.as_deref(), want, "{case}");
        if let Some(message) = got {
            assert!(!message.contains('\n'), "{case}: one line");
        }
    }
}

#[test]
fn a_spec_too_large_in_total() {
    let spec = with(|s| container(s).env = vec![format!("A={}", "x".repeat(30_000)); 5]);
    let bytes = spec.encoded_len();
    assert!(bytes > MAX_SPEC_BYTES);
    assert_eq!(
        service_spec(&spec).unwrap_err().to_string(),
        format!("the service spec is {bytes} bytes encoded, above the limit of 131072")
    );
}

#[test]
fn nodes_and_networks() {
    let node = |labels| NodeSpec {
        annotations: Some(Annotations {
            name: String::new(),
            labels,
        }),
        ..Default::default()
    };
    let network = |name: &str, labels, driver_opts| NetworkSpec {
        annotations: Some(Annotations {
            name: name.into(),
            labels,
        }),
        driver_opts,
        ..Default::default()
    };
    let none = HashMap::new;
    // (case, result, the error's message or None when accepted)
    let cases: Vec<(&str, Result<(), LimitError>, Option<&str>)> = vec![
        (
            "node labels",
            super::node(&node(labels_of(MAX_LABELS, 8, 8))),
            None,
        ),
        (
            "too many node labels",
            super::node(&node(labels_of(MAX_LABELS + 1, 8, 8))),
            Some("node labels has 65 entries, above the limit of 64"),
        ),
        (
            "long node label value",
            super::node(&node(labels_of(1, 8, MAX_LABEL_VALUE + 1))),
            Some(
                "label value \"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv...\" is 4097 bytes long, above the limit of 4096",
            ),
        ),
        (
            "network",
            super::network(&network(&"n".repeat(MAX_NETWORK_NAME), none(), none())),
            None,
        ),
        (
            "long network name",
            super::network(&network(&"n".repeat(MAX_NETWORK_NAME + 1), none(), none())),
            Some(
                "network name \"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn...\" is 65 bytes long, above the limit of 64",
            ),
        ),
        (
            "too many network labels",
            super::network(&network("n", labels_of(MAX_LABELS + 1, 4, 1), none())),
            Some("network labels has 65 entries, above the limit of 64"),
        ),
        (
            "too many driver options",
            super::network(&network("n", none(), labels_of(MAX_LABELS + 1, 4, 1))),
            Some("network driver options has 65 entries, above the limit of 64"),
        ),
    ];
    for (case, result, want) in cases {
        assert_eq!(
            result.err().map(|e| e.to_string()).as_deref(),
            want,
            "{case}"
        );
    }
}

#[test]
fn cluster_wide_tasks() {
    let global = with(|s| s.mode = Some(Mode::Global(GlobalService {})));
    let big = replicated(MAX_REPLICAS);
    let ten = vec![&big; 10];
    let ten_and_global: Vec<&ServiceSpec> = ten.iter().copied().chain([&global]).collect();
    // (case, services, nodes, wanted, refused)
    let cases: Vec<(&str, Vec<&ServiceSpec>, u64, u64, bool)> = vec![
        ("none", vec![], 3, 0, false),
        ("ten at the limit", ten.clone(), 3, 1_000_000, false),
        (
            "a global service beyond",
            ten_and_global.clone(),
            3,
            1_000_003,
            true,
        ),
        ("global on no node", ten_and_global, 0, 1_000_000, false),
    ];
    for (case, services, nodes, want, refused) in cases {
        let wanted = wanted_tasks(services, nodes);
        assert_eq!(wanted, want, "{case}");
        assert_eq!(cluster_tasks(wanted).is_err(), refused, "{case}");
    }
    assert_eq!(
        cluster_tasks(1_000_001).unwrap_err().to_string(),
        "the cluster's services would want 1000001 tasks, above the limit of 1000000: scale \
         other services down first"
    );
    assert_eq!(
        wanted_tasks([&replicated(u64::MAX), &replicated(5)], 1),
        u64::MAX,
        "saturates"
    );
}

#[test]
fn previews_cut_at_a_character_boundary() {
    let long = "é".repeat(40);
    let err = length("value", &long, 10).unwrap_err().to_string();
    let want = format!("value \"{}...\" is 80 bytes long", "é".repeat(16));
    assert!(err.starts_with(&want), "{err}");
}
