//! The overlay plus the gossip that spreads its endpoints: what the worker attaches tasks through.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use mesh_proto::Task;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::balancer::Balancer;
use super::continuity::{Continuity, SavedSandbox};
use super::ingress;
use super::{Overlay, OverlayError};
use crate::dns::Dns;
use crate::gossip::{
    Change, EndpointRecord, Gossip, GossipConfig, GossipError, GossipStats, KeyRing, SealKey,
};
use crate::lb::LbBackend;
use crate::lb::ebpf::Pins;
use crate::netlink::{Netns, netns_cookie};

/// What the worker's controllers call when a task's container starts or goes.
pub trait TaskNetwork: Send + Sync {
    /// Plugs the task's sandbox into its networks. Its endpoints stay private (reachable, but no
    /// backend of any service) until [`announce`](TaskNetwork::announce).
    fn attach<'a>(&'a self, task: &'a Task, pid: u32) -> BoxFuture<'a, Result<(), OverlayError>>;
    /// Publishes an attached task's endpoints: it becomes a backend of its services' VIPs, of
    /// the routing mesh and of their DNS names, on every node. Called once the task runs (and,
    /// with a health check, is healthy).
    fn announce<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, ()>;
    fn detach<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, ()>;
    /// Stops sending new connections to a task about to stop (its endpoints are withdrawn from
    /// every node's DNS and load balancer) while its interfaces stay for what is in flight.
    fn drain<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, ()>;
}

/// How often leftovers are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How often a member alone announces itself to the managers again.
const REJOIN_INTERVAL: Duration = Duration::from_secs(1);
/// How long gossip runs before entries it does not know of are taken to be stale: a few
/// anti-entropy rounds, so that a restarted agent has heard every live endpoint by then. Until
/// then, nothing an earlier run knew of is taken out of the DNS, the VIPs or the routing mesh.
const SETTLE: Duration = Duration::from_secs(20);
/// How often the endpoint table is saved for the next start, when it changed.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

struct Running {
    gossip: Arc<Gossip>,
    feeder: JoinHandle<()>,
    sweeper: JoinHandle<()>,
}

/// The node's overlay with its gossip member, started once the managers hand out keys.
pub struct Dataplane {
    overlay: Arc<Overlay>,
    gossip_port: u16,
    running: Mutex<Option<Running>>,
    published: Arc<Mutex<HashMap<String, Vec<EndpointRecord>>>>,
    /// Endpoints of attached tasks not announced yet (starting, or not yet healthy).
    pending: Mutex<HashMap<String, Vec<EndpointRecord>>>,
    dns: Arc<Dns>,
    /// The service VIPs' load balancer; `None` where it cannot start.
    balancer: Option<Arc<std::sync::Mutex<Balancer>>>,
    /// The routing mesh's rules as last applied.
    mesh: Arc<Mutex<Option<ingress::Plan>>>,
    /// What an earlier run saved, and what this one saves for the next.
    continuity: Arc<Continuity>,
}

impl Dataplane {
    /// The data plane; its tasks' DNS forwards what it does not know to `upstreams`, and its
    /// service VIPs go through the load balancer `lb` stands for.
    ///
    /// What an earlier run left is taken over: the load balancer's pinned programs and maps, and
    /// the endpoint table it saved, which the DNS answers from at once (see
    /// [`Dataplane::restore`] for the sandboxes).
    pub fn new(
        overlay: Arc<Overlay>,
        gossip_port: u16,
        upstreams: Vec<SocketAddr>,
        lb: LbBackend,
    ) -> Self {
        let continuity = Continuity::load(overlay.state_dir());
        let dns = Dns::new(upstreams);
        let seed: Vec<EndpointRecord> = continuity.seed().records().cloned().collect();
        for record in &seed {
            Self::learn(&dns, &Change::Upsert(record.clone()));
        }
        let seeded = seed.len();
        let balancer = match Balancer::open(lb, &Pins::for_prefix(overlay.prefix())) {
            Ok(mut balancer) => {
                // The saved table is whole: what it lacks was gone before the restart.
                if seeded > 0 {
                    balancer.release_hold();
                }
                Some(Arc::new(std::sync::Mutex::new(balancer)))
            }
            Err(err) => {
                tracing::warn!(error = %err, "service VIPs disabled: the load balancer cannot start");
                None
            }
        };
        if seeded > 0 {
            tracing::info!(
                endpoints = seeded,
                "endpoints of the earlier run taken over"
            );
        }
        Self {
            overlay,
            gossip_port,
            running: Mutex::new(None),
            published: Arc::new(Mutex::new(HashMap::new())),
            pending: Mutex::new(HashMap::new()),
            dns: Arc::new(dns),
            mesh: Arc::new(Mutex::new(None)),
            balancer,
            continuity: Arc::new(continuity),
        }
    }

    /// Brings back, before anything else, the DNS resolvers and service VIPs of the sandboxes
    /// an earlier run attached whose network namespace is still the same: their tasks resolve
    /// names again within moments of a restart, before meshd has reached the managers and
    /// re-adopted the containers (which then keeps them as they are). Returns how many.
    pub async fn restore(&self) -> usize {
        let mut restored = 0;
        for (task_id, saved) in self.continuity.saved_sandboxes() {
            let sandbox = Netns::of_pid(saved.pid);
            match netns_cookie(&sandbox).await {
                Ok(cookie) if cookie == saved.cookie => {}
                _ => {
                    tracing::debug!(task.id = %task_id, pid = saved.pid, "saved sandbox is gone");
                    continue;
                }
            }
            if let Err(err) = self
                .dns
                .serve(&task_id, &sandbox, saved.networks.clone())
                .await
            {
                tracing::warn!(task.id = %task_id, error = %err, "cannot bring back the sandbox's DNS");
                continue;
            }
            if let Some(balancer) = &self.balancer {
                let handle = crate::lb::Sandbox {
                    netns: sandbox,
                    cookie: saved.cookie,
                };
                let (task_id, networks) = (task_id.clone(), saved.networks);
                on_balancer(balancer, move |b| b.add_sandbox(&task_id, handle, networks)).await;
            }
            self.continuity.restored(&task_id);
            restored += 1;
        }
        Self::rebalance(&self.dns, self.balancer.as_ref()).await;
        if restored > 0 {
            tracing::info!(sandboxes = restored, "sandboxes' DNS and VIPs brought back");
        }
        restored
    }

    /// Records what an endpoint change means for service names.
    fn learn(dns: &Dns, change: &Change) {
        dns.directory()
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(change);
    }

    /// Programs the load balancer after the directory changed.
    async fn rebalance(dns: &Dns, balancer: Option<&Arc<std::sync::Mutex<Balancer>>>) {
        let Some(balancer) = balancer else {
            return;
        };
        let directory = dns.directory().clone();
        on_balancer(balancer, move |b| {
            b.sync(&directory.read().unwrap_or_else(|p| p.into_inner()));
        })
        .await;
    }

    /// Records how long each load balancer update takes in the kernel into `metrics`.
    pub fn time_into(self, metrics: crate::metrics::KernelMetrics) -> Self {
        if let Some(balancer) = &self.balancer {
            balancer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .time_into(metrics);
        }
        self
    }

    /// The backends programmed behind each service VIP on this node.
    pub fn vip_backends(&self) -> std::collections::BTreeMap<std::net::Ipv4Addr, usize> {
        self.balancer
            .as_ref()
            .map_or_else(Default::default, |balancer| {
                balancer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .vip_backends()
            })
    }

    /// Gossip members suspected of being down, once gossip runs.
    pub async fn gossip_suspects(&self) -> Option<usize> {
        let gossip = self.running.lock().await.as_ref()?.gossip.clone();
        gossip.suspects().await
    }

    /// The load balancer's backend ("ebpf" or "ipvs") and its entries, when one runs.
    pub fn balancer_info(&self) -> Option<(&'static str, usize)> {
        let balancer = self.balancer.as_ref()?;
        let balancer = balancer.lock().unwrap_or_else(|p| p.into_inner());
        Some((balancer.name(), balancer.entries()))
    }

    pub fn overlay(&self) -> &Arc<Overlay> {
        &self.overlay
    }

    /// Starts gossip under `keys` (newest first) and joins `managers`, or rotates its keys.
    pub async fn set_keys(
        &self,
        keys: Vec<SealKey>,
        managers: &[IpAddr],
    ) -> Result<(), GossipError> {
        let mut keys = keys.into_iter();
        let Some(current) = keys.next() else {
            return Ok(());
        };
        let ring = KeyRing::with_previous(current, keys.collect());
        let mut running = self.running.lock().await;
        if let Some(r) = running.as_ref() {
            r.gossip.set_keys(ring);
            return Ok(());
        }
        let bind = SocketAddr::from(([0, 0, 0, 0], self.gossip_port));
        let mut config = GossipConfig::new(self.overlay.node_id.clone(), bind, ring);
        config.advertise = SocketAddr::new(IpAddr::V4(self.overlay.vtep), self.gossip_port);
        let (gossip, mut changes) = Gossip::start(config).await?;
        let gossip = Arc::new(gossip);
        let peers: Vec<SocketAddr> = managers
            .iter()
            .filter(|ip| **ip != IpAddr::V4(self.overlay.vtep))
            .map(|ip| SocketAddr::new(*ip, self.gossip_port))
            .collect();
        if !peers.is_empty() {
            gossip.join(peers.clone()).await?;
        }
        for record in self.published.lock().await.values().flatten() {
            gossip.publish(record.clone()).await?;
        }
        let overlay = self.overlay.clone();
        let dns = self.dns.clone();
        let balancer = self.balancer.clone();
        let mesh = self.mesh.clone();
        let records = gossip.clone();
        let continuity = self.continuity.clone();
        let feeder = tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                continuity.seed().observe(&change);
                continuity.touch();
                Self::learn(&dns, &change);
                Self::rebalance(&dns, balancer.as_ref()).await;
                overlay.apply(change).await;
                reroute(&overlay, &records, &mesh, &continuity).await;
            }
        });
        let sweeper = tokio::spawn(sweep(
            Swept {
                overlay: self.overlay.clone(),
                gossip: gossip.clone(),
                published: self.published.clone(),
                dns: self.dns.clone(),
                balancer: self.balancer.clone(),
                mesh: self.mesh.clone(),
                continuity: self.continuity.clone(),
            },
            peers,
        ));
        *running = Some(Running {
            gossip,
            feeder,
            sweeper,
        });
        Ok(())
    }

    /// Stops gossip and leaves the kernel state in place: running tasks keep their overlay, and
    /// the next start picks it up again.
    pub async fn shutdown(&self) {
        self.dns.stop_all().await;
        if let Some(r) = self.running.lock().await.take() {
            r.feeder.abort();
            r.sweeper.abort();
            let _ = r.sweeper.await;
            // The table as it is now, for the next start.
            self.continuity.touch();
            self.continuity
                .save_endpoints(|| self.continuity.view(r.gossip.records()));
            match Arc::try_unwrap(r.gossip) {
                Ok(gossip) => gossip.shutdown().await,
                Err(_) => tracing::warn!("gossip still in use at shutdown"),
            }
        }
    }

    /// Stops gossip and removes every overlay namespace and the gateway bridge of this node
    /// (leaving the swarm).
    pub async fn leave(&self) {
        self.shutdown().await;
        self.published.lock().await.clear();
        if let Some(balancer) = &self.balancer {
            on_balancer(balancer, Balancer::release).await;
        }
        self.continuity.clear();
        self.overlay.clear().await;
    }

    /// Gossip's view: members, endpoints and datagram counters, once gossip runs.
    pub async fn gossip_info(&self) -> Option<(usize, usize, GossipStats)> {
        let running = self.running.lock().await;
        let gossip = &running.as_ref()?.gossip;
        Some((
            gossip.member_count(),
            gossip.records().len(),
            gossip.stats(),
        ))
    }

    async fn attach_task(&self, task: &Task, pid: u32) -> Result<(), OverlayError> {
        let records = self.overlay.attach(task, pid).await?;
        let networks: Vec<String> = task.networks.iter().map(|n| n.network_id.clone()).collect();
        let sandbox = Netns::of_pid(pid);
        self.dns.serve(&task.id, &sandbox, networks.clone()).await?;
        let handle = Balancer::sandbox_of(&sandbox).await?;
        self.continuity.attached(
            &task.id,
            SavedSandbox {
                pid,
                cookie: handle.cookie,
                networks: networks.clone(),
            },
        );
        if let Some(balancer) = &self.balancer {
            let task_id = task.id.clone();
            on_balancer(balancer, move |b| b.add_sandbox(&task_id, handle, networks)).await;
        }
        Self::rebalance(&self.dns, self.balancer.as_ref()).await;
        self.continuity.touch();
        if !records.is_empty() {
            self.pending.lock().await.insert(task.id.clone(), records);
        }
        Ok(())
    }

    async fn announce_task(&self, task_id: &str) {
        let Some(records) = self.pending.lock().await.remove(task_id) else {
            return;
        };
        for record in &records {
            Self::learn(&self.dns, &Change::Upsert(record.clone()));
        }
        Self::rebalance(&self.dns, self.balancer.as_ref()).await;
        // Held across publishing, so that the sweep never takes a record being published for
        // one this node no longer owns.
        let mut published = self.published.lock().await;
        published.insert(task_id.to_owned(), records.clone());
        if let Some(r) = self.running.lock().await.as_ref() {
            for record in &records {
                if let Err(err) = r.gossip.publish(record.clone()).await {
                    tracing::warn!(task.id = %task_id, error = %err, "cannot publish endpoint");
                }
            }
        }
        drop(published);
        tracing::debug!(task.id = %task_id, "task announced to its services");
        self.continuity.touch();
        self.reroute().await;
    }

    /// The endpoints the task has out there: those this run published, or, for a task still
    /// pending here, those an earlier run published and gossip still shows (a task re-adopted
    /// after a restart before this run announced it).
    async fn take_endpoints(&self, task_id: &str) -> Option<Vec<EndpointRecord>> {
        if let Some(records) = self.published.lock().await.remove(task_id) {
            self.pending.lock().await.remove(task_id);
            return Some(records);
        }
        let pending = self.pending.lock().await.remove(task_id)?;
        let gossip = self.running.lock().await.as_ref().map(|r| r.gossip.clone());
        let visible: Vec<EndpointRecord> = match gossip {
            Some(gossip) => gossip.records(),
            None => self.continuity.seed().records().cloned().collect(),
        };
        let out: Vec<EndpointRecord> = pending
            .into_iter()
            .filter(|p| visible.iter().any(|v| v.key() == p.key()))
            .collect();
        (!out.is_empty()).then_some(out)
    }

    /// Re-plans the routing mesh, once gossip runs.
    async fn reroute(&self) {
        let gossip = self.running.lock().await.as_ref().map(|r| r.gossip.clone());
        if let Some(gossip) = gossip {
            reroute(&self.overlay, &gossip, &self.mesh, &self.continuity).await;
        }
    }

    async fn drain_task(&self, task_id: &str) {
        let Some(records) = self.take_endpoints(task_id).await else {
            return;
        };
        for record in &records {
            Self::learn(&self.dns, &Change::Remove(record.clone()));
        }
        Self::rebalance(&self.dns, self.balancer.as_ref()).await;
        if let Some(r) = self.running.lock().await.as_ref() {
            for record in &records {
                if let Err(err) = r.gossip.withdraw(record.key()).await {
                    tracing::warn!(task.id = %task_id, error = %err, "cannot withdraw endpoint");
                }
            }
        }
        tracing::debug!(task.id = %task_id, "task drained from its services");
        self.continuity.touch();
        self.reroute().await;
    }

    async fn detach_task(&self, task_id: &str) {
        self.continuity.detached(task_id);
        self.continuity.touch();
        self.dns.stop(task_id).await;
        let records = self.take_endpoints(task_id).await;
        for record in records.iter().flatten() {
            Self::learn(&self.dns, &Change::Remove(record.clone()));
        }
        if let Some(balancer) = &self.balancer {
            let task_id = task_id.to_owned();
            on_balancer(balancer, move |b| b.remove_sandbox(&task_id)).await;
        }
        Self::rebalance(&self.dns, self.balancer.as_ref()).await;
        let records = records.unwrap_or_default();
        if let Some(r) = self.running.lock().await.as_ref() {
            for record in &records {
                if let Err(err) = r.gossip.withdraw(record.key()).await {
                    tracing::warn!(task.id = %task_id, error = %err, "cannot withdraw endpoint");
                }
            }
        }
        self.overlay.detach(task_id).await;
        self.reroute().await;
    }
}

impl TaskNetwork for Dataplane {
    fn attach<'a>(&'a self, task: &'a Task, pid: u32) -> BoxFuture<'a, Result<(), OverlayError>> {
        Box::pin(self.attach_task(task, pid))
    }

    fn announce<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.announce_task(task_id))
    }

    fn detach<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.detach_task(task_id))
    }

    fn drain<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.drain_task(task_id))
    }
}

/// What the sweep works on.
struct Swept {
    overlay: Arc<Overlay>,
    gossip: Arc<Gossip>,
    published: Arc<Mutex<HashMap<String, Vec<EndpointRecord>>>>,
    dns: Arc<Dns>,
    balancer: Option<Arc<std::sync::Mutex<Balancer>>>,
    mesh: Arc<Mutex<Option<ingress::Plan>>>,
    continuity: Arc<Continuity>,
}

/// Every [`SWEEP_INTERVAL`]: removes namespaces and gateway leases no task uses; once gossip has
/// settled, also FDB and neighbour entries towards endpoints gossip does not know, and withdraws
/// records an earlier run of this node published for tasks that are no longer attached here.
/// Meanwhile, every [`REJOIN_INTERVAL`], announces itself to the managers again while it knows no
/// other member: a join sent before a manager's gossip listened is lost, and SWIM only talks to
/// members it knows. Every [`SAVE_INTERVAL`], saves the endpoint table if it changed.
async fn sweep(s: Swept, peers: Vec<SocketAddr>) {
    let started = tokio::time::Instant::now();
    let mut sweeps = tokio::time::interval(SWEEP_INTERVAL);
    let mut rejoins = tokio::time::interval(REJOIN_INTERVAL);
    let mut saves = tokio::time::interval(SAVE_INTERVAL);
    sweeps.tick().await;
    let settle_at = tokio::time::sleep(SETTLE);
    tokio::pin!(settle_at);
    let mut settled = false;
    loop {
        tokio::select! {
            _ = sweeps.tick() => {}
            () = &mut settle_at, if !settled => {
                settled = true;
                settle(&s).await;
            }
            _ = rejoins.tick() => {
                if !peers.is_empty() && s.gossip.member_count() <= 1 {
                    tracing::debug!("no gossip member known yet: announcing again");
                    if let Err(err) = s.gossip.join(peers.clone()).await {
                        tracing::warn!(error = %err, "cannot join gossip");
                    }
                }
                continue;
            }
            _ = saves.tick() => {
                s.continuity
                    .save_endpoints(|| s.continuity.view(s.gossip.records()));
                continue;
            }
        }
        if let Err(err) = s.overlay.sweep().await {
            tracing::warn!(error = %err, "cannot sweep overlay leftovers");
        }
        // Expires VIPs kept empty past their grace.
        Dataplane::rebalance(&s.dns, s.balancer.as_ref()).await;
        reroute(&s.overlay, &s.gossip, &s.mesh, &s.continuity).await;
        if started.elapsed() < SETTLE {
            continue;
        }
        s.overlay.sweep_entries().await;
        let published = s.published.lock().await;
        let node_id = &s.overlay.node_id;
        for record in s.gossip.records() {
            let ours = record.node_id == *node_id
                && !published
                    .get(&record.task_id)
                    .is_some_and(|r| r.iter().any(|p| p.key() == record.key()));
            if ours {
                tracing::info!(task.id = %record.task_id, "withdrawing an endpoint of an earlier run");
                Dataplane::learn(&s.dns, &Change::Remove(record.clone()));
                if let Err(err) = s.gossip.withdraw(record.key()).await {
                    tracing::warn!(error = %err, "cannot withdraw endpoint");
                }
            }
        }
    }
}

/// Gossip has settled: what the earlier run knew and gossip never confirmed leaves the DNS, the
/// VIPs and the routing mesh; sandboxes brought back at start that no task claimed go; the load
/// balancer stops holding what it took over and drops what sandboxes that went left in it.
async fn settle(s: &Swept) {
    let known = s.gossip.records();
    let stale = {
        let published = s.published.lock().await;
        let mut known = known;
        known.extend(published.values().flatten().cloned());
        s.continuity.seed().settle(&known)
    };
    for record in &stale {
        Dataplane::learn(&s.dns, &Change::Remove(record.clone()));
    }
    let unclaimed = s.continuity.take_unclaimed();
    for task_id in &unclaimed {
        s.dns.stop(task_id).await;
    }
    if let Some(balancer) = &s.balancer {
        on_balancer(balancer, move |b| {
            for task_id in &unclaimed {
                b.remove_sandbox(task_id);
            }
            b.release_hold();
            b.prune();
        })
        .await;
    }
    Dataplane::rebalance(&s.dns, s.balancer.as_ref()).await;
    s.continuity.touch();
    reroute(&s.overlay, &s.gossip, &s.mesh, &s.continuity).await;
    tracing::info!(withdrawn = stale.len(), "gossip settled");
}

/// Runs `f` on the load balancer on a blocking thread: its kernel calls (and the IPVS backend's
/// iptables runs) must not hold up the runtime's workers.
async fn on_balancer(
    balancer: &Arc<std::sync::Mutex<Balancer>>,
    f: impl FnOnce(&mut Balancer) + Send + 'static,
) {
    let balancer = balancer.clone();
    let done = tokio::task::spawn_blocking(move || {
        f(&mut balancer.lock().unwrap_or_else(|p| p.into_inner()));
    })
    .await;
    if let Err(err) = done {
        tracing::warn!(error = %err, "load balancer update failed");
    }
}

/// Applies the routing mesh's rules for what gossip knows now, when they changed. Until gossip
/// has settled, what the earlier run knew counts too, and so do this node's tasks not attached
/// again yet (by their gateway leases): nothing is taken out of the rules before then.
async fn reroute(
    overlay: &Overlay,
    gossip: &Gossip,
    mesh: &Mutex<Option<ingress::Plan>>,
    continuity: &Continuity,
) {
    // Held while planning too: a plan made from an older view must not be applied after a newer
    // one (a withdrawn task would be back until the next change).
    let mut applied = mesh.lock().await;
    let settled = continuity.is_settled();
    let local = overlay.gateway_addrs(!settled).await;
    let records = continuity.view(gossip.records());
    let plan = ingress::plan(&records, overlay.vtep(), &local);
    if applied.as_ref() == Some(&plan) || (applied.is_none() && plan.is_empty()) {
        return;
    }
    match ingress::apply(&plan).await {
        Ok(()) => {
            tracing::info!(ports = plan.ports.len(), "routing mesh updated");
            *applied = Some(plan);
        }
        Err(err) => tracing::warn!(error = %err, "cannot update the routing mesh"),
    }
}
