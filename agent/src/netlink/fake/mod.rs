//! [`FakeNetlink`]: an in-memory model of namespaces, links, addresses, routes, FDB and neighbour
//! entries that records every call and fails like the kernel does in the common cases.

mod model;

use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use futures::future::{BoxFuture, ready};
use ipnet::Ipv4Net;

use self::model::{Space, State, err};
use super::{
    Address, FdbEntry, Link, LinkKind, Neighbour, Netlink, NetlinkError, Netns, Result, VethSpec,
    VxlanSpec,
};

#[derive(Default)]
pub struct FakeNetlink {
    state: Mutex<State>,
}

impl FakeNetlink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a namespace this fake did not create (e.g. a container's) known to it.
    pub fn add_existing_netns(&self, ns: Netns) {
        self.lock().spaces.entry(ns).or_default();
    }

    /// Destroys a namespace this fake did not create, with its links and their veth peers, as
    /// the kernel does when a container's last process exits.
    pub fn delete_netns_path(&self, ns: &Netns) {
        let mut state = self.lock();
        let names: Vec<String> = state
            .spaces
            .get(ns)
            .map(|s| s.links.keys().cloned().collect())
            .unwrap_or_default();
        for link in names {
            state.remove_link(ns, &link);
        }
        state.spaces.remove(ns);
    }

    /// Loses a named namespace as the kernel does when the mount namespace holding its mount
    /// dies: the namespace goes with its links (and their veth peers), its file stays.
    pub fn lose_netns(&self, name: &str) {
        let ns = Netns::named(name);
        self.delete_netns_path(&ns);
        self.lock().stale.insert(ns);
    }

    /// Every call so far, as `"operation args"` lines.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run<'a, T: Send + 'a>(
        &'a self,
        call: String,
        f: impl FnOnce(&mut State) -> Result<T>,
    ) -> BoxFuture<'a, Result<T>> {
        let mut state = self.lock();
        state.calls.push(call);
        Box::pin(ready(f(&mut state)))
    }
}

impl Netlink for FakeNetlink {
    fn create_netns<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Netns>> {
        self.run(format!("create_netns {name}"), |s| {
            let ns = Netns::named(name);
            if name.is_empty() || name.contains('/') {
                return Err(NetlinkError::Other {
                    op: "create netns",
                    target: name.into(),
                    reason: "invalid namespace name".into(),
                });
            }
            if s.spaces.contains_key(&ns) || s.stale.contains(&ns) {
                return err("create netns", &ns, libc::EEXIST);
            }
            s.spaces.insert(ns.clone(), Space::default());
            Ok(ns)
        })
    }

    fn delete_netns<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        self.run(format!("delete_netns {name}"), |s| {
            let ns = Netns::named(name);
            if s.stale.remove(&ns) {
                return Ok(());
            }
            let names: Vec<String> = s
                .space("delete netns", &ns)?
                .links
                .keys()
                .cloned()
                .collect();
            for link in names {
                s.remove_link(&ns, &link);
            }
            s.spaces.remove(&ns);
            Ok(())
        })
    }

    fn list_netns<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        self.run(format!("list_netns {prefix}"), |s| {
            let dir = Netns::named_dir();
            let dir = dir.as_path();
            let mut names: Vec<String> = s
                .spaces
                .keys()
                .chain(&s.stale)
                .filter(|ns| ns.path().parent() == Some(dir))
                .filter_map(|ns| Some(ns.path().file_name()?.to_str()?.to_owned()))
                .filter(|n| n.starts_with(prefix))
                .collect();
            names.sort();
            Ok(names)
        })
    }

    fn create_bridge<'a>(
        &'a self,
        ns: &'a Netns,
        name: &'a str,
        mtu: u32,
    ) -> BoxFuture<'a, Result<()>> {
        self.run(format!("create_bridge {ns} {name} mtu {mtu}"), |s| {
            s.add_link("create bridge", ns, name, LinkKind::Bridge, mtu)
        })
    }

    fn create_vxlan<'a>(&'a self, ns: &'a Netns, spec: &'a VxlanSpec) -> BoxFuture<'a, Result<()>> {
        self.run(
            format!("create_vxlan {ns} {} vni {}", spec.name, spec.vni),
            |s| {
                const OP: &str = "create vxlan";
                s.link(OP, ns, &spec.bridge)?;
                if let Some(underlay) = &spec.underlay {
                    s.space(OP, underlay)?;
                }
                let kind = LinkKind::Vxlan {
                    vni: spec.vni,
                    local: Some(spec.local),
                    port: spec.port,
                    learning: false,
                };
                s.add_link(OP, ns, &spec.name, kind, spec.mtu)?;
                s.link(OP, ns, &spec.name)?.link.master = Some(spec.bridge.clone());
                Ok(())
            },
        )
    }

    fn create_veth<'a>(&'a self, ns: &'a Netns, spec: &'a VethSpec) -> BoxFuture<'a, Result<()>> {
        self.run(
            format!(
                "create_veth {ns} {} {} -> {} {}",
                spec.name, spec.peer, spec.peer_ns, spec.peer_rename
            ),
            |s| {
                const OP: &str = "create veth";
                s.space(OP, &spec.peer_ns)?;
                if s.space(OP, ns)?.links.contains_key(&spec.peer) {
                    return err(OP, format!("{} in {ns}", spec.peer), libc::EEXIST);
                }
                s.add_link(OP, ns, &spec.name, LinkKind::Veth, spec.mtu)?;
                s.add_link(OP, ns, &spec.peer, LinkKind::Veth, spec.mtu)?;
                s.link(OP, ns, &spec.name)?.peer = Some((ns.clone(), spec.peer.clone()));
                s.link(OP, ns, &spec.peer)?.peer = Some((ns.clone(), spec.name.clone()));
                if let Err(e) = s.move_link(
                    "move link",
                    ns,
                    &spec.peer,
                    &spec.peer_ns,
                    &spec.peer_rename,
                ) {
                    s.remove_link(ns, &spec.name);
                    return Err(e);
                }
                Ok(())
            },
        )
    }

    fn set_mtu<'a>(&'a self, ns: &'a Netns, link: &'a str, mtu: u32) -> BoxFuture<'a, Result<()>> {
        self.run(format!("set_mtu {ns} {link} {mtu}"), |s| {
            s.link("set mtu", ns, link)?.link.mtu = mtu;
            Ok(())
        })
    }

    fn set_up<'a>(&'a self, ns: &'a Netns, link: &'a str) -> BoxFuture<'a, Result<()>> {
        self.run(format!("set_up {ns} {link}"), |s| {
            s.link("set up", ns, link)?.link.up = true;
            Ok(())
        })
    }

    fn set_master<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        bridge: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        self.run(format!("set_master {ns} {link} {bridge}"), |s| {
            s.link("set master", ns, bridge)?;
            s.link("set master", ns, link)?.link.master = Some(bridge.into());
            Ok(())
        })
    }

    fn delete_link<'a>(&'a self, ns: &'a Netns, link: &'a str) -> BoxFuture<'a, Result<()>> {
        self.run(format!("delete_link {ns} {link}"), |s| {
            s.link("delete link", ns, link)?;
            s.remove_link(ns, link);
            Ok(())
        })
    }

    fn list_links<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Link>>> {
        self.run(format!("list_links {ns}"), |s| {
            Ok(s.space("list links", ns)?
                .links
                .values()
                .map(|l| l.link.clone())
                .collect())
        })
    }

    fn add_address<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        addr: Ipv4Net,
    ) -> BoxFuture<'a, Result<()>> {
        self.run(format!("add_address {ns} {link} {addr}"), |s| {
            s.link("add address", ns, link)?;
            let space = s.space("add address", ns)?;
            let entry = Address {
                link: link.into(),
                addr,
            };
            if space.addresses.contains(&entry) {
                return err(
                    "add address",
                    format!("{addr} on {link} in {ns}"),
                    libc::EEXIST,
                );
            }
            space.addresses.push(entry);
            Ok(())
        })
    }

    fn delete_address<'a>(
        &'a self,
        ns: &'a Netns,
        link: &'a str,
        addr: Ipv4Net,
    ) -> BoxFuture<'a, Result<()>> {
        self.run(format!("delete_address {ns} {link} {addr}"), |s| {
            s.link("delete address", ns, link)?;
            let space = s.space("delete address", ns)?;
            let before = space.addresses.len();
            space
                .addresses
                .retain(|a| !(a.link == link && a.addr == addr));
            if space.addresses.len() == before {
                return err(
                    "delete address",
                    format!("{addr} on {link} in {ns}"),
                    libc::EADDRNOTAVAIL,
                );
            }
            Ok(())
        })
    }

    fn list_addresses<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Address>>> {
        self.run(format!("list_addresses {ns}"), |s| {
            Ok(s.space("list addresses", ns)?.addresses.clone())
        })
    }

    fn add_default_route<'a>(
        &'a self,
        ns: &'a Netns,
        gateway: Ipv4Addr,
    ) -> BoxFuture<'a, Result<()>> {
        self.run(format!("add_default_route {ns} {gateway}"), |s| {
            const OP: &str = "add route";
            let space = s.space(OP, ns)?;
            if space.gateway.is_some() {
                return err(OP, format!("default in {ns}"), libc::EEXIST);
            }
            let reachable = space.addresses.iter().any(|a| {
                a.addr.contains(&gateway) && space.links.get(&a.link).is_some_and(|l| l.link.up)
            });
            if !reachable {
                return err(
                    OP,
                    format!("default via {gateway} in {ns}"),
                    libc::ENETUNREACH,
                );
            }
            space.gateway = Some(gateway);
            Ok(())
        })
    }

    fn delete_default_route<'a>(
        &'a self,
        ns: &'a Netns,
        gateway: Ipv4Addr,
    ) -> BoxFuture<'a, Result<()>> {
        self.run(format!("delete_default_route {ns} {gateway}"), |s| {
            let space = s.space("delete route", ns)?;
            if space.gateway != Some(gateway) {
                return err(
                    "delete route",
                    format!("default via {gateway} in {ns}"),
                    libc::ESRCH,
                );
            }
            space.gateway = None;
            Ok(())
        })
    }

    fn default_route<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Option<Ipv4Addr>>> {
        self.run(format!("default_route {ns}"), |s| {
            Ok(s.space("list routes", ns)?.gateway)
        })
    }

    fn add_fdb<'a>(&'a self, ns: &'a Netns, entry: &'a FdbEntry) -> BoxFuture<'a, Result<()>> {
        self.run(
            format!("add_fdb {ns} {} {} {}", entry.link, entry.mac, entry.dst),
            |s| {
                s.link("add fdb", ns, &entry.link)?;
                let space = s.space("add fdb", ns)?;
                if space.fdb.contains(entry) {
                    return err(
                        "add fdb",
                        format!("{} on {} in {ns}", entry.mac, entry.link),
                        libc::EEXIST,
                    );
                }
                space.fdb.push(entry.clone());
                Ok(())
            },
        )
    }

    fn delete_fdb<'a>(&'a self, ns: &'a Netns, entry: &'a FdbEntry) -> BoxFuture<'a, Result<()>> {
        self.run(
            format!("delete_fdb {ns} {} {} {}", entry.link, entry.mac, entry.dst),
            |s| {
                s.link("delete fdb", ns, &entry.link)?;
                let space = s.space("delete fdb", ns)?;
                let before = space.fdb.len();
                space.fdb.retain(|e| e != entry);
                if space.fdb.len() == before {
                    return err(
                        "delete fdb",
                        format!("{} on {} in {ns}", entry.mac, entry.link),
                        libc::ENOENT,
                    );
                }
                Ok(())
            },
        )
    }

    fn list_fdb<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<FdbEntry>>> {
        self.run(format!("list_fdb {ns}"), |s| {
            Ok(s.space("list fdb", ns)?.fdb.clone())
        })
    }

    fn add_neighbour<'a>(
        &'a self,
        ns: &'a Netns,
        entry: &'a Neighbour,
    ) -> BoxFuture<'a, Result<()>> {
        self.run(
            format!(
                "add_neighbour {ns} {} {} {}",
                entry.link, entry.ip, entry.mac
            ),
            |s| {
                s.link("add neighbour", ns, &entry.link)?;
                let space = s.space("add neighbour", ns)?;
                if space
                    .neighbours
                    .iter()
                    .any(|n| n.link == entry.link && n.ip == entry.ip)
                {
                    return err(
                        "add neighbour",
                        format!("{} on {} in {ns}", entry.ip, entry.link),
                        libc::EEXIST,
                    );
                }
                space.neighbours.push(entry.clone());
                Ok(())
            },
        )
    }

    fn delete_neighbour<'a>(
        &'a self,
        ns: &'a Netns,
        entry: &'a Neighbour,
    ) -> BoxFuture<'a, Result<()>> {
        self.run(
            format!("delete_neighbour {ns} {} {}", entry.link, entry.ip),
            |s| {
                s.link("delete neighbour", ns, &entry.link)?;
                let space = s.space("delete neighbour", ns)?;
                let before = space.neighbours.len();
                space
                    .neighbours
                    .retain(|n| !(n.link == entry.link && n.ip == entry.ip));
                if space.neighbours.len() == before {
                    return err(
                        "delete neighbour",
                        format!("{} on {} in {ns}", entry.ip, entry.link),
                        libc::ENOENT,
                    );
                }
                Ok(())
            },
        )
    }

    fn list_neighbours<'a>(&'a self, ns: &'a Netns) -> BoxFuture<'a, Result<Vec<Neighbour>>> {
        self.run(format!("list_neighbours {ns}"), |s| {
            Ok(s.space("list neighbours", ns)?.neighbours.clone())
        })
    }
}
