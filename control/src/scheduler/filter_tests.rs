//! Table-driven tests of every filter and of the explanations.

use mesh_proto::{Node, NodeAvailability, NodeState, Platform, PortProtocol, PublishMode};

use super::*;
use crate::scheduler::fixtures::{
    CPU, GIB, constrained, host_port, node, placement, publishing, reserving, running_on, task,
    with_availability, with_label, with_state,
};

fn platform(os: &str, arch: &str) -> Platform {
    Platform {
        os: os.to_string(),
        architecture: arch.to_string(),
    }
}

fn with_platforms(mut t: Task, platforms: Vec<Platform>) -> Task {
    placement(&mut t).platforms = platforms;
    t
}

fn with_max_replicas(mut t: Task, max: u64) -> Task {
    placement(&mut t).max_replicas = max;
    t
}

/// Name, filter, node, tasks already on it, task to place, whether the node passes.
type Case = (
    &'static str,
    &'static dyn Filter,
    Node,
    Vec<Task>,
    Task,
    bool,
);

#[test]
fn filters_accept_and_reject() {
    let plain = || task("t", "s1");
    let on_8080 = || host_port(plain(), 8080);
    let stopping = {
        let mut t = running_on(host_port(task("o", "s2"), 8080), "n");
        t.desired_state = mesh_proto::TaskState::Shutdown as i32;
        t
    };
    let stopped = {
        let mut t = stopping.clone();
        t.status.get_or_insert_with(Default::default).state =
            mesh_proto::TaskState::Shutdown as i32;
        t
    };
    let cases: Vec<Case> = vec![
        ("ready node", &ReadyFilter, node("n"), vec![], plain(), true),
        (
            "down node",
            &ReadyFilter,
            with_state(node("n"), NodeState::Down),
            vec![],
            plain(),
            false,
        ),
        (
            "disconnected node",
            &ReadyFilter,
            with_state(node("n"), NodeState::Disconnected),
            vec![],
            plain(),
            false,
        ),
        (
            "active node",
            &AvailabilityFilter,
            node("n"),
            vec![],
            plain(),
            true,
        ),
        (
            "paused node",
            &AvailabilityFilter,
            with_availability(node("n"), NodeAvailability::Pause),
            vec![],
            plain(),
            false,
        ),
        (
            "drained node",
            &AvailabilityFilter,
            with_availability(node("n"), NodeAvailability::Drain),
            vec![],
            plain(),
            false,
        ),
        (
            "no reservation",
            &ResourceFilter,
            node("n"),
            vec![],
            plain(),
            true,
        ),
        (
            "reservation fits exactly",
            &ResourceFilter,
            node("n"),
            vec![running_on(reserving(task("o", "s2"), CPU, GIB), "n")],
            reserving(plain(), 3 * CPU, 7 * GIB),
            true,
        ),
        (
            "too much cpu after other tasks",
            &ResourceFilter,
            node("n"),
            vec![running_on(reserving(task("o", "s2"), 2 * CPU, 0), "n")],
            reserving(plain(), 3 * CPU, 0),
            false,
        ),
        (
            "too much memory",
            &ResourceFilter,
            node("n"),
            vec![],
            reserving(plain(), 0, 9 * GIB),
            false,
        ),
        (
            "constraint met",
            &ConstraintFilter,
            with_label(node("n"), "zone", "east"),
            vec![],
            constrained(plain(), &["node.labels.zone==east", "node.role!=manager"]),
            true,
        ),
        (
            "constraint not met",
            &ConstraintFilter,
            with_label(node("n"), "zone", "west"),
            vec![],
            constrained(plain(), &["node.labels.zone==east"]),
            false,
        ),
        (
            "no platforms wanted",
            &PlatformFilter,
            node("n"),
            vec![],
            plain(),
            true,
        ),
        (
            "platform listed, x86_64 folded to amd64",
            &PlatformFilter,
            node("n"),
            vec![],
            with_platforms(
                plain(),
                vec![platform("windows", "amd64"), platform("linux", "x86_64")],
            ),
            true,
        ),
        (
            "os only",
            &PlatformFilter,
            node("n"),
            vec![],
            with_platforms(plain(), vec![platform("linux", "")]),
            true,
        ),
        (
            "platform not listed",
            &PlatformFilter,
            node("n"),
            vec![],
            with_platforms(plain(), vec![platform("linux", "arm64")]),
            false,
        ),
        (
            "no host port",
            &HostPortFilter,
            node("n"),
            vec![running_on(host_port(task("o", "s2"), 8080), "n")],
            plain(),
            true,
        ),
        (
            "host port free",
            &HostPortFilter,
            node("n"),
            vec![running_on(host_port(task("o", "s2"), 8081), "n")],
            on_8080(),
            true,
        ),
        (
            "host port of another service",
            &HostPortFilter,
            node("n"),
            vec![running_on(host_port(task("o", "s2"), 8080), "n")],
            on_8080(),
            false,
        ),
        (
            "host port of the same service",
            &HostPortFilter,
            node("n"),
            vec![running_on(host_port(task("o", "s1"), 8080), "n")],
            on_8080(),
            false,
        ),
        (
            "host port of a task still stopping",
            &HostPortFilter,
            node("n"),
            vec![stopping],
            on_8080(),
            false,
        ),
        (
            "host port of a task that stopped",
            &HostPortFilter,
            node("n"),
            vec![stopped],
            on_8080(),
            true,
        ),
        (
            "same number over udp",
            &HostPortFilter,
            node("n"),
            vec![running_on(
                publishing(task("o", "s2"), 8080, PortProtocol::Udp, PublishMode::Host),
                "n",
            )],
            on_8080(),
            true,
        ),
        (
            "same number published in ingress mode",
            &HostPortFilter,
            node("n"),
            vec![running_on(
                publishing(
                    task("o", "s2"),
                    8080,
                    PortProtocol::Tcp,
                    PublishMode::Ingress,
                ),
                "n",
            )],
            on_8080(),
            true,
        ),
        (
            "host port not numbered yet",
            &HostPortFilter,
            node("n"),
            vec![running_on(host_port(task("o", "s1"), 0), "n")],
            host_port(plain(), 0),
            true,
        ),
        (
            "no max replicas",
            &MaxReplicasFilter,
            node("n"),
            vec![],
            plain(),
            true,
        ),
        (
            "below max replicas",
            &MaxReplicasFilter,
            node("n"),
            vec![
                running_on(task("a", "s1"), "n"),
                running_on(task("b", "s2"), "n"),
            ],
            with_max_replicas(plain(), 2),
            true,
        ),
        (
            "at max replicas",
            &MaxReplicasFilter,
            node("n"),
            vec![
                running_on(task("a", "s1"), "n"),
                running_on(task("b", "s1"), "n"),
            ],
            with_max_replicas(plain(), 2),
            false,
        ),
    ];
    for (name, filter, node, on_node, task, expected) in cases {
        let info = NodeInfo::new(node, &on_node);
        let request = TaskRequest::new(&task).expect("valid constraints");
        assert_eq!(filter.check(&request, &info), expected, "{name}");
    }
}

#[test]
fn explanations_use_swarm_words() {
    let cases = [
        (
            Rejection::NotAvailable,
            1,
            "1 node not available for new tasks",
        ),
        (
            Rejection::NotAvailable,
            3,
            "3 nodes not available for new tasks",
        ),
        (
            Rejection::InsufficientResources,
            1,
            "insufficient resources on 1 node",
        ),
        (
            Rejection::InsufficientResources,
            2,
            "insufficient resources on 2 nodes",
        ),
        (
            Rejection::Constraints,
            1,
            "scheduling constraints not satisfied on 1 node",
        ),
        (
            Rejection::Constraints,
            4,
            "scheduling constraints not satisfied on 4 nodes",
        ),
        (Rejection::Platform, 2, "unsupported platform on 2 nodes"),
        (
            Rejection::HostPort,
            1,
            "host-mode port already in use on 1 node",
        ),
        (
            Rejection::HostPort,
            3,
            "host-mode port already in use on 3 nodes",
        ),
        (
            Rejection::MaxReplicas,
            5,
            "max replicas per node limit exceed",
        ),
    ];
    for (rejection, nodes, expected) in cases {
        assert_eq!(rejection.explain(nodes), expected);
    }
    assert_eq!(ReadyFilter.explain(2), AvailabilityFilter.explain(2));
}

#[test]
fn bad_constraint_is_refused_when_preparing() {
    let t = constrained(task("t", "s"), &["node.colour==red"]);
    let err = TaskRequest::new(&t).expect_err("unknown key");
    assert!(
        err.to_string().contains("unknown key \"node.colour\""),
        "{err}"
    );
}
