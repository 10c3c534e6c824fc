//! Errors of the router stage.

use std::path::PathBuf;

/// Everything that can go wrong training routers, partitioning or routing.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A setting is invalid (the message names the key).
    #[error("invalid router config: {0}")]
    Config(String),
    /// A stage folder could not be claimed or written (lock, ownership, identity, I/O).
    #[error(transparent)]
    Stage(#[from] smalltalk_stage::StageError),
    /// The model, trainer or scoring failed.
    #[error(transparent)]
    Lm(#[from] smalltalk_lm::LmError),
    /// The dataset could not be read.
    #[error(transparent)]
    Data(#[from] smalltalk_data::DataError),
    /// Routing or the training rows failed.
    #[error(transparent)]
    Routing(#[from] smalltalk_routing::RoutingError),
    /// The assignment failed.
    #[error(transparent)]
    Partition(#[from] smalltalk_partition::PartitionError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file this stage wrote earlier is malformed or does not match the current settings.
    #[error("{path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl RouterError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RouterError::Io {
            path: path.into(),
            source,
        }
    }

    /// A bad state file at `path`.
    pub fn state(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        RouterError::State {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result with [`RouterError`].
pub type Result<T> = std::result::Result<T, RouterError>;
