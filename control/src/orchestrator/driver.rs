//! The event loop every reconciler runs: full pass from a view, then store events batched per commit.

use std::collections::BTreeSet;
use std::future::Future;
use std::ops::Bound;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::store::{Event, ReadTx, Store, StoreError, try_next};

/// How long a reconciler waits before retrying writes that failed.
pub(crate) const RETRY_DELAY: Duration = Duration::from_millis(250);

/// One reconciler's reaction to the store; [`drive`] runs it.
pub(crate) trait Reconcile: Send {
    /// Name used in logs.
    const NAME: &'static str;

    /// Forgets what was pending and marks everything in `tx` for reconciliation.
    fn mark_all(&mut self, tx: &ReadTx<'_>);

    /// Records what one event makes dirty; nothing is written until the entry's commit.
    fn observe(&mut self, event: &Event);

    /// Writes what the dirty objects call for. Returns when to run again without any event
    /// (a timer, or a retry after a failed write).
    fn flush(&mut self, store: &Store) -> impl Future<Output = Option<Instant>> + Send;
}

/// Runs `reconciler` until `shutdown` turns true or its sender is dropped.
pub(crate) async fn drive<R: Reconcile>(
    store: Store,
    mut shutdown: watch::Receiver<bool>,
    mut reconciler: R,
) {
    debug!(reconciler = R::NAME, "reconciler started");
    let mut events = subscribe(&store, &mut reconciler);
    let mut wake = None;
    let mut flush_now = true;
    'run: loop {
        if *shutdown.borrow() {
            break;
        }
        if flush_now {
            flush_now = false;
            tokio::select! {
                next = reconciler.flush(&store) => wake = next,
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // Cancelled mid-way: run it again unless the loop is stopping.
                    flush_now = true;
                    continue;
                }
            }
        }
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // Biased: events delivered are taken in before a timer's flush, so that a reconciler
        // that flushes a share of its work at a time, again at once, still keeps up with the
        // store instead of lagging behind it.
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            event = events.recv() => {
                // Whatever else is delivered already is taken in before the next flush, so that
                // one flush covers every commit so far: a reconciler whose writes wait for Raft
                // otherwise flushes once per commit, falls behind the store and, lagging, starts
                // over from a full reconcile.
                let mut next = Some(event);
                while let Some(event) = next.take() {
                    match event {
                        Ok(Event::Commit { .. }) => flush_now = true,
                        Ok(Event::Reset) | Err(RecvError::Lagged(_)) => {
                            debug!(
                                reconciler = R::NAME,
                                "store reset or watcher lagged: full reconcile"
                            );
                            events = subscribe(&store, &mut reconciler);
                            flush_now = true;
                            break;
                        }
                        Ok(event) => reconciler.observe(&event),
                        Err(RecvError::Closed) => break 'run,
                    }
                    next = try_next(&mut events);
                }
            }
            () = sleep => flush_now = true,
        }
    }
    debug!(reconciler = R::NAME, "reconciler stopped");
}

fn subscribe<R: Reconcile>(store: &Store, reconciler: &mut R) -> broadcast::Receiver<Event> {
    let ((), events) = store.memory().view_and_watch(|tx| reconciler.mark_all(tx));
    events
}

/// Logs a failed write; conflicts are expected under concurrent writers and only retried.
pub(crate) fn log_write_error(reconciler: &'static str, err: &StoreError) {
    match err {
        StoreError::Conflict { .. } => {
            debug!(reconciler, error = %err, "write conflicted, retrying")
        }
        _ => warn!(reconciler, error = %err, "write failed, retrying"),
    }
}

/// Takes the first `n` of `set` out of it, for a pass that looks at a bounded share of a long
/// list and leaves the rest to the next.
pub(crate) fn take_share<T: Ord + Clone>(set: &mut BTreeSet<T>, n: usize) -> BTreeSet<T> {
    let rest = match set.iter().nth(n).cloned() {
        Some(first_left) => set.split_off(&first_left),
        None => BTreeSet::new(),
    };
    std::mem::replace(set, rest)
}

/// Takes up to `n` of `set` out of it, round-robin: the first ones after `cursor`, then from the
/// start; `cursor` moves to the last one taken. A reconciler whose flushes each take a share of a
/// long list this way comes to every member in turn, however often the first ones are marked again.
pub(crate) fn take_round<T: Ord + Clone>(
    set: &mut BTreeSet<T>,
    cursor: &mut Option<T>,
    n: usize,
) -> Vec<T> {
    let taken: Vec<T> = match cursor.as_ref() {
        Some(c) => set
            .range::<T, _>((Bound::Excluded(c), Bound::Unbounded))
            .chain(set.range::<T, _>(..=c))
            .take(n)
            .cloned()
            .collect(),
        None => set.iter().take(n).cloned().collect(),
    };
    for member in &taken {
        set.remove(member);
    }
    if let Some(last) = taken.last() {
        *cursor = Some(last.clone());
    }
    taken
}

/// The earlier of two optional wake-up times.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::Node;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    /// Counts nodes observed and flushes; a flush waits for a permit of `gate`.
    struct Counting {
        observed: Arc<AtomicUsize>,
        flushes: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
    }

    impl Reconcile for Counting {
        const NAME: &'static str = "counting";

        fn mark_all(&mut self, _tx: &ReadTx<'_>) {}

        fn observe(&mut self, event: &Event) {
            if event.as_a::<Node>().is_some() {
                self.observed.fetch_add(1, Ordering::SeqCst);
            }
        }

        async fn flush(&mut self, _store: &Store) -> Option<Instant> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            let _permit = self.gate.acquire().await.expect("gate open");
            None
        }
    }

    /// Shares go round: members marked again after their turn wait for the others'.
    #[test]
    fn shares_go_round() {
        let mut set: BTreeSet<u32> = (1..=5).collect();
        let mut cursor = None;
        assert_eq!(take_round(&mut set, &mut cursor, 2), vec![1, 2]);
        set.insert(1);
        assert_eq!(take_round(&mut set, &mut cursor, 2), vec![3, 4]);
        assert_eq!(take_round(&mut set, &mut cursor, 2), vec![5, 1]);
        assert!(set.is_empty());
        assert!(take_round(&mut set, &mut cursor, 2).is_empty());
        assert_eq!(cursor, Some(1), "an empty share leaves the cursor");
        set.extend([1, 2, 9]);
        assert_eq!(take_round(&mut set, &mut cursor, 5), vec![2, 9, 1]);
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// Commits that arrive while a flush waits (for its own write, say) are all taken in before
    /// the next flush, which covers them at once: one flush per commit would fall behind a busy
    /// store until the watch lags.
    #[tokio::test]
    async fn commits_delivered_during_a_flush_are_flushed_once() {
        let store = crate::store::direct_store();
        let (observed, flushes) = (Arc::default(), Arc::<AtomicUsize>::default());
        let gate = Arc::new(Semaphore::new(0));
        let reconciler = Counting {
            observed: Arc::clone(&observed),
            flushes: Arc::clone(&flushes),
            gate: Arc::clone(&gate),
        };
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(drive(store.clone(), shutdown, reconciler));
        until("the first flush", || flushes.load(Ordering::SeqCst) == 1).await;

        for i in 0..20 {
            let node = Node {
                id: format!("n{i}"),
                ..Default::default()
            };
            store.update(|tx| tx.create(node)).await.expect("commit");
        }
        gate.add_permits(1_000);
        until("every node observed", || {
            observed.load(Ordering::SeqCst) == 20
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            flushes.load(Ordering::SeqCst),
            2,
            "the first flush, then one for the 20 commits"
        );
    }
}
