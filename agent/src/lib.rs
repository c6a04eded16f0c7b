//! mesh's node daemon: the agent that keeps a session with the managers, runs its assigned tasks as
//! Docker containers and reports their status, and (on managers) hosts the control plane.

pub mod certs;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod exec;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gossip;
mod hash;
pub mod lb;
pub mod logging;
pub mod metrics;
pub mod netlink;
pub mod network;
mod readiness;
pub mod server;
pub mod session;
pub mod state;
pub mod swarm;
pub mod taskfiles;
pub mod worker;

#[cfg(test)]
mod in_process_observability;
#[cfg(test)]
mod in_process_tests;
