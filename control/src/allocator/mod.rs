//! The allocator: gives networks a VXLAN id and a subnet, gives new tasks an address on each network
//! they attach to, then moves them from NEW to PENDING; and returns what deleted networks and tasks
//! held to the pools. The pools live in memory and are rebuilt from the store whenever the watch
//! stream cannot be trusted (start, lag, reset) or a write fails. [`needs_allocation`] tells the
//! orchestrators which new tasks have nothing here to allocate: those they create PENDING.

pub mod ipam;
mod networks;
pub mod pools;
mod services;

pub use services::needs_allocation;

use mesh_proto::{Cluster, Network, Service, Task};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::store::{Event, Read, ReadTx, Store, try_next};
use ipam::PoolConfig;
use networks::{TaskQueue, is_new};
use pools::Pools;

/// How soon a failed write is retried when no commit comes first.
const RETRY: Duration = Duration::from_millis(200);

pub struct Allocator {
    store: Store,
}

/// The allocator's view of the cluster between events.
struct State {
    pools: Pools,
    config: PoolConfig,
    /// Networks without an allocation.
    networks: BTreeSet<String>,
    /// Networks the pools could not serve, retried once something is released.
    blocked: BTreeSet<String>,
    /// NEW tasks, including those waiting for a network.
    tasks: TaskQueue,
    /// Services whose virtual IPs may not match their spec.
    services: BTreeSet<String>,
}

fn pool_config(tx: &ReadTx<'_>) -> PoolConfig {
    let spec = tx.list::<Cluster>().into_iter().find_map(|c| c.spec);
    let Some(spec) = spec else {
        return PoolConfig::default();
    };
    PoolConfig::new(&spec.default_addr_pool, spec.subnet_size).unwrap_or_else(|err| {
        tracing::warn!(error = %err, "cluster address pools unusable: using 10.0.0.0/8 in /24s");
        PoolConfig::default()
    })
}

/// Read in place: at half a million tasks a copy of each held the store's lock for seconds.
fn rebuild(tx: &ReadTx<'_>, config: PoolConfig) -> Pools {
    let (pools, errors) = Pools::rebuild(
        config,
        tx.iter::<Network>(),
        tx.iter::<Task>(),
        tx.iter::<Service>(),
    );
    for error in errors {
        tracing::error!(error = %error, "allocation in the store not marked");
    }
    pools
}

impl State {
    fn load(tx: &ReadTx<'_>) -> State {
        let config = pool_config(tx);
        State {
            pools: rebuild(tx, config.clone()),
            config,
            networks: tx
                .find::<Network>(|n| n.allocation.is_none())
                .into_iter()
                .map(|n| n.id)
                .collect(),
            blocked: BTreeSet::new(),
            tasks: {
                let mut queue = TaskQueue::default();
                for task in tx.iter::<Task>().filter(|t| is_new(t)) {
                    queue.insert(task);
                }
                queue
            },
            services: tx.iter::<Service>().map(|s| s.id.clone()).collect(),
        }
    }

    fn observe(&mut self, event: &Event) {
        if let Some(network) = event.as_a::<Network>() {
            if event.is_delete() {
                self.pools.release_network(&network.id);
                self.networks.remove(&network.id);
                self.blocked.remove(&network.id);
                self.unblock();
            } else if network.allocation.is_none() {
                self.networks.insert(network.id.clone());
            }
        } else if let Some(service) = event.as_a::<Service>() {
            if event.is_delete() {
                self.pools.release_task(&pools::vip_owner(&service.id));
                self.services.remove(&service.id);
            } else {
                self.services.insert(service.id.clone());
            }
        } else if let Some(task) = event.as_a::<Task>() {
            if event.is_delete() {
                self.pools.release_task(&task.id);
                self.tasks.remove(&task.id);
            } else if is_new(task) {
                self.tasks.insert(task);
            } else {
                self.tasks.remove(&task.id);
            }
        } else if let Some(cluster) = event.as_a::<Cluster>()
            && !event.is_delete()
        {
            let spec = cluster.spec.clone().unwrap_or_default();
            if let Ok(config) = PoolConfig::new(&spec.default_addr_pool, spec.subnet_size)
                && config != self.config
            {
                self.config = config.clone();
                self.pools.set_config(config);
                self.unblock();
            }
        }
    }

    fn unblock(&mut self) {
        self.networks.append(&mut self.blocked);
    }
}

impl Allocator {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        'resync: loop {
            let (mut state, mut events) = self.store.memory().view_and_watch(State::load);
            let mut retry = !self.allocate(&mut state).await;
            loop {
                let event = tokio::select! {
                    _ = shutdown.changed() => if *shutdown.borrow() { return } else { continue },
                    event = events.recv() => event,
                    _ = tokio::time::sleep(RETRY), if retry => {
                        retry = !self.allocate(&mut state).await;
                        continue;
                    }
                };
                // What else is delivered already is taken in first: one pass then covers every
                // commit so far (a pass waits for its own commit; one per commit would fall
                // behind the store, lag it and start over from the whole store).
                let mut next = Some(event);
                let mut committed = false;
                while let Some(event) = next.take() {
                    match event {
                        Ok(Event::Commit { .. }) => committed = true,
                        Ok(Event::Reset) | Err(RecvError::Lagged(_)) => continue 'resync,
                        Err(RecvError::Closed) => return,
                        Ok(event) => state.observe(&event),
                    }
                    next = try_next(&mut events);
                }
                if committed {
                    retry = !self.allocate(&mut state).await;
                }
            }
        }
    }

    /// Networks first, so tasks created with their network are attached in the same pass. Returns
    /// false when a write failed: the pools are then rebuilt from the store and the work retried.
    async fn allocate(&self, state: &mut State) -> bool {
        let mut result = Ok(());
        if !state.networks.is_empty() {
            result = networks::allocate_networks(
                &self.store,
                &mut state.pools,
                &mut state.networks,
                &mut state.blocked,
            )
            .await;
        }
        if result.is_ok() && !state.services.is_empty() {
            result =
                services::allocate_services(&self.store, &mut state.pools, &mut state.services)
                    .await;
        }
        if result.is_ok() && !state.tasks.is_empty() {
            result =
                networks::allocate_tasks(&self.store, &mut state.pools, &mut state.tasks).await;
        }
        match result {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(error = %err, "allocation retried");
                let config = state.config.clone();
                state.pools = self.store.view(|tx| rebuild(tx, config));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
