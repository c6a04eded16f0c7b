//! A manager: the Raft member with its store, and, while it leads, the allocator, orchestrators,
//! scheduler and dispatcher. They are started together when this manager becomes the leader and
//! stopped together when it stops leading.

use mesh_proto::{Cluster, ManagerStatus, Node, Reachability};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::allocator::Allocator;
use crate::api::ManagerContext;
use crate::dispatcher::{Dispatcher, DispatcherConfig};
use crate::events::EventLog;
use crate::keymanager::KeyManager;
use crate::membership::{MembershipService, leave_refusal};
use crate::offload::OffWorker;
use crate::orchestrator::{
    ConstraintEnforcer, GlobalOrchestrator, ReplicatedOrchestrator, RestartSupervisor, TaskReaper,
};
use crate::raft::{RaftConfig, RaftError, RaftNode};
use crate::rolemanager::RoleManager;
use crate::scheduler::Scheduler;
use crate::store::{MemoryStore, Read, Store, StoreError};
use crate::transport::Transport;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("raft: {0}")]
    Raft(#[from] RaftError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("this manager did not become the leader within {0:?}")]
    NoLeader(Duration),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Membership(String),
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where the Raft log and snapshots live.
    pub raft_dir: PathBuf,
    pub raft_id: u64,
    /// This manager's node id.
    pub node_id: String,
    /// The address other managers and agents reach this manager at (host:port).
    pub addr: String,
    /// How this manager reaches other managers (mutual TLS with its node certificate).
    pub transport: Transport,
    /// The daemon's control-plane instruments, kept across this manager's restarts.
    pub metrics: crate::metrics::ControlMetrics,
}

pub struct Manager {
    config: ManagerConfig,
    raft: RaftNode,
    store: Store,
    dispatcher: Dispatcher,
    events: EventLog,
    shutdown: watch::Sender<bool>,
    leadership: tokio::task::JoinHandle<()>,
    event_feed: tokio::task::JoinHandle<()>,
}

impl Manager {
    /// Opens the Raft state in `config.raft_dir` and starts following (or leading) the group.
    pub async fn start(config: ManagerConfig) -> Result<Manager, ManagerError> {
        let memory = Arc::new(MemoryStore::new());
        // Watching before Raft replays the log, which is no news: whatever applies before the
        // log's old end (read as it opens) is left out of the events.
        let (shutdown, shutdown_rx) = watch::channel(false);
        let events = EventLog::new();
        events.replaying();
        let event_feed = events.follow(&memory, shutdown_rx.clone());
        let raft = RaftNode::open(
            RaftConfig {
                dir: config.raft_dir.clone(),
                id: config.raft_id,
                addr: config.addr.clone(),
                transport: Some(config.transport.clone()),
                metrics: config.metrics.clone(),
                ..RaftConfig::default()
            },
            memory.clone(),
        )
        .await
        .inspect_err(|_| event_feed.abort())?;
        events.replayed_through(raft.logged_at_start());
        let store = Store::new(memory, raft.proposer());
        let dispatcher = Dispatcher::new(
            store.clone(),
            DispatcherConfig {
                heartbeat_misses: config.metrics.heartbeat_misses.clone(),
                monitor_stalls: config.metrics.monitor_stalls.clone(),
                ..DispatcherConfig::default()
            },
            raft.leadership(),
        );
        let leadership = tokio::spawn(follow_leadership(
            raft.clone(),
            store.clone(),
            dispatcher.clone(),
            config.clone(),
            shutdown_rx,
        ));
        Ok(Manager {
            config,
            raft,
            store,
            dispatcher,
            events,
            shutdown,
            leadership,
            event_feed,
        })
    }

    /// `swarm init`: forms a one-manager group and writes the cluster, this node's objects and
    /// the routing mesh's `ingress` overlay network (allocated from the default pool, as Swarm's).
    pub async fn bootstrap(&self, cluster: Cluster, node: Node) -> Result<(), ManagerError> {
        self.raft.initialize().await?;
        self.wait_leader(Duration::from_secs(10)).await?;
        let ingress = mesh_proto::Network {
            id: crate::store::new_id(),
            spec: Some(mesh_proto::NetworkSpec {
                annotations: Some(mesh_proto::Annotations {
                    name: "ingress".into(),
                    ..Default::default()
                }),
                driver: "overlay".into(),
                ingress: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.store
            .update(|tx| {
                tx.create(cluster.clone())?;
                tx.create(node.clone())?;
                tx.create(ingress.clone())
            })
            .await?;
        Ok(())
    }

    async fn wait_leader(&self, timeout: Duration) -> Result<(), ManagerError> {
        let mut leadership = self.raft.leadership();
        tokio::time::timeout(timeout, leadership.wait_for(|l| l.is_leader))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|_| ())
            .ok_or(ManagerError::NoLeader(timeout))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn raft(&self) -> &RaftNode {
        &self.raft
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    pub fn context(&self) -> ManagerContext {
        ManagerContext {
            store: self.store.clone(),
            broker: self.dispatcher.broker().clone(),
            raft: self.raft.clone(),
            transport: self.config.transport.clone(),
            events: self.events.clone(),
        }
    }

    pub fn membership_service(
        &self,
    ) -> mesh_proto::raft_membership_server::RaftMembershipServer<MembershipService> {
        MembershipService::server(
            self.raft.clone(),
            self.store.clone(),
            self.config.transport.clone(),
        )
    }

    /// Refuses a leave that would lose the last manager or the quorum.
    pub async fn check_leave(&self) -> Result<(), ManagerError> {
        match leave_refusal(&self.store) {
            Some(reason) => Err(ManagerError::Refused(reason)),
            None => Ok(()),
        }
    }

    /// Takes this manager out of the Raft group (through the leader when it does not lead).
    pub async fn leave_raft(&self) -> Result<(), ManagerError> {
        let voters = self.raft.voters().len();
        if voters <= 1 {
            return Ok(());
        }
        let leadership = self.raft.leadership().borrow().clone();
        if leadership.is_leader {
            return Ok(self.raft.remove_voter(self.config.raft_id).await?);
        }
        let addr = leadership
            .leader_addr
            .ok_or(ManagerError::Store(StoreError::NoQuorum))?;
        let channel = self
            .config
            .transport
            .channel(&addr)
            .await
            .map_err(|e| ManagerError::Membership(e.to_string()))?;
        mesh_proto::raft_membership_client::RaftMembershipClient::new(channel)
            .leave(mesh_proto::RaftLeaveRequest {
                raft_id: self.config.raft_id,
                node_id: String::new(),
            })
            .await
            .map_err(|s| ManagerError::Membership(s.message().to_string()))?;
        Ok(())
    }

    pub async fn stop(self) {
        self.shutdown.send_replace(true);
        let _ = self.leadership.await;
        let _ = self.event_feed.await;
        if let Err(err) = self.raft.shutdown().await {
            tracing::warn!(error = %err, "raft shutdown");
        }
    }
}

/// Starts the leader's components on every gain of leadership and stops them on every loss.
async fn follow_leadership(
    raft: RaftNode,
    store: Store,
    dispatcher: Dispatcher,
    config: ManagerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut leadership = raft.leadership();
    let mut running: Option<(watch::Sender<bool>, JoinSet<()>)> = None;
    loop {
        let leading = leadership.borrow_and_update().is_leader;
        match (leading, running.is_some()) {
            (true, false) => {
                // A new leader may not yet have applied every committed entry (a restart replays
                // them once its first entry commits): reconcilers and agents must not act on a
                // store that lags, or a dispatcher could tell an agent its running tasks are gone.
                if !caught_up(&raft).await {
                    tracing::warn!(node.id = %config.node_id, "leader could not catch up; waiting");
                    tokio::select! {
                        changed = leadership.changed() => if changed.is_err() { break },
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                }
                tracing::info!(node.id = %config.node_id, "became leader: starting orchestration");
                running = Some(start_leader_components(&store, &dispatcher, &raft));
                let store = store.clone();
                let config = config.clone();
                tokio::spawn(async move { record_leader(&store, &config).await });
            }
            (false, true) => {
                tracing::info!(node.id = %config.node_id, "lost leadership: stopping orchestration");
                stop(running.take()).await;
            }
            _ => {}
        }
        tokio::select! {
            changed = leadership.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    stop(running).await;
}

/// Waits until this leader's store holds every committed entry.
async fn caught_up(raft: &RaftNode) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), raft.raft().ensure_linearizable()).await,
        Ok(Ok(_))
    )
}

fn start_leader_components(
    store: &Store,
    dispatcher: &Dispatcher,
    raft: &RaftNode,
) -> (watch::Sender<bool>, JoinSet<()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(period) = store.view(|tx| {
        tx.list::<Cluster>()
            .into_iter()
            .next()
            .and_then(|c| c.spec)
            .map(|s| s.dispatcher_heartbeat_period_ns)
            .filter(|p| *p > 0)
    }) {
        dispatcher.set_heartbeat_period(Duration::from_nanos(period as u64));
    }
    let mut set = JoinSet::new();
    // The reconcilers' passes read and plan over every task: they run off the runtime's
    // workers, which stay free for heartbeats, calls and Raft. The dispatcher's monitor is short.
    let stop = || stop_rx.clone();
    set.spawn(offloaded(
        "allocator",
        Allocator::new(store.clone()).run(stop()),
    ));
    set.spawn(offloaded(
        "scheduler",
        Scheduler::new(store.clone()).run(stop()),
    ));
    set.spawn(offloaded(
        "replicated",
        ReplicatedOrchestrator::new(store.clone()).run(stop()),
    ));
    set.spawn(offloaded(
        "global",
        GlobalOrchestrator::new(store.clone()).run(stop()),
    ));
    set.spawn(offloaded(
        "restart",
        RestartSupervisor::new(store.clone()).run(stop()),
    ));
    set.spawn(offloaded(
        "taskreaper",
        TaskReaper::new(store.clone()).run(stop()),
    ));
    set.spawn(offloaded(
        "constraint",
        ConstraintEnforcer::new(store.clone()).run(stop()),
    ));
    set.spawn(offloaded(
        "rolemanager",
        RoleManager::new(store.clone(), raft.clone()).run(stop()),
    ));
    set.spawn(offloaded(
        "keymanager",
        KeyManager::new(store.clone()).run(stop()),
    ));
    set.spawn(timed_polls("dispatcher", dispatcher.clone().run(stop_rx)));
    (stop_tx, set)
}

/// A poll that runs this long holds one of the runtime's threads: heartbeats and calls wait.
const SLOW_POLL: Duration = Duration::from_millis(250);

/// Runs `component` off the runtime's workers ([`OffWorker`]), its slow polls logged.
fn offloaded(
    component: &'static str,
    run: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    timed_polls(component, OffWorker::new(run))
}

/// Runs `component`, logging every poll of it that held its thread for [`SLOW_POLL`] or more.
async fn timed_polls(component: &'static str, run: impl Future<Output = ()>) {
    let mut run = std::pin::pin!(run);
    std::future::poll_fn(|cx| {
        let start = std::time::Instant::now();
        let poll = run.as_mut().poll(cx);
        let took = start.elapsed();
        if took >= SLOW_POLL {
            tracing::info!(
                component,
                took_ms = took.as_millis() as u64,
                "leader component poll slow"
            );
        }
        poll
    })
    .await
}

async fn stop(running: Option<(watch::Sender<bool>, JoinSet<()>)>) {
    if let Some((stop, mut set)) = running {
        stop.send_replace(true);
        while set.join_next().await.is_some() {}
    }
}

/// Marks this manager as the leader in its node object (and no other as leader).
async fn record_leader(store: &Store, config: &ManagerConfig) {
    let result = store
        .update(|tx| {
            for mut node in tx.find::<Node>(|n| n.manager_status.is_some()) {
                let leader = node.id == config.node_id;
                let status = node
                    .manager_status
                    .get_or_insert_with(ManagerStatus::default);
                if status.leader == leader {
                    continue;
                }
                status.leader = leader;
                if leader {
                    status.reachability = Reachability::Reachable as i32;
                    status.addr = config.addr.clone();
                    status.raft_id = config.raft_id;
                }
                tx.update(node)?;
            }
            Ok(())
        })
        .await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "could not record the leader");
    }
}
