//! The few system calls an init needs that std does not offer: mounting, loading a kernel module
//! from a file, powering off. Each is wrapped in a safe function.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;

/// Where the xtask puts the modules, and the file that lists them in load order: one file name
/// per line, followed by ` optional` for a module that may fail to load (one of several that
/// provide the same algorithm for this CPU).
const MODULES: &str = "/modules";
const ORDER: &str = "/modules/order";

pub fn mount_filesystems() -> io::Result<()> {
    for (fstype, target) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        fs::create_dir_all(target)?;
        match mount(fstype, target) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            other => other.map_err(|e| io::Error::new(e.kind(), format!("{target}: {e}")))?,
        }
    }
    fs::create_dir_all("/run/netns")
}

fn mount(fstype: &str, target: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    let (fstype, target) = (c(fstype)?, c(target)?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; no data is passed.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Loads every module of [`ORDER`]; one already loaded counts as loaded.
pub fn load_modules() -> Result<(), String> {
    let order = fs::read_to_string(ORDER).map_err(|e| format!("{ORDER}: {e}"))?;
    let mut loaded = Vec::new();
    for line in order.lines().filter(|l| !l.trim().is_empty()) {
        let (file, optional) = match line.split_once(' ') {
            Some((file, "optional")) => (file, true),
            _ => (line, false),
        };
        match finit_module(&format!("{MODULES}/{file}")) {
            Ok(()) => loaded.push(file.trim_end_matches(".ko")),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) if optional => println!("  (optional module {file} not loaded: {e})"),
            Err(e) => return Err(format!("{file}: {e}")),
        }
    }
    println!("  loaded: {}", loaded.join(" "));
    Ok(())
}

fn finit_module(path: &str) -> io::Result<()> {
    let file = File::open(path)?;
    let params = c"";
    // SAFETY: finit_module(2) reads the module from an open descriptor that outlives the call and
    // a NUL-terminated parameter string; it writes no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Flushes what was written and powers the machine off; never returns.
pub fn power_off() -> ! {
    // SAFETY: sync(2) and reboot(2) take no pointers; reboot with RB_POWER_OFF stops the machine.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Only reached if the kernel refused; an init must not exit.
    loop {
        std::thread::park();
    }
}
