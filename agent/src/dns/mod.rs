//! The embedded DNS: every task's sandbox has a resolver at 127.0.0.11 (its `resolv.conf` points
//! there) answering service names — `NAME` with the service's virtual IP, or its tasks' addresses
//! in dnsrr mode, `tasks.NAME` with the running tasks' addresses — scoped to the networks the
//! asking task shares with the service, and forwarding everything else to the node's resolvers.

mod directory;
mod forward;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod limit;
mod server;
#[cfg(test)]
mod tests;

pub use directory::{Directory, Resolution};
pub use server::{Dns, RESOLVER_ADDR, upstreams};
