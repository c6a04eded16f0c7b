//! The overlay against the fake netlink: what a restarted agent keeps, re-uses and sweeps.

use std::net::Ipv4Addr;
use std::sync::Arc;

use mesh_proto::{NetworkAttachment, Task};

use super::*;
use crate::netlink::FakeNetlink;

const VTEP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 1);

fn task(id: &str, vni: u32, addr: &str) -> Task {
    Task {
        id: id.into(),
        service_id: "svc".into(),
        networks: vec![NetworkAttachment {
            network_id: format!("net{vni}"),
            addresses: vec![addr.into()],
            gateway: "10.1.0.1".into(),
            vni,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn overlay(netlink: &Arc<FakeNetlink>, dir: &Path) -> Overlay {
    Overlay::new(
        netlink.clone(),
        dir,
        "node1".into(),
        VTEP,
        DEFAULT_GWBRIDGE_SUBNET.parse().unwrap(),
    )
    .without_nat()
}

fn fake_with_containers(pids: &[u32]) -> Arc<FakeNetlink> {
    let netlink = Arc::new(FakeNetlink::new());
    netlink.add_existing_netns(Netns::current());
    for pid in pids {
        netlink.add_existing_netns(Netns::of_pid(*pid));
    }
    netlink
}

fn created_veths(netlink: &FakeNetlink) -> usize {
    netlink
        .calls()
        .iter()
        .filter(|c| c.starts_with("create_veth"))
        .count()
}

async fn addresses(netlink: &FakeNetlink, pid: u32) -> Vec<String> {
    let mut all: Vec<String> = netlink
        .list_addresses(&Netns::of_pid(pid))
        .await
        .unwrap()
        .into_iter()
        .map(|a| format!("{} {}", a.link, a.addr))
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn attaching_gives_the_overlay_and_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let netlink = fake_with_containers(&[100]);
    let overlay = overlay(&netlink, dir.path());
    let records = overlay
        .attach(&task("t1aaaaaaaaaaaaa", 4096, "10.1.0.2/24"), 100)
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].addr, Ipv4Addr::new(10, 1, 0, 2));
    assert_eq!(
        addresses(&netlink, 100).await,
        ["eth0 10.1.0.2/24", "eth1 172.18.0.2/16"]
    );
    let route = netlink.default_route(&Netns::of_pid(100)).await.unwrap();
    assert_eq!(route, Some(Ipv4Addr::new(172, 18, 0, 1)));
    let ns = Netns::named(&format!("{}-4096", overlay.prefix()));
    let links = netlink.list_links(&ns).await.unwrap();
    let vxlan = links.iter().find(|l| l.name == "vx4096").unwrap();
    assert_eq!(vxlan.mtu, 1450);
}

#[tokio::test]
async fn a_restarted_agent_keeps_what_running_tasks_use() {
    let dir = tempfile::tempdir().unwrap();
    let netlink = fake_with_containers(&[100, 200]);
    let first = overlay(&netlink, dir.path());
    let kept = task("t1aaaaaaaaaaaaa", 4096, "10.1.0.2/24");
    let ended = task("t2bbbbbbbbbbbbb", 4097, "10.2.0.2/24");
    first.attach(&kept, 100).await.unwrap();
    first.attach(&ended, 200).await.unwrap();
    assert_eq!(created_veths(&netlink), 4);
    let before = addresses(&netlink, 100).await;
    drop(first);

    // While no agent runs, the second task's container ends: its sandbox and veths go.
    netlink.delete_netns_path(&Netns::of_pid(200));

    let second = overlay(&netlink, dir.path());
    // A sweep before the task re-attaches leaves the namespace its veth is in.
    second.sweep().await.unwrap();
    let prefix = format!("{}-", second.prefix());
    let names = netlink.list_netns(&prefix).await.unwrap();
    assert_eq!(names, [format!("{prefix}4096")]);

    // Re-attaching the running container creates nothing and keeps its addresses.
    second.attach(&kept, 100).await.unwrap();
    assert_eq!(created_veths(&netlink), 4);
    assert_eq!(addresses(&netlink, 100).await, before);

    // The sweep released the ended task's lease (172.18.0.3), never the re-adopted one's.
    let leases = gateway::Leases::load(dir.path());
    assert_eq!(leases.tasks().collect::<Vec<_>>(), ["t1aaaaaaaaaaaaa"]);
    netlink.add_existing_netns(Netns::of_pid(300));
    second
        .attach(&task("t3ccccccccccccc", 4096, "10.1.0.3/24"), 300)
        .await
        .unwrap();
    assert_eq!(
        addresses(&netlink, 300).await,
        ["eth0 10.1.0.3/24", "eth1 172.18.0.3/16"]
    );
}

#[tokio::test]
async fn the_last_task_leaving_removes_namespace_and_gateway_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let netlink = fake_with_containers(&[100]);
    let overlay = overlay(&netlink, dir.path());
    overlay
        .attach(&task("t1aaaaaaaaaaaaa", 4096, "10.1.0.2/24"), 100)
        .await
        .unwrap();
    overlay.detach("t1aaaaaaaaaaaaa").await;
    let prefix = format!("{}-", overlay.prefix());
    assert!(netlink.list_netns(&prefix).await.unwrap().is_empty());
    let here = netlink.list_links(&Netns::current()).await.unwrap();
    assert!(
        here.iter()
            .all(|l| l.name != GWBRIDGE && !l.name.starts_with('g')),
        "{here:?}"
    );
}

#[tokio::test]
async fn a_namespace_lost_with_an_earlier_mount_namespace_is_rebuilt_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let netlink = fake_with_containers(&[100, 200]);
    let first = overlay(&netlink, dir.path());
    let kept = task("t1aaaaaaaaaaaaa", 4096, "10.1.0.2/24");
    let other = task("t2bbbbbbbbbbbbb", 4097, "10.2.0.2/24");
    first.attach(&kept, 100).await.unwrap();
    first.attach(&other, 200).await.unwrap();
    drop(first);

    // The agent's mount namespace died with it: both overlay namespaces went with their veths
    // (the containers' eth0 too), leaving their files behind.
    let prefix = format!("{}-", overlay(&netlink, dir.path()).prefix());
    netlink.lose_netns(&format!("{prefix}4096"));
    netlink.lose_netns(&format!("{prefix}4097"));
    let lost = Netns::named(&format!("{prefix}4096"));
    assert!(netlink.list_links(&lost).await.unwrap_err().is_stale());
    assert_eq!(addresses(&netlink, 100).await, ["eth1 172.18.0.2/16"]);

    let second = overlay(&netlink, dir.path());
    // A sweep before the tasks re-attach removes both leftover files: they hold nothing.
    second.sweep().await.unwrap();
    assert!(netlink.list_netns(&prefix).await.unwrap().is_empty());
    // Re-attaching rebuilds the namespace, its bridge and VXLAN device, and the sandbox's eth0
    // with the task's address, in the running container.
    second.attach(&kept, 100).await.unwrap();
    assert_eq!(
        addresses(&netlink, 100).await,
        ["eth0 10.1.0.2/24", "eth1 172.18.0.2/16"]
    );
    let links = netlink.list_links(&lost).await.unwrap();
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    let veth = format!("v{}", short(&kept.id));
    assert!(
        names.contains(&"br0") && names.contains(&"vx4096") && names.contains(&veth.as_str()),
        "{names:?}"
    );
    assert_eq!(
        netlink.list_netns(&prefix).await.unwrap(),
        [format!("{prefix}4096")],
        "only the rebuilt namespace is there"
    );
}

#[tokio::test]
async fn re_attaching_into_a_lost_namespace_that_was_not_swept_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let netlink = fake_with_containers(&[100]);
    let first = overlay(&netlink, dir.path());
    let kept = task("t1aaaaaaaaaaaaa", 4096, "10.1.0.2/24");
    first.attach(&kept, 100).await.unwrap();
    drop(first);
    let prefix = format!("{}-", overlay(&netlink, dir.path()).prefix());
    netlink.lose_netns(&format!("{prefix}4096"));

    let second = overlay(&netlink, dir.path());
    second.attach(&kept, 100).await.unwrap();
    assert_eq!(
        addresses(&netlink, 100).await,
        ["eth0 10.1.0.2/24", "eth1 172.18.0.2/16"]
    );
    second.sweep().await.unwrap();
    assert_eq!(
        netlink.list_netns(&prefix).await.unwrap(),
        [format!("{prefix}4096")]
    );
}
