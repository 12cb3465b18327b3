//! What the client, the wire checks and the reporter can fail with: one enum for the crate.

use std::time::Duration;

/// What a call of this crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint could be reached.
    #[error("no registry endpoint reachable (tried {tried}): {last}")]
    Unreachable {
        /// Endpoints tried.
        tried: usize,
        /// The last transport error.
        last: String,
    },
    /// An endpoint answered with an error.
    #[error("HTTP {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error message from the body.
        message: String,
    },
    /// The request went out but no answer came back: the outcome is unknown.
    #[error("request outcome unknown: {0}")]
    Unknown(String),
    /// A value cannot work: a field out of bounds, a reporter without an endpoint or with a
    /// zero interval.
    #[error("{0}")]
    Invalid(String),
    /// A TLS file could not be read.
    #[error("reading {what} {}: {source}", path.display())]
    TlsFile {
        /// Which file (`the CA bundle`, `the client certificate`, `the client key`).
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS file is not the PEM it should be.
    #[error("{0}: {1}")]
    TlsPem(&'static str, #[source] reqwest::Error),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// The reporter's task ended abnormally (a panic in a health check, or a cancelled task).
    #[error("reporter task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The reporter ended while a wait on its counters went on.
    #[error("the reporter ended while waiting for: {0}")]
    Ended(String),
    /// A wait on the reporter's counters timed out.
    #[error("timed out after {timeout:?} waiting for: {what}")]
    Timeout {
        /// How long was waited.
        timeout: Duration,
        /// What was waited for.
        what: String,
    },
}

impl ClientError {
    /// The HTTP status, when an endpoint answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}
