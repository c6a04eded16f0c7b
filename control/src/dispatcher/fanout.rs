//! One watch of the store for all of the leader's agent sessions.
//!
//! Every applied change used to reach every session twice (its session stream and its
//! assignments stream each watched the whole store), so a commit cost O(nodes) however few nodes
//! it concerned, and each session rebuilt its message from every node on any node's change:
//! quadratic when a thousand nodes join. Here one router task watches the store instead:
//!
//! - Task changes are gathered per node (the task's node, and its previous node when it moved) and
//!   handed, once their entry has committed, to the assignments streams of those nodes only, as
//!   one [`NodeChanges`] per node and entry. A stream that falls behind is dropped (its channel
//!   closes) and re-reads its complete set, as one that lagged the store's watch did.
//! - What every session message shares ([`SessionInputs`]: the managers, the CA rotation, the
//!   gossip keys) is computed once when a commit touched a manager node or the cluster, and
//!   published to the sessions through a watch channel.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mesh_proto::{Cluster, GossipKey, Node, NodeRole, Task, WeightedPeer};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};

use crate::store::{Event, Read, ReadTx, Store};

/// Entries a stream may fall behind the router before it is dropped and re-reads its set.
const STREAM_BACKLOG: usize = 256;

/// The task changes of one committed entry that concern one node, in the order applied.
#[derive(Debug)]
pub(super) struct NodeChanges {
    /// The entry's log index: a stream skips entries its complete set already holds.
    pub index: u64,
    pub events: Vec<Event>,
}

/// What every session message is built from besides the session's own ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct SessionInputs {
    /// The managers with a known address, as agents reach them.
    pub managers: Vec<WeightedPeer>,
    /// Every node whose role is manager (the role a session message tells its node).
    pub manager_ids: BTreeSet<String>,
    pub ca_rotation: u64,
    pub gossip_keys: Vec<GossipKey>,
}

impl SessionInputs {
    pub(super) fn read(tx: &ReadTx<'_>) -> Self {
        let mut inputs = SessionInputs::default();
        for node in tx
            .iter::<Node>()
            .filter(|n| n.role == NodeRole::Manager as i32)
        {
            inputs.manager_ids.insert(node.id.clone());
            if let Some(status) = &node.manager_status {
                inputs.managers.push(WeightedPeer {
                    node_id: node.id.clone(),
                    addr: status.addr.clone(),
                });
            }
        }
        if let Some(cluster) = tx.iter::<Cluster>().next() {
            inputs.ca_rotation = cluster.root_ca.as_ref().map_or(0, |r| r.rotation);
            inputs.gossip_keys = cluster.gossip_keys.clone();
        }
        inputs
    }

    /// The role the cluster gives `node_id`.
    pub(super) fn role(&self, node_id: &str) -> NodeRole {
        if self.manager_ids.contains(node_id) {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        }
    }
}

struct Subscriber {
    id: u64,
    changes: mpsc::Sender<NodeChanges>,
}

/// The streams waiting for their nodes' task changes, and the shared session inputs.
pub(super) struct Fanout {
    streams: Mutex<HashMap<String, Vec<Subscriber>>>,
    next_id: AtomicU64,
    /// False while no router runs: a stream that subscribes then would wait for nothing.
    routing: watch::Sender<bool>,
    inputs: watch::Sender<Arc<SessionInputs>>,
}

impl Default for Fanout {
    fn default() -> Self {
        Self {
            streams: Mutex::default(),
            next_id: AtomicU64::new(0),
            routing: watch::channel(false).0,
            inputs: watch::channel(Arc::default()).0,
        }
    }
}

impl Fanout {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Subscriber>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A channel of `node_id`'s task changes from the next entry the router hands out on; `None`
    /// when no router runs. Subscribe before reading the complete set, and skip the entries it
    /// already holds ([`NodeChanges::index`]).
    pub(super) fn subscribe(&self, node_id: &str) -> Option<mpsc::Receiver<NodeChanges>> {
        let mut streams = self.lock();
        if !*self.routing.borrow() {
            return None;
        }
        let (changes, rx) = mpsc::channel(STREAM_BACKLOG);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        streams
            .entry(node_id.to_string())
            .or_default()
            .push(Subscriber { id, changes });
        Some(rx)
    }

    /// Returns once a router runs (at once if one does).
    pub(super) async fn wait_routing(&self) {
        let _ = self.routing.subscribe().wait_for(|r| *r).await;
    }

    pub(super) fn inputs(&self) -> watch::Receiver<Arc<SessionInputs>> {
        self.inputs.subscribe()
    }

    /// Drops every stream's channel: each re-reads its complete set (or ends, when the router
    /// is gone).
    fn drop_all(&self) {
        self.lock().clear();
    }

    /// Hands each node's changes of the entry at `index` to its streams; a stream whose backlog
    /// is full is dropped.
    fn deliver(&self, index: u64, pending: &mut HashMap<String, Vec<Event>>) {
        let mut streams = self.lock();
        for (node_id, events) in pending.drain() {
            let Some(subscribers) = streams.get_mut(&node_id) else {
                continue;
            };
            let last = subscribers.iter().map(|s| s.id).max();
            let mut events = Some(events);
            subscribers.retain(|s| {
                // The last subscriber takes the events, the others a copy (a node has one
                // stream but for a moment when its agent reconnects).
                let events = if Some(s.id) == last {
                    events.take().unwrap_or_default()
                } else {
                    events.clone().unwrap_or_default()
                };
                s.changes.try_send(NodeChanges { index, events }).is_ok()
            });
            if subscribers.is_empty() {
                streams.remove(&node_id);
            }
        }
    }

    fn publish_inputs(&self, inputs: SessionInputs) {
        self.inputs.send_if_modified(|current| {
            if **current == inputs {
                return false;
            }
            *current = Arc::new(inputs);
            true
        });
    }
}

/// Routes the store's changes to the sessions until `shutdown` turns true or the store closes.
pub(super) async fn route(store: Store, fanout: Arc<Fanout>, mut shutdown: watch::Receiver<bool>) {
    let (inputs, mut events) = store.memory().view_and_watch(SessionInputs::read);
    fanout.publish_inputs(inputs);
    fanout.routing.send_replace(true);
    let mut pending: HashMap<String, Vec<Event>> = HashMap::new();
    let mut inputs_changed = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => if *shutdown.borrow() { break } else { continue },
            event = events.recv() => event,
        };
        match event {
            Ok(Event::Commit { index }) => {
                fanout.deliver(index, &mut pending);
                if std::mem::take(&mut inputs_changed) {
                    fanout.publish_inputs(store.view(SessionInputs::read));
                }
            }
            Ok(Event::Reset) | Err(RecvError::Lagged(_)) => {
                tracing::debug!("dispatcher fell behind the store or it was reset: resyncing");
                pending.clear();
                fanout.drop_all();
                fanout.publish_inputs(store.view(SessionInputs::read));
            }
            Err(RecvError::Closed) => break,
            Ok(event) => {
                if let Some(task) = event.as_a::<Task>() {
                    let old = event.old_as::<Task>().map(|t| t.node_id.as_str());
                    if let Some(old) = old.filter(|o| !o.is_empty() && *o != task.node_id) {
                        pending
                            .entry(old.to_string())
                            .or_default()
                            .push(event.clone());
                    }
                    if !task.node_id.is_empty() {
                        pending.entry(task.node_id.clone()).or_default().push(event);
                    }
                } else if let Some(node) = event.as_a::<Node>() {
                    let manager = |n: &Node| n.role == NodeRole::Manager as i32;
                    inputs_changed |= manager(node) || event.old_as::<Node>().is_some_and(manager);
                } else if event.as_a::<Cluster>().is_some() {
                    inputs_changed = true;
                }
            }
        }
    }
    fanout.routing.send_replace(false);
    fanout.drop_all();
}

#[cfg(test)]
#[path = "fanout_tests.rs"]
pub(super) mod tests;
