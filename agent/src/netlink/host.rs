//! pid 1's mount namespace, where meshd keeps the mounts that must outlive it: the bind mounts of
//! its named network namespaces and the BPF file system its eBPF links and maps are pinned in.
//!
//! meshd may itself run in a mount namespace of its own (systemd's `PrivateMounts=` and friends
//! give every start a fresh one), which dies with it and takes its mounts along: a network
//! namespace held only by such a mount is destroyed with every device in it. So these mounts are
//! made from a throwaway thread that entered pid 1's mount namespace, and reached from anywhere
//! through `/proc/1/root`, which resolves in that namespace. Where pid 1 is hidden from meshd
//! (some sandboxes deny even root access to it), the topmost ancestor's mount namespace it may
//! enter takes its place, held open for as long as meshd runs.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{NetlinkError, sys};

/// pid 1's mount namespace and root.
const PID1_MOUNTS: &str = "/proc/1/ns/mnt";
const PID1_ROOT: &str = "/proc/1/root";
/// Where the BPF file system is mounted, as everywhere.
const BPFFS: &str = "/sys/fs/bpf";

/// The mount namespace meshd's lasting mounts go to, held open for the life of the process.
struct Anchor {
    /// Its root as reached from this process.
    root: PathBuf,
    /// The namespace, to enter; `None` when it is this process's own (nothing else reachable).
    mounts: Option<File>,
    /// Keeps the root reachable through `/proc/self/fd` when it is not pid 1's.
    _root_dir: Option<File>,
}

/// pid 1's mount namespace where this process may enter it (as root normally may); otherwise
/// (pid 1 hidden from it, as in some sandboxes) the topmost ancestor's it may enter, held open;
/// otherwise its own.
fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        if let Ok(mounts) = File::open(PID1_MOUNTS) {
            tracing::debug!("lasting mounts go to pid 1's mount namespace");
            return Anchor {
                root: PathBuf::from(PID1_ROOT),
                mounts: Some(mounts),
                _root_dir: None,
            };
        }
        for pid in ancestors().into_iter().rev() {
            let (Ok(mounts), Ok(root)) = (
                File::open(format!("/proc/{pid}/ns/mnt")),
                File::open(format!("/proc/{pid}/root")),
            ) else {
                continue;
            };
            tracing::info!(
                pid,
                "pid 1's mount namespace is hidden: lasting mounts go to its topmost ancestor's"
            );
            return Anchor {
                root: PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd())),
                mounts: Some(mounts),
                _root_dir: Some(root),
            };
        }
        tracing::warn!("no mount namespace but meshd's own to keep namespaces and pins in");
        Anchor {
            root: PathBuf::from("/"),
            mounts: None,
            _root_dir: None,
        }
    })
}

/// This process's ancestors, parent first.
fn ancestors() -> Vec<u32> {
    let mut found = Vec::new();
    let mut pid = std::process::id();
    while let Some(parent) = parent_of(pid).filter(|p| *p > 1 && !found.contains(p)) {
        found.push(parent);
        pid = parent;
    }
    found
}

fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// `path` (absolute, as the anchoring mount namespace sees it) as reached from this process.
pub fn host_path(path: &Path) -> PathBuf {
    join_root(&anchor().root, path)
}

fn join_root(root: &Path, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    root.join(relative)
}

/// Runs `f` on a fresh thread that entered the anchoring mount namespace and waits for it: the
/// paths it uses are that namespace's, and what it mounts stays mounted there. Blocking.
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

/// Moves the calling thread into the anchoring mount namespace (nothing to do when it is this
/// process's own).
pub(super) fn enter_host_mounts() -> io::Result<()> {
    match &anchor().mounts {
        Some(ns) => sys::setns_mnt(ns),
        None => Ok(()),
    }
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

/// Makes `dir` (absolute, as the anchoring mount namespace sees it) a directory on a file
/// system that keeps its files in memory: left as it is when it already is one (a tmpfs or
/// ramfs), otherwise given a tmpfs of mode 0700, `nosuid,nodev,noexec`, mounted in the anchoring
/// namespace so that it outlives meshd and dockerd sees it. Returns `dir` as reached from here.
pub fn host_tmpfs(dir: &Path) -> Result<PathBuf, NetlinkError> {
    const OP: &str = "mount tmpfs";
    let reached = host_path(dir);
    if in_memory(&reached) {
        return Ok(reached);
    }
    let target = dir.display().to_string();
    in_host_mounts(OP, &target, || {
        std::fs::create_dir_all(dir)?;
        if in_memory(dir) {
            return Ok(());
        }
        sys::mount_tmpfs(dir, "mode=0700")
    })?;
    tracing::info!(path = %dir.display(), "tmpfs mounted for secrets and configs");
    Ok(reached)
}

/// Whether `path` lies on a tmpfs or ramfs.
pub fn in_memory(path: &Path) -> bool {
    matches!(
        sys::fs_magic(path),
        Ok(sys::TMPFS_MAGIC) | Ok(sys::RAMFS_MAGIC)
    )
}

/// Detaches this process's own copies of the mounts of the named namespaces starting with
/// `prefix`, when it runs in a mount namespace of its own that copied them at its creation and
/// does not share mount events with pid 1's. Such a copy would keep a namespace alive (with its
/// VXLAN device holding its VNI) after meshd deletes it in pid 1's mount namespace. Returns how
/// many were detached.
pub fn release_private_copies(prefix: &str) -> usize {
    let Some(anchor) = &anchor().mounts else {
        return 0;
    };
    let own = std::fs::metadata("/proc/self/ns/mnt").ok();
    let theirs = anchor.metadata().ok();
    let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        a.ino() == b.ino() && a.dev() == b.dev()
    };
    if own.is_none()
        || own
            .as_ref()
            .zip(theirs.as_ref())
            .is_some_and(|(a, b)| same(a, b))
    {
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
    fn host_paths_go_through_the_anchors_root() {
        let root = Path::new(PID1_ROOT);
        assert_eq!(
            join_root(root, Path::new("/run/netns/x")),
            PathBuf::from("/proc/1/root/run/netns/x")
        );
        assert_eq!(
            join_root(root, Path::new("sys/fs/bpf")),
            PathBuf::from("/proc/1/root/sys/fs/bpf")
        );
        assert!(host_path(Path::new("/run/netns/x")).ends_with("run/netns/x"));
    }

    #[test]
    fn ancestors_lead_up_from_the_parent() {
        let found = ancestors();
        assert_eq!(found.first().copied(), parent_of(std::process::id()));
        assert!(!found.contains(&1));
    }
}
