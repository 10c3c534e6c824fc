//! Errors of evaluation, routing texts and generation.

/// Everything that can go wrong evaluating or using a mixture.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A setting, argument or input does not fit (the message names it).
    #[error("{0}")]
    Config(String),
    /// A model could not be loaded or run.
    #[error(transparent)]
    Lm(#[from] smalltalk_lm::LmError),
    /// The routers could not be loaded.
    #[error(transparent)]
    Router(#[from] smalltalk_router::RouterError),
    /// Routing failed.
    #[error(transparent)]
    Routing(#[from] smalltalk_routing::RoutingError),
    /// A dataset, corpus file or tokenizer could not be read.
    #[error(transparent)]
    Data(#[from] smalltalk_data::DataError),
    /// The mixture's manifest or one of its members was refused (boxed: the error is large).
    #[error(transparent)]
    Mixture(Box<smalltalk_mixture::MixtureError>),
    /// A stage record could not be read or written.
    #[error(transparent)]
    Stage(#[from] smalltalk_stage::StageError),
}

impl From<smalltalk_mixture::MixtureError> for EvalError {
    fn from(e: smalltalk_mixture::MixtureError) -> Self {
        EvalError::Mixture(Box::new(e))
    }
}

/// Result with [`EvalError`].
pub type Result<T> = std::result::Result<T, EvalError>;
