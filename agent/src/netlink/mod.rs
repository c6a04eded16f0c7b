//! The kernel side of the overlay data plane: network namespaces, bridges, VXLAN devices, veth
//! pairs, addresses, routes, static FDB and ARP entries, behind the [`Netlink`] trait.
//!
//! [`RtNetlink`] programs the kernel over rtnetlink (never by running `ip`); `FakeNetlink` keeps
//! an in-memory model for tests. Every operation names the namespace it acts in.

mod cookie;
pub mod host;
mod real;
mod sockets;
mod sys;
mod types;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
#[cfg(any(test, feature = "test-util"))]
mod fake;

use std::net::Ipv4Addr;

use futures::future::BoxFuture;
use ipnet::Ipv4Net;

pub use cookie::netns_cookie;
#[cfg(any(test, feature = "test-util"))]
pub use fake::FakeNetlink;
pub use real::RtNetlink;
pub use sockets::{bind_udp, run_in_netns};
pub use types::{
    Address, FdbEntry, Link, LinkKind, MacAddr, NETNS_DIR, Neighbour, NetlinkError, Netns,
    VXLAN_PORT, VethSpec, VxlanSpec,
};

pub type Result<T> = std::result::Result<T, NetlinkError>;

/// Kernel network configuration, one namespace at a time.
///
/// Creating something that exists fails with [`NetlinkError::is_already_exists`]; deleting something
/// missing fails with [`NetlinkError::is_not_found`]. New links start down.
pub trait Netlink: Send + Sync {
    /// Creates the named namespace `/run/netns/NAME` (in pid 1's mount namespace, so that it
    /// outlives meshd's own). Names are global to the machine: callers prefix them with
    /// something unique to their meshd. A leftover file whose namespace is gone is "already
    /// exists" here and [`NetlinkError::is_stale`] to every operation in it.
    fn create_netns<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Netns>>;
    /// Deletes a namespace made by [`Netlink::create_netns`], and with it every device inside
    /// (or the leftover file of one that is gone).
    fn delete_netns<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Names of the namespaces under `/run/netns` that start with `prefix`.
    fn list_netns<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;

    fn create_bridge<'a>(
        &'a self,
        ns: &'a Netns,
        name: &'a str,
        mtu: u32,
    ) -> BoxFuture<'a, Result<()>>;
    /// Creates the VXLAN device (in `spec.underlay` first, if given), moves it into `ns` and
    /// enslaves it to `spec.bridge`.
    fn create_vxlan<'a>(&'a self, ns: &'a Netns, spec: &'a VxlanSpec) -> BoxFuture<'a, Result<()>>;
    /// Creates a veth pair in `ns` and moves its peer end into `spec.peer_ns` as `spec.peer_rename`.
    fn create_veth<'a>(&'a self, ns: &'a Netns, spec: &'a VethSpec) -> BoxFuture<'a, Result<()>>;
    fn set_mtu<'a>(&'a self, ns: &'a Netns, link: &'a str, mtu: u32) -> BoxFuture<'a, Result<()>>;
    fn set_up<'a>(&'a self, ns: &'a Netns, link: &'a str) -> BoxFuture<'a, Result<()>>;
    fn set_master<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        bridge: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    /// Deletes a link (for a veth, both ends go).
    fn delete_link<'a>(&'a self, ns: &'a Netns, link: &'a str) -> BoxFuture<'a, Result<()>>;
    fn list_links<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Link>>>;

    fn add_address<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        addr: Ipv4Net,
    ) -> BoxFuture<'a, Result<()>>;
    fn delete_address<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        addr: Ipv4Net,
    ) -> BoxFuture<'a, Result<()>>;
    fn list_addresses<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Address>>>;

    /// Adds `default via gateway` to the main table (the gateway must be on a connected subnet).
    fn add_default_route<'a>(
        &'a self,
        ns: &'a Netns,
        gateway: Ipv4Addr,
    ) -> BoxFuture<'a, Result<()>>;
    fn delete_default_route<'a>(
        &'a self,
        ns: &'a Netns,
        gateway: Ipv4Addr,
    ) -> BoxFuture<'a, Result<()>>;
    /// The gateway of the IPv4 default route in the main table, if any.
    fn default_route<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Option<Ipv4Addr>>>;

    fn add_fdb<'a>(&'a self, ns: &'a Netns, entry: &'a FdbEntry) -> BoxFuture<'a, Result<()>>;
    fn delete_fdb<'a>(&'a self, ns: &'a Netns, entry: &'a FdbEntry) -> BoxFuture<'a, Result<()>>;
    /// The FDB entries that point at a remote VTEP (those with a `dst`).
    fn list_fdb<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<FdbEntry>>>;

    fn add_neighbour<'a>(
        &'a self,
        ns: &'a Netns,
        entry: &'a Neighbour,
    ) -> BoxFuture<'a, Result<()>>;
    fn delete_neighbour<'a>(
        &'a self,
        ns: &'a Netns,
        entry: &'a Neighbour,
    ) -> BoxFuture<'a, Result<()>>;
    /// The permanent IPv4 neighbour entries.
    fn list_neighbours<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Neighbour>>>;
}
