//! Service VIPs for this node's tasks: for each local sandbox, every service with a virtual IP on
//! a network the task shares is programmed into the node's load balancer (any port of the VIP,
//! TCP and UDP, to the same port of one of the service's running tasks), whichever backend it is
//! ([`LoadBalancer`]: eBPF or IPVS). Re-synced whenever the endpoint table changes, so a task that
//! stops leaves every sandbox's backends at once.
//!
//! A VIP whose last task went stays programmed without backends for [`EMPTY_GRACE`], so that a
//! service scaled to 0 refuses connections at once instead of leaving them to time out; then it
//! goes too (the service may have been removed).
//!
//! After a restart, what the kernel still balances for a sandbox (the eBPF balancer's pinned
//! maps) is taken over as programmed, and, unless told the directory is whole, held: no backend
//! it had is taken out before [`Balancer::release_hold`] (gossip has settled); additions go in
//! at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::dns::Directory;
use crate::lb::ebpf::Pins;
use crate::lb::{BackendError, IPVS_PROC, LbBackend, LoadBalancer, Sandbox};
use crate::netlink::{NetlinkError, Netns};

/// What is programmed for one sandbox: backends by VIP.
type Programmed = BTreeMap<Ipv4Addr, Vec<Ipv4Addr>>;

/// How long a VIP without tasks keeps refusing connections before its entries go.
pub const EMPTY_GRACE: Duration = Duration::from_secs(30);

struct Tracked {
    sandbox: Sandbox,
    networks: Vec<String>,
    programmed: Programmed,
    /// What the kernel balanced for the sandbox when it was taken over, kept until the hold is
    /// released.
    adopted: Programmed,
    /// VIPs programmed without backends, since when.
    emptied: BTreeMap<Ipv4Addr, Instant>,
}

/// The load balancer and what it holds for this node's sandboxes.
pub struct Balancer {
    lb: Box<dyn LoadBalancer>,
    sandboxes: HashMap<String, Tracked>,
    /// Whether backends the kernel had at take-over are kept whatever the directory says.
    holding: bool,
    /// Where the time of each kernel update goes.
    timings: Option<crate::metrics::KernelMetrics>,
}

impl Balancer {
    /// Starts the backend `choice` stands for on this kernel (`auto`: IPVS where the kernel has
    /// it, eBPF otherwise), the eBPF one pinned in `pins`.
    pub fn open(choice: LbBackend, pins: &Pins) -> Result<Self, BackendError> {
        let backend = choice.resolve(std::path::Path::new(IPVS_PROC))?;
        Ok(Self::with(backend.open(pins)?))
    }

    /// Balances through `lb`.
    pub fn with(lb: Box<dyn LoadBalancer>) -> Self {
        Self {
            lb,
            sandboxes: HashMap::new(),
            holding: true,
            timings: None,
        }
    }

    /// Records how long each update of the kernel takes into `metrics`.
    pub fn time_into(&mut self, metrics: crate::metrics::KernelMetrics) {
        self.timings = Some(metrics);
    }

    /// The backends programmed behind each VIP: the most any sandbox has.
    pub fn vip_backends(&self) -> BTreeMap<Ipv4Addr, usize> {
        let mut vips = BTreeMap::new();
        for tracked in self.sandboxes.values() {
            for (vip, backends) in &tracked.programmed {
                let most: &mut usize = vips.entry(*vip).or_default();
                *most = (*most).max(backends.len());
            }
        }
        vips
    }

    /// Stops holding what the kernel had at take-over: from now on the directory alone says
    /// what each VIP reaches (gossip has settled, or the directory was whole from the start).
    pub fn release_hold(&mut self) {
        self.holding = false;
        for tracked in self.sandboxes.values_mut() {
            tracked.adopted.clear();
        }
    }

    /// Removes from the kernel what an earlier run set for sandboxes that are not tracked now:
    /// those of tasks that went while meshd was down.
    pub fn prune(&mut self) {
        let keep: BTreeSet<u64> = self.sandboxes.values().map(|t| t.sandbox.cookie).collect();
        if let Err(err) = self.lb.retain_sandboxes(&keep) {
            tracing::warn!(error = %err, "cannot remove the services of sandboxes that went");
        }
    }

    /// Leaving the swarm: nothing of the balancer outlives meshd any more.
    pub fn release(&mut self) {
        if let Err(err) = self.lb.release() {
            tracing::warn!(error = %err, "cannot release the load balancer's pins");
        }
    }

    /// Whether a task's sandbox is tracked.
    #[cfg(test)]
    pub fn tracks(&self, task_id: &str) -> bool {
        self.sandboxes.contains_key(task_id)
    }

    /// The backend's name: "ebpf" or "ipvs".
    pub fn name(&self) -> &'static str {
        self.lb.name()
    }

    /// A task's sandbox as the load balancer names it.
    pub async fn sandbox_of(netns: &Netns) -> Result<Sandbox, NetlinkError> {
        Sandbox::of(netns).await
    }

    /// Starts balancing for a task's sandbox on `networks` (taking over what the kernel already
    /// balances for it); call [`Balancer::sync`] after.
    pub fn add_sandbox(&mut self, task_id: &str, sandbox: Sandbox, networks: Vec<String>) {
        if let Some(tracked) = self.sandboxes.get_mut(task_id)
            && tracked.sandbox.cookie == sandbox.cookie
        {
            tracked.networks = networks;
            return;
        }
        if let Some(old) = self.sandboxes.remove(task_id) {
            self.forget(&old.sandbox);
        }
        let programmed = self.lb.programmed(&sandbox);
        let adopted = if self.holding {
            programmed.clone()
        } else {
            Programmed::new()
        };
        if !programmed.is_empty() {
            tracing::debug!(task.id = %task_id, netns.cookie = sandbox.cookie, vips = programmed.len(), "sandbox's VIPs taken over");
        }
        self.sandboxes.insert(
            task_id.to_owned(),
            Tracked {
                sandbox,
                networks,
                programmed,
                adopted,
                emptied: BTreeMap::new(),
            },
        );
    }

    /// Removes every entry of a task's sandbox.
    pub fn remove_sandbox(&mut self, task_id: &str) {
        if let Some(tracked) = self.sandboxes.remove(task_id) {
            self.forget(&tracked.sandbox);
        }
    }

    fn forget(&mut self, sandbox: &Sandbox) {
        if let Err(err) = self.lb.remove_sandbox(sandbox) {
            tracing::warn!(netns.cookie = sandbox.cookie, error = %err, "cannot remove sandbox from the load balancer");
        }
    }

    /// Programs what the directory says, for every sandbox, changing only what differs; VIPs
    /// that lost their last task are emptied, and removed once [`EMPTY_GRACE`] has passed.
    pub fn sync(&mut self, directory: &Directory) {
        let now = Instant::now();
        for (task_id, tracked) in &mut self.sandboxes {
            let mut wanted: Programmed = directory.vips(&tracked.networks).into_iter().collect();
            hold(&mut wanted, &tracked.adopted);
            tracked.emptied.retain(|vip, _| !wanted.contains_key(vip));
            for vip in tracked.programmed.keys() {
                if wanted.contains_key(vip) {
                    continue;
                }
                let since = *tracked.emptied.entry(*vip).or_insert(now);
                if now.duration_since(since) < EMPTY_GRACE {
                    wanted.insert(*vip, Vec::new());
                }
            }
            for (vip, backends) in &wanted {
                if tracked.programmed.get(vip) == Some(backends) {
                    continue;
                }
                let started = Instant::now();
                let result = self.lb.set_vip(&tracked.sandbox, *vip, backends);
                if let Some(timings) = &self.timings {
                    timings.lb_update(self.lb.name(), "set_vip", started);
                }
                if let Err(err) = result {
                    tracing::warn!(task.id = %task_id, %vip, error = %err, "cannot program service VIP");
                }
            }
            for vip in tracked.programmed.keys() {
                if wanted.contains_key(vip) {
                    continue;
                }
                tracked.emptied.remove(vip);
                let started = Instant::now();
                let result = self.lb.remove_vip(&tracked.sandbox, *vip);
                if let Some(timings) = &self.timings {
                    timings.lb_update(self.lb.name(), "remove_vip", started);
                }
                if let Err(err) = result {
                    tracing::warn!(task.id = %task_id, %vip, error = %err, "cannot remove service VIP");
                }
            }
            tracked.programmed = wanted;
        }
    }

    /// Entries the load balancer holds in the kernel (none once every sandbox is gone).
    pub fn entries(&self) -> usize {
        self.lb.entries().unwrap_or(0)
    }
}

/// Adds to `wanted` every backend of `adopted` (what the kernel had at take-over), VIP by VIP:
/// until gossip has settled, a backend is never taken out, only added.
fn hold(wanted: &mut Programmed, adopted: &Programmed) {
    for (vip, had) in adopted {
        let backends = wanted.entry(*vip).or_default();
        backends.extend(had.iter().copied());
        backends.sort_unstable();
        backends.dedup();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::gossip::{Change, EndpointRecord};

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
    const OTHER_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    /// A load balancer that keeps what is set in memory, as the kernel would, shared with the
    /// test; it starts with what an earlier run left.
    #[derive(Clone, Default)]
    struct Kernel(Arc<Mutex<BTreeMap<u64, Programmed>>>);

    impl Kernel {
        fn of(&self, cookie: u64) -> Programmed {
            self.0
                .lock()
                .unwrap()
                .get(&cookie)
                .cloned()
                .unwrap_or_default()
        }
    }

    impl LoadBalancer for Kernel {
        fn name(&self) -> &'static str {
            "memory"
        }
        fn set_vip(
            &mut self,
            s: &Sandbox,
            vip: Ipv4Addr,
            b: &[Ipv4Addr],
        ) -> Result<(), BackendError> {
            self.0
                .lock()
                .unwrap()
                .entry(s.cookie)
                .or_default()
                .insert(vip, b.to_vec());
            Ok(())
        }
        fn remove_vip(&mut self, s: &Sandbox, vip: Ipv4Addr) -> Result<(), BackendError> {
            if let Some(vips) = self.0.lock().unwrap().get_mut(&s.cookie) {
                vips.remove(&vip);
            }
            Ok(())
        }
        fn remove_sandbox(&mut self, s: &Sandbox) -> Result<(), BackendError> {
            self.0.lock().unwrap().remove(&s.cookie);
            Ok(())
        }
        fn entries(&self) -> Result<usize, BackendError> {
            Ok(self.0.lock().unwrap().values().map(BTreeMap::len).sum())
        }
        fn programmed(&self, s: &Sandbox) -> Programmed {
            self.of(s.cookie)
        }
        fn retain_sandboxes(&mut self, keep: &BTreeSet<u64>) -> Result<(), BackendError> {
            self.0
                .lock()
                .unwrap()
                .retain(|cookie, _| keep.contains(cookie));
            Ok(())
        }
    }

    fn sandbox(cookie: u64) -> Sandbox {
        Sandbox {
            netns: Netns::from_path(format!("/proc/{cookie}/ns/net")),
            cookie,
        }
    }

    fn directory(tasks: &[u8]) -> Directory {
        let mut directory = Directory::default();
        for last in tasks {
            directory.apply(&Change::Upsert(EndpointRecord {
                network_id: "net".into(),
                task_id: format!("t{last}"),
                service_id: "s".into(),
                addr: ip(*last),
                mac: [2, 0, 0, 0, 0, *last],
                node_id: "n".into(),
                vtep: Ipv4Addr::new(192, 168, 0, 1),
                service_name: "web".into(),
                vip: Some(VIP),
                ingress_ports: Vec::new(),
                aliases: Vec::new(),
            }));
        }
        directory
    }

    fn restarted_with(kernel: &Kernel) -> Balancer {
        kernel.0.lock().unwrap().insert(
            7,
            BTreeMap::from([(VIP, vec![ip(2), ip(3)]), (OTHER_VIP, vec![ip(9)])]),
        );
        let mut balancer = Balancer::with(Box::new(kernel.clone()));
        balancer.add_sandbox("t1", sandbox(7), vec!["net".into()]);
        balancer
    }

    #[test]
    fn the_hold_only_adds() {
        let mut wanted = Programmed::from([(VIP, vec![ip(4), ip(2)])]);
        let adopted = Programmed::from([(VIP, vec![ip(2), ip(3)]), (OTHER_VIP, vec![ip(9)])]);
        hold(&mut wanted, &adopted);
        assert_eq!(
            wanted,
            Programmed::from([(VIP, vec![ip(2), ip(3), ip(4)]), (OTHER_VIP, vec![ip(9)])])
        );
    }

    #[test]
    fn until_released_no_backend_the_kernel_had_is_taken_out() {
        let kernel = Kernel::default();
        let mut balancer = restarted_with(&kernel);
        // Gossip has only heard of task 2 so far, and of a new task 4.
        balancer.sync(&directory(&[2, 4]));
        assert_eq!(
            kernel.of(7)[&VIP],
            [ip(2), ip(3), ip(4)],
            "3 is held, 4 added"
        );
        assert_eq!(kernel.of(7)[&OTHER_VIP], [ip(9)]);
        // Settled: the directory alone counts; a VIP it does not know is emptied (refusing)
        // for its grace, as when its last task goes.
        balancer.release_hold();
        balancer.sync(&directory(&[2, 4]));
        assert_eq!(kernel.of(7)[&VIP], [ip(2), ip(4)]);
        assert_eq!(kernel.of(7)[&OTHER_VIP], Vec::<Ipv4Addr>::new());
    }

    #[test]
    fn taking_over_rewrites_nothing_that_did_not_change() {
        let kernel = Kernel::default();
        let mut balancer = restarted_with(&kernel);
        kernel
            .0
            .lock()
            .unwrap()
            .get_mut(&7)
            .unwrap()
            .insert(VIP, vec![ip(3), ip(2)]);
        balancer.sync(&directory(&[2, 3]));
        // Programmed as taken over: the same backends are not set again (the unsorted marker
        // set above would have been replaced).
        assert_eq!(kernel.of(7)[&VIP], [ip(3), ip(2)]);
        // The same sandbox added again (the worker re-attaching it) keeps what it holds.
        balancer.add_sandbox("t1", sandbox(7), vec!["net".into()]);
        balancer.sync(&directory(&[2, 3]));
        assert_eq!(kernel.of(7)[&VIP], [ip(3), ip(2)]);
    }

    #[test]
    fn pruning_removes_only_sandboxes_nobody_took_over() {
        let kernel = Kernel::default();
        kernel
            .0
            .lock()
            .unwrap()
            .insert(8, BTreeMap::from([(VIP, vec![ip(2)])]));
        let mut balancer = restarted_with(&kernel);
        balancer.prune();
        assert!(kernel.of(8).is_empty(), "the task of sandbox 8 went");
        assert!(!kernel.of(7).is_empty());
        assert!(balancer.tracks("t1") && !balancer.tracks("t8"));
    }

    #[test]
    fn a_balancer_told_the_directory_is_whole_holds_nothing() {
        let kernel = Kernel::default();
        kernel
            .0
            .lock()
            .unwrap()
            .insert(7, BTreeMap::from([(VIP, vec![ip(2), ip(3)])]));
        let mut balancer = Balancer::with(Box::new(kernel.clone()));
        balancer.release_hold();
        balancer.add_sandbox("t1", sandbox(7), vec!["net".into()]);
        balancer.sync(&directory(&[2]));
        assert_eq!(kernel.of(7)[&VIP], [ip(2)]);
    }
}
