//! The connection to the local meshd: gRPC over its unix socket.

use crate::error::CliError;
use hyper_util::rt::TokioIo;
use mesh_proto::control_client::ControlClient;
use mesh_proto::swarm_client::SwarmClient;
use std::path::PathBuf;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Both of meshd's local APIs over one channel.
pub struct Client {
    pub control: ControlClient<Channel>,
    pub swarm: SwarmClient<Channel>,
}

/// The socket path of `-H`: `unix:///path` or a bare absolute `/path`.
pub fn socket_path(host: &str) -> Result<PathBuf, CliError> {
    let path = host.strip_prefix("unix://").unwrap_or(host);
    if path.starts_with('/') && path.len() > 1 {
        Ok(PathBuf::from(path))
    } else {
        Err(CliError::Invalid(format!(
            "invalid host {host:?}: expected unix:///path/to/meshd.sock or /path/to/meshd.sock"
        )))
    }
}

/// The host as printed in messages: always in `unix://` form.
pub fn display_host(host: &str) -> String {
    if host.starts_with("unix://") {
        host.to_string()
    } else {
        format!("unix://{host}")
    }
}

/// Connects now (not lazily), so that a missing daemon is reported before anything else.
pub async fn connect(host: &str) -> Result<Client, CliError> {
    let path = socket_path(host)?;
    let unreachable = || CliError::Connect {
        host: display_host(host),
    };
    // The URI is required by tonic but unused: the connector below dials the socket.
    let endpoint = Endpoint::try_from("http://[::]:50051").map_err(|_| unreachable())?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|error| {
            tracing::debug!(%error, "connect failed");
            unreachable()
        })?;
    Ok(Client {
        control: ControlClient::new(channel.clone()),
        swarm: SwarmClient::new(channel),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths() {
        let ok = [
            ("unix:///run/mesh/meshd.sock", "/run/mesh/meshd.sock"),
            ("/tmp/m.sock", "/tmp/m.sock"),
        ];
        for (host, want) in ok {
            assert_eq!(socket_path(host).ok(), Some(PathBuf::from(want)), "{host}");
        }
        for host in [
            "",
            "unix://",
            "tcp://1.2.3.4:2375",
            "relative.sock",
            "unix://rel",
        ] {
            let err = socket_path(host).expect_err(host);
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid host {host:?}: expected unix:///path/to/meshd.sock or \
                     /path/to/meshd.sock"
                )
            );
        }
        assert_eq!(display_host("/tmp/m.sock"), "unix:///tmp/m.sock");
        assert_eq!(
            display_host("unix:///run/mesh/meshd.sock"),
            "unix:///run/mesh/meshd.sock"
        );
    }
}
