//! Choosing one node among those that passed the filters: placement preferences, then spread.
//!
//! As SwarmKit's decision tree: each `spread=` preference splits the nodes by the label's value
//! (a node without the label falls in the group of the empty value), and the task goes to the group
//! holding the fewest of the service's tasks — counted on every node of the group, eligible or
//! not — among groups with at least one eligible node. Within the last group the node with the
//! fewest tasks of the service wins, then the one with the fewest tasks in all, then the lowest id.

use mesh_proto::Node;
use std::collections::BTreeMap;

use super::node_info::NodeInfo;

const NODE_LABEL_PREFIX: &str = "node.labels.";
const ENGINE_LABEL_PREFIX: &str = "engine.labels.";

/// Picks the node for a task of `service_id`: an index into `nodes` whose `eligible` entry is true,
/// or `None` when no node is eligible. `preferences` are spread descriptors ("node.labels.zone").
pub fn choose<N: AsRef<NodeInfo>>(
    nodes: &[N],
    eligible: &[bool],
    service_id: &str,
    preferences: &[String],
) -> Option<usize> {
    let is_eligible = |i: usize| eligible.get(i).copied().unwrap_or(false);
    let mut scope: Vec<usize> = (0..nodes.len()).collect();
    for descriptor in preferences {
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in &scope {
            groups
                .entry(spread_value(nodes[i].as_ref().node(), descriptor))
                .or_default()
                .push(i);
        }
        let best = groups
            .into_values()
            .filter(|members| members.iter().any(|&i| is_eligible(i)))
            .min_by_key(|members| {
                members
                    .iter()
                    .map(|&i| nodes[i].as_ref().service_tasks(service_id))
                    .sum::<usize>()
            })?;
        scope = best;
    }
    scope
        .into_iter()
        .filter(|&i| is_eligible(i))
        .min_by(|&a, &b| {
            let key = |n: &NodeInfo| (n.service_tasks(service_id), n.active_tasks());
            let (a, b) = (nodes[a].as_ref(), nodes[b].as_ref());
            key(a).cmp(&key(b)).then_with(|| a.id().cmp(b.id()))
        })
}

/// The node's value for a spread descriptor; "" when it lacks the label or the descriptor is not
/// one we know (so an unknown descriptor puts every node in one group and changes nothing).
fn spread_value<'a>(node: &'a Node, descriptor: &str) -> &'a str {
    let label = |prefix: &str| {
        (descriptor.len() > prefix.len()
            && descriptor.is_char_boundary(prefix.len())
            && descriptor[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &descriptor[prefix.len()..])
    };
    let value = if let Some(key) = label(NODE_LABEL_PREFIX) {
        node.spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .and_then(|a| a.labels.get(key))
    } else if let Some(key) = label(ENGINE_LABEL_PREFIX) {
        node.description
            .as_ref()
            .and_then(|d| d.engine.as_ref())
            .and_then(|e| e.labels.get(key))
    } else {
        None
    };
    value.map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::fixtures::{infos, node, running_on, task, with_label};

    #[test]
    fn prefers_fewest_service_tasks_then_fewest_tasks_then_id() {
        let cases = [
            ("empty nodes: lowest id", vec![], "a"),
            (
                "fewest of the service",
                vec![
                    running_on(task("1", "s"), "a"),
                    running_on(task("2", "s"), "b"),
                ],
                "c",
            ),
            (
                "service tie: fewest in all",
                vec![
                    running_on(task("1", "other"), "a"),
                    running_on(task("2", "other"), "c"),
                ],
                "b",
            ),
            (
                "service count beats total",
                vec![
                    running_on(task("1", "s"), "a"),
                    running_on(task("2", "x"), "b"),
                    running_on(task("3", "x"), "b"),
                    running_on(task("4", "s"), "c"),
                ],
                "b",
            ),
        ];
        for (name, tasks, expected) in cases {
            let nodes = infos(vec![node("a"), node("b"), node("c")], &tasks);
            let chosen = choose(&nodes, &[true, true, true], "s", &[]);
            assert_eq!(chosen.map(|i| nodes[i].id()), Some(expected), "{name}");
        }
    }

    #[test]
    fn only_eligible_nodes_are_chosen() {
        let nodes = infos(vec![node("a"), node("b")], &[]);
        assert_eq!(choose(&nodes, &[false, true], "s", &[]), Some(1));
        assert_eq!(choose(&nodes, &[false, false], "s", &[]), None);
    }

    #[test]
    fn preference_spreads_over_label_values_before_nodes() {
        // Groups: "" (nodes without the label, sorting first on ties), "east" (two nodes), "west".
        let zoned = vec![
            with_label(node("e1"), "zone", "east"),
            with_label(node("e2"), "zone", "east"),
            with_label(node("w1"), "zone", "west"),
            node("unlabelled"),
        ];
        let prefs = ["node.labels.zone".to_string()];
        let cases = [
            (
                vec![running_on(task("1", "s"), "e1")],
                vec![true; 4],
                "unlabelled",
            ),
            (
                vec![
                    running_on(task("1", "s"), "e1"),
                    running_on(task("2", "s"), "unlabelled"),
                ],
                vec![true; 4],
                "w1",
            ),
            (
                vec![
                    running_on(task("1", "s"), "w1"),
                    running_on(task("2", "s"), "unlabelled"),
                ],
                vec![true; 4],
                "e1",
            ),
            (
                vec![
                    running_on(task("1", "s"), "e1"),
                    running_on(task("2", "s"), "w1"),
                    running_on(task("3", "s"), "unlabelled"),
                    running_on(task("4", "s"), "unlabelled"),
                ],
                vec![true; 4],
                "e2",
            ),
            // west's only node is ineligible: its group is skipped although it has fewest tasks.
            (
                vec![
                    running_on(task("1", "s"), "e1"),
                    running_on(task("2", "s"), "e2"),
                    running_on(task("3", "s"), "unlabelled"),
                ],
                vec![true, true, false, true],
                "unlabelled",
            ),
        ];
        for (tasks, eligible, expected) in cases {
            let nodes = infos(zoned.clone(), &tasks);
            let chosen = choose(&nodes, &eligible, "s", &prefs);
            assert_eq!(chosen.map(|i| nodes[i].id()), Some(expected));
        }
    }
}
