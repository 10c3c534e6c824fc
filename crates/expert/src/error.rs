//! Errors of the expert stage.

/// Everything that can go wrong training an expert or the dense baseline.
#[derive(Debug, thiserror::Error)]
pub enum ExpertError {
    /// A setting or argument is invalid (the message names it).
    #[error("{0}")]
    Config(String),
    /// The model or trainer failed.
    #[error(transparent)]
    Lm(#[from] smalltalk_lm::LmError),
    /// The partition could not be read.
    #[error(transparent)]
    Router(#[from] smalltalk_router::RouterError),
}

/// Result with [`ExpertError`].
pub type Result<T> = std::result::Result<T, ExpertError>;
