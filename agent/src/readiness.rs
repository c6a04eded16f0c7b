//! When meshd is ready: when its local API socket answers a request the way meshctl makes one
//! (`Info`, which every node answers, in a cluster or not). A bound socket is not enough: its
//! backlog takes connections before anything serves them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use mesh_proto::InfoRequest;
use mesh_proto::swarm_client::SwarmClient;
use tokio::net::UnixStream;
use tonic::transport::Endpoint;

/// How long one attempt may take, and the pause between attempts.
const ATTEMPT: Duration = Duration::from_secs(2);
const PAUSE: Duration = Duration::from_millis(50);

/// Returns once `socket` answers an `Info` request; tries again until it does.
pub async fn until_answers(socket: &Path) {
    loop {
        match tokio::time::timeout(ATTEMPT, ask(socket.to_path_buf())).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => tracing::debug!(%error, "the API socket does not answer yet"),
            Err(_) => tracing::debug!("the API socket did not answer in time"),
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// One `Info` request over `socket`.
async fn ask(socket: PathBuf) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await?;
    SwarmClient::new(channel).info(InfoRequest {}).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not there, then bound but silent (connections sit in the backlog, or are accepted and
    /// never answered): not ready. Answering: ready.
    #[tokio::test]
    async fn only_an_answer_makes_ready() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("meshd.sock");
        let waiting = tokio::time::timeout(Duration::from_millis(300), until_answers(&socket));
        assert!(waiting.await.is_err(), "ready without a socket");

        let backlog_only = tokio::net::UnixListener::bind(&socket).unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(300), until_answers(&socket));
        assert!(waiting.await.is_err(), "ready with a socket nobody serves");

        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = backlog_only.accept().await {
                held.push(stream);
            }
        });
        let waiting = tokio::time::timeout(Duration::from_millis(300), until_answers(&socket));
        assert!(
            waiting.await.is_err(),
            "ready with a socket that accepts but never answers"
        );
        silent.abort();
        let _ = silent.await;

        std::fs::remove_file(&socket).unwrap();
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(mesh_proto::swarm_server::SwarmServer::new(Answering))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        tokio::time::timeout(Duration::from_secs(5), until_answers(&socket))
            .await
            .expect("ready once the socket answers");
        server.abort();
    }

    /// A Swarm service that answers `Info` and nothing else.
    struct Answering;

    #[tonic::async_trait]
    impl mesh_proto::swarm_server::Swarm for Answering {
        async fn init(
            &self,
            _: tonic::Request<mesh_proto::InitRequest>,
        ) -> Result<tonic::Response<mesh_proto::InitResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("init"))
        }
        async fn join(
            &self,
            _: tonic::Request<mesh_proto::JoinRequest>,
        ) -> Result<tonic::Response<mesh_proto::JoinResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("join"))
        }
        async fn leave(
            &self,
            _: tonic::Request<mesh_proto::LeaveRequest>,
        ) -> Result<tonic::Response<mesh_proto::LeaveResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("leave"))
        }
        async fn info(
            &self,
            _: tonic::Request<InfoRequest>,
        ) -> Result<tonic::Response<mesh_proto::InfoResponse>, tonic::Status> {
            Ok(tonic::Response::new(mesh_proto::InfoResponse::default()))
        }
    }
}
