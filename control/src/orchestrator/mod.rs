//! The orchestrators: reconcilers that turn services into tasks, each driven only by store events
//! and each writing its decisions back through the store, as SwarmKit's manager/orchestrator.
//!
//! - [`ReplicatedOrchestrator`]: N slots per replicated service; scaling, restarts (including
//!   tasks lost with a node that went down) and rolling updates and rollbacks ([`update`]).
//! - [`GlobalOrchestrator`]: one task of each global service on every eligible node.
//! - [`RestartSupervisor`]: starts restarted tasks once their restart delay has elapsed.
//! - [`TaskReaper`]: deletes task history beyond the cluster's limit and removed tasks.
//! - [`ConstraintEnforcer`]: shuts down tasks on drained nodes or nodes that no longer meet
//!   their constraints.
//!
//! The leader runs all five together (`run(shutdown)` each) and stops them when it loses
//! leadership; they never call each other. Restart decisions are shared logic in [`restart`].

mod constraint_enforcer;
mod driver;
mod global;
mod plan;
mod replicated;
pub mod restart;
pub mod task;
mod taskreaper;
pub mod update;

#[cfg(test)]
mod tests;

pub use constraint_enforcer::ConstraintEnforcer;
pub use global::GlobalOrchestrator;
pub use replicated::ReplicatedOrchestrator;
pub use restart::RestartSupervisor;
pub use taskreaper::TaskReaper;
