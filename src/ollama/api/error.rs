//! Errors of talking to an Ollama server: each names the server, the request and what it said.

use std::path::PathBuf;

/// Why a request to the Ollama server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Nothing answers at the server's address.
    #[error("no Ollama server answers at {host} (hint: start it with `ollama serve`, or set OLLAMA_HOST to where it listens)")]
    NotRunning {
        /// The server's base URL.
        host: String,
        /// What the connection attempt said.
        source: Box<ureq::Transport>,
    },
    /// The connection failed during a request (reset, closed early, a TLS or DNS failure).
    #[error("{request} to the Ollama server at {host} failed")]
    Transport {
        /// The server's base URL.
        host: String,
        /// The request, `POST /api/create`.
        request: String,
        /// What failed.
        source: Box<ureq::Transport>,
    },
    /// The connection broke while the server's streamed answer was read.
    #[error("reading the answer of the Ollama server at {host} to {request}")]
    ReadAnswer {
        /// The server's base URL.
        host: String,
        /// The request.
        request: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server answered with an error status.
    #[error("the Ollama server at {host} refused {request} (HTTP {status}): {message}")]
    Refused {
        /// The server's base URL.
        host: String,
        /// The request.
        request: String,
        /// The HTTP status.
        status: u16,
        /// The server's own message (its `error` field, else the body's text).
        message: String,
    },
    /// The server reported an error in the middle of a streamed answer.
    #[error("the Ollama server at {host} failed {request}: {message}")]
    Failed {
        /// The server's base URL.
        host: String,
        /// The request.
        request: String,
        /// The server's own message.
        message: String,
    },
    /// The server's answer is not what Ollama's API documents.
    #[error("the Ollama server at {host} answered {request} with {detail}, not what Ollama's API sends")]
    BadAnswer {
        /// The server's base URL.
        host: String,
        /// The request.
        request: String,
        /// What was wrong.
        detail: String,
    },
    /// A file to hash or upload could not be read.
    #[error("reading {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl ApiError {
    /// The server's own message, for an error the server reported.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            ApiError::Refused { message, .. } | ApiError::Failed { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Whether the error is a failure to reach the server or to read a file (exit code 4).
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            ApiError::NotRunning { .. }
                | ApiError::Transport { .. }
                | ApiError::ReadAnswer { .. }
                | ApiError::ReadFile { .. }
        )
    }

    /// Whether the server refused the request as a bad one (a 4xx status: exit code 3).
    pub fn is_refused(&self) -> bool {
        matches!(self, ApiError::Refused { status: 400..=499, .. })
    }
}
