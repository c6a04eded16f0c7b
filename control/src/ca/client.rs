//! Dialing 2377: gRPC channels over mutual TLS that verify the manager against the cluster's
//! roots, and the bootstrap a joining node runs to learn (and pin) the root CA from its token.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use mesh_proto::GetRootCaCertificateRequest;
use mesh_proto::node_ca_client::NodeCaClient;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{debug, warn};

use super::error::CaError;
use super::tls::{
    MANAGER_SERVER_NAME, TlsIdentity, bootstrap_client_config, certs_from_pem, client_config,
};
use super::token::ParsedToken;

/// Bound on the TCP connect: a manager whose packets are dropped is given up on this soon.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on the TLS handshake once connected, on both sides: a manager that answered the
/// connection is alive, and one busy with thousands of agents reconnecting at once (a restarted
/// leader at 10,000 nodes) finishes the handshakes it has started. Given up after 3 s, they were
/// all done for nothing and tried again, and the retries kept the manager as busy as before.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an HTTP/2 ping checks a channel, also while idle, and how long its answer may
/// take: a peer whose packets are dropped (not refused) is found out within their sum, and every
/// call and stream on the channel fails then instead of waiting for TCP to give up. An agent
/// finds a silent manager sooner, by its heartbeats (bounded by the period); the ping's answer
/// may take long, for a manager busy with thousands of agents answers late but is alive: with
/// 3 s, a restarted leader at 10,000 nodes lost tens of thousands of live connections, each
/// one's agent came back for another handshake and session, and the manager never caught up.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The deadline of a call that sets none of its own (a stream's deadline covers its opening).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A channel to the manager at `addr` (`host:port`): the manager must prove a `mesh-manager`
/// certificate from `identity.roots`; the node presents its own certificate.
pub async fn connect(addr: &str, identity: &TlsIdentity) -> Result<Channel, CaError> {
    let config = client_config(&identity.roots, Some(identity))?;
    endpoint(addr)?
        .connect_with_connector(connector(addr, config))
        .await
        .map_err(|e| CaError::connect(addr, &e))
}

/// Like [`connect`], but connects on first use (and reconnects after failures).
pub fn connect_lazy(addr: &str, identity: &TlsIdentity) -> Result<Channel, CaError> {
    let config = client_config(&identity.roots, Some(identity))?;
    Ok(endpoint(addr)?.connect_with_connector_lazy(connector(addr, config)))
}

/// A channel that verifies the manager against `roots_pem`, presenting `client_identity`'s
/// certificate if given (a joining node has none: it calls `IssueNodeCertificate` with its token).
pub async fn connect_with_roots(
    addr: &str,
    roots_pem: &[u8],
    client_identity: Option<&TlsIdentity>,
) -> Result<Channel, CaError> {
    let roots = certs_from_pem(roots_pem, "root CA PEM")?;
    let config = client_config(&roots, client_identity)?;
    endpoint(addr)?
        .connect_with_connector(connector(addr, config))
        .await
        .map_err(|e| CaError::connect(addr, &e))
}

/// Asks the manager at `addr` for its root CA without trusting it yet, and keeps only the
/// certificate whose digest the join token pins; if none matches, fails with
/// [`CaError::CaMismatch`] before anything else is sent. Returns that certificate as PEM.
pub async fn fetch_root_ca(addr: &str, token: &ParsedToken) -> Result<Vec<u8>, CaError> {
    let config = bootstrap_client_config()?;
    let channel = endpoint(addr)?
        .connect_with_connector(connector(addr, config))
        .await
        .map_err(|e| CaError::connect(addr, &e))?;
    let response = NodeCaClient::new(channel)
        .get_root_ca_certificate(GetRootCaCertificateRequest {})
        .await
        .map_err(|status| CaError::Refused(status.message().to_owned()))?
        .into_inner();
    let bundle = String::from_utf8(response.certificate)
        .map_err(|_| CaError::invalid("root CA from the manager", "not PEM text"))?;
    for block in pem_blocks(&bundle) {
        let der = certs_from_pem(block.as_bytes(), "root CA from the manager")?;
        if der.len() == 1 && der.iter().all(|cert| token.matches_ca(cert)) {
            debug!(%addr, "root ca matches the join token");
            return Ok(format!("{}\n", block.trim()).into_bytes());
        }
    }
    warn!(%addr, "root ca does not match the join token");
    Err(CaError::CaMismatch)
}

/// The `-----BEGIN …-----`…`-----END …-----` blocks of a PEM bundle, each as its own text.
fn pem_blocks(bundle: &str) -> Vec<&str> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = bundle;
    while let Some(end) = rest.find(END) {
        let (block, tail) = rest.split_at(end + END.len());
        blocks.push(block.trim());
        rest = tail;
    }
    blocks
}

fn endpoint(addr: &str) -> Result<Endpoint, CaError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| CaError::connect(addr, &e))?
        .connect_timeout(CONNECT_TIMEOUT + TLS_HANDSHAKE_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

/// A tower connector doing TCP connect plus the TLS handshake as `mesh-manager`.
fn connector(
    addr: &str,
    config: ClientConfig,
) -> impl tower::Service<
    Uri,
    Response = TlsIo,
    Error = io::Error,
    Future = impl Future<Output = io::Result<TlsIo>> + Send,
> + Send
+ Clone
+ 'static {
    let addr = addr.to_owned();
    let connector = TlsConnector::from(Arc::new(config));
    tower::service_fn(move |_: Uri| {
        let addr = addr.clone();
        let connector = connector.clone();
        async move {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tcp connect timed out"))??;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(MANAGER_SERVER_NAME)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out")
                })??;
            Ok(TokioIo::new(stream))
        }
    })
}
