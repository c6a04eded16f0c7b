//! `mesh-vm-probe`: the `/init` of the QEMU VM that `cargo xtask vm ipvs` boots with Debian's
//! kernel, where IPVS exists. It loads the kernel modules the initramfs carries, drives mesh's
//! IPVS code against that kernel — the codec through [`IpvsSocket`], then the load balancer
//! ([`IpvsLb`] with its real sandbox tables) with traffic through a VIP — prints a PASS or FAIL
//! line per check and a summary, and powers the VM off.
//!
//! Built only with the `vm-probe` feature, and it refuses to run as anything but PID 1.
//!
//! [`IpvsSocket`]: mesh_agent::lb::ipvs::IpvsSocket
//! [`IpvsLb`]: mesh_agent::lb::ipvs::IpvsLb

mod balancer;
mod codec;
mod sys;
mod topology;

use std::fmt::Display;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// What the xtask looks for on the serial console.
const SUMMARY: &str = "mesh-vm-probe:";

/// The checks' outcomes, printed as they come.
#[derive(Default)]
pub struct Report {
    passed: usize,
    failed: Vec<String>,
}

impl Report {
    /// Records one check.
    pub fn check<E: Display>(&mut self, name: &str, outcome: Result<(), E>) {
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("PASS {name}");
            }
            Err(err) => {
                println!("FAIL {name}: {err}");
                self.failed.push(name.to_owned());
            }
        }
    }

    /// Whether every check so far passed.
    pub fn clean(&self) -> bool {
        self.failed.is_empty()
    }
}

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "mesh-vm-probe: runs only as a VM's init (PID 1), which it powers off; use `cargo xtask vm ipvs`"
        );
        std::process::exit(2);
    }
    let started = Instant::now();
    let mut report = Report::default();
    let ran = catch_unwind(AssertUnwindSafe(|| run(&mut report)));
    if ran.is_err() {
        report.check("the probe ran to its end", Err("it panicked"));
    }
    let total = report.passed + report.failed.len();
    if report.clean() && total > 0 {
        println!(
            "{SUMMARY} PASS ({total} checks in {:.1?})",
            started.elapsed()
        );
    } else {
        println!(
            "{SUMMARY} FAIL ({} of {total} checks failed: {})",
            report.failed.len(),
            report.failed.join(", ")
        );
    }
    sys::power_off();
}

fn run(report: &mut Report) {
    report.check("mount /proc, /sys and /dev", sys::mount_filesystems());
    report.check("load the kernel modules", sys::load_modules());
    if !report.clean() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // Until something brings up `lo`, the namespace has no local routing table, and IPVS
    // refuses every destination (EINVAL: its address type comes out as broadcast).
    report.check("bring up lo", runtime.block_on(topology::loopback_up()));
    codec::run(report);
    runtime.block_on(balancer::run(report));
}
