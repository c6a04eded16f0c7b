//! The dispatcher: the managers' end of every agent's session.
//!
//! Agents register (their node becomes READY), heartbeat (kept in memory, never written to Raft),
//! receive their assigned tasks as a stream (a complete set, then incremental changes) and report task
//! status, which is batched into few store writes. A node that misses its heartbeats is marked DOWN,
//! and the orchestrators reschedule its tasks. The dispatcher serves only while this manager leads.

mod assignments;
mod fanout;
mod logs;
mod service;
mod sessions;
mod status;

pub use logs::{LogBroker, LogSubscriptionGuard};
pub use status::accept_status;

use mesh_proto::dispatcher_server::DispatcherServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use crate::store::Store;
use fanout::Fanout;
use sessions::Sessions;
use status::StatusBatch;

/// Swarm's default heartbeat period.
pub const DEFAULT_HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub heartbeat_period: Duration,
    /// A node is marked down after this many periods without a heartbeat (but never before one
    /// period and a restart allowance have passed: see `sessions::heartbeat_grace`).
    pub grace_multiplier: f64,
    /// Counts sessions ended for missed heartbeats.
    pub heartbeat_misses: prometheus_client::metrics::counter::Counter,
    /// Records the heartbeat monitor's stalls (the leader held up).
    pub monitor_stalls: prometheus_client::metrics::histogram::Histogram,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            heartbeat_period: DEFAULT_HEARTBEAT_PERIOD,
            grace_multiplier: 1.5,
            heartbeat_misses: Default::default(),
            monitor_stalls: prometheus_client::metrics::histogram::Histogram::new(
                crate::metrics::latency_buckets(),
            ),
        }
    }
}

struct Inner {
    store: Store,
    sessions: Sessions,
    /// Hands the store's changes to the sessions they concern.
    fanout: Arc<Fanout>,
    broker: LogBroker,
    statuses: mpsc::UnboundedSender<StatusBatch>,
    active: watch::Sender<bool>,
    config: watch::Sender<DispatcherConfig>,
    /// Where the leader is, to send agents there when this manager does not lead.
    leadership: watch::Receiver<crate::raft::Leadership>,
}

/// Cheap to clone; one per manager, serving while [`Dispatcher::run`] runs (i.e. while leading).
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
    status_rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<StatusBatch>>>,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        config: DispatcherConfig,
        leadership: watch::Receiver<crate::raft::Leadership>,
    ) -> Self {
        let (statuses, status_rx) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                store,
                sessions: Sessions::default(),
                fanout: Arc::default(),
                broker: LogBroker::default(),
                statuses,
                active: watch::channel(false).0,
                config: watch::channel(config).0,
                leadership,
            }),
            status_rx: Arc::new(tokio::sync::Mutex::new(status_rx)),
        }
    }

    pub fn grpc_service(&self) -> DispatcherServer<service::DispatcherService> {
        DispatcherServer::new(service::DispatcherService::new(self.inner.clone()))
            .max_decoding_message_size(4 << 20)
    }

    /// Agent sessions open now.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    pub fn broker(&self) -> &LogBroker {
        &self.inner.broker
    }

    pub fn set_heartbeat_period(&self, period: Duration) {
        self.inner
            .config
            .send_modify(|c| c.heartbeat_period = period);
    }

    /// Serves sessions until `shutdown` turns true, then closes every session.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let inner = self.inner.clone();
        inner.sessions.clear();
        // The router is up before the first session: sessions and streams depend on it.
        let (stop_routing, routing) = watch::channel(false);
        let router = tokio::spawn(fanout::route(
            inner.store.clone(),
            inner.fanout.clone(),
            routing,
        ));
        inner.fanout.wait_routing().await;
        inner.active.send_replace(true);
        tracing::info!("dispatcher started");
        let mut status_rx = self.status_rx.lock().await;
        let monitor = sessions::monitor_heartbeats(inner.clone());
        tokio::pin!(monitor);
        loop {
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { break },
                _ = &mut monitor => break,
                batch = status_rx.recv() => match batch {
                    Some(first) => status::write_batch(&inner.store, first, &mut status_rx).await,
                    None => break,
                },
            }
        }
        inner.active.send_replace(false);
        inner.sessions.clear();
        stop_routing.send_replace(true);
        let _ = router.await;
        tracing::info!("dispatcher stopped");
    }
}
