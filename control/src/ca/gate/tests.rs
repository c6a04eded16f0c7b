use std::time::SystemTime;

use mesh_proto::{Cluster, Node, NodeCertificate, NodeRole};

use super::*;

fn identity(node_id: &str, role: Role, cluster_id: &str, serial: u8) -> NodeIdentity {
    NodeIdentity {
        node_id: node_id.into(),
        role,
        cluster_id: cluster_id.into(),
        not_before: SystemTime::UNIX_EPOCH,
        not_after: SystemTime::UNIX_EPOCH,
        serial: vec![serial],
        raft_id: (role == Role::Manager).then_some(7),
    }
}

fn node(id: &str, role: NodeRole, current: Option<(u8, NodeRole)>) -> Node {
    Node {
        id: id.into(),
        role: role as i32,
        certificate: current.map(|(serial, role)| NodeCertificate {
            serial: vec![serial],
            role: role as i32,
        }),
        ..Default::default()
    }
}

/// Every rpc of the services the 2377 server carries, read from the .proto files.
fn served_methods() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/mesh/v1");
    let mut methods = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("proto dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("proto file");
        let mut service = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().map(str::to_owned);
            } else if let (Some(rest), Some(service)) = (line.strip_prefix("rpc "), &service) {
                let name = rest.split('(').next().expect("rpc name").trim();
                methods.push(format!("/mesh.v1.{service}/{name}"));
            }
        }
    }
    methods.sort();
    methods
}

#[test]
fn every_method_on_the_manager_port_has_exactly_one_rule() {
    // The Swarm service (init, join, leave, info) is served on the local socket only.
    let served: Vec<String> = served_methods()
        .into_iter()
        .filter(|m| !m.starts_with("/mesh.v1.Swarm/"))
        .collect();
    assert!(served.len() > 25, "{served:?}");
    let mut ruled: Vec<String> = METHODS.iter().map(|(m, _)| (*m).to_owned()).collect();
    ruled.sort();
    assert_eq!(
        ruled, served,
        "a method without a rule, or a rule without a method"
    );
    assert_eq!(need("/mesh.v1.Swarm/Init"), None);
    assert_eq!(need("/grpc.reflection.v1.ServerReflection/Info"), None);
}

#[test]
fn callers_are_judged_by_certificate_and_store() {
    let cluster = Cluster {
        id: "c1".into(),
        removed_nodes: vec!["gone".into()],
        ..Default::default()
    };
    let manager = identity("m1", Role::Manager, "c1", 1);
    let worker = identity("w1", Role::Worker, "c1", 2);
    let stranger = identity("m1", Role::Manager, "c2", 3);
    let removed = identity("gone", Role::Worker, "c1", 4);
    let demoted_old = identity("d1", Role::Manager, "c1", 5);
    let promoted_old = identity("p1", Role::Worker, "c1", 6);
    let m1 = node("m1", NodeRole::Manager, Some((1, NodeRole::Manager)));
    let w1 = node("w1", NodeRole::Worker, Some((2, NodeRole::Worker)));
    // Demoted; its agent has not renewed its certificate yet.
    let d1_pending = node("d1", NodeRole::Worker, Some((5, NodeRole::Manager)));
    // Demoted, and issued worker certificate 9 since: certificate 5 is dead.
    let d1_renewed = node("d1", NodeRole::Worker, Some((9, NodeRole::Worker)));
    // Promoted; its agent still holds its worker certificate.
    let p1_pending = node("p1", NodeRole::Manager, Some((6, NodeRole::Worker)));
    // Promoted, and issued manager certificate 10 since: worker certificate 6 is dead.
    let p1_renewed = node("p1", NodeRole::Manager, Some((10, NodeRole::Manager)));
    // An older certificate of the same role stays good until it expires.
    let w1_renewed = node("w1", NodeRole::Worker, Some((11, NodeRole::Worker)));
    let ok = Ok(());
    use Need::*;
    use Refusal::*;
    // (caller, its node in the store, need, verdict)
    let cases = [
        (None, None, Anyone, ok),
        (None, None, JoinOrRenew, ok),
        (None, None, Node, Err(NoCertificate)),
        (None, None, Manager, Err(NoCertificate)),
        (Some(&manager), Some(&m1), Manager, ok),
        (Some(&manager), Some(&m1), Node, ok),
        (Some(&manager), None, Manager, ok),
        (Some(&worker), Some(&w1), Node, ok),
        (Some(&worker), Some(&w1), JoinOrRenew, ok),
        (Some(&worker), Some(&w1), Manager, Err(NotManager)),
        (Some(&worker), Some(&w1), Anyone, ok),
        (Some(&stranger), Some(&m1), Node, Err(OtherCluster)),
        (Some(&stranger), Some(&m1), Manager, Err(OtherCluster)),
        (Some(&stranger), None, JoinOrRenew, Err(OtherCluster)),
        (Some(&removed), None, JoinOrRenew, Err(Removed)),
        (Some(&removed), None, Node, Err(Removed)),
        (Some(&demoted_old), Some(&d1_pending), Manager, Err(Demoted)),
        (Some(&demoted_old), Some(&d1_pending), Node, ok),
        (Some(&demoted_old), Some(&d1_pending), JoinOrRenew, ok),
        (
            Some(&demoted_old),
            Some(&d1_renewed),
            JoinOrRenew,
            Err(Replaced),
        ),
        (Some(&demoted_old), Some(&d1_renewed), Node, Err(Replaced)),
        (
            Some(&demoted_old),
            Some(&d1_renewed),
            Manager,
            Err(Replaced),
        ),
        (Some(&promoted_old), Some(&p1_pending), Node, ok),
        (Some(&promoted_old), Some(&p1_pending), JoinOrRenew, ok),
        (
            Some(&promoted_old),
            Some(&p1_pending),
            Manager,
            Err(NotManager),
        ),
        (
            Some(&promoted_old),
            Some(&p1_renewed),
            JoinOrRenew,
            Err(Replaced),
        ),
        (Some(&promoted_old), Some(&p1_renewed), Node, Err(Replaced)),
        (Some(&worker), Some(&w1_renewed), Node, ok),
    ];
    for (i, (caller, node, need, want)) in cases.into_iter().enumerate() {
        let standing = Standing {
            cluster: Some(&cluster),
            node,
        };
        assert_eq!(judge(need, caller, standing), want, "case {i}");
    }
    // A manager still joining has no cluster object yet: a manager certificate is enough.
    assert_eq!(judge(Manager, Some(&manager), Standing::default()), ok);
    assert_eq!(
        judge(Manager, Some(&worker), Standing::default()),
        Err(NotManager)
    );
}

#[test]
fn refusals_are_unauthenticated_or_permission_denied_in_one_line() {
    use Refusal::*;
    for refusal in [
        UnknownMethod,
        NoCertificate,
        Untrusted,
        OtherCluster,
        Removed,
        Replaced,
        NotManager,
        Demoted,
    ] {
        let status = refusal.status();
        assert!(
            matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ),
            "{refusal:?}: {status:?}"
        );
        assert!(!status.message().contains('\n'), "{refusal:?}");
    }
}

/// A call is judged at once even while a write waits for a long read to end: every call of
/// every agent passes the gate, heartbeats included, and one queued behind the write held a
/// runtime thread until both were done.
#[test]
fn a_call_is_not_queued_behind_a_waiting_write() {
    use std::sync::mpsc;
    use std::time::Duration;
    let memory = Arc::new(MemoryStore::new());
    let gate = Gate {
        store: memory.clone(),
        log: RefusalLog::default(),
    };
    let (release, held) = mpsc::channel::<()>();
    let (reading, read_started) = mpsc::channel();
    // A long read (a reconciler's pass over every task)...
    let reader = std::thread::spawn({
        let memory = memory.clone();
        move || {
            memory.view(|_| {
                reading.send(()).expect("reading");
                let _ = held.recv_timeout(Duration::from_secs(10));
            })
        }
    });
    read_started.recv().expect("read started");
    // ...and a commit waiting to apply behind it.
    let writer = std::thread::spawn({
        let memory = memory.clone();
        move || memory.apply(1, mesh_proto::Proposal::default())
    });
    std::thread::sleep(Duration::from_millis(100));
    let (judged, answer) = mpsc::channel();
    let caller = std::thread::spawn(move || {
        let refused = gate.check("/mesh.v1.Dispatcher/Heartbeat", None).is_err();
        judged.send(refused).expect("judged");
    });
    let answer = answer.recv_timeout(Duration::from_secs(5));
    release.send(()).expect("released");
    for thread in [reader, caller] {
        thread.join().expect("joined");
    }
    writer.join().expect("applied");
    assert_eq!(
        answer,
        Ok(true),
        "judged (no certificate: refused) while the write waited"
    );
}
