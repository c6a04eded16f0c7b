//! Attaching a task's sandbox to its overlay networks, and detaching it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use mesh_proto::{NetworkAttachment, PortProtocol, PublishMode, Task};

use super::{NetState, Overlay, OverlayError, State, TaskLink, created, gone, short};
use crate::gossip::{EndpointRecord, IngressPort};
use crate::netlink::{Netns, VXLAN_PORT, VethSpec, VxlanSpec};

const BRIDGE: &str = "br0";
/// VXLAN's encapsulation overhead.
const VXLAN_OVERHEAD: u32 = 50;
const DEFAULT_UNDERLAY_MTU: u32 = 1500;

impl Overlay {
    /// Connects the sandbox of process `pid` to each of the task's overlay networks (`eth0`, …)
    /// and to the gateway bridge (the next `ethN`, with the default route); returns the endpoint
    /// records to publish. Whatever is already in place (a re-adopted container) is kept.
    pub async fn attach(&self, task: &Task, pid: u32) -> Result<Vec<EndpointRecord>, OverlayError> {
        let mut state = self.state.lock().await;
        let underlay_mtu = self.underlay_mtu(&mut state).await;
        let mtu = underlay_mtu.saturating_sub(VXLAN_OVERHEAD);
        let container_ns = Netns::of_pid(pid);
        let mut records = Vec::new();
        let mut links = Vec::new();
        for (index, attachment) in task.networks.iter().enumerate() {
            if attachment.vni == 0 {
                continue;
            }
            let (addr, gateway) = parse(attachment)?;
            let ifname = format!("eth{index}");
            let veth = format!("v{}", short(&task.id));
            self.ensure_network(&mut state, attachment, addr, gateway, mtu)
                .await?;
            let ns = Netns::named(&self.netns_name(attachment.vni));
            let present = self
                .netlink
                .list_links(&container_ns)
                .await?
                .into_iter()
                .any(|l| l.name == ifname);
            if !present {
                gone(self.netlink.delete_link(&ns, &veth).await)?;
                let spec = VethSpec {
                    name: veth.clone(),
                    peer: format!("p{}", short(&task.id)),
                    peer_ns: container_ns.clone(),
                    peer_rename: ifname.clone(),
                    mtu,
                };
                self.netlink.create_veth(&ns, &spec).await?;
                self.netlink.set_master(&ns, &veth, BRIDGE).await?;
                self.netlink.set_up(&ns, &veth).await?;
            }
            created(self.netlink.add_address(&container_ns, &ifname, addr).await)?;
            self.netlink.set_up(&container_ns, &ifname).await?;
            let _ = self.netlink.set_up(&container_ns, "lo").await;
            let mac = self
                .netlink
                .list_links(&container_ns)
                .await?
                .into_iter()
                .find(|l| l.name == ifname)
                .and_then(|l| l.mac)
                .map(|m| m.0)
                .unwrap_or_default();
            let link = TaskLink {
                vni: attachment.vni,
                veth,
                container_ns: container_ns.clone(),
                ifname,
            };
            self.add_remote_neighbours(&state, &attachment.network_id, &link)
                .await;
            links.push(link);
            records.push(EndpointRecord {
                network_id: attachment.network_id.clone(),
                task_id: task.id.clone(),
                service_id: task.service_id.clone(),
                addr: addr.addr(),
                mac,
                node_id: self.node_id.clone(),
                vtep: self.vtep,
                service_name: task
                    .service_annotations
                    .as_ref()
                    .map(|a| a.name.clone())
                    .unwrap_or_default(),
                vip: attachment.vip.parse::<Ipv4Net>().ok().map(|net| net.addr()),
                ingress_ports: ingress_ports(task),
                aliases: attachment.aliases.clone(),
            });
            tracing::info!(task.id = %task.id, vni = attachment.vni, addr = %addr, "task attached to overlay");
        }
        state.tasks.insert(task.id.clone(), links);
        let ifname = format!("eth{}", task.networks.len());
        self.attach_gateway(&mut state, task, &container_ns, &ifname, underlay_mtu)
            .await?;
        Ok(records)
    }

    /// Removes the task's veths, and the namespaces of networks no task here uses any more.
    pub async fn detach(&self, task_id: &str) {
        let mut state = self.state.lock().await;
        let Some(links) = state.tasks.remove(task_id) else {
            return;
        };
        self.detach_gateway(&mut state, task_id).await;
        for link in links {
            let ns = Netns::named(&self.netns_name(link.vni));
            if let Err(err) = gone(self.netlink.delete_link(&ns, &link.veth).await) {
                tracing::warn!(task.id = %task_id, error = %err, "cannot delete veth");
            }
            let used = state.tasks.values().flatten().any(|l| l.vni == link.vni);
            if !used && state.networks.remove(&link.vni).is_some() {
                let name = self.netns_name(link.vni);
                match gone(self.netlink.delete_netns(&name).await) {
                    Ok(()) => tracing::info!(netns = %name, "overlay namespace removed"),
                    Err(err) => {
                        tracing::warn!(netns = %name, error = %err, "cannot remove namespace")
                    }
                }
            }
        }
    }

    async fn ensure_network(
        &self,
        state: &mut State,
        attachment: &NetworkAttachment,
        addr: Ipv4Net,
        gateway: Ipv4Addr,
        mtu: u32,
    ) -> Result<(), OverlayError> {
        let vni = attachment.vni;
        if state.networks.contains_key(&vni) {
            return Ok(());
        }
        let name = self.netns_name(vni);
        let ns = match self.netlink.create_netns(&name).await {
            Ok(ns) => ns,
            Err(err) if err.is_already_exists() => self.adopt_netns(&name).await?,
            Err(err) => return Err(err.into()),
        };
        created(self.netlink.create_bridge(&ns, BRIDGE, mtu).await)?;
        let gateway_net =
            Ipv4Net::new(gateway, addr.prefix_len()).map_err(|e| OverlayError::Attachment {
                network: attachment.network_id.clone(),
                reason: e.to_string(),
            })?;
        created(self.netlink.add_address(&ns, BRIDGE, gateway_net).await)?;
        self.netlink.set_up(&ns, BRIDGE).await?;
        let vxlan = VxlanSpec {
            name: format!("vx{vni}"),
            vni,
            local: self.vtep,
            port: VXLAN_PORT,
            mtu,
            bridge: BRIDGE.into(),
            underlay: Some(Netns::current()),
        };
        created(self.netlink.create_vxlan(&ns, &vxlan).await)?;
        self.netlink.set_up(&ns, &vxlan.name).await?;
        tracing::info!(netns = %name, vni, mtu, "overlay namespace created");
        state.networks.insert(
            vni,
            NetState {
                ns,
                network_id: attachment.network_id.clone(),
            },
        );
        self.add_remote_fdb(state, vni).await;
        Ok(())
    }

    /// The namespace an earlier run left under `name`, or a new one in its place when only its
    /// file is left (it was held by a mount namespace that died, and every device in it went
    /// too): the caller then builds it again and re-attaches each task's sandbox in place.
    async fn adopt_netns(&self, name: &str) -> Result<Netns, OverlayError> {
        let ns = Netns::named(name);
        match self.netlink.list_links(&ns).await {
            Err(err) if err.is_stale() => {
                tracing::warn!(netns = %name, "overlay namespace lost with an earlier mount namespace: rebuilding it");
                gone(self.netlink.delete_netns(name).await)?;
                Ok(self.netlink.create_netns(name).await?)
            }
            Err(err) => Err(err.into()),
            Ok(_) => Ok(ns),
        }
    }

    /// The underlay MTU: that of the link holding the VTEP address.
    async fn underlay_mtu(&self, state: &mut State) -> u32 {
        if let Some(mtu) = state.underlay_mtu {
            return mtu;
        }
        let here = Netns::current();
        let mut underlay = DEFAULT_UNDERLAY_MTU;
        if let Ok(addresses) = self.netlink.list_addresses(&here).await
            && let Some(found) = addresses.iter().find(|a| a.addr.addr() == self.vtep)
            && let Ok(links) = self.netlink.list_links(&here).await
            && let Some(link) = links.iter().find(|l| l.name == found.link)
        {
            underlay = link.mtu;
        }
        state.underlay_mtu = Some(underlay);
        underlay
    }
}

fn parse(attachment: &NetworkAttachment) -> Result<(Ipv4Net, Ipv4Addr), OverlayError> {
    let bad = |reason: String| OverlayError::Attachment {
        network: attachment.network_id.clone(),
        reason,
    };
    let addr: Ipv4Net = attachment
        .addresses
        .first()
        .ok_or_else(|| bad("no address".into()))?
        .parse()
        .map_err(|e: ipnet::AddrParseError| bad(e.to_string()))?;
    let gateway: Ipv4Addr = attachment
        .gateway
        .parse()
        .map_err(|e: std::net::AddrParseError| bad(e.to_string()))?;
    Ok((addr, gateway))
}

/// The task's ports published through the routing mesh.
fn ingress_ports(task: &Task) -> Vec<IngressPort> {
    task.ports
        .iter()
        .filter(|p| p.publish_mode() == PublishMode::Ingress)
        .filter_map(|p| {
            Some(IngressPort {
                udp: p.protocol() == PortProtocol::Udp,
                published: u16::try_from(p.published_port).ok()?,
                target: u16::try_from(p.target_port).ok()?,
            })
        })
        .collect()
}
