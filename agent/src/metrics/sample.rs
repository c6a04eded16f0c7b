//! The node's state as one scrape sees it, and how it is written out.

use mesh_control::metrics::ManagerSample;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::gossip::GossipStats;

/// What the node is at one moment; each part is absent where it does not apply (a worker has
/// no manager part, a node without overlay no gossip).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub manager: Option<ManagerSample>,
    /// Calls refused on this manager's port (2377) since it started listening.
    pub refused_calls: Option<u64>,
    /// Backends programmed behind each service VIP on this node (the most any of its sandboxes
    /// has: every sandbox on the VIP's network gets the same).
    pub vip_backends: BTreeMap<Ipv4Addr, usize>,
    pub gossip: Option<GossipSample>,
    pub resident_memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct GossipSample {
    pub members: usize,
    /// `None` when the gossip task did not answer in time.
    pub suspects: Option<usize>,
    pub stats: GossipStats,
}

/// This process's resident set size, from `/proc/self/status`.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Writes out one scrape's [`Sample`].
#[derive(Debug)]
pub(super) struct Collector {
    sample: Sample,
}

impl Collector {
    pub(super) fn new(sample: Sample) -> Self {
        Self { sample }
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, &format!("{help}."), unit, gauge.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(
        name,
        &format!("{help}."),
        None,
        counter.metric_type(),
    )?)
}

fn int(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sample = &self.sample;
        let e = &mut encoder;
        if let Some(manager) = &sample.manager {
            let tasks = ConstGauge::new(0i64);
            let mut family = e.encode_descriptor(
                "tasks",
                "Tasks in the cluster's store by observed state (managers only).",
                None,
                tasks.metric_type(),
            )?;
            for (state, count) in &manager.tasks_by_state {
                ConstGauge::new(int(*count))
                    .encode(family.encode_family(&[("state", state.as_str())])?)?;
            }
            gauge(
                e,
                "raft_term",
                "This manager's current Raft term",
                None,
                int(manager.raft_term),
            )?;
            gauge(
                e,
                "raft_commit_index",
                "The highest Raft log index this manager knows committed (and has applied)",
                None,
                int(manager.raft_commit_index),
            )?;
            gauge(
                e,
                "raft_last_log_index",
                "The last index in this manager's Raft log",
                None,
                int(manager.raft_last_log_index),
            )?;
            gauge(
                e,
                "raft_leader",
                "1 when this manager leads the Raft group, 0 otherwise",
                None,
                i64::from(manager.is_leader),
            )?;
            gauge(
                e,
                "dispatcher_sessions",
                "Agent sessions this manager serves (only the leader serves them)",
                None,
                int(manager.agent_sessions),
            )?;
        }
        if let Some(refused) = sample.refused_calls {
            counter(
                e,
                "manager_refused_calls",
                "Calls refused on this manager's port (2377): no or a wrong certificate, or no right to the method",
                refused,
            )?;
        }
        let backends = ConstGauge::new(0i64);
        let mut family = e.encode_descriptor(
            "service_vip_backends",
            "Backends this node's load balancer sends a service VIP's connections to.",
            None,
            backends.metric_type(),
        )?;
        for (vip, count) in &sample.vip_backends {
            ConstGauge::new(int(*count))
                .encode(family.encode_family(&[("vip", vip.to_string())])?)?;
        }
        if let Some(gossip) = &sample.gossip {
            gauge(
                e,
                "gossip_members",
                "Active gossip members this node sees, itself included",
                None,
                int(gossip.members),
            )?;
            if let Some(suspects) = gossip.suspects {
                gauge(
                    e,
                    "gossip_suspects",
                    "Gossip members suspected of being down",
                    None,
                    int(suspects),
                )?;
            }
            let stats = &gossip.stats;
            counter(
                e,
                "gossip_datagrams_received",
                "Gossip datagrams received",
                stats.received,
            )?;
            counter(
                e,
                "gossip_datagrams_sent",
                "Gossip datagrams sent",
                stats.sent,
            )?;
            let rejected = ConstCounter::new(0u64);
            let mut family = e.encode_descriptor(
                "gossip_datagrams_rejected",
                "Gossip datagrams dropped unread: sealed under an unknown key, failing authentication, or malformed.",
                None,
                rejected.metric_type(),
            )?;
            for (reason, count) in [
                ("unknown_key", stats.dropped_unknown_key),
                ("bad_seal", stats.dropped_bad_seal),
                ("malformed", stats.dropped_malformed),
            ] {
                ConstCounter::new(count).encode(family.encode_family(&[("reason", reason)])?)?;
            }
        }
        if let Some(rss) = sample.resident_memory_bytes {
            gauge(
                e,
                "process_resident_memory",
                "meshd's resident memory",
                Some(&Unit::Bytes),
                int(rss),
            )?;
        }
        Ok(())
    }
}
