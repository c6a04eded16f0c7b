//! Certificates from a real CA, and real mutual-TLS round trips on 127.0.0.1 through a small
//! `NodeCA` service that reports who the transport says its caller is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_proto::node_ca_client::NodeCaClient;
use mesh_proto::node_ca_server::{NodeCa, NodeCaServer};
use mesh_proto::{
    GetRootCaCertificateRequest, GetRootCaCertificateResponse, IssueNodeCertificateRequest,
    IssueNodeCertificateResponse,
};
use rustls::pki_types::UnixTime;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn subject<'a>(node_id: &'a str, role: Role, cluster_id: &'a str) -> NodeSubject<'a> {
    let raft_id = (role == Role::Manager).then_some(7);
    NodeSubject {
        node_id,
        role,
        cluster_id,
        raft_id,
    }
}

fn issue(ca: &RootCa, node_id: &str, role: Role) -> TlsIdentity {
    let key = NodeKey::generate().expect("key");
    let subject = subject(node_id, role, "cluster-1");
    let cert = ca
        .sign_node(&key.csr_der().expect("csr"), &subject, 90 * DAY)
        .expect("sign");
    TlsIdentity::from_pem(&cert, key.to_pem(), ca.cert_pem()).expect("identity")
}

/// Answers `IssueNodeCertificate` with the caller's identity as the transport saw it; with the
/// token "manager-only" it first requires a manager certificate.
struct Echo {
    root_pem: Vec<u8>,
}

#[tonic::async_trait]
impl NodeCa for Echo {
    async fn get_root_ca_certificate(
        &self,
        _: Request<GetRootCaCertificateRequest>,
    ) -> Result<Response<GetRootCaCertificateResponse>, Status> {
        Ok(Response::new(GetRootCaCertificateResponse {
            certificate: self.root_pem.clone(),
        }))
    }

    async fn issue_node_certificate(
        &self,
        request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        if request.get_ref().token == "manager-only" {
            require_manager(&request)?;
        }
        let identity = peer(&request);
        Ok(Response::new(IssueNodeCertificateResponse {
            node_id: identity
                .as_ref()
                .map(|i| i.node_id.clone())
                .unwrap_or_default(),
            role: identity
                .as_ref()
                .map_or(-1, |i| mesh_proto::NodeRole::from(i.role) as i32),
            cluster_id: identity.map(|i| i.cluster_id).unwrap_or_default(),
            ..Default::default()
        }))
    }
}

async fn serve(server: &TlsServer, root_pem: &str) -> (SocketAddr, oneshot::Sender<()>) {
    serve_behind(server, root_pem, None).await
}

/// [`serve`], with the gate of `store` in front when given.
async fn serve_behind(
    server: &TlsServer,
    root_pem: &str,
    gate: Option<&crate::store::Store>,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = server.incoming(listener);
    let service = NodeCaServer::new(Echo {
        root_pem: root_pem.as_bytes().to_vec(),
    });
    let shutdown = async {
        let _ = stopped.await;
    };
    match gate {
        Some(store) => {
            let router = tonic::transport::Server::builder()
                .layer(GateLayer::new(store.memory().clone()))
                .add_service(service);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown));
        }
        None => {
            let router = tonic::transport::Server::builder().add_service(service);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown));
        }
    }
    (addr, stop)
}

async fn whoami(channel: Channel, token: &str) -> Result<IssueNodeCertificateResponse, Status> {
    NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            token: token.into(),
            ..Default::default()
        })
        .await
        .map(Response::into_inner)
}

#[test]
fn signed_certificate_carries_the_identity() {
    let ca = RootCa::generate("cluster-1").expect("ca");
    for (role, ou) in [
        (Role::Manager, "mesh-manager"),
        (Role::Worker, "mesh-worker"),
    ] {
        let tls = issue(&ca, "node-abc", role);
        let id = tls.node_identity().expect("parses");
        assert_eq!(
            (id.node_id.as_str(), id.role, id.cluster_id.as_str()),
            ("node-abc", role, "cluster-1")
        );
        // A manager's Raft id rides in its certificate; a worker has none.
        let raft_id = (role == Role::Manager).then_some(7);
        assert_eq!(id.raft_id, raft_id);
        assert_eq!(id.serial.len(), 16, "a 128-bit random serial");
        assert_ne!(
            id.serial,
            issue(&ca, "node-abc", role).node_identity().unwrap().serial
        );
        assert_eq!(role.as_ou(), ou);
        let now = SystemTime::now();
        assert!(id.not_before < now && now < id.not_after);
        assert!(!id.needs_renewal(now));
        assert!(id.needs_renewal(now + 61 * DAY));
    }
    assert!(ca.digest().starts_with("sha256:") && ca.digest().len() == 71);
    assert!(
        NodeIdentity::from_der(ca.cert_der()).is_err(),
        "the root is no node"
    );
}

#[test]
fn root_ca_round_trips_through_pem() {
    let ca = RootCa::generate("cluster-1").expect("ca");
    let again = RootCa::from_pem(ca.cert_pem(), ca.key_pem()).expect("reload");
    assert_eq!(again.cert_der(), ca.cert_der());
    let other = RootCa::generate("cluster-1").expect("other");
    assert!(
        RootCa::from_pem(ca.cert_pem(), other.key_pem()).is_err(),
        "foreign key"
    );
    let key = NodeKey::generate().expect("key");
    let leaf_pem = ca
        .sign_node(
            &key.csr_der().expect("csr"),
            &subject("n1", Role::Worker, "c"),
            DAY,
        )
        .expect("sign");
    let error = RootCa::from_pem(&leaf_pem, key.to_pem()).expect_err("a leaf is no CA");
    assert!(error.to_string().contains("not a CA"), "{error}");
    assert!(RootCa::from_pem("garbage", ca.key_pem()).is_err());
}

#[test]
fn sign_node_refuses_bad_requests() {
    let ca = RootCa::generate("cluster-1").expect("ca");
    let csr = NodeKey::generate().expect("key").csr_der().expect("csr");
    assert!(
        ca.sign_node(b"garbage", &subject("n1", Role::Worker, "c"), DAY)
            .is_err()
    );
    assert!(
        ca.sign_node(&csr, &subject("", Role::Worker, "c"), DAY)
            .is_err()
    );
    let mut tampered = csr.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    assert!(
        ca.sign_node(&tampered, &subject("n1", Role::Worker, "c"), DAY)
            .is_err()
    );
}

#[test]
fn certificate_from_another_ca_fails_verification() {
    let ca = RootCa::generate("cluster-1").expect("ca");
    let other = RootCa::generate("cluster-1").expect("other");
    let roots = certs_from_pem(ca.cert_pem().as_bytes(), "roots").expect("roots");
    let mut store = rustls::RootCertStore::empty();
    store.add(roots[0].clone()).expect("root");
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    let now = UnixTime::now();
    let ours = issue(&ca, "n1", Role::Worker);
    let theirs = issue(&other, "n1", Role::Worker);
    assert!(
        verifier
            .verify_client_cert(&ours.chain[0], &[], now)
            .is_ok()
    );
    assert!(
        verifier
            .verify_client_cert(&theirs.chain[0], &[], now)
            .is_err()
    );
}

#[tokio::test]
async fn mutual_tls_identifies_callers_by_role() {
    let ca = RootCa::generate("cluster-1").expect("ca");
    let server = TlsServer::new(&issue(&ca, "m0", Role::Manager)).expect("server");
    let (addr, _stop) = serve(&server, ca.cert_pem()).await;
    let addr = addr.to_string();

    // (a) a manager certificate is seen as a manager, and passes require_manager.
    let manager = issue(&ca, "m1", Role::Manager);
    let seen = whoami(
        connect(&addr, &manager).await.expect("connect"),
        "manager-only",
    )
    .await
    .expect("allowed");
    assert_eq!(
        (seen.node_id.as_str(), seen.role),
        ("m1", mesh_proto::NodeRole::Manager as i32)
    );
    assert_eq!(seen.cluster_id, "cluster-1");

    // (b) a worker is seen as a worker, and refused by require_manager.
    let worker = issue(&ca, "w1", Role::Worker);
    let channel = connect(&addr, &worker).await.expect("connect");
    let seen = whoami(channel.clone(), "").await.expect("allowed");
    assert_eq!(
        (seen.node_id.as_str(), seen.role),
        ("w1", mesh_proto::NodeRole::Worker as i32)
    );
    let refused = whoami(channel, "manager-only").await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // (c) no client certificate: allowed to connect, no identity.
    let channel = connect_with_roots(&addr, ca.cert_pem().as_bytes(), None)
        .await
        .expect("connect");
    let seen = whoami(channel.clone(), "").await.expect("allowed");
    assert_eq!((seen.node_id.as_str(), seen.role), ("", -1));
    assert!(whoami(channel, "manager-only").await.is_err());

    // (d) a client certificate from another CA proves its key but carries no identity: behind
    // the gate every call but fetching the root CA is refused, saying why.
    let other = RootCa::generate("cluster-1").expect("other");
    let mut forged = issue(&other, "m9", Role::Manager);
    forged.roots = manager.roots.clone();
    let seen = whoami(connect(&addr, &forged).await.expect("connect"), "")
        .await
        .expect("the handler sees an anonymous caller");
    assert_eq!((seen.node_id.as_str(), seen.role), ("", -1));
    let store = crate::store::direct_store();
    store
        .update(|tx| {
            tx.create(mesh_proto::Cluster {
                id: "cluster-1".into(),
                ..Default::default()
            })
        })
        .await
        .expect("cluster");
    let (gated, _stop_gated) = serve_behind(&server, ca.cert_pem(), Some(&store)).await;
    let gated = gated.to_string();
    let channel = connect(&gated, &forged).await.expect("connect");
    let refused = whoami(channel.clone(), "")
        .await
        .expect_err("a foreign certificate is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().contains("not one of this cluster"),
        "{refused:?}"
    );
    NodeCaClient::new(channel)
        .get_root_ca_certificate(GetRootCaCertificateRequest {})
        .await
        .expect("the root CA is anyone's to fetch");
    // An expired certificate of this CA is refused as well.
    let key = NodeKey::generate().expect("key");
    let expired = ca
        .sign_node(
            &key.csr_der().expect("csr"),
            &subject("m8", Role::Manager, "cluster-1"),
            Duration::ZERO,
        )
        .expect("sign");
    let expired = TlsIdentity::from_pem(&expired, key.to_pem(), ca.cert_pem()).expect("id");
    // Valid to the second it was signed in: past it a moment later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let channel = connect(&gated, &expired).await.expect("connect");
    let refused = whoami(channel, "").await.expect_err("expired");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // A client that trusts another CA refuses this server.
    let stranger = issue(&other, "n2", Role::Worker);
    assert!(matches!(
        connect(&addr, &stranger).await,
        Err(CaError::Connect { .. })
    ));
}

#[tokio::test]
async fn a_worker_certificate_cannot_serve_as_a_manager() {
    let ca = RootCa::generate("cluster-1").expect("ca");
    let server = TlsServer::new(&issue(&ca, "w0", Role::Worker)).expect("server");
    let (addr, _stop) = serve(&server, ca.cert_pem()).await;
    let client = issue(&ca, "m1", Role::Manager);
    assert!(connect(&addr.to_string(), &client).await.is_err());
}

/// A manager that accepts the connection but is slow to handshake (busy with thousands of
/// agents reconnecting) is waited for beyond the TCP connect's bound: a client that gave up
/// after 3 s threw away the manager's work and came back for more.
#[tokio::test]
async fn a_slow_handshake_is_waited_for_beyond_the_connect_bound() {
    let ca = RootCa::generate("cluster-1").expect("ca");
    let server = TlsServer::new(&issue(&ca, "m0", Role::Manager)).expect("server");
    let (manager, _stop) = serve(&server, ca.cert_pem()).await;
    // In front of the manager: connections are taken at once and forwarded only after a delay
    // past the TCP connect's bound, as a manager that accepts and handshakes later.
    let delay = CONNECT_TIMEOUT + Duration::from_millis(500);
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = front.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = front.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut upstream = tokio::net::TcpStream::connect(manager)
                    .await
                    .expect("connect");
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    let started = std::time::Instant::now();
    let channel = connect(&addr, &issue(&ca, "w1", Role::Worker))
        .await
        .expect("a slow handshake completes");
    assert!(started.elapsed() >= delay);
    let seen = whoami(channel, "").await.expect("answered");
    assert_eq!(seen.node_id, "w1");
}

#[tokio::test]
async fn join_bootstrap_pins_the_root_ca() {
    let ca = RootCa::generate("cluster-1").expect("ca");
    let server = TlsServer::new(&issue(&ca, "m0", Role::Manager)).expect("server");
    let (addr, _stop) = serve(&server, ca.cert_pem()).await;
    let addr = addr.to_string();

    // (e) the right token: the root comes back, and then verifies the manager.
    let token = token::parse(&JoinToken::generate(ca.cert_der())).expect("token");
    let root = fetch_root_ca(&addr, &token).await.expect("root");
    assert_eq!(
        certs_from_pem(&root, "root").expect("pem")[0].as_ref(),
        ca.cert_der()
    );
    let channel = connect_with_roots(&addr, &root, None)
        .await
        .expect("verified");
    assert!(whoami(channel, "").await.is_ok());

    // A token of another CA is refused before anything else is sent.
    let other = RootCa::generate("cluster-1").expect("other");
    let wrong = token::parse(&JoinToken::generate(other.cert_der())).expect("token");
    let error = fetch_root_ca(&addr, &wrong).await.expect_err("mismatch");
    assert!(matches!(error, CaError::CaMismatch), "{error}");
    assert!(error.to_string().contains("does not match the join token"));
}

#[tokio::test]
async fn set_identity_rotates_the_server_in_place() {
    let old = RootCa::generate("cluster-1").expect("old");
    let server = TlsServer::new(&issue(&old, "m0", Role::Manager)).expect("server");
    let (addr, _stop) = serve(&server, old.cert_pem()).await;
    let addr = addr.to_string();
    let old_client = issue(&old, "w1", Role::Worker);
    assert!(
        whoami(connect(&addr, &old_client).await.expect("old"), "")
            .await
            .is_ok()
    );

    // (f) rotate to a new root: new clients trusting it connect, old ones no longer do.
    let new = RootCa::generate("cluster-1").expect("new");
    server
        .set_identity(&issue(&new, "m0", Role::Manager))
        .expect("swap");
    let new_client = issue(&new, "w1", Role::Worker);
    let seen = whoami(connect(&addr, &new_client).await.expect("new"), "")
        .await
        .expect("ok");
    assert_eq!(seen.node_id, "w1");
    assert!(connect(&addr, &old_client).await.is_err());
}

#[tokio::test]
async fn a_removed_manager_is_refused_with_a_reason_once_the_cluster_lists_it() {
    use crate::store::{Read as _, direct_store};
    use mesh_proto::Cluster;

    let ca = RootCa::generate("cluster-1").expect("ca");
    let server = TlsServer::new(&issue(&ca, "m0", Role::Manager)).expect("server");
    let store = direct_store();
    store
        .update(|tx| {
            tx.create(Cluster {
                id: "cluster-1".into(),
                ..Default::default()
            })
        })
        .await
        .expect("cluster");
    let (addr, _stop) = serve_behind(&server, ca.cert_pem(), Some(&store)).await;
    let addr = addr.to_string();
    // One connection each, kept across the removal: the gate judges every call, not connections.
    let removed = connect(&addr, &issue(&ca, "m1", Role::Manager))
        .await
        .expect("connect m1");
    let kept = connect(&addr, &issue(&ca, "m2", Role::Manager))
        .await
        .expect("connect m2");
    let seen = whoami(removed.clone(), "manager-only").await;
    assert_eq!(seen.expect("before").node_id, "m1");

    store
        .update(|tx| {
            let mut cluster = tx.list::<Cluster>().remove(0);
            cluster.removed_nodes.push("m1".into());
            tx.update(cluster)
        })
        .await
        .expect("remove m1");
    let refusal = whoami(removed, "manager-only")
        .await
        .expect_err("m1 is refused at once, on its open connection");
    assert_eq!(refusal.code(), tonic::Code::PermissionDenied);
    assert_eq!(refusal.message(), REMOVED_NODE);
    let seen = whoami(kept, "manager-only").await;
    assert_eq!(seen.expect("kept").node_id, "m2");
}
