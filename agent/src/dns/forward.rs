//! Forwarding the queries the directory does not answer to the node's resolvers, with bounded
//! concurrency and memory, a per-source rate limit, and only the upstream's own answer accepted.
//!
//! - **Admission**: a query is forwarded only with a permit from a semaphore
//!   ([`ForwardLimits::max_in_flight`]) and a token from its source's bucket (a source is a
//!   sandbox and the address asking in it; [`ForwardLimits::rate`], at most
//!   [`ForwardLimits::max_sources`] buckets). Otherwise it is answered **REFUSED** at once rather
//!   than dropped: the asker is a process in the task's own network namespace (no third party can
//!   be made the target of the answers), and REFUSED fails its lookup now instead of after the
//!   resolver's 5 s timeout. No task is spawned for a refused query.
//! - **Each attempt** uses a fresh UDP socket *connected* to the upstream, so the kernel drops
//!   datagrams from any other address or port, and a fresh random query id. A reply is accepted
//!   only if it parses (hickory-proto), is a response, carries that id and asks the same questions
//!   (names compared without regard to case); anything else is discarded and the wait goes on
//!   until the deadline. The accepted reply is relayed as the upstream sent it, with the asker's
//!   id put back.
//! - A truncated reply (TC) is relayed as is: the asker would retry over TCP, which this resolver
//!   does not serve yet.
//!
//! Every refusal and every discarded reply is counted; the warning about them is logged at most
//! once per [`LOG_INTERVAL`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query};
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::limit::{Buckets, LogGate, Rate};

/// How often, at most, refusals are logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The largest reply a UDP datagram can hold.
const MAX_REPLY: usize = 65_535;

/// How much forwarding a node does at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForwardLimits {
    /// Queries forwarded at the same time, over every sandbox of the node.
    pub max_in_flight: usize,
    /// Queries each source may forward: a rate and a burst.
    pub rate: Rate,
    /// Sources whose buckets are kept.
    pub max_sources: usize,
    /// How long one upstream is waited for.
    pub timeout: Duration,
}

impl Default for ForwardLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            rate: Rate {
                per_second: 100.0,
                burst: 200.0,
            },
            max_sources: 1024,
            timeout: Duration::from_secs(3),
        }
    }
}

/// Why a query was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source is over its rate.
    RateLimited,
    /// As many queries as allowed are in flight.
    Busy,
}

/// Counts of what the forwarder refused or discarded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ForwardStats {
    pub rate_limited: u64,
    pub busy: u64,
    /// Datagrams from the upstream that were not the answer to the query asked.
    pub discarded_replies: u64,
    /// Queries no upstream answered in time.
    pub unanswered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    rate_limited: AtomicU64,
    busy: AtomicU64,
    discarded_replies: AtomicU64,
    unanswered: AtomicU64,
}

/// A source of queries: the sandbox (task id) and the address asking in it.
type Source = (Arc<str>, IpAddr);

/// The node's forwarder, shared by every sandbox's resolver.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    limits: ForwardLimits,
    permits: Arc<Semaphore>,
    buckets: Mutex<Buckets<Source>>,
    counters: Counters,
    log: Mutex<LogGate>,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, limits: ForwardLimits) -> Self {
        Self {
            upstreams,
            permits: Arc::new(Semaphore::new(limits.max_in_flight)),
            buckets: Mutex::new(Buckets::new(limits.rate, limits.max_sources)),
            counters: Counters::default(),
            log: Mutex::new(LogGate::new(LOG_INTERVAL)),
            limits,
        }
    }

    /// A permit to forward one query from `asker` in `sandbox`, or why not (counted and logged).
    pub fn admit(
        &self,
        sandbox: &Arc<str>,
        asker: IpAddr,
    ) -> Result<OwnedSemaphorePermit, Refusal> {
        let source = (sandbox.clone(), asker);
        let allowed = self
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(&source, Instant::now());
        let refusal = if !allowed {
            Refusal::RateLimited
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => return Ok(permit),
                Err(_) => Refusal::Busy,
            }
        };
        let counter = match refusal {
            Refusal::RateLimited => &self.counters.rate_limited,
            Refusal::Busy => &self.counters.busy,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.log_refusals(sandbox);
        Err(refusal)
    }

    pub fn stats(&self) -> ForwardStats {
        let c = &self.counters;
        ForwardStats {
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed),
            discarded_replies: c.discarded_replies.load(Ordering::Relaxed),
            unanswered: c.unanswered.load(Ordering::Relaxed),
        }
    }

    fn log_refusals(&self, sandbox: &str) {
        let held = self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now());
        if let Some(held) = held {
            let stats = self.stats();
            tracing::warn!(
                task.id = %sandbox,
                refused.rate_limited = stats.rate_limited,
                refused.busy = stats.busy,
                discarded_replies = stats.discarded_replies,
                unanswered = stats.unanswered,
                suppressed = held,
                "dns queries refused"
            );
        }
    }

    /// Relays `query` to the node's resolvers in turn; the first valid answer wins. `None` when
    /// the query does not parse or no upstream answered.
    pub async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        let request = Message::from_vec(query).ok()?;
        for upstream in &self.upstreams {
            match self.ask(*upstream, query, &request.queries).await {
                Ok(mut reply) => {
                    // The asker's id back in place of ours (the header's first 16 bits).
                    reply[..2].copy_from_slice(&request.metadata.id.to_be_bytes());
                    return Some(reply);
                }
                Err(error) => {
                    tracing::debug!(upstream = %upstream, error = %error, "dns upstream failed");
                }
            }
        }
        self.counters.unanswered.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// One attempt at `upstream`: the query under a fresh id, and the first valid reply.
    async fn ask(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        questions: &[Query],
    ) -> std::io::Result<Vec<u8>> {
        let id: u16 = rand::random();
        let mut outgoing = query.to_vec();
        outgoing[..2].copy_from_slice(&id.to_be_bytes());
        let local: SocketAddr = match upstream.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(upstream).await?;
        socket.send(&outgoing).await?;
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        let mut buf = vec![0u8; MAX_REPLY];
        loop {
            let len = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if is_answer(&buf[..len], id, questions) {
                buf.truncate(len);
                return Ok(buf);
            }
            self.counters
                .discarded_replies
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(upstream = %upstream, "dns reply discarded");
        }
    }
}

/// Whether `datagram` answers the query sent with `id` and `questions`.
pub(super) fn is_answer(datagram: &[u8], id: u16, questions: &[Query]) -> bool {
    let Ok(reply) = Message::from_vec(datagram) else {
        return false;
    };
    reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && reply.queries.len() == questions.len()
        && reply.queries.iter().zip(questions).all(|(a, b)| {
            // Name equality is case-insensitive in hickory-proto.
            a.name == b.name && a.query_type == b.query_type && a.query_class == b.query_class
        })
}

#[cfg(test)]
mod tests;
