//! The daemon's membership in a cluster: creating one (`swarm init`), joining one, resuming after a
//! restart, leaving, and the pieces that run while it is a member — the agent session and worker,
//! and on managers the control plane behind its mutual-TLS listener.

mod addr;
mod init;
mod join;
mod keys;
mod standing;

use mesh_control::api::{Api, NodeCaService};
use mesh_control::ca::{CaError, GateLayer, TlsIdentity, TlsServer};
use mesh_control::manager::{Manager, ManagerConfig};
use mesh_control::transport::Transport;
use mesh_proto::{GossipInfo, InfoResponse};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{Mutex, watch};

use crate::certs::{self, Certificates};
use crate::config::Config;
use crate::exec::Executor;
use crate::network::{Dataplane, TaskNetwork};
use crate::session::{self, SessionConfig};
use crate::state::{self, NodeState, Role};
use crate::worker::Worker;

const DEFAULT_PORT: u16 = 2377;
/// How long the manager port lets one call run before it answers (a stream, once opened, runs on).
const SERVER_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the manager port pings each client, and how long the answer may take before the
/// connection is closed: a node that is gone is found out by the heartbeat monitor, which ends
/// its session; this only frees its connection. With a ping every 2 s answered within 3 s,
/// 10,000 agents meant 5,000 pings a second, and a restarted leader busy with their
/// reconnections closed live connections, whose agents came back for more.
const SERVER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const SERVER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections the kernel holds for the manager port until they are accepted (capped by
/// `net.core.somaxconn`): thousands of agents reconnect at once to a restarted leader.
const LISTEN_BACKLOG: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("this node is already part of a swarm: use \"meshctl swarm leave\" to leave it first")]
    AlreadyMember,
    #[error("this node is not part of a swarm")]
    NotMember,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "this node is a manager: leaving removes the last manager and erases the swarm's state; use --force to leave anyway"
    )]
    ManagerLeave,
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot reach the manager at {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Manager(#[from] mesh_control::manager::ManagerError),
    #[error(transparent)]
    State(#[from] state::StateError),
}

struct Listener {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    tls: Arc<TlsServer>,
    gate: GateLayer,
}

struct Membership {
    state: NodeState,
    transport: Transport,
    manager: Option<Manager>,
    listener: Option<Listener>,
    session: (watch::Sender<bool>, tokio::task::JoinHandle<()>),
    standing: tokio::task::JoinHandle<()>,
    worker: Worker,
    dataplane: Option<Arc<Dataplane>>,
    keys: Option<tokio::task::JoinHandle<()>>,
}

pub struct Daemon {
    me: Weak<Daemon>,
    config: Config,
    executor: Arc<dyn Executor>,
    /// Where tasks' secrets and configs are written (a tmpfs); `None` in tests without any.
    files: Option<Arc<crate::taskfiles::TaskFiles>>,
    api: Api,
    membership: Mutex<Option<Membership>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Daemon {
    pub fn new(
        config: Config,
        executor: Arc<dyn Executor>,
        files: Option<Arc<crate::taskfiles::TaskFiles>>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            config,
            executor,
            files,
            api: Api::default(),
            membership: Mutex::new(None),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        })
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The node's state for a scrape of its metrics.
    pub async fn metrics_sample(&self) -> crate::metrics::Sample {
        let membership = self.membership.lock().await;
        let manager = membership.as_ref().and_then(|m| m.manager.as_ref());
        let dataplane = membership.as_ref().and_then(|m| m.dataplane.clone());
        let mut sample = crate::metrics::Sample {
            manager: manager.map(mesh_control::metrics::ManagerSample::of),
            refused_calls: membership
                .as_ref()
                .and_then(|m| m.listener.as_ref())
                .map(|l| l.gate.refused()),
            resident_memory_bytes: crate::metrics::resident_memory_bytes(),
            ..Default::default()
        };
        drop(membership);
        if let Some(dataplane) = dataplane {
            // The balancer's lock may be held by a long sync: wait for it off the runtime.
            let balancer = dataplane.clone();
            sample.vip_backends = tokio::task::spawn_blocking(move || balancer.vip_backends())
                .await
                .unwrap_or_default();
            if let Some((members, _, stats)) = dataplane.gossip_info().await {
                sample.gossip = Some(crate::metrics::GossipSample {
                    members,
                    suspects: dataplane.gossip_suspects().await,
                    stats,
                });
            }
        }
        sample
    }

    /// Rejoins the cluster recorded in the state dir, if any.
    pub async fn resume(&self) -> Result<(), DaemonError> {
        let Some(state) = state::load(&self.config.state_dir)? else {
            return Ok(());
        };
        let Some(certs) = certs::load(&self.config.state_dir)? else {
            return Err(DaemonError::Refused(format!(
                "{} names a cluster but the node's certificates are missing: leave with \"meshctl swarm leave --force\" and join again",
                state::file(&self.config.state_dir).display()
            )));
        };
        tracing::info!(node.id = %state.node_id, role = ?state.role, "resuming cluster membership");
        let mut membership = self.membership.lock().await;
        let transport = Transport::new(identity(&certs)?);
        let manager = match state.role {
            Role::Manager => Some(self.start_manager(&state, &transport).await?),
            Role::Worker => None,
        };
        *membership = Some(self.start_member(state, &certs, transport, manager).await?);
        Ok(())
    }

    pub async fn info(&self) -> InfoResponse {
        let membership = self.membership.lock().await;
        let state = membership.as_ref().map(|m| &m.state);
        let dataplane = membership.as_ref().and_then(|m| m.dataplane.as_ref());
        let gossip = match dataplane {
            Some(dataplane) => dataplane.gossip_info().await,
            None => None,
        };
        let (lb_backend, lb_entries) = dataplane.and_then(|d| d.balancer_info()).map_or(
            (String::new(), 0),
            |(backend, entries)| {
                (
                    backend.to_owned(),
                    u64::try_from(entries).unwrap_or(u64::MAX),
                )
            },
        );
        let gossip = gossip.map(|(members, endpoints, stats)| GossipInfo {
            members: u64::try_from(members).unwrap_or(u64::MAX),
            endpoints: u64::try_from(endpoints).unwrap_or(u64::MAX),
            received: stats.received,
            sent: stats.sent,
            dropped_unknown_key: stats.dropped_unknown_key,
            dropped_bad_seal: stats.dropped_bad_seal,
            dropped_malformed: stats.dropped_malformed,
        });
        let raft = membership
            .as_ref()
            .and_then(|m| m.manager.as_ref())
            .map(|manager| manager.raft().info());
        let refused_calls = membership
            .as_ref()
            .and_then(|m| m.listener.as_ref())
            .map_or(0, |l| l.gate.refused());
        InfoResponse {
            raft,
            refused_calls,
            version: env!("CARGO_PKG_VERSION").into(),
            commit: env!("MESH_GIT_COMMIT").into(),
            node_id: state.map(|s| s.node_id.clone()).unwrap_or_default(),
            cluster_id: state.map(|s| s.cluster_id.clone()).unwrap_or_default(),
            is_manager: state.is_some_and(|s| s.role == Role::Manager),
            node_addr: state.map(|s| s.advertise_addr.clone()).unwrap_or_default(),
            gossip,
            lb_backend,
            lb_entries,
        }
    }

    async fn start_manager(
        &self,
        state: &NodeState,
        transport: &Transport,
    ) -> Result<Manager, DaemonError> {
        Ok(Manager::start(ManagerConfig {
            raft_dir: state::raft_dir(&self.config.state_dir),
            raft_id: state.raft_id,
            node_id: state.node_id.clone(),
            addr: state.advertise_addr.clone(),
            transport: transport.clone(),
            metrics: self.metrics.control.clone(),
        })
        .await?)
    }

    /// Starts the listener (managers), the worker and the agent session. On failure, stops the
    /// manager it was given.
    async fn start_member(
        &self,
        state: NodeState,
        certs: &Certificates,
        transport: Transport,
        manager: Option<Manager>,
    ) -> Result<Membership, DaemonError> {
        let listener = match &manager {
            Some(m) => Some(self.listen(&state.listen_addr, m, certs).await),
            None => None,
        };
        let listener = match listener {
            Some(Err(err)) => {
                if let Some(manager) = manager {
                    manager.stop().await;
                }
                return Err(err);
            }
            Some(Ok(listener)) => Some(listener),
            None => None,
        };
        if let Some(manager) = &manager {
            self.api.attach(manager.context());
        }
        let dataplane = self.dataplane(&state).await;
        let network = dataplane.clone().map(|d| d as Arc<dyn TaskNetwork>);
        let (worker, statuses) = Worker::new(
            self.executor.clone(),
            state.node_id.clone(),
            network,
            self.files.clone(),
        );
        let (stop, stop_rx) = watch::channel(false);
        let role = match state.role {
            Role::Manager => mesh_proto::NodeRole::Manager as i32,
            Role::Worker => mesh_proto::NodeRole::Worker as i32,
        };
        let (view, view_rx) = watch::channel(session::ClusterView {
            role,
            ca_rotation: state.ca_rotation,
            managers: state.managers.clone(),
            gossip_keys: Vec::new(),
        });
        let keys = dataplane
            .clone()
            .map(|d| tokio::spawn(keys::follow(d, view_rx.clone(), stop_rx.clone())));
        let standing = tokio::spawn(standing::watch(self.me.clone(), view_rx, stop_rx.clone()));
        let session = tokio::spawn(session::run(
            SessionConfig {
                node_id: state.node_id.clone(),
                addr: state.advertise_addr.clone(),
                managers: state.managers.clone(),
                transport: transport.clone(),
                view,
            },
            worker.clone(),
            self.executor.clone(),
            statuses,
            stop_rx,
        ));
        Ok(Membership {
            state,
            transport,
            manager,
            listener,
            session: (stop, session),
            standing,
            worker,
            dataplane,
            keys,
        })
    }

    /// Makes a just-started membership durable by recording the node's state. On any failure it
    /// stops what was started and removes what was written: a failed init or join leaves nothing.
    async fn commit_member(
        &self,
        started: Result<Membership, DaemonError>,
    ) -> Result<Membership, DaemonError> {
        let result = match started {
            Ok(member) => match state::save(&self.config.state_dir, &member.state) {
                Ok(()) => Ok(member),
                Err(err) => {
                    self.stop_member(member, Stop::Leave).await;
                    Err(err.into())
                }
            },
            Err(err) => Err(err),
        };
        if result.is_err() {
            let _ = state::remove(&self.config.state_dir);
        }
        result
    }

    /// Serves the manager's gRPC services on `addr`, over mutual TLS only.
    async fn listen(
        &self,
        addr: &str,
        manager: &Manager,
        certs: &Certificates,
    ) -> Result<Listener, DaemonError> {
        let listener = bind(addr).await.map_err(|source| DaemonError::Listen {
            addr: addr.to_string(),
            source,
        })?;
        let tls = Arc::new(TlsServer::new(&identity(certs)?)?);
        let (stop, mut stop_rx) = watch::channel(false);
        // Every call passes the gate first: the method's rule, judged against the caller's
        // certificate and its node's standing in the store.
        let gate = GateLayer::new(manager.store().memory().clone());
        // Pings find out clients whose packets are dropped; a call that runs too long ends.
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .tcp_keepalive(Some(Duration::from_secs(10)))
            .http2_keepalive_interval(Some(SERVER_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(SERVER_KEEPALIVE_TIMEOUT))
            .timeout(SERVER_CALL_TIMEOUT)
            .layer(gate.clone())
            .add_service(self.api.grpc_service())
            .add_service(manager.dispatcher().grpc_service())
            .add_service(manager.raft().grpc_service())
            .add_service(manager.membership_service())
            .add_service(NodeCaService::server(manager.context()))
            .serve_with_incoming_shutdown(tls.incoming(listener), async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            });
        let addr = addr.to_string();
        let task = tokio::spawn(async move {
            if let Err(err) = server.await {
                tracing::error!(addr = %addr, error = %err, "manager listener failed");
            }
        });
        Ok(Listener {
            stop,
            task,
            tls,
            gate,
        })
    }

    /// Leaves the cluster: stops this node's tasks and forgets the cluster's state.
    pub async fn leave(&self, force: bool) -> Result<(), DaemonError> {
        let mut membership = self.membership.lock().await;
        let Some(m) = membership.take() else {
            return Err(DaemonError::NotMember);
        };
        if m.state.role == Role::Manager && !force {
            let refusal = match &m.manager {
                Some(manager) => manager.check_leave().await.err(),
                None => None,
            };
            let refusal = refusal.map(|e| DaemonError::Refused(e.to_string()));
            if let Some(err) = refusal {
                *membership = Some(m);
                return Err(err);
            }
        }
        if let Some(manager) = &m.manager
            && let Err(err) = manager.leave_raft().await
        {
            tracing::warn!(error = %err, "could not leave the raft group cleanly");
        }
        // Stop every task here, as a node leaving a swarm does.
        m.worker
            .assign(mesh_proto::AssignmentsMessage::default())
            .await;
        self.stop_member(m, Stop::Leave).await;
        state::remove(&self.config.state_dir)?;
        tracing::info!("left the swarm");
        Ok(())
    }

    /// Stops everything this daemon runs for the cluster, leaving containers running.
    pub async fn shutdown(&self) {
        if let Some(m) = self.membership.lock().await.take() {
            self.stop_member(m, Stop::Shutdown).await;
        }
    }

    async fn stop_member(&self, m: Membership, how: Stop) {
        self.api.detach();
        let (stop, session) = m.session;
        stop.send_replace(true);
        let _ = session.await;
        m.standing.abort();
        if let Some(keys) = m.keys {
            keys.abort();
        }
        m.worker.shutdown().await;
        if let Some(dataplane) = &m.dataplane {
            match how {
                Stop::Shutdown => dataplane.shutdown().await,
                Stop::Leave => dataplane.leave().await,
            }
        }
        if let Some(listener) = m.listener {
            listener.stop.send_replace(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), listener.task).await;
            drop(listener.tls);
        }
        if let Some(manager) = m.manager {
            manager.stop().await;
        }
        drop(m.transport);
    }
}

/// What stopping a membership leaves behind.
#[derive(Clone, Copy)]
enum Stop {
    /// The daemon stops: containers and their data plane keep running for the next start.
    Shutdown,
    /// The node leaves the swarm (or never finished joining): the data plane goes too.
    Leave,
}

fn identity(certs: &Certificates) -> Result<TlsIdentity, CaError> {
    TlsIdentity::from_pem(&certs.cert_pem, &certs.key_pem, &certs.roots_pem)
}

/// Listens on `addr` (`host:port`) with a [`LISTEN_BACKLOG`] of its own, for every address it
/// names until one binds.
async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As `TcpListener::bind`: a restarted manager binds while its old connections linger.
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address names no host to listen on",
        )
    }))
}
