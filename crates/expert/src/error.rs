//! Errors of the expert stage.

/// Everything that can go wrong training an expert or the dense baseline.
#[derive(Debug, thiserror::Error)]
pub enum ExpertError {
    /// A setting or argument is invalid (the message names it).
    #[error("{0}")]
    Config(String),
    /// A stage folder could not be claimed or written (lock, ownership, identity, I/O).
    #[error(transparent)]
    Stage(#[from] smalltalk_stage::StageError),
    /// The model or trainer failed.
    #[error(transparent)]
    Lm(#[from] smalltalk_lm::LmError),
    /// The partition or the training rows could not be read.
    #[error(transparent)]
    Routing(#[from] smalltalk_routing::RoutingError),
}

/// Result with [`ExpertError`].
pub type Result<T> = std::result::Result<T, ExpertError>;
