//! Who may call what on 2377. Every request passes one gate before any handler runs: the gRPC
//! method it names decides what it needs ([`need`], one table for every method served there;
//! a method missing from it is refused), and the caller's verified certificate is judged
//! against the node's current standing in the store ([`judge`]): the cluster it belongs to,
//! whether the node was removed, its role now, and whether the certificate was replaced when
//! that role changed. Handlers check what only they can see on top of this (a join token, a
//! session's owner, a Raft sender's id).
//!
//! Refusals are counted, and logged at most once per [`LOG_EVERY`] per kind with the number
//! refused meanwhile, so that a stranger's flood cannot flood the log too.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mesh_proto::{Cluster, Node, NodeRole};
use tonic::codegen::http;
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::authz::REMOVED_NODE;
use super::identity::{NodeIdentity, Role};
use super::server::PeerInfo;
use crate::store::{MemoryStore, Read as _};

/// How often a refusal of one kind is logged at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// What a method needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone, even without a certificate: the root CA certificate is public.
    Anyone,
    /// A joining node, whose handler then checks its join token, or a node of this cluster
    /// renewing its own certificate (also after its role changed).
    JoinOrRenew,
    /// A node of this cluster, worker or manager: the dispatcher.
    Node,
    /// A manager, in its certificate and in the store: the control API (which other managers
    /// forward to the leader), Raft and Raft membership.
    Manager,
}

/// Every method served on 2377 and what it needs.
pub const METHODS: &[(&str, Need)] = &[
    ("/mesh.v1.NodeCA/GetRootCACertificate", Need::Anyone),
    ("/mesh.v1.NodeCA/IssueNodeCertificate", Need::JoinOrRenew),
    ("/mesh.v1.Dispatcher/Session", Need::Node),
    ("/mesh.v1.Dispatcher/Heartbeat", Need::Node),
    ("/mesh.v1.Dispatcher/Assignments", Need::Node),
    ("/mesh.v1.Dispatcher/UpdateTaskStatus", Need::Node),
    ("/mesh.v1.Dispatcher/LogSubscriptions", Need::Node),
    ("/mesh.v1.Dispatcher/PublishLogs", Need::Node),
    ("/mesh.v1.Control/GetNode", Need::Manager),
    ("/mesh.v1.Control/ListNodes", Need::Manager),
    ("/mesh.v1.Control/UpdateNode", Need::Manager),
    ("/mesh.v1.Control/RemoveNode", Need::Manager),
    ("/mesh.v1.Control/CreateService", Need::Manager),
    ("/mesh.v1.Control/GetService", Need::Manager),
    ("/mesh.v1.Control/UpdateService", Need::Manager),
    ("/mesh.v1.Control/RemoveService", Need::Manager),
    ("/mesh.v1.Control/ListServices", Need::Manager),
    ("/mesh.v1.Control/ListTasks", Need::Manager),
    ("/mesh.v1.Control/GetCluster", Need::Manager),
    ("/mesh.v1.Control/CreateNetwork", Need::Manager),
    ("/mesh.v1.Control/GetNetwork", Need::Manager),
    ("/mesh.v1.Control/ListNetworks", Need::Manager),
    ("/mesh.v1.Control/RemoveNetwork", Need::Manager),
    ("/mesh.v1.Control/GetJoinTokens", Need::Manager),
    ("/mesh.v1.Control/RotateRootCA", Need::Manager),
    ("/mesh.v1.Control/CreateSecret", Need::Manager),
    ("/mesh.v1.Control/GetSecret", Need::Manager),
    ("/mesh.v1.Control/ListSecrets", Need::Manager),
    ("/mesh.v1.Control/UpdateSecret", Need::Manager),
    ("/mesh.v1.Control/RemoveSecret", Need::Manager),
    ("/mesh.v1.Control/CreateConfig", Need::Manager),
    ("/mesh.v1.Control/GetConfig", Need::Manager),
    ("/mesh.v1.Control/ListConfigs", Need::Manager),
    ("/mesh.v1.Control/UpdateConfig", Need::Manager),
    ("/mesh.v1.Control/RemoveConfig", Need::Manager),
    ("/mesh.v1.Control/ServiceLogs", Need::Manager),
    ("/mesh.v1.Control/Events", Need::Manager),
    ("/mesh.v1.Raft/AppendEntries", Need::Manager),
    ("/mesh.v1.Raft/Vote", Need::Manager),
    ("/mesh.v1.Raft/InstallSnapshot", Need::Manager),
    ("/mesh.v1.RaftMembership/Join", Need::Manager),
    ("/mesh.v1.RaftMembership/Leave", Need::Manager),
];

/// What the method at `path` needs; `None` for a method not served on 2377.
pub fn need(path: &str) -> Option<Need> {
    METHODS
        .iter()
        .find(|(method, _)| *method == path)
        .map(|(_, need)| *need)
}

/// Why a call was refused; each kind is counted and logged apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    UnknownMethod,
    NoCertificate,
    Untrusted,
    OtherCluster,
    Removed,
    Replaced,
    NotManager,
    Demoted,
    /// A handler's own refusal (a join token, a session's owner, a Raft sender), with its code.
    Handler(i32),
}

impl Refusal {
    /// The status the caller gets: one line saying what is wrong.
    pub fn status(self) -> Status {
        let (code, message) = match self {
            Refusal::UnknownMethod => (
                Code::PermissionDenied,
                "this method is not served on the manager port",
            ),
            Refusal::NoCertificate => (
                Code::Unauthenticated,
                "this API needs a node certificate of this cluster: join the swarm first",
            ),
            Refusal::Untrusted => (
                Code::Unauthenticated,
                "this certificate is not one of this cluster's node certificates, or it expired",
            ),
            Refusal::OtherCluster => (
                Code::Unauthenticated,
                "this certificate belongs to another cluster",
            ),
            Refusal::Removed => (Code::PermissionDenied, REMOVED_NODE),
            Refusal::Replaced => (
                Code::PermissionDenied,
                "this certificate was replaced when the node's role changed: use the node's current certificate",
            ),
            Refusal::NotManager => (
                Code::PermissionDenied,
                "this API needs a manager certificate",
            ),
            Refusal::Demoted => (
                Code::PermissionDenied,
                "this node is no longer a manager: it was demoted",
            ),
            Refusal::Handler(code) => (Code::from_i32(code), "refused by the method"),
        };
        Status::new(code, message)
    }
}

/// What the store says of the caller's node and cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Standing<'a> {
    /// `None` before this manager has the cluster object (a manager still joining the Raft group).
    pub cluster: Option<&'a Cluster>,
    /// `None` for a node not registered yet (one that just joined).
    pub node: Option<&'a Node>,
}

/// Decides whether `caller` may call a method that needs `need`. Pure: the gate feeds it the
/// certificate rustls verified and the store's current view.
pub fn judge(
    need: Need,
    caller: Option<&NodeIdentity>,
    standing: Standing<'_>,
) -> Result<(), Refusal> {
    if need == Need::Anyone {
        return Ok(());
    }
    let Some(caller) = caller else {
        return match need {
            Need::JoinOrRenew => Ok(()),
            _ => Err(Refusal::NoCertificate),
        };
    };
    if let Some(cluster) = standing.cluster {
        if caller.cluster_id != cluster.id {
            return Err(Refusal::OtherCluster);
        }
        if cluster.removed_nodes.contains(&caller.node_id) {
            return Err(Refusal::Removed);
        }
    }
    if let Some(node) = standing.node
        && replaced(caller, node)
    {
        return Err(Refusal::Replaced);
    }
    match need {
        Need::Anyone | Need::JoinOrRenew | Need::Node => Ok(()),
        Need::Manager if caller.role != Role::Manager => Err(Refusal::NotManager),
        Need::Manager => match standing.node {
            Some(node) if node.role != NodeRole::Manager as i32 => Err(Refusal::Demoted),
            _ => Ok(()),
        },
    }
}

/// Whether `caller` is a certificate of the node's old role after the leader issued it one of
/// its current role: from then on only the newer one is honoured.
fn replaced(caller: &NodeIdentity, node: &Node) -> bool {
    let Some(newest) = &node.certificate else {
        return false;
    };
    newest.serial != caller.serial && mesh_proto::NodeRole::from(caller.role) as i32 != node.role
}

/// The tower layer that puts the gate in front of every service of the 2377 server.
#[derive(Clone)]
pub struct GateLayer {
    gate: Arc<Gate>,
}

impl GateLayer {
    pub fn new(store: Arc<MemoryStore>) -> Self {
        Self {
            gate: Arc::new(Gate {
                store,
                log: RefusalLog::default(),
            }),
        }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            gate: self.gate.clone(),
        }
    }
}

struct Gate {
    store: Arc<MemoryStore>,
    log: RefusalLog,
}

impl GateLayer {
    /// How many calls this gate has refused.
    pub fn refused(&self) -> u64 {
        self.gate.log.total.load(Ordering::Relaxed)
    }
}

impl Gate {
    fn check(&self, path: &str, peer: Option<&PeerInfo>) -> Result<(), Refusal> {
        let caller = peer.and_then(|p| p.identity.as_ref());
        let untrusted = peer.is_some_and(|p| p.rejected.is_some());
        let result = match need(path) {
            None => Err(Refusal::UnknownMethod),
            Some(Need::Anyone) => Ok(()),
            Some(_) if untrusted => Err(Refusal::Untrusted),
            // Every call of every agent passes here, heartbeats included: two lookups, read in
            // place and without queueing behind a writer that waits for a long read. Queued, each
            // call held a runtime thread until both were done, and at 5,000 nodes the leader
            // stalled for seconds with every thread parked here.
            Some(need) => self.store.view_promptly(|tx| {
                judge(
                    need,
                    caller,
                    Standing {
                        cluster: tx.iter::<Cluster>().next(),
                        node: caller.and_then(|c| tx.peek::<Node>(&c.node_id)),
                    },
                )
            }),
        };
        if let Err(refusal) = result {
            self.log.refused(refusal, path, peer);
        }
        result
    }
}

/// Counts refusals, and logs each kind at most once per [`LOG_EVERY`].
#[derive(Default)]
struct RefusalLog {
    total: AtomicU64,
    kinds: Mutex<HashMap<Refusal, (Instant, u64)>>,
}

impl RefusalLog {
    fn refused(&self, refusal: Refusal, path: &str, peer: Option<&PeerInfo>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let entry = kinds.entry(refusal).or_insert((now - LOG_EVERY, 0));
        entry.1 += 1;
        if now.duration_since(entry.0) < LOG_EVERY {
            return;
        }
        let count = std::mem::take(&mut entry.1);
        entry.0 = now;
        drop(kinds);
        let identity = peer.and_then(|p| p.identity.as_ref());
        tracing::warn!(
            reason = ?refusal,
            method = %path,
            remote = ?peer.and_then(|p| p.remote_addr),
            node.id = identity.map(|i| i.node_id.as_str()),
            refused = count,
            "call on the manager port refused"
        );
    }
}

/// The code of a response that refuses its caller (Unauthenticated, PermissionDenied).
fn refused_status(headers: &http::HeaderMap) -> Option<i32> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let refused = [Code::Unauthenticated as i32, Code::PermissionDenied as i32];
    refused.contains(&code).then_some(code)
}

/// The gate in front of one service; see [`GateLayer`].
#[derive(Clone)]
pub struct GateService<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GateService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let peer = request.extensions().get::<PeerInfo>();
        match self.gate.check(request.uri().path(), peer) {
            Ok(()) => {
                // A handler's refusal is counted and logged like the gate's: it shows as the
                // status of a headers-only response.
                let (path, peer) = (request.uri().path().to_owned(), peer.cloned());
                let gate = self.gate.clone();
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await?;
                    if let Some(code) = refused_status(response.headers()) {
                        gate.log
                            .refused(Refusal::Handler(code), &path, peer.as_ref());
                    }
                    Ok(response)
                })
            }
            Err(refusal) => {
                let response = refusal.status().into_http();
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

#[cfg(test)]
mod tests;
