//! What the data plane asks of a service load balancer, whichever kernel mechanism it uses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::ebpf::LbError;
use super::ipvs::IpvsError;
use crate::netlink::{NetlinkError, Netns, netns_cookie};

/// A task's sandbox, as a load balancer names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sandbox {
    /// Its network namespace: IPVS tables and marking rules live in it.
    pub netns: Netns,
    /// Its netns cookie, unique while the kernel runs: the eBPF programs key their maps by it.
    pub cookie: u64,
}

impl Sandbox {
    /// The sandbox whose network namespace is `netns` (e.g. a container's `/proc/PID/ns/net`).
    pub async fn of(netns: &Netns) -> Result<Self, NetlinkError> {
        Ok(Self {
            netns: netns.clone(),
            cookie: netns_cookie(netns).await?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Ebpf(#[from] LbError),
    #[error(transparent)]
    Ipvs(#[from] IpvsError),
    #[error(transparent)]
    Unavailable(#[from] super::select::SelectError),
}

/// Balances service VIPs for this node's sandboxes. Every VIP is balanced on every port, TCP and
/// UDP, each connection to the same port of one backend, as a Swarm VIP is.
pub trait LoadBalancer: Send {
    /// The backend's name, as `meshctl info` shows it: "ebpf" or "ipvs".
    fn name(&self) -> &'static str;

    /// Sets (or changes) the backends that `vip` reaches from `sandbox`. With none, connections
    /// to the VIP are refused at once rather than left to time out.
    fn set_vip(
        &mut self,
        sandbox: &Sandbox,
        vip: Ipv4Addr,
        backends: &[Ipv4Addr],
    ) -> Result<(), BackendError>;

    /// Stops balancing `vip` for `sandbox`; nothing to do if it is not set.
    fn remove_vip(&mut self, sandbox: &Sandbox, vip: Ipv4Addr) -> Result<(), BackendError>;

    /// Removes everything set for `sandbox` (its task is gone), trying every step and returning
    /// all the errors together.
    fn remove_sandbox(&mut self, sandbox: &Sandbox) -> Result<(), BackendError>;

    /// The entries it holds in the kernel: eBPF map entries, or IPVS services and destinations.
    fn entries(&self) -> Result<usize, BackendError>;

    /// What the kernel already balances for `sandbox`, backends by VIP, as an earlier run of
    /// meshd left it (the eBPF balancer's pinned maps); empty when it knows of nothing.
    fn programmed(&self, _sandbox: &Sandbox) -> BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> {
        BTreeMap::new()
    }

    /// Removes everything set for sandboxes other than those with the netns cookies in `keep`:
    /// those an earlier run left for tasks that went while meshd was down. Tries every step.
    fn retain_sandboxes(&mut self, _keep: &BTreeSet<u64>) -> Result<(), BackendError> {
        Ok(())
    }

    /// Leaving the swarm: removes what keeps its kernel state alive past this process (pins),
    /// so that it all goes when the balancer is dropped.
    fn release(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}
