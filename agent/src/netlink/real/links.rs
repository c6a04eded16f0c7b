//! Links: bridges, VXLAN devices and veth pairs; MTU, up, master; deletion and listing.

use std::collections::HashMap;
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan};
use tracing::debug;

use super::{connect, kernel};
use crate::netlink::{Link, LinkKind, MacAddr, NetlinkError, Netns, Result, VethSpec, VxlanSpec};

/// The index of `name` in the namespace behind `handle` (`ENODEV` when it does not exist).
pub(super) async fn index(handle: &Handle, ns: &Netns, name: &str) -> Result<u32> {
    let target = format!("{name} in {ns}");
    let found = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(kernel("find link", &target))?;
    found
        .map(|msg| msg.header.index)
        .ok_or_else(|| NetlinkError::errno("find link", target, libc::ENODEV))
}

pub(super) async fn create_bridge(ns: &Netns, name: &str, mtu: u32) -> Result<()> {
    let handle = connect(ns).await?;
    let msg = LinkBridge::new(name).mtu(mtu).build();
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(kernel("create bridge", format!("{name} in {ns}")))?;
    debug!(netns = %ns, link = name, "bridge created");
    Ok(())
}

pub(super) async fn create_vxlan(ns: &Netns, spec: &VxlanSpec) -> Result<()> {
    const OP: &str = "create vxlan";
    let target = format!("{} in {ns}", spec.name);
    let handle = connect(ns).await?;
    let bridge = index(&handle, ns, &spec.bridge).await?;
    let build = || {
        LinkVxlan::new(&spec.name, spec.vni)
            .local(spec.local)
            .port(spec.port)
            .learning(false)
            .mtu(spec.mtu)
    };
    match &spec.underlay {
        None => {
            let msg = build().controller(bridge).build();
            handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(kernel(OP, &target))?;
        }
        Some(underlay) => {
            let outside = connect(underlay).await?;
            let msg = build().build();
            outside
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(kernel(OP, format!("{} in {underlay}", spec.name)))?;
            if let Err(e) = move_into(&outside, underlay, &spec.name, ns, &handle, bridge).await {
                if let Ok(idx) = index(&outside, underlay, &spec.name).await {
                    let _ = outside.link().del(idx).execute().await;
                }
                return Err(e);
            }
        }
    }
    debug!(netns = %ns, link = %spec.name, vni = spec.vni, "vxlan created");
    Ok(())
}

/// Moves `name` from `from_ns` into `ns` and enslaves it to the bridge at index `bridge` there.
async fn move_into(
    from: &Handle,
    from_ns: &Netns,
    name: &str,
    ns: &Netns,
    handle: &Handle,
    bridge: u32,
) -> Result<()> {
    let idx = index(from, from_ns, name).await?;
    let file = super::open_netns("open netns", ns)?;
    let msg = LinkUnspec::new_with_index(idx)
        .setns_by_fd(file.as_raw_fd())
        .build();
    from.link()
        .set(msg)
        .execute()
        .await
        .map_err(kernel("move link", format!("{name} to {ns}")))?;
    let moved = index(handle, ns, name).await?;
    let msg = LinkUnspec::new_with_index(moved).controller(bridge).build();
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(kernel("set master", format!("{name} in {ns}")))
}

pub(super) async fn create_veth(ns: &Netns, spec: &VethSpec) -> Result<()> {
    let handle = connect(ns).await?;
    let file = super::open_netns("open netns", &spec.peer_ns)?;
    let msg = LinkVeth::new(&spec.name, &spec.peer).mtu(spec.mtu).build();
    let target = format!("{} in {ns}", spec.name);
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(kernel("create veth", &target))?;
    let moved = async {
        let peer = index(&handle, ns, &spec.peer).await?;
        let msg = LinkUnspec::new_with_index(peer)
            .mtu(spec.mtu)
            .setns_by_fd(file.as_raw_fd())
            .name(spec.peer_rename.clone())
            .build();
        let target = format!("{} to {} as {}", spec.peer, spec.peer_ns, spec.peer_rename);
        handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(kernel("move link", target))
    }
    .await;
    if let Err(e) = moved {
        if let Ok(idx) = index(&handle, ns, &spec.name).await {
            let _ = handle.link().del(idx).execute().await;
        }
        return Err(e);
    }
    debug!(netns = %ns, link = %spec.name, peer_netns = %spec.peer_ns, peer = %spec.peer_rename, "veth created");
    Ok(())
}

async fn set(
    ns: &Netns,
    op: &'static str,
    link: &str,
    f: impl FnOnce(u32) -> LinkMessage,
) -> Result<()> {
    let handle = connect(ns).await?;
    let idx = index(&handle, ns, link).await?;
    handle
        .link()
        .set(f(idx))
        .execute()
        .await
        .map_err(kernel(op, format!("{link} in {ns}")))
}

pub(super) async fn set_mtu(ns: &Netns, link: &str, mtu: u32) -> Result<()> {
    set(ns, "set mtu", link, |idx| {
        LinkUnspec::new_with_index(idx).mtu(mtu).build()
    })
    .await
}

pub(super) async fn set_up(ns: &Netns, link: &str) -> Result<()> {
    set(ns, "set up", link, |idx| {
        LinkUnspec::new_with_index(idx).up().build()
    })
    .await
}

pub(super) async fn set_master(ns: &Netns, link: &str, bridge: &str) -> Result<()> {
    let handle = connect(ns).await?;
    let master = index(&handle, ns, bridge).await?;
    let idx = index(&handle, ns, link).await?;
    let msg = LinkUnspec::new_with_index(idx).controller(master).build();
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(kernel("set master", format!("{link} in {ns}")))
}

pub(super) async fn delete(ns: &Netns, link: &str) -> Result<()> {
    let handle = connect(ns).await?;
    let idx = index(&handle, ns, link).await?;
    handle
        .link()
        .del(idx)
        .execute()
        .await
        .map_err(kernel("delete link", format!("{link} in {ns}")))?;
    debug!(netns = %ns, link, "link deleted");
    Ok(())
}

/// Every link's index and name in `ns`, for turning indexes in other messages into names.
pub(super) async fn names(handle: &Handle, ns: &Netns) -> Result<HashMap<u32, String>> {
    let msgs: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(kernel("list links", ns))?;
    Ok(msgs
        .iter()
        .filter_map(|m| Some((m.header.index, link_name(m)?)))
        .collect())
}

fn link_name(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

pub(super) async fn list(ns: &Netns) -> Result<Vec<Link>> {
    let handle = connect(ns).await?;
    let msgs: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(kernel("list links", ns))?;
    let names: HashMap<u32, String> = msgs
        .iter()
        .filter_map(|m| Some((m.header.index, link_name(m)?)))
        .collect();
    Ok(msgs.iter().filter_map(|m| to_link(m, &names)).collect())
}

fn to_link(msg: &LinkMessage, names: &HashMap<u32, String>) -> Option<Link> {
    let mut link = Link {
        name: link_name(msg)?,
        kind: LinkKind::Other(String::new()),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
        mac: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Controller(idx) => link.master = names.get(idx).cloned(),
            LinkAttribute::Address(bytes) => link.mac = MacAddr::try_from(bytes.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => link.kind = kind(infos),
            _ => {}
        }
    }
    Some(link)
}

fn kind(infos: &[LinkInfo]) -> LinkKind {
    let mut kind = LinkKind::Other(String::new());
    for info in infos {
        match info {
            LinkInfo::Kind(InfoKind::Bridge) => kind = LinkKind::Bridge,
            LinkInfo::Kind(InfoKind::Veth) => kind = LinkKind::Veth,
            LinkInfo::Kind(InfoKind::Vxlan) if !matches!(kind, LinkKind::Vxlan { .. }) => {
                kind = LinkKind::Vxlan {
                    vni: 0,
                    local: None,
                    port: 0,
                    learning: true,
                };
            }
            LinkInfo::Kind(other) => kind = LinkKind::Other(other.to_string()),
            LinkInfo::Data(InfoData::Vxlan(data)) => kind = vxlan(data),
            _ => {}
        }
    }
    kind
}

fn vxlan(data: &[InfoVxlan]) -> LinkKind {
    let (mut vni, mut local, mut port, mut learning) = (0, None, 0, true);
    for item in data {
        match item {
            InfoVxlan::Id(id) => vni = *id,
            InfoVxlan::Local(ip) => local = Some(*ip),
            InfoVxlan::Port(p) => port = *p,
            InfoVxlan::Learning(on) => learning = *on,
            _ => {}
        }
    }
    LinkKind::Vxlan {
        vni,
        local,
        port,
        learning,
    }
}
