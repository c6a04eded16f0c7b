//! The pure scheduling pass: every task through the filters over every node, then spread.

use mesh_proto::{Task, TaskState};
use std::collections::{BTreeMap, HashMap};

use super::filter::{FILTERS, Rejection, TaskRequest};
use super::node_info::NodeInfo;
use super::spread;

/// What the scheduler decided for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Assign {
        task_id: String,
        node_id: String,
    },
    /// The task stays pending; `reason` reads like Swarm's, e.g. "no suitable node (1 node not
    /// available for new tasks; insufficient resources on 2 nodes)".
    NoSuitableNode {
        task_id: String,
        reason: String,
    },
}

impl Decision {
    pub fn task_id(&self) -> &str {
        match self {
            Decision::Assign { task_id, .. } | Decision::NoSuitableNode { task_id, .. } => task_id,
        }
    }
}

/// Decides a node for each task, in order. Each placement is accounted for (resources, spread
/// counts, replicas per node) before the next task is decided. A task that already names a node
/// (a global service's) is checked against that node only.
pub fn schedule(nodes: &[NodeInfo], tasks: &[Task]) -> Vec<Decision> {
    let mut nodes = nodes.to_vec();
    let index: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id().to_string(), i))
        .collect();
    tasks
        .iter()
        .map(|task| decide(&mut nodes, &index, task))
        .collect()
}

fn decide(nodes: &mut [NodeInfo], index: &HashMap<String, usize>, task: &Task) -> Decision {
    let no_suitable_node = |explanation: String| Decision::NoSuitableNode {
        task_id: task.id.clone(),
        reason: if explanation.is_empty() {
            "no suitable node".to_string()
        } else {
            format!("no suitable node ({explanation})")
        },
    };
    let request = match TaskRequest::new(task) {
        Ok(request) => request,
        Err(err) => return no_suitable_node(err.to_string()),
    };
    let scope: Vec<usize> = if task.node_id.is_empty() {
        (0..nodes.len()).collect()
    } else {
        index.get(&task.node_id).copied().into_iter().collect()
    };

    let mut eligible = vec![false; nodes.len()];
    let mut rejected: BTreeMap<Rejection, usize> = BTreeMap::new();
    for i in scope {
        match FILTERS.iter().find(|f| !f.check(&request, &nodes[i])) {
            Some(filter) => *rejected.entry(filter.rejection()).or_default() += 1,
            None => eligible[i] = true,
        }
    }

    let preferences: Vec<String> = task
        .spec
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .map(|p| {
            p.preferences
                .iter()
                .map(|pref| pref.spread_descriptor.clone())
                .collect()
        })
        .unwrap_or_default();
    let Some(chosen) = spread::choose(nodes, &eligible, &task.service_id, &preferences) else {
        let explanation: Vec<String> = rejected
            .into_iter()
            .map(|(rejection, count)| rejection.explain(count))
            .collect();
        return no_suitable_node(explanation.join("; "));
    };

    let node = &mut nodes[chosen];
    let mut placed = task.clone();
    placed.node_id = node.id().to_string();
    placed.status.get_or_insert_with(Default::default).state = TaskState::Assigned as i32;
    node.add_task(&placed);
    Decision::Assign {
        task_id: task.id.clone(),
        node_id: node.id().to_string(),
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
