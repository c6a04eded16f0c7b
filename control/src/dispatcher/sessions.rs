//! Agent sessions and their heartbeats, held in memory on the leader.

use mesh_proto::{Cluster, Node, NodeState};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Inner;
use crate::store::{Read, ReadTx, now_nanos};

struct Session {
    node_id: String,
    last_heartbeat: Instant,
    /// The grace in force when the agent last heard the period (at opening or its last
    /// heartbeat): an agent told 5 s is not held to a 1 s period before it has heard of it.
    allowance: Duration,
    /// What the leader's stalls have been credited since the last heartbeat (at most a grace).
    credited: Duration,
    /// The last time the monitor held the session while its leader took over: its silence counts
    /// from the later of this and its last heartbeat.
    held: Instant,
    /// Flipped to true when the session ends; every stream of the session watches it.
    closed: watch::Sender<bool>,
    /// Until its registration is written: the node waits for the leader, not the other way
    /// round, and its silence does not count (see [`Sessions::registered`]).
    registering: bool,
}

impl Session {
    /// The node was heard from at `now` (registered, or a heartbeat): its silence, and the
    /// leader's stalls credited to it, count from then, and it is held to the grace it was told.
    fn heard(&mut self, now: Instant, grace: Duration) {
        self.registering = false;
        self.allowance = grace;
        self.silence_ends(now);
    }

    /// The node's silence ends at `now`: it, and the leader's stalls credited to it, count from
    /// then (a heartbeat, or a status report taken).
    fn silence_ends(&mut self, now: Instant) {
        self.last_heartbeat = now;
        self.credited = Duration::ZERO;
    }
}

/// The live sessions by id, and each node's one session: opening a session and asking whether
/// a node has one cost the same with ten thousand nodes as with three.
#[derive(Default)]
struct Table {
    by_id: HashMap<String, Session>,
    by_node: HashMap<String, String>,
    /// The silence each heartbeat heard lately ended, and when it was heard.
    gaps: VecDeque<(Instant, Duration)>,
    /// Nodes whose write marking them down is being built or committed.
    marking_down: HashSet<String>,
}

#[derive(Default)]
pub(super) struct Sessions {
    table: Mutex<Table>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `node_id` whose registration is written, as [`Self::open_registering`].
    #[cfg(test)]
    pub(super) fn open(
        &self,
        session_id: &str,
        node_id: &str,
        grace: Duration,
    ) -> watch::Receiver<bool> {
        let closed = self.open_registering(session_id, node_id, grace);
        self.registered(session_id, grace);
        closed
    }

    /// Opens a session for `node_id` that waits for its registration ([`Self::registered`]),
    /// ending any earlier session of the same node; `grace` is the one in force now.
    pub(super) fn open_registering(
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
            held: Instant::now(),
            closed,
            registering: true,
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

    /// Ends session `session_id`, if it is still open.
    pub(super) fn end(&self, session_id: &str) {
        let mut table = self.lock();
        if let Some(s) = table.by_id.remove(session_id) {
            s.closed.send_replace(true);
            if table.by_node.get(&s.node_id).map(String::as_str) == Some(session_id) {
                table.by_node.remove(&s.node_id);
            }
        }
    }

    /// The node of a live session, and a receiver that turns true when the session ends.
    pub(super) fn get(&self, session_id: &str) -> Option<(String, watch::Receiver<bool>)> {
        self.lock()
            .by_id
            .get(session_id)
            .map(|s| (s.node_id.clone(), s.closed.subscribe()))
    }

    /// Ends the registration of session `session_id` (see [`Session::registering`]): its silence
    /// counts from now. False if the session ended meanwhile.
    pub(super) fn registered(&self, session_id: &str, grace: Duration) -> bool {
        let mut table = self.lock();
        match table.by_id.get_mut(session_id) {
            Some(s) => {
                s.heard(Instant::now(), grace);
                true
            }
            None => false,
        }
    }

    /// Records a heartbeat; the answer tells the agent the period behind `grace`.
    pub(super) fn heartbeat(&self, session_id: &str, grace: Duration) -> bool {
        let mut table = self.lock();
        let now = Instant::now();
        match table.by_id.get_mut(session_id) {
            Some(s) => {
                let gap = now - s.last_heartbeat;
                s.heard(now, grace);
                if table.gaps.len() == MAX_GAPS {
                    table.gaps.pop_front();
                }
                table.gaps.push_back((now, gap));
                true
            }
            None => false,
        }
    }

    /// Session `session_id` had a status report taken: its node is heard from, as by a
    /// heartbeat. It is still held to the grace it was last told (a report's answer names no
    /// period), and the silence the report ended is left out of the lateness, which measures
    /// heartbeats against their period. A session still registering waits for its registration.
    pub(super) fn reported(&self, session_id: &str) {
        if let Some(s) = self.lock().by_id.get_mut(session_id)
            && !s.registering
        {
            s.silence_ends(Instant::now());
        }
    }

    /// How much later than every `period` the heartbeats heard within the last `window` came:
    /// the 99th percentile of the silences they ended, past the period. Nodes that are gone send
    /// none, so a tenth of the nodes lost at once stretch nothing; a leader too busy to read its
    /// nodes' heartbeats on time (or nodes too busy to send them) hears every one late. At least
    /// the longest silence is left out: one node alone (slow, or hostile, heartbeating just
    /// within its grace) ends at most one long silence in a window, and stretches nothing.
    fn lateness(&self, period: Duration, window: Duration) -> Duration {
        let mut table = self.lock();
        let now = Instant::now();
        while table
            .gaps
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
        {
            table.gaps.pop_front();
        }
        let mut gaps: Vec<Duration> = table.gaps.iter().map(|(_, gap)| *gap).collect();
        drop(table);
        let left_out = (gaps.len() / 100).max(1);
        if gaps.len() <= left_out {
            return Duration::ZERO;
        }
        let rank = gaps.len() - 1 - left_out;
        let (_, p99, _) = gaps.select_nth_unstable(rank);
        p99.saturating_sub(period)
    }

    /// How long the median live session has gone unheard: about half a period while the
    /// heartbeats are heard on time, whatever share of the nodes (under half) is gone.
    fn median_silence(&self) -> Duration {
        let mut silences: Vec<Duration> = self
            .lock()
            .by_id
            .values()
            .map(|s| s.last_heartbeat.max(s.held).elapsed())
            .collect();
        if silences.is_empty() {
            return Duration::ZERO;
        }
        let middle = silences.len() / 2;
        *silences.select_nth_unstable(middle).1
    }

    /// Ends and forgets the sessions whose last heartbeat is older than `grace` (or than the
    /// longer grace they last heard of), but those still registering; returns their nodes.
    fn expire(&self, grace: Duration) -> Vec<String> {
        let mut table = self.lock();
        let mut expired = Vec::new();
        table.by_id.retain(|id, s| {
            let silent = s.last_heartbeat.max(s.held).elapsed();
            let alive = s.registering || silent <= grace.max(s.allowance);
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

    /// Holds the sessions of `nodes` as if heard from now, for their silence only: the silences
    /// their heartbeats end (the lateness) are still measured from the last one heard.
    fn hold(&self, nodes: &HashSet<String>) {
        let now = Instant::now();
        for s in self.lock().by_id.values_mut() {
            if nodes.contains(&s.node_id) {
                s.held = now;
            }
        }
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

    /// The ids of `nodes` that have no session, under one lock (the heartbeat monitor asks it of
    /// every READY node five times a second: a lock per node was 2% of a leader at 10,000).
    pub(super) fn without_session<'n>(&self, nodes: impl Iterator<Item = &'n str>) -> Vec<String> {
        let table = self.lock();
        nodes
            .filter(|id| !table.by_node.contains_key(*id))
            .map(str::to_owned)
            .collect()
    }

    /// Keeps in `nodes` those that have no session, under one lock.
    fn keep_without_session(&self, nodes: &mut HashSet<String>) {
        let table = self.lock();
        nodes.retain(|id| !table.by_node.contains_key(id));
    }

    /// Whether a write marking `node_id` down may be on its way: a registration that finds the
    /// node READY must write it READY again all the same, after that write.
    pub(super) fn being_marked_down(&self, node_id: &str) -> bool {
        self.lock().marking_down.contains(node_id)
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
/// How often the monitor looks for READY nodes with no session (nodes that never found this
/// leader): a look reads every node, five times a second 2% of a leader at 10,000 nodes.
const UNREGISTERED_TICK: Duration = Duration::from_secs(1);
/// A gap between two looks longer than this is the leader's stall, not the nodes' silence: at
/// 5,000 nodes a snapshot's 4 s pause expired thousands of live sessions at once.
const MONITOR_STALL: Duration = Duration::from_secs(1);

/// How long a node that was READY under the previous leader has, once this one starts, to find
/// it: agents notice a silent manager within two heartbeat periods, then may try a manager that
/// cannot be reached (a connection attempt is bounded at 3 s) before they land here.
pub(super) fn takeover_grace(period: Duration, grace: Duration) -> Duration {
    grace.max(period * 3 + Duration::from_secs(5))
}

/// How long the takeover may go on while the nodes it takes over are still coming back (one of
/// them seen with a session for the first time within the last grace): a node lost while the
/// leader was away is found out within this and a grace.
pub(super) fn max_takeover(period: Duration, grace: Duration) -> Duration {
    takeover_grace(period, grace) * 4
}

/// The nodes a leader takes over that came back: each counted once, however often it opens a
/// session (one node reconnecting again and again does not hold the takeover).
struct Arrivals {
    /// Taken over, no session seen yet.
    missing: HashSet<String>,
    /// How many had come back at each look within the last window.
    back: VecDeque<(Instant, usize)>,
    total: usize,
}

impl Arrivals {
    fn new(taken_over: &HashSet<String>) -> Self {
        Self {
            missing: taken_over.clone(),
            back: VecDeque::new(),
            total: taken_over.len(),
        }
    }

    /// Looks for sessions of the nodes still missing; returns how many nodes came back within
    /// the last `window`.
    fn within(&mut self, sessions: &Sessions, window: Duration) -> usize {
        sessions.keep_without_session(&mut self.missing);
        let back = self.total - self.missing.len();
        let now = Instant::now();
        self.back.push_back((now, back));
        while self
            .back
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
        {
            self.back.pop_front();
        }
        back - self.back.front().map_or(back, |(_, count)| *count)
    }
}

/// How many graces late heartbeats may stretch the grace by: a node that is gone is found out
/// within four graces (30 s at the default period) however late the others' heartbeats are.
const MAX_STRETCH: u32 = 3;
/// At most this many heartbeats' silences are remembered (the monitor forgets those older than
/// a grace: 15,000 at 10,000 nodes).
const MAX_GAPS: usize = 1 << 16;
/// A stretch this long or longer is logged.
const STRETCH_NOTED: Duration = Duration::from_secs(1);

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
/// session when this leader starts get [`takeover_grace`] to register, and longer while the
/// others are still arriving (up to [`max_takeover`]: a restarted leader at 10,000 nodes on a
/// slower machine took more than the grace to hear them all, marked the last ones down, and the
/// work of replacing their tasks slowed the registrations of the next), plus the time the leader
/// itself was held up meanwhile (a restarted leader at 5,000 nodes stalled 15 s while its
/// reconcilers read the store back, and 12 nodes still reconnecting were marked down).
///
/// The monitor never waits for its own writes: marking nodes down commits through Raft, which
/// took seconds while 500 nodes' tasks were being replaced at 5,000 nodes, and a monitor waiting
/// on it took that wait for a stall of its own, credited every session with it, and found the
/// nodes lost meanwhile only after. One write is in flight at a time; the nodes found while it
/// is go in the next.
pub(super) async fn monitor_heartbeats(inner: Arc<Inner>) {
    let started = Instant::now();
    // The nodes READY under the last leader: those this one takes over.
    let taken_over: HashSet<String> = inner
        .store
        .view(|tx| ready_nodes(tx).map(str::to_owned).collect());
    let mut tick = tokio::time::interval(MONITOR_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checked = Instant::now();
    let mut unregistered_checked = Instant::now();
    // The leader's own stalls since it started: nodes could not register during them either.
    let mut held_up = Duration::ZERO;
    let mut to_mark: BTreeSet<String> = BTreeSet::new();
    // Whether the grace is stretched by a second or more (logged as it changes).
    let mut stretched = false;
    let mut arrivals = Arrivals::new(&taken_over);
    let mut taking_over = true;
    // Dropped with the monitor: a write still in flight when leadership ends is abandoned.
    let mut marking: JoinSet<BTreeSet<String>> = JoinSet::new();
    loop {
        tick.tick().await;
        // The period follows the cluster's spec (`swarm init --dispatcher-heartbeat`, which a
        // first leader starts before it has written).
        let wanted = inner.store.view_promptly(|tx| {
            tx.iter::<Cluster>()
                .next()
                .and_then(|c| c.spec.as_ref())
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
        // Measured after the monitor's own read of the store (a prompt one: only a held-up
        // runtime delays it, as it delays the heartbeats).
        let gap = checked.elapsed();
        checked = Instant::now();
        if gap > MONITOR_STALL {
            tracing::info!(stalled = ?gap, "heartbeat monitor held up: sessions credited");
            config.monitor_stalls.observe(gap.as_secs_f64());
            inner.sessions.forgive(gap - MONITOR_TICK, grace);
            held_up += gap - MONITOR_TICK;
        }
        // Heartbeats heard late stretch the grace by as much (up to [`MAX_STRETCH`] graces): a
        // leader too busy to read them on time (or nodes too busy to send them) does not take
        // its live nodes for dead. At 10,000 nodes and a million tasks, heartbeats were answered
        // up to 8 s late, and thousands of live nodes were marked down, their tasks replaced.
        let stretch = inner
            .sessions
            .lateness(config.heartbeat_period, grace)
            .min(grace * MAX_STRETCH);
        if (stretch >= STRETCH_NOTED) != stretched {
            stretched = !stretched;
            if stretched {
                tracing::info!(stretch = ?stretch, "heartbeats heard late: grace stretched");
            } else {
                tracing::info!("heartbeats heard on time again: grace back to normal");
            }
        }
        if taking_over {
            // Once over, the takeover stays over.
            let arrived = arrivals.within(&inner.sessions, grace);
            let elapsed = started.elapsed().saturating_sub(held_up);
            taking_over = elapsed <= takeover_grace(config.heartbeat_period, grace)
                || elapsed <= max_takeover(config.heartbeat_period, grace) && arrived > 0;
        }
        if taking_over {
            // No session of a node it takes over expires while this leader takes over, and each
            // has a grace after: a node that found the leader is given no less than one still on
            // its way. A restarted leader at 5,000 nodes, busy with all of them coming back at
            // once, heard the second heartbeat of about 200 of them late and marked them down
            // within its takeover grace. Nodes that join meanwhile are held to the grace.
            inner.sessions.hold(&taken_over);
        }
        let expired = inner.sessions.expire(grace + stretch);
        if !expired.is_empty() {
            tracing::info!(
                nodes = expired.len(),
                grace = ?(grace + stretch),
                others_median_silence = ?inner.sessions.median_silence(),
                "sessions expired: no heartbeat heard within the grace"
            );
        }
        config.heartbeat_misses.inc_by(expired.len() as u64);
        to_mark.extend(expired);
        if !taking_over && unregistered_checked.elapsed() >= UNREGISTERED_TICK {
            unregistered_checked = Instant::now();
            // Read in place: no copy of every node, one lookup per node.
            let unregistered = inner
                .store
                .view(|tx| inner.sessions.without_session(ready_nodes(tx)));
            if !unregistered.is_empty() {
                tracing::info!(
                    nodes = unregistered.len(),
                    "nodes READY without a session: to be marked down"
                );
            }
            to_mark.extend(unregistered);
        }
        while let Some(done) = marking.try_join_next() {
            to_mark.extend(done.unwrap_or_default());
        }
        if to_mark.is_empty() || !marking.is_empty() {
            continue;
        }
        marking.spawn(mark_down(inner.clone(), std::mem::take(&mut to_mark)));
    }
}

/// Marks `nodes` down, but those that are down already or have opened a session again, in one
/// transaction up to a reconciler's batch; returns those it did not get to, or all of them when
/// the write failed, to be tried in the next.
async fn mark_down(inner: Arc<Inner>, nodes: BTreeSet<String>) -> BTreeSet<String> {
    /// Takes the nodes out of the set being marked down once the write is done (or abandoned).
    struct Marking<'a>(&'a Sessions, Vec<String>);
    impl Drop for Marking<'_> {
        fn drop(&mut self) {
            let mut table = self.0.lock();
            for id in &self.1 {
                table.marking_down.remove(id);
            }
        }
    }
    inner
        .sessions
        .lock()
        .marking_down
        .extend(nodes.iter().cloned());
    let _marking = Marking(&inner.sessions, nodes.iter().cloned().collect());
    let result = inner
        .store
        .update(|tx| {
            let mut marked = Vec::new();
            let mut left = nodes.iter();
            for id in left.by_ref() {
                let Some(mut node) = tx.get::<Node>(id) else {
                    continue;
                };
                if inner.sessions.has_node(id) || node_state(&node) == NodeState::Down {
                    continue;
                }
                let status = node.status.get_or_insert_with(Default::default);
                status.state = NodeState::Down as i32;
                status.message = "heartbeat failure".into();
                tx.update(node)?;
                marked.push(id);
                if tx.is_full() {
                    break;
                }
            }
            Ok((marked, left.cloned().collect()))
        })
        .await;
    match result {
        // Said once the write is committed: a write that loses to a node registering again (after
        // a leader's restart, thousands do) marks nothing.
        Ok((marked, left)) => {
            let at = now_nanos();
            for id in marked {
                tracing::info!(node.id = %id, at, "node marked down");
            }
            left
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not mark nodes down");
            nodes
        }
    }
}

/// The ids of the nodes the store has READY, read in place.
fn ready_nodes<'t>(tx: &'t ReadTx<'_>) -> impl Iterator<Item = &'t str> {
    tx.iter::<Node>()
        .filter(|n| node_state(n) == NodeState::Ready)
        .map(|n| n.id.as_str())
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
        assert_eq!(
            sessions.without_session(["n1", "n3", "n2", "n4"].into_iter()),
            ["n3", "n4"]
        );

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

        // Ending a session the node has replaced leaves the node's newer one.
        let third = sessions.open("s4", "n4", grace);
        let fourth = sessions.open("s5", "n4", grace);
        sessions.end("s4");
        assert!(*third.borrow() && !*fourth.borrow() && sessions.has_node("n4"));
        sessions.end("s5");
        assert!(*fourth.borrow() && !sessions.has_node("n4"));
        assert!(sessions.get("s5").is_none());

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

    /// A status report taken keeps its session alive as a heartbeat does, but adds no silence to
    /// the lateness, changes no grace, and leaves a registering session to its registration.
    #[test]
    fn a_report_taken_is_a_heartbeat() {
        let ms = Duration::from_millis;
        let sessions = Sessions::default();
        let _a = sessions.open("a", "n1", Duration::ZERO);
        let _b = sessions.open("b", "n2", Duration::ZERO);
        let _c = sessions.open("c", "n3", Duration::from_secs(60));
        let _d = sessions.open_registering("d", "n4", Duration::ZERO);
        std::thread::sleep(ms(40));
        sessions.reported("a");
        sessions.reported("c");
        sessions.reported("d");
        sessions.reported("gone");
        assert_eq!(sessions.expire(ms(20)), ["n2"], "n1 reported, n2 did not");
        assert!(sessions.lock().gaps.is_empty(), "no heartbeat was heard");
        assert!(
            sessions.lock().by_id["d"].registering,
            "a report does not end a registration"
        );
        std::thread::sleep(ms(40));
        let mut expired = sessions.expire(ms(20));
        expired.sort();
        assert_eq!(expired, ["n1"], "n3 keeps the long grace it was told");
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

    /// Proposals wait until the gate opens, as behind a Raft log full of large entries.
    struct Gated {
        memory: Arc<crate::store::MemoryStore>,
        open: watch::Receiver<bool>,
        index: std::sync::atomic::AtomicU64,
    }

    impl crate::store::Proposer for Gated {
        fn propose(
            &self,
            tx: mesh_proto::Transaction,
        ) -> futures::future::BoxFuture<'_, Result<(), crate::store::StoreError>> {
            let mut open = self.open.clone();
            Box::pin(async move {
                let _ = open.wait_for(|o| *o).await;
                let index = self.index.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let proposal = mesh_proto::Proposal {
                    transactions: vec![tx],
                };
                let applied = self.memory.apply(index, proposal).into_iter().next();
                applied.expect("one result").map_err(Into::into)
            })
        }
    }

    fn down(store: &crate::store::Store, id: &str) -> bool {
        store.view(|tx| tx.peek::<Node>(id).map(node_state)) == Some(NodeState::Down)
    }

    /// The identity a worker `node_id`'s certificate proves.
    fn worker_identity(node_id: &str) -> crate::ca::NodeIdentity {
        crate::ca::NodeIdentity {
            node_id: node_id.into(),
            role: crate::ca::Role::Worker,
            cluster_id: "c1".into(),
            not_before: std::time::SystemTime::UNIX_EPOCH,
            not_after: std::time::SystemTime::UNIX_EPOCH,
            serial: vec![1],
            raft_id: None,
        }
    }

    /// A store whose writes wait while `gate` is false, holding `nodes` READY, and a
    /// dispatcher over it (not serving: its sessions are opened directly).
    async fn gated_dispatcher(
        nodes: impl Iterator<Item = String>,
    ) -> (watch::Sender<bool>, crate::store::Store, Arc<Inner>) {
        let (gate, open) = watch::channel(true);
        let memory = Arc::new(crate::store::MemoryStore::new());
        let store = crate::store::Store::new(
            memory.clone(),
            Arc::new(Gated {
                memory,
                open,
                index: Default::default(),
            }),
        );
        store
            .update(|tx| {
                for id in nodes {
                    tx.create(Node {
                        id,
                        status: Some(mesh_proto::NodeStatus {
                            state: NodeState::Ready as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })?;
                }
                Ok(())
            })
            .await
            .expect("nodes");
        let (_, leadership) = watch::channel(Default::default());
        let dispatcher =
            super::super::Dispatcher::new(store.clone(), Default::default(), leadership);
        (gate, store, dispatcher.inner)
    }

    /// Heartbeats `sessions` every second until the takeover grace at the default period (20 s
    /// from the monitor's start) has passed: from then on, their silences count.
    async fn past_takeover(inner: &Inner, sessions: &[&str]) {
        let grace = Duration::from_millis(7500);
        for _ in 0..21 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for s in sessions {
                assert!(
                    inner.sessions.heartbeat(s, grace),
                    "{s} during the takeover"
                );
            }
        }
    }

    /// No session of a node READY under the last leader expires while this one takes over, and
    /// each has a grace after it: a node that found the leader is given no less than one still
    /// on its way. A node that joins meanwhile is held to the grace; the lateness is still
    /// measured from the heartbeats heard.
    #[tokio::test(start_paused = true)]
    async fn no_session_expires_while_the_leader_takes_over() {
        let ids = ["n1", "n2"].map(String::from);
        let (_gate, store, inner) = gated_dispatcher(ids.into_iter()).await;
        let (period, grace) = (Duration::from_secs(5), Duration::from_millis(7500));
        let monitor = tokio::spawn(monitor_heartbeats(inner.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        // n1 is heard once, at 2 s, then falls silent; n2 beats every period; n3, joining now,
        // is heard once too.
        let _sessions = ["n1", "n2", "n3"].map(|id| inner.sessions.open(id, id, grace));
        assert!(inner.sessions.heartbeat("n1", grace) && inner.sessions.heartbeat("n3", grace));
        for second in 3..=29 {
            if second == 11 {
                assert!(!inner.sessions.has_node("n3"), "n3 silent 9 s, not held");
            }
            if second % 5 == 2 {
                assert!(inner.sessions.heartbeat("n2", grace), "n2 at {second} s");
            }
            if second == 26 {
                assert!(
                    inner.sessions.has_node("n1"),
                    "n1 is held until 20 s, and has a grace after"
                );
                assert_eq!(inner.sessions.lateness(period, grace), Duration::ZERO);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(down(&store, "n1"), "n1 not heard from by 27.5 s");
        assert!(!down(&store, "n2"));
        monitor.abort();
    }

    /// While the write marking one node down waits on Raft, the monitor goes on looking: a
    /// second node that falls silent meanwhile loses its session on time, and no stall is
    /// credited for the wait (which would have kept it open).
    #[tokio::test(start_paused = true)]
    async fn a_slow_write_does_not_hold_up_the_monitor() {
        let nodes = ["n1", "n2"].map(String::from);
        let (gate, store, inner) = gated_dispatcher(nodes.into_iter()).await;
        // The default 5 s period: 7.5 s of grace, 20 s of takeover.
        let grace = Duration::from_millis(7500);
        let _n1 = inner.sessions.open("s1", "n1", grace);
        let _n2 = inner.sessions.open("s2", "n2", grace);
        let monitor = tokio::spawn(monitor_heartbeats(inner.clone()));
        past_takeover(&inner, &["s1", "s2"]).await;
        gate.send_replace(false);
        // n2 heartbeats for 9 s more, then falls silent; n1 does not again.
        for _ in 0..9 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(inner.sessions.heartbeat("s2", grace));
        }
        assert!(!inner.sessions.has_node("n1"), "n1 expired at 7.5 s");
        assert!(!down(&store, "n1"), "its write waits at the gate");
        // n2's grace ends 16.5 s after the takeover.
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(
            !inner.sessions.has_node("n2"),
            "n2 expired while n1's write waited"
        );
        gate.send_replace(true);
        for _ in 0..10 {
            tokio::time::sleep(MONITOR_TICK).await;
        }
        assert!(down(&store, "n1") && down(&store, "n2"));
        monitor.abort();
    }

    /// Many nodes lost at once are marked down in batches a transaction can hold, every one.
    #[tokio::test(start_paused = true)]
    async fn many_nodes_lost_at_once_are_marked_down_in_batches() {
        let count = crate::limits::BATCH_WRITES * 2 + 7;
        let ids = (0..count).map(|i| format!("n{i:04}"));
        let (_gate, store, inner) = gated_dispatcher(ids.clone()).await;
        let grace = Duration::from_millis(7500);
        let _sessions: Vec<_> = ids
            .clone()
            .map(|id| inner.sessions.open(&format!("s-{id}"), &id, grace))
            .collect();
        let entries = crate::store::writes_per_entry(&store);
        let monitor = tokio::spawn(monitor_heartbeats(inner.clone()));
        let sessions: Vec<String> = ids.clone().map(|id| format!("s-{id}")).collect();
        let sessions: Vec<&str> = sessions.iter().map(String::as_str).collect();
        past_takeover(&inner, &sessions).await;
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(ids.clone().all(|id| down(&store, &id)), "every node down");
        let written = entries.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let batch = crate::limits::BATCH_WRITES;
        assert_eq!(written, [batch, batch, 7], "{written:?}");
        monitor.abort();
    }

    /// A node READY under the last leader has the takeover grace to find this one, counted
    /// without the time this leader was held up.
    #[tokio::test(start_paused = true)]
    async fn the_takeover_grace_is_not_spent_while_the_leader_stalls() {
        let (_gate, store, inner) = gated_dispatcher(["n1"].map(String::from).into_iter()).await;
        let monitor = tokio::spawn(monitor_heartbeats(inner.clone()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The monitor is held up 8 s: the clock jumps past its ticks at once.
        tokio::time::advance(Duration::from_secs(8)).await;
        // 20 s of takeover grace, plus the stall.
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(
            !down(&store, "n1"),
            "27 s after the start, 19 s of it unstalled"
        );
        // The stall is recorded once, with the tick it fell in.
        let stalls = inner.config.borrow().monitor_stalls.clone();
        assert_eq!(stalls.count(), 1);
        assert!((8.0..=8.2).contains(&stalls.sum()), "{}", stalls.sum());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(down(&store, "n1"), "never registered");
        monitor.abort();
    }

    /// A node whose registration waits on Raft has its session already: the monitor does not
    /// take it, READY and without a session past the takeover grace, for a node that never came
    /// back, and no write marks it down.
    #[tokio::test(start_paused = true)]
    async fn a_node_is_not_marked_down_while_its_registration_commits() {
        let (gate, store, inner) = gated_dispatcher(["n1"].map(String::from).into_iter()).await;
        let service = super::super::service::DispatcherService::new(inner.clone());
        let written = crate::store::writes_per_entry(&store);
        let monitor = tokio::spawn(monitor_heartbeats(inner.clone()));
        // n1 comes back 15 s into this leader's 20 s takeover grace, and its write waits.
        tokio::time::sleep(Duration::from_secs(15)).await;
        gate.send_replace(false);
        let opening = tokio::spawn(async move {
            let identity = worker_identity("n1");
            let request = mesh_proto::SessionRequest {
                node_id: "n1".into(),
                ..Default::default()
            };
            service.open_session(&request, &identity).await
        });
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(!opening.is_finished(), "the registration waits at the gate");
        assert!(inner.sessions.has_node("n1"), "its session is open already");
        gate.send_replace(true);
        let (session, _closed) = opening.await.unwrap().expect("registered");
        for _ in 0..5 {
            tokio::time::sleep(MONITOR_TICK).await;
        }
        assert!(inner.sessions.get(&session).is_some());
        assert!(!down(&store, "n1"));
        let written = written.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            written,
            [1],
            "the registration only, nothing marking n1 down"
        );
        monitor.abort();
    }

    /// A node that registers again as it was (its agent taking its session back after the
    /// leader's restart) is not written again; one that changed, or was down, is.
    #[tokio::test(start_paused = true)]
    async fn registering_again_unchanged_writes_nothing() {
        let (_gate, store, inner) = gated_dispatcher(std::iter::empty()).await;
        let service = super::super::service::DispatcherService::new(inner.clone());
        let written = crate::store::writes_per_entry(&store);
        let identity = worker_identity("n1");
        let request = |hostname: &str| mesh_proto::SessionRequest {
            node_id: "n1".into(),
            addr: "10.0.0.1".into(),
            description: Some(mesh_proto::NodeDescription {
                hostname: hostname.into(),
                ..Default::default()
            }),
        };
        // The entries written so far, once the recorder has seen the last commit.
        let writes = || async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            written.lock().unwrap_or_else(|e| e.into_inner()).len()
        };
        for (step, hostname, writes_after) in [
            ("first registration", "a", 1),
            ("the same again", "a", 1),
            ("a new hostname", "b", 2),
            ("the same again", "b", 2),
        ] {
            service
                .open_session(&request(hostname), &identity)
                .await
                .expect(step);
            assert_eq!(writes().await, writes_after, "{step} ({hostname})");
        }
        store
            .update(|tx| {
                let mut node = tx.get::<Node>("n1").expect("n1");
                node.status.get_or_insert_with(Default::default).state = NodeState::Down as i32;
                tx.update(node)
            })
            .await
            .expect("marked down");
        service
            .open_session(&request("b"), &identity)
            .await
            .expect("back");
        assert_eq!(writes().await, 4, "a node down is written READY again");
        assert!(!down(&store, "n1"));
    }

    /// Through the service: the session message tells the agent that a report counts as a
    /// heartbeat, and a report taken keeps the session alive past its grace; a report naming
    /// another node's session is refused and keeps nothing alive.
    #[tokio::test(start_paused = true)]
    async fn a_report_through_the_service_is_a_heartbeat() {
        use futures::StreamExt as _;
        use mesh_proto::dispatcher_server::Dispatcher as _;
        let (_gate, store, _) = gated_dispatcher(std::iter::empty()).await;
        let (_, leadership) = watch::channel(Default::default());
        // A dispatcher of its own: it takes the reports the service passes on.
        let dispatcher = super::super::Dispatcher::new(store, Default::default(), leadership);
        let inner = dispatcher.inner.clone();
        inner.active.send_replace(true);
        let service = super::super::service::DispatcherService::new(inner.clone());
        let called_by = |node: &str| crate::ca::PeerInfo {
            remote_addr: None,
            identity: Some(worker_identity(node)),
            rejected: None,
        };
        let mut first = Vec::new();
        for node in ["n1", "n2"] {
            let mut request = tonic::Request::new(mesh_proto::SessionRequest {
                node_id: node.into(),
                ..Default::default()
            });
            request.extensions_mut().insert(called_by(node));
            let mut stream = service
                .session(request)
                .await
                .expect("a session")
                .into_inner();
            let message = stream.next().await.expect("a message").expect("no error");
            assert!(message.reports_are_heartbeats);
            first.push((message.session_id, stream));
        }
        let report = |session: &str, caller: &str| {
            let mut request = tonic::Request::new(mesh_proto::UpdateTaskStatusRequest {
                session_id: session.into(),
                updates: Vec::new(),
            });
            request.extensions_mut().insert(called_by(caller));
            request
        };
        tokio::time::sleep(Duration::from_secs(6)).await;
        service
            .update_task_status(report(&first[0].0, "n1"))
            .await
            .expect("n1's report is taken");
        assert!(
            service
                .update_task_status(report(&first[1].0, "n1"))
                .await
                .is_err(),
            "n2's session is not n1's to report on"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(inner.sessions.expire(Duration::from_millis(7500)), ["n2"]);
    }

    /// A node whose session ran out, and whose write marking it down waits on Raft, registers
    /// again unchanged meanwhile: it is written READY all the same, after that write, and is not
    /// left down with a live session.
    #[tokio::test(start_paused = true)]
    async fn registering_while_being_marked_down_writes_the_node_ready_after() {
        let (gate, store, inner) = gated_dispatcher(std::iter::empty()).await;
        let service = Arc::new(super::super::service::DispatcherService::new(inner.clone()));
        let request = mesh_proto::SessionRequest {
            node_id: "n1".into(),
            addr: "10.0.0.1".into(),
            ..Default::default()
        };
        let (session, _closed) = service
            .open_session(&request, &worker_identity("n1"))
            .await
            .expect("registered");
        inner.sessions.end(&session);
        gate.send_replace(false);
        let marking = tokio::spawn(mark_down(inner.clone(), BTreeSet::from(["n1".into()])));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            inner.sessions.being_marked_down("n1"),
            "its write waits at the gate"
        );
        let reopening = tokio::spawn({
            let service = service.clone();
            async move { service.open_session(&request, &worker_identity("n1")).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        gate.send_replace(true);
        // Its write lands first, or after the registration's, and then fails on the node's
        // version (to be tried again by the monitor, which finds the session): either way the
        // node ends READY.
        let _ = marking.await.unwrap();
        let (session, _closed) = reopening.await.unwrap().expect("registered again");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(inner.sessions.get(&session).is_some());
        assert!(!inner.sessions.being_marked_down("n1"));
        assert!(
            !down(&store, "n1"),
            "written READY after the write marking it down"
        );
    }

    /// A session waiting for its registration (behind a busy Raft log) is not silent: the node
    /// waits for the leader. Its silence counts once it is registered.
    #[tokio::test(start_paused = true)]
    async fn a_session_waiting_for_its_registration_does_not_expire() {
        let sessions = Sessions::default();
        let grace = Duration::from_millis(7500);
        let _closed = sessions.open_registering("a", "n1", grace);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(sessions.expire(grace).is_empty(), "still registering");
        assert!(sessions.registered("a", grace));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            sessions.expire(grace).is_empty(),
            "5 s since its registration"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(sessions.expire(grace), ["n1"]);
        assert!(!sessions.registered("a", grace), "ended");
    }

    /// A registration given up on (its call dropped while the write waits) ends its session:
    /// none is left that cannot expire.
    #[tokio::test(start_paused = true)]
    async fn a_session_whose_registration_is_dropped_ends() {
        let (gate, _store, inner) = gated_dispatcher(["n1"].map(String::from).into_iter()).await;
        let service = Arc::new(super::super::service::DispatcherService::new(inner.clone()));
        gate.send_replace(false);
        let opening = tokio::spawn(async move {
            let request = mesh_proto::SessionRequest {
                node_id: "n1".into(),
                addr: "10.0.0.1".into(),
                ..Default::default()
            };
            service
                .open_session(&request, &worker_identity("n1"))
                .await
                .map(|(id, _)| id)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(inner.sessions.has_node("n1"), "open while its write waits");
        opening.abort();
        assert!(opening.await.is_err(), "dropped");
        assert!(!inner.sessions.has_node("n1"));
        assert_eq!(inner.sessions.len(), 0);
    }

    /// 200 nodes READY under the last leader come back one every 5 s until `until` s, each
    /// heartbeating every period once back; returns the second at which one that never comes
    /// back is first seen down (None within 100 s), and checks that no node back by then is.
    /// (Sessions are opened here without the registration that would write a node READY.)
    async fn takeover_with_arrivals_until(until: u64) -> Option<u64> {
        let ids: Vec<String> = (0..200).map(|i| format!("n{i:03}")).collect();
        let (_gate, store, inner) = gated_dispatcher(ids.clone().into_iter()).await;
        let grace = Duration::from_millis(7500);
        let monitor = tokio::spawn(monitor_heartbeats(inner.clone()));
        let mut back: Vec<(String, watch::Receiver<bool>)> = Vec::new();
        let mut missing_down = None;
        for second in 1..=100u64 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if missing_down.is_none() && down(&store, &ids[199]) {
                missing_down = Some(second);
                let downs: Vec<&String> = back
                    .iter()
                    .map(|(id, _)| id)
                    .filter(|id| down(&store, id))
                    .collect();
                assert!(downs.is_empty(), "{downs:?} down at {second} s");
            }
            if second % 5 == 0 && second <= until {
                let id = &ids[back.len()];
                back.push((id.clone(), inner.sessions.open(id, id, grace)));
            }
            if second % 5 == 0 {
                for (id, _) in &back {
                    assert!(inner.sessions.heartbeat(id, grace), "{id} at {second} s");
                }
            }
        }
        monitor.abort();
        missing_down
    }

    /// The takeover lasts while the nodes it takes over are still coming back (one within a
    /// grace is enough, however few of all they are): a node missing is marked down only once
    /// they stop, a grace after the last (45 s + 7.5 s), not at the end of the takeover grace
    /// (20 s).
    #[tokio::test(start_paused = true)]
    async fn the_takeover_lasts_while_nodes_still_arrive() {
        let marked = takeover_with_arrivals_until(45).await.expect("marked down");
        assert!((53..=54).contains(&marked), "marked down at {marked} s");
    }

    /// Nodes arriving without end hold the takeover for [`max_takeover`] (80 s) at most.
    #[tokio::test(start_paused = true)]
    async fn arrivals_hold_the_takeover_for_a_bounded_time() {
        let marked = takeover_with_arrivals_until(u64::MAX)
            .await
            .expect("marked down");
        assert!((81..=82).contains(&marked), "marked down at {marked} s");
    }

    /// One node opening session after session (or a client holding one node's certificate)
    /// comes back once: it does not hold the takeover past its grace.
    #[tokio::test(start_paused = true)]
    async fn one_node_back_again_and_again_holds_nothing() {
        let ids: Vec<String> = (0..200).map(|i| format!("n{i:03}")).collect();
        let (_gate, store, inner) = gated_dispatcher(ids.into_iter()).await;
        let grace = Duration::from_millis(7500);
        let monitor = tokio::spawn(monitor_heartbeats(inner.clone()));
        let mut sessions = Vec::new();
        for second in 1..=25 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for k in 0..3 {
                let id = format!("s{second}-{k}");
                sessions.push(inner.sessions.open(&id, "n000", grace));
            }
        }
        assert!(down(&store, "n199"), "marked down after the takeover grace");
        assert!(!down(&store, "n000"));
        monitor.abort();
    }

    /// A writer keeping what was logged.
    #[derive(Clone, Default)]
    struct Logged(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logged {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logged {
        /// The lines logged with `message`.
        fn lines(&self, message: &str) -> Vec<String> {
            let bytes = self.0.lock().expect("lock").clone();
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| l.contains(message))
                .map(String::from)
                .collect()
        }
    }

    /// A write marking a node down that loses to a concurrent change of the node (as when it
    /// registers again) marks nothing and logs nothing; the node is left to be tried again. A
    /// write that commits logs each node it marked, once.
    #[tokio::test(start_paused = true)]
    async fn only_committed_marks_are_logged() {
        let logged = Logged::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let logged = logged.clone();
                move || logged.clone()
            })
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let ids = ["n1", "n2"].map(String::from);
        let (gate, store, inner) = gated_dispatcher(ids.clone().into_iter()).await;
        gate.send_replace(false);
        let marking = tokio::spawn(mark_down(inner.clone(), BTreeSet::from([ids[0].clone()])));
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The node changes while the write marking it waits: committed past the gate.
        let (change, ()) = store
            .memory()
            .write_tx(|tx| {
                let node = tx.get::<Node>("n1").expect("n1");
                tx.update(node)
            })
            .expect("a change");
        let applied = store.memory().apply(
            100,
            mesh_proto::Proposal {
                transactions: vec![change],
            },
        );
        assert!(applied.iter().all(Result::is_ok), "{applied:?}");
        gate.send_replace(true);
        let left = marking.await.unwrap();
        assert_eq!(left, BTreeSet::from([ids[0].clone()]), "to be tried again");
        assert!(!down(&store, "n1"));
        assert_eq!(logged.lines("node marked down"), Vec::<String>::new());

        let left = mark_down(inner.clone(), ids.iter().cloned().collect()).await;
        assert!(left.is_empty());
        assert!(ids.iter().all(|id| down(&store, id)));
        let lines = logged.lines("node marked down");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("node.id=n1") && lines[1].contains("node.id=n2"));
    }

    /// Heartbeats heard later and later (a leader falling behind its nodes): the grace stretches
    /// with them and no live node is marked down, though each goes up to 10 s unheard under a
    /// 7.5 s grace; a node silent from the start is marked down on time.
    #[tokio::test(start_paused = true)]
    async fn heartbeats_heard_late_stretch_the_grace() {
        let live = 200;
        let ids: Vec<String> = (0..=live).map(|i| format!("n{i:03}")).collect();
        let (_gate, store, inner) = gated_dispatcher(ids.clone().into_iter()).await;
        let (period, grace) = (Duration::from_secs(5), Duration::from_millis(7500));
        let start = Instant::now();
        // Each live node heartbeats every period from its own phase; a beat sent at `t` s is
        // heard `delay(t)` s later: on time until 20 s, then 1 s later each second, up to 8 s.
        let delay = |t: f64| (t - 20.0).clamp(0.0, 8.0);
        let mut beats: Vec<(f64, usize)> = (0..live)
            .flat_map(|i| {
                let phase = 5.0 * i as f64 / live as f64;
                (0..16).map(move |k| (phase + 5.0 * k as f64, i))
            })
            .map(|(sent, i)| (sent + delay(sent), i))
            .collect();
        beats.sort_by(|a, b| a.0.total_cmp(&b.0));
        let _sessions: Vec<_> = ids
            .iter()
            .map(|id| inner.sessions.open(&format!("s-{id}"), id, grace))
            .collect();
        let monitor = tokio::spawn(monitor_heartbeats(inner.clone()));
        for (heard, i) in beats {
            tokio::time::sleep_until(start + Duration::from_secs_f64(heard)).await;
            assert!(
                inner.sessions.heartbeat(&format!("s-{}", ids[i]), grace),
                "{} lost its session at {heard:.2} s",
                ids[i]
            );
        }
        assert!(down(&store, &ids[live]), "the silent node");
        assert!(ids[..live].iter().all(|id| !down(&store, id)));
        assert_eq!(
            inner.sessions.lateness(period, grace),
            Duration::ZERO,
            "once the delay stops growing, heartbeats come a period apart again"
        );
        monitor.abort();
    }

    /// The stretch is how late the 99th percentile of the heartbeats heard within the window
    /// came: a node or two late (one back from a pause) stretch nothing.
    #[tokio::test(start_paused = true)]
    async fn lateness_is_the_99th_percentile_past_the_period() {
        let sessions = Sessions::default();
        let period = Duration::from_secs(5);
        let window = Duration::from_millis(7500);
        let ids: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
        for id in &ids {
            let _ = sessions.open(id, id, window);
        }
        assert_eq!(
            sessions.lateness(period, window),
            Duration::ZERO,
            "none heard"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        for id in &ids[..198] {
            assert!(sessions.heartbeat(id, window));
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        for id in &ids[198..] {
            assert!(sessions.heartbeat(id, window));
        }
        assert_eq!(sessions.lateness(period, window), Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(9)).await;
        for id in &ids {
            assert!(sessions.heartbeat(id, window));
        }
        assert_eq!(
            sessions.lateness(period, window),
            Duration::from_secs(7),
            "12 s since the first 198 were heard; those heard before are out of the window"
        );
    }

    /// One node alone heartbeating late, however long it stays within its grace, stretches
    /// nothing; two do.
    #[tokio::test(start_paused = true)]
    async fn one_late_node_alone_stretches_nothing() {
        let sessions = Sessions::default();
        let (period, window) = (Duration::from_secs(5), Duration::from_millis(7500));
        for id in ["a", "b", "c"] {
            let _ = sessions.open(id, id, window);
        }
        tokio::time::advance(period).await;
        assert!(sessions.heartbeat("a", window) && sessions.heartbeat("b", window));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(sessions.heartbeat("c", window), "7 s after its last");
        assert_eq!(sessions.lateness(period, window), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(sessions.heartbeat("a", window), "7 s after its last too");
        assert_eq!(
            sessions.lateness(period, window),
            Duration::from_secs(2),
            "two late: the shorter of their silences, past the period"
        );
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
