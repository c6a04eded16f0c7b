//! Table-driven tests of the record merge rules, anti-entropy digests and convergence.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;

const TTL: u64 = 60_000;

fn record(net: &str, task: &str, node: &str, last_octet: u8) -> EndpointRecord {
    EndpointRecord {
        network_id: net.into(),
        task_id: task.into(),
        service_id: "svc".into(),
        addr: Ipv4Addr::new(10, 0, 0, last_octet),
        mac: [2, 0, 0, 0, 0, last_octet],
        node_id: node.into(),
        vtep: Ipv4Addr::new(192, 168, 0, 1),
        service_name: String::new(),
        vip: None,
        ingress_ports: Vec::new(),
        aliases: Vec::new(),
    }
}

fn versioned(lamport: u64, origin: &str, tombstone: bool, octet: u8) -> VersionedRecord {
    VersionedRecord {
        record: record("net", "task", origin, octet),
        version: Version {
            lamport,
            origin: origin.into(),
        },
        tombstone,
    }
}

#[test]
fn merge_rules() {
    // (local (lamport, origin, tombstone), remote (...), remote wins?)
    let cases = [
        ((1, "a", false), (2, "a", false), true),
        ((2, "a", false), (1, "a", false), false),
        ((2, "a", false), (2, "b", false), true),
        ((2, "b", false), (2, "a", false), false),
        ((2, "a", false), (2, "a", true), true),
        ((2, "a", true), (2, "a", false), false),
        ((3, "a", true), (2, "z", false), false),
        ((2, "a", true), (3, "a", false), true),
        ((2, "a", false), (2, "a", false), false),
        ((2, "a", true), (2, "a", true), false),
    ];
    for ((ll, lo, lt), (rl, ro, rt), wins) in cases {
        let mut local = versioned(ll, lo, lt, 1);
        let remote = versioned(rl, ro, rt, 2);
        assert_eq!(
            merge(&mut local, remote.clone()),
            wins,
            "{ll}{lo}{lt} vs {rl}{ro}{rt}"
        );
        assert_eq!(local == remote, wins);
    }
}

#[test]
fn merge_ignores_a_different_key() {
    let mut local = versioned(1, "a", false, 1);
    let mut remote = versioned(5, "a", false, 1);
    remote.record.task_id = "other".into();
    assert!(!merge(&mut local, remote));
}

#[test]
fn merge_remote_reports_visible_changes() {
    let live = |l, o: &str, octet| versioned(l, o, false, octet);
    let dead = |l, o: &str, octet| versioned(l, o, true, octet);
    let up = |o: &str, octet| Change::Upsert(record("net", "task", o, octet));
    let rm = |o: &str, octet| Change::Remove(record("net", "task", o, octet));
    // (deliveries in order, changes reported by the last delivery)
    let cases: Vec<(Vec<VersionedRecord>, Vec<Change>)> = vec![
        (vec![live(1, "a", 1)], vec![up("a", 1)]),
        (vec![live(1, "a", 1), live(1, "a", 1)], vec![]),
        (
            vec![live(1, "a", 1), live(2, "b", 2)],
            vec![rm("a", 1), up("b", 2)],
        ),
        (vec![live(1, "a", 1), live(2, "a", 1)], vec![]),
        (vec![live(2, "a", 1), live(1, "a", 9)], vec![]),
        (vec![live(1, "a", 1), dead(2, "a", 1)], vec![rm("a", 1)]),
        (vec![dead(2, "a", 1)], vec![]),
        (vec![dead(2, "a", 1), live(1, "a", 1)], vec![]),
        (vec![dead(2, "a", 1), live(3, "a", 4)], vec![up("a", 4)]),
    ];
    for (deliveries, want) in cases {
        let mut table = RecordTable::new("me", TTL);
        let mut last = Vec::new();
        for d in deliveries.clone() {
            last = table.merge_remote([d], 10);
        }
        assert_eq!(last, want, "{deliveries:?}");
    }
}

#[test]
fn local_writes_outrank_everything_seen() {
    let mut table = RecordTable::new("me", TTL);
    table.merge_remote([versioned(1_000, "zz", false, 1)], 5);
    let written = table.upsert_local(record("net", "task", "me", 2), 5);
    assert_eq!(written.version.lamport, 1_001);
    let removed = table
        .remove_local(&written.record.key(), 5)
        .expect("live record");
    assert!(removed.tombstone && removed.supersedes(&written));
    assert_eq!(
        table.remove_local(&written.record.key(), 5),
        None,
        "already removed"
    );
    assert_eq!(table.visible().count(), 0);
    let again = table.upsert_local(record("net", "task", "me", 3), 50_000);
    assert_eq!(again.version.lamport, 50_000, "clock follows wall time");
}

#[test]
fn tombstones_expire_after_the_ttl() {
    let mut table = RecordTable::new("me", TTL);
    let rec = table.upsert_local(record("net", "task", "me", 1), 1_000);
    table.remove_local(&rec.record.key(), 2_000);
    assert_eq!(table.gc(2_000 + TTL - 1), 0);
    assert_eq!(table.gc(2_000 + TTL), 1);
    assert_eq!(table.entries().count(), 0);
    // An expired tombstone arriving late is not stored again, and resurrects nothing.
    let late = versioned(2_000, "me", true, 1);
    assert_eq!(table.merge_remote([late], 2_000 + TTL), vec![]);
    assert_eq!(table.entries().count(), 0);
}

/// Random operations on three writers, each producing the records they disseminate.
fn random_history(rng: &mut StdRng, ops: usize) -> Vec<VersionedRecord> {
    let mut writers: Vec<RecordTable> = ["a", "b", "c"]
        .iter()
        .map(|n| RecordTable::new(*n, TTL))
        .collect();
    let mut out = Vec::new();
    for step in 0..ops {
        let w = rng.random_range(0..writers.len());
        let task = format!("t{}", rng.random_range(0..5));
        let now = step as u64;
        let produced = if rng.random_bool(0.3) {
            let key = RecordKey {
                network_id: "net".into(),
                task_id: task,
            };
            writers[w].remove_local(&key, now)
        } else {
            Some(writers[w].upsert_local(record("net", &task, "x", rng.random()), now))
        };
        if let Some(p) = produced {
            // Writers hear about each other's writes sometimes, so versions interleave.
            for (i, other) in writers.iter_mut().enumerate() {
                if i != w && rng.random_bool(0.5) {
                    other.merge_remote([p.clone()], now);
                }
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn reordered_and_duplicated_delivery_converges() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..50 {
        let history = random_history(&mut rng, 40);
        let mut reference: Option<Vec<VersionedRecord>> = None;
        for _replica in 0..6 {
            let mut deliveries = history.clone();
            deliveries.extend(history.iter().filter(|_| rng.random_bool(0.3)).cloned());
            deliveries.shuffle(&mut rng);
            let mut table = RecordTable::new("replica", TTL);
            for d in deliveries {
                table.merge_remote([d], 100);
            }
            let state: Vec<VersionedRecord> = table.entries().cloned().collect();
            match &reference {
                None => reference = Some(state),
                Some(r) => assert_eq!(r, &state),
            }
        }
    }
}

/// One push-pull anti-entropy exchange, digest page by digest page.
fn exchange(a: &mut RecordTable, b: &mut RecordTable, page: usize, now: u64) {
    for digest in a.digest_pages(page) {
        let diff = b.diff(&digest);
        let wanted = a.select(&diff.want);
        a.merge_remote(diff.send, now);
        b.merge_remote(wanted, now);
    }
}

#[test]
fn digest_exchange_makes_tables_equal() {
    let mut rng = StdRng::seed_from_u64(11);
    for page in [1, 2, 3, 100] {
        let history = random_history(&mut rng, 60);
        let (mut a, mut b) = (RecordTable::new("a", TTL), RecordTable::new("b", TTL));
        for h in &history {
            if rng.random_bool(0.5) {
                a.merge_remote([h.clone()], 100);
            } else {
                b.merge_remote([h.clone()], 100);
            }
        }
        exchange(&mut a, &mut b, page, 100);
        let entries = |t: &RecordTable| t.entries().cloned().collect::<Vec<_>>();
        assert_eq!(entries(&a), entries(&b), "page size {page}");
        assert!(b.diff(&a.digest()) == Diff::default());
    }
}

#[test]
fn digest_pages_cover_the_key_space() {
    let mut table = RecordTable::new("a", TTL);
    assert_eq!(table.digest_pages(3), vec![Digest::default()]);
    for i in 0..7 {
        table.upsert_local(record("net", &format!("t{i}"), "a", i), 1);
    }
    let pages = table.digest_pages(3);
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].after, None);
    assert_eq!(pages[2].up_to, None);
    assert_eq!(pages[0].up_to, pages[1].after);
    assert_eq!(pages.iter().map(|p| p.entries.len()).sum::<usize>(), 7);
    // An empty peer's single unbounded page asks for everything.
    assert_eq!(table.diff(&Digest::default()).send.len(), 7);
}

#[test]
fn thousand_members_converge_through_anti_entropy() {
    const MEMBERS: usize = 1_000;
    let mut rng = StdRng::seed_from_u64(1_000);
    let mut tables: Vec<RecordTable> = (0..MEMBERS)
        .map(|i| RecordTable::new(format!("n{i}"), TTL))
        .collect();
    for (i, t) in tables.iter_mut().enumerate() {
        t.upsert_local(
            record("net", &format!("t{i}"), &format!("n{i}"), (i % 250) as u8),
            1,
        );
    }
    // A tenth of the members withdraw their record before the cluster converges.
    for t in tables.iter_mut().step_by(10) {
        let key = t
            .visible()
            .next()
            .map(EndpointRecord::key)
            .expect("own record");
        t.remove_local(&key, 2);
    }
    let mut rounds = 0;
    while !tables.iter().all(|t| t.entries().count() == MEMBERS) {
        rounds += 1;
        assert!(rounds <= 30, "no convergence after 30 rounds");
        for i in 0..MEMBERS {
            let j = (i + rng.random_range(1..MEMBERS)) % MEMBERS;
            let (lo, hi) = tables.split_at_mut(i.max(j));
            let (a, b) = if i < j {
                (&mut lo[i], &mut hi[0])
            } else {
                (&mut hi[0], &mut lo[j])
            };
            exchange(a, b, usize::MAX, 3);
        }
    }
    let reference: Vec<VersionedRecord> = tables[0].entries().cloned().collect();
    assert!(tables.iter().all(|t| t.entries().eq(reference.iter())));
    assert_eq!(tables[0].visible().count(), MEMBERS - MEMBERS / 10);
}

#[test]
fn a_gone_nodes_records_are_tombstoned_and_spread() {
    let mut observer = RecordTable::new("a", TTL);
    let mut other = RecordTable::new("c", TTL);
    let gone = [
        VersionedRecord {
            record: record("net", "t1", "b", 1),
            version: Version {
                lamport: 10,
                origin: "b".into(),
            },
            tombstone: false,
        },
        VersionedRecord {
            record: record("net", "t2", "b", 2),
            version: Version {
                lamport: 11,
                origin: "b".into(),
            },
            tombstone: false,
        },
    ];
    let kept = observer.upsert_local(record("net", "t3", "a", 3), 20);
    let elsewhere = VersionedRecord {
        record: record("net", "t4", "c", 4),
        version: Version {
            lamport: 12,
            origin: "c".into(),
        },
        tombstone: false,
    };
    observer.merge_remote(gone.iter().cloned().chain([elsewhere.clone()]), 20);
    other.merge_remote(gone.iter().cloned().chain([kept.clone()]), 20);

    let removed = observer.expire_node("b", 30);
    assert_eq!(
        removed,
        vec![
            Change::Remove(gone[0].record.clone()),
            Change::Remove(gone[1].record.clone())
        ]
    );
    let visible: Vec<&str> = observer.visible().map(|r| r.task_id.as_str()).collect();
    assert_eq!(visible, ["t3", "t4"]);
    assert!(observer.expire_node("b", 31).is_empty(), "once is enough");
    assert!(observer.expire_node("a", 31).is_empty(), "never its own");

    // The tombstones outrank the live copies another node still holds.
    let certificates: Vec<VersionedRecord> = observer
        .entries()
        .filter(|e| e.tombstone)
        .cloned()
        .collect();
    let changes = other.merge_remote(certificates, 32);
    assert_eq!(changes, removed);
}

#[test]
fn an_owner_refutes_a_death_certificate_and_its_record_comes_back() {
    let mut owner = RecordTable::new("b", TTL);
    let mut observer = RecordTable::new("a", TTL);
    let live = owner.upsert_local(record("net", "t1", "b", 1), 100);
    observer.merge_remote([live.clone()], 100);
    observer.expire_node("b", 200);
    let certificate = observer
        .get(&live.record.key())
        .cloned()
        .expect("tombstone");
    assert!(certificate.tombstone);

    assert!(owner.merge_remote([certificate.clone()], 201).is_empty());
    let refuted = owner.get(&live.record.key()).cloned().expect("still there");
    assert!(!refuted.tombstone, "the owner keeps its record");
    assert!(refuted.supersedes(&certificate));

    let changes = observer.merge_remote([refuted], 202);
    assert_eq!(changes, vec![Change::Upsert(live.record)]);

    // The owner's own withdrawal is not refuted.
    let withdrawn = owner
        .remove_local(&certificate.record.key(), 300)
        .expect("live");
    assert_eq!(owner.merge_remote([withdrawn.clone()], 301), vec![]);
    assert!(
        owner
            .get(&withdrawn.record.key())
            .is_some_and(|e| e.tombstone)
    );
}
