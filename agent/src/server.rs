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
use tokio::sync::oneshot;
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
    #[error("--secrets-dir {}: {source}", path.display())]
    SecretsDir {
        path: PathBuf,
        source: crate::netlink::NetlinkError,
    },
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
    #[error("--group {name}: {reason}")]
    Group { name: String, reason: String },
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot start the local API's thread: {0}")]
    Runtime(std::io::Error),
}

pub async fn serve(config: Config) -> Result<(), ServeError> {
    let group = socket_group(config.group.as_deref())?;
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
        .map_err(|source| ServeError::Docker { source })?
        .with_sandboxes_from(&config.state_dir)
        .map_err(ServeError::Sandboxes)?;
    // With overlay networking on, tasks resolve through the embedded DNS in their sandbox.
    let executor = if config.gossip_port != 0 {
        executor.with_dns(vec![crate::dns::RESOLVER_ADDR.to_string()])
    } else {
        executor
    };
    let files = crate::taskfiles::TaskFiles::open(&config.secrets_dir).map_err(|source| {
        ServeError::SecretsDir {
            path: config.secrets_dir.clone(),
            source,
        }
    })?;
    let socket = config.socket.clone();
    let daemon = Daemon::new(config, Arc::new(executor), Some(Arc::new(files)));
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

    let listener = bind_socket(&socket, group)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    let (stop, stopped) = oneshot::channel();
    let mut api = serve_local_api(daemon.clone(), listener, stopped)?;
    // Ready is said once a request over the socket came back.
    let ready = crate::readiness::until_answers(&socket);
    tokio::pin!(ready);
    let mut announced = false;
    let ended = loop {
        tokio::select! {
            _ = terminate.recv() => break None,
            _ = interrupt.recv() => break None,
            served = &mut api => break Some(served),
            () = &mut ready, if !announced => {
                announced = true;
                tracing::info!(socket = %socket.display(), "meshd ready");
                notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
            }
        }
    };
    let served = match ended {
        Some(served) => served,
        None => {
            tracing::info!("shutting down");
            notify(&[NotifyState::Stopping]);
            let _ = stop.send(());
            api.await
        }
    };
    if let Some((stop, served)) = metrics {
        stop.send_replace(true);
        let _ = served.await;
    }
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    // A server thread that ended without a word panicked (the panic is on stderr).
    served.unwrap_or_else(|_| {
        Err(ServeError::Runtime(std::io::Error::other(
            "the local API's thread stopped unexpectedly",
        )))
    })
}

/// Serves the local socket's API (meshctl's) on a thread and runtime of its own, so that its
/// calls never wait for a runtime worker that a reconciler's pass over many tasks keeps busy:
/// the kernel shares the cores between them instead. Its listener is registered with that
/// runtime, so accepting does not depend on the main runtime's I/O driver either. The result
/// arrives once `stop` fires and the server has drained.
fn serve_local_api(
    daemon: Arc<Daemon>,
    listener: std::os::unix::net::UnixListener,
    stop: oneshot::Receiver<()>,
) -> Result<oneshot::Receiver<Result<(), ServeError>>, ServeError> {
    let (done, result) = oneshot::channel();
    let main = tokio::runtime::Handle::current();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    std::thread::Builder::new()
        .name("meshd-api".into())
        .spawn(move || {
            let served = runtime.block_on(async move {
                let listener =
                    tokio::net::UnixListener::from_std(listener).map_err(ServeError::Runtime)?;
                tonic::transport::Server::builder()
                    .add_service(SwarmService::server(daemon.clone(), main))
                    .add_service(daemon.api().grpc_service())
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                        let _ = stop.await;
                    })
                    .await
                    .map_err(ServeError::Serve)
            });
            let _ = done.send(served);
        })
        .map_err(ServeError::Runtime)?;
    Ok(result)
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

/// Tells systemd (when it started meshd with `NOTIFY_SOCKET`) how meshd is doing.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

/// The group given the local API socket besides root: `name` when given ("" for none), else
/// [`DEFAULT_GROUP`] when it exists.
pub fn socket_group(name: Option<&str>) -> Result<Option<nix::unistd::Gid>, ServeError> {
    let (name, required) = match name {
        Some("") => return Ok(None),
        Some(name) => (name, true),
        None => (DEFAULT_GROUP, false),
    };
    let failed = |reason: String| ServeError::Group {
        name: name.to_owned(),
        reason,
    };
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(Some(group.gid)),
        Ok(None) if !required => Ok(None),
        Ok(None) => Err(failed("no such group".to_owned())),
        Err(errno) => Err(failed(format!("cannot look the group up: {errno}"))),
    }
}

/// The group the local API socket belongs to when it exists, as Docker's socket belongs to
/// `docker`: its members run meshctl without root.
pub const DEFAULT_GROUP: &str = "mesh";

/// Binds the local API socket, readable and writable by root and `group` only.
fn bind_socket(
    path: &Path,
    group: Option<nix::unistd::Gid>,
) -> Result<std::os::unix::net::UnixListener, ServeError> {
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
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(gid)).map_err(|errno| err(errno.into()))?;
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_empty_group_keeps_the_socket_roots_alone() {
        assert_eq!(socket_group(Some("")).expect("no group"), None);
    }

    #[test]
    fn a_named_group_must_exist() {
        assert_eq!(
            socket_group(Some("root")).expect("root exists"),
            Some(nix::unistd::Gid::from_raw(0))
        );
        let err = socket_group(Some("no-such-mesh-group")).expect_err("refused");
        assert_eq!(err.to_string(), "--group no-such-mesh-group: no such group");
    }

    #[test]
    fn the_default_group_is_optional() {
        let exists = nix::unistd::Group::from_name(DEFAULT_GROUP)
            .expect("lookup")
            .map(|g| g.gid);
        assert_eq!(socket_group(None).expect("default"), exists);
    }

    #[test]
    fn the_socket_belongs_to_the_group_with_mode_0660() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meshd.sock");
        // A group other than the one the socket is created with, so that only the chown gives it.
        let own = nix::unistd::getgid();
        let group = if nix::unistd::geteuid().is_root() {
            nix::unistd::Gid::from_raw(own.as_raw().wrapping_add(1))
        } else {
            let groups = nix::unistd::getgroups().expect("groups");
            groups.into_iter().find(|g| *g != own).unwrap_or(own)
        };
        let _listener = bind_socket(&path, Some(group)).expect("bound");
        let meta = std::fs::metadata(&path).expect("socket");
        assert_eq!(meta.gid(), group.as_raw());
        assert_eq!(meta.mode() & 0o777, 0o660);
    }
}
