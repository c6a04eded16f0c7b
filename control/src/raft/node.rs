//! [`RaftNode`]: this manager's member of the Raft group, as the rest of the manager sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::InitializeError;
use openraft::{BasicNode, ChangeMembers, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::watch;

use super::log_store::LogStore;
use super::network::Network;
use super::proposer::BatchingProposer;
use super::seal::SealKey;
use super::server::RaftService;
use super::state_machine::StateMachine;
use super::{RaftError, TypeConfig};
use crate::store::{MemoryStore, Proposer};

/// How long `initialize` waits for the new group to elect its leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Raw snapshot bytes per InstallSnapshot request: their JSON stays well under 4 MiB.
pub(crate) const SNAPSHOT_CHUNK_BYTES: u64 = 512 * 1024;
/// Entries applied between two snapshots.
const SNAPSHOT_EVERY: u64 = 10_000;
/// Log bytes written since the last snapshot that call for the next one, however few entries
/// they are: a batch of task writes makes entries of tens of kilobytes, which reach gigabytes
/// long before [`SNAPSHOT_EVERY`] of them, and a restart re-applies every entry after the
/// snapshot. 128 MiB of entries in their binary form hold about as many task writes as 512 MiB
/// did as JSON (about 500,000); kept at 512 MiB, a leader restarted at a million tasks
/// re-applied 22 s of entries.
pub const SNAPSHOT_LOG_BYTES: u64 = 128 << 20;
/// How often the log's growth is compared with [`RaftConfig::snapshot_log_bytes`].
const SNAPSHOT_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// Holds `raft.redb`, `snapshot.bin` and `seal.key`, the key both are sealed with.
    pub dir: PathBuf,
    pub id: u64,
    /// "host:port" of this manager's gRPC listener, as peers reach it.
    pub addr: String,
    pub heartbeat_interval: Duration,
    /// A follower starts an election after a random timeout in this range.
    pub election_timeout: (Duration, Duration),
    /// How peers are reached: mutual TLS with this node's certificate. `None` (plain gRPC) is for
    /// tests that serve the Raft service themselves.
    pub transport: Option<crate::transport::Transport>,
    /// Where commit and apply latencies and leader changes are recorded.
    pub metrics: crate::metrics::ControlMetrics,
    /// A snapshot is built once this many log bytes were written since the last one.
    pub snapshot_log_bytes: u64,
}

/// The default timings: heartbeats every 250 ms, elections after 1–2 s without one.
impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            id: 0,
            addr: String::new(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout: (Duration::from_secs(1), Duration::from_secs(2)),
            transport: None,
            metrics: Default::default(),
            snapshot_log_bytes: SNAPSHOT_LOG_BYTES,
        }
    }
}

impl RaftConfig {
    /// A configuration with the default timings.
    pub fn new(dir: impl Into<PathBuf>, id: u64, addr: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            id,
            addr: addr.into(),
            ..Self::default()
        }
    }

    fn openraft(&self) -> Result<openraft::Config, RaftError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "mesh".to_string(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout.0),
            election_timeout_max: millis(self.election_timeout.1),
            install_snapshot_timeout: 2_000,
            max_payload_entries: 64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}

/// Builds a snapshot whenever `limit` bytes were written to the log (as `written` counts them)
/// since the last one, whatever built that one (the entry-count policy or this).
async fn snapshot_by_size(
    raft: Raft<TypeConfig>,
    written: prometheus_client::metrics::counter::Counter,
    limit: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = raft.metrics().borrow().snapshot;
    let mut since = written.get();
    let mut tick = tokio::time::interval(SNAPSHOT_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = raft.metrics().borrow().snapshot;
        if now != last {
            last = now;
            since = written.get();
        } else if written.get().saturating_sub(since) >= limit {
            tracing::info!(
                bytes = written.get() - since,
                "log grown past its bound since the last snapshot: building one"
            );
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            // Counted again from here: one snapshot per `limit` bytes, even while it builds.
            since = written.get();
        }
    }
}

/// Who leads the group, as this node last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    pub is_leader: bool,
    pub leader_id: Option<u64>,
    pub leader_addr: Option<String>,
    pub term: u64,
}

impl Leadership {
    fn from_metrics(m: &RaftMetrics<u64, BasicNode>) -> Self {
        let leader_addr = m
            .current_leader
            .and_then(|id| m.membership_config.membership().get_node(&id))
            .map(|node| node.addr.clone());
        Self {
            is_leader: m.state == ServerState::Leader && m.current_leader == Some(m.id),
            leader_id: m.current_leader,
            leader_addr,
            term: m.current_term,
        }
    }
}

/// A handle on the running Raft member; clones share it.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    addr: String,
    raft: Raft<TypeConfig>,
    proposer: Arc<BatchingProposer>,
    leadership: watch::Receiver<Leadership>,
    shutdown: watch::Sender<bool>,
    /// The last index of the log as it was on disk when this member started.
    logged: u64,
}

impl RaftNode {
    /// Opens the seal key, log and snapshot in `config.dir` (creating them if absent), restores
    /// the snapshot into `memory`, and starts Raft, which re-applies the committed entries after
    /// the snapshot. A record that fails to unseal fails the open.
    pub async fn open(config: RaftConfig, memory: Arc<MemoryStore>) -> Result<RaftNode, RaftError> {
        let raft_config = Arc::new(config.openraft()?);
        let dir = config.dir.clone();
        let apply_latency = config.metrics.apply_latency.clone();
        let metrics = config.metrics.clone();
        let (mut log_store, state_machine) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|source| RaftError::CreateDir {
                path: dir.clone(),
                source,
            })?;
            let key = SealKey::load_or_create(&dir)?;
            let path = dir.join("raft.redb");
            let log_store = LogStore::open(&path, key.clone())
                .map_err(|source| RaftError::OpenLog {
                    path,
                    source: Box::new(source),
                })?
                .counted(metrics.log_entries, metrics.log_bytes);
            let state_machine = StateMachine::open(&dir, memory, key)?
                .timed(apply_latency)
                .measured(metrics.snapshot_bytes, metrics.snapshot_latency);
            Ok::<_, RaftError>((log_store, state_machine))
        })
        .await??;
        let logged = openraft::storage::RaftLogStorage::get_log_state(&mut log_store)
            .await?
            .last_log_id
            .map_or(0, |id| id.index);
        let network = Network::new(config.id, config.transport.clone());
        let raft = Raft::new(config.id, raft_config, network, log_store, state_machine).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let leadership = watch_leadership(
            &raft,
            shutdown_rx.clone(),
            config.metrics.leader_changes.clone(),
        );
        tokio::spawn(snapshot_by_size(
            raft.clone(),
            config.metrics.log_bytes.clone(),
            config.snapshot_log_bytes,
            shutdown_rx.clone(),
        ));
        let proposer = Arc::new(BatchingProposer::spawn(
            raft.clone(),
            shutdown_rx,
            config.metrics.commit_latency.clone(),
        ));
        tracing::info!(raft.id = config.id, addr = %config.addr, dir = %config.dir.display(), "raft started");
        Ok(RaftNode {
            inner: Arc::new(Inner {
                id: config.id,
                addr: config.addr,
                raft,
                proposer,
                leadership,
                shutdown,
                logged,
            }),
        })
    }

    /// Makes this node a one-member group and waits for it to lead. Succeeds without change if
    /// the node already is a voter of an initialized group.
    pub async fn initialize(&self) -> Result<(), RaftError> {
        let raft = &self.inner.raft;
        if !raft.is_initialized().await? {
            let members = BTreeMap::from([(self.inner.id, BasicNode::new(&self.inner.addr))]);
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(raft.id = self.inner.id, "raft group initialized"),
                // Initialized concurrently: the membership check below decides.
                Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let wait = raft.wait(Some(LEADER_TIMEOUT));
        let metrics = wait
            .metrics(
                |m| m.membership_config.voter_ids().next().is_some(),
                "membership known",
            )
            .await
            .map_err(|_| RaftError::NoLeader(LEADER_TIMEOUT))?;
        let voters: Vec<u64> = metrics.membership_config.voter_ids().collect();
        if !voters.contains(&self.inner.id) {
            return Err(RaftError::OtherGroup { voters });
        }
        wait.metrics(|m| m.current_leader.is_some(), "leader elected")
            .await
            .map_err(|_| RaftError::NoLeader(LEADER_TIMEOUT))?;
        Ok(())
    }

    pub async fn is_initialized(&self) -> Result<bool, RaftError> {
        Ok(self.inner.raft.is_initialized().await?)
    }

    /// The proposer to build the [`Store`](crate::store::Store) with.
    pub fn proposer(&self) -> Arc<dyn Proposer> {
        self.inner.proposer.clone()
    }

    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.inner.leadership.clone()
    }

    /// The raft ids of the group's voting members.
    pub fn voters(&self) -> Vec<u64> {
        self.inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The last index the log held on disk when this member started: entries up to it that
    /// are applied now were applied in an earlier run too.
    pub fn logged_at_start(&self) -> u64 {
        self.inner.logged
    }

    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// What `meshctl info` shows of this member: its term, leader, members and progress.
    pub fn info(&self) -> mesh_proto::RaftInfo {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        mesh_proto::RaftInfo {
            id: metrics.id,
            term: metrics.current_term,
            leader: metrics.current_leader.unwrap_or_default(),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
        }
    }

    /// The `mesh.v1.Raft` service to serve on this manager's gRPC listener.
    pub fn grpc_service(&self) -> mesh_proto::raft_server::RaftServer<RaftService> {
        RaftService::new(self.inner.raft.clone()).into_server()
    }

    /// Adds `id` as a learner, waits for it to catch up, then makes it a voter.
    pub async fn add_voter(&self, id: u64, addr: String) -> Result<(), RaftError> {
        let raft = &self.inner.raft;
        raft.add_learner(id, BasicNode::new(addr), true).await?;
        let voters = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        raft.change_membership(voters, false).await?;
        tracing::info!(raft.id = id, "raft voter added");
        Ok(())
    }

    /// Removes `id` from the group entirely.
    pub async fn remove_voter(&self, id: u64) -> Result<(), RaftError> {
        let voters = ChangeMembers::RemoveVoters(BTreeSet::from([id]));
        self.inner.raft.change_membership(voters, false).await?;
        tracing::info!(raft.id = id, "raft voter removed");
        Ok(())
    }

    /// Stops proposing (waiting callers get `StoreError::Shutdown`) and stops Raft.
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        let _ = self.inner.shutdown.send(true);
        self.inner.raft.shutdown().await?;
        tracing::info!(raft.id = self.inner.id, "raft stopped");
        Ok(())
    }
}

/// Follows openraft's metrics and publishes leadership changes.
fn watch_leadership(
    raft: &Raft<TypeConfig>,
    mut shutdown: watch::Receiver<bool>,
    leader_changes: prometheus_client::metrics::counter::Counter,
) -> watch::Receiver<Leadership> {
    let mut metrics = raft.metrics();
    let (tx, rx) = watch::channel(Leadership::from_metrics(&metrics.borrow_and_update()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { break },
                _ = shutdown.changed() => break,
            }
            let next = Leadership::from_metrics(&metrics.borrow_and_update());
            tx.send_if_modified(|current| {
                if *current == next {
                    return false;
                }
                if current.leader_id != next.leader_id {
                    leader_changes.inc();
                }
                if current.is_leader != next.is_leader || current.leader_id != next.leader_id {
                    tracing::info!(
                        leader.id = ?next.leader_id,
                        is_leader = next.is_leader,
                        term = next.term,
                        "raft leadership changed"
                    );
                }
                *current = next;
                true
            });
        }
    });
    rx
}
