//! One simulated node: it joins as a real one does (the root CA pinned by the join token, a
//! certificate issued for its own key), then keeps a dispatcher session over its own mutual-TLS
//! connection — heartbeats at the period the managers name, the assignments stream, the log
//! subscriptions stream, batched task-status reports — and runs its tasks with the real agent's
//! worker on [`SimExecutor`]. The session loop is the agent's (`mesh_agent::session`), measured:
//! it records the largest assignments message any node received.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mesh_agent::session::{
    AbortOnDrop, Backoff, Beat, PartialSet, coalesce, heartbeat_period, heartbeats,
};
use mesh_agent::worker::Worker;
use mesh_control::ca::{NodeKey, TlsIdentity, connect, connect_with_roots, fetch_root_ca, token};
use mesh_proto::dispatcher_client::DispatcherClient;
use mesh_proto::node_ca_client::NodeCaClient;
use mesh_proto::{
    AssignmentsRequest, EngineDescription, IssueNodeCertificateRequest, LogSubscriptionsRequest,
    NodeDescription, Platform, Resources, SessionRequest, TaskStatusUpdate,
    UpdateTaskStatusRequest,
};
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::executor::SimExecutor;

/// How long opening a session, or one call on it, may take before the node tries again.
const CALL_LIMIT: Duration = Duration::from_secs(15);

/// What every simulated node adds to, read by the benchmark.
#[derive(Debug, Default)]
pub struct Counters {
    /// The largest assignments message received, encoded, in bytes.
    pub largest_assignments: AtomicU64,
    pub assignments_messages: AtomicU64,
    pub assignments_bytes: AtomicU64,
    /// Task status reports sent (one per task and state).
    pub reports: AtomicU64,
    /// Sessions that failed and were opened again.
    pub reconnects: AtomicU64,
    /// How late a heartbeat was sent after its tick at most, in ms: this process's own delay (its
    /// runtime busy, or the session's loop held by another call), not the manager's.
    pub heartbeat_late_ms: AtomicU64,
    /// Heartbeats sent a whole period late or more: with the 5 s period and its 7.5 s grace, one
    /// 2.5 s late can already cost its node its session.
    pub heartbeats_late: AtomicU64,
    /// The longest a heartbeat call took to be answered, in ms.
    pub heartbeat_call_ms: AtomicU64,
    /// Failed sessions by the step that failed and the status code it failed with: how many,
    /// and the first one's message.
    failures: Mutex<BTreeMap<FailureKind, (u64, String)>>,
}

impl Counters {
    fn failed(&self, failure: &Failure) {
        let key = (failure.step, failure.status.code() as i32);
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| (0, explain(&failure.status)))
            .0 += 1;
    }

    /// The sessions failed since the last call, by step and code, the most frequent first, with
    /// the first one's message: `"heartbeat: DeadlineExceeded 7000 (no answer in time),
    /// assignments: Unavailable 12 (…)"`, or `"none"`.
    pub fn take_failures(&self) -> String {
        let failures =
            std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()));
        let mut counted: Vec<_> = failures.iter().collect();
        counted.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        if counted.is_empty() {
            return "none".into();
        }
        counted
            .iter()
            .map(|((step, code), (count, message))| {
                format!("{step}: {:?} {count} ({message})", tonic::Code::from(*code))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A session step and a status code, as an `i32` (`tonic::Code` has no order).
type FailureKind = (&'static str, i32);

/// A status's message and the chain of errors under it (a transport error's cause is there).
fn explain(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        text.push_str(": ");
        text.push_str(&error.to_string());
        source = error.source();
    }
    text
}

/// Why a session ended: the step of it that failed, and how.
#[derive(Debug)]
struct Failure {
    step: &'static str,
    status: tonic::Status,
}

/// Tags a failed call with the session's step it was.
fn at(step: &'static str) -> impl FnOnce(tonic::Status) -> Failure {
    move |status| Failure { step, status }
}

/// How late counts as late in [`Counters::heartbeats_late`]: half the default 5 s period, the
/// room its 7.5 s grace leaves.
pub const LATE: Duration = Duration::from_millis(2500);

/// A node that has joined: its id, certificate and the address it advertises.
pub struct Joined {
    pub node_id: String,
    pub identity: TlsIdentity,
    pub hostname: String,
    pub addr: String,
}

/// `swarm join --token TOKEN MANAGER` as meshd runs it, for the node `hostname` advertising `addr`.
pub async fn join(
    manager: &str,
    join_token: &str,
    hostname: String,
    addr: String,
) -> anyhow::Result<Joined> {
    let parsed = token::parse(join_token).context("the worker join token")?;
    let roots = fetch_root_ca(manager, &parsed).await?;
    let key = NodeKey::generate()?;
    let channel = connect_with_roots(manager, &roots, None).await?;
    let issued = NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            csr: key.csr_der()?,
            token: join_token.to_owned(),
            addr: addr.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("IssueNodeCertificate: {}", s.message()))?
        .into_inner();
    let identity = TlsIdentity::from_pem(&issued.certificate, key.to_pem(), &issued.root_ca)?;
    Ok(Joined {
        node_id: issued.node_id,
        identity,
        hostname,
        addr,
    })
}

/// Keeps the node's session (reconnecting, to the leader a manager names first) until `stop`.
pub async fn run(
    node: Joined,
    managers: Vec<String>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let executor = Arc::new(SimExecutor::new(description(&node.hostname)));
    let (worker, mut statuses) = Worker::new(executor, node.node_id.clone(), None, None);
    let mut unsent: Vec<TaskStatusUpdate> = Vec::new();
    let mut leader: Option<String> = None;
    let mut attempt = 0usize;
    // The real agent's waits between attempts, so that a manager's restart meets the same
    // crowd of reconnections as with real nodes.
    let mut backoff = Backoff::default();
    loop {
        let addr = leader
            .take()
            .unwrap_or_else(|| managers[attempt % managers.len()].clone());
        let outcome = tokio::select! {
            outcome = session(&node, &addr, &worker, &mut statuses, &mut unsent, &counters) => outcome,
            _ = stop.wait_for(|s| *s) => break,
        };
        match outcome {
            Err(failure) => {
                counters.failed(&failure);
                let Failure { step, status } = failure;
                leader = status
                    .metadata()
                    .get(mesh_control::api::LEADER_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                if leader.is_some() {
                    backoff.hinted();
                }
                tracing::debug!(node = %node.hostname, step, error = %status.message(), "session failed");
            }
            Ok(()) => backoff.reset(),
        }
        counters.reconnects.fetch_add(1, Ordering::Relaxed);
        attempt += 1;
        tokio::select! {
            () = tokio::time::sleep(backoff.next_wait()) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    worker.shutdown().await;
}

fn description(hostname: &str) -> NodeDescription {
    NodeDescription {
        hostname: hostname.to_owned(),
        platform: Some(Platform {
            os: "linux".into(),
            architecture: "x86_64".into(),
        }),
        resources: Some(Resources {
            nano_cpus: 2_000_000_000,
            memory_bytes: 4 << 30,
        }),
        engine: Some(EngineDescription::default()),
    }
}

/// A call's answer, or `DeadlineExceeded` when none comes in time.
async fn within<T>(
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(CALL_LIMIT, call)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in time")))
}

/// Records how late a heartbeat was sent after its tick and how long its answer took.
fn record(counters: &Counters, beat: Beat) {
    let late = beat.late;
    counters
        .heartbeat_late_ms
        .fetch_max(late.as_millis() as u64, Ordering::Relaxed);
    if late >= LATE {
        counters.heartbeats_late.fetch_add(1, Ordering::Relaxed);
    }
    counters
        .heartbeat_call_ms
        .fetch_max(beat.answered_in.as_millis() as u64, Ordering::Relaxed);
}

/// One session, until it fails.
async fn session(
    node: &Joined,
    addr: &str,
    worker: &Worker,
    statuses: &mut mpsc::UnboundedReceiver<TaskStatusUpdate>,
    unsent: &mut Vec<TaskStatusUpdate>,
    counters: &Arc<Counters>,
) -> Result<(), Failure> {
    let channel = connect(addr, &node.identity)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))
        .map_err(at("connect"))?;
    let mut client = DispatcherClient::new(channel).max_decoding_message_size(usize::MAX);
    let request = SessionRequest {
        node_id: node.node_id.clone(),
        description: Some(description(&node.hostname)),
        addr: node.addr.clone(),
    };
    let mut session_stream = within(client.session(request))
        .await
        .map_err(at("session"))?
        .into_inner();
    let first = within(session_stream.message())
        .await
        .and_then(|m| m.ok_or_else(|| tonic::Status::unavailable("the session ended")))
        .map_err(at("first session message"))?;
    let session_id = first.session_id.clone();
    let period = heartbeat_period(first.heartbeat_period_ns);
    let request = AssignmentsRequest {
        session_id: session_id.clone(),
    };
    let mut assignments = within(client.assignments(request))
        .await
        .map_err(at("assignments"))?
        .into_inner();
    let request = LogSubscriptionsRequest {
        session_id: session_id.clone(),
    };
    let mut subscriptions = within(client.log_subscriptions(request))
        .await
        .map_err(at("log subscriptions"))?
        .into_inner();
    unsent.extend(worker.statuses());
    let mut partial = PartialSet::default();
    // In a task of its own, as the agent's: this loop waits on its status reports and the worker.
    let beating = counters.clone();
    let (reported, reports) = watch::channel(Instant::now());
    let mut beats = AbortOnDrop(tokio::spawn(heartbeats(
        client.clone(),
        session_id.clone(),
        period,
        Some(CALL_LIMIT),
        first.reports_are_heartbeats.then_some(reports),
        move |beat| record(&beating, beat),
    )));
    loop {
        if !unsent.is_empty() {
            let mut updates = std::mem::take(unsent);
            coalesce(&mut updates);
            let count = updates.len() as u64;
            let request = UpdateTaskStatusRequest {
                session_id: session_id.clone(),
                updates: updates.clone(),
            };
            let sent = Instant::now();
            if let Err(status) = within(client.update_task_status(request)).await {
                *unsent = updates;
                return Err(at("status report")(status));
            }
            reported.send_replace(sent);
            counters.reports.fetch_add(count, Ordering::Relaxed);
        }
        tokio::select! {
            beat = &mut beats.0 => {
                let status = beat.unwrap_or_else(|join| tonic::Status::internal(join.to_string()));
                return Err(at("heartbeat")(status));
            }
            message = session_stream.message() => {
                message
                    .and_then(|m| m.ok_or_else(|| tonic::Status::unavailable("the session ended")))
                    .map_err(at("session stream"))?;
            }
            message = assignments.message() => {
                let message = message
                    .and_then(|m| m.ok_or_else(|| tonic::Status::unavailable("the assignments ended")))
                    .map_err(at("assignments stream"))?;
                let size = message.encoded_len() as u64;
                counters.largest_assignments.fetch_max(size, Ordering::Relaxed);
                counters.assignments_messages.fetch_add(1, Ordering::Relaxed);
                counters.assignments_bytes.fetch_add(size, Ordering::Relaxed);
                if let Some(whole) = partial.add(message) {
                    worker.assign(whole).await;
                }
            }
            update = statuses.recv() => {
                let Some(update) = update else { return Ok(()) };
                unsent.push(update);
                while let Ok(more) = statuses.try_recv() {
                    unsent.push(more);
                }
            }
            // No task here writes logs: a subscription is read and left unanswered.
            subscription = subscriptions.message() => {
                subscription
                    .and_then(|s| s.ok_or_else(|| tonic::Status::unavailable("the log subscriptions ended")))
                    .map_err(at("log subscriptions stream"))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{AssignmentsMessage, Task};

    fn part(ids: &[&str], partial: bool) -> AssignmentsMessage {
        AssignmentsMessage {
            update_tasks: ids
                .iter()
                .map(|id| Task {
                    id: (*id).into(),
                    ..Default::default()
                })
                .collect(),
            partial,
            ..Default::default()
        }
    }

    #[test]
    fn failed_sessions_are_told_by_step_and_code_most_frequent_first() {
        let counters = Counters::default();
        assert_eq!(counters.take_failures(), "none");
        let fail = |step, status: tonic::Status| counters.failed(&Failure { step, status });
        fail("heartbeat", tonic::Status::not_found("session invalid"));
        fail("session", tonic::Status::deadline_exceeded("late"));
        fail("heartbeat", tonic::Status::not_found("session expired"));
        fail("heartbeat", tonic::Status::unavailable("gone"));
        assert_eq!(
            counters.take_failures(),
            "heartbeat: NotFound 2 (session invalid), heartbeat: Unavailable 1 (gone), session: \
             DeadlineExceeded 1 (late)"
        );
        // Taken: the next phase counts its own.
        assert_eq!(counters.take_failures(), "none");
    }

    #[test]
    fn a_split_set_is_applied_whole() {
        let mut set = PartialSet::default();
        assert!(set.add(part(&["a"], true)).is_none());
        assert!(set.add(part(&["b", "c"], true)).is_none());
        let whole = set.add(part(&["d"], false)).expect("whole");
        let ids: Vec<_> = whole.update_tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        // Nothing of the applied set is kept: the next whole message comes back alone.
        let next = set.add(part(&["e"], false)).expect("whole");
        let ids: Vec<_> = next.update_tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["e"]);
    }
}
