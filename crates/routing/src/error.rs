//! Errors of routing and the partition stage.

use std::path::PathBuf;

/// Everything that can go wrong routing or partitioning.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// A setting or argument is invalid (the message names the key).
    #[error("{0}")]
    Config(String),
    /// The scorer (e.g. the router LMs) failed.
    #[error("scoring failed: {0}")]
    Scorer(crate::scorer::ScorerError),
    /// A stop was requested (`smalltalk_stage::stop`); finished chunks are saved and a rerun
    /// resumes after them.
    #[error("stopped on request; finished chunks are saved, rerun to resume")]
    Stopped,
    /// A text is too short to route.
    #[error("a text of {tokens} token(s) cannot be routed: the first token is not scored, so at least 2 are needed")]
    TooShort {
        /// Its length in tokens.
        tokens: usize,
    },
    /// The dataset could not be read.
    #[error(transparent)]
    Data(#[from] smalltalk_data::DataError),
    /// The assignment failed.
    #[error(transparent)]
    Partition(#[from] smalltalk_partition::PartitionError),
    /// The output folder could not be claimed or written.
    #[error(transparent)]
    Stage(#[from] smalltalk_stage::StageError),
    /// A file of the partition folder is malformed or does not match what it should.
    #[error("{path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl RoutingError {
    /// A bad partition file at `path`.
    pub fn state(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        RoutingError::State {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result with [`RoutingError`].
pub type Result<T> = std::result::Result<T, RoutingError>;
