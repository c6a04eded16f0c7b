//! [`SockLb`] as a [`LoadBalancer`]: a VIP is one port-0 service per protocol (every port of the
//! VIP), each backend on port 0 (the port the client asked for).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use super::{Protocol, SockLb, collected};
use crate::lb::{BackendError, LoadBalancer, Sandbox};

const PROTOCOLS: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

impl LoadBalancer for SockLb {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn set_vip(
        &mut self,
        sandbox: &Sandbox,
        vip: Ipv4Addr,
        backends: &[Ipv4Addr],
    ) -> Result<(), BackendError> {
        let targets: Vec<SocketAddrV4> = backends
            .iter()
            .map(|addr| SocketAddrV4::new(*addr, 0))
            .collect();
        for proto in PROTOCOLS {
            self.set_service(sandbox.cookie, vip, 0, proto, &targets)?;
        }
        Ok(())
    }

    fn remove_vip(&mut self, sandbox: &Sandbox, vip: Ipv4Addr) -> Result<(), BackendError> {
        let errors = PROTOCOLS
            .into_iter()
            .filter_map(|proto| self.remove_service(sandbox.cookie, vip, 0, proto).err())
            .collect();
        Ok(collected(errors)?)
    }

    fn remove_sandbox(&mut self, sandbox: &Sandbox) -> Result<(), BackendError> {
        Ok(SockLb::remove_sandbox(self, sandbox.cookie)?)
    }

    fn entries(&self) -> Result<usize, BackendError> {
        Ok(SockLb::entries(self)?)
    }

    fn programmed(&self, sandbox: &Sandbox) -> BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> {
        self.vips_of(sandbox.cookie)
    }

    fn retain_sandboxes(&mut self, keep: &BTreeSet<u64>) -> Result<(), BackendError> {
        let errors = self
            .sandboxes()
            .into_iter()
            .filter(|cookie| !keep.contains(cookie))
            .filter_map(|cookie| {
                tracing::info!(
                    netns.cookie = cookie,
                    "removing the services of a sandbox that went"
                );
                SockLb::remove_sandbox(self, cookie).err()
            })
            .collect();
        Ok(collected(errors)?)
    }

    fn release(&mut self) -> Result<(), BackendError> {
        Ok(self.unpin()?)
    }
}
