//! `cargo xtask dist`: mesh's Debian package, `target/dist/mesh_<version>_<arch>.deb`, holding
//! meshd and meshctl (release builds), the systemd unit (`packaging/meshd.service`), the
//! commented example `/etc/mesh/meshd.toml` (a conffile), man pages and bash, zsh and fish
//! completions. Everything but the binaries and the unit is generated from the clap definitions by
//! the `mesh-docs` program of the agent crate, run with `cargo run`, so that xtask keeps building
//! with Rust alone.
//!
//! The package is made by cargo-deb (its `[package.metadata.deb]` is in `agent/Cargo.toml`),
//! installed by this module at a pinned version under `target/dist-tools/`; cargo-deb writes the
//! debhelper-style snippets that enable the unit on install (`deb-systemd-helper`) and start,
//! stop and restart it (`deb-systemd-invoke`) where systemd runs, into the maintainer scripts
//! under `packaging/debian/`, which add what is mesh's own: purge removes /var/lib/mesh and
//! /etc/mesh.
//!
//! `--check` then proves the package on Debian 12: in a throwaway copy of the debootstrap root
//! `cargo xtask fresh-check` caches, with docker.io, iproute2 and iptables installed from the
//! mirror, `dpkg -i` installs and enables it, `apt-get remove` takes the binaries and keeps
//! /var/lib/mesh and the config, `dpkg --purge` removes both. There is no systemd as pid 1 there
//! (nor here), so starting and stopping are skipped by the snippets; the check says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use mesh_tests::process::{cargo, run_shown, run_sync_ok};

use crate::{deps, fresh, step};

/// The cargo-deb release mesh is packaged with.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Where cargo-deb is installed; where the package, the generated files and the check's root go.
const TOOLS: &str = "target/dist-tools";
const DIR: &str = "target/dist";
/// The systemd unit, as shipped.
pub const UNIT: &str = "packaging/meshd.service";

/// What `cargo xtask dist` was asked.
#[derive(clap::Args, Debug)]
pub struct DistArgs {
    /// Then install, remove and purge the package in a throwaway Debian 12 root (as root; the
    /// root is debootstrap's, cached as `cargo xtask fresh-check` caches it)
    #[arg(long)]
    check: bool,
    /// A Debian 12 root to copy for --check instead of the cached one (only read)
    #[arg(long, value_name = "DIR", requires = "check")]
    base: Option<PathBuf>,
    /// The Debian mirror for debootstrap and for the packages the check installs
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
}

/// `cargo xtask dist [--check]`.
pub fn run(args: &DistArgs) -> anyhow::Result<()> {
    deps::install()?;
    let deb = build()?;
    println!("{}", deb.display());
    if args.check {
        check(&deb, args)?;
    }
    Ok(())
}

/// Builds the package; returns its path.
fn build() -> anyhow::Result<PathBuf> {
    let cargo_deb = install_cargo_deb()?;
    let cargo = cargo();
    step::run(
        "building meshd and meshctl (release)",
        "read cargo's error above",
        || {
            run_shown(
                &cargo,
                &[
                    "build",
                    "--release",
                    "-p",
                    "mesh-agent",
                    "-p",
                    "mesh-control",
                    "--bin",
                    "meshd",
                    "--bin",
                    "meshctl",
                    "--bin",
                    "mesh-docs",
                ],
                &[],
            )
        },
    )?;
    let docs = Path::new(DIR).join("docs");
    step::run(
        "man pages, completions and the example config (mesh-docs)",
        "read the error above",
        || {
            run_shown(
                "target/release/mesh-docs",
                &[&docs.display().to_string()],
                &[],
            )?;
            compress_man_pages(&docs.join("man"))
        },
    )?;
    step::run(
        "the systemd unit (systemd-analyze verify)",
        "mend what systemd-analyze names above in packaging/meshd.service",
        || verify_unit(Path::new("target/release/meshd")),
    )?;
    step::run(
        "the .deb (cargo deb)",
        "read cargo-deb's error above",
        || {
            let out = run_sync_ok(
                &cargo_deb.display().to_string(),
                &["deb", "-p", "mesh-agent", "--no-build", "--output", DIR],
            )?;
            let deb = out
                .lines()
                .rev()
                .find(|l| l.trim_end().ends_with(".deb"))
                .context("cargo deb named no .deb")?;
            std::fs::canonicalize(deb.trim()).with_context(|| format!("{deb} is missing"))
        },
    )
}

/// gzip -9n every page, as Debian ships them.
fn compress_man_pages(dir: &Path) -> anyhow::Result<()> {
    let mut pages: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path().display().to_string())
        .filter(|p| !p.ends_with(".gz"))
        .collect();
    ensure!(!pages.is_empty(), "mesh-docs wrote no man page");
    pages.sort();
    let mut args = vec!["-9nf"];
    args.extend(pages.iter().map(String::as_str));
    run_shown("gzip", &args, &[])
}

/// The installed cargo-deb, installed first if it is missing or of another version.
fn install_cargo_deb() -> anyhow::Result<PathBuf> {
    deps::cargo_tool("cargo-deb", CARGO_DEB_VERSION, TOOLS, "cargo xtask dist")
}

/// `systemd-analyze verify` of the unit, with `meshd` (a built binary) in place of
/// /usr/bin/meshd. Works without systemd as pid 1. systemd-analyze exits 0 on unknown keys and
/// bad values (it only warns), so any line it prints fails the check; and a broken copy of the
/// unit must fail it, or the check proves nothing on this machine.
pub fn verify_unit(meshd: &Path) -> anyhow::Result<()> {
    let meshd = std::fs::canonicalize(meshd)
        .with_context(|| format!("{} is missing: build meshd first", meshd.display()))?;
    let unit = std::fs::read_to_string(UNIT).with_context(|| format!("cannot read {UNIT}"))?;
    let exec = "ExecStart=/usr/bin/meshd";
    ensure!(unit.contains(exec), "{UNIT} has no `{exec}`");
    let unit = unit.replace(exec, &format!("ExecStart={}", meshd.display()));
    let dir = Path::new(DIR).join("verify");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let good = dir.join("meshd.service");
    std::fs::write(&good, &unit)?;
    if let Some(complaint) = analyze(&good)? {
        bail!("{UNIT}: {complaint}");
    }
    let broken = dir.join("broken").join("meshd.service");
    std::fs::create_dir_all(broken.parent().expect("a parent"))?;
    std::fs::write(&broken, unit.replace("KillMode=process", "KillMode=proces"))?;
    ensure!(
        analyze(&broken)?.is_some(),
        "systemd-analyze verify passed a unit with `KillMode=proces`: it checks nothing here"
    );
    Ok(())
}

/// What `systemd-analyze verify` says about `unit`, if anything.
fn analyze(unit: &Path) -> anyhow::Result<Option<String>> {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .context("cannot run systemd-analyze (package systemd; `cargo xtask deps` installs it)")?;
    let said: Vec<String> = [&out.stdout, &out.stderr]
        .iter()
        .flat_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    if !out.status.success() || !said.is_empty() {
        return Ok(Some(format!(
            "systemd-analyze verify ({}): {}",
            out.status,
            said.join(" / ")
        )));
    }
    Ok(None)
}

/// Installs, removes and purges `deb` in a throwaway Debian 12 root.
fn check(deb: &Path, args: &DistArgs) -> anyhow::Result<()> {
    ensure!(
        mesh_tests::skip::is_root(),
        "--check installs the package in a chroot: run it as root"
    );
    let base = match &args.base {
        Some(base) => base.clone(),
        None => {
            deps::install_packages(deps::FRESH_CHECK_PACKAGES)?;
            let dir = std::fs::canonicalize(".")?.join(fresh::DIR);
            std::fs::create_dir_all(&dir)?;
            step::run(
                "a Debian 12 base root (debootstrap, cached)",
                "check that the mirror answers, or pass another with --mirror",
                || fresh::base_root(&dir, &args.mirror, false),
            )?
        }
    };
    let root = std::fs::canonicalize(".")?.join(DIR).join("check-root");
    step::run(
        "a throwaway copy of the Debian 12 root",
        "see the message above",
        || {
            fresh::remove_root(&root)?;
            run_shown(
                "cp",
                &[
                    "-a",
                    &base.display().to_string(),
                    &root.display().to_string(),
                ],
                &[],
            )?;
            fresh::reach_packages(&root, &args.mirror)?;
            // No service starts inside a chroot (docker.io's postinst would try).
            let policy = root.join("usr/sbin/policy-rc.d");
            std::fs::write(&policy, "#!/bin/sh\nexit 101\n")?;
            run_shown("chmod", &["755", &policy.display().to_string()], &[])?;
            std::fs::copy(deb, root.join("tmp/mesh.deb"))?;
            Ok(())
        },
    )?;
    let outcome = step::run(
        "install, remove and purge in the root",
        "the failing check is the last `+` line above",
        || in_root(&root, CHECK_SCRIPT),
    );
    fresh::remove_root(&root)?;
    outcome
}

/// Runs `script` with sh in `root`, in private mount and pid namespaces with their own /proc, so
/// that nothing stays mounted or running after it and this machine's processes are not seen.
fn in_root(root: &Path, script: &str) -> anyhow::Result<()> {
    let r = root.display().to_string();
    let outer = format!(
        "set -e\nmount -t proc proc {r}/proc\nmount --rbind /dev {r}/dev\n\
         exec chroot {r} /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
         DEBIAN_FRONTEND=noninteractive /bin/sh -c \"$0\""
    );
    run_shown(
        "unshare",
        &[
            "--mount",
            "--pid",
            "--propagation",
            "private",
            "--fork",
            "--",
            "/bin/sh",
            "-c",
            &outer,
            script,
        ],
        &[],
    )
}

/// The check inside the root: each claim of the package, tested.
const CHECK_SCRIPT: &str = r#"set -eu
unit=multi-user.target.wants/meshd.service
echo "+ the dependencies from the mirror: docker.io iproute2 iptables"
apt-get -q update >/dev/null
apt-get -q install -y --no-install-recommends docker.io iproute2 iptables >/dev/null
echo "+ dpkg -i mesh.deb"
dpkg -i /tmp/mesh.deb
dpkg-query -W -f='${Package} ${Version} ${Status}\n' mesh
echo "+ installed: binaries, unit, config, man pages, completions"
for f in /usr/bin/meshd /usr/bin/meshctl; do test -x $f; done
for f in /usr/lib/systemd/system/meshd.service /etc/mesh/meshd.toml \
         /usr/share/man/man8/meshd.8.gz /usr/share/man/man1/meshctl.1.gz \
         /usr/share/man/man1/meshctl-service-create.1.gz \
         /usr/share/bash-completion/completions/meshctl /usr/share/bash-completion/completions/meshd \
         /usr/share/zsh/vendor-completions/_meshctl /usr/share/fish/vendor_completions.d/meshctl.fish; do
  test -f $f || { echo "missing: $f"; exit 1; }
done
grep -q '^/etc/mesh/meshd.toml$' /var/lib/dpkg/info/mesh.conffiles
meshd --version
meshctl --help >/dev/null
echo "+ enabled: /etc/systemd/system/$unit"
test -L /etc/systemd/system/$unit
echo "+ not started: no systemd as pid 1 here, so the snippets skip deb-systemd-invoke"
test ! -d /run/systemd/system
for p in /proc/[0-9]*; do
  if [ "$(cat $p/comm 2>/dev/null)" = meshd ]; then echo "meshd runs"; exit 1; fi
done
echo "+ the shipped config loads; a missing docker stops meshd in one line naming it"
set +e
out=$(meshd --config /etc/mesh/meshd.toml --state-dir /tmp/st --socket /tmp/s.sock --docker-host unix:///nonexistent/docker.sock 2>&1 >/dev/null | grep '^meshd: ')
rc=$?
set -e
echo "$out"
test $rc -eq 0
case "$out" in *"meshd needs Docker"*) ;; *) exit 1;; esac
echo "+ apt-get remove mesh: binaries gone, state and config kept"
mkdir -p /var/lib/mesh && echo node > /var/lib/mesh/identity-marker
apt-get -q remove -y mesh >/dev/null
test ! -e /usr/bin/meshd
test ! -e /usr/lib/systemd/system/meshd.service
test -f /var/lib/mesh/identity-marker
test -f /etc/mesh/meshd.toml
dpkg-query -W -f='${Status}\n' mesh
echo "+ dpkg --purge mesh: state, config and the enablement gone"
dpkg --purge mesh
test ! -e /var/lib/mesh
test ! -e /etc/mesh
test ! -e /etc/systemd/system/$unit
if dpkg-query -W mesh >/dev/null 2>&1; then echo "still known to dpkg"; exit 1; fi
echo "+ all package checks passed"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(UNIT))
            .expect("the unit")
    }

    fn setting<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    }

    /// What issue 14 asks of the unit, so that an edit cannot drop it unnoticed.
    #[test]
    fn the_unit_says_what_meshd_needs() {
        let unit = unit();
        for (key, want) in [
            ("Type", "notify"),
            ("Restart", "always"),
            // meshd's exit status for a bad config (EX_CONFIG in agent/src/config/file.rs).
            ("RestartPreventExitStatus", "78"),
            ("KillMode", "process"),
            ("StateDirectory", "mesh"),
            ("ProtectSystem", "strict"),
            ("ExecStart", "/usr/bin/meshd"),
            ("StandardError", "journal"),
        ] {
            assert_eq!(setting(&unit, key), [want], "{key}");
        }
        for key in ["After", "Wants"] {
            let units = setting(&unit, key).join(" ");
            assert!(units.contains("docker.service"), "{key}={units}");
            assert!(units.contains("network-online.target"), "{key}={units}");
        }
    }

    /// Each capability meshd keeps is explained in a comment above the set.
    #[test]
    fn every_capability_is_justified() {
        let unit = unit();
        let caps = setting(&unit, "CapabilityBoundingSet");
        assert_eq!(caps.len(), 1);
        let caps: Vec<&str> = caps[0].split_whitespace().collect();
        for cap in [
            "CAP_NET_ADMIN",
            "CAP_SYS_ADMIN",
            "CAP_SYS_CHROOT",
            "CAP_SYS_PTRACE",
            "CAP_BPF",
        ] {
            assert!(caps.contains(&cap), "{cap} missing from {caps:?}");
        }
        for cap in caps {
            assert!(
                unit.lines().any(|l| l.starts_with(&format!("#   {cap} "))),
                "{cap} has no comment saying why meshd needs it"
            );
        }
    }
}
