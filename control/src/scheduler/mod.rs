//! The scheduler: places pending tasks on nodes, as SwarmKit's does.
//!
//! The decision is pure ([`schedule`]): each task goes through a pipeline of filters over node
//! snapshots ([`NodeInfo`]) — ready, availability, resources, constraints, platform, host-mode
//! ports, replicas per node — each able to explain the nodes it rejected, and the nodes left are
//! ranked by placement preferences and spread. [`Scheduler`] is the leader's reconciler that
//! feeds it from the store and writes the decisions back in one transaction per batch.

pub mod constraint;
pub mod filter;
mod node_info;
mod pipeline;
mod queue;
mod reconciler;
mod spread;

#[cfg(test)]
mod fixtures;

pub use filter::Rejection;
pub use node_info::{NodeInfo, holds_resources};
pub use pipeline::{Decision, schedule};
pub use reconciler::{PENDING_MESSAGE, Scheduler};
