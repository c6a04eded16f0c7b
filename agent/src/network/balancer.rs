//! Service VIPs for this node's tasks: for each local sandbox, every service with a virtual IP on
//! a network the task shares is programmed into the node's load balancer (any port of the VIP,
//! TCP and UDP, to the same port of one of the service's running tasks), whichever backend it is
//! ([`LoadBalancer`]: eBPF or IPVS). Re-synced whenever the endpoint table changes, so a task that
//! stops leaves every sandbox's backends at once.
//!
//! A VIP whose last task went stays programmed without backends for [`EMPTY_GRACE`], so that a
//! service scaled to 0 refuses connections at once instead of leaving them to time out; then it
//! goes too (the service may have been removed).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::dns::Directory;
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
    /// VIPs programmed without backends, since when.
    emptied: BTreeMap<Ipv4Addr, Instant>,
}

/// The load balancer and what it holds for this node's sandboxes.
pub struct Balancer {
    lb: Box<dyn LoadBalancer>,
    sandboxes: HashMap<String, Tracked>,
}

impl Balancer {
    /// Starts the backend `choice` stands for on this kernel (`auto`: IPVS where the kernel has
    /// it, eBPF otherwise).
    pub fn open(choice: LbBackend) -> Result<Self, BackendError> {
        let backend = choice.resolve(std::path::Path::new(IPVS_PROC))?;
        Ok(Self::with(backend.open()?))
    }

    /// Balances through `lb`.
    pub fn with(lb: Box<dyn LoadBalancer>) -> Self {
        Self {
            lb,
            sandboxes: HashMap::new(),
        }
    }

    /// The backend's name: "ebpf" or "ipvs".
    pub fn name(&self) -> &'static str {
        self.lb.name()
    }

    /// A task's sandbox as the load balancer names it.
    pub async fn sandbox_of(netns: &Netns) -> Result<Sandbox, NetlinkError> {
        Sandbox::of(netns).await
    }

    /// Starts balancing for a task's sandbox on `networks`; call [`Balancer::sync`] after.
    pub fn add_sandbox(&mut self, task_id: &str, sandbox: Sandbox, networks: Vec<String>) {
        if let Some(old) = self.sandboxes.remove(task_id)
            && old.sandbox.cookie != sandbox.cookie
        {
            self.forget(&old.sandbox);
        }
        self.sandboxes.insert(
            task_id.to_owned(),
            Tracked {
                sandbox,
                networks,
                programmed: Programmed::new(),
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
                if let Err(err) = self.lb.set_vip(&tracked.sandbox, *vip, backends) {
                    tracing::warn!(task.id = %task_id, %vip, error = %err, "cannot program service VIP");
                }
            }
            for vip in tracked.programmed.keys() {
                if wanted.contains_key(vip) {
                    continue;
                }
                tracked.emptied.remove(vip);
                if let Err(err) = self.lb.remove_vip(&tracked.sandbox, *vip) {
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
