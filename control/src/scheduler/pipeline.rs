//! The pure scheduling pass: every task through the filters over every node, then spread; a run
//! of tasks of one spec decided as a group, with the same outcome.

use mesh_proto::{Task, TaskState};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::ops::Bound;

use super::filter::{self, FILTERS, Rejection, TaskRequest};
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
/// (a global service's) is checked against that node only. The snapshots are worked on in place,
/// not copied (a pass over thousands of nodes would copy each one it places a task on), and are
/// as they were again when the pass returns: every placement is taken back.
pub fn schedule<'a>(
    nodes: impl IntoIterator<Item = &'a mut NodeInfo>,
    tasks: &[Task],
) -> Vec<Decision> {
    let mut nodes: Vec<&'a mut NodeInfo> = nodes.into_iter().collect();
    let mut placed = Vec::new();
    // Only a task that names its node looks it up by id.
    let index: HashMap<String, usize> = if tasks.iter().any(|t| !t.node_id.is_empty()) {
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id().to_string(), i))
            .collect()
    } else {
        HashMap::new()
    };
    let mut ranks: Option<Vec<usize>> = None;
    let mut order: Option<Order> = None;
    let mut decisions = Vec::with_capacity(tasks.len());
    let mut rest = tasks;
    while let Some(first) = rest.first() {
        // A run of tasks of one service spec that name no node and spread over no preference is
        // decided as a group: the filters run once over every node, then each task takes the
        // least loaded node still eligible (tasks × log nodes, not tasks × nodes).
        let len = if groupable(first) {
            rest.iter().take_while(|t| same_group(first, t)).count()
        } else {
            1
        };
        let (group, after) = rest.split_at(len);
        if len > 1 {
            let ranks = ranks.get_or_insert_with(|| id_ranks(&nodes));
            let order = order.get_or_insert_with(|| Order::new(&nodes, ranks, placed.len()));
            order.take_in(&nodes, &placed);
            decide_group(&mut nodes, ranks, order, group, &mut decisions, &mut placed);
        } else {
            decisions.push(decide(&mut nodes, &index, first, &mut placed));
        }
        rest = after;
    }
    for (i, task) in placed.iter().rev() {
        nodes[*i].remove_task(task);
    }
    decisions
}

/// A task that may be decided in a group: it names no node and has no spread preference.
fn groupable(task: &Task) -> bool {
    let preferences = task
        .spec
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .map_or(0, |p| p.preferences.len());
    task.node_id.is_empty() && preferences == 0
}

/// Whether `task` asks for exactly what `first` asks for (the same service and spec).
fn same_group(first: &Task, task: &Task) -> bool {
    groupable(task)
        && task.service_id == first.service_id
        && task.spec_version == first.spec_version
        && task.spec == first.spec
}

/// Each node's place among the nodes ordered by id, computed once per pass: a group compares
/// nodes by it instead of copying and comparing their ids.
fn id_ranks(nodes: &[&mut NodeInfo]) -> Vec<usize> {
    let mut by_id: Vec<usize> = (0..nodes.len()).collect();
    by_id.sort_by(|&a, &b| nodes[a].id().cmp(nodes[b].id()));
    let mut ranks = vec![0; nodes.len()];
    for (rank, i) in by_id.into_iter().enumerate() {
        ranks[i] = rank;
    }
    ranks
}

/// A node's place in [`Order`]: its tasks meant to keep running, its id's rank, its index.
type OrderKey = (usize, usize, usize);

/// The nodes open to new tasks (ready and active) from the least loaded: by their tasks meant to
/// keep running, then by id. Among the nodes holding none of a service's tasks, the first
/// eligible one in this order is the one [`spread::choose`] picks. Built once per pass, and moved
/// along as the pass places tasks.
struct Order {
    set: BTreeSet<OrderKey>,
    /// Each node's key in `set`; `None` for nodes not open to new tasks.
    keys: Vec<Option<OrderKey>>,
    /// How many of the pass's placements it has taken in.
    taken_in: usize,
}

impl Order {
    /// The order of `nodes` as they are after the pass's first `placed` placements.
    fn new(nodes: &[&mut NodeInfo], ranks: &[usize], placed: usize) -> Self {
        let keys: Vec<Option<OrderKey>> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| filter::open_to_new_tasks(n).then(|| (n.active_tasks(), ranks[i], i)))
            .collect();
        let set = keys.iter().flatten().copied().collect();
        Order {
            set,
            keys,
            taken_in: placed,
        }
    }

    /// Moves each node placed on since the last call to where its count of tasks puts it now.
    fn take_in(&mut self, nodes: &[&mut NodeInfo], placed: &[(usize, Task)]) {
        for &(i, _) in &placed[self.taken_in..] {
            let active = nodes[i].active_tasks();
            let Some(key) = self.keys[i].filter(|k| k.0 != active) else {
                continue;
            };
            self.set.remove(&key);
            let moved = (active, key.1, key.2);
            self.set.insert(moved);
            self.keys[i] = Some(moved);
        }
        self.taken_in = placed.len();
    }
}

/// The order in which a group's tasks take nodes, as [`spread::choose`] picks without
/// preferences: fewest of the service's tasks, then fewest tasks, then the lowest id (its rank);
/// then the node's index. Reversed: the heap yields the least first.
type Candidate = Reverse<(usize, usize, usize, usize)>;

/// Decides `group` (tasks of one spec, see [`same_group`]) as [`decide`] would task by task.
/// Placing a task only ever makes a node less eligible (resources, ports, replicas per node), so
/// a node found ineligible stays so for the rest of the group, and an eligible one is checked
/// again only when it is about to be chosen.
///
/// While some eligible node holds none of the service's tasks, the task goes to the first such
/// node in `order`, found walking on from the last one chosen (which now holds one): at 10,000
/// nodes a group looks at about as many nodes as it has tasks, not at every node. The tasks left
/// once there is none rank the nodes the walk passed over for holding some (and the nodes it
/// chose) in a heap.
fn decide_group(
    nodes: &mut [&mut NodeInfo],
    ranks: &[usize],
    order: &Order,
    group: &[Task],
    decisions: &mut Vec<Decision>,
    placed: &mut Vec<(usize, Task)>,
) {
    let first = &group[0];
    let no_index = HashMap::new();
    let Ok(request) = TaskRequest::new(first) else {
        // Every task of the group fails alike: the per-task path words the reason.
        decisions.extend(group.iter().map(|t| decide(nodes, &no_index, t, placed)));
        return;
    };
    let service = first.service_id.as_str();
    let passes = |n: &NodeInfo| FILTERS.iter().all(|f| f.check(&request, n));

    let mut from = Bound::Unbounded;
    // Nodes the walk passed over holding some of the service's tasks, and the nodes it chose.
    let mut holding = Vec::new();
    let mut walked = 0;
    for task in group {
        let mut found = None;
        for &key in order.set.range((from, Bound::Unbounded)) {
            let node = &*nodes[key.2];
            if node.service_tasks(service) > 0 {
                holding.push(key.2);
            } else if passes(node) {
                found = Some(key);
                break;
            }
        }
        let Some(key) = found else {
            break;
        };
        from = Bound::Excluded(key);
        holding.push(key.2);
        decisions.push(place(nodes, key.2, task, placed));
        walked += 1;
    }
    let rest = &group[walked..];
    if rest.is_empty() {
        return;
    }

    // Every node open to new tasks was walked over: the eligible ones all hold some of the
    // service's tasks now. Built in linear time; each task then pops the least loaded node and
    // pushes it back.
    let key = |n: &NodeInfo, i: usize| -> Candidate {
        Reverse((n.service_tasks(service), n.active_tasks(), ranks[i], i))
    };
    let mut candidates: BinaryHeap<Candidate> = holding
        .into_iter()
        .filter(|&i| passes(nodes[i]))
        .map(|i| key(nodes[i], i))
        .collect();
    for task in rest {
        let chosen = loop {
            let Some(Reverse((_, _, _, i))) = candidates.pop() else {
                break None;
            };
            if passes(nodes[i]) {
                break Some(i);
            }
        };
        let Some(i) = chosen else {
            // No node is left for this task (nor, the nodes unchanged, for the rest): the
            // per-task path gives each its explanation over every node.
            decisions.push(decide(nodes, &no_index, task, placed));
            continue;
        };
        decisions.push(place(nodes, i, task, placed));
        candidates.push(key(nodes[i], i));
    }
}

fn decide(
    nodes: &mut [&mut NodeInfo],
    index: &HashMap<String, usize>,
    task: &Task,
    placed: &mut Vec<(usize, Task)>,
) -> Decision {
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
        match FILTERS.iter().find(|f| !f.check(&request, nodes[i])) {
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

    place(nodes, chosen, task, placed)
}

/// Places `task` on node `i`: accounted for there before the next task is decided, and recorded
/// in `placed` so that the pass can take it back at its end.
fn place(
    nodes: &mut [&mut NodeInfo],
    i: usize,
    task: &Task,
    placed: &mut Vec<(usize, Task)>,
) -> Decision {
    let node = &mut *nodes[i];
    let mut assigned = task.clone();
    assigned.node_id = node.id().to_string();
    assigned.status.get_or_insert_with(Default::default).state = TaskState::Assigned as i32;
    node.add_task(&assigned);
    let decision = Decision::Assign {
        task_id: task.id.clone(),
        node_id: assigned.node_id.clone(),
    };
    placed.push((i, assigned));
    decision
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
