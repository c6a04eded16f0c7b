//! What the data plane holds on to across a restart until gossip has settled.
//!
//! A restarted meshd's gossip starts with an empty endpoint table and learns it again over a few
//! anti-entropy rounds. Acting on that partial table would take backends out of the service VIPs,
//! names out of the DNS and destinations out of the routing mesh. So the endpoint table is saved
//! (`endpoints.json` in the state dir) while meshd runs, and the next start seeds its view with
//! it: until [`SETTLE`](super::dataplane) has passed, the view is gossip's records plus the saved
//! ones gossip has not spoken about yet. A record gossip updates or removes is gossip's from then
//! on; once settled, what gossip never confirmed is withdrawn. Additions are applied at once.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::gossip::{Change, EndpointRecord, RecordKey};

const FILE: &str = "endpoints.json";

/// The endpoint records an earlier run saved, while gossip has not spoken about them.
#[derive(Debug, Default)]
pub(super) struct Seed {
    records: BTreeMap<RecordKey, EndpointRecord>,
    settled: bool,
}

impl Seed {
    pub(super) fn new(records: Vec<EndpointRecord>) -> Self {
        Self {
            records: records.into_iter().map(|r| (r.key(), r)).collect(),
            settled: false,
        }
    }

    /// The records an earlier run saved in `state_dir` (none when the file is missing or
    /// unreadable: then nothing is held).
    pub(super) fn load(state_dir: &Path) -> Self {
        let path = path(state_dir);
        let records = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(path = %path.display(), error = %err, "cannot read saved endpoints");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Self::new(records)
    }

    /// The saved records not yet spoken about.
    pub(super) fn records(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.records.values()
    }

    pub(super) fn is_settled(&self) -> bool {
        self.settled
    }

    /// Gossip spoke about a record: from now on its word is the one that counts.
    pub(super) fn observe(&mut self, change: &Change) {
        let record = match change {
            Change::Upsert(record) | Change::Remove(record) => record,
        };
        self.records.remove(&record.key());
    }

    /// What the data plane acts on: `gossip`'s records, plus the saved ones it does not know
    /// (yet) while not settled.
    pub(super) fn view(&self, gossip: Vec<EndpointRecord>) -> Vec<EndpointRecord> {
        let known: HashSet<RecordKey> = gossip.iter().map(EndpointRecord::key).collect();
        let mut view = gossip;
        view.extend(
            self.records
                .values()
                .filter(|r| !known.contains(&r.key()))
                .cloned(),
        );
        view
    }

    /// Gossip has settled: returns the saved records it never confirmed (neither among `known`
    /// now nor spoken about since), to withdraw; from now on the view is gossip's alone.
    pub(super) fn settle(&mut self, known: &[EndpointRecord]) -> Vec<EndpointRecord> {
        self.settled = true;
        let known: HashSet<RecordKey> = known.iter().map(EndpointRecord::key).collect();
        std::mem::take(&mut self.records)
            .into_values()
            .filter(|r| !known.contains(&r.key()))
            .collect()
    }
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Saves the endpoint records for the next start, atomically.
pub(super) fn save(state_dir: &Path, records: &[EndpointRecord]) {
    let path = path(state_dir);
    let write = || -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(records)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(err) = write() {
        tracing::warn!(path = %path.display(), error = %err, "cannot save endpoints");
    }
}

/// Forgets the saved records (leaving the swarm).
pub(super) fn remove(state_dir: &Path) {
    let _ = std::fs::remove_file(path(state_dir));
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn record(task: &str, last: u8) -> EndpointRecord {
        EndpointRecord {
            network_id: "net".into(),
            task_id: task.into(),
            service_id: "s".into(),
            addr: Ipv4Addr::new(10, 0, 0, last),
            mac: [2, 0, 0, 0, 0, last],
            node_id: "n2".into(),
            vtep: Ipv4Addr::new(192, 168, 0, 2),
            service_name: "web".into(),
            vip: Some(Ipv4Addr::new(10, 0, 0, 100)),
            ingress_ports: Vec::new(),
            aliases: Vec::new(),
        }
    }

    fn tasks(records: &[EndpointRecord]) -> Vec<&str> {
        let mut all: Vec<&str> = records.iter().map(|r| r.task_id.as_str()).collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn until_settled_the_saved_records_fill_in_what_gossip_has_not_said() {
        let mut seed = Seed::new(vec![record("a", 2), record("b", 3), record("c", 4)]);
        // Gossip has heard of nothing yet: the saved table is the view.
        assert_eq!(tasks(&seed.view(Vec::new())), ["a", "b", "c"]);
        // Gossip knows a (with a new address) and a new task d: its versions win, d is added.
        let mut moved = record("a", 9);
        moved.mac = [2, 0, 0, 0, 0, 9];
        let view = seed.view(vec![moved.clone(), record("d", 5)]);
        assert_eq!(tasks(&view), ["a", "b", "c", "d"]);
        assert!(view.contains(&moved) && !view.contains(&record("a", 2)));
        // Gossip removes b (a tombstone): it leaves the view at once.
        seed.observe(&Change::Remove(record("b", 3)));
        assert_eq!(tasks(&seed.view(vec![moved.clone()])), ["a", "c"]);
        assert!(!seed.is_settled());
    }

    #[test]
    fn settling_withdraws_what_gossip_never_confirmed() {
        let mut seed = Seed::new(vec![record("a", 2), record("b", 3), record("c", 4)]);
        seed.observe(&Change::Upsert(record("a", 2)));
        let gone = seed.settle(&[record("a", 2), record("b", 3)]);
        assert_eq!(tasks(&gone), ["c"]);
        assert!(seed.is_settled());
        assert_eq!(seed.records().count(), 0);
        assert!(
            seed.view(Vec::new()).is_empty(),
            "gossip's alone from now on"
        );
    }

    #[test]
    fn saved_records_round_trip_and_a_bad_file_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Seed::load(dir.path()).records().count(), 0);
        save(dir.path(), &[record("a", 2), record("b", 3)]);
        let seed = Seed::load(dir.path());
        assert_eq!(
            seed.records().cloned().collect::<Vec<_>>(),
            [record("a", 2), record("b", 3)]
        );
        std::fs::write(path(dir.path()), b"[{").unwrap();
        assert_eq!(Seed::load(dir.path()).records().count(), 0);
        remove(dir.path());
        assert_eq!(Seed::load(dir.path()).records().count(), 0);
    }
}
