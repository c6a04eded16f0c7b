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
