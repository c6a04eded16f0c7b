//! `cargo xtask deps`: the one list of Debian packages that building mesh, its tests, its demo and
//! its benchmarks need, installed before anything that needs them is compiled or run.

use anyhow::{Context, bail};
use mesh_tests::process::{cargo, run_shown};

use crate::step;

/// What the build, the tests, the demo and the benchmarks need beyond Rust, git and a C linker.
pub const PACKAGES: &[&str] = &[
    // The eBPF programs under ebpf/ are C, compiled by agent/build.rs; bpf_helpers.h is libbpf's.
    "clang-19",
    "libbpf-dev",
    // The container runtime every node drives, and the test image's only binary.
    "docker.io",
    "busybox-static",
    // Namespaces, links and NAT rules in the tests, the demo and the benchmarks; ps, kill, sysctl.
    "iproute2",
    "iptables",
    "procps",
    // The CA-rotation test checks node certificates with `openssl verify`.
    "openssl",
    // The overlay tests send full-size pings with DF set (busybox ping cannot set DF).
    "iputils-ping",
    // `cargo xtask bench overlay` measures throughput with iperf3.
    "iperf3",
    // The fuzz targets (CI runs them): libfuzzer-sys compiles libFuzzer, which is C++.
    "g++",
    // `cargo xtask test` checks packaging/meshd.service with `systemd-analyze verify` (which
    // needs no systemd running).
    "systemd",
    // `cargo xtask test` checks vagrant/Vagrantfile with `vagrant validate`, libvirt provider
    // included.
    "vagrant",
    "vagrant-libvirt",
];

/// `cargo xtask vm`: QEMU, and the decompressors of the kernel's modules.
pub const VM_PACKAGES: &[&str] = &["qemu-system-x86", "xz-utils", "zstd"];

/// `cargo xtask vagrant-box`: what makes the Debian root, its ext4 disk, the boot loader on it
/// and the qcow2 image.
pub const VAGRANT_BOX_PACKAGES: &[&str] = &[
    "debootstrap",
    "vagrant",
    "e2fsprogs",
    "extlinux",
    "qemu-utils",
];

/// `cargo xtask fresh-check`: what builds the throwaway Debian root on this machine.
pub const FRESH_CHECK_PACKAGES: &[&str] = &["debootstrap"];

/// The cargo subcommand `crate_name` (binary of the same name) at `version`, installed under
/// `root` first if it is missing or of another version; `rerun` is the command to run again
/// when crates.io does not answer.
pub fn cargo_tool(
    crate_name: &str,
    version: &str,
    root: &str,
    rerun: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let binary = std::path::Path::new(root).join("bin").join(crate_name);
    let installed = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if installed.split_whitespace().any(|w| w == version) {
        eprintln!("==> {crate_name} {version}: already installed in {root}");
    } else {
        let package = format!("{crate_name}@{version}");
        step::run(
            &format!("installing {crate_name} {version} into {root}"),
            &format!("check that crates.io answers, then run `{rerun}` again"),
            || {
                run_shown(
                    &cargo(),
                    &["install", "--locked", &package, "--root", root],
                    &[],
                )
            },
        )?;
    }
    std::fs::canonicalize(&binary).with_context(|| format!("{} is missing", binary.display()))
}

/// Installs whatever of [`PACKAGES`] is missing; does nothing (not even `apt-get update`) otherwise.
pub fn install() -> anyhow::Result<()> {
    install_packages(PACKAGES)
}

/// Installs whatever of `packages` is missing (`apt-get update` first), as root, as one step.
pub fn install_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("==> packages: {} already installed", packages.join(", "));
        return Ok(());
    }
    let what = format!("installing {}", missing.join(", "));
    step::run(
        &what,
        "check that Debian's package sources answer (`apt-get update`), then run \
         `cargo xtask deps` again",
        || {
            if !mesh_tests::skip::is_root() {
                bail!("installing packages needs root: run this as root");
            }
            let env = [("DEBIAN_FRONTEND", "noninteractive")];
            run_shown("apt-get", &["-q", "update"], &env)?;
            let mut args = vec!["-q", "install", "-y", "--no-install-recommends"];
            args.extend(&missing);
            run_shown("apt-get", &args, &env)
        },
    )
}

fn installed(package: &str) -> bool {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use serde_json::Value;

    /// Crates in xtask's build whose build scripts are known to need nothing but Rust (and, for
    /// mesh-tests, libc's static archive, which any Rust install links with).
    const BUILDS_WITH_RUST_ALONE: &[&str] = &[
        "anyhow",
        "getrandom",
        "libc",
        "mesh-tests",
        "parking_lot_core",
        "portable-atomic",
        "proc-macro2",
        "quote",
        "rustix",
        "serde",
        "serde_core",
        "serde_json",
        "zmij",
    ];

    /// xtask installs the system packages, so it must build before any of them is there: nothing
    /// it is built from may have a build script that needs a system tool (mesh-agent's needs
    /// clang). A new crate with a build script fails here until someone has checked it.
    #[test]
    fn xtask_builds_with_rust_alone() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
        let packages: HashMap<&str, &Value> = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| (p["id"].as_str().expect("id"), p))
            .collect();
        let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
            .as_array()
            .expect("resolve")
            .iter()
            .map(|n| (n["id"].as_str().expect("id"), n))
            .collect();
        let root = packages
            .iter()
            .find(|(_, p)| p["name"] == "xtask")
            .map(|(id, _)| *id)
            .expect("xtask is in the workspace");
        // Everything xtask's binary is built from: normal and build dependencies, transitively.
        let mut seen = BTreeSet::new();
        let mut todo = vec![root];
        while let Some(id) = todo.pop() {
            if !seen.insert(id) {
                continue;
            }
            for dep in nodes[id]["deps"].as_array().expect("deps") {
                let built = dep["dep_kinds"]
                    .as_array()
                    .expect("dep_kinds")
                    .iter()
                    .any(|k| k["kind"].is_null() || k["kind"] == "build");
                if built {
                    todo.push(dep["pkg"].as_str().expect("pkg"));
                }
            }
        }
        let names: BTreeSet<&str> = seen
            .iter()
            .map(|id| packages[id]["name"].as_str().expect("name"))
            .collect();
        assert!(!names.contains("mesh-agent"), "xtask depends on mesh-agent");
        let unchecked: Vec<&str> = seen
            .iter()
            .map(|id| packages[id])
            .filter(|p| {
                p["targets"].as_array().expect("targets").iter().any(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "custom-build"))
                })
            })
            .map(|p| p["name"].as_str().expect("name"))
            .filter(|name| !BUILDS_WITH_RUST_ALONE.contains(name))
            .collect();
        assert!(
            unchecked.is_empty(),
            "xtask is now built from crates with build scripts nobody has checked: {unchecked:?}; \
             make sure each needs nothing but Rust, then list it in BUILDS_WITH_RUST_ALONE"
        );
    }
}
