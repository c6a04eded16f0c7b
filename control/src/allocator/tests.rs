//! The allocator against a real in-memory store whose proposals apply at once.

use mesh_proto::{
    Annotations, IpamConfig, NetworkAttachmentConfig, NetworkSpec, TaskSpec, TaskState,
};
use std::collections::HashSet;

use super::*;
use crate::store::new_id;

struct Harness {
    store: Store,
    stop: watch::Sender<bool>,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    fn start() -> Harness {
        Self::on(crate::store::direct_store())
    }

    fn on(store: Store) -> Harness {
        let (stop, rx) = watch::channel(false);
        let running = Some(tokio::spawn(Allocator::new(store.clone()).run(rx)));
        Harness {
            store,
            stop,
            running,
        }
    }

    /// Stops the allocator, waits until it has, and starts a new one on the same store.
    async fn restart_allocator(&mut self) {
        self.stop.send_replace(true);
        if let Some(running) = self.running.take() {
            running.await.expect("allocator stopped");
        }
        let (stop, rx) = watch::channel(false);
        self.stop = stop;
        self.running = Some(tokio::spawn(Allocator::new(self.store.clone()).run(rx)));
    }

    async fn network(&self, name: &str, subnet: &str) -> String {
        let network = Network {
            id: new_id(),
            spec: Some(NetworkSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    ..Default::default()
                }),
                driver: "overlay".into(),
                ipam: (!subnet.is_empty())
                    .then(|| IpamConfig {
                        subnet: subnet.into(),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = network.id.clone();
        self.store
            .update(|tx| tx.create(network))
            .await
            .expect("create network");
        id
    }

    async fn tasks(&self, count: usize, targets: &[&str]) -> Vec<String> {
        let tasks: Vec<Task> = (0..count)
            .map(|_| Task {
                id: new_id(),
                spec: Some(TaskSpec {
                    networks: targets
                        .iter()
                        .map(|t| NetworkAttachmentConfig {
                            target: t.to_string(),
                            aliases: vec!["web".into()],
                        })
                        .collect(),
                    ..Default::default()
                }),
                desired_state: TaskState::Running as i32,
                ..Default::default()
            })
            .collect();
        let ids = tasks.iter().map(|t| t.id.clone()).collect();
        self.store
            .update(|tx| tasks.into_iter().try_for_each(|t| tx.create(t)))
            .await
            .expect("create tasks");
        ids
    }

    async fn delete<T: crate::store::StoreObject>(&self, ids: &[String]) {
        self.store
            .update(|tx| ids.iter().try_for_each(|id| tx.delete::<T>(id)))
            .await
            .expect("delete");
    }

    /// Polls every 10 ms, for up to 5 s, until `f` returns something.
    async fn wait<T>(&self, what: &str, f: impl Fn(&ReadTx<'_>) -> Option<T>) -> T {
        for _ in 0..500 {
            if let Some(found) = self.store.view(|tx| f(tx)) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    async fn allocation(&self, id: &str) -> (u32, String, String) {
        self.wait("network allocation", |tx| {
            let a = tx.get::<Network>(id)?.allocation?;
            let ipam = a.ipam.first()?;
            Some((a.vni, ipam.subnet.clone(), ipam.gateway.clone()))
        })
        .await
    }

    /// Waits until every task left NEW, and returns their addresses on their first network.
    async fn addresses(&self, ids: &[String]) -> Vec<String> {
        self.wait("tasks pending", |tx| {
            ids.iter()
                .map(|id| {
                    let task = tx.get::<Task>(id)?;
                    (task.status?.state == TaskState::Pending as i32).then_some(())?;
                    task.networks.first()?.addresses.first().cloned()
                })
                .collect()
        })
        .await
    }
}

#[tokio::test]
async fn networks_get_distinct_vnis_and_subnets() {
    let h = Harness::start();
    let a = h.network("a", "").await;
    let b = h.network("b", "").await;
    assert_eq!(
        h.allocation(&a).await,
        (4096, "10.0.0.0/24".into(), "10.0.0.1".into())
    );
    assert_eq!(
        h.allocation(&b).await,
        (4097, "10.0.1.0/24".into(), "10.0.1.1".into())
    );
}

#[tokio::test]
async fn the_same_user_subnet_twice_and_auto_subnets_avoid_it() {
    let h = Harness::start();
    let a = h.network("a", "10.0.0.0/24").await;
    let b = h.network("b", "10.0.0.0/24").await;
    let c = h.network("c", "").await;
    assert_eq!(h.allocation(&a).await.1, "10.0.0.0/24");
    assert_eq!(h.allocation(&b).await.1, "10.0.0.0/24");
    assert_eq!(h.allocation(&c).await.1, "10.0.1.0/24");
    let ta = h.tasks(1, &["a"]).await;
    let tb = h.tasks(1, &["b"]).await;
    assert_eq!(h.addresses(&ta).await, ["10.0.0.2/24"]);
    assert_eq!(h.addresses(&tb).await, ["10.0.0.2/24"]);
}

#[tokio::test]
async fn fifty_tasks_get_distinct_addresses_which_are_reused_after_delete() {
    let h = Harness::start();
    let net = h.network("front", "").await;
    let ids = h.tasks(50, &["front"]).await;
    let addresses = h.addresses(&ids).await;
    let distinct: HashSet<_> = addresses.iter().collect();
    assert_eq!(distinct.len(), 50);
    assert!(
        !distinct.contains(&"10.0.0.1/24".to_string()),
        "the gateway is never handed out"
    );
    let attached = h.store.view(|tx| tx.get::<Task>(&ids[0])).expect("task");
    assert_eq!(attached.networks[0].network_id, net);
    assert_eq!(attached.networks[0].aliases, ["web"]);

    let freed: HashSet<String> = addresses[..10].iter().cloned().collect();
    h.delete::<Task>(&ids[..10]).await;
    let again = h.tasks(10, &[net.as_str()]).await;
    let reused: HashSet<String> = h.addresses(&again).await.into_iter().collect();
    assert_eq!(reused, freed);
}

#[tokio::test]
async fn more_tasks_than_a_batch_are_all_attached_over_several_passes() {
    let h = Harness::start();
    h.network("wide", "10.8.0.0/21").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.extend(h.tasks(450, &["wide"]).await);
    }
    let addresses = h.addresses(&ids).await;
    let distinct: HashSet<_> = addresses.iter().collect();
    assert_eq!(distinct.len(), 1350);
}

/// A pass writes batches of the queue in transactions proposed together; they share the pools,
/// so no address is handed out twice.
#[tokio::test]
async fn batches_are_proposed_together_and_share_the_pools() {
    use crate::limits::{BATCH_WRITES, WRITES_IN_FLIGHT};
    let (store, in_flight) = crate::store::slow_store();
    let h = Harness::on(store);
    let network = h.network("wide", "10.8.0.0/20").await;
    h.allocation(&network).await;
    let ids = h.tasks(BATCH_WRITES * WRITES_IN_FLIGHT, &["wide"]).await;
    let addresses = h.addresses(&ids).await;
    let distinct: HashSet<_> = addresses.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    assert_eq!(in_flight.most(), WRITES_IN_FLIGHT);
}

#[tokio::test]
async fn deleting_a_network_frees_its_vni() {
    let h = Harness::start();
    let a = h.network("a", "").await;
    let b = h.network("b", "").await;
    assert_eq!(h.allocation(&b).await.0, 4097);
    assert_eq!(h.allocation(&a).await.0, 4096);
    h.delete::<Network>(std::slice::from_ref(&a)).await;
    let c = h.network("c", "").await;
    assert_eq!(
        h.allocation(&c).await,
        (4096, "10.0.0.0/24".into(), "10.0.0.1".into())
    );
}

#[tokio::test]
async fn unknown_networks_reject_and_tasks_wait_for_allocation() {
    let h = Harness::start();
    let rejected = h.tasks(1, &["nowhere"]).await;
    let err = h
        .wait("task rejected", |tx| {
            let status = tx.get::<Task>(&rejected[0])?.status?;
            (status.state == TaskState::Rejected as i32).then_some(status.err)
        })
        .await;
    assert_eq!(err, "network nowhere not found");
    let plain = h.tasks(1, &[]).await;
    assert_eq!(
        h.wait("plain task pending", |tx| {
            let task = tx.get::<Task>(&plain[0])?;
            (task.status?.state == TaskState::Pending as i32).then_some(task.networks.len())
        })
        .await,
        0
    );
    // A task and its network created in one write: the network is allocated first.
    let both = h.tasks(2, &["late", "late2"]).await;
    h.network("late", "").await;
    h.network("late2", "192.168.7.0/24").await;
    let mut first = h.addresses(&both).await;
    first.sort();
    assert_eq!(first, ["10.0.0.2/24", "10.0.0.3/24"]);
    let mut second: Vec<String> = h.store.view(|tx| {
        both.iter()
            .filter_map(|id| tx.get::<Task>(id))
            .flat_map(|t| t.networks[1].addresses.clone())
            .collect()
    });
    second.sort();
    assert_eq!(second, ["192.168.7.2/24", "192.168.7.3/24"]);
}

#[tokio::test]
async fn a_rebuilt_allocator_never_hands_out_held_addresses() {
    let mut h = Harness::start();
    let net = h.network("front", "").await;
    let first = h.addresses(&h.tasks(5, &["front"]).await).await;
    h.restart_allocator().await;
    let b = h.network("back", "").await;
    assert_eq!(h.allocation(&b).await.0, 4097);
    let second = h.addresses(&h.tasks(5, &[net.as_str()]).await).await;
    let all: HashSet<_> = first.iter().chain(&second).collect();
    assert_eq!(all.len(), 10, "{first:?} {second:?}");
    h.stop.send_replace(true);
}

/// A service on `targets` with `ports` published (in ingress mode) and the given endpoint mode.
async fn service(
    h: &Harness,
    targets: &[&str],
    ports: &[u32],
    mode: mesh_proto::EndpointMode,
) -> String {
    use mesh_proto::{Endpoint, EndpointSpec, PortConfig, Service, ServiceSpec};
    let spec = EndpointSpec {
        mode: mode as i32,
        ports: ports
            .iter()
            .map(|p| PortConfig {
                target_port: *p,
                published_port: *p,
                ..Default::default()
            })
            .collect(),
    };
    let service = Service {
        id: new_id(),
        spec: Some(ServiceSpec {
            task: Some(TaskSpec {
                networks: targets
                    .iter()
                    .map(|t| NetworkAttachmentConfig {
                        target: t.to_string(),
                        aliases: vec![],
                    })
                    .collect(),
                ..Default::default()
            }),
            endpoint: Some(spec.clone()),
            ..Default::default()
        }),
        endpoint: Some(Endpoint {
            ports: spec.ports.clone(),
            spec: Some(spec),
            virtual_ips: vec![],
        }),
        ..Default::default()
    };
    let id = service.id.clone();
    h.store
        .update(|tx| tx.create(service))
        .await
        .expect("create service");
    id
}

async fn vips(h: &Harness, id: &str, count: usize) -> Vec<(String, String)> {
    h.wait("virtual IPs", |tx| {
        let service = tx.get::<mesh_proto::Service>(id)?;
        let vips: Vec<(String, String)> = service
            .endpoint?
            .virtual_ips
            .into_iter()
            .map(|v| (v.network_id, v.addr))
            .collect();
        (vips.len() == count).then_some(vips)
    })
    .await
}

#[tokio::test]
async fn vip_services_get_one_address_per_network_that_no_task_gets() {
    use mesh_proto::EndpointMode;
    let h = Harness::start();
    let net = h.network("front", "10.5.0.0/24").await;
    h.allocation(&net).await;
    let svc = service(&h, &["front"], &[], EndpointMode::Vip).await;
    let held = vips(&h, &svc, 1).await;
    assert_eq!(held[0].0, net);
    let tasks = h.tasks(3, &["front"]).await;
    let addresses = h.addresses(&tasks).await;
    assert!(!addresses.contains(&held[0].1), "{held:?} {addresses:?}");

    // dnsrr services get none, and a VIP goes back to the pool when its service goes.
    let rr = service(&h, &["front"], &[], EndpointMode::Dnsrr).await;
    let other = service(&h, &["front"], &[], EndpointMode::Vip).await;
    let second = vips(&h, &other, 1).await;
    assert_ne!(second[0].1, held[0].1);
    assert!(vips(&h, &rr, 0).await.is_empty());
    h.delete::<mesh_proto::Service>(std::slice::from_ref(&svc))
        .await;
    h.delete::<mesh_proto::Service>(std::slice::from_ref(&other))
        .await;
    let again = service(&h, &["front"], &[], EndpointMode::Vip).await;
    assert_eq!(vips(&h, &again, 1).await[0].1, held[0].1);
}

#[tokio::test]
async fn publishing_through_ingress_attaches_vip_and_tasks_to_the_ingress_network() {
    use mesh_proto::EndpointMode;
    let h = Harness::start();
    let ingress = Network {
        id: new_id(),
        spec: Some(NetworkSpec {
            annotations: Some(Annotations {
                name: "ingress".into(),
                ..Default::default()
            }),
            driver: "overlay".into(),
            ingress: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let ingress_id = ingress.id.clone();
    h.store
        .update(|tx| tx.create(ingress))
        .await
        .expect("create ingress");
    h.allocation(&ingress_id).await;
    let svc = service(&h, &[], &[8080], EndpointMode::Vip).await;
    let held = vips(&h, &svc, 1).await;
    assert_eq!(held[0].0, ingress_id);
    let task = Task {
        id: new_id(),
        service_id: svc.clone(),
        spec: Some(TaskSpec::default()),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    };
    let task_id = task.id.clone();
    h.store
        .update(|tx| tx.create(task))
        .await
        .expect("create task");
    let attached = h
        .wait("the task on ingress", |tx| {
            let task = tx.get::<Task>(&task_id)?;
            (task.status?.state == TaskState::Pending as i32).then_some(task.networks)
        })
        .await;
    assert_eq!(attached.len(), 1);
    assert_eq!(attached[0].network_id, ingress_id);
}
