//! The replicated orchestrator: keeps one live task in each of a service's N slots, scaling,
//! restarting (with the restart policy, also when a task's node goes down) and rolling updates.

use foldhash::HashMapExt as _;
use mesh_proto::{Node, Service, Task, TaskState};
use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio::sync::watch;
use tokio::time::Instant;

use super::driver::{self, Reconcile};
use super::plan::{self, Plan};
use super::restart::RestartHistory;
use super::task::{self, SlotKey};
use super::update;
use crate::limits::BATCH_WRITES;
use crate::store::{Event, Read, ReadTx, Store};

/// A slot holding a live task, as scaling sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSlot<'a> {
    pub slot: u64,
    /// The node of its task, once assigned.
    pub node_id: Option<&'a str>,
    /// Whether its task is observed RUNNING.
    pub running: bool,
}

/// Which slots to shut down and which to fill to move towards `replicas` live slots, at most
/// `limit` of either: a large scale is done over several passes, a batch each.
///
/// Scaling down keeps SwarmKit's preference: first unassigned tasks, then tasks on the nodes that
/// run the most tasks of the service, non-running tasks before running ones, higher slots first.
/// Scaling up fills the lowest free slot numbers.
pub fn scale(live: &[LiveSlot<'_>], replicas: u64, limit: usize) -> (Vec<u64>, Vec<u64>) {
    let count = live.len() as u64;
    if count > replicas {
        let mut order: Vec<&LiveSlot<'_>> = live.iter().collect();
        order.sort_by_key(|s| (!s.running, s.slot));
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        let mut ranked: Vec<(usize, &LiveSlot<'_>)> = order
            .into_iter()
            .map(|s| match s.node_id {
                Some(node) => {
                    let n = per_node.entry(node).or_default();
                    *n += 1;
                    (*n, s)
                }
                None => (usize::MAX, s),
            })
            .collect();
        ranked.sort_by_key(|(rank, _)| *rank);
        let remove = ranked
            .iter()
            .skip(replicas as usize)
            .take(limit)
            .map(|(_, s)| s.slot)
            .collect();
        return (remove, Vec::new());
    }
    let wanted = usize::try_from(replicas - count).unwrap_or(usize::MAX);
    if wanted == 0 {
        // Every slot filled (a restart's pass, most often): no set of them to build.
        return (Vec::new(), Vec::new());
    }
    let taken: BTreeSet<u64> = live.iter().map(|s| s.slot).collect();
    let create = (1..)
        .filter(|slot| !taken.contains(slot))
        .take(wanted.min(limit))
        .collect();
    (Vec::new(), create)
}

/// How much of a service a plan is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Every task of the service: the plan also scales it to its replicas.
    Whole,
    /// Only the tasks of some slots, all of each: the plan restarts and tidies those slots and
    /// scales nothing (the slots it was not given are not missing).
    Slots,
}

/// Plans one replicated service against its tasks (`extent` says whether they are all of them);
/// `node_down` tells whether a task's node is lost.
pub fn plan_service(
    service: &Service,
    replicas: u64,
    tasks: Vec<&Task>,
    extent: Extent,
    node_down: &dyn Fn(&Task) -> bool,
    history: &RestartHistory,
    now: i64,
) -> Plan {
    let mut plan = Plan::default();
    let slots = task::group_by_slot(tasks);
    // The live task of each slot: the newest one; any other live task there is stopped.
    let mut live: foldhash::HashMap<u64, &Task> = foldhash::HashMap::with_capacity(slots.count());
    for (key, group) in slots.iter() {
        let Some(newest) = group.iter().rev().copied().find(|t| task::is_live(t)) else {
            continue;
        };
        // A slot-0 task does not belong to a replicated service: its newest stops too.
        let replica = match key {
            SlotKey::Replica(slot) => {
                live.insert(*slot, newest);
                true
            }
            SlotKey::Node(_) => false,
        };
        let older = |t: &&&Task| !(replica && std::ptr::eq(**t, newest));
        for task in group.iter().filter(|t| task::is_live(t)).filter(older) {
            if !update::keep_until_replaced(service.spec_version, newest, task) {
                plan.set_desired(task, TaskState::Shutdown);
            }
        }
    }
    let live_slots: Vec<LiveSlot<'_>> = live
        .iter()
        .map(|(slot, t)| LiveSlot {
            slot: *slot,
            node_id: (!t.node_id.is_empty()).then_some(t.node_id.as_str()),
            running: task::state(t) == TaskState::Running,
        })
        .collect();
    let (remove, create) = match extent {
        Extent::Whole => scale(&live_slots, replicas, BATCH_WRITES),
        Extent::Slots => (Vec::new(), Vec::new()),
    };
    // A large scale is written a batch at a time: the rest after this one's commit.
    if extent == Extent::Whole
        && (live_slots.len() - remove.len() + create.len()) as u64 != replicas
    {
        plan.leave_more();
    }
    for slot in &remove {
        if let Some(task) = live.remove(slot) {
            plan.set_desired(task, TaskState::Shutdown);
        }
    }

    // Restarts, then the rolling update over the slots that stay.
    let mut current: Vec<(SlotKey, Cow<'_, Task>, &[&Task])> = Vec::with_capacity(live.len());
    for (key, group) in slots.iter() {
        let SlotKey::Replica(slot) = key else {
            continue;
        };
        let Some(task) = live.get(slot) else {
            continue;
        };
        let down = node_down(task);
        if update::may_start(task, group, node_down) {
            plan.set_desired(task, TaskState::Running);
        }
        let live = plan.restart_if_needed(service, task, group, down, history, now);
        current.push((key.clone(), live, group));
    }
    plan.advance_update(service, &current, now);

    for slot in create {
        plan.create(task::new_task(service, slot, None));
    }
    plan
}

/// Whether each node is down, by id, worked out from the node table with one stamp
/// ([`Read::nodes_stamp`]) and kept while the nodes stay as they were. Planning a service asks it
/// of the node of each of its tasks: in the table of 10,000 nodes each was a B-tree lookup by a
/// 25-character id, a cache miss per comparison, and half of the planning after a tenth of the
/// nodes were lost.
#[derive(Default)]
struct NodesDown {
    stamp: Option<u64>,
    /// With foldhash: SipHash of the ids was a quarter of the planning that remained.
    down: foldhash::HashMap<String, bool>,
}

impl NodesDown {
    /// Works the nodes out again if they changed since; false when `tx` changes nodes itself
    /// (then they are read from it).
    fn refresh(&mut self, tx: &impl Read) -> bool {
        let Some(stamp) = tx.nodes_stamp() else {
            return false;
        };
        if self.stamp != Some(stamp) {
            self.down = tx
                .iter::<Node>()
                .map(|n| (n.id.clone(), task::is_down(n)))
                .collect();
            self.stamp = Some(stamp);
        }
        true
    }
}

/// Plans the service `id` against the store as `tx` sees it, reading its tasks in place: only the
/// slots in `lost` (those of its tasks on nodes lost since it was last planned) when that is all
/// that can have changed for it, or the whole service.
fn plan_from_store(
    tx: &impl Read,
    id: &str,
    lost: Option<&BTreeSet<u64>>,
    history: &RestartHistory,
    now: i64,
    nodes: &mut NodesDown,
) -> Plan {
    let tasks: Vec<&Task> = tx.tasks_of_service(id);
    let Some(service) = tx.get::<Service>(id) else {
        return Plan::remove_all(&tasks, |t| t.slot != 0);
    };
    let Some(replicas) = task::replicas(&service) else {
        return Plan::default();
    };
    let of_lost: Option<Vec<&Task>> = lost.map(|lost| {
        tasks
            .iter()
            .copied()
            .filter(|t| lost.contains(&t.slot))
            .collect()
    });
    let (tasks, extent) = match of_lost {
        Some(of_lost) if slots_alone_do(&service, &of_lost) => (of_lost, Extent::Slots),
        _ => (tasks, Extent::Whole),
    };
    // A task on a node that is down or no longer exists has been lost.
    let known = nodes.refresh(tx);
    let node_down = |t: &Task| {
        !t.node_id.is_empty()
            && if known {
                nodes.down.get(&t.node_id).copied().unwrap_or(true)
            } else {
                tx.peek::<Node>(&t.node_id).is_none_or(task::is_down)
            }
    };
    plan_service(&service, replicas, tasks, extent, &node_down, history, now)
}

/// Whether planning only some slots of `service`, whose tasks are `tasks`, decides what planning
/// all of it would, given that nothing else changed for it since its last plan: no rolling update
/// is under way (it looks at every slot), and every live task of those slots is of the service's
/// current spec (replacing an outdated one starts an update).
fn slots_alone_do(service: &Service, tasks: &[&Task]) -> bool {
    !update::starts_matter(service)
        && tasks
            .iter()
            .all(|t| !task::is_live(t) || t.spec_version == service.spec_version)
}

/// The services the next flushes plan, each whole or, when all that changed for it since its last
/// plan is that nodes holding some of its tasks were lost, in those tasks' slots alone: losing a
/// tenth of 10,000 nodes, marked down in waves, had each of a thousand services planned whole (a
/// thousand tasks read, grouped and looked at) once per wave, for about a hundred slots to fill.
#[derive(Debug, Default)]
struct Marked {
    services: BTreeSet<String>,
    /// The services of `services` to plan in these slots alone.
    slots: HashMap<String, BTreeSet<u64>>,
}

impl Marked {
    /// Marks `id` to be planned whole.
    fn whole(&mut self, id: String) {
        self.slots.remove(&id);
        self.services.insert(id);
    }

    /// Marks slot `slot` of `id`, whose task's node was lost; a service already marked whole
    /// stays so.
    fn lost(&mut self, id: &str, slot: u64) {
        if let Some(slots) = self.slots.get_mut(id) {
            slots.insert(slot);
        } else if !self.services.contains(id) {
            self.services.insert(id.to_owned());
            self.slots.insert(id.to_owned(), BTreeSet::from([slot]));
        }
    }

    fn is_whole(&self, id: &str) -> bool {
        self.services.contains(id) && !self.slots.contains_key(id)
    }

    /// Takes the next flush's share ([`plan::next_share`]), with the slots of those of its
    /// services to plan in some slots alone (the others are planned whole).
    fn take_share(
        &mut self,
        cursor: &mut Option<String>,
    ) -> (Vec<String>, HashMap<String, BTreeSet<u64>>) {
        let share = plan::next_share(&mut self.services, cursor);
        let slots = share
            .iter()
            .filter_map(|id| self.slots.remove_entry(id))
            .collect();
        (share, slots)
    }
}

/// Reconciles replicated services (see the module doc).
pub struct ReplicatedOrchestrator {
    store: Store,
    history: RestartHistory,
    marked: Marked,
    /// Services whose rolling update waits for a delay or a monitor period.
    timers: plan::Timers,
    /// Nodes whose loss (or return) may call for restarts of the tasks on them.
    dirty_nodes: BTreeSet<String>,
    /// Services some of whose tasks only started running: planned only if that matters to them
    /// ([`update::starts_matter`]), for planning a service reads all its tasks.
    started: BTreeSet<String>,
    /// Services some of whose tasks were only placed, by the node they were placed on: planned
    /// only if that node is lost by then, or the placement matters to the service's update.
    placed: BTreeMap<String, BTreeSet<String>>,
    /// The last service of the last flush's share ([`plan::next_share`]).
    cursor: Option<String>,
    nodes: Mutex<NodesDown>,
    /// The tasks the last flush wrote, by id, until the events of their commits are taken in:
    /// each plan was made against the store as it was when written, so the change its own write
    /// made calls for no new plan of the service. Without this, losing a tenth of the nodes had
    /// each of a thousand services planned again (all its tasks read) after every write of its
    /// replacements. Anyone else's change to the same task still marks the service.
    written: HashMap<String, task::Written>,
}

impl ReplicatedOrchestrator {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            history: RestartHistory::default(),
            marked: Marked::default(),
            timers: plan::Timers::default(),
            dirty_nodes: BTreeSet::new(),
            started: BTreeSet::new(),
            placed: BTreeMap::new(),
            cursor: None,
            nodes: Mutex::default(),
            written: HashMap::new(),
        }
    }

    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        driver::drive(store, shutdown, self).await;
    }
}

impl Reconcile for ReplicatedOrchestrator {
    const NAME: &'static str = "replicated";

    fn mark_all(&mut self, tx: &ReadTx<'_>) {
        self.dirty_nodes.clear();
        self.started.clear();
        self.placed.clear();
        self.written.clear();
        self.marked = Marked::default();
        for service in tx.find::<Service>(|s| task::replicas(s).is_some()) {
            self.marked.whole(service.id);
        }
        // Services gone that left tasks to stop, through the index of tasks by service: a look
        // at every task (and its service's) held the store's lock for 1-2.3 s at a million.
        for service_id in tx.task_service_ids() {
            if tx.peek::<Service>(service_id).is_none()
                && tx
                    .tasks_of_service(service_id)
                    .iter()
                    .any(|t| t.slot != 0 && task::desired(t) < TaskState::Remove)
            {
                self.marked.whole(service_id.to_owned());
            }
        }
    }

    fn observe(&mut self, event: &Event) {
        if let Some(service) = event.as_a::<Service>() {
            if task::replicas(service).is_some() {
                self.marked.whole(service.id.clone());
                if event.is_delete() {
                    self.history.forget_service(&service.id);
                }
            }
        } else if let Some(task) = event.as_a::<Task>() {
            if let Some(written) = self.written.remove(&task.id)
                && !event.is_delete()
                && written.matches(task)
            {
                return;
            }
            let old = event.old_as::<Task>();
            if task.slot != 0 && task::plan_changed(old, task) {
                if task::only_started(old, task) {
                    self.started.insert(task.service_id.clone());
                } else if task::only_placed(old, task) {
                    self.placed
                        .entry(task.node_id.clone())
                        .or_default()
                        .insert(task.service_id.clone());
                } else {
                    self.marked.whole(task.service_id.clone());
                }
            }
        } else if let Some(node) = event.as_a::<Node>() {
            let was_down = event.old_as::<Node>().is_some_and(task::is_down);
            if event.is_delete() || was_down != task::is_down(node) {
                self.dirty_nodes.insert(node.id.clone());
            }
        }
    }

    async fn flush(&mut self, store: &Store) -> Option<Instant> {
        // The last flush's commits were all delivered before it returned, and taken in since.
        self.written.clear();
        let nodes = std::mem::take(&mut self.dirty_nodes);
        let started = std::mem::take(&mut self.started);
        let placed = std::mem::take(&mut self.placed);
        if !(nodes.is_empty() && started.is_empty() && placed.is_empty()) {
            let marked = &self.marked;
            let (whole, lost) = store.view(|tx| {
                // A start or a placement matters only to an update, or to a service gone.
                let matters = |id: &String| {
                    !marked.is_whole(id) && tx.peek::<Service>(id).is_none_or(update::starts_matter)
                };
                // A lost node's tasks call for their slots' restarts; a node back, for a look at
                // each of its services whole.
                let (lost_nodes, back): (Vec<&String>, Vec<&String>) = nodes
                    .iter()
                    .partition(|node| tx.peek::<Node>(node).is_none_or(task::is_down));
                let lost: Vec<(String, u64)> = lost_nodes
                    .into_iter()
                    .flat_map(|node| tx.tasks_on_node(node))
                    .filter(|t| t.slot != 0)
                    .map(|t| (t.service_id.clone(), t.slot))
                    .collect();
                // A placement also matters when its node was lost by now.
                let placed = placed.into_iter().flat_map(|(node, services)| {
                    let lost = tx.peek::<Node>(&node).is_none_or(task::is_down);
                    services.into_iter().filter(move |id| lost || matters(id))
                });
                let whole: Vec<String> = back
                    .into_iter()
                    .flat_map(|node| tx.tasks_on_node(node))
                    .filter(|t| t.slot != 0)
                    .map(|t| t.service_id.clone())
                    .chain(started.into_iter().filter(matters))
                    .chain(placed)
                    .collect();
                (whole, lost)
            });
            for id in whole {
                self.marked.whole(id);
            }
            for (id, slot) in lost {
                self.marked.lost(&id, slot);
            }
        }
        let mut due = BTreeSet::new();
        self.timers.take_due(&mut due);
        for id in due {
            self.marked.whole(id);
        }
        if self.marked.services.is_empty() {
            return self.timers.next_wake();
        }
        let (services, slots) = self.marked.take_share(&mut self.cursor);
        let nodes = &self.nodes;
        let mut reconciled = plan::reconcile_services(
            store,
            Self::NAME,
            &services,
            &mut self.history,
            |tx, id, history, now| {
                let mut nodes = nodes.lock();
                plan_from_store(tx, id, slots.get(id), history, now, &mut nodes)
            },
        )
        .await;
        self.written = std::mem::take(&mut reconciled.written)
            .into_iter()
            .collect();
        reconciled.requeue(&mut self.marked.services, &mut self.timers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreObject as _, try_next};
    use mesh_proto::{ReplicatedService, ServiceSpec, TaskStatus, service_spec};
    use tokio::sync::broadcast;

    fn service(replicas: u64) -> Service {
        Service {
            id: crate::store::new_id(),
            spec: Some(ServiceSpec {
                task: Some(Default::default()),
                mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                    replicas,
                })),
                ..Default::default()
            }),
            spec_version: 1,
            ..Default::default()
        }
    }

    /// A full reconcile marks every replicated service, and each service gone that left a task
    /// of a slot still to stop; not one whose tasks are all being removed, nor a global one's.
    #[tokio::test]
    async fn a_full_reconcile_marks_the_services_and_those_gone_with_tasks_left() {
        let store = crate::store::direct_store();
        let present = service(1);
        let mut global = service(1);
        global.spec.as_mut().unwrap().mode = Some(service_spec::Mode::Global(Default::default()));
        let task_of = |id: &str, service: &str, slot: u64, desired: TaskState| Task {
            id: id.into(),
            service_id: service.into(),
            slot,
            desired_state: desired as i32,
            ..Default::default()
        };
        let tasks = [
            task_of("t1", &present.id, 1, TaskState::Running),
            task_of("t2", "gone", 1, TaskState::Running),
            task_of("t3", "gone", 2, TaskState::Remove),
            task_of("t4", "removed", 1, TaskState::Remove),
            task_of("t5", "slotless", 0, TaskState::Running),
        ];
        store
            .update(|tx| {
                tx.create(present.clone())?;
                tx.create(global)?;
                tasks.into_iter().try_for_each(|t| tx.create(t))
            })
            .await
            .unwrap();
        let mut orchestrator = ReplicatedOrchestrator::new(store.clone());
        store.view(|tx| orchestrator.mark_all(tx));
        let marked: Vec<&str> = orchestrator
            .marked
            .services
            .iter()
            .map(String::as_str)
            .collect();
        let mut want = vec![present.id.as_str(), "gone"];
        want.sort();
        assert_eq!(marked, want);
    }

    /// Takes in every event delivered so far, as the driver does between two flushes.
    fn take_in(orchestrator: &mut ReplicatedOrchestrator, events: &mut broadcast::Receiver<Event>) {
        while let Some(event) = try_next(events) {
            orchestrator.observe(&event.expect("no lag"));
        }
    }

    /// The commits of a flush's own writes leave its services clean; anyone else's change to one
    /// of the tasks it wrote marks the service again, and the plan that follows is not skipped.
    #[tokio::test]
    async fn its_own_writes_mark_nothing_again() {
        let store = crate::store::direct_store();
        let svc = service(3);
        let id = svc.id.clone();
        store.update(|tx| tx.create(svc)).await.unwrap();
        let mut orchestrator = ReplicatedOrchestrator::new(store.clone());
        let ((), mut events) = store
            .memory()
            .view_and_watch(|tx| orchestrator.mark_all(tx));

        assert_eq!(orchestrator.flush(&store).await, None);
        assert_eq!(orchestrator.written.len(), 3, "three tasks created");
        take_in(&mut orchestrator, &mut events);
        assert!(
            orchestrator.marked.services.is_empty(),
            "{:?}",
            orchestrator.marked
        );
        assert!(
            orchestrator.written.is_empty(),
            "each write's event taken in"
        );

        // Its task fails (as an agent reports it): the service is planned again and restarts it.
        let failed = store.view(|tx| tx.tasks_of_service(&id)[0].clone());
        store
            .update(|tx| {
                let mut task = failed.clone();
                task.status = Some(TaskStatus {
                    state: TaskState::Failed as i32,
                    ..Default::default()
                });
                tx.update(task)
            })
            .await
            .unwrap();
        take_in(&mut orchestrator, &mut events);
        assert_eq!(orchestrator.marked.services, BTreeSet::from([id.clone()]));
        orchestrator.flush(&store).await;
        let (live, shut) = store.view(|tx| {
            let tasks = tx.tasks_of_service(&id);
            let live = tasks.iter().filter(|t| task::is_live(t)).count();
            let shut = tasks
                .iter()
                .filter(|t| task::desired(t) == TaskState::Shutdown)
                .count();
            (live, shut)
        });
        assert_eq!((live, shut), (3, 1), "the failed task replaced");
        take_in(&mut orchestrator, &mut events);
        assert!(
            orchestrator.marked.services.is_empty(),
            "{:?}",
            orchestrator.marked
        );
    }

    /// A change to a task the last flush wrote, seen before the write's own commit and unlike
    /// it, marks the service: only the write as written is passed over.
    #[test]
    fn a_change_unlike_its_write_marks_the_service() {
        let mut orchestrator = ReplicatedOrchestrator::new(crate::store::direct_store());
        let task = Task {
            id: "t1".into(),
            service_id: "s1".into(),
            slot: 1,
            desired_state: TaskState::Shutdown as i32,
            ..Default::default()
        };
        let running = Task {
            desired_state: TaskState::Running as i32,
            ..task.clone()
        };
        let failed = Task {
            status: Some(TaskStatus {
                state: TaskState::Failed as i32,
                ..Default::default()
            }),
            ..running.clone()
        };
        let updated = |old: &Task, new: &Task| Event::Updated {
            old: old.clone().into_object(),
            new: new.clone().into_object(),
        };
        let written = || HashMap::from([(task.id.clone(), task::Written::of(&task))]);

        // (name, the event, whether it marks the service)
        let cases = [
            ("its own write", updated(&running, &task), false),
            ("failed before the write", updated(&running, &failed), true),
            ("deleted", Event::Deleted(task.clone().into_object()), true),
        ];
        for (name, event, marks) in cases {
            orchestrator.marked = Marked::default();
            orchestrator.written = written();
            orchestrator.observe(&event);
            assert_eq!(orchestrator.marked.services.contains("s1"), marks, "{name}");
            assert!(
                orchestrator.written.is_empty(),
                "{name}: the entry is used once"
            );
        }
        // With no write recorded, the same change is anyone's.
        orchestrator.marked = Marked::default();
        orchestrator.observe(&updated(&running, &task));
        assert!(orchestrator.marked.services.contains("s1"));
    }

    /// A mark for the whole service wins over marks of its lost slots, before or after them,
    /// until the share that plans it is taken; slots marked again add up.
    #[test]
    fn a_whole_mark_wins_over_lost_slots() {
        let mut marked = Marked::default();
        marked.lost("slots", 1);
        marked.lost("slots", 3);
        marked.lost("then-whole", 1);
        marked.whole("then-whole".into());
        marked.whole("whole-first".into());
        marked.lost("whole-first", 2);
        assert!(!marked.is_whole("slots"));
        assert!(marked.is_whole("then-whole") && marked.is_whole("whole-first"));

        let (share, slots) = marked.take_share(&mut None);
        assert_eq!(share, ["slots", "then-whole", "whole-first"]);
        assert_eq!(
            slots,
            HashMap::from([("slots".to_string(), BTreeSet::from([1, 3]))])
        );
        assert!(marked.services.is_empty() && marked.slots.is_empty());
        // Taken, a service marked for a slot again starts a new mark.
        marked.lost("slots", 2);
        let (_, slots) = marked.take_share(&mut None);
        assert_eq!(slots["slots"], BTreeSet::from([2]));
    }

    /// After nodes are lost, planning each service in the slots of the lost nodes' tasks alone
    /// decides what planning it whole does: the same restarts (attempts counted from each slot's
    /// own earlier tasks), none where the policy says no, and no slot created for those it was
    /// not given. A service mid-update, or with outdated tasks in those slots, is planned whole.
    #[tokio::test]
    async fn a_plan_of_the_lost_slots_decides_as_a_whole_one() {
        use mesh_proto::{
            NodeState, NodeStatus, RestartCondition, RestartPolicy, UpdateState, UpdateStatus,
        };
        let store = crate::store::direct_store();
        let with_policy = |condition: RestartCondition, max_attempts: u64| {
            let mut service = service(7);
            let spec = service.spec.as_mut().unwrap().task.as_mut().unwrap();
            spec.restart = Some(RestartPolicy {
                condition: condition as i32,
                max_attempts,
                ..Default::default()
            });
            service
        };
        let with_update = |state: UpdateState, spec_version: u64| {
            let mut service = service(7);
            service.spec_version = spec_version;
            service.update_status = Some(UpdateStatus {
                state: state as i32,
                ..Default::default()
            });
            service
        };
        // (name, the service, the version of its tasks, whether its lost slots alone decide)
        let services = [
            ("any", service(7), 1, true),
            ("once", with_policy(RestartCondition::Any, 1), 1, true),
            ("never", with_policy(RestartCondition::None, 0), 1, true),
            (
                "paused, outdated",
                with_update(UpdateState::Paused, 2),
                1,
                false,
            ),
            ("updating", with_update(UpdateState::Updating, 1), 1, false),
        ];
        let node = |i: u64, state: NodeState| Node {
            id: format!("n{i}"),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let task = |service: &Service, version: u64, slot: u64, failed: bool| {
            let mut task = task::new_task(service, slot, None);
            task.spec_version = version;
            task.node_id = format!("n{}", slot % 6);
            let status = task.status.as_mut().unwrap();
            status.state = if failed {
                task.desired_state = TaskState::Shutdown as i32;
                TaskState::Failed as i32
            } else {
                TaskState::Running as i32
            };
            task
        };
        // Slots 1 and 4 were restarted once already: their failed task is older.
        store
            .update(|tx| {
                (0..6).try_for_each(|i| tx.create(node(i, NodeState::Ready)))?;
                services.iter().try_for_each(|(_, service, version, _)| {
                    tx.create(service.clone())?;
                    [1, 4]
                        .into_iter()
                        .try_for_each(|slot| tx.create(task(service, *version, slot, true)))
                })
            })
            .await
            .unwrap();
        store
            .update(|tx| {
                services.iter().try_for_each(|(_, service, version, _)| {
                    (1..=7).try_for_each(|slot| tx.create(task(service, *version, slot, false)))
                })
            })
            .await
            .unwrap();
        let history = RestartHistory::default();
        let now = crate::store::now_nanos();
        let mut nodes = NodesDown::default();
        let settled = store.view(|tx| {
            plan_from_store(tx, &services[0].1.id, None, &history, now, &mut nodes).describe()
        });
        assert_eq!(
            settled.len(),
            1,
            "nothing to do before the loss: {settled:?}"
        );

        // n1 and n2 lost: slots 1, 2, 7 (and the failed task's 1).
        store
            .update(|tx| {
                (1..3).try_for_each(|i| {
                    let mut down = tx.get::<Node>(&format!("n{i}")).expect("created");
                    down.status = node(i, NodeState::Down).status;
                    tx.update(down)
                })
            })
            .await
            .unwrap();
        store.view(|tx| {
            for (name, service, _, alone) in &services {
                let lost: BTreeSet<u64> = ["n1", "n2"]
                    .iter()
                    .flat_map(|n| tx.tasks_on_node(n))
                    .filter(|t| t.service_id == service.id)
                    .map(|t| t.slot)
                    .collect();
                assert_eq!(lost, BTreeSet::from([1, 2, 7]), "{name}");
                let mut tasks = tx.tasks_of_service(&service.id);
                tasks.retain(|t| lost.contains(&t.slot));
                assert_eq!(slots_alone_do(service, &tasks), *alone, "{name}");
                let mut plan = |lost| {
                    plan_from_store(tx, &service.id, lost, &history, now, &mut nodes).describe()
                };
                let whole = plan(None);
                assert_eq!(plan(Some(&lost)), whole, "{name}");
                let restarts = whole.iter().filter(|l| l.contains("new in slot")).count();
                // Slot 1 of "once" used its one restart; "never" restarts nothing.
                let want = match *name {
                    "once" => 2,
                    "never" => 0,
                    _ => 3,
                };
                assert_eq!(restarts, want, "{name}: {whole:#?}");
            }
        });
    }

    fn slot(slot: u64, node: Option<&str>, running: bool) -> LiveSlot<'_> {
        LiveSlot {
            slot,
            node_id: node,
            running,
        }
    }

    #[test]
    fn scale_plans() {
        // (name, live slots, replicas, slots to shut down, slots to create)
        type Case = (
            &'static str,
            Vec<LiveSlot<'static>>,
            u64,
            Vec<u64>,
            Vec<u64>,
        );
        let cases: Vec<Case> = vec![
            ("create from nothing", vec![], 3, vec![], vec![1, 2, 3]),
            ("steady", vec![slot(1, None, false)], 1, vec![], vec![]),
            (
                "fill the lowest gaps",
                vec![slot(2, Some("a"), true), slot(5, Some("a"), true)],
                5,
                vec![],
                vec![1, 3, 4],
            ),
            (
                "down to one: highest slots on an even spread",
                vec![
                    slot(1, Some("a"), true),
                    slot(2, Some("b"), true),
                    slot(3, Some("c"), true),
                ],
                1,
                vec![2, 3],
                vec![],
            ),
            (
                "the busiest node loses first",
                vec![
                    slot(1, Some("a"), true),
                    slot(2, Some("b"), true),
                    slot(3, Some("b"), true),
                ],
                2,
                vec![3],
                vec![],
            ),
            (
                "non-running before running",
                vec![slot(1, Some("a"), false), slot(2, Some("b"), true)],
                1,
                vec![1],
                vec![],
            ),
            (
                "unassigned first",
                vec![
                    slot(1, Some("a"), true),
                    slot(2, Some("a"), true),
                    slot(3, None, false),
                ],
                2,
                vec![3],
                vec![],
            ),
            (
                "to zero",
                vec![slot(1, Some("a"), true), slot(4, None, false)],
                0,
                vec![1, 4],
                vec![],
            ),
        ];
        for (name, live, replicas, remove, create) in cases {
            let (mut got_remove, got_create) = scale(&live, replicas, usize::MAX);
            got_remove.sort_unstable();
            assert_eq!((got_remove, got_create), (remove, create), "{name}");
        }
    }
}
