//! The agent's session with the managers: register, heartbeat, receive assignments, report task
//! status in batches, and serve log subscriptions. Reconnects with backoff, trying each known
//! manager in turn, until shut down.

use futures::StreamExt;
use mesh_control::transport::Transport;
use mesh_proto::dispatcher_client::DispatcherClient;
use mesh_proto::{
    AssignmentsMessage, AssignmentsRequest, HeartbeatRequest, LogSubscription,
    LogSubscriptionsRequest, PublishLogsMessage, SessionRequest, TaskStatusUpdate,
    UpdateTaskStatusRequest,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::exec::Executor;
use crate::worker::Worker;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot reach manager {addr}: {source}")]
    Connect {
        addr: String,
        source: mesh_control::ca::CaError,
    },
    #[error("dispatcher: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("the session stream ended")]
    Ended,
    #[error("the node's certificate was renewed")]
    Renewed,
}

/// How long opening a session (and its streams) may take before another manager is tried.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SessionConfig {
    pub node_id: String,
    /// This node's advertise address.
    pub addr: String,
    /// Managers to try, in order; refreshed from every session message.
    pub managers: Vec<String>,
    pub transport: Transport,
    /// Where the node's role and the CA rotation, as the managers see them, are published.
    pub view: watch::Sender<ClusterView>,
}

/// What a session message says of this node's standing; the daemon acts on changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterView {
    pub role: i32,
    pub ca_rotation: u64,
    /// The managers' addresses, sorted.
    pub managers: Vec<String>,
    /// The gossip keys `(id, secret)`, newest first.
    pub gossip_keys: Vec<(u32, Vec<u8>)>,
}

pub async fn run(
    mut config: SessionConfig,
    worker: Worker,
    executor: Arc<dyn Executor>,
    mut statuses: mpsc::UnboundedReceiver<TaskStatusUpdate>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    let mut attempt = 0usize;
    // Reports that could not be delivered; sent first on the next session.
    let mut unsent: Vec<TaskStatusUpdate> = Vec::new();
    // Where a manager that does not lead said the leader is: tried first.
    let mut leader: Option<String> = None;
    loop {
        let next = leader.take().or_else(|| {
            config
                .managers
                .get(attempt % config.managers.len().max(1))
                .cloned()
        });
        let Some(addr) = next else {
            tracing::error!("no manager to connect to");
            return;
        };
        let result = tokio::select! {
            result = session(&mut config, &addr, &worker, executor.as_ref(), &mut statuses, &mut unsent) => result,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match result {
            Err(SessionError::Rpc(status))
                if status.code() == tonic::Code::PermissionDenied
                    && status.message() == mesh_control::ca::REMOVED_NODE =>
            {
                // The managers refuse this node (it was removed): retrying cannot help.
                tracing::error!(
                    manager = %addr,
                    reason = %status.message(),
                    "the cluster refused this node; not reconnecting (use \"meshctl swarm leave --force\")"
                );
                let _ = shutdown.wait_for(|s| *s).await;
                return;
            }
            Err(SessionError::Ended | SessionError::Renewed) => backoff.reset(),
            Err(err) => {
                leader = leader_hint(&err);
                if leader.is_some() {
                    backoff.hinted();
                }
                tracing::warn!(manager = %addr, error = %err, "session failed; reconnecting");
                attempt += 1;
            }
            Ok(()) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_wait()) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// The wait before the next session attempt: a ceiling doubling from 100 ms to 2 s after each
/// failure, and each wait drawn at random between half the ceiling and all of it, so that the
/// thousands of nodes that lost their manager at the same instant (its restart, a failover) do
/// not all knock again in the same millisecond, wave after wave (swarmkit's agent draws its
/// waits at random too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    ceiling: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    /// After a manager named the leader: that one is tried soon.
    pub const HINTED: Duration = Duration::from_millis(50);
    pub const MAX: Duration = Duration::from_secs(2);

    /// Back to the first ceiling (a session that ended normally, or was renewed).
    pub fn reset(&mut self) {
        self.ceiling = Self::FIRST;
    }

    pub fn hinted(&mut self) {
        self.ceiling = Self::HINTED;
    }

    /// This wait, drawn under the ceiling; the ceiling doubles for the next.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(Self::MAX);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(nanos / 2..=nanos))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            ceiling: Self::FIRST,
        }
    }
}

async fn session(
    config: &mut SessionConfig,
    addr: &str,
    worker: &Worker,
    executor: &dyn Executor,
    statuses: &mut mpsc::UnboundedReceiver<TaskStatusUpdate>,
    unsent: &mut Vec<TaskStatusUpdate>,
) -> Result<(), SessionError> {
    // A session runs under one certificate; once it is renewed, the next session presents the
    // new one, which the dispatcher then records as the node's current certificate.
    let generation = config.transport.generation();
    let channel = config
        .transport
        .channel(addr)
        .await
        .map_err(|source| SessionError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let mut client = DispatcherClient::new(channel);
    let description = match executor.describe().await {
        Ok(d) => Some(d),
        Err(err) => {
            tracing::warn!(error = %err, "cannot describe this node");
            None
        }
    };
    let request = SessionRequest {
        node_id: config.node_id.clone(),
        description,
        addr: config.addr.clone(),
    };
    let mut session_stream = within(OPEN_TIMEOUT, client.session(request))
        .await?
        .into_inner();
    let first = within(OPEN_TIMEOUT, session_stream.message())
        .await?
        .ok_or(SessionError::Ended)?;
    let session_id = first.session_id.clone();
    learn_managers(config, &first);
    let period = heartbeat_period(first.heartbeat_period_ns);
    // The session id is a per-node secret: never logged.
    tracing::info!(manager = %addr, heartbeat = ?period, "session established");

    let request = AssignmentsRequest {
        session_id: session_id.clone(),
    };
    let mut assignments = within(OPEN_TIMEOUT, client.assignments(request))
        .await?
        .into_inner();
    let request = LogSubscriptionsRequest {
        session_id: session_id.clone(),
    };
    let mut subscriptions = within(OPEN_TIMEOUT, client.log_subscriptions(request))
        .await?
        .into_inner();
    // After reconnecting, the manager may have missed reports: send every task's latest.
    unsent.extend(worker.statuses());

    let mut complete = PartialSet::default();
    // The heartbeats go on in a task of their own, as Swarm's agent beats from a goroutine of its
    // own: this loop waits for its status reports to be taken and for the worker to take each
    // assignment, and a heartbeat queued behind either came late enough, on a loaded node, for
    // the manager to mark a healthy node down.
    let (reported, reports) = watch::channel(Instant::now());
    let mut beats = AbortOnDrop(tokio::spawn(heartbeats(
        client.clone(),
        session_id.clone(),
        period,
        None,
        first.reports_are_heartbeats.then_some(reports),
        |_| {},
    )));
    // A renewed certificate ends the session: looked for at the heartbeat period.
    let mut renewal = tokio::time::interval(period);
    renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut log_tasks: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let result = loop {
        if !unsent.is_empty() {
            let mut updates = std::mem::take(unsent);
            coalesce(&mut updates);
            let request = UpdateTaskStatusRequest {
                session_id: session_id.clone(),
                updates: updates.clone(),
            };
            let sent = Instant::now();
            if let Err(status) = within(period, client.update_task_status(request)).await {
                *unsent = updates;
                break Err(status.into());
            }
            reported.send_replace(sent);
        }
        tokio::select! {
            beat = &mut beats.0 => match beat {
                Ok(failed) => break Err(failed.into()),
                Err(join) => break Err(tonic::Status::internal(join.to_string()).into()),
            },
            _ = renewal.tick() => {
                if config.transport.generation() != generation {
                    break Err(SessionError::Renewed);
                }
            }
            message = session_stream.message() => match message {
                Ok(Some(message)) => learn_managers(config, &message),
                Ok(None) => break Err(SessionError::Ended),
                Err(status) => break Err(status.into()),
            },
            message = assignments.message() => match message {
                Ok(Some(message)) => {
                    if let Some(message) = complete.add(message) {
                        worker.assign(message).await;
                    }
                }
                Ok(None) => break Err(SessionError::Ended),
                Err(status) => break Err(status.into()),
            },
            update = statuses.recv() => {
                let Some(update) = update else { break Ok(()) };
                unsent.push(update);
                while let Ok(more) = statuses.try_recv() {
                    unsent.push(more);
                }
            }
            subscription = subscriptions.message() => match subscription {
                Ok(Some(sub)) => serve_logs(&client, &session_id, worker, sub, &mut log_tasks),
                Ok(None) => break Err(SessionError::Ended),
                Err(status) => break Err(status.into()),
            },
        }
    };
    for (_, task) in log_tasks {
        task.abort();
    }
    result
}

/// Aborts its task when dropped: a session's heartbeats end with the session.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One heartbeat as it went: how long after its tick it was sent, and how long its answer took.
#[derive(Debug, Clone, Copy)]
pub struct Beat {
    pub late: Duration,
    pub answered_in: Duration,
}

/// Sends the session's heartbeats until one fails, and returns why; `observe` sees each one
/// answered. A call may take `limit`, by default one period: a manager that goes silent fails the
/// heartbeat after one period, the session ends and the next one tries another manager. The
/// managers may change the period while the session lasts; each answer names it.
///
/// `reports`, where the managers count a status report they take as a heartbeat (the session
/// message says so), is when the session's last report was sent: a heartbeat goes only after a
/// period without either, so a node busy reporting sends few. At 10,000 nodes a heartbeat cost
/// the leader and the node about 150 us of CPU each, 2,000 of them a second.
pub async fn heartbeats(
    client: DispatcherClient<Channel>,
    session_id: String,
    period: Duration,
    limit: Option<Duration>,
    reports: Option<watch::Receiver<Instant>>,
    observe: impl FnMut(Beat),
) -> tonic::Status {
    beat_until_failure(period, limit, reports, observe, move || {
        let mut client = client.clone();
        let request = HeartbeatRequest {
            session_id: session_id.clone(),
        };
        async move {
            let answer = client.heartbeat(request).await?;
            Ok(answer.into_inner().period_ns)
        }
    })
    .await
}

/// [`heartbeats`] with `beat` for the call, which answers with the period the managers name.
async fn beat_until_failure<F>(
    mut period: Duration,
    limit: Option<Duration>,
    reports: Option<watch::Receiver<Instant>>,
    mut observe: impl FnMut(Beat),
    mut beat: impl FnMut() -> F,
) -> tonic::Status
where
    F: Future<Output = Result<i64, tonic::Status>>,
{
    let mut due = Instant::now() + period;
    loop {
        tokio::time::sleep_until(due).await;
        if let Some(reported) = reports.as_ref().map(|r| *r.borrow())
            && reported + period > due
        {
            due = reported + period;
            continue;
        }
        let sent = Instant::now();
        match within(limit.unwrap_or(period), beat()).await {
            Ok(period_ns) => {
                observe(Beat {
                    late: sent - due,
                    answered_in: sent.elapsed(),
                });
                let now = heartbeat_period(period_ns);
                due = if now == period {
                    sent + period
                } else {
                    period = now;
                    Instant::now() + period
                };
            }
            Err(status) => return status,
        }
    }
}

/// Remembers the managers a session message names, so that the next reconnection can fail over.
fn learn_managers(config: &mut SessionConfig, message: &mesh_proto::SessionMessage) {
    let mut managers: Vec<String> = message.managers.iter().map(|m| m.addr.clone()).collect();
    managers.sort();
    managers.dedup();
    if !managers.is_empty() {
        config.managers = managers.clone();
    }
    config.view.send_if_modified(|view| {
        let next = ClusterView {
            role: message.role,
            ca_rotation: message.ca_rotation,
            managers,
            gossip_keys: message
                .gossip_keys
                .iter()
                .map(|k| (k.id, k.key.clone()))
                .collect(),
        };
        let changed = *view != next;
        *view = next;
        changed
    });
}

/// Keeps each task's latest status update only, where it came in `updates`: a task that went
/// through several states while the last report was on its way is reported once, in the state
/// it is in now, as Swarm's agent reports. A task's state only moves forward and the managers
/// keep only its latest, so nothing they act on is lost; every state reported costs the leader
/// a store write, a Raft entry's share and an event to every reconciler.
pub fn coalesce(updates: &mut Vec<TaskStatusUpdate>) {
    let mut seen = HashSet::with_capacity(updates.len());
    let latest: Vec<bool> = updates
        .iter()
        .rev()
        .map(|u| seen.insert(u.task_id.as_str()))
        .collect();
    let mut latest = latest.into_iter().rev();
    updates.retain(|_| latest.next().unwrap_or(true));
}

/// The heartbeat period a manager names, in nanoseconds; at least 100 ms.
pub fn heartbeat_period(nanos: i64) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(0).max(100_000_000))
}

/// A call's answer, or `DeadlineExceeded` when none comes within `deadline`: a manager whose
/// packets are dropped never answers at all.
async fn within<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in time")))
}

/// The leader's address, when a manager that does not lead says where it is.
fn leader_hint(err: &SessionError) -> Option<String> {
    match err {
        SessionError::Rpc(status) => status
            .metadata()
            .get(mesh_control::api::LEADER_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        _ => None,
    }
}

/// Reassembles a complete assignment set that the dispatcher split into several messages.
/// Public so that simulated nodes (the scale benchmark) reassemble sets exactly as meshd does.
#[derive(Default)]
pub struct PartialSet {
    pending: Option<AssignmentsMessage>,
}

impl PartialSet {
    /// The message to apply, once the set it belongs to is whole.
    pub fn add(&mut self, message: AssignmentsMessage) -> Option<AssignmentsMessage> {
        let message = match self.pending.take() {
            Some(mut pending) if message.r#type == pending.r#type => {
                pending.update_tasks.extend(message.update_tasks);
                pending.remove_tasks.extend(message.remove_tasks);
                pending.update_secrets.extend(message.update_secrets);
                pending.remove_secrets.extend(message.remove_secrets);
                pending.update_configs.extend(message.update_configs);
                pending.remove_configs.extend(message.remove_configs);
                pending.partial = message.partial;
                pending
            }
            _ => message,
        };
        if message.partial {
            self.pending = Some(message);
            None
        } else {
            Some(message)
        }
    }
}

/// Starts (or, for a close, stops) publishing the logs of one subscription.
fn serve_logs(
    client: &DispatcherClient<Channel>,
    session_id: &str,
    worker: &Worker,
    sub: LogSubscription,
    running: &mut HashMap<String, tokio::task::AbortHandle>,
) {
    running.retain(|_, task| !task.is_finished());
    if sub.close {
        if let Some(task) = running.remove(&sub.subscription_id) {
            task.abort();
        }
        return;
    }
    let mut client = client.clone();
    let close = PublishLogsMessage {
        session_id: session_id.to_string(),
        subscription_id: sub.subscription_id.clone(),
        messages: vec![],
        close: true,
    };
    let (sid, subid) = (close.session_id.clone(), close.subscription_id.clone());
    let mut lines = worker.logs(&sub).ready_chunks(64);
    // The request stream is fed through a channel: tonic needs a plain 'static stream.
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(async move {
        let publish = client.publish_logs(tokio_stream::wrappers::ReceiverStream::new(rx));
        let feed = async move {
            while let Some(messages) = lines.next().await {
                let message = PublishLogsMessage {
                    session_id: sid.clone(),
                    subscription_id: subid.clone(),
                    messages,
                    close: false,
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(close).await;
        };
        let (published, ()) = tokio::join!(publish, feed);
        if let Err(status) = published {
            tracing::debug!(error = %status, "log publishing ended");
        }
    });
    running.insert(sub.subscription_id, task.abort_handle());
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{Secret, Task, assignments_message::Type};

    /// Where the managers count a report as a heartbeat, no heartbeat goes while reports go
    /// every 2 s, and they start again a period after the last report; where they do not, the
    /// heartbeats go every period whatever the reports.
    #[tokio::test(start_paused = true)]
    async fn reports_stand_for_heartbeats_where_the_managers_count_them() {
        let period = Duration::from_secs(5);
        for counted in [true, false] {
            let start = Instant::now();
            let (reported, reports) = watch::channel(start);
            let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
            let beats = AbortOnDrop(tokio::spawn(beat_until_failure(
                period,
                None,
                counted.then_some(reports),
                |_| {},
                {
                    let sent = sent.clone();
                    move || {
                        sent.lock()
                            .unwrap()
                            .push((Instant::now() - start).as_secs());
                        async move { Ok(period.as_nanos() as i64) }
                    }
                },
            )));
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                reported.send_replace(Instant::now());
            }
            tokio::time::sleep(Duration::from_secs(12)).await;
            drop(beats);
            let sent = sent.lock().unwrap().clone();
            if counted {
                assert_eq!(sent, [25, 30], "a period after the last report at 20 s");
            } else {
                assert_eq!(sent, [5, 10, 15, 20, 25, 30]);
            }
        }
    }

    /// Of each task's updates only the latest goes, where it came; other tasks' are untouched.
    #[test]
    fn a_report_holds_each_tasks_latest_state_only() {
        use mesh_proto::{TaskState, TaskStatus};
        let update = |task: &str, state: TaskState| TaskStatusUpdate {
            task_id: task.into(),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
        };
        let mut updates = vec![
            update("a", TaskState::Accepted),
            update("b", TaskState::Accepted),
            update("a", TaskState::Preparing),
            update("c", TaskState::Running),
            update("a", TaskState::Running),
            update("b", TaskState::Failed),
        ];
        coalesce(&mut updates);
        let left: Vec<(&str, i32)> = updates
            .iter()
            .map(|u| (u.task_id.as_str(), u.status.as_ref().map_or(0, |s| s.state)))
            .collect();
        assert_eq!(
            left,
            [
                ("c", TaskState::Running as i32),
                ("a", TaskState::Running as i32),
                ("b", TaskState::Failed as i32),
            ]
        );
        let mut none = Vec::new();
        coalesce(&mut none);
        assert!(none.is_empty());
    }

    /// Waits double up to the maximum, each drawn between half its ceiling and all of it, and
    /// spread: many nodes failing together do not all wait the same time.
    #[test]
    fn backoff_doubles_to_its_maximum_and_spreads_its_waits() {
        let mut backoff = Backoff::default();
        let ceilings = [100, 200, 400, 800, 1600, 2000, 2000];
        for ceiling in ceilings.map(Duration::from_millis) {
            let wait = backoff.next_wait();
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} under {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_wait() <= Backoff::FIRST);
        backoff.hinted();
        assert!(backoff.next_wait() <= Backoff::HINTED);

        let waits: std::collections::BTreeSet<Duration> =
            (0..1000).map(|_| Backoff::default().next_wait()).collect();
        assert!(
            waits.len() > 900,
            "only {} distinct first waits",
            waits.len()
        );
        let (low, high) = (waits.first().copied(), waits.last().copied());
        assert!(
            low < Some(Duration::from_millis(60)) && high > Some(Duration::from_millis(90)),
            "first waits span {low:?}..{high:?}"
        );
    }

    fn part(ids: &[&str], partial: bool) -> AssignmentsMessage {
        AssignmentsMessage {
            r#type: Type::Complete as i32,
            update_tasks: ids
                .iter()
                .map(|id| Task {
                    id: (*id).into(),
                    ..Default::default()
                })
                .collect(),
            remove_tasks: vec![],
            partial,
            update_secrets: vec![Secret {
                id: format!("secret-of-{}", ids.join("-")),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_split_set_is_applied_whole() {
        let mut set = PartialSet::default();
        assert!(set.add(part(&["a", "b"], true)).is_none());
        assert!(set.add(part(&["c"], true)).is_none());
        let whole = set.add(part(&["d"], false)).expect("complete");
        let ids: Vec<_> = whole.update_tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        let secrets: Vec<_> = whole.update_secrets.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(secrets, ["secret-of-a-b", "secret-of-c", "secret-of-d"]);
        assert!(!whole.partial);
        let single = set.add(part(&["e"], false)).expect("single message");
        assert_eq!(single.update_tasks.len(), 1);
    }
}
