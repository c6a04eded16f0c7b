//! `cargo xtask deps`: the Debian packages the build and the privileged tests need.

use anyhow::bail;

use crate::{run, run_with_env};

/// Debian packages: the container runtime, the test image's binary, the eBPF toolchain, network tools.
const PACKAGES: &[&str] = &[
    "docker.io",
    "busybox-static",
    "clang-19",
    "libbpf-dev",
    "iproute2",
    "iptables",
    // The CA-rotation test checks node certificates with `openssl verify`.
    "openssl",
    // The overlay tests send full-size pings with DF set (busybox ping cannot set DF).
    "iputils-ping",
    // `cargo xtask bench overlay` measures throughput with iperf3.
    "iperf3",
];

/// Installs whatever of [`PACKAGES`] is missing; does nothing (not even `apt-get update`) otherwise.
pub fn install() -> anyhow::Result<()> {
    install_packages(PACKAGES)
}

/// Installs whatever of `packages` is missing (`apt-get update` first), as root.
pub fn install_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("deps: all of {} already installed", packages.join(", "));
        return Ok(());
    }
    if !mesh_tests::skip::is_root() {
        bail!("installing {} needs root", missing.join(", "));
    }
    run("apt-get", &["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    run_with_env("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])
}

fn installed(package: &str) -> bool {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}
