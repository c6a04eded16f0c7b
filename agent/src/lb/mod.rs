//! The service load balancer's backends live here: each programs the kernel so that a service's
//! virtual IP reaches its tasks.

pub mod ebpf;
pub mod ipvs;
pub mod maglev;
