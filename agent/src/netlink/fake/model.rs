//! The in-memory kernel state behind [`FakeNetlink`](super::FakeNetlink): namespaces holding
//! links, addresses, a default route, FDB and neighbour entries, with the kernel's errnos.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::netlink::{
    Address, FdbEntry, Link, LinkKind, MacAddr, Neighbour, NetlinkError, Netns, Result,
};

#[derive(Default)]
pub(super) struct Space {
    pub(super) links: BTreeMap<String, FakeLink>,
    pub(super) addresses: Vec<Address>,
    pub(super) gateway: Option<Ipv4Addr>,
    pub(super) fdb: Vec<FdbEntry>,
    pub(super) neighbours: Vec<Neighbour>,
}

pub(super) struct FakeLink {
    pub(super) link: Link,
    /// For a veth end: where its other end is.
    pub(super) peer: Option<(Netns, String)>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) spaces: HashMap<Netns, Space>,
    /// Named namespaces whose file is left but whose namespace is gone.
    pub(super) stale: HashSet<Netns>,
    pub(super) calls: Vec<String>,
    pub(super) next_mac: u8,
}

/// Records calls and keeps the resulting kernel state in memory.
pub(super) fn err<T>(op: &'static str, target: impl std::fmt::Display, errno: i32) -> Result<T> {
    Err(NetlinkError::errno(op, target, errno))
}

impl State {
    pub(super) fn space(&mut self, op: &'static str, ns: &Netns) -> Result<&mut Space> {
        if self.stale.contains(ns) {
            return Err(NetlinkError::Stale {
                op,
                target: ns.to_string(),
            });
        }
        self.spaces
            .get_mut(ns)
            .map_or_else(|| err(op, ns, libc::ENOENT), Ok)
    }

    pub(super) fn link(
        &mut self,
        op: &'static str,
        ns: &Netns,
        name: &str,
    ) -> Result<&mut FakeLink> {
        let space = self.space(op, ns)?;
        space
            .links
            .get_mut(name)
            .map_or_else(|| err(op, format!("{name} in {ns}"), libc::ENODEV), Ok)
    }

    pub(super) fn add_link(
        &mut self,
        op: &'static str,
        ns: &Netns,
        name: &str,
        kind: LinkKind,
        mtu: u32,
    ) -> Result<()> {
        self.next_mac = self.next_mac.wrapping_add(1);
        let mac = MacAddr([0x02, 0x42, 0, 0, 0, self.next_mac]);
        let space = self.space(op, ns)?;
        if space.links.contains_key(name) {
            return err(op, format!("{name} in {ns}"), libc::EEXIST);
        }
        let link = Link {
            name: name.into(),
            kind,
            mtu,
            up: false,
            master: None,
            mac: Some(mac),
        };
        space
            .links
            .insert(name.into(), FakeLink { link, peer: None });
        Ok(())
    }

    /// Removes a link and everything hanging off it (and a veth's other end).
    pub(super) fn remove_link(&mut self, ns: &Netns, name: &str) {
        let Some(space) = self.spaces.get_mut(ns) else {
            return;
        };
        let Some(gone) = space.links.remove(name) else {
            return;
        };
        space.addresses.retain(|a| a.link != name);
        space.fdb.retain(|e| e.link != name);
        space.neighbours.retain(|e| e.link != name);
        if space.gateway.is_some()
            && !space
                .addresses
                .iter()
                .any(|a| space.gateway.is_some_and(|g| a.addr.contains(&g)))
        {
            space.gateway = None;
        }
        for link in space.links.values_mut() {
            if link.link.master.as_deref() == Some(name) {
                link.link.master = None;
            }
        }
        if let Some((peer_ns, peer)) = gone.peer {
            self.remove_link(&peer_ns, &peer);
        }
    }

    pub(super) fn move_link(
        &mut self,
        op: &'static str,
        from: &Netns,
        name: &str,
        to: &Netns,
        rename: &str,
    ) -> Result<()> {
        self.space(op, to)?;
        if self
            .spaces
            .get(to)
            .is_some_and(|s| s.links.contains_key(rename))
        {
            return err(op, format!("{rename} in {to}"), libc::EEXIST);
        }
        let mut moved = self
            .space(op, from)?
            .links
            .remove(name)
            .map_or_else(|| err(op, name, libc::ENODEV), Ok)?;
        moved.link.name = rename.into();
        moved.link.master = None;
        moved.link.up = false;
        if let Some((peer_ns, peer)) = moved.peer.clone()
            && let Some(other) = self
                .spaces
                .get_mut(&peer_ns)
                .and_then(|s| s.links.get_mut(&peer))
        {
            other.peer = Some((to.clone(), rename.into()));
        }
        self.space(op, to)?.links.insert(rename.into(), moved);
        Ok(())
    }
}
