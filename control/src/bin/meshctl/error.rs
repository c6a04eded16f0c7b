//! Everything that ends a meshctl command early, each rendered as one line.

use mesh_control::cli::InputError;
use mesh_control::cli::flags::FlagError;

/// Why a command failed. `main` prints `Connect` as is and the others after `Error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("Cannot connect to the mesh daemon at {host}. Is meshd running?")]
    Connect { host: String },
    /// The daemon refused the request; its message is meant for the user.
    #[error("{0}")]
    Status(String),
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// Beyond one of the managers' limits: the same line the daemon would answer.
    #[error(transparent)]
    Limit(#[from] mesh_control::limits::LimitError),
    /// Input that parsed but does not make sense (or not together with other input).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Input(#[from] InputError),
    /// The service did not converge: a task failed or was rejected.
    #[error("{0}")]
    Converge(String),
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().trim();
        if message.is_empty() {
            CliError::Status(format!("request failed: {:?}", status.code()))
        } else {
            // Keep the message to one line whatever the server sent.
            CliError::Status(message.lines().collect::<Vec<_>>().join("; "))
        }
    }
}

impl CliError {
    /// Whether this is stdout closed under us (`meshctl service ls | head -1`): not worth a word.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}
