//! `cargo xtask deps`: the Debian packages the build and the privileged tests need.

use anyhow::bail;

use crate::run;

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
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("deps: all of {} already installed", PACKAGES.join(", "));
        return Ok(());
    }
    if !mesh_tests::skip::is_root() {
        bail!("installing {} needs root", missing.join(", "));
    }
    run("apt-get", &["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    eprintln!("+ apt-get {}", args.join(" "));
    let status = std::process::Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        bail!("apt-get install {} failed ({status})", missing.join(" "));
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}
