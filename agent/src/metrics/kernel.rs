//! How long programming the kernel takes: each netlink call (by call) and each update of the
//! service load balancer (eBPF maps or IPVS, by backend and operation), as histograms.

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Instant;

use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::netlink::{
    Address, FdbEntry, Link, Neighbour, Netlink, Netns, Result, VethSpec, VxlanSpec,
};

type Timings<L> = Family<L, Histogram, fn() -> Histogram>;
type CallLabels = [(&'static str, &'static str); 1];
type LbLabels = [(&'static str, &'static str); 2];

/// 10 µs to about 1.3 s, doubling.
fn kernel_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00001, 2.0, 18))
}

/// The kernel-programming instruments; clones share them.
#[derive(Debug, Clone)]
pub struct KernelMetrics {
    netlink: Timings<CallLabels>,
    lb: Timings<LbLabels>,
}

impl Default for KernelMetrics {
    fn default() -> Self {
        Self {
            netlink: Family::new_with_constructor(kernel_histogram),
            lb: Family::new_with_constructor(kernel_histogram),
        }
    }
}

impl KernelMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "kernel_netlink_call_duration",
            "Time each rtnetlink call takes (links, addresses, routes, FDB and neighbour entries, namespaces)",
            Unit::Seconds,
            self.netlink.clone(),
        );
        registry.register_with_unit(
            "kernel_lb_update_duration",
            "Time each update of the service load balancer takes in the kernel (eBPF map writes or IPVS netlink)",
            Unit::Seconds,
            self.lb.clone(),
        );
    }

    /// Records one load balancer update (`op`) of `backend` ("ebpf", "ipvs") since `started`.
    pub fn lb_update(&self, backend: &'static str, op: &'static str, started: Instant) {
        self.lb
            .get_or_create(&[("backend", backend), ("op", op)])
            .observe(started.elapsed().as_secs_f64());
    }

    async fn netlink_call<T>(&self, call: &'static str, f: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = f.await;
        self.netlink
            .get_or_create(&[("call", call)])
            .observe(started.elapsed().as_secs_f64());
        out
    }
}

/// A [`Netlink`] that times every call of the one it wraps.
pub struct TimedNetlink<N> {
    inner: N,
    metrics: KernelMetrics,
}

impl<N: Netlink> TimedNetlink<N> {
    pub fn new(inner: N, metrics: KernelMetrics) -> Self {
        Self { inner, metrics }
    }
}

/// Each method times the wrapped call under its own name.
macro_rules! timed {
    ($self:ident, $name:ident ( $($arg:expr),* )) => {
        Box::pin($self.metrics.netlink_call(stringify!($name), $self.inner.$name($($arg),*)))
    };
}

impl<N: Netlink> Netlink for TimedNetlink<N> {
    fn create_netns<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Netns>> {
        timed!(self, create_netns(name))
    }
    fn delete_netns<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        timed!(self, delete_netns(name))
    }
    fn list_netns<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        timed!(self, list_netns(prefix))
    }
    fn create_bridge<'a>(
        &'a self,
        ns: &'a Netns,
        name: &'a str,
        mtu: u32,
    ) -> BoxFuture<'a, Result<()>> {
        timed!(self, create_bridge(ns, name, mtu))
    }
    fn create_vxlan<'a>(&'a self, ns: &'a Netns, spec: &'a VxlanSpec) -> BoxFuture<'a, Result<()>> {
        timed!(self, create_vxlan(ns, spec))
    }
    fn create_veth<'a>(&'a self, ns: &'a Netns, spec: &'a VethSpec) -> BoxFuture<'a, Result<()>> {
        timed!(self, create_veth(ns, spec))
    }
    fn set_mtu<'a>(&'a self, ns: &'a Netns, link: &'a str, mtu: u32) -> BoxFuture<'a, Result<()>> {
        timed!(self, set_mtu(ns, link, mtu))
    }
    fn set_up<'a>(&'a self, ns: &'a Netns, link: &'a str) -> BoxFuture<'a, Result<()>> {
        timed!(self, set_up(ns, link))
    }
    fn set_master<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        bridge: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        timed!(self, set_master(ns, link, bridge))
    }
    fn delete_link<'a>(&'a self, ns: &'a Netns, link: &'a str) -> BoxFuture<'a, Result<()>> {
        timed!(self, delete_link(ns, link))
    }
    fn list_links<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Link>>> {
        timed!(self, list_links(ns))
    }
    fn add_address<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        addr: Ipv4Net,
    ) -> BoxFuture<'a, Result<()>> {
        timed!(self, add_address(ns, link, addr))
    }
    fn delete_address<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        addr: Ipv4Net,
    ) -> BoxFuture<'a, Result<()>> {
        timed!(self, delete_address(ns, link, addr))
    }
    fn list_addresses<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Address>>> {
        timed!(self, list_addresses(ns))
    }
    fn add_default_route<'a>(
        &'a self,
        ns: &'a Netns,
        gateway: Ipv4Addr,
    ) -> BoxFuture<'a, Result<()>> {
        timed!(self, add_default_route(ns, gateway))
    }
    fn delete_default_route<'a>(
        &'a self,
        ns: &'a Netns,
        gateway: Ipv4Addr,
    ) -> BoxFuture<'a, Result<()>> {
        timed!(self, delete_default_route(ns, gateway))
    }
    fn default_route<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Option<Ipv4Addr>>> {
        timed!(self, default_route(ns))
    }
    fn add_fdb<'a>(&'a self, ns: &'a Netns, entry: &'a FdbEntry) -> BoxFuture<'a, Result<()>> {
        timed!(self, add_fdb(ns, entry))
    }
    fn delete_fdb<'a>(&'a self, ns: &'a Netns, entry: &'a FdbEntry) -> BoxFuture<'a, Result<()>> {
        timed!(self, delete_fdb(ns, entry))
    }
    fn list_fdb<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<FdbEntry>>> {
        timed!(self, list_fdb(ns))
    }
    fn add_neighbour<'a>(
        &'a self,
        ns: &'a Netns,
        entry: &'a Neighbour,
    ) -> BoxFuture<'a, Result<()>> {
        timed!(self, add_neighbour(ns, entry))
    }
    fn delete_neighbour<'a>(
        &'a self,
        ns: &'a Netns,
        entry: &'a Neighbour,
    ) -> BoxFuture<'a, Result<()>> {
        timed!(self, delete_neighbour(ns, entry))
    }
    fn list_neighbours<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Neighbour>>> {
        timed!(self, list_neighbours(ns))
    }
}
