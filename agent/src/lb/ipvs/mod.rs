//! The IPVS backend's kernel interface: the generic-netlink family "IPVS" (version 1) that
//! `net/netfilter/ipvs/ip_vs_ctl.c` serves, as `ipvsadm` speaks it.
//!
//! [`Request`] encodes the commands byte for byte as the kernel parses them, [`parse_datagram`]
//! decodes its replies into [`Reply`], and [`IpvsSocket`] resolves the family id and runs one
//! request at a time over a generic-netlink socket. Only IPv4 services and destinations exist
//! here.

mod codec;
mod reply;
mod socket;
mod types;
mod uapi;

#[cfg(test)]
mod tests;

use std::io;

use netlink_packet_core::DecodeError;

pub use codec::{Request, get_family_frame};
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
