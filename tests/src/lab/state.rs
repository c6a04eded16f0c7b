//! A lab's record on disk, `/run/mesh-lab/<name>/lab.json`: written before anything of the lab is
//! created and updated by every command that changes it, so that `lab down` (and the leftover
//! check) find everything also after the command that made it died.
//!
//! Everything else follows from the name: bridge `ml-<name>`, node k's namespace and host veth
//! `ml-<name>-<k>`, node k's files under `/run/mesh-lab/<name>/node<k>/`, address `.k` of the
//! lab's own `/24`.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::node::Role;
use crate::process::run_sync_ok;

/// Where every lab keeps its record and its nodes' files.
pub const RUN_DIR: &str = "/run/mesh-lab";
/// Prefix of every lab's bridge, namespaces and veths.
pub const LINK_PREFIX: &str = "ml-";
/// The file in a lab's directory that holds its [`LabState`].
const STATE_FILE: &str = "lab.json";
/// Labs get their `/24` from `10.233.X.0/24` (tests use 10.231, the demo 10.232.0).
const LAB_NET: [u8; 2] = [10, 233];
/// Lab names are short: `ml-<name>-<k>` must fit a 15-byte interface name.
pub const MAX_NAME: usize = 8;
/// At most this many nodes per lab (`ml-<name>-99` still fits).
pub const MAX_NODES: usize = 99;

/// What `lab up` recorded, plus the faults applied since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    /// The first three octets of the lab's `/24`.
    pub subnet: [u8; 3],
    pub managers: usize,
    pub workers: usize,
    /// The process that owns the lab: the `lab up` that is still bringing it up, or a test for
    /// the test's whole run. A lab whose owner is gone is a leftover; `None` once `lab up` is done.
    pub owner: Option<Owner>,
    /// Whether every node has joined.
    pub ready: bool,
    /// Faults by node name (`node2`); nodes without faults are absent.
    #[serde(default)]
    pub faults: BTreeMap<String, NodeFaults>,
    /// The partition in force (`1,2/3,4`), if any.
    #[serde(default)]
    pub partition: Option<String>,
}

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub started: u64,
}

impl Owner {
    /// This process.
    pub fn me() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let started = crate::process::start_time(pid).context("cannot read /proc/self/stat")?;
        Ok(Self { pid, started })
    }

    /// Whether the process still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        crate::process::start_time(self.pid) == Some(self.started)
    }
}

/// The faults one node has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFaults {
    pub link_down: bool,
    /// Percentage of the node's outgoing packets dropped.
    pub loss_percent: Option<f64>,
    /// Delay added to the node's outgoing packets, in milliseconds.
    pub delay_ms: Option<u64>,
    /// The pid of the delayer holding the node's queued packets.
    pub delayer: Option<u32>,
}

impl NodeFaults {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One node of a lab, as derived from the lab's record.
#[derive(Debug, Clone, PartialEq)]
pub struct LabNode {
    /// 1-based.
    pub index: usize,
    pub name: String,
    pub role: Role,
    pub addr: Ipv4Addr,
    /// Its files: state, sockets, logs.
    pub dir: PathBuf,
    /// Its network namespace (and the host end of its veth).
    pub netns: String,
}

impl LabNode {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("meshd.sock")
    }

    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }

    pub fn metrics_url(&self) -> String {
        crate::meshd::metrics_url(self.addr)
    }
}

/// Checks a lab name: 1 to 8 lowercase letters and digits, starting with a letter (no `-`, so
/// that one lab's names are never a prefix of another's).
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        bail!(
            "bad lab name {name:?}: use 1 to {MAX_NAME} lowercase letters and digits, starting with \
             a letter"
        );
    }
    Ok(())
}

/// The lab's directory, `/run/mesh-lab/<name>`.
pub fn lab_dir(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

/// The lab's bridge, `ml-<name>`.
pub fn bridge_name(name: &str) -> String {
    format!("{LINK_PREFIX}{name}")
}

/// Holds the lock on [`RUN_DIR`] that serialises creating labs (and picking their subnets).
pub fn lock() -> anyhow::Result<File> {
    std::fs::create_dir_all(RUN_DIR).with_context(|| format!("cannot create {RUN_DIR}"))?;
    let path = Path::new(RUN_DIR).join(".lock");
    let file = File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

impl LabState {
    /// Reads the record of lab `name`.
    pub fn load(name: &str) -> anyhow::Result<Self> {
        validate_name(name)?;
        let path = lab_dir(name).join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                bail!("no lab named {name} (`cargo xtask lab ls` lists the labs)")
            }
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    /// Writes the record (to a temporary file renamed over the old one).
    pub fn save(&self) -> anyhow::Result<()> {
        let dir = lab_dir(&self.name);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).context("cannot encode the lab record")?;
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(STATE_FILE))
            .with_context(|| format!("cannot write {}/{STATE_FILE}", dir.display()))
    }

    pub fn dir(&self) -> PathBuf {
        lab_dir(&self.name)
    }

    pub fn bridge(&self) -> String {
        bridge_name(&self.name)
    }

    pub fn node_count(&self) -> usize {
        self.managers + self.workers
    }

    /// Every node, node1 first; managers come before workers.
    pub fn nodes(&self) -> Vec<LabNode> {
        (1..=self.node_count()).map(|i| self.node_at(i)).collect()
    }

    fn node_at(&self, index: usize) -> LabNode {
        let name = format!("node{index}");
        LabNode {
            index,
            role: if index <= self.managers {
                Role::Manager
            } else {
                Role::Worker
            },
            addr: Ipv4Addr::new(
                self.subnet[0],
                self.subnet[1],
                self.subnet[2],
                u8::try_from(index).unwrap_or(u8::MAX),
            ),
            dir: self.dir().join(&name),
            netns: format!("{}-{index}", self.bridge()),
            name,
        }
    }

    /// The node named `node<k>` (or just `<k>`), or an error naming the nodes there are.
    pub fn node(&self, name: &str) -> anyhow::Result<LabNode> {
        let index = name
            .strip_prefix("node")
            .unwrap_or(name)
            .parse::<usize>()
            .ok()
            .filter(|i| (1..=self.node_count()).contains(i));
        match index {
            Some(i) => Ok(self.node_at(i)),
            None => bail!(
                "no node {name:?} in lab {}: it has node1 to node{}",
                self.name,
                self.node_count()
            ),
        }
    }
}

/// A free `/24` for a new lab: one no host interface and no other lab uses. Call with [`lock`] held.
pub fn free_subnet() -> anyhow::Result<[u8; 3]> {
    let addrs = run_sync_ok("ip", &["-4", "-o", "addr", "show"])?;
    let taken: Vec<[u8; 3]> = list_names()
        .iter()
        .filter_map(|n| LabState::load(n).ok())
        .map(|s| s.subnet)
        .collect();
    (1..=254u8)
        .map(|x| [LAB_NET[0], LAB_NET[1], x])
        .find(|net| {
            !taken.contains(net) && !addrs.contains(&format!(" {}.{}.{}.", net[0], net[1], net[2]))
        })
        .context("no free 10.233.X.0/24 subnet left for a lab")
}

/// The names of the labs that have a directory under [`RUN_DIR`].
pub fn list_names() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(RUN_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| validate_name(n).is_ok())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> LabState {
        LabState {
            name: "lab".into(),
            subnet: [10, 233, 7],
            managers: 3,
            workers: 2,
            owner: None,
            ready: true,
            faults: BTreeMap::new(),
            partition: None,
        }
    }

    #[test]
    fn names_are_short_lowercase_words() {
        for good in ["lab", "a", "demo", "lab2", "abcdefgh"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Lab",
            "2lab",
            "my-lab",
            "abcdefghi",
            "a b",
            "lab/x",
            "..",
            "ä",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nodes_follow_from_the_record() {
        let s = state();
        let nodes = s.nodes();
        assert_eq!(nodes.len(), 5);
        assert_eq!(nodes[0].name, "node1");
        assert_eq!(nodes[2].role, Role::Manager);
        assert_eq!(nodes[3].role, Role::Worker);
        assert_eq!(nodes[4].addr, Ipv4Addr::new(10, 233, 7, 5));
        assert_eq!(nodes[4].netns, "ml-lab-5");
        assert_eq!(
            nodes[1].socket(),
            PathBuf::from("/run/mesh-lab/lab/node2/meshd.sock")
        );
        assert_eq!(nodes[0].metrics_url(), "http://10.233.7.1:9323/metrics");
    }

    #[test]
    fn nodes_are_found_by_name_or_number_and_strangers_are_refused() {
        let s = state();
        assert_eq!(s.node("node3").unwrap().index, 3);
        assert_eq!(s.node("5").unwrap().name, "node5");
        for bad in ["node0", "node6", "6", "nodex", "", "node-1", "worker1"] {
            let err = s.node(bad).unwrap_err().to_string();
            assert!(err.contains("node1 to node5"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_record_round_trips() {
        let mut s = state();
        s.faults.insert(
            "node2".into(),
            NodeFaults {
                loss_percent: Some(5.0),
                ..NodeFaults::default()
            },
        );
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LabState>(&text).unwrap(), s);
    }
}
