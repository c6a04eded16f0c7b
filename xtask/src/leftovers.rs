//! What test runs leave behind: `mt-*` namespaces, links, temp dirs and processes whose owning test
//! process (its pid is in the name, in hex) is gone, labs whose owner (a test, or a `lab up` that
//! died half-way) is gone, and eBPF pins under `/sys/fs/bpf/mesh` that no running meshd owns.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_tests::netns::{self, TEST_PREFIX};
use mesh_tests::overlay::{PINS, netns_prefix, remove_pins};
use mesh_tests::process;

/// Everything found that belongs to a test process that no longer exists.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
    pub dirs: Vec<PathBuf>,
    pub processes: Vec<(u32, String)>,
    /// Labs (`/run/mesh-lab/<name>`, `ml-<name>*`) whose owner died.
    pub labs: Vec<String>,
    /// Pin directories (`/sys/fs/bpf/mesh/<prefix>`) of meshds that no longer run: their
    /// programs stay attached to the host's cgroup2 root until the pins go.
    pub pins: Vec<PathBuf>,
    /// Mounts at meshd's default secrets directory: a test's meshd must always be given its own,
    /// so one there means a test fell back on the host's default.
    pub mounts: Vec<PathBuf>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.links.is_empty()
            && self.dirs.is_empty()
            && self.processes.is_empty()
            && self.labs.is_empty()
            && self.pins.is_empty()
            && self.mounts.is_empty()
    }

    pub fn report(&self) {
        if self.is_empty() {
            eprintln!("leftovers: none");
            return;
        }
        for ns in &self.namespaces {
            eprintln!("leftover namespace: {ns}");
        }
        for link in &self.links {
            eprintln!("leftover link: {link}");
        }
        for dir in &self.dirs {
            eprintln!("leftover directory: {}", dir.display());
        }
        for (pid, cmd) in &self.processes {
            eprintln!("leftover process {pid}: {cmd}");
        }
        for name in &self.labs {
            eprintln!(
                "leftover lab: {name} ({})",
                mesh_tests::lab::left_behind(name).join(", ")
            );
        }
        for dir in &self.pins {
            eprintln!("leftover eBPF pins: {}", dir.display());
        }
        for dir in &self.mounts {
            eprintln!("leftover mount: {}", dir.display());
        }
    }
}

/// The test process that owns a name like `mt-<hex pid>-…`, if it can be read.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TEST_PREFIX)?;
    u32::from_str_radix(rest.split('-').next()?, 16).ok()
}

/// Whether a name belongs to a dead (or unknown) test process.
fn orphaned(name: &str) -> bool {
    owner(name).is_none_or(|pid| !process::alive(pid))
}

/// Finds the leftovers of dead test processes.
pub fn find() -> Leftovers {
    let mut found = Leftovers {
        namespaces: netns::namespaces_with_prefix(TEST_PREFIX)
            .into_iter()
            .filter(|n| orphaned(n))
            .collect(),
        links: netns::links_with_prefix(TEST_PREFIX)
            .into_iter()
            .filter(|n| orphaned(n))
            .collect(),
        ..Leftovers::default()
    };
    if let Ok(entries) = std::fs::read_dir("/tmp") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEST_PREFIX) && orphaned(&name) {
                found.dirs.push(entry.path());
            }
        }
    }
    let marker = format!("/tmp/{TEST_PREFIX}");
    for pid in process::pids_with_cmdline(&marker) {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let dir_name = cmd
            .split(&marker)
            .nth(1)
            .map(|rest| format!("{TEST_PREFIX}{rest}"));
        if dir_name.is_some_and(|n| orphaned(&n)) {
            found.processes.push((pid, cmd.trim().to_owned()));
        }
    }
    found.labs = mesh_tests::lab::orphaned();
    // After the labs: their meshds' pins are not leftovers until the labs are.
    found.pins = orphaned_pins();
    found.mounts = default_secrets_mounts(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    );
    found
}

/// meshd's default `--secrets-dir`.
const DEFAULT_SECRETS_DIR: &str = "/run/mesh/secrets";

/// The mount points (from a mountinfo text) at or under meshd's default secrets directory.
fn default_secrets_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|target| {
            target
                .strip_prefix(DEFAULT_SECRETS_DIR)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .map(PathBuf::from)
        .collect()
}

/// The pin directories under [`PINS`] whose prefix (named after a state dir) is no running
/// meshd's.
fn orphaned_pins() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(PINS) else {
        return Vec::new();
    };
    let live: Vec<String> = process::pids_with_cmdline("--state-dir")
        .into_iter()
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            state_dir_of(&raw)
        })
        .map(|dir| netns_prefix(&dir))
        .collect();
    entries
        .flatten()
        .filter(|e| !live.contains(&e.file_name().to_string_lossy().into_owned()))
        .map(|e| e.path())
        .collect()
}

/// The `--state-dir` of a meshd command line (`/proc/PID/cmdline`, NUL-separated).
fn state_dir_of(cmdline: &[u8]) -> Option<PathBuf> {
    let text = String::from_utf8_lossy(cmdline);
    let mut args = text.split('\0');
    if !args.clone().any(|a| a.ends_with("meshd")) {
        return None;
    }
    args.find(|a| *a == "--state-dir")?;
    args.next().map(PathBuf::from)
}

/// Removes leftovers: daemons first (with their containers), then namespaces, links and directories.
pub fn clean(found: &Leftovers) {
    for name in &found.labs {
        mesh_tests::lab::teardown(name);
    }
    for dir in &found.dirs {
        for node in node_dirs(dir) {
            mesh_tests::dockerd::stop(&node);
        }
    }
    for (pid, _) in &found.processes {
        process::signal(*pid, "KILL");
        process::wait_gone(*pid, Duration::from_secs(5));
    }
    for ns in &found.namespaces {
        netns::delete_namespace(ns);
    }
    for link in &found.links {
        netns::delete_link(link);
    }
    for dir in &found.dirs {
        // A node whose dockerd never started still has its secrets tmpfs mounted.
        for node in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            mesh_tests::secrets::unmount(&node.path());
        }
        if let Err(err) = std::fs::remove_dir_all(dir) {
            eprintln!("cannot remove {}: {err}", dir.display());
        }
    }
    for dir in &found.pins {
        if let Some(prefix) = dir.file_name() {
            remove_pins(&prefix.to_string_lossy());
        }
    }
    // Innermost first.
    for dir in found.mounts.iter().rev() {
        let target = dir.display().to_string();
        let _ = process::run_sync("umount", &["-l", &target]);
    }
}

/// Directories under a test dir that held a dockerd.
fn node_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("docker.pid").exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mounts_at_the_default_secrets_dir_are_leftovers() {
        let mountinfo = "\
22 1 8:1 / / rw shared:1 - ext4 /dev/vda rw
90 22 0:50 / /run/mesh/secrets rw,nosuid - tmpfs tmpfs rw,mode=700
91 22 0:51 / /run/mesh/secrets-old rw - tmpfs tmpfs rw
92 22 0:52 / /tmp/mt-1f-0-x/node1/secrets rw - tmpfs tmpfs rw
";
        assert_eq!(
            default_secrets_mounts(mountinfo),
            vec![PathBuf::from("/run/mesh/secrets")]
        );
    }

    #[test]
    fn a_meshd_command_line_names_its_state_dir() {
        let meshd =
            b"/w/target/debug/meshd\0--state-dir\0/tmp/mt-1f-0-x/node1/state\0--socket\0s\0";
        assert_eq!(
            state_dir_of(meshd),
            Some(PathBuf::from("/tmp/mt-1f-0-x/node1/state"))
        );
        assert_eq!(
            state_dir_of(b"nsenter\0--net=/run/netns/x\0/w/meshd\0"),
            None
        );
        assert_eq!(state_dir_of(b"other\0--state-dir\0/tmp/y\0"), None);
    }
}
