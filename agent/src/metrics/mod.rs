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

use std::sync::Arc;

use mesh_control::metrics::ControlMetrics;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;

/// Every metric of one daemon: registered once, shared by what records into them.
pub struct Metrics {
    registry: Registry,
    pub control: ControlMetrics,
    pub kernel: KernelMetrics,
    /// The state the next render writes out.
    sample: Arc<Mutex<Sample>>,
    /// One render at a time: a sample is written out whole, never mixed with another's.
    rendering: Mutex<()>,
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
        let sample = Arc::new(Mutex::new(Sample::default()));
        registry.register_collector(Box::new(sample::Collector::new(sample.clone())));
        Self {
            registry,
            control,
            kernel,
            sample,
            rendering: Mutex::new(()),
        }
    }

    /// The text a scrape gets, with `sample` as the state of the node now.
    pub fn render(&self, sample: Sample) -> String {
        let _one_at_a_time = self.rendering.lock();
        *self.sample.lock() = sample;
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; an encoder error would be a bug in a metric.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %err, "cannot encode the metrics");
        }
        text
    }
}
