//! meshd's life: connect to Docker, resume cluster membership, serve the local socket until a
//! signal, then stop — leaving the containers running, to be re-adopted at the next start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::daemon::{Daemon, DaemonError};
use crate::exec::{DockerExecutor, ExecError};
use crate::swarm::SwarmService;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot connect to Docker at {host}: {source}")]
    Docker { host: String, source: ExecError },
    #[error("cannot create the socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Daemon(#[from] DaemonError),
    #[error("the local API server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot serve metrics on {addr} (--metrics-addr): {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
}

pub async fn serve(config: Config) -> Result<(), ServeError> {
    // Bound first: a taken or wrong address stops meshd before it touches anything.
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some((
            addr,
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Metrics { addr, source })?,
        )),
        None => None,
    };
    let executor = DockerExecutor::connect(&config.docker_host, config.hostname.clone())
        .await
        .and_then(|executor| executor.with_sandboxes_from(&config.state_dir))
        .map_err(|source| ServeError::Docker {
            host: config.docker_host.clone(),
            source,
        })?;
    // With overlay networking on, tasks resolve through the embedded DNS in their sandbox.
    let executor = if config.gossip_port != 0 {
        executor.with_dns(vec![crate::dns::RESOLVER_ADDR.to_string()])
    } else {
        executor
    };
    let socket = config.socket.clone();
    let daemon = Daemon::new(config, Arc::new(executor));
    daemon.resume().await?;
    let metrics = metrics_listener.map(|(addr, listener)| {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tracing::info!(%addr, "serving metrics at /metrics");
        let served = tokio::spawn(crate::metrics::http::serve(
            listener,
            scrape(&daemon),
            stopped,
        ));
        (stop, served)
    });

    let listener = bind_socket(&socket)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    tracing::info!(socket = %socket.display(), "meshd ready");
    let served = tonic::transport::Server::builder()
        .add_service(SwarmService::server(daemon.clone()))
        .add_service(daemon.api().grpc_service())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("shutting down");
        })
        .await;
    if let Some((stop, served)) = metrics {
        stop.send_replace(true);
        let _ = served.await;
    }
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    Ok(served?)
}

/// A scrape: the daemon's state now, written out with its instruments.
fn scrape(daemon: &Arc<Daemon>) -> crate::metrics::http::Scrape {
    let daemon = Arc::downgrade(daemon);
    Arc::new(move || {
        let daemon = daemon.clone();
        Box::pin(async move {
            match daemon.upgrade() {
                Some(daemon) => daemon.metrics().render(daemon.metrics_sample().await),
                None => String::new(),
            }
        })
    })
}

/// Binds the local API socket, readable and writable by root (and its group) only.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    let err = |source| ServeError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}
