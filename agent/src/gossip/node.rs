//! The `Gossip` handle: starts the gossip task on a UDP socket and exposes membership, the
//! endpoint table, key rotation and counters to the rest of the agent.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::info;

use super::driver::{Command, Driver};
use super::identity::NodeIdentity;
use super::membership::ActiveMembers;
use super::now_ms;
use super::records::{Change, EndpointRecord, RecordKey, RecordTable};
use super::seal::KeyRing;
use super::wire::{Shared, lock};

/// The gossip port of Docker Swarm and of mesh.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;

/// How a gossip member is started.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    pub node_id: String,
    /// Where the socket binds (`0.0.0.0:7946` in production, `127.0.0.1:0` in tests).
    pub bind: SocketAddr,
    /// The address peers reach this node at; a zero port or unspecified IP is taken from the
    /// bound socket.
    pub advertise: SocketAddr,
    pub keys: KeyRing,
    /// How often a digest of the endpoint table is exchanged with one random member.
    pub anti_entropy_interval: Duration,
    /// How long a withdrawn record's tombstone is remembered.
    pub tombstone_ttl: Duration,
    /// How long a node stays gone (every identity of it down) before its records are withdrawn
    /// on its behalf: long enough for a restarting meshd to come back first.
    pub gone_node_grace: Duration,
    /// Loss injection: when set, every Nth outgoing datagram is silently dropped.
    pub drop_every_nth_send: Option<NonZeroU32>,
    /// Whether record updates ride on foca's messages; when off they travel by anti-entropy
    /// only (slower, but lets tests show that anti-entropy alone converges).
    pub piggyback_records: bool,
    /// Whether SWIM spreads membership itself (probes, periodic gossip and announces, news
    /// retransmitted). When off, members learn of each other only by joining and by the
    /// membership sync of the anti-entropy round: lets tests show that the sync alone converges.
    pub swim_spreads_membership: bool,
}

impl GossipConfig {
    pub fn new(node_id: impl Into<String>, bind: SocketAddr, keys: KeyRing) -> Self {
        Self {
            node_id: node_id.into(),
            bind,
            advertise: bind,
            keys,
            anti_entropy_interval: Duration::from_secs(5),
            tombstone_ttl: Duration::from_secs(600),
            gone_node_grace: Duration::from_secs(10),
            drop_every_nth_send: None,
            piggyback_records: true,
            swim_spreads_membership: true,
        }
    }
}

/// Why gossip could not start or a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("binding the gossip socket to {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading the gossip socket's local address")]
    LocalAddr(#[source] std::io::Error),
    #[error("the gossip task has stopped")]
    Stopped,
}

/// Datagram counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    pub received: u64,
    pub sent: u64,
    /// Bytes of the datagrams received and sent, as on the wire (sealed; UDP payload).
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// Sealed under a key id this node does not hold.
    pub dropped_unknown_key: u64,
    /// Failed authentication, truncated or of an unknown seal version.
    pub dropped_bad_seal: u64,
    /// Authenticated but not decodable.
    pub dropped_malformed: u64,
    /// Dropped on purpose by `drop_every_nth_send`.
    pub dropped_injected: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) dropped_unknown_key: AtomicU64,
    pub(crate) dropped_bad_seal: AtomicU64,
    pub(crate) dropped_malformed: AtomicU64,
    pub(crate) dropped_injected: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// A running gossip member. Dropping it stops the task without announcing a leave;
/// `shutdown` leaves the cluster cleanly.
pub struct Gossip {
    identity: NodeIdentity,
    commands: mpsc::Sender<Command>,
    shared: Arc<Mutex<Shared>>,
    keys: Arc<Mutex<KeyRing>>,
    counters: Arc<Counters>,
    task: Option<JoinHandle<()>>,
}

impl Gossip {
    /// Binds the socket and starts the gossip task. Changes to the visible endpoint records
    /// learned from peers arrive on the returned channel; local `publish`/`withdraw` calls are
    /// not echoed there.
    pub async fn start(
        config: GossipConfig,
    ) -> Result<(Gossip, mpsc::UnboundedReceiver<Change>), GossipError> {
        let socket = UdpSocket::bind(config.bind)
            .await
            .map_err(|source| GossipError::Bind {
                addr: config.bind,
                source,
            })?;
        let local = socket.local_addr().map_err(GossipError::LocalAddr)?;
        let mut advertise = config.advertise;
        if advertise.port() == 0 {
            advertise.set_port(local.port());
        }
        if advertise.ip().is_unspecified() {
            advertise.set_ip(local.ip());
        }
        let identity = NodeIdentity {
            node_id: config.node_id.clone(),
            addr: advertise,
            incarnation: now_ms(),
        };
        let ttl_ms = u64::try_from(config.tombstone_ttl.as_millis()).unwrap_or(u64::MAX);
        let shared = Arc::new(Mutex::new(Shared {
            table: RecordTable::new(config.node_id.clone(), ttl_ms),
            members: ActiveMembers::new(identity.clone()),
        }));
        let keys = Arc::new(Mutex::new(config.keys.clone()));
        let counters = Arc::new(Counters::default());
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::channel(64);
        let driver = Driver::new(
            identity.clone(),
            &config,
            socket,
            shared.clone(),
            keys.clone(),
            counters.clone(),
            changes_tx,
        );
        let task = tokio::spawn(driver.run(commands_rx));
        info!(node.id = %identity.node_id, addr = %advertise, key.id = config.keys.current_id(), "gossip started");
        let gossip = Gossip {
            identity,
            commands,
            shared,
            keys,
            counters,
            task: Some(task),
        };
        Ok((gossip, changes_rx))
    }

    /// The identity this member started with.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Announces this member to `peers`; any one of them answering is enough to join.
    pub async fn join(&self, peers: Vec<SocketAddr>) -> Result<(), GossipError> {
        self.send(Command::Join(peers)).await
    }

    /// Replaces the key ring: new datagrams are sealed with its current key.
    pub fn set_keys(&self, keys: KeyRing) {
        *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// Publishes (or replaces) a record owned by this node: [`records`](Self::records) shows it
    /// at once, and the gossip task spreads it.
    pub async fn publish(&self, record: EndpointRecord) -> Result<(), GossipError> {
        let versioned = lock(&self.shared).table.upsert_local(record, now_ms());
        self.send(Command::Disseminate(Box::new(versioned))).await
    }

    /// Withdraws a record everywhere by spreading a tombstone; [`records`](Self::records) no
    /// longer shows it from the moment this is called.
    pub async fn withdraw(&self, key: RecordKey) -> Result<(), GossipError> {
        let tombstone = lock(&self.shared).table.remove_local(&key, now_ms());
        match tombstone {
            Some(tombstone) => self.send(Command::Disseminate(Box::new(tombstone))).await,
            None => Ok(()),
        }
    }

    /// Active members, this node included, in address order.
    pub fn members(&self) -> Vec<NodeIdentity> {
        lock(&self.shared).members.iter().cloned().collect()
    }

    /// How many members are active, this node included.
    pub fn member_count(&self) -> usize {
        lock(&self.shared).members.len()
    }

    /// Whether the member at `addr` is active here (this node's own address included).
    pub fn has_member(&self, addr: SocketAddr) -> bool {
        lock(&self.shared).members.contains(addr)
    }

    /// How many members SWIM suspects of being down; `None` if the gossip task does not
    /// answer within a second.
    pub async fn suspects(&self) -> Option<usize> {
        let ask = async {
            let (answer, suspects) = oneshot::channel();
            self.send(Command::Suspects(answer)).await.ok()?;
            suspects.await.ok()
        };
        tokio::time::timeout(std::time::Duration::from_secs(1), ask)
            .await
            .ok()
            .flatten()
    }

    /// Visible (not withdrawn) records, in (network, task) order.
    pub fn records(&self) -> Vec<EndpointRecord> {
        lock(&self.shared).table.visible().cloned().collect()
    }

    pub fn stats(&self) -> GossipStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GossipStats {
            received: get(&c.received),
            sent: get(&c.sent),
            received_bytes: get(&c.received_bytes),
            sent_bytes: get(&c.sent_bytes),
            dropped_unknown_key: get(&c.dropped_unknown_key),
            dropped_bad_seal: get(&c.dropped_bad_seal),
            dropped_malformed: get(&c.dropped_malformed),
            dropped_injected: get(&c.dropped_injected),
        }
    }

    /// Leaves the cluster (peers learn at once instead of by suspicion) and stops the task.
    pub async fn shutdown(mut self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    async fn send(&self, command: Command) -> Result<(), GossipError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| GossipError::Stopped)
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
