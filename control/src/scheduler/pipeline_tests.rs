//! Table-driven tests of whole scheduling passes.

use mesh_proto::{NodeAvailability, NodeState, PlacementPreference};

use super::*;
use crate::scheduler::fixtures::{
    CPU, GIB, constrained, host_port, infos, node, placement, reserving, running_on, task,
    with_availability, with_label, with_state,
};

/// The node each task went to, or its reason, in order.
fn outcomes(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .map(|d| match d {
            Decision::Assign { node_id, .. } => node_id.clone(),
            Decision::NoSuitableNode { reason, .. } => reason.clone(),
        })
        .collect()
}

fn tasks(service: &str, count: usize) -> Vec<Task> {
    (0..count)
        .map(|i| task(&format!("{service}-{i}"), service))
        .collect()
}

#[test]
fn spreads_evenly_and_accounts_for_the_batch() {
    let mut nodes = infos(vec![node("a"), node("b"), node("c")], &[]);
    let decisions = schedule(&mut nodes, &tasks("s", 6));
    assert_eq!(outcomes(&decisions), ["a", "b", "c", "a", "b", "c"]);
    assert_eq!(decisions[0].task_id(), "s-0");
}

#[test]
fn spreads_around_existing_tasks() {
    let existing = vec![
        running_on(task("x1", "s"), "a"),
        running_on(task("x2", "s"), "a"),
        running_on(task("x3", "s"), "b"),
        running_on(task("o1", "other"), "c"),
    ];
    let mut nodes = infos(vec![node("a"), node("b"), node("c")], &existing);
    // c has none of s; then b and c tie on s and on totals (2 each): b by id; then c.
    assert_eq!(
        outcomes(&schedule(&mut nodes, &tasks("s", 3))),
        ["c", "b", "c"]
    );
}

#[test]
fn placement_preference_spreads_over_zones() {
    let mut nodes = infos(
        vec![
            with_label(node("e1"), "zone", "east"),
            with_label(node("e2"), "zone", "east"),
            with_label(node("e3"), "zone", "east"),
            with_label(node("w1"), "zone", "west"),
        ],
        &[],
    );
    let batch: Vec<Task> = tasks("s", 4)
        .into_iter()
        .map(|mut t| {
            placement(&mut t).preferences = vec![PlacementPreference {
                spread_descriptor: "node.labels.zone".into(),
            }];
            t
        })
        .collect();
    // Half per zone, even though east has three nodes and west one.
    assert_eq!(
        outcomes(&schedule(&mut nodes, &batch)),
        ["e1", "w1", "e2", "w1"]
    );
}

#[test]
fn max_replicas_per_node() {
    let mut nodes = infos(vec![node("a"), node("b")], &[]);
    let batch: Vec<Task> = tasks("s", 3)
        .into_iter()
        .map(|mut t| {
            placement(&mut t).max_replicas = 1;
            t
        })
        .collect();
    assert_eq!(
        outcomes(&schedule(&mut nodes, &batch)),
        [
            "a",
            "b",
            "no suitable node (max replicas per node limit exceed)"
        ]
    );
}

#[test]
fn a_host_mode_port_takes_one_task_per_node() {
    // Two replicas publishing 8080 in host mode on one node: the second waits.
    let mut nodes = infos(vec![node("a")], &[]);
    let batch: Vec<Task> = tasks("s", 2)
        .into_iter()
        .map(|t| host_port(t, 8080))
        .collect();
    assert_eq!(
        outcomes(&schedule(&mut nodes, &batch)),
        [
            "a",
            "no suitable node (host-mode port already in use on 1 node)"
        ]
    );
}

#[test]
fn services_sharing_a_host_port_go_to_different_nodes() {
    // b is busier, so spread alone would put both services' tasks on a.
    let existing = vec![
        running_on(task("o1", "other"), "b"),
        running_on(task("o2", "other"), "b"),
    ];
    let mut nodes = infos(vec![node("a"), node("b")], &existing);
    let batch = vec![
        host_port(task("s1-0", "s1"), 8080),
        host_port(task("s2-0", "s2"), 8080),
        host_port(task("s3-0", "s3"), 8080),
        host_port(task("s4-0", "s4"), 9090),
    ];
    assert_eq!(
        outcomes(&schedule(&mut nodes, &batch)),
        [
            "a",
            "b",
            "no suitable node (host-mode port already in use on 2 nodes)",
            "a",
        ]
    );
}

#[test]
fn host_ports_without_a_number_never_collide() {
    let mut nodes = infos(
        vec![node("a")],
        &[running_on(host_port(task("x", "s"), 0), "a")],
    );
    let batch: Vec<Task> = tasks("s", 2).into_iter().map(|t| host_port(t, 0)).collect();
    assert_eq!(outcomes(&schedule(&mut nodes, &batch)), ["a", "a"]);
}

#[test]
fn an_ended_task_frees_its_host_port_and_a_stopping_one_does_not() {
    let mut stopping = running_on(host_port(task("x", "old"), 8080), "a");
    stopping.desired_state = TaskState::Shutdown as i32;
    let mut ended = running_on(host_port(task("y", "old"), 8080), "b");
    ended.desired_state = TaskState::Shutdown as i32;
    ended.status.get_or_insert_with(Default::default).state = TaskState::Shutdown as i32;
    let mut failed = running_on(host_port(task("z", "old"), 8080), "c");
    failed.status.get_or_insert_with(Default::default).state = TaskState::Failed as i32;
    let mut nodes = infos(
        vec![node("a"), node("b"), node("c")],
        &[stopping, ended, failed],
    );
    let batch: Vec<Task> = tasks("new", 3)
        .into_iter()
        .map(|t| host_port(t, 8080))
        .collect();
    assert_eq!(
        outcomes(&schedule(&mut nodes, &batch)),
        [
            "b",
            "c",
            "no suitable node (host-mode port already in use on 3 nodes)"
        ]
    );
}

#[test]
fn host_port_reasons_come_between_platform_and_replicas_per_node() {
    let existing = vec![
        running_on(host_port(task("x", "other"), 8080), "b"),
        running_on(task("y", "s"), "c"),
    ];
    let mut nodes = infos(
        vec![
            with_availability(node("a"), NodeAvailability::Drain),
            node("b"),
            node("c"),
        ],
        &existing,
    );
    let mut t = host_port(task("t", "s"), 8080);
    placement(&mut t).max_replicas = 1;
    assert_eq!(
        outcomes(&schedule(&mut nodes, &[t])),
        [
            "no suitable node (1 node not available for new tasks; host-mode port already in use on 1 node; max replicas per node limit exceed)"
        ]
    );
}

#[test]
fn reservations_add_up_within_a_batch() {
    let existing = vec![running_on(reserving(task("x", "other"), 0, 6 * GIB), "b")];
    let mut nodes = infos(vec![node("a"), node("b")], &existing);
    let batch: Vec<Task> = tasks("s", 4)
        .into_iter()
        .map(|t| reserving(t, CPU, 3 * GIB))
        .collect();
    assert_eq!(
        outcomes(&schedule(&mut nodes, &batch)),
        [
            "a",
            "a",
            "no suitable node (insufficient resources on 2 nodes)",
            "no suitable node (insufficient resources on 2 nodes)",
        ]
    );
}

#[test]
fn pre_assigned_tasks_are_checked_against_their_node_only() {
    let existing = vec![running_on(task("x", "s"), "b")];
    let mut nodes = infos(
        vec![
            node("a"),
            node("b"),
            with_availability(node("d"), NodeAvailability::Drain),
        ],
        &existing,
    );
    let on = |id: &str, node: &str| {
        let mut t = task(id, "s");
        t.node_id = node.to_string();
        t
    };
    let big = |mut t: Task| {
        t = reserving(t, 5 * CPU, 0);
        t
    };
    let batch = vec![
        on("1", "b"),
        on("2", "d"),
        on("3", "gone"),
        big(on("4", "a")),
    ];
    assert_eq!(
        outcomes(&schedule(&mut nodes, &batch)),
        [
            "b",
            "no suitable node (1 node not available for new tasks)",
            "no suitable node",
            "no suitable node (insufficient resources on 1 node)",
        ]
    );
}

#[test]
fn reasons_count_each_node_once_in_swarm_words() {
    let cases: Vec<(&str, Vec<mesh_proto::Node>, Task, &str)> = vec![
        ("no nodes", vec![], task("t", "s"), "no suitable node"),
        (
            "down, drained, too small",
            vec![
                with_state(node("a"), NodeState::Down),
                with_availability(node("b"), NodeAvailability::Drain),
                node("c"),
                node("d"),
            ],
            reserving(task("t", "s"), 8 * CPU, 0),
            "no suitable node (2 nodes not available for new tasks; insufficient resources on 2 nodes)",
        ),
        (
            "issue's example",
            vec![
                with_availability(node("a"), NodeAvailability::Pause),
                node("b"),
                node("c"),
            ],
            reserving(task("t", "s"), 0, 64 * GIB),
            "no suitable node (1 node not available for new tasks; insufficient resources on 2 nodes)",
        ),
        (
            "first failing filter wins",
            vec![
                with_state(with_label(node("a"), "zone", "east"), NodeState::Down),
                with_label(node("b"), "zone", "west"),
            ],
            constrained(
                reserving(task("t", "s"), 8 * CPU, 0),
                &["node.labels.zone==east"],
            ),
            "no suitable node (1 node not available for new tasks; insufficient resources on 1 node)",
        ),
        (
            "constraints",
            vec![node("a"), node("b"), node("c")],
            constrained(task("t", "s"), &["node.labels.zone==east"]),
            "no suitable node (scheduling constraints not satisfied on 3 nodes)",
        ),
        (
            "bad constraint in the store",
            vec![node("a")],
            constrained(task("t", "s"), &["node.zone==east"]),
            "no suitable node (invalid constraint \"node.zone==east\": unknown key \"node.zone\"",
        ),
    ];
    for (name, nodes, task, expected) in cases {
        let decisions = schedule(&mut infos(nodes, &[]), &[task]);
        let got = &outcomes(&decisions)[0];
        assert!(got.starts_with(expected), "{name}: {got}");
        if !name.starts_with("bad") {
            assert_eq!(got, expected, "{name}");
        }
    }
}

#[test]
fn constrained_tasks_land_on_matching_nodes() {
    let mut nodes = infos(
        vec![
            with_label(node("a"), "zone", "east"),
            with_label(node("b"), "zone", "west"),
            with_label(node("c"), "zone", "east"),
        ],
        &[],
    );
    let batch: Vec<Task> = tasks("s", 4)
        .into_iter()
        .map(|t| constrained(t, &["node.labels.zone == east"]))
        .collect();
    assert_eq!(
        outcomes(&schedule(&mut nodes, &batch)),
        ["a", "c", "a", "c"]
    );
}

/// A pass works on the snapshots in place and takes every placement back when it ends: the
/// snapshots stay those of the store until its writes come back as events.
#[test]
fn a_pass_leaves_the_snapshots_as_they_were() {
    let existing = vec![
        running_on(task("x1", "web"), "a"),
        running_on(host_port(task("x2", "edge"), 8080), "b"),
    ];
    let mut nodes = infos(vec![node("a"), node("b"), node("c")], &existing);
    let before = nodes.clone();
    let mut spread = task("spread-0", "spread");
    placement(&mut spread).preferences = vec![PlacementPreference {
        spread_descriptor: "node.labels.zone".into(),
    }];
    let batch: Vec<Task> = [
        tasks("web", 4),
        (0..3)
            .map(|i| reserving(task(&format!("big-{i}"), "big"), CPU, GIB))
            .collect(),
        vec![host_port(task("edge-1", "edge"), 8080), spread],
    ]
    .concat();
    let decisions = schedule(&mut nodes, &batch);
    let placed = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Assign { .. }))
        .count();
    assert_eq!(placed, batch.len(), "{}", outcomes(&decisions).join(", "));
    assert_eq!(nodes, before);
}

/// Tasks `from`..`from + count` of `service`, each shaped by `shape`.
fn run(service: &str, from: usize, count: usize, shape: &dyn Fn(Task) -> Task) -> Vec<Task> {
    (from..from + count)
        .map(|i| shape(task(&format!("{service}-{i}"), service)))
        .collect()
}

/// The tasks decided one by one, each against every node: what [`schedule`] did before groups.
fn one_by_one(nodes: &[NodeInfo], tasks: &[Task]) -> Vec<Decision> {
    let mut copies = nodes.to_vec();
    let mut nodes: Vec<&mut NodeInfo> = copies.iter_mut().collect();
    let index: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id().to_string(), i))
        .collect();
    let mut placed = Vec::new();
    tasks
        .iter()
        .map(|task| decide(&mut nodes, &index, task, &mut placed))
        .collect()
}

/// Groups decide exactly what task-by-task decisions do, reasons included: runs of one spec
/// among others, nodes filling up (resources, a host port, replicas per node), constraints that
/// leave some nodes out, drained and down nodes, and runs that outgrow every node.
#[test]
fn groups_decide_as_one_task_at_a_time() {
    let mut all = Vec::new();
    for i in 0..12 {
        let mut n = with_label(node(&format!("n{i:02}")), "zone", ["a", "b", "c"][i % 3]);
        if i == 4 {
            n = with_availability(n, NodeAvailability::Drain);
        }
        if i == 7 {
            n = with_state(n, NodeState::Down);
        }
        all.push(n);
    }
    let existing = vec![
        running_on(task("x1", "web"), "n00"),
        running_on(task("x2", "web"), "n00"),
        running_on(task("x3", "db"), "n05"),
    ];
    let mut nodes = infos(all, &existing);
    let max_two = |t: Task| {
        let mut t = t;
        placement(&mut t).max_replicas = 2;
        t
    };
    let cases: Vec<(&str, Vec<Task>)> = vec![
        ("plain", run("web", 0, 30, &|t| t)),
        (
            "reserving until full",
            run("big", 0, 40, &|t| reserving(t, 3 * CPU, GIB)),
        ),
        (
            "constrained",
            run("zoned", 0, 10, &|t| {
                constrained(t, &["node.labels.zone==b"])
            }),
        ),
        ("a host port", run("edge", 0, 14, &|t| host_port(t, 8080))),
        ("max replicas", run("capped", 0, 25, &max_two)),
        (
            "interleaved",
            [
                run("web", 0, 5, &|t| t),
                run("db", 0, 3, &|t| reserving(t, 2 * CPU, GIB)),
                run("web", 5, 5, &|t| t),
                vec![running_on(task("pinned", "global"), "n03")],
                run("db", 3, 20, &|t| reserving(t, 2 * CPU, GIB)),
            ]
            .concat(),
        ),
        (
            "impossible",
            run("none", 0, 4, &|t| constrained(t, &["node.labels.zone==z"])),
        ),
    ];
    // A group breaks ties by id whatever order the nodes come in.
    let mut reversed: Vec<NodeInfo> = nodes.iter().rev().cloned().collect();
    for (name, batch) in cases {
        let grouped = schedule(&mut nodes, &batch);
        assert_eq!(grouped, one_by_one(&nodes, &batch), "{name}");
        assert_eq!(grouped.len(), batch.len(), "{name}");
        let grouped = schedule(&mut reversed, &batch);
        assert_eq!(
            grouped,
            one_by_one(&reversed, &batch),
            "{name}, nodes reversed"
        );
        assert_eq!(
            grouped,
            one_by_one(&nodes, &batch),
            "{name}, same as in id order"
        );
    }
}

/// Groups walking the nodes from the least loaded decide what task-by-task decisions do on nodes
/// of uneven loads: groups of several services in one pass (each moving the nodes it placed on
/// further down the order the next one walks), groups larger than the nodes (the rest ranked by
/// how many of the service's tasks each node holds), constraints, reservations, a drained and a
/// down node.
#[test]
fn groups_walking_uneven_nodes_decide_as_one_task_at_a_time() {
    let mut all = Vec::new();
    let mut existing = Vec::new();
    for i in 0..30 {
        let id = format!("n{i:02}");
        let mut n = with_label(node(&id), "zone", ["a", "b", "c"][i % 3]);
        if i == 11 {
            n = with_availability(n, NodeAvailability::Drain);
        }
        if i == 17 {
            n = with_state(n, NodeState::Down);
        }
        all.push(n);
        for k in 0..(i * 7) % 5 {
            existing.push(running_on(task(&format!("bulk-{i}-{k}"), "bulk"), &id));
        }
        if i % 4 == 1 {
            existing.push(running_on(task(&format!("web-old-{i}"), "web"), &id));
        }
    }
    let mut nodes = infos(all, &existing);
    let cases: Vec<(&str, Vec<Task>)> = vec![
        ("more tasks than nodes", run("web", 0, 75, &|t| t)),
        (
            "services in turn",
            [
                run("web", 0, 9, &|t| t),
                run("db", 0, 12, &|t| t),
                run("web", 9, 9, &|t| t),
                run("api", 0, 40, &|t| t),
                run("db", 12, 4, &|t| t),
            ]
            .concat(),
        ),
        (
            "constrained past its nodes",
            run("zoned", 0, 23, &|t| {
                constrained(t, &["node.labels.zone==b"])
            }),
        ),
        (
            "reserving until full",
            run("big", 0, 70, &|t| reserving(t, CPU, 2 * GIB)),
        ),
        (
            "a host port past the nodes",
            run("edge", 0, 31, &|t| host_port(t, 9090)),
        ),
    ];
    let mut reversed: Vec<NodeInfo> = nodes.iter().rev().cloned().collect();
    for (name, batch) in cases {
        let expected = one_by_one(&nodes, &batch);
        assert_eq!(schedule(&mut nodes, &batch), expected, "{name}");
        assert_eq!(
            schedule(&mut reversed, &batch),
            expected,
            "{name}, nodes reversed"
        );
    }
}
