//! mesh's control plane, run by `meshd` on manager nodes: the replicated store on Raft, the
//! orchestrators that turn services into tasks, the scheduler that places tasks on nodes, the
//! dispatcher that hands tasks to agents and collects their status, and the gRPC API `meshctl` drives.

#![forbid(unsafe_code)]

pub mod allocator;
pub mod api;
pub mod ca;
pub mod cli;
pub mod compose;
pub mod dispatcher;
pub mod events;
pub mod files;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod keymanager;
pub mod limits;
pub mod manager;
pub mod membership;
pub mod metrics;
pub mod offload;
pub mod orchestrator;
pub mod raft;
pub mod rolemanager;
pub mod scheduler;
pub mod store;
pub mod transport;
