//! Each node's `--secrets-dir`: a small tmpfs under the node's directory, mounted before the
//! node's dockerd starts. dockerd runs in a private mount namespace copied at its start (see
//! [`crate::dockerd`]), so only a mount made before then is one it shares with meshd; meshd finds
//! the directory on a tmpfs already and writes there. Unmounted when the node's dockerd is stopped
//! ([`crate::dockerd::stop`]), which every teardown path runs, a crashed test's cleanup included.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::process;

/// The secrets directory of the node whose files are under `node_dir`.
pub fn dir(node_dir: &Path) -> PathBuf {
    node_dir.join("secrets")
}

/// Whether `path` is a mount point in this process's mount namespace.
fn mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target.as_str()))
}

/// Mounts the node's tmpfs (16 MiB, mode 0700, nosuid, nodev, noexec); returns its path.
pub fn mount(node_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir(node_dir);
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    if !mounted(&path) {
        let target = path.display().to_string();
        process::run_sync(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=16m,mode=0700,nosuid,nodev,noexec",
                "tmpfs",
                &target,
            ],
        )?
        .ok("mount the secrets tmpfs")?;
    }
    Ok(path)
}

/// Unmounts the node's tmpfs if it is mounted. Never fails: teardown goes on.
pub fn unmount(node_dir: &Path) {
    let path = dir(node_dir);
    if mounted(&path) {
        let target = path.display().to_string();
        let _ = process::run_sync("umount", &["-l", &target]);
    }
}
