//! Errors of the camera simulator (start-up only: per-session errors are logged, never returned).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the camera simulator could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum CamSimError {
    #[error("camsim: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("camsim: clip {}: {reason}", path.display())]
    Clip { path: PathBuf, reason: String },
    #[error("camsim: invalid configuration: {0}")]
    Config(String),
    #[error("camsim: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl CamSimError {
    pub(crate) fn clip(path: &std::path::Path, reason: impl Into<String>) -> Self {
        CamSimError::Clip {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
