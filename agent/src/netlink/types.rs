//! The values the [`Netlink`](super::Netlink) trait speaks in: namespaces, links, addresses, FDB
//! and neighbour entries, and its error type.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::Ipv4Net;

/// Where named network namespaces live, as with `ip netns` (in pid 1's mount namespace).
pub const NETNS_DIR: &str = "/run/netns";

/// A network namespace, identified by its nsfs file (`/run/netns/NAME` or `/proc/PID/ns/net`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Netns(PathBuf);

impl Netns {
    /// The namespace bound at `path`.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// The named namespace `/run/netns/NAME` of pid 1's mount namespace, where meshd makes them
    /// (reached through `/proc/1/root`, whatever mount namespace this process runs in).
    pub fn named(name: &str) -> Self {
        Self(Self::named_dir().join(name))
    }

    /// The directory of the named namespaces, as reached from this process.
    pub fn named_dir() -> PathBuf {
        super::host::host_path(Path::new(NETNS_DIR))
    }

    /// The namespace of process `pid` (e.g. a container's init).
    pub fn of_pid(pid: u32) -> Self {
        Self(PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    /// The namespace of this process (its main thread).
    pub fn current() -> Self {
        Self(PathBuf::from("/proc/self/ns/net"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Which namespace the file holds now (device and inode of the nsfs file): two paths name
    /// the same namespace exactly when these match (e.g. `/proc/PID/ns/net` of two processes
    /// sharing one); `None` when it cannot be read.
    pub fn identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.0).ok()?;
        Some((meta.dev(), meta.ino()))
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts
                .next()
                .ok_or_else(|| format!("short MAC address {s:?}"))?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| format!("bad MAC address {s:?}"))?;
        }
        match parts.next() {
            Some(_) => Err(format!("long MAC address {s:?}")),
            None => Ok(Self(out)),
        }
    }
}

impl TryFrom<&[u8]> for MacAddr {
    type Error = String;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        <[u8; 6]>::try_from(bytes)
            .map(Self)
            .map_err(|_| format!("{}-byte MAC address", bytes.len()))
    }
}

/// What kind of device a link is, with the VXLAN settings mesh relies on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Vxlan {
        vni: u32,
        local: Option<Ipv4Addr>,
        port: u16,
        learning: bool,
    },
    Veth,
    Other(String),
}

/// A network device as listed in a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub kind: LinkKind,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The bridge this link is enslaved to.
    pub master: Option<String>,
    pub mac: Option<MacAddr>,
}

/// A VXLAN device: no multicast group, no remote, learning off; peers come from static FDB entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// The local VTEP address (the node's advertise address).
    pub local: Ipv4Addr,
    /// UDP destination port, 4789 by default.
    pub port: u16,
    pub mtu: u32,
    /// The bridge (in the target namespace) to enslave the device to.
    pub bridge: String,
    /// Where the device is created before it moves into the target namespace: its UDP socket stays
    /// there, so this is the namespace that reaches the underlay. `None` creates it in place.
    pub underlay: Option<Netns>,
}

/// The VXLAN UDP port IANA assigned.
pub const VXLAN_PORT: u16 = 4789;

/// A veth pair whose `peer` end moves into `peer_ns` under the name `peer_rename`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethSpec {
    pub name: String,
    pub peer: String,
    pub peer_ns: Netns,
    pub peer_rename: String,
    pub mtu: u32,
}

/// An IPv4 address assigned to a link.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    pub link: String,
    pub addr: Ipv4Net,
}

/// A static FDB entry: frames for `mac` leave the VXLAN device `link` towards the VTEP `dst`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbEntry {
    pub link: String,
    pub mac: MacAddr,
    pub dst: Ipv4Addr,
}

/// A permanent ARP entry on `link`: `ip` is at `mac`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbour {
    pub link: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// A failed netlink (or namespace) operation, with the kernel's errno when it gave one.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{op} {target}: {source}")]
    Kernel {
        op: &'static str,
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("{op} {target}: {reason}")]
    Other {
        op: &'static str,
        target: String,
        reason: String,
    },
    /// A named namespace's file is there but holds no namespace: the mount that held it went
    /// away (it lived in a mount namespace that died), and the namespace with it.
    #[error("{op} {target}: not a network namespace any more (the mount that held it is gone)")]
    Stale { op: &'static str, target: String },
}

impl NetlinkError {
    pub(crate) fn errno(op: &'static str, target: impl fmt::Display, errno: i32) -> Self {
        Self::Kernel {
            op,
            target: target.to_string(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    pub(crate) fn io(op: &'static str, target: impl fmt::Display, source: io::Error) -> Self {
        Self::Kernel {
            op,
            target: target.to_string(),
            source,
        }
    }

    /// The kernel's errno, if the kernel refused the request.
    pub fn raw_errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            Self::Other { .. } | Self::Stale { .. } => None,
        }
    }

    /// The object to delete or act on does not exist (a stale namespace file counts: its
    /// namespace is gone).
    pub fn is_not_found(&self) -> bool {
        self.is_stale()
            || matches!(
                self.raw_errno(),
                Some(libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL)
            )
    }

    /// The namespace file is a leftover that holds no namespace.
    pub fn is_stale(&self) -> bool {
        matches!(self, Self::Stale { .. })
    }

    /// The object to create already exists.
    pub fn is_already_exists(&self) -> bool {
        self.raw_errno() == Some(libc::EEXIST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_through_different_pids_name_the_same_namespace() {
        let own = Netns::of_pid(std::process::id());
        assert!(own.identity().is_some());
        assert_eq!(own.identity(), Netns::current().identity());
        assert_ne!(own.path(), Netns::current().path());
        assert_eq!(Netns::from_path("/nonexistent/ns/net").identity(), None);
    }
}
