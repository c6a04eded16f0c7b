//! The offline busybox image: built from busybox-static with `docker import`, copied between daemons
//! with `docker save | docker load` so that every node holds the same image id. Besides busybox it
//! holds [`UDP_HOSTNAME`], a UDP server and client (see [`udp`]).

pub mod udp;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::dockerd::Dockerd;
use crate::process::run_sync_ok;

/// The image reference every test service runs.
pub const BUSYBOX_IMAGE: &str = "mesh/busybox:latest";

/// Where the image holds `udp-hostname` (on its `PATH`): `udp-hostname serve PORT` answers every
/// datagram with the container's hostname, `udp-hostname ask HOST:PORT` prints the answer.
pub const UDP_HOSTNAME: &str = "/bin/udp-hostname";

/// The statically linked `udp-hostname` that `build.rs` compiled from `src/image/udp.rs`.
const UDP_HOSTNAME_BUILT: &str = concat!(env!("OUT_DIR"), "/udp-hostname");

/// Where busybox-static installs its binary (usrmerge puts it in /usr/bin).
const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// The statically linked busybox binary, if installed; a dynamic one cannot run in a bare image.
pub fn busybox_binary() -> Option<PathBuf> {
    BUSYBOX_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| is_static(p))
}

fn is_static(path: &Path) -> bool {
    let mut head = vec![0u8; 8192];
    let Ok(n) = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)) else {
        return false;
    };
    // A dynamic executable names its loader (PT_INTERP) near the start of the file.
    n > 4 && head.starts_with(b"\x7fELF") && !head[..n].windows(7).any(|w| w == b"ld-linu")
}

/// Builds the image's root filesystem as a tarball in `dir`: `/bin/busybox`, one link per applet,
/// and [`UDP_HOSTNAME`].
pub fn build_rootfs(dir: &Path) -> anyhow::Result<PathBuf> {
    let busybox = busybox_binary().context("busybox-static is not installed")?;
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    std::fs::copy(&busybox, bin.join("busybox")).context("cannot copy busybox")?;
    let applets = run_sync_ok(&busybox.display().to_string(), &["--list"])?;
    // `--list` names busybox itself: linking it would replace the binary with a link to itself.
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .with_context(|| format!("cannot link applet {applet}"))?;
    }
    let udp = dir
        .join("rootfs")
        .join(UDP_HOSTNAME.trim_start_matches('/'));
    std::fs::copy(UDP_HOSTNAME_BUILT, &udp)
        .with_context(|| format!("cannot copy {UDP_HOSTNAME_BUILT}"))?;
    let tar = dir.join("busybox-rootfs.tar");
    let rootfs = dir.join("rootfs").display().to_string();
    run_sync_ok(
        "tar",
        &["-C", &rootfs, "-cf", &tar.display().to_string(), "."],
    )?;
    Ok(tar)
}

/// Imports the image into `daemon` and saves it to `dir/busybox-image.tar` for [`load`]. Returns the
/// image id.
pub async fn import(daemon: &Dockerd, dir: &Path) -> anyhow::Result<String> {
    let rootfs = build_rootfs(dir)?.display().to_string();
    daemon
        .docker(&[
            "import",
            "--change",
            "ENV PATH=/bin",
            &rootfs,
            BUSYBOX_IMAGE,
        ])
        .await?
        .ok("docker import")?;
    let saved = saved_path(dir);
    daemon
        .docker(&["save", "-o", &saved, BUSYBOX_IMAGE])
        .await?
        .ok("docker save")?;
    image_id(daemon).await
}

/// Loads the image [`import`] saved in `dir` into `daemon`; returns its id, the same as at import.
pub async fn load(daemon: &Dockerd, dir: &Path) -> anyhow::Result<String> {
    daemon
        .docker(&["load", "-i", &saved_path(dir)])
        .await?
        .ok("docker load")?;
    image_id(daemon).await
}

/// The file in a cluster's directory that [`import`] saves the image to and [`load`] loads it from.
pub const SAVED_TAR: &str = "busybox-image.tar";

fn saved_path(dir: &Path) -> String {
    dir.join(SAVED_TAR).display().to_string()
}

async fn image_id(daemon: &Dockerd) -> anyhow::Result<String> {
    let out = daemon
        .docker(&["image", "inspect", "--format", "{{.Id}}", BUSYBOX_IMAGE])
        .await?;
    Ok(out.ok("docker image inspect")?.stdout.trim().to_owned())
}
