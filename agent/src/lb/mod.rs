//! The service load balancer's backends live here: each programs the kernel so that a service's
//! virtual IP reaches its tasks. Both sit behind [`LoadBalancer`]: the eBPF socket balancer
//! ([`ebpf::SockLb`]) and IPVS in each sandbox ([`ipvs::IpvsLb`]); which one runs is chosen once,
//! at start ([`LbBackend`]).

mod backend;
pub mod ebpf;
pub mod ipvs;
pub mod maglev;
mod select;

pub use backend::{BackendError, LoadBalancer, Sandbox};
pub use select::{Backend, IPVS_PROC, LbBackend, SelectError};
