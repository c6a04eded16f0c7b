//! A store whose proposals apply at once, each transaction its own entry: for reconciler tests
//! that need a real [`MemoryStore`] and watch stream but no Raft, and for the fuzz targets.
//! Compiled only for tests and with the `fuzzing` feature.

use futures::future::BoxFuture;
use mesh_proto::{Proposal, Transaction};
use std::sync::{Arc, Mutex};

use super::{MemoryStore, Proposer, Store, StoreError};

struct DirectProposer {
    memory: Arc<MemoryStore>,
    /// The last log index used; held while applying so entries apply in index order.
    index: Mutex<u64>,
}

impl Proposer for DirectProposer {
    fn propose(&self, tx: Transaction) -> BoxFuture<'_, Result<(), StoreError>> {
        let result = {
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            *index += 1;
            let proposal = Proposal {
                transactions: vec![tx],
            };
            self.memory.apply(*index, proposal).into_iter().next()
        };
        Box::pin(async move {
            match result {
                Some(applied) => applied.map_err(StoreError::from),
                None => Err(StoreError::Raft("nothing applied".into())),
            }
        })
    }
}

/// A fresh, empty store whose writes apply directly.
pub fn direct_store() -> Store {
    let memory = Arc::new(MemoryStore::new());
    let proposer = Arc::new(DirectProposer {
        memory: memory.clone(),
        index: Mutex::new(0),
    });
    Store::new(memory, proposer)
}

#[cfg(test)]
/// The number of objects each entry applied to `store` wrote from now on, in order; recorded
/// until the store's watch closes.
pub fn writes_per_entry(store: &Store) -> Arc<Mutex<Vec<usize>>> {
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let mut events = store.memory().watch();
    let out = recorded.clone();
    tokio::spawn(async move {
        let mut current = 0;
        loop {
            match events.recv().await {
                Ok(super::Event::Commit { .. }) => {
                    out.lock().unwrap_or_else(|e| e.into_inner()).push(current);
                    current = 0;
                }
                Ok(super::Event::Reset) => current = 0,
                Ok(_) => current += 1,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    panic!("the recorder missed {missed} events")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    recorded
}

/// How many proposals a [`slow_store`] held waiting at once, at most.
#[cfg(test)]
#[derive(Default)]
pub struct InFlight {
    waiting: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl InFlight {
    pub fn most(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
struct SlowProposer {
    memory: Arc<MemoryStore>,
    index: Mutex<u64>,
    in_flight: Arc<InFlight>,
}

#[cfg(test)]
impl Proposer for SlowProposer {
    fn propose(&self, tx: Transaction) -> BoxFuture<'_, Result<(), StoreError>> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            let waiting = self.in_flight.waiting.fetch_add(1, SeqCst) + 1;
            self.in_flight.most.fetch_max(waiting, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.in_flight.waiting.fetch_sub(1, SeqCst);
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            *index += 1;
            let proposal = Proposal {
                transactions: vec![tx],
            };
            let applied = self.memory.apply(*index, proposal).into_iter().next();
            applied.map_or_else(
                || Err(StoreError::Raft("nothing applied".into())),
                |r| r.map_err(StoreError::from),
            )
        })
    }
}

/// A fresh, empty store whose proposals each wait a moment (a Raft round trip) before they
/// apply, and what it saw of how many waited at once: for writers that should keep several
/// transactions proposed together.
#[cfg(test)]
pub fn slow_store() -> (Store, Arc<InFlight>) {
    let memory = Arc::new(MemoryStore::new());
    let in_flight = Arc::new(InFlight::default());
    let proposer = Arc::new(SlowProposer {
        memory: memory.clone(),
        index: Mutex::new(0),
        in_flight: in_flight.clone(),
    });
    (Store::new(memory, proposer), in_flight)
}
