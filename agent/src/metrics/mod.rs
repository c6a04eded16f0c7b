//! `meshd --metrics-addr`: what the node measures, in Prometheus' text format (OpenMetrics
//! flavour, as the `prometheus-client` crate writes it) at `GET /metrics`.
//!
//! Two kinds of figures: instruments the code records into as things happen (Raft commit and
//! apply latency, leader changes, heartbeat misses, the time each netlink call and load
//! balancer update takes: [`ControlMetrics`], [`KernelMetrics`]), and a [`Sample`] of the
//! node's state read at each scrape (tasks by state, Raft term and indexes, agent sessions,
//! backends per service VIP, gossip members and rejected datagrams, RSS). The server
//! ([`http`]) is plaintext and unauthenticated, like Docker's: nothing secret is ever in a
//! name or a label.

pub mod http;
mod kernel;
mod sample;
#[cfg(test)]
pub(crate) mod tests;

pub use kernel::{KernelMetrics, TimedNetlink};
pub use sample::{GossipSample, Sample, resident_memory_bytes};

use mesh_control::metrics::ControlMetrics;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::registry::Registry;

/// Every metric of one daemon: registered once, shared by what records into them.
pub struct Metrics {
    registry: Registry,
    pub control: ControlMetrics,
    pub kernel: KernelMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mesh");
        let control = ControlMetrics::default();
        control.register(&mut registry);
        let kernel = KernelMetrics::default();
        kernel.register(&mut registry);
        Self {
            registry,
            control,
            kernel,
        }
    }

    /// The text a scrape gets, with `sample` as the state of the node now. Renders share
    /// nothing but the instruments: concurrent scrapes neither wait for nor mix with each other.
    pub fn render(&self, sample: Sample) -> String {
        let mut now = Registry::with_prefix("mesh");
        now.register_collector(Box::new(sample::Collector::new(sample)));
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; an encoder error would be a bug in a metric.
        let encoded = encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, &now))
            .and_then(|()| encode_eof(&mut text));
        if let Err(err) = encoded {
            tracing::warn!(error = %err, "cannot encode the metrics");
        }
        text
    }
}
