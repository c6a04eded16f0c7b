//! Keeping the runtime's worker threads free for short work.
//!
//! A manager answers every agent's heartbeat, every API call and every Raft message on the
//! runtime's worker threads, one per core. A leader component's pass over half a million tasks,
//! or a wait for the store's lock behind one, held a worker for seconds at 5,000 nodes: with two
//! cores, two such holds stopped the whole manager (a heartbeat went unanswered for 34 s, and
//! healthy nodes were marked down). [`off_worker`] runs such work on a thread of its own, and
//! [`in_background`] runs work nobody waits on in a hurry (a snapshot) behind everything else.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::runtime::{Handle, RuntimeFlavor};

/// The niceness [`in_background`] gives its thread: under a full load the latency-bound work
/// (heartbeats, commits, the task pipeline) takes the cores first, and the background work
/// still gets about a tenth of a core (CFS weights 110 against 1,024).
pub const BACKGROUND_NICE: i32 = 10;

/// Runs `f`, which may keep its thread busy or blocked for long, without holding a worker of a
/// multi-thread runtime: the worker's queue goes to another thread first, so tasks queued on
/// it go on meanwhile. On a current-thread runtime (tests) or outside any runtime, runs `f`.
pub fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs `f` on a thread of its own at a lower priority ([`BACKGROUND_NICE`] above the
/// manager's), for long work nobody waits on in a hurry: a snapshot of a million tasks is
/// seconds of a core, and on a loaded manager those seconds were taken from the sessions and
/// the commits. Fails if the thread cannot be started or `f` panics.
pub async fn in_background<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_priority();
            let _ = done.send(f());
        })?;
    result
        .await
        .map_err(|_| std::io::Error::other(format!("background work {name:?} panicked")))
}

/// Lowers the calling thread's priority by [`BACKGROUND_NICE`] (on Linux a niceness is the
/// thread's own). Raising one's niceness needs no privilege; if it fails anyway, the work runs
/// at the priority it had.
fn lower_priority() {
    let lowered = rustix::process::getpriority_process(None).and_then(|current| {
        rustix::process::setpriority_process(None, (current + BACKGROUND_NICE).min(19))
    });
    if let Err(err) = lowered {
        tracing::debug!(error = %err, "background thread kept its priority");
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

    fn priority() -> i32 {
        rustix::process::getpriority_process(None).expect("own priority")
    }

    #[tokio::test]
    async fn background_work_runs_at_a_lower_priority() {
        let own = priority();
        let theirs = in_background("mesh-test", priority).await.expect("ran");
        assert_eq!(theirs, (own + BACKGROUND_NICE).min(19));
        assert_eq!(priority(), own, "the caller's thread keeps its priority");
    }

    #[tokio::test]
    async fn background_work_that_panics_is_an_error() {
        let result = in_background("mesh-test", || -> u8 { panic!("on purpose") }).await;
        let err = result.expect_err("a panic is an error");
        assert!(err.to_string().contains("panicked"), "{err}");
    }

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
