//! The 2377 listener: accepts TCP connections, runs the TLS handshakes concurrently with the
//! current (hot-swappable) server configuration, and yields connections that carry the peer's
//! verified identity into every request's extensions.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use mesh_proto::Cluster;

use super::error::CaError;
use super::identity::NodeIdentity;
use super::tls::{TlsIdentity, server_config};
use crate::store::{Event, MemoryStore, Read as _};

/// How long a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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
    config: Arc<RwLock<Arc<ServerConfig>>>,
    removed: Arc<RwLock<HashSet<String>>>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

impl TlsServer {
    pub fn new(identity: &TlsIdentity) -> Result<Self, CaError> {
        Ok(Self {
            config: Arc::new(RwLock::new(Arc::new(server_config(identity)?))),
            removed: Arc::default(),
        })
    }

    /// Replaces the certificate, key and trusted roots for new connections.
    pub fn set_identity(&self, identity: &TlsIdentity) -> Result<(), CaError> {
        let config = Arc::new(server_config(identity)?);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        debug!("tls server identity replaced");
        Ok(())
    }

    /// The ids of nodes removed from the cluster. Their certificates stay valid until they
    /// expire, so new connections presenting one are marked ([`PeerInfo::removed`]) and every
    /// API refuses them with a message that says why.
    pub fn set_removed_nodes(&self, node_ids: impl IntoIterator<Item = String>) {
        *self.removed.write().unwrap_or_else(|e| e.into_inner()) = node_ids.into_iter().collect();
    }

    /// Keeps the removed nodes in step with the cluster object of `store`, until the store's
    /// event stream closes.
    pub async fn follow_removed_nodes(self, store: Arc<MemoryStore>) {
        loop {
            let (removed, mut events) = store.view_and_watch(|tx| {
                tx.list::<Cluster>()
                    .into_iter()
                    .next()
                    .map(|c| c.removed_nodes)
                    .unwrap_or_default()
            });
            self.set_removed_nodes(removed);
            loop {
                match events.recv().await {
                    Ok(event) if event.as_a::<Cluster>().is_some() => break,
                    Ok(Event::Reset) | Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                    Ok(_) => {}
                }
            }
        }
    }

    fn is_removed(&self, node_id: &str) -> bool {
        self.removed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(node_id)
    }

    fn current(&self) -> Arc<ServerConfig> {
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
                let acceptor = TlsAcceptor::from(server.current());
                let tx = tx.clone();
                let server = server.clone();
                tokio::spawn(async move {
                    let Some(mut conn) = handshake(acceptor, tcp, remote).await else {
                        return;
                    };
                    if let Some(id) = &conn.info.identity
                        && server.is_removed(&id.node_id)
                    {
                        debug!(%remote, node.id = %id.node_id, "connection from a removed node");
                        conn.info.removed = true;
                    }
                    // The receiver is gone only when the server stopped.
                    let _ = tx.send(Ok(conn)).await;
                });
            }
            debug!("tls accept loop stopped");
        });
        ReceiverStream::new(rx)
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Option<TlsConnection> {
    if let Err(error) = tcp.set_nodelay(true) {
        debug!(%remote, %error, "cannot set TCP_NODELAY");
    }
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
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
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| match NodeIdentity::from_der(leaf) {
            Ok(identity) => Some(identity),
            Err(error) => {
                debug!(%remote, %error, "peer certificate is not a node certificate");
                None
            }
        });
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
            removed: false,
        },
    })
}

/// What the transport knows about the other end of a connection; tonic puts it in the
/// extensions of every request received on it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// From the client certificate, which rustls verified against the cluster's roots; `None`
    /// when the client presented none (a node that is joining).
    pub identity: Option<NodeIdentity>,
    /// The certificate's node was removed from the cluster: every API refuses it.
    pub removed: bool,
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
