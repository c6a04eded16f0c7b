//! What carries this node's data plane across a restart of meshd, kept in the state dir: the
//! endpoint table (see [`Seed`]) and the sandboxes of the tasks attached here
//! (`sandboxes.json`). With them, the next start answers DNS and balances VIPs for the running
//! tasks before it has even reached the managers, and holds on to what it knew until gossip has
//! settled.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::settle::{self, Seed};
use crate::gossip::EndpointRecord;

const SANDBOXES: &str = "sandboxes.json";

/// A task's sandbox as attached here: enough to find it again after a restart and to tell that
/// it is still the same network namespace (a pid may be reused; a netns cookie is not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SavedSandbox {
    pub pid: u32,
    pub cookie: u64,
    pub networks: Vec<String>,
}

pub(super) struct Continuity {
    state_dir: PathBuf,
    seed: Mutex<Seed>,
    /// The endpoint table changed since it was last saved.
    dirty: AtomicBool,
    sandboxes: Mutex<BTreeMap<String, SavedSandbox>>,
    /// Tasks whose sandbox was brought back at start and that no controller attached since.
    restored: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Continuity {
    /// What an earlier run left in `state_dir`.
    pub(super) fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(SANDBOXES);
        let sandboxes = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            state_dir: state_dir.to_owned(),
            seed: Mutex::new(Seed::load(state_dir)),
            dirty: AtomicBool::new(false),
            sandboxes: Mutex::new(sandboxes),
            restored: Mutex::new(HashSet::new()),
        }
    }

    /// The saved endpoint records gossip has not spoken about yet.
    pub(super) fn seed(&self) -> MutexGuard<'_, Seed> {
        lock(&self.seed)
    }

    /// The sandboxes saved by an earlier run.
    pub(super) fn saved_sandboxes(&self) -> BTreeMap<String, SavedSandbox> {
        lock(&self.sandboxes).clone()
    }

    /// What the data plane acts on: see [`Seed::view`].
    pub(super) fn view(&self, gossip: Vec<EndpointRecord>) -> Vec<EndpointRecord> {
        self.seed().view(gossip)
    }

    pub(super) fn is_settled(&self) -> bool {
        self.seed().is_settled()
    }

    /// The endpoint table changed: save it at the next [`Continuity::save_endpoints`].
    pub(super) fn touch(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Saves `view` if the table changed since the last save.
    pub(super) fn save_endpoints(&self, view: impl FnOnce() -> Vec<EndpointRecord>) {
        if self.dirty.swap(false, Ordering::Relaxed) {
            settle::save(&self.state_dir, &view());
        }
    }

    /// Records a task's sandbox as attached here.
    pub(super) fn attached(&self, task_id: &str, sandbox: SavedSandbox) {
        lock(&self.restored).remove(task_id);
        let mut sandboxes = lock(&self.sandboxes);
        if sandboxes.get(task_id) != Some(&sandbox) {
            sandboxes.insert(task_id.to_owned(), sandbox);
            self.save_sandboxes(&sandboxes);
        }
    }

    /// Forgets a task's sandbox (detached).
    pub(super) fn detached(&self, task_id: &str) {
        lock(&self.restored).remove(task_id);
        let mut sandboxes = lock(&self.sandboxes);
        if sandboxes.remove(task_id).is_some() {
            self.save_sandboxes(&sandboxes);
        }
    }

    /// Marks a sandbox as brought back at start.
    pub(super) fn restored(&self, task_id: &str) {
        lock(&self.restored).insert(task_id.to_owned());
    }

    /// The sandboxes brought back at start that no controller attached since (their tasks are
    /// not this node's any more), forgotten.
    pub(super) fn take_unclaimed(&self) -> Vec<String> {
        let unclaimed: Vec<String> = lock(&self.restored).drain().collect();
        let mut sandboxes = lock(&self.sandboxes);
        for task in &unclaimed {
            sandboxes.remove(task);
        }
        self.save_sandboxes(&sandboxes);
        unclaimed
    }

    fn save_sandboxes(&self, sandboxes: &BTreeMap<String, SavedSandbox>) {
        let path = self.state_dir.join(SANDBOXES);
        let write = || -> std::io::Result<()> {
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(sandboxes)?)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(err) = write() {
            tracing::warn!(path = %path.display(), error = %err, "cannot save sandboxes");
        }
    }

    /// Forgets everything saved (leaving the swarm).
    pub(super) fn clear(&self) {
        *self.seed() = Seed::default();
        lock(&self.sandboxes).clear();
        lock(&self.restored).clear();
        settle::remove(&self.state_dir);
        let _ = std::fs::remove_file(self.state_dir.join(SANDBOXES));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(pid: u32) -> SavedSandbox {
        SavedSandbox {
            pid,
            cookie: u64::from(pid) * 10,
            networks: vec!["net".into()],
        }
    }

    #[test]
    fn sandboxes_are_saved_for_the_next_start_and_unclaimed_ones_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let first = Continuity::load(dir.path());
        first.attached("a", saved(100));
        first.attached("b", saved(200));
        first.detached("b");
        first.attached("c", saved(300));
        drop(first);

        let second = Continuity::load(dir.path());
        let saved_here = second.saved_sandboxes();
        assert_eq!(saved_here.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(saved_here["a"], saved(100));
        second.restored("a");
        second.restored("c");
        second.attached("a", saved(100));
        assert_eq!(second.take_unclaimed(), ["c"]);
        assert_eq!(
            Continuity::load(dir.path())
                .saved_sandboxes()
                .keys()
                .collect::<Vec<_>>(),
            ["a"]
        );
        second.clear();
        assert!(Continuity::load(dir.path()).saved_sandboxes().is_empty());
    }
}
