//! The cluster's events (`meshctl events`): every manager turns the store changes it applies
//! into Docker-shaped events ([`mapping`]), remembers the last [`HISTORY`] of them for
//! `--since`, and streams new ones to its subscribers. Every manager applies every committed
//! entry, so each serves the whole cluster's events from its own store: nothing is forwarded
//! to the leader. A manager remembers only what it applied since it started (as dockerd
//! remembers only its own run): the entries of its log that it applies again at a restart are
//! not news. An event's time is the change's own, as written in the store (the same on every
//! manager); a removal carries none, so its time is when this manager applied it.
//!
//! Memory is bounded whatever the subscribers do: the history holds [`HISTORY`] events and the
//! live channel [`LIVE_BUFFER`], shared by every subscriber. A subscriber that falls further
//! behind than that is dropped with a message saying how many events it missed.

mod mapping;
#[cfg(test)]
mod tests;

pub use mapping::{TYPES, event, is_event, task_state_name};

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use mesh_proto::{ClusterEvent, EventsRequest};
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};
use tonic::Status;

use crate::store::{Event, MemoryStore, now_nanos};

/// Events remembered for `--since`: dockerd's `eventsLimit`.
pub const HISTORY: usize = 256;
/// Live events a subscriber may fall behind by before it is dropped: dockerd's per-subscriber
/// `bufferSize`, here one channel shared by all.
pub const LIVE_BUFFER: usize = 1024;

/// A manager's recent events and its live feed; clones share them.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    history: Mutex<VecDeque<Arc<Recorded>>>,
    live: broadcast::Sender<Arc<Recorded>>,
    /// Entries up to this log index are replays of what was applied before this run.
    replayed_through: AtomicU64,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                history: Mutex::new(VecDeque::with_capacity(HISTORY)),
                live: broadcast::channel(LIVE_BUFFER).0,
                replayed_through: AtomicU64::new(0),
            }),
        }
    }

    /// Remembers `event` and hands it to every subscriber.
    pub fn record(&self, event: ClusterEvent) {
        self.keep(Recorded::Event(event));
    }

    fn keep(&self, event: Recorded) {
        let event = Arc::new(event);
        // Under the lock, so that a subscriber gets each event once: in its backlog or live.
        let mut history = self.inner.history.lock();
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        let _ = self.inner.live.send(event);
    }

    /// Until [`EventLog::replayed_through`] says where the old log ends, nothing applied is news:
    /// call this before the store is filled from the log.
    pub fn replaying(&self) {
        self.inner
            .replayed_through
            .store(u64::MAX, Ordering::Relaxed);
    }

    /// Entries up to `index` were in the log before this run: applying them again is no event.
    pub fn replayed_through(&self, index: u64) {
        self.inner.replayed_through.store(index, Ordering::Relaxed);
    }

    /// Records the events of every entry `memory` applies (once the entry's last change is in),
    /// until `shutdown` changes.
    pub fn follow(
        &self,
        memory: &MemoryStore,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let mut changes = memory.watch();
        let log = self.clone();
        tokio::spawn(async move {
            let mut entry = Vec::new();
            loop {
                let change = tokio::select! {
                    change = changes.recv() => change,
                    _ = shutdown.changed() => return,
                };
                match change {
                    Ok(Event::Commit { index }) => {
                        let news = index > log.inner.replayed_through.load(Ordering::Relaxed);
                        for event in entry.drain(..) {
                            if news {
                                log.keep(event);
                            }
                        }
                    }
                    Ok(Event::Reset) => entry.clear(),
                    Ok(change) => {
                        if is_event(&change) {
                            let time_nano = change_time(&change).unwrap_or_else(now_nanos);
                            entry.push(Recorded::Change { change, time_nano });
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "events fell behind the store; some were not recorded"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    /// The remembered events `filter` selects, then the new ones, until its `until` passes.
    /// A subscriber that falls [`LIVE_BUFFER`] events behind gets an error and the end.
    pub fn subscribe(
        &self,
        filter: Filter,
    ) -> impl Stream<Item = Result<ClusterEvent, Status>> + Send + 'static {
        let (backlog, live) = {
            let history = self.inner.history.lock();
            let backlog: VecDeque<Arc<Recorded>> = if filter.replays() {
                history
                    .iter()
                    .filter(|e| filter.admits(e))
                    .cloned()
                    .collect()
            } else {
                VecDeque::new()
            };
            (backlog, self.inner.live.subscribe())
        };
        let deadline = filter.until.map(|until| {
            let wait = u64::try_from(until.saturating_sub(now_nanos())).unwrap_or(0);
            tokio::time::Instant::now() + std::time::Duration::from_nanos(wait)
        });
        let state = Subscription {
            filter,
            backlog,
            live,
            deadline,
            done: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            let next = s.next().await?;
            Some((next, s))
        })
    }
}

/// When a created or updated object was written, as its metadata says.
fn change_time(change: &Event) -> Option<i64> {
    use crate::store::Object;
    if change.is_delete() {
        return None;
    }
    let meta = match change.object()? {
        Object::Node(o) => &o.meta,
        Object::Service(o) => &o.meta,
        Object::Task(o) => &o.meta,
        Object::Cluster(o) => &o.meta,
        Object::Network(o) => &o.meta,
        Object::Secret(o) => &o.meta,
        Object::Config(o) => &o.meta,
    };
    meta.as_ref().map(|m| m.updated_at).filter(|t| *t > 0)
}

/// An event as the log keeps it. A store change is put in Docker's shape only when a subscriber
/// reads it: a leader records several changes of each of a million tasks while, as a rule, no
/// one watches (building each was 5.8% of a leader creating a million tasks).
enum Recorded {
    Change { change: Event, time_nano: i64 },
    Event(ClusterEvent),
}

impl Recorded {
    fn kind(&self) -> &str {
        match self {
            Recorded::Change { change, .. } => change.object().map_or("", |o| o.kind().name()),
            Recorded::Event(event) => &event.r#type,
        }
    }

    fn time_nano(&self) -> i64 {
        match self {
            Recorded::Change { time_nano, .. } => *time_nano,
            Recorded::Event(event) => event.time_nano,
        }
    }

    /// The event in Docker's shape (`None` only for a change that is no event, which the log
    /// never keeps).
    fn event(&self) -> Option<ClusterEvent> {
        match self {
            Recorded::Change { change, time_nano } => event(change).map(|e| ClusterEvent {
                time_nano: *time_nano,
                ..e
            }),
            Recorded::Event(event) => Some(event.clone()),
        }
    }
}

struct Subscription {
    filter: Filter,
    backlog: VecDeque<Arc<Recorded>>,
    live: broadcast::Receiver<Arc<Recorded>>,
    deadline: Option<tokio::time::Instant>,
    done: bool,
}

impl Subscription {
    async fn next(&mut self) -> Option<Result<ClusterEvent, Status>> {
        if self.done {
            return None;
        }
        while let Some(recorded) = self.backlog.pop_front() {
            if let Some(event) = recorded.event() {
                return Some(Ok(event));
            }
        }
        loop {
            let received = match self.deadline {
                Some(deadline) => tokio::select! {
                    received = self.live.recv() => received,
                    _ = tokio::time::sleep_until(deadline) => return None,
                },
                None => self.live.recv().await,
            };
            match received {
                Ok(recorded) if self.filter.admits(&recorded) => {
                    if let Some(event) = recorded.event() {
                        return Some(Ok(event));
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.done = true;
                    return Some(Err(Status::resource_exhausted(format!(
                        "this events client fell behind and {missed} events were dropped: read faster, or run again with --since to catch up"
                    ))));
                }
            }
        }
    }
}

/// Which events a subscriber wants: types (none means all) and a time window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub types: Vec<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Filter {
    /// The request's filter; a type that does not exist or an empty window is an error.
    pub fn from_request(request: &EventsRequest) -> Result<Self, String> {
        for kind in &request.types {
            if !TYPES.contains(&kind.as_str()) {
                return Err(format!(
                    "unknown event type {kind:?}: expected one of {}",
                    TYPES.join(", ")
                ));
            }
        }
        if let (Some(since), Some(until)) = (request.since_ns, request.until_ns)
            && since > until
        {
            return Err("--since must be before --until".into());
        }
        Ok(Self {
            types: request.types.clone(),
            since: request.since_ns,
            until: request.until_ns,
        })
    }

    /// Whether remembered events are sent at all: only when a time window was asked for.
    fn replays(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    pub fn matches(&self, event: &ClusterEvent) -> bool {
        self.selects(&event.r#type, event.time_nano)
    }

    fn admits(&self, recorded: &Recorded) -> bool {
        self.selects(recorded.kind(), recorded.time_nano())
    }

    fn selects(&self, kind: &str, time_nano: i64) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == kind))
            && self.since.is_none_or(|since| time_nano >= since)
            && self.until.is_none_or(|until| time_nano <= until)
    }
}
