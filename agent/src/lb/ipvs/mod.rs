//! The IPVS backend's kernel interface: the generic-netlink family "IPVS" (version 1) that
//! `net/netfilter/ipvs/ip_vs_ctl.c` serves, as `ipvsadm` speaks it.
//!
//! [`Request`] encodes the commands byte for byte as the kernel parses them, [`parse_datagram`]
//! decodes its replies into [`Reply`], and [`IpvsSocket`] resolves the family id and runs one
//! request at a time over a generic-netlink socket. Only IPv4 services and destinations exist
//! here.
//!
//! [`IpvsLb`] is the service load balancer built on it, the way Docker Swarm balances: IPVS in
//! each task's sandbox, one firewall-mark service per VIP, the running tasks as masqueraded
//! destinations.

mod backend;
mod codec;
mod fwmark;
mod netns;
mod reply;
mod socket;
mod types;
mod uapi;

#[cfg(test)]
mod tests;

use std::io;

use netlink_packet_core::DecodeError;

pub use backend::{IpvsLb, SCHEDULER, SandboxTable, SandboxTables};
pub use codec::{Request, get_family_frame};
pub use fwmark::FwmarkPool;
pub use netns::{MARK_CHAIN, NetnsTable, NetnsTables};
pub use reply::{Incoming, Reply, parse_datagram};
pub use socket::IpvsSocket;
pub use types::{ConnCounts, Destination, Family, Forward, Info, Protocol, Service, ServiceFlags};
pub use uapi::IPVS_GENL_NAME;

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The controller does not know the family "IPVS": the kernel was built without it and
    /// cannot load it.
    #[error("IPVS is not available in this kernel (/proc/net/ip_vs is absent)")]
    NotAvailable,
    #[error("invalid IPVS scheduler name {name:?}: it must be 1 to 15 bytes without NUL")]
    InvalidScheduler { name: String },
    #[error("the kernel refused to {request}: {source}")]
    Kernel {
        request: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("malformed {context} from the kernel: {source}")]
    Malformed {
        context: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error("the kernel's reply lacks {attr}")]
    MissingAttribute { attr: &'static str },
    #[error("unsupported {what} {value} in the kernel's reply")]
    Unsupported { what: &'static str, value: u32 },
    #[error("generic netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("in the sandbox's network namespace: {0}")]
    Netns(#[from] crate::netlink::NetlinkError),
    #[error("iptables {command}: {complaint}")]
    Iptables { command: String, complaint: String },
    #[error("every firewall mark from {first:#x} to {last:#x} is in use")]
    MarksExhausted { first: u32, last: u32 },
    #[error("{}", join(.0))]
    Teardown(Vec<IpvsError>),
}

fn join(errors: &[IpvsError]) -> String {
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("{} teardown step(s) failed: {}", all.len(), all.join("; "))
}

impl IpvsError {
    /// The errno of a request the kernel refused (`EEXIST`, `ENOENT`, `ESRCH`, …).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
