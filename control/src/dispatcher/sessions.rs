//! Agent sessions and their heartbeats, held in memory on the leader.

use mesh_proto::{Cluster, Node, NodeState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use super::Inner;
use crate::store::{Read, now_nanos};

struct Session {
    node_id: String,
    last_heartbeat: Instant,
    /// The grace in force when the agent last heard the period (at opening or its last
    /// heartbeat): an agent told 5 s is not held to a 1 s period before it has heard of it.
    allowance: Duration,
    /// What the leader's stalls have been credited since the last heartbeat (at most a grace).
    credited: Duration,
    /// Flipped to true when the session ends; every stream of the session watches it.
    closed: watch::Sender<bool>,
}

/// The live sessions by id, and each node's one session: opening a session and asking whether
/// a node has one cost the same with ten thousand nodes as with three.
#[derive(Default)]
struct Table {
    by_id: HashMap<String, Session>,
    by_node: HashMap<String, String>,
}

#[derive(Default)]
pub(super) struct Sessions {
    table: Mutex<Table>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `node_id`, ending any earlier session of the same node; `grace` is
    /// the one in force now.
    pub(super) fn open(
        &self,
        session_id: &str,
        node_id: &str,
        grace: Duration,
    ) -> watch::Receiver<bool> {
        let mut table = self.lock();
        if let Some(earlier) = table
            .by_node
            .insert(node_id.to_string(), session_id.to_string())
            && let Some(s) = table.by_id.remove(&earlier)
        {
            s.closed.send_replace(true);
        }
        let (closed, rx) = watch::channel(false);
        let session = Session {
            node_id: node_id.to_string(),
            last_heartbeat: Instant::now(),
            allowance: grace,
            credited: Duration::ZERO,
            closed,
        };
        if let Some(replaced) = table.by_id.insert(session_id.to_string(), session) {
            // The same session id again (ids are random: only by a caller's mistake).
            replaced.closed.send_replace(true);
            if replaced.node_id != node_id {
                table.by_node.remove(&replaced.node_id);
            }
        }
        rx
    }

    /// The node of a live session, and a receiver that turns true when the session ends.
    pub(super) fn get(&self, session_id: &str) -> Option<(String, watch::Receiver<bool>)> {
        self.lock()
            .by_id
            .get(session_id)
            .map(|s| (s.node_id.clone(), s.closed.subscribe()))
    }

    /// Records a heartbeat; the answer tells the agent the period behind `grace`.
    pub(super) fn heartbeat(&self, session_id: &str, grace: Duration) -> bool {
        match self.lock().by_id.get_mut(session_id) {
            Some(s) => {
                s.last_heartbeat = Instant::now();
                s.allowance = grace;
                s.credited = Duration::ZERO;
                true
            }
            None => false,
        }
    }

    /// Ends and forgets the sessions whose last heartbeat is older than `grace` (or than the
    /// longer grace they last heard of); returns their nodes.
    fn expire(&self, grace: Duration) -> Vec<String> {
        let mut table = self.lock();
        let mut expired = Vec::new();
        table.by_id.retain(|id, s| {
            let alive = s.last_heartbeat.elapsed() <= grace.max(s.allowance);
            if !alive {
                s.closed.send_replace(true);
                expired.push((s.node_id.clone(), id.clone()));
            }
            alive
        });
        for (node, id) in &expired {
            if table.by_node.get(node) == Some(id) {
                table.by_node.remove(node);
            }
        }
        expired.into_iter().map(|(node, _)| node).collect()
    }

    /// Credits every session with `stalled`, time in which the monitor could not run: the
    /// leader was held up (its store locked while a snapshot was taken, its runtime busy), so
    /// the heartbeats sent meanwhile were not heard either, and the nodes are not to blame. A
    /// session is credited at most `cap` between two heartbeats: a node that is really gone is
    /// still found out, at most `cap` later, however often the leader stalls.
    fn forgive(&self, stalled: Duration, cap: Duration) {
        let now = Instant::now();
        for s in self.lock().by_id.values_mut() {
            let credit = stalled.min(cap.saturating_sub(s.credited));
            s.credited += credit;
            s.last_heartbeat = (s.last_heartbeat + credit).min(now);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub(super) fn has_node(&self, node_id: &str) -> bool {
        self.lock().by_node.contains_key(node_id)
    }

    pub(super) fn clear(&self) {
        let mut table = self.lock();
        table.by_node.clear();
        for (_, s) in table.by_id.drain() {
            s.closed.send_replace(true);
        }
    }
}

/// How often the heartbeat monitor looks for sessions gone silent.
const MONITOR_TICK: Duration = Duration::from_millis(200);
/// A gap between two looks longer than this is the leader's stall, not the nodes' silence: at
/// 5,000 nodes a snapshot's 4 s pause expired thousands of live sessions at once.
const MONITOR_STALL: Duration = Duration::from_secs(1);

/// How long a node that was READY under the previous leader has, once this one starts, to find
/// it: agents notice a silent manager within two heartbeat periods, then may try a manager that
/// cannot be reached (a connection attempt is bounded at 3 s) before they land here.
pub(super) fn takeover_grace(period: Duration, grace: Duration) -> Duration {
    grace.max(period * 3 + Duration::from_secs(5))
}

/// What a restart of an agent's meshd costs at most between two heartbeats: about a second for
/// systemd to start it again, plus its reconnection, with room to spare.
const RESTART_ALLOWANCE: Duration = Duration::from_millis(2500);

/// How long a node may go without a heartbeat before it is marked down: `multiplier` periods,
/// but at least one period and a [`RESTART_ALLOWANCE`], so that a node whose meshd restarts is
/// not taken for dead with a short period. With the default 5 s period both are 7.5 s: failover
/// is no slower than before.
pub(super) fn heartbeat_grace(period: Duration, multiplier: f64) -> Duration {
    period.mul_f64(multiplier).max(period + RESTART_ALLOWANCE)
}

/// Marks nodes down when their heartbeats stop. Nodes that are READY in the store but have no
/// session when this leader starts get [`takeover_grace`] to register.
pub(super) async fn monitor_heartbeats(inner: Arc<Inner>) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(MONITOR_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checked = Instant::now();
    loop {
        tick.tick().await;
        // The period follows the cluster's spec (`swarm init --dispatcher-heartbeat`, which a
        // first leader starts before it has written).
        let wanted = inner.store.view(|tx| {
            tx.list::<Cluster>()
                .into_iter()
                .next()
                .and_then(|c| c.spec)
                .map(|s| s.dispatcher_heartbeat_period_ns)
                .filter(|ns| *ns > 0)
        });
        if let Some(ns) = wanted {
            let period = Duration::from_nanos(ns.unsigned_abs());
            if inner.config.borrow().heartbeat_period != period {
                inner.config.send_modify(|c| c.heartbeat_period = period);
                tracing::info!(period = ?period, "dispatcher heartbeat period set");
            }
        }
        let config = inner.config.borrow().clone();
        let grace = heartbeat_grace(config.heartbeat_period, config.grace_multiplier);
        // Measured after the monitor's own read of the store, which a held-up store delays too.
        let gap = checked.elapsed();
        checked = Instant::now();
        if gap > MONITOR_STALL {
            tracing::info!(stalled = ?gap, "heartbeat monitor held up: sessions credited");
            inner.sessions.forgive(gap - MONITOR_TICK, grace);
        }
        let mut down = inner.sessions.expire(grace);
        config.heartbeat_misses.inc_by(down.len() as u64);
        if started.elapsed() > takeover_grace(config.heartbeat_period, grace) {
            // Read in place, every tick: no copy of every node, one lookup per node.
            let unregistered = inner.store.view(|tx| {
                tx.iter::<Node>()
                    .filter(|n| node_state(n) == NodeState::Ready)
                    .filter(|n| !inner.sessions.has_node(&n.id))
                    .map(|n| n.id.clone())
                    .collect::<Vec<_>>()
            });
            down.extend(unregistered);
        }
        if down.is_empty() {
            continue;
        }
        let result = inner
            .store
            .update(|tx| {
                for id in &down {
                    let Some(mut node) = tx.get::<Node>(id) else {
                        continue;
                    };
                    if inner.sessions.has_node(id) || node_state(&node) == NodeState::Down {
                        continue;
                    }
                    let status = node.status.get_or_insert_with(Default::default);
                    status.state = NodeState::Down as i32;
                    status.message = "heartbeat failure".into();
                    tracing::info!(node.id = %id, at = now_nanos(), "node marked down");
                    tx.update(node)?;
                }
                Ok(())
            })
            .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not mark nodes down");
        }
    }
}

pub(super) fn node_state(node: &Node) -> NodeState {
    node.status
        .as_ref()
        .and_then(|s| NodeState::try_from(s.state).ok())
        .unwrap_or(NodeState::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node has one session: a second ends the first, and expiring a session forgets its node
    /// only while that session is the node's.
    #[test]
    fn a_node_has_one_session_and_loses_it_with_its_heartbeats() {
        let sessions = Sessions::default();
        // Opened with no allowance of their own: the grace passed to `expire` decides.
        let grace = Duration::ZERO;
        let first = sessions.open("s1", "n1", grace);
        let other = sessions.open("s2", "n2", grace);
        assert!(sessions.has_node("n1") && sessions.has_node("n2"));
        assert!(!sessions.has_node("n3"));
        assert_eq!(sessions.len(), 2);

        let second = sessions.open("s3", "n1", grace);
        assert!(*first.borrow(), "the node's earlier session ended");
        assert!(!*second.borrow() && !*other.borrow());
        assert!(sessions.get("s1").is_none());
        assert_eq!(
            sessions.get("s3").map(|(node, _)| node).as_deref(),
            Some("n1")
        );
        assert_eq!(sessions.len(), 2);

        // Nothing is stale under a long grace.
        assert!(sessions.expire(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(5));
        assert!(sessions.heartbeat("s3", Duration::ZERO));
        assert!(
            !sessions.heartbeat("s1", Duration::ZERO),
            "an ended session has no heartbeat"
        );
        let mut expired = sessions.expire(Duration::from_millis(2));
        expired.sort();
        assert_eq!(expired, ["n2"], "n1's last heartbeat is fresh");
        assert!(*other.borrow());
        assert!(sessions.has_node("n1") && !sessions.has_node("n2"));

        sessions.clear();
        assert!(*second.borrow());
        assert_eq!(sessions.len(), 0);
        assert!(!sessions.has_node("n1"));
    }

    #[test]
    fn an_agent_is_held_to_the_period_it_was_told() {
        let sessions = Sessions::default();
        let _a = sessions.open("a", "n1", Duration::from_secs(60));
        let _b = sessions.open("b", "n2", Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
        // The period shrank: n1, told the long one, keeps it until its next heartbeat.
        assert_eq!(sessions.expire(Duration::from_millis(5)), ["n2"]);
        assert!(sessions.heartbeat("a", Duration::ZERO));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(sessions.expire(Duration::from_millis(5)), ["n1"]);
        assert!(!sessions.has_node("n1"));
    }

    #[test]
    fn a_stall_of_the_leader_is_not_held_against_the_nodes() {
        let ms = Duration::from_millis;
        let sessions = Sessions::default();
        let _a = sessions.open("a", "n1", Duration::ZERO);
        let _b = sessions.open("b", "n2", Duration::ZERO);
        std::thread::sleep(ms(300));
        // The monitor was held up 300 ms: nobody was heard meanwhile, nobody is blamed.
        sessions.forgive(ms(300), Duration::from_secs(60));
        assert!(sessions.expire(ms(150)).is_empty());
        // Silence after the stall counts again.
        std::thread::sleep(ms(300));
        assert!(sessions.heartbeat("a", Duration::ZERO));
        assert_eq!(sessions.expire(ms(150)), ["n2"]);
        // A credit never puts a heartbeat in the future.
        sessions.forgive(Duration::from_secs(3600), Duration::from_secs(7200));
        std::thread::sleep(ms(300));
        assert_eq!(sessions.expire(ms(150)), ["n1"]);

        // Between two heartbeats the credits add up to the cap at most: stall after stall, a
        // silent node is still found out.
        let _c = sessions.open("c", "n3", Duration::ZERO);
        let cap = ms(250);
        std::thread::sleep(ms(300));
        sessions.forgive(ms(200), cap);
        assert!(sessions.expire(ms(150)).is_empty());
        std::thread::sleep(ms(300));
        sessions.forgive(ms(500), cap);
        assert_eq!(sessions.expire(ms(150)), ["n3"]);
    }

    #[test]
    fn a_new_leader_waits_for_agents_finding_it() {
        let secs = Duration::from_secs;
        // (heartbeat period, grace, takeover grace)
        let cases = [
            (secs(5), secs(5).mul_f64(1.5), secs(20)),
            (secs(1), secs(1).mul_f64(1.5), secs(8)),
            (secs(1), secs(60), secs(60)),
        ];
        for (period, grace, want) in cases {
            assert_eq!(takeover_grace(period, grace), want, "{period:?} {grace:?}");
        }
    }

    #[test]
    fn the_grace_leaves_room_for_a_restart_without_slowing_the_default() {
        let ms = Duration::from_millis;
        for (period, multiplier, grace) in [
            // Swarm's default: 1.5 periods, as before.
            (ms(5000), 1.5, ms(7500)),
            // Short periods: a restart (about a second, plus reconnecting) still fits.
            (ms(1000), 1.5, ms(3500)),
            (ms(100), 1.5, ms(2600)),
            // Long periods and larger multipliers keep theirs.
            (ms(10_000), 1.5, ms(15_000)),
            (ms(1000), 5.0, ms(5000)),
        ] {
            assert_eq!(
                heartbeat_grace(period, multiplier),
                grace,
                "{period:?} × {multiplier}"
            );
        }
    }
}
