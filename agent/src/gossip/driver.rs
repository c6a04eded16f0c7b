//! The gossip task: drives foca (sans-IO SWIM) with a UDP socket and timers, opens and seals
//! every datagram, and runs the periodic anti-entropy exchange of record digests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{AccumulatingRuntime, Config, Foca, OwnedNotification, PostcardCodec, Timer};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

mod anti_entropy;

use super::identity::{FocaRng, NodeIdentity};
use super::node::{Counters, GossipConfig, add, bump};
use super::records::{Change, VersionedRecord};
use super::seal::{KeyRing, SEAL_OVERHEAD, SealError};
use super::wire::{self, Inbound, RecordBroadcasts, Shared, SyncMessage, lock};

/// Largest plaintext per datagram: an underlay MTU of 1400 minus IPv4/UDP headers, the seal
/// and the kind byte, so that gossip never fragments.
const MAX_PLAINTEXT: usize = 1400 - 28 - SEAL_OVERHEAD - 1;
/// Budget for the JSON of one anti-entropy message.
const SYNC_BUDGET: usize = 1100;
/// Digest entries per anti-entropy datagram.
const DIGEST_PAGE: usize = 6;

pub(crate) enum Command {
    Join(Vec<SocketAddr>),
    /// Spreads a change of this node's own records, already in the shared table.
    Disseminate(Box<VersionedRecord>),
    Shutdown(oneshot::Sender<()>),
    /// How many members SWIM suspects of being down now.
    Suspects(oneshot::Sender<usize>),
}

pub(super) type Swim = Foca<NodeIdentity, PostcardCodec, FocaRng, RecordBroadcasts>;

pub(crate) struct Driver {
    foca: Swim,
    runtime: AccumulatingRuntime<NodeIdentity>,
    socket: Arc<UdpSocket>,
    shared: Arc<Mutex<Shared>>,
    keys: Arc<Mutex<KeyRing>>,
    counters: Arc<Counters>,
    changes: mpsc::UnboundedSender<Change>,
    timers_tx: mpsc::UnboundedSender<Timer<NodeIdentity>>,
    timers_rx: mpsc::UnboundedReceiver<Timer<NodeIdentity>>,
    anti_entropy_interval: Duration,
    /// Nodes with no identity active, since when: their records are expired after the grace.
    gone: HashMap<String, Instant>,
    gone_node_grace: Duration,
    drop_every: Option<NonZeroU32>,
    piggyback: bool,
    sends: u64,
    rng: StdRng,
}

impl Driver {
    pub(crate) fn new(
        identity: NodeIdentity,
        config: &GossipConfig,
        socket: UdpSocket,
        shared: Arc<Mutex<Shared>>,
        keys: Arc<Mutex<KeyRing>>,
        counters: Arc<Counters>,
        changes: mpsc::UnboundedSender<Change>,
    ) -> Self {
        let handler = RecordBroadcasts {
            shared: shared.clone(),
            changes: changes.clone(),
        };
        let foca = swim(identity, config, handler);
        let (timers_tx, timers_rx) = mpsc::unbounded_channel();
        Self {
            foca,
            runtime: AccumulatingRuntime::new(),
            socket: Arc::new(socket),
            shared,
            keys,
            counters,
            changes,
            timers_tx,
            timers_rx,
            anti_entropy_interval: config.anti_entropy_interval,
            gone: HashMap::new(),
            gone_node_grace: config.gone_node_grace,
            drop_every: config.drop_every_nth_send,
            piggyback: config.piggyback_records,
            sends: 0,
            rng: StdRng::from_os_rng(),
        }
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let socket = self.socket.clone();
        let mut buf = vec![0u8; 65_536];
        let mut anti_entropy = tokio::time::interval(self.anti_entropy_interval);
        anti_entropy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from).await,
                    Err(error) => debug!(%error, "gossip receive failed"),
                },
                Some(timer) = self.timers_rx.recv() => {
                    if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                        debug!(%error, "gossip timer failed");
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
                            debug!(%error, "leaving the gossip cluster failed");
                        }
                        self.flush().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    None => return,
                },
                _ = anti_entropy.tick() => self.anti_entropy().await,
            }
            self.flush().await;
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Join(peers) => {
                for addr in peers {
                    let placeholder = NodeIdentity {
                        node_id: String::new(),
                        addr,
                        incarnation: 0,
                    };
                    if let Err(error) = self.foca.announce(placeholder, &mut self.runtime) {
                        warn!(%addr, %error, "gossip announce failed");
                    }
                }
            }
            Command::Disseminate(versioned) => self.disseminate(&versioned),
            Command::Suspects(answer) => {
                let suspects = self
                    .foca
                    .iter_membership_state()
                    .filter(|m| m.state() == foca::State::Suspect)
                    .count();
                let _ = answer.send(suspects);
            }
            Command::Shutdown(_) => {}
        }
    }

    fn disseminate(&mut self, record: &VersionedRecord) {
        if !self.piggyback {
            return;
        }
        let added = wire::encode_broadcast(record)
            .map_err(|e| e.to_string())
            .and_then(|data| self.foca.add_broadcast(&data).map_err(|e| e.to_string()));
        match added {
            Ok(_) => {
                if let Err(error) = self.foca.broadcast(&mut self.runtime) {
                    debug!(%error, "gossip broadcast failed");
                }
            }
            // Anti-entropy still carries records too large to piggyback.
            Err(error) => debug!(%error, "record not broadcast"),
        }
    }

    pub(super) async fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        bump(&self.counters.received);
        add(&self.counters.received_bytes, datagram.len());
        let opened = lock_keys(&self.keys).open(datagram);
        let plain = match opened {
            Ok(plain) => plain,
            Err(SealError::UnknownKey { key_id }) => {
                bump(&self.counters.dropped_unknown_key);
                debug!(%from, key.id = key_id, "gossip datagram under unknown key dropped");
                return;
            }
            Err(error) => {
                bump(&self.counters.dropped_bad_seal);
                debug!(%from, %error, "gossip datagram failed to open");
                return;
            }
        };
        match wire::parse(&plain) {
            Ok(Inbound::Foca(packet)) => {
                if let Err(error) = self.foca.handle_data(packet, &mut self.runtime) {
                    bump(&self.counters.dropped_malformed);
                    debug!(%from, %error, "foca rejected a datagram");
                }
            }
            Ok(Inbound::Sync(message)) => self.on_sync(message, from).await,
            Ok(Inbound::Members(members)) => {
                if let Err(error) =
                    self.foca
                        .apply_many(members.into_iter(), false, &mut self.runtime)
                {
                    debug!(%from, %error, "foca rejected member states");
                }
            }
            Err(error) => {
                bump(&self.counters.dropped_malformed);
                debug!(%from, %error, "undecodable gossip datagram");
            }
        }
    }

    async fn send_sync(&mut self, message: &SyncMessage, to: SocketAddr) {
        match wire::sync_frame(message) {
            Ok(frame) => self.send_sealed(&frame, to).await,
            Err(error) => warn!(%error, "encoding an anti-entropy message failed"),
        }
    }

    async fn send_sealed(&mut self, plain: &[u8], to: SocketAddr) {
        self.sends += 1;
        if self
            .drop_every
            .is_some_and(|n| self.sends.is_multiple_of(u64::from(n.get())))
        {
            bump(&self.counters.dropped_injected);
            return;
        }
        let sealed = match lock_keys(&self.keys).seal(plain) {
            Ok(sealed) => sealed,
            Err(error) => {
                warn!(%error, "sealing a gossip datagram failed");
                return;
            }
        };
        match self.socket.send_to(&sealed, to).await {
            Ok(len) => {
                bump(&self.counters.sent);
                add(&self.counters.sent_bytes, len);
            }
            Err(error) => debug!(%to, %error, "gossip send failed"),
        }
    }

    /// Carries out what foca asked for: datagrams, timers and membership notifications.
    pub(super) async fn flush(&mut self) {
        while let Some((dst, data)) = self.runtime.to_send() {
            self.send_sealed(&wire::foca_frame(&data), dst.addr).await;
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            let timers = self.timers_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = timers.send(timer);
            });
        }
        // Membership is kept up to date change by change: at a thousand members, copying the
        // whole list on every change cost more than all of SWIM's own work.
        let mut first_contact = None;
        while let Some(notification) = self.runtime.to_notify() {
            let mut shared = lock(&self.shared);
            let was_alone = shared.members.len() <= 1;
            match notification {
                OwnedNotification::MemberUp(id) => {
                    debug!(node.id = %id.node_id, addr = %id.addr, "gossip member up");
                    if was_alone {
                        first_contact = Some(id.addr);
                    }
                    self.gone.remove(&id.node_id);
                    shared.members.insert(id);
                }
                OwnedNotification::Rename(old, id) => {
                    debug!(node.id = %id.node_id, addr = %id.addr, "gossip member renamed");
                    shared.members.remove(&old);
                    self.gone.remove(&id.node_id);
                    shared.members.insert(id);
                }
                OwnedNotification::MemberDown(id) => {
                    debug!(node.id = %id.node_id, addr = %id.addr, "gossip member down");
                    shared.members.remove(&id);
                    if !shared.members.iter().any(|m| m.node_id == id.node_id) {
                        self.gone.entry(id.node_id).or_insert_with(Instant::now);
                    }
                }
                OwnedNotification::Rejoin(id) => {
                    debug!(incarnation = id.incarnation, "gossip identity renewed");
                    shared.members.insert(id);
                }
                OwnedNotification::Defunct => warn!("gossip identity declared down"),
                _ => {}
            }
        }
        // A member that was alone swaps tables with the first peer it meets (the peer answers
        // with what we lack and asks for what it lacks) instead of waiting for anti-entropy.
        // Only the newcomer asks: every member greeting every new member would send a thousand
        // digests to each node joining a thousand-node cluster.
        if let Some(peer) = first_contact {
            self.send_digest(peer).await;
        }
    }
}

/// The SWIM member a driver runs, configured from `config`.
pub(super) fn swim(
    identity: NodeIdentity,
    config: &GossipConfig,
    handler: RecordBroadcasts,
) -> Swim {
    // Sized for clusters of up to about a thousand nodes: news is retransmitted often enough to
    // reach them all (a size of 16 stopped spreading member news early, so 100 members took
    // ~95 s to see each other and 1,000 never did). The few pairs the epidemic still misses
    // are found by the membership sync of the anti-entropy round.
    let mut foca_config = Config::new_lan(NonZeroU32::MIN.saturating_add(1023));
    foca_config.max_packet_size = NonZeroUsize::MIN.saturating_add(MAX_PLAINTEXT - 1);
    if !config.swim_spreads_membership {
        foca_config.probe_period = Duration::from_secs(3600);
        foca_config.max_transmissions = NonZeroU8::MIN;
        foca_config.periodic_announce = None;
        foca_config.periodic_gossip = None;
    }
    Foca::with_custom_broadcast(
        identity,
        foca_config,
        FocaRng::from_os(),
        PostcardCodec,
        handler,
    )
}

fn lock_keys(keys: &Mutex<KeyRing>) -> std::sync::MutexGuard<'_, KeyRing> {
    keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
