//! Keeping the runtime's worker threads free for short work.
//!
//! A manager answers every agent's heartbeat, every API call and every Raft message on the
//! runtime's worker threads, one per core. A leader component's pass over half a million tasks,
//! or a wait for the store's lock behind one, held a worker for seconds at 5,000 nodes: with two
//! cores, two such holds stopped the whole manager (a heartbeat went unanswered for 34 s, and
//! healthy nodes were marked down). [`off_worker`] runs such work on a thread of its own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f`, which may keep its thread busy or blocked for long, without holding a worker of a
/// multi-thread runtime: the worker's queue goes to another thread first, so tasks queued on
/// it go on meanwhile. On a current-thread runtime (tests) or outside any runtime, runs `f`.
pub fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A future each of whose polls runs [`off_worker`]: for a long-running component whose passes
/// are long and synchronous (a reconciler planning over every task).
pub struct OffWorker<F>(Pin<Box<F>>);

impl<F: Future> OffWorker<F> {
    pub fn new(future: F) -> Self {
        Self(Box::pin(future))
    }
}

impl<F: Future> Future for OffWorker<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let inner = self.0.as_mut();
        off_worker(|| inner.poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Both workers of a two-worker runtime are taken by work that blocks until a third task
    /// has run: it can run before the work gives up only if that work left its worker.
    async fn two_blockers_and_a_short_task(offload: bool) -> bool {
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let mut wakers = Vec::new();
        let mut blockers = Vec::new();
        for _ in 0..2 {
            let (wake, woken) = mpsc::channel::<()>();
            wakers.push(wake);
            let started_tx = started_tx.clone();
            blockers.push(tokio::spawn(async move {
                let _ = started_tx.send(());
                let wait = move || woken.recv_timeout(Duration::from_secs(3)).is_ok();
                if offload { off_worker(wait) } else { wait() }
            }));
        }
        for _ in 0..2 {
            started.recv().await.unwrap();
        }
        let short = tokio::spawn(async move {
            for wake in wakers {
                let _ = wake.send(());
            }
        });
        short.await.unwrap();
        let mut woken = true;
        for blocker in blockers {
            woken &= blocker.await.unwrap();
        }
        woken
    }

    #[test]
    fn work_off_the_workers_leaves_them_to_other_tasks() {
        let runtime = || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        };
        assert!(runtime().block_on(two_blockers_and_a_short_task(true)));
        assert!(!runtime().block_on(two_blockers_and_a_short_task(false)));
    }

    #[tokio::test]
    async fn a_current_thread_runtime_runs_it_in_place() {
        assert_eq!(off_worker(|| 7), 7);
        let polled = OffWorker::new(async {
            tokio::task::yield_now().await;
            8
        })
        .await;
        assert_eq!(polled, 8);
    }
}
