//! Named network namespaces under `/run/netns`, made the way `ip netns add` makes them — an empty
//! file with the namespace of a thread that just unshared bind-mounted onto it — but always in
//! pid 1's mount namespace (see [`crate::netlink::host`]), so that they outlive meshd's own.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use tracing::debug;

use super::on_own_thread;
use crate::netlink::host::enter_host_mounts;
use crate::netlink::sys;
use crate::netlink::{NETNS_DIR, NetlinkError, Netns, Result};

fn check_name(op: &'static str, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if valid {
        Ok(())
    } else {
        Err(NetlinkError::Other {
            op,
            target: name.into(),
            reason: "invalid namespace name".into(),
        })
    }
}

/// `/run/netns/NAME` as pid 1 sees it (the thread doing the work entered its mount namespace).
fn in_host(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub(super) async fn create(name: &str) -> Result<Netns> {
    const OP: &str = "create netns";
    check_name(OP, name)?;
    let ns = Netns::named(name);
    let path = in_host(name);
    on_own_thread(OP, ns.to_string(), move || {
        enter_host_mounts()?;
        let dir = Path::new(NETNS_DIR);
        fs::create_dir_all(dir)?;
        sys::make_shared_mount(dir)?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let made = sys::unshare_net()
            .and_then(|()| sys::bind_mount(Path::new("/proc/thread-self/ns/net"), &path));
        if made.is_err() {
            let _ = fs::remove_file(&path);
        }
        made
    })
    .await?;
    debug!(netns = %ns, "network namespace created");
    Ok(ns)
}

/// Unmounts and removes `/run/netns/NAME`; a leftover file whose mount is gone is removed too.
pub(super) async fn delete(name: &str) -> Result<()> {
    const OP: &str = "delete netns";
    check_name(OP, name)?;
    let ns = Netns::named(name);
    let path = in_host(name);
    on_own_thread(OP, ns.to_string(), move || {
        enter_host_mounts()?;
        if !path.exists() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        match sys::umount_detach(&path) {
            // Not a mount point: the namespace is already gone, only the file is left.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {}
            other => other?,
        }
        fs::remove_file(&path)
    })
    .await?;
    debug!(netns = %ns, "network namespace deleted");
    Ok(())
}

pub(super) async fn list(prefix: &str) -> Result<Vec<String>> {
    let dir = Netns::named_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetlinkError::io("list netns", dir.display(), e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names)
}
