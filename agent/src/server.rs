//! meshd's life: connect to Docker, resume cluster membership, serve the local socket until a
//! signal, then stop — leaving the containers running, to be re-adopted at the next start.
//!
//! Under systemd (`Type=notify`) meshd says `READY=1` only once its own API socket answers a
//! request, so that units ordered after it, and `systemctl start` itself, find meshctl working.

use sd_notify::NotifyState;
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
    /// Docker is missing or not answering: named as the dependency it is, with what to do.
    #[error("{source} (meshd needs Docker: start dockerd, or point --docker-host at it)")]
    Docker { source: ExecError },
    #[error("{0}")]
    Sandboxes(ExecError),
    #[error("cannot create the socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Daemon(#[from] DaemonError),
    #[error("the local API server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
}

pub async fn serve(config: Config) -> Result<(), ServeError> {
    let executor = DockerExecutor::connect(&config.docker_host, config.hostname.clone())
        .await
        .map_err(|source| ServeError::Docker { source })?
        .with_sandboxes_from(&config.state_dir)
        .map_err(ServeError::Sandboxes)?;
    // With overlay networking on, tasks resolve through the embedded DNS in their sandbox.
    let executor = if config.gossip_port != 0 {
        executor.with_dns(vec![crate::dns::RESOLVER_ADDR.to_string()])
    } else {
        executor
    };
    let socket = config.socket.clone();
    let daemon = Daemon::new(config, Arc::new(executor));
    daemon.resume().await?;

    let listener = bind_socket(&socket)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    let server = tonic::transport::Server::builder()
        .add_service(SwarmService::server(daemon.clone()))
        .add_service(daemon.api().grpc_service())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("shutting down");
            notify(&[NotifyState::Stopping]);
        });
    tokio::pin!(server);
    // Serving starts with the first poll of `server`; ready is said once a request came back.
    let served = tokio::select! {
        served = &mut server => served,
        () = crate::readiness::until_answers(&socket) => {
            tracing::info!(socket = %socket.display(), "meshd ready");
            notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
            server.await
        }
    };
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    Ok(served?)
}

/// Tells systemd (when it started meshd with `NOTIFY_SOCKET`) how meshd is doing.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
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
