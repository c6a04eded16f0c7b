//! pid 1's mount namespace, where meshd keeps the mounts that must outlive it: the bind mounts of
//! its named network namespaces and the BPF file system its eBPF links and maps are pinned in.
//!
//! meshd may itself run in a mount namespace of its own (systemd's `PrivateMounts=` and friends
//! give every start a fresh one), which dies with it and takes its mounts along: a network
//! namespace held only by such a mount is destroyed with every device in it. So these mounts are
//! made from a throwaway thread that entered pid 1's mount namespace, and reached from anywhere
//! through `/proc/1/root`, which resolves in that namespace.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::{NetlinkError, sys};

/// Where pid 1's file system tree is seen from any mount namespace.
pub const HOST_ROOT: &str = "/proc/1/root";
/// pid 1's mount namespace.
const HOST_MOUNTS: &str = "/proc/1/ns/mnt";
/// Where the BPF file system is mounted, as everywhere.
const BPFFS: &str = "/sys/fs/bpf";

/// `path` (absolute, as pid 1 sees it) as reached from this process.
pub fn host_path(path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    Path::new(HOST_ROOT).join(relative)
}

/// Runs `f` on a fresh thread that entered pid 1's mount namespace and waits for it: the paths it
/// uses are pid 1's, and what it mounts stays mounted there. Blocking.
pub(crate) fn in_host_mounts<T, F>(op: &'static str, target: &str, f: F) -> Result<T, NetlinkError>
where
    T: Send,
    F: FnOnce() -> io::Result<T> + Send,
{
    let joined = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("mesh-mounts".into())
            .spawn_scoped(scope, move || -> io::Result<T> {
                enter_host_mounts()?;
                f()
            })
            .map(|thread| thread.join())
    });
    match joined {
        Ok(Ok(done)) => done.map_err(|e| NetlinkError::io(op, target, e)),
        Ok(Err(_panicked)) => Err(NetlinkError::Other {
            op,
            target: target.to_owned(),
            reason: "mount namespace thread panicked".into(),
        }),
        Err(e) => Err(NetlinkError::io(op, target, e)),
    }
}

/// Moves the calling thread into pid 1's mount namespace.
pub(super) fn enter_host_mounts() -> io::Result<()> {
    let ns = File::open(HOST_MOUNTS)?;
    sys::setns_mnt(&ns)
}

/// The BPF file system of pid 1's mount namespace, as reached from here, mounted first if it is
/// not (as systemd does at boot). Pins made there outlive meshd and its mount namespace.
pub fn host_bpffs() -> Result<PathBuf, NetlinkError> {
    const OP: &str = "mount bpffs";
    let reached = host_path(Path::new(BPFFS));
    if sys::fs_magic(&reached).ok() == Some(sys::BPF_FS_MAGIC) {
        return Ok(reached);
    }
    in_host_mounts(OP, BPFFS, || {
        let dir = Path::new(BPFFS);
        // Checked again in pid 1's namespace: another meshd may have mounted it meanwhile.
        if sys::fs_magic(dir).ok() == Some(sys::BPF_FS_MAGIC) {
            return Ok(());
        }
        std::fs::create_dir_all(dir)?;
        sys::mount_bpffs(dir)
    })?;
    tracing::info!(path = BPFFS, "BPF file system mounted");
    Ok(reached)
}

/// Detaches this process's own copies of the mounts of the named namespaces starting with
/// `prefix`, when it runs in a mount namespace of its own that copied them at its creation and
/// does not share mount events with pid 1's. Such a copy would keep a namespace alive (with its
/// VXLAN device holding its VNI) after meshd deletes it in pid 1's mount namespace. Returns how
/// many were detached.
pub fn release_private_copies(prefix: &str) -> usize {
    let own = std::fs::read_link("/proc/self/ns/mnt").ok();
    if own.is_none() || own == std::fs::read_link(HOST_MOUNTS).ok() {
        return 0;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut released = 0;
    for path in private_copies(&mountinfo, prefix) {
        match sys::umount_detach(&path) {
            Ok(()) => released += 1,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot detach a private copy of a namespace mount");
            }
        }
    }
    if released > 0 {
        tracing::info!(
            mounts = released,
            "private copies of namespace mounts detached"
        );
    }
    released
}

/// The mount points under `/run/netns` named `prefix…` in a `/proc/PID/mountinfo` text that do
/// not propagate (no `shared:` peer group): unmounting a shared one would unmount pid 1's too.
fn private_copies(mountinfo: &str, prefix: &str) -> Vec<PathBuf> {
    let under = Path::new(super::NETNS_DIR);
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, _) = line.split_once(" - ")?;
            let fields: Vec<&str> = mount.split(' ').collect();
            let point = Path::new(*fields.get(4)?);
            let name = point.strip_prefix(under).ok()?.to_str()?;
            let shared = fields.iter().skip(6).any(|f| f.starts_with("shared:"));
            (name.starts_with(prefix) && !name.contains('/') && !shared).then(|| point.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_copies_are_ours_and_do_not_propagate() {
        let info = "\
45 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
50 45 0:4 net:[4026532300] /run/netns/mabc-4096 rw shared:30 - nsfs nsfs rw
51 45 0:4 net:[4026532301] /run/netns/mabc-4097 rw - nsfs nsfs rw
52 45 0:4 net:[4026532302] /run/netns/mabc-4098 rw master:31 - nsfs nsfs rw
53 45 0:4 net:[4026532303] /run/netns/other-4096 rw - nsfs nsfs rw
";
        assert_eq!(
            private_copies(info, "mabc-"),
            [
                PathBuf::from("/run/netns/mabc-4097"),
                PathBuf::from("/run/netns/mabc-4098")
            ]
        );
        assert!(private_copies("", "mabc-").is_empty());
    }

    #[test]
    fn host_paths_go_through_pid_1s_root() {
        assert_eq!(
            host_path(Path::new("/run/netns/x")),
            PathBuf::from("/proc/1/root/run/netns/x")
        );
        assert_eq!(
            host_path(Path::new("sys/fs/bpf")),
            PathBuf::from("/proc/1/root/sys/fs/bpf")
        );
    }
}
