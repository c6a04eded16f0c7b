//! Probes that run through a crash: loops of attempts, each logged with when it started and
//! ended (`/proc/uptime`, the clock the host and the containers share), and windows of them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mesh_tests::Node;
use mesh_tests::overlay::Sandbox;

/// Seconds since boot, as `/proc/uptime` says: the one clock the host and the containers (no
/// time namespace) share.
pub fn uptime() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/uptime")?;
    let first = text.split_whitespace().next().unwrap_or_default();
    first
        .parse()
        .with_context(|| format!("/proc/uptime: {text:?}"))
}

/// A loop run inside the client's container, one attempt every `pause`, each appending when it
/// started and ended (uptime) and `ok` or `fail` to `log` in the container.
pub fn probe_loop(attempt: &str, log: &str, pause: &str) -> String {
    format!(
        "while true; do read t _ < /proc/uptime; \
         if {attempt}; then r=ok; else r=fail; fi; \
         read u _ < /proc/uptime; echo \"$t $u $r\" >> {log}; sleep {pause}; done"
    )
}

/// One attempt of a probe loop.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// When it started and ended (uptime).
    start: f64,
    end: f64,
    ok: bool,
}

/// The outcomes a loop logged so far, in order.
pub async fn outcomes(node: &Node, client: &Sandbox, log: &str) -> anyhow::Result<Vec<Outcome>> {
    let out = node
        .docker(&["exec", &client.container, "cat", log])
        .await?
        .ok(&format!("reading {log}"))?;
    out.stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [start, end, result] = fields[..] else {
                anyhow::bail!("{log}: {line:?}");
            };
            Ok(Outcome {
                start: start.parse()?,
                end: end.parse()?,
                ok: result == "ok",
            })
        })
        .collect()
}

/// Connections from the host to `addr` (the routing mesh on a node), one every 100 ms, until
/// `stop`; each outcome is pushed to `seen`.
pub fn mesh_loop(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Outcome>>>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::task::spawn_blocking(move || {
        while !stop.load(Ordering::Relaxed) {
            let start = uptime()?;
            let ok = mesh_tests::observe::http_get(addr).is_some();
            let end = uptime()?;
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Outcome { start, end, ok });
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
}

/// Stops the routing-mesh loop when dropped, also when the test fails half-way (the runtime
/// waits for blocking tasks at its end).
pub struct Stop(pub Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The attempts of a log that started in `[from, to)`: how many, the slowest, and when the
/// failed ones started relative to `zero`.
pub struct Window {
    pub attempts: usize,
    pub slowest: f64,
    pub failed: Vec<f64>,
}

impl Window {
    pub fn of(log: &[Outcome], from: f64, to: f64, zero: f64) -> Self {
        let inside: Vec<&Outcome> = log
            .iter()
            .filter(|o| o.start >= from && o.start < to)
            .collect();
        Self {
            attempts: inside.len(),
            slowest: inside.iter().map(|o| o.end - o.start).fold(0.0, f64::max),
            failed: inside
                .iter()
                .filter(|o| !o.ok)
                .map(|o| o.start - zero)
                .collect(),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} attempts (slowest {:.2}s), {} failed",
            self.attempts,
            self.slowest,
            self.failed.len()
        )?;
        if !self.failed.is_empty() {
            let at: Vec<String> = self.failed.iter().map(|t| format!("{t:+.2}s")).collect();
            write!(f, " (at {} from the kill)", at.join(" "))?;
        }
        Ok(())
    }
}
