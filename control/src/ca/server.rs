//! The 2377 listener: accepts TCP connections, runs the TLS handshakes concurrently with the
//! current (hot-swappable) server configuration, and yields connections that carry the peer's
//! verified identity into every request's extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use super::client::TLS_HANDSHAKE_TIMEOUT;
use super::error::CaError;
use super::identity::NodeIdentity;
use super::tls::{TlsIdentity, server_config};

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Handshaken connections waiting for the gRPC server to pick them up.
const BACKLOG: usize = 64;

/// The TLS listener for 2377. Cloning shares the configuration: a [`set_identity`]
/// (certificate renewal, CA rotation) applies to every new connection of every clone, without
/// restarting the listener; established connections keep their session.
///
/// [`set_identity`]: TlsServer::set_identity
#[derive(Clone)]
pub struct TlsServer {
    config: Arc<RwLock<Current>>,
}

/// The configuration new handshakes use, and the verifier that judges client chains after them.
#[derive(Clone)]
struct Current {
    config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl Current {
    fn new(identity: &TlsIdentity) -> Result<Self, CaError> {
        let (config, verifier) = server_config(identity)?;
        Ok(Self {
            config: Arc::new(config),
            verifier,
        })
    }
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

impl TlsServer {
    pub fn new(identity: &TlsIdentity) -> Result<Self, CaError> {
        Ok(Self {
            config: Arc::new(RwLock::new(Current::new(identity)?)),
        })
    }

    /// Replaces the certificate, key and trusted roots for new connections.
    pub fn set_identity(&self, identity: &TlsIdentity) -> Result<(), CaError> {
        let current = Current::new(identity)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = current;
        debug!("tls server identity replaced");
        Ok(())
    }

    fn current(&self) -> Current {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The stream of established TLS connections on `listener`, for
    /// `tonic::transport::Server::serve_with_incoming[_shutdown]`. A failed handshake is logged
    /// and skipped; the accept loop ends when the stream is dropped.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = Result<TlsConnection, io::Error>> + Send + 'static {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => break,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "tcp accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let current = server.current();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Some(conn) = handshake(current, tcp, remote).await else {
                        return;
                    };
                    // The receiver is gone only when the server stopped.
                    let _ = tx.send(Ok(conn)).await;
                });
            }
            debug!("tls accept loop stopped");
        });
        ReceiverStream::new(rx)
    }
}

async fn handshake(current: Current, tcp: TcpStream, remote: SocketAddr) -> Option<TlsConnection> {
    let acceptor = TlsAcceptor::from(current.config.clone());
    if let Err(error) = tcp.set_nodelay(true) {
        debug!(%remote, %error, "cannot set TCP_NODELAY");
    }
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            debug!(%remote, %error, "tls handshake failed");
            return None;
        }
        Err(_) => {
            debug!(%remote, "tls handshake timed out");
            return None;
        }
    };
    let (identity, rejected) = match stream.get_ref().1.peer_certificates() {
        Some([leaf, intermediates @ ..]) => judge_chain(&*current.verifier, leaf, intermediates),
        _ => (None, None),
    };
    if let Some(reason) = &rejected {
        debug!(%remote, %reason, "peer certificate not trusted");
    }
    debug!(
        %remote,
        node.id = identity.as_ref().map(|i| i.node_id.as_str()),
        role = identity.as_ref().map(|i| i.role.as_ou()),
        "tls connection accepted"
    );
    Some(TlsConnection {
        stream,
        info: PeerInfo {
            remote_addr: Some(remote),
            identity,
            rejected,
        },
    })
}

/// A presented chain's node identity, when the roots vouch for it and it is a node certificate;
/// otherwise why not.
fn judge_chain(
    verifier: &dyn ClientCertVerifier,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> (Option<NodeIdentity>, Option<String>) {
    if let Err(error) = verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
        return (None, Some(error.to_string()));
    }
    match NodeIdentity::from_der(leaf) {
        Ok(identity) => (Some(identity), None),
        Err(error) => (None, Some(error.to_string())),
    }
}

/// What the transport knows about the other end of a connection; tonic puts it in the
/// extensions of every request received on it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// From the client certificate, which rustls verified against the cluster's roots; `None`
    /// when the client presented none (a node that is joining) or one of no trust.
    pub identity: Option<NodeIdentity>,
    /// Why a certificate the client presented was not trusted: no root of the cluster vouches
    /// for it, it expired, or it is no node certificate. Every call but fetching the root CA is
    /// refused on such a connection.
    pub rejected: Option<String>,
}

/// A server-side TLS connection on 2377.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl TlsConnection {
    pub fn peer_info(&self) -> &PeerInfo {
        &self.info
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
