//! `cargo xtask vm ipvs`: mesh's IPVS code against a kernel that has IPVS. This machine's kernel
//! has none and cannot load modules, so the task boots Debian's own kernel in QEMU (software
//! emulation: no KVM), with an initramfs holding the IPVS modules, iptables and a static probe
//! (`agent/src/bin/vm_probe`) as `/init`. The probe drives the codec and the load balancer
//! against that kernel and prints PASS or FAIL per check; the task shows the VM's console, and
//! fails unless the probe's summary says PASS within the timeout.
//!
//! Not part of `cargo xtask test` (CI): it downloads a 70 MB package and runs for minutes.

mod initramfs;
mod kernel;
mod modules;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use mesh_tests::process::{cargo, run_shown};

use crate::deps;

/// Where the kernel package, the initramfs and the probe's build live (under the target dir).
const CACHE: &str = "target/vm";
const QEMU: &str = "qemu-system-x86_64";
/// The probe's target: given explicitly so that its static build has a directory of its own.
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// What the probe needs: IPVS with its schedulers, iptables' mangle table and MARK target, and
/// the bridge and veth devices its sandbox and backends are joined by.
const MODULES: [&str; 7] = [
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_mh",
    "iptable_mangle",
    "xt_mark",
    "bridge",
    "veth",
];
/// How the probe's summary line starts.
const SUMMARY: &str = "mesh-vm-probe: ";

#[derive(clap::Subcommand)]
pub enum Vm {
    /// Boot Debian's kernel in QEMU and run mesh's IPVS codec and load balancer against it.
    Ipvs(IpvsArgs),
}

#[derive(clap::Args)]
pub struct IpvsArgs {
    /// Give up on the VM after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The kernel package (default: the one `linux-image-amd64` depends on).
    #[arg(long)]
    kernel_package: Option<String>,
    /// Memory for the VM, in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
}

pub fn run_vm(which: Vm) -> anyhow::Result<()> {
    match which {
        Vm::Ipvs(args) => ipvs(&args),
    }
}

fn ipvs(args: &IpvsArgs) -> anyhow::Result<()> {
    let cache = Path::new(CACHE);
    let qemu = qemu()?;
    let kernel = kernel::fetch(cache, args.kernel_package.as_deref())?;
    let modules = modules::resolve(&kernel.modules, &MODULES)?;
    let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    eprintln!("vm: {} modules: {}", kernel.package, names.join(" "));
    let probe = build_probe()?;
    let initrd = cache.join("ipvs-initramfs.cpio");
    let image = initramfs::build(&probe, &modules)?;
    std::fs::write(&initrd, &image).with_context(|| format!("writing {}", initrd.display()))?;
    eprintln!(
        "vm: initramfs {} ({} MiB)",
        initrd.display(),
        image.len() >> 20
    );
    let summary = boot(&qemu, &kernel.vmlinuz, &initrd, args)?;
    if summary.starts_with("PASS") {
        eprintln!("vm: {SUMMARY}{summary}");
        Ok(())
    } else {
        bail!("{SUMMARY}{summary}")
    }
}

/// QEMU, installed from Debian's packages if it is missing.
fn qemu() -> anyhow::Result<PathBuf> {
    let find = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(QEMU))
                .find(|p| p.exists())
        })
    };
    if let Some(path) = find() {
        return Ok(path);
    }
    deps::install_packages(deps::VM_PACKAGES)?;
    find().with_context(|| format!("{QEMU} is still missing after installing its package"))
}

/// Builds the probe as a static executable: it is the VM's only userland besides iptables.
fn build_probe() -> anyhow::Result<PathBuf> {
    // The probe is part of the agent, whose build needs the eBPF toolchain.
    deps::install()?;
    run_shown(
        &cargo(),
        &[
            "build",
            "-p",
            "mesh-agent",
            "--bin",
            "mesh-vm-probe",
            "--features",
            "vm-probe",
            "--target",
            TARGET,
        ],
        &[(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=debuginfo",
        )],
    )?;
    let target_dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    Ok(Path::new(&target_dir)
        .join(TARGET)
        .join("debug/mesh-vm-probe"))
}

/// The kernel's tick rate (`CONFIG_HZ`), from the config file beside its vmlinuz.
fn hz(vmlinuz: &Path) -> anyhow::Result<u32> {
    let name = vmlinuz.file_name().unwrap_or_default().to_string_lossy();
    let config = vmlinuz.with_file_name(name.replacen("vmlinuz-", "config-", 1));
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no CONFIG_HZ in {}", config.display()))
}

/// Boots the VM, echoing its console, and returns what follows the probe's summary prefix.
fn boot(qemu: &Path, vmlinuz: &Path, initrd: &Path, args: &IpvsArgs) -> anyhow::Result<String> {
    let mut command = Command::new(qemu);
    command
        .args([
            "-machine",
            "q35",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
        ])
        .args(["-nic", "none", "-m", &args.memory.to_string()])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        // panic=-1: a kernel panic reboots at once, which -no-reboot turns into QEMU exiting.
        // MESH_HZ reaches the probe's environment.
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 MESH_HZ={}",
            hz(vmlinuz)?
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("+ {command:?}");
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {QEMU}"))?;
    let stdout = child.stdout.take().context("no console")?;
    let (lines, console) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = started + Duration::from_secs(args.timeout);
    let mut summary = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match console.recv_timeout(left) {
            Ok(line) => {
                let line = line.trim_end_matches('\r');
                println!("vm| {line}");
                if let Some(rest) = line.strip_prefix(SUMMARY) {
                    summary = Some(rest.to_owned());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the VM did not finish within {} s", args.timeout);
            }
        }
    }
    let status = child.wait()?;
    let _ = reader.join();
    eprintln!("vm: QEMU exited ({status}) after {:.1?}", started.elapsed());
    summary.context("the probe printed no summary: see the console above")
}
