//! Re-adoption: a controller started for a task whose container an earlier agent left takes it
//! over, in the state the container is in (its health included).

use mesh_proto::TaskState;
use tracing::{debug, warn};

use super::{Controller, Known, now_nanos};
use crate::exec::{ContainerListing, Health};

impl Controller {
    /// Takes over a container an earlier agent left for this task.
    pub(super) async fn adopt(&mut self, known: Known) {
        let state = self.state();
        let listing = match known {
            Known::Found(listing) => Some(listing),
            Known::Absent => None,
            Known::Unknown if state > TaskState::Accepted && state < TaskState::Complete => {
                match self.executor.list().await {
                    Ok(all) => pick(all, &self.task.id),
                    Err(error) => {
                        warn!(task.id = %self.task.id, %error, "cannot list containers");
                        None
                    }
                }
            }
            Known::Unknown => return,
        };
        let Some(listing) = listing else {
            if matches!(state, TaskState::Starting | TaskState::Running) {
                self.container = None;
                let err = format!("No such container for task {}", self.task.id);
                self.fail(TaskState::Failed, "failed", err);
            }
            return;
        };
        let info = match self.executor.inspect(&listing.id).await {
            Ok(info) => info,
            Err(error) => {
                warn!(task.id = %self.task.id, container.id = %listing.id, %error, "cannot inspect container");
                return;
            }
        };
        debug!(task.id = %self.task.id, container.id = %info.id, running = info.running, "container adopted");
        self.container = Some(info.id);
        if info.running {
            self.pid = info.pid;
            self.launched = true;
            self.health = info.health;
            match info.health {
                // Still judged by its health check: the next step waits for the verdict.
                Some(Health::Starting) => self.set(TaskState::Starting, "starting"),
                // Failed at the next step, after its endpoints are withdrawn.
                Some(Health::Unhealthy) => {}
                None | Some(Health::Healthy) => self.set(TaskState::Running, "started"),
            }
        } else if info.started {
            self.exited(info.exit_code);
        }
        // A state the manager already had is not reported again, but the container it names is.
        let reported = self.status.container.as_ref().map(|c| &c.container_id);
        if reported != self.container.as_ref() {
            self.status.container = self.container_status();
            self.status.timestamp = now_nanos();
            self.reporter.report(self.status.clone());
        }
    }
}

/// The container of `task_id` among `all`, a running one first.
fn pick(all: Vec<ContainerListing>, task_id: &str) -> Option<ContainerListing> {
    all.into_iter()
        .filter(|c| c.task_id == task_id && !c.sandbox)
        .max_by_key(|c| c.running)
}
