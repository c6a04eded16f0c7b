//! [`RtNetlink`]: the [`Netlink`] trait over rtnetlink sockets opened inside each target namespace.
//!
//! A netlink socket stays bound to the namespace it was created in, so each operation opens its
//! socket from a short-lived thread that first `setns`-es into the target namespace; the rest of
//! the process never changes namespace.

mod entries;
mod links;
mod netns;

use std::fmt;
use std::fs::File;
use std::net::Ipv4Addr;

use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use rtnetlink::Handle;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, TokioSocket};
use tokio::sync::oneshot;

use super::sys;
use super::{
    Address, FdbEntry, Link, Neighbour, Netlink, NetlinkError, Netns, Result, VethSpec, VxlanSpec,
};

/// Programs the kernel through rtnetlink. Needs `CAP_NET_ADMIN` (and `CAP_SYS_ADMIN` for namespaces).
#[derive(Clone, Debug, Default)]
pub struct RtNetlink;

impl RtNetlink {
    pub fn new() -> Self {
        Self
    }
}

/// Runs `f` on a fresh OS thread, which may change its own namespaces and then exits with them.
pub(super) async fn on_own_thread<T, F>(op: &'static str, target: String, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("mesh-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| NetlinkError::io(op, &target, e))?;
    match rx.await {
        Ok(result) => result.map_err(|e| NetlinkError::io(op, &target, e)),
        Err(_) => Err(NetlinkError::Other {
            op,
            target,
            reason: "namespace thread panicked".into(),
        }),
    }
}

/// Opens a network namespace's file, checking that it really holds one: a file under
/// `/run/netns` whose mount went away is an empty file, which `setns` would refuse with a bare
/// `EINVAL`; that is [`NetlinkError::Stale`] here.
pub(crate) fn open_netns(op: &'static str, ns: &Netns) -> Result<File> {
    let file = File::open(ns.path()).map_err(|e| NetlinkError::io(op, ns, e))?;
    match sys::file_fs_magic(&file) {
        Ok(sys::NSFS_MAGIC) => Ok(file),
        Ok(_) => Err(NetlinkError::Stale {
            op,
            target: ns.to_string(),
        }),
        Err(e) => Err(NetlinkError::io(op, ns, e)),
    }
}

/// Opens an rtnetlink connection whose socket lives in `ns`.
async fn connect(ns: &Netns) -> Result<Handle> {
    let file = open_netns("open netns", ns)?;
    let runtime = tokio::runtime::Handle::current();
    let socket = on_own_thread("open netlink socket", ns.to_string(), move || {
        let _entered = runtime.enter();
        sys::setns_net(&file)?;
        TokioSocket::new(NETLINK_ROUTE)
    })
    .await?;
    let (connection, handle, _) = rtnetlink::from_socket(socket);
    tokio::spawn(connection);
    Ok(handle)
}

/// Maps an rtnetlink error to ours, keeping the kernel's errno.
fn kernel(
    op: &'static str,
    target: impl fmt::Display,
) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |e| match e {
        rtnetlink::Error::NetlinkError(msg) => NetlinkError::io(op, target, msg.to_io()),
        other => NetlinkError::Other {
            op,
            target: target.to_string(),
            reason: other.to_string(),
        },
    }
}

impl Netlink for RtNetlink {
    fn create_netns<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Netns>> {
        Box::pin(netns::create(name))
    }
    fn delete_netns<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(netns::delete(name))
    }
    fn list_netns<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(netns::list(prefix))
    }
    fn create_bridge<'a>(
        &'a self,
        ns: &'a Netns,
        name: &'a str,
        mtu: u32,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(links::create_bridge(ns, name, mtu))
    }
    fn create_vxlan<'a>(&'a self, ns: &'a Netns, spec: &'a VxlanSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(links::create_vxlan(ns, spec))
    }
    fn create_veth<'a>(&'a self, ns: &'a Netns, spec: &'a VethSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(links::create_veth(ns, spec))
    }
    fn set_mtu<'a>(&'a self, ns: &'a Netns, link: &'a str, mtu: u32) -> BoxFuture<'a, Result<()>> {
        Box::pin(links::set_mtu(ns, link, mtu))
    }
    fn set_up<'a>(&'a self, ns: &'a Netns, link: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(links::set_up(ns, link))
    }
    fn set_master<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        bridge: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(links::set_master(ns, link, bridge))
    }
    fn delete_link<'a>(&'a self, ns: &'a Netns, link: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(links::delete(ns, link))
    }
    fn list_links<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Link>>> {
        Box::pin(links::list(ns))
    }
    fn add_address<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        addr: Ipv4Net,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(entries::add_address(ns, link, addr))
    }
    fn delete_address<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        addr: Ipv4Net,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(entries::delete_address(ns, link, addr))
    }
    fn list_addresses<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Address>>> {
        Box::pin(entries::list_addresses(ns))
    }
    fn add_default_route<'a>(
        &'a self,
        ns: &'a Netns,
        gateway: Ipv4Addr,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(entries::add_default_route(ns, gateway))
    }
    fn delete_default_route<'a>(
        &'a self,
        ns: &'a Netns,
        gateway: Ipv4Addr,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(entries::delete_default_route(ns, gateway))
    }
    fn default_route<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Option<Ipv4Addr>>> {
        Box::pin(entries::default_route(ns))
    }
    fn add_fdb<'a>(&'a self, ns: &'a Netns, entry: &'a FdbEntry) -> BoxFuture<'a, Result<()>> {
        Box::pin(entries::add_fdb(ns, entry))
    }
    fn delete_fdb<'a>(&'a self, ns: &'a Netns, entry: &'a FdbEntry) -> BoxFuture<'a, Result<()>> {
        Box::pin(entries::delete_fdb(ns, entry))
    }
    fn list_fdb<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<FdbEntry>>> {
        Box::pin(entries::list_fdb(ns))
    }
    fn add_neighbour<'a>(
        &'a self,
        ns: &'a Netns,
        entry: &'a Neighbour,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(entries::add_neighbour(ns, entry))
    }
    fn delete_neighbour<'a>(
        &'a self,
        ns: &'a Netns,
        entry: &'a Neighbour,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(entries::delete_neighbour(ns, entry))
    }
    fn list_neighbours<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Neighbour>>> {
        Box::pin(entries::list_neighbours(ns))
    }
}
