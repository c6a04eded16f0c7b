//! mesh's privileged test harness: every node a network namespace on a per-test bridge, with its own
//! dockerd and `meshd`, driven through `meshctl` and observed through `docker`.
//!
//! Tests start with [`require_privileged!`], build a [`Cluster`] and poll with [`wait_until`]; every
//! guard (namespace, bridge, daemon) cleans up on drop, also when the test panics.
//!
//! [`lab`] builds named, lasting clusters on the same code for `cargo xtask lab` and `cargo xtask
//! demo`.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod dockerd;
pub mod image;
pub mod lab;
pub mod meshctl;
pub mod meshd;
pub mod netns;
pub mod node;
pub mod observe;
pub mod overlay;
pub mod process;
pub mod secrets;
pub mod skip;
pub mod swarm;

use std::path::Path;
use std::time::Duration;

pub use cluster::{Cluster, ClusterBuilder, Node, Role};
pub use image::BUSYBOX_IMAGE;
pub use observe::NodeRow;
pub use process::Output;

/// How often [`wait_until`] and [`wait_for`] poll.
const POLL: Duration = Duration::from_millis(200);

/// Polls `check` until it yields a value, for at most `timeout`. Errors from `check` count as "not
/// yet" and the last one is reported on timeout. The timeout bounds the test; it is not an assertion on
/// speed.
pub async fn wait_for<T, F>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: AsyncFnMut() -> anyhow::Result<Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("condition never held");
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last = format!("{err:#}"),
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what} (last: {last})");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` until it returns true, for at most `timeout`; see [`wait_for`].
pub async fn wait_until<F>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: AsyncFnMut() -> anyhow::Result<bool>,
{
    wait_for(timeout, what, async || Ok(check().await?.then_some(()))).await
}

/// The last `lines` lines of a log file (or why it could not be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}
