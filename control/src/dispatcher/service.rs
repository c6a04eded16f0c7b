//! The gRPC face of the dispatcher.

use futures::StreamExt;
use mesh_proto::dispatcher_server::Dispatcher;
use mesh_proto::{
    AssignmentsMessage, AssignmentsRequest, Cluster, HeartbeatRequest, HeartbeatResponse,
    LogSubscription, LogSubscriptionsRequest, Node, NodeRole, NodeSpec, NodeState, NodeStatus,
    PublishLogsMessage, PublishLogsResponse, SessionMessage, SessionRequest,
    UpdateTaskStatusRequest, UpdateTaskStatusResponse,
};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::fanout::SessionInputs;
use super::status::StatusBatch;
use super::{Inner, assignments};
use crate::store::{Read, StoreError, new_id};

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

pub struct DispatcherService {
    inner: Arc<Inner>,
}

impl DispatcherService {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// How long a session may go without a heartbeat under the period in force now.
    fn grace(&self) -> std::time::Duration {
        let config = self.inner.config.borrow();
        super::sessions::heartbeat_grace(config.heartbeat_period, config.grace_multiplier)
    }

    fn check_active(&self) -> Result<(), Status> {
        if *self.inner.active.borrow() {
            return Ok(());
        }
        let mut status =
            Status::unavailable("this manager's dispatcher is not running: it is not the leader");
        let leader = self.inner.leadership.borrow().leader_addr.clone();
        if let Some(addr) = leader.and_then(|a| a.parse().ok()) {
            status
                .metadata_mut()
                .insert(crate::api::LEADER_METADATA, addr);
        }
        Err(status)
    }

    /// The node and close signal of session `session_id`, which must be the caller's own: a
    /// session id alone proves nothing.
    fn session<T>(
        &self,
        request: &Request<T>,
        session_id: &str,
    ) -> Result<(String, watch::Receiver<bool>), Status> {
        let caller = crate::ca::require_node(request)?;
        self.owned_session(&caller, session_id)
    }

    /// [`session`](Self::session) for a caller already identified.
    fn owned_session(
        &self,
        identity: &crate::ca::NodeIdentity,
        session_id: &str,
    ) -> Result<(String, watch::Receiver<bool>), Status> {
        self.check_active()?;
        // (An unknown session id is "not found"; another node's is refused below.)
        let (node_id, closed) = self
            .inner
            .sessions
            .get(session_id)
            .ok_or_else(|| Status::not_found("session invalid: open a new session"))?;
        if node_id != identity.node_id {
            return Err(Status::permission_denied(
                "this session belongs to another node",
            ));
        }
        Ok((node_id, closed))
    }

    /// Opens a session for a registering node, then writes the node READY. The session is open
    /// before the write is proposed: the heartbeat monitor marks a READY node without a session
    /// down, and a registration's commit can take seconds on a loaded leader (while 10,000 nodes
    /// joined, 372 were marked down between their write and their session, and stayed down with
    /// their sessions alive). The session's grace starts again once the node is written, when
    /// its agent hears of the session; a session that ran out meanwhile is refused, and the
    /// agent opens another. A call dropped meanwhile leaves its session to run out.
    pub(super) async fn open_session(
        &self,
        req: &SessionRequest,
        identity: &crate::ca::NodeIdentity,
    ) -> Result<(String, watch::Receiver<bool>), Status> {
        /// Ends the session unless its registration was written: a caller gone meanwhile (its
        /// call dropped) leaves no session that cannot expire.
        struct Opening<'a> {
            sessions: &'a super::sessions::Sessions,
            id: String,
            done: bool,
        }
        impl Drop for Opening<'_> {
            fn drop(&mut self) {
                if !self.done {
                    self.sessions.end(&self.id);
                }
            }
        }
        let session_id = new_id();
        let closed = self
            .inner
            .sessions
            .open_registering(&session_id, &req.node_id, self.grace());
        let mut opening = Opening {
            sessions: &self.inner.sessions,
            id: session_id.clone(),
            done: false,
        };
        self.register(req, identity)
            .await
            .map_err(crate::api::status)?;
        opening.done = true;
        if !self.inner.sessions.registered(&session_id, self.grace()) {
            return Err(Status::unavailable(
                "the session ended while the node was registered: open a new session",
            ));
        }
        Ok((session_id, closed))
    }

    /// Creates or refreshes the node object of a registering agent and marks it READY; a node
    /// READY already, as it describes itself, is not written again (after a leader's restart,
    /// 10,000 agents taking their sessions back each waited for a write of nothing new), unless
    /// a write marking it down may be on its way (its last session ran out): that write would
    /// land after, and leave a live node down.
    async fn register(
        &self,
        req: &SessionRequest,
        identity: &crate::ca::NodeIdentity,
    ) -> Result<(), StoreError> {
        let role = NodeRole::from(identity.role) as i32;
        let description = req.description.clone().unwrap_or_default();
        let status = NodeStatus {
            state: NodeState::Ready as i32,
            message: String::new(),
            addr: req.addr.clone(),
        };
        let marking_down = self.inner.sessions.being_marked_down(&req.node_id);
        // A manager joining the Raft group may create the same node concurrently: a lost race
        // is re-run against the node it made.
        self.inner
            .store
            .update_retrying(|tx| match tx.get::<Node>(&req.node_id) {
                Some(node)
                    if !marking_down
                        && node.description.as_ref() == Some(&description)
                        && node.status.as_ref() == Some(&status) =>
                {
                    Ok(())
                }
                Some(mut node) => {
                    node.description = Some(description.clone());
                    node.status = Some(status.clone());
                    tx.update(node)
                }
                None => tx.create(Node {
                    id: req.node_id.clone(),
                    spec: Some(NodeSpec {
                        desired_role: role,
                        ..Default::default()
                    }),
                    description: Some(description.clone()),
                    status: Some(status.clone()),
                    role,
                    ..Default::default()
                }),
            })
            .await
    }
}

/// What a node must know about the cluster and its own place in it.
fn session_message(
    inputs: &SessionInputs,
    period: std::time::Duration,
    session_id: &str,
    node_id: &str,
) -> SessionMessage {
    SessionMessage {
        session_id: session_id.to_string(),
        node_id: node_id.to_string(),
        managers: inputs.managers.clone(),
        heartbeat_period_ns: period.as_nanos() as i64,
        role: inputs.role(node_id) as i32,
        ca_rotation: inputs.ca_rotation,
        gossip_keys: inputs.gossip_keys.clone(),
        reports_are_heartbeats: true,
    }
}

/// Sends the session message now and again whenever it would change, until the session closes.
/// What it is built from is published by the dispatcher's router and its heartbeat monitor.
async fn session_messages(
    inner: Arc<Inner>,
    session_id: String,
    node_id: String,
    mut closed: watch::Receiver<bool>,
    out: mpsc::Sender<Result<SessionMessage, Status>>,
) {
    let mut inputs = inner.fanout.inputs();
    let mut config = inner.config.subscribe();
    let mut last: Option<SessionMessage> = None;
    loop {
        let period = config.borrow_and_update().heartbeat_period;
        let message = session_message(&inputs.borrow_and_update(), period, &session_id, &node_id);
        if last.as_ref() != Some(&message) {
            if out.send(Ok(message.clone())).await.is_err() {
                return;
            }
            last = Some(message);
        }
        tokio::select! {
            _ = closed.wait_for(|c| *c) => return,
            changed = inputs.changed() => if changed.is_err() { return },
            changed = config.changed() => if changed.is_err() { return },
        }
    }
}

/// Ends a stream when its session closes.
fn until_closed<T: Send + 'static>(
    rx: mpsc::Receiver<Result<T, Status>>,
    mut closed: watch::Receiver<bool>,
) -> Stream<T> {
    let stream = ReceiverStream::new(rx).take_until(async move {
        let _ = closed.wait_for(|c| *c).await;
    });
    Box::pin(stream)
}

#[tonic::async_trait]
impl Dispatcher for DispatcherService {
    type SessionStream = Stream<SessionMessage>;
    type AssignmentsStream = Stream<AssignmentsMessage>;
    type LogSubscriptionsStream = Stream<LogSubscription>;

    async fn session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let identity = crate::ca::require_node(&request)?;
        let mut req = request.into_inner();
        if !req.node_id.is_empty() && req.node_id != identity.node_id {
            return Err(Status::permission_denied(
                "the session's node id does not match the node's certificate",
            ));
        }
        self.check_active()?;
        req.node_id = identity.node_id.clone();
        let removed = self.inner.store.view_promptly(|tx| {
            tx.iter::<Cluster>()
                .any(|c| c.removed_nodes.contains(&req.node_id))
        });
        if removed {
            return Err(Status::permission_denied(crate::ca::REMOVED_NODE));
        }
        let (session_id, closed) = self.open_session(&req, &identity).await?;
        // The session id is a per-node secret: never logged.
        tracing::info!(node.id = %req.node_id, "agent session opened");
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(session_messages(
            self.inner.clone(),
            session_id,
            req.node_id,
            closed.clone(),
            tx,
        ));
        Ok(Response::new(until_closed(rx, closed)))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.session(&request, &request.get_ref().session_id)?;
        let req = request.into_inner();
        if !self.inner.sessions.heartbeat(&req.session_id, self.grace()) {
            return Err(Status::not_found("session invalid: open a new session"));
        }
        let period = self.inner.config.borrow().heartbeat_period;
        Ok(Response::new(HeartbeatResponse {
            period_ns: period.as_nanos() as i64,
        }))
    }

    async fn assignments(
        &self,
        request: Request<AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        let (node_id, closed) = self.session(&request, &request.get_ref().session_id)?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(assignments::stream(
            self.inner.store.clone(),
            self.inner.fanout.clone(),
            node_id,
            closed.clone(),
            tx,
        ));
        Ok(Response::new(until_closed(rx, closed)))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        let (node_id, _) = self.session(&request, &request.get_ref().session_id)?;
        let req = request.into_inner();
        // A report taken is a heartbeat (the session message tells the agent so).
        self.inner.sessions.reported(&req.session_id);
        self.inner
            .statuses
            .send(StatusBatch {
                node_id,
                updates: req.updates,
            })
            .map_err(|_| Status::unavailable("the dispatcher is shutting down"))?;
        Ok(Response::new(UpdateTaskStatusResponse {}))
    }

    async fn log_subscriptions(
        &self,
        request: Request<LogSubscriptionsRequest>,
    ) -> Result<Response<Self::LogSubscriptionsStream>, Status> {
        let (node_id, mut closed) = self.session(&request, &request.get_ref().session_id)?;
        let subscriptions = self.inner.broker.connect(&node_id);
        let broker = self.inner.broker.clone();
        let stream = UnboundedReceiverStream::new(subscriptions)
            .map(Ok)
            .take_until(async move {
                let _ = closed.wait_for(|c| *c).await;
                broker.disconnect(&node_id);
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn publish_logs(
        &self,
        request: Request<Streaming<PublishLogsMessage>>,
    ) -> Result<Response<PublishLogsResponse>, Status> {
        let caller = crate::ca::require_node(&request)?;
        let mut messages = request.into_inner();
        // The first message names the caller's own session; the stream is that node's logs.
        let mut node: Option<String> = None;
        while let Some(message) = messages.message().await? {
            let node_id = match &node {
                Some(n) => n.clone(),
                None => {
                    let (n, _) = self.owned_session(&caller, &message.session_id)?;
                    node = Some(n.clone());
                    n
                }
            };
            if !self.inner.broker.publish(&node_id, message).await {
                break;
            }
        }
        Ok(Response::new(PublishLogsResponse {}))
    }
}
