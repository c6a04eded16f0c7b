//! The files a task's container gets from its secrets and configs. The data is held in memory
//! ([`held`]) and written, only when a task that uses it is prepared, into a directory of its own
//! on a tmpfs (`--secrets-dir`, default `/run/mesh/secrets`): `<dir>/<task id>/secrets/<target>`
//! for what lands under `/run/secrets/` (that directory is bind-mounted read-only at
//! `/run/secrets`, so the container cannot write there), `<dir>/<task id>/files/<n>` for each
//! file at another absolute target (bind-mounted read-only file by file). Owner and mode are the
//! reference's. The directory goes when the task ends (its container is never started again) or
//! its container is removed, and a start removes the directories of tasks it no longer holds; a running task's files live on the tmpfs, so they
//! outlive a meshd killed and restarted.

mod held;

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mesh_control::files::{FileKind, SECRETS_DIR};
use mesh_proto::{AssignmentsMessage, Task};
use tracing::{debug, warn};

pub use held::Held;

/// meshd's default `--secrets-dir`.
pub const DEFAULT_DIR: &str = "/run/mesh/secrets";

/// Why a task's files could not be laid out. One line, fit for the task's `err` field; never the
/// data.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("invalid task {task_id}: {reason}")]
    Invalid { task_id: String, reason: String },
    #[error("{kind} {name} ({id}) is not available on this node")]
    Missing {
        kind: &'static str,
        name: String,
        id: String,
    },
    #[error("cannot write the files of task {task_id} under {}: {source}", dir.display())]
    Io {
        task_id: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A read-only bind mount for a task's container: `source` as dockerd sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBind {
    pub source: PathBuf,
    pub target: String,
}

/// The node's secrets directory and the data it may write there.
pub struct TaskFiles {
    /// The directory as dockerd (and the anchoring mount namespace) sees it.
    dir: PathBuf,
    /// The same directory as reached from this process.
    reached: PathBuf,
    held: Mutex<Held>,
}

impl TaskFiles {
    /// `dir` as dockerd sees it, `reached` as meshd writes to it (they differ when meshd runs
    /// in a mount namespace of its own). Nothing is touched on disk.
    pub fn new(dir: PathBuf, reached: PathBuf) -> Self {
        Self {
            dir,
            reached,
            held: Mutex::new(Held::default()),
        }
    }

    /// The directory on a tmpfs: mounted first if it is on any other file system.
    pub fn open(dir: &Path) -> Result<Self, crate::netlink::NetlinkError> {
        let reached = crate::netlink::host::host_tmpfs(dir)?;
        Ok(Self::new(dir.to_path_buf(), reached))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in the secrets and configs of one whole assignment message.
    pub fn assign(&self, message: &AssignmentsMessage) {
        self.held().apply(message);
    }

    /// Writes the task's files and returns the bind mounts that place them; nothing is left
    /// behind on failure.
    pub fn write(&self, task: &Task) -> Result<Vec<FileBind>, FilesError> {
        let Some(container) = task.spec.as_ref().and_then(|s| s.container.as_ref()) else {
            return Ok(Vec::new());
        };
        if container.secrets.is_empty() && container.configs.is_empty() {
            return Ok(Vec::new());
        }
        let invalid = |reason: String| FilesError::Invalid {
            task_id: task.id.clone(),
            reason,
        };
        check_task_id(&task.id).map_err(invalid)?;
        let files = mesh_control::files::files(container).map_err(invalid)?;
        let held = self.held();
        let mut contents = Vec::with_capacity(files.len());
        for file in &files {
            let data = match file.kind {
                FileKind::Secret => held.secret(&file.id),
                FileKind::Config => held.config(&file.id),
            };
            let data = data.ok_or_else(|| FilesError::Missing {
                kind: file.kind.as_str(),
                name: file.name.clone(),
                id: file.id.clone(),
            })?;
            contents.push(data.to_vec());
        }
        drop(held);
        let task_dir = self.reached.join(&task.id);
        let io = |source| FilesError::Io {
            task_id: task.id.clone(),
            dir: self.dir.clone(),
            source,
        };
        self.remove(&task.id);
        let written = lay_out(&task_dir, &files, &contents).map_err(io);
        if written.is_err() {
            self.remove(&task.id);
        }
        let seen = self.dir.join(&task.id);
        let mut binds = Vec::new();
        if files.iter().any(|f| f.in_secrets_dir()) {
            binds.push(FileBind {
                source: seen.join("secrets"),
                target: SECRETS_DIR.to_string(),
            });
        }
        for (index, file) in files.iter().enumerate() {
            if !file.in_secrets_dir() {
                binds.push(FileBind {
                    source: seen.join("files").join(index.to_string()),
                    target: file.path.clone(),
                });
            }
        }
        written?;
        debug!(task.id = %task.id, files = files.len(), "task files written");
        Ok(binds)
    }

    /// Removes the task's directory, if it has one.
    pub fn remove(&self, task_id: &str) {
        if check_task_id(task_id).is_err() {
            return;
        }
        match fs::remove_dir_all(self.reached.join(task_id)) {
            Ok(()) => debug!(task.id = %task_id, "task files removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => warn!(task.id = %task_id, %error, "cannot remove task files"),
        }
    }

    /// Removes the directories of every task but `known`'s (after a restart has settled with
    /// Docker).
    pub fn retain(&self, known: &HashSet<String>) {
        let Ok(entries) = fs::read_dir(&self.reached) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                self.remove(&name);
            }
        }
    }
}

/// A task id is a file name here: letters and digits only.
fn check_task_id(id: &str) -> Result<(), String> {
    if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(format!("task id {id:?} is not a valid file name"))
    }
}

/// Writes each file with its owner and mode under `task_dir` (made 0700; the secrets tree 0755,
/// so that a container user other than root reaches the files its mode lets it read).
fn lay_out(
    task_dir: &Path,
    files: &[mesh_control::files::File],
    contents: &[Vec<u8>],
) -> std::io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(task_dir)?;
    let open_dir = |path: &Path| {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
    };
    for (index, (file, data)) in files.iter().zip(contents).enumerate() {
        let path = match file
            .path
            .strip_prefix(SECRETS_DIR)
            .and_then(|p| p.strip_prefix('/'))
        {
            Some(relative) => task_dir.join("secrets").join(relative),
            None => task_dir.join("files").join(index.to_string()),
        };
        if let Some(parent) = path.parent() {
            open_dir(parent)?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        out.write_all(data)?;
        // The mode while meshd still owns the file (changing it later would need CAP_FOWNER,
        // which the unit does not keep), then the owner (CAP_CHOWN).
        out.set_permissions(fs::Permissions::from_mode(file.mode))?;
        std::os::unix::fs::fchown(&out, Some(file.uid), Some(file.gid))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
