//! Where one meshd's socket load balancer outlives it: its cgroup links and maps pinned on the BPF
//! file system of pid 1's mount namespace, under `mesh/<prefix>` (the prefix names its state dir,
//! so several meshd on one host keep apart). While the pins exist, the programs stay attached and
//! the maps keep their entries, whether meshd runs or not; the next start re-adopts them. Only
//! leaving the swarm removes them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;
use tracing::{info, warn};

use super::LbError;
use super::maps::{MAP_SPECS, MapSpec};
use crate::netlink::host::{host_bpffs, host_path};

/// The directory of the BPF file system all meshd pin under.
const BASE: &str = "/sys/fs/bpf/mesh";

/// One meshd's pin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    /// The pins of the meshd whose namespaces start with `prefix`.
    pub fn for_prefix(prefix: &str) -> Self {
        Self {
            dir: host_path(Path::new(BASE)).join(prefix),
        }
    }

    /// Pins under `dir` (which must be on a BPF file system), for tests.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the map `name` is pinned.
    pub(super) fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where the link of program `name` is pinned (bpffs refuses names with a dot).
    pub(super) fn link(&self, name: &str) -> PathBuf {
        self.dir.join(format!("link_{name}"))
    }

    /// Where a new link of program `name` is pinned before it replaces the old one.
    pub(super) fn new_link(&self, name: &str) -> PathBuf {
        self.dir.join(format!("new_link_{name}"))
    }

    /// Makes the directory ready for loading: the BPF file system mounted (in pid 1's mount
    /// namespace), the directory there, and any pinned map that does not match the object's
    /// unpinned (its entries are lost; the balancer writes them again).
    pub(super) fn prepare(&self) -> Result<(), LbError> {
        if self.dir.starts_with(host_path(Path::new(BASE))) {
            host_bpffs().map_err(LbError::Bpffs)?;
        }
        fs::create_dir_all(&self.dir).map_err(|source| LbError::Io {
            path: self.dir.clone(),
            source,
        })?;
        for spec in &MAP_SPECS {
            let path = self.map(spec.name);
            if !path.exists() {
                continue;
            }
            match MapInfo::from_pin(&path) {
                Ok(info) if matches(spec, &info) => {}
                found => {
                    let found = found.map_or_else(
                        |e| e.to_string(),
                        |i| {
                            format!(
                                "key {} value {} entries {}",
                                i.key_size(),
                                i.value_size(),
                                i.max_entries()
                            )
                        },
                    );
                    warn!(map = spec.name, %found, "pinned map does not match: starting it afresh");
                    fs::remove_file(&path).map_err(|source| LbError::Io { path, source })?;
                }
            }
        }
        Ok(())
    }

    /// Whether an earlier run left pins here.
    pub(super) fn exist(&self) -> bool {
        MAP_SPECS.iter().any(|spec| self.map(spec.name).exists())
    }

    /// Removes every pin and the directory: the links detach and the maps go once nothing else
    /// holds them. Tries every step, returning all the errors together.
    pub fn remove(&self) -> Result<(), LbError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(LbError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        // Links first, so that no program runs against maps already gone.
        paths.sort_by_key(|p| !p.to_string_lossy().contains("link_"));
        let mut errors = Vec::new();
        for path in paths {
            if let Err(source) = fs::remove_file(&path) {
                errors.push(LbError::Io { path, source });
            }
        }
        if let Err(source) = fs::remove_dir(&self.dir) {
            errors.push(LbError::Io {
                path: self.dir.clone(),
                source,
            });
        }
        // The shared parent goes with the last meshd's pins; another meshd may still use it.
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
        if errors.is_empty() {
            info!(dir = %self.dir.display(), "socket load balancer unpinned");
        }
        super::collected(errors)
    }
}

fn matches(spec: &MapSpec, info: &MapInfo) -> bool {
    info.key_size() == spec.key_size
        && info.value_size() == spec.value_size
        && info.max_entries() == spec.max_entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_live_under_the_hosts_bpffs_by_prefix() {
        let pins = Pins::for_prefix("m0123abcd");
        assert_eq!(
            pins.dir(),
            host_path(Path::new("/sys/fs/bpf/mesh/m0123abcd"))
        );
        assert_eq!(
            pins.link("lb_connect4"),
            pins.dir().join("link_lb_connect4")
        );
        assert_eq!(pins.map("lb_slots"), pins.dir().join("lb_slots"));
    }

    #[test]
    fn removing_pins_that_never_were_is_done() {
        let dir = tempfile::tempdir().unwrap();
        Pins::at(dir.path().join("absent")).remove().unwrap();
    }
}
