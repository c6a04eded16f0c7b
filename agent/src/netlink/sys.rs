//! The only `unsafe` in mesh: a few Linux syscalls that no safe dependency offers, each wrapped in a
//! safe function. They act on the calling thread only, so callers run them on a dedicated thread.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Moves the calling thread into the network namespace `ns` (an nsfs file, e.g. `/run/netns/x`).
pub(super) fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open file descriptor that outlives the call; setns(2) only changes the
    // calling thread's namespace and reads no memory of ours.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling thread into a new, empty network namespace.
pub(super) fn unshare_net() -> io::Result<()> {
    // SAFETY: unshare(2) takes no pointers and only affects the calling thread.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The magic number of the file system holding namespace files (`/proc/PID/ns/*` and their bind
/// mounts): a file under `/run/netns` without it is a leftover whose mount went away.
pub(crate) const NSFS_MAGIC: i64 = 0x6e73_6673;
/// The magic number of the BPF file system, where pinned programs, links and maps live.
pub(crate) const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Moves the calling thread into the mount namespace `ns` (e.g. `/proc/1/ns/mnt`). A thread that
/// shares its file system attributes with others cannot change mount namespace, so it first takes
/// its own copy of them (`unshare(CLONE_FS)`): only this thread sees the change.
pub(super) fn setns_mnt(ns: &File) -> io::Result<()> {
    // SAFETY: unshare(2) takes no pointers and only affects the calling thread.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ns` is an open file descriptor that outlives the call; setns(2) only changes the
    // calling thread's namespace and reads no memory of ours.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The magic number of the file system `path` lies on (`statfs(2)`'s `f_type`).
pub(crate) fn fs_magic(path: &Path) -> io::Result<i64> {
    let path = c_path(path)?;
    // SAFETY: an all-zero `statfs` is a valid value of a plain C struct.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `buf` a live local of the right type for the call.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut buf) };
    if rc == 0 {
        Ok(buf.f_type)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The magic number of the file system an open file lies on (`fstatfs(2)`'s `f_type`).
pub(crate) fn file_fs_magic(file: &File) -> io::Result<i64> {
    // SAFETY: an all-zero `statfs` is a valid value of a plain C struct.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `file` is an open descriptor for the whole call and `buf` a live local of the right
    // type.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut buf) };
    if rc == 0 {
        Ok(buf.f_type)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Calls mount(2) with no data.
fn mount(
    src: &CString,
    dst: &CString,
    fstype: Option<&CString>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let fstype = fstype.map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: the strings are NUL-terminated and live until mount(2) returns; `fstype` is either
    // one of them or null, which the flags used here allow; no data is passed.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fstype, flags, std::ptr::null()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `statfs(2)`'s magic numbers of the file systems that keep files in memory only.
pub(crate) const TMPFS_MAGIC: i64 = 0x0102_1994;
pub(crate) const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Mounts a tmpfs at `dst` (an existing directory) with `options` (e.g. `mode=0700`),
/// `nosuid,nodev,noexec`, as `mount -t tmpfs -o … tmpfs DST` does.
pub(super) fn mount_tmpfs(dst: &Path, options: &str) -> io::Result<()> {
    let source = c_path(Path::new("tmpfs"))?;
    let dst = c_path(dst)?;
    let data = CString::new(options).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: the strings are NUL-terminated and live until mount(2) returns; the data is a
    // NUL-terminated option string, as tmpfs reads it.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            dst.as_ptr(),
            source.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Mounts a BPF file system at `dst` (an existing directory), as `mount -t bpf bpf DST` does.
pub(super) fn mount_bpffs(dst: &Path) -> io::Result<()> {
    let none = c_path(Path::new("bpf"))?;
    mount(&none, &c_path(dst)?, Some(&none), 0)
}

/// Makes `path` a mount point whose mounts propagate to the mount namespaces that copy it, as
/// `ip netns add` does with `/run/netns`: made shared, or, when it is no mount point yet, first
/// bind-mounted onto itself.
pub(super) fn make_shared_mount(path: &Path) -> io::Result<()> {
    let dst = c_path(path)?;
    let none = c_path(Path::new("none"))?;
    match mount(&none, &dst, None, libc::MS_SHARED | libc::MS_REC) {
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            mount(&dst, &dst, None, libc::MS_BIND | libc::MS_REC)?;
            mount(&none, &dst, None, libc::MS_SHARED | libc::MS_REC)
        }
        other => other,
    }
}

/// Detaches the mount at `path` (`umount -l`).
pub(super) fn umount_detach(path: &Path) -> io::Result<()> {
    let target = c_path(path)?;
    // SAFETY: `target` is NUL-terminated and lives until umount2(2) returns.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bind-mounts `src` onto `dst` (both existing paths), as `mount --bind` does.
pub(super) fn bind_mount(src: &Path, dst: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (src, dst) = (c(src)?, c(dst)?);
    // SAFETY: both strings are NUL-terminated and live until mount(2) returns; a bind mount takes
    // no filesystem type and no data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The cookie of the calling thread's network namespace, read from a socket made for the purpose:
/// a 64-bit number the kernel never reuses while it runs, the same one eBPF's
/// `bpf_get_netns_cookie` gives for a socket of that namespace.
pub(super) fn netns_cookie() -> io::Result<u64> {
    // Not in the libc crate for x86_64 yet; the value is the same on every architecture but a few.
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: socket(2) takes no pointers; the descriptor it returns is owned by `socket` below and
    // closed when it drops.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we just opened and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are live locals for the whole call, and `len` holds the size of
    // the buffer `cookie` provides; the kernel writes at most that many bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<u64>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("SO_NETNS_COOKIE returned {len} bytes"),
        ));
    }
    Ok(cookie)
}
